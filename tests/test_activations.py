"""Activations, softmax, dropout and init against torch: values, gradients, RNG, errors, repr."""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import shimnn
import shimnn.functional as F
import shimnn.init
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from parity import assert_error_like, check_module, check_raises_like, random_like, twin_modules
from shimnn._chain import CHAIN_STEPS

DTYPES = [torch.float32, torch.float64]
INF, NAN = float("inf"), float("nan")

# Values at every kink and threshold used below, extremes, signed zeros, inf and NaN.
EDGES = [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 2.5, 3.0, -3.0, 5.0, 6.0,
         -6.0, 6.5, 10.0, 20.0, -20.0, 40.0, 100.0, -100.0, 1e4, -1e4, INF, -INF, NAN]


def _edges(dtype: torch.dtype, extra: tuple[float, ...] = ()) -> torch.Tensor:
    values = EDGES + list(extra)
    t = torch.tensor(values, dtype=dtype)
    # Each float next to each value too (both sides of every kink).
    up = torch.nextafter(t, torch.full_like(t, INF))
    down = torch.nextafter(t, torch.full_like(t, -INF))
    return torch.cat([t, up, down])


def _randn(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0, scale: float = 3.0
           ) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype) * scale


class Fn(torch.nn.Module):
    """A function as a module, so that parity.check_module can run functional forms."""

    def __init__(self, f: Callable[..., Any]) -> None:
        super().__init__()
        self.f = f

    def forward(self, *args: Any) -> Any:
        return self.f(*args)


def check_fn(torch_f: Callable[..., Any], shim_f: Callable[..., Any], *inputs: torch.Tensor,
             seed: int = 0) -> tuple[Any, Any]:
    """torch_f on leaves that require grad; shim_f on the same values as shimnn Parameters
    (so torch callables in shim_f reach shimnn's ops). Same output and gradients, bit for bit."""
    ref_in = [t.detach().clone().requires_grad_() for t in inputs]
    shim_in = [shimnn.Parameter(t.detach().clone()) for t in inputs]
    ref_out = torch_f(*ref_in)
    grad = random_like(ref_out, seed)
    ref_out.backward(grad)
    with autograd_forbidden():
        shim_out = shim_f(*shim_in)
        assert isinstance(shim_out, shimnn.TrackedTensor)
        assert_no_autograd_graph(shim_out)
        shim_out.backward(grad.clone())
    assert_same(shim_out, ref_out, "output")
    for i, (a, b) in enumerate(zip(shim_in, ref_in)):
        assert_same(a.grad, b.grad, f"grad of input {i}")
    return ref_out, shim_out


# (module name, constructor kwargs, functional name, functional kwargs)
ELEMENTWISE: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("Sigmoid", {}, "sigmoid", {}),
    ("LeakyReLU", {}, "leaky_relu", {}),
    ("LeakyReLU", {"negative_slope": 0.2}, "leaky_relu", {"negative_slope": 0.2}),
    ("LeakyReLU", {"negative_slope": -0.5}, "leaky_relu", {"negative_slope": -0.5}),
    ("LeakyReLU", {"negative_slope": 0.0}, "leaky_relu", {"negative_slope": 0.0}),
    ("LeakyReLU", {"negative_slope": 3.0}, "leaky_relu", {"negative_slope": 3.0}),
    ("ELU", {}, "elu", {}),
    ("ELU", {"alpha": 0.3}, "elu", {"alpha": 0.3}),
    ("ELU", {"alpha": 2.5}, "elu", {"alpha": 2.5}),
    ("ELU", {"alpha": -1.0}, "elu", {"alpha": -1.0}),
    ("ELU", {"alpha": 0.0}, "elu", {"alpha": 0.0}),
    ("GELU", {}, "gelu", {}),
    ("GELU", {"approximate": "tanh"}, "gelu", {"approximate": "tanh"}),
    ("SiLU", {}, "silu", {}),
    ("Softplus", {}, "softplus", {}),
    ("Softplus", {"beta": 2.0}, "softplus", {"beta": 2.0}),
    ("Softplus", {"beta": 2.0, "threshold": 5.0}, "softplus", {"beta": 2.0, "threshold": 5.0}),
    ("Softplus", {"beta": 0.5, "threshold": 1.0}, "softplus", {"beta": 0.5, "threshold": 1.0}),
    ("Softplus", {"beta": -1.0}, "softplus", {"beta": -1.0}),
    ("Softplus", {"threshold": 0.0}, "softplus", {"threshold": 0.0}),
    ("Hardtanh", {}, "hardtanh", {}),
    ("Hardtanh", {"min_val": -2.0, "max_val": 3.0}, "hardtanh", {"min_val": -2.0, "max_val": 3.0}),
    ("Hardtanh", {"min_val": 0.0, "max_val": 0.5}, "hardtanh", {"min_val": 0.0, "max_val": 0.5}),
    ("Hardtanh", {"min_val": -6, "max_val": 6}, "hardtanh", {"min_val": -6, "max_val": 6}),
    ("ReLU6", {}, "relu6", {}),
]
INPLACE: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("LeakyReLU", {"negative_slope": 0.1}, "leaky_relu", {"negative_slope": 0.1}),
    ("LeakyReLU", {"negative_slope": 0.0}, "leaky_relu", {"negative_slope": 0.0}),
    ("ELU", {}, "elu", {}),
    ("ELU", {"alpha": 0.7}, "elu", {"alpha": 0.7}),
    ("SiLU", {}, "silu", {}),
    ("Hardtanh", {}, "hardtanh", {}),
    ("Hardtanh", {"min_val": -2.0, "max_val": 2.5}, "hardtanh", {"min_val": -2.0, "max_val": 2.5}),
    ("ReLU6", {}, "relu6", {}),
]
SHAPES = [(), (0,), (7,), (3, 4), (2, 3, 4), (2, 0, 3), (1, 1, 1, 5)]


def _ids(cases: list[tuple[str, dict[str, Any], str, dict[str, Any]]]) -> list[str]:
    return [f"{m}{kw}" for m, kw, _, _ in cases]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ELEMENTWISE, ids=_ids(ELEMENTWISE))
def test_elementwise_edges(case: tuple[str, dict[str, Any], str, dict[str, Any]],
                           dtype: torch.dtype) -> None:
    name, kwargs, fname, fkwargs = case
    x = _edges(dtype)
    ref_m, shim_m = getattr(torch.nn, name)(**kwargs), getattr(shimnn, name)(**kwargs)
    check_module(ref_m, shim_m, [x])
    tf, sf = getattr(TF, fname), getattr(F, fname)
    check_module(Fn(lambda t: tf(t, **fkwargs)), Fn(lambda t: sf(t, **fkwargs)), [x], seed=1)
    # Reached through torch's own callables on a shimnn parameter.
    check_fn(lambda t: tf(t, **fkwargs), lambda t: tf(t, **fkwargs), x, seed=2)
    # Non-tracked input: a value only.
    with autograd_forbidden():
        out = sf(x, **fkwargs)
    assert isinstance(out, shimnn.TrackedTensor) and out.shim_fn is None
    assert_same(out, tf(x, **fkwargs), "value without grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", ELEMENTWISE[::3], ids=_ids(ELEMENTWISE[::3]))
def test_elementwise_shapes(case: tuple[str, dict[str, Any], str, dict[str, Any]],
                            shape: tuple[int, ...], dtype: torch.dtype) -> None:
    name, kwargs, _, _ = case
    x = _randn(shape, dtype)
    check_module(getattr(torch.nn, name)(**kwargs), getattr(shimnn, name)(**kwargs), [x])
    # Non-contiguous input.
    if len(shape) >= 2:
        check_module(getattr(torch.nn, name)(**kwargs), getattr(shimnn, name)(**kwargs),
                     [_randn(tuple(reversed(shape)), dtype).mT], seed=3)


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(ELEMENTWISE), dtype=st.sampled_from(DTYPES),
       shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
       scale=st.sampled_from([1e-3, 1.0, 10.0, 1e3]), seed=st.integers(0, 2**16))
def test_elementwise_random(case: tuple[str, dict[str, Any], str, dict[str, Any]],
                            dtype: torch.dtype, shape: list[int], scale: float,
                            seed: int) -> None:
    name, kwargs, _, _ = case
    x = _randn(tuple(shape), dtype, seed, scale)
    check_module(getattr(torch.nn, name)(**kwargs), getattr(shimnn, name)(**kwargs), [x],
                 seed=seed)


def test_softplus_at_threshold() -> None:
    # beta * x == threshold exactly, and the floats on either side, for several beta.
    for dtype in DTYPES:
        for beta, threshold in [(1.0, 20.0), (2.0, 5.0), (0.5, 1.0), (4.0, 3.0)]:
            t = torch.tensor([threshold / beta], dtype=dtype)
            x = torch.cat([t, torch.nextafter(t, t + 1), torch.nextafter(t, t - 1)])
            check_module(torch.nn.Softplus(beta, threshold), shimnn.Softplus(beta, threshold),
                         [x])


# ---------------------------------------------------------------------------------------------
# in-place variants
# ---------------------------------------------------------------------------------------------


def _inplace_module(nn: Any, name: str, kwargs: dict[str, Any]) -> Any:
    return getattr(nn, name)(**kwargs, inplace=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", INPLACE, ids=_ids(INPLACE))
def test_inplace_after_linear(case: tuple[str, dict[str, Any], str, dict[str, Any]],
                              dtype: torch.dtype) -> None:
    name, kwargs, _, _ = case

    def make(nn: Any) -> Any:
        return nn.Sequential(nn.Linear(5, 6), _inplace_module(nn, name, kwargs),
                             nn.Linear(6, 3), _inplace_module(nn, name, kwargs)).to(dtype)

    ref, shim = twin_modules(make, seed=4)
    with torch.no_grad():  # large weights: inputs on both sides of every kink
        for m in (ref, shim):
            m[0].weight.mul_(8)
    x = _randn((9, 5), dtype, seed=5)
    check_module(ref, shim, [x])  # fused chain
    check_module(ref, shim, [x[None]])  # fused chain, a 3-d input

    class Net(torch.nn.Module):  # the same layers, called one by one (not fused)
        def __init__(self, seq: Any) -> None:
            super().__init__()
            self.seq = seq

        def forward(self, t: torch.Tensor) -> Any:
            for m in self.seq:
                t = m(t)
            return t

    check_module(Net(ref), Net(shim), [x], seed=6)
    with torch.no_grad():
        assert_same(shim(x), ref(x), "no_grad chain")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", INPLACE, ids=_ids(INPLACE))
def test_inplace_functional_edges(case: tuple[str, dict[str, Any], str, dict[str, Any]],
                                  dtype: torch.dtype) -> None:
    _, _, fname, fkwargs = case
    tf, sf = getattr(TF, fname), getattr(F, fname)
    x = _edges(dtype)
    ref_out, shim_out = check_fn(lambda t: tf(t * 1.0, **fkwargs, inplace=True),
                                 lambda t: sf(t * 1.0, **fkwargs, inplace=True), x)
    assert shim_out.shim_fn.name == type(ref_out.grad_fn).__name__
    check_fn(lambda t: tf(t * 1.0, **fkwargs, inplace=True),
             lambda t: tf(t * 1.0, **fkwargs, inplace=True), x, seed=1)


def test_inplace_returns_input_and_rewrites_its_node() -> None:
    x = shimnn.Parameter(torch.randn(4, 3))
    for f in (lambda t: F.leaky_relu_(t, 0.1), lambda t: F.elu_(t), lambda t: F.hardtanh_(t),
              lambda t: F.silu(t, inplace=True), lambda t: F.relu6(t, inplace=True),
              lambda t: torch.sigmoid_(t), lambda t: t.sigmoid_(),
              lambda t: F.dropout(t, 0.5, inplace=True)):
        h = x * 2.0
        node = h.shim_fn
        assert f(h) is h
        assert h.shim_fn is not node and h.shim_fn.inputs[0] is node
    # In-place on a tracked tensor that is used afterwards: the later use differentiates
    # through the in-place op, as in torch.
    check_fn(lambda t: _use_after_inplace(TF, t), lambda t: _use_after_inplace(F, t),
             torch.randn(5, 4) * 3)


def _use_after_inplace(f: Any, t: torch.Tensor) -> torch.Tensor:
    h = t * 2.0
    a = h * 3.0
    f.elu(h, 0.5, inplace=True)
    b = f.hardtanh(h * 1.0, -0.5, 0.5, inplace=True)
    return a + h + b


def test_inplace_on_leaf_raises_like_torch() -> None:
    calls = [
        lambda t: TF.leaky_relu(t, inplace=True), lambda t: TF.leaky_relu_(t),
        lambda t: TF.elu(t, inplace=True), lambda t: TF.elu_(t),
        lambda t: TF.hardtanh(t, inplace=True), lambda t: TF.hardtanh_(t),
        lambda t: TF.relu6(t, inplace=True), lambda t: TF.silu(t, inplace=True),
        lambda t: torch.sigmoid_(t), lambda t: t.sigmoid_(),
        lambda t: TF.dropout(t, 0.5, inplace=True), lambda t: TF.dropout(t, 1.0, inplace=True),
    ]
    for call in calls:
        x = torch.randn(3)
        ref, shim = check_raises_like(lambda: call(x.clone().requires_grad_()),
                                      lambda: call(shimnn.Parameter(x.clone())))
        assert str(shim) == str(ref)
    shim_calls = [lambda t: F.leaky_relu_(t), lambda t: F.elu(t, inplace=True),
                  lambda t: F.hardtanh_(t), lambda t: F.silu(t, inplace=True)]
    for call in shim_calls:  # plain leaves given to shimnn's functions directly
        with pytest.raises(RuntimeError, match="leaf Variable"):
            call(torch.randn(3, requires_grad=True))
    # Without a gradient to record, in-place just overwrites (and returns a tracked tensor).
    x = torch.randn(6)
    y = x.clone()
    with autograd_forbidden():
        out = F.elu_(y, 0.5)
    assert isinstance(out, shimnn.TrackedTensor)
    assert_same(y, TF.elu(x, 0.5), "in-place value")
    p = shimnn.Parameter(x.clone())
    with torch.no_grad():
        F.hardtanh_(p, -0.2, 0.2)
    assert_same(p, TF.hardtanh(x, -0.2, 0.2), "in-place under no_grad")


def test_inplace_negative_slope_raises_at_backward_like_torch() -> None:
    x = torch.randn(6, 3)
    for name, kwargs in [("LeakyReLU", {"negative_slope": -0.1}), ("ELU", {"alpha": -1.0})]:
        def make(nn: Any) -> Any:
            return nn.Sequential(nn.Linear(3, 4), _inplace_module(nn, name, kwargs))

        ref, shim = twin_modules(make)
        for fused in (True, False):
            def run(m: Any, fused: bool = fused) -> None:
                out = m(x) if fused else m[1](m[0](x))
                out.sum().backward()

            r, s = check_raises_like(lambda: run(ref), lambda: run(shim))
            assert str(s) == str(r)


def test_inplace_after_saved_result_raises_like_torch() -> None:
    # Sigmoid saves its result; overwriting it in place makes torch's backward raise, called
    # layer by layer or as a Sequential (which then does not fuse).
    x = torch.randn(4, 3)

    def run(nn: Any, fused: bool) -> None:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(3, 3), nn.Sigmoid(), nn.LeakyReLU(0.1, inplace=True))
        out = m(x) if fused else m[2](m[1](m[0](x)))
        out.sum().backward()

    for fused in (False, True):
        check_raises_like(lambda: run(torch.nn, fused), lambda: run(shimnn, fused))


# ---------------------------------------------------------------------------------------------
# softmax, log_softmax
# ---------------------------------------------------------------------------------------------

SOFTMAX_SHAPES = [(), (1,), (5,), (3, 4), (2, 3, 4), (2, 0, 3), (0,), (1, 2, 1, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_every_dim(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    module = {"softmax": "Softmax", "log_softmax": "LogSoftmax"}[name]
    x = _randn(shape, dtype)
    ndim = max(len(shape), 1)
    tf, sf = getattr(TF, name), getattr(F, name)
    for dim in range(-ndim, ndim):
        check_module(getattr(torch.nn, module)(dim), getattr(shimnn, module)(dim), [x], seed=dim)
        check_module(Fn(lambda t: tf(t, dim)), Fn(lambda t: sf(t, dim)), [x], seed=dim + 7)
    for dim in {0, -1}:  # torch's callables on a shimnn parameter
        check_fn(lambda t: getattr(t, name)(dim), lambda t: getattr(t, name)(dim), x)
        check_fn(lambda t: getattr(torch, name)(t, dim=dim),
                 lambda t: getattr(torch, name)(t, dim=dim), x, seed=1)
    if len(shape) >= 2:
        xt = _randn(tuple(reversed(shape)), dtype).mT  # non-contiguous
        check_module(getattr(torch.nn, module)(-1), getattr(shimnn, module)(-1), [xt])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_edge_values(name: str) -> None:
    for dtype in DTYPES:
        rows = torch.tensor([
            [0.0, -0.0, 1.0, -1.0],
            [100.0, -100.0, 1e4, -1e4],
            [-INF, 0.0, 1.0, -INF],
            [-INF, -INF, -INF, -INF],
            [INF, 0.0, 1.0, 2.0],
            [NAN, 0.0, 1.0, 2.0],
            [1e4, 1e4, 1e4, 1e4],
            [-1e4, 3.0, 88.0, 89.0],
        ], dtype=dtype)
        for dim in (0, 1, -1):
            check_module(Fn(lambda t: getattr(TF, name)(t, dim)),
                         Fn(lambda t: getattr(F, name)(t, dim)), [rows], seed=dim)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_dtype_argument(name: str) -> None:
    tf, sf = getattr(TF, name), getattr(F, name)
    for in_dtype, out_dtype in [(torch.float32, torch.float64), (torch.float64, torch.float32),
                                (torch.float32, torch.float32)]:
        x = _randn((4, 5), in_dtype)
        check_module(Fn(lambda t: tf(t, 1, dtype=out_dtype)),
                     Fn(lambda t: sf(t, 1, dtype=out_dtype)), [x])
        check_fn(lambda t: getattr(torch, name)(t, 0, dtype=out_dtype),
                 lambda t: getattr(torch, name)(t, 0, dtype=out_dtype), x)
        check_fn(lambda t: getattr(t, name)(-1, dtype=out_dtype),
                 lambda t: getattr(t, name)(-1, dtype=out_dtype), x, seed=2)
        # After another op: the gradient it receives is cast back to the input's dtype.
        check_fn(lambda t: tf(t * 3.0, 1, dtype=out_dtype).sum(0) * 1.0,
                 lambda t: sf(t * 3.0, 1, dtype=out_dtype).sum(0) * 1.0, x, seed=3)


def _warned(call: Callable[[], Any]) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return list(caught)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_implicit_dim_warns_like_torch(name: str) -> None:
    module = {"softmax": "Softmax", "log_softmax": "LogSoftmax"}[name]
    for shape in [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 2)]:
        x = _randn(shape, torch.float64)
        tf, sf = getattr(TF, name), getattr(F, name)
        ref_w = _warned(lambda: tf(x))
        shim_w = _warned(lambda: sf(x))
        assert len(ref_w) == len(shim_w) == 1
        assert str(shim_w[0].message) == str(ref_w[0].message)
        assert shim_w[0].category is ref_w[0].category
        assert shim_w[0].filename == ref_w[0].filename == __file__  # points at the caller
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_module(Fn(lambda t: tf(t)), Fn(lambda t: sf(t)), [x])
        # The module (dim=None), alone and in a fused chain: warned from the same place.
        ref_m, shim_m = getattr(torch.nn, module)(), getattr(shimnn, module)()
        ref_w, shim_w = _warned(lambda: ref_m(x)), _warned(lambda: shim_m(x))
        assert (shim_w[0].filename, shim_w[0].lineno) == (ref_w[0].filename, ref_w[0].lineno)
        if len(shape) >= 1:
            ref_s, shim_s = twin_modules(lambda nn: nn.Sequential(
                nn.Linear(shape[-1], shape[-1]).double(), getattr(nn, module)()))
            for grad_mode in (True, False):
                with torch.set_grad_enabled(grad_mode):
                    ref_w, shim_w = _warned(lambda: ref_s(x)), _warned(lambda: shim_s(x))
                assert len(shim_w) == 1
                assert (shim_w[0].filename, shim_w[0].lineno) == (
                    ref_w[0].filename, ref_w[0].lineno)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check_module(ref_s, shim_s, [x])
        # torch.nn.functional's own function on a shimnn parameter: still the caller's line.
        p = shimnn.Parameter(x.clone())
        ref_w, shim_w = _warned(lambda: tf(x)), _warned(lambda: tf(p))
        assert (shim_w[0].filename, shim_w[0].lineno) == (ref_w[0].filename, ref_w[0].lineno)
        assert shim_w[0].filename == __file__


def test_softmax_errors_like_torch() -> None:
    x = torch.randn(3, 4)
    p = shimnn.Parameter(x.clone())
    for ref_call, shim_call in [
        (lambda: TF.softmax(x, 2), lambda: F.softmax(p, 2)),
        (lambda: TF.log_softmax(x, -3), lambda: F.log_softmax(p, -3)),
        (lambda: torch.softmax(x, None), lambda: torch.softmax(p, None)),
        (lambda: x.log_softmax(None), lambda: p.log_softmax(None)),
        (lambda: TF.softmax(x.long(), 0), lambda: F.softmax(x.long(), 0)),
        (lambda: TF.softmax(x, 0, dtype=torch.long), lambda: F.softmax(p, 0, dtype=torch.long)),
    ]:
        check_raises_like(ref_call, shim_call)


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------


def _dropout_both(x: torch.Tensor, seed: int, torch_f: Callable[..., Any],
                  shim_f: Callable[..., Any], parameter: bool = False) -> None:
    """Same seed: same output, gradient, and generator state afterwards. shimnn gets a plain
    leaf, or a shimnn Parameter (so that torch's callables reach shimnn)."""
    torch.manual_seed(seed)
    ref_in = x.detach().clone().requires_grad_()
    ref_out = torch_f(ref_in)
    ref_state = torch.get_rng_state()
    grad = random_like(ref_out, seed)
    ref_out.backward(grad)
    torch.manual_seed(seed)
    shim_in = (shimnn.Parameter(x.detach().clone()) if parameter
               else x.detach().clone().requires_grad_())
    with autograd_forbidden():
        shim_out = shim_f(shim_in)
        shim_state = torch.get_rng_state()
        if shim_out is shim_in:  # the identity on a leaf: torch returns the leaf itself too
            assert ref_out is ref_in
            assert torch.equal(shim_state, ref_state), "RNG state after dropout"
            return
        assert isinstance(shim_out, shimnn.TrackedTensor)
        shim_out.backward(grad.clone())
    assert_same(shim_out, ref_out, "output")
    assert_same(shim_in.grad, ref_in.grad, "grad")
    assert torch.equal(shim_state, ref_state), "RNG state after dropout"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 1e-3, 0.15, 0.2, 0.45, 0.5, 0.9, 1.0, 1, 0])
def test_dropout_matches_torch(p: float, dtype: torch.dtype) -> None:
    for seed, shape in enumerate([(), (0,), (7,), (16, 9), (3, 5, 4), (2, 0, 3), (1000,)]):
        x = _randn(shape, dtype, seed)
        for training in (True, False):
            _dropout_both(x, seed, lambda t: TF.dropout(t, p, training),
                          lambda t: F.dropout(t, p, training))
            _dropout_both(x, seed, lambda t: TF.dropout(t, p=p, training=training),
                          lambda t: TF.dropout(t, p=p, training=training), parameter=True)
            ref_m, shim_m = torch.nn.Dropout(p), shimnn.Dropout(p)
            ref_m.train(training)
            shim_m.train(training)
            _dropout_both(x, seed, ref_m, shim_m)
        if len(shape) >= 2:  # non-contiguous: the mask follows the memory layout, as torch's
            xt = _randn(tuple(reversed(shape)), dtype, seed).mT
            _dropout_both(xt, seed, lambda t: TF.dropout(t, p), lambda t: F.dropout(t, p))
        # in place, on a non-leaf
        _dropout_both(x, seed, lambda t: TF.dropout(t * 1.0, p, inplace=True),
                      lambda t: F.dropout(t * 1.0, p, inplace=True), parameter=True)
        _dropout_both(x, seed, lambda t: TF.dropout(t * 1.0, p, inplace=True),
                      lambda t: TF.dropout(t * 1.0, p, inplace=True), parameter=True)
        _dropout_both(x, seed, lambda t: torch.dropout(t, p, True),
                      lambda t: torch.dropout(t, p, True), parameter=True)
        _dropout_both(x, seed, lambda t: torch.dropout_(t * 1.0, p, True),
                      lambda t: torch.dropout_(t * 1.0, p, True), parameter=True)


def test_dropout_edge_values_and_sequential() -> None:
    for dtype in DTYPES:
        x = _edges(dtype).reshape(3, -1)
        for p in (0.3, 1.0):
            _dropout_both(x, 11, lambda t: TF.dropout(t, p), lambda t: F.dropout(t, p))

    def make(nn: Any) -> Any:
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.4), nn.Linear(8, 8),
                             nn.GELU(), nn.Dropout(0.2, inplace=True), nn.Linear(8, 2))

    ref, shim = twin_modules(make, seed=2)
    x = _randn((10, 4), torch.float32)
    for training in (True, False):
        ref.train(training)
        shim.train(training)
        for seed in range(3):
            torch.manual_seed(seed)
            ref_out = ref(x)
            ref_state = torch.get_rng_state()
            torch.manual_seed(seed)
            shim_out = shim(x)
            assert torch.equal(torch.get_rng_state(), ref_state)
            assert_same(shim_out, ref_out, "Sequential with dropout")
        for m in (ref, shim):
            m.zero_grad()
        torch.manual_seed(5)
        r = ref(x)
        r.backward(random_like(r, 1))
        torch.manual_seed(5)
        with autograd_forbidden():
            s = shim(x)
            s.backward(random_like(r, 1))
        assert_same(s, r, "output")
        for (n, a), b in zip(shim.named_parameters(), ref.parameters()):
            assert_same(a.grad, b.grad, f"grad of {n}")


def test_dropout_identity_returns_the_input() -> None:
    h = shimnn.Parameter(torch.randn(3)) * 2.0
    for call in (lambda: F.dropout(h, 0.5, training=False), lambda: F.dropout(h, 0.0),
                 lambda: F.dropout(h, 0.3, False, True), lambda: TF.dropout(h, training=False)):
        assert call() is h
    x = torch.randn(4)
    ref_out = TF.dropout(x, training=False)
    assert ref_out is x
    out = F.dropout(x, training=False)
    assert isinstance(out, shimnn.TrackedTensor) and out.data_ptr() == x.data_ptr()
    leaf = torch.randn(4, requires_grad=True)  # a leaf that needs a gradient: itself, as torch
    assert F.dropout(leaf, training=False) is leaf and shimnn.Dropout().eval()(leaf) is leaf
    m = shimnn.Dropout().eval()
    check_module(torch.nn.Dropout().eval(), m, [x], [False])
    # Identity: the input itself, gradient straight through.
    ident = shimnn.Identity(54, unused_argument1=0.1, unused_argument2=False)
    assert ident(h) is h and ident(x) is x
    ref, shim = twin_modules(lambda nn: nn.Sequential(nn.Linear(4, 3), nn.Identity(7),
                                                      nn.ReLU(inplace=True)))
    check_module(ref, shim, [torch.randn(5, 4)])


def test_dropout_validation_like_torch() -> None:
    x = torch.randn(3)
    for p in (-0.1, 1.5, -1, 2):
        r, s = check_raises_like(lambda: torch.nn.Dropout(p), lambda: shimnn.Dropout(p))
        assert str(s) == str(r) and type(s) is ValueError
        r, s = check_raises_like(lambda: TF.dropout(x, p), lambda: F.dropout(x, p))
        assert str(s) == str(r)
        r, s = check_raises_like(lambda: torch.dropout(x, p, True),
                                 lambda: torch.dropout(shimnn.Parameter(x), p, True))
        assert str(s) == str(r) and type(s) is RuntimeError
    r, s = check_raises_like(lambda: TF.dropout(x, NAN), lambda: F.dropout(x, NAN))
    assert str(s) == str(r) and type(s) is RuntimeError


# ---------------------------------------------------------------------------------------------
# modules: fused chains, repr, constants, validation
# ---------------------------------------------------------------------------------------------

ALL_MODULES: list[tuple[str, dict[str, Any]]] = [
    (name, kwargs) for name, kwargs, _, _ in ELEMENTWISE
] + [(name, {**kwargs, "inplace": True}) for name, kwargs, _, _ in INPLACE] + [
    ("Softmax", {"dim": 1}), ("Softmax", {"dim": -1}), ("LogSoftmax", {"dim": 1}),
    ("LogSoftmax", {"dim": 0}), ("Softmax", {}), ("LogSoftmax", {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL_MODULES, ids=[f"{n}{k}" for n, k in ALL_MODULES])
def test_fused_sequential(case: tuple[str, dict[str, Any]], dtype: torch.dtype) -> None:
    name, kwargs = case

    def make(nn: Any) -> Any:
        return nn.Sequential(nn.Linear(3, 5), getattr(nn, name)(**kwargs), nn.Linear(5, 4),
                             getattr(nn, name)(**kwargs)).to(dtype)

    ref, shim = twin_modules(make, seed=7)
    assert all(type(m) in CHAIN_STEPS for m in shim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit softmax dims
        for shape, rg in [((6, 3), True), ((6, 3), False), ((2, 6, 3), True), ((3,), True),
                          ((0, 3), True)]:
            if len(shape) == 1 and kwargs.get("dim") == 1:
                continue  # no dim 1 in a vector (torch raises)
            x = _randn(shape, dtype, scale=4.0)
            check_module(ref, shim, [x], [rg])
        x = _randn((6, 3), dtype, scale=4.0).requires_grad_()
        out = shim(x)
        assert len(out.shim_fn.inputs) == 5  # one node for the whole chain
        assert out.shim_fn.name == type(ref(x).grad_fn).__name__
        with torch.no_grad():
            assert_same(shim(x), ref(x), "no_grad")


def test_repr_constants_and_attributes_like_torch() -> None:
    for name, kwargs in ALL_MODULES + [("Identity", {}), ("Dropout", {}),
                                       ("Dropout", {"p": 0.25, "inplace": True}),
                                       ("Dropout", {"p": 1}), ("Hardtanh", {"min_val": -3})]:
        ref, shim = getattr(torch.nn, name)(**kwargs), getattr(shimnn, name)(**kwargs)
        assert repr(shim) == repr(ref)
        assert shim.extra_repr() == ref.extra_repr()
        assert getattr(type(shim), "__constants__", None) == getattr(
            type(ref), "__constants__", None), name
        for attr in getattr(type(ref), "__constants__", []):
            assert getattr(shim, attr) == getattr(ref, attr)
        assert isinstance(shim, shimnn.Module)
        copy = pickle.loads(pickle.dumps(shim))
        assert repr(copy) == repr(ref)
    assert shimnn.ReLU6().min_val == 0.0 and shimnn.ReLU6().max_val == 6.0
    assert isinstance(shimnn.ReLU6(), shimnn.Hardtanh)
    names = ["Sigmoid", "LeakyReLU", "ELU", "GELU", "SiLU", "Softplus", "Hardtanh", "ReLU6",
             "Identity", "Softmax", "LogSoftmax", "Dropout"]
    for n in names:
        assert n in shimnn.__all__ and getattr(shimnn, n).__module__.startswith("shimnn.")
    for n in ["sigmoid", "leaky_relu", "leaky_relu_", "elu", "elu_", "gelu", "silu", "softplus",
              "hardtanh", "hardtanh_", "relu6", "softmax", "log_softmax", "dropout"]:
        assert n in F.__all__ and getattr(F, n).__module__ == "shimnn.ops.activation"
        assert getattr(F, n).__doc__ and "Backward" in getattr(F, n).__doc__


def test_constructor_validation_like_torch() -> None:
    for args, kwargs in [((1.0, -1.0), {}), ((0.5, 0.5), {}), ((), {"max_value": -2.0}),
                         ((), {"min_value": 1.0})]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r, s = check_raises_like(lambda: torch.nn.Hardtanh(*args, **kwargs),
                                     lambda: shimnn.Hardtanh(*args, **kwargs))
        assert str(s) == str(r) and type(s) is AssertionError
    for kwargs in [{"min_value": -2.0}, {"max_value": 2.0}]:
        ref_w = _warned(lambda: torch.nn.Hardtanh(**kwargs))
        shim_w = _warned(lambda: shimnn.Hardtanh(**kwargs))
        assert [(str(w.message), w.category, w.filename) for w in shim_w] == [
            (str(w.message), w.category, w.filename) for w in ref_w]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert repr(shimnn.Hardtanh(**kwargs)) == repr(torch.nn.Hardtanh(**kwargs))
    x = torch.randn(4)
    p = shimnn.Parameter(x.clone())
    for ref_call, shim_call in [
        (lambda: TF.hardtanh(x, 2.0, 1.0), lambda: F.hardtanh(p, 2.0, 1.0)),
        (lambda: TF.hardtanh(x, 2.0, 1.0, True), lambda: F.hardtanh(p * 1.0, 2.0, 1.0, True)),
        (lambda: TF.gelu(x, approximate="fast"), lambda: F.gelu(p, approximate="fast")),
        (lambda: torch.nn.GELU("fast")(x), lambda: shimnn.GELU("fast")(p)),
        (lambda: TF.gelu(x, approximate="fast"), lambda: TF.gelu(p, approximate="fast")),
    ]:
        r, s = check_raises_like(ref_call, shim_call)
        assert_error_like(r, s)  # a module's forward adds its name and inputs to the message


def test_torch_modules_and_callables_reach_shimnn() -> None:
    x = _randn((5, 4), torch.float64)
    for f in [
        lambda t: torch.sigmoid(t), lambda t: t.sigmoid(), lambda t: TF.sigmoid(t),
        lambda t: torch.special.expit(t), lambda t: torch.nn.Sigmoid()(t),
        lambda t: torch.nn.LeakyReLU(0.3)(t), lambda t: torch.nn.ELU(0.5)(t),
        lambda t: torch.nn.GELU("tanh")(t), lambda t: torch.nn.SiLU()(t),
        lambda t: torch.nn.Softplus(2.0, 3.0)(t), lambda t: torch.nn.Hardtanh(-0.5, 0.5)(t),
        lambda t: torch.nn.ReLU6()(t * 4.0), lambda t: torch.nn.Softmax(0)(t),
        lambda t: torch.nn.LogSoftmax(-1)(t), lambda t: torch.special.softmax(t, 1),
        lambda t: torch.special.log_softmax(t, 0), lambda t: TF.softplus(t, beta=2),
        lambda t: TF.elu_(t * 1.0, 0.2), lambda t: TF.leaky_relu_(t * 1.0, 0.2),
        lambda t: TF.hardtanh_(t * 1.0), lambda t: torch.sigmoid_(t * 1.0),
        lambda t: torch.nn.Hardtanh(inplace=True)(t * 1.0),
    ]:
        check_fn(f, f, x)


def test_complex_input_refused() -> None:
    z = shimnn.Parameter(torch.randn(3, dtype=torch.complex64))
    with pytest.raises(NotImplementedError, match="real dtypes"):
        F.sigmoid(z)
    assert_same(F.sigmoid(z.detach()), torch.sigmoid(z.detach()))


# ---------------------------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------------------------

INITS: list[tuple[str, Callable[..., Any]]] = [
    ("uniform_", lambda i, t: i.uniform_(t, -0.3, 0.7)),
    ("normal_", lambda i, t: i.normal_(t, 0.5, 2.0)),
    ("trunc_normal_", lambda i, t: i.trunc_normal_(t, std=0.5, a=-1.0, b=1.0)),
    ("constant_", lambda i, t: i.constant_(t, 0.25)),
    ("ones_", lambda i, t: i.ones_(t)),
    ("zeros_", lambda i, t: i.zeros_(t)),
    ("eye_", lambda i, t: i.eye_(t)),
    ("xavier_uniform_", lambda i, t: i.xavier_uniform_(t, gain=i.calculate_gain("tanh"))),
    ("xavier_normal_", lambda i, t: i.xavier_normal_(t)),
    ("kaiming_uniform_", lambda i, t: i.kaiming_uniform_(t, a=math.sqrt(5))),
    ("kaiming_normal_", lambda i, t: i.kaiming_normal_(t, mode="fan_out",
                                                       nonlinearity="relu")),
    ("orthogonal_", lambda i, t: i.orthogonal_(t, gain=2.0)),
    ("sparse_", lambda i, t: i.sparse_(t, 0.5)),
]


@pytest.mark.parametrize("case", INITS, ids=[n for n, _ in INITS])
def test_init_matches_torch(case: tuple[str, Callable[..., Any]]) -> None:
    _, init = case
    for dtype in DTYPES:
        torch.manual_seed(3)
        ref = torch.nn.Linear(6, 4, dtype=dtype)
        torch.manual_seed(3)
        shim = shimnn.Linear(6, 4, dtype=dtype)
        torch.manual_seed(11)
        ref_result = init(torch.nn.init, ref.weight)
        ref_state = torch.get_rng_state()
        torch.manual_seed(11)
        with autograd_forbidden():
            shim_result = init(shimnn.init, shim.weight)
        assert torch.equal(torch.get_rng_state(), ref_state)
        assert shim_result is shim.weight and ref_result is ref.weight
        assert isinstance(shim.weight, shimnn.Parameter) and shim.weight.requires_grad
        assert_same(shim.weight, ref.weight, "initialised weight")
        assert_no_autograd_graph(shim.weight)
    # The initialised layer still trains like torch's.
    check_module(ref, shim, [_randn((3, 6), torch.float64)])


def test_init_names_and_other_shapes() -> None:
    import torch.nn.init as I

    for name in I.__all__:
        assert getattr(shimnn.init, name) is getattr(I, name)
        assert name in shimnn.init.__all__
    assert shimnn.init._calculate_fan_in_and_fan_out is I._calculate_fan_in_and_fan_out
    assert shimnn.init.calculate_gain("leaky_relu", 0.2) == I.calculate_gain("leaky_relu", 0.2)
    assert "torch.nn.init" in (shimnn.init.__doc__ or "")
    for init in (lambda i, t: i.dirac_(t), lambda i, t: i.dirac_(t, groups=2),
                 lambda i, t: i.xavier_uniform_(t), lambda i, t: i.orthogonal_(t)):
        torch.manual_seed(1)
        a = init(I, torch.nn.Parameter(torch.empty(4, 2, 3)))
        torch.manual_seed(1)
        b = init(shimnn.init, shimnn.Parameter(torch.empty(4, 2, 3)))
        assert_same(b, a, "conv-shaped init")
