"""The command line, the demo and the README's generated parts."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import autograd_forbidden
from shimnn.cli import main
from shimnn.demo import DemoConfig, run_demo
from shimnn.support import support_rows, support_table

ROOT = Path(__file__).parent.parent


def test_demo_runs_prints_table_and_writes_figures(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")  # the demo extra
    status = run_demo(DemoConfig(epochs=3, runs=2, out=str(tmp_path)), show_progress=False)
    out = capsys.readouterr().out
    assert status == 0
    assert "bit-identical between torch and shimnn: yes" in out
    rows = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "3"]
    assert all("| yes |" in r for r in rows)
    for name in ("decision_regions.png", "learning_curves.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_demo_cli_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--epochs", "2", "--hidden", "8,8", "--activation", "Tanh",
                 "--optimizer", "Adam", "--lr", "0.01", "--dtype", "float64", "--no-figures",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2-8-8-1 (Tanh" in out and "Adam lr 0.01" in out
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv", [["demo", "--epochs", "0"], ["demo", "--hidden", "2,x"],
                                  ["demo", "--activation", "Softmax"], ["demo", "--lr", "-1"],
                                  ["nonsense"], ["demo", "--optimizer", "Adam", "--momentum",
                                                 "0.9"]])
def test_bad_options_give_a_usage_error(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "shimnn", *argv], capture_output=True,
                          text=True)
    assert done.returncode != 0
    assert "error" in done.stderr and "Traceback" not in done.stderr


def test_version_and_help() -> None:
    done = subprocess.run([sys.executable, "-m", "shimnn", "--version"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stdout.startswith("shimnn ")
    done = subprocess.run([sys.executable, "-m", "shimnn", "--help"], capture_output=True,
                          text=True)
    assert all(c in done.stdout for c in ("demo", "run", "compare", "support"))


def _update_readme() -> Any:
    path = ROOT / "docs" / "update_readme.py"
    spec = importlib.util.spec_from_file_location("update_readme", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_docs_are_current() -> None:
    """README's generated blocks, docs/support.md and docs/compatibility.md are what
    `make readme` writes. The support lists come from the installed torch's public names, so
    they are compared in full with the torch they were generated with (the README says which);
    with another torch, what shimnn implements must still be what the lists say."""
    update = _update_readme()
    expected = update.render()
    readme = (ROOT / "README.md").read_text()
    generated_with = re.search(r"Generated with torch (\S+);", readme)
    assert generated_with is not None
    if generated_with.group(1) == update.torch_release():
        for path, text in expected.items():
            assert path.read_text() == text, f"{path.name} is stale: run `make readme`"
        return
    for name in ("compat-matrix", "performance"):  # independent of the installed torch
        assert update.section(readme, name) == update.section(expected[update.README], name)
    listed = (ROOT / "docs" / "support.md").read_text()
    for title, have, lack in support_rows():
        row = next(line for line in listed.splitlines() if line.startswith(f"| {title} ("))
        listed_have = set(re.findall(r"`(\w+)`", row.split(" | ")[1]))
        missing_here = listed_have - set(have) - set(lack)  # names this torch does not have
        assert set(have) == listed_have - missing_here, title


def test_support_table_follows_the_installed_torch() -> None:
    """Every name in `shimnn support` is a public name of the installed torch, and the counts
    add up (so no count is hard-coded to one torch release)."""
    table = support_table()
    for title, have, lack in support_rows():
        namespace = {"`torch.nn` modules": torch.nn, "`torch.nn.functional`": torch.nn.functional,
                     "`torch.optim`": torch.optim}[title]
        assert all(hasattr(namespace, n) for n in have + lack), title
        assert f"| {title} ({len(have)} of {len(have) + len(lack)}) |" in table


README_EXAMPLE = re.compile(r"## Switch your script\n\n```python\n(.*?)```", re.S)


def test_readme_example_runs_and_matches_torch(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's complete example, as written (shimnn), then with torch.nn / torch.optim:
    the same printed numbers."""
    code = README_EXAMPLE.search((ROOT / "README.md").read_text())
    assert code is not None
    source = code.group(1)
    with autograd_forbidden():
        exec(compile(source, "README.md", "exec"), {"__name__": "__readme__"})
    shim_out = capsys.readouterr().out
    torch_source = source.replace("import shimnn as nn", "import torch.nn as nn").replace(
        "import shimnn.optim as optim", "import torch.optim as optim").replace(
        ", last node {loss.shim_fn}", "")
    exec(compile(torch_source, "README.md (torch)", "exec"), {"__name__": "__readme__"})
    torch_out = capsys.readouterr().out
    assert "last node <MseLossBackward0" in shim_out
    assert shim_out.split(", last node")[0] == torch_out.strip()
    assert re.search(r"train accuracy (9\d|8\d)\.\d%", shim_out), shim_out


def test_readme_install_commands_resolve(tmp_path: Path) -> None:
    """`pip install .` and `pip install ".[native]"` (what the README's Install section says)
    resolve from the checkout: the package builds and the extra exists (dry run, no index)."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:  # pip would fetch a newer one to build
        pytest.skip(f"setuptools {setuptools.__version__} here; building needs setuptools>=77")
    for target in (".", ".[native]"):
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                               "--no-build-isolation", "--no-index", "-q", target],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PIP_NO_INPUT": "1"})
        assert done.returncode == 0, done.stderr
    assert 'native = ["ninja' in (ROOT / "pyproject.toml").read_text()


def test_readme_commands_are_the_ones_that_exist() -> None:
    """Every command in the README's shell blocks is one of these, each run by a test or CI:
    make demo / make test (.ci/run, test_make_demo_runs), shimnn run / compare (test_runner),
    pip install (test_readme_install_commands_resolve)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    known = ("make demo", "make test", "pip install", "shimnn run", "shimnn compare")
    assert commands and all(c.startswith(known) for c in commands if c), commands
    make = subprocess.run(["make", "-n", "demo", "test", "compat", "TORCH=2.14.1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert make.returncode == 0 and "docs/compat.py 2.14.1" in make.stdout, make.stderr
    assert len(readme.encode()) < 12_500, "the README is for a newcomer: keep it short"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="`make demo` runs in the checkout's .venv")
def test_make_demo_runs() -> None:
    done = subprocess.run(["make", "-s", "demo", "ARGS=--epochs 2 --no-figures"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "bit-identical between torch and shimnn: yes" in done.stdout


@pytest.mark.parametrize("setting", ["0", "1"])
def test_native_command_reports_the_compiled_paths(setting: str) -> None:
    env = {**os.environ, "SHIMNN_NATIVE": setting}
    done = subprocess.run([sys.executable, "-m", "shimnn", "native"], capture_output=True,
                          text=True, env=env)
    if setting == "0":
        assert done.returncode == 1
        assert done.stdout.startswith("native fast paths: disabled")
    else:  # required: `make test` proves the build works on the machine it runs on
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("native fast paths: in use")
