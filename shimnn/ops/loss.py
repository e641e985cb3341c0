"""Loss functions: hand-written forward/backward pairs, bit-identical to torch's.

Public through :mod:`shimnn.functional` (this module's ``__all__``).

Each loss follows the path torch's own function takes, op by op: the same argument checks and
error messages, the same kernels for the value, and for the gradient the kernels torch's
derivative formulas use. Where torch's loss is a composite of several autograd nodes (``l1_loss``
is ``(x - y).abs().mean()``, ``cross_entropy`` is ``log_softmax`` then ``nll_loss``, label
smoothing and probability targets add a handful of element-wise nodes), the backward walks the
same nodes in reverse with each node's formula, casting and summing gradients at node boundaries
exactly where torch's engine does (reduce a broadcast gradient, then cast it to the dtype of the
tensor it flows to).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import _native
from .._graph import (
    Recorded,
    TrackedTensor,
    apply,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    record,
    sum_to,
    wrap,
)
from ._common import _check_real, _reduce_to

__all__: list[str] = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "l1_loss",
    "mse_loss",
    "nll_loss",
    "smooth_l1_loss",
]

_nn: Any = torch._C._nn
_mse_loss = _nn.mse_loss
_mse_loss_backward = torch.ops.aten.mse_loss_backward.default._op
# Forward kernels (the ones torch.nn.functional calls).
_l1_kernel = _nn.l1_loss
_smooth_l1_kernel = _nn.smooth_l1_loss
_huber_kernel = _nn.huber_loss
_binary_cross_entropy = _nn.binary_cross_entropy
_bce_with_logits_kernel: Any = torch.binary_cross_entropy_with_logits
_nll_loss_nd = _nn.nll_loss_nd
_cross_entropy_loss = _nn.cross_entropy_loss
_log_sigmoid = _nn.log_sigmoid
_log_softmax: Any = torch._log_softmax
# ATen ops without a torch.* binding, reached through their cheapest entry point.
_nll_loss_forward = torch.ops.aten.nll_loss_forward.default._op
_nll_loss2d_forward = torch.ops.aten.nll_loss2d_forward.default._op
# The derivative kernels torch's formulas (derivatives.yaml) call.
_smooth_l1_loss_backward = torch.ops.aten.smooth_l1_loss_backward.default._op
_huber_loss_backward = torch.ops.aten.huber_loss_backward.default._op
_binary_cross_entropy_backward = torch.ops.aten.binary_cross_entropy_backward.default._op
_nll_loss_backward = torch.ops.aten.nll_loss_backward.default._op
_nll_loss2d_backward = torch.ops.aten.nll_loss2d_backward.default._op
_log_softmax_backward_data = torch.ops.aten._log_softmax_backward_data.default._op

# torch's own function (taken before shimnn.patch_torch can replace it), for its checks.
_torch_binary_cross_entropy = torch.nn.functional.binary_cross_entropy
_get_enum = torch.nn._reduction.get_enum
_legacy_get_enum = torch.nn._reduction.legacy_get_enum

_NONE, _MEAN, _SUM = 0, 1, 2
_REDUCTIONS = {"none": _NONE, "mean": _MEAN, "sum": _SUM}
_NAN = float("nan")

# A call through torch.nn.functional.X on a tracked tensor reaches shimnn through
# X -> handle_torch_function -> TrackedTensor.__torch_function__ -> the registered entry -> the
# loss: three frames more than a direct call, added to warnings' stacklevel so that a warning
# points at the caller, as torch's does.
_DIRECT_STACKLEVEL = 3
_DISPATCHED_STACKLEVEL = 6


# ---------------------------------------------------------------------------------------------
# reductions, mse_loss
# ---------------------------------------------------------------------------------------------


def _legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """The reduction the deprecated ``size_average``/``reduce`` pair means (torch warns)."""
    return torch.nn._reduction.legacy_get_string(size_average, reduce)


def _reduction_enum(size_average: bool | None, reduce: bool | None, reduction: str) -> int:
    if size_average is None and reduce is None:
        enum = _REDUCTIONS.get(reduction)
        if enum is not None:
            return enum
    else:
        reduction = _legacy_reduction(size_average, reduce)
    return torch.nn._reduction.get_enum(reduction)  # torch's own messages and warnings


@implements(torch.nn.functional.mse_loss)
def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> TrackedTensor:
    r"""Mean squared error :math:`(x - y)^2`, reduced by ``'mean'`` (default), ``'sum'`` or not.

    Shapes: input and target broadcastable (a warning when they differ, as torch warns);
    the result is 0-d, or the broadcast shape for ``reduction='none'``.

    Backward: :math:`\partial/\partial x = c\,(x - y)\,grad` with :math:`c = 2/N` for the mean
    over the :math:`N` broadcast elements and 2 otherwise (torch's ``mse_loss_backward``), the
    negative of it for the target, each summed back to its input's shape.
    """
    if weight is not None:
        raise NotImplementedError("shimnn.functional.mse_loss does not support weight= yet")
    with no_dispatch():
        same_shape = target.shape == input.shape
        if not same_shape:
            warnings.warn(
                f"Using a target size ({target.size()}) that is different to the input size "
                f"({input.size()}). This will likely lead to incorrect results due to "
                "broadcasting. Please ensure they have the same size.",
                stacklevel=2,
            )
        enum = _reduction_enum(size_average, reduce, reduction)
        if is_grad_enabled():
            e_input, e_target = edge(input), edge(target)
            if e_input is not None or e_target is not None:
                native = _native.get()
                if native is not None and same_shape:  # mse_loss_forward's common case, in C++
                    result = native.mse_loss_forward(input, target, enum, e_input is not None,
                                                     e_target is not None)
                    if result is not None:
                        return record(result[0], "MseLossBackward0", result[1],
                                      (e_input, e_target), result[2], result[3])
                return apply(mse_loss_forward, (e_input, e_target), input, target, enum,
                             e_input is not None, e_target is not None)
        if not same_shape:
            input, target = torch.broadcast_tensors(input, target)
        return wrap(_mse_loss(input, target, enum))  # type: ignore[arg-type]


def mse_loss_forward(input: Tensor, target: Tensor, reduction: int, need_input: bool,
                     need_target: bool) -> Recorded:
    """The forward/backward pair of :func:`mse_loss` (grad mode off, plain tensors)."""
    _check_real("mse_loss", input, target)
    if input.shape == target.shape:
        # Broadcasting to the same shape changes neither values nor kernels: skip it.
        expanded_input, expanded_target = input, target
        reduce_back = input.dtype is not target.dtype  # the gradient may need a cast back
    else:
        expanded_input, expanded_target = torch.broadcast_tensors(input, target)
        reduce_back = True
    out = _mse_loss(expanded_input, expanded_target, reduction)  # type: ignore[arg-type]

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        grad_input = grad_target = None
        if need_input:
            grad_input = _mse_loss_backward(grad, expanded_input, expanded_target, reduction)
            if reduce_back:
                grad_input = _reduce_to(grad_input, input)
        if need_target:
            grad_target = _mse_loss_backward(grad, expanded_target, expanded_input, reduction)
            if reduce_back:
                grad_target = _reduce_to(grad_target, target)
        return grad_input, grad_target

    return out, backward, (expanded_input, expanded_target), "MseLossBackward0"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _not_differentiable(function: str, argument: str) -> RuntimeError:
    return RuntimeError(
        f"The function '{function}' is not differentiable with respect to argument "
        f"'{argument}'. This input cannot have requires_grad True."
    )


def _warn_if_broadcast(input: Tensor, target: Tensor, stacklevel: int) -> None:
    with no_dispatch():
        input_size, target_size = input.size(), target.size()
    if target_size != input_size:
        warnings.warn(
            f"Using a target size ({target_size}) that is different to the input size "
            f"({input_size}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=stacklevel,
        )


def _broadcast(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """torch's ``broadcast_tensors`` (under no_dispatch); same shapes are left alone."""
    if input.shape == target.shape:
        return input, target
    expanded_input, expanded_target = torch.broadcast_tensors(input, target)
    return expanded_input, expanded_target


def _through_expand(grad: Tensor, like: Tensor) -> Tensor:
    """The gradient of an input that ``broadcast_tensors`` expanded, from its expanded view's.

    torch's engine casts the gradient to the expanded view's dtype (the input's) where it
    leaves the loss node, then its ExpandBackward sums it back to the input's shape.
    """
    if grad.dtype != like.dtype:
        grad = grad.to(like.dtype)
    return sum_to(grad, like.shape)


def _cast(grad: Tensor, like: Tensor) -> Tensor:
    return grad if grad.dtype == like.dtype else grad.to(like.dtype)


def _raise_as_torch(fn: Callable[..., Any], *args: Any) -> None:
    """Run torch's own ``fn`` on detached arguments for the error it raises on them.

    Used where torch validates its arguments before any computation and formats the message
    in C++ (dtype names, shapes, doubles): the error is torch's own, word for word.
    """
    fn(*[a.detach() if isinstance(a, Tensor) else a for a in args])


def _sum_backward(grad: Tensor, shape: torch.Size) -> Tensor:
    """SumBackward0 (a full sum): the gradient expanded to the summed tensor's shape."""
    return grad.expand(shape)


def _mean_backward(grad: Tensor, shape: torch.Size, numel: int) -> Tensor:
    """MeanBackward0 (a full mean): expanded, then divided by the number of elements."""
    return grad.expand(shape) / numel


def _weight_from_torch_frame(code: Any, start: Any) -> Any:
    """The ``weight`` local of the torch function running ``code`` a few frames up, or None."""
    frame = start
    for _ in range(6):
        if frame is None:
            return None
        if frame.f_code is code:
            return frame.f_locals.get("weight")
        frame = frame.f_back
    return None


# ---------------------------------------------------------------------------------------------
# l1_loss (and smooth_l1_loss with beta=0): (x - y).abs(), then mean / sum
# ---------------------------------------------------------------------------------------------


def l1_forward(input: Tensor, target: Tensor, reduction: int, need_input: bool,
               need_target: bool) -> Recorded:
    """The forward/backward pair of unweighted :func:`l1_loss` (grad mode off, plain tensors).

    torch's ``l1_loss`` kernel is the composite ``(x - y).abs()`` then ``.mean()``/``.sum()``
    on the broadcast operands: three autograd nodes, each differentiated with its formula.
    """
    _check_real("l1_loss", input, target)
    expanded_input, expanded_target = _broadcast(input, target)
    diff = expanded_input - expanded_target
    loss = diff.abs()
    shape, numel = loss.shape, loss.numel()
    if reduction == _MEAN:
        out, name = loss.mean(), "MeanBackward0"
    elif reduction == _SUM:
        out, name = loss.sum(), "SumBackward0"
    else:
        out, name = loss, "AbsBackward0"

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if reduction == _MEAN:
            grad = _mean_backward(grad, shape, numel)
        elif reduction == _SUM:
            grad = _sum_backward(grad, shape)
        grad_diff = grad * diff.sgn()  # AbsBackward0
        grad_input = grad_target = None  # SubBackward0: grad, -grad
        if need_input:
            grad_input = _through_expand(grad_diff, input)
        if need_target:
            grad_target = _through_expand(-grad_diff, target)
        return grad_input, grad_target

    return out, backward, (diff,), name


def _check_weighted_reduction(reduction: str) -> None:
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(
            f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'.")


def weighted_l1_forward(input: Tensor, target: Tensor, weight: Tensor, reduction: str,
                        needs: tuple[bool, bool, bool]) -> Recorded:
    """The forward/backward pair of :func:`l1_loss` with ``weight`` (torch's Python composite:
    ``abs(x - y) * w``, then ``sum``, or ``sum / w.sum()`` for the mean)."""
    _check_real("l1_loss", input, target, weight)
    need_input, need_target, need_weight = needs
    expanded_input, expanded_target = _broadcast(input, target)
    diff = expanded_input - expanded_target
    absolute = torch.abs(diff)
    weighted = absolute * weight
    _check_weighted_reduction(reduction)
    total = weight_sum = None
    if reduction == "none":
        out, name = weighted, "MulBackward0"
    elif reduction == "sum":
        out, name = torch.sum(weighted), "SumBackward0"
    else:
        total, weight_sum = torch.sum(weighted), torch.sum(weight)
        out, name = total / weight_sum, "DivBackward0"
    shape = weighted.shape

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        grad_weight_sum = None
        if total is not None and weight_sum is not None:  # DivBackward0, then SumBackward0s
            if need_weight:
                grad_weight_sum = _cast(-grad * ((total / weight_sum) / weight_sum), weight_sum)
            grad = _cast(grad / weight_sum, total)
            grad = _sum_backward(grad, shape)
        elif reduction == "sum":
            grad = _sum_backward(grad, shape)
        grad_input = grad_target = grad_weight = None
        if need_weight:  # MulBackward0, other
            grad_weight = _reduce_to(grad * absolute, weight)
            if grad_weight_sum is not None:
                grad_weight = grad_weight + grad_weight_sum.expand(weight.shape)
        if need_input or need_target:
            grad_diff = _reduce_to(grad * weight, absolute) * diff.sgn()
            if need_input:
                grad_input = _through_expand(grad_diff, input)
            if need_target:
                grad_target = _through_expand(-grad_diff, target)
        return grad_input, grad_target, grad_weight

    saved: tuple[Tensor, ...] = (diff, absolute, weight)
    if total is not None and weight_sum is not None:
        saved += (total, weight_sum)
    return out, backward, saved, name


def _l1_loss(input: Tensor, target: Tensor, size_average: bool | None, reduce: bool | None,
             reduction: str, weight: Tensor | None, stacklevel: int) -> TrackedTensor:
    _warn_if_broadcast(input, target, stacklevel + 1)
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    with no_dispatch():
        expanded_input, expanded_target = _broadcast(input, target)
        if weight is not None:
            if weight.size() != input.size():
                raise ValueError("Weights and input must have the same size.")
            if is_grad_enabled():
                edges = (edge(input), edge(target), edge(weight))
                if any(e is not None for e in edges):
                    return apply(weighted_l1_forward, edges, input, target, weight, reduction,
                                 tuple(e is not None for e in edges))
            out = torch.abs(expanded_input - expanded_target) * weight
            _check_weighted_reduction(reduction)
            if reduction == "sum":
                out = torch.sum(out)
            elif reduction == "mean":
                out = torch.sum(out) / torch.sum(weight)
            return wrap(out)
        enum = _get_enum(reduction)
        if is_grad_enabled():
            e_input, e_target = edge(input), edge(target)
            if e_input is not None or e_target is not None:
                return apply(l1_forward, (e_input, e_target), input, target, enum,
                             e_input is not None, e_target is not None)
        return wrap(_l1_kernel(expanded_input, expanded_target, enum))


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> TrackedTensor:
    r"""Mean absolute error :math:`|x - y|`, reduced by ``'mean'`` (default), ``'sum'`` or not.

    Shapes: input and target broadcastable (torch's warning when they differ); ``weight``, if
    given, of the input's size, multiplies each term, and the mean becomes
    :math:`\sum w|x - y| / \sum w`. The result is 0-d, or the broadcast shape for ``'none'``.

    Backward: :math:`\operatorname{sgn}(x - y)\,grad` (divided by :math:`N` for the mean over
    the :math:`N` broadcast elements), through torch's nodes ``MeanBackward0``/``SumBackward0``,
    ``AbsBackward0`` (``grad * sgn``) and ``SubBackward0`` (``grad``, ``-grad``); each summed
    back to its input's shape. With ``weight``: ``MulBackward0`` and ``DivBackward0`` also give
    the weight its gradient.
    """
    return _l1_loss(input, target, size_average, reduce, reduction, weight, _DIRECT_STACKLEVEL)


_TORCH_L1_LOSS_CODE = torch.nn.functional.l1_loss.__code__


@implements(torch.nn.functional.l1_loss)
def _dispatched_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
                        reduce: bool | None = None, reduction: str = "mean",
                        weight: Tensor | None = None) -> TrackedTensor:
    # torch 2.13's l1_loss forwards a tensor-subclass call without its `weight` argument:
    # recover it from torch's frame, or the weight would be silently dropped.
    if weight is None:
        weight = _weight_from_torch_frame(_TORCH_L1_LOSS_CODE, sys._getframe(1))
    return _l1_loss(input, target, size_average, reduce, reduction, weight,
                    _DISPATCHED_STACKLEVEL)


# ---------------------------------------------------------------------------------------------
# smooth_l1_loss and huber_loss
# ---------------------------------------------------------------------------------------------


def _pointwise_loss_forward(
    name: str, kernel: Callable[..., Tensor], derivative: Callable[..., Tensor], node: str,
) -> Callable[..., Recorded]:
    """The forward/backward pair of a loss whose derivative is one fused kernel taking
    ``(grad, x, y, reduction, parameter)`` for the input and ``(grad, y, x, ...)`` for the
    target (smooth_l1_loss, huber_loss)."""

    def forward(input: Tensor, target: Tensor, reduction: int, parameter: float,
                need_input: bool, need_target: bool) -> Recorded:
        _check_real(name, input, target)
        expanded_input, expanded_target = _broadcast(input, target)
        out = kernel(expanded_input, expanded_target, reduction, parameter)

        def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
            grad_input = grad_target = None
            if need_input:
                grad_input = _through_expand(
                    derivative(grad, expanded_input, expanded_target, reduction, parameter),
                    input)
            if need_target:
                grad_target = _through_expand(
                    derivative(grad, expanded_target, expanded_input, reduction, parameter),
                    target)
            return grad_input, grad_target

        return out, backward, (expanded_input, expanded_target), node

    forward.__doc__ = f"The forward/backward pair of :func:`{name}` (grad mode off)."
    return forward


smooth_l1_forward = _pointwise_loss_forward(
    "smooth_l1_loss", _smooth_l1_kernel, _smooth_l1_loss_backward, "SmoothL1LossBackward0")
huber_forward = _pointwise_loss_forward(
    "huber_loss", _huber_kernel, _huber_loss_backward, "HuberLossBackward0")


def _smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None,
                    reduce: bool | None, reduction: str, beta: float, stacklevel: int
                    ) -> TrackedTensor:
    _warn_if_broadcast(input, target, stacklevel + 1)
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    with no_dispatch():
        expanded_input, expanded_target = _broadcast(input, target)
        enum = _get_enum(reduction)
        if is_grad_enabled():
            e_input, e_target = edge(input), edge(target)
            if e_input is not None or e_target is not None:
                need = (e_input is not None, e_target is not None)
                if beta == 0.0:
                    return apply(l1_forward, (e_input, e_target), input, target, enum, *need)
                return apply(smooth_l1_forward, (e_input, e_target), input, target, enum, beta,
                             *need)
        if beta == 0.0:
            return wrap(_l1_kernel(expanded_input, expanded_target, enum))
        return wrap(_smooth_l1_kernel(expanded_input, expanded_target, enum, beta))


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> TrackedTensor:
    r"""Smooth L1 loss: :math:`0.5 (x - y)^2 / \beta` where :math:`|x - y| < \beta`, else
    :math:`|x - y| - 0.5 \beta`; reduced by ``'mean'`` (default), ``'sum'`` or not.

    Shapes: input and target broadcastable (torch's warning when they differ); the result is
    0-d, or the broadcast shape for ``'none'``. ``beta=0`` is :func:`l1_loss` (as in torch);
    a negative ``beta`` raises torch's error.

    Backward: :math:`\operatorname{clamp}((x - y)/\beta, -1, 1)\,grad` (over :math:`N` for the
    mean) by torch's ``smooth_l1_loss_backward(grad, x, y, reduction, beta)``, and the same
    kernel with ``x``, ``y`` swapped for the target; each summed back to its input's shape.
    """
    return _smooth_l1_loss(input, target, size_average, reduce, reduction, beta,
                           _DIRECT_STACKLEVEL)


@implements(torch.nn.functional.smooth_l1_loss)
def _dispatched_smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
                               reduce: bool | None = None, reduction: str = "mean",
                               beta: float = 1.0) -> TrackedTensor:
    return _smooth_l1_loss(input, target, size_average, reduce, reduction, beta,
                           _DISPATCHED_STACKLEVEL)


def weighted_huber_forward(input: Tensor, target: Tensor, weight: Tensor, reduction: str,
                           delta: float, needs: tuple[bool, bool, bool]) -> Recorded:
    """The forward/backward pair of :func:`huber_loss` with ``weight`` (torch's Python
    composite: the unreduced ``huber_loss`` kernel times ``w``, then ``sum`` or ``mean``)."""
    _check_real("huber_loss", input, target, weight)
    need_input, need_target, need_weight = needs
    expanded_input, expanded_target = _broadcast(input, target)
    unweighted = _huber_kernel(expanded_input, expanded_target, _NONE, delta)
    weighted = unweighted * weight
    _check_weighted_reduction(reduction)
    if reduction == "none":
        out, name = weighted, "MulBackward0"
    elif reduction == "sum":
        out, name = torch.sum(weighted), "SumBackward0"
    else:
        out, name = weighted.mean(), "MeanBackward0"
    shape, numel = weighted.shape, weighted.numel()

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        if reduction == "mean":
            grad = _mean_backward(grad, shape, numel)
        elif reduction == "sum":
            grad = _sum_backward(grad, shape)
        grad_input = grad_target = grad_weight = None
        if need_weight:  # MulBackward0
            grad_weight = _reduce_to(grad * unweighted, weight)
        if need_input or need_target:
            grad_unweighted = _reduce_to(grad * weight, unweighted)
            if need_input:  # HuberLossBackward0 (reduction 'none')
                grad_input = _through_expand(_huber_loss_backward(
                    grad_unweighted, expanded_input, expanded_target, _NONE, delta), input)
            if need_target:
                grad_target = _through_expand(_huber_loss_backward(
                    grad_unweighted, expanded_target, expanded_input, _NONE, delta), target)
        return grad_input, grad_target, grad_weight

    return out, backward, (expanded_input, expanded_target, unweighted, weight), name


def _huber_loss(input: Tensor, target: Tensor, reduction: str, delta: float,
                weight: Tensor | None, stacklevel: int) -> TrackedTensor:
    _warn_if_broadcast(input, target, stacklevel + 1)
    with no_dispatch():
        expanded_input, expanded_target = _broadcast(input, target)
        if weight is None:
            enum = _get_enum(reduction)
            if is_grad_enabled():
                e_input, e_target = edge(input), edge(target)
                if e_input is not None or e_target is not None:
                    return apply(huber_forward, (e_input, e_target), input, target, enum, delta,
                                 e_input is not None, e_target is not None)
            return wrap(_huber_kernel(expanded_input, expanded_target, enum, delta))
        if weight.size() != input.size():
            raise ValueError("Weights and input must have the same size.")
        if is_grad_enabled():
            edges = (edge(input), edge(target), edge(weight))
            if any(e is not None for e in edges):
                return apply(weighted_huber_forward, edges, input, target, weight, reduction,
                             delta, tuple(e is not None for e in edges))
        out = _huber_kernel(expanded_input, expanded_target, _NONE, delta) * weight
        _check_weighted_reduction(reduction)
        if reduction == "sum":
            out = torch.sum(out)
        elif reduction == "mean":
            out = out.mean()
        return wrap(out)


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> TrackedTensor:
    r"""Huber loss: :math:`0.5 (x - y)^2` where :math:`|x - y| < \delta`, else
    :math:`\delta (|x - y| - 0.5 \delta)`; reduced by ``'mean'`` (default), ``'sum'`` or not.

    Shapes: input and target broadcastable (torch's warning when they differ); ``weight``, if
    given, of the input's size, multiplies each term before the reduction. The result is 0-d,
    or the broadcast shape for ``'none'``. A non-positive ``delta`` raises torch's error.

    Backward: :math:`\operatorname{clamp}(x - y, -\delta, \delta)\,grad` (over :math:`N` for
    the mean) by torch's ``huber_loss_backward(grad, x, y, reduction, delta)``, the same kernel
    with ``x``, ``y`` swapped for the target; with ``weight``, through ``MulBackward0`` (which
    also gives the weight its gradient) and the reduction's node first.
    """
    return _huber_loss(input, target, reduction, delta, weight, _DIRECT_STACKLEVEL)


@implements(torch.nn.functional.huber_loss)
def _dispatched_huber_loss(input: Tensor, target: Tensor, reduction: str = "mean",
                           delta: float = 1.0, weight: Tensor | None = None) -> TrackedTensor:
    return _huber_loss(input, target, reduction, delta, weight, _DISPATCHED_STACKLEVEL)


# ---------------------------------------------------------------------------------------------
# binary_cross_entropy
# ---------------------------------------------------------------------------------------------


def binary_cross_entropy_forward(input: Tensor, target: Tensor, weight: Tensor | None,
                                 reduction: int, need_input: bool, need_target: bool
                                 ) -> Recorded:
    """The forward/backward pair of :func:`binary_cross_entropy` (grad mode off)."""
    _check_real("binary_cross_entropy", input, target, weight)
    out = _binary_cross_entropy(input, target, weight, reduction)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        grad_input = grad_target = None
        if need_input:
            grad_input = _cast(
                _binary_cross_entropy_backward(grad, input, target, weight, reduction), input)
        if need_target:  # torch's binary_cross_entropy_target_backward
            grad_target = torch.logit(input).neg_()
            grad_target.mul_(grad)
            if weight is not None:
                grad_target.mul_(weight)
            if reduction == _MEAN:
                grad_target.div_(target.numel())
            grad_target = _cast(grad_target, target)
        return grad_input, grad_target

    saved = (input, target) if weight is None else (input, target, weight)
    return out, backward, saved, "BinaryCrossEntropyBackward0"


@implements(torch.nn.functional.binary_cross_entropy)
def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> TrackedTensor:
    r"""Binary cross entropy :math:`-w\,[y \log x + (1 - y) \log(1 - x)]` between probabilities
    ``input`` and ``target``, reduced by ``'mean'`` (default), ``'sum'`` or not. torch clamps
    each logarithm at -100, so probabilities of exactly 0 and 1 give finite losses.

    Shapes: input and target of the same shape (a ValueError otherwise, as torch raises);
    ``weight`` broadcastable to it. Inputs outside [0, 1] raise torch's error. The result is
    0-d, or the input's shape for ``'none'``.

    Backward: for the input, torch's ``binary_cross_entropy_backward(grad, x, y, w, reduction)``
    (:math:`w (x - y) / \max(x (1 - x), \epsilon)\,grad`); for the target, torch's
    ``-logit(x) * grad * w`` (over :math:`N` for the mean). The weight takes no gradient (torch
    raises if it requires one).
    """
    if size_average is not None or reduce is not None:
        enum = _legacy_get_enum(size_average, reduce)
    else:
        enum = _get_enum(reduction)
    with no_dispatch():
        if target.size() != input.size():
            raise ValueError(
                f"Using a target size ({target.size()}) that is different to the input size "
                f"({input.size()}) is deprecated. Please ensure they have the same size.")
        expanded_weight = None
        if weight is not None:
            try:
                shape = torch.broadcast_shapes(target.size(), weight.size())
            except RuntimeError:  # torch's message (from the helper the installed torch uses)
                with torch.no_grad():
                    _torch_binary_cross_entropy(input.detach(), target.detach(), weight.detach())
                raise
            expanded_weight = weight.expand(shape)
        if is_grad_enabled():
            if edge(weight) is not None:
                raise _not_differentiable("binary_cross_entropy", "weight")
            e_input, e_target = edge(input), edge(target)
            if e_input is not None or e_target is not None:
                return apply(binary_cross_entropy_forward, (e_input, e_target), input, target,
                             expanded_weight, enum, e_input is not None, e_target is not None)
        return wrap(_binary_cross_entropy(input, target, expanded_weight, enum))


# ---------------------------------------------------------------------------------------------
# binary_cross_entropy_with_logits
# ---------------------------------------------------------------------------------------------


def bce_with_logits_forward(input: Tensor, target: Tensor, weight: Tensor | None,
                            pos_weight: Tensor | None, reduction: int, need_input: bool,
                            need_target: bool) -> Recorded:
    """The forward/backward pair of :func:`binary_cross_entropy_with_logits` (grad mode off).

    The backward is torch's ``binary_cross_entropy_with_logits_backward`` and ``..._target_
    backward`` (FunctionsManual), op for op, with their in-place steps (grad mode is off)."""
    _check_real("binary_cross_entropy_with_logits", input, target, weight, pos_weight)
    out = _bce_with_logits_kernel(input, target, weight, pos_weight, reduction)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        grad_input = grad_target = None
        if need_input:
            if pos_weight is not None:
                t = pos_weight.mul(target)
                grad_input = t.add(1).sub_(target).mul_(input.sigmoid()).sub_(t)
            else:
                grad_input = input.sigmoid().sub_(target)
            grad_input.mul_(grad)
            if weight is not None:
                grad_input.mul_(weight)
            if reduction == _MEAN:
                grad_input.div_(input.numel())
            grad_input = _reduce_to(grad_input, input)
        if need_target:
            if pos_weight is not None:
                grad_target = _log_sigmoid(-input).sub_(
                    _log_sigmoid(input).mul_(pos_weight)).mul_(grad)
            else:
                grad_target = -input * grad
            if weight is not None:
                grad_target.mul_(weight)
            if reduction == _MEAN:
                grad_target.div_(target.numel())
            grad_target = _reduce_to(grad_target, target)
        return grad_input, grad_target

    saved = tuple(t for t in (input, target, weight, pos_weight) if t is not None)
    return out, backward, saved, "BinaryCrossEntropyWithLogitsBackward0"


def _bce_with_logits(input: Tensor, target: Tensor, weight: Tensor | None,
                     pos_weight: Tensor | None, reduction: int) -> TrackedTensor:
    with no_dispatch():
        if is_grad_enabled():
            if edge(weight) is not None:
                raise _not_differentiable("binary_cross_entropy_with_logits", "weight")
            if edge(pos_weight) is not None:
                raise _not_differentiable("binary_cross_entropy_with_logits", "pos_weight")
            e_input, e_target = edge(input), edge(target)
            if e_input is not None or e_target is not None:
                return apply(bce_with_logits_forward, (e_input, e_target), input, target,
                             weight, pos_weight, reduction, e_input is not None,
                             e_target is not None)
        return wrap(_bce_with_logits_kernel(input, target, weight, pos_weight, reduction))


@implements(torch.nn.functional.binary_cross_entropy_with_logits)
def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> TrackedTensor:
    r"""Binary cross entropy of ``sigmoid(input)`` against ``target``, computed stably from the
    logits: :math:`-w\,[p\,y \log\sigma(x) + (1 - y) \log(1 - \sigma(x))]`, reduced by
    ``'mean'`` (default), ``'sum'`` or not.

    Shapes: input and target of the same shape (a ValueError otherwise, as torch raises);
    ``weight`` and ``pos_weight`` (:math:`p`, e.g. ``(C,)`` for a ``(N, C)`` input) broadcast
    with it. The result is 0-d, or the input's shape for ``'none'``.

    Backward: input :math:`w\,[(p y + 1 - y)\,\sigma(x) - p y]\,grad`; target
    :math:`w\,[\log\sigma(-x) - p \log\sigma(x)]\,grad` (:math:`-x\,grad\,w` without ``p``),
    over :math:`N` for the mean: torch's formulas op by op. ``weight`` and ``pos_weight`` take
    no gradient (torch raises if one requires it).
    """
    if size_average is not None or reduce is not None:
        enum = _legacy_get_enum(size_average, reduce)
    else:
        enum = _get_enum(reduction)
    with no_dispatch():
        if not (target.size() == input.size()):
            raise ValueError(
                f"Target size ({target.size()}) must be the same as input size ({input.size()})")
    return _bce_with_logits(input, target, weight, pos_weight, enum)


@implements(torch.binary_cross_entropy_with_logits)
def _aten_binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, weight: Tensor | None = None,
    pos_weight: Tensor | None = None, reduction: int = _MEAN,
) -> TrackedTensor:
    """``torch.binary_cross_entropy_with_logits``: the ATen op, with an integer reduction."""
    return _bce_with_logits(input, target, weight, pos_weight, reduction)


# ---------------------------------------------------------------------------------------------
# nll_loss
# ---------------------------------------------------------------------------------------------

NllBackward = Callable[[Tensor], Tensor]


def _nll_nd_forward(input: Tensor, target: Tensor, weight: Tensor | None, reduction: int,
                    ignore_index: int, weight_needs_grad: bool
                    ) -> tuple[Tensor, NllBackward, tuple[Tensor, ...], str]:
    """torch's ``nll_loss_nd``: its checks, then ``nll_loss`` on 1-d/2-d inputs,
    ``nll_loss2d`` on 4-d, and on other ranks ``nll_loss2d`` of ``(N, C, 1, -1)`` views.

    Returns the output, the gradient function of ``input``, the tensors it reads, and the
    name of torch's last node.
    """
    dim = input.dim()
    if (dim < 1 or (dim != 1 and (target.dim() == 0 or input.shape[0] != target.shape[0]))
            or ((dim == 3 or dim > 4) and tuple(target.shape[1:]) != tuple(input.shape[2:]))):
        _raise_as_torch(_nll_loss_nd, input, target, weight, reduction, ignore_index)
    if weight_needs_grad:
        raise _not_differentiable("nll_loss_forward", "weight")
    saved: tuple[Tensor, ...] = () if weight is None else (weight,)
    if dim <= 2 or dim == 4:
        forward, derivative = ((_nll_loss_forward, _nll_loss_backward) if dim <= 2
                               else (_nll_loss2d_forward, _nll_loss2d_backward))
        out, total_weight = forward(input, target, weight, reduction, ignore_index)

        def backward(grad: Tensor) -> Tensor:
            return derivative(grad, input, target, weight, reduction, ignore_index,
                              total_weight)

        name = "NllLossBackward0" if dim <= 2 else "NllLoss2DBackward0"
        return out, backward, (input, target, total_weight, *saved), name
    n, c = input.shape[0], input.shape[1]
    input_shape = input.shape
    out_size = (n, *input.shape[2:])
    flat_input = input.contiguous()  # CloneBackward0 if it copies: the gradient passes as is
    flat_target = target.contiguous()
    flat_input = (flat_input.view(n, c, 1, -1) if flat_input.numel() > 0
                  else flat_input.view(n, c, 0, 0))
    flat_target = (flat_target.view(n, 1, -1) if flat_target.numel() > 0
                   else flat_target.view(n, 0, 0))
    out, total_weight = _nll_loss2d_forward(flat_input, flat_target, weight, reduction,
                                            ignore_index)
    flat_out_shape = out.shape
    if reduction == _NONE:
        out = out.view(out_size)

    def flat_backward(grad: Tensor) -> Tensor:
        if reduction == _NONE:
            grad = grad.reshape(flat_out_shape)  # ViewBackward0
        grad = _nll_loss2d_backward(grad, flat_input, flat_target, weight, reduction,
                                    ignore_index, total_weight)
        return grad.reshape(input_shape)  # ViewBackward0

    name = "ViewBackward0" if reduction == _NONE else "NllLoss2DBackward0"
    return out, flat_backward, (flat_input, flat_target, total_weight, *saved), name


def nll_loss_forward(input: Tensor, target: Tensor, weight: Tensor | None, reduction: int,
                     ignore_index: int, weight_needs_grad: bool) -> Recorded:
    """The forward/backward pair of :func:`nll_loss` (grad mode off, plain tensors)."""
    _check_real("nll_loss", input, weight)
    out, nll_backward, saved, name = _nll_nd_forward(input, target, weight, reduction,
                                                     ignore_index, weight_needs_grad)

    def backward(grad: Tensor) -> tuple[Tensor, None]:
        return _cast(nll_backward(grad), input), None

    return out, backward, saved, name


@implements(torch.nn.functional.nll_loss)
def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> TrackedTensor:
    r"""Negative log likelihood :math:`-w_{y_n} x_{n, y_n}` of log-probabilities ``input`` at
    the class indices ``target``; reduced by ``'mean'`` (default: the sum over the sum of the
    non-ignored targets' weights), ``'sum'`` or not. Targets equal to ``ignore_index`` add
    nothing; with every target ignored the mean is nan, as in torch.

    Shapes: input ``(C)`` with a 0-d target, ``(N, C)`` with ``(N)``, or
    ``(N, C, d_1, ..., d_K)`` with ``(N, d_1, ..., d_K)``; target int64 (or uint8); ``weight``
    ``(C)``. A class index out of range raises torch's IndexError. The result is 0-d, or the
    target's shape for ``'none'``.

    Backward: :math:`-w_{y_n}\,grad` at each target's class (over the total weight for the
    mean) by torch's ``nll_loss_backward`` (``nll_loss2d_backward`` on spatial inputs, through
    the same views as torch). The target and the weight take no gradient (torch raises if the
    weight requires one).
    """
    enum = _reduction_enum(size_average, reduce, reduction)
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            weight_needs_grad = edge(weight) is not None
            if e_input is not None or weight_needs_grad:
                return apply(nll_loss_forward, (e_input, None), input, target, weight, enum,
                             ignore_index, weight_needs_grad)
        return wrap(_nll_loss_nd(input, target, weight, enum, ignore_index))


# ---------------------------------------------------------------------------------------------
# cross_entropy
# ---------------------------------------------------------------------------------------------


def _class_dim(input: Tensor) -> int:
    return 0 if input.dim() == 1 else 1


def cross_entropy_forward(input: Tensor, target: Tensor, weight: Tensor | None, reduction: int,
                          ignore_index: int, weight_needs_grad: bool) -> Recorded:
    """The forward/backward pair of :func:`cross_entropy` with class-index targets and no
    label smoothing: ``log_softmax`` then ``nll_loss``, two nodes."""
    _check_real("cross_entropy", input, weight)
    class_dim = _class_dim(input)
    log_probs = _log_softmax(input, class_dim, False)
    out, nll_backward, saved, name = _nll_nd_forward(log_probs, target, weight, reduction,
                                                     ignore_index, weight_needs_grad)
    input_dtype = input.dtype

    def backward(grad: Tensor) -> tuple[Tensor, None, None]:
        grad = _cast(nll_backward(grad), log_probs)
        return _log_softmax_backward_data(grad, log_probs, class_dim, input_dtype), None, None

    return out, backward, (log_probs, *saved), name


def _smoothing_weight(weight: Tensor, dim: int, class_dim: int) -> Tensor:
    """``weight`` viewed with its classes along ``class_dim`` of a ``dim``-d input."""
    shape = [1] * dim
    shape[class_dim] = weight.shape[0]
    return weight.view(shape)


def cross_entropy_smoothing_forward(input: Tensor, target: Tensor, weight: Tensor | None,
                                    reduction: int, ignore_index: int, label_smoothing: float,
                                    weight_needs_grad: bool) -> Recorded:
    """The forward/backward pair of :func:`cross_entropy` with class-index targets and label
    smoothing: torch's ``cross_entropy_loss_label_smoothing``,
    ``(1 - s) * nll_loss(log_softmax(x)) + smooth * (s / C)`` with
    ``smooth = -(log_softmax(x) * w).sum(class_dim)`` zeroed at ignored targets, then reduced.
    """
    _check_real("cross_entropy", input, weight)
    class_dim = _class_dim(input)
    log_probs = _log_softmax(input, class_dim, False)
    nll, nll_backward, nll_saved, _ = _nll_nd_forward(log_probs, target, weight, reduction,
                                                      ignore_index, weight_needs_grad)
    n_classes = log_probs.shape[class_dim]
    weight_view = None
    if weight is not None:
        weight_view = _smoothing_weight(weight, log_probs.dim(), class_dim)
        weighted = log_probs * weight_view
        smooth = -weighted.sum(class_dim)
        summed_shape = weighted.shape
    else:
        smooth = -log_probs.sum(class_dim)
        summed_shape = log_probs.shape
    ignore_mask = target == ignore_index
    smooth.masked_fill_(ignore_mask, 0.0)
    denominator = None
    if reduction == _MEAN:
        if weight is not None:
            denominator = weight.gather(0, target.masked_select(~ignore_mask).flatten()).sum()
        else:
            denominator = (~ignore_mask).sum()
        smoothed = smooth.sum() / denominator
    elif reduction == _SUM:
        smoothed = smooth.sum()
    else:
        smoothed = smooth
    # C++ divides in double: x / 0 is inf (nan for 0 / 0), where Python would raise.
    smooth_scale = label_smoothing / n_classes if n_classes else (
        math.copysign(math.inf, label_smoothing) if label_smoothing else math.nan)
    nll_scale = 1 - label_smoothing
    scaled_nll = nll_scale * nll
    scaled_smooth = smoothed * smooth_scale
    out = scaled_nll + scaled_smooth
    smooth_shape = smooth.shape
    input_dtype = input.dtype

    def backward(grad: Tensor) -> tuple[Tensor, None, None]:
        # AddBackward0, then MulBackward1 on each side.
        grad_nll = _cast(grad * nll_scale, scaled_nll)
        grad_smoothed = _cast(grad * smooth_scale, smoothed)
        from_nll = _cast(nll_backward(_cast(grad_nll, nll)), log_probs)
        if denominator is not None:  # DivBackward0, SumBackward0
            grad_smooth = _sum_backward(_cast(grad_smoothed / denominator, smooth), smooth_shape)
        elif reduction == _SUM:  # SumBackward0
            grad_smooth = _sum_backward(grad_smoothed, smooth_shape)
        else:
            grad_smooth = grad_smoothed
        grad_smooth = grad_smooth.masked_fill(ignore_mask, 0)  # MaskedFillBackward0
        grad_summed = grad_smooth.neg()  # NegBackward0
        # SumBackward1 over the class dim
        from_smooth = grad_summed.unsqueeze(class_dim).expand(summed_shape)
        if weight_view is not None:  # MulBackward0
            from_smooth = _reduce_to(from_smooth * weight_view, log_probs)
        grad_log_probs = from_nll + from_smooth  # torch's input buffer: two gradients summed
        return (_log_softmax_backward_data(grad_log_probs, log_probs, class_dim, input_dtype),
                None, None)

    saved = (log_probs, ignore_mask, *nll_saved)
    if denominator is not None:
        saved += (denominator,)
    return out, backward, saved, "AddBackward0"


def cross_entropy_probabilities_forward(input: Tensor, target: Tensor, weight: Tensor | None,
                                        reduction: int, label_smoothing: float,
                                        needs: tuple[bool, bool, bool]) -> Recorded:
    """The forward/backward pair of :func:`cross_entropy` with class-probability targets:
    torch's ``cross_entropy_loss_prob_target``, ``-(log_softmax(x) * y' * w)`` summed (over
    the class dim for ``'none'``; divided by ``numel / C`` for the mean), with
    ``y' = y * (1 - s) + s / C`` under label smoothing."""
    _check_real("cross_entropy", input, target, weight)
    need_input, need_target, need_weight = needs
    class_dim = _class_dim(input)
    n_classes = input.shape[class_dim]
    log_probs = _log_softmax(input, class_dim, False)
    if label_smoothing > 0.0:
        if label_smoothing > 1.0:
            _raise_as_torch(_cross_entropy_loss, input, target, weight, reduction, -100,
                            label_smoothing)
        smoothed_target = target * (1 - label_smoothing) + label_smoothing / n_classes
    else:
        smoothed_target = target
    product = log_probs * smoothed_target
    weight_view = None
    if weight is not None:
        # torch puts the classes along dim 1 here (the class dim of every input of rank > 1).
        weight_view = _smoothing_weight(weight, log_probs.dim(), 1) if log_probs.dim() > 1 \
            else weight
        summand = product * weight_view
    else:
        summand = product
    numel = log_probs.numel()
    divisor = numel // n_classes if numel else 0
    if reduction == _MEAN:
        if numel == 0:
            out, name = -summand.sum().fill_(_NAN), "NegBackward0"
        else:
            out, name = -summand.sum() / divisor, "DivBackward1"
    elif reduction == _SUM:
        out, name = -summand.sum(), "NegBackward0"
    else:
        out, name = -summand.sum(class_dim), "NegBackward0"
    summand_shape = summand.shape
    input_dtype = input.dtype

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        if reduction == _MEAN:
            if numel == 0:  # NegBackward0, FillBackward0 (zeros), SumBackward0
                grad = torch.zeros_like(grad.neg()).expand(summand_shape)
            else:  # DivBackward1, NegBackward0, SumBackward0
                grad = (grad / divisor).neg().expand(summand_shape)
        elif reduction == _SUM:
            grad = grad.neg().expand(summand_shape)
        else:  # NegBackward0, SumBackward1
            grad = grad.neg().unsqueeze(class_dim).expand(summand_shape)
        grad_input = grad_target = grad_weight = None
        if weight_view is not None and weight is not None:  # MulBackward0
            if need_weight:
                grad_weight = _reduce_to(grad * product, weight_view)
                if grad_weight.shape != weight.shape:
                    grad_weight = grad_weight.reshape(weight.shape)  # ViewBackward0
            grad = _reduce_to(grad * weight_view, product)
        if need_target:  # MulBackward0 (other), then AddBackward1 and MulBackward1
            grad_target = _reduce_to(grad * log_probs, smoothed_target)
            if label_smoothing > 0.0:
                grad_target = _cast(grad_target * (1 - label_smoothing), target)
        if need_input:  # MulBackward0 (self), then LogSoftmaxBackward0
            grad_log_probs = _reduce_to(grad * smoothed_target, log_probs)
            grad_input = _log_softmax_backward_data(grad_log_probs, log_probs, class_dim,
                                                    input_dtype)
        return grad_input, grad_target, grad_weight

    saved = tuple(t for t in (log_probs, smoothed_target, product, weight_view)
                  if t is not None)
    return out, backward, saved, name


def _cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None, reduction: int,
                   ignore_index: int, label_smoothing: float) -> TrackedTensor:
    with no_dispatch():
        if not is_grad_enabled():
            return wrap(_cross_entropy_loss(input, target, weight, reduction, ignore_index,
                                            label_smoothing))
        e_input = edge(input)
        weight_needs_grad = edge(weight) is not None
        if input.shape == target.shape:  # class probabilities
            n_classes = input.shape[1 if input.dim() != 1 else 0] if input.dim() else 0
            if (not target.dtype.is_floating_point or ignore_index >= 0 or input.dim() == 0
                    or (weight is not None and (weight.dim() != 1
                                                or weight.numel() != n_classes))):
                _raise_as_torch(_cross_entropy_loss, input, target, weight, reduction,
                                ignore_index, label_smoothing)
            edges = (e_input, edge(target), edge(weight))
            if any(e is not None for e in edges):
                return apply(cross_entropy_probabilities_forward, edges, input, target, weight,
                             reduction, label_smoothing, tuple(e is not None for e in edges))
        elif e_input is not None or weight_needs_grad:
            if label_smoothing > 0.0:
                if label_smoothing > 1.0:
                    _raise_as_torch(_cross_entropy_loss, input, target, weight, reduction,
                                    ignore_index, label_smoothing)
                return apply(cross_entropy_smoothing_forward, (e_input, None, None), input,
                             target, weight, reduction, ignore_index, label_smoothing,
                             weight_needs_grad)
            return apply(cross_entropy_forward, (e_input, None, None), input, target, weight,
                         reduction, ignore_index, weight_needs_grad)
        return wrap(_cross_entropy_loss(input, target, weight, reduction, ignore_index,
                                        label_smoothing))


@implements(torch.nn.functional.cross_entropy)
def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> TrackedTensor:
    r"""Cross entropy between the logits ``input`` and ``target``: class indices (the loss is
    ``nll_loss(log_softmax(input))``) or class probabilities (a target of the input's shape:
    :math:`-\sum_c w_c\,y_c \log\operatorname{softmax}(x)_c`); reduced by ``'mean'``
    (default), ``'sum'`` or not.

    Shapes: input ``(C)``, ``(N, C)`` or ``(N, C, d_1, ..., d_K)``; class-index target ``()``,
    ``(N)`` or ``(N, d_1, ..., d_K)`` (int64), or a floating target of the input's shape;
    ``weight`` ``(C)``. ``ignore_index`` applies to class indices only (torch raises for
    probabilities with a non-negative one); ``label_smoothing`` in [0, 1] mixes the target
    with the uniform distribution. The result is 0-d, or the target's (class-index) shape
    for ``'none'``.

    Backward: through torch's own decomposition, node by node: ``nll_loss_backward`` (or
    ``nll_loss2d_backward``) then ``_log_softmax_backward_data``, i.e.
    :math:`(\operatorname{softmax}(x) - \text{onehot}(y))\,w_y\,grad`; with label smoothing,
    the smoothing branch's ``Mul``/``Add``/``Div``/``Sum``/``MaskedFill``/``Neg`` backward
    formulas join it at the log-softmax; probability targets differentiate the product
    ``log_softmax(x) * y * w``, which also gives the target (and a weight that requires it) a
    gradient. A weight that requires grad with class-index targets raises as in torch.
    """
    return _cross_entropy(input, target, weight,
                          _reduction_enum(size_average, reduce, reduction), ignore_index,
                          label_smoothing)
