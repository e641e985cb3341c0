"""``pool``: max, average and adaptive pooling, 1-d and 2-d, as torch's CPU computes them.

Values come from torch's own functions (same checks, errors and kernels). Gradients use the
kernels torch's derivatives name: ``max_pool2d_with_indices_backward``, ``avg_pool2d_backward``,
``_adaptive_avg_pool2d_backward``, ``adaptive_max_pool2d_backward``. torch computes every 1-d
pool as the 2-d one on ``input.unsqueeze(-2)`` (then ``squeeze(-2)``), and an adaptive average
pool to a 1x1 output as ``input.mean((-1, -2), keepdim=True)``: the backward follows those paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.modules.utils import _list_with_default

from .._graph import (
    Recorded,
    TrackedTensor,
    apply,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    run_kernel,
    wrap,
)
from ._common import _check_real, _out_requires_grad, _suggest_memory_format

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "max_pool1d",
    "max_pool1d_with_indices",
    "max_pool2d",
    "max_pool2d_with_indices",
]

_aten = torch.ops.aten
_nn: Any = torch._C._nn
_max_pool2d_backward = _aten.max_pool2d_with_indices_backward.default._op
_avg_pool2d_backward = _aten.avg_pool2d_backward.default._op
_adaptive_avg_pool2d_backward = _aten._adaptive_avg_pool2d_backward.default._op
_adaptive_max_pool2d_backward = _aten.adaptive_max_pool2d_backward.default._op

_IntArg = int | list[int] | tuple[int, ...]


def _first(value: _IntArg) -> int:
    """The one value of a 1-d pooling argument (an int or a 1-sequence)."""
    return value if isinstance(value, int) else int(value[0])


def _pool(forward: Callable[..., Recorded], value: Callable[..., Tensor], input: Tensor,
          *args: Any) -> TrackedTensor:
    """``value(input, *args)`` (torch's function), recording ``forward``'s backward when
    ``input`` needs a gradient."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                return apply(forward, (e_input,), input, *args)
        return wrap(value(input, *args))


def _indexed_pool(forward: Callable[..., tuple[Tensor, Tensor, Any]], value: Callable[..., Any],
                  name: str, input: Tensor, args: tuple[Any, ...], return_indices: bool) -> Any:
    """A max pool: ``forward(input, *args)`` returns (output, indices, backward); ``value`` is
    torch's function for the no-gradient case (with or without indices, as torch calls it).
    The indices are never tracked."""
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        if e_input is None:
            result = value(input, *args)
            if isinstance(result, tuple):
                return (wrap(result[0]), result[1]) if return_indices else wrap(result[0])
            return wrap(result)
        indices: list[Tensor] = []

        def recorded(*forward_args: Any) -> Recorded:
            out, idx, backward = forward(*forward_args)
            indices.append(idx)
            return out, backward, (input, idx), name

        try:
            out = apply(recorded, (e_input,), input, *args)
        except Exception:
            # torch's function for this variant checks first (max_pool1d has its own checks
            # before max_pool1d_with_indices): its error if it has one, else the kernel's.
            run_kernel(value, input, *args)
            raise
        return (out, indices[0]) if return_indices else out


def _into_out(name: str, value: Callable[..., Any], input: Tensor, args: tuple[Any, ...],
              out: Any, differentiable: bool = True) -> Any:
    """torch's ``out=`` variant: refused when the input needs a gradient (torch's error), else
    computed into ``out``. ``differentiable=False``: torch writes into ``out`` regardless (a
    composite op whose ``out`` never requires grad)."""
    with no_dispatch():
        if differentiable and is_grad_enabled() and edge(input) is not None:
            raise _out_requires_grad(name)
        return run_kernel(lambda: value(input, *args, out=out))


# ---------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------


def max_pool2d_forward(input: Tensor, kernel_size: _IntArg, stride: _IntArg, padding: _IntArg,
                       dilation: _IntArg, ceil_mode: bool) -> tuple[Tensor, Tensor, Any]:
    """``max_pool2d_with_indices`` and its backward (grad mode off, plain tensors)."""
    _check_real("max_pool2d", input)
    out, indices = _nn.max_pool2d_with_indices(input, kernel_size, stride, padding, dilation,
                                               ceil_mode)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_max_pool2d_backward(grad, input, kernel_size, stride, padding, dilation,
                                     ceil_mode, indices),)

    return out, indices, backward


def max_pool1d_forward(input: Tensor, kernel_size: _IntArg, stride: _IntArg, padding: _IntArg,
                       dilation: _IntArg, ceil_mode: bool) -> tuple[Tensor, Tensor, Any]:
    """torch's ``max_pool1d_with_indices``: the 2-d kernel on ``input.unsqueeze(-2)``."""
    _check_real("max_pool1d", input)
    out, indices = torch.max_pool1d_with_indices(input, kernel_size, stride, padding, dilation,
                                                 ceil_mode)
    k = _first(kernel_size)
    s = _first(stride) if not (isinstance(stride, Sequence) and len(stride) == 0) else k
    args2d = ([1, k], [1, s], [0, _first(padding)], [1, _first(dilation)], ceil_mode)
    x, idx = input.unsqueeze(-2), indices.unsqueeze(-2)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_max_pool2d_backward(grad.unsqueeze(-2), x, *args2d, idx).squeeze(-2),)

    return out, indices, backward


def _max_pool(forward: Callable[..., tuple[Tensor, Tensor, Any]], value: Callable[..., Any],
              name: str, input: Tensor, kernel_size: _IntArg, stride: _IntArg | None,
              padding: _IntArg, dilation: _IntArg, ceil_mode: bool, return_indices: bool
              ) -> Any:
    args = (kernel_size, [] if stride is None else stride, padding, dilation, ceil_mode)
    return _indexed_pool(forward, value, name, input, args, return_indices)


def _max_pool2d_value(return_indices: bool) -> Callable[..., Any]:
    return _nn.max_pool2d_with_indices if return_indices else torch.max_pool2d


def _max_pool1d_value(return_indices: bool) -> Callable[..., Any]:
    return torch.max_pool1d_with_indices if return_indices else torch.max_pool1d


@implements(torch.nn.functional.max_pool2d)
def max_pool2d(input: Tensor, kernel_size: _IntArg, stride: _IntArg | None = None,
               padding: _IntArg = 0, dilation: _IntArg = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    r"""2-d max pooling of ``(N, C, H, W)`` or ``(C, H, W)``; with ``return_indices`` also the
    flat index of each maximum in its ``H * W`` plane. ``stride`` defaults to ``kernel_size``.

    Backward: ``grad`` scattered to the positions of the maxima (summed where windows share
    one), by torch's ``max_pool2d_with_indices_backward``.
    """
    return _max_pool(max_pool2d_forward, _max_pool2d_value(return_indices),
                     "MaxPool2DWithIndicesBackward0", input, kernel_size, stride, padding,
                     dilation, ceil_mode, return_indices)


@implements(torch.nn.functional.max_pool2d_with_indices)
def max_pool2d_with_indices(input: Tensor, kernel_size: _IntArg, stride: _IntArg | None = None,
                            padding: _IntArg = 0, dilation: _IntArg = 1, ceil_mode: bool = False,
                            return_indices: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`max_pool2d` returning ``(output, indices)``."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)  # type: ignore[no-any-return]


@implements(_nn.max_pool2d_with_indices)
def _aten_max_pool2d_with_indices(input: Tensor, kernel_size: _IntArg, stride: _IntArg = (),
                                  padding: _IntArg = 0, dilation: _IntArg = 1,
                                  ceil_mode: bool = False, *, out: Any = None
                                  ) -> tuple[Tensor, Tensor]:
    if out is not None:
        return _into_out("max_pool2d_with_indices", _nn.max_pool2d_with_indices, input,  # type: ignore[no-any-return]
                         (kernel_size, stride, padding, dilation, ceil_mode), out)
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)  # type: ignore[no-any-return]


@implements(torch.max_pool2d)
def _torch_max_pool2d(input: Tensor, kernel_size: _IntArg, stride: _IntArg = (),
                      padding: _IntArg = 0, dilation: _IntArg = 1, ceil_mode: bool = False
                      ) -> Tensor:
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)  # type: ignore[no-any-return]


@implements(torch.nn.functional.max_pool1d)
def max_pool1d(input: Tensor, kernel_size: _IntArg, stride: _IntArg | None = None,
               padding: _IntArg = 0, dilation: _IntArg = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    r"""1-d max pooling of ``(N, C, L)`` or ``(C, L)`` (see :func:`max_pool2d`).

    Backward: as torch, ``max_pool2d_with_indices_backward`` on the input unsqueezed at -2.
    """
    return _max_pool(max_pool1d_forward, _max_pool1d_value(return_indices), "SqueezeBackward1",
                     input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@implements(torch.nn.functional.max_pool1d_with_indices, torch.max_pool1d_with_indices)
def max_pool1d_with_indices(input: Tensor, kernel_size: _IntArg, stride: _IntArg | None = None,
                            padding: _IntArg = 0, dilation: _IntArg = 1, ceil_mode: bool = False,
                            return_indices: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`max_pool1d` returning ``(output, indices)``."""
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)  # type: ignore[no-any-return]


@implements(torch.max_pool1d)
def _torch_max_pool1d(input: Tensor, kernel_size: _IntArg, stride: _IntArg = (),
                      padding: _IntArg = 0, dilation: _IntArg = 1, ceil_mode: bool = False
                      ) -> Tensor:
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------------


def avg_pool2d_forward(input: Tensor, kernel_size: _IntArg, stride: _IntArg, padding: _IntArg,
                       ceil_mode: bool, count_include_pad: bool, divisor_override: int | None
                       ) -> Recorded:
    """The forward/backward pair of :func:`avg_pool2d` (grad mode off, plain tensors)."""
    _check_real("avg_pool2d", input)
    out = _nn.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override)
    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_avg_pool2d_backward(grad, input, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad, divisor_override),)

    return out, backward, (input,), "AvgPool2DBackward0"


def avg_pool1d_forward(input: Tensor, kernel_size: _IntArg, stride: _IntArg, padding: _IntArg,
                       ceil_mode: bool, count_include_pad: bool) -> Recorded:
    """torch's ``avg_pool1d``: ``avg_pool2d`` on ``input.unsqueeze(-2)``, then ``squeeze(-2)``."""
    _check_real("avg_pool1d", input)
    out = torch.avg_pool1d(input, kernel_size, stride, padding, ceil_mode, count_include_pad)
    k = _first(kernel_size)
    s = _first(stride) if not (isinstance(stride, Sequence) and len(stride) == 0) else k
    args2d = ([1, k], [1, s], [0, _first(padding)], ceil_mode, count_include_pad, None)
    x = input.unsqueeze(-2)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_avg_pool2d_backward(grad.unsqueeze(-2), x, *args2d).squeeze(-2),)

    return out, backward, (x,), "SqueezeBackward1"


@implements(_nn.avg_pool2d)
def avg_pool2d(input: Tensor, kernel_size: _IntArg, stride: _IntArg | None = None,
               padding: _IntArg = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None, *, out: Tensor | None = None
               ) -> TrackedTensor:
    r"""2-d average pooling of ``(N, C, H, W)`` or ``(C, H, W)``: each window's sum divided by
    its size (with the zero padding if ``count_include_pad``) or by ``divisor_override``.

    Backward: each output's gradient spread evenly back over its window (divided the same
    way), by torch's ``avg_pool2d_backward``. ``out=``: as torch (refused when a gradient is
    needed).
    """
    if out is not None:
        return _into_out("avg_pool2d", _nn.avg_pool2d, input,  # type: ignore[no-any-return]
                         (kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override), out)
    return _pool(avg_pool2d_forward, _nn.avg_pool2d, input, kernel_size,
                 [] if stride is None else stride, padding, ceil_mode, count_include_pad,
                 divisor_override)


@implements(torch.avg_pool1d)
def avg_pool1d(input: Tensor, kernel_size: _IntArg, stride: _IntArg | None = None,
               padding: _IntArg = 0, ceil_mode: bool = False, count_include_pad: bool = True
               ) -> TrackedTensor:
    r"""1-d average pooling of ``(N, C, L)`` or ``(C, L)`` (see :func:`avg_pool2d`).

    Backward: ``avg_pool2d_backward`` on the input unsqueezed at -2, as torch.
    """
    return _pool(avg_pool1d_forward, torch.avg_pool1d, input, kernel_size,
                 [] if stride is None else stride, padding, ceil_mode, count_include_pad)


# ---------------------------------------------------------------------------------------------
# adaptive pooling
# ---------------------------------------------------------------------------------------------


def _is_1x1(output_size: Any) -> bool:
    if isinstance(output_size, int):
        return output_size == 1
    return len(output_size) == 2 and output_size[0] == 1 and output_size[1] == 1


def _adaptive_avg_backward(x: Tensor, output_size: Any) -> Callable[[Tensor], Tensor]:
    """The gradient of torch's ``adaptive_avg_pool2d(x, output_size)``: a 1x1 output is
    ``x.mean((-1, -2), keepdim=True)`` (restrided in place for a channels_last input:
    ``AsStridedBackward1``, a contiguous copy), then ``MeanBackward1``: ``grad`` expanded to
    ``x``'s shape and divided by ``H * W``; otherwise ``_adaptive_avg_pool2d_backward``."""
    if not _is_1x1(output_size):
        return lambda grad: _adaptive_avg_pool2d_backward(grad, x)  # type: ignore[no-any-return]
    shape = x.shape
    count = shape[-1] * shape[-2]
    restrided = _suggest_memory_format(x) is torch.channels_last

    def backward(grad: Tensor) -> Tensor:
        if restrided:
            grad = grad.contiguous()
        return grad.expand(shape) / count

    return backward


def adaptive_avg_pool2d_forward(input: Tensor, output_size: Any) -> Recorded:
    """The forward/backward pair of :func:`adaptive_avg_pool2d` (grad mode off)."""
    _check_real("adaptive_avg_pool2d", input)
    out = _nn.adaptive_avg_pool2d(input, output_size)
    grad_fn = _adaptive_avg_backward(input, output_size)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (grad_fn(grad),)

    name = "MeanBackward1" if _is_1x1(output_size) else "AdaptiveAvgPool2DBackward0"
    return out, backward, (input,), name


def adaptive_avg_pool1d_forward(input: Tensor, output_size: Any) -> Recorded:
    """torch's ``adaptive_avg_pool1d``: ``adaptive_avg_pool2d(input.unsqueeze(-2), [1, L])``."""
    _check_real("adaptive_avg_pool1d", input)
    out = torch.adaptive_avg_pool1d(input, output_size)
    x = input.unsqueeze(-2)
    grad_fn = _adaptive_avg_backward(x, [1, _first(output_size)])

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (grad_fn(grad.unsqueeze(-2)).squeeze(-2),)

    return out, backward, (x,), "SqueezeBackward1"


@implements(_nn.adaptive_avg_pool2d)
def _aten_adaptive_avg_pool2d(input: Tensor, output_size: Any, *, out: Tensor | None = None
                              ) -> TrackedTensor:
    if out is not None:  # torch's composite writes into out, which never requires grad
        return _into_out("adaptive_avg_pool2d", _nn.adaptive_avg_pool2d, input,  # type: ignore[no-any-return]
                         (output_size,), out, differentiable=False)
    return adaptive_avg_pool2d(input, output_size)


@implements(torch.nn.functional.adaptive_avg_pool2d)
def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> TrackedTensor:
    r"""2-d adaptive average pooling to ``output_size`` (an int, or a pair whose ``None``
    keeps the input's size). Window ``i`` spans ``[floor(i H / h), ceil((i + 1) H / h))``.

    Backward: ``_adaptive_avg_pool2d_backward``; for a 1x1 output, as torch, the mean's:
    ``grad`` expanded over the plane and divided by ``H * W``.
    """
    with no_dispatch():
        size = _list_with_default(output_size, list(input.size()))
    return _pool(adaptive_avg_pool2d_forward, _nn.adaptive_avg_pool2d, input, size)


@implements(torch.adaptive_avg_pool1d)
def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> TrackedTensor:
    r"""1-d adaptive average pooling of ``(N, C, L)`` or ``(C, L)`` to ``output_size``.

    Backward: as :func:`adaptive_avg_pool2d` on the input unsqueezed at -2, as torch.
    """
    return _pool(adaptive_avg_pool1d_forward, torch.adaptive_avg_pool1d, input, output_size)


def adaptive_max_pool2d_forward(input: Tensor, output_size: Any
                                ) -> tuple[Tensor, Tensor, Any]:
    """``adaptive_max_pool2d`` (output, indices) and its backward (grad mode off)."""
    _check_real("adaptive_max_pool2d", input)
    out, indices = _nn.adaptive_max_pool2d(input, output_size)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_adaptive_max_pool2d_backward(grad, input, indices),)

    return out, indices, backward


def adaptive_max_pool1d_forward(input: Tensor, output_size: Any
                                ) -> tuple[Tensor, Tensor, Any]:
    """torch's ``adaptive_max_pool1d``: the 2-d kernel on ``input.unsqueeze(-2)``."""
    _check_real("adaptive_max_pool1d", input)
    out, indices = torch.adaptive_max_pool1d(input, output_size)
    x, idx = input.unsqueeze(-2), indices.unsqueeze(-2)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_adaptive_max_pool2d_backward(grad.unsqueeze(-2), x, idx).squeeze(-2),)

    return out, indices, backward


def _adaptive_max_pool2d_value(input: Tensor, output_size: Any) -> tuple[Tensor, Tensor]:
    return _nn.adaptive_max_pool2d(input, output_size)  # type: ignore[no-any-return]


@implements(torch.nn.functional.adaptive_max_pool2d)
def adaptive_max_pool2d(input: Tensor, output_size: Any, return_indices: bool = False) -> Any:
    r"""2-d adaptive max pooling to ``output_size`` (see :func:`adaptive_avg_pool2d` for the
    windows); with ``return_indices`` also the flat index of each maximum in its plane.

    Backward: ``grad`` scattered to the maxima, by ``adaptive_max_pool2d_backward``.
    """
    with no_dispatch():
        size = _list_with_default(output_size, list(input.size()))
    return _indexed_pool(adaptive_max_pool2d_forward, _adaptive_max_pool2d_value,
                         "AdaptiveMaxPool2DBackward0", input, (size,), return_indices)


@implements(torch.nn.functional.adaptive_max_pool2d_with_indices)
def adaptive_max_pool2d_with_indices(input: Tensor, output_size: Any,
                                     return_indices: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`adaptive_max_pool2d` returning ``(output, indices)``."""
    return adaptive_max_pool2d(input, output_size, True)  # type: ignore[no-any-return]


@implements(_nn.adaptive_max_pool2d)
def _aten_adaptive_max_pool2d(input: Tensor, output_size: Any, *, out: Any = None
                              ) -> tuple[Tensor, Tensor]:
    if out is not None:
        return _into_out("adaptive_max_pool2d", _nn.adaptive_max_pool2d, input,  # type: ignore[no-any-return]
                         (output_size,), out)
    return adaptive_max_pool2d(input, output_size, True)  # type: ignore[no-any-return]


@implements(torch.nn.functional.adaptive_max_pool1d)
def adaptive_max_pool1d(input: Tensor, output_size: Any, return_indices: bool = False) -> Any:
    r"""1-d adaptive max pooling of ``(N, C, L)`` or ``(C, L)`` (see
    :func:`adaptive_max_pool2d`). Backward: the 2-d kernel's on the input unsqueezed at -2."""
    return _indexed_pool(adaptive_max_pool1d_forward, torch.adaptive_max_pool1d,
                         "SqueezeBackward1", input, (output_size,), return_indices)


@implements(torch.nn.functional.adaptive_max_pool1d_with_indices, torch.adaptive_max_pool1d)
def adaptive_max_pool1d_with_indices(input: Tensor, output_size: Any,
                                     return_indices: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`adaptive_max_pool1d` returning ``(output, indices)``."""
    return adaptive_max_pool1d(input, output_size, True)  # type: ignore[no-any-return]
