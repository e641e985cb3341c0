"""Routing torch calls on tracked tensors: shimnn's ops, mutations by schema, and the safety net.

``TrackedTensor.__torch_function__`` sends a torch callable that shimnn implements to its op
(``_graph.HANDLED``). Everything else comes here:

- **Mutations** are decided from the operator's schema (an argument annotated ``Tensor(a!)``,
  an ``out=`` argument), Python-level ``inplace=`` keywords and ``Tensor.__setitem__``, never from
  a name. A mutation that involves a tensor needing a gradient gets torch's semantics: ``out=``
  raises torch's error; an in-place op gives the written tensor a node (a plain tensor joins the
  graph, as in torch: ``buf[t] = h``); a write into a view goes through its base, as torch's
  ``CopySlices`` does. The in-place op's backward is the backward of shimnn's out-of-place op on
  the tensor's old value; an op shimnn does not implement still computes its value and raises at
  backward, naming it.
- Other calls compute their value and, where a gradient would have to flow through them, record
  a node whose backward raises an error naming the op: **never a silently wrong gradient**.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._graph import (
    HANDLED,
    BackwardFn,
    Edge,
    Node,
    TrackedTensor,
    _grad_fn,
    _requires_grad,
    _set_requires_grad,
    edge,
    is_grad_enabled,
    no_dispatch,
    record,
    set_grad_enabled,
    set_node,
    sum_to,
    wrap,
)

__all__ = ["fallback", "handled", "torch_function"]

_LEAF_INPLACE = "a leaf Variable that requires grad is being used in an in-place operation."


def _tensors_in(args: Iterable[Any]) -> list[Tensor]:
    found: list[Tensor] = []
    for a in args:
        if isinstance(a, Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(x for x in a if isinstance(x, Tensor))
    return found


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    if name == "__get__":  # a property getter: name the property
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return str(name)


def _has_torch_graph(t: Tensor) -> bool:
    return type(t) is not TrackedTensor and _grad_fn(t) is not None


# ---------------------------------------------------------------------------------------------
# Which calls mutate, from the schema
# ---------------------------------------------------------------------------------------------

# Python's in-place operators and the ATen op each one calls.
_INPLACE_OPERATORS = {
    "__iadd__": "add_", "__isub__": "sub_", "__imul__": "mul_", "__itruediv__": "div_",
    "__idiv__": "div_", "__ipow__": "pow_", "__ifloordiv__": "floor_divide_",
    "__imod__": "remainder_", "__iand__": "bitwise_and_", "__ior__": "bitwise_or_",
    "__ixor__": "bitwise_xor_", "__ilshift__": "__ilshift__", "__irshift__": "__irshift__",
    "__imatmul__": "matmul_",
}
# Their out-of-place twins (what the in-place op's backward is the backward of).
_OUT_OF_PLACE_OPERATORS = {
    "__iadd__": Tensor.add, "__isub__": Tensor.sub, "__imul__": Tensor.mul,
    "__itruediv__": Tensor.div, "__idiv__": Tensor.div, "__ipow__": Tensor.pow,
    "__ifloordiv__": Tensor.floor_divide, "__imod__": Tensor.remainder,
}
# Ops whose schema writes ``self`` but that change no value: autograd metadata, sharing.
_METADATA_ONLY = {"requires_grad_", "detach_", "retain_grad", "share_memory_", "rename_",
                  "refine_names_", "_fix_weakref", "_coalesced_", "pin_memory_"}


@functools.cache
def _aten_schemas(name: str) -> tuple[Any, ...]:
    """The schemas of every overload of the ATen op of this name (none if there is no op)."""
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return ()
    try:
        overloads = packet.overloads()
    except Exception:  # noqa: BLE001 - not an operator packet
        return ()
    return tuple(getattr(packet, overload)._schema for overload in overloads)


@functools.cache
def _aten_writes_self(name: str) -> bool:
    """Whether an ATen op of this name has an overload that writes its first argument."""
    for schema in _aten_schemas(name):
        first = schema.arguments[0] if schema.arguments else None
        if first is not None and not first.kwarg_only and first.alias_info is not None \
                and first.alias_info.is_write:
            return True
    return False


@functools.cache
def _inplace_parameter(func: Any) -> int | None:
    """The position of a Python function's ``inplace`` parameter (``F.selu``...), if any."""
    try:
        parameters = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None
    return parameters.index("inplace") if "inplace" in parameters else None


def _writes_first_argument(func: Any, name: str, args: tuple[Any, ...],
                           kwargs: dict[str, Any]) -> bool:
    """Whether the call writes into its first tensor argument (by schema, or ``inplace=``)."""
    if name in _METADATA_ONLY:
        return False
    if name.startswith("__") and name.endswith("__"):
        aten = _INPLACE_OPERATORS.get(name)
        if aten is None:
            return False
        return True
    position = _inplace_parameter(func) if callable(func) else None
    if position is not None:
        value = kwargs.get("inplace", args[position] if len(args) > position else False)
        return bool(value)
    return _aten_writes_self(name)


# ---------------------------------------------------------------------------------------------
# The safety net: values computed, gradients refused
# ---------------------------------------------------------------------------------------------


def _unsupported(name: str) -> BackwardFn:
    def backward(grad: Any) -> Sequence[Tensor | None]:
        raise NotImplementedError(
            f"shimnn has no hand-written backward for '{name}', and a gradient flows through "
            f"it. Its value was computed, but shimnn will not guess a derivative. Compute it "
            f"on a detached tensor (or under torch.no_grad()) if it needs no gradient, or "
            f"write it as a shimnn.Function with its own backward."
        )

    return backward


def _poison(value: Any, name: str, inputs: tuple[Edge, ...]) -> Any:
    if isinstance(value, Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex:
            return record(value, name, _unsupported(name), inputs)
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_poison(v, name, inputs) for v in value)
    return value


# Non-differentiable torch callables: their results carry no gradient in torch either.
_NON_DIFFERENTIABLE: set[Any] = {
    Tensor.detach, torch.detach, vars(torch._C.TensorBase)["data"].__get__,
    vars(torch._C.TensorBase)["grad"].__get__,
    Tensor.new_zeros, Tensor.new_ones, Tensor.new_empty, Tensor.new_full, Tensor.new_tensor,
    torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
    torch.randn_like, torch.randint_like, Tensor.__repr__, Tensor.__format__,
}


def _stay_tracked(value: Any, inputs: list[Tensor]) -> Any:
    """New floating results of ops on tracked tensors stay TrackedTensors (without a graph), so
    that ``.backward()`` on them is shimnn's and raises as torch's would."""
    if isinstance(value, Tensor):
        if (type(value) is Tensor and (value.dtype.is_floating_point or value.dtype.is_complex)
                and not any(value is t for t in inputs)):
            return wrap(value)
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_stay_tracked(v, inputs) for v in value)
    return value


def _edges(func: Any, tensors: list[Tensor]) -> tuple[Edge, ...]:
    """The edges of the tensors of a call; none when torch would record nothing either."""
    if (not is_grad_enabled() or func in _NON_DIFFERENTIABLE
            or getattr(func, "__module__", None) == "torch.nn.init"):  # runs under no_grad
        return ()
    # A tensor with torch autograd history is torch's to differentiate (and the op may not
    # even be differentiable, like torch.equal): no shimnn edge for it.
    return tuple(None if _has_torch_graph(t) else edge(t) for t in tensors)


def fallback(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a torch callable shimnn has no op for; never let a gradient through it silently."""
    with no_dispatch():
        name = _op_name(func)
        if kwargs.get("out") is not None:
            return _out_call(func, name, args, kwargs)
        if func is Tensor.__setitem__:
            return _setitem(*args)
        tensors = _tensors_in(args) + _tensors_in(kwargs.values())
        if not is_grad_enabled() and not any(type(t) is TrackedTensor for t in tensors):
            # What every branch below comes to with grad mode off and no tracked tensor (no
            # edges, torch's own result): an optimizer's in-place update of a parameter.
            return func(*args, **kwargs)
        if args and isinstance(args[0], Tensor) and _writes_first_argument(func, name, args,
                                                                           kwargs):
            return _inplace(func, name, args, kwargs, tensors)
        edges = _edges(func, tensors)
        if not any(e is not None for e in edges):
            result = func(*args, **kwargs)
            if getattr(func, "__name__", None) == "__get__" or not any(
                    type(t) is TrackedTensor for t in tensors):
                return result  # a property, or an op on parameters/plain tensors (torch's way)
            return _stay_tracked(result, tensors)
        result = _below_autograd(func, args, kwargs, tensors, edges)
        if any(result is t for t in tensors):
            return result  # returned an input unchanged (x.float() on float x, .contiguous())
        return _poison(result, name, edges)


def _below_autograd(func: Any, args: Any, kwargs: Any, tensors: list[Tensor],
                    edges: Any) -> Any:
    """The kernel sees what torch's does: grad mode on and inputs that require grad (aliases
    of the tracked ones), dispatched below autograd, so that torch records nothing."""
    alias: dict[int, Tensor] = {}
    for t, e in zip(tensors, edges):
        if e is not None and type(t) is TrackedTensor:
            a = t.detach()
            _set_requires_grad(a, True)
            alias[id(t)] = a
    back = {id(a): t for t, a in ((t, alias[id(t)]) for t in tensors if id(t) in alias)}

    def swap(x: Any, table: dict[int, Any]) -> Any:
        if isinstance(x, Tensor):
            return table.get(id(x), x)
        if isinstance(x, (list, tuple)) and not isinstance(x, torch.Size):
            return type(x)(swap(v, table) for v in x)
        return x

    a2 = tuple(swap(a, alias) for a in args)
    k2 = {k: swap(v, alias) for k, v in kwargs.items()}
    with torch._C._AutoDispatchBelowAutograd():
        return swap(func(*a2, **k2), back)


def _out_call(func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``op(..., out=t)``: torch's error when a gradient is involved, else the plain call."""
    tensors = _tensors_in(args) + _tensors_in(kwargs.values())
    outs = _tensors_in([kwargs["out"]])
    differentiable_out = any(o.dtype.is_floating_point or o.dtype.is_complex for o in outs)
    if differentiable_out and any(e is not None for e in _edges(func, tensors)):
        raise RuntimeError(
            f"{name}(): functions with out=... arguments don't support automatic "
            "differentiation, but one of the arguments requires grad.")
    return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# In-place operations
# ---------------------------------------------------------------------------------------------


def _out_of_place(func: Any, name: str) -> Callable[..., Any] | None:
    """The out-of-place twin of an in-place callable, if shimnn implements it."""
    twin: Any = None
    if name in _OUT_OF_PLACE_OPERATORS:
        twin = _OUT_OF_PLACE_OPERATORS[name]
    elif _inplace_parameter(func) is not None:
        twin = func  # called with inplace=False
    elif name.endswith("_"):
        owner = Tensor if getattr(func, "__qualname__", "").startswith(("Tensor.", "TensorBase.")) \
            or getattr(func, "__objclass__", None) is torch._C.TensorBase else torch
        twin = getattr(owner, name[:-1], None) or getattr(Tensor, name[:-1], None)
    return twin if twin in HANDLED else None


def _inplace_target_check(target: Tensor) -> None:
    """torch's errors for in-place writes into leaves that require grad (and their views)."""
    if not (type(target) is TrackedTensor and target._node is not None) and _requires_grad(
            target):
        raise RuntimeError(_LEAF_INPLACE)
    base = _view_base(target)
    if base is not None and not (type(base) is TrackedTensor and base._node is not None) \
            and _requires_grad(base):
        raise RuntimeError(
            "a view of a leaf Variable that requires grad is being used in an in-place "
            "operation.")


def _inplace(func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
             tensors: list[Tensor]) -> Any:
    """An in-place op writing ``args[0]`` that shimnn has no hand-written in-place op for."""
    target: Tensor = args[0]
    edges = _edges(func, tensors)
    if not any(e is not None for e in edges):
        result = func(*args, **kwargs)
        if type(target) is TrackedTensor or not any(type(t) is TrackedTensor for t in tensors):
            return result
        return target if result is target else _stay_tracked(result, tensors)
    _inplace_target_check(target)
    write_node = _write(func, args, kwargs)
    if write_node is not None:
        return mutate(target, lambda: func(*args, **kwargs), write_node)
    own = HANDLED.get(func)
    if own is not None:
        # shimnn's own in-place op (reached here for a view): its own formula, run on a copy of
        # the old value, which is then written into the target.
        def own_node(old: Tensor) -> Node:
            own(old, *args[1:], **kwargs)
            own_node.value = old  # type: ignore[attr-defined]
            return old._node  # type: ignore[attr-defined,no-any-return]

        def own_write() -> Any:
            target.copy_(own_node.value)  # type: ignore[attr-defined]
            return target

        return mutate(target, own_write, own_node, needs_old_value=True)
    twin = _out_of_place(func, name)
    if twin is not None and _aten_returns_alias(name[:-1]):
        return _inplace_view_op(func, name, args, kwargs, target, HANDLED[twin])
    if twin is None:
        # The value is torch's own in-place result; a gradient through it raises, naming it.
        def make_node(old: Tensor) -> Node:
            return Node(name, _unsupported(name), (edge(old), *edges[1:]))

        return mutate(target, lambda: func(*args, **kwargs), make_node)
    twin_kwargs = {**kwargs, "inplace": False} if twin is func else kwargs

    op = HANDLED[twin]

    def twin_node(old: Tensor) -> Node:
        # shimnn's out-of-place op on the old value: its node is the in-place op's node.
        result = op(old, *args[1:], **twin_kwargs)
        node = result._node if type(result) is TrackedTensor else None
        if node is None or node.outputs is not None:
            raise NotImplementedError(
                f"shimnn: in-place {name} of a tensor that needs a gradient is not supported "
                "here; use the out-of-place form (x = x.op(...)).")
        twin_node.value = result  # type: ignore[attr-defined]
        return node

    def write() -> Any:
        if twin_node.value.shape != target.shape:  # type: ignore[attr-defined]
            raise NotImplementedError(
                f"shimnn: in-place {name} that changes the shape of a tensor that needs a "
                "gradient is not supported; use the out-of-place form.")
        return func(*args, **kwargs)  # the value: torch's own in-place kernel

    return mutate(target, write, twin_node, needs_old_value=True)


def _inplace_view_op(func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                     target: Tensor, op: Callable[..., Any]) -> Any:
    """An in-place op that changes only a tensor's shape or strides (``transpose_``,
    ``unsqueeze_``...): torch's own kernel changes the metadata, the node is the one of
    shimnn's view op on the old value (its backward needs only shapes)."""
    if _view_base(target) is not None:
        raise NotImplementedError(
            f"shimnn: in-place {name} of a view of a tensor that needs a gradient is not "
            f"supported; use {name[:-1]}(...), which returns a new view")

    def view_node(old: Tensor) -> Node:
        result = op(old, *args[1:], **kwargs)
        node = result._node if type(result) is TrackedTensor else None
        if node is None:
            raise NotImplementedError(f"shimnn: in-place {name} is not supported here")
        return node

    return mutate(target, lambda: func(*args, **kwargs), view_node)


def _aten_returns_alias(name: str) -> bool:
    """Whether the ATen op of this name returns a view of its input (``transpose``...)."""
    for schema in _aten_schemas(name):
        ret = schema.returns[0] if schema.returns else None
        if ret is not None and ret.alias_info is not None and not ret.alias_info.is_write:
            return True
    return False


def mutate(target: Tensor, write: Callable[[], Any], make_node: Callable[[Tensor], Node],
           needs_old_value: bool = False, index: Any = None) -> Any:
    """Write into ``target`` (or into ``target[index]``, basic indexing) and give the written
    tensor the node ``make_node(old)`` builds, where ``old`` stands for the overwritten value (a
    copy when ``needs_old_value``: the node may save it; ``make_node`` runs before the write).

    A write into a view, or into a region of a tensor, goes through the base, as torch's
    ``CopySlices`` does: the base gets a node that runs ``make_node``'s backward on the region
    and passes the rest of its gradient through, and a view written into becomes a view of the
    base's new node. Returns what ``write`` returns."""
    base = _view_base(target)
    if base is None and index is None:
        old = _old_value(target, needs_old_value)
        node = _build(make_node, old)
        result = _run_write(write)
        _join(target, node)
        return result
    root = target if base is None else base
    if type(root) is not TrackedTensor and type(root) is not Tensor:
        raise NotImplementedError(
            f"shimnn: an in-place write of a value that needs a gradient into a view of a "
            f"{type(root).__name__} is not supported")
    region = target if index is None else target.__getitem__(index)
    size, stride, offset = _geometry(region, root)
    old = _old_value(_strided_copy(root, size, stride, offset) if needs_old_value else region,
                     False)
    # The region's gradient goes back into the base's (CopySlices does that, not this edge):
    # a stand-in node, so that the write's node treats the old value as needing a gradient.
    old._node, old._output_nr = _REGION, 0  # type: ignore[attr-defined]
    fn = _build(make_node, old)
    result = _run_write(write)
    _join(root, _copy_slices(root, size, stride, offset, fn))
    if index is None:
        view_of(target, root)
    return result


_REGION = Node("ViewRegion", _unsupported("a view region"), ())


def _build(make_node: Callable[[Tensor], Node], old: Tensor) -> Node:
    """``make_node(old)`` in grad mode (it records the write's node), the mode restored."""
    previous = is_grad_enabled()
    set_grad_enabled(True)
    try:
        return make_node(old)
    finally:
        set_grad_enabled(previous)


def _run_write(write: Callable[[], Any]) -> Any:
    """The write itself with grad mode off (torch records nothing), the mode restored."""
    previous = is_grad_enabled()
    set_grad_enabled(False)
    try:
        return write()
    finally:
        set_grad_enabled(previous)


def _strided_copy(root: Tensor, size: tuple[int, ...], stride: tuple[int, ...], offset: int
                  ) -> Tensor:
    """A copy of a region of ``root`` with the region's own strides (a copy of the whole base,
    viewed the same way): an element-wise kernel takes the same path on it, to the bit."""
    copy = root.new_empty_strided(root.shape, root.stride())
    copy.copy_(root)
    return copy.as_strided(size, stride, offset)


def _old_value(t: Tensor, copy: bool) -> Tensor:
    """A tracked stand-in for ``t``'s current value and node (a copy when asked for)."""
    value = t.clone() if copy else t.detach()
    old = wrap(value)
    if type(t) is TrackedTensor:
        old._node, old._output_nr = t._node, t._output_nr
    elif _requires_grad(t):
        _set_requires_grad(old, True)
    return old


def _join(t: Tensor, node: Node) -> None:
    """``t`` now carries ``node`` (a plain tensor becomes a TrackedTensor, as it joins torch's
    graph in torch)."""
    if type(t) is Tensor:
        t.__class__ = TrackedTensor
    elif type(t) is not TrackedTensor:
        raise NotImplementedError(
            f"shimnn: an in-place write of a value that needs a gradient into a "
            f"{type(t).__name__}; write `x = x.op(...)` instead")
    set_node(t, node)
    if t._view_version is not None:  # type: ignore[attr-defined]
        t._view_version = t._version  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Views: writes through a base (torch's CopySlices), stale views refreshed
# ---------------------------------------------------------------------------------------------


def _view_base(t: Tensor) -> Tensor | None:
    """The tensor whose memory ``t`` views (``None`` if it is not a view)."""
    if type(t) is TrackedTensor:
        return t._view_base if t._view_version is not None else None  # type: ignore[return-value]
    return t._base


def _geometry(view: Tensor, base: Tensor) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    return tuple(view.shape), view.stride(), int(view.storage_offset() - base.storage_offset())


def _copy_slices(base: Tensor, size: tuple[int, ...], stride: tuple[int, ...], offset: int,
                 fn: Node) -> Node:
    """torch's CopySlices: ``fn`` (the write's node) differentiates the region of ``base``
    with this geometry; the base's gradient elsewhere passes through unchanged."""
    base_shape, base_stride = tuple(base.shape), base.stride()
    fn_backward = fn.backward

    def backward(grad: Tensor) -> list[Tensor | None]:
        out = grad.new_empty_strided(base_shape, base_stride)
        out.copy_(grad)
        grad_slice = out.as_strided(size, stride, offset)
        res = fn_backward(grad_slice.clone(memory_format=torch.contiguous_format))  # type: ignore[misc]
        if res[0] is not None:
            grad_slice.copy_(res[0])
        else:
            grad_slice.zero_()
        return [out, *res[1:]]

    return Node("CopySlices", backward, (edge(base), *fn.inputs[1:]), fn.saved or (),
                fn.versions)


def view_of(view: Tensor, base: Tensor) -> None:
    """Make ``view`` a view of ``base``'s current node (torch regenerates a view's grad_fn as
    ``AsStridedBackward0`` once its base changed)."""
    size, stride, offset = _geometry(view, base)
    base_shape, base_stride = tuple(base.shape), base.stride()

    def backward(grad: Tensor) -> tuple[Tensor]:
        out = grad.new_empty_strided(base_shape, base_stride).zero_()
        out.as_strided(size, stride, offset).copy_(grad)
        return (out,)

    node = Node("AsStridedBackward0", backward, (edge(base),))
    if type(view) is Tensor:
        view.__class__ = TrackedTensor
    set_node(view, node)
    view._view_base = base  # type: ignore[attr-defined]
    view._view_version = view._version  # type: ignore[attr-defined]


def refresh_view(view: TrackedTensor) -> None:
    """A tracked view whose memory was written since it was taken: a view of its base's node
    now (torch's view replay), or torch's error if its base needs no gradient any more."""
    base = view._view_base
    if base is None or edge(base) is None:
        raise RuntimeError(
            "shimnn: a view of a tensor that was later modified in place is used in a "
            "computation that needs a gradient, and its base no longer needs one.")
    view_of(view, base)


# ---------------------------------------------------------------------------------------------
# Writes: copy_, fill_, zero_, index_put_, __setitem__
# ---------------------------------------------------------------------------------------------


def _zeros(grad: Tensor) -> Tensor:
    return torch.zeros_like(grad, memory_format=torch.contiguous_format)


def _copy_node(old: Tensor, src: Any) -> Node:
    """torch's CopyBackwards: zeros for the overwritten value; for the source, the gradient
    cast to its dtype, then summed to its shape (the engine's reduction)."""
    src_edge = edge(src) if isinstance(src, Tensor) else None
    shape, dtype = (tuple(src.shape), src.dtype) if src_edge is not None else ((), None)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g_src = None
        if src_edge is not None:
            g_src = sum_to(grad if grad.dtype is dtype else grad.to(dtype), shape)
        return _zeros(grad), g_src

    return Node("CopyBackwards", backward, (edge(old), src_edge))


def _fill_node(old: Tensor, value: Any) -> Node:
    """torch's fill_: zeros for the overwritten value; ``grad.sum()`` for a tensor value."""
    value_edge = edge(value) if isinstance(value, Tensor) else None
    dtype = value.dtype if value_edge is not None else None

    def backward(grad: Tensor) -> tuple[Tensor | None, ...]:
        if value_edge is None:
            return (torch.zeros_like(grad),)
        total = grad.sum()
        return torch.zeros_like(grad), total if total.dtype is dtype else total.to(dtype)

    name = "FillBackward1" if value_edge is not None else "FillBackward0"
    return Node(name, backward, (edge(old), value_edge) if value_edge is not None else
                (edge(old),))


def _index_put_node(old: Tensor, indices: Sequence[Any], values: Any, accumulate: bool
                    ) -> Node:
    """torch's index_put: the overwritten positions get no gradient (unless accumulating);
    ``grad[indices]``, summed to their shape, for the values."""
    indices = list(indices)
    values_edge = edge(values) if isinstance(values, Tensor) else None
    if values_edge is not None:
        shape, dtype = tuple(values.shape), values.dtype
    zero = torch.zeros((), dtype=old.dtype, device=old.device)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g_self = grad if accumulate else grad.index_put(indices, zero.expand(()), False)
        g_values = None
        if values_edge is not None:
            g_values = sum_to(grad[tuple(indices)], shape)
            if g_values.dtype is not dtype:
                g_values = g_values.to(dtype)
        return g_self, g_values

    return Node("IndexPutBackward0", backward, (edge(old), values_edge))


def _is_basic_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or (isinstance(i, (int, slice)) and not isinstance(
        i, bool)) for i in items)


def _is_advanced_index(index: Any) -> bool:
    """Only tensors, lists or bools: torch's index_put_ on the whole tensor."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (Tensor, list, bool)) for i in items)


def _setitem(target: Tensor, index: Any, value: Any) -> None:
    """``target[index] = value`` with torch's semantics: the written positions take their
    gradient from ``value``, the rest from ``target``'s old value."""
    tensors = [target, *(_tensors_in([value]))]
    if not any(e is not None for e in _edges(Tensor.__setitem__, tensors)):
        Tensor.__setitem__(target, index, value)
        return
    _inplace_target_check(target)

    def write() -> None:
        Tensor.__setitem__(target, index, value)

    if _is_basic_index(index):
        region = target[index]
        if isinstance(value, Tensor) and (value.shape == region.shape or value.dim() != 0
                                          or not value.is_cpu):
            # torch's copy_to: copy_ of the value (its leading 1-dims dropped, broadcast)
            mutate(target, write, lambda old: _copy_node(old, value), index=index)
        else:
            mutate(target, write, lambda old: _fill_node(old, value), index=index)
        return
    if _is_advanced_index(index):
        items = index if isinstance(index, tuple) else (index,)
        indices = [torch.tensor(i) if isinstance(i, (list, bool)) else i for i in items]
        mutate(target, write, lambda old: _index_put_node(old, indices, value, False))
        return
    raise NotImplementedError(
        "shimnn: __setitem__ mixing tensor and slice indices, with a value or a tensor that "
        "needs a gradient, is not supported yet; index with tensors only, or with ints and "
        "slices only.")


def _set_node(old: Tensor) -> Node:
    def backward(grad: Tensor) -> Sequence[Tensor | None]:
        raise RuntimeError("derivative for set_ is not implemented")  # torch's own error

    return Node("NotImplemented", backward, (edge(old),))


def _write(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
           ) -> Callable[[Tensor], Node] | None:
    """The node builder of a write that is no out-of-place op's twin, or ``None``."""
    if func is Tensor.set_:
        return _set_node
    if func is Tensor.copy_:
        return lambda old: _copy_node(old, args[1] if len(args) > 1 else kwargs["src"])
    if func is Tensor.fill_ or func is torch.fill_:
        return lambda old: _fill_node(old, args[1] if len(args) > 1 else kwargs["value"])
    if func is Tensor.zero_ or func is torch.zero_:
        return lambda old: Node("ZeroBackward0", lambda grad: (torch.zeros_like(grad),),
                                (edge(old),))
    if func is Tensor.index_put_ or func is torch.index_put_:
        indices = args[1] if len(args) > 1 else kwargs["indices"]
        values = args[2] if len(args) > 2 else kwargs["values"]
        accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
        return lambda old: _index_put_node(old, indices, values, bool(accumulate))
    return None


def handled(func: Any, op: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> Any:
    """A call of one of shimnn's own ops that may mutate: an ``out=`` the op does not take, or
    an in-place write into a view (which goes through its base)."""
    with no_dispatch():
        name = _op_name(func)
        if kwargs.get("out") is not None and "out" not in _parameters(op):
            return _out_call(func, name, args, kwargs)
        target = args[0] if args else None
        if (isinstance(target, Tensor) and _view_base(target) is not None
                and _writes_first_argument(func, name, args, kwargs)):
            tensors = _tensors_in(args) + _tensors_in(kwargs.values())
            if any(e is not None for e in _edges(func, tensors)):
                return _inplace(func, name, args, kwargs, tensors)
    return op(*args, **kwargs)


@functools.cache
def _parameters(op: Callable[..., Any]) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(op).parameters)
    except (TypeError, ValueError):
        return frozenset()


def torch_function(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Any:
    """``TrackedTensor.__torch_function__`` for a callable shimnn has no op for."""
    if func in _PLAIN_RESULT:
        with no_dispatch():
            return func(*args, **kwargs) if kwargs else func(*args)
    if func is Tensor.__repr__:
        t = args[0]
        return _repr(t, t._node if type(t) is TrackedTensor else None)
    if func is Tensor.__format__:
        return _format(args[0], args[1])
    return fallback(func, args, kwargs or {})


def _repr(t: Tensor, node: Node | None) -> str:
    """torch's repr, with ``grad_fn=<Name>`` naming the shimnn node as torch names its own."""
    with no_dispatch():
        plain = t.detach()
        if node is None:
            if _requires_grad(t):
                _set_requires_grad(plain, True)  # torch prints requires_grad=True
            return torch._tensor_str._str(plain)
        body = torch._tensor_str._str(plain)[:-1]
    # Reproduce torch's _add_suffixes for the one suffix it would add last.
    last_line = body[body.rfind("\n") + 1:]
    wrapped_suffix = last_line.startswith(" ") and "=" in last_line and "[" not in last_line
    used = len(last_line) if wrapped_suffix else len(last_line) + 2
    names = node.output_names
    suffix = f"grad_fn=<{node.name if names is None else names[t._output_nr]}>"  # type: ignore[attr-defined]
    indent = len("tensor(")
    if used + len(suffix) + 2 > torch._tensor_str.PRINT_OPTS.linewidth:
        return f"{body},\n{' ' * indent}{suffix})"
    return f"{body}, {suffix})"


def _format(t: Tensor, spec: str) -> str:
    with no_dispatch():
        if t.dim() == 0:
            return t.item().__format__(spec)
    return object.__format__(t, spec)


# torch calls whose result holds no tensor: nothing to record or poison, so they skip
# the fallback's bookkeeping (it made ``loss.item()`` in a training loop cost ~7 us).
_PLAIN_RESULT = frozenset([
    Tensor.item, Tensor.tolist, Tensor.dim, Tensor.ndimension, Tensor.size, Tensor.numel,
    Tensor.nelement, Tensor.__len__, Tensor.element_size, Tensor.is_contiguous,
    Tensor.is_floating_point, Tensor.is_complex, Tensor.data_ptr, Tensor.stride,
    Tensor.storage_offset, Tensor.__bool__, Tensor.__float__, Tensor.__int__, Tensor.__index__,
    *(getattr(Tensor, name).__get__ for name in (
        "shape", "dtype", "device", "ndim", "layout", "is_cuda", "is_sparse", "is_meta",
        "itemsize", "nbytes")),
    # .grad read and written (optimizers, clip_grad_norm_): no graph either way (a gradient
    # read is not differentiable, as _NON_DIFFERENTIABLE says; the setter is not an operator)
    vars(torch._C.TensorBase)["grad"].__get__, vars(torch._C.TensorBase)["grad"].__set__,
    torch.is_complex, torch.is_floating_point, torch.numel,
])
