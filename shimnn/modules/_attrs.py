"""Reading a module's parameters and buffers without ``torch.nn.Module.__getattr__``'s cost."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["buffer", "parameter"]

_MISSING = object()


def parameter(module: torch.nn.Module, name: str) -> Any:
    """``module.<name>`` for a registered parameter (or ``None`` registered in its place),
    read from ``module._parameters`` where ``__getattr__`` would find it; anything else
    (a parametrization's property, weight norm's plain attribute) by ordinary lookup."""
    value = module._parameters.get(name, _MISSING)
    return getattr(module, name) if value is _MISSING else value


def buffer(module: torch.nn.Module, name: str) -> Any:
    """``module.<name>`` for a registered buffer (see :func:`parameter`)."""
    value = module._buffers.get(name, _MISSING)
    return getattr(module, name) if value is _MISSING else value
