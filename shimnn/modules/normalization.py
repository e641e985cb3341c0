"""Layer, group and RMS normalization layers: torch's classes (constructor, init, repr,
state_dict), shimnn's ops."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import norm as F
from ._attrs import parameter
from .module import Module

__all__ = ["GroupNorm", "LayerNorm", "RMSNorm"]


class LayerNorm(torch.nn.LayerNorm, Module):
    r"""``torch.nn.LayerNorm`` (``elementwise_affine``, ``bias``), computed and
    differentiated by :func:`shimnn.functional.layer_norm`.

    Shape: :math:`(*, \text{normalized\_shape})`, unchanged.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, parameter(self, "weight"),
                            parameter(self, "bias"), self.eps)


class GroupNorm(torch.nn.GroupNorm, Module):
    r"""``torch.nn.GroupNorm``, computed and differentiated by
    :func:`shimnn.functional.group_norm`. Shape: :math:`(N, C, *)`, unchanged."""

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, parameter(self, "weight"),
                            parameter(self, "bias"), self.eps)


class RMSNorm(torch.nn.RMSNorm, Module):
    r"""``torch.nn.RMSNorm``, computed and differentiated by
    :func:`shimnn.functional.rms_norm`. Shape: :math:`(*, \text{normalized\_shape})`."""

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, parameter(self, "weight"), self.eps)
