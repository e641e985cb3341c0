"""Reductions beyond ``sum``/``mean``: ``max``/``min`` (full, by dim, element-wise),
``amax``/``amin``, ``topk``/``sort`` values, ``logsumexp``, ``cumsum``, ``var``/``std``, ``norm``
(``torch.norm``, ``torch.linalg.vector_norm``, ``torch.linalg.norm`` on vectors).

Values come from torch's kernels; each gradient follows the formula torch's ``derivatives.yaml``
names (``evenly_distribute_backward`` for a full max, ``value_selecting_reduction_backward``
for max-by-dim, topk and sort, ``scale_grad_by_count`` for amax, ``logsumexp_backward``,
``cumsum_backward``, ``var_backward``, ``std_backward``, ``norm_backward``), written with the same
tensor operations in the same order, so values and gradients are bit-identical on CPU.
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
    wrap,
)
from ._common import _check_real, _out_requires_grad, _record_inplace, _reduce_to

__all__: list[str] = []

_return_types: Any = torch.return_types


def _op(forward: Callable[..., Recorded], input: Tensor, args: tuple[Any, ...],
        plain: Callable[[], Any], out: Any, name: str) -> Any:
    """Record ``forward(input, *args)`` when ``input`` needs a gradient, else ``plain()``."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                if out is not None:
                    raise _out_requires_grad(name)
                return apply(forward, (e_input,), input, *args)
        result = plain()
        if out is not None or not isinstance(result, Tensor):
            return result
        return wrap(result)


def _stay_tracked(result: Any, input: Tensor) -> Any:
    """``(values, indices)`` computed without a gradient: the values of a tracked input stay
    tracked, as every op's result does."""
    if type(input) is TrackedTensor and type(result[0]) is Tensor:
        return type(result)((wrap(result[0]), result[1]))
    return result


def _dims(ndim: int, dim: Any) -> list[int]:
    """``dim`` (an int or a sequence) as sorted non-negative dims."""
    dims = [dim] if isinstance(dim, int) else list(dim)
    n = ndim if ndim > 0 else 1  # (this module's max/min shadow the builtins)
    return sorted(d % n for d in dims)


def _unsqueeze_multiple(t: Tensor, dims: Sequence[int]) -> Tensor:
    """torch's ``unsqueeze_multiple``: re-insert the reduced dims (sorted, non-negative)."""
    for d in dims:
        t = t.unsqueeze(d)
    return t


# ---------------------------------------------------------------------------------------------
# max, min, amax, amin, maximum, minimum
# ---------------------------------------------------------------------------------------------


def _evenly_distribute_forward(input: Tensor, kernel: Callable[..., Tensor], name: str
                               ) -> Recorded:
    _check_real(name, input)
    result = kernel(input)

    def backward(grad: Tensor) -> tuple[Tensor]:
        # evenly_distribute_backward (CPU): the gradient shared equally by the tied elements
        mask = input.isnan() if result.isnan().item() else input == result
        return (grad.new_zeros(input.shape).masked_fill_(mask, grad / mask.sum()),)

    return result, backward, (input, result), name


def _value_selecting_backward(grad: Tensor, dim: int, indices: Tensor, shape: Sequence[int],
                              keepdim: bool) -> Tensor:
    """torch's ``value_selecting_reduction_backward``: the gradient scattered into zeros at
    the selected indices."""
    grad_in = torch.zeros(shape, dtype=grad.dtype, device=grad.device)
    if keepdim:
        return grad_in.scatter_(dim, indices, grad)
    return grad_in.scatter_(dim, indices.unsqueeze(dim), grad.unsqueeze(dim))


def _select_by_dim_forward(input: Tensor, kernel: Callable[..., Any], dim: int, keepdim: bool,
                           name: str, indices_out: list[Tensor]) -> Recorded:
    """max/min by ``dim``: records the values; the indices go to ``indices_out``."""
    _check_real(name, input)
    values, indices = kernel(input, dim, keepdim)
    indices_out.append(indices)
    shape = input.shape

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_value_selecting_backward(grad, dim, indices, shape, keepdim),)

    return values, backward, (indices,), name


def _minmax(fn: Any, node: str, binary: Callable[..., Tensor], input: Tensor, *args: Any,
            **kwargs: Any) -> Any:
    """``torch.max``/``torch.min``: full reduction, by ``dim`` (values and indices), or
    element-wise with another tensor."""
    if args and isinstance(args[0], Tensor) or isinstance(kwargs.get("other"), Tensor):
        other = args[0] if args else kwargs["other"]
        return binary(input, other, out=kwargs.get("out"))
    out = kwargs.get("out")
    dim = args[0] if args else kwargs.get("dim")
    if dim is None:
        if args or set(kwargs) - {"out"}:
            return _fallback(fn, (input, *args), kwargs)
        return _op(_evenly_distribute_forward, input, (fn, f"{node}1"), lambda: fn(input), out,
                   fn.__name__)
    keepdim = bool(args[1] if len(args) > 1 else kwargs.get("keepdim", False))
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        if e_input is None:
            result = fn(input, *args, **kwargs)
            return result if out is not None else _stay_tracked(result, input)
        if out is not None:
            raise _out_requires_grad(fn.__name__)
        indices: list[Tensor] = []
        values = apply(_select_by_dim_forward, (e_input,), input, fn, dim, keepdim, f"{node}0",
                       indices)
        return getattr(_return_types, fn.__name__)((values, indices[0]))


@implements(torch.max, Tensor.max)
def max(input: Tensor, *args: Any, **kwargs: Any) -> Any:
    """The largest element; with ``dim``, the largest along it and where (``(values,
    indices)``); with a tensor, the element-wise maximum.

    Backward: full: the gradient shared equally by all elements equal to the maximum
    (``evenly_distribute_backward``); by dim: the gradient scattered to the index returned
    (one element, even with ties)."""
    return _minmax(torch.max, "MaxBackward", maximum, input, *args, **kwargs)


@implements(torch.min, Tensor.min)
def min(input: Tensor, *args: Any, **kwargs: Any) -> Any:
    """The smallest element, by ``dim``, or element-wise (see :func:`max`)."""
    return _minmax(torch.min, "MinBackward", minimum, input, *args, **kwargs)


def _amax_forward(input: Tensor, dims: list[int], keepdim: bool, kernel: Callable[..., Tensor],
                  name: str) -> Recorded:
    _check_real(name, input)
    result = kernel(input, dims, keepdim)
    ndim = input.dim()
    all_dims = dims if dims else list(range(ndim))

    def backward(grad: Tensor) -> tuple[Tensor]:
        # scale_grad_by_count(restore_reduced_dims(grad), restore_reduced_dims(result) == self)
        g, r = grad, result
        if not keepdim and dims and ndim > 0:  # (a 0-d input has no dim to restore)
            g, r = _unsqueeze_multiple(g, dims), _unsqueeze_multiple(r, dims)
        mask = r == input
        return ((g / mask.sum(all_dims, True)) * mask,)

    node = "AmaxBackward0" if kernel is torch.amax else "AminBackward0"
    return result, backward, (input, result), node


def _amax(kernel: Callable[..., Tensor], input: Tensor, dim: Any, keepdim: bool,
          out: Tensor | None) -> Tensor:
    with no_dispatch():
        dims = [] if dim is None else _dims(input.dim(), dim)
    return _op(_amax_forward, input, (dims, keepdim, kernel, kernel.__name__),  # type: ignore[no-any-return]
               lambda: kernel(input, dims, keepdim) if out is None else kernel(
                   input, dims, keepdim, out=out), out, kernel.__name__)


@implements(torch.amax, Tensor.amax)
def amax(input: Tensor, dim: Any = (), keepdim: bool = False, *, out: Tensor | None = None
         ) -> Tensor:
    """The maximum over ``dim`` (all dims by default), values only.

    Backward: the gradient shared equally by the elements equal to the maximum of their slice
    (``scale_grad_by_count``)."""
    return _amax(torch.amax, input, dim, keepdim, out)


@implements(torch.amin, Tensor.amin)
def amin(input: Tensor, dim: Any = (), keepdim: bool = False, *, out: Tensor | None = None
         ) -> Tensor:
    """The minimum over ``dim`` (all dims by default). Backward: as :func:`amax`."""
    return _amax(torch.amin, input, dim, keepdim, out)


def _extremum_backward(self_is_larger: bool) -> Callable[..., Any]:
    def forward(input: Tensor, other: Tensor, needs: tuple[bool, bool]) -> Recorded:
        _check_real("maximum" if self_is_larger else "minimum", input, other)
        result = (torch.maximum if self_is_larger else torch.minimum)(input, other)

        def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
            # at::where(self == other, grad / 2, grad).masked_fill_(self < other, 0) (maximum)
            g_input = g_other = None
            if needs[0]:
                lose = input < other if self_is_larger else input > other
                g_input = _reduce_to(torch.where(input == other, grad / 2, grad).masked_fill_(
                    lose, 0), input)
            if needs[1]:
                lose = input > other if self_is_larger else input < other
                g_other = _reduce_to(torch.where(input == other, grad / 2, grad).masked_fill_(
                    lose, 0), other)
            return g_input, g_other

        name = "MaximumBackward0" if self_is_larger else "MinimumBackward0"
        return result, backward, (input, other), name

    return forward


_maximum_forward = _extremum_backward(True)
_minimum_forward = _extremum_backward(False)


def _extremum(forward: Callable[..., Recorded], kernel: Callable[..., Tensor], input: Tensor,
              other: Tensor, out: Tensor | None) -> Tensor:
    with no_dispatch():
        if is_grad_enabled():
            edges = (edge(input), edge(other))
            if edges[0] is not None or edges[1] is not None:
                if out is not None:
                    raise _out_requires_grad(kernel.__name__)
                return apply(forward, edges, input, other,
                             (edges[0] is not None, edges[1] is not None))
        if out is not None:
            return kernel(input, other, out=out)
        return wrap(kernel(input, other))


@implements(torch.maximum, Tensor.maximum)
def maximum(input: Tensor, other: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Element-wise maximum (broadcast). Backward: ``grad`` to the larger operand, half to
    each on ties, summed to each operand's shape."""
    return _extremum(_maximum_forward, torch.maximum, input, other, out)


@implements(torch.minimum, Tensor.minimum)
def minimum(input: Tensor, other: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Element-wise minimum (broadcast). Backward: as :func:`maximum`, to the smaller."""
    return _extremum(_minimum_forward, torch.minimum, input, other, out)


# ---------------------------------------------------------------------------------------------
# topk, sort
# ---------------------------------------------------------------------------------------------


def _selected_forward(input: Tensor, kernel: Callable[..., Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any], dim: int, name: str, indices_out: list[Tensor]
                      ) -> Recorded:
    """topk/sort: records the values; the indices go to ``indices_out``."""
    _check_real(name, input)
    values, indices = kernel(input, *args, **kwargs)
    indices_out.append(indices)
    shape = input.shape

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_value_selecting_backward(grad, dim, indices, shape, True),)

    return values, backward, (indices,), name


def _selecting(kernel: Any, name: str, input: Tensor, dim: int, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        if e_input is None:
            result = kernel(input, *args, **kwargs)
            return result if "out" in kwargs else _stay_tracked(result, input)
        if kwargs.get("out") is not None:
            raise _out_requires_grad(kernel.__name__)
        indices: list[Tensor] = []
        values = apply(_selected_forward, (e_input,), input, kernel, args, kwargs, dim, name,
                       indices)
        return getattr(_return_types, kernel.__name__)((values, indices[0]))


@implements(torch.topk, Tensor.topk)
def topk(input: Tensor, k: int, *args: Any, **kwargs: Any) -> Any:
    """The ``k`` largest (``largest=False``: smallest) along ``dim`` (default last), values and
    indices. Backward: the gradient scattered into zeros at the indices."""
    dim = args[0] if args else kwargs.get("dim", -1)
    return _selecting(torch.topk, "TopkBackward0", input, dim, (k, *args), kwargs)


@implements(torch.sort, Tensor.sort)
def sort(input: Tensor, *args: Any, **kwargs: Any) -> Any:
    """Sorted along ``dim`` (default last), values and indices. Backward: the gradient
    scattered into zeros at the indices."""
    dim = args[0] if args and not isinstance(args[0], bool) else kwargs.get("dim", -1)
    return _selecting(torch.sort, "SortBackward0", input, dim, args, kwargs)


# ---------------------------------------------------------------------------------------------
# logsumexp, cumsum
# ---------------------------------------------------------------------------------------------


def _logsumexp_forward(input: Tensor, dim: Any, keepdim: bool) -> Recorded:
    _check_real("logsumexp", input)
    result = torch.logsumexp(input, dim, keepdim)
    dims = _dims(input.dim(), dim)

    def backward(grad: Tensor) -> tuple[Tensor]:
        # logsumexp_backward: grad * (self - result).exp(), reduced dims restored
        g, r = grad, result
        if not keepdim and input.dim() != 0:
            g, r = _unsqueeze_multiple(g, dims), _unsqueeze_multiple(r, dims)
        return (g * (input - r).exp(),)

    return result, backward, (input, result), "LogsumexpBackward0"


@implements(torch.logsumexp, Tensor.logsumexp, torch.special.logsumexp)
def logsumexp(input: Tensor, dim: Any, keepdim: bool = False, *, out: Tensor | None = None
              ) -> Tensor:
    """``log(sum(exp(input), dim))``, computed stably. Backward:
    ``grad * exp(input - result)`` (the softmax of the reduced slices times the gradient)."""
    return _op(_logsumexp_forward, input, (dim, keepdim),  # type: ignore[no-any-return]
               lambda: torch.logsumexp(input, dim, keepdim) if out is None else torch.logsumexp(
                   input, dim, keepdim, out=out), out, "logsumexp")


def _cumsum_backward(dtype: torch.dtype, dim: int) -> Callable[[Tensor], tuple[Tensor]]:
    def backward(grad: Tensor) -> tuple[Tensor]:
        # cumsum_backward(grad.to(self.scalar_type()), dim): a reversed cumsum
        g = grad.to(dtype)
        if g.numel() <= 1 or g.shape[dim] == 1:
            return (g,)
        return (g.flip(dim).cumsum(dim).flip(dim),)

    return backward


def _cumsum_forward(input: Tensor, dim: int, dtype: torch.dtype | None) -> Recorded:
    _check_real("cumsum", input)
    result = torch.cumsum(input, dim, dtype=dtype)
    return result, _cumsum_backward(input.dtype, dim), (), "CumsumBackward0"


@implements(torch.cumsum, Tensor.cumsum)
def cumsum(input: Tensor, dim: int, *, dtype: torch.dtype | None = None,
           out: Tensor | None = None) -> Tensor:
    """Running sums along ``dim``. Backward: the reversed running sums of the gradient
    (``grad.flip(dim).cumsum(dim).flip(dim)``), cast to the input's dtype."""
    return _op(_cumsum_forward, input, (dim, dtype),  # type: ignore[no-any-return]
               lambda: torch.cumsum(input, dim, dtype=dtype) if out is None else torch.cumsum(
                   input, dim, dtype=dtype, out=out), out, "cumsum")


@implements(Tensor.cumsum_)
def cumsum_(input: Tensor, dim: int, *, dtype: torch.dtype | None = None) -> Tensor:
    """In-place :func:`cumsum`. Exact: the gradient does not read the overwritten values."""

    def run(needs: tuple[bool, ...]) -> Any:
        _check_real("cumsum_", input)
        original_dtype = input.dtype
        Tensor.cumsum_(input, dim, dtype=dtype)
        return _cumsum_backward(original_dtype, dim), (), "CumsumBackward0"

    return _record_inplace("cumsum_", input, (), run,
                           lambda: Tensor.cumsum_(input, dim, dtype=dtype))


# ---------------------------------------------------------------------------------------------
# var, std
# ---------------------------------------------------------------------------------------------


def _var_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, float, bool]:
    """``(dim, correction, keepdim)`` from any of torch's var/std signatures:
    ``(dim=None, *, correction=1, keepdim=False)``, ``(dim, unbiased, keepdim=False)``,
    ``(unbiased)``."""
    unbiased = kwargs.get("unbiased")
    dim = kwargs.get("dim")
    keepdim = kwargs.get("keepdim", False)
    if args and isinstance(args[0], bool):
        unbiased = args[0]
    elif args:
        dim = args[0]
        if len(args) > 1:
            unbiased = args[1]
        if len(args) > 2:
            keepdim = args[2]
    correction = kwargs.get("correction")
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    return dim, float(correction), bool(keepdim)


def _var_backward(grad: Tensor, input: Tensor, dims: list[int] | None, correction: float,
                  keepdim: bool) -> Tensor:
    """torch's ``var_backward``: ``(2 / (n - correction)) * grad * (input - mean)``."""
    if input.dim() == 0 or dims is None:
        dof = input.numel() - correction
        if dof <= 0:
            return grad * torch.where(input == input.mean(), math.nan, math.inf)
        return (2.0 / dof) * grad * (input - input.mean())
    if not keepdim and input.dim() > 1:
        grad = _unsqueeze_multiple(grad, dims)
    count = 1
    for d in dims:
        count *= input.shape[d]
    return _two_over(count - correction) * grad * (input - input.mean(dims, True))


def _two_over(dof: float) -> float:
    """``2.0 / dof`` as C++ doubles divide (``inf`` for 0, where Python raises)."""
    return 2.0 / dof if dof != 0 else math.inf


def _var_forward(input: Tensor, kernel: Callable[..., Tensor], dim: Any, correction: float,
                 keepdim: bool) -> Recorded:
    _check_real(kernel.__name__, input)
    result = kernel(input, dim, correction=correction, keepdim=keepdim)
    dims = None if dim is None else _dims(input.dim(), dim)
    if kernel is torch.var:
        def backward(grad: Tensor) -> tuple[Tensor]:
            return (_var_backward(grad, input, dims, correction, keepdim),)

        return result, backward, (input,), "VarBackward0"

    def std_backward(grad: Tensor) -> tuple[Tensor]:
        # std_backward: var_backward of (grad / (result * 2)), 0 where the result is 0
        grad_var = (grad / (result * 2)).masked_fill_(result == 0, 0)
        return (_var_backward(grad_var, input, dims, correction, keepdim),)

    return result, std_backward, (input, result), "StdBackward0"


def _var_op(kernel: Callable[..., Tensor], input: Tensor, args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> Tensor:
    dim, correction, keepdim = _var_args(args, kwargs)
    out = kwargs.get("out")
    return _op(_var_forward, input, (kernel, dim, correction, keepdim),  # type: ignore[no-any-return]
               lambda: kernel(input, *args, **kwargs), out, kernel.__name__)


@implements(torch.var, Tensor.var)
def var(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Variance over ``dim`` (all by default) with ``correction`` (or ``unbiased``).

    Backward: ``(2 / (n - correction)) * grad * (input - mean)`` (torch's ``var_backward``;
    NaN/inf when ``n <= correction``)."""
    return _var_op(torch.var, input, args, kwargs)


@implements(torch.std, Tensor.std)
def std(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Standard deviation (see :func:`var`). Backward: ``var``'s backward of
    ``grad / (2 * result)`` (0 where the result is 0)."""
    return _var_op(torch.std, input, args, kwargs)


# ---------------------------------------------------------------------------------------------
# norms
# ---------------------------------------------------------------------------------------------


def _norm_backward(grad: Tensor, input: Tensor, p: float, norm: Tensor, dims: list[int],
                   keepdim: bool) -> Tensor | None:
    """torch's ``norm_backward`` (``dims`` empty: a full reduction)."""
    if not keepdim and input.dim() != 0:
        grad = _unsqueeze_multiple(grad, dims)
        norm = _unsqueeze_multiple(norm, dims)
    if p == 0.0:
        return None
    if p == 1.0:
        return input.sgn() * grad
    if p == 2.0:
        return grad * (input / norm).masked_fill_(norm == 0, 0)
    if math.isinf(p):
        # the derivative of amax(abs(input)), respecting NaNs
        input_abs = input.abs()
        mask = input_abs.eq(norm).logical_or(input_abs.isnan())
        count = mask.sum(dims if dims else list(range(mask.dim())), True)
        return input.sgn() * ((grad / count) * mask)
    if p < 1.0:
        scaled = input.sgn() * input.abs().pow_(p - 1).masked_fill_(input == 0, 0)
        return scaled * grad * norm.pow(1 - p)
    if p < 2.0:
        scaled = input.sgn() * input.abs().pow_(p - 1)
    else:
        scaled = input * input.abs().pow_(p - 2)
    scale = grad / norm.pow(p - 1)
    scale.masked_fill_(norm == 0, 0)
    return scaled * scale


def _vector_norm_forward(input: Tensor, ord: Any, dim: Any, keepdim: bool,
                         dtype: torch.dtype | None) -> Recorded:
    _check_real("linalg.vector_norm", input)
    result = torch.linalg.vector_norm(input, ord, dim, keepdim, dtype=dtype)
    dims = [] if dim is None else _dims(input.dim(), dim)
    p = float(ord)
    input_dtype = input.dtype

    def backward(grad: Tensor) -> tuple[Tensor | None]:
        g = _norm_backward(grad, input, p, result, dims, keepdim)
        return (g if g is None or g.dtype is input_dtype else g.to(input_dtype),)

    return result, backward, (input, result), "LinalgVectorNormBackward0"


@implements(torch.linalg.vector_norm)
def vector_norm(x: Tensor, ord: Any = 2, dim: Any = None, keepdim: bool = False, *,
                dtype: torch.dtype | None = None, out: Tensor | None = None) -> Tensor:
    """``(sum |x|^ord)^(1/ord)`` over ``dim`` (all by default); ``ord`` 0, ±inf or a number.

    Backward: torch's ``norm_backward``: ``sgn(x) * grad`` (ord 1),
    ``grad * x / norm`` (ord 2, 0 where the norm is 0), the gradient shared by the elements of
    largest magnitude (inf), and the general ``|x|^(ord-1)`` forms."""
    return _op(_vector_norm_forward, x, (ord, dim, keepdim, dtype),  # type: ignore[no-any-return]
               lambda: torch.linalg.vector_norm(x, ord, dim, keepdim, dtype=dtype, out=out),
               out, "linalg_vector_norm")


@implements(torch.norm, Tensor.norm)
def norm(input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False,
         out: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.norm``: as torch's, a vector norm (``p`` a number, or ``"fro"`` over at most
    two dims) by :func:`vector_norm`; matrix norms (``"nuc"``...) are torch's and raise at
    backward."""
    with no_dispatch():
        strided_cpu = input.layout == torch.strided and input.device.type == "cpu"
    dims = [dim] if isinstance(dim, int) else dim
    if strided_cpu and (not isinstance(p, str) or (p == "fro" and (
            dim is None or isinstance(dim, int) or len(dim) <= 2))):
        ord = 2 if isinstance(p, str) else (2.0 if p is None else p)
        return vector_norm(input, ord, dims, keepdim, dtype=dtype, out=out)
    kwargs: dict[str, Any] = {"p": p, "dim": dim, "keepdim": keepdim, "dtype": dtype}
    if out is not None:
        kwargs["out"] = out
    return _fallback(torch.norm, (input,), kwargs)  # type: ignore[no-any-return]


@implements(torch.linalg.norm)
def linalg_norm(A: Tensor, ord: Any = None, dim: Any = None, keepdim: bool = False, *,
                out: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.linalg.norm``: a vector norm (``dim`` of one dim, or ``ord=None``) by
    :func:`vector_norm`, as torch's; matrix norms are torch's and raise at backward."""
    with no_dispatch():
        ndim = A.dim()
    dims = [dim] if isinstance(dim, int) else dim
    if dims is not None and len(dims) not in (1, 2) or dims is None and ord is not None and (
            ndim not in (1, 2)):
        with no_dispatch():
            torch.linalg.norm(A, ord, dim, keepdim, dtype=dtype)  # torch's error
    matrix = ord is not None and (dims is not None and len(dims) == 2 or dims is None and (
        ndim == 2))
    if matrix or isinstance(ord, str):
        kwargs: dict[str, Any] = {"dtype": dtype}
        if out is not None:
            kwargs["out"] = out
        return _fallback(torch.linalg.norm, (A, ord, dim, keepdim), kwargs)  # type: ignore[no-any-return]
    return vector_norm(A, 2.0 if ord is None else ord, dims, keepdim, dtype=dtype, out=out)

