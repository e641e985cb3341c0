"""Hand-written forward/backward pairs, public under torch.nn.functional's names.

Every op computes its value with the ATen kernel torch itself uses, and its gradients with the
kernels torch's own derivative formulas use, in the same order, so values and gradients are
bit-identical to torch on CPU. Each docstring states shapes and the derivative (``Backward:``).

Called in grad mode on a tensor that needs a gradient, an op returns a
:class:`~shimnn.TrackedTensor` that records its backward; otherwise it records nothing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import _native
from ._graph import (
    Node,
    Recorded,
    TrackedTensor,
    apply,
    check_inplace_target,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    record,
    run_kernel,
    sum_to,
    wrap,
)

__all__ = ["linear", "mse_loss", "relu", "relu_", "tanh"]

_linear = torch._C._nn.linear
_mse_loss = torch._C._nn.mse_loss
# Direct handles on the backward kernels torch's derivative formulas call: the `.default._op`
# entry point is the cheapest way to reach an ATen op that has no torch.* binding.
_threshold_backward = torch.ops.aten.threshold_backward.default._op
_tanh_backward = torch.ops.aten.tanh_backward.default._op
_mse_loss_backward = torch.ops.aten.mse_loss_backward.default._op

_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def _reduce_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a broadcast gradient back to ``like``'s shape and cast it to ``like``'s dtype."""
    grad = sum_to(grad, like.shape)
    return grad if grad.dtype == like.dtype else grad.to(like.dtype)


def _check_real(name: str, *tensors: Tensor | None) -> None:
    for t in tensors:
        if t is not None and t.dtype.is_complex:
            raise NotImplementedError(
                f"shimnn: the backward of {name} is written for real dtypes; got {t.dtype}"
            )


# ---------------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------------


def _is_column_major(m: Tensor) -> bool:
    """torch's mm backward test (on the operand's metadata at forward time): a column-major
    operand gets its gradient computed in transposed form, with another operand order."""
    stride = m.stride()
    return stride[0] == 1 and stride[1] == m.shape[0]


def _weight_is_row_major(weight: Tensor) -> bool:
    """``weight.t()`` is column-major (the usual case: a contiguous weight)."""
    stride = weight.stride()
    return stride[1] == 1 and stride[0] == weight.shape[1]


def _flat_rows(input: Tensor) -> int:
    return math.prod(input.shape[:-1])


def _folds(input: Tensor, weight_needs_grad: bool) -> bool:
    """Whether torch's matmul runs an N-d ``input @ weight.t()`` as one mm on flattened rows.

    It always does when the weight requires grad; otherwise only when flattening needs no copy.
    """
    if weight_needs_grad or input.numel() == 0:
        return True
    shape, stride = input.shape, input.stride()
    return all(stride[i] == stride[i + 1] * shape[i + 1] for i in range(input.dim() - 2))


def _matmul_rows(input: Tensor, rows: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """torch's matmul of ``input`` by ``weight.t()`` as one mm on ``rows``, then ``+= bias``."""
    out = rows.mm(weight.t())
    if input.dim() != 2:
        out = out.view(*input.shape[:-1], weight.shape[0])
    if bias is not None:
        out.add_(bias)
    return out


@implements(torch._C._nn.linear, torch.nn.functional.linear)
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> TrackedTensor:
    r"""Apply :math:`y = x W^T + b`.

    Shapes: input ``(*, in_features)``, weight ``(out_features, in_features)``, bias
    ``(out_features)`` -> ``(*, out_features)``.

    Backward (on the rows of the input flattened to a matrix ``X``, ``G`` likewise):
    ``grad_input = G W``, ``grad_weight = G^T X``, ``grad_bias = sum of G's rows``.
    """
    with no_dispatch():
        if is_grad_enabled():
            edges = (edge(input), edge(weight), edge(bias))
            if edges[0] is not None or edges[1] is not None or edges[2] is not None:
                return apply(linear_forward, edges, input, weight, bias,
                             edges[0] is not None, edges[1] is not None, edges[2] is not None)
        return wrap(_linear(input, weight, bias))


def linear_forward(input: Tensor, weight: Tensor, bias: Tensor | None, need_input: bool,
                   need_weight: bool, need_bias: bool) -> Recorded:
    """The forward/backward pair of :func:`linear` (grad mode off, plain tensors).

    Follows the path torch's ``linear`` takes, because each path has its own kernels: addmm on
    the input flattened to rows (a bias and a contiguous or 2-d input), one mm on the rows
    (matmul folding the batch), or batched matmul; the last two add the bias afterwards.
    """
    dim = input.dim()
    if dim == 0 or weight.dim() != 2:
        _linear(input, weight, bias)  # raises torch's own error for bad ranks
    out_features = weight.shape[0]
    input_shape = input.shape
    addmm = bias is not None and (dim == 2 or input.is_contiguous())
    if not (addmm or dim <= 2 or _folds(input, need_weight)):
        return _linear_bmm(input, weight, bias, need_input, need_bias)
    if dim == 2:
        rows = input
    elif dim == 1:
        rows = input.reshape(1, input.shape[0]) if addmm else input.unsqueeze(0)
    else:
        rows = input.reshape(_flat_rows(input), input.shape[-1])
    out = _linear(input, weight, bias) if addmm else _matmul_rows(input, rows, weight, bias)
    if out.is_complex():
        _check_real("linear", input, weight, bias)

    # torch's mm derivatives pick operand orders from the operands' layout at forward time.
    rows_column_major = need_input and _is_column_major(rows)
    weight_row_major = need_weight and _weight_is_row_major(weight)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        g = grad if dim == 2 else grad.reshape(rows.shape[0], out_features)
        grad_input, grad_weight, grad_bias = linear_rows_backward(
            g, rows, weight, need_input, need_weight, need_bias and addmm, rows_column_major,
            weight_row_major)
        if grad_input is not None and dim != 2:
            grad_input = grad_input.reshape(input_shape)
        if need_bias and not addmm:
            grad_bias = sum_to(grad, (out_features,))
        return grad_input, grad_weight, grad_bias

    if need_weight:
        saved: tuple[Tensor, ...] = (rows, weight) if need_input else (rows,)
    else:
        saved = (weight,) if need_input else ()
    return out, backward, saved, _linear_node_name(dim, addmm, bias is not None)


def linear_rows_backward(
    g: Tensor, rows: Tensor, weight: Tensor, need_input: bool, need_weight: bool,
    need_bias: bool, rows_column_major: bool, weight_row_major: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of ``rows @ weight.t() + bias`` for a matrix ``rows``, given ``G = g``.

    ``grad_rows = G @ W``, ``grad_weight = G.t() @ rows``, ``grad_bias`` = the rows of G
    summed. torch computes each from the operands' layout at forward time: a column-major
    ``rows`` gets ``(W.t() @ G.t()).t()``, and ``W.t()`` (column-major when ``W`` is contiguous)
    is differentiated then transposed back, hence ``G.t() @ rows`` (else ``(rows.t() @ G).t()``).
    """
    grad_input = grad_weight = grad_bias = None
    if need_input:
        grad_input = weight.t().mm(g.t()).t() if rows_column_major else g.mm(weight)
    if need_weight:
        grad_weight = g.t().mm(rows) if weight_row_major else rows.t().mm(g).t()
    if need_bias:
        grad_bias = g.sum(0)
    return grad_input, grad_weight, grad_bias


def _linear_bmm(input: Tensor, weight: Tensor, bias: Tensor | None, need_input: bool,
                need_bias: bool) -> Recorded:
    """torch's matmul broadcasting the weight over the batch (bmm). The weight needs no
    gradient on this path (torch folds otherwise): only the input's and bias's are computed."""
    out = _linear(input, weight, bias)
    batch, n, out_features = math.prod(input.shape[:-2]), input.shape[-2], weight.shape[0]
    input_shape = input.shape

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        grad_input = grad_bias = None
        if need_input:
            g = grad.reshape(batch, n, out_features)
            w = weight.t().expand(batch, *weight.t().shape).transpose(1, 2)
            grad_input = g.bmm(w).reshape(input_shape)
        if need_bias:
            grad_bias = sum_to(grad, (out_features,))
        return grad_input, None, grad_bias

    saved = (weight,) if need_input else ()
    return out, backward, saved, _linear_node_name(input.dim(), False, bias is not None)


def _linear_node_name(dim: int, addmm: bool, has_bias: bool) -> str:
    """The name torch gives the last node of the path its linear took (for printing)."""
    if addmm:
        return "AddmmBackward0" if dim == 2 else "ViewBackward0"
    if has_bias:
        return "AddBackward0"
    return _MATMUL_NODE_NAMES.get(dim, "UnsafeViewBackward0")


_MATMUL_NODE_NAMES = {1: "SqueezeBackward4", 2: "MmBackward0"}


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------


def relu_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of :func:`relu` (grad mode off, plain tensors)."""
    _check_real("relu", input)
    result = torch.relu(input)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_threshold_backward(grad, result, 0),)

    return result, backward, (result,), "ReluBackward0"


def relu_inplace_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of :func:`relu_`: ``input`` is overwritten."""
    _check_real("relu_", input)
    torch.relu_(input)
    result = input.detach()  # an alias that shares the version counter, without a graph

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_threshold_backward(grad, result, 0),)

    return input, backward, (result,), "ReluBackward1"


def tanh_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of :func:`tanh` (grad mode off, plain tensors)."""
    _check_real("tanh", input)
    result = torch.tanh(input)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_tanh_backward(grad, result),)

    return result, backward, (result,), "TanhBackward0"


@implements(torch.relu, torch.Tensor.relu, torch.nn.functional.relu)
def relu(input: Tensor, inplace: bool = False) -> TrackedTensor:
    r"""Apply :math:`\max(x, 0)` element-wise. Shape: any, unchanged.

    Backward: ``grad`` where the result is positive, 0 elsewhere
    (``threshold_backward(grad, result, 0)``, which writes +0.0, never -0.0).
    """
    if inplace:
        return relu_(input)
    return _unary(relu_forward, torch.relu, input)


@implements(torch.relu_, torch.Tensor.relu_, torch.nn.functional.relu_)
def relu_(input: Tensor) -> TrackedTensor:
    """In-place :func:`relu`; returns ``input``. Backward as :func:`relu`."""
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        if e_input is None:
            torch.relu_(input)
            return input if type(input) is TrackedTensor else wrap(input)
        if e_input is input:
            raise RuntimeError(
                "a leaf Variable that requires grad is being used in an in-place operation.")
        check_inplace_target(input, "relu_")
        _, backward, saved, name = run_kernel(relu_inplace_forward, input)
        input._node = Node(name, backward, (e_input,), saved)  # type: ignore[attr-defined]
        return input  # type: ignore[return-value]


@implements(torch.tanh, torch.Tensor.tanh, torch.nn.functional.tanh)
def tanh(input: Tensor) -> TrackedTensor:
    r"""Apply :math:`\tanh(x)` element-wise. Shape: any, unchanged.

    Backward: :math:`grad \cdot (1 - y^2)` with :math:`y = \tanh(x)`, computed by torch's fused
    ``tanh_backward(grad, y)`` kernel (the plain formula differs in the last bit).
    """
    return _unary(tanh_forward, torch.tanh, input)


def _unary(forward: Callable[[Tensor], Recorded], kernel: Callable[[Tensor], Tensor],
           input: Tensor) -> TrackedTensor:
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                return apply(forward, (e_input,), input)
        return wrap(kernel(input))


# ---------------------------------------------------------------------------------------------
# losses
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


# The other op families; each module's __all__ is public here.
from . import _activations, _losses  # noqa: E402
from ._activations import *  # noqa: E402,F403
from ._losses import *  # noqa: E402,F403

__all__ += _activations.__all__ + _losses.__all__


def __getattr__(name: str) -> Any:
    # torch.nn.functional's other names: computed by torch, and a gradient through them raises.
    return getattr(torch.nn.functional, name)
