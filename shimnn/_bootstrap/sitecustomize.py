"""shimnn's bootstrap for Python processes started under ``shimnn run`` (see shimnn/runner.py).

``shimnn run`` puts this directory first on ``PYTHONPATH`` and sets ``SHIMNN_PATCH_TORCH=1``;
every Python interpreter started below it (torchrun's workers, multiprocessing "spawn" children,
``subprocess.run([sys.executable, ...])``) imports this ``sitecustomize`` at startup. It

1. runs the ``sitecustomize`` it shadows, if the environment has one, so that still happens;
2. when ``SHIMNN_PATCH_TORCH=1``, installs an import hook that enters ``shimnn.patch_torch()``
   for the rest of the process right after ``torch`` is first imported, or after ``shimnn``'s
   own import when that is what imports torch (a child that never imports torch pays nothing,
   and torch is never imported early). Whether shimnn is still importing is read from its
   module spec's ``_initializing`` flag, which importlib sets while a module executes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_ENV = "SHIMNN_PATCH_TORCH"


def _run_shadowed_sitecustomize() -> None:
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


class _PatchAfterTorch(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loaders of ``torch`` and ``shimnn`` so that the patch
    follows the import of torch, or, when importing shimnn is what imports torch (``import
    shimnn as nn`` first), the end of shimnn's own import."""

    def __init__(self) -> None:
        self.torch_loaded = False
        self.done = False

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in ("torch", "shimnn") or self.done:
            return None
        sys.meta_path.remove(self)  # find the real spec, without finding ourselves
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module: ModuleType) -> None:
            exec_module(module)
            if fullname == "torch":
                self.torch_loaded = True
            self.patch(shimnn_done=fullname == "shimnn")

        spec.loader.exec_module = exec_then_patch  # type: ignore[method-assign]
        return spec

    def patch(self, shimnn_done: bool = False) -> None:
        if self.done or not self.torch_loaded:
            return
        shim = sys.modules.get("shimnn")
        if not shimnn_done and shim is not None and getattr(shim.__spec__, "_initializing",
                                                            False):
            return  # shimnn is importing torch: patch when shimnn's import ends
        self.done = True
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            import shimnn
        except ImportError as exc:  # another environment's Python, without shimnn
            sys.stderr.write(f"shimnn: {_ENV}=1, but shimnn cannot be imported in "
                             f"{sys.executable} ({exc}); torch is not patched here\n")
            return
        global _patch
        _patch = shimnn.patch_torch()  # held open for the life of the process
        _patch.__enter__()


_patch: Any = None

_run_shadowed_sitecustomize()
if os.environ.get(_ENV) == "1" and "torch" not in sys.modules:
    sys.meta_path.insert(0, _PatchAfterTorch())
