"""Parity of each module, value and gradient, against torch on the same inputs and weights."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import shimnn
from conftest import assert_same, autograd_forbidden
from parity import (
    assert_error_like,
    check_module,
    check_raises_like,
    check_same_outcome,
    random_like,
    twin_modules,
)

DTYPES = [torch.float32, torch.float64]


def _input(shape: tuple[int, ...], dtype: torch.dtype, seed: int, layout: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if layout == "transposed" and len(shape) >= 2:
        # Same shape, column-major / permuted strides: exercises torch's layout-dependent paths.
        x = torch.randn(tuple(reversed(shape)), generator=g, dtype=dtype)
        return x.permute(*reversed(range(len(shape))))
    if layout == "strided" and len(shape) >= 1:
        x = torch.randn((*shape[:-1], shape[-1] * 2), generator=g, dtype=dtype)
        return x[..., ::2]
    return torch.randn(shape, generator=g, dtype=dtype)


@settings(max_examples=150, deadline=None)
@given(
    in_features=st.integers(1, 6),
    out_features=st.integers(1, 5),
    batch=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    bias=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    layout=st.sampled_from(["contiguous", "transposed", "strided"]),
    input_grad=st.booleans(),
    weight_grad=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_matches_torch(in_features: int, out_features: int, batch: list[int], bias: bool,
                              dtype: torch.dtype, layout: str, input_grad: bool,
                              weight_grad: bool, seed: int) -> None:
    ref, shim = twin_modules(
        lambda nn: nn.Linear(in_features, out_features, bias=bias, dtype=dtype), seed)
    for m in (ref, shim):
        m.weight.requires_grad_(weight_grad)
    x = _input((*batch, in_features), dtype, seed, layout)
    check_module(ref, shim, [x], [input_grad], seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (50, 2), (0, 3), (4, 5, 3), (2, 3, 4, 3), (1, 1)])
def test_linear_shapes(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    in_features = shape[-1]
    ref, shim = twin_modules(lambda nn: nn.Linear(in_features, 6, dtype=dtype))
    check_module(ref, shim, [_input(shape, dtype, 1, "contiguous")])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inplace", [False, True])
def test_relu_edges(dtype: torch.dtype, inplace: bool) -> None:
    # Exactly 0 and -0.0 (threshold_backward writes +0.0 there), infinities, NaN.
    x = torch.tensor([[-1.0, -0.0, 0.0, 1e-30, 2.0], [float("inf"), -float("inf"),
                      float("nan"), -3.0, 0.5]], dtype=dtype)
    ref, shim = twin_modules(lambda nn: nn.Sequential(nn.Linear(5, 5, dtype=dtype),
                                                      nn.ReLU(inplace=inplace)))
    with torch.no_grad():  # make the linear layer an identity so the edge values reach ReLU
        for m in (ref, shim):
            m[0].weight.copy_(torch.eye(5, dtype=dtype))
            m[0].bias.zero_()
    check_module(ref, shim, [x])
    ref_relu, shim_relu = torch.nn.ReLU(), shimnn.ReLU()
    check_module(ref_relu, shim_relu, [x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_edges(dtype: torch.dtype) -> None:
    x = torch.tensor([-300.0, -20.0, -1e-8, -0.0, 0.0, 1e-8, 0.7, 20.0, 300.0,
                      float("inf"), float("nan")], dtype=dtype)
    check_module(torch.nn.Tanh(), shimnn.Tanh(), [x])
    check_module(torch.nn.Tanh(), shimnn.Tanh(), [torch.randn(64, 33, dtype=dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shapes", [((5, 3), (5, 3)), ((), ()), ((0, 2), (0, 2)), ((7,), (7,)),
                                    ((4, 1), (4,)), ((3,), (2, 3)), ((2, 1, 3), (4, 1))])
def test_mse_loss(dtype: torch.dtype, reduction: str, shapes: tuple[tuple[int, ...], ...]) -> None:
    x = torch.randn(shapes[0], dtype=dtype)
    y = torch.randn(shapes[1], dtype=dtype)
    with warnings.catch_warnings(record=True) as ref_w:
        warnings.simplefilter("always")
        torch.nn.functional.mse_loss(x, y)
    with warnings.catch_warnings(record=True) as shim_w:
        warnings.simplefilter("always")
        shimnn.functional.mse_loss(x, y)
    assert [str(w.message) for w in shim_w] == [str(w.message) for w in ref_w]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rg in ([True, False], [True, True], [False, True]):
            check_module(torch.nn.MSELoss(reduction=reduction),
                         shimnn.MSELoss(reduction=reduction), [x, y], rg)


def test_mse_loss_legacy_arguments() -> None:
    for size_average, reduce in [(None, False), (False, None), (True, True), (False, True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = torch.nn.MSELoss(size_average=size_average, reduce=reduce)
            shim = shimnn.MSELoss(size_average=size_average, reduce=reduce)
        assert shim.reduction == ref.reduction
        check_module(ref, shim, [torch.randn(4, 2), torch.randn(4, 2)])


def test_mse_loss_invalid_reduction() -> None:
    x, y = torch.randn(3), torch.randn(3)
    ref, shim = check_raises_like(lambda: torch.nn.MSELoss(reduction="avg")(x, y),
                                  lambda: shimnn.MSELoss(reduction="avg")(x, y))
    assert_error_like(ref, shim, "MSELoss()")


@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_network_step(dtype: torch.dtype) -> None:
    def make(nn):  # type: ignore[no-untyped-def]
        return nn.Sequential(nn.Linear(2, 25), nn.ReLU(), nn.Linear(25, 25), nn.ReLU(),
                             nn.Linear(25, 25), nn.ReLU(), nn.Linear(25, 1), nn.Tanh()).to(dtype)

    ref, shim = twin_modules(make, seed=3)
    check_module(ref, shim, [torch.rand(50, 2, dtype=dtype)], [True])


def test_linear_bad_shapes_raise_like_torch() -> None:
    ref, shim = twin_modules(lambda nn: nn.Linear(3, 2))
    for bad in (torch.randn(4, 5), torch.randn(3, 1), torch.randn(()), torch.randn(4, 3).double(),
                torch.ones(4, 3, dtype=torch.long)):
        for grad_mode in (True, False):
            with torch.set_grad_enabled(grad_mode):
                check_raises_like(lambda: ref(bad), lambda: shim(bad))


def test_no_grad_and_inference_mode_record_nothing() -> None:
    shim = shimnn.Sequential(shimnn.Linear(3, 4), shimnn.Tanh())
    x = torch.randn(2, 3)
    with autograd_forbidden():
        for ctx in (torch.no_grad, torch.inference_mode):
            with ctx():
                out = shim(x)
            assert out.shim_fn is None and not out.requires_grad
            with pytest.raises(RuntimeError, match="does not require grad"):
                out.sum().backward()


def test_linear_init_consumes_rng_like_torch() -> None:
    for sizes in [(2, 25), (25, 1), (0, 3), (3, 0), (1, 1)]:
        twin_modules(lambda nn: nn.Sequential(nn.Linear(*sizes), nn.Linear(5, 4)))
        torch.manual_seed(0)
        torch.nn.Linear(*sizes)
        a = torch.rand(5)
        torch.manual_seed(0)
        shimnn.Linear(*sizes)
        assert_same(torch.rand(5), a, "RNG stream after init")


def test_weights_random_gradient_nonsymmetric() -> None:
    # A non-square layer with a random upstream gradient catches transposed formulas.
    ref, shim = twin_modules(lambda nn: nn.Linear(7, 3))
    x = torch.randn(5, 7)
    check_module(ref, shim, [x])
    g = random_like(torch.empty(5, 3), 1)
    assert math.isfinite(float(g.sum()))


def test_mse_loss_mixed_dtypes() -> None:
    """torch 2.13 promotes mixed dtypes in mse_loss_backward, 2.11 raises there: shimnn calls
    the same kernel, so it does what the installed torch does (compared when both run)."""
    x32, y64 = torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64)

    def backward(loss: Any, args: list[torch.Tensor]) -> list[Any]:
        leaves = [a.clone().requires_grad_() for a in args]
        loss(*leaves).backward()
        return [leaf.grad for leaf in leaves]

    for args in ([x32, y64], [y64, x32], [x32, y64[0]]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, _ = check_same_outcome(lambda: backward(torch.nn.MSELoss(), args),
                                        lambda: backward(shimnn.MSELoss(), args))
            if not isinstance(ref, BaseException):
                check_module(torch.nn.MSELoss(), shimnn.MSELoss(), args, [True, True])


def test_errors_name_the_module_and_its_inputs() -> None:
    ref, shim = twin_modules(lambda nn: nn.Sequential(nn.Linear(3, 4), nn.ReLU(),
                                                      nn.Linear(5, 1)))
    x = torch.randn(2, 3)
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode):
            r, s = check_raises_like(lambda: ref(x), lambda: shim(x))
        # the failing layer is named, with the shape it received
        assert_error_like(r, s, "Linear(in_features=5, out_features=1, bias=True) got input "
                                "shape (2, 4) float32")
    r, s = check_raises_like(lambda: torch.nn.MSELoss()(torch.randn(2, 3), torch.randn(4, 3)),
                             lambda: shimnn.MSELoss()(torch.randn(2, 3), torch.randn(4, 3)))
    assert_error_like(r, s, "MSELoss() got input shape (2, 3) float32, target shape (4, 3)")
