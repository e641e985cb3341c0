"""The command line, the demo and the README's generated parts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shimnn.cli import main
from shimnn.demo import DemoConfig, run_demo
from shimnn.support import support_table

ROOT = Path(__file__).parent.parent


def test_demo_runs_prints_table_and_writes_figures(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
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


def test_readme_support_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- support-table:start -->\n")[1].split("<!-- support-table:end")[0]
    assert section.strip() == support_table().strip(), "run `make readme`"


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
        assert done.stdout.strip() == "native fast paths: in use"
