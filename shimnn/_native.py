"""shimnn's optional compiled fast paths (``shimnn/csrc/native.cpp``).

The same ATen kernels, in the same order, as the Python code they replace, called from C++ so
that a small network does not pay Python's cost per kernel call: the numbers are identical
with or without them (the test suite runs both). Built once per source, torch and Python
version with torch's C++ extension builder into :func:`cache_root` on first use; about 30 s
with a C++ compiler and ninja. Without them shimnn runs its Python paths.

``SHIMNN_NATIVE=0`` disables the compiled paths, ``SHIMNN_NATIVE=1`` makes a failed build an
error instead of a fallback.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

__all__ = ["cache_root", "get", "set_enabled", "status"]

_SOURCE = Path(__file__).with_name("csrc") / "native.cpp"
_FLAGS = ["-O2"]

_module: ModuleType | None = None
_tried = False
_reason = "not loaded yet"
_enabled = os.environ.get("SHIMNN_NATIVE", "") != "0"


def _build_dir() -> Path:
    key = hashlib.sha256()
    key.update(_SOURCE.read_bytes())
    key.update(f"{torch.__version__}|{sys.version}|{_FLAGS}".encode())
    return cache_root() / f"native-{key.hexdigest()[:16]}"


def cache_root() -> Path:
    """Where compiled code is kept: ``$SHIMNN_CACHE``, else ``$XDG_CACHE_HOME/shimnn``, else
    ``~/.cache/shimnn``."""
    explicit = os.environ.get("SHIMNN_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shimnn"


def _load() -> ModuleType:
    build_dir = _build_dir()
    name = "shimnn_native"
    path = build_dir / f"{name}.so"
    if not path.exists():
        from torch.utils import cpp_extension

        bin_dir = os.path.dirname(sys.executable)  # where `pip install ninja` puts it
        if shutil.which("ninja") is None and shutil.which("ninja", path=bin_dir):
            os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        build_dir.mkdir(parents=True, exist_ok=True)
        print("shimnn: compiling the native fast paths (once; about 30 s)...", file=sys.stderr,
              flush=True)
        return cpp_extension.load(name, [str(_SOURCE)], extra_cflags=_FLAGS,
                                  build_directory=str(build_dir), verbose=False)
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def get() -> Any:
    """The compiled module, or ``None`` (disabled, or it could not be built)."""
    global _module, _tried, _reason
    if not _enabled:
        return None
    if not _tried:
        _tried = True
        try:
            _module = _load()
        except Exception as error:  # no compiler, no ninja, a failed build: Python paths
            lines = [line for line in str(error).splitlines() if "error" in line.lower()]
            _reason = f"unavailable ({type(error).__name__}: {(lines or [str(error)])[-1]})"
            if os.environ.get("SHIMNN_NATIVE") == "1":
                raise RuntimeError(f"shimnn: SHIMNN_NATIVE=1, but the native fast paths are "
                                   f"{_reason}") from error
            print(f"shimnn: the native fast paths are {_reason}; running the Python paths "
                  "(same numbers, slower). SHIMNN_NATIVE=0 skips the attempt.", file=sys.stderr,
                  flush=True)
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
