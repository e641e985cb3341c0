"""Run the whole test suite against another torch (``make compat TORCH=2.14.1``).

Creates (once) a virtual environment ``.venv-torch<VERSION>`` beside the checkout, installs
``torch==<VERSION>`` from the package index (on PyPI a CUDA build: several GB; it runs on CPU
without a GPU) and this checkout, editable, with its ``test``, ``demo``, ``native`` and
``bench`` extras (as ``make test`` has them),
then runs the suite as ``make test`` does: with the compiled fast paths required
(``SHIMNN_NATIVE=1``) and with them disabled (``SHIMNN_NATIVE=0``). The outcome goes to
``docs/compat/torch-<VERSION>.json``; ``make readme`` turns those files into the README's
compatibility matrix and ``docs/compatibility.md``.

    python docs/compat.py 2.14.1                 # both paths
    python docs/compat.py 2.14.1 --paths python  # SHIMNN_NATIVE=0 only (quicker)
    python docs/compat.py 2.14.1 -- tests/test_layers.py -x   # pytest arguments
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "compat"
_PATHS = {"native": "1", "python": "0"}


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def _environment(version: str, venv: Path) -> tuple[Path, str | None]:
    """The venv's python, and why torch cannot be imported there (None when it can)."""
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = _run([str(python), "-c", "import torch; print(torch.__version__)"],
                     capture_output=True)
    if installed.returncode != 0 or installed.stdout.split("+")[0].strip() != version:
        _run([str(python), "-m", "pip", "install", "-q", f"torch=={version}", "setuptools>=77",
              "-e", f"{ROOT}[test,demo,native,bench]"], check=True)
    else:  # torch is there; (re)install this checkout, which is quick
        _run([str(python), "-m", "pip", "install", "-q", "setuptools>=77",
              "-e", f"{ROOT}[test,demo,native,bench]"], check=True)
    check = _run([str(python), "-c", "import torch, shimnn; torch.ones(2) @ torch.ones(2)"],
                 capture_output=True)
    if check.returncode != 0:
        lines = [line for line in check.stderr.splitlines() if line.strip()]
        return python, lines[-1] if lines else f"exit status {check.returncode}"
    return python, None


def _summary(output: str) -> str:
    """pytest's last line: "3151 passed, 375 skipped in 366.77s"."""
    for line in reversed(output.splitlines()):
        if re.search(r"\d+ (passed|failed|error)", line):
            return line.strip("= ").strip()
    return "no summary (pytest did not finish)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("torch", help="the torch version, e.g. 2.14.1")
    parser.add_argument("--paths", choices=["both", *_PATHS], default="both",
                        help="which of shimnn's paths to test (default both)")
    parser.add_argument("--venv", type=Path, default=None,
                        help="the environment (default .venv-torch<VERSION> in the checkout)")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = parser.parse_args(argv)
    venv = args.venv or ROOT / f".venv-torch{args.torch}"
    python, import_error = _environment(args.torch, venv)
    record: dict[str, object] = {
        "torch": args.torch, "date": datetime.date.today().isoformat(),
        "python": platform.python_version(), "machine": platform.machine(),
        "pytest_args": args.pytest_args, "runs": {},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip()}
    runs: dict[str, object] = {}
    if import_error is not None:
        record["import_error"] = import_error
        print(f"torch {args.torch} cannot be imported here: {import_error}")
    else:
        version = _run([str(python), "-c", "import torch; print(torch.__version__)"],
                       capture_output=True).stdout.strip()
        record["torch_build"] = version
        for name, setting in _PATHS.items():
            if args.paths not in ("both", name):
                continue
            start = time.monotonic()
            done = _run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-rf",
                         *args.pytest_args], cwd=ROOT, capture_output=True,
                        env={**os.environ, "SHIMNN_NATIVE": setting})
            sys.stdout.write(done.stdout[-4000:])
            sys.stderr.write(done.stderr[-2000:])
            failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", done.stdout, re.M)
            runs[name] = {"returncode": done.returncode, "summary": _summary(done.stdout),
                          "seconds": round(time.monotonic() - start), "failed": failed[:50]}
    record["runs"] = runs
    record["green"] = import_error is None and bool(runs) and all(
        r["returncode"] == 0 for r in runs.values())  # type: ignore[index]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"torch-{args.torch}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}: {'green' if record['green'] else 'NOT green'}; "
          "`make readme` updates the README's matrix")
    return 0 if record["green"] else 1


if __name__ == "__main__":
    sys.exit(main())
