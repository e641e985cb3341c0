"""Element-wise activations."""

from __future__ import annotations

from torch import Tensor

from .. import functional as F
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
