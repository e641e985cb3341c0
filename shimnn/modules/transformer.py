"""Transformer layers: ``TransformerEncoderLayer``, ``TransformerEncoder``,
``TransformerDecoderLayer``, ``TransformerDecoder``, ``Transformer``.

They are compositions of shimnn's modules (``MultiheadAttention``, ``Linear``, ``Dropout``,
``LayerNorm``, the activation) by torch's own ``forward`` code: residual additions and
activations on tracked tensors reach shimnn's ops, so every gradient is shimnn's. The
constructors are torch's, with shimnn's submodules built in torch's order (same seed, same
weights).

**Inference fast paths.** In eval mode, when no gradient can flow, torch runs fused kernels
whose values differ from the composite's in the last bits: ``_transformer_encoder_layer_fwd``
for an encoder layer, and the nested-tensor conversion of ``TransformerEncoder`` (padding
dropped by ``src_key_padding_mask``). There shimnn runs torch's ``forward`` as torch would run
it on plain tensors (torch's own conditions decide), so the values are torch's; no gradient is
involved on those paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn.modules import module as _torch_module

from .._graph import edge, is_grad_enabled, no_dispatch, record, set_grad_enabled, wrap
from ..ops import attention as A
from ..ops import transformer as T
from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear, NonDynamicallyQuantizableLinear
from .module import Module
from .normalization import LayerNorm

__all__ = ["Transformer", "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerEncoderLayer"]

# torch's own objects, bound at import (``shimnn.patch_torch`` later serves shimnn's classes and
# functions under torch.nn's names; torch's forward code must still be torch's).
_F = torch.nn.functional
_torch_transformer: Any = torch.nn.modules.transformer
_TorchEncoderLayer = torch.nn.modules.transformer.TransformerEncoderLayer
_TorchEncoder = torch.nn.modules.transformer.TransformerEncoder
_canonical_mask: Any = _F._canonical_mask
_none_or_dtype: Any = _F._none_or_dtype


def _gradient_can_flow(module: torch.nn.Module, tensors: tuple[Any, ...]) -> bool:
    """Whether torch would differentiate: grad mode, and an input or parameter that requires
    grad (as torch sees it: a tracked result does)."""
    if not torch.is_grad_enabled():
        return False
    if any(isinstance(t, Tensor) and A._torch_requires_grad(t) for t in tensors):
        return True
    return any(p.requires_grad for p in module.parameters())


def _as_torch(forward: Callable[..., Tensor], module: torch.nn.Module, *args: Any) -> Tensor:
    """torch's ``forward`` on plain tensors (its fast-path conditions see no tensor subclass);
    the result tracked like shimnn's other results (a nested tensor as it is)."""
    with no_dispatch():
        out = forward(module, *args)
        return out if out.is_nested else wrap(out)


_LINEARS = (Linear, NonDynamicallyQuantizableLinear)
_DROPOUTS = ("dropout", "dropout1", "dropout2")
_SUBMODULES = ("linear1", "linear2", "norm1", "norm2", *_DROPOUTS)


def _hooked(modules: tuple[torch.nn.Module, ...]) -> bool:
    """Whether a forward hook would run in one of ``modules`` (the fused layer skips their
    calls): theirs, or a global one."""
    m = _torch_module
    if (m._global_forward_hooks or m._global_forward_pre_hooks or m._global_backward_hooks
            or m._global_backward_pre_hooks):
        return True
    return any(mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks
               or mod._backward_pre_hooks for mod in modules)


def _activation_kind(activation: Any) -> int:
    """torch's ``activation_relu_or_gelu``: 1 relu, 2 gelu, 0 another callable."""
    kind = T.activation_of(activation)
    return 1 if kind is None else 0 if kind is False else 2


class TransformerEncoderLayer(Module, torch.nn.TransformerEncoderLayer):
    r"""Self-attention then a feed-forward block, each with dropout, a residual connection and
    a ``LayerNorm`` (after, or before with ``norm_first``): torch's
    ``TransformerEncoderLayer`` (same arguments and defaults), made of shimnn's modules.

    Shapes: src ``(S, N, E)`` (``(N, S, E)`` with ``batch_first``, ``(S, E)`` unbatched),
    unchanged. In eval mode without gradients, torch's fused layer (see the module docstring).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = _F.relu,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, **factory_kwargs)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **factory_kwargs)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **factory_kwargs)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory_kwargs)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory_kwargs)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        fn = _torch_transformer._get_activation_fn(activation) if isinstance(
            activation, str) else activation
        self.activation_relu_or_gelu = _activation_kind(fn)
        self.activation = fn

    def forward(self, src: Tensor, src_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        forward = _TorchEncoderLayer.forward
        if not self.training and not _gradient_can_flow(
                self, (src, src_mask, src_key_padding_mask)):
            return _as_torch(forward, self, src, src_mask, src_key_padding_mask, is_causal)
        out = self._fused(src, src_mask, src_key_padding_mask, is_causal)
        if out is not None:
            return out
        return forward(self, src, src_mask, src_key_padding_mask, is_causal)

    def _fused(self, src: Tensor, src_mask: Tensor | None,
               src_key_padding_mask: Tensor | None, is_causal: bool) -> Tensor | None:
        """The layer as one recorded node (``shimnn.ops.transformer``) when it is made of
        shimnn's modules without hooks and its activation is ReLU or GELU; ``None`` when
        torch's composition must run instead."""
        activation = T.activation_of(self.activation)
        if activation is False or activation is True:
            return None
        modules: dict[str, Any] = self._modules
        attn = modules["self_attn"]
        out_proj = attn._modules["out_proj"]
        if (type(attn) is not MultiheadAttention or type(out_proj) not in _LINEARS
                or type(modules["linear1"]) is not Linear
                or type(modules["linear2"]) is not Linear
                or type(modules["norm1"]) is not LayerNorm
                or type(modules["norm2"]) is not LayerNorm
                or any(type(modules[n]) is not Dropout for n in _DROPOUTS)
                or _hooked((attn, out_proj, *(modules[n] for n in _SUBMODULES)))):
            return None
        with no_dispatch():
            if src.is_nested or src.dim() not in (2, 3):
                return None
            norm1, norm2 = modules["norm1"], modules["norm2"]
            if len(norm1.normalized_shape) != 1 or len(norm2.normalized_shape) != 1:
                return None
            a: dict[str, Any] = attn._parameters
            o: dict[str, Any] = out_proj._parameters
            l1: dict[str, Any] = modules["linear1"]._parameters
            l2: dict[str, Any] = modules["linear2"]._parameters
            n1: dict[str, Any] = norm1._parameters
            n2: dict[str, Any] = norm2._parameters
            params = {"in_proj_weight": a["in_proj_weight"], "in_proj_bias": a["in_proj_bias"],
                      "q_proj_weight": a["q_proj_weight"], "k_proj_weight": a["k_proj_weight"],
                      "v_proj_weight": a["v_proj_weight"], "bias_k": attn.bias_k,
                      "bias_v": attn.bias_v, "out_proj_weight": o["weight"],
                      "out_proj_bias": o.get("bias"), "static_k": None, "static_v": None,
                      "linear1_weight": l1["weight"], "linear1_bias": l1.get("bias"),
                      "linear2_weight": l2["weight"], "linear2_bias": l2.get("bias"),
                      "norm1_weight": n1.get("weight"), "norm1_bias": n1.get("bias"),
                      "norm2_weight": n2.get("weight"), "norm2_bias": n2.get("bias")}
            recording = is_grad_enabled()
            edges = {"src": edge(src) if recording else None}
            for name, t in params.items():
                edges[name] = None if t is None or not recording else edge(t)
            needs = {name: e is not None for name, e in edges.items()}
            if not any(needs.values()) and not self.training:
                return None
            if not self.training and not (needs["src"] or any(
                    needs[n] for n in T.PARAMS[:11]) or (self.norm_first and (
                    needs["norm1_weight"] or needs["norm1_bias"]))):
                return None  # torch's attention would take its fast path
            if (src_mask is not None and A._torch_requires_grad(src_mask)) or (
                    src_key_padding_mask is not None
                    and A._torch_requires_grad(src_key_padding_mask)):
                return None
            src_key_padding_mask = _canonical_mask(
                mask=src_key_padding_mask, mask_name="src_key_padding_mask",
                other_type=_none_or_dtype(src_mask), other_name="src_mask",
                target_type=src.dtype)
            src_mask = _canonical_mask(mask=src_mask, mask_name="src_mask", other_type=None,
                                         other_name="", target_type=src.dtype,
                                         check_other=False)
            set_grad_enabled(False)
            try:
                out, backward, saved = T.encoder_layer_forward(
                    src, src_mask, src_key_padding_mask, is_causal, params, needs,
                    self.norm_first, self.training, attn.embed_dim, attn.num_heads,
                    attn.dropout, attn.add_zero_attn, not attn._qkv_same_embed_dim,
                    attn.batch_first, (modules["dropout1"].p, modules["dropout"].p,
                                       modules["dropout2"].p), activation,
                    (norm1.eps, norm2.eps))
            finally:
                set_grad_enabled(recording)
            if not any(needs.values()):
                return wrap(out)
            names = ("src", *T.PARAMS)

            def node_backward(grad: Tensor) -> tuple[Tensor | None, ...]:
                got = backward(grad)
                return tuple(got.get(n) for n in names)

            return record(out, "AddBackward0" if self.norm_first else "NativeLayerNormBackward0",
                          node_backward, tuple(edges[n] for n in names), saved)


class TransformerDecoderLayer(Module, torch.nn.TransformerDecoderLayer):
    r"""Self-attention, attention over the encoder's ``memory``, then a feed-forward block,
    each with dropout, a residual connection and a ``LayerNorm`` (``norm_first``: before):
    torch's ``TransformerDecoderLayer``, made of shimnn's modules.

    Shapes: tgt ``(T, N, E)``, memory ``(S, N, E)`` (batch first with ``batch_first``) ->
    ``(T, N, E)``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = _F.relu,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout,
                                            batch_first=batch_first, bias=bias,
                                            **factory_kwargs)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout,
                                                 batch_first=batch_first, bias=bias,
                                                 **factory_kwargs)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **factory_kwargs)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **factory_kwargs)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory_kwargs)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory_kwargs)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory_kwargs)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        if isinstance(activation, str):
            self.activation = _torch_transformer._get_activation_fn(activation)
        else:
            self.activation = activation


class TransformerEncoder(torch.nn.TransformerEncoder, Module):
    r"""A stack of ``num_layers`` copies of ``encoder_layer``, then an optional ``norm``:
    torch's ``TransformerEncoder`` (``enable_nested_tensor``, ``mask_check``, its warning).

    In eval mode without gradients, with a ``src_key_padding_mask``, torch packs the batch
    into a nested tensor for its fused layers: so does this module (see the module docstring).
    """

    def forward(self, src: Tensor, mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        forward = _TorchEncoder.forward
        if not self.layers[0].training and not _gradient_can_flow(
                self, (src, mask, src_key_padding_mask)):
            return _as_torch(forward, self, src, mask, src_key_padding_mask, is_causal)
        return forward(self, src, mask, src_key_padding_mask, is_causal)


class TransformerDecoder(torch.nn.TransformerDecoder, Module):
    r"""A stack of ``num_layers`` copies of ``decoder_layer``, then an optional ``norm``:
    torch's ``TransformerDecoder``."""


class Transformer(Module, torch.nn.Transformer):
    r"""An encoder and a decoder (``custom_encoder`` / ``custom_decoder`` or stacks of shimnn's
    layers with a final ``LayerNorm`` each): torch's ``Transformer``, same arguments, defaults
    and initialisation (``xavier_uniform_`` on every parameter of more than one dim, in
    ``parameters()`` order). ``generate_square_subsequent_mask`` is torch's.

    Shapes: src ``(S, N, E)``, tgt ``(T, N, E)`` (batch first with ``batch_first``) ->
    ``(T, N, E)``.
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = _F.relu,
                 custom_encoder: Any | None = None, custom_decoder: Any | None = None,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            encoder_layer = TransformerEncoderLayer(
                d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                batch_first, norm_first, bias, **factory_kwargs)
            encoder_norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory_kwargs)
            self.encoder = TransformerEncoder(encoder_layer, num_encoder_layers, encoder_norm)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            decoder_layer = TransformerDecoderLayer(
                d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                batch_first, norm_first, bias, **factory_kwargs)
            decoder_norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory_kwargs)
            self.decoder = TransformerDecoder(decoder_layer, num_decoder_layers, decoder_norm)
        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first
