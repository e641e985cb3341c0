"""``gradcheck``: shimnn's hand-written backward against central finite differences in float64.

torch's ``torch.autograd.gradcheck`` needs torch's autograd for its analytical side; this one
takes the analytical Jacobian from shimnn's engine (one backward per output element, as torch's
slow mode does) and the numerical one from shimnn's forward alone, and it runs inside
:func:`~shimnn.testing.assert_no_autograd`. The numerical Jacobian is computed as torch's is
(perturb one element by ``-eps`` then ``+eps``, ``(f(x + eps) - f(x - eps)) / (2 * eps)``), the
Jacobians have torch's layout (one row per input element, one column per output element), the
comparison is torch's (``allclose(analytical, numerical, rtol, atol)``) and so is the first line
of the failure message.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._guard import assert_no_autograd
from ._parity import _map, _name, _tensors

__all__ = ["GradcheckError", "gradcheck"]

_no_dispatch = torch._C.DisableTorchFunctionSubclass


class GradcheckError(RuntimeError):
    """The analytical and numerical Jacobians disagree (torch raises its own class of the same
    name, also a ``RuntimeError``)."""


def _as_float64(t: Tensor) -> Tensor:
    with _no_dispatch():
        c = t.detach().clone()
        if c.dtype.is_floating_point:
            c = c.double()
        elif c.dtype.is_complex:
            raise NotImplementedError("shimnn.testing.gradcheck: complex inputs are not supported")
    return c


def _outputs(func: Callable[..., Any], args: Any) -> list[Tensor]:
    return _tensors(func(*args))


def gradcheck(
    func: Callable[..., Any],
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
) -> bool:
    """Check ``func``'s shimnn gradients against finite differences, in float64.

    Called like ``torch.autograd.gradcheck``: ``gradcheck(fn, (x, w))`` (a tuple of inputs) or
    ``gradcheck(fn, x, w)``. Inputs with ``requires_grad=True`` are differentiated; when
    ``func`` is a module, its parameters that require grad are too (after the inputs). Every
    floating-point input and parameter is copied to float64 first: the caller's tensors are
    never modified, and finite differences are meaningful there. Differentiated inputs reach
    ``func`` as ``shimnn.Parameter``s, so torch functions it calls on them reach shimnn.

    Args:
        func: a callable returning a tensor or a tuple of tensors (outputs that do not
            require grad are not differentiated).
        *inputs: its arguments.
        eps: the finite-difference step.
        atol, rtol: ``allclose`` tolerances between the analytical and numerical Jacobians.
        raise_exception: raise :class:`GradcheckError` on failure (else return ``False``).
        nondet_tol: how far two backward passes with the same input and gradient may differ.

    Returns:
        ``True`` when every Jacobian agrees.

    Raises:
        GradcheckError: torch's message, ``Jacobian mismatch for output i with respect to
            input j`` with both Jacobians (row: an input element, column: an output element;
            ``i`` counts the outputs that require grad, ``j`` the inputs that do), then which
            argument input ``j`` is, how many entries differ and the largest difference.
    """
    if len(inputs) == 1 and isinstance(inputs[0], tuple):
        inputs = inputs[0]  # torch's calling convention: gradcheck(fn, (x, y))
    try:
        return _gradcheck(func, inputs, eps, atol, rtol, nondet_tol)
    except GradcheckError:
        if raise_exception:
            raise
        return False


def _gradcheck(func: Callable[..., Any], inputs: tuple[Any, ...], eps: float, atol: float,
               rtol: float, nondet_tol: float) -> bool:
    import shimnn

    originals = _tensors(inputs)
    bases = [_as_float64(t) for t in originals]
    leaves: list[Tensor] = [shimnn.Parameter(b) if t.requires_grad else b
                            for t, b in zip(originals, bases)]
    it = iter(leaves)
    args = _map(inputs, lambda _: next(it))
    # (what it is, the float64 tensor perturbed in place, the leaf whose .grad shimnn fills)
    wrt: list[tuple[str, Tensor, Tensor]] = [
        (f"tensor argument {i} of {_name(func)}", b, leaf)
        for i, (t, b, leaf) in enumerate(zip(originals, bases, leaves)) if t.requires_grad]
    if isinstance(func, torch.nn.Module):
        func = copy.deepcopy(func).double()
        for name, p in func.named_parameters():
            if p.requires_grad:
                p.grad = None
                with _no_dispatch():
                    wrt.append((f"parameter {name} of {type(func).__name__}", p.detach(), p))
    if not wrt:
        raise ValueError("gradcheck expects at least one input tensor to require gradient, but "
                         "none of the them have requires_grad=True.")
    with assert_no_autograd():
        outputs = _outputs(func, args)
        floating = [k for k, o in enumerate(outputs) if o.dtype.is_floating_point]
        differentiable = [outputs[k] for k in floating if outputs[k].requires_grad]
        # Analytical first, twice (torch's reentrancy check): the numerical pass perturbs the
        # inputs in place, which would invalidate the tensors this graph saved.
        analytical = [(_analytical(o, wrt), _analytical(o, wrt)) for o in differentiable]
        shapes = [outputs[k].shape for k in floating]
        needed = [outputs[k].requires_grad for k in floating]
        del outputs
        with torch.no_grad():
            numerical = _numerical(func, args, floating, wrt, eps)
    if not differentiable:
        for per_input in numerical:
            for n in per_input:
                if not torch.allclose(n, torch.zeros_like(n)):
                    raise GradcheckError("Numerical gradient for function expected to be zero")
        return True
    numerical = [[n for n, d in zip(per_input, needed) if d] for per_input in numerical]
    shapes = [s for s, d in zip(shapes, needed) if d]
    for i, (first, second) in enumerate(analytical):
        for j, ((a, size_ok), (b, _)) in enumerate(zip(first, second)):
            if not size_ok:
                raise GradcheckError(f"Analytical gradient has incorrect size (shimnn: "
                                     f"{wrt[j][0]})")
            if not torch.allclose(a, b, rtol=0.0, atol=nondet_tol):
                raise GradcheckError(
                    "Backward is not reentrant, i.e., running backward with same input and "
                    "grad_output multiple times gives different values, although analytical "
                    "gradient matches numerical gradient.The tolerance for nondeterminism was "
                    f"{nondet_tol}. (shimnn: {wrt[j][0]})")
        for j, (a, _) in enumerate(first):
            n = numerical[j][i]
            if not torch.allclose(a, n, rtol, atol):
                raise GradcheckError(_mismatch(a, n, i, j, wrt[j], shapes[i], rtol, atol))
    return True


def _numerical(func: Callable[..., Any], args: Any, floating: list[int],
               wrt: list[tuple[str, Tensor, Tensor]], eps: float) -> list[list[Tensor]]:
    """numerical[j][k]: d (floating) output k / d input j, shape (input numel, output numel),
    computed as torch's slow gradcheck does, element by element in row-major order."""
    result = []
    for _, base, _leaf in wrt:
        cols: list[Tensor] | None = None
        for d_idx, idx in enumerate(itertools.product(*(range(n) for n in base.shape))):
            with _no_dispatch():
                entry = base[idx]
                orig = entry.clone()
                entry.copy_(orig - eps)
            outa = [o.clone() for o in _floating(func, args, floating)]
            with _no_dispatch():
                entry.copy_(orig + eps)
            outb = [o.clone() for o in _floating(func, args, floating)]
            with _no_dispatch():
                entry.copy_(orig)
                if cols is None:
                    cols = [a.new_zeros((base.numel(), a.numel())) for a in outa]
                for k, (a, b) in enumerate(zip(outa, outb)):
                    if a.shape != b.shape:
                        raise GradcheckError(
                            "Expected `func` to return outputs with the same shape when inputs "
                            f"are perturbed on index {idx} by {eps}, but got: shapes "
                            f"{a.shape} and {b.shape}.")
                    cols[k][d_idx] = ((b - a) / (2 * eps)).reshape(-1)
        if cols is None:  # an empty input: empty Jacobians
            cols = [o.new_zeros((0, o.numel())) for o in _floating(func, args, floating)]
        result.append(cols)
    return result


def _floating(func: Callable[..., Any], args: Any, floating: list[int]) -> list[Tensor]:
    outputs = _outputs(func, args)
    return [outputs[k] for k in floating]


def _analytical(out: Tensor, wrt: list[tuple[str, Tensor, Tensor]]) -> list[tuple[Tensor, bool]]:
    """Per input j: (d out / d input j, shape (input numel, out numel); whether every
    gradient had the input's shape), one shimnn backward per element of ``out``."""
    with _no_dispatch():
        jac = [base.new_zeros((base.numel(), out.numel())) for _, base, _ in wrt]
        grad_out = torch.zeros_like(out, memory_format=torch.legacy_contiguous_format)
        flat = grad_out.view(-1)
    sizes_ok = [True] * len(wrt)
    leaves = [leaf for _, _, leaf in wrt]
    for col in range(out.numel()):
        with _no_dispatch():
            flat.zero_()
            flat[col] = 1.0
        for leaf in leaves:
            leaf.grad = None
        out.backward(grad_out.clone(), retain_graph=True, inputs=leaves)
        for j, leaf in enumerate(leaves):
            g = leaf.grad
            if g is None:
                continue  # not reached: a zero column, as torch counts an unused input
            with _no_dispatch():
                if g.shape != leaf.shape:
                    sizes_ok[j] = False
                    continue
                jac[j][:, col] = g.reshape(-1)
    for leaf in leaves:
        leaf.grad = None
    return list(zip(jac, sizes_ok))


def _mismatch(a: Tensor, n: Tensor, i: int, j: int, target: tuple[str, Tensor, Tensor],
              out_shape: torch.Size, rtol: float, atol: float) -> str:
    torch_part = (f"Jacobian mismatch for output {i:d} with respect to input {j:d},\n"
                  f"numerical:{n}\nanalytical:{a}\n")
    with _no_dispatch():
        bad = ~torch.isclose(a, n, rtol, atol)
        worst = torch.where(bad, (a - n).abs().nan_to_num(torch.inf), torch.zeros_like(a))
        row, col = divmod(int(worst.argmax()), a.shape[1])
        label, base, _ = target
        where_in = tuple(int(x) for x in torch.unravel_index(torch.tensor(row), base.shape))
        where_out = tuple(int(x) for x in torch.unravel_index(torch.tensor(col), out_shape))
        return (f"{torch_part}\nshimnn.testing.gradcheck: input {j} is {label} (shape "
                f"{tuple(base.shape)}); {int(bad.sum())} of {bad.numel()} entries differ "
                f"beyond atol={atol:g} + rtol={rtol:g} * |numerical|; the largest, "
                f"d output {i}{list(where_out)} / d input {j}{list(where_in)}: analytical "
                f"{float(a[row, col]):.6g}, numerical {float(n[row, col]):.6g}")
