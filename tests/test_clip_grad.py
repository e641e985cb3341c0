"""``shimnn.utils.clip_grad_norm_`` (``nn.utils.clip_grad_norm_`` after ``import shimnn as nn``)
against ``torch.nn.utils.clip_grad_norm_``: the same total norm and clipped gradients, bit for
bit, on the compiled path and on torch's own (the cases it does not take)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import shimnn
from tests.conftest import assert_same, autograd_forbidden


def _models(dtype: torch.dtype, seed: int = 0) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    ref = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    torch.manual_seed(seed)
    shim = shimnn.Sequential(shimnn.Linear(8, 16), shimnn.Tanh(), shimnn.Linear(16, 2))
    return ref.to(dtype), shim.to(dtype)


def _backward(ref: Any, shim: Any, x: torch.Tensor, upstream: torch.Tensor) -> None:
    (ref(x) * upstream).sum().backward()
    with autograd_forbidden():
        (shim(x) * upstream).sum().backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@given(max_norm=st.sampled_from([1e-3, 0.5, 1e6]), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       batch=st.integers(1, 9))
@settings(max_examples=8, deadline=None)
def test_clip_grad_norm_matches_torch(dtype: torch.dtype, norm_type: float, max_norm: float,
                                      scale: float, batch: int) -> None:
    ref, shim = _models(dtype)
    x = torch.randn(batch, 8, dtype=dtype)
    upstream = torch.randn(batch, 2, dtype=dtype) * scale
    for _ in range(2):  # the second backward accumulates into the clipped gradients
        _backward(ref, shim, x, upstream)
        expected = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm, norm_type)
        with autograd_forbidden():
            got = shimnn.utils.clip_grad_norm_(shim.parameters(), max_norm, norm_type)
        assert_same(got, expected, "total norm")
        for p, q in zip(shim.parameters(), ref.parameters()):
            assert_same(p.grad, q.grad, "clipped gradient")


def test_clip_grad_norm_other_cases_are_torchs() -> None:
    """A single tensor, a missing gradient, mixed dtypes (torch's grouping), foreach=True and
    error_if_nonfinite: torch's results and errors."""
    p = shimnn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    q = torch.nn.Parameter(torch.ones(3))
    q.grad = torch.full((3,), 2.0)
    assert_same(shimnn.utils.clip_grad_norm_(p, 1.0), torch.nn.utils.clip_grad_norm_(q, 1.0))
    assert_same(p.grad, q.grad)
    mixed = [shimnn.Parameter(torch.ones(2)), shimnn.Parameter(torch.ones(2, dtype=torch.float64)),
             shimnn.Parameter(torch.ones(1))]
    ref = [torch.nn.Parameter(t.detach().clone()) for t in mixed]
    for i, (a, b) in enumerate(zip(mixed, ref)):
        if i < 2:
            a.grad = torch.full_like(a, 3.0)
            b.grad = torch.full_like(b, 3.0)
    assert_same(shimnn.utils.clip_grad_norm_(mixed, 0.5, foreach=True),
                torch.nn.utils.clip_grad_norm_(ref, 0.5, foreach=True))
    for a, b in zip(mixed, ref):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert_same(a.grad, b.grad)
    p.grad = torch.tensor([float("inf"), 1.0, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        shimnn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert_same(shimnn.utils.clip_grad_norm_([shimnn.Parameter(torch.ones(1))], 1.0),
                torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.ones(1))], 1.0))


def test_clip_grad_norm_empty_generator_warns_as_torch() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        total = shimnn.utils.clip_grad_norm_((p for p in ()), 1.0)
    assert_same(total, torch.tensor(0.0))
    assert any("empty generator" in str(w.message) for w in caught)


def test_utils_serves_torchs_other_names() -> None:
    assert shimnn.utils.rnn.pack_padded_sequence is torch.nn.utils.rnn.pack_padded_sequence
    assert shimnn.utils.parameters_to_vector is torch.nn.utils.parameters_to_vector
    assert shimnn.utils.clip_grad_value_ is torch.nn.utils.clip_grad_value_


def test_torchs_clip_and_grad_access_on_shimnn_parameters() -> None:
    """torch's own clip_grad_norm_ (it reads and writes ``.grad`` through shimnn's tensor
    function) on shimnn parameters: torch's numbers."""
    ref, shim = _models(torch.float32)
    x, upstream = torch.randn(4, 8), torch.randn(4, 2)
    _backward(ref, shim, x, upstream)
    with autograd_forbidden():
        got = torch.nn.utils.clip_grad_norm_(shim.parameters(), 0.1)
    assert_same(got, torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1))
    for p, q in zip(shim.parameters(), ref.parameters()):
        assert_same(p.grad, q.grad)
        p.grad = None
        assert p.grad is None


def test_compiled_clip_takes_the_common_case() -> None:
    native = shimnn._native.get()
    if native is None:
        pytest.skip("native fast paths not in use")
    ref, shim = _models(torch.float64)
    _backward(ref, shim, torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 2,
                                                                            dtype=torch.float64))
    assert native.clip_grad_norm(list(shim.parameters()), 0.5, 2.0) is not None
    assert native.clip_grad_norm([shimnn.Parameter(torch.ones(1))], 0.5, 2.0) is None  # no grad
