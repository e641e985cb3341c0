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
    set_grad_enabled,
    sum_to,
    wrap,
)
from ._common import _check_real, _reduce_to
from .activation import _dropout_noise
from .matmul import _matmul_forward

__all__ = ["scaled_dot_product_attention"]

_flash_forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default._op
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default._op
_safe_softmax = torch.ops.aten._safe_softmax.default._op
_softmax_backward_data = torch.ops.aten._softmax_backward_data.default._op
_fused_sdp_choice = torch._fused_sdp_choice
_FLASH = 1  # torch.nn.attention.SDPBackend.FLASH_ATTENTION
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
            torch.nn.functional.scaled_dot_product_attention(
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
    noise = None
    dropped = weights
    if dropout_p > 0.0:
        if dropout_p > 1:
            raise RuntimeError(
                f"dropout probability has to be between 0 and 1, but got {dropout_p}")
        noise = _dropout_noise(weights, dropout_p)
        dropped = weights * noise
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
                name, order = "ScaledDotProductFlashAttentionForCpuBackward0", (0, 1, 2, 3)
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
