"""Tensor operations scripts use between layers, against torch, bit for bit.

Each op is called the ways scripts call it (``torch.X``, ``Tensor.X``, operators, in-place and
``out=`` forms) through one parity helper (:func:`parity.check_function`: torch with its
autograd, shimnn with autograd forbidden, a random upstream gradient), in float32 and float64,
on contiguous and non-contiguous inputs, with ties, NaN/inf, 0-d and empty tensors where they
mean something, and against central finite differences in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import shimnn
from conftest import assert_same, autograd_forbidden
from parity import check_function, check_raises_like
from test_gradcheck import numerical_grad

DTYPES = [torch.float32, torch.float64]

# torch's own warning for var/std with no degrees of freedom (both frameworks raise it)
pytestmark = pytest.mark.filterwarnings("ignore:var\\(\\). degrees of freedom")

_G = torch.Generator().manual_seed(1234)
I4 = torch.tensor([0, 2, 2, 1])
J = torch.tensor([[1, 1], [3, 0]])
M2 = torch.rand(4, 5, generator=_G) > 0.4
M3 = torch.rand(4, 5, 6, generator=_G) > 0.5
IDX3 = torch.randint(0, 4, (3, 5, 6), generator=_G)


def _x(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def _ties(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Small integers: every reduction meets ties."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, shape, generator=g).to(dtype)


# Ops on one (4, 5, 6) input.
ONE: dict[str, Callable[[torch.Tensor], Any]] = {
    # views and joins
    "permute": lambda a: a.permute(2, 0, 1),
    "permute tuple": lambda a: torch.permute(a, (1, -1, 0)),
    "permute kw": lambda a: a.permute(dims=(0, 2, 1)),
    "expand": lambda a: a[:, :1].expand(4, 7, 6),
    "expand new dims": lambda a: a[0].expand(2, 5, 6),
    "expand -1": lambda a: a[:, :, :1].expand(-1, -1, 7),
    "expand tuple": lambda a: a[:1].expand((2, 3, 5, 6)),
    "expand_as": lambda a: a[:1].expand_as(torch.empty(6, 5, 6)),
    "broadcast_to": lambda a: torch.broadcast_to(a[:, :1], (2, 4, 9, 6)),
    "repeat": lambda a: a.repeat(2, 1, 3),
    "repeat new dims": lambda a: a.repeat(2, 2, 1, 3),
    "repeat ones": lambda a: a.repeat((1, 1, 1)),
    "repeat zero": lambda a: a.repeat(2, 0, 1),
    "select": lambda a: a.select(1, 2),
    "select negative": lambda a: torch.select(a, -1, -2),
    "unbind": lambda a: torch.stack([r * i for i, r in enumerate(a.unbind(1))], 0),
    "unbind one used": lambda a: a.unbind(0)[1],
    "torch.unbind": lambda a: torch.unbind(a, -1)[3],
    "iterate": lambda a: sum(r * (i + 1) for i, r in enumerate(a)),
    "iterate last": lambda a: list(a)[-1],
    "split": lambda a: torch.cat([p.exp() for p in a.split(2, 1)], 1),
    "split one used": lambda a: torch.split(a, 2, dim=2)[1],
    "split sizes": lambda a: a.split([1, 4], 1)[1] * 2,
    "split keywords": lambda a: a.split(split_size=3, dim=1)[0].sum() + torch.split(
        a, split_size_or_sections=[2, 2], dim=0)[1],
    "split_with_sizes": lambda a: torch.split_with_sizes(a, [2, 4], -1)[0],
    "chunk": lambda a: a.chunk(3, 2)[2],
    "chunk all reversed": lambda a: torch.cat(torch.chunk(a, 2, 0)[::-1], 0),
    "chunk uneven": lambda a: a.chunk(4, 1)[-1],
    "split keeps -0.0": lambda a: a.split(2, 1)[0] * -0.0,
    "mT": lambda a: a.mT @ a,
    "mH (real)": lambda a: a.mH,
    "stack": lambda a: torch.stack([a, a * 2], 1),
    "stack negative dim": lambda a: torch.stack((a[0], a[1].exp(), a[2]), dim=-1),
    # indexing
    "x[i]": lambda a: a[I4],
    "x[:, i]": lambda a: a[:, I4],
    "x[..., i]": lambda a: a[..., I4],
    "x[i, :, i]": lambda a: a[I4, :, I4],
    "x[i, 1:3, j]": lambda a: a[I4[:2], 1:3, J],
    "x[1, i]": lambda a: a[1, I4],
    "x[None, i, None]": lambda a: a[None, I4, None],
    "x[:, i, None]": lambda a: a[:, I4, None],
    "x[j]": lambda a: a[J],
    "x[list]": lambda a: a[[0, 3, 3]],
    "x[list, list]": lambda a: a[[0, 3], [1, 1]],
    "x[mask]": lambda a: a[M2],
    "x[mask, 2:]": lambda a: a[M2, 2:],
    "x[mask 1-d]": lambda a: a[torch.tensor([True, False, True, True])],
    "x[:, mask]": lambda a: a[:, M2[0]],
    "x[mask 3-d]": lambda a: a[M3],
    "x[2:, mask, ::2]": lambda a: a[2:, M2[0], ::2],
    "x[0-d int tensor]": lambda a: a[torch.tensor(2)],
    "x[i, 0-d int tensor]": lambda a: a[I4, torch.tensor(3)],
    "x[-1, [-1, 0]]": lambda a: a[-1, [-1, 0]],
    "x[int32 index]": lambda a: a[I4.int()],
    "gather": lambda a: a.gather(0, IDX3),
    "gather last dim": lambda a: torch.gather(a, -1, IDX3[:, :, :2] % 6),
    "index_select": lambda a: a.index_select(1, torch.tensor([4, 0, 4])),
    "torch.index_select": lambda a: torch.index_select(a, 0, I4),
    "index_put": lambda a: torch.index_put(a, (I4,), a[0] * 2),
    "index_put accumulate": lambda a: a.index_put([I4, torch.tensor(1)], a[0, 0] * 3,
                                                  accumulate=True),
    "index_put mask": lambda a: a.index_put((M2,), a[0, 0, :1]),
    "masked_fill": lambda a: a.masked_fill(M3, 0.5),
    "masked_fill broadcast mask": lambda a: a.masked_fill(M2[:, :, None], -1e9),
    "masked_fill -inf softmax": lambda a: torch.masked_fill(a, M3[0], -math.inf).softmax(-1),
    "masked_fill tensor value": lambda a: a.masked_fill(M3, a[0, 0, 0]),
    "masked_fill broadcast self": lambda a: a[0].masked_fill(M3, 1.0),
    "masked_fill_": lambda a: (a * 1).masked_fill_(M3, 2.0),
    "masked_fill_ tensor value": lambda a: (a * 1).masked_fill_(M3, a[1, 1, 1] * 3),
    "index_fill": lambda a: a.index_fill(1, torch.tensor([0, 3, 3]), -2.0),
    "index_fill tensor value": lambda a: a.index_fill(2, torch.tensor([0, 3, 3]), a[0, 0, 0]),
    "index_fill_": lambda a: (a * 1).index_fill_(0, torch.tensor([1]), 0.0),
    "index_fill_ tensor value": lambda a: (a * 1).index_fill_(0, torch.tensor([1, 1, 3]),
                                                               a[2, 2, 2]),
    "where": lambda a: torch.where(M3, a, a * 2),
    "where number": lambda a: torch.where(M3, a, 0.0),
    "where number first": lambda a: torch.where(M3, 1.5, a),
    "where broadcast": lambda a: torch.where(M2[:, :, None], a[0], a[:, :1]),
    "where method": lambda a: a.where(M3, -a),
    "where method on a mask": lambda a: a * M3.where(M3[0], M3[1]),
    "where own condition": lambda a: torch.where(a > 0, a, torch.zeros_like(a)),
    # reductions
    "max": lambda a: a.max(),
    "torch.max": lambda a: torch.max(a),
    "max dim": lambda a: a.max(1)[0],
    "max dim keepdim kw": lambda a: torch.max(a, dim=-1, keepdim=True).values,
    "max dim keepdim": lambda a: a.max(0, True)[0],
    "min": lambda a: a.min(),
    "min dim": lambda a: torch.min(a, 2).values,
    "maximum": lambda a: torch.maximum(a, a[0]),
    "max of two": lambda a: torch.max(a, a[:, :1] * 2),
    "minimum": lambda a: a.minimum(a[0].abs()),
    "min of two": lambda a: a.min(a[:1].abs()),
    "amax": lambda a: a.amax(),
    "amax dim": lambda a: a.amax(1),
    "amax dims keepdim": lambda a: torch.amax(a, (0, 2), keepdim=True),
    "amin": lambda a: torch.amin(a),
    "amin dim": lambda a: a.amin(-1),
    "topk": lambda a: a.topk(3)[0],
    "topk smallest dim 0": lambda a: torch.topk(a, 2, dim=0, largest=False).values,
    "topk unsorted": lambda a: a.topk(2, 1, True, False)[0],
    "sort": lambda a: a.sort()[0],
    "sort descending": lambda a: torch.sort(a, 0, descending=True).values,
    "sort stable": lambda a: torch.sort(a, stable=True, dim=1)[0],
    "logsumexp": lambda a: a.logsumexp(1),
    "logsumexp keepdim": lambda a: torch.logsumexp(a, -1, keepdim=True),
    "logsumexp dims": lambda a: torch.logsumexp(a, (0, 2)),
    "cumsum": lambda a: a.cumsum(1),
    "torch.cumsum": lambda a: torch.cumsum(a, -1),
    "cumsum dtype": lambda a: torch.cumsum(a, 0, dtype=torch.float64),
    "cumsum_": lambda a: (a * 1).cumsum_(2),
    "var": lambda a: a.var(),
    "var dim": lambda a: a.var(1),
    "var unbiased=False": lambda a: a.var(0, unbiased=False),
    "var positional": lambda a: torch.var(a, 1, False, True),
    "var correction": lambda a: torch.var(a, dim=(0, 2), correction=2, keepdim=True),
    "var bool": lambda a: a.var(False),
    "std": lambda a: a.std(),
    "std dim": lambda a: a.std(-1),
    "std keepdim correction": lambda a: torch.std(a, 0, keepdim=True, correction=0),
    "norm": lambda a: a.norm(),
    "norm dim": lambda a: a.norm(dim=1),
    "norm p=1": lambda a: torch.norm(a, p=1, dim=-1),
    "norm inf": lambda a: a.norm(p=math.inf, dim=2),
    "norm -inf": lambda a: a.norm(p=-math.inf),
    "norm 3": lambda a: a.norm(3, 1, True),
    "norm 1.5": lambda a: a.norm(1.5),
    "norm 0.5": lambda a: a.norm(0.5, dim=0),
    "norm fro": lambda a: torch.norm(a, "fro", dim=(0, 1)),
    "vector_norm": lambda a: torch.linalg.vector_norm(a, dim=-1),
    "vector_norm ord 1": lambda a: torch.linalg.vector_norm(a, 1, (0, 1)),
    "vector_norm ord 0": lambda a: torch.linalg.vector_norm(a, 0, 1) + a.sum(),
    "linalg.norm": lambda a: torch.linalg.norm(a, dim=-1),
    "linalg.norm all": lambda a: torch.linalg.norm(a),
    # element-wise
    "sqrt": lambda a: (a.abs() + 0.1).sqrt(),
    "torch.sqrt": lambda a: torch.sqrt(a.abs()),
    "sqrt_": lambda a: (a.abs() + 0.1).sqrt_(),
    "torch.sqrt_": lambda a: torch.sqrt_(a.abs() + 1),
    "rsqrt": lambda a: (a.abs() + 0.1).rsqrt(),
    "rsqrt_": lambda a: (a.abs() + 0.1).rsqrt_(),
    "square": lambda a: a.square(),
    "torch.square": lambda a: torch.square(a),
    "square_": lambda a: (a * 1).square_(),
    "sin": lambda a: a.sin(),
    "sin_": lambda a: (a * 2).sin_(),
    "cos": lambda a: torch.cos(a),
    "cos_": lambda a: (a * 2).cos_(),
    "triu": lambda a: a.triu(),
    "triu diagonal": lambda a: torch.triu(a, 1),
    "tril": lambda a: a.tril(-1),
    "torch.tril": lambda a: torch.tril(a, diagonal=2),
    "triu_": lambda a: (a * 1).triu_(1),
    "tril_": lambda a: (a * 1).tril_(),
    "softmax dim 0": lambda a: a.softmax(0),
    "log_softmax dim 1": lambda a: TF.log_softmax(a, dim=1),
    # an op used several times in one graph: fan-in summed in torch's order
    "used twice": lambda a: a.sin() * a.sin() + a.cos(),
    "shared view": lambda a: (lambda v: v @ v.transpose(1, 2) + v.sum())(a.permute(0, 2, 1)),
    "attention-like": lambda a: torch.softmax(
        (a @ a.transpose(-2, -1)).masked_fill(torch.ones(4, 5, 5, dtype=torch.bool).triu(1),
                                              -math.inf) / math.sqrt(6), -1) @ a,
}


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ONE))
def test_one_input(name: str, dtype: torch.dtype, layout: str) -> None:
    x = _x(4, 5, 6, dtype=dtype, seed=len(name))
    if layout == "transposed":  # same shape, non-contiguous
        x = _x(6, 5, 4, dtype=dtype, seed=len(name)).transpose(0, 2)
    check_function(ONE[name], x, seed=len(name) + 1)


TIE_OPS = ["max", "max dim", "max dim keepdim", "min", "min dim", "maximum", "max of two",
           "minimum", "amax", "amax dim", "amax dims keepdim", "amin", "amin dim", "topk",
           "topk smallest dim 0", "sort", "sort stable", "norm inf", "norm -inf", "norm p=1",
           "vector_norm ord 0", "var dim", "std dim", "cumsum", "logsumexp"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", TIE_OPS)
def test_ties(name: str, dtype: torch.dtype) -> None:
    """Ties: max/min(dim), topk and sort send the gradient to the index they return; a full
    max/min and amax/amin share it evenly among the tied elements, as torch."""
    check_function(ONE[name], _ties(4, 5, 6, dtype=dtype, seed=len(name)))


def _special(dtype: torch.dtype) -> torch.Tensor:
    x = _x(4, 5, 6, dtype=dtype, seed=7)
    x[0, 0, :3] = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
    x[1, 2, :] = 0.0
    x[2, :, 1] = math.inf
    x[3, 4, 5] = -math.inf
    return x


SPECIAL_OPS = ["max", "max dim", "min dim", "amax", "amax dim", "amin dim", "maximum",
               "topk", "sort", "logsumexp", "cumsum", "norm", "norm dim", "norm inf",
               "norm p=1", "var dim", "std dim", "where", "masked_fill", "x[mask]", "gather",
               "index_select", "sin", "square", "triu", "split", "unbind", "permute"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SPECIAL_OPS)
def test_nan_and_inf(name: str, dtype: torch.dtype) -> None:
    check_function(ONE[name], _special(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_norm_and_constant_std(dtype: torch.dtype) -> None:
    """norm of zeros, std of a constant: torch masks the 0/0 of its formulas to 0."""
    x = torch.zeros(3, 4, dtype=dtype)
    x[1] = 2.0
    for f in (lambda a: a.norm(dim=1), lambda a: a.std(1), lambda a: a.norm(1.5, dim=1),
              lambda a: a.norm(3, dim=1), lambda a: torch.linalg.vector_norm(a, 0.5, 1),
              lambda a: a.var(1, correction=4), lambda a: a[:1, :1].var()):
        check_function(f, x)


ZERO_D = {
    "max": lambda a: a.max(),
    "max dim": lambda a: a.max(0)[0],
    "amax": lambda a: a.amax(),
    "sort": lambda a: a.sort()[0],
    "topk": lambda a: a.topk(1)[0],
    "cumsum": lambda a: a.cumsum(0),
    "logsumexp": lambda a: a.logsumexp(0),
    "norm": lambda a: a.norm(),
    "std": lambda a: a.std(correction=0),
    "var": lambda a: a.var(),
    "where": lambda a: torch.where(torch.tensor(True), a, 2.0),
    "expand": lambda a: a.expand(3, 2),
    "repeat": lambda a: a.repeat(2, 3),
    "stack": lambda a: torch.stack([a, a * 2]),
    "sqrt": lambda a: a.abs().sqrt(),
    "masked_fill": lambda a: a.masked_fill(torch.tensor(False), 1.0),
    "index_select": lambda a: a.index_select(0, torch.tensor([0])),
    "gather": lambda a: a.gather(0, torch.tensor(0)),
    "matmul vector": lambda a: a.expand(3) @ a.expand(3),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ZERO_D))
def test_zero_dim_input(name: str, dtype: torch.dtype) -> None:
    check_function(ZERO_D[name], _x(dtype=dtype, seed=3))


EMPTY = {
    "permute": lambda a: a.permute(1, 0, 2),
    "expand": lambda a: a[:, :1].expand(0, 4, 3),
    "repeat": lambda a: a.repeat(2, 1, 1),
    "unbind": lambda a: torch.stack(a.unbind(2), 0),
    "split": lambda a: a.split(1, 1)[2],
    "stack": lambda a: torch.stack([a, a]),
    "x[i]": lambda a: a[:, torch.tensor([0, 0])],
    "x[mask]": lambda a: a[torch.zeros(0, 3, dtype=torch.bool)],
    "gather": lambda a: a.gather(1, torch.zeros(0, 2, 3, dtype=torch.int64)),
    "index_select": lambda a: a.index_select(2, torch.tensor([1, 1])),
    "masked_fill": lambda a: a.masked_fill(torch.ones(0, 3, 3, dtype=torch.bool), 1.0),
    "where": lambda a: torch.where(torch.ones(0, 3, 3, dtype=torch.bool), a, 0.0),
    "amax dim": lambda a: a.amax(2),
    "max dim": lambda a: a.max(1)[0],
    "sort": lambda a: a.sort()[0],
    "logsumexp": lambda a: a.logsumexp(1),
    "cumsum": lambda a: a.cumsum(0),
    "norm dim": lambda a: a.norm(dim=2),
    "var dim": lambda a: a.var(2),
    "sin": lambda a: a.sin(),
    "triu": lambda a: a.triu(),
    "matmul": lambda a: a @ a.transpose(1, 2),
    "matmul folded": lambda a: a @ torch.ones(3, 2, dtype=a.dtype),
}


@pytest.mark.parametrize("name", list(EMPTY))
def test_empty_input(name: str) -> None:
    check_function(EMPTY[name], torch.zeros(0, 3, 3))


# ---------------------------------------------------------------------------------------------
# matmul and friends
# ---------------------------------------------------------------------------------------------


def _maybe_transposed(shape: tuple[int, ...], transposed: bool, dtype: torch.dtype, seed: int
                      ) -> torch.Tensor:
    if transposed and len(shape) >= 2:
        s = list(shape)
        s[-1], s[-2] = s[-2], s[-1]
        return _x(*s, dtype=dtype, seed=seed).transpose(-1, -2)
    return _x(*shape, dtype=dtype, seed=seed)


MATMUL_SHAPES = [
    ((5,), (5,)), ((3, 5), (5,)), ((5,), (5, 4)), ((3, 5), (5, 4)), ((2, 3, 5), (5, 4)),
    ((2, 3, 5), (5,)), ((5,), (2, 5, 4)), ((3, 5), (2, 5, 4)), ((2, 3, 5), (2, 5, 4)),
    ((2, 3, 4, 5), (5, 6)), ((2, 3, 4, 5), (3, 5, 6)), ((3, 4, 5), (2, 3, 5, 6)),
    ((1, 4, 5), (3, 5, 6)), ((3, 4, 5), (1, 5, 6)), ((1, 4, 5), (3, 5, 1)),
    ((2, 1, 4, 5), (1, 3, 5, 2)), ((2, 3, 4, 5), (5,)), ((5,), (2, 3, 5, 4)),
    ((4, 5), (2, 3, 5, 6)), ((1, 4, 5), (1, 5, 6)), ((3, 1, 5), (5, 2)), ((2, 1, 3), (3, 1)),
    ((0, 3, 5), (5, 4)), ((2, 3, 0), (0, 4)), ((2, 0, 3), (2, 3, 4)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_ranks_layouts_and_grads(shapes: tuple[tuple[int, ...], tuple[int, ...]],
                                        dtype: torch.dtype) -> None:
    """Every rank combination, each operand contiguous or transposed, each combination of
    operands requiring grad (torch's fold decision depends on it), ``@`` and ``torch.matmul``;
    the node is named as torch's last node."""
    for ta in (False, True):
        for tb in (False, True):
            a = _maybe_transposed(shapes[0], ta, dtype, 1)
            b = _maybe_transposed(shapes[1], tb, dtype, 2)
            for rg in ([True, True], [True, False], [False, True]):
                check_function(lambda x, y: x @ y, a, b, requires_grad=rg)
                check_function(torch.matmul, a, b, requires_grad=rg, seed=5)
                ref = a.clone().requires_grad_(rg[0]) @ b.clone().requires_grad_(rg[1])
                shim = shimnn.Parameter(a.clone(), rg[0]) @ shimnn.Parameter(b.clone(), rg[1])
                assert shim.shim_fn.name == ref.grad_fn.name()


@settings(max_examples=40, deadline=None)
@given(da=st.integers(1, 4), db=st.integers(1, 4), n=st.integers(1, 4), m=st.integers(1, 4),
       p=st.integers(1, 4), batch=st.lists(st.integers(1, 3), min_size=2, max_size=2),
       ones=st.lists(st.booleans(), min_size=4, max_size=4), ta=st.booleans(),
       tb=st.booleans(), rg=st.sampled_from([(True, True), (True, False), (False, True)]),
       dtype=st.sampled_from(DTYPES))
def test_matmul_broadcasting(da: int, db: int, n: int, m: int, p: int, batch: list[int],
                             ones: list[bool], ta: bool, tb: bool, rg: tuple[bool, bool],
                             dtype: torch.dtype) -> None:
    """Random ranks and broadcast batches (with size-1 dims on either side)."""
    # batch dims align from the right (size-1 dims broadcast on either side)
    ba = [1 if o else b for o, b in zip(ones[:2], batch)][2 - max(da - 2, 0):]
    bb = [1 if o else b for o, b in zip(ones[2:], batch)][2 - max(db - 2, 0):]
    sa = (*ba, n, m) if da > 1 else (m,)
    sb = (*bb, m, p) if db > 1 else (m,)
    a = _maybe_transposed(sa, ta, dtype, 3)
    b = _maybe_transposed(sb, tb, dtype, 4)
    check_function(torch.matmul, a, b, requires_grad=list(rg))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bmm_baddbmm(dtype: torch.dtype) -> None:
    b1, b2 = _x(3, 4, 5, dtype=dtype, seed=1), _x(3, 5, 6, dtype=dtype, seed=2)
    for rg in ([True, True], [True, False], [False, True]):
        check_function(lambda a, b: torch.bmm(a, b) + a.bmm(b), b1, b2, requires_grad=rg)
        check_function(torch.bmm, b1.transpose(1, 2).contiguous().transpose(1, 2), b2,
                       requires_grad=rg)
    for shape in [(3, 4, 6), (1, 4, 6), (4, 6), (6,), ()]:
        inp = _x(*shape, dtype=dtype, seed=3)
        for beta, alpha in [(1, 1), (0.5, 2), (0, 1.5)]:
            for rg in ([True, True, True], [False, True, False], [True, False, True]):
                check_function(lambda i, a, b: torch.baddbmm(i, a, b, beta=beta, alpha=alpha),
                               inp, b1, b2, requires_grad=rg)
                check_function(lambda i, a, b: i.baddbmm(a, b, beta=beta, alpha=alpha),
                               inp, b1, b2, requires_grad=rg)
    for rg in ([True, True, True], [False, True, False], [True, False, True]):
        check_function(lambda i, a, b: (i * 1).baddbmm_(a, b, beta=0.5, alpha=2.0),
                       _x(3, 4, 6, dtype=dtype), b1, b2, requires_grad=rg)


def test_matmul_without_grad_on_tracked_inputs() -> None:
    """Under no_grad a tracked result still counts as requiring grad for torch's fold rule,
    which decides the kernels (and so the value)."""
    a_t = _x(6, 4, 3).transpose(0, 1)  # (4, 6, 3) non-contiguous: bmm unless folded
    w = _x(3, 5, seed=2)
    ref_a = a_t.clone().requires_grad_() * 1
    ref_w = w.clone().requires_grad_() * 1
    with torch.no_grad():
        ref = ref_a @ ref_w
    pa, pw = shimnn.Parameter(a_t.clone()), shimnn.Parameter(w.clone())
    with autograd_forbidden():
        ta, tw = pa * 1, pw * 1
        with torch.no_grad():
            out = ta @ tw
    assert_same(out, ref)


# ---------------------------------------------------------------------------------------------
# two inputs with broadcasting
# ---------------------------------------------------------------------------------------------


TWO = {
    "where": lambda a, b: torch.where(M3, a, b),
    "maximum": lambda a, b: torch.maximum(a, b),
    "minimum": lambda a, b: b.minimum(a),
    "max of two": lambda a, b: torch.max(a, b),
    "masked_fill value": lambda a, b: a.masked_fill(M3, b.sum()),
    "index_put values": lambda a, b: a.index_put((M3,), b.reshape(-1)[:1]),
    "stack": lambda a, b: torch.stack([a, b.expand_as(a)], 2),
    "matmul": lambda a, b: a @ b.transpose(-1, -2),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TWO))
@pytest.mark.parametrize("shape_b", [(4, 5, 6), (5, 6), (1, 6), (4, 1, 6)], ids=str)
def test_two_inputs_with_broadcasting(name: str, dtype: torch.dtype,
                                      shape_b: tuple[int, ...]) -> None:
    a, b = _x(4, 5, 6, dtype=dtype, seed=1), _x(*shape_b, dtype=dtype, seed=2)
    if name in ("maximum", "minimum", "max of two"):
        b = b.round()  # ties with a where a is rounded too
        a = torch.where(torch.rand(4, 5, 6, generator=_G) > 0.5, a.round(), a)
    for rg in ([True, True], [True, False], [False, True]):
        check_function(TWO[name], a, b, requires_grad=rg)


def test_mixed_dtypes() -> None:
    a, b = _x(4, 5, dtype=torch.float32), _x(4, 5, dtype=torch.float64, seed=1)
    check_function(lambda x, y: torch.where(x > 0, x, y), a, b)
    check_function(lambda x, y: torch.stack([x.double(), y]), a, b)
    check_function(lambda x, y: torch.maximum(x, y), a, b)


# ---------------------------------------------------------------------------------------------
# multi-output views, values returned with indices
# ---------------------------------------------------------------------------------------------


def test_split_outputs_share_one_node() -> None:
    """Outputs without a gradient contribute zeros, as torch's split_backward; the same
    outputs used in two backward passes (retain_graph) each get their own gradients."""
    w = _x(6, 4)
    ref_w = w.clone().requires_grad_()
    shim_w = shimnn.Parameter(w.clone())
    for p in (ref_w, shim_w):
        pieces = (p * 1).split(2)
        (pieces[0] * 2).sum().backward(retain_graph=True)
        (pieces[2] * 3).sum().backward()
    assert_same(shim_w.grad, ref_w.grad)


def test_indices_match_torch() -> None:
    x = _ties(4, 5, 6)
    p = shimnn.Parameter(x.clone())
    for call in (lambda t: t.max(1), lambda t: torch.min(t, -1, keepdim=True),
                 lambda t: t.topk(2, 0), lambda t: t.sort(1, descending=True),
                 lambda t: torch.sort(t, stable=True)):
        ref, shim = call(x), call(p)
        assert type(shim) is type(ref)
        assert_same(shim.indices, ref.indices)
        assert_same(shim.values, ref.values)


# ---------------------------------------------------------------------------------------------
# in-place and out= forms
# ---------------------------------------------------------------------------------------------


INPLACE = {
    "masked_fill_": lambda t: t.masked_fill_(t.detach() > 1.0, 1.0),
    "index_fill_": lambda t: t.index_fill_(0, torch.tensor([0]), 1.0),
    "sqrt_": lambda t: t.sqrt_(),
    "rsqrt_": lambda t: t.rsqrt_(),
    "square_": lambda t: t.square_(),
    "sin_": lambda t: t.sin_(),
    "cos_": lambda t: t.cos_(),
    "triu_": lambda t: t.triu_(),
    "tril_": lambda t: t.tril_(),
    "cumsum_": lambda t: t.cumsum_(0),
}


def _write_into(view_of: Callable[[torch.Tensor], torch.Tensor], name: str
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``h = a * 1``, the in-place op on a view of ``h``, then ``h`` and the view both used."""
    def f(a: torch.Tensor) -> torch.Tensor:
        h = a * 1
        v = view_of(h)
        INPLACE[name](v)
        return h * 2 + view_of(h).sum() + v.mean()

    return f


VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "permute": lambda h: h.permute(1, 0),
    "slice": lambda h: h[1:, ::2],
    "transpose": lambda h: h.transpose(0, 1),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("name", list(INPLACE))
def test_inplace_on_leaf_and_views(name: str, view: str) -> None:
    """On a leaf that requires grad (or a view of one): torch's RuntimeError. On a view of a
    tracked tensor: the write goes through the base, as torch's CopySlices, bit for bit."""
    x = _x(6, 6).abs() + 0.5
    check_raises_like(lambda: INPLACE[name](x.clone().requires_grad_()),
                      lambda: INPLACE[name](shimnn.Parameter(x.clone())))
    check_raises_like(lambda: INPLACE[name](VIEWS[view](x.clone().requires_grad_())),
                      lambda: INPLACE[name](VIEWS[view](shimnn.Parameter(x.clone()))))
    check_function(_write_into(VIEWS[view], name), x)


@pytest.mark.parametrize("name", list(INPLACE))
def test_inplace_on_outputs_of_multi_output_views(name: str) -> None:
    """torch refuses in-place writes into outputs of split/unbind/chunk; shimnn writes them
    through the base (CopySlices), so the gradient is the one of the same values computed out
    of place, never a stale one."""
    x = _x(6, 6, dtype=torch.float64).abs() + 0.5
    with pytest.raises(RuntimeError):
        INPLACE[name]((x.clone().requires_grad_() * 1).split(3)[1])

    def shim(a: torch.Tensor) -> torch.Tensor:
        h = a * 1
        INPLACE[name](h.split(3)[1])
        return h * 2

    def reference(a: torch.Tensor) -> torch.Tensor:
        h = a * 1
        top, bottom = h[:3], h[3:].clone()
        INPLACE[name](bottom)
        return torch.cat([top, bottom]) * 2

    p = shimnn.Parameter(x.clone())
    ref_x = x.clone().requires_grad_()
    g = _x(6, 6, dtype=torch.float64, seed=5)
    with autograd_forbidden():
        out = shim(p)
        out.backward(g)
    ref = reference(ref_x)
    ref.backward(g)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-15)
    torch.testing.assert_close(p.grad, ref_x.grad, rtol=1e-12, atol=1e-15)


def test_baddbmm_inplace_on_leaf() -> None:
    x = _x(2, 3, 3)
    check_raises_like(lambda: x.clone().requires_grad_().baddbmm_(x, x),
                      lambda: shimnn.Parameter(x.clone()).baddbmm_(x, x))


def test_inplace_after_save_raises_like_torch() -> None:
    """An op whose backward reads its input (sin), then that input modified in place."""
    x = _x(3, 4)

    def f(t: torch.Tensor) -> torch.Tensor:
        h = t * 1
        y = h.sin()
        h.masked_fill_(M2[:3, :4], 0.0)
        return (y + h).sum()

    ref_t = x.clone().requires_grad_()
    ref_loss = f(ref_t)
    shim_loss = f(shimnn.Parameter(x.clone()))
    check_raises_like(ref_loss.backward, shim_loss.backward)


OUT_FORMS: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]] = {
    "matmul": lambda a, o: torch.matmul(a, a.transpose(-1, -2), out=o),
    "bmm": lambda a, o: torch.bmm(a, a.transpose(1, 2), out=o),
    "sqrt": lambda a, o: torch.sqrt(a, out=o),
    "rsqrt": lambda a, o: torch.rsqrt(a, out=o),
    "square": lambda a, o: torch.square(a, out=o),
    "sin": lambda a, o: torch.sin(a, out=o),
    "cos": lambda a, o: torch.cos(a, out=o),
    "triu": lambda a, o: torch.triu(a, out=o),
    "tril": lambda a, o: torch.tril(a, 1, out=o),
    "cumsum": lambda a, o: torch.cumsum(a, 1, out=o),
    "logsumexp": lambda a, o: torch.logsumexp(a, 1, out=o),
    "amax": lambda a, o: torch.amax(a, 1, out=o),
    "gather": lambda a, o: torch.gather(a, 1, torch.zeros(3, 3, 3, dtype=torch.int64), out=o),
    "index_select": lambda a, o: torch.index_select(a, 0, torch.tensor([1]), out=o),
    "where": lambda a, o: torch.where(a > 1, a, a * 2, out=o),
    "stack": lambda a, o: torch.stack([a, a], out=o),
    "maximum": lambda a, o: torch.maximum(a, a.abs(), out=o),
    "vector_norm": lambda a, o: torch.linalg.vector_norm(a, 2, 1, out=o),
    "baddbmm": lambda a, o: torch.baddbmm(a, a, a, out=o),
}


@pytest.mark.parametrize("name", list(OUT_FORMS))
def test_out_forms(name: str) -> None:
    """``out=`` with an input that needs a gradient: torch's RuntimeError. Without one: the
    value written into ``out``, and ``out`` returned."""
    x = _x(3, 3, 3).abs() + 0.5
    check_raises_like(lambda: OUT_FORMS[name](x.clone().requires_grad_(), torch.empty(0)),
                      lambda: OUT_FORMS[name](shimnn.Parameter(x.clone()), torch.empty(0)))
    ref_out, shim_out = torch.empty(0), torch.empty(0)
    OUT_FORMS[name](x.clone(), ref_out)
    with autograd_forbidden():
        p = shimnn.Parameter(x.clone(), requires_grad=False)
        returned = OUT_FORMS[name](p, shim_out)
    assert returned is shim_out
    assert_same(shim_out, ref_out)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


ERRORS: dict[str, Callable[[torch.Tensor], Any]] = {
    "matmul shapes": lambda a: a @ a,
    "matmul 0-d": lambda a: a @ a.sum(),
    "batched matmul shapes": lambda a: a.expand(2, 3, 4) @ a.expand(3, 3, 4),
    "bmm rank": lambda a: torch.bmm(a, a.t()),
    "mm rank": lambda a: torch.mm(a, a[0]),
    "gather index": lambda a: a.gather(1, torch.tensor([[9]])),
    "index out of range": lambda a: a[torch.tensor([7])],
    "mask shape": lambda a: a[torch.ones(2, 2, dtype=torch.bool)],
    "float index": lambda a: a[torch.tensor([0.0])],
    "too many indices": lambda a: a[I4[:1], I4[:1], I4[:1]],
    "index_select index": lambda a: a.index_select(0, torch.tensor([5])),
    "topk k": lambda a: a.topk(9),
    "max of empty": lambda a: a[:0].max(),
    "max dim of empty": lambda a: a[:0].max(0),
    "split size": lambda a: a.split(0),
    "stack shapes": lambda a: torch.stack([a, a[0]]),
    "expand": lambda a: a.expand(2, 2),
    "permute": lambda a: a.permute(0),
    "repeat": lambda a: a.repeat(2),
    "masked_fill mask": lambda a: a.masked_fill(torch.ones(3, dtype=torch.bool), 0.0),
    "cumsum dim": lambda a: a.cumsum(3),
    "logsumexp dim": lambda a: a.logsumexp(5),
    "unbind 0-d": lambda a: a.sum().unbind(),
    "iterate 0-d": lambda a: list(a.sum()),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_input_fails_like_torch(name: str) -> None:
    x = _x(3, 4)
    check_raises_like(lambda: ERRORS[name](x.clone().requires_grad_()),
                      lambda: ERRORS[name](shimnn.Parameter(x.clone())))


def test_unhandled_index_forms_raise_at_backward() -> None:
    """Index forms shimnn does not parse keep torch's value and refuse a gradient."""
    x = _x(3, 4)
    p = shimnn.Parameter(x.clone())
    for index in (True, (Ellipsis, None, False)):
        out = p[index]
        assert_same(out, x[index])
        with pytest.raises(NotImplementedError, match="no hand-written backward"):
            out.sum().backward()


def test_gather_sparse_grad_refused() -> None:
    p = shimnn.Parameter(_x(3, 4))
    with pytest.raises(NotImplementedError, match="shimnn"):
        p.gather(1, torch.zeros(3, 1, dtype=torch.int64), sparse_grad=True)


# ---------------------------------------------------------------------------------------------
# finite differences (float64), an oracle independent of torch's formulas
# ---------------------------------------------------------------------------------------------


FD_OPS = ["permute", "expand", "repeat new dims", "unbind", "split", "chunk uneven", "stack",
          "x[i, :, i]", "x[mask, 2:]", "gather", "index_select", "index_put accumulate",
          "masked_fill tensor value", "where broadcast", "max dim", "amax dims keepdim",
          "topk", "sort", "logsumexp dims", "cumsum", "var correction", "std dim", "norm",
          "norm 3", "norm 1.5", "vector_norm ord 1", "sqrt", "rsqrt", "square", "sin", "cos",
          "triu diagonal", "attention-like"]


@pytest.mark.parametrize("name", FD_OPS)
def test_finite_differences(name: str) -> None:
    x = _x(4, 5, 6, dtype=torch.float64, seed=11)
    p = shimnn.Parameter(x.clone())
    weights = _x(*ONE[name](x).shape, dtype=torch.float64, seed=12)

    def loss() -> torch.Tensor:
        return (ONE[name](p) * weights).sum()

    with autograd_forbidden():
        loss().backward()
    torch.testing.assert_close(p.grad, numerical_grad(loss, p), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shapes", [((2, 3, 4), (4, 5)), ((4,), (2, 4, 3)), ((3, 4),
                                                                            (2, 4, 5)),
                                    ((2, 1, 3, 4), (3, 4, 2))], ids=str)
def test_matmul_finite_differences(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    a = shimnn.Parameter(_x(*shapes[0], dtype=torch.float64, seed=1))
    b = shimnn.Parameter(_x(*shapes[1], dtype=torch.float64, seed=2))
    with torch.no_grad():
        weights = _x(*(a @ b).shape, dtype=torch.float64, seed=3)

    def loss() -> torch.Tensor:
        return ((a @ b) * weights).sum()

    with autograd_forbidden():
        loss().backward()
    for t in (a, b):
        torch.testing.assert_close(t.grad, numerical_grad(loss, t), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# shapes drawn by hypothesis
# ---------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data(),
       keepdim=st.booleans(), ties=st.booleans(), dtype=st.sampled_from(DTYPES))
def test_reductions_over_random_dims(shape: list[int], data: Any, keepdim: bool, ties: bool,
                                     dtype: torch.dtype) -> None:
    nd = len(shape)
    dim = data.draw(st.integers(-nd, nd - 1))
    dims = data.draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
    x = _ties(*shape, dtype=dtype) if ties else _x(*shape, dtype=dtype)
    k = data.draw(st.integers(1, shape[dim]))
    for f in (lambda a: a.max(dim, keepdim)[0], lambda a: a.amin(dims, keepdim),
              lambda a: a.logsumexp(dims, keepdim), lambda a: a.var(dims, keepdim=keepdim),
              lambda a: a.std(dim, keepdim=keepdim, correction=0),
              lambda a: torch.linalg.vector_norm(a, 2, dims, keepdim),
              lambda a: a.norm(dim=dim, keepdim=keepdim), lambda a: a.cumsum(dim),
              lambda a: a.topk(k, dim)[0], lambda a: a.sort(dim)[0],
              lambda a: torch.stack(a.unbind(dim), -1), lambda a: a.chunk(k, dim)[-1]):
        check_function(f, x)


def test_hooks_and_retain_grad_on_results() -> None:
    """Tensor hooks and retain_grad on the outputs of the new ops, as on torch's."""
    x = _x(4, 5, 6)

    def run(t: torch.Tensor) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        h = t * 1
        prod = h @ h.transpose(1, 2)
        prod.register_hook(lambda g: seen.append(g.clone()))
        rows = prod.unbind(1)
        rows[2].register_hook(lambda g: g * 2)
        top = rows[2].max(-1).values
        top.retain_grad()
        (top.sum() + rows[0].sum()).backward()
        assert top.grad is not None
        return [*seen, top.grad, t.grad]

    for a, b in zip(run(shimnn.Parameter(x.clone())), run(x.clone().requires_grad_())):
        assert_same(a, b)


def test_values_stay_tracked_without_grad() -> None:
    h = shimnn.Parameter(_x(3, 4)) * 1
    with torch.no_grad():
        for result in (h.max(1), h.topk(2), h.sort(), torch.min(h, 0)):
            assert isinstance(result.values, shimnn.TrackedTensor)
        out = (torch.empty(0), torch.empty(0, dtype=torch.int64))
        assert torch.max(h, 1, out=out).values is out[0]
