"""Upsampling and pixel-shuffle layers: torch's classes (constructor, repr), shimnn's ops."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import vision as F
from .module import Module

__all__ = ["PixelShuffle", "PixelUnshuffle", "Upsample", "UpsamplingBilinear2d",
           "UpsamplingNearest2d"]


class _Upsample:
    """A mixin before torch's class, ``Module`` after it (torch's ``__init__`` runs)."""

    def forward(self, input: Tensor) -> Tensor:
        m: torch.nn.Upsample = self  # type: ignore[assignment]
        return F.interpolate(input, m.size, m.scale_factor, m.mode, m.align_corners,
                             recompute_scale_factor=m.recompute_scale_factor)


class Upsample(_Upsample, torch.nn.Upsample, Module):
    """``torch.nn.Upsample`` by :func:`shimnn.functional.interpolate`."""


class UpsamplingNearest2d(_Upsample, torch.nn.UpsamplingNearest2d, Module):
    """``torch.nn.UpsamplingNearest2d`` by :func:`shimnn.functional.interpolate`."""


class UpsamplingBilinear2d(_Upsample, torch.nn.UpsamplingBilinear2d, Module):
    """``torch.nn.UpsamplingBilinear2d`` by :func:`shimnn.functional.interpolate`."""


class PixelShuffle(torch.nn.PixelShuffle, Module):
    """``torch.nn.PixelShuffle`` by :func:`shimnn.functional.pixel_shuffle`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.pixel_shuffle(input, self.upscale_factor)


class PixelUnshuffle(torch.nn.PixelUnshuffle, Module):
    """``torch.nn.PixelUnshuffle`` by :func:`shimnn.functional.pixel_unshuffle`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.pixel_unshuffle(input, self.downscale_factor)
