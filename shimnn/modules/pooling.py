"""Pooling layers: torch's classes (constructor, repr), shimnn's ops."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..ops import pool as F
from .module import Module

__all__ = ["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
           "AvgPool1d", "AvgPool2d", "MaxPool1d", "MaxPool2d"]


class MaxPool1d(torch.nn.MaxPool1d, Module):
    """``torch.nn.MaxPool1d`` by :func:`shimnn.functional.max_pool1d`."""

    def forward(self, input: Tensor) -> Any:
        return F.max_pool1d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class MaxPool2d(torch.nn.MaxPool2d, Module):
    """``torch.nn.MaxPool2d`` by :func:`shimnn.functional.max_pool2d`."""

    def forward(self, input: Tensor) -> Any:
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool1d(torch.nn.AvgPool1d, Module):
    """``torch.nn.AvgPool1d`` by :func:`shimnn.functional.avg_pool1d`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)


class AvgPool2d(torch.nn.AvgPool2d, Module):
    """``torch.nn.AvgPool2d`` by :func:`shimnn.functional.avg_pool2d`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool1d(torch.nn.AdaptiveAvgPool1d, Module):
    """``torch.nn.AdaptiveAvgPool1d`` by :func:`shimnn.functional.adaptive_avg_pool1d`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool1d(input, self.output_size)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d, Module):
    """``torch.nn.AdaptiveAvgPool2d`` by :func:`shimnn.functional.adaptive_avg_pool2d`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool1d(torch.nn.AdaptiveMaxPool1d, Module):
    """``torch.nn.AdaptiveMaxPool1d`` by :func:`shimnn.functional.adaptive_max_pool1d`."""

    def forward(self, input: Tensor) -> Any:
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d, Module):
    """``torch.nn.AdaptiveMaxPool2d`` by :func:`shimnn.functional.adaptive_max_pool2d`."""

    def forward(self, input: Tensor) -> Any:
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)
