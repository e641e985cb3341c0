"""One parity helper: run the same module on the same inputs under torch and under shimnn.

torch runs with its autograd; shimnn runs with autograd forbidden. Outputs, input gradients and
parameter gradients must be bit-identical; the upstream gradient is random (an all-ones
gradient hides transposition mistakes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

import shimnn
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden


def random_like(t: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=t.dtype)


def twin_modules(make: Callable[[Any], torch.nn.Module], seed: int = 0
                 ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same constructor under torch.nn and shimnn, from the same seed."""
    torch.manual_seed(seed)
    ref = make(torch.nn)
    torch.manual_seed(seed)
    shim = make(shimnn)
    for (n1, a), (n2, b) in zip(ref.state_dict().items(), shim.state_dict().items()):
        assert n1 == n2
        assert_same(b, a, f"initial {n1}")
    return ref, shim


def _inputs(args: Sequence[torch.Tensor], requires_grad: Sequence[bool]) -> list[torch.Tensor]:
    out = []
    for a, rg in zip(args, requires_grad):
        c = a.detach().clone()
        out.append(c.requires_grad_() if rg else c)
    return out


def check_module(
    ref: torch.nn.Module,
    shim: torch.nn.Module,
    args: Sequence[torch.Tensor],
    requires_grad: Sequence[bool] | None = None,
    seed: int = 0,
) -> None:
    """Forward, then backward of a random gradient, in both; compare everything."""
    if requires_grad is None:
        requires_grad = [a.dtype.is_floating_point for a in args]
    ref_in = _inputs(args, requires_grad)
    shim_in = _inputs(args, requires_grad)
    ref_out = ref(*ref_in)
    grad = random_like(ref_out, seed)
    if ref_out.requires_grad:
        ref_out.backward(grad)
    with autograd_forbidden():
        shim_out = shim(*shim_in)
        assert_no_autograd_graph(shim_out)
        assert isinstance(shim_out, shimnn.TrackedTensor)
        assert shim_out.requires_grad == ref_out.requires_grad
        if shim_out.requires_grad:
            shim_out.backward(grad.clone())
    assert_same(shim_out, ref_out, "output")
    for i, (a, b) in enumerate(zip(shim_in, ref_in)):
        assert_same(a.grad, b.grad, f"grad of input {i}")
    ref_params = dict(ref.named_parameters())
    for name, p in shim.named_parameters():
        assert_same(p.grad, ref_params[name].grad, f"grad of {name}")
        assert_no_autograd_graph(p, p.grad)


def check_raises_like(torch_call: Callable[[], Any], shim_call: Callable[[], Any]
                      ) -> tuple[BaseException, BaseException]:
    """Both calls raise, with the same exception type; returns (torch's, shimnn's)."""
    try:
        torch_call()
    except Exception as e:
        ref_exc: BaseException = e
    else:
        raise AssertionError("torch did not raise")
    try:
        with autograd_forbidden():
            shim_call()
    except Exception as e:
        shim_exc: BaseException = e
    else:
        raise AssertionError(f"shimnn did not raise; torch raised {ref_exc!r}")
    assert type(shim_exc) is type(ref_exc), f"shimnn raised {shim_exc!r}, torch {ref_exc!r}"
    return ref_exc, shim_exc


def check_function(f: Callable[..., Any], *inputs: torch.Tensor, seed: int = 0,
                   requires_grad: Sequence[bool] | None = None) -> None:
    """``f`` applied to the same inputs under torch (leaves that require grad) and under
    shimnn (the leaves as shimnn Parameters, so every torch call in ``f`` reaches shimnn's
    ops): same output, same input gradients, bit for bit, with a random upstream gradient."""
    if requires_grad is None:
        requires_grad = [t.dtype.is_floating_point for t in inputs]
    ref_in = _inputs(inputs, requires_grad)
    shim_in = [shimnn.Parameter(t.detach().clone(), requires_grad=rg) if rg else t.clone()
               for t, rg in zip(inputs, requires_grad)]
    ref_out = f(*ref_in)
    grad = random_like(ref_out, seed)
    ref_out.backward(grad)
    with autograd_forbidden():
        shim_out = f(*shim_in)
        assert_no_autograd_graph(shim_out)
        shim_out.backward(grad.clone())
    assert_same(shim_out, ref_out, "output")
    for i, (a, b) in enumerate(zip(shim_in, ref_in)):
        assert_same(a.grad, b.grad, f"grad of input {i}")


def assert_error_like(ref: BaseException, shim: BaseException, module: str | None = None) -> None:
    """Same exception type, and torch's message kept whole; a module's forward prefixes it with
    the module and its inputs (``module`` names the class expected in that prefix)."""
    assert type(shim) is type(ref), f"{type(shim).__name__} vs {type(ref).__name__}"
    assert str(shim).endswith(str(ref)), f"{shim!s} does not end with torch's {ref!s}"
    if module is not None:
        assert str(shim).startswith(module), f"{shim!s} does not name {module}"


def reraise(exc: BaseException) -> Callable[[], None]:
    """A call that raises ``exc`` again (to compare a recorded exception with check_raises_like)."""

    def call() -> None:
        raise exc

    return call
