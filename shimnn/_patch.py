"""Serve shimnn's implementations under torch's own names, for unmodified scripts.

``with shimnn.patch_torch():`` replaces, for the duration of the block, every public name
shimnn implements in ``torch.nn`` (classes and ``Parameter``), ``torch.nn.functional`` and
``torch.optim`` by shimnn's, however a script reaches them (``import torch.nn as nn``,
``from torch import nn``, ``torch.nn.Linear``, ``from torch.nn import functional as F``,
``torch.optim.SGD``). Names shimnn lacks stay torch's: if a gradient would flow through one of
them, the backward raises an error naming it. ``torch.nn.Module`` stays torch's class (torch
itself checks ``isinstance(x, Module)`` against it); shimnn layers work inside any
``torch.nn.Module``. Nothing here touches a random number generator.

The patch is process-wide (not thread-safe): use it around a whole script or notebook cell.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch

__all__ = ["is_patched", "patch_torch", "patched_names"]

# shimnn names that are not a torch.nn replacement.
_KEEP_TORCH = {"Module", "Node", "TrackedTensor", "functional", "optim", "init", "patch_torch",
               "Function", "FunctionCtx"}


def _replacements() -> list[tuple[ModuleType, str, Any]]:
    import shimnn
    import shimnn.functional
    import shimnn.optim

    out: list[tuple[ModuleType, str, Any]] = []
    targets = ((torch.nn, shimnn), (torch.nn.functional, shimnn.functional),
               (torch.optim, shimnn.optim))
    for torch_module, shim_module in targets:
        for name in shim_module.__all__:
            if name in _KEEP_TORCH or name.startswith("_") or not hasattr(torch_module, name):
                continue
            value = getattr(shim_module, name)
            if value is getattr(torch_module, name) or isinstance(value, ModuleType):
                continue  # shimnn re-exports torch's own object (Optimizer, lr_scheduler...)
            out.append((torch_module, name, value))
    return out


_served: list[list[str]] = []  # the names each open patch_torch block replaced, outermost first


def patched_names() -> list[str]:
    """The torch names :func:`patch_torch` serves from shimnn (``torch.nn.Linear``...)."""
    if _served:
        return list(_served[0])
    return [f"{m.__name__}.{name}" for m, name, _ in _replacements()]


def is_patched() -> bool:
    """Whether shimnn serves torch's names now (inside :func:`patch_torch`, ``shimnn run``)."""
    return bool(_served)


@contextlib.contextmanager
def patch_torch() -> Iterator[None]:
    """Within the block, torch's names that shimnn implements are shimnn's; restored after."""
    from ._graph import HANDLED, MAY_MUTATE

    saved = []
    entered = False
    try:
        for module, name, value in _replacements():
            original = getattr(module, name)
            saved.append((module, name, original))
            setattr(module, name, value)
            op = HANDLED.get(original)
            if op is not None:
                # torch's own functions dispatch on their module's global name
                # (handle_torch_function(relu, ...)), which is shimnn's while patched.
                HANDLED.setdefault(value, op)
                if original in MAY_MUTATE:
                    MAY_MUTATE.add(value)
        # Nested in another block, nothing is left to replace: the outer block's names count.
        _served.append([f"{m.__name__}.{name}" for m, name, _ in saved])
        entered = True
        yield
    finally:
        if entered:
            _served.pop()
        for module, name, original in reversed(saved):
            setattr(module, name, original)
