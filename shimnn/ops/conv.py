"""``conv``: convolutions and transposed convolutions, 1-d and 2-d, as torch's CPU computes them.

The value is computed by torch's own public function (``torch.conv2d`` and friends: the same
checks, errors, warnings and kernel choice, mkldnn or not by dtype and layout). The backward is
the one torch's ``ConvolutionBackward0`` runs: ``convolution_backward`` with the arguments the
public function handed to ``aten::convolution`` (lists of ``n`` ints, the padding of
``'same'``/``'valid'`` resolved) and torch's ``output_mask`` (which of input, weight, bias need
a gradient), plus the steps around it: an unbatched input is unsqueezed before and squeezed
after (``UnsqueezeBackward0``/``SqueezeBackward1``), and an asymmetric ``'same'`` padding pads
the input first (``ConstantPadNdBackward0``: the gradient is cropped back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Recorded,
    TrackedTensor,
    apply,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    wrap,
)
from ._common import _check_real

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]

_convolution_backward = torch.ops.aten.convolution_backward.default._op
_constant_pad_nd = torch.constant_pad_nd
_IntArg = int | list[int] | tuple[int, ...]


def _expand(value: _IntArg, n: int) -> list[int]:
    """An int or a sequence of 1 or ``n`` ints as ``n`` ints (torch's expand_param_if_needed)."""
    if isinstance(value, int):
        return [value] * n
    values = [int(v) for v in value]
    return values * n if len(values) == 1 else values


def _same_padding(input_shape: Sequence[int], weight_shape: Sequence[int], dilation: list[int],
                  n: int) -> tuple[list[int], list[int] | None]:
    """torch's ``convolution_same``: the symmetric padding the convolution gets, and the extra
    right-side ``constant_pad_nd`` pad (last dim first, as F.pad) where the total is odd."""
    left: list[int] = []
    extra = [0] * (2 * n)
    for i in range(n):
        total = dilation[i] * (weight_shape[i + 2] - 1)
        left.append(total // 2)
        delta = total - 2 * (total // 2)  # right - left: 0 or 1
        if delta > 0:
            extra[2 * (n - 1 - i) + 1] = delta
    return left, (extra if any(extra) else None)


def convolution_forward(
    public: Callable[..., Tensor], public_args: tuple[Any, ...], n: int, input: Tensor,
    weight: Tensor, bias: Tensor | None, stride: _IntArg, padding: _IntArg | str,
    dilation: _IntArg, transposed: bool, output_padding: _IntArg, groups: int,
    mask: list[bool],
) -> Recorded:
    """The forward/backward pair of an n-d (transposed) convolution, grad mode off.

    ``public(input, weight, bias, *public_args)`` is torch's own function (``torch.conv2d``...):
    the value, with torch's checks, errors and kernel. The other arguments are those it hands
    to ``aten::convolution``, before their normalisation to lists of ``n`` ints.
    """
    _check_real(public.__name__, input, weight, bias)
    result = public(input, weight, bias, *public_args)
    stride_, dilation_ = _expand(stride, n), _expand(dilation, n)
    output_padding_ = _expand(output_padding, n)
    batched = input.dim() == n + 2
    x = input if batched else input.unsqueeze(0)
    crop: list[int] | None = None
    if isinstance(padding, str):
        if padding == "same":
            padding_, extra = _same_padding(x.shape, weight.shape, dilation_, n)
            if extra is not None:  # torch pads the input on the right first
                x = _constant_pad_nd(x, extra, 0)
                crop = [-p for p in extra]
        else:
            padding_ = [0] * n  # 'valid'
    else:
        padding_ = _expand(padding, n)
    bias_sizes = None if bias is None else list(bias.shape)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        g = grad if batched else grad.unsqueeze(0)
        grad_input, grad_weight, grad_bias = _convolution_backward(
            g, x, weight, bias_sizes, stride_, padding_, dilation_, transposed,
            output_padding_, groups, mask)
        if grad_input is not None:
            if crop is not None:
                grad_input = _constant_pad_nd(grad_input, crop, 0)
            if not batched:
                grad_input = grad_input.squeeze(0)
        return grad_input, grad_weight, grad_bias

    name = "ConvolutionBackward0" if batched else "SqueezeBackward1"
    return result, backward, (x, weight), name


def _convolution(public: Callable[..., Tensor], public_args: tuple[Any, ...], n: int,
                 input: Tensor, weight: Tensor, bias: Tensor | None, stride: _IntArg,
                 padding: _IntArg | str, dilation: _IntArg, transposed: bool,
                 output_padding: _IntArg, groups: int) -> TrackedTensor:
    with no_dispatch():
        if is_grad_enabled():
            edges = (edge(input), edge(weight), edge(bias))
            mask = [e is not None for e in edges]
            if mask[0] or mask[1] or mask[2]:
                return apply(convolution_forward, edges, public, public_args, n, input, weight,
                             bias, stride, padding, dilation, transposed, output_padding,
                             groups, mask)
        return wrap(public(input, weight, bias, *public_args))


@implements(torch.conv1d)
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _IntArg = 1,
           padding: _IntArg | str = 0, dilation: _IntArg = 1, groups: int = 1) -> TrackedTensor:
    r"""1-d cross-correlation of ``input`` with ``weight``, plus ``bias``.

    Shapes: input :math:`(N, C_{in}, L)` or :math:`(C_{in}, L)`, weight
    :math:`(C_{out}, C_{in}/groups, k)`, bias :math:`(C_{out})`. ``padding``: ints, or
    ``'valid'`` / ``'same'`` (stride 1).

    Backward: torch's ``convolution_backward`` (see :func:`conv2d`).
    """
    return _convolution(torch.conv1d, (stride, padding, dilation, groups), 1, input, weight,
                        bias, stride, padding, dilation, False, 0, groups)


@implements(torch.conv2d)
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _IntArg = 1,
           padding: _IntArg | str = 0, dilation: _IntArg = 1, groups: int = 1) -> TrackedTensor:
    r"""2-d cross-correlation of ``input`` with ``weight``, plus ``bias``.

    Shapes: input :math:`(N, C_{in}, H, W)` or :math:`(C_{in}, H, W)`, weight
    :math:`(C_{out}, C_{in}/groups, kH, kW)`, bias :math:`(C_{out})` ->
    :math:`(N, C_{out}, H_{out}, W_{out})`. ``padding``: ints, or ``'valid'`` / ``'same'``.

    Backward: ``convolution_backward(grad, input, weight, ...)`` with torch's output mask:
    grad_input is the transposed convolution of ``grad`` with ``weight``, grad_weight the
    correlation of ``input`` with ``grad``, grad_bias ``grad`` summed over all but channels.
    """
    return _convolution(torch.conv2d, (stride, padding, dilation, groups), 2, input, weight,
                        bias, stride, padding, dilation, False, 0, groups)


@implements(torch.conv_transpose1d)
def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
                     stride: _IntArg = 1, padding: _IntArg = 0, output_padding: _IntArg = 0,
                     groups: int = 1, dilation: _IntArg = 1) -> TrackedTensor:
    r"""1-d transposed convolution ("deconvolution").

    Shapes: input :math:`(N, C_{in}, L)` or :math:`(C_{in}, L)`, weight
    :math:`(C_{in}, C_{out}/groups, k)`, bias :math:`(C_{out})`.

    Backward: ``convolution_backward(..., transposed=True, ...)``.
    """
    return _convolution(torch.conv_transpose1d, (stride, padding, output_padding, groups, dilation),
                        1, input, weight, bias, stride, padding, dilation, True, output_padding,
                        groups)


@implements(torch.conv_transpose2d)
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
                     stride: _IntArg = 1, padding: _IntArg = 0, output_padding: _IntArg = 0,
                     groups: int = 1, dilation: _IntArg = 1) -> TrackedTensor:
    r"""2-d transposed convolution ("deconvolution").

    Shapes: input :math:`(N, C_{in}, H, W)` or :math:`(C_{in}, H, W)`, weight
    :math:`(C_{in}, C_{out}/groups, kH, kW)`, bias :math:`(C_{out})`.

    Backward: ``convolution_backward(..., transposed=True, ...)``: grad_input is the
    convolution of ``grad`` with ``weight``.
    """
    return _convolution(torch.conv_transpose2d, (stride, padding, output_padding, groups, dilation),
                        2, input, weight, bias, stride, padding, dilation, True, output_padding,
                        groups)


@implements(torch.convolution)
def convolution(input: Tensor, weight: Tensor, bias: Tensor | None, stride: _IntArg,
                padding: _IntArg, dilation: _IntArg, transposed: bool,
                output_padding: _IntArg, groups: int) -> TrackedTensor:
    """``torch.convolution`` (``aten::convolution``, batched inputs). Backward as
    :func:`conv2d`."""
    with no_dispatch():
        n = weight.dim() - 2
        if input.dim() != n + 2:  # aten::convolution takes no unbatched input: torch's error
            torch.convolution(input, weight, bias, stride, padding, dilation,  # type: ignore[arg-type]
                              transposed, output_padding, groups)  # type: ignore[arg-type]
            raise NotImplementedError(
                "shimnn: torch.convolution on an unbatched input; use F.conv1d/F.conv2d")
    return _convolution(torch.convolution, (stride, padding, dilation, transposed,
                                            output_padding, groups), n, input, weight, bias,
                        stride, padding, dilation, transposed, output_padding, groups)
