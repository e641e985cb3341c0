"""Pooling against torch: max, average and adaptive pools, 1-d and 2-d, bit for bit (values,
gradients, indices), channels_last, ties, infinities, modules, errors and out=."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import shimnn
import shimnn.functional as F
from conftest import assert_same, autograd_forbidden
from parity import check_function, check_module, check_raises_like, twin_modules

DTYPES = [torch.float32, torch.float64]
INF = float("inf")

POOLS_2D: list[tuple[str, Callable[[torch.Tensor], Any]]] = [
    ("max 2", lambda t: TF.max_pool2d(t, 2)),
    ("max 3 s2 p1", lambda t: TF.max_pool2d(t, 3, 2, 1)),
    ("max dilated ceil", lambda t: TF.max_pool2d(t, (2, 3), (1, 2), (1, 0), (2, 1), True)),
    ("max indices", lambda t: TF.max_pool2d(t, 2, return_indices=True)[0]),
    ("max unbatched", lambda t: TF.max_pool2d(t[0], 2)),
    ("torch.max_pool2d", lambda t: torch.max_pool2d(t, 2)),
    ("max_pool2d_with_indices", lambda t: TF.max_pool2d_with_indices(t, 3, 1)[0]),
    ("avg 2", lambda t: TF.avg_pool2d(t, 2)),
    ("avg no pad count", lambda t: TF.avg_pool2d(t, 3, 2, 1, True, False)),
    ("avg divisor", lambda t: TF.avg_pool2d(t, 3, 2, 1, divisor_override=2)),
    ("avg unbatched ceil", lambda t: TF.avg_pool2d(t[1], (2, 3), ceil_mode=True)),
    ("adaptive avg 1", lambda t: TF.adaptive_avg_pool2d(t, 1)),
    ("adaptive avg (1, 1)", lambda t: TF.adaptive_avg_pool2d(t, (1, 1))),
    ("adaptive avg 3", lambda t: TF.adaptive_avg_pool2d(t, 3)),
    ("adaptive avg (None, 4)", lambda t: TF.adaptive_avg_pool2d(t, (None, 4))),
    ("adaptive avg larger", lambda t: TF.adaptive_avg_pool2d(t[0], (9, 11))),
    ("adaptive avg 1 fan-in", lambda t: TF.adaptive_avg_pool2d(t, 1).sum() * t.sum()),
    ("adaptive max 3", lambda t: TF.adaptive_max_pool2d(t, 3)),
    ("adaptive max indices", lambda t: TF.adaptive_max_pool2d(t, (2, None), True)[0]),
    ("adaptive max unbatched", lambda t: TF.adaptive_max_pool2d(t[0], 2)),
]
POOLS_1D: list[tuple[str, Callable[[torch.Tensor], Any]]] = [
    ("max 2", lambda t: TF.max_pool1d(t, 2)),
    ("max 3 s2 p1 d1 ceil", lambda t: TF.max_pool1d(t, 3, 2, 1, 1, True)),
    ("max indices", lambda t: TF.max_pool1d(t, 3, return_indices=True)[0]),
    ("max unbatched", lambda t: TF.max_pool1d(t[0], 2)),
    ("torch.max_pool1d", lambda t: torch.max_pool1d(t, 2, 1)),
    ("avg 2", lambda t: TF.avg_pool1d(t, 2)),
    ("avg no pad count ceil", lambda t: TF.avg_pool1d(t, 3, 2, 1, True, False)),
    ("adaptive avg 1", lambda t: TF.adaptive_avg_pool1d(t, 1)),
    ("adaptive avg 4", lambda t: TF.adaptive_avg_pool1d(t, 4)),
    ("adaptive max 4", lambda t: TF.adaptive_max_pool1d(t, 4)),
    ("adaptive max indices unbatched", lambda t: TF.adaptive_max_pool1d(t[1], 4, True)[0]),
]


def _check_no_grad(f: Callable[[torch.Tensor], Any], x: torch.Tensor) -> None:
    """Under no_grad (and on a plain tensor): torch's values, the same kinds of results."""
    with torch.no_grad():
        ref = f(x)
        for inp in (shimnn.Parameter(x.clone()), x.clone()):
            out = f(inp)
            assert type(out) is type(ref) or isinstance(out, torch.Tensor)
            assert isinstance(out, tuple) == isinstance(ref, tuple)
            for a, b in zip(out if isinstance(out, tuple) else (out,),
                            ref if isinstance(ref, tuple) else (ref,)):
                assert_same(a, b, "no_grad value")
    for g in (F.max_pool2d, F.adaptive_max_pool2d, F.max_pool1d, F.adaptive_max_pool1d):
        with torch.no_grad():
            assert isinstance(g(torch.randn(1, 2, 4, 4)[..., 0] if "1d" in g.__name__
                                else torch.randn(1, 2, 4, 4), 2), torch.Tensor)


def _input(dtype: torch.dtype, channels_last: bool, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=dtype)
    x[0, 0, :2, :2] = 1.0  # ties inside a window
    x[1, 2, 3, 3:6] = torch.tensor([INF, -INF, 0.0])
    return x.to(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", POOLS_2D, ids=[c[0] for c in POOLS_2D])
def test_pool2d(case: tuple[str, Callable[[torch.Tensor], Any]], channels_last: bool,
                dtype: torch.dtype) -> None:
    x = _input(dtype, channels_last)
    if "adaptive avg" in case[0] or "avg" in case[0]:
        x = x.nan_to_num(posinf=3.0, neginf=-3.0)  # an average of +inf and -inf is NaN
    check_function(case[1], x)
    _check_no_grad(case[1], x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOLS_1D, ids=[c[0] for c in POOLS_1D])
def test_pool1d(case: tuple[str, Callable[[torch.Tensor], Any]], dtype: torch.dtype) -> None:
    x = _input(dtype, False)[:, :, 0].contiguous()
    check_function(case[1], x)
    check_function(case[1], _input(dtype, False, 1)[:, :, :, 2], seed=1)  # non-contiguous
    _check_no_grad(case[1], x)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(2, 9), w=st.integers(2, 9), k=st.integers(1, 3), s=st.integers(1, 3),
       ceil=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["max", "avg", "adaptive_avg", "adaptive_max"]))
def test_pool2d_random_shapes(h: int, w: int, k: int, s: int, ceil: bool, dtype: torch.dtype,
                              seed: int, kind: str) -> None:
    if k > min(h, w):
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, h, w, generator=g, dtype=dtype)
    pad = k // 2
    f: Callable[[torch.Tensor], Any] = {
        "max": lambda t: TF.max_pool2d(t, k, s, pad, 1, ceil),
        "avg": lambda t: TF.avg_pool2d(t, k, s, pad, ceil),
        "adaptive_avg": lambda t: TF.adaptive_avg_pool2d(t, (k, s)),
        "adaptive_max": lambda t: TF.adaptive_max_pool2d(t, (k, s)),
    }[kind]
    check_function(f, x, seed=seed)


def test_indices_are_torchs_and_untracked() -> None:
    x = _input(torch.float32, False)
    p = shimnn.Parameter(x.clone())
    for ours, theirs in [(F.max_pool2d(p, 2, return_indices=True),
                          TF.max_pool2d(x, 2, return_indices=True)),
                         (F.adaptive_max_pool2d(p, 3, True), TF.adaptive_max_pool2d(x, 3, True)),
                         (F.max_pool1d(p[:, :, 0], 2, return_indices=True),
                          TF.max_pool1d(x[:, :, 0], 2, return_indices=True))]:
        assert isinstance(ours, tuple) and len(ours) == 2
        assert_same(ours[0], theirs[0])
        assert ours[1].dtype == torch.int64 and torch.equal(ours[1], theirs[1])
        assert type(ours[1]) is torch.Tensor and not ours[1].requires_grad


MODULES: list[tuple[str, tuple[Any, ...], dict[str, Any], tuple[int, ...]]] = [
    ("MaxPool2d", (2,), {}, (2, 3, 6, 7)),
    ("MaxPool2d", (3, 2, 1), {"ceil_mode": True}, (3, 7, 7)),
    ("MaxPool2d", (3,), {"stride": 1, "dilation": 2, "return_indices": True}, (1, 2, 8, 8)),
    ("MaxPool1d", (3,), {"stride": 2, "padding": 1}, (2, 3, 9)),
    ("MaxPool1d", (2,), {"return_indices": True}, (3, 9)),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1, "count_include_pad": False}, (2, 3, 7, 7)),
    ("AvgPool2d", (2,), {"divisor_override": 3}, (2, 3, 6, 6)),
    ("AvgPool1d", (3,), {"ceil_mode": True}, (2, 3, 8)),
    ("AdaptiveAvgPool2d", ((1, 1),), {}, (2, 3, 5, 6)),
    ("AdaptiveAvgPool2d", ((3, None),), {}, (3, 5, 6)),
    ("AdaptiveAvgPool1d", (4,), {}, (2, 3, 7)),
    ("AdaptiveMaxPool2d", (3,), {"return_indices": True}, (2, 3, 5, 6)),
    ("AdaptiveMaxPool1d", (2,), {}, (2, 3, 7)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MODULES, ids=lambda c: f"{c[0]}{c[1]}{c[2]}")
def test_modules(case: tuple[str, tuple[Any, ...], dict[str, Any], tuple[int, ...]],
                 dtype: torch.dtype) -> None:
    name, args, kwargs, shape = case
    ref, shim = twin_modules(lambda nn: getattr(nn, name)(*args, **kwargs))
    assert repr(shim) == repr(ref)
    x = torch.randn(shape, dtype=dtype)

    class First(torch.nn.Module):  # return_indices: differentiate the values
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, t: torch.Tensor) -> Any:
            out = self.m(t)
            return out[0] if isinstance(out, tuple) else out

    check_module(First(ref), First(shim), [x])
    if len(shape) == 4:
        check_module(First(ref), First(shim), [x.to(memory_format=torch.channels_last)], seed=1)


def test_errors_like_torch() -> None:
    x = torch.randn(2, 3, 5, 5)
    calls = [
        lambda t: TF.max_pool2d(t, 7),
        lambda t: TF.max_pool2d(t, 2, padding=2),
        lambda t: TF.max_pool1d(t[0, 0, 0], 2),
        lambda t: TF.avg_pool2d(t, 2, divisor_override=0),
        lambda t: TF.avg_pool1d(t, 2),
        lambda t: TF.adaptive_avg_pool2d(t, (1, 2, 3)),
        lambda t: TF.adaptive_max_pool2d(t[0, 0, 0], 2),
        lambda t: TF.adaptive_avg_pool1d(t, 2),
    ]
    for call in calls:
        ref, shim = check_raises_like(lambda: call(x.clone().requires_grad_()),
                                      lambda: call(shimnn.Parameter(x.clone())))
        assert str(shim) == str(ref)


def test_out_like_torch() -> None:
    x = torch.randn(1, 2, 4, 4)
    p = shimnn.Parameter(x.clone())
    for call in [lambda t, o: torch._C._nn.avg_pool2d(t, 2, out=o),
                 lambda t, o: torch._C._nn.max_pool2d_with_indices(
                     t, 2, out=(o, torch.empty(0, dtype=torch.long))),
                 lambda t, o: torch._C._nn.adaptive_max_pool2d(
                     t, 2, out=(o, torch.empty(0, dtype=torch.long)))]:
        r, s = check_raises_like(lambda: call(x.clone().requires_grad_(), torch.empty(0)),
                                 lambda: call(p, torch.empty(0)))
        assert str(s) == str(r)
        with torch.no_grad():  # nothing to differentiate: written like torch
            a, b = torch.empty(0), torch.empty(0)
            call(x, a)
            call(p, b)
        assert_same(b, a)
    # torch's composite adaptive_avg_pool2d writes into out even when the input needs grad.
    a, b = torch.empty(0), torch.empty(0)
    ra = torch._C._nn.adaptive_avg_pool2d(x.clone().requires_grad_(), 2, out=a)
    with autograd_forbidden():
        rb = torch._C._nn.adaptive_avg_pool2d(p, 2, out=b)
    assert ra is a and rb is b and not b.requires_grad
    assert_same(b, a)
