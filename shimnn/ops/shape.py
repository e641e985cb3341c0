"""Shape, indexing and matrix-product ops on tracked tensors.

View-like ops (``view``, ``reshape``, ``flatten``, ``squeeze``, ``transpose``, basic indexing...)
move values without arithmetic: their backward puts the gradient back in the input's shape
(``reshape``, ``unsqueeze``, ``transpose``, or copying into zeros at the indexed positions), as
torch's own derivatives do. A view of a tracked tensor remembers the version of its storage; if
either is later modified in place, using the view raises instead of giving a wrong gradient.
``matmul`` follows torch's own dispatch on the operands' ranks (dot, mv, mm, folded mm).
"""

from __future__ import annotations

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
    record_outputs,
    set_grad_enabled,
    sum_to,
    wrap,
)
from ._common import _check_real, _out_requires_grad

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
            if out is input and type(out) is TrackedTensor:
                return out
            result = wrap(out)
            if type(input) is TrackedTensor and is_grad_enabled():
                # Should a value that needs a gradient be written into its base later, this
                # view follows it (see _graph.edge).
                result._view_version = result._version
                result._view_base = (input._view_base if input._view_version is not None
                                     else input)
            return result
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
        """``.T`` / ``.mT`` of a matrix: as ``t()``; ``.mT`` of a batch of matrices: as
        ``transpose(-2, -1)`` (torch's TransposeBackward0). Other ranks and real-dtype ``.mH``
        raise at backward."""
        with no_dispatch():
            dim = input.dim()
            real = not input.dtype.is_complex
        if dim == 2 and name != "mH":
            return t(input)
        if dim > 2 and (name == "mT" or name == "mH" and real):
            return transpose(input, -2, -1)
        return _fallback(getter, (input, *args), {})  # type: ignore[no-any-return]

    implements(getter)(op)
    return op


_T = _matrix_transpose_property("T")
_mT = _matrix_transpose_property("mT")
_mH = _matrix_transpose_property("mH")


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
    """Only ints (not bools), slices, ``None`` and ``...`` (one type test each: this runs for
    every ``h[:, t]`` of a time loop)."""
    if type(index) is tuple:
        for i in index:
            t = type(i)
            if t is not slice and t is not int and i is not None and i is not Ellipsis:
                return False
        return True
    t = type(index)
    return t is slice or t is int or index is None or index is Ellipsis


@implements(Tensor.__getitem__)
def getitem(input: Tensor, index: Any) -> Tensor:
    """Basic indexing (ints, slices, ``None``, ``...``): a view. Backward: the gradient copied
    into zeros at the indexed positions. Advanced (tensor, int list) indexing:
    :func:`shimnn.ops.index.advanced_getitem`."""
    if isinstance(index, Tensor) or not _is_basic_index(index):
        return _index.advanced_getitem(input, index)
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
# permute, expand, repeat, select
# ---------------------------------------------------------------------------------------------


def _int_list(args: tuple[Any, ...], kwargs: dict[str, Any], key: str) -> list[int]:
    """The int list of ``f(x, 1, 2)``, ``f(x, (1, 2))`` or ``f(x, key=(1, 2))``."""
    if key in kwargs:
        value = kwargs[key]
    elif len(args) == 1 and not isinstance(args[0], int):
        value = args[0]
    else:
        value = args
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _permute_backward(x: Tensor, *args: Any, **kwargs: Any) -> Callable[[Tensor], tuple[Tensor]]:
    """torch's ``permute_backwards``: the inverse permutation."""
    dims = _int_list(args, kwargs, "dims")
    n = len(dims)
    inverse = [0] * n
    for i, d in enumerate(dims):
        inverse[d % n if n else 0] = i
    return lambda grad: (grad.permute(inverse),)


@implements(torch.permute, Tensor.permute)
def permute(input: Tensor, *dims: Any, **kwargs: Any) -> Tensor:
    """Reorder the dims (a view). Backward: ``grad.permute(inverse permutation)``."""
    return _view_op("PermuteBackward0", Tensor.permute, _permute_backward, input, *dims,
                    **kwargs)


def _expand_backward(x: Tensor, *args: Any, **kwargs: Any) -> Callable[[Tensor], tuple[Tensor]]:
    """ExpandBackward0: ``sum_to(grad, input.shape)`` (broadcast dims summed, as torch)."""
    shape = x.shape
    return lambda grad: (sum_to(grad, shape),)


@implements(Tensor.expand)
def expand(input: Tensor, *size: Any, **kwargs: Any) -> Tensor:
    """Broadcast size-1 (or new leading) dims to ``size`` without copying (a view).
    Backward: the gradient summed back to the input's shape."""
    return _view_op("ExpandBackward0", Tensor.expand, _expand_backward, input, *size, **kwargs)


@implements(Tensor.expand_as)
def expand_as(input: Tensor, other: Tensor) -> Tensor:
    """``input.expand(other.size())``. Backward: as :func:`expand`."""
    with no_dispatch():
        shape = other.shape
    return _view_op("ExpandBackward0", Tensor.expand, _expand_backward, input, shape)


@implements(torch.broadcast_to, Tensor.broadcast_to)
def broadcast_to(input: Tensor, size: Sequence[int]) -> Tensor:
    """``input.expand(size)``. Backward: as :func:`expand`."""
    return _view_op("ExpandBackward0", Tensor.expand, _expand_backward, input, tuple(size))


def _repeat_backward(x: Tensor, *args: Any, **kwargs: Any) -> Callable[[Tensor], tuple[Tensor]]:
    """torch's ``repeat_backward``: the new leading dims summed one by one, then one reshape
    to ``(repeat, size)`` pairs and one sum over the repeat dims."""
    repeats = _int_list(args, kwargs, "repeats")
    shape = x.shape
    if 0 in repeats:
        return lambda grad: (torch.zeros(shape, dtype=grad.dtype, device=grad.device),)
    unsqueezed = len(repeats) - len(shape)
    grad_size: list[int] = []
    sum_dims: list[int] = []
    for d, size in enumerate(shape):
        repeat = repeats[d + unsqueezed]
        if repeat != 1:
            grad_size.append(repeat)
            sum_dims.append(len(grad_size) - 1)
        grad_size.append(size)

    def backward(grad: Tensor) -> tuple[Tensor]:
        for _ in range(unsqueezed):
            grad = grad.sum(0, False)
        if sum_dims:
            grad = grad.reshape(grad_size).sum(sum_dims)
        return (grad,)

    return backward


def _repeat_forward(input: Tensor, *args: Any, **kwargs: Any) -> Recorded:
    _check_real("repeat", input)
    return (Tensor.repeat(input, *args, **kwargs), _repeat_backward(input, *args, **kwargs), (),
            "RepeatBackward0")


@implements(Tensor.repeat)
def repeat(input: Tensor, *repeats: Any, **kwargs: Any) -> Tensor:
    """Tile ``input`` ``repeats`` times along each dim (a copy; extra leading repeats add
    dims). Backward: the gradient's tiles summed (torch's ``repeat_backward``)."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                return apply(_repeat_forward, (e_input,), input, *repeats, **kwargs)
        return wrap(Tensor.repeat(input, *repeats, **kwargs))


def _select_backward(x: Tensor, dim: int, index: int) -> Callable[[Tensor], tuple[Tensor]]:
    """torch's ``select_backward``: zeros with the gradient copied into the selected slice."""
    shape = x.shape

    def backward(grad: Tensor) -> tuple[Tensor]:
        grad_input = torch.zeros(shape, dtype=grad.dtype, device=grad.device)
        grad_input.select(dim, index).copy_(grad)
        return (grad_input,)

    return backward


@implements(torch.select, Tensor.select)
def select(input: Tensor, dim: int, index: int) -> Tensor:
    """The slice at ``index`` of ``dim``, without that dim (a view). Backward: the gradient
    copied into zeros at that slice."""
    return _view_op("SelectBackward0", torch.select, _select_backward, input, dim, index)


# ---------------------------------------------------------------------------------------------
# multi-output views: unbind, split, chunk
# ---------------------------------------------------------------------------------------------


def _multi_view(name: str | Callable[..., str], kernel: Callable[..., Sequence[Tensor]],
                combine_for: Callable[[Tensor, Sequence[Tensor]],
                                      Callable[[list[Tensor | None]], Tensor]],
                input: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, ...]:
    """Record a multi-output view op: the outputs are views sharing one node (as torch's), whose
    backward is ``combine_for(input, outputs)(grads)`` (``None`` for an output without a
    gradient: torch's undefined gradient, zeros)."""
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        if e_input is None:
            return tuple(wrap(o) for o in kernel(input, *args, **kwargs))
        set_grad_enabled(False)
        try:
            outs = kernel(input, *args, **kwargs)
        finally:
            set_grad_enabled(True)
        combine = combine_for(input, outs)
        if not isinstance(name, str):
            name = name(input, *args)
        results = record_outputs(outs, name, lambda grads: (combine(grads),), (e_input,))
        base = input._view_base if type(input) is TrackedTensor and (
            input._view_version is not None) else input
        for r in results:
            r._view_version = r._version
            r._view_base = base  # writes into an output go through the base (CopySlices)
        return tuple(results)


def _unbind_combine(x: Tensor, outs: Sequence[Tensor], dim: int = 0
                    ) -> Callable[[list[Tensor | None]], Tensor]:
    """torch's ``unbind_backward``: ``stack`` of the gradients, expanded zeros for the missing."""
    d = dim % max(x.dim(), 1)
    shape = x.shape

    def combine(grads: list[Tensor | None]) -> Tensor:
        if all(g is not None for g in grads):
            return torch.stack(grads, d)  # type: ignore[arg-type]
        # The stack of expanded zeros and the gradients, written as zeros and copies (the
        # same values: a copy preserves every bit), without a zero block per missing slice.
        defined = next(g for g in grads if g is not None)
        out = torch.zeros(shape, dtype=defined.dtype, device=defined.device)
        for i, g in enumerate(grads):
            if g is not None:
                out.select(d, i).copy_(g)
        return out

    return combine


@implements(torch.unbind, Tensor.unbind)
def unbind(input: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices along ``dim`` (views; also what iterating over a tensor yields).
    Backward: the slices' gradients stacked (zeros for slices without one)."""
    return _multi_view("UnbindBackward0", torch.unbind,
                       lambda x, outs: _unbind_combine(x, outs, dim), input, dim)


def _split_combine(x: Tensor, outs: Sequence[Tensor], dim: int
                   ) -> Callable[[list[Tensor | None]], Tensor]:
    """torch's ``split_with_sizes_backward``: ``cat`` of the gradients, zeros for the missing."""
    d = dim % max(x.dim(), 1)
    shape, dtype, device = list(x.shape), x.dtype, x.device
    lengths = [o.shape[d] for o in outs]

    def combine(grads: list[Tensor | None]) -> Tensor:
        if all(g is not None for g in grads):
            return torch.cat(grads, d)  # type: ignore[arg-type]
        # The cat of zeros and the gradients, written as zeros and copies (the same values:
        # a copy preserves every bit), without a zero block per missing piece.
        out = torch.zeros(shape, dtype=dtype, device=device)
        offset = 0
        for g, length in zip(grads, lengths):
            if g is not None:
                out.narrow(d, offset, length).copy_(g)
            offset += length
        return out

    return combine


def _split_dim(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return int(args[0]) if args else int(kwargs.get("dim", 0))


@implements(torch.split, Tensor.split)
def split(tensor: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, ...]:
    """Split into pieces of ``split_size`` (the last may be smaller) or of the listed sizes,
    along ``dim`` (views). Backward: the pieces' gradients concatenated (zeros for pieces
    without one)."""
    if args:
        split_size_or_sections, args = args[0], args[1:]
    else:  # torch.split's and Tensor.split's keyword names
        split_size_or_sections = kwargs.pop("split_size_or_sections", None)
        if split_size_or_sections is None:
            split_size_or_sections = kwargs.pop("split_size")
    dim = _split_dim(args, kwargs)
    name = "SplitBackward0" if isinstance(split_size_or_sections, int) else (
        "SplitWithSizesBackward0")
    return _multi_view(name, Tensor.split, lambda x, outs: _split_combine(x, outs, dim),
                       tensor, split_size_or_sections, dim)


@implements(torch.split_with_sizes, Tensor.split_with_sizes)
def split_with_sizes(input: Tensor, split_sizes: Sequence[int], dim: int = 0
                     ) -> tuple[Tensor, ...]:
    """Split into pieces of the listed sizes along ``dim``. Backward: as :func:`split`."""
    return _multi_view("SplitWithSizesBackward0", torch.split_with_sizes,
                       lambda x, outs: _split_combine(x, outs, dim), input, split_sizes, dim)


@implements(torch.chunk, Tensor.chunk)
def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``chunks`` pieces along ``dim`` (torch's split by ``ceil(size / chunks)``).
    Backward: as :func:`split`."""
    return _multi_view(_chunk_node_name, torch.chunk,
                       lambda x, outs: _split_combine(x, outs, dim), input, chunks, dim)


def _chunk_node_name(input: Tensor, chunks: int, dim: int) -> str:
    """torch's chunk is a split, by sizes when the dim is empty."""
    return "SplitWithSizesBackward0" if input.dim() and input.shape[dim] == 0 else (
        "SplitBackward0")


# ---------------------------------------------------------------------------------------------
# stack
# ---------------------------------------------------------------------------------------------


def _stack_forward(*args: Any) -> Recorded:
    *tensors, dim = args
    _check_real("stack", *tensors)
    result = torch.stack(tensors, dim)
    d = dim % result.dim()
    dtypes = [t.dtype for t in tensors]

    def backward(grad: Tensor) -> list[Tensor]:
        grads = []
        for i, dtype in enumerate(dtypes):
            g = grad.select(d, i)
            grads.append(g if g.dtype is dtype else g.to(dtype))
        return grads

    return result, backward, (), "StackBackward0"


@implements(torch.stack)
def stack(tensors: Sequence[Tensor], dim: int = 0, *, out: Tensor | None = None) -> Tensor:
    """Join same-shaped tensors along a new dim ``dim``. Backward: each input's slice of the
    gradient (``grad.select(dim, i)``, cast to its dtype)."""
    with no_dispatch():
        tensors = list(tensors)
        if is_grad_enabled():
            edges = tuple(edge(t) for t in tensors)
            if any(e is not None for e in edges):
                if out is not None:
                    raise _out_requires_grad("stack")
                return apply(_stack_forward, edges, *tensors, dim)
        if out is not None:
            return torch.stack(tensors, dim, out=out)
        return wrap(torch.stack(tensors, dim))


from . import index as _index  # noqa: E402  (advanced indexing; index.py imports shape lazily)
