"""Indexing by tensors: ``gather``, ``index_select``, ``h[idx]`` / ``h[mask]`` (advanced
indexing), ``index_put``, ``masked_fill``, ``index_fill``, ``where``, and ``one_hot``.

Values come from torch's own kernels. Gradients go back the way torch's derivative formulas
send them: into zeros with an accumulating scatter (``scatter_add_`` for gather, ``index_add_``
for index_select, ``_index_put_impl_(accumulate=True)`` for advanced indexing), so repeated
indices sum in torch's order; masks and conditions zero the gradient with the same
``masked_fill`` / ``where`` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Recorded,
    _fallback,
    apply,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    sum_to,
    wrap,
)
from ._common import _check_real, _out_requires_grad, _record_inplace, _reduce_to

__all__ = ["one_hot"]

_index = torch.ops.aten.index.Tensor._op
_index_put_impl_ = torch.ops.aten._index_put_impl_.default._op


def _saved(*ts: Any) -> tuple[Tensor, ...]:
    return tuple(t for t in ts if isinstance(t, Tensor))


# ---------------------------------------------------------------------------------------------
# gather, index_select
# ---------------------------------------------------------------------------------------------


def _gather_forward(input: Tensor, dim: int, index: Tensor) -> Recorded:
    _check_real("gather", input)
    result = torch.gather(input, dim, index)
    shape = input.shape

    def backward(grad: Tensor) -> tuple[Tensor]:
        # gather_backward: grad.new_zeros(self.sizes()).scatter_add_(dim, index, grad)
        return (grad.new_zeros(shape).scatter_add_(dim, index, grad),)

    return result, backward, (index,), "GatherBackward0"


@implements(torch.gather, Tensor.gather)
def gather(input: Tensor, dim: int, index: Tensor, *, sparse_grad: bool = False,
           out: Tensor | None = None) -> Tensor:
    """``out[i][j][k] = input[index[i][j][k]][j][k]`` (for ``dim=0``); ``index`` int64.

    Backward: ``zeros(input.shape).scatter_add_(dim, index, grad)`` (torch's
    ``gather_backward``). ``sparse_grad=True`` is refused."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                if out is not None:
                    raise _out_requires_grad("gather")
                if sparse_grad:
                    raise NotImplementedError(
                        "shimnn: gather(sparse_grad=True) would need a sparse gradient; "
                        "shimnn computes dense gradients only")
                return apply(_gather_forward, (e_input,), input, dim, index)
        if out is not None:
            return torch.gather(input, dim, index, sparse_grad=sparse_grad, out=out)
        return wrap(torch.gather(input, dim, index, sparse_grad=sparse_grad))


def _index_select_forward(input: Tensor, dim: int, index: Tensor) -> Recorded:
    _check_real("index_select", input)
    result = torch.index_select(input, dim, index)
    shape = input.shape

    def backward(grad: Tensor) -> tuple[Tensor]:
        # index_select_backward: zeros(self_sizes).index_add_(dim, index, grad)
        zeros = torch.zeros(shape, dtype=grad.dtype, device=grad.device)
        return (zeros.index_add_(dim, index, grad),)

    return result, backward, (index,), "IndexSelectBackward0"


@implements(torch.index_select, Tensor.index_select)
def index_select(input: Tensor, dim: int, index: Tensor, *, out: Tensor | None = None
                 ) -> Tensor:
    """The slices of ``dim`` at the positions ``index`` (a 1-d int tensor), in that order.

    Backward: ``zeros(input.shape).index_add_(dim, index, grad)`` (repeated indices sum)."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                if out is not None:
                    raise _out_requires_grad("index_select")
                return apply(_index_select_forward, (e_input,), input, dim, index)
        if out is not None:
            return torch.index_select(input, dim, index, out=out)
        return wrap(torch.index_select(input, dim, index))


# ---------------------------------------------------------------------------------------------
# advanced indexing: h[idx], h[mask], h[:, idx, None]...
# ---------------------------------------------------------------------------------------------


def _index_item(item: Any) -> Any:
    """One item of an index, as torch's indexing sees it; ``NotImplemented`` when shimnn does
    not handle its form (its value is then torch's, and a gradient through it raises)."""
    if item is None or item is Ellipsis or isinstance(item, slice):
        return item
    if isinstance(item, bool):
        return NotImplemented
    if isinstance(item, int):
        return int(item)  # a plain int (an int subclass would look advanced again)
    if isinstance(item, Tensor):
        if item.dtype is torch.bool or item.dtype is torch.uint8:
            return item if item.dim() > 0 else NotImplemented
        if item.dtype.is_floating_point or item.dtype.is_complex:
            return NotImplemented  # torch raises its IndexError
        return int(item.item()) if item.dim() == 0 else item
    if isinstance(item, list) and item and all(isinstance(v, bool) for v in item):
        return torch.tensor(item)
    if isinstance(item, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                      for v in item):
        return torch.tensor(item, dtype=torch.int64)
    return NotImplemented


def _parse_index(ndim: int, index: Any) -> tuple[tuple[Any, ...], list[Tensor | None]] | None:
    """Split an advanced index into torch's two steps: the basic part (ints, slices, ``None``,
    ``...``, with each tensor replaced by the full slices of the dims it indexes), a view; and
    the list of index tensors (``None`` for a dim not indexed) that ``aten::index`` applies to
    that view. ``None`` when some item is not in the handled forms."""
    items = index if isinstance(index, tuple) else (index,)
    parsed = [_index_item(i) for i in items]
    if any(p is NotImplemented for p in parsed):
        return None
    consumed = 0
    for p in parsed:
        if isinstance(p, Tensor):
            consumed += p.dim() if p.dtype in (torch.bool, torch.uint8) else 1
        elif p is not None and p is not Ellipsis:
            consumed += 1
    if sum(p is Ellipsis for p in parsed) > 1 or consumed > ndim:
        return None  # torch's errors
    basic: list[Any] = []
    tensors: list[Tensor | None] = []
    pending = 0  # dims of the view passed since the list's last entry
    for p in parsed:
        if isinstance(p, Tensor):
            # a k-d mask indexes k dims of the view with one entry of the list
            span = p.dim() if p.dtype in (torch.bool, torch.uint8) else 1
            basic.extend([slice(None)] * span)
            tensors.extend([None] * pending)
            tensors.append(p)
            pending = 0
        elif p is Ellipsis:
            basic.append(Ellipsis)
            pending += ndim - consumed
        elif p is None or isinstance(p, slice):
            basic.append(p)
            pending += 1
        else:
            basic.append(p)  # an int: selects, the view loses that dim
    return tuple(basic), tensors


def _is_trivial(basic: tuple[Any, ...]) -> bool:
    return all(b is Ellipsis or (isinstance(b, slice) and b == slice(None)) for b in basic)


def _advanced_forward(input: Tensor, basic: tuple[Any, ...], indices: list[Tensor | None]
                      ) -> Recorded:
    _check_real("index", input)
    trivial = _is_trivial(basic)
    view = input if trivial else input[basic]
    result = _index(view, indices)
    shape, view_shape = input.shape, view.shape

    def backward(grad: Tensor) -> tuple[Tensor]:
        # index_backward: _index_put_impl_(zeros(view), indices, grad, accumulate, unsafe);
        # then the basic part's backward copies it into zeros of the input's shape.
        grad_view = torch.zeros(view_shape, dtype=grad.dtype, device=grad.device)
        _index_put_impl_(grad_view, indices, grad, True, True)
        if trivial:
            return (grad_view,)
        grad_input = torch.zeros(shape, dtype=grad.dtype, device=grad.device)
        grad_input[basic] = grad_view
        return (grad_input,)

    saved = tuple(t for t in indices if t is not None)
    return result, backward, saved, "IndexBackward0"


def advanced_getitem(input: Tensor, index: Any) -> Tensor:
    """``input[index]`` with integer or boolean tensors (or int lists) in the index, mixed
    with ints, slices, ``None`` and ``...``.

    Backward: torch's ``index_backward``: the gradient accumulated into zeros at the indexed
    positions (``_index_put_impl_`` with ``accumulate=True``: repeated indices sum), then
    copied back through the basic part of the index."""
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        if e_input is None:
            return wrap(Tensor.__getitem__(input, index))
        if isinstance(index, Tensor) and index.dim() > 0 and (
                index.dtype is torch.int64 or index.dtype is torch.bool):
            parsed: Any = ((), [index])  # the common h[idx] / h[mask]: nothing to parse
        else:
            parsed = _parse_index(input.dim(), index)
    if parsed is None:
        return _fallback(Tensor.__getitem__, (input, index), {})  # type: ignore[no-any-return]
    basic, tensors = parsed
    if not tensors:  # only 0-d integer tensors, which index as ints (a view)
        from .shape import getitem

        return getitem(input, basic)
    with no_dispatch():
        try:
            return apply(_advanced_forward, (e_input,), input, basic, tensors)
        except (IndexError, RuntimeError):
            Tensor.__getitem__(input, index)  # torch's own error
            raise


def _index_put_forward(input: Tensor, indices: list[Tensor | None], values: Tensor,
                       accumulate: bool, needs: tuple[bool, bool]) -> Recorded:
    _check_real("index_put", input, values)
    result = torch.index_put(input, indices, values, accumulate)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g_input = g_values = None
        if needs[0]:
            g_input = grad if accumulate else grad.index_put(
                indices, torch.zeros_like(values), False)
        if needs[1]:
            g_values = _reduce_to(_index(grad, indices), values)
        return g_input, g_values

    saved = tuple(t for t in indices if t is not None) + ((values,) if needs[0] and not
                                                          accumulate else ())
    return result, backward, saved, "IndexPutBackward0"


@implements(torch.index_put, Tensor.index_put)
def index_put(input: Tensor, indices: Sequence[Tensor | None], values: Tensor,
              accumulate: bool = False) -> Tensor:
    """A copy of ``input`` with ``values`` written (or, ``accumulate``, added) at ``indices``.

    Backward: ``grad`` with the written positions zeroed (``grad.index_put(indices, 0)``;
    unchanged when accumulating); ``grad[indices]`` summed to ``values``' shape."""
    with no_dispatch():
        indices = list(indices)
        if is_grad_enabled():
            edges = (edge(input), edge(values))
            if edges[0] is not None or edges[1] is not None:
                return apply(_index_put_forward, edges, input, indices, values, accumulate,
                             (edges[0] is not None, edges[1] is not None))
        return wrap(torch.index_put(input, indices, values, accumulate))


# ---------------------------------------------------------------------------------------------
# masked_fill, index_fill, where
# ---------------------------------------------------------------------------------------------


def _masked_fill_backward(input: Tensor, mask: Tensor, value: Any, needs: tuple[bool, bool]
                          ) -> Callable[[Tensor], tuple[Tensor | None, Tensor | None]]:
    shape, dtype = input.shape, input.dtype

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g_input = g_value = None
        if needs[0]:
            g_input = sum_to(grad.masked_fill(mask, 0), shape)
            if g_input.dtype != dtype:
                g_input = g_input.to(dtype)
        if needs[1]:
            # masked_fill_backward: grad.masked_select(mask).sum()
            g_value = _reduce_to(grad.masked_select(mask).sum(), value)
        return g_input, g_value

    return backward


def _masked_fill_forward(input: Tensor, mask: Tensor, value: Any, needs: tuple[bool, bool]
                         ) -> Recorded:
    _check_real("masked_fill", input, value if isinstance(value, Tensor) else None)
    result = torch.masked_fill(input, mask, value)
    return (result, _masked_fill_backward(input, mask, value, needs), (mask,),
            "MaskedFillBackward0" if not isinstance(value, Tensor) else "MaskedFillBackward1")


@implements(torch.masked_fill, Tensor.masked_fill)
def masked_fill(input: Tensor, mask: Tensor, value: Any) -> Tensor:
    """A copy of ``input`` with ``value`` where the boolean ``mask`` (broadcast) is true.

    Backward: ``grad.masked_fill(mask, 0)`` (summed to ``input``'s shape); for a tensor
    ``value``, ``grad.masked_select(mask).sum()``."""
    with no_dispatch():
        if is_grad_enabled():
            edges = (edge(input), edge(value) if isinstance(value, Tensor) else None)
            if edges[0] is not None or edges[1] is not None:
                return apply(_masked_fill_forward, edges, input, mask, value,
                             (edges[0] is not None, edges[1] is not None))
        return wrap(torch.masked_fill(input, mask, value))


@implements(Tensor.masked_fill_)
def masked_fill_(input: Tensor, mask: Tensor, value: Any) -> Tensor:
    """In-place :func:`masked_fill`. Exact: the gradient does not read the overwritten values."""

    def run(needs: tuple[bool, ...]) -> Any:
        _check_real("masked_fill_", input, value if isinstance(value, Tensor) else None)
        backward = _masked_fill_backward(input, mask, value, (needs[0], needs[1]))
        Tensor.masked_fill_(input, mask, value)
        name = "MaskedFillBackward0" if not isinstance(value, Tensor) else "MaskedFillBackward1"
        return backward, (mask,), name

    return _record_inplace("masked_fill_", input, (value,), run,
                           lambda: Tensor.masked_fill_(input, mask, value))


def _index_fill_backward(input: Tensor, dim: int, index: Tensor, value: Any,
                         needs: tuple[bool, ...]) -> Callable[..., tuple[Tensor | None, ...]]:
    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g_input = g_value = None
        if needs[0]:
            g_input = grad.index_fill(dim, index, 0)
        if len(needs) > 1 and needs[1]:
            unique = torch._unique(index, sorted=False)[0]
            g_value = _reduce_to(grad.index_select(dim, unique).sum(), value)
        return g_input, g_value

    return backward


def _index_fill_forward(input: Tensor, dim: int, index: Tensor, value: Any,
                        needs: tuple[bool, bool]) -> Recorded:
    _check_real("index_fill", input, value if isinstance(value, Tensor) else None)
    result = torch.index_fill(input, dim, index, value)
    name = "IndexFillBackward1" if isinstance(value, Tensor) else "IndexFillBackward0"
    return result, _index_fill_backward(input, dim, index, value, needs), (index,), name


@implements(torch.index_fill, Tensor.index_fill)
def index_fill(input: Tensor, dim: int, index: Tensor, value: Any) -> Tensor:
    """A copy of ``input`` with the slices ``index`` of ``dim`` set to ``value``.

    Backward: ``grad.index_fill(dim, index, 0)``; for a 0-d tensor ``value``, the sum of the
    gradient over the filled slices (each once: ``_unique(index)``)."""
    with no_dispatch():
        if is_grad_enabled():
            edges = (edge(input), edge(value) if isinstance(value, Tensor) else None)
            if edges[0] is not None or edges[1] is not None:
                return apply(_index_fill_forward, edges, input, dim, index, value,
                             (edges[0] is not None, edges[1] is not None))
        return wrap(torch.index_fill(input, dim, index, value))


@implements(Tensor.index_fill_)
def index_fill_(input: Tensor, dim: int, index: Tensor, value: Any) -> Tensor:
    """In-place :func:`index_fill`. Exact: the gradient does not read the overwritten values."""

    def run(needs: tuple[bool, ...]) -> Any:
        _check_real("index_fill_", input, value if isinstance(value, Tensor) else None)
        Tensor.index_fill_(input, dim, index, value)
        name = "IndexFillBackward1" if isinstance(value, Tensor) else "IndexFillBackward0"
        return _index_fill_backward(input, dim, index, value, needs), (index,), name

    return _record_inplace("index_fill_", input, (value,), run,
                           lambda: Tensor.index_fill_(input, dim, index, value))


def _where_forward(condition: Tensor, input: Any, other: Any, needs: tuple[bool, bool]
                   ) -> Recorded:
    _check_real("where", *_saved(input, other))
    result = torch.where(condition, input, other)

    def backward(grad: Tensor) -> tuple[None, Tensor | None, Tensor | None]:
        g_input = g_other = None
        if needs[0]:
            g_input = _reduce_to(torch.where(condition, grad, 0), input)
        if needs[1]:
            g_other = _reduce_to(torch.where(condition, 0, grad), other)
        return None, g_input, g_other

    return result, backward, (condition,), "WhereBackward0"


@implements(Tensor.where)
def where_method(input: Any, condition: Tensor, other: Any) -> Any:
    """``input.where(condition, other)``: ``torch.where(condition, input, other)``."""
    return where(condition, input, other)


@implements(torch.where)
def where(condition: Tensor, input: Any = None, other: Any = None, *,
          out: Tensor | None = None) -> Any:
    """``input`` where ``condition`` is true, else ``other`` (broadcast; numbers allowed).

    Backward: ``where(condition, grad, 0)``; ``where(condition, 0, grad)``; each summed to
    its operand's shape. ``torch.where(condition)`` (indices) has no gradient."""
    with no_dispatch():
        if input is None and other is None:
            return torch.where(condition)
        if is_grad_enabled():
            edges = (None, edge(input) if isinstance(input, Tensor) else None,
                     edge(other) if isinstance(other, Tensor) else None)
            if edges[1] is not None or edges[2] is not None:
                if out is not None:
                    raise _out_requires_grad("where")
                return apply(_where_forward, edges, condition, input, other,
                             (edges[1] is not None, edges[2] is not None))
        if out is not None:
            return torch.where(condition, input, other, out=out)
        return wrap(torch.where(condition, input, other))


# ---------------------------------------------------------------------------------------------
# one_hot
# ---------------------------------------------------------------------------------------------


@implements(torch.nn.functional.one_hot)
def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """``(*,)`` int64 class indices -> ``(*, num_classes)`` int64 one-hot rows (``-1``: one
    more than the largest index). Integer output: no gradient flows through it."""
    with no_dispatch():
        return torch.nn.functional.one_hot(tensor, num_classes)
