"""Shape, indexing and matrix-product ops on tracked tensors.

View-like ops (``view``, ``reshape``, ``flatten``, ``squeeze``, ``transpose``, basic indexing...)
move values without arithmetic: their backward puts the gradient back in the input's shape
(``reshape``, ``unsqueeze``, ``transpose``, or copying into zeros at the indexed positions), as
torch's own derivatives do. A view of a tracked tensor remembers the version of its storage; if
either is later modified in place, using the view raises instead of giving a wrong gradient.
``matmul`` follows torch's own dispatch on the operands' ranks (dot, mv, mm, folded mm).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Recorded,
    TrackedTensor,
    _fallback,
    apply,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    record,
    set_grad_enabled,
    wrap,
)
from ._common import _check_real
from .linear import _folds, _is_column_major

__all__: list[str] = []

_TensorBase: Any = torch._C.TensorBase


def _view_op(name: str, kernel: Callable[..., Tensor], backward_for: Callable[..., Any],
             input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Record a view-like op. ``backward_for(input, *args)`` builds the backward. When torch's
    op returns its input itself (a flatten that changes nothing), so does this one."""
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        if e_input is None:
            out = kernel(input, *args, **kwargs)
            return out if out is input and type(out) is TrackedTensor else wrap(out)
        set_grad_enabled(False)
        try:
            out = kernel(input, *args, **kwargs)
        finally:
            set_grad_enabled(True)
        if out is input:
            return input
        result = record(out, name, backward_for(input, *args, **kwargs), (e_input,))
        result._view_version = result._version
        # The tensor whose memory this views (torch's _base): writes into the view go there.
        result._view_base = (input._view_base if type(input) is TrackedTensor
                             and input._view_version is not None else input)
        return result


def _reshape_backward(x: Tensor, *args: Any, **kwargs: Any) -> Callable[[Tensor], tuple[Tensor]]:
    """Backward of view/reshape/flatten/unflatten: ``grad.reshape(input.shape)``."""
    shape = x.shape
    return lambda grad: (grad.reshape(shape),)


@implements(Tensor.view)
def view(input: Tensor, *shape: Any) -> Tensor:
    """``input.view(*shape)`` (a shape; ``view(dtype)`` raises at backward).
    Backward: ``grad.reshape(input.shape)``."""
    if len(shape) == 1 and isinstance(shape[0], torch.dtype):
        return _fallback(Tensor.view, (input, *shape), {})  # type: ignore[no-any-return]
    return _view_op("ViewBackward0", Tensor.view, _reshape_backward, input, *shape)


@implements(torch.reshape, Tensor.reshape)
def reshape(input: Tensor, *shape: Any, **kwargs: Any) -> Tensor:
    """``input.reshape(*shape)``. Backward: ``grad.reshape(input.shape)``."""
    return _view_op("ViewBackward0", Tensor.reshape, _reshape_backward, input, *shape, **kwargs)


@implements(Tensor.view_as, Tensor.reshape_as)
def view_as(input: Tensor, other: Tensor) -> Tensor:
    """``input.view_as(other)``. Backward: ``grad.reshape(input.shape)``."""
    with no_dispatch():
        shape = other.shape
    return _view_op("ViewBackward0", Tensor.reshape, _reshape_backward, input, shape)


@implements(torch.flatten, Tensor.flatten)
def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Flatten dims ``start_dim..end_dim``. Backward: ``grad.reshape(input.shape)``."""
    return _view_op("ViewBackward0", torch.flatten, _reshape_backward, input, start_dim, end_dim)


@implements(torch.unflatten, Tensor.unflatten)
def unflatten(input: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """Split ``dim`` into ``sizes``. Backward: ``grad.reshape(input.shape)``."""
    return _view_op("ViewBackward0", torch.unflatten, _reshape_backward, input, dim, sizes)


def _squeeze_backward(x: Tensor, *args: Any, **kwargs: Any) -> Callable[[Tensor], tuple[Tensor]]:
    """torch's unsqueeze_to: re-insert each squeezed size-1 dim with ``unsqueeze``."""
    shape = x.shape
    dims = args[0] if args else kwargs.get("dim")
    if dims is None:
        dims = [d for d, n in enumerate(shape) if n == 1]
    else:
        n = max(len(shape), 1)
        dims = [d % n for d in ([dims] if isinstance(dims, int) else dims)]
        dims = [d for d in dims if len(shape) > 0 and shape[d] == 1]

    def backward(grad: Tensor) -> tuple[Tensor]:
        for d in sorted(dims):
            grad = grad.unsqueeze(d)
        return (grad,)

    return backward


@implements(torch.squeeze, Tensor.squeeze)
def squeeze(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Drop size-1 dims (all, or ``dim``). Backward: ``unsqueeze`` them back."""
    name = "SqueezeBackward0" if not args and "dim" not in kwargs else "SqueezeBackward1"
    return _view_op(name, torch.squeeze, _squeeze_backward, input, *args, **kwargs)


@implements(torch.unsqueeze, Tensor.unsqueeze)
def unsqueeze(input: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dim. Backward: ``grad.squeeze(dim)``."""
    def backward_for(x: Tensor, d: int) -> Callable[[Tensor], tuple[Tensor]]:
        return lambda grad: (grad.squeeze(d),)

    return _view_op("UnsqueezeBackward0", torch.unsqueeze, backward_for, input, dim)


@implements(torch.transpose, torch.swapaxes, torch.swapdims, Tensor.transpose,
            Tensor.swapaxes, Tensor.swapdims)
def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dims. Backward: ``grad.transpose(dim0, dim1)``."""
    def backward_for(x: Tensor, a: int, b: int) -> Callable[[Tensor], tuple[Tensor]]:
        return lambda grad: (grad.transpose(a, b),)

    return _view_op("TransposeBackward0", torch.transpose, backward_for, input, dim0, dim1)


@implements(torch.t, Tensor.t)
def t(input: Tensor) -> Tensor:
    """Transpose a matrix (0-d and 1-d unchanged). Backward: ``grad.t()``."""
    return _view_op("TBackward0", torch.t, lambda x: lambda grad: (grad.t(),), input)


def _matrix_transpose_property(name: str) -> Callable[..., Tensor]:
    getter = vars(_TensorBase)[name].__get__

    def op(input: Tensor, *args: Any) -> Tensor:
        """``.T`` / ``.mT`` of a matrix: as ``t()``. Other ranks raise at backward."""
        with no_dispatch():
            dim = input.dim()
        if dim == 2:
            return t(input)
        return _fallback(getter, (input, *args), {})  # type: ignore[no-any-return]

    implements(getter)(op)
    return op


_T = _matrix_transpose_property("T")
_mT = _matrix_transpose_property("mT")


def _index_backward_for(x: Tensor, index: Any) -> Callable[[Tensor], tuple[Tensor]]:
    """Basic indexing: the gradient is copied into zeros at the indexed positions (torch's
    select_backward / slice_backward, which also only copy)."""
    shape, dtype, device = x.shape, x.dtype, x.device

    def backward(grad: Tensor) -> tuple[Tensor]:
        grad_input = torch.zeros(shape, dtype=dtype, device=device)
        grad_input[index] = grad
        return (grad_input,)

    return backward


def _is_basic_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) and not isinstance(
        i, bool) for i in items)


@implements(Tensor.__getitem__)
def getitem(input: Tensor, index: Any) -> Tensor:
    """Basic indexing (ints, slices, ``None``, ``...``). Backward: the gradient copied into
    zeros at the indexed positions. Advanced (tensor, list, bool) indexing raises at backward."""
    if not _is_basic_index(index):
        return _fallback(Tensor.__getitem__, (input, index), {})  # type: ignore[no-any-return]
    name = "SliceBackward0" if isinstance(index, slice) else "SelectBackward0"
    return _view_op(name, Tensor.__getitem__, _index_backward_for, input, index)


@implements(torch.narrow, Tensor.narrow)
def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    """``length`` elements of ``dim`` from ``start``. Backward: copied into zeros."""
    with no_dispatch():
        d = dim % max(input.dim(), 1)
        s = start % input.shape[d] if start < 0 else start
    index = (slice(None),) * d + (slice(s, s + length),)
    return _view_op("SliceBackward0", Tensor.narrow,
                    lambda x, *a: _index_backward_for(x, index), input, dim, start, length)


# ---------------------------------------------------------------------------------------------
# copies and conversions
# ---------------------------------------------------------------------------------------------


def _cast_back(x: Tensor, *args: Any, **kwargs: Any) -> Callable[[Tensor], tuple[Tensor]]:
    dtype = x.dtype
    return lambda grad: (grad if grad.dtype is dtype else grad.to(dtype),)


def _copy_op(name: str, kernel: Callable[..., Tensor], input: Tensor, *args: Any,
             **kwargs: Any) -> Tensor:
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                def forward(x: Tensor) -> Recorded:
                    return kernel(x, *args, **kwargs), _cast_back(x), (), name

                result: Tensor = apply(forward, (e_input,), input)
                return result
        return wrap(kernel(input, *args, **kwargs))


@implements(torch.clone, Tensor.clone)
def clone(input: Tensor, *, memory_format: torch.memory_format = torch.preserve_format
          ) -> Tensor:
    """A copy. Backward: ``grad``."""
    return _copy_op("CloneBackward0", torch.clone, input, memory_format=memory_format)


@implements(Tensor.contiguous)
def contiguous(input: Tensor, memory_format: torch.memory_format = torch.contiguous_format
               ) -> Tensor:
    """``input`` itself if contiguous, else a contiguous copy. Backward: ``grad``."""
    with no_dispatch():
        if input.is_contiguous(memory_format=memory_format):
            return input
    return _copy_op("CloneBackward0", Tensor.contiguous, input, memory_format=memory_format)


def _dtype_conversion(kernel: Any, target: Callable[[tuple[Any, ...], dict[str, Any]],
                                                      Any]) -> Callable[..., Tensor]:
    """``.to(dtype)``, ``.float()``...: ``input`` itself when the dtype is already right (as
    torch), else a converted copy. Backward: ``grad`` cast back to the input's dtype. Device
    moves and other options run as torch's and raise at backward."""

    def op(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with no_dispatch():
            dtype = target(args, kwargs)
            dtype_only = dtype is not None and set(kwargs) <= {"dtype"} and all(
                isinstance(a, torch.dtype) for a in args)
            if dtype_only and dtype is input.dtype:
                return input
        if not dtype_only:
            return _fallback(kernel, (input, *args), kwargs)  # type: ignore[no-any-return]
        return _copy_op("ToCopyBackward0", kernel, input, *args, **kwargs)

    return op


def _to_dtype(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for a in args:
        if isinstance(a, torch.dtype):
            return a
    return kwargs.get("dtype")


implements(Tensor.to)(_dtype_conversion(Tensor.to, _to_dtype))
implements(Tensor.float)(_dtype_conversion(Tensor.float, lambda a, k: torch.float32))
implements(Tensor.double)(_dtype_conversion(Tensor.double, lambda a, k: torch.float64))
implements(Tensor.half)(_dtype_conversion(Tensor.half, lambda a, k: torch.float16))


# ---------------------------------------------------------------------------------------------
# cat
# ---------------------------------------------------------------------------------------------


def _cat_forward(*args: Any) -> Recorded:
    *tensors, dim = args
    _check_real("cat", *tensors)
    result = torch.cat(tensors, dim)
    d = dim % max(result.dim(), 1)
    sizes = [t.shape[d] if t.dim() > 0 and t.numel() else 0 for t in tensors]
    skipped = [t.dim() == 1 and t.numel() == 0 for t in tensors]  # legacy empty inputs
    dtypes = [t.dtype for t in tensors]

    def backward(grad: Tensor) -> list[Tensor | None]:
        grads: list[Tensor | None] = []
        offset = 0
        for size, skip, dtype in zip(sizes, skipped, dtypes):
            if skip:
                grads.append(torch.zeros(0, dtype=dtype, device=grad.device))
                continue
            g = grad.narrow(d, offset, size)
            grads.append(g if g.dtype is dtype else g.to(dtype))
            offset += size
        return grads

    return result, backward, (), "CatBackward0"


@implements(torch.cat, torch.concat, torch.concatenate)
def cat(tensors: Sequence[Tensor], dim: int = 0, *, out: Tensor | None = None) -> Tensor:
    """Concatenate along ``dim``. Backward: each input's slice of ``grad`` (``narrow``)."""
    if out is not None:
        return _fallback(torch.cat, (tensors, dim), {"out": out})  # type: ignore[no-any-return]
    with no_dispatch():
        tensors = list(tensors)
        if is_grad_enabled():
            edges = tuple(edge(t) for t in tensors)
            if any(e is not None for e in edges):
                return apply(_cat_forward, edges, *tensors, dim)
        return wrap(torch.cat(tensors, dim))


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------


def _mm_grads(g: Tensor, a: Tensor, b: Tensor, need_a: bool, need_b: bool,
              a_col: bool, b_col: bool) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``a @ b`` (matrices): ``g @ b.t()`` and ``a.t() @ g``, each computed in
    transposed form for a column-major operand, as torch's mm derivatives do."""
    grad_a = grad_b = None
    if need_a:
        grad_a = b.mm(g.t()).t() if a_col else g.mm(b.t())
    if need_b:
        grad_b = g.t().mm(a).t() if b_col else a.t().mm(g)
    return grad_a, grad_b


def _matmul_forward(a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> Recorded:
    _check_real("matmul", a, b)
    da, db = a.dim(), b.dim()
    if da == 1 and db == 1:
        result = torch.dot(a, b)

        def backward_dot(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
            return (grad * b if need_a else None, grad * a if need_b else None)

        return result, backward_dot, (a, b), "DotBackward0"
    if da == 2 and db == 1:
        result = torch.mv(a, b)

        def backward_mv(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
            return (grad.outer(b) if need_a else None, a.t().mv(grad) if need_b else None)

        return result, backward_mv, (a, b), "MvBackward0"
    if db == 2 and (da in (1, 2) or _folds(a, need_b)):
        # 1-d: a.unsqueeze(0) @ b; N-d: a folded to rows (torch's matmul does the same)
        rows = a if da == 2 else a.unsqueeze(0) if da == 1 else a.reshape(
            math.prod(a.shape[:-1]), a.shape[-1])
        out = rows.mm(b)
        result = out if da == 2 else out.squeeze(0) if da == 1 else out.view(
            *a.shape[:-1], b.shape[1])
        a_col, b_col = need_a and _is_column_major(rows), need_b and _is_column_major(b)
        a_shape, out_rows = a.shape, rows.shape[0]

        def backward_mm(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
            g = grad if da == 2 else grad.reshape(out_rows, b.shape[1])
            grad_a, grad_b = _mm_grads(g, rows, b, need_a, need_b, a_col, b_col)
            if grad_a is not None and da != 2:
                grad_a = grad_a.reshape(a_shape)
            return grad_a, grad_b

        name = {1: "SqueezeBackward4", 2: "MmBackward0"}.get(da, "UnsafeViewBackward0")
        return result, backward_mm, (rows, b), name
    raise _Unsupported


class _Unsupported(Exception):
    pass


@implements(torch.matmul, Tensor.matmul, Tensor.__matmul__)
def matmul(input: Tensor, other: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Matrix product with torch's rank rules: dot (1-d, 1-d), mv (2-d, 1-d), mm, a vector or
    an N-d batch times a matrix (folded into one mm). Backward: torch's dot/mv/mm formulas.
    Other rank combinations (batched matmul) are computed but raise at backward."""
    with no_dispatch():
        edges = (edge(input), edge(other)) if is_grad_enabled() else (None, None)
        if out is None and (edges[0] is not None or edges[1] is not None):
            try:
                return apply(_matmul_forward, edges, input, other, edges[0] is not None,
                             edges[1] is not None)
            except _Unsupported:
                pass
        elif out is None:
            return wrap(torch.matmul(input, other))
    kwargs = {"out": out} if out is not None else {}
    return _fallback(torch.matmul, (input, other), kwargs)  # type: ignore[no-any-return]


@implements(Tensor.__rmatmul__)
def rmatmul(input: Tensor, other: Tensor) -> Tensor:
    """``other @ input``."""
    return matmul(other, input)


@implements(torch.mm, Tensor.mm)
def mm(input: Tensor, mat2: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Product of two matrices. Backward: torch's mm formulas."""
    with no_dispatch():
        matrices = input.dim() == 2 and mat2.dim() == 2
    if not matrices or out is not None:
        kwargs = {"out": out} if out is not None else {}
        return _fallback(torch.mm, (input, mat2), kwargs)  # type: ignore[no-any-return]
    return matmul(input, mat2)
