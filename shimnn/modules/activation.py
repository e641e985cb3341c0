"""Element-wise activations."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import functional as F
from .container import CHAIN_STEPS, RELU, TANH
from .module import Module

__all__ = ["ReLU", "Tanh"]


class ReLU(Module):
    r"""Apply :math:`\text{ReLU}(x) = \max(0, x)` element-wise.

    Args:
        inplace: overwrite the input instead of allocating the output. Default: ``False``.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.relu`.
    """

    __constants__ = ["inplace"]
    inplace: bool

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Tanh(Module):
    r"""Apply :math:`\tanh(x)` element-wise.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.tanh`.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class _ReLUChainStep:
    """How a fused ``Sequential`` runs a ``ReLU`` (see ``container.CHAIN_STEPS``)."""

    kind = RELU

    @staticmethod
    def step(m: ReLU, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        forward = F.relu_inplace_forward if m.inplace else F.relu_forward
        return (*forward(input), ())

    @staticmethod
    def plain(m: ReLU, input: Tensor) -> Tensor:
        return torch.relu_(input) if m.inplace else torch.relu(input)


class _TanhChainStep:
    """How a fused ``Sequential`` runs a ``Tanh`` (see ``container.CHAIN_STEPS``)."""

    kind = TANH

    @staticmethod
    def step(m: Tanh, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        return (*F.tanh_forward(input), ())

    @staticmethod
    def plain(m: Tanh, input: Tensor) -> Tensor:
        return torch.tanh(input)


CHAIN_STEPS[ReLU] = _ReLUChainStep
CHAIN_STEPS[Tanh] = _TanhChainStep
