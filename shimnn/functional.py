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
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._graph import (
    Node,
    TrackedTensor,
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
    """torch's mm backward test: a column-major operand gets its gradient computed transposed."""
    stride = m.stride()
    return stride[0] == 1 and stride[1] == m.shape[0]


def _mm_mat1_backward(grad: Tensor, mat1: Tensor, weight: Tensor) -> Tensor:
    """Gradient of ``mat1`` in ``mat1 @ weight.t()``: ``grad @ weight``."""
    if _is_column_major(mat1):
        return weight.t().mm(grad.t()).t()
    return grad.mm(weight)


def _mm_weight_backward(grad: Tensor, mat1: Tensor, weight: Tensor) -> Tensor:
    """Gradient of ``weight`` in ``mat1 @ weight.t()``: ``grad.t() @ mat1``.

    torch differentiates ``weight.t()`` (column-major when ``weight`` is contiguous) and then
    transposes back, which picks the operand order below.
    """
    if _is_column_major(weight.t()):
        return grad.t().mm(mat1)
    return mat1.t().mm(grad).t()


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
            e_input, e_weight, e_bias = edge(input), edge(weight), edge(bias)
            if e_input is not None or e_weight is not None or e_bias is not None:
                return _linear_recorded(input, weight, bias, e_input, e_weight, e_bias)
        return wrap(_linear(input, weight, bias))


def _linear_recorded(input, weight, bias, e_input, e_weight, e_bias) -> TrackedTensor:  # type: ignore[no-untyped-def]
    _check_real("linear", input, weight, bias)
    need_input, need_weight = e_input is not None, e_weight is not None
    dim = input.dim()
    if dim == 0 or weight.dim() != 2:
        run_kernel(_linear, input, weight, bias)  # raises torch's own error
    out_features = weight.shape[0]
    # Follow the path torch's linear takes, because each path has its own kernels:
    # addmm on the input flattened to rows (bias and a contiguous or 2-d input), one mm on the
    # rows (matmul that folds), or batched matmul; the bias of the last two is added after.
    addmm = bias is not None and (dim == 2 or input.is_contiguous())
    if addmm or dim <= 2 or _folds(input, need_weight):
        if dim == 2:
            rows = input
        elif dim == 1:
            rows = input.unsqueeze(0) if not addmm else input.reshape(1, input.shape[0])
        else:
            rows = input.reshape(_flat_rows(input), input.shape[-1])
        if addmm:
            out = run_kernel(_linear, input, weight, bias)
        else:
            out = run_kernel(_matmul_rows, input, rows, weight, bias)

        def backward(grad: Tensor) -> Sequence[Tensor | None]:
            g = grad if dim == 2 else grad.reshape(rows.shape[0], out_features)
            grad_input = grad_weight = grad_bias = None
            if need_input:
                grad_input = _mm_mat1_backward(g, rows, weight)
                if dim != 2:
                    grad_input = grad_input.reshape(input.shape)
            if need_weight:
                grad_weight = _mm_weight_backward(g, rows, weight)
            if e_bias is not None:
                grad_bias = sum_to(g if addmm else grad, bias.shape)
            return grad_input, grad_weight, grad_bias

        saved = tuple(t for t, keep in ((rows, need_weight), (weight, need_input)) if keep)
        return record(out, _linear_node_name(dim, addmm, bias is not None), backward,
                      (e_input, e_weight, e_bias), saved)

    # Batched matmul: torch's matmul broadcasts the weight over the batch and runs bmm. The
    # weight needs no gradient here (otherwise torch folds), so only the input's is computed.
    out = run_kernel(_linear, input, weight, bias)
    batch = math.prod(input.shape[:-2])

    def backward_bmm(grad: Tensor) -> Sequence[Tensor | None]:
        grad_input = grad_bias = None
        if need_input:
            g = grad.reshape(batch, input.shape[-2], out_features)
            w = weight.t().expand(batch, *weight.t().shape).transpose(1, 2)
            grad_input = g.bmm(w).reshape(input.shape)
        if e_bias is not None:
            grad_bias = sum_to(grad, bias.shape)
        return grad_input, None, grad_bias

    saved = (weight,) if need_input else ()
    name = _linear_node_name(dim, False, bias is not None)
    return record(out, name, backward_bmm, (e_input, None, e_bias), saved)


def _linear_node_name(dim: int, addmm: bool, has_bias: bool) -> str:
    """The name torch gives the last node of the path its linear took (for printing)."""
    if addmm:
        return "AddmmBackward0" if dim == 2 else "ViewBackward0"
    if has_bias:
        return "AddBackward0"
    return {1: "SqueezeBackward4", 2: "MmBackward0"}.get(dim, "UnsafeViewBackward0")


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------


@implements(torch.relu, torch.Tensor.relu, torch.nn.functional.relu)
def relu(input: Tensor, inplace: bool = False) -> TrackedTensor:
    r"""Apply :math:`\max(x, 0)` element-wise. Shape: any, unchanged.

    Backward: ``grad`` where the result is positive, 0 elsewhere
    (``threshold_backward(grad, result, 0)``, which writes +0.0, never -0.0).
    """
    if inplace:
        return relu_(input)
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                _check_real("relu", input)
                result = run_kernel(torch.relu, input)

                def backward(grad: Tensor) -> Sequence[Tensor | None]:
                    return (_threshold_backward(grad, result, 0),)

                return record(result, "ReluBackward0", backward, (e_input,), (result,))
        return wrap(torch.relu(input))


@implements(torch.relu_, torch.Tensor.relu_, torch.nn.functional.relu_)
def relu_(input: Tensor) -> Tensor:
    """In-place :func:`relu`; returns ``input``. Backward as :func:`relu`."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                if e_input is input:
                    raise RuntimeError(
                        "a leaf Variable that requires grad is being used in an in-place "
                        "operation."
                    )
                _check_real("relu_", input)
                run_kernel(torch.relu_, input)
                result = input.detach()  # an alias that shares the version counter

                def backward(grad: Tensor) -> Sequence[Tensor | None]:
                    return (_threshold_backward(grad, result, 0),)

                input._node = Node(  # type: ignore[attr-defined]
                    "ReluBackward1", backward, (e_input,), (result,))
                return input
        torch.relu_(input)
        return input if type(input) is TrackedTensor else wrap(input)


@implements(torch.tanh, torch.Tensor.tanh, torch.nn.functional.tanh)
def tanh(input: Tensor) -> TrackedTensor:
    r"""Apply :math:`\tanh(x)` element-wise. Shape: any, unchanged.

    Backward: :math:`grad \cdot (1 - y^2)` with :math:`y = \tanh(x)`, computed by torch's fused
    ``tanh_backward(grad, y)`` kernel (the plain formula differs in the last bit).
    """
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                _check_real("tanh", input)
                result = run_kernel(torch.tanh, input)

                def backward(grad: Tensor) -> Sequence[Tensor | None]:
                    return (_tanh_backward(grad, result),)

                return record(result, "TanhBackward0", backward, (e_input,), (result,))
        return wrap(torch.tanh(input))


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def _legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """The reduction the deprecated ``size_average``/``reduce`` pair means (torch warns)."""
    return torch.nn._reduction.legacy_get_string(size_average, reduce)


def _reduction_enum(size_average: bool | None, reduce: bool | None, reduction: str) -> int:
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    return torch.nn._reduction.get_enum(reduction)


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
    if target.size() != input.size():
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=2,
        )
    enum = _reduction_enum(size_average, reduce, reduction)
    with no_dispatch():
        expanded_input, expanded_target = torch.broadcast_tensors(input, target)
        if is_grad_enabled():
            e_input, e_target = edge(input), edge(target)
            if e_input is not None or e_target is not None:
                _check_real("mse_loss", input, target)
                out = run_kernel(_mse_loss, expanded_input, expanded_target, enum)

                def backward(grad: Tensor) -> Sequence[Tensor | None]:
                    grad_input = grad_target = None
                    if e_input is not None:
                        g = _mse_loss_backward(grad, expanded_input, expanded_target, enum)
                        grad_input = _reduce_to(g, input)
                    if e_target is not None:
                        g = _mse_loss_backward(grad, expanded_target, expanded_input, enum)
                        grad_target = _reduce_to(g, target)
                    return grad_input, grad_target

                saved = (expanded_input, expanded_target)
                return record(out, "MseLossBackward0", backward, (e_input, e_target), saved)
        return wrap(_mse_loss(expanded_input, expanded_target, enum))  # type: ignore[arg-type]


def __getattr__(name: str) -> Any:
    # torch.nn.functional's other names: computed by torch, and a gradient through them raises.
    return getattr(torch.nn.functional, name)
