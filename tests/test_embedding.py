"""Embedding and F.embedding against torch: values, weight gradients, renormed weights, the
module's API, and torch's own module_db samples."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as TF

import shimnn
import shimnn.functional as F
from conftest import assert_same, autograd_forbidden
from parity import check_function, check_module, check_raises_like, twin_modules
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
    check_function(lambda weight: F.embedding(IDX, weight, **options), w)
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
