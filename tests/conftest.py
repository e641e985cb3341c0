"""Shared fixtures: torch is the oracle, and torch.autograd must never run inside shimnn.

The helpers are shimnn's public ones (:mod:`shimnn.testing`), under the names this suite has
always used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch._dynamo  # noqa: F401  (imported lazily by torch.optim; never under autograd_forbidden)

import shimnn
from shimnn.testing import (
    AutogradCalled,
    assert_bitwise_equal,
    assert_no_autograd,
    assert_no_autograd_graph,
)
from shimnn.testing import torch_grad_fn as c_grad_fn

__all__ = ["AutogradCalled", "assert_no_autograd_graph", "assert_same", "autograd_forbidden",
           "c_grad_fn"]

VERIFIED_TORCH = "2.13.0"


def pytest_report_header(config: Any) -> str:
    note = "" if torch.__version__.split("+")[0] == VERIFIED_TORCH else (
        f" (bit-identity was proven on torch {VERIFIED_TORCH}: a failure here may mean this "
        "torch changed a kernel)")
    return f"shimnn {shimnn.__version__}, torch {torch.__version__}{note}"


@contextlib.contextmanager
def autograd_forbidden(engine_only: bool = False) -> Iterator[None]:
    """:func:`shimnn.testing.assert_no_autograd`: every run of torch's autograd engine in the
    block raises. ``torch.autograd.grad`` / ``backward`` stay callable: on shimnn tensors they
    run shimnn's engine, on anything torch recorded they reach torch's engine and raise
    (``engine_only`` is accepted for the callers written when it chose between the two)."""
    with assert_no_autograd():
        yield


@pytest.fixture
def no_autograd() -> Any:
    return autograd_forbidden


def assert_same(shim: Any, ref: Any, what: str = "") -> None:
    """Bit-identical: same dtype, shape and bits (``-0.0`` is not ``0.0``; NaNs only with the
    same bits), or both None. :func:`shimnn.testing.assert_bitwise_equal`."""
    assert_bitwise_equal(shim, ref, what or "tensor")
