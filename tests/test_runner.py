"""`shimnn run` / `shimnn compare` and the corpus of unmodified PyTorch scripts in examples/."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import shimnn
from conftest import autograd_forbidden
from shimnn.runner import compare_outputs, run_module, run_script

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def _run(path: Path, use_shimnn: bool) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_script(str(path), [], seed=0, use_shimnn=use_shimnn)
    assert status == 0
    return out.getvalue()


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_prints_exactly_what_torch_prints(script: Path) -> None:
    if "from sklearn" in script.read_text():
        pytest.importorskip("sklearn")  # its data set (the bench extra; `make test` has it)
    reference = _run(script, use_shimnn=False)
    with autograd_forbidden():
        shimmed = _run(script, use_shimnn=True)
    assert reference.strip(), "the script printed nothing"
    result = compare_outputs(reference, shimmed)
    assert result.numbers_identical and result.text_identical, result.first_difference
    assert result.numbers_compared >= 10


def test_corpus_covers_the_styles() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"disc_sequential", "module_subclass_functional", "tanh_between_layers",
            "weight_sharing", "manual_sgd", "batch_and_single_sample", "eval_argmax",
            "residual", "mnist_cnn_digits", "residual_cnn", "char_lstm",
            "rnn_loop", "transformer_copy", "seq2seq_gru", "ddp_seed"} <= names


def test_patch_serves_shimnn_and_restores_torch() -> None:
    originals = (torch.nn.Linear, torch.nn.functional.relu, torch.optim.SGD, torch.nn.Parameter)
    state = torch.random.get_rng_state()
    with shimnn.patch_torch():
        import torch.nn.functional as F
        from torch import nn

        assert nn.Linear is shimnn.Linear and F.relu is shimnn.functional.relu
        assert torch.optim.SGD is shimnn.optim.SGD and nn.Parameter is shimnn.Parameter
        assert nn.Module is shimnn.Module.__mro__[1]  # torch's Module stays torch's
        assert nn.Conv2d is not None  # names shimnn lacks stay torch's
    assert (torch.nn.Linear, torch.nn.functional.relu, torch.optim.SGD,
            torch.nn.Parameter) == originals
    assert torch.equal(torch.random.get_rng_state(), state)  # no random number consumed


def test_unsupported_torch_module_in_a_shimnn_graph_is_named_at_backward() -> None:
    with shimnn.patch_torch():
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LogSigmoid()
                                    if not hasattr(shimnn, "LogSigmoid") else torch.nn.Mish(),
                                    torch.nn.Linear(4, 1))
        out = model(torch.randn(2, 3))
    with pytest.raises(NotImplementedError, match="(log_sigmoid|mish)"):
        out.sum().backward()


def test_compare_outputs_finds_first_numeric_difference() -> None:
    same = compare_outputs("loss 0.25\nacc 1\n", "loss 0.25\nacc 1\n")
    assert same.numbers_identical and same.text_identical and same.numbers_compared == 2
    diff = compare_outputs("a 1.0\nb 2.5e-3\n", "a 1.0\nb 2.6e-3\n")
    assert not diff.numbers_identical and "line 2" in (diff.first_difference or "")
    text = compare_outputs("x 1 <class 'torch'>\n", "x 1 <class 'shim'>\n")
    assert text.numbers_identical and not text.text_identical


def test_cli_compare_and_run(tmp_path: Path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text(
        "import sys, torch, torch.nn as nn\n"
        "m = nn.Linear(2, 1)\n"
        "loss = nn.MSELoss()(m(torch.ones(3, 2)), torch.zeros(3, 1))\n"
        "loss.backward()\n"
        "print(sys.argv[1:], loss.item(), m.weight.grad.tolist(), type(m).__module__)\n")
    done = subprocess.run([sys.executable, "-m", "shimnn", "compare", str(script), "--flag", "3"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "numbers printed identical: yes" in done.stdout
    run = subprocess.run([sys.executable, "-m", "shimnn", "run", "--seed", "1", str(script),
                          "a"], capture_output=True, text=True)
    assert run.returncode == 0 and "shimnn.modules.linear" in run.stdout, run.stderr
    bad = subprocess.run([sys.executable, "-m", "shimnn", "run", str(tmp_path / "missing.py")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no such script" in bad.stderr


# --- shimnn run -m, console scripts, child processes, the pytest plugin -------------------

SHIMNN = [sys.executable, "-m", "shimnn"]
ROOT = Path(__file__).parent.parent
PROBE = ("import os, sys, torch.nn as nn\n"
         "print(sys.argv[1:], nn.Linear.__module__, os.environ.get('SHIMNN_PATCH_TORCH'))\n")


def _shimnn(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHIMNN, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def test_run_module_and_package_like_python_m(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tinymod.py").write_text(PROBE + "print(sys.argv[0])\n")
    (tmp_path / "pkgdemo").mkdir()
    (tmp_path / "pkgdemo" / "__init__.py").write_text("")
    (tmp_path / "pkgdemo" / "__main__.py").write_text(PROBE + "raise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)  # python -m finds modules in the working directory
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_module("tinymod", ["a", "--b", "-x"]) == 0
        assert run_module("pkgdemo", ["z"], use_shimnn=False) == 3  # its exit status
    assert out.getvalue().splitlines() == [
        "['a', '--b', '-x'] shimnn.modules.linear 1",
        str(tmp_path / "tinymod.py"),  # argv[0] as python -m sets it
        "['z'] torch.nn.modules.linear None"]
    # The command line: -m takes the rest of it, options included.
    done = _shimnn("run", "--seed", "3", "-m", "pkgdemo", "--help", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (3, "['--help'] shimnn.modules.linear 1\n"), \
        done.stderr
    (tmp_path / "quiet.py").write_text("import torch.nn as nn\nprint(nn.Linear(2, 1).weight)\n")
    done = _shimnn("compare", "-m", "quiet", cwd=tmp_path)
    assert done.returncode == 0 and "numbers printed identical: yes" in done.stdout, done.stdout
    assert done.stdout.startswith("module: quiet")


def test_the_patch_reaches_python_children_and_leaves_the_environment(tmp_path: Path) -> None:
    extra = tmp_path / "site_extra"
    extra.mkdir()
    marks = tmp_path / "marks.txt"  # the environment's own sitecustomize: one line a process
    (extra / "sitecustomize.py").write_text(
        f"import os\nwith open({str(marks)!r}, 'a') as f:\n    f.write(str(os.getpid()) + '\\n')\n")
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, subprocess, sys\n"
        "import torch.nn as nn\n"
        "def child(q):\n"
        "    import torch.nn as nn\n"
        "    q.put(nn.Linear.__module__)\n"
        "if __name__ == '__main__':\n"
        "    print('parent', nn.Linear.__module__)\n"
        "    code = 'import sys, torch.nn as nn; print(\"subprocess\", nn.Linear.__module__, "
        "\"torch\" in sys.modules)'\n"
        "    print(subprocess.run([sys.executable, '-c', code], capture_output=True, "
        "text=True).stdout.strip())\n"
        "    lazy = ('import sys; print(\"no torch:\", \"torch\" in sys.modules); import shimnn, "
        "torch; print(\"shimnn first\", torch.nn.Linear.__module__)')\n"
        "    print(subprocess.run([sys.executable, '-c', lazy], capture_output=True, "
        "text=True).stdout.strip())\n"
        "    ctx = mp.get_context('spawn'); q = ctx.Queue()\n"
        "    p = ctx.Process(target=child, args=(q,)); p.start(); print('spawn', q.get()); "
        "p.join()\n")
    env = dict(os.environ, PYTHONPATH=str(extra))
    done = _shimnn("run", str(script), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "parent shimnn.modules.linear",
        "subprocess shimnn.modules.linear True",
        "no torch: False",  # the hook imports nothing itself
        "shimnn first shimnn.modules.linear",  # importing shimnn is what imports torch
        "spawn shimnn.modules.linear",
    ], done.stdout
    # The shadowed sitecustomize still ran in the parent, both subprocesses and the spawned
    # child (and multiprocessing's resource tracker).
    assert len(set(marks.read_text().split())) >= 4
    done = _shimnn("run", "--torch", str(script), env=env)
    assert "subprocess torch.nn.modules.linear" in done.stdout
    assert "spawn torch.nn.modules.linear" in done.stdout, done.stdout + done.stderr


def test_run_target_sets_the_child_environment_only_for_the_run(tmp_path: Path) -> None:
    from shimnn.runner import BOOTSTRAP_DIR, PATCH_ENV, _plugin_installed

    script = tmp_path / "env.py"
    script.write_text("import os\nprint(os.environ.get('SHIMNN_PATCH_TORCH'), "
                      "os.environ['PYTHONPATH'].split(os.pathsep)[0], "
                      "os.environ.get('PYTEST_PLUGINS'))\n")
    before = dict(os.environ)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_script(str(script), []) == 0
    # The plugin comes through its pytest11 entry point when shimnn is installed.
    plugins = None if _plugin_installed() else "shimnn.testing.plugin"
    assert out.getvalue() == f"1 {BOOTSTRAP_DIR} {plugins}\n"
    assert dict(os.environ) == before and PATCH_ENV not in os.environ


def test_torchrun_workers_are_served_by_shimnn(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import os, torch, torch.nn as nn\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))\n"
        "loss = nn.MSELoss()(model(torch.ones(2, 3)), torch.zeros(2, 1))\n"
        "loss.backward()\n"
        "with open(f\"rank{os.environ['RANK']}.txt\", 'w') as f:\n"  # workers share stdout
        "    f.write(f'{type(model[0]).__module__} {loss.shim_fn}')\n")
    done = _shimnn("run", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   str(script), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == (
            "shimnn.modules.linear <MseLossBackward0 (shimnn)>")


SAMPLE = str(ROOT / "examples" / "sample_torch_tests")
PYTEST_ARGS = ["-p", "no:cacheprovider", "-o", "addopts="]  # the header shows without -q


def test_sample_torch_suite_under_shimnn_run() -> None:
    plain = subprocess.run([sys.executable, "-m", "pytest", *PYTEST_ARGS, SAMPLE],
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "8 passed" in plain.stdout, plain.stdout
    assert "is serving torch" not in plain.stdout
    done = _shimnn("run", "-m", "pytest", *PYTEST_ARGS, SAMPLE, timeout=300)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert re.search(r"shimnn \S+ is serving torch \S+ \(shimnn run\): \d+ names of torch.nn",
                     out), out
    assert "1 failed, 7 passed" in out
    assert re.search(r"E +NotImplementedError: shimnn has no hand-written backward for 'cumprod'",
                     out), out
    summary = out.split("= shimnn =")[1]
    assert "1 failed on something shimnn does not implement:" in summary
    assert "test_model.py::test_running_product_features: cumprod" in summary


def test_plugin_lists_or_forbids_tests_that_use_torch_autograd(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(  # imported before the session starts
        "import pytest\nfrom torch.nn import Linear\n"
        "@pytest.fixture\ndef linear_class():\n    return Linear\n")
    (tmp_path / "test_mixed.py").write_text(
        "def test_conftest_names_are_served(linear_class):\n"
        "    assert linear_class.__module__ == 'shimnn.modules.linear'\n"
        "import torch\n"
        "def test_plain_autograd():\n"
        "    x = torch.ones(2, requires_grad=True)\n"
        "    (x * 3).sum().backward()\n"
        "    assert x.grad.tolist() == [3.0, 3.0]\n"
        "def test_shimnn_model():\n"
        "    m = torch.nn.Linear(2, 1)\n"
        "    m(torch.ones(1, 2)).sum().backward()\n"
        "    assert type(m).__module__ == 'shimnn.modules.linear' and m.weight.grad is not None\n")
    base = [sys.executable, "-m", "pytest", *PYTEST_ARGS, str(tmp_path)]
    # The installed plugin (pytest11 entry point): `pytest --shimnn`.
    done = subprocess.run([*base, "--shimnn"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0 and "3 passed" in done.stdout, done.stdout
    assert "is serving torch" in done.stdout and "(pytest --shimnn)" in done.stdout
    summary = done.stdout.split("= shimnn =")[1]
    assert "1 passed, but torch's autograd engine ran in them" in summary
    assert "test_mixed.py::test_plain_autograd" in summary and "test_shimnn_model" not in summary
    # Named explicitly, as without an installed shimnn: the same plugin, not a second one.
    done = subprocess.run([*base, "-p", "shimnn.testing.plugin", "--shimnn-forbid-autograd"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 1 and "1 failed, 2 passed" in done.stdout, done.stdout
    assert "AutogradCalled: torch's autograd engine was entered" in done.stdout
    # An installed console script as the program: pytest's own.
    done = _shimnn("run", "pytest", *PYTEST_ARGS, str(tmp_path / "test_mixed.py"), cwd=tmp_path)
    assert done.returncode == 0 and "(shimnn run)" in done.stdout, done.stdout


def test_torch_functions_that_dispatch_on_their_patched_name() -> None:
    """torch's own F.relu (a default argument bound before patching) dispatches with
    handle_torch_function(relu, ...), its module's global name, which is shimnn's while
    patched: the call still reaches shimnn's op, and its gradient is shimnn's."""
    relu = torch.nn.functional.relu
    x = shimnn.Parameter(torch.randn(5))
    with shimnn.patch_torch():
        y = relu(x * 2)
        y.sum().backward()
    assert type(y) is shimnn.TrackedTensor
    assert torch.equal(x.grad, (x.detach() > 0).float() * 2)


DDP_PROBE = ("import os, sys, torch.distributed as dist, torch.nn as nn\n"
             "from torch.nn.parallel import DistributedDataParallel as DDP\n"
             "dist.init_process_group('gloo')\n"
             "model = DDP(nn.Linear(2, 1))\n"
             "line = ' '.join([os.environ['RANK'], os.environ['WORLD_SIZE'], "
             "nn.Linear.__module__, type(model.reducer).__module__])\n"
             "with open(os.path.join(sys.argv[1], 'rank' + os.environ['RANK']), 'w') as f:\n"
             "    f.write(line)\n"
             "dist.destroy_process_group()\n")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_nproc_per_node_runs_torchrun_workers_with_shimnn(tmp_path: Path) -> None:
    """``shimnn run --nproc-per-node N`` is torchrun --standalone: every worker is patched and
    builds DDP on shimnn's reducer (``compare`` below runs the same launch with ``--torch``)."""
    script = tmp_path / "probe.py"
    script.write_text(DDP_PROBE)
    done = _shimnn("run", "--nproc-per-node", "2", str(script), str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr
    # each worker writes its own file (two workers' stdout lines can interleave)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == [
        "0 2 shimnn.modules.linear shimnn._reducer", "1 2 shimnn.modules.linear shimnn._reducer"]
    bad = _shimnn("run", "--nproc-per-node", "2", "pytest")
    assert bad.returncode == 2 and "--nproc-per-node runs a script" in bad.stderr


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_compare_a_ddp_script_launched_like_torchrun() -> None:
    """The DDP example under torchrun's launcher: identical numbers with torch and shimnn (the
    corpus test above runs it through its own torch.multiprocessing.spawn)."""
    done = _shimnn("compare", "--nproc-per-node", "2", str(ROOT / "examples" / "ddp_seed.py"),
                   timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "numbers printed identical: yes" in done.stdout, done.stdout
