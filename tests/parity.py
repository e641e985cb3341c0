"""The suite's parity helpers, over :func:`shimnn.testing.assert_matches_torch` (one helper).

torch runs with its autograd; shimnn runs with autograd forbidden. Outputs, input gradients and
parameter gradients must be bit-identical; the upstream gradient is random (an all-ones
gradient hides transposition mistakes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

import shimnn
from conftest import assert_same, autograd_forbidden
from shimnn.testing import ParityResult, assert_matches_torch

__all__ = ["assert_error_like", "check_function", "check_module", "check_raises_like",
           "random_like", "reraise", "twin_modules"]


def random_like(t: torch.Tensor, seed: int) -> torch.Tensor:
    """A standard-normal tensor like ``t`` from a generator seeded with ``seed``."""
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


def check_module(
    ref: torch.nn.Module,
    shim: torch.nn.Module,
    args: Sequence[torch.Tensor],
    requires_grad: Sequence[bool] | None = None,
    seed: int = 0,
) -> ParityResult:
    """Forward, then backward of a random gradient, in both; compare everything. shimnn's
    output must be one of shimnn's tracked tensors."""
    result = assert_matches_torch(shim, ref, *args, requires_grad=requires_grad, seed=seed)
    assert isinstance(result.outputs, shimnn.TrackedTensor), type(result.outputs)
    return result


def check_function(f: Callable[..., Any], *inputs: torch.Tensor, seed: int = 0,
                   requires_grad: Sequence[bool] | None = None) -> ParityResult:
    """``f`` applied to the same inputs under torch (leaves that require grad) and under
    shimnn (the leaves as shimnn Parameters, so every torch call in ``f`` reaches shimnn's
    ops): same output, same input gradients, bit for bit, with a random upstream gradient."""
    return assert_matches_torch(f, f, *inputs, requires_grad=requires_grad, seed=seed)


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


def check_same_outcome(torch_call: Callable[[], Any], shim_call: Callable[[], Any]
                       ) -> tuple[Any, Any]:
    """Both calls raise the same exception type with torch's message (kept whole; a module may
    prefix it with its name and inputs), or both return (returns both results). For checks
    whose outcome differs between torch releases: the installed torch decides."""
    try:
        ref = torch_call()
    except Exception as e:
        ref_exc, shim_exc = check_raises_like(reraise(e), shim_call)
        assert str(shim_exc).endswith(str(ref_exc)), f"{shim_exc!s} vs torch's {ref_exc!s}"
        return ref_exc, shim_exc
    with autograd_forbidden():
        return ref, shim_call()


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
