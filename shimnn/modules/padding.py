"""Padding layers: torch's classes (constructor, repr), :func:`shimnn.functional.pad`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..ops import pad as F
from .module import Module

__all__ = [
    "CircularPad1d", "CircularPad2d", "CircularPad3d", "ConstantPad1d", "ConstantPad2d",
    "ConstantPad3d", "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d",
    "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d", "ZeroPad1d", "ZeroPad2d",
    "ZeroPad3d",
]


# Mixins placed before torch's class (their forward wins), ``Module`` after it (so that torch's
# ``__init__`` runs).


class _ConstantPad:
    def forward(self, input: Tensor) -> Tensor:
        m: Any = self
        return F.pad(input, m.padding, "constant", m.value)


class _ReflectionPad:
    def forward(self, input: Tensor) -> Tensor:
        m: Any = self
        return F.pad(input, m.padding, "reflect")


class _ReplicationPad:
    def forward(self, input: Tensor) -> Tensor:
        m: Any = self
        return F.pad(input, m.padding, "replicate")


class _CircularPad:
    def forward(self, input: Tensor) -> Tensor:
        m: Any = self
        m._check_input_dim(input)
        return F.pad(input, m.padding, "circular")


class ConstantPad1d(_ConstantPad, torch.nn.ConstantPad1d, Module):
    """``torch.nn.ConstantPad1d`` by :func:`shimnn.functional.pad`."""


class ConstantPad2d(_ConstantPad, torch.nn.ConstantPad2d, Module):
    """``torch.nn.ConstantPad2d`` by :func:`shimnn.functional.pad`."""


class ConstantPad3d(_ConstantPad, torch.nn.ConstantPad3d, Module):
    """``torch.nn.ConstantPad3d`` by :func:`shimnn.functional.pad`."""


class ZeroPad1d(_ConstantPad, torch.nn.ZeroPad1d, Module):
    """``torch.nn.ZeroPad1d`` by :func:`shimnn.functional.pad`."""


class ZeroPad2d(_ConstantPad, torch.nn.ZeroPad2d, Module):
    """``torch.nn.ZeroPad2d`` by :func:`shimnn.functional.pad`."""


class ZeroPad3d(_ConstantPad, torch.nn.ZeroPad3d, Module):
    """``torch.nn.ZeroPad3d`` by :func:`shimnn.functional.pad`."""


class ReflectionPad1d(_ReflectionPad, torch.nn.ReflectionPad1d, Module):
    """``torch.nn.ReflectionPad1d`` by :func:`shimnn.functional.pad`."""


class ReflectionPad2d(_ReflectionPad, torch.nn.ReflectionPad2d, Module):
    """``torch.nn.ReflectionPad2d`` by :func:`shimnn.functional.pad`."""


class ReflectionPad3d(_ReflectionPad, torch.nn.ReflectionPad3d, Module):
    """``torch.nn.ReflectionPad3d`` by :func:`shimnn.functional.pad`."""


class ReplicationPad1d(_ReplicationPad, torch.nn.ReplicationPad1d, Module):
    """``torch.nn.ReplicationPad1d`` by :func:`shimnn.functional.pad`."""


class ReplicationPad2d(_ReplicationPad, torch.nn.ReplicationPad2d, Module):
    """``torch.nn.ReplicationPad2d`` by :func:`shimnn.functional.pad`."""


class ReplicationPad3d(_ReplicationPad, torch.nn.ReplicationPad3d, Module):
    """``torch.nn.ReplicationPad3d`` by :func:`shimnn.functional.pad`."""


class CircularPad1d(_CircularPad, torch.nn.CircularPad1d, Module):
    """``torch.nn.CircularPad1d`` by :func:`shimnn.functional.pad`."""


class CircularPad2d(_CircularPad, torch.nn.CircularPad2d, Module):
    """``torch.nn.CircularPad2d`` by :func:`shimnn.functional.pad`."""


class CircularPad3d(_CircularPad, torch.nn.CircularPad3d, Module):
    """``torch.nn.CircularPad3d`` by :func:`shimnn.functional.pad`."""
