"""Embedding, EmbeddingBag, F.embedding and F.embedding_bag against torch: values, weight
gradients, renormed weights, the modules' API, and torch's own module_db samples (Embedding;
module_db has none for EmbeddingBag)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as TF

import shimnn
import shimnn.functional as F
from conftest import assert_same, autograd_forbidden
from parity import check_function, check_module, check_raises_like, twin_modules
from shimnn.testing import assert_matches_torch
from test_gradcheck import numerical_grad

DTYPES = [torch.float32, torch.float64]

IDX = torch.tensor([[0, 2, 2, 1], [3, 3, 3, 0]])

OPTIONS: list[dict[str, Any]] = [
    {}, {"padding_idx": 2}, {"padding_idx": -1}, {"padding_idx": 0}, {"max_norm": 1.0},
    {"max_norm": 0.5, "norm_type": 1.0}, {"max_norm": 1.5, "norm_type": 3.0},
    {"scale_grad_by_freq": True}, {"scale_grad_by_freq": True, "padding_idx": 0,
                                   "max_norm": 2.0},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("indices", [IDX, IDX[0], IDX[1, 1], IDX.int(), IDX.t(),
                                     torch.zeros(0, 3, dtype=torch.int64)],
                         ids=["2-d", "1-d", "0-d", "int32", "non-contiguous", "empty"])
def test_module_matches_torch(options: dict[str, Any], dtype: torch.dtype,
                              indices: torch.Tensor) -> None:
    """Output, weight gradient and (with max_norm) the renormalized weight, bit for bit."""
    ref, shim = twin_modules(lambda nn: nn.Embedding(5, 3, dtype=dtype, **options))
    check_module(ref, shim, [indices])
    assert_same(shim.weight, ref.weight, "weight after the forward")
    assert repr(shim) == repr(ref)


def test_construction_api_matches_torch() -> None:
    for options in OPTIONS + [{"sparse": True}, {"norm_type": 1.0}]:
        ref, shim = twin_modules(lambda nn: nn.Embedding(7, 4, **options))
        assert repr(shim) == repr(ref)
        assert list(shim.state_dict()) == list(ref.state_dict())
        for name in torch.nn.Embedding.__constants__:
            assert getattr(shim, name) == getattr(ref, name), name
    assert shimnn.Embedding.__constants__ == torch.nn.Embedding.__constants__
    for bad in (5, -6):
        check_raises_like(lambda: torch.nn.Embedding(5, 2, padding_idx=bad),
                          lambda: shimnn.Embedding(5, 2, padding_idx=bad))


@pytest.mark.parametrize("freeze", [True, False])
def test_from_pretrained(freeze: bool) -> None:
    weights = torch.randn(6, 3)
    ref = torch.nn.Embedding.from_pretrained(weights.clone(), freeze=freeze, padding_idx=1)
    shim_weights = weights.clone()
    shim = shimnn.Embedding.from_pretrained(shim_weights, freeze=freeze, padding_idx=1)
    assert isinstance(shim, shimnn.Embedding)
    assert shim.weight.requires_grad is not freeze
    assert shim.weight.data_ptr() == shim_weights.data_ptr()  # shared, as torch
    assert repr(shim) == repr(ref)
    x = torch.tensor([1, 0, 5, 5])
    ref_out = ref(x)
    with autograd_forbidden():
        out = shim(x)
    assert_same(out, ref_out)
    assert out.requires_grad is ref_out.requires_grad
    if not freeze:
        g = torch.randn(4, 3)
        ref_out.backward(g)
        with autograd_forbidden():
            out.backward(g)
        assert_same(shim.weight.grad, ref.weight.grad)
    check_raises_like(lambda: torch.nn.Embedding.from_pretrained(weights[0]),
                      lambda: shimnn.Embedding.from_pretrained(weights[0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_functional_forms(options: dict[str, Any], dtype: torch.dtype) -> None:
    """``F.embedding`` (shimnn's and torch's, reaching shimnn), ``torch.embedding``."""
    w = torch.randn(5, 3, dtype=dtype)
    check_function(lambda weight: TF.embedding(IDX, weight, **options), w)
    # shimnn's own F.embedding against torch's (one function on both sides would run shimnn's
    # on both: assert_matches_torch refuses a reference that returns a shimnn tensor).
    assert_matches_torch(lambda weight: F.embedding(IDX, weight, **options),
                         lambda weight: TF.embedding(IDX, weight, **options), w)
    pad = options.get("padding_idx", -1)
    pad = pad + 5 if pad < 0 and pad != -1 else pad
    check_function(lambda weight: torch.embedding(weight, IDX, pad,
                                                  options.get("scale_grad_by_freq", False)), w)


def test_tied_weights_fan_in() -> None:
    """A weight used by the lookup and by an output projection (weight tying): the two
    gradients are summed in torch's order."""
    def make(nn: Any) -> torch.nn.Module:
        class LM(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = nn.Embedding(11, 6, padding_idx=0)
                self.hidden = nn.Linear(6, 6)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                h = torch.tanh(self.hidden(self.emb(x)))
                return h @ self.emb.weight.t()

        return LM()

    ref, shim = twin_modules(make)
    check_module(ref, shim, [torch.tensor([[1, 4, 4, 0], [10, 3, 0, 0]])])


def test_max_norm_bumps_the_weight_version_like_torch() -> None:
    """torch renormalizes in place: a tensor saved from the weight before is stale."""
    def run(emb: Any) -> torch.Tensor:
        before = (emb.weight * emb.weight).sum()  # saves the weight
        return before + emb(IDX).sum()

    ref, shim = twin_modules(lambda nn: nn.Embedding(5, 3, max_norm=0.1))
    ref_loss, shim_loss = run(ref), run(shim)
    check_raises_like(ref_loss.backward, shim_loss.backward)


def test_sparse_refused_with_a_gradient_only() -> None:
    ref, shim = twin_modules(lambda nn: nn.Embedding(5, 3, sparse=True))
    with pytest.raises(NotImplementedError, match="shimnn.*sparse"):
        shim(IDX)
    with pytest.raises(NotImplementedError, match="shimnn.*sparse"):
        TF.embedding(IDX, shim.weight, sparse=True)
    with torch.no_grad():
        assert_same(shim(IDX), ref(IDX))


def test_bad_indices_fail_like_torch() -> None:
    ref, shim = twin_modules(lambda nn: nn.Embedding(5, 3))
    for bad in (torch.tensor([5]), torch.tensor([-1]), torch.tensor([0.0])):
        check_raises_like(lambda: ref(bad), lambda: shim(bad))
    w = torch.randn(5, 3)
    check_raises_like(lambda: TF.embedding(IDX, w.clone().requires_grad_(), padding_idx=7),
                      lambda: TF.embedding(IDX, shimnn.Parameter(w.clone()), padding_idx=7))


def test_finite_differences() -> None:
    w = shimnn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    weights = torch.randn(2, 4, 3, dtype=torch.float64)

    def loss() -> torch.Tensor:
        return (F.embedding(IDX, w, padding_idx=3, scale_grad_by_freq=True) * weights).sum()

    with autograd_forbidden():
        loss().backward()
    # scale_grad_by_freq and padding_idx are not derivatives of the lookup: compare with the
    # finite differences scaled the same way (counts of each index; none for the padding row)
    counts = torch.bincount(IDX.reshape(-1), minlength=5).to(torch.float64).clamp(min=1)
    expected = numerical_grad(loss, w) / counts[:, None]
    expected[3] = 0
    torch.testing.assert_close(w.grad, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_module_db_samples(dtype: torch.dtype, training: bool) -> None:
    """torch's own test samples for nn.Embedding, bit for bit."""
    common_modules = pytest.importorskip("torch.testing._internal.common_modules")
    info = next(m for m in common_modules.module_db if m.module_cls is torch.nn.Embedding)
    samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                      training=training)
    assert samples
    for sample in samples:
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        ref, shim = twin_modules(lambda nn: nn.Embedding(*args, **kwargs, dtype=dtype))
        ref.train(training)
        shim.train(training)
        check_module(ref, shim, list(sample.forward_input.args))


# ---------------------------------------------------------------------------------------------
# EmbeddingBag
# ---------------------------------------------------------------------------------------------

FLAT = torch.tensor([0, 2, 2, 1, 4, 4, 3, 0, 1])
OFFSETS = torch.tensor([0, 3, 3, 5])  # bag 1 is empty

BAG_OPTIONS: list[dict[str, Any]] = [
    {"mode": "sum"}, {"mode": "mean"}, {"mode": "max"}, {"mode": "sum", "padding_idx": 2},
    {"mode": "mean", "padding_idx": -1}, {"mode": "max", "padding_idx": 0},
    {"mode": "mean", "scale_grad_by_freq": True}, {"mode": "sum", "max_norm": 1.0},
    {"mode": "max", "max_norm": 0.7, "norm_type": 1.0},
]


def _bag_inputs(options: dict[str, Any], layout: str, weighted: bool, dtype: torch.dtype
                ) -> list[Any]:
    g = torch.Generator().manual_seed(3)
    if layout == "2-d":
        args: list[Any] = [IDX]
    elif layout == "last offset":
        args = [FLAT, torch.cat([OFFSETS, torch.tensor([FLAT.numel()])])]
    elif layout == "int32 indices":
        args = [FLAT.int(), OFFSETS]
    else:
        args = [FLAT, OFFSETS]
    if weighted:
        if len(args) == 1:
            args.append(None)
        args.append(torch.rand(args[0].shape, generator=g, dtype=dtype))
    return args


class _Call(torch.nn.Module):
    """Calls ``bag(*args)`` with ``None`` offsets allowed (check_module passes tensors)."""

    def __init__(self, bag: torch.nn.Module, none_offsets: bool) -> None:
        super().__init__()
        self.bag = bag
        self.none_offsets = none_offsets

    def forward(self, *args: Any) -> Any:
        if self.none_offsets:
            return self.bag(args[0], None, *args[1:])
        return self.bag(*args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", BAG_OPTIONS, ids=str)
@pytest.mark.parametrize("layout", ["2-d", "offsets", "last offset", "int32 indices"])
@pytest.mark.parametrize("weighted", [False, True])
def test_embedding_bag_matches_torch(options: dict[str, Any], layout: str, weighted: bool,
                                     dtype: torch.dtype) -> None:
    if weighted and options["mode"] != "sum":
        pytest.skip("per_sample_weights: mode='sum' only (see the error test)")
    kwargs = dict(options, include_last_offset=layout == "last offset")
    ref, shim = twin_modules(lambda nn: nn.EmbeddingBag(5, 3, dtype=dtype, **kwargs))
    args = _bag_inputs(options, layout, weighted, dtype)
    none_offsets = len(args) > 1 and args[1] is None
    tensors = [a for a in args if a is not None]
    check_module(_Call(ref, none_offsets), _Call(shim, none_offsets), tensors)
    assert_same(shim.weight, ref.weight, "weight after the forward")
    assert repr(shim) == repr(ref)


def test_embedding_bag_api_and_errors() -> None:
    for options in BAG_OPTIONS + [{"sparse": True, "include_last_offset": True}]:
        ref, shim = twin_modules(lambda nn: nn.EmbeddingBag(6, 2, **options))
        assert repr(shim) == repr(ref)
        assert list(shim.state_dict()) == list(ref.state_dict())
        for name in torch.nn.EmbeddingBag.__constants__:
            assert getattr(shim, name) == getattr(ref, name), name
    ref, shim = twin_modules(lambda nn: nn.EmbeddingBag(5, 3, mode="max"))
    bad_calls = [
        lambda m: m(FLAT),  # 1-d without offsets
        lambda m: m(IDX, OFFSETS),  # 2-d with offsets
        lambda m: m(FLAT[None, None]),  # 3-d
        lambda m: m(FLAT, OFFSETS, torch.rand(9)),  # per_sample_weights with mode max
        lambda m: m(FLAT, OFFSETS, torch.rand(3)),  # per_sample_weights of the wrong shape
        lambda m: m(torch.tensor([5]), torch.tensor([0])),  # index out of range
    ]
    for call in bad_calls:
        check_raises_like(lambda: call(ref), lambda: call(shim))
    w = torch.randn(5, 3)
    check_raises_like(
        lambda: TF.embedding_bag(FLAT, w.clone().requires_grad_(), OFFSETS, padding_idx=9),
        lambda: TF.embedding_bag(FLAT, shimnn.Parameter(w.clone()), OFFSETS, padding_idx=9))
    for mode, extra in (("max", {"scale_grad_by_freq": True}), ("median", {})):
        check_raises_like(
            lambda: TF.embedding_bag(IDX, w.clone().requires_grad_(), mode=mode, **extra),
            lambda: TF.embedding_bag(IDX, shimnn.Parameter(w.clone()), mode=mode, **extra))
    sparse = shimnn.EmbeddingBag(5, 3, sparse=True)
    with pytest.raises(NotImplementedError, match="shimnn.*sparse"):
        sparse(IDX)


@pytest.mark.parametrize("freeze", [True, False])
def test_embedding_bag_from_pretrained(freeze: bool) -> None:
    weights = torch.randn(6, 3)
    ref = torch.nn.EmbeddingBag.from_pretrained(weights.clone(), freeze=freeze, mode="sum")
    shim = shimnn.EmbeddingBag.from_pretrained(weights.clone(), freeze=freeze, mode="sum")
    assert isinstance(shim, shimnn.EmbeddingBag)
    assert shim.weight.requires_grad is not freeze
    assert repr(shim) == repr(ref)
    ref_out = ref(IDX)
    with autograd_forbidden():
        out = shim(IDX)
    assert_same(out, ref_out)
    if not freeze:
        g = torch.randn(2, 3)
        ref_out.backward(g)
        with autograd_forbidden():
            out.backward(g)
        assert_same(shim.weight.grad, ref.weight.grad)


def test_embedding_bag_finite_differences() -> None:
    w = shimnn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    psw = shimnn.Parameter(torch.rand(9, dtype=torch.float64))
    weights = torch.randn(4, 3, dtype=torch.float64)
    for mode, per_sample in (("sum", psw), ("mean", None), ("max", None)):
        w.grad = psw.grad = None

        def loss() -> torch.Tensor:
            return (F.embedding_bag(FLAT, w, OFFSETS, mode=mode,
                                    per_sample_weights=per_sample) * weights).sum()

        with autograd_forbidden():
            loss().backward()
        for t in (w, per_sample) if per_sample is not None else (w,):
            torch.testing.assert_close(t.grad, numerical_grad(loss, t), rtol=1e-6, atol=1e-8)
