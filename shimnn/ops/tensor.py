"""Arithmetic on tracked tensors (``-loss``, ``loss * 0.5``, ``loss1 + loss2``...).

Reached through ``__torch_function__`` when a tracked tensor meets torch's operators and
functions. Each op computes with the kernel torch uses and differentiates with torch's formula;
gradients of broadcast operands are summed back to their shape and cast to their dtype, as
torch's engine does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Edge,
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
    set_node,
    wrap,
)
from ._common import _check_real, _out_requires_grad, _record_inplace, _reduce_to


def _edge(x: Any) -> Edge:
    return edge(x) if isinstance(x, Tensor) else None


def _maybe_multiply(grad: Tensor, alpha: Any) -> Tensor:
    return grad if alpha == 1 else grad * alpha


def _binary(
    name: str,
    kernel: Callable[..., Tensor],
    input: Any,
    other: Any,
    backward: Callable[[Tensor], Sequence[Tensor | None]],
    saved: tuple[Tensor, ...],
    out: Tensor | None,
    **kwargs: Any,
) -> Tensor:
    """Compute ``kernel(input, other, **kwargs)``; record ``backward`` if a gradient is needed."""
    with no_dispatch():
        if is_grad_enabled():
            edges = (_edge(input), _edge(other))
            if edges[0] is not None or edges[1] is not None:
                if out is not None:
                    raise RuntimeError(
                        f"{name}(): functions with out=... arguments don't support automatic "
                        "differentiation, but one of the arguments requires grad."
                    )
                _check_real(name, *(t for t in (input, other) if isinstance(t, Tensor)))
                result = run_kernel(lambda: kernel(input, other, **kwargs))
                return record(result, name, backward, edges, saved)
        if out is not None:
            return kernel(input, other, out=out, **kwargs)
        return wrap(kernel(input, other, **kwargs))


def _tensors(*xs: Any) -> tuple[Tensor, ...]:
    return tuple(x for x in xs if isinstance(x, Tensor))


@implements(torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__)
def add(input: Any, other: Any, *, alpha: Any = 1, out: Tensor | None = None) -> Tensor:
    """``input + alpha * other``. Backward: ``grad``; ``alpha * grad``; each summed to shape."""

    def backward(grad: Tensor) -> Sequence[Tensor | None]:
        return (_reduce_to(grad, input) if isinstance(input, Tensor) else None,
                _reduce_to(_maybe_multiply(grad, alpha), other)
                if isinstance(other, Tensor) else None)

    return _binary("AddBackward0", torch.add, input, other, backward, (), out, alpha=alpha)


@implements(torch.sub, torch.subtract, Tensor.sub, Tensor.subtract, Tensor.__sub__)
def sub(input: Any, other: Any, *, alpha: Any = 1, out: Tensor | None = None) -> Tensor:
    """``input - alpha * other``. Backward: ``grad``; ``-alpha * grad``; each summed to shape."""

    def backward(grad: Tensor) -> Sequence[Tensor | None]:
        return (_reduce_to(grad, input) if isinstance(input, Tensor) else None,
                _reduce_to(_maybe_multiply(-grad, alpha), other)
                if isinstance(other, Tensor) else None)

    return _binary("SubBackward0", torch.sub, input, other, backward, (), out, alpha=alpha)


@implements(Tensor.__rsub__, torch.rsub)
def rsub(input: Any, other: Any, *, alpha: Any = 1) -> Tensor:
    """``other - alpha * input``. Backward: ``-alpha * grad``; ``grad``; each summed to shape."""

    def backward(grad: Tensor) -> Sequence[Tensor | None]:
        return (_reduce_to(_maybe_multiply(-grad, alpha), input),
                _reduce_to(grad, other) if isinstance(other, Tensor) else None)

    return _binary("RsubBackward1", torch.rsub, input, other, backward, (), None, alpha=alpha)


@implements(torch.mul, torch.multiply, Tensor.mul, Tensor.multiply, Tensor.__mul__,
            Tensor.__rmul__)
def mul(input: Any, other: Any, *, out: Tensor | None = None) -> Tensor:
    """``input * other``. Backward: ``grad * other``; ``grad * input``; each summed to shape."""
    needs = (_edge(input) is not None, _edge(other) is not None)

    def backward(grad: Tensor) -> Sequence[Tensor | None]:
        return (_reduce_to(grad * other, input) if needs[0] else None,
                _reduce_to(grad * input, other) if needs[1] else None)

    saved = _tensors(other if needs[0] else None, input if needs[1] else None)
    return _binary("MulBackward0", torch.mul, input, other, backward, saved, out)


@implements(torch.div, torch.divide, torch.true_divide, Tensor.div, Tensor.divide,
            Tensor.true_divide, Tensor.__truediv__, Tensor.__div__)
def div(input: Any, other: Any, *, rounding_mode: str | None = None,
        out: Tensor | None = None) -> Tensor:
    """``input / other``. Backward: ``grad / other``; ``-grad * (input / other) / other``.

    With a ``rounding_mode`` the result is piecewise constant: both gradients are zero.
    """
    needs = (_edge(input) is not None, _edge(other) is not None)

    def backward(grad: Tensor) -> Sequence[Tensor | None]:
        if rounding_mode is not None:
            return (torch.zeros_like(input) if needs[0] else None,
                    torch.zeros_like(other) if needs[1] else None)
        return (_reduce_to(grad / other, input) if needs[0] else None,
                _reduce_to(-grad * ((input / other) / other), other) if needs[1] else None)

    saved = _tensors(other if needs[0] or needs[1] else None, input if needs[1] else None)
    kwargs = {"rounding_mode": rounding_mode} if rounding_mode is not None else {}
    return _binary("DivBackward0", torch.div, input, other, backward, saved, out, **kwargs)


@implements(torch.neg, torch.negative, Tensor.neg, Tensor.negative, Tensor.__neg__)
def neg(input: Tensor) -> Tensor:
    """``-input``. Backward: ``-grad``."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                result = run_kernel(torch.neg, input)
                return record(result, "NegBackward0", lambda grad: (grad.neg(),), (e_input,))
        return wrap(torch.neg(input))


@implements(torch.reciprocal, Tensor.reciprocal)
def reciprocal(input: Tensor) -> Tensor:
    """``1 / input``. Backward: ``-grad * result * result``."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                _check_real("reciprocal", input)
                result = run_kernel(torch.reciprocal, input)

                def backward(grad: Tensor) -> Sequence[Tensor | None]:
                    return (-grad * (result * result),)

                return record(result, "ReciprocalBackward0", backward, (e_input,), (result,))
        return wrap(torch.reciprocal(input))


@implements(Tensor.__rdiv__, Tensor.__rtruediv__)
def rdiv(input: Tensor, other: Any) -> Tensor:
    """``other / input``, computed as torch does: ``input.reciprocal() * other``."""
    return mul(reciprocal(input), other)


def _add_inplace(name: str, kernel: Callable[..., Tensor], sign: int) -> Callable[..., Tensor]:
    """In-place ``self += sign * alpha * other``. Backward: ``grad``; ``sign * alpha * grad``."""

    def op(self: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
        with no_dispatch():
            e_self = edge(self) if is_grad_enabled() else None
            e_other = _edge(other) if is_grad_enabled() else None
            if e_self is None and e_other is None:
                kernel(self, other, alpha=alpha)
                return self if type(self) is TrackedTensor else wrap(self)
            if e_self is self:
                raise RuntimeError(
                    "a leaf Variable that requires grad is being used in an in-place operation."
                )
            check_inplace_target(self, kernel.__name__)
            if type(self) is Tensor:
                # A plain tensor that receives a gradient-carrying value becomes part of the
                # graph, as in torch; it must be a TrackedTensor to carry its node.
                self.__class__ = TrackedTensor
            elif type(self) is not TrackedTensor:
                raise NotImplementedError(
                    f"shimnn: in-place {kernel.__name__} into a {type(self).__name__} of a "
                    "value that needs a gradient; write `x = x + y` instead"
                )

            def backward(grad: Tensor) -> Sequence[Tensor | None]:
                g_other = None
                if e_other is not None:
                    g_other = _reduce_to(_maybe_multiply(grad if sign > 0 else -grad, alpha), other)
                return grad, g_other

            run_kernel(lambda: kernel(self, other, alpha=alpha))
            set_node(self, Node(name, backward, (e_self, e_other)))
            return self

    return op


add_ = implements(Tensor.add_, Tensor.__iadd__)(_add_inplace("AddBackward0", Tensor.add_, 1))
sub_ = implements(Tensor.sub_, Tensor.__isub__)(_add_inplace("SubBackward0", Tensor.sub_, -1))


# ---------------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------------


def _reduced_dims(input: Tensor, dim: Any) -> list[int] | None:
    """The reduced dims, non-negative and sorted; None for a full reduction."""
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return None
    dims = [dim] if isinstance(dim, int) else list(dim)
    n = max(input.dim(), 1)
    return sorted(d % n for d in dims)


def _sum_backward(grad: Tensor, shape: torch.Size, dims: list[int] | None, keepdim: bool
                  ) -> Tensor:
    """torch's sum_backward: re-insert reduced dims, then expand (a stride-0 view, as torch)."""
    if dims is not None and not keepdim and len(shape) > 0:
        for d in dims:
            grad = grad.unsqueeze(d)
    return grad.expand(shape)


def _reduction(name: str, kernel: Callable[..., Tensor], scale: bool) -> Callable[..., Tensor]:
    """``sum``/``mean`` over all or some dims. Backward: ``grad`` expanded back to the input's
    shape (divided by the number of reduced elements for the mean)."""

    def op(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with no_dispatch():
            e_input = edge(input) if is_grad_enabled() else None
            if e_input is None:
                return wrap(kernel(input, *args, **kwargs))
            if kwargs.get("out") is not None:
                raise RuntimeError(
                    f"{kernel.__name__}(): functions with out=... arguments don't support "
                    "automatic differentiation, but one of the arguments requires grad.")
            _check_real(kernel.__name__, input)
            result = run_kernel(lambda: kernel(input, *args, **kwargs))
            dim = args[0] if args else kwargs.get("dim")
            keepdim = bool(args[1] if len(args) > 1 else kwargs.get("keepdim", False))
            if isinstance(dim, torch.dtype):  # torch.sum(x, torch.float64)
                dim = None
            dims = _reduced_dims(input, dim)
            shape, dtype = input.shape, input.dtype
            count = input.numel()
            if dims is not None and input.dim() > 0:
                count = 1
                for d in dims:
                    count *= shape[d]

            def backward(grad: Tensor) -> Sequence[Tensor | None]:
                g = _sum_backward(grad, shape, dims, keepdim)
                if scale:
                    g = g / count
                return (g if g.dtype == dtype else g.to(dtype),)

            node_name = f"{name}{0 if dims is None else 1}"
            return record(result, node_name, backward, (e_input,))

    op.__name__ = kernel.__name__
    return op


sum = implements(torch.sum, Tensor.sum)(_reduction("SumBackward", torch.sum, scale=False))
mean = implements(torch.mean, Tensor.mean)(_reduction("MeanBackward", torch.mean, scale=True))


# ---------------------------------------------------------------------------------------------
# element-wise math
# ---------------------------------------------------------------------------------------------


def _op1(forward: Callable[..., Recorded], kernel: Callable[..., Tensor], input: Tensor,
         *args: Any) -> Tensor:
    """Record ``forward(input, *args)`` if ``input`` needs a gradient, else just compute."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                return apply(forward, (e_input,), input, *args)
        return wrap(kernel(input, *args))


def _exp_forward(input: Tensor) -> Recorded:
    _check_real("exp", input)
    result = torch.exp(input)
    return result, lambda grad: (grad * result,), (result,), "ExpBackward0"


@implements(torch.exp, Tensor.exp)
def exp(input: Tensor) -> Tensor:
    """``e ** input``. Backward: ``grad * result``."""
    return _op1(_exp_forward, torch.exp, input)


def _log_forward(input: Tensor) -> Recorded:
    _check_real("log", input)
    return torch.log(input), lambda grad: (grad.div(input),), (input,), "LogBackward0"


@implements(torch.log, Tensor.log)
def log(input: Tensor) -> Tensor:
    """Natural logarithm. Backward: ``grad / input``."""
    return _op1(_log_forward, torch.log, input)


def _abs_forward(input: Tensor) -> Recorded:
    _check_real("abs", input)
    return torch.abs(input), lambda grad: (grad * input.sgn(),), (input,), "AbsBackward0"


@implements(torch.abs, torch.absolute, Tensor.abs, Tensor.absolute, Tensor.__abs__)
def abs(input: Tensor) -> Tensor:
    """``|input|``. Backward: ``grad * sgn(input)`` (0 at 0)."""
    return _op1(_abs_forward, torch.abs, input)


def _pow_forward(input: Tensor, exponent: Any) -> Recorded:
    _check_real("pow", input)
    result = torch.pow(input, exponent)
    e = float(exponent)  # torch's pow_backward works with the exponent as a double
    shape, dtype = input.shape, input.dtype

    def backward(grad: Tensor) -> tuple[Tensor]:
        if e == 0.0:
            return (torch.zeros(shape, dtype=dtype, device=grad.device),)
        return (grad * (input.pow(e - 1) * e),)

    return result, backward, (input,), "PowBackward0"


@implements(torch.pow, Tensor.pow, Tensor.__pow__)
def pow(input: Any, exponent: Any, *, out: Tensor | None = None) -> Tensor:
    """``input ** exponent`` for a number exponent.

    Backward: ``grad * (exponent * input ** (exponent - 1))``; zero for exponent 0. A tensor
    exponent or base-number form has no hand-written backward (it raises at backward).
    """
    if out is not None or not isinstance(input, Tensor) or isinstance(exponent, Tensor):
        from .._graph import _fallback

        kwargs = {"out": out} if out is not None else {}
        return _fallback(torch.pow, (input, exponent), kwargs)  # type: ignore[no-any-return]
    return _op1(_pow_forward, torch.pow, input, exponent)


def _clamp_forward(input: Tensor, min: Any, max: Any, kernel: Callable[..., Tensor], name: str
                   ) -> Recorded:
    _check_real("clamp", input)
    result = kernel(input, min, max) if kernel is torch.clamp else kernel(
        input, max if min is None else min)

    def backward(grad: Tensor) -> tuple[Tensor]:
        # Gradient 1 inside [min, max] including the bounds (torch's subgradient), 0 outside.
        zero = torch.scalar_tensor(0.0, dtype=grad.dtype, device=grad.device)
        if min is not None and max is not None:
            return (torch.where((input >= min).logical_and_(input <= max), grad, zero),)
        if min is not None:
            return (torch.where(input >= min, grad, zero),)
        return (torch.where(input <= max, grad, zero),)

    return result, backward, (input,), name


def _clamp(input: Tensor, min: Any, max: Any, kernel: Callable[..., Tensor], name: str,
           out: Tensor | None) -> Tensor:
    if out is not None or isinstance(min, Tensor) or isinstance(max, Tensor) or (
            min is None and max is None):
        from .._graph import _fallback  # tensor bounds: computed, but raise at backward

        kwargs = {"out": out} if out is not None else {}
        args = (input, min, max) if kernel is torch.clamp else (input, max if min is None else min)
        return _fallback(kernel, args, kwargs)  # type: ignore[no-any-return]
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                return apply(_clamp_forward, (e_input,), input, min, max, kernel, name)
        result = kernel(input, min, max) if kernel is torch.clamp else kernel(
            input, max if min is None else min)
        return wrap(result)


@implements(torch.clamp, torch.clip, Tensor.clamp, Tensor.clip)
def clamp(input: Tensor, min: Any = None, max: Any = None, *, out: Tensor | None = None
          ) -> Tensor:
    """Clamp into ``[min, max]`` (number bounds). Backward: ``grad`` where
    ``min <= input <= max`` (bounds included), else 0. Tensor bounds raise at backward."""
    return _clamp(input, min, max, torch.clamp, "ClampBackward1", out)


@implements(torch.clamp_min, Tensor.clamp_min)
def clamp_min(input: Tensor, min: Any) -> Tensor:
    """``max(input, min)``. Backward: ``grad`` where ``input >= min``, else 0."""
    return _clamp(input, min, None, torch.clamp_min, "ClampMinBackward0", None)


@implements(torch.clamp_max, Tensor.clamp_max)
def clamp_max(input: Tensor, max: Any) -> Tensor:
    """``min(input, max)``. Backward: ``grad`` where ``input <= max``, else 0."""
    return _clamp(input, None, max, torch.clamp_max, "ClampMaxBackward0", None)


# ---------------------------------------------------------------------------------------------
# sqrt, rsqrt, square, sin, cos, triu, tril (and their in-place forms)
# ---------------------------------------------------------------------------------------------


def _math1(forward: Callable[..., Recorded], kernel: Callable[..., Tensor], name: str,
           input: Tensor, args: tuple[Any, ...], out: Tensor | None) -> Tensor:
    """:func:`_op1` with torch's ``out=`` rule: refused when a gradient is needed."""
    if out is None:
        return _op1(forward, kernel, input, *args)
    with no_dispatch():
        if is_grad_enabled() and edge(input) is not None:
            raise _out_requires_grad(name)
        return kernel(input, *args, out=out)


def _inplace1(name: str, input: Tensor, inplace_kernel: Callable[..., Any],
              backward_for: Callable[[Tensor], Callable[[Tensor], tuple[Tensor]]],
              saves: str, node: str, *args: Any) -> Tensor:
    """An in-place element-wise op. ``saves``: what its formula reads, saved as torch saves
    it: ``"result"`` (the overwritten tensor itself, version-checked), ``"self"`` (a copy of
    the input taken before the op, torch's ``original_self``) or ``""``."""

    def run(needs: tuple[bool, ...]) -> Any:
        _check_real(name, input)
        original = input.clone() if saves == "self" else None
        inplace_kernel(input, *args)
        if saves == "result":
            kept = input.detach()  # an alias sharing the version counter, without a graph
            return backward_for(kept), (kept,), node
        if original is not None:
            return backward_for(original), (original,), node
        return backward_for(input), (), node

    return _record_inplace(name, input, (), run, lambda: inplace_kernel(input, *args))


def _sqrt_backward(result: Tensor) -> Callable[[Tensor], tuple[Tensor]]:
    return lambda grad: (grad / (2 * result),)


def _sqrt_forward(input: Tensor) -> Recorded:
    _check_real("sqrt", input)
    result = torch.sqrt(input)
    return result, _sqrt_backward(result), (result,), "SqrtBackward0"


@implements(torch.sqrt, Tensor.sqrt)
def sqrt(input: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Square root. Backward: ``grad / (2 * result)``."""
    return _math1(_sqrt_forward, torch.sqrt, "sqrt", input, (), out)


@implements(torch.sqrt_, Tensor.sqrt_)
def sqrt_(input: Tensor) -> Tensor:
    """In-place :func:`sqrt` (its formula reads the result: exact)."""
    return _inplace1("sqrt_", input, Tensor.sqrt_, _sqrt_backward, "result", "SqrtBackward0")


def _rsqrt_backward(result: Tensor) -> Callable[[Tensor], tuple[Tensor]]:
    return lambda grad: (-0.5 * grad * result.pow(3),)


def _rsqrt_forward(input: Tensor) -> Recorded:
    _check_real("rsqrt", input)
    result = torch.rsqrt(input)
    return result, _rsqrt_backward(result), (result,), "RsqrtBackward0"


@implements(torch.rsqrt, Tensor.rsqrt)
def rsqrt(input: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``1 / sqrt(input)``. Backward: ``-0.5 * grad * result ** 3``."""
    return _math1(_rsqrt_forward, torch.rsqrt, "rsqrt", input, (), out)


@implements(torch.rsqrt_, Tensor.rsqrt_)
def rsqrt_(input: Tensor) -> Tensor:
    """In-place :func:`rsqrt` (its formula reads the result: exact)."""
    return _inplace1("rsqrt_", input, Tensor.rsqrt_, _rsqrt_backward, "result",
                     "RsqrtBackward0")


def _pow2_backward(input: Tensor) -> Callable[[Tensor], tuple[Tensor]]:
    return lambda grad: (grad * (input.pow(1.0) * 2.0),)


@implements(torch.square, Tensor.square)
def square(input: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``input ** 2`` (torch computes it as ``pow(input, 2)``). Backward:
    ``grad * (2 * input)``, by pow's formula."""
    if out is None:
        return pow(input, 2)
    with no_dispatch():
        if is_grad_enabled() and edge(input) is not None:
            raise _out_requires_grad("square")
        return torch.square(input, out=out)


@implements(torch.square_, Tensor.square_)
def square_(input: Tensor) -> Tensor:
    """In-place :func:`square` (torch's ``pow_(2)``; a copy of the input is saved: exact)."""
    return _inplace1("square_", input, Tensor.square_, _pow2_backward, "self", "PowBackward0")


def _sin_backward(input: Tensor) -> Callable[[Tensor], tuple[Tensor]]:
    return lambda grad: (grad * input.cos(),)


def _sin_forward(input: Tensor) -> Recorded:
    _check_real("sin", input)
    return torch.sin(input), _sin_backward(input), (input,), "SinBackward0"


@implements(torch.sin, Tensor.sin)
def sin(input: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Sine. Backward: ``grad * cos(input)``."""
    return _math1(_sin_forward, torch.sin, "sin", input, (), out)


@implements(torch.sin_, Tensor.sin_)
def sin_(input: Tensor) -> Tensor:
    """In-place :func:`sin` (a copy of the input is saved, as torch: exact)."""
    return _inplace1("sin_", input, Tensor.sin_, _sin_backward, "self", "SinBackward0")


def _cos_backward(input: Tensor) -> Callable[[Tensor], tuple[Tensor]]:
    return lambda grad: (grad * -input.sin(),)


def _cos_forward(input: Tensor) -> Recorded:
    _check_real("cos", input)
    return torch.cos(input), _cos_backward(input), (input,), "CosBackward0"


@implements(torch.cos, Tensor.cos)
def cos(input: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Cosine. Backward: ``grad * -sin(input)``."""
    return _math1(_cos_forward, torch.cos, "cos", input, (), out)


@implements(torch.cos_, Tensor.cos_)
def cos_(input: Tensor) -> Tensor:
    """In-place :func:`cos` (a copy of the input is saved, as torch: exact)."""
    return _inplace1("cos_", input, Tensor.cos_, _cos_backward, "self", "CosBackward0")


def _triangle(kernel: Callable[..., Tensor], name: str) -> Callable[..., Recorded]:
    def forward(input: Tensor, diagonal: int) -> Recorded:
        _check_real(name, input)
        return (kernel(input, diagonal), lambda grad: (kernel(grad, diagonal),), (),
                f"{name.capitalize()}Backward0")

    return forward


_triu_forward = _triangle(torch.triu, "triu")
_tril_forward = _triangle(torch.tril, "tril")


@implements(torch.triu, Tensor.triu)
def triu(input: Tensor, diagonal: int = 0, *, out: Tensor | None = None) -> Tensor:
    """The upper triangle of the last two dims (from ``diagonal`` up), zeros below.
    Backward: ``grad.triu(diagonal)``."""
    return _math1(_triu_forward, torch.triu, "triu", input, (diagonal,), out)


@implements(torch.tril, Tensor.tril)
def tril(input: Tensor, diagonal: int = 0, *, out: Tensor | None = None) -> Tensor:
    """The lower triangle of the last two dims. Backward: ``grad.tril(diagonal)``."""
    return _math1(_tril_forward, torch.tril, "tril", input, (diagonal,), out)


@implements(Tensor.triu_)
def triu_(input: Tensor, diagonal: int = 0) -> Tensor:
    """In-place :func:`triu` (its formula reads nothing: exact)."""
    return _inplace1("triu_", input, Tensor.triu_,
                     lambda _: lambda grad: (grad.triu(diagonal),), "", "TriuBackward0",
                     diagonal)


@implements(Tensor.tril_)
def tril_(input: Tensor, diagonal: int = 0) -> Tensor:
    """In-place :func:`tril` (its formula reads nothing: exact)."""
    return _inplace1("tril_", input, Tensor.tril_,
                     lambda _: lambda grad: (grad.tril(diagonal),), "", "TrilBackward0",
                     diagonal)
