"""scaled_dot_product_attention, multi_head_attention_forward and MultiheadAttention against
torch, bit for bit: both SDPA paths torch's CPU takes (the fused flash kernel; the math
composite for dropout, a mask that needs a gradient, flash disabled), masks of each kind, the
in-projection paths, the eval fast path, torch's module_db samples, finite differences, and
what users do with the outputs (in-place writes, hooks, weights in the loss)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel

import shimnn
from attention_parity import check_call, check_module_call, module_db_samples
from conftest import assert_same, autograd_forbidden
from parity import check_raises_like
from shimnn.ops import attention as A
from shimnn.testing import gradcheck

DTYPES = [torch.float32, torch.float64]
sdpa = TF.scaled_dot_product_attention  # shimnn's op through dispatch on shimnn tensors


def _randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _check_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any = None,
                mask_grad: bool = False, **kwargs: Any) -> None:
    """SDPA on (q, k, v[, mask]) leaves; the mask is an argument that requires grad only
    with ``mask_grad``."""
    if mask is not None and mask_grad:
        check_call(sdpa, sdpa, (q, k, v, mask), kwargs)
    else:
        check_call(lambda *a, **kw: sdpa(*a, mask, **kw), lambda *a, **kw: sdpa(*a, mask, **kw),
                   (q, k, v), kwargs)


# ---------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# ---------------------------------------------------------------------------------------------

SHAPES = {
    "4-d": ((2, 3, 5, 8), (2, 3, 6, 8), (2, 3, 6, 8)),
    "value dim": ((2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 4)),
    "3-d": ((4, 5, 8), (4, 6, 8), (4, 6, 8)),
    "2-d": ((5, 8), (6, 8), (6, 8)),
    "broadcast heads": ((2, 1, 5, 8), (2, 3, 6, 8), (2, 3, 6, 8)),
    "3-d by 2-d": ((3, 5, 8), (6, 8), (6, 8)),
    "long": ((1, 2, 33, 16), (1, 2, 70, 16), (1, 2, 70, 16)),
}


def _mask(kind: str | None, L: int, S: int, dtype: torch.dtype, batch: int = 2
          ) -> torch.Tensor | None:
    if kind is None:
        return None
    g = torch.Generator().manual_seed(7)
    if kind == "bool":
        return torch.rand(L, S, generator=g) > 0.3
    if kind == "bool 4-d":
        return torch.rand(batch, 1, L, S, generator=g) > 0.3
    if kind == "float 3-d":
        return torch.randn(1, L, S, dtype=dtype, generator=g)
    return torch.randn(L, S, dtype=dtype, generator=g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dropout_p", [0.0, 0.3], ids=["flash", "dropout (math)"])
@pytest.mark.parametrize("mask", [None, "bool", "float", "bool 4-d", "float 3-d", "causal"])
def test_sdpa_matches_torch(dtype: torch.dtype, shapes: Any, dropout_p: float,
                            mask: str | None) -> None:
    qs, ks, vs = shapes
    q, k, v = _randn(*qs, dtype=dtype, seed=1), _randn(*ks, dtype=dtype, seed=2), _randn(
        *vs, dtype=dtype, seed=3)
    causal = mask == "causal"
    m = None if causal else _mask(mask, qs[-2], ks[-2], dtype, qs[0])
    if m is not None and m.dim() > len(qs):
        # A mask of more dims than the scores: the in-place add raises (math path) or the
        # kernel does; shimnn raises the same.
        check_raises_like(lambda: sdpa(q.requires_grad_(), k, v, m, dropout_p=dropout_p),
                          lambda: sdpa(shimnn.Parameter(q.detach()), k, v, m,
                                       dropout_p=dropout_p))
        return
    for scale in (None, 0.3, -0.5):
        _check_sdpa(q, k, v, m, dropout_p=dropout_p, is_causal=causal, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_sdpa_mask_gradient(dtype: torch.dtype, dropout_p: float) -> None:
    """A float mask that requires grad: torch takes the math path and differentiates the
    in-place add (summed to the mask's broadcast shape, cast to its dtype)."""
    q, k, v = (_randn(2, 3, 5, 8, dtype=dtype, seed=i) for i in range(3))
    for mask in (_randn(5, 5, dtype=dtype, seed=4), _randn(3, 1, 5, dtype=dtype, seed=5),
                 _randn(2, 1, 5, 5, seed=6)):
        if mask.dtype != dtype and dtype == torch.float32:
            continue
        _check_sdpa(q, k, v, mask, mask_grad=True, dropout_p=dropout_p)
    # only the mask needs a gradient
    check_call(lambda m: sdpa(q, k, v, m), lambda m: sdpa(q, k, v, m),
               (_randn(5, 5, dtype=dtype, seed=4),))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_sdpa_grouped_query_attention(dtype: torch.dtype, dropout_p: float) -> None:
    q = _randn(2, 4, 5, 8, dtype=dtype, seed=1)
    kv = _randn(2, 2, 6, 8, dtype=dtype, seed=2)
    _check_sdpa(q, kv, kv, dropout_p=dropout_p, enable_gqa=True)
    _check_sdpa(q, kv, _randn(2, 1, 6, 8, dtype=dtype, seed=3), dropout_p=dropout_p,
                enable_gqa=True)
    _check_sdpa(q, _randn(2, 4, 6, 8, dtype=dtype), _randn(2, 4, 6, 8, dtype=dtype),
                enable_gqa=True, dropout_p=dropout_p)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_sdpa_same_tensor_as_query_key_value(dtype: torch.dtype, dropout_p: float) -> None:
    """Self-attention on one leaf: its gradient sums the three in torch's order (the flash
    node's outputs in order; the math path's nodes newest first: value, key, query)."""
    x = _randn(2, 3, 5, 8, dtype=dtype, seed=1)
    check_call(lambda t: sdpa(t, t, t, dropout_p=dropout_p),
               lambda t: sdpa(t, t, t, dropout_p=dropout_p), (x,))
    check_call(lambda t, u: sdpa(t, u, t, dropout_p=dropout_p),
               lambda t, u: sdpa(t, u, t, dropout_p=dropout_p), (x, x + 1))


def test_sdpa_only_some_inputs_need_gradients() -> None:
    q, k, v = (_randn(2, 3, 5, 8, seed=i) for i in range(3))
    for dropout_p in (0.0, 0.3):
        for which in range(3):
            def f(t: torch.Tensor, which: int = which, p: float = dropout_p) -> torch.Tensor:
                args = [q, k, v]
                args[which] = t
                return sdpa(*args, dropout_p=p)

            check_call(f, f, ([q, k, v][which],))


@pytest.mark.parametrize("backends", [[SDPBackend.MATH], [SDPBackend.FLASH_ATTENTION],
                                      [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION]],
                         ids=["math", "flash", "both"])
def test_sdpa_kernel_flags(backends: list[SDPBackend]) -> None:
    """torch.nn.attention.sdpa_kernel and torch.backends.cuda.enable_*_sdp decide the path."""
    q, k, v = (_randn(2, 3, 5, 8, seed=i) for i in range(3))
    with sdpa_kernel(backends):
        _check_sdpa(q, k, v)
        _check_sdpa(q, k, v, is_causal=True)
        if SDPBackend.MATH in backends:
            _check_sdpa(q, k, v, dropout_p=0.2)
    flash = torch.backends.cuda.flash_sdp_enabled()
    torch.backends.cuda.enable_flash_sdp(False)
    try:
        _check_sdpa(q, k, v, _mask("bool", 5, 5, torch.float32))
    finally:
        torch.backends.cuda.enable_flash_sdp(flash)


def test_sdpa_paths_are_torchs() -> None:
    """The path taken is the one torch's own graph shows."""
    q, k, v = (_randn(2, 3, 5, 8, seed=i).requires_grad_() for i in range(3))
    sq, sk, sv = (shimnn.Parameter(t.detach().clone()) for t in (q, k, v))
    for kw in ({}, {"dropout_p": 0.1}, {"is_causal": True}):
        assert sdpa(q, k, v, **kw).grad_fn.name() == sdpa(sq, sk, sv, **kw).shim_fn.name
    with sdpa_kernel([SDPBackend.MATH]):
        assert sdpa(sq, sk, sv).shim_fn.name == "UnsafeViewBackward0"


def test_sdpa_edge_values() -> None:
    """Rows fully masked (the safe softmax's zeros; flash's NaN), dropout 1, large scores."""
    q, k, v = (_randn(2, 3, 5, 8, seed=i) for i in range(3))
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[1] = False
    for p in (0.0, 0.2, 1.0):
        _check_sdpa(q, k, v, mask, dropout_p=p)
    _check_sdpa(q * 100, k * 100, v, dropout_p=0.0)
    _check_sdpa(q * 100, k * 100, v, dropout_p=0.1)
    _check_sdpa(q[:, :, :0], k, v)  # empty query


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from([1, 2, 7, 16]), st.booleans(), st.booleans())
def test_sdpa_hypothesis_shapes(n: int, h: int, L: int, S: int, e: int, dropout: bool,
                                causal: bool) -> None:
    q, k, v = _randn(n, h, L, e, seed=1), _randn(n, h, S, e, seed=2), _randn(n, h, S, e, seed=3)
    _check_sdpa(q, k, v, dropout_p=0.3 if dropout else 0.0, is_causal=causal)


def test_sdpa_in_place_and_views_of_the_output() -> None:
    q, k, v = (_randn(2, 3, 5, 8, seed=i) for i in range(3))

    def f(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = sdpa(a, b, c, dropout_p=0.1)  # math: the output is not saved
        out.mul_(2)
        return out[:, 1].transpose(-2, -1) * 3

    check_call(f, f, (q, k, v))

    def flash(nn_param: Any) -> None:
        out = sdpa(*(nn_param(t.clone()) for t in (q, k, v)))
        out.mul_(2)  # flash's backward reads its output: torch refuses
        out.sum().backward()

    check_raises_like(lambda: flash(torch.nn.Parameter), lambda: flash(shimnn.Parameter))

    def into_buffer(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        buf = torch.zeros(2, 2, 3, 5, 8)
        buf[0] = sdpa(a, b, c)
        buf[1] = sdpa(a, b, c, dropout_p=0.1)
        return buf

    check_call(into_buffer, into_buffer, (q, k, v))


def test_sdpa_saved_tensors_modified_in_place_raise_like_torch() -> None:
    q, k, v = (_randn(2, 3, 5, 8, seed=i) for i in range(3))
    for p in (0.0, 0.2):
        def run(nn_param: Any, p: float = p) -> None:
            a, b, c = (nn_param(t.clone()) for t in (q, k, v))
            out = sdpa(a, b, c, dropout_p=p)
            with torch.no_grad():
                c.mul_(2)  # value: saved by both paths (the kernel; the last matmul)
            out.sum().backward()

        check_raises_like(lambda: run(torch.nn.Parameter), lambda: run(shimnn.Parameter))


def test_sdpa_hooks_and_retain_grad() -> None:
    q, k, v = (_randn(2, 3, 5, 8, seed=i) for i in range(3))
    for p in (0.0, 0.2):
        seen: dict[str, list[torch.Tensor]] = {"torch": [], "shimnn": []}

        def f(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, p: float = p) -> torch.Tensor:
            out = sdpa(a, b, c, dropout_p=p)
            key = "shimnn" if isinstance(out, shimnn.TrackedTensor) else "torch"
            out.register_hook(lambda g, key=key: seen[key].append(g.clone()) or g * 2)
            out.retain_grad()
            return out

        check_call(f, f, (q, k, v))
        assert_same(seen["shimnn"][0], seen["torch"][0], "hook's gradient")


@pytest.mark.filterwarnings("ignore:.*(Flash attention kernel not used|non-zero dropout)")
@pytest.mark.parametrize("dtype", DTYPES)
def test_sdpa_errors_like_torch(dtype: torch.dtype) -> None:
    q, k, v = (_randn(2, 3, 5, 8, dtype=dtype, seed=i) for i in range(3))
    cases = [
        lambda m: sdpa(m(q), m(k.float() if dtype == torch.float64 else k.double()), m(v)),
        lambda m: sdpa(m(q), m(k), m(v), torch.ones(5, 6, dtype=torch.int64)),
        lambda m: sdpa(m(q[0, 0, 0]), m(k), m(v)),
        lambda m: sdpa(m(q), m(k), m(v), torch.ones(5, 6, dtype=torch.bool), is_causal=True,
                       dropout_p=0.1),
        lambda m: sdpa(m(q), m(k[:, :2]), m(v[:, :2]), enable_gqa=True, dropout_p=0.1),
        lambda m: sdpa(m(q), m(k), m(v), dropout_p=1.5),
        lambda m: sdpa(m(q), m(k), m(v), dropout_p=-0.5),
        lambda m: sdpa(m(q), m(k[..., :4]), m(v)),
    ]
    for case in cases:
        check_raises_like(lambda case=case: case(lambda t: t.clone().requires_grad_()),
                          lambda case=case: case(lambda t: shimnn.Parameter(t.clone())))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        check_raises_like(lambda: sdpa(q.requires_grad_(), k, v, dropout_p=0.3),
                          lambda: sdpa(shimnn.Parameter(q.detach()), k, v, dropout_p=0.3))


def test_sdpa_finite_differences() -> None:
    q, k, v = (_randn(2, 2, 4, 3, dtype=torch.float64, seed=i) for i in range(3))
    mask = _randn(4, 4, dtype=torch.float64, seed=5)
    assert gradcheck(lambda a, b, c: sdpa(a, b, c), q.requires_grad_(), k.requires_grad_(),
                     v.requires_grad_())
    assert gradcheck(lambda a, b, c: sdpa(a, b, c, is_causal=True, scale=0.7), q, k, v)
    assert gradcheck(lambda a, b, c, m: sdpa(a, b, c, m), q, k, v, mask.requires_grad_())
    with sdpa_kernel([SDPBackend.MATH]):
        assert gradcheck(lambda a, b, c: sdpa(a, b, c, scale=-0.4), q, k, v)


def test_sdpa_without_gradients_returns_torchs_values() -> None:
    q, k, v = (_randn(2, 3, 5, 8, seed=i) for i in range(3))
    sq = shimnn.Parameter(q.clone())
    with torch.no_grad():
        torch.manual_seed(1)
        ref = sdpa(q, k, v, dropout_p=0.2)
        torch.manual_seed(1)
        out = sdpa(sq, k, v, dropout_p=0.2)
    assert isinstance(out, shimnn.TrackedTensor) and not out.requires_grad
    assert_same(out, ref)
    # a mask that requires grad rules flash out even under no_grad (torch reads the flag)
    mask = _randn(5, 5, seed=9)
    with torch.no_grad():
        ref = sdpa(q, k, v, mask.clone().requires_grad_())
        out = sdpa(sq, k, v, shimnn.Parameter(mask.clone()))
    assert_same(out, ref)


# ---------------------------------------------------------------------------------------------
# F.multi_head_attention_forward
# ---------------------------------------------------------------------------------------------

E, H, L, N = 8, 2, 5, 3


def _mha_params(dtype: torch.dtype, separate: bool, bias: bool, bias_kv: bool
                ) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(11)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, dtype=dtype, generator=g)

    return {"in_proj_weight": None if separate else r(3 * E, E),
            "in_proj_bias": r(3 * E) if bias else None,
            "q_proj_weight": r(E, E) if separate else None,
            "k_proj_weight": r(E, 6) if separate else None,
            "v_proj_weight": r(E, 7) if separate else None,
            "bias_k": r(1, 1, E) if bias_kv else None, "bias_v": r(1, 1, E) if bias_kv else None,
            "out_proj_weight": r(E, E), "out_proj_bias": r(E) if bias else None}


_PARAM_ORDER = ("in_proj_weight", "in_proj_bias", "bias_k", "bias_v", "out_proj_weight",
                "out_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def _mha_call(kind: str, params: dict[str, Any], **kwargs: Any) -> Any:
    names = [n for n in _PARAM_ORDER if params[n] is not None]

    def call(*tensors: torch.Tensor) -> Any:
        if kind == "self":
            q = k = v = tensors[0]
            rest = tensors[1:]
        elif kind == "kv":
            q, k = tensors[:2]
            v = k
            rest = tensors[2:]
        elif kind == "qk":
            q = k = tensors[0]
            v = tensors[1]
            rest = tensors[2:]
        else:
            q, k, v = tensors[:3]
            rest = tensors[3:]
        p = dict.fromkeys(_PARAM_ORDER)
        p.update(zip(names, rest))
        return TF.multi_head_attention_forward(
            q, k, v, E, H, p["in_proj_weight"], p["in_proj_bias"], p["bias_k"], p["bias_v"],
            kwargs.get("add_zero_attn", False), kwargs.get("dropout_p", 0.0),
            p["out_proj_weight"], p["out_proj_bias"], training=kwargs.get("training", True),
            key_padding_mask=kwargs.get("key_padding_mask"),
            need_weights=kwargs.get("need_weights", True), attn_mask=kwargs.get("attn_mask"),
            use_separate_proj_weight=p["q_proj_weight"] is not None,
            q_proj_weight=p["q_proj_weight"], k_proj_weight=p["k_proj_weight"],
            v_proj_weight=p["v_proj_weight"],
            average_attn_weights=kwargs.get("average_attn_weights", True),
            is_causal=kwargs.get("is_causal", False))

    return call, [params[n] for n in names]


def _mha_inputs(kind: str, dtype: torch.dtype, S: int, separate: bool, unbatched: bool = False
                ) -> list[torch.Tensor]:
    def shape(t: int, e: int) -> tuple[int, ...]:
        return (t, e) if unbatched else (t, N, e)

    x = _randn(*shape(L, E), dtype=dtype, seed=21)
    if kind == "self":
        return [x]
    if kind == "kv":
        return [x, _randn(*shape(S, E), dtype=dtype, seed=22)]
    if kind == "qk":
        return [x, _randn(*shape(L, E), dtype=dtype, seed=23)]
    return [x, _randn(*shape(S, 6 if separate else E), dtype=dtype, seed=22),
            _randn(*shape(S, 7 if separate else E), dtype=dtype, seed=23)]


MASKS = [None, "bool", "float 3-d", "kpm bool", "kpm float", "both bool", "causal"]


def _mha_masks(kind: str, S: int, dtype: torch.dtype) -> dict[str, Any]:
    g = torch.Generator().manual_seed(9)
    out: dict[str, Any] = {}
    if kind in ("bool", "both bool"):
        out["attn_mask"] = torch.rand(L, S, generator=g) > 0.7
    if kind == "float 3-d":
        out["attn_mask"] = torch.randn(N * H, L, S, dtype=dtype, generator=g)
    if kind in ("kpm bool", "both bool"):
        out["key_padding_mask"] = torch.rand(N, S, generator=g) > 0.7
    if kind == "kpm float":
        out["key_padding_mask"] = torch.randn(N, S, dtype=dtype, generator=g)
    if kind == "causal":
        out["attn_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(
            L, dtype=dtype)[:, :S]
        out["is_causal"] = S == L
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["self", "kv", "qkv", "qk", "separate"])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("extras", ["plain", "bias_kv", "zero_attn", "bias_kv zero_attn",
                                    "no bias"])
def test_multi_head_attention_forward_matches_torch(dtype: torch.dtype, kind: str,
                                                    need_weights: bool, extras: str) -> None:
    separate = kind == "separate"
    kind = "qkv" if separate else kind
    S = L if kind in ("self", "qk") else 4
    params = _mha_params(dtype, separate, "no bias" not in extras, "bias_kv" in extras)
    for mask, dropout_p in itertools.product(MASKS, (0.0, 0.25)):
        call, tensors = _mha_call(kind, params, need_weights=need_weights, dropout_p=dropout_p,
                                  add_zero_attn="zero_attn" in extras,
                                  **_mha_masks(mask, S, dtype))
        check_call(call, call, [*_mha_inputs(kind, dtype, S, separate), *tensors])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["self", "kv", "qkv", "qk"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multi_head_attention_forward_variants(dtype: torch.dtype, kind: str,
                                               need_weights: bool) -> None:
    """Unbatched inputs, per-head weights, eval (no dropout), inputs without gradient."""
    S = L if kind in ("self", "qk") else 4
    params = _mha_params(dtype, False, True, False)
    kpm = torch.tensor([False, True] + [False] * (S - 2))
    for kwargs, unbatched in (({}, True), ({"key_padding_mask": kpm}, True),
                              ({"average_attn_weights": False}, False),
                              ({"training": False, "dropout_p": 0.5}, False),
                              ({"dropout_p": 1.0}, False)):
        call, tensors = _mha_call(kind, params, need_weights=need_weights, **kwargs)
        check_call(call, call, [*_mha_inputs(kind, dtype, S, False, unbatched), *tensors])
    call, tensors = _mha_call(kind, params, need_weights=need_weights)
    inputs = _mha_inputs(kind, dtype, S, False)
    check_call(lambda *t: call(*inputs, *t), lambda *t: call(*inputs, *t), tensors)


def test_multi_head_attention_forward_static_kv() -> None:
    params = _mha_params(torch.float64, False, True, False)
    x = _randn(L, N, E, dtype=torch.float64)
    static = _randn(N * H, 4, E // H, dtype=torch.float64, seed=5)

    def call(q: torch.Tensor, sk: torch.Tensor, sv: torch.Tensor, *p: torch.Tensor) -> Any:
        return TF.multi_head_attention_forward(q, q, q, E, H, p[0], p[1], None, None, False,
                                               0.1, p[2], p[3], static_k=sk, static_v=sv)

    check_call(call, call, [x, static, static * 2, params["in_proj_weight"],
                            params["in_proj_bias"], params["out_proj_weight"],
                            params["out_proj_bias"]])


def test_multi_head_attention_forward_errors_like_torch() -> None:
    params = _mha_params(torch.float32, False, True, False)
    x = _randn(L, N, E)
    cases: list[dict[str, Any]] = [
        {"attn_mask": torch.zeros(L, L + 1, dtype=torch.bool)},
        {"attn_mask": torch.zeros(N, L, L, dtype=torch.bool)},
        {"attn_mask": torch.zeros(1, 1, L, L, dtype=torch.bool)},
        {"key_padding_mask": torch.zeros(N, L + 1, dtype=torch.bool)},
        {"key_padding_mask": torch.zeros(N, L, dtype=torch.int64)},
        {"is_causal": True},
        {"is_causal": True, "need_weights": True, "attn_mask": None},
    ]
    for kwargs in cases:
        call, tensors = _mha_call("self", params, **kwargs)

        def run(make: Any, call: Any = call, tensors: Any = tensors) -> Any:
            return call(make(x), *(make(t) for t in tensors))

        check_raises_like(lambda run=run: run(lambda t: t.clone().requires_grad_()),
                          lambda run=run: run(lambda t: shimnn.Parameter(t.clone())))
    check_raises_like(
        lambda: TF.multi_head_attention_forward(x, x, x, E + 1, H, *([None] * 4), False, 0.0,
                                                params["out_proj_weight"], None),
        lambda: TF.multi_head_attention_forward(shimnn.Parameter(x), x, x, E + 1, H,
                                                *([None] * 4), False, 0.0,
                                                params["out_proj_weight"], None))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("extras", ["plain", "bias_kv zero_attn"])
def test_multi_head_attention_forward_float_masks_that_need_gradients(
        dtype: torch.dtype, need_weights: bool, extras: str) -> None:
    """Float masks that require grad: their gradients through the pads, the padding mask's
    per-head expansion and the merge (each summed to its shape), from the explicit scores
    (baddbmm) or SDPA's math path (taken because the mask needs a gradient)."""
    params = _mha_params(dtype, False, True, "bias_kv" in extras)
    zero_attn = "zero_attn" in extras
    x = _randn(L, N, E, dtype=dtype, seed=21)
    g = torch.Generator().manual_seed(5)
    masks = {"2-d": torch.randn(L, L, dtype=dtype, generator=g),
             "3-d": torch.randn(N * H, L, L, dtype=dtype, generator=g),
             "kpm": torch.randn(N, L, dtype=dtype, generator=g)}
    for which, dropout_p in itertools.product(
            [("2-d",), ("3-d",), ("kpm",), ("2-d", "kpm"), ("3-d", "kpm")], (0.0, 0.2)):
        def call(q: torch.Tensor, *rest: torch.Tensor, which: Any = which,
                 p: float = dropout_p) -> Any:
            ms = dict(zip(which, rest[:len(which)]))
            t = rest[len(which):]
            am = ms.get("2-d", ms.get("3-d"))
            return TF.multi_head_attention_forward(
                q, q, q, E, H, t[0], t[1], t[2] if len(t) > 4 else None,
                t[3] if len(t) > 4 else None, zero_attn, p, t[-2], t[-1],
                key_padding_mask=ms.get("kpm"), attn_mask=am, need_weights=need_weights)

        tensors = [params[n] for n in ("in_proj_weight", "in_proj_bias", "bias_k", "bias_v",
                                       "out_proj_weight", "out_proj_bias")
                   if params[n] is not None]
        check_call(call, call, [x, *(masks[w] for w in which), *tensors])
    # the mask alone needs a gradient
    call1, tensors1 = _mha_call("self", params, need_weights=need_weights,
                                add_zero_attn=zero_attn)
    check_call(lambda m: TF.multi_head_attention_forward(
        x, x, x, E, H, *tensors1[:2], None, None, False, 0.0, *tensors1[-2:], attn_mask=m,
        need_weights=need_weights), lambda m: TF.multi_head_attention_forward(
        x, x, x, E, H, *tensors1[:2], None, None, False, 0.0, *tensors1[-2:], attn_mask=m,
        need_weights=need_weights), [masks["2-d"]])


# ---------------------------------------------------------------------------------------------
# MultiheadAttention
# ---------------------------------------------------------------------------------------------

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "dropout": {"dropout": 0.3},
    "batch_first": {"batch_first": True},
    "kdim vdim": {"kdim": 6, "vdim": 7, "batch_first": True},
    "bias_kv zero_attn no bias": {"add_bias_kv": True, "add_zero_attn": True, "bias": False},
    "4 heads": {"num_heads": 4, "dropout": 0.1},
}


def _module_inputs(config: dict[str, Any], kind: str) -> list[torch.Tensor]:
    bf = config.get("batch_first", False)

    def t(length: int, e: int, seed: int) -> torch.Tensor:
        return _randn(*((N, length, e) if bf else (length, N, e)), seed=seed)

    x = t(L, E, 1)
    if "kdim" in config:
        return [x, t(4, 6, 2), t(4, 7, 3)]
    if kind == "self":
        return [x, x, x]
    mem = t(4, E, 2)
    return [x, mem, mem]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("kind", ["self", "cross"])
@pytest.mark.parametrize("call", [{}, {"need_weights": False},
                                  {"average_attn_weights": False}], ids=str)
def test_module_matches_torch(dtype: torch.dtype, config: dict[str, Any], kind: str,
                              call: dict[str, Any]) -> None:
    options = {"num_heads": H, **config}
    heads = options.pop("num_heads")
    inputs = _module_inputs(config, kind)
    S = inputs[1].shape[1 if config.get("batch_first") else 0]
    masks: list[dict[str, Any]] = [{}, {"key_padding_mask": torch.tensor(
        [[False] * S, [False] * (S - 1) + [True], [True] + [False] * (S - 1)])},
        {"attn_mask": torch.rand(L, S, generator=torch.Generator().manual_seed(3)) > 0.8}]
    if S == L:
        masks.append({"attn_mask": torch.nn.Transformer.generate_square_subsequent_mask(
            L, dtype=dtype), "is_causal": True})
    for mask in masks:
        check_module_call(lambda nn: nn.MultiheadAttention(E, heads, **options), inputs,
                          {**call, **mask}, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad mode"])
def test_module_eval_fast_path(dtype: torch.dtype, grad: bool) -> None:
    """In eval, batch-first self-attention without gradients takes torch's fused
    _native_multi_head_attention, whose values differ from the composite's: so does shimnn."""
    x = _randn(N, 7, 16, dtype=dtype)
    kpm = torch.zeros(N, 7, dtype=torch.bool)
    kpm[1, -2:] = True
    for kwargs in ({}, {"need_weights": False}, {"key_padding_mask": kpm},
                   {"attn_mask": torch.rand(7, 7, generator=torch.Generator().manual_seed(1))
                    > 0.8}):
        check_module_call(lambda nn: nn.MultiheadAttention(16, 2, batch_first=True), [x, x, x],
                          kwargs, dtype=dtype, training=False, requires_grad=grad,
                          grad=grad)


def test_module_api() -> None:
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(8, 2, kdim=6, vdim=5, add_bias_kv=True)
    torch.manual_seed(0)
    shim = shimnn.MultiheadAttention(8, 2, kdim=6, vdim=5, add_bias_kv=True)
    assert isinstance(shim, torch.nn.MultiheadAttention)
    assert isinstance(shim.out_proj, torch.nn.modules.linear.NonDynamicallyQuantizableLinear)
    assert isinstance(shim.out_proj, torch.nn.Linear) and isinstance(shim.out_proj,
                                                                     shimnn.Linear)
    assert repr(shim) == repr(ref)
    assert list(shim.state_dict()) == list(ref.state_dict())
    for (n, a), b in zip(shim.state_dict().items(), ref.state_dict().values()):
        assert_same(a, b, n)
    assert shimnn.MultiheadAttention.__constants__ == torch.nn.MultiheadAttention.__constants__
    for name in ("embed_dim", "kdim", "vdim", "_qkv_same_embed_dim", "num_heads", "dropout",
                 "batch_first", "head_dim", "add_zero_attn"):
        assert getattr(shim, name) == getattr(ref, name), name
    plain = shimnn.MultiheadAttention(8, 2)
    assert plain.bias_k is None and plain.in_proj_weight is not None
    for args in ((0, 2), (8, 0), (8, 3)):
        check_raises_like(lambda args=args: torch.nn.MultiheadAttention(*args),
                          lambda args=args: shimnn.MultiheadAttention(*args))


def test_module_in_place_on_outputs_and_hooks() -> None:
    x = _randn(L, N, E)

    def in_place(m: Any, t: torch.Tensor) -> Any:
        out, w = m(t, t, t)
        out.add_(1)
        w.mul_(2)  # averaged weights: a new tensor, free to modify
        return out, w

    def per_head(m: Any, t: torch.Tensor) -> Any:
        out, w = m(t, t, t, average_attn_weights=False)
        return out * 2, w.sum(-1)

    def hooked(m: Any, t: torch.Tensor) -> Any:
        out, w = m(t, t, t)
        out.register_hook(lambda g: g * 3)
        w.register_hook(lambda g: g + 1)
        return out, w

    for f in (in_place, per_head, hooked):
        torch.manual_seed(0)
        ref = torch.nn.MultiheadAttention(E, H, dropout=0.2)
        torch.manual_seed(0)
        shim = shimnn.MultiheadAttention(E, H, dropout=0.2)
        check_call(lambda t, f=f: f(ref, t), lambda t, f=f: f(shim, t), [x], ref_module=ref,
                   shim_module=shim)


def test_module_in_place_on_per_head_weights_raises_like_torch() -> None:
    """Per-head weights are a view of what the bmm saved: torch's backward refuses."""
    x = _randn(L, N, E)

    def run(nn: Any) -> None:
        torch.manual_seed(0)
        m = nn.MultiheadAttention(E, H)
        out, w = m(x, x, x, average_attn_weights=False)
        w.mul_(2)
        (out.sum() + w.sum()).backward()

    check_raises_like(lambda: run(torch.nn), lambda: run(shimnn))


@pytest.mark.parametrize("need_weights", [True, False])
def test_module_finite_differences(need_weights: bool) -> None:
    torch.manual_seed(0)
    m = shimnn.MultiheadAttention(4, 2, add_bias_kv=True, kdim=3, vdim=5).double()
    q = _randn(3, 2, 4, dtype=torch.float64).requires_grad_()
    k = _randn(4, 2, 3, dtype=torch.float64, seed=1).requires_grad_()
    v = _randn(4, 2, 5, dtype=torch.float64, seed=2).requires_grad_()

    class Wrapped(shimnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = m

        def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> Any:
            out, w = self.m(a, b, c, need_weights=need_weights)
            return out if w is None else (out, w)

    assert gradcheck(Wrapped(), q, k, v)
    torch.manual_seed(0)
    s = shimnn.MultiheadAttention(4, 2).double()
    x = _randn(3, 2, 4, dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda t: s(t, t, t, need_weights=need_weights)[0], x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_module_db_samples(dtype: torch.dtype, training: bool) -> None:
    """torch's own test samples for nn.MultiheadAttention, bit for bit."""
    samples = module_db_samples(torch.nn.MultiheadAttention, dtype, training)
    assert samples
    for sample in samples:
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        check_module_call(lambda nn: nn.MultiheadAttention(*args, **kwargs),
                          list(sample.forward_input.args), dict(sample.forward_input.kwargs),
                          dtype=dtype, training=training)


def test_no_autograd_graph_and_no_torch_engine() -> None:
    torch.manual_seed(0)
    m = shimnn.MultiheadAttention(E, H, dropout=0.1)
    x = _randn(L, N, E).requires_grad_()
    with autograd_forbidden():
        out, w = m(x, x, x)
        assert isinstance(out, shimnn.TrackedTensor) and out.grad_fn is None
        assert out.shim_fn is w.shim_fn  # one node, two outputs
        (out.sum() + w.sum()).backward()
    assert x.grad is not None and m.in_proj_weight.grad is not None
    assert A.multi_head_attention_forward is shimnn.functional.multi_head_attention_forward
