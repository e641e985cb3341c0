"""Run unmodified PyTorch programs with shimnn (``shimnn run``) and compare (``shimnn compare``).

What runs (a :class:`Target`), as Python itself would run it:

- ``shimnn run SCRIPT [args]``: the file as ``__main__`` (``python SCRIPT``);
- ``shimnn run -m MODULE [args]``: a module or a package's ``__main__`` as ``__main__``
  (``python -m MODULE``): ``-m pytest tests/``, ``-m torch.distributed.run --nproc-per-node 2
  train.py``, ``-m mypackage.train``;
- ``shimnn run NAME [args]``, when ``NAME`` is not a file: an installed console script
  (``pytest``, ``torchrun``: a package's ``console_scripts`` entry point);
- ``shimnn run --nproc-per-node N SCRIPT [args]`` (or ``-m MODULE``): the program as N
  processes on this machine, exactly as ``torchrun --standalone --nproc-per-node N SCRIPT``
  starts them (the command line turns into ``-m torch.distributed.run --standalone
  --nproc-per-node=N SCRIPT args``; ``shimnn compare --nproc-per-node N`` likewise).

How the patch reaches every process of the program (the mechanism multi-process work builds on):

1. **This process**: :func:`shimnn.patch_torch` is entered while the program runs and left
   afterwards, so torch's names that shimnn implements are shimnn's (``torch.nn.Linear``...).
2. **Every Python interpreter the program starts** (torchrun's workers, multiprocessing
   ``spawn`` children, ``subprocess.run([sys.executable, ...])``): for the run, two environment
   variables are set, which children inherit:

   - ``SHIMNN_PATCH_TORCH=1`` (:data:`PATCH_ENV`);
   - ``PYTHONPATH`` with shimnn's bootstrap directory first (:data:`BOOTSTRAP_DIR`,
     ``shimnn/_bootstrap``).

   Python's ``site`` imports ``sitecustomize`` at startup; the bootstrap directory holds one
   that first runs the ``sitecustomize`` it shadows (an environment's own still runs) and then,
   with ``SHIMNN_PATCH_TORCH=1``, adds an import hook that enters :func:`shimnn.patch_torch`
   for the life of the process right after ``torch`` is first imported (or, when importing
   shimnn is what imports torch, right after shimnn's import). A child that never imports torch
   pays nothing; one whose Python cannot import shimnn prints a warning and runs torch's names.
   Nothing is installed anywhere: the variables exist only in the program's environment, and
   this process restores its own environment afterwards.
   A pytest run anywhere below reports in its header that shimnn serves torch (the plugin
   ``shimnn.testing.plugin``: an installed ``pytest11`` entry point, else named in
   ``PYTEST_PLUGINS`` for the run).
3. **Forked children** (multiprocessing ``fork``, DataLoader workers on Linux) inherit the
   patched interpreter as it is.

Limits: ``python -S`` (no ``site``) and ``python -I`` (isolated: ``PYTHONPATH`` ignored)
children are not patched, and neither is a child whose environment is built from scratch
without these variables (``env={...}`` passed to ``subprocess`` without ``os.environ``).
``--seed`` seeds this process only. ``shimnn run --torch`` and
``shimnn compare``'s torch run remove the variables, so nothing below them is patched.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import runpy
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["BOOTSTRAP_DIR", "PATCH_ENV", "Comparison", "Target", "child_environment",
           "compare_outputs", "compare_script", "compare_target", "find_console_script",
           "run_module", "run_script", "run_target"]

_TIME_ENV = "SHIMNN_SCRIPT_SECONDS_FILE"
PATCH_ENV = "SHIMNN_PATCH_TORCH"
"""Set to ``1`` for a program run by ``shimnn run``: its Python children patch torch."""
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
"""The directory whose ``sitecustomize`` patches torch in children (first on PYTHONPATH)."""
_PLUGIN = "shimnn.testing.plugin"


@dataclass(frozen=True)
class Target:
    """A program to run: a script path, a module name (``-m``) or a console script name."""

    kind: Literal["script", "module", "console_script"]
    name: str

    def argv(self) -> list[str]:
        """The arguments that select it on a ``shimnn run`` command line."""
        return ["-m", self.name] if self.kind == "module" else [self.name]

    def __str__(self) -> str:
        return " ".join(self.argv())


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


def find_console_script(name: str) -> str | None:
    """The ``module:function`` of the installed console script ``name``, or None."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="console_scripts", name=name):
        return str(ep.value)
    return None


def _plugin_installed() -> bool:
    """Whether shimnn's pytest plugin is an installed ``pytest11`` entry point."""
    from importlib.metadata import entry_points

    return any(ep.value == _PLUGIN for ep in entry_points(group="pytest11"))


def _without_bootstrap(pythonpath: str) -> str:
    return os.pathsep.join(p for p in pythonpath.split(os.pathsep)
                           if p and os.path.abspath(p) != BOOTSTRAP_DIR)


@contextlib.contextmanager
def child_environment(use_shimnn: bool) -> Iterator[None]:
    """Within the block, Python processes started from here patch torch (``use_shimnn``) or
    certainly do not (the variables removed); ``os.environ`` is restored afterwards."""
    names = (PATCH_ENV, "PYTHONPATH", "PYTEST_PLUGINS")
    saved: dict[str, str | None] = {k: os.environ.get(k) for k in names}
    path = _without_bootstrap(os.environ.get("PYTHONPATH", ""))
    plugins = [p for p in os.environ.get("PYTEST_PLUGINS", "").split(",") if p and p != _PLUGIN]
    try:
        if use_shimnn:
            os.environ[PATCH_ENV] = "1"
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (BOOTSTRAP_DIR, path) if p)
            if not _plugin_installed():  # else pytest loads it through its entry point
                os.environ["PYTEST_PLUGINS"] = ",".join([*plugins, _PLUGIN])
        else:
            os.environ.pop(PATCH_ENV, None)
            for key, value in (("PYTHONPATH", path), ("PYTEST_PLUGINS", ",".join(plugins))):
                if value:
                    os.environ[key] = value
                else:
                    os.environ.pop(key, None)
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _exit_status(code: object) -> int:
    """What ``sys.exit(code)`` makes the process's exit status (a message goes to stderr)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _execute(target: Target, args: Sequence[str]) -> None:
    if target.kind == "script":
        sys.argv = [target.name, *args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(target.name)))
        runpy.run_path(target.name, run_name="__main__")
    elif target.kind == "module":
        sys.argv = ["-m", *args]  # run_module puts the module's path in argv[0], as python -m
        sys.path.insert(0, os.getcwd())
        runpy.run_module(target.name, run_name="__main__", alter_sys=True)
    else:
        from importlib.metadata import entry_points

        found = tuple(entry_points(group="console_scripts", name=target.name))
        if not found:
            raise SystemExit(f"shimnn run: no console script named {target.name!r}")
        sys.argv = [target.name, *args]
        sys.exit(found[0].load()())


def run_target(target: Target, args: Sequence[str], *, seed: int | None = None,
               use_shimnn: bool = True) -> int:
    """Run ``target`` with ``sys.argv`` set as Python would; returns its exit status.

    With ``use_shimnn`` torch's names that shimnn implements are shimnn's for the run, in this
    process and in every Python process it starts (see the module docstring); everything is
    restored afterwards. Seeds are set only if ``seed`` is given.
    """
    import shimnn

    saved_argv, saved_path = sys.argv, list(sys.path)
    if seed is not None:
        seed_everything(seed)
    start = time.perf_counter()
    status = 0
    try:
        with child_environment(use_shimnn), (
                shimnn.patch_torch() if use_shimnn else contextlib.nullcontext()):
            _execute(target, args)
    except SystemExit as exit_:
        status = _exit_status(exit_.code)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.stdout.flush()
        timing_file = os.environ.get(_TIME_ENV)
        if timing_file:
            with open(timing_file, "w") as f:
                f.write(repr(time.perf_counter() - start))
    return status


def run_script(path: str, args: Sequence[str], *, seed: int | None = None,
               use_shimnn: bool = True) -> int:
    """Run the file ``path`` as ``__main__`` (``python path args``): :func:`run_target`."""
    return run_target(Target("script", path), args, seed=seed, use_shimnn=use_shimnn)


def run_module(name: str, args: Sequence[str], *, seed: int | None = None,
               use_shimnn: bool = True) -> int:
    """Run module ``name`` as ``__main__`` (``python -m name args``): :func:`run_target`."""
    return run_target(Target("module", name), args, seed=seed, use_shimnn=use_shimnn)


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


def _run_child(target: Target, args: Sequence[str], seed: int, use_shimnn: bool
               ) -> tuple[int, str, str, float, float]:
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".txt", delete=False) as timing:
        timing_path = timing.name
    command = [sys.executable, "-m", "shimnn", "run", "--seed", str(seed)]
    if not use_shimnn:
        command.append("--torch")
    start = time.perf_counter()
    with child_environment(use_shimnn=False):  # each child sets up its own run
        env = dict(os.environ, **{_TIME_ENV: timing_path})
        done = subprocess.run([*command, *target.argv(), *args], capture_output=True,
                              text=True, env=env)
    wall = time.perf_counter() - start
    try:
        with open(timing_path) as f:
            script_seconds = float(f.read() or "nan")
    finally:
        os.unlink(timing_path)
    return done.returncode, done.stdout, done.stderr, wall, script_seconds


def compare_target(target: Target, args: Sequence[str], *, seed: int = 0) -> int:
    """Run ``target`` under torch then under shimnn (fresh processes, same seeds); report."""
    ref = _run_child(target, args, seed, use_shimnn=False)
    shim = _run_child(target, args, seed, use_shimnn=True)
    failed = [label for label, run in (("torch", ref), ("shimnn", shim)) if run[0] != 0]
    for label, (status, _, err, _, _) in (("torch", ref), ("shimnn", shim)):
        if status != 0:
            print(f"{label} run failed (exit status {status}):\n{err}", file=sys.stderr)
    result = compare_outputs(ref[1], shim[1])
    print(f"{'module' if target.kind == 'module' else 'script'}: {target.name} "
          f"{' '.join(args)} (seed {seed})")
    if failed:
        # A failed run's output and time say nothing about parity or speed.
        print(f"failed: the {' and the '.join(failed)} run exited with an error (above); "
              f"nothing compared")
        return 1
    verdict = "yes" if result.numbers_identical else "NO"
    print(f"numbers printed identical: {verdict} ({result.numbers_compared} numbers compared)")
    if not result.text_identical:
        print(f"first difference at {result.first_difference}")
    print(f"script time: torch {ref[4]:.3f} s, shimnn {shim[4]:.3f} s "
          f"(torch / shimnn = {ref[4] / shim[4]:.2f}x); whole process: torch {ref[3]:.2f} s, "
          f"shimnn {shim[3]:.2f} s")
    return 0 if result.numbers_identical else 1


def compare_script(path: str, args: Sequence[str], *, seed: int = 0) -> int:
    """:func:`compare_target` for the script ``path``."""
    return compare_target(Target("script", path), args, seed=seed)
