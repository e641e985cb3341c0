"""``MultiheadAttention``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._graph import TrackedTensor, no_dispatch, wrap
from ..ops import attention as A
from .linear import NonDynamicallyQuantizableLinear
from .module import Module, Parameter

__all__ = ["MultiheadAttention"]

_SHIMNN_TENSORS = (TrackedTensor, Parameter)
# torch's own, bound at import (shimnn.patch_torch serves shimnn's under torch.nn's names).
_F: Any = torch.nn.functional
_is_make_fx_tracing = torch.nn.modules.activation._is_make_fx_tracing


def foreign_torch_function(tensors: tuple[Tensor | None, ...]) -> bool:
    """``torch.overrides.has_torch_function`` for the tensors, shimnn's own types counted as
    plain tensors (torch's fast paths test it to leave tensor subclasses alone)."""
    others = tuple(t for t in tensors if t is not None and type(t) not in _SHIMNN_TENSORS)
    return bool(others) and torch.overrides.has_torch_function(others)


def grad_needed(tensors: tuple[Tensor | None, ...]) -> bool:
    """``torch.is_grad_enabled() and any(x.requires_grad ...)`` as torch would see it."""
    return torch.is_grad_enabled() and any(A._torch_requires_grad(t) for t in tensors)


def _device_ok(t: Tensor | None) -> bool:
    return t is None or t.device.type in (
        "cpu", "cuda", torch.utils.backend_registration._privateuse1_backend_name)


class MultiheadAttention(Module, torch.nn.MultiheadAttention):
    r"""Multi-head attention: :math:`\mathrm{Concat}(head_1, \dots, head_h) W^O` with
    :math:`head_i = \mathrm{Attention}(Q W_i^Q, K W_i^K, V W_i^V)`.

    Args (as ``torch.nn.MultiheadAttention``): ``embed_dim``, ``num_heads``, ``dropout``
    (on the attention weights), ``bias``, ``add_bias_kv``, ``add_zero_attn``, ``kdim``,
    ``vdim``, ``batch_first``, ``device``, ``dtype``.

    Parameters: ``in_proj_weight`` :math:`(3E, E)` (or ``q_proj_weight``, ``k_proj_weight``,
    ``v_proj_weight`` when ``kdim``/``vdim`` differ from ``embed_dim``), ``in_proj_bias``
    :math:`(3E)`, ``out_proj`` (a ``NonDynamicallyQuantizableLinear``), ``bias_k``/``bias_v``
    :math:`(1, 1, E)`; initialised as torch does (same seed, same weights).

    Shapes: query ``(L, N, E)`` (``(N, L, E)`` with ``batch_first``, ``(L, E)`` unbatched),
    key/value ``(S, N, kdim)``/``(S, N, vdim)`` -> ``(output, weights)``, weights ``(N, L, S)``
    averaged over heads (``(N, H, L, S)`` without ``average_attn_weights``), ``None`` without
    ``need_weights``.

    When torch takes its fused inference path (eval mode, no gradient needed, batch-first
    self-attention, an even number of heads, boolean masks...: ``MultiheadAttention.forward``'s
    own conditions), so does this module, with torch's ``_native_multi_head_attention``: no
    gradient is involved there. Otherwise: :func:`shimnn.functional.multi_head_attention_forward`
    (one recorded node).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"embed_dim and num_heads must be greater than 0,"
                f" got embed_dim={embed_dim} and num_heads={num_heads} instead")
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != self.embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(torch.empty((embed_dim, embed_dim), **factory_kwargs))
            self.k_proj_weight = Parameter(torch.empty((embed_dim, self.kdim), **factory_kwargs))
            self.v_proj_weight = Parameter(torch.empty((embed_dim, self.vdim), **factory_kwargs))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(
                torch.empty((3 * embed_dim, embed_dim), **factory_kwargs))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(torch.empty(3 * embed_dim, **factory_kwargs))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias,
                                                        **factory_kwargs)
        if add_bias_kv:
            self.bias_k = Parameter(torch.empty((1, 1, embed_dim), **factory_kwargs))
            self.bias_v = Parameter(torch.empty((1, 1, embed_dim), **factory_kwargs))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()  # torch's: xavier_uniform_, constant_, xavier_normal_

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        F = _F
        with no_dispatch():
            is_batched = query.dim() == 3
            float_masks = (attn_mask is not None and torch.is_floating_point(attn_mask)) or (
                key_padding_mask is not None and torch.is_floating_point(key_padding_mask))
            key_padding_mask = F._canonical_mask(
                mask=key_padding_mask, mask_name="key_padding_mask",
                other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                target_type=query.dtype)
            attn_mask = F._canonical_mask(
                mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                target_type=query.dtype, check_other=False)
            params: dict[str, Any] = self._parameters
            out_params: dict[str, Any] = self.out_proj._parameters
            if not float_masks and is_batched and self._fast_path(
                    query, key, value, key_padding_mask, attn_mask, params, out_params):
                merged_mask, mask_type = self.merge_masks(attn_mask, key_padding_mask, query)
                out, weights = torch._native_multi_head_attention(
                    query, key, value, self.embed_dim, self.num_heads, params["in_proj_weight"],
                    params["in_proj_bias"], out_params["weight"], out_params["bias"],
                    merged_mask, need_weights, average_attn_weights, mask_type)
                return wrap(out), None if weights is None else wrap(weights)
            if query.is_nested or key.is_nested or value.is_nested:
                raise AssertionError(
                    "MultiheadAttention does not support NestedTensor outside of its fast "
                    "path.")
        return A._mha(
            query, key, value, self.embed_dim, self.num_heads,
            {"in_proj_weight": params["in_proj_weight"], "in_proj_bias": params["in_proj_bias"],
             "q_proj_weight": params["q_proj_weight"], "k_proj_weight": params["k_proj_weight"],
             "v_proj_weight": params["v_proj_weight"], "bias_k": self.bias_k,
             "bias_v": self.bias_v, "out_proj_weight": out_params["weight"],
             "out_proj_bias": out_params["bias"], "static_k": None, "static_v": None},
            self.add_zero_attn, self.dropout, self.training, key_padding_mask, need_weights,
            attn_mask, not self._qkv_same_embed_dim, average_attn_weights, is_causal,
            self.batch_first)

    def _fast_path(self, query: Tensor, key: Tensor, value: Tensor,
                   key_padding_mask: Tensor | None, attn_mask: Tensor | None,
                   params: dict[str, Any], out_params: dict[str, Any]) -> bool:
        """torch's conditions for ``_native_multi_head_attention`` (its ``why_not_fast_path``
        chain; shimnn's own tensor types are not counted as ``has_torch_function``)."""
        in_w, in_b = params["in_proj_weight"], params["in_proj_bias"]
        if not torch.backends.mha.get_fastpath_enabled() or query is not key or (
                key is not value) or self.training or not self.batch_first:
            return False
        if in_b is not None and query.dtype != in_b.dtype:
            return False
        if in_w is None or in_b is None or query.dtype != in_w.dtype:
            return False
        if self.num_heads % 2 != 0 or self.bias_k is not None or self.bias_v is not None:
            return False
        if self.add_zero_attn or not self._qkv_same_embed_dim:
            return False
        if query.is_nested and (key_padding_mask is not None or attn_mask is not None):
            return False
        if torch.is_autocast_enabled():
            return False
        tensors = (query, key, value, in_w, in_b, out_params["weight"], out_params["bias"])
        return not (foreign_torch_function(tensors) or not all(map(_device_ok, tensors))
                    or grad_needed(tensors)
                    or _is_make_fx_tracing())
