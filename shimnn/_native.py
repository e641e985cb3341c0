"""shimnn's optional compiled fast paths (``shimnn/csrc/native.cpp``).

The same ATen kernels, in the same order, as the Python code they replace, called from C++ so
that a small network does not pay Python's cost per kernel call: the numbers are identical
with or without them (the test suite runs both). Built once per source, torch and Python
version (the cache key) with torch's C++ extension builder (a C++ compiler and ninja:
``pip install "shimnn[native]"``) into :func:`cache_root`.

The first use never waits for the compiler: it starts the build in a separate background
process (about 26 s of compiler CPU time; 64-85 s of wall time measured on a busy 2-core
machine) and runs the Python paths meanwhile; the process switches to the compiled paths when
they are ready, and later processes load them directly. A failed build is remembered for its
cache key and reported once, naming the command that retries it (``shimnn native``, which
builds in the foreground and prints the compiler's error).

``SHIMNN_NATIVE=0`` disables the compiled paths; ``SHIMNN_NATIVE=1`` builds them in the
foreground and makes a failed build an error (the test suite runs that way).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: builds are not serialised
    fcntl = None  # type: ignore[assignment]

__all__ = ["build", "cache_root", "get", "set_enabled", "status"]

_SOURCE = Path(__file__).with_name("csrc") / "native.cpp"
# -DNDEBUG: a release build, as torch's (no debug-only checks in the inlined c10 and pybind11
# code: pybind11 otherwise asks for the GIL's state at every reference count change);
# -ffp-contract=off: a fused multiply-add only where the source writes one (csrc/fused.h:
# torch's roundings, and the double arithmetic Python does unfused).
_FLAGS = ["-O2", "-DNDEBUG", "-ffp-contract=off"]
_NAME = "shimnn_native"
_POLL_SECONDS = 1.0  # how often a process waiting for a background build looks for it
RETRY = "`shimnn native` retries the build and shows the compiler's error"
# The background builder (not `-m shimnn._native`: the package imports this module first).
_CHILD = "import sys; from shimnn._native import _main; sys.exit(_main(sys.argv[1:]))"

_module: ModuleType | None = None
_tried = False
_reason = "not loaded yet"
_enabled = os.environ.get("SHIMNN_NATIVE", "") != "0"
_building: Path | None = None  # the build directory a background build is filling
_next_poll = 0.0


def _build_dir() -> Path:
    key = hashlib.sha256()
    for source in sorted(_SOURCE.parent.iterdir()):  # native.cpp and the headers it includes
        if source.suffix in (".cpp", ".h"):
            key.update(source.name.encode() + source.read_bytes())
    key.update(f"{torch.__version__}|{sys.version}|{_FLAGS}".encode())
    return cache_root() / f"native-{key.hexdigest()[:16]}"


def cache_root() -> Path:
    """Where compiled code is kept: ``$SHIMNN_CACHE``, else ``$XDG_CACHE_HOME/shimnn``, else
    ``~/.cache/shimnn``."""
    explicit = os.environ.get("SHIMNN_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shimnn"


def _library(build_dir: Path) -> Path:
    return build_dir / f"{_NAME}.so"


def _failure(build_dir: Path) -> Path:
    """Written when a build fails: the reason, one line, then the log's path."""
    return build_dir / "FAILED"


@contextlib.contextmanager
def _build_lock(build_dir: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on the build directory (one build at a time, across processes);
    yields whether it was taken (always, when ``wait``)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield True
        return
    with open(build_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_library(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(_NAME, str(path))
    spec = importlib.util.spec_from_file_location(_NAME, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _compile(build_dir: Path, log: TextIO | None) -> ModuleType:
    """Run torch's extension builder into ``build_dir`` and import the result (raises on
    failure; the compiler's output goes to ``log`` when given, else into the error)."""
    from torch.utils import cpp_extension

    bin_dir = os.path.dirname(sys.executable)  # where `pip install ninja` puts it
    if shutil.which("ninja") is None and shutil.which("ninja", path=bin_dir):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    out = log or sys.stderr
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        return cpp_extension.load(_NAME, [str(_SOURCE)], extra_cflags=_FLAGS,  # type: ignore[no-any-return]
                                  build_directory=str(build_dir), verbose=log is not None)


def _summarize(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if "error" in line.lower()]
    return f"{type(error).__name__}: {(lines or [str(error)] or [''])[-1].strip()}"


def build(build_dir: Path | None = None, log: TextIO | None = None, log_path: str = ""
          ) -> tuple[float, ModuleType | None]:
    """Build the compiled paths now, in this process (after any build another process is
    running). Returns the seconds spent compiling and the module it imported, or (0, None)
    when they were already built. A failure is written to the directory's ``FAILED`` file
    (with ``log_path``) and raised."""
    build_dir = build_dir or _build_dir()
    with _build_lock(build_dir, wait=True):
        if _library(build_dir).exists():
            return 0.0, None
        _failure(build_dir).unlink(missing_ok=True)
        (build_dir / "FAILED.reported").unlink(missing_ok=True)
        start = time.monotonic()
        try:
            module = _compile(build_dir, log)
        except Exception as error:
            where = f"; log: {log_path}" if log_path else ""
            _failure(build_dir).write_text(_summarize(error) + where + "\n")
            raise
        seconds = time.monotonic() - start
        (build_dir / "build-seconds").write_text(f"{seconds:.1f}\n")
        return seconds, module


def _built(build_dir: Path, module: ModuleType | None) -> ModuleType:
    """The module :func:`build` imported, else the library loaded from ``build_dir``."""
    return module if module is not None else _load_library(_library(build_dir))


def _start_background_build(build_dir: Path) -> None:
    """Start ``_main(["build", DIR, SOURCE])`` in a Python process of its own session (it
    outlives this process if needed), with its output in ``DIR/build.log``."""
    with _build_lock(build_dir, wait=False) as free:
        if not free:
            return  # another process is building it: wait for that one
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHIMNN_PATCH_TORCH", "SHIMNN_NATIVE")}
    with open(build_dir / "build.log", "w") as log:
        subprocess.Popen([sys.executable, "-c", _CHILD, "build", str(build_dir), str(_SOURCE)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         env=env, start_new_session=True, close_fds=True)


def _note(message: str) -> None:
    print(f"shimnn: {message}", file=sys.stderr, flush=True)


def _report_failure(build_dir: Path) -> None:
    """Remember the failure; say so once per cache key (the first process that sees it)."""
    global _reason
    reason = _failure(build_dir).read_text().strip()
    _reason = f"unavailable (build failed: {reason}; {RETRY})"
    marker = build_dir / "FAILED.reported"
    try:
        with open(marker, "x"):
            pass
    except FileExistsError:
        return
    _note(f"the compiled fast paths could not be built ({reason}); running the Python paths "
          f"(same numbers, slower). {RETRY}; SHIMNN_NATIVE=0 skips them.")


def _first_load() -> ModuleType | None:
    """What :func:`get` does the first time: load, build in the foreground
    (``SHIMNN_NATIVE=1``), or start a background build and return None."""
    global _reason, _building
    build_dir = _build_dir()
    if _library(build_dir).exists():
        return _load_library(_library(build_dir))
    if os.environ.get("SHIMNN_NATIVE") == "1":
        try:
            _, module = build(build_dir)
        except Exception as error:
            _reason = f"unavailable ({_summarize(error)})"
            raise RuntimeError(f"shimnn: SHIMNN_NATIVE=1, but the native fast paths are "
                               f"{_reason}") from error
        return _built(build_dir, module)
    if _failure(build_dir).exists():
        _report_failure(build_dir)
        return None
    _start_background_build(build_dir)
    _building = build_dir
    _reason = f"being built in the background (log: {build_dir / 'build.log'})"
    _note("building the compiled fast paths in the background (once per torch and Python "
          "version; about 30 s to 1.5 min); the Python paths run meanwhile, same numbers. "
          "`shimnn native` builds them in the foreground.")
    return None


def _poll() -> None:
    """While a background build runs: pick up its result."""
    global _module, _building, _next_poll, _reason
    assert _building is not None
    _next_poll = time.monotonic() + _POLL_SECONDS
    build_dir = _building
    if _library(build_dir).exists():
        with _build_lock(build_dir, wait=False) as free:
            if not free:
                return  # still writing it
        _building = None
        try:
            _module = _load_library(_library(build_dir))
        except Exception as error:
            _reason = f"unavailable ({_summarize(error)})"
    elif _failure(build_dir).exists():
        _building = None
        _report_failure(build_dir)


def get() -> Any:
    """The compiled module, or ``None`` (disabled, not built yet, or it could not be built)."""
    global _module, _tried, _reason
    if not _enabled:
        return None
    if _module is None:
        if not _tried:
            _tried = True
            try:
                _module = _first_load()
            except RuntimeError:
                raise
            except Exception as error:  # an unloadable library, an unwritable cache
                _reason = f"unavailable ({_summarize(error)})"
                _note(f"the compiled fast paths are {_reason}; running the Python paths "
                      "(same numbers, slower).")
        elif _building is not None and time.monotonic() >= _next_poll:
            _poll()
    return _module


def set_enabled(enabled: bool) -> bool:
    """Use the compiled paths or not (the tests run both); returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, enabled
    return previous


def status() -> str:
    """One line: whether the compiled paths are in use, and why not."""
    if not _enabled:
        return "native fast paths: disabled (SHIMNN_NATIVE=0 or set_enabled(False))"
    return "native fast paths: " + ("in use" if get() is not None else _reason)


def build_now() -> tuple[bool, str]:
    """``shimnn native``: build in the foreground (retrying a remembered failure), load, and
    return (in use, a status line with the compile time)."""
    global _module, _tried, _reason, _building
    if not _enabled:
        return False, status()
    _tried, _building = True, None
    build_dir = _build_dir()
    try:
        seconds, module = build(build_dir)
        _module = _built(build_dir, module)
    except Exception as error:
        _reason = f"unavailable ({_summarize(error)})"
        print(str(error).rstrip(), file=sys.stderr)  # the compiler's own output
        return False, "native fast paths: " + _reason
    took = f" (built in {seconds:.0f} s)" if seconds else ""
    return True, f"native fast paths: in use{took}"


def _main(argv: list[str]) -> int:
    """``build DIR SOURCE``: the background build (of the source the starting process hashed
    into DIR's name)."""
    global _SOURCE
    if len(argv) != 3 or argv[0] != "build":
        print("usage: python -m shimnn._native build BUILD_DIR SOURCE", file=sys.stderr)
        return 2
    build_dir, _SOURCE = Path(argv[1]), Path(argv[2])
    try:
        build(build_dir, log=sys.stdout, log_path=str(build_dir / "build.log"))
    except Exception as error:
        print(error)
        return 1
    return 0


if __name__ == "__main__":  # python -m shimnn._native build DIR SOURCE
    sys.exit(_main(sys.argv[1:]))
