"""Matrix products: ``matmul`` (every rank combination), ``mm``, ``bmm``, ``baddbmm``.

``torch.matmul`` is not one kernel: torch decomposes it by the operands' ranks and layouts into
``dot``, ``mv``, ``mm`` on rows folded from the batch, or ``expand`` + ``reshape`` + ``bmm`` +
``_unsafe_view``, and differentiates each piece with its own formula. :func:`matmul` follows the
same decomposition (``_matmul_impl`` in ATen's ``LinearAlgebra.cpp``; which branch, for operands
of 3 or more dims, is asked of the installed torch: :mod:`shimnn.ops._paths`), kernel by kernel
on tensors of the same strides, as one recorded node: the view pieces only move
values, so their backward (reshapes, transposes) is folded into the node's backward, while the
reductions an ``expand`` needs (``sum_to``) and the product kernels run exactly as torch's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Recorded,
    TrackedTensor,
    _requires_grad,
    apply,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    sum_to,
    wrap,
)
from ._common import _check_real, _out_requires_grad, _record_inplace
from ._paths import matmul_path
from .linear import _is_column_major

__all__: list[str] = []

_unsafe_view = torch.ops.aten._unsafe_view.default._op


def _mm_grads(g: Tensor, a: Tensor, b: Tensor, need_a: bool, need_b: bool,
              a_col: bool, b_col: bool) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``a @ b`` (matrices): ``g @ b.t()`` and ``a.t() @ g``, each computed in
    transposed form for a column-major operand, as torch's ``mm_mat1_backward`` /
    ``mm_mat2_backward`` do (``a_col``/``b_col``: the operand's layout at forward time)."""
    grad_a = grad_b = None
    if need_a:
        grad_a = b.mm(g.t()).t() if a_col else g.mm(b.t())
    if need_b:
        grad_b = g.t().mm(a).t() if b_col else a.t().mm(g)
    return grad_a, grad_b


def _dot_forward(a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> Recorded:
    result = torch.dot(a, b)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        return (grad * b if need_a else None, grad * a if need_b else None)

    return result, backward, _saved(b if need_a else None, a if need_b else None), "DotBackward0"


def _saved(*ts: Tensor | None) -> tuple[Tensor, ...]:
    return tuple(t for t in ts if t is not None)


def _mv_forward(a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> Recorded:
    result = torch.mv(a, b)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        return (grad.outer(b) if need_a else None, a.t().mv(grad) if need_b else None)

    return result, backward, _saved(b if need_a else None, a if need_b else None), "MvBackward0"


def _mm_forward(a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> Recorded:
    """``a.mm(b)`` (matrices), and ``a.unsqueeze(0).mm(b).squeeze_(0)`` for a vector ``a``."""
    da = a.dim()
    rows = a if da == 2 else a.unsqueeze(0)
    out = rows.mm(b)
    result = out if da == 2 else out.squeeze_(0)
    a_col, b_col = need_a and _is_column_major(rows), need_b and _is_column_major(b)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g = grad if da == 2 else grad.unsqueeze(0)
        grad_a, grad_b = _mm_grads(g, rows, b, need_a, need_b, a_col, b_col)
        if grad_a is not None and da != 2:
            grad_a = grad_a.squeeze(0)
        return grad_a, grad_b

    saved = _saved(b if need_a else None, rows if need_b else None)
    return result, backward, saved, "MmBackward0" if da == 2 else "SqueezeBackward4"


def _fold_forward(a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> Recorded:
    """The larger operand's batch folded into the rows of one mm (or mv): ``a`` N-d times a
    matrix or vector ``b``; or, transposed, ``b.mT`` folded times ``a.t()`` (or vector ``a``),
    the result transposed back and made contiguous, as torch's matmul."""
    transpose = b.dim() > a.dim()
    t1 = b.mT if transpose else a
    t2 = (a.t() if a.dim() == 2 else a) if transpose else b
    need_t1, need_t2 = (need_b, need_a) if transpose else (need_a, need_b)
    t1_shape = t1.shape
    output_shape = list(t1_shape[:-1])
    folded = math.prod(output_shape)
    matrix = t2.dim() == 2
    if matrix:
        output_shape.append(t2.shape[1])
    rows = t1.reshape(folded, t1_shape[-1])
    name = "UnsafeViewBackward0"
    if matrix:
        out = _unsafe_view(rows.mm(t2), output_shape)
        result = out
        if transpose:
            transposed = out.mT
            result = transposed.contiguous()  # a copy unless the transpose is contiguous
            name = "TransposeBackward0" if result is transposed else "CloneBackward0"
    else:
        result = _unsafe_view(rows.mv(t2), output_shape)
    rows_col = matrix and need_t1 and _is_column_major(rows)
    t2_col = matrix and need_t2 and _is_column_major(t2)
    rows_shape0 = rows.shape[0]

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if matrix:
            g = (grad.mT if transpose else grad).reshape(rows_shape0, t2.shape[1])
            g_rows, g_t2 = _mm_grads(g, rows, t2, need_t1, need_t2, rows_col, t2_col)
        else:
            g = grad.reshape(rows_shape0)
            g_rows = g.outer(t2) if need_t1 else None
            g_t2 = rows.t().mv(g) if need_t2 else None
        g_t1 = None if g_rows is None else g_rows.reshape(t1_shape)
        if not transpose:
            return g_t1, g_t2
        g_a = g_t2.t() if g_t2 is not None and matrix else g_t2
        return g_a, None if g_t1 is None else g_t1.mT

    saved = _saved(t2 if need_t1 else None, rows if need_t2 else None)
    return result, backward, saved, name


def _broadcast(x: Sequence[int], y: Sequence[int]) -> list[int]:
    """The broadcast of two batch shapes (``torch.broadcast_shapes`` costs ~60 us in Python);
    RuntimeError when they do not broadcast (the caller then raises torch's own error)."""
    if len(x) < len(y):
        x, y = y, x
    out = list(x)
    lead = len(x) - len(y)
    for i, n in enumerate(y):
        m = out[lead + i]
        if m == 1:
            out[lead + i] = n
        elif n != 1 and n != m:
            raise RuntimeError("batch shapes do not broadcast")
    return out


def _batched_forward(a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> Recorded:
    """Both operands expanded to the broadcast batch, reshaped to ``(batch, n, m)`` and
    multiplied by bmm. Backward: bmm's formulas, reshaped back, then each gradient summed over
    the broadcast dims (torch's ExpandBackward ``sum_to``)."""
    da, db = a.dim(), b.dim()
    n = a.shape[-2] if da > 1 else 1
    m1 = a.shape[-1]
    m2 = b.shape[-2] if db > 1 else b.shape[0]
    p = b.shape[-1] if db > 1 else 1
    batch = _broadcast(a.shape[:max(da - 2, 0)], b.shape[:max(db - 2, 0)])
    count = math.prod(batch)
    a_shape, b_shape = a.shape, b.shape
    a_expanded = a.expand(*batch, n, m1).reshape(count, n, m1)
    vector_rhs = db == 1
    if vector_rhs:
        b_expanded = b.expand(*batch, m2).reshape(count, m2).unsqueeze(2)
    else:
        b_expanded = b.expand(*batch, m2, p).reshape(count, m2, p)
    output_shape = list(batch)
    if da > 1:
        output_shape.append(n)
    if db > 1:
        output_shape.append(p)
    out = a_expanded.bmm(b_expanded)
    result = _unsafe_view(out.squeeze(-1) if vector_rhs else out, output_shape)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g = grad.reshape(count, n).unsqueeze(-1) if vector_rhs else grad.reshape(count, n, p)
        grad_a = grad_b = None
        if need_a:
            grad_a = sum_to(g.bmm(b_expanded.transpose(1, 2)).reshape(*batch, n, m1), a_shape)
        if need_b:
            gb = a_expanded.transpose(1, 2).bmm(g)
            gb = gb.squeeze(2).reshape(*batch, m2) if vector_rhs else gb.reshape(*batch, m2, p)
            grad_b = sum_to(gb, b_shape)
        return grad_a, grad_b

    saved = _saved(b_expanded if need_a else None, a_expanded if need_b else None)
    return result, backward, saved, "UnsafeViewBackward0"


def _matmul_forward(a: Tensor, b: Tensor, need_a: bool, need_b: bool,
                    a_rg: bool | None = None, b_rg: bool | None = None) -> Recorded:
    """torch's ``_matmul_impl`` dispatch on the ranks (and, for folding, the layouts and which
    operands require grad: ``a_rg``/``b_rg``, by default ``need_a``/``need_b``)."""
    _check_real("matmul", a, b)
    if a_rg is None:
        a_rg, b_rg = need_a, need_b
    da, db = a.dim(), b.dim()
    try:
        if da == 1 and db == 1:
            return _dot_forward(a, b, need_a, need_b)
        if da == 2 and db == 1:
            return _mv_forward(a, b, need_a, need_b)
        if db == 2 and da in (1, 2):
            return _mm_forward(a, b, need_a, need_b)
        if da == 0 or db == 0:
            raise RuntimeError
        path = matmul_path(a, b, bool(a_rg), bool(b_rg))  # as the installed torch decides
        if path == "squeeze0":  # a 3-d operand of batch 1 that requires grad, as a matrix
            return _squeezed(a.squeeze(0), b, need_a, need_b, 0)
        if path == "squeeze1":
            return _squeezed(a, b.squeeze(0), need_a, need_b, 1)
        if path == "fold":
            return _fold_forward(a, b, need_a, need_b)
        return _batched_forward(a, b, need_a, need_b)
    except RuntimeError:
        torch.matmul(a, b)  # torch's own error for these shapes
        raise


def _squeezed(a: Tensor, b: Tensor, need_a: bool, need_b: bool, which: int) -> Recorded:
    """The fold of a product whose operand ``which`` was squeezed from ``(1, n, m)``; its
    gradient gets the dim back (SqueezeBackward1)."""
    result, fold_backward, saved, name = _fold_forward(a, b, need_a, need_b)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        grads = list(fold_backward(grad))
        g = grads[which]
        if g is not None:
            grads[which] = g.unsqueeze(0)
        return grads[0], grads[1]

    return result, backward, saved, name


def _torch_requires_grad(t: Tensor) -> bool:
    """``t.requires_grad`` as torch itself would see it (a tracked result requires grad)."""
    return _requires_grad(t) or (type(t) is TrackedTensor and t._node is not None)


@implements(torch.matmul, Tensor.matmul, Tensor.__matmul__)
def matmul(input: Tensor, other: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Matrix product with torch's rank rules: dot (1-d, 1-d), mv (2-d, 1-d), mm, the batch of
    an N-d operand folded into one mm/mv against a matrix or vector, or batched (broadcast)
    bmm. Shapes: ``(*, n, m) @ (*, m, p) -> (*broadcast, n, p)`` (1-d operands get a dim
    added then removed).

    Backward: torch's dot/mv/mm/bmm formulas on the pieces torch's decomposition computes
    (operand orders chosen by the layouts at forward time), reshaped back and summed over
    broadcast batch dims."""
    with no_dispatch():
        if is_grad_enabled():
            e_input, e_other = edge(input), edge(other)
            if e_input is not None or e_other is not None:
                if out is not None:
                    raise _out_requires_grad("matmul")
                return apply(_matmul_forward, (e_input, e_other), input, other,
                             e_input is not None, e_other is not None)
        if out is not None:
            return torch.matmul(input, other, out=out)
        da, db = input.dim(), other.dim()
        if (da >= 3 or db >= 3) and da * db > 0 and (
                type(input) is TrackedTensor or type(other) is TrackedTensor):
            # Folding depends on requires_grad, which a tracked result lacks at torch's level.
            value = _matmul_forward(input, other, False, False, _torch_requires_grad(input),
                                    _torch_requires_grad(other))[0]
            return wrap(value)
        return wrap(torch.matmul(input, other))


@implements(Tensor.__rmatmul__)
def rmatmul(input: Tensor, other: Tensor) -> Tensor:
    """``other @ input``."""
    return matmul(other, input)


@implements(torch.mm, Tensor.mm)
def mm(input: Tensor, mat2: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Product of two matrices ``(n, m) @ (m, p) -> (n, p)``. Backward: torch's mm formulas
    (``mm_mat1_backward``/``mm_mat2_backward``)."""
    with no_dispatch():
        if input.dim() != 2 or mat2.dim() != 2:
            torch.mm(input, mat2)  # torch's error
    return matmul(input, mat2, out=out)


def _bmm_forward(a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> Recorded:
    _check_real("bmm", a, b)
    result = torch.bmm(a, b)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        return (grad.bmm(b.transpose(1, 2)) if need_a else None,
                a.transpose(1, 2).bmm(grad) if need_b else None)

    return result, backward, _saved(b if need_a else None, a if need_b else None), "BmmBackward0"


@implements(torch.bmm, Tensor.bmm)
def bmm(input: Tensor, mat2: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Batched matrix product ``(b, n, m) @ (b, m, p) -> (b, n, p)`` (no broadcasting).

    Backward: ``grad.bmm(mat2.transpose(1, 2))``; ``input.transpose(1, 2).bmm(grad)``."""
    with no_dispatch():
        if is_grad_enabled():
            e_input, e_mat2 = edge(input), edge(mat2)
            if e_input is not None or e_mat2 is not None:
                if out is not None:
                    raise _out_requires_grad("bmm")
                return apply(_bmm_forward, (e_input, e_mat2), input, mat2,
                             e_input is not None, e_mat2 is not None)
        if out is not None:
            return torch.bmm(input, mat2, out=out)
        return wrap(torch.bmm(input, mat2))


def _maybe_multiply(grad: Tensor, s: Any) -> Tensor:
    """torch's ``maybe_multiply``: ``grad`` itself when the scalar is 1."""
    return grad if s == 1 else grad * s


def _baddbmm_backward(shape: Sequence[int], dtype: torch.dtype, batch1: Tensor, batch2: Tensor,
                      beta: Any, alpha: Any, needs: tuple[bool, ...]) -> Any:
    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        g_self = g1 = g2 = None
        if needs[0]:
            g_self = sum_to(_maybe_multiply(grad, beta), shape)
            if g_self.dtype != dtype:
                g_self = g_self.to(dtype)
        if needs[1]:
            g1 = _maybe_multiply(grad.bmm(batch2.transpose(1, 2)), alpha)
        if needs[2]:
            g2 = _maybe_multiply(batch1.transpose(1, 2).bmm(grad), alpha)
        return g_self, g1, g2

    return backward


def _baddbmm_forward(input: Tensor, batch1: Tensor, batch2: Tensor, beta: Any, alpha: Any,
                     needs: tuple[bool, bool, bool]) -> Recorded:
    _check_real("baddbmm", input, batch1, batch2)
    result = torch.baddbmm(input, batch1, batch2, beta=beta, alpha=alpha)
    backward = _baddbmm_backward(input.shape, input.dtype, batch1, batch2, beta, alpha, needs)
    saved = _saved(batch2 if needs[1] else None, batch1 if needs[2] else None)
    return result, backward, saved, "BaddbmmBackward0"


@implements(torch.baddbmm, Tensor.baddbmm)
def baddbmm(input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: Any = 1, alpha: Any = 1,
            out: Tensor | None = None) -> Tensor:
    """``beta * input + alpha * (batch1 @ batch2)``; ``input`` broadcasts to ``(b, n, p)``.

    Backward: ``beta * grad`` (summed to ``input``'s shape);
    ``alpha * grad.bmm(batch2.transpose(1, 2))``; ``alpha * batch1.transpose(1, 2).bmm(grad)``
    (``maybe_multiply``: no multiplication when the scalar is 1)."""
    with no_dispatch():
        if is_grad_enabled():
            edges = (edge(input), edge(batch1), edge(batch2))
            if edges[0] is not None or edges[1] is not None or edges[2] is not None:
                if out is not None:
                    raise _out_requires_grad("baddbmm")
                needs = (edges[0] is not None, edges[1] is not None, edges[2] is not None)
                return apply(_baddbmm_forward, edges, input, batch1, batch2, beta, alpha,
                             needs)
        if out is not None:
            return torch.baddbmm(input, batch1, batch2, beta=beta, alpha=alpha, out=out)
        return wrap(torch.baddbmm(input, batch1, batch2, beta=beta, alpha=alpha))


@implements(Tensor.baddbmm_)
def baddbmm_(input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: Any = 1, alpha: Any = 1
             ) -> Tensor:
    """In-place :func:`baddbmm`. Exact: no gradient reads ``input``'s overwritten values."""

    def run(needs: tuple[bool, ...]) -> Any:
        with no_dispatch():
            _check_real("baddbmm_", input, batch1, batch2)
            shape, dtype = input.shape, input.dtype
            Tensor.baddbmm_(input, batch1, batch2, beta=beta, alpha=alpha)
        backward = _baddbmm_backward(shape, dtype, batch1, batch2, beta, alpha, needs)
        return backward, _saved(batch2 if needs[1] else None, batch1 if needs[2] else None), \
            "BaddbmmBackward0"

    return _record_inplace("baddbmm_", input, (batch1, batch2), run,
                           lambda: Tensor.baddbmm_(input, batch1, batch2, beta=beta, alpha=alpha))

