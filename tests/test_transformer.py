"""Transformer layers against torch, bit for bit: TransformerEncoderLayer, TransformerEncoder,
TransformerDecoderLayer, TransformerDecoder and Transformer over norm_first, activations,
batch_first, masks of each kind and dropout; the inference fast paths torch takes in eval mode
(its fused encoder layer, the nested-tensor encoder); torch's module_db samples; finite
differences; a few training steps."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import shimnn
from attention_parity import check_call, check_module_call, module_db_samples
from conftest import assert_same, autograd_forbidden
from parity import check_raises_like
from shimnn.testing import gradcheck

# torch's TransformerEncoder warns when its layers cannot take the nested-tensor path, and its
# layers when a boolean padding mask meets a float causal mask (both sides warn alike).
pytestmark = [pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
              pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
              pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")]

DTYPES = [torch.float32, torch.float64]
D, NHEAD, FF = 16, 4, 32


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _causal(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.nn.Transformer.generate_square_subsequent_mask(n, dtype=dtype)


def _padding(n: int, length: int) -> torch.Tensor:
    kpm = torch.zeros(n, length, dtype=torch.bool)
    kpm[1, -2:] = True
    return kpm


LAYER_OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "batch_first": {"batch_first": True},
    "norm_first": {"norm_first": True},
    "gelu": {"activation": "gelu", "batch_first": True},
    "callable": {"activation": torch.nn.functional.silu, "norm_first": True},
    "module activation": {"activation": torch.nn.GELU(approximate="tanh")},
    "no bias, eps": {"bias": False, "layer_norm_eps": 1e-3},
    "no dropout": {"dropout": 0.0, "batch_first": True},
}


def _seq(options: dict[str, Any], length: int, seed: int) -> torch.Tensor:
    return _randn(3, length, D, seed=seed) if options.get("batch_first") else _randn(
        length, 3, D, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", LAYER_OPTIONS.values(), ids=LAYER_OPTIONS.keys())
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_encoder_layer_matches_torch(dtype: torch.dtype, options: dict[str, Any],
                                     training: bool) -> None:
    x = _seq(options, 5, 1)
    masks: list[dict[str, Any]] = [
        {}, {"src_mask": _causal(5, dtype), "is_causal": True},
        {"src_mask": _causal(5, dtype)},
        {"src_key_padding_mask": _padding(3, 5)},
        {"src_mask": torch.rand(5, 5, generator=torch.Generator().manual_seed(2)) > 0.7,
         "src_key_padding_mask": _padding(3, 5)},
        {"src_mask": _randn(3 * NHEAD, 5, 5, seed=4).to(dtype)},
    ]
    for kwargs in masks:
        check_module_call(lambda nn: nn.TransformerEncoderLayer(D, NHEAD, FF, **options), [x],
                          kwargs, dtype=dtype, training=training)
    # unbatched
    check_module_call(lambda nn: nn.TransformerEncoderLayer(D, NHEAD, FF, **options),
                      [x[0] if options.get("batch_first") else x[:, 0]], {}, dtype=dtype,
                      training=training)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", LAYER_OPTIONS.values(), ids=LAYER_OPTIONS.keys())
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_decoder_layer_matches_torch(dtype: torch.dtype, options: dict[str, Any],
                                     training: bool) -> None:
    tgt, memory = _seq(options, 5, 1), _seq(options, 4, 2)
    masks: list[dict[str, Any]] = [
        {}, {"tgt_mask": _causal(5, dtype), "tgt_is_causal": True},
        {"tgt_mask": _causal(5, dtype), "tgt_key_padding_mask": _padding(3, 5),
         "memory_key_padding_mask": _padding(3, 4)},
        {"memory_mask": torch.rand(5, 4, generator=torch.Generator().manual_seed(3)) > 0.7},
        {"memory_mask": _randn(5, 4, seed=5).to(dtype)},
    ]
    for kwargs in masks:
        check_module_call(lambda nn: nn.TransformerDecoderLayer(D, NHEAD, FF, **options),
                          [tgt, memory], kwargs, dtype=dtype, training=training)
    # the same tensor as target and memory
    check_module_call(lambda nn: nn.TransformerDecoderLayer(D, NHEAD, FF, **options),
                      [tgt, tgt], {}, dtype=dtype, training=training)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [{}, {"batch_first": True, "norm_first": True},
                                     {"batch_first": True, "activation": "gelu"}], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_stacks_and_transformer_match_torch(dtype: torch.dtype, options: dict[str, Any],
                                            training: bool) -> None:
    src, tgt = _seq(options, 4, 1), _seq(options, 5, 2)
    enc_masks: list[dict[str, Any]] = [
        {}, {"mask": _causal(4, dtype)}, {"mask": _causal(4, dtype), "is_causal": True},
        {"src_key_padding_mask": _padding(3, 4)}]
    for kwargs in enc_masks:
        check_module_call(lambda nn: nn.TransformerEncoder(
            nn.TransformerEncoderLayer(D, NHEAD, FF, **options), 2, norm=nn.LayerNorm(D)),
            [src], kwargs, dtype=dtype, training=training)
    dec_masks: list[dict[str, Any]] = [
        {}, {"tgt_mask": _causal(5, dtype)},
        {"tgt_mask": _causal(5, dtype), "memory_key_padding_mask": _padding(3, 4),
         "tgt_key_padding_mask": _padding(3, 5)}]
    for kwargs in dec_masks:
        check_module_call(lambda nn: nn.TransformerDecoder(
            nn.TransformerDecoderLayer(D, NHEAD, FF, **options), 2),
            [tgt, src], kwargs, dtype=dtype, training=training)
    full_masks: list[dict[str, Any]] = [
        {}, {"tgt_mask": _causal(5, dtype), "src_key_padding_mask": _padding(3, 4),
             "memory_key_padding_mask": _padding(3, 4)},
        {"src_mask": _causal(4, dtype), "tgt_mask": _causal(5, dtype), "tgt_is_causal": True,
         "memory_mask": torch.zeros(5, 4, dtype=torch.bool)}]
    for kwargs in full_masks:
        check_module_call(lambda nn: nn.Transformer(D, NHEAD, 2, 2, FF, **options), [src, tgt],
                          kwargs, dtype=dtype, training=training)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
def test_inference_fast_paths(dtype: torch.dtype, norm_first: bool) -> None:
    """Eval without gradients: torch's fused encoder layer, and the nested-tensor encoder
    when a padding mask is given; shimnn gives torch's values (which differ from the
    composite's)."""
    x = _randn(3, 7, D, seed=1)
    kpm = _padding(3, 7)
    options = {"batch_first": True, "norm_first": norm_first}
    run = {"dtype": dtype, "training": False, "requires_grad": False, "grad": False,
           "no_grad": True}
    for kwargs in ({}, {"src_key_padding_mask": kpm}, {"src_mask": _causal(7, dtype)}):
        check_module_call(lambda nn: nn.TransformerEncoderLayer(D, NHEAD, FF, **options), [x],
                          kwargs, **run)
        stack_kwargs = {"mask" if k == "src_mask" else k: v for k, v in kwargs.items()}
        check_module_call(lambda nn: nn.TransformerEncoder(
            nn.TransformerEncoderLayer(D, NHEAD, FF, **options), 2,
            enable_nested_tensor=not norm_first), [x], stack_kwargs, **run)
    check_module_call(lambda nn: nn.Transformer(D, NHEAD, 2, 2, FF, batch_first=True),
                      [x, _randn(3, 5, D, seed=2)], {"src_key_padding_mask": kpm}, **run)
    # parameters that require no grad in grad mode: the same paths
    check_module_call(lambda nn: nn.TransformerEncoderLayer(D, NHEAD, FF, **options).requires_grad_(
        False), [x], {"src_key_padding_mask": kpm}, dtype=dtype, training=False,
        requires_grad=False, grad=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
def test_training_mode_without_gradients(dtype: torch.dtype, norm_first: bool) -> None:
    """Under no_grad in training mode (dropout on): the layer's values without a record."""
    x = _randn(3, 7, D, seed=1)
    for kwargs in ({}, {"src_key_padding_mask": _padding(3, 7)}):
        check_module_call(lambda nn: nn.TransformerEncoderLayer(D, NHEAD, FF, batch_first=True,
                                                                norm_first=norm_first),
                          [x], kwargs, dtype=dtype, requires_grad=False, grad=False,
                          no_grad=True)
        check_module_call(lambda nn: nn.TransformerEncoderLayer(D, NHEAD, FF,
                                                                norm_first=norm_first),
                          [x.transpose(0, 1)], kwargs, dtype=dtype, requires_grad=False,
                          grad=False, no_grad=True)


def test_fast_path_values_differ_from_the_composite() -> None:
    """The fast path is not a formality: torch's fused layer gives other bits."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(D, NHEAD, FF, batch_first=True).eval()
    x = _randn(3, 7, D)
    with torch.no_grad():
        fused = layer(x)
    composite = layer(x)
    assert not torch.equal(fused, composite)


def _shim_layer(layer: Any) -> Any:
    """The shimnn layer of the same configuration as torch's ``layer``."""
    encoder = isinstance(layer, torch.nn.TransformerEncoderLayer)
    cls = shimnn.TransformerEncoderLayer if encoder else shimnn.TransformerDecoderLayer
    shim = cls(layer.self_attn.embed_dim, layer.self_attn.num_heads,
               layer.linear1.out_features, layer.dropout.p, layer.activation,
               layer.norm1.eps, layer.self_attn.batch_first, layer.norm_first,
               layer.linear1.bias is not None, dtype=layer.linear1.weight.dtype)
    shim.load_state_dict(layer.state_dict())
    return shim


CLASSES = ["TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerDecoder", "Transformer"]
MODULE_DB = [c for c in CLASSES if c != "TransformerDecoder"]  # torch's module_db has none


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", MODULE_DB)
def test_module_db_samples(name: str, dtype: torch.dtype, training: bool) -> None:
    """torch's own test samples for each class, bit for bit."""
    samples = module_db_samples(getattr(torch.nn, name), dtype, training)
    assert samples
    for sample in samples:
        args = list(sample.constructor_input.args)
        kwargs = dict(sample.constructor_input.kwargs)
        if args and isinstance(args[0], torch.nn.Module):  # a stack of torch's layer
            layer = args.pop(0)

            def make(nn: Any, layer: Any = layer, args: Any = args, kwargs: Any = kwargs) -> Any:
                inner = layer if nn is torch.nn else _shim_layer(layer)
                return getattr(nn, name)(inner, *args, **kwargs)
        else:
            def make(nn: Any, args: Any = args, kwargs: Any = kwargs) -> Any:
                return getattr(nn, name)(*args, **kwargs)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_module_call(make, list(sample.forward_input.args),
                              dict(sample.forward_input.kwargs), dtype=dtype,
                              training=training)


def test_api_matches_torch() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(0)
        ref = torch.nn.Transformer(D, NHEAD, 2, 1, FF)
        torch.manual_seed(0)
        shim = shimnn.Transformer(D, NHEAD, 2, 1, FF)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and messages[0] == messages[1]  # the nested-tensor warning
    assert repr(shim) == repr(ref)
    assert list(shim.state_dict()) == list(ref.state_dict())
    for (n, a), b in zip(shim.state_dict().items(), ref.state_dict().values()):
        assert_same(a, b, n)
    for name in CLASSES + ["MultiheadAttention", "LayerNorm", "Linear", "Dropout"]:
        assert issubclass(getattr(shimnn, name), getattr(torch.nn, name))
    assert isinstance(shim.encoder.layers[0].self_attn, shimnn.MultiheadAttention)
    assert isinstance(shim.encoder.layers[0].norm1, shimnn.LayerNorm)
    for n in (1, 4):
        assert_same(shimnn.Transformer.generate_square_subsequent_mask(n),
                    torch.nn.Transformer.generate_square_subsequent_mask(n))
    layer = shimnn.TransformerEncoderLayer(D, NHEAD, activation="gelu")
    assert layer.activation_relu_or_gelu == 2
    assert shimnn.TransformerEncoderLayer(D, NHEAD, activation=torch.nn.ReLU()
                                          ).activation_relu_or_gelu == 1
    check_raises_like(lambda: torch.nn.TransformerEncoderLayer(D, NHEAD, activation="tanh"),
                      lambda: shimnn.TransformerEncoderLayer(D, NHEAD, activation="tanh"))
    check_raises_like(lambda: torch.nn.TransformerEncoderLayer(D, 3),
                      lambda: shimnn.TransformerEncoderLayer(D, 3))
    enc = shimnn.TransformerEncoder(shimnn.TransformerEncoderLayer(D, NHEAD, batch_first=True),
                                    2)
    assert enc.use_nested_tensor and len(enc.layers) == 2
    assert enc.layers[0] is not enc.layers[1]


def test_custom_encoder_and_decoder() -> None:
    def make(nn: Any) -> Any:
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, NHEAD, FF), 1)
        dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, NHEAD, FF), 1,
                                    norm=nn.LayerNorm(D))
        return nn.Transformer(D, NHEAD, custom_encoder=enc, custom_decoder=dec)

    check_module_call(make, [_randn(4, 3, D), _randn(5, 3, D, seed=1)])


def test_errors_like_torch() -> None:
    for nn in (torch.nn, shimnn):
        torch.manual_seed(0)
        model = nn.Transformer(D, NHEAD, 1, 1, FF)
        if nn is torch.nn:
            ref = model
        else:
            shim = model
    cases = [
        ((_randn(4, 3, D), _randn(5, 2, D)), {}),
        ((_randn(4, 3, D), _randn(5, 3, D + 1)), {}),
        ((_randn(4, 3, D), _randn(5, 3, D)), {"tgt_mask": torch.zeros(5, 4)}),
    ]
    for args, kwargs in cases:
        check_raises_like(lambda args=args, kwargs=kwargs: ref(*args, **kwargs),
                          lambda args=args, kwargs=kwargs: shim(*args, **kwargs))


def test_outputs_in_place_hooks_and_retain_grad() -> None:
    x = _randn(5, 3, D, seed=1)

    def use(layer: Any, t: torch.Tensor) -> Any:
        out = layer(t)
        out.register_hook(lambda g: g * 2)
        out.retain_grad()
        y = out * 1.5
        y[0].add_(1)
        return y

    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoderLayer(D, NHEAD, FF)
    torch.manual_seed(0)
    shim = shimnn.TransformerEncoderLayer(D, NHEAD, FF)
    check_call(lambda t: use(ref, t), lambda t: use(shim, t), [x], ref_module=ref,
               shim_module=shim)


def test_one_node_per_layer_and_the_composite_where_it_must() -> None:
    """ReLU/GELU layers of shimnn's modules run as one node; a submodule with a forward hook,
    another activation or a replaced submodule run as torch composes them (hooks included)."""
    x = _randn(5, 3, D, seed=1).requires_grad_()
    layer = shimnn.TransformerEncoderLayer(D, NHEAD, FF)
    out = layer(x)
    assert len(out.shim_fn.inputs) == 20  # src and the layer's 19 tensors
    layer.activation = torch.nn.functional.silu
    assert len(layer(x).shim_fn.inputs) != 20

    def with_hook(nn: Any) -> Any:
        m = nn.TransformerEncoderLayer(D, NHEAD, FF)
        m.linear1.register_forward_hook(lambda mod, args, out: out * 2)
        m.norm1.register_forward_pre_hook(lambda mod, args: (args[0] + 1,))
        return m

    check_module_call(with_hook, [_randn(5, 3, D, seed=1)])

    def replaced(nn: Any) -> Any:
        m = nn.TransformerEncoderLayer(D, NHEAD, FF)
        m.dropout2 = nn.Identity()
        return m

    check_module_call(replaced, [_randn(5, 3, D, seed=1)])


def test_finite_differences() -> None:
    torch.manual_seed(0)
    enc = shimnn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation="gelu").double()
    dec = shimnn.TransformerDecoderLayer(4, 2, 6, dropout=0.0, norm_first=True).double()
    x = _randn(3, 2, 4, seed=1).double().requires_grad_()
    m = _randn(2, 2, 4, seed=2).double().requires_grad_()
    assert gradcheck(enc, x)
    assert gradcheck(dec, x, m)


def test_training_steps_match_torch() -> None:
    """Five SGD steps of a small Transformer (dropout on): the same parameters, bit for bit."""
    src, tgt = _randn(4, 3, D, seed=1), _randn(5, 3, D, seed=2)
    models, losses = [], []
    for nn, optim in ((torch.nn, torch.optim), (shimnn, shimnn.optim)):
        torch.manual_seed(0)
        model = nn.Transformer(D, NHEAD, 1, 1, FF)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        history = []
        torch.manual_seed(1)
        for _ in range(5):
            with autograd_forbidden() if nn is shimnn else warnings.catch_warnings():
                out = model(src, tgt, tgt_mask=_causal(5))
                loss = (out ** 2).mean()
                opt.zero_grad()
                loss.backward()
            opt.step()
            history.append(loss.detach())
        models.append(model)
        losses.append(history)
    for a, b in zip(losses[1], losses[0]):
        assert_same(a, b, "loss")
    for (n, a), b in zip(models[1].state_dict().items(), models[0].state_dict().values()):
        assert_same(a, b, n)
