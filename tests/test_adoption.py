"""A new user's first hour: the compiled paths' first build, the torch version's own path and
error rules, the demo's and the command line's failure modes, tracebacks, the README."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

import shimnn
from conftest import autograd_forbidden
from shimnn import _native
from shimnn.cli import main
from shimnn.demo import DemoConfig, decision_figure, learning_curves_figure, run_demo
from shimnn.ops import _paths
from shimnn.runner import compare_script
from shimnn.testing import assert_matches_torch, bitwise_identical

ROOT = Path(__file__).parent.parent

# ---------------------------------------------------------------------------------------------
# The compiled paths: never a blocking first build; a failure remembered and reported once
# ---------------------------------------------------------------------------------------------

TRAIN = (
    "import torch, shimnn, shimnn.optim\n"
    "from shimnn import _native\n"
    "torch.manual_seed(0)\n"
    "m = shimnn.Sequential(shimnn.Linear(2, 8), shimnn.ReLU(), shimnn.Linear(8, 1))\n"
    "opt = shimnn.optim.SGD(m.parameters(), lr=0.1)\n"
    "x, y = torch.randn(16, 2), torch.randn(16, 1)\n"
    "for _ in range(5):\n"
    "    loss = shimnn.MSELoss()(m(x), y); opt.zero_grad(); loss.backward(); opt.step()\n"
    "print('loss', loss.item())\n"
    "print(_native.status())\n")


def _train(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    environment = {k: v for k, v in os.environ.items() if k != "SHIMNN_NATIVE"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**environment, "SHIMNN_CACHE": str(tmp_path / "cache"), **env},
                          timeout=300)


def test_first_use_builds_in_the_background_and_a_failure_is_reported_once(
        tmp_path: Path) -> None:
    """No compiler (CXX names a program that fails): the first process trains at once on the
    Python paths while the build runs in a separate process; the next process reports the
    failure, once, naming `shimnn native`; the one after that says nothing."""
    first = _train(tmp_path, CXX="/bin/false")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("loss ")
    assert "building the compiled fast paths in the background" in first.stderr
    assert "being built in the background" in first.stdout
    failed = next((tmp_path / "cache").glob("native-*")) / "FAILED"
    deadline = time.monotonic() + 120
    while not failed.exists():  # the background build fails quickly without a compiler
        assert time.monotonic() < deadline, "the background build did not finish"
        time.sleep(0.2)
    second = _train(tmp_path, CXX="/bin/false")
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("could not be built") == 1
    assert "`shimnn native` retries the build" in second.stderr
    third = _train(tmp_path, CXX="/bin/false")
    assert third.returncode == 0 and "shimnn:" not in third.stderr, third.stderr
    assert "build failed" in third.stdout  # still known, just not repeated
    # `shimnn native` retries in the foreground and shows why.
    done = subprocess.run([sys.executable, "-m", "shimnn", "native"], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "SHIMNN_CACHE": str(tmp_path / "cache"),
                               "CXX": "/bin/false", "SHIMNN_NATIVE": ""})
    assert done.returncode == 1 and done.stdout.startswith("native fast paths: unavailable")


def test_a_background_build_is_picked_up_by_the_running_process(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """While a build runs elsewhere get() returns None; once the library appears (and the
    builder's lock is released) the next poll loads it."""
    build_dir = tmp_path / "native-x"
    build_dir.mkdir()
    loaded = object()
    monkeypatch.setattr(_native, "_module", None)
    monkeypatch.setattr(_native, "_tried", True)
    monkeypatch.setattr(_native, "_enabled", True)
    monkeypatch.setattr(_native, "_building", build_dir)
    monkeypatch.setattr(_native, "_next_poll", 0.0)
    monkeypatch.setattr(_native, "_load_library", lambda path: loaded)
    assert _native.get() is None
    (build_dir / "shimnn_native.so").write_bytes(b"")
    assert _native.get() is None  # polled less than a second ago
    monkeypatch.setattr(_native, "_next_poll", 0.0)
    assert _native.get() is loaded


def test_native_setting_1_builds_in_the_foreground_and_fails_loudly(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_native, "_SOURCE", tmp_path / "broken.cpp")
    (tmp_path / "broken.cpp").write_text("this is not C++\n")
    monkeypatch.setattr(_native, "_module", None)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "_enabled", True)
    monkeypatch.setenv("SHIMNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SHIMNN_NATIVE", "1")
    with pytest.raises(RuntimeError, match="SHIMNN_NATIVE=1, but the native fast paths"):
        _native.get()
    assert (_native._build_dir() / "FAILED").exists()  # remembered for the other processes


# ---------------------------------------------------------------------------------------------
# torch versions: the path torch takes is asked of the installed torch
# ---------------------------------------------------------------------------------------------


def _graph_ops(out: torch.Tensor) -> set[str]:
    """Node names of torch's own graph (the oracle: torch's autograd, in the test only)."""
    names, stack, seen = set(), [out.grad_fn], set()
    kept = []  # Python wrappers of nodes are made on access: keep them, so no id is reused
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        kept.append(fn)
        names.add(fn.name())
        stack.extend(f for f, _ in fn.next_functions)
    return names


def _layouts(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The tensor in every dim order (so every stride pattern of that shape)."""
    out = []
    for perm in itertools.permutations(range(len(shape))):
        base = torch.randn([shape[p] for p in perm])
        inverse = [perm.index(i) for i in range(len(shape))]
        out.append(base.permute(*inverse))
    return out


@pytest.mark.parametrize("shape", [(1, 2, 4), (2, 1, 4), (1, 1, 4), (3, 2, 4), (2, 3, 1, 4),
                                   (1, 2, 3, 4), (0, 2, 4), (4,)])
def test_linear_path_is_the_one_torch_takes(shape: tuple[int, ...]) -> None:
    """For every layout of inputs with dims of size 1 (where torch 2.14 changed its rule),
    frozen or trainable weight, with or without bias: the probed path is the one torch's own
    graph shows (addmm / mm / bmm)."""
    for x in _layouts(shape):
        for weight_grad, bias in itertools.product([False, True], [False, True]):
            w = torch.randn(3, shape[-1], requires_grad=weight_grad)
            b = torch.randn(3) if bias else None
            path = _paths.linear_path(x, w, b, weight_grad)
            ops = _graph_ops(torch.nn.functional.linear(x.requires_grad_(), w, b))
            expected = ("addmm" if "AddmmBackward0" in ops else
                        "bmm" if "BmmBackward0" in ops else "fold")
            assert path == expected, (x.shape, x.stride(), weight_grad, bias, ops)
            x.requires_grad_(False)


@pytest.mark.parametrize("shapes", [((1, 3, 4), (5, 4, 2)), ((3, 4, 5), (1, 5, 6)),
                                    ((2, 1, 4), (4, 3)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
                                    ((2, 1, 3, 4), (1, 4, 2))])
def test_matmul_path_is_the_one_torch_takes(shapes: tuple[tuple[int, ...], ...]) -> None:
    for a, b in itertools.product(_layouts(shapes[0]), _layouts(shapes[1])):
        for a_grad, b_grad in [(True, False), (False, True), (True, True)]:
            path = _paths.matmul_path(a, b, a_grad, b_grad)
            ops = _graph_ops(torch.matmul(a.detach().requires_grad_(a_grad),
                                          b.detach().requires_grad_(b_grad)))
            if "BmmBackward0" in ops:
                assert path == "batched", (shapes, a.stride(), b.stride(), ops)
            elif "SqueezeBackward1" in ops or "SqueezeBackward4" in ops and path != "fold":
                assert path in ("squeeze0", "squeeze1"), (shapes, ops)
            else:
                assert path == "fold", (shapes, a.stride(), b.stride(), ops)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_with_size_one_batch_dims_matches_torch_in_every_layout(
        dtype: torch.dtype) -> None:
    """The class of inputs that torch 2.14 routes differently from 2.13 (frozen weight,
    transposed layout, a batch shape containing a 1)."""
    for shape in [(1, 2, 4), (2, 1, 4), (4, 1, 2, 4)]:
        for x in _layouts(shape):
            for weight_grad, bias in itertools.product([False, True], [False, True]):
                ref = torch.nn.Linear(shape[-1], 3, bias=bias, dtype=dtype)
                ref.weight.requires_grad_(weight_grad)
                shim = shimnn.Linear(shape[-1], 3, bias=bias, dtype=dtype)
                shim.load_state_dict(ref.state_dict())
                shim.weight.requires_grad_(weight_grad)
                assert_matches_torch(shim, ref, x.to(dtype))


def test_the_probe_sees_no_dispatch_mode_and_leaves_no_profiler_running() -> None:
    x = torch.randn(1, 2, 4).permute(2, 1, 0)
    _paths._linear_paths.clear()
    _paths.linear_path(x, torch.randn(3, 1), None, False)
    assert not torch._C._autograd._profiler_enabled()
    # A profiler the user runs: the probe runs on a thread of its own, the user's is intact.
    with torch.profiler.profile() as prof:
        _paths._linear_paths.clear()
        _paths.linear_path(x, torch.randn(3, 1), None, True)
        torch.ones(2).sum()
    assert any(e.name == "aten::sum" for e in prof.events())


def test_pytest_header_names_torch_under_quiet() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only",
                           "tests/test_adoption.py::test_pytest_header_names_torch_under_quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert f"torch {torch.__version__}" in done.stdout, done.stdout


# ---------------------------------------------------------------------------------------------
# bit-identity: identical NaNs are identical
# ---------------------------------------------------------------------------------------------


def test_bitwise_identical_treats_identical_nans_as_identical() -> None:
    nan = float("nan")
    assert bitwise_identical([1.0, nan], [1.0, nan])
    assert not bitwise_identical(0.0, -0.0)
    t = torch.tensor([nan, 1.0])
    assert bitwise_identical(t, t.clone()) and not torch.equal(t, t.clone())
    other_nan = torch.tensor([nan]).view(torch.int32).add(1).view(torch.float32)
    assert not bitwise_identical(torch.tensor([nan]), other_nan)
    assert bitwise_identical({"a": [t]}, {"a": [t.clone()]})


def test_demo_diverging_to_nan_is_still_bit_identical(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    status = run_demo(DemoConfig(epochs=5, momentum=2.0, figures=False, out=str(tmp_path)),
                      show_progress=False)
    out = capsys.readouterr().out
    assert "| nan | nan |" in out
    assert "bit-identical between torch and shimnn: yes" in out and status == 0
    assert "diverged to NaN" in out


# ---------------------------------------------------------------------------------------------
# The demo and the command line
# ---------------------------------------------------------------------------------------------


def _cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shimnn", *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("argv,message", [
    (["--hidden", "25,,25"], "expected positive sizes separated by commas"),
    (["--hidden", "25,0"], "must be positive"),
    (["--out", "/proc/nope", "--epochs", "1"], "cannot write the figures to '/proc/nope'"),
    (["--optimizer", "nadam"], "invalid choice: 'nadam'"),
    (["--momentum", "-1"], "--momentum must be >= 0"),
])
def test_demo_failures_end_in_one_line(argv: list[str], message: str) -> None:
    done = _cli("demo", *argv)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert message in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("shimnn demo: error: ")


def test_demo_accepts_torchs_lower_case_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--epochs", "1", "--optimizer", "adamw", "--activation", "tanh",
                 "--dtype", "FLOAT64", "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "(Tanh, Tanh out)" in out and "AdamW lr 0.1" in out and "float64" in out


def test_demo_help_shows_every_default() -> None:
    done = _cli("demo", "--help")
    options = done.stdout.split("options:")[1]
    assert len(re.findall(r"^  (--[\w-]+)", options, re.M)) >= 12
    for option, default in [("--epochs", "100"), ("--batch-size", "50"), ("--lr", "0.1"),
                            ("--hidden", "25,25,25"), ("--activation", "ReLU"),
                            ("--optimizer", "SGD"), ("--momentum", "0.0"), ("--seed", "0"),
                            ("--runs", "1"), ("--dtype", "float32"), ("--out", "demo-output")]:
        block = options.split(f"\n  {option}", 1)[1].split("\n  --", 1)[0]
        assert f"(default: {default})" in " ".join(block.split()), option


def test_demo_table_explains_its_time_columns(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run_demo(DemoConfig(epochs=2, figures=False, out=str(tmp_path)), show_progress=False)
    out = capsys.readouterr().out
    assert "ms/epoch torch" in out and "ms/epoch: the median time of one training epoch" in out
    assert "shimnn's compiled fast paths: " in out  # said before any epoch is timed


def test_demo_never_switches_paths_mid_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A build still running when the demo starts: the demo times the Python paths for the
    whole run (and says so) rather than picking the build up between epochs."""
    monkeypatch.setattr(_native, "_module", None)
    monkeypatch.setattr(_native, "_tried", True)
    monkeypatch.setattr(_native, "_enabled", True)
    monkeypatch.setattr(_native, "_building", tmp_path)
    monkeypatch.setattr(_native, "_reason", "being built in the background")
    calls: list[bool] = []
    real_poll = _native._poll
    monkeypatch.setattr(_native, "_poll", lambda: calls.append(True) or real_poll())
    run_demo(DemoConfig(epochs=2, figures=False, out=str(tmp_path)), show_progress=False)
    out = capsys.readouterr().out
    assert "not used in this run (being built in the background); timing the Python" in out
    assert len(calls) <= 1  # the one look before the first epoch, none during training
    assert _native._enabled  # restored afterwards


def test_demo_figures_label_their_axes_and_legend_every_mark(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shimnn.demo import _Progress, _train_pair

    cfg = DemoConfig(epochs=2, out=str(tmp_path))
    pairs = [_train_pair(cfg, 0, _Progress(2, False))]
    regions = decision_figure(cfg, pairs)
    for ax in regions.axes:
        assert ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for legend in regions.legends for t in legend.get_texts()]
    for mark in ("predicted inside", "predicted outside", "label +1", "label -1", "true disc"):
        assert any(mark in label for label in labels), (mark, labels)
    curves = learning_curves_figure(cfg, pairs)
    for ax in curves.axes:
        assert ax.get_xlabel() and ax.get_ylabel()
        legend = ax.get_legend()
        assert legend is not None and len(legend.get_texts()) == len(ax.get_lines())
    error_ax = curves.axes[1]
    assert "%" in error_ax.get_ylabel()
    y = error_ax.get_lines()[0].get_ydata()
    assert list(y) == [100 * e for e in pairs[0][0].test_error]  # percent, like the table
    plt.close("all")


def test_support_into_a_closed_pipe_is_quiet() -> None:
    done = subprocess.run(f"{sys.executable} -m shimnn support | head -n 2", shell=True,
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith("| torch namespace")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_compare_says_failed_and_prints_no_speed_ratio(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import torch\nprint(torch.ones(2))\nraise SystemExit('boom')\n")
    assert compare_script(str(script), []) == 1
    out = capsys.readouterr().out
    assert "failed: the torch and the shimnn run exited with an error" in out
    assert "torch / shimnn =" not in out and "numbers printed identical" not in out


# ---------------------------------------------------------------------------------------------
# Errors the user sees
# ---------------------------------------------------------------------------------------------


def test_a_failing_backward_shows_the_users_frames_not_shimnns() -> None:
    model = shimnn.Sequential(torch.nn.Embedding(10, 4), shimnn.Linear(4, 1))
    loss = model(torch.randint(0, 10, (3, 5))).mean()
    with pytest.raises(NotImplementedError) as info, autograd_forbidden():
        loss.backward()
    frames = traceback.extract_tb(info.value.__traceback__)
    shim_frames = [f for f in frames if "/shimnn/" in f.filename]
    assert len(shim_frames) <= 1, [f"{f.filename}:{f.lineno}" for f in shim_frames]
    assert frames[-1].filename.endswith("_traceback.py") or not shim_frames


def test_full_traceback_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIMNN_FULL_TRACEBACK", "1")
    model = shimnn.Sequential(torch.nn.Embedding(10, 4), shimnn.Linear(4, 1))
    loss = model(torch.randint(0, 10, (3, 5))).mean()
    with pytest.raises(NotImplementedError) as info:
        loss.backward()
    frames = traceback.extract_tb(info.value.__traceback__)
    assert len([f for f in frames if "/shimnn/" in f.filename]) > 3


def test_a_failing_module_call_keeps_the_users_own_forward_frames() -> None:
    class Net(shimnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = shimnn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)  # the user's line

    with pytest.raises(RuntimeError) as info:
        Net()(torch.randn(4, 5))
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any("the user's line" in (f.line or "") or f.name == "forward" for f in frames)
    assert str(info.value).startswith("Linear(in_features=3")
