"""Run unmodified PyTorch scripts with shimnn (``shimnn run``) and compare (``shimnn compare``)."""

from __future__ import annotations

import os
import random
import re
import runpy
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Comparison", "compare_outputs", "compare_script", "run_script"]

_TIME_ENV = "SHIMNN_SCRIPT_SECONDS_FILE"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (if installed) and torch's generators."""
    import torch

    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is optional
        pass
    torch.manual_seed(seed)


def run_script(path: str, args: Sequence[str], *, seed: int | None = None,
               use_shimnn: bool = True) -> int:
    """Run ``path`` as ``__main__`` with ``sys.argv = [path, *args]``; returns its exit status.

    With ``use_shimnn``, torch's names that shimnn implements are served by shimnn for the run
    (:func:`shimnn.patch_torch`) and restored afterwards. Seeds are set only if ``seed`` is given.
    """
    import shimnn

    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    if seed is not None:
        seed_everything(seed)
    start = time.perf_counter()
    status = 0
    try:
        if use_shimnn:
            with shimnn.patch_torch():
                runpy.run_path(path, run_name="__main__")
        else:
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.stdout.flush()
        timing_file = os.environ.get(_TIME_ENV)
        if timing_file:
            with open(timing_file, "w") as f:
                f.write(repr(time.perf_counter() - start))
    return status


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)\b")


@dataclass
class Comparison:
    """The outcome of comparing two runs' printed output."""

    numbers_identical: bool
    text_identical: bool
    numbers_compared: int
    first_difference: str | None


def compare_outputs(reference: str, candidate: str) -> Comparison:
    """Compare two outputs line by line: every number (as printed) and the text around it."""
    ref_lines, cand_lines = reference.splitlines(), candidate.splitlines()
    count = 0
    first: str | None = None
    numbers_ok = len(ref_lines) == len(cand_lines)
    if not numbers_ok:
        first = f"torch printed {len(ref_lines)} lines, shimnn {len(cand_lines)}"
    for i, (a, b) in enumerate(zip(ref_lines, cand_lines), start=1):
        na, nb = _NUMBER.findall(a), _NUMBER.findall(b)
        count += len(na)
        if na != nb and numbers_ok:
            numbers_ok = False
            first = f"line {i}:\n  torch:  {a}\n  shimnn: {b}"
    text_ok = reference == candidate
    if numbers_ok and not text_ok and first is None:
        for i, (a, b) in enumerate(zip(ref_lines, cand_lines), start=1):
            if a != b:
                first = f"line {i} (text only):\n  torch:  {a}\n  shimnn: {b}"
                break
    return Comparison(numbers_ok, text_ok, count, first)


def _run_child(path: str, args: Sequence[str], seed: int, use_shimnn: bool
               ) -> tuple[int, str, str, float, float]:
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".txt", delete=False) as timing:
        timing_path = timing.name
    command = [sys.executable, "-m", "shimnn", "run", "--seed", str(seed)]
    if not use_shimnn:
        command.append("--torch")
    env = dict(os.environ, **{_TIME_ENV: timing_path})
    start = time.perf_counter()
    done = subprocess.run([*command, path, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    try:
        with open(timing_path) as f:
            script_seconds = float(f.read() or "nan")
    finally:
        os.unlink(timing_path)
    return done.returncode, done.stdout, done.stderr, wall, script_seconds


def compare_script(path: str, args: Sequence[str], *, seed: int = 0) -> int:
    """Run ``path`` under torch then under shimnn (fresh processes, same seeds); report."""
    ref = _run_child(path, args, seed, use_shimnn=False)
    shim = _run_child(path, args, seed, use_shimnn=True)
    for label, (status, _, err, _, _) in (("torch", ref), ("shimnn", shim)):
        if status != 0:
            print(f"{label} run failed (exit status {status}):\n{err}", file=sys.stderr)
    result = compare_outputs(ref[1], shim[1])
    print(f"script: {path} {' '.join(args)} (seed {seed})")
    verdict = "yes" if result.numbers_identical else "NO"
    print(f"numbers printed identical: {verdict} ({result.numbers_compared} numbers compared)")
    if not result.text_identical:
        print(f"first difference at {result.first_difference}")
    print(f"script time: torch {ref[4]:.3f} s, shimnn {shim[4]:.3f} s "
          f"(torch / shimnn = {ref[4] / shim[4]:.2f}x); whole process: torch {ref[3]:.2f} s, "
          f"shimnn {shim[3]:.2f} s")
    ok = result.numbers_identical and ref[0] == 0 and shim[0] == 0
    return 0 if ok else 1
