"""Attention: ``scaled_dot_product_attention`` and ``multi_head_attention_forward``.

Each call records **one** node, whose backward runs the whole attention backward with the
kernels torch's own graph would run, in torch's order (a torch graph of the same call has 10 to
40 nodes; shimnn's per-node bookkeeping would cost more than the arithmetic at the sizes people
train attention on a CPU).

``scaled_dot_product_attention`` takes the path torch's CPU dispatcher picks, asked from torch
itself (``torch._fused_sdp_choice``: dtype, shapes, mask, dropout, the ``sdpa_kernel`` /
``torch.backends.cuda.enable_*_sdp`` flags):

- **flash** (the fused CPU kernel; no dropout, a mask that needs no gradient): the value from
  ``_scaled_dot_product_flash_attention_for_cpu``, the gradients from
  ``_scaled_dot_product_flash_attention_for_cpu_backward`` (torch's derivative);
- **math** (dropout, a mask that needs a gradient, flash disabled, ...): torch's composite
  ``_scaled_dot_product_attention_math`` op by op (scale split between ``q`` and ``k``,
  ``matmul``, in-place mask add, ``_safe_softmax``, dropout, ``matmul``), differentiated by each
  op's own formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Edge,
    TrackedTensor,
    _requires_grad,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    record,
    record_outputs,
    set_grad_enabled,
    sum_to,
    wrap,
)
from ._common import _check_real, _reduce_to
from .activation import _dropout_noise
from .linear import linear_forward
from .matmul import _matmul_forward
from .shape import _repeat_backward

__all__ = ["multi_head_attention_forward", "scaled_dot_product_attention"]

_flash_forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default._op
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default._op
_safe_softmax = torch.ops.aten._safe_softmax.default._op
_math = torch.ops.aten._scaled_dot_product_attention_math.default._op
_softmax_backward_data = torch.ops.aten._softmax_backward_data.default._op
_fused_sdp_choice = torch._fused_sdp_choice
_FLASH = 1  # torch.nn.attention.SDPBackend.FLASH_ATTENTION
# torch's own functions, bound at import (shimnn.patch_torch later serves shimnn's under
# torch.nn.functional's names).
_F: Any = torch.nn.functional
_torch_sdpa = _F.scaled_dot_product_attention
_pad = torch._C._nn.pad
_NEG_INF = -math.inf

SdpaBackward = Callable[[Tensor], tuple[Tensor | None, Tensor | None, Tensor | None,
                                        Tensor | None]]


def _torch_requires_grad(t: Tensor | None) -> bool:
    """``t.requires_grad`` as torch would see it (a tracked result requires grad)."""
    return t is not None and (_requires_grad(t) or (type(t) is TrackedTensor
                                                    and t._node is not None))


def convert_boolean_attn_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """ATen's ``convert_boolean_attn_mask``: a boolean mask (True: attend) becomes 0 / -inf in
    ``dtype``; a float mask is additive as it is."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask.logical_not(), _NEG_INF, torch.scalar_tensor(0.0, dtype=dtype))


def _validate(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None,
              dropout_p: float, is_causal: bool, scale: float | None, enable_gqa: bool) -> None:
    """ATen's ``validate_sdpa_input``; on a violation torch's own call raises its error."""
    dtype = query.dtype
    ok = (key.dtype == dtype and value.dtype == dtype and query.device == key.device
          and query.device == value.device and query.dim() >= 2 and key.dim() >= 2
          and value.dim() >= 2)
    if ok and attn_mask is not None:
        ok = attn_mask.dtype in (torch.bool, torch.float32, dtype)
    if not ok:
        with torch.no_grad():
            _torch_sdpa(
                query.detach(), key.detach(), value.detach(),
                None if attn_mask is None else attn_mask.detach(), dropout_p, is_causal,
                scale=scale, enable_gqa=enable_gqa)
        raise RuntimeError("scaled_dot_product_attention: invalid inputs")  # pragma: no cover


def sdpa_choice(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None,
                dropout_p: float, is_causal: bool, scale: float | None, enable_gqa: bool
                ) -> int:
    """The backend torch's CPU dispatcher picks (``_fused_sdp_choice``), with the mask's
    ``requires_grad`` as torch would see it (a mask that needs a gradient rules flash out)."""
    mask = attn_mask
    if mask is not None and not _requires_grad(mask) and _torch_requires_grad(mask):
        mask = mask.detach().requires_grad_()
    return int(_fused_sdp_choice(query, key, value, mask, dropout_p, is_causal, scale=scale,
                                 enable_gqa=enable_gqa))


def sdpa_flash_forward(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None,
                       dropout_p: float, is_causal: bool, scale: float | None
                       ) -> tuple[Tensor, SdpaBackward, tuple[Tensor, ...]]:
    """The fused CPU kernel (grad mode off, plain tensors, no dropout): value, backward,
    saved tensors. Backward: ``_scaled_dot_product_flash_attention_for_cpu_backward``; the
    backward's gradients are those of ``(query, key, value)``, the mask gets none."""
    mask = convert_boolean_attn_mask(attn_mask, query.dtype)
    if query.dim() == 3:
        # The kernel takes (B, H, T, K) only; a torch that picks it for 3-d inputs (2.14; 2.13
        # never does) runs it on q, k, v unsqueezed at 0 and the mask unsqueezed to 4-d, and
        # squeezes the result (UnsqueezeBackward0 / SqueezeBackward1: views of the gradients).
        q, k, v = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        while mask is not None and mask.dim() < 4:
            mask = mask.unsqueeze(0)
        out4, backward4, saved = sdpa_flash_forward(q, k, v, mask, dropout_p, is_causal, scale)

        def backward3(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None,
                                             Tensor | None]:
            g_q, g_k, g_v, _ = backward4(grad.unsqueeze(0))
            return (None if g_q is None else g_q.squeeze(0),
                    None if g_k is None else g_k.squeeze(0),
                    None if g_v is None else g_v.squeeze(0), None)

        return out4.squeeze(0), backward3, saved
    if query.dim() != 4:
        raise NotImplementedError(
            f"shimnn: torch {torch.__version__} picks scaled_dot_product_attention's fused CPU "
            f"kernel for {query.dim()}-d inputs; shimnn follows it for 3-d and 4-d ones")
    out, lse = _flash_forward(query, key, value, dropout_p, is_causal, attn_mask=mask,
                              scale=scale)

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None,
                                        Tensor | None]:
        g_q, g_k, g_v = _flash_backward(grad, query, key, value, out, lse, dropout_p,
                                        is_causal, attn_mask=mask, scale=scale)
        return g_q, g_k, g_v, None

    saved = (query, key, value, out, lse) if mask is None else (
        query, key, value, out, lse, mask)
    return out, backward, saved


def _repeat_heads(t: Tensor, repeats: int) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """``t.repeat_interleave(repeats, -3)`` (unsqueeze, expand, contiguous clone, flatten) and
    its backward: the gradient viewed as the expand, summed over the copies (``sum_to``), the
    dim squeezed."""
    d = t.dim() - 3
    shape = t.shape
    expanded = [*shape[:d + 1], repeats, *shape[d + 1:]]
    keep = [*shape[:d + 1], 1, *shape[d + 1:]]
    out = t.repeat_interleave(repeats, -3)

    def backward(grad: Tensor) -> Tensor:
        return sum_to(grad.reshape(expanded), keep).squeeze(d + 1)

    return out, backward


def sdpa_math_forward(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None,
                      dropout_p: float, is_causal: bool, scale: float | None, enable_gqa: bool,
                      needs: tuple[bool, bool, bool, bool]
                      ) -> tuple[Tensor, SdpaBackward, tuple[Tensor, ...], bool]:
    """torch's ``_scaled_dot_product_attention_math`` (grad mode off, plain tensors).

    ``needs``: whether query, key, value and the mask need a gradient. Returns the value, the
    backward (gradients of query, key, value, mask), the saved tensors and whether the heads of
    key and value were repeated (grouped-query attention), which changes the order in which
    torch's graph hands the gradients out.
    """
    need_q, need_k, need_v, need_mask = needs
    if not any(needs) and not any(type(t) is TrackedTensor and t._node is not None
                                  for t in (query, key, value)):
        # Nothing to differentiate: torch's own composite (the same ops, the same draws).
        out = _math(query, key, value, convert_boolean_attn_mask(attn_mask, query.dtype),
                    dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa)[0]
        return out, _no_backward, (), False
    if query.dtype in (torch.float16, torch.bfloat16):
        raise NotImplementedError(
            "shimnn: scaled_dot_product_attention's math path in float16/bfloat16 (torch "
            "computes it in float32) is not implemented")
    _check_real("scaled_dot_product_attention", query, key, value)
    mask = convert_boolean_attn_mask(attn_mask, query.dtype)
    negative = scale is not None and scale < 0
    softmax_scale = (abs(scale) if negative else scale) if scale is not None else (
        1.0 / math.sqrt(query.shape[-1]))
    factor = math.sqrt(softmax_scale)
    q_factor = 0.0 - factor if negative else factor
    q_scaled = query * q_factor
    if is_causal:
        if mask is not None:
            raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not "
                               "be set when is_causal=True")
        causal = torch.ones(q_scaled.shape[-2], key.shape[-2], dtype=torch.bool).tril()
        mask = convert_boolean_attn_mask(causal, query.dtype)
    repeated = False
    key_e, value_e = key, value
    if enable_gqa:
        hq, hk, hv = query.shape[-3], key.shape[-3], value.shape[-3]
        if not (hq == hk == hv):
            if hq % hk or hq % hv:
                raise RuntimeError(
                    "Number of heads in key and value must divide the number of heads in ")
            repeated = True
            key_e, key_back = _repeat_heads(key, hq // hk)
            value_e, value_back = _repeat_heads(value, hq // hv)
    need_scores = need_q or need_k or need_mask
    k_scaled = key_e.transpose(-2, -1) * factor
    scores, mm1_backward, mm1_saved, _ = _matmul_forward(q_scaled, k_scaled, need_q, need_k)
    if mask is not None:
        scores.add_(mask)
    weights = _safe_softmax(scores, -1)
    dropped, noise = _attention_dropout(weights, dropout_p, RuntimeError)  # native_dropout's
    out, mm2_backward, mm2_saved, _ = _matmul_forward(dropped, value_e, need_scores, need_v)
    scores_dtype = scores.dtype

    def backward(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None,
                                        Tensor | None]:
        g_dropped, g_value = mm2_backward(grad)
        if g_value is not None and repeated:
            g_value = value_back(g_value)
        g_q = g_k = g_mask = None
        if g_dropped is not None:
            g_weights = g_dropped * noise if noise is not None else g_dropped
            g_scores = _softmax_backward_data(g_weights, weights, -1, scores_dtype)
            if need_mask:
                g_mask = _reduce_to(g_scores, attn_mask)  # type: ignore[arg-type]
            g_q_scaled, g_k_scaled = mm1_backward(g_scores)
            if g_k_scaled is not None:
                g_k = (g_k_scaled * factor).transpose(-2, -1)
                if repeated:
                    g_k = key_back(g_k)
            if g_q_scaled is not None:
                g_q = g_q_scaled * q_factor
        return g_q, g_k, g_value, g_mask

    saved = (*mm1_saved, *mm2_saved, weights) + ((noise,) if noise is not None else ())
    return out, backward, saved, repeated


def _no_backward(grad: Tensor) -> tuple[None, None, None, None]:
    return None, None, None, None


@implements(torch.nn.functional.scaled_dot_product_attention)
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, *, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    r"""Attention :math:`\mathrm{softmax}(QK^T \cdot s + M) V` with :math:`s` = ``scale``
    (default :math:`1/\sqrt{E}`), an additive mask ``attn_mask`` (boolean: True attends),
    ``is_causal`` (upper-left causal mask), dropout ``dropout_p`` on the weights, and
    ``enable_gqa`` (key/value heads repeated to the query's).

    Shapes: query ``(N, ..., Hq, L, E)``, key ``(N, ..., H, S, E)``, value
    ``(N, ..., H, S, Ev)``, mask broadcastable to ``(N, ..., L, S)`` -> ``(N, ..., Hq, L, Ev)``.

    Backward: on torch's fused CPU path, torch's
    ``_scaled_dot_product_flash_attention_for_cpu_backward``; on its math path, the derivatives
    of each op of the composite (matmul's bmm formulas, ``_softmax_backward_data`` on the safe
    softmax, dropout's mask, the scale factors, the repeat's sum), the mask's gradient summed
    to its shape.
    """
    with no_dispatch():
        _validate(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        recording = is_grad_enabled()
        e_q = e_k = e_v = e_mask = None
        if recording:
            e_q, e_k, e_v = edge(query), edge(key), edge(value)
            e_mask = None if attn_mask is None else edge(attn_mask)
        needs = (e_q is not None, e_k is not None, e_v is not None, e_mask is not None)
        choice = sdpa_choice(query, key, value, attn_mask, dropout_p, is_causal, scale,
                             enable_gqa)
        set_grad_enabled(False)
        try:
            if choice == _FLASH:
                out, backward, saved = sdpa_flash_forward(query, key, value, attn_mask,
                                                          dropout_p, is_causal, scale)
                name = ("SqueezeBackward1" if query.dim() == 3 else
                        "ScaledDotProductFlashAttentionForCpuBackward0")
                order = (0, 1, 2, 3)
            else:
                out, backward, saved, repeated = sdpa_math_forward(
                    query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                    needs)
                # torch's graph hands the gradients out newest node first: value's (the last
                # matmul, or its repeat), the mask's (the in-place add), key's, then query's.
                name, order = "UnsafeViewBackward0", (3, 2, 1, 0) if repeated else (2, 3, 1, 0)
        finally:
            set_grad_enabled(recording)
        if not any(needs):
            return wrap(out)
        edges: tuple[Edge, ...] = (e_q, e_k, e_v, e_mask)
        return record(out, name, _ordered(backward, order), tuple(edges[i] for i in order),
                      saved)


def _ordered(backward: SdpaBackward, order: tuple[int, ...]
             ) -> Callable[[Tensor], tuple[Tensor | None, ...]]:
    if order == (0, 1, 2, 3):
        return backward

    def reordered(grad: Tensor) -> tuple[Tensor | None, ...]:
        grads = backward(grad)
        return tuple(grads[i] for i in order)

    return reordered


# ---------------------------------------------------------------------------------------------
# multi_head_attention_forward
# ---------------------------------------------------------------------------------------------

_linear = torch._C._nn.linear
_softmax = torch._softmax


def _lin(input: Tensor, weight: Tensor, bias: Tensor | None, need_input: bool,
         need_weight: bool, need_bias: bool) -> tuple[Tensor, Any, tuple[Tensor, ...]]:
    """``linear`` (grad mode off): value, backward and saved tensors; torch's own kernel (and
    its own path choice) when nothing needs a gradient. The backward returns the gradients of
    ``(input, weight, bias)`` (``linear_forward`` hands out ``(input, bias, weight)``, the order
    of torch's engine; here the enclosing node hands them out in its own graph's order)."""
    if need_input or need_weight or need_bias:
        out, backward, saved, _ = linear_forward(input, weight, bias, need_input, need_weight,
                                                 need_bias)

        def by_argument(grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
            g_input, g_bias, g_weight = backward(grad)
            return g_input, g_weight, g_bias

        return out, by_argument, saved
    return _linear(input, weight, bias), None, ()


def _attention_dropout(weights: Tensor, p: float, error: type[Exception]
                       ) -> tuple[Tensor, Tensor | None]:
    """Dropout of the attention weights with torch's draws: ``(weights * noise, noise)``, or
    ``(weights, None)`` for ``p == 0``; a ``p`` above 1 raises ``error`` (the type of the
    check torch's path runs: ``native_dropout``'s or ``F.dropout``'s)."""
    if p <= 0.0:
        return weights, None
    if p > 1.0:
        raise error(f"dropout probability has to be between 0 and 1, but got {p}")
    noise = _dropout_noise(weights, p)
    return weights * noise, noise


def _check_static(name: str, static: Tensor, heads: int, head_dim: int) -> Tensor:
    """torch's checks of ``static_k`` / ``static_v``: ``(bsz * num_heads, src_len, head_dim)``."""
    if static.size(0) != heads:
        raise AssertionError(f"expecting {name}.size(0) of {heads}, but got {static.size(0)}")
    if static.size(2) != head_dim:
        raise AssertionError(f"expecting {name}.size(2) of {head_dim}, but got {static.size(2)}")
    return static


def _unpack(proj: Tensor, n: int, e: int) -> Tensor:
    """``_in_projection_packed``'s ``proj.unflatten(-1, (n, e)).unsqueeze(0).transpose(0, -2)
    .squeeze(-2).contiguous()``: ``(*, n * e)`` -> ``(n, *, e)`` (a copy)."""
    return proj.unflatten(-1, (n, e)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()


def _unpack_backward(grads: list[Tensor | None], packed: Tensor, proj_shape: Any
                     ) -> Tensor | None:
    """The gradient of :func:`_unpack`'s input from those of ``packed[i]``.

    torch: each ``SelectBackward0`` writes its gradient into zeros, the clone's buffer sums
    them (first stored, then ``old + new``): the slices exactly, except that a sum of two or more
    turns ``-0.0`` into ``+0.0`` (``x + 0.0``), which the in-place ``+ 0.0`` reproduces. Then
    the views' backward: ``unsqueeze(-2)``, ``transpose(0, -2)``, ``squeeze(0)``, ``reshape``.
    """
    present = [g is not None for g in grads]
    if not any(present):
        return None
    if all(present):
        combined = torch.stack(grads)  # type: ignore[arg-type]
    else:
        combined = torch.zeros(packed.shape, dtype=packed.dtype, device=packed.device)
        for i, g in enumerate(grads):
            if g is not None:
                combined[i].copy_(g)
    if sum(present) > 1:
        combined.add_(0.0)
    return combined.unsqueeze(-2).transpose(0, -2).squeeze(0).reshape(proj_shape)


def _pieces_backward(grads: list[Tensor | None], whole: Tensor, sizes: list[int]
                     ) -> Tensor | None:
    """``split``/``chunk`` backward along dim 0: the pieces' gradients concatenated, zeros for a
    piece without one (``split_with_sizes_backward``); ``None`` when no piece has one."""
    if all(g is None for g in grads):
        return None
    if all(g is not None for g in grads):
        return torch.cat(grads)  # type: ignore[arg-type]
    out = torch.zeros(whole.shape, dtype=whole.dtype, device=whole.device)
    offset = 0
    for g, size in zip(grads, sizes):
        if g is not None:
            out.narrow(0, offset, size).copy_(g)
        offset += size
    return out


InProjBackward = Callable[[Tensor | None, Tensor | None, Tensor | None], list[Tensor | None]]


def _in_projection(query: Tensor, key: Tensor, value: Tensor, kind: str,
                   in_proj_weight: Tensor | None, in_proj_bias: Tensor | None,
                   q_proj_weight: Tensor | None, k_proj_weight: Tensor | None,
                   v_proj_weight: Tensor | None, needs: dict[str, bool], saved: list[Tensor]
                   ) -> tuple[Tensor, Tensor, Tensor, InProjBackward]:
    """torch's ``_in_projection_packed`` (``kind``: ``"self"``, one linear; ``"kv"``: query's
    and key/value's; ``"qkv"``: the weight in three chunks) or ``_in_projection`` (``"separate"``
    weights, the bias in three chunks).

    The backward maps the gradients of the projected ``q, k, v`` to
    ``[query, key, value, in_proj_weight, in_proj_bias, q_proj_weight, k_proj_weight,
    v_proj_weight]`` (``None`` where none; for ``"self"`` the input's is query's, for ``"kv"``
    key's holds key/value's)."""
    e = query.shape[-1]
    b = in_proj_bias
    nb = needs["in_proj_bias"]
    if kind == "self":
        w = in_proj_weight
        assert w is not None
        proj, back, s = _lin(query, w, b, needs["query"], needs["in_proj_weight"], nb)
        saved.extend(s)
        packed = _unpack(proj, 3, e)
        proj_shape = proj.shape

        def self_backward(g_q: Tensor | None, g_k: Tensor | None, g_v: Tensor | None
                          ) -> list[Tensor | None]:
            g = _unpack_backward([g_q, g_k, g_v], packed, proj_shape)
            if g is None:
                return [None] * 8
            g_x, g_w, g_b = back(g)
            return [g_x, None, None, g_w, g_b, None, None, None]

        return packed[0], packed[1], packed[2], self_backward
    if kind == "kv":
        w = in_proj_weight
        assert w is not None
        w_q, w_kv = w.split([e, e * 2])
        b_q, b_kv = (None, None) if b is None else b.split([e, e * 2])
        nw = needs["in_proj_weight"]
        q, q_back, s1 = _lin(query, w_q, b_q, needs["query"], nw, nb)
        kv, kv_back, s2 = _lin(key, w_kv, b_kv, needs["key"], nw, nb)
        saved.extend(s1)
        saved.extend(s2)
        packed = _unpack(kv, 2, e)
        kv_shape = kv.shape

        def kv_backward(g_q: Tensor | None, g_k: Tensor | None, g_v: Tensor | None
                        ) -> list[Tensor | None]:
            g_key = g_wkv = g_bkv = g_query = g_wq = g_bq = None
            g = _unpack_backward([g_k, g_v], packed, kv_shape)
            if g is not None:
                g_key, g_wkv, g_bkv = kv_back(g)
            if g_q is not None:
                g_query, g_wq, g_bq = q_back(g_q)
            sizes = [e, e * 2]
            g_w = _pieces_backward([g_wq, g_wkv], w, sizes) if nw else None
            g_b = _pieces_backward([g_bq, g_bkv], b, sizes) if nb else None  # type: ignore[arg-type]
            return [g_query, g_key, None, g_w, g_b, None, None, None]

        return q, packed[0], packed[1], kv_backward
    if kind == "qkv":
        assert in_proj_weight is not None
        ws = in_proj_weight.chunk(3)
        weight_needs = (needs["in_proj_weight"],) * 3
    else:
        ws = (q_proj_weight, k_proj_weight, v_proj_weight)  # type: ignore[assignment]
        weight_needs = (needs["q_proj_weight"], needs["k_proj_weight"], needs["v_proj_weight"])
        _check_proj_shapes(query, key, value, ws, b)
    bs = (None, None, None) if b is None else b.chunk(3)
    outs = []
    backs = []
    for x, name, w_i, b_i, nw_i in zip((query, key, value), ("query", "key", "value"), ws, bs,
                                       weight_needs):
        out, back, s = _lin(x, w_i, b_i, needs[name], nw_i, nb)
        saved.extend(s)
        outs.append(out)
        backs.append(back)

    def chunks_backward(g_q: Tensor | None, g_k: Tensor | None, g_v: Tensor | None
                        ) -> list[Tensor | None]:
        inputs: list[Tensor | None] = [None, None, None]
        weights: list[Tensor | None] = [None, None, None]
        biases: list[Tensor | None] = [None, None, None]
        # torch's graph runs the value's linear first (the newest), then key's, then query's.
        for i in (2, 1, 0):
            g = (g_q, g_k, g_v)[i]
            if g is not None:
                inputs[i], weights[i], biases[i] = backs[i](g)
        g_b = None
        if nb:
            g_b = _pieces_backward(biases, b, [e] * 3)  # type: ignore[arg-type]
        if kind == "qkv":
            g_w = _pieces_backward(weights, in_proj_weight, [e] * 3) if needs[  # type: ignore[arg-type]
                "in_proj_weight"] else None
            return [*inputs, g_w, g_b, None, None, None]
        return [*inputs, None, g_b, *weights]

    return outs[0], outs[1], outs[2], chunks_backward


def _check_proj_shapes(q: Tensor, k: Tensor, v: Tensor, ws: Any, b: Tensor | None) -> None:
    """``_in_projection``'s shape checks (torch's AssertionErrors)."""
    eq, ek, ev = q.shape[-1], k.shape[-1], v.shape[-1]
    for w, expected, what in zip(ws, ((eq, eq), (eq, ek), (eq, ev)), ("query", "key", "value")):
        if w.shape != expected:
            raise AssertionError(
                f"expecting {what} weights shape of {expected}, but got {w.shape}")
    if b is not None:
        for piece, what in zip(b.chunk(3), ("query", "key", "value")):
            if piece.shape != (eq,):
                raise AssertionError(
                    f"expecting {what} bias shape of {(eq,)}, but got {piece.shape}")


_MHA_PARAMS = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight",
               "v_proj_weight", "bias_k", "bias_v", "out_proj_weight", "out_proj_bias",
               "static_k", "static_v")


def _squeeze0(g: Tensor) -> Tensor:
    """``unsqueeze(0)``'s backward."""
    return g.squeeze(0)


def _unpad(width: int) -> Callable[[Tensor], Tensor]:
    """``pad(mask, (0, 1))``'s backward: ``constant_pad_nd`` with the pads negated (a narrowed
    copy)."""
    return lambda g: g.narrow(-1, 0, width).clone()


def _kpm_heads_backward(shape: Any, bsz: int, num_heads: int, src_len: int
                        ) -> Callable[[Tensor], Tensor]:
    """``kpm.view(N, 1, 1, S).expand(-1, H, -1, -1).reshape(N * H, 1, S)``'s backward: the
    reshape undone, the expand summed (``sum_to``), the view undone."""
    return lambda g: sum_to(g.reshape(bsz, num_heads, 1, src_len),
                            (bsz, 1, 1, src_len)).reshape(shape)


def _shares_memory(a: Tensor, b: Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def mha_forward(query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int,
                num_heads: int, params: dict[str, Tensor | None], add_zero_attn: bool,
                dropout_p: float, training: bool, key_padding_mask: Tensor | None,
                need_weights: bool, attn_mask: Tensor | None, use_separate_proj_weight: bool,
                average_attn_weights: bool, is_causal: bool, batch_first: bool,
                needs: dict[str, bool]) -> tuple[Tensor, Tensor | None, Any, tuple[Tensor, ...]]:
    """torch's ``multi_head_attention_forward`` (grad mode off, plain tensors), preceded by
    ``MultiheadAttention``'s input transposes when ``batch_first`` (and followed by its output
    transpose).

    ``needs``: whether each input (``query``, ``key``, ``value``, the names of
    ``_MHA_PARAMS``) needs a gradient. Returns the output, the attention weights (or None),
    the backward (``[grad_output, grad_weights]`` -> a dict of gradients by input name) and
    the saved tensors.
    """
    saved: list[Tensor] = []
    is_batched = _F._mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    # A float mask may need a gradient: each step on it pushes its backward on its chain.
    need_am, need_kpm = bool(needs.get("attn_mask")), bool(needs.get("key_padding_mask"))
    am_chain: list[Callable[[Tensor], Tensor]] = []
    kpm_chain: list[Callable[[Tensor], Tensor]] = []
    # Which tensors are the same object decides torch's in-projection path.
    if not is_batched:
        kind = "qkv"  # each input is unsqueezed into a new tensor
        batch_first = False
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
            kpm_chain.append(_squeeze0)
    else:
        kind = ("self" if query is key else "kv") if key is value else "qkv"
        if batch_first:
            query, key, value = query.transpose(1, 0), key.transpose(1, 0), value.transpose(1, 0)
    if use_separate_proj_weight:
        kind = "separate"
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    F = _F
    mask_rg = _torch_requires_grad(attn_mask) and torch.is_floating_point(attn_mask)  # type: ignore[arg-type]
    original_mask = attn_mask
    key_padding_mask = F._canonical_mask(
        mask=key_padding_mask, mask_name="key_padding_mask",
        other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
        target_type=query.dtype)
    if is_causal and attn_mask is None:
        raise RuntimeError(
            "Need attn_mask if specifying the is_causal hint. You may use the Transformer "
            "module method `generate_square_subsequent_mask` to create this mask.")
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None
        need_am = mask_rg = False  # the mask is not used: no gradient reaches it
    else:
        attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None,
                                      other_name="", target_type=query.dtype,
                                      check_other=False)
        if key_padding_mask is not None:
            is_causal = False
    if embed_dim != embed_dim_to_check:
        raise AssertionError(
            f"was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if use_separate_proj_weight:
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(
                f"key's sequence and batch dims {key.shape[:2]} do not match value's "
                f"{value.shape[:2]}")
    elif key.shape != value.shape:
        raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")
    if not use_separate_proj_weight:
        if params["in_proj_weight"] is None:
            raise AssertionError("use_separate_proj_weight is False but in_proj_weight is None")
    else:
        for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            if params[name] is None:
                raise AssertionError(f"use_separate_proj_weight is True but {name} is None")
    q, k, v, in_backward = _in_projection(
        query, key, value, kind, params["in_proj_weight"], params["in_proj_bias"],
        params["q_proj_weight"], params["k_proj_weight"], params["v_proj_weight"], needs, saved)
    in_shapes = (q.shape, k.shape, v.shape)
    # Whether the projected q, k, v depend on something that needs a gradient.
    proj_needs = needs["in_proj_weight"] or needs["in_proj_bias"]
    need_q = needs["query"] or proj_needs or needs["q_proj_weight"]
    need_k = needs["key"] or proj_needs or needs["k_proj_weight"]
    need_v = needs["value"] or proj_needs or needs["v_proj_weight"]
    if kind == "self":
        need_q = need_k = need_v = need_q or need_k or need_v
    elif kind == "kv":
        need_k = need_v = need_k or need_v

    if attn_mask is not None:
        if attn_mask.dim() == 2:
            correct_2d_size = (tgt_len, src_len)
            if attn_mask.shape != correct_2d_size:
                raise RuntimeError(f"The shape of the 2D attn_mask is {attn_mask.shape}, but "
                                   f"should be {correct_2d_size}.")
            attn_mask = attn_mask.unsqueeze(0)
            am_chain.append(_squeeze0)
        elif attn_mask.dim() == 3:
            correct_3d_size = (bsz * num_heads, tgt_len, src_len)
            if attn_mask.shape != correct_3d_size:
                raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but "
                                   f"should be {correct_3d_size}.")
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")

    bias_k, bias_v = params["bias_k"], params["bias_v"]
    static_k, static_v = params["static_k"], params["static_v"]
    bias_back_k = bias_back_v = None
    kv_len = k.shape[0]
    if bias_k is not None and bias_v is not None:
        if static_k is not None:
            raise AssertionError("bias cannot be added to static key.")
        if static_v is not None:
            raise AssertionError("bias cannot be added to static value.")
        k = torch.cat([k, bias_k.repeat(1, bsz, 1)])
        v = torch.cat([v, bias_v.repeat(1, bsz, 1)])
        bias_back_k = _repeat_backward(bias_k, 1, bsz, 1)
        bias_back_v = _repeat_backward(bias_v, 1, bsz, 1)
        need_k = need_k or needs["bias_k"]
        need_v = need_v or needs["bias_v"]
        if attn_mask is not None:
            am_chain.append(_unpad(attn_mask.shape[-1]))
            attn_mask = _pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            kpm_chain.append(_unpad(key_padding_mask.shape[-1]))
            key_padding_mask = _pad(key_padding_mask, (0, 1))
    else:
        if bias_k is not None:
            raise AssertionError("bias_k is set but bias_v is None")
        if bias_v is not None:
            raise AssertionError("bias_v is set but bias_k is None")
    k_cat_shape, v_cat_shape = k.shape, v.shape

    q = q.view(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
    if static_k is None:
        k = k.view(k.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
    else:
        k = _check_static("static_k", static_k, bsz * num_heads, head_dim)
        need_k = needs["static_k"]
    if static_v is None:
        v = v.view(v.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
    else:
        v = _check_static("static_v", static_v, bsz * num_heads, head_dim)
        need_v = needs["static_v"]
    k_heads_len, v_heads_len = k.shape[1], v.shape[1]

    if add_zero_attn:
        zero_attn_shape = (bsz * num_heads, 1, head_dim)
        k = torch.cat([k, torch.zeros(zero_attn_shape, dtype=k.dtype, device=k.device)], dim=1)
        v = torch.cat([v, torch.zeros(zero_attn_shape, dtype=v.dtype, device=v.device)], dim=1)
        if attn_mask is not None:
            am_chain.append(_unpad(attn_mask.shape[-1]))
            attn_mask = _pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            kpm_chain.append(_unpad(key_padding_mask.shape[-1]))
            key_padding_mask = _pad(key_padding_mask, (0, 1))
    src_len = k.size(1)

    merged_from: tuple[Tensor, Tensor] | None = None
    if key_padding_mask is not None:
        F._check_key_padding_mask(key_padding_mask, src_len, bsz)
        kpm_chain.append(_kpm_heads_backward(key_padding_mask.shape, bsz, num_heads, src_len))
        key_padding_mask = (key_padding_mask.view(bsz, 1, 1, src_len)
                            .expand(-1, num_heads, -1, -1).reshape(bsz * num_heads, 1, src_len))
        if attn_mask is None:
            attn_mask = key_padding_mask
        else:
            merged_from = (attn_mask, key_padding_mask)
            attn_mask = attn_mask + key_padding_mask
    if not training:
        dropout_p = 0.0
    need_mask = need_am or need_kpm
    mask_3d = attn_mask

    def mask_backward(g: Tensor, result: dict[str, Tensor | None]) -> None:
        """The masks' gradients from that of the mask the attention added (3-d)."""
        g_am = g_kpm = None
        if merged_from is not None:  # AddBackward0: both get it, summed to their shapes
            g_am = _reduce_to(g, merged_from[0]) if need_am else None
            g_kpm = _reduce_to(g, merged_from[1]) if need_kpm else None
        elif key_padding_mask is not None:
            g_kpm = g
        else:
            g_am = g
        for name, gm, chain in (("attn_mask", g_am, am_chain),
                                ("key_padding_mask", g_kpm, kpm_chain)):
            if gm is not None and needs.get(name):
                for step in reversed(chain):
                    gm = step(gm)
                result[name] = gm

    need_scores = need_q or need_k or need_mask
    need_attn = need_scores or need_v
    weights_out: Tensor | None = None

    if need_weights:
        _b, _nt, e = q.shape
        q_factor = math.sqrt(1.0 / float(e))
        q_scaled = q * q_factor
        k_t = k.transpose(-2, -1)
        if is_causal and attn_mask is None:
            raise AssertionError("FIXME: is_causal not implemented for need_weights")
        if attn_mask is not None:
            scores = torch.baddbmm(attn_mask, q_scaled, k_t)
        else:
            scores = torch.bmm(q_scaled, k_t)
        weights = _softmax(scores, -1, False)
        dropped, noise = _attention_dropout(weights, dropout_p, ValueError)  # F.dropout's check
        attn = torch.bmm(dropped, v)
        attn_2d = attn.transpose(0, 1).reshape(tgt_len * bsz, embed_dim)
        if need_scores:
            saved.extend((q_scaled, k_t, weights))
        if need_attn:
            saved.extend((dropped, v))
        if noise is not None:
            saved.append(noise)
        attn_back: Any = None

        def weights_backward(g_attn_2d: Tensor | None, g_weights: Tensor | None,
                             mask_grads: dict[str, Tensor | None]
                             ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
            # The weights output's view/mean ran after the output projection: its gradient
            # reaches the (dropped) weights' buffer first, then the bmm's is added.
            g_dropped = g_weights
            g_v = None
            if g_attn_2d is not None:
                g_attn = g_attn_2d.reshape(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
                if need_scores:
                    g = g_attn.bmm(v.transpose(1, 2))
                    g_dropped = g if g_dropped is None else g_dropped + g
                if need_v:
                    g_v = dropped.transpose(1, 2).bmm(g_attn)
            g_q = g_k = None
            if g_dropped is not None and need_scores:
                g_w = g_dropped * noise if noise is not None else g_dropped
                g_scores = _softmax_backward_data(g_w, weights, -1, weights.dtype)
                if need_mask:  # baddbmm's self: beta * grad summed to its shape
                    mask_backward(_reduce_to(g_scores, mask_3d), mask_grads)  # type: ignore[arg-type]
                if need_q:
                    g_q = g_scores.bmm(k_t.transpose(1, 2)) * q_factor
                if need_k:
                    g_k = q_scaled.transpose(1, 2).bmm(g_scores).transpose(-2, -1)
            return g_q, g_k, g_v

        attn_back = weights_backward
        weights_view = dropped.view(bsz, num_heads, tgt_len, src_len)
        weights_out = weights_view.mean(dim=1) if average_attn_weights else weights_view
        if not is_batched:
            weights_out = weights_out.squeeze(0)
    else:
        if attn_mask is not None:
            if attn_mask.size(0) == 1 and attn_mask.dim() == 3:
                attn_mask = attn_mask.unsqueeze(0)
            else:
                attn_mask = attn_mask.view(bsz, num_heads, -1, src_len)
            if mask_rg and not need_mask and not _shares_memory(attn_mask, original_mask):  # type: ignore[arg-type]
                mask_rg = False  # a new tensor (pad, sum) made under no_grad
        q4 = q.view(bsz, num_heads, tgt_len, head_dim)
        k4 = k.view(bsz, num_heads, src_len, head_dim)
        v4 = v.view(bsz, num_heads, src_len, head_dim)
        mask_for_choice = attn_mask
        if attn_mask is not None and (mask_rg or need_mask):
            mask_for_choice = attn_mask.detach().requires_grad_()
        choice = sdpa_choice(q4, k4, v4, mask_for_choice, dropout_p, is_causal, None, False)
        if choice == _FLASH:
            attn4, sdpa_back, s = sdpa_flash_forward(q4, k4, v4, attn_mask, dropout_p,
                                                     is_causal, None)
        else:
            attn4, sdpa_back, s, _ = sdpa_math_forward(
                q4, k4, v4, attn_mask, dropout_p, is_causal, None, False,
                (need_q, need_k, need_v, need_mask))
        if need_attn:
            saved.extend(s)
        permuted = attn4.permute(2, 0, 1, 3)
        attn_2d = permuted.reshape(bsz * tgt_len, embed_dim)
        permuted_shape = permuted.shape
        q4_shape, k4_shape, v4_shape = q.shape, k.shape, v.shape

        def sdpa_backward(g_attn_2d: Tensor | None, g_weights: Tensor | None,
                          mask_grads: dict[str, Tensor | None]
                          ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
            if g_attn_2d is None:
                return None, None, None
            g4 = g_attn_2d.reshape(permuted_shape).permute(1, 2, 0, 3)
            g_q4, g_k4, g_v4, g_mask4 = sdpa_back(g4)
            if g_mask4 is not None and mask_3d is not None:
                mask_backward(g_mask4.reshape(mask_3d.shape), mask_grads)
            return (None if g_q4 is None or not need_q else g_q4.reshape(q4_shape),
                    None if g_k4 is None or not need_k else g_k4.reshape(k4_shape),
                    None if g_v4 is None or not need_v else g_v4.reshape(v4_shape))

        attn_back = sdpa_backward

    out_2d, out_back, s = _lin(attn_2d, params["out_proj_weight"],  # type: ignore[arg-type]
                               params["out_proj_bias"], need_attn, needs["out_proj_weight"],
                               needs["out_proj_bias"])
    saved.extend(s)
    out = out_2d.view(tgt_len, bsz, out_2d.size(1))
    if not is_batched:
        out = out.squeeze(1)
    elif batch_first:
        out = out.transpose(1, 0)

    def backward(grads: list[Tensor | None]) -> dict[str, Tensor | None]:
        g_out, g_weights = grads
        result: dict[str, Tensor | None] = {}
        g_attn_2d = None
        if g_weights is not None:
            if not is_batched:
                g_weights = g_weights.unsqueeze(0)
            if average_attn_weights:
                g_weights = g_weights.unsqueeze(1).expand(
                    bsz, num_heads, tgt_len, src_len) / num_heads
            g_weights = g_weights.reshape(bsz * num_heads, tgt_len, src_len)
        if g_out is not None:
            if not is_batched:
                g_out = g_out.unsqueeze(1)
            elif batch_first:
                g_out = g_out.transpose(1, 0)
            g_attn_2d, result["out_proj_weight"], result["out_proj_bias"] = out_back(
                g_out.reshape(tgt_len * bsz, embed_dim))
        mask_grads: dict[str, Tensor | None] = {}
        g_q, g_k, g_v = attn_back(g_attn_2d, g_weights, mask_grads)
        if add_zero_attn:
            g_k = None if g_k is None else g_k.narrow(1, 0, k_heads_len)
            g_v = None if g_v is None else g_v.narrow(1, 0, v_heads_len)
        if static_k is not None:
            result["static_k"], g_k = g_k, None
        elif g_k is not None:
            g_k = g_k.transpose(0, 1).reshape(k_cat_shape)
        if static_v is not None:
            result["static_v"], g_v = g_v, None
        elif g_v is not None:
            g_v = g_v.transpose(0, 1).reshape(v_cat_shape)
        if g_q is not None:
            g_q = g_q.transpose(0, 1).reshape(in_shapes[0])
        if bias_back_k is not None:
            if g_k is not None:
                if needs["bias_k"]:
                    result["bias_k"] = bias_back_k(g_k.narrow(0, kv_len, 1))[0]
                g_k = g_k.narrow(0, 0, kv_len)
            if g_v is not None:
                if needs["bias_v"]:
                    result["bias_v"] = bias_back_v(g_v.narrow(0, kv_len, 1))[0]  # type: ignore[misc]
                g_v = g_v.narrow(0, 0, kv_len)
        result.update(mask_grads)
        names = ("query", "key", "value", "in_proj_weight", "in_proj_bias", "q_proj_weight",
                 "k_proj_weight", "v_proj_weight")
        for name, g in zip(names, in_backward(g_q, g_k, g_v)):
            result[name] = g
        if batch_first:
            for name in ("query", "key", "value"):
                g = result.get(name)
                if g is not None:
                    result[name] = g.transpose(1, 0)
        elif not is_batched:
            for name in ("query", "key", "value"):
                g = result.get(name)
                if g is not None:
                    result[name] = g.squeeze(1)
        return result

    return out, weights_out, backward, tuple(saved)


def _mha(query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int, num_heads: int,
         params: dict[str, Tensor | None], add_zero_attn: bool, dropout_p: float,
         training: bool, key_padding_mask: Tensor | None, need_weights: bool,
         attn_mask: Tensor | None, use_separate_proj_weight: bool, average_attn_weights: bool,
         is_causal: bool, batch_first: bool) -> tuple[Tensor, Tensor | None]:
    """:func:`mha_forward` recorded as one node (two outputs with the weights)."""
    with no_dispatch():
        recording = is_grad_enabled()
        needs: dict[str, bool] = {}
        edges: dict[str, Edge] = {}
        if recording:
            for name, t in (("query", query), ("key", key), ("value", value),
                            ("attn_mask", attn_mask), ("key_padding_mask", key_padding_mask),
                            *params.items()):
                e = None if t is None else edge(t)
                edges[name] = e
                needs[name] = e is not None
        else:
            needs = dict.fromkeys(("query", "key", "value", *params), False)
        any_need = any(needs.values())
        set_grad_enabled(False)
        try:
            out, weights, backward, saved = mha_forward(
                query, key, value, embed_dim_to_check, num_heads, params, add_zero_attn,
                dropout_p, training, key_padding_mask, need_weights, attn_mask,
                use_separate_proj_weight, average_attn_weights, is_causal, batch_first, needs)
        finally:
            set_grad_enabled(recording)
        if not any_need:
            return wrap(out), None if weights is None else wrap(weights)
        # The inputs in the order torch's graph hands their gradients out (newest node first):
        # one linear for self-attention, key/value's before query's, else value, key, query.
        inputs: tuple[str, ...]
        if query.dim() == 3 and key is value and not use_separate_proj_weight:
            inputs = ("query",) if query is key else ("key", "query")
        else:
            inputs = ("value", "key", "query")
        names = (*inputs, *params, "attn_mask", "key_padding_mask")
        node_edges = tuple(edges[n] for n in names)

        def node_backward(grads: Any) -> tuple[Tensor | None, ...]:
            got = backward(grads if need_weights else [grads, None])
            return tuple(got.get(n) for n in names)

        name = "MultiHeadAttentionBackward0"
        if not need_weights:
            return record(out, name, node_backward, node_edges, saved), None
        tracked = record_outputs([out, weights], name, node_backward, node_edges, saved)
        return tracked[0], tracked[1]


@implements(torch.nn.functional.multi_head_attention_forward)
def multi_head_attention_forward(
    query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int, num_heads: int,
    in_proj_weight: Tensor | None, in_proj_bias: Tensor | None, bias_k: Tensor | None,
    bias_v: Tensor | None, add_zero_attn: bool, dropout_p: float, out_proj_weight: Tensor,
    out_proj_bias: Tensor | None, training: bool = True,
    key_padding_mask: Tensor | None = None, need_weights: bool = True,
    attn_mask: Tensor | None = None, use_separate_proj_weight: bool = False,
    q_proj_weight: Tensor | None = None, k_proj_weight: Tensor | None = None,
    v_proj_weight: Tensor | None = None, static_k: Tensor | None = None,
    static_v: Tensor | None = None, average_attn_weights: bool = True, is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""torch's ``F.multi_head_attention_forward``: in-projection (packed weight for
    self-attention, query and key/value for encoder-decoder attention, three chunks or separate
    weights otherwise), ``bias_k``/``bias_v`` rows, ``add_zero_attn``, masks merged
    (``key_padding_mask`` bool or float, ``attn_mask`` 2-d or 3-d, bool or float), attention
    (explicit softmax weights when ``need_weights``, else ``scaled_dot_product_attention``),
    dropout, output projection; weights averaged over heads with ``average_attn_weights``.

    Shapes: query ``(L, N, E)`` or ``(L, E)``, key/value ``(S, N, E_k)`` / ``(S, N, E_v)`` ->
    output ``(L, N, E)``, weights ``(N, L, S)`` (or ``(N, H, L, S)``).

    Backward: one node running every op's derivative in reverse (linear's mm/addmm formulas,
    bmm's, ``_softmax_backward_data``, dropout's mask, the SDPA backward of the path its
    forward took, the views', cat's and repeat's), gradients that fan in summed in torch's
    order.
    """
    params = {"in_proj_weight": in_proj_weight, "in_proj_bias": in_proj_bias,
              "q_proj_weight": q_proj_weight, "k_proj_weight": k_proj_weight,
              "v_proj_weight": v_proj_weight, "bias_k": bias_k, "bias_v": bias_v,
              "out_proj_weight": out_proj_weight, "out_proj_bias": out_proj_bias,
              "static_k": static_k, "static_v": static_v}
    return _mha(query, key, value, embed_dim_to_check, num_heads, params, add_zero_attn,
                dropout_p, training, key_padding_mask, need_weights, attn_mask,
                use_separate_proj_weight, average_attn_weights, is_causal, False)
