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

PINNED_TORCH = "2.13.0"  # requirements-dev.txt; other versions: `make compat TORCH=...`


def _header() -> str:
    note = "" if torch.__version__.split("+")[0] == PINNED_TORCH else (
        f" (not the pinned {PINNED_TORCH}: README's torch versions table says which releases "
        "the suite passed on)")
    return f"shimnn {shimnn.__version__}, torch {torch.__version__}{note}"


def pytest_report_header(config: Any) -> str:
    return _header()


def pytest_sessionstart(session: Any) -> None:
    """``-q`` (pyproject's addopts) hides the report header: print the versions anyway."""
    config = session.config
    if config.get_verbosity() < 0:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(_header())


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
