"""Dropout layers."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import activation as F
from .module import Module

__all__ = ["Dropout", "Dropout1d", "Dropout2d"]


class _DropoutNd(Module, torch.nn.modules.dropout._DropoutNd):
    __constants__ = ["p", "inplace"]
    p: float
    inplace: bool

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd, torch.nn.Dropout):
    r"""In training, zero each element with probability ``p`` and scale the others by
    :math:`1/(1-p)`; in eval mode (``.eval()``), the identity.

    The mask is drawn from torch's global generator exactly as ``torch.nn.Dropout`` draws it on
    CPU: the same seed gives the same mask, and leaves the generator in the same state.

    Args:
        p: probability of an element to be zeroed. Default: 0.5. Outside :math:`[0, 1]` it
            raises torch's ValueError.
        inplace: overwrite the input. Default: ``False``.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.dropout`.

    A fused ``Sequential`` does not chain it (the chain runs unfused): in eval mode it returns
    its input itself, which an in-place layer after it must not overwrite unrecorded.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)


class Dropout1d(torch.nn.Dropout1d, Module):
    r"""``torch.nn.Dropout1d``: in training, zero whole channels of ``(N, C, L)`` or ``(C, L)``
    with probability ``p`` (one draw per channel from torch's global generator, as torch) and
    scale the others by :math:`1/(1-p)`. Backward: see :func:`shimnn.functional.dropout1d`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(torch.nn.Dropout2d, Module):
    r"""``torch.nn.Dropout2d``: in training, zero whole channels of ``(N, C, H, W)`` with
    probability ``p`` (one draw per channel, as torch; a 3-d input is taken as ``(N, C, L)``
    with torch's warning) and scale the others by :math:`1/(1-p)`.
    Backward: see :func:`shimnn.functional.dropout2d`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout2d(input, self.p, self.training, self.inplace)
