"""Convolution layers: torch's classes (constructor, init, repr, state_dict), shimnn's ops."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair, _single

from .._graph import no_dispatch
from ..ops import conv as C
from ..ops import pad as P
from ._attrs import parameter
from .module import Module

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"]


class Conv1d(torch.nn.Conv1d, Module):
    r"""``torch.nn.Conv1d`` (same arguments, defaults, weights from the same seed, repr and
    state_dict), computed and differentiated by :func:`shimnn.functional.conv1d`; a
    ``padding_mode`` other than ``'zeros'`` pads first with :func:`shimnn.functional.pad`.

    Shape: :math:`(N, C_{in}, L)` or :math:`(C_{in}, L)` -> :math:`(N, C_{out}, L_{out})`.
    """

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, parameter(self, "weight"), parameter(self, "bias"))

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            return C.conv1d(P.pad(input, self._reversed_padding_repeated_twice,
                                  mode=self.padding_mode),
                            weight, bias, self.stride, _single(0), self.dilation, self.groups)
        return C.conv1d(input, weight, bias, self.stride, self.padding, self.dilation,
                        self.groups)


class Conv2d(torch.nn.Conv2d, Module):
    r"""``torch.nn.Conv2d`` (same arguments, defaults, weights from the same seed, repr and
    state_dict), computed and differentiated by :func:`shimnn.functional.conv2d`; a
    ``padding_mode`` other than ``'zeros'`` pads first with :func:`shimnn.functional.pad`.

    Shape: :math:`(N, C_{in}, H, W)` or :math:`(C_{in}, H, W)` ->
    :math:`(N, C_{out}, H_{out}, W_{out})`.
    """

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, parameter(self, "weight"), parameter(self, "bias"))

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            return C.conv2d(P.pad(input, self._reversed_padding_repeated_twice,
                                  mode=self.padding_mode),
                            weight, bias, self.stride, _pair(0), self.dilation, self.groups)
        return C.conv2d(input, weight, bias, self.stride, self.padding, self.dilation,
                        self.groups)


class ConvTranspose1d(torch.nn.ConvTranspose1d, Module):
    r"""``torch.nn.ConvTranspose1d``, computed and differentiated by
    :func:`shimnn.functional.conv_transpose1d` (``output_size`` as torch's)."""

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose1d")
        assert isinstance(self.padding, tuple)
        with no_dispatch():  # it reads the input's sizes
            output_padding = self._output_padding(
                input, output_size, self.stride, self.padding, self.kernel_size,  # type: ignore[arg-type]
                1, self.dilation)  # type: ignore[arg-type]
        return C.conv_transpose1d(input, parameter(self, "weight"), parameter(self, "bias"),
                                  self.stride, self.padding, output_padding, self.groups,
                                  self.dilation)


class ConvTranspose2d(torch.nn.ConvTranspose2d, Module):
    r"""``torch.nn.ConvTranspose2d``, computed and differentiated by
    :func:`shimnn.functional.conv_transpose2d` (``output_size`` as torch's)."""

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        assert isinstance(self.padding, tuple)
        with no_dispatch():  # it reads the input's sizes
            output_padding = self._output_padding(
                input, output_size, self.stride, self.padding, self.kernel_size,  # type: ignore[arg-type]
                2, self.dilation)  # type: ignore[arg-type]
        return C.conv_transpose2d(input, parameter(self, "weight"), parameter(self, "bias"),
                                  self.stride, self.padding, output_padding, self.groups,
                                  self.dilation)
