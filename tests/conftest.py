"""Shared fixtures: torch is the oracle, and torch.autograd must never run inside shimnn."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch._dynamo  # noqa: F401  (imported lazily by torch.optim; never under autograd_forbidden)

import shimnn

VERIFIED_TORCH = "2.13.0"


def pytest_report_header(config: Any) -> str:
    note = "" if torch.__version__.split("+")[0] == VERIFIED_TORCH else (
        f" (bit-identity was proven on torch {VERIFIED_TORCH}: a failure here may mean this "
        "torch changed a kernel)")
    return f"shimnn {shimnn.__version__}, torch {torch.__version__}{note}"


class AutogradCalled(AssertionError):
    pass


@contextlib.contextmanager
def autograd_forbidden(engine_only: bool = False) -> Iterator[None]:
    """Make every entry into torch's autograd engine raise while the block runs (with
    ``engine_only``, ``torch.autograd.grad``/``backward`` stay callable: on shimnn tensors they
    run shimnn's engine; only torch's own engine is forbidden)."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AutogradCalled("torch.autograd was called inside a shimnn run")

    targets = [] if engine_only else [
        (torch.autograd, "backward"),
        (torch.autograd, "grad"),
    ]
    targets += [
        (torch.autograd.graph, "_engine_run_backward"),
        (torch.autograd.__init__ if hasattr(torch.autograd, "__init__") else torch.autograd,
         "_engine_run_backward"),
    ]
    saved = []
    for module, name in targets:
        if hasattr(module, name):
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, forbidden)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


@pytest.fixture
def no_autograd() -> Any:
    return autograd_forbidden


def c_grad_fn(t: torch.Tensor) -> Any:
    """The grad_fn torch itself sees (bypassing TrackedTensor's property)."""
    return torch._C.TensorBase.grad_fn.__get__(t)  # type: ignore[attr-defined]


def assert_no_autograd_graph(*tensors: Any) -> None:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            assert c_grad_fn(t) is None, f"torch recorded a graph: {c_grad_fn(t)}"


def assert_same(shim: Any, ref: Any, what: str = "") -> None:
    """Bit-identical: same dtype, shape and bits (NaNs equal), or both None."""
    if ref is None or shim is None:
        assert shim is None and ref is None, f"{what}: {shim!r} vs {ref!r}"
        return
    with torch._C.DisableTorchFunctionSubclass():
        assert shim.dtype == ref.dtype, f"{what}: dtype {shim.dtype} vs {ref.dtype}"
        assert shim.shape == ref.shape, f"{what}: shape {shim.shape} vs {ref.shape}"
        a = shim.detach().contiguous().view(-1)
        b = ref.detach().contiguous().view(-1)
        if a.dtype.is_floating_point:
            bits = {torch.float32: torch.int32, torch.float64: torch.int64,
                    torch.float16: torch.int16, torch.bfloat16: torch.int16}[a.dtype]
            same = torch.equal(a.view(bits), b.view(bits)) or (
                torch.equal(torch.isnan(a), torch.isnan(b))
                and torch.equal(a[~torch.isnan(a)].view(bits), b[~torch.isnan(b)].view(bits)))
        else:
            same = torch.equal(a, b)
        if not same:
            diff = (a.double() - b.double()).abs()
            raise AssertionError(
                f"{what}: not bit-identical; max |diff| {diff.max().item():.3g}, "
                f"{int((a != b).sum())} of {a.numel()} elements differ")
