"""Padding layers: torch's classes (constructor, repr), :func:`shimnn.functional.pad`."""

from __future__ import annotations

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


class _ConstantPad(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.pad(input, self.padding, "constant", self.value)  # type: ignore[arg-type]


class _ReflectionPad(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.pad(input, self.padding, "reflect")  # type: ignore[arg-type]


class _ReplicationPad(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.pad(input, self.padding, "replicate")  # type: ignore[arg-type]


class _CircularPad(Module):
    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)  # type: ignore[operator]
        return F.pad(input, self.padding, "circular")  # type: ignore[arg-type]


class ConstantPad1d(_ConstantPad, torch.nn.ConstantPad1d):
    """``torch.nn.ConstantPad1d`` by :func:`shimnn.functional.pad`."""


class ConstantPad2d(_ConstantPad, torch.nn.ConstantPad2d):
    """``torch.nn.ConstantPad2d`` by :func:`shimnn.functional.pad`."""


class ConstantPad3d(_ConstantPad, torch.nn.ConstantPad3d):
    """``torch.nn.ConstantPad3d`` by :func:`shimnn.functional.pad`."""


class ZeroPad1d(_ConstantPad, torch.nn.ZeroPad1d):
    """``torch.nn.ZeroPad1d`` by :func:`shimnn.functional.pad`."""


class ZeroPad2d(_ConstantPad, torch.nn.ZeroPad2d):
    """``torch.nn.ZeroPad2d`` by :func:`shimnn.functional.pad`."""


class ZeroPad3d(_ConstantPad, torch.nn.ZeroPad3d):
    """``torch.nn.ZeroPad3d`` by :func:`shimnn.functional.pad`."""


class ReflectionPad1d(_ReflectionPad, torch.nn.ReflectionPad1d):
    """``torch.nn.ReflectionPad1d`` by :func:`shimnn.functional.pad`."""


class ReflectionPad2d(_ReflectionPad, torch.nn.ReflectionPad2d):
    """``torch.nn.ReflectionPad2d`` by :func:`shimnn.functional.pad`."""


class ReflectionPad3d(_ReflectionPad, torch.nn.ReflectionPad3d):
    """``torch.nn.ReflectionPad3d`` by :func:`shimnn.functional.pad`."""


class ReplicationPad1d(_ReplicationPad, torch.nn.ReplicationPad1d):
    """``torch.nn.ReplicationPad1d`` by :func:`shimnn.functional.pad`."""


class ReplicationPad2d(_ReplicationPad, torch.nn.ReplicationPad2d):
    """``torch.nn.ReplicationPad2d`` by :func:`shimnn.functional.pad`."""


class ReplicationPad3d(_ReplicationPad, torch.nn.ReplicationPad3d):
    """``torch.nn.ReplicationPad3d`` by :func:`shimnn.functional.pad`."""


class CircularPad1d(_CircularPad, torch.nn.CircularPad1d):
    """``torch.nn.CircularPad1d`` by :func:`shimnn.functional.pad`."""


class CircularPad2d(_CircularPad, torch.nn.CircularPad2d):
    """``torch.nn.CircularPad2d`` by :func:`shimnn.functional.pad`."""


class CircularPad3d(_CircularPad, torch.nn.CircularPad3d):
    """``torch.nn.CircularPad3d`` by :func:`shimnn.functional.pad`."""
