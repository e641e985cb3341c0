"""``linear``: the affine map, following the kernel path torch's own ``linear`` takes.

Every value is computed with the ATen kernel torch uses and every gradient with the kernels
torch's derivative formulas use, in the same order, so both are bit-identical on CPU.
"""

from __future__ import annotations

import math

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
    sum_to,
    wrap,
)
from ._common import _check_real
from ._paths import linear_path

__all__ = ["linear"]

_linear = torch._C._nn.linear



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
            # The gradients' order (input, bias, weight): the order torch's engine hands the
            # parameters theirs in (the bias's AccumulateGrad hangs off the addmm, the weight's
            # off the transpose node that runs right after it), which hooks and DDP observe.
            edges = (edge(input), edge(bias), edge(weight))
            if edges[0] is not None or edges[1] is not None or edges[2] is not None:
                return apply(linear_forward, edges, input, weight, bias,
                             edges[0] is not None, edges[2] is not None, edges[1] is not None)
        return wrap(_linear(input, weight, bias))


def linear_forward(input: Tensor, weight: Tensor, bias: Tensor | None, need_input: bool,
                   need_weight: bool, need_bias: bool) -> Recorded:
    """The forward/backward pair of :func:`linear` (grad mode off, plain tensors).

    Follows the path torch's ``linear`` takes, because each path has its own kernels: addmm on
    the input flattened to rows (a bias and a 2-d or, in torch 2.13, contiguous input), one mm
    on the rows (matmul folding the batch), or batched matmul; the last two add the bias
    afterwards. Which one, for inputs other than matrices, is asked of the installed torch
    (:func:`shimnn.ops._paths.linear_path`).
    """
    dim = input.dim()
    if dim == 0 or weight.dim() != 2:
        _linear(input, weight, bias)  # raises torch's own error for bad ranks
    out_features = weight.shape[0]
    input_shape = input.shape
    # A matrix takes addmm with a bias, mm without; other ranks: the installed torch decides.
    path = ("addmm" if bias is not None else "fold") if dim == 2 else linear_path(
        input, weight, bias, need_weight)
    if path == "bmm":
        if need_weight:  # torch folds when the weight requires grad; a torch that does not
            raise NotImplementedError(  # would need a weight gradient through bmm
                f"shimnn: torch {torch.__version__}'s linear ran bmm for a weight that "
                "requires grad; shimnn has no backward for that path")
        return _linear_bmm(input, weight, bias, need_input, need_bias)
    addmm = path == "addmm"
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
        return grad_input, grad_bias, grad_weight

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
        return grad_input, grad_bias, None

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

