"""A Transformer encoder layer as one node: self-attention, dropout, residual, ``LayerNorm``,
feed-forward (``Linear``, ReLU or GELU, dropout, ``Linear``), dropout, residual, ``LayerNorm``
(or the norms first, ``norm_first``), exactly as ``TransformerEncoderLayer.forward`` composes
them.

torch's graph of one layer has about 35 nodes; shimnn's composite of modules records 11. This
node runs the same kernels in the same order (each piece is the forward/backward pair of its own
family: :func:`~shimnn.ops.attention.mha_forward`, ``layer_norm_forward``, ``linear_forward``,
``relu_forward``/``gelu_forward``, ``dropout_forward``), draws the dropout masks in the same
order from the global generator, and sums the two gradients of each residual input the way
torch's engine does: the addition's node is newer than the branch's first node, so its
gradient reaches the input's buffer first, then the branch's is added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .activation import dropout_forward, gelu_forward, relu_forward
from .attention import _lin, mha_forward
from .norm import layer_norm_forward

__all__: list[str] = []

Backward = Callable[[Tensor], Any]

PARAMS = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight",
          "v_proj_weight", "bias_k", "bias_v", "out_proj_weight", "out_proj_bias", "static_k",
          "static_v", "linear1_weight", "linear1_bias", "linear2_weight", "linear2_bias",
          "norm1_weight", "norm1_bias", "norm2_weight", "norm2_bias")
"""The layer's tensors besides ``src``, by name (the attention's as ``mha_forward`` names
them)."""

_MHA_PARAMS = PARAMS[:11]


def _dropout(x: Tensor, p: float, training: bool, saved: list[Tensor]
             ) -> tuple[Tensor, Backward | None]:
    """``F.dropout(x, p, training)``: the input itself when it does nothing."""
    if p == 0 or not training or x.numel() == 0:
        return x, None
    out, backward, s, _ = dropout_forward(x, p)
    saved.extend(s)
    return out, backward


def _norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
          needs: dict[str, bool], prefix: str, need_input: bool, saved: list[Tensor]
          ) -> tuple[Tensor, Backward]:
    mask = [need_input, needs[prefix + "_weight"], needs[prefix + "_bias"]]
    out, backward, s, _ = layer_norm_forward(x, [x.shape[-1]], weight, bias, eps, mask)
    saved.extend(s)
    return out, backward


def _linear(x: Tensor, params: dict[str, Tensor | None], needs: dict[str, bool], prefix: str,
            need_input: bool, saved: list[Tensor]) -> tuple[Tensor, Backward]:
    out, backward, s = _lin(x, params[prefix + "_weight"], params[prefix + "_bias"],  # type: ignore[arg-type]
                            need_input, needs[prefix + "_weight"], needs[prefix + "_bias"])
    saved.extend(s)
    return out, backward


def encoder_layer_forward(src: Tensor, src_mask: Tensor | None,
                          src_key_padding_mask: Tensor | None, is_causal: bool,
                          params: dict[str, Tensor | None], needs: dict[str, bool],
                          norm_first: bool, training: bool, embed_dim: int, num_heads: int,
                          attention_dropout: float, add_zero_attn: bool,
                          separate_proj: bool, batch_first: bool,
                          dropouts: tuple[float, float, float], activation: str | None,
                          eps: tuple[float, float]) -> tuple[Tensor, Any, tuple[Tensor, ...]]:
    """``TransformerEncoderLayer.forward`` (grad mode off, plain tensors; the masks already
    canonical). ``activation``: ``None`` for ReLU, else GELU's ``approximate``. ``dropouts``:
    the probabilities of ``dropout1``, ``dropout`` (feed-forward) and ``dropout2``.

    Returns the output, the backward (output gradient -> gradients by name: ``src`` and
    :data:`PARAMS`) and the saved tensors.
    """
    saved: list[Tensor] = []
    on = any(needs.values())  # False: a forward only (training mode under no_grad)
    need_src = needs["src"]
    need_attn = need_src or any(needs[n] for n in _MHA_PARAMS)
    mha_params = {n: params[n] for n in _MHA_PARAMS}
    p1, p_ff, p2 = dropouts

    def attention(x: Tensor, need_x: bool) -> tuple[Tensor, Any]:
        mha_needs = {"query": need_x, "key": need_x, "value": need_x,
                     **{n: needs[n] for n in _MHA_PARAMS}}
        out, _, back, s = mha_forward(
            x, x, x, embed_dim, num_heads, mha_params, add_zero_attn, attention_dropout,
            training, src_key_padding_mask, False, src_mask, separate_proj, True, is_causal,
            batch_first, mha_needs)
        saved.extend(s)
        return out, back

    def feed_forward(x: Tensor, need_x: bool) -> tuple[Tensor, Callable[[Tensor], Any]]:
        act_back: Any
        h, lin1_back = _linear(x, params, needs, "linear1", need_x, saved)
        if activation is None:
            a, act_back, s, _ = relu_forward(h)
        else:
            a, act_back, s, _ = gelu_forward(h, activation)
        saved.extend(s)
        a_d, drop_back = _dropout(a, p_ff, training, saved)
        f, lin2_back = _linear(a_d, params, needs, "linear2", on, saved)
        f_d, drop2_back = _dropout(f, p2, training, saved)

        def backward(g: Tensor) -> tuple[Tensor | None, dict[str, Tensor | None]]:
            if drop2_back is not None:
                g = drop2_back(g)[0]
            g_a, g_w2, g_b2 = lin2_back(g)
            if drop_back is not None:
                g_a = drop_back(g_a)[0]
            g_h = act_back(g_a)[0]  # linear2's input always needs its gradient here
            g_x, g_w1, g_b1 = lin1_back(g_h)
            return g_x, {"linear1_weight": g_w1, "linear1_bias": g_b1,
                         "linear2_weight": g_w2, "linear2_bias": g_b2}

        return f_d, backward

    w1, b1 = params["norm1_weight"], params["norm1_bias"]
    w2, b2 = params["norm2_weight"], params["norm2_bias"]

    def mha_input_grad(got: dict[str, Tensor | None], g: Tensor | None) -> Tensor | None:
        # After the residual's gradient, the attention's input gradients in the order torch's
        # graph hands them out: value's, key's, query's (one for self-attention).
        for name in ("value", "key", "query"):
            gi = got.get(name)
            if gi is not None:
                g = gi if g is None else g + gi
        return g

    if norm_first:
        n1, norm1_back = _norm(src, w1, b1, eps[0], needs, "norm1", need_src, saved)
        need_n1 = need_src or needs["norm1_weight"] or needs["norm1_bias"]
        sa, mha_back = attention(n1, need_n1)
        sa_d, drop1_back = _dropout(sa, p1, training, saved)
        x2 = src + sa_d
        n2, norm2_back = _norm(x2, w2, b2, eps[1], needs, "norm2", on, saved)
        ff, ff_back = feed_forward(n2, on)
        out = x2 + ff

        def backward(g_out: Tensor) -> dict[str, Tensor | None]:
            grads: dict[str, Tensor | None] = {}
            g_n2, ff_grads = ff_back(g_out)
            grads.update(ff_grads)
            g_n2, grads["norm2_weight"], grads["norm2_bias"] = norm2_back(g_n2)
            g_x2 = g_out + g_n2
            g_sa = drop1_back(g_x2)[0] if drop1_back is not None else g_x2
            got = mha_back([g_sa, None])
            grads.update({n: got.get(n) for n in _MHA_PARAMS})
            g_n1 = mha_input_grad(got, None)
            g_src: Tensor | None = g_x2
            if g_n1 is not None:
                g_in, grads["norm1_weight"], grads["norm1_bias"] = norm1_back(g_n1)
                if g_in is not None:
                    g_src = g_x2 + g_in
            grads["src"] = g_src
            return grads

        return out, backward, tuple(saved)

    sa, mha_back = attention(src, need_src)
    sa_d, drop1_back = _dropout(sa, p1, training, saved)
    h = src + sa_d
    x1, norm1_back = _norm(h, w1, b1, eps[0], needs, "norm1", need_attn, saved)
    ff, ff_back = feed_forward(x1, on)
    h2 = x1 + ff
    out, norm2_back = _norm(h2, w2, b2, eps[1], needs, "norm2", on, saved)

    def post_backward(g_out: Tensor) -> dict[str, Tensor | None]:
        grads: dict[str, Tensor | None] = {}
        g_h2, grads["norm2_weight"], grads["norm2_bias"] = norm2_back(g_out)
        g_x1_ff, ff_grads = ff_back(g_h2)
        grads.update(ff_grads)
        g_x1 = g_h2 + g_x1_ff
        g_h, grads["norm1_weight"], grads["norm1_bias"] = norm1_back(g_x1)
        if g_h is None:
            return grads
        g_sa = drop1_back(g_h)[0] if drop1_back is not None else g_h
        got = mha_back([g_sa, None])
        grads.update({n: got.get(n) for n in _MHA_PARAMS})
        grads["src"] = mha_input_grad(got, g_h) if need_src else None
        return grads

    return out, post_backward, tuple(saved)


# torch's own, bound at import (shimnn.patch_torch later serves shimnn's under these names).
_TORCH_RELU, _TORCH_GELU = torch.nn.functional.relu, torch.nn.functional.gelu
_TorchReLU, _TorchGELU = torch.nn.ReLU, torch.nn.GELU


def activation_of(fn: Any) -> str | None | bool:  # False, None or a str
    """``None`` for ReLU (torch's or shimnn's function or module), GELU's ``approximate`` for
    GELU, ``False`` for anything else (the layer then runs as its modules)."""
    from . import activation as shim

    if fn is _TORCH_RELU or fn is shim.relu or isinstance(fn, _TorchReLU):
        return None
    if fn is _TORCH_GELU or fn is shim.gelu:
        return "none"
    if isinstance(fn, _TorchGELU):
        return str(fn.approximate)
    return False
