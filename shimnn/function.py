"""Your own differentiable operations, forward and backward by hand, run by shimnn's engine.

``shimnn.Function`` has the shape of ``torch.autograd.Function`` (static ``forward(ctx, ...)``
and ``backward(ctx, grad)``, ``ctx.save_for_backward``, ``Function.apply``)::

    class Cube(shimnn.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.pow(3)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (x.pow(2.0) * 3.0)

    y = Cube.apply(x)

And a ``torch.autograd.Function`` subclass (a gradient reversal, a straight-through estimator)
applied to shimnn's tensors runs the same way: its ``forward`` computes the value, its
``backward`` becomes a node of shimnn's graph, so it trains exactly as under torch's autograd.
(shimnn makes ``torch.autograd.Function.apply`` send calls with a shimnn tensor among their
arguments here; every other call is torch's own.)

``forward`` runs with grad mode off (nothing inside it is recorded); ``backward`` receives one
gradient per output (zeros for an output that got none, unless ``ctx.set_materialize_grads
(False)``) and returns one per input of ``forward`` (``None`` for inputs that are not tensors or
need none). Saved tensors are version-checked and freed like shimnn's own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._dispatch import _join
from ._graph import (
    FREED_MESSAGE,
    Node,
    TrackedTensor,
    _make_subclass,
    _requires_grad,
    edge,
    is_grad_enabled,
    no_dispatch,
    refuse_recording_modes,
    set_grad_enabled,
    sum_to,
    wrap,
)
from .modules.module import Parameter

__all__ = ["Function", "FunctionCtx"]


class FunctionCtx:
    """What ``forward`` hands to ``backward``: saved tensors and anything set as attributes
    (torch's ``ctx`` API: ``save_for_backward``, ``saved_tensors``, ``needs_input_grad``,
    ``mark_dirty``, ``mark_non_differentiable``, ``set_materialize_grads``)."""

    needs_input_grad: tuple[bool, ...]

    def __init__(self, needs_input_grad: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs_input_grad
        self._saved: tuple[Any, ...] | None = ()
        self._freed = False
        self._dirty: tuple[Tensor, ...] = ()
        self._non_differentiable: tuple[Tensor, ...] = ()
        self.materialize_grads = True

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        """Keep these tensors for ``backward`` (read them back as ``ctx.saved_tensors``)."""
        self._saved = tensors

    def save_for_forward(self, *tensors: Tensor | None) -> None:
        raise NotImplementedError(
            "shimnn computes gradients in reverse mode only: save_for_forward (forward-mode AD) "
            "is not supported")

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        if self._freed:
            raise RuntimeError(FREED_MESSAGE)
        return self._saved or ()

    def mark_dirty(self, *tensors: Tensor) -> None:
        """These inputs were modified in place by ``forward`` (and are returned)."""
        self._dirty = tensors

    def mark_non_differentiable(self, *tensors: Tensor) -> None:
        """These outputs have no gradient."""
        self._non_differentiable = tensors

    def set_materialize_grads(self, value: bool) -> None:
        """Whether ``backward`` gets zeros (the default) or ``None`` for an output without a
        gradient."""
        self.materialize_grads = value


def _is_shimnn(value: Any) -> bool:
    return isinstance(value, Tensor) and (type(value) is TrackedTensor
                                          or isinstance(value, Parameter))


def _check_grads(name: str, grads: Any, args: tuple[Any, ...], shapes: list[Any],
                 dtypes: list[Any], edges: tuple[Any, ...]) -> list[Tensor | None]:
    """torch's checks of a custom backward's result, then its engine's: the count, ``None`` for
    non-tensor inputs, shapes (a broadcast one summed back), dtypes."""
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) > len(args) and all(g is None for g in grads[len(args):]):
        grads = grads[:len(args)]
    if len(grads) != len(args):
        raise RuntimeError(
            f"function {name} returned an incorrect number of gradients (expected "
            f"{len(args)}, got {len(grads)})")
    out: list[Tensor | None] = []
    for i, (g, shape, dtype, e) in enumerate(zip(grads, shapes, dtypes, edges)):
        if g is None or e is None:
            if g is not None and shape is None:
                raise RuntimeError(
                    f"function {name} returned a gradient different than None at position "
                    f"{i + 1}, but the corresponding forward input was not a Variable")
            out.append(None)
            continue
        if g.shape != shape:
            try:
                torch.broadcast_shapes(shape, g.shape)
                ok = torch.Size(torch.broadcast_shapes(shape, g.shape)) == g.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise RuntimeError(
                    f"Function {name} returned an invalid gradient at index {i} - got "
                    f"{list(g.shape)} but expected shape compatible with {list(shape)}")
            g = sum_to(g, shape)
        out.append(g if g.dtype is dtype else g.to(dtype))
    return out


def run_function(name: str, forward: Callable[[FunctionCtx], Any],
                 backward: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Run a hand-written ``forward(ctx)`` over ``args`` and record ``backward(ctx, *grads)``
    as one node of shimnn's graph (torch's custom-function semantics)."""
    with no_dispatch():
        refuse_recording_modes()
        edges = tuple(edge(a) if isinstance(a, Tensor) else None for a in args)
        tracking = is_grad_enabled() and any(e is not None for e in edges)
        ctx = FunctionCtx(tuple(e is not None for e in edges))
        prev = is_grad_enabled()
        set_grad_enabled(False)
        try:
            outputs = forward(ctx)
        finally:
            set_grad_enabled(prev)
        single = not isinstance(outputs, tuple)
        results = [outputs] if single else list(outputs)
        if not tracking:
            wrapped = [wrap(r) if type(r) is Tensor else r for r in results]
            return wrapped[0] if single else tuple(wrapped)
        for t in ctx._dirty:
            if not (type(t) is TrackedTensor and t._node is not None) and _requires_grad(t):
                raise RuntimeError(
                    "a leaf Variable that requires grad has been used in an in-place "
                    "operation.")
        shapes = [a.shape if isinstance(a, Tensor) else None for a in args]
        dtypes = [a.dtype if isinstance(a, Tensor) else None for a in args]
        # Output i of the node: a differentiable tensor, or None (no gradient).
        kinds = []
        for r in results:
            differentiable = isinstance(r, Tensor) and (
                r.dtype.is_floating_point or r.dtype.is_complex) and not any(
                r is t for t in ctx._non_differentiable)
            kinds.append(differentiable)
        like = [(r.shape, r.dtype, r.device) if isinstance(r, Tensor) else None
                for r in results]

        def node_backward(grads: Any, retain_graph: bool) -> list[Tensor | None]:
            if len(results) == 1:
                grads = [grads]
            full = list(grads)
            for i, g in enumerate(full):
                if g is None and like[i] is not None and ctx.materialize_grads:
                    shape, dtype, device = like[i]  # type: ignore[misc]
                    full[i] = torch.zeros(shape, dtype=dtype, device=device)
            result = backward(ctx, *full)
            if not retain_graph:
                ctx._saved, ctx._freed = None, True
            return _check_grads(name, result, args, shapes, dtypes, edges)

        saved = tuple(t for t in (ctx._saved or ()) if isinstance(t, Tensor))
        node = Node(name, node_backward, edges, saved)
        node.takes_retain = True
        if len(results) > 1:
            node.outputs = len(results)
        tracked: list[Any] = []
        for i, (r, differentiable) in enumerate(zip(results, kinds)):
            if not differentiable:
                tracked.append(wrap(r) if type(r) is Tensor else r)
                continue
            if any(r is t for t in ctx._dirty):
                _join(r, node)  # the input modified in place carries the node
                if len(results) > 1:
                    r._output_nr = i  # type: ignore[union-attr]
                tracked.append(r)
                continue
            # An input returned as is gets a new tensor (torch returns a view of it).
            out = _make_subclass(TrackedTensor, r)
            out._node = node
            out._output_nr = i if len(results) > 1 else 0
            tracked.append(out)
        return tracked[0] if single else tuple(tracked)


class Function:
    """Base class of a differentiable operation with a hand-written forward and backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Any:
        """Compute the output(s) from the inputs (grad mode off)."""
        raise NotImplementedError("a shimnn.Function must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx: FunctionCtx, *grad_outputs: Tensor) -> Any:
        """Return the gradient of each ``forward`` input, given the outputs' gradients."""
        raise NotImplementedError("a shimnn.Function must define backward(ctx, grad_output)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """Run ``forward`` and, in grad mode when an input needs a gradient, record
        ``backward`` in shimnn's graph."""
        return run_function(f"{cls.__name__}Backward",
                            lambda ctx: cls.forward(ctx, *args, **kwargs), cls.backward, args)


# ---------------------------------------------------------------------------------------------
# torch.autograd.Function subclasses applied to shimnn's tensors
# ---------------------------------------------------------------------------------------------

_TorchFunction = torch.autograd.Function
# torch's own apply: a classmethod (torch 2.13) or a C classmethod descriptor (2.14).
_torch_apply: Any = vars(_TorchFunction)["apply"]
_default_setup_context = torch.autograd.function._SingleLevelFunction.setup_context


def _apply(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.autograd.Function.apply``: shimnn's engine when a shimnn tensor is an input."""
    if not any(_is_shimnn(a) for a in args) or torch._C._are_functorch_transforms_active():
        return _torch_apply.__get__(None, cls)(*args, **kwargs)
    if cls.setup_context is not _default_setup_context:
        bound = inspect.signature(cls.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        args, kwargs = bound.args, bound.kwargs

        def forward(ctx: FunctionCtx) -> Any:
            output = cls.forward(*args, **kwargs)
            cls.setup_context(ctx, args, output)
            return output
    else:
        def forward(ctx: FunctionCtx) -> Any:
            return cls.forward(ctx, *args, **kwargs)

    backward = cls.backward if "backward" in _overridden(cls) else cls.vjp
    return run_function(f"{cls.__name__}Backward", forward, backward, args)


def _overridden(cls: Any) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        if klass is _TorchFunction:
            break
        names.update(vars(klass))
    return names


_shimnn_apply = classmethod(_apply)


def install() -> None:
    """Send ``torch.autograd.Function.apply`` calls with shimnn tensors to shimnn's engine."""
    if vars(_TorchFunction)["apply"] is not _shimnn_apply:
        _TorchFunction.apply = _shimnn_apply  # type: ignore[assignment,method-assign]
