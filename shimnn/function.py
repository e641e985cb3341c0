"""``shimnn.Function``: your own differentiable operation, forward and backward by hand.

The shape of ``torch.autograd.Function`` (static ``forward(ctx, ...)`` and
``backward(ctx, grad)``, ``ctx.save_for_backward``, ``Function.apply``), run by shimnn's engine
instead of torch's autograd::

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

``forward`` sees plain tensors and runs with grad mode off (nothing inside it is recorded);
``backward`` returns one gradient per input of ``forward`` (``None`` for inputs that are not
tensors or need none). Saved tensors are version-checked and freed like shimnn's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ._graph import (
    edge,
    is_grad_enabled,
    no_dispatch,
    record,
    set_grad_enabled,
    wrap,
)

__all__ = ["Function", "FunctionCtx"]


class FunctionCtx:
    """What ``forward`` hands to ``backward``: saved tensors and anything set as attributes."""

    needs_input_grad: tuple[bool, ...]

    def __init__(self, needs_input_grad: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs_input_grad
        self._saved: tuple[Tensor, ...] | None = ()
        self._freed = False

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        """Keep these tensors for ``backward`` (read them back as ``ctx.saved_tensors``)."""
        with no_dispatch():
            self._saved = tuple(t.detach() if isinstance(t, Tensor) else t  # type: ignore[misc]
                                for t in tensors)

    @property
    def saved_tensors(self) -> tuple[Tensor, ...]:
        if self._freed:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or directly access saved "
                "tensors after they have already been freed). Specify retain_graph=True if "
                "you need to backward through the graph a second time.")
        return self._saved or ()


class Function:
    """Base class of a differentiable operation with a hand-written forward and backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Tensor:
        """Compute the output from the inputs (plain tensors, grad mode off)."""
        raise NotImplementedError("a shimnn.Function must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: Tensor) -> Any:
        """Return the gradient of each ``forward`` input, given the output's gradient."""
        raise NotImplementedError("a shimnn.Function must define backward(ctx, grad_output)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        """Run ``forward`` and, in grad mode when an input needs a gradient, record
        ``backward`` in shimnn's graph."""
        with no_dispatch():
            edges = tuple(edge(a) if isinstance(a, Tensor) else None for a in args)
            tracking = is_grad_enabled() and any(e is not None for e in edges)
            ctx = FunctionCtx(tuple(e is not None for e in edges))
            prev = is_grad_enabled()
            set_grad_enabled(False)
            try:
                out = cls.forward(ctx, *args, **kwargs)
            finally:
                set_grad_enabled(prev)
            if not isinstance(out, Tensor):
                raise NotImplementedError(
                    f"{cls.__name__}.forward returned {type(out).__name__}: shimnn.Function "
                    "supports exactly one output tensor")
            if not tracking:
                return wrap(out)
            shapes = [a.shape if isinstance(a, Tensor) else None for a in args]

            def backward(grad: Tensor, retain_graph: bool) -> Sequence[Tensor | None]:
                grads = cls.backward(ctx, grad)
                if not retain_graph:
                    ctx._saved, ctx._freed = None, True
                if not isinstance(grads, tuple):
                    grads = (grads,)
                if len(grads) != len(args):
                    raise RuntimeError(
                        f"function {cls.__name__}Backward returned an incorrect number of "
                        f"gradients (expected {len(args)}, got {len(grads)})")
                for i, (g, shape, e) in enumerate(zip(grads, shapes, edges)):
                    if g is not None and e is not None and g.shape != shape:
                        raise RuntimeError(
                            f"Function {cls.__name__}Backward returned an invalid gradient at "
                            f"index {i} - got {list(g.shape)} but expected shape compatible "
                            f"with {list(shape)}")  # type: ignore[arg-type]
                return grads

            saved = tuple(t for t in (ctx._saved or ()) if isinstance(t, Tensor))
            result = record(out, f"{cls.__name__}Backward", backward, edges, saved)
            result._node.takes_retain = True  # type: ignore[union-attr]
            return result
