"""``embedding`` and ``embedding_bag``: rows of a weight matrix looked up by index (and
reduced per bag), as torch's ``F.embedding`` / ``F.embedding_bag``.

The value is torch's own ``F.embedding`` (with ``max_norm``, torch first renormalizes the
looked-up rows of the weight in place, under no_grad, by ``embedding_renorm_``; so does this).
The gradient is the kernel torch's derivative calls for a dense weight,
``embedding_dense_backward(grad, indices, num_weights, padding_idx, scale_grad_by_freq)``:
rows at ``padding_idx`` get none, and with ``scale_grad_by_freq`` each row's gradient is divided
by how often its index occurs in the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._graph import Recorded, apply, edge, implements, is_grad_enabled, no_dispatch, wrap
from ._common import _check_real

__all__ = ["embedding", "embedding_bag"]

_embedding_dense_backward = torch.ops.aten.embedding_dense_backward.default._op
_torch_embedding: Any = torch.nn.functional.embedding


def _sparse_refused() -> NotImplementedError:
    return NotImplementedError(
        "shimnn: embedding(sparse=True) has a sparse weight gradient, which shimnn does not "
        "compute (it writes dense gradients only); use sparse=False (the same values, a dense "
        "gradient), or compute the lookup under torch.no_grad()")


def _embedding_forward(input: Tensor, weight: Tensor, padding_idx: int | None,
                       max_norm: float | None, norm_type: float, scale_grad_by_freq: bool
                       ) -> Recorded:
    _check_real("embedding", weight)
    if max_norm is not None:
        input = input.contiguous()  # torch's: the indices renorm and the lookup read
    result = _torch_embedding(input, weight, padding_idx, max_norm, norm_type,
                              scale_grad_by_freq, False)
    num_weights = weight.shape[0]
    # torch's F.embedding: a negative padding_idx counts from the end, None is -1 (no row)
    pad = -1 if padding_idx is None else padding_idx + num_weights if padding_idx < 0 else (
        padding_idx)

    def backward(grad: Tensor) -> tuple[None, Tensor]:
        return None, _embedding_dense_backward(grad, input, num_weights, pad,
                                               scale_grad_by_freq)

    return result, backward, (input,), "EmbeddingBackward0"


@implements(torch.nn.functional.embedding)
def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    r"""Look up rows of ``weight``: ``(*)`` int indices, ``(num_embeddings, embedding_dim)``
    weight -> ``(*, embedding_dim)``.

    ``padding_idx``: that row gets no gradient. ``max_norm``: the looked-up rows whose
    ``norm_type``-norm exceeds it are first rescaled in place (under no_grad) to norm
    ``max_norm``, as torch's ``embedding_renorm_``. ``sparse=True`` (a sparse gradient) is
    refused when the weight needs a gradient.

    Backward: the gradient rows summed into the weight rows they came from, by torch's
    ``embedding_dense_backward`` (divided by each index's count with
    ``scale_grad_by_freq``; nothing for ``padding_idx``). The indices get no gradient.
    """
    with no_dispatch():
        if is_grad_enabled():
            e_weight = edge(weight)
            if e_weight is not None:
                if sparse:
                    raise _sparse_refused()
                return apply(_embedding_forward, (None, e_weight), input, weight, padding_idx,
                             max_norm, norm_type, scale_grad_by_freq)
        return wrap(_torch_embedding(input, weight, padding_idx, max_norm, norm_type,
                                     scale_grad_by_freq, sparse))


def _aten_embedding_forward(weight: Tensor, indices: Tensor, padding_idx: int,
                            scale_grad_by_freq: bool) -> Recorded:
    _check_real("embedding", weight)
    result = torch.embedding(weight, indices, padding_idx, scale_grad_by_freq, False)
    num_weights = weight.shape[0]

    def backward(grad: Tensor) -> tuple[Tensor, None]:
        return _embedding_dense_backward(grad, indices, num_weights, padding_idx,
                                         scale_grad_by_freq), None

    return result, backward, (indices,), "EmbeddingBackward0"


@implements(torch.embedding)
def aten_embedding(weight: Tensor, indices: Tensor, padding_idx: int = -1,
                   scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """``torch.embedding(weight, indices, padding_idx=-1, ...)``: the lookup without the
    ``F.embedding`` argument handling (``padding_idx`` as given). Backward: as
    :func:`embedding`."""
    with no_dispatch():
        if is_grad_enabled():
            e_weight = edge(weight)
            if e_weight is not None:
                if sparse:
                    raise _sparse_refused()
                return apply(_aten_embedding_forward, (e_weight, None), weight, indices,
                             padding_idx, scale_grad_by_freq)
        return wrap(torch.embedding(weight, indices, padding_idx, scale_grad_by_freq, sparse))


# ---------------------------------------------------------------------------------------------
# embedding_bag
# ---------------------------------------------------------------------------------------------

_embedding_bag = torch.ops.aten._embedding_bag.default._op
_embedding_bag_backward = torch.ops.aten._embedding_bag_backward.default._op
_per_sample_weights_backward = (
    torch.ops.aten._embedding_bag_per_sample_weights_backward.default._op)
_torch_embedding_bag: Any = torch.nn.functional.embedding_bag
_MODES = {"sum": 0, "mean": 1, "max": 2}


def _bag_arguments(input: Tensor, weight: Tensor, offsets: Tensor | None, mode: str,
                   scale_grad_by_freq: bool, sparse: bool, per_sample_weights: Tensor | None,
                   include_last_offset: bool
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, bool, int]:
    """torch's ``F.embedding_bag`` argument handling, with its checks and messages: a 2-d
    input is a batch of fixed-length bags (offsets made by ``arange``), ``mode`` as an int."""
    if weight.dtype == torch.long and input.is_floating_point():
        warnings.warn(
            "Argument order of nn.functional.embedding_bag was changed. "
            "Usage `embedding_bag(weight, input, ...)` is deprecated, "
            "and should now be `embedding_bag(input, weight, ...)`.", stacklevel=4)
        weight, input = input, weight
    if per_sample_weights is not None and input.size() != per_sample_weights.size():
        raise ValueError(
            f"embedding_bag: If per_sample_weights ({per_sample_weights.shape}) is not None, "
            f"then it must have the same shape as the input ({input.shape})")
    if not weight.dim() == 2:
        raise ValueError(
            f"weight has to be a 2D Tensor, but got Tensor of dimension {weight.dim()}")
    if input.dim() == 2:
        if offsets is not None:
            raise ValueError(
                "if input is 2D, then offsets has to be None, as input is treated is a "
                "mini-batch of fixed length sequences. However, found offsets of type "
                f"{type(offsets)}")
        offsets = torch.arange(0, input.numel(), input.size(1), dtype=input.dtype,
                               device=input.device)
        include_last_offset = False
        input = input.reshape(-1)
        if per_sample_weights is not None:
            per_sample_weights = per_sample_weights.reshape(-1)
    elif input.dim() == 1:
        if offsets is None:
            raise ValueError("offsets has to be a 1D Tensor but got None")
        if offsets.dim() != 1:
            raise ValueError("offsets has to be a 1D Tensor")
    else:
        raise ValueError(
            f"input has to be 1D or 2D Tensor, but got Tensor of dimension {input.dim()}")
    if mode not in _MODES:
        raise ValueError("mode has to be one of sum, mean or max")
    if mode == "max":
        if scale_grad_by_freq:
            raise ValueError("max mode does not support scaling the gradient by the frequency")
        if sparse:
            raise ValueError("max mode does not support sparse weights")
    return input, weight, offsets, per_sample_weights, include_last_offset, _MODES[mode]


def _embedding_bag_forward(input: Tensor, weight: Tensor, offsets: Tensor,
                           per_sample_weights: Tensor | None, psw_shape: Sequence[int],
                           max_norm: float | None, norm_type: float, scale_grad_by_freq: bool,
                           mode: int, include_last_offset: bool, padding_idx: int | None,
                           needs: tuple[bool, bool]) -> Recorded:
    _check_real("embedding_bag", weight)
    if max_norm is not None:
        torch.embedding_renorm_(weight, input, max_norm, norm_type)  # under no_grad, as torch
    if per_sample_weights is not None and mode != 0:
        raise NotImplementedError(
            "embedding_bag: per_sample_weights was not None. per_sample_weights is only "
            f"supported for mode='sum' (got mode='{_mode_name(mode)}'). Please open a feature "
            "request on GitHub.")
    num_weights = weight.shape[0]
    pad = -1
    if padding_idx is not None:  # torch.embedding_bag's check and wrap
        if not -num_weights <= padding_idx < num_weights:
            raise RuntimeError(
                f"padding_idx must be within the number of embeddings, -{num_weights} through "
                f"{num_weights - 1}, but got {padding_idx}")
        pad = padding_idx % num_weights
    if input.dtype != offsets.dtype:  # promoteIndicesAndOffsets
        common = torch.promote_types(input.dtype, offsets.dtype)
        input, offsets = input.to(common), offsets.to(common)
    indices, offsets = input.contiguous(), offsets.contiguous()
    result, offset2bag, bag_size, max_indices = _embedding_bag(
        weight, indices, offsets, scale_grad_by_freq, mode, False, per_sample_weights,
        include_last_offset, pad)

    def backward(grad: Tensor) -> tuple[None, Tensor | None, None, Tensor | None]:
        g_weight = g_psw = None
        if needs[0]:
            g_weight = _embedding_bag_backward(
                grad, indices, offsets, offset2bag, bag_size, max_indices, num_weights,
                scale_grad_by_freq, mode, False, per_sample_weights, pad)
        if needs[1]:
            g_psw = _per_sample_weights_backward(grad, weight, indices, offsets, offset2bag,
                                                 mode, pad).reshape(psw_shape)
        return None, g_weight, None, g_psw

    saved = (indices, offsets, offset2bag, bag_size, max_indices) + (
        (per_sample_weights,) if per_sample_weights is not None and needs[0] else ()) + (
        (weight,) if needs[1] else ())
    return result, backward, saved, "EmbeddingBagBackward0"


def _mode_name(mode: int) -> str:
    return next(k for k, v in _MODES.items() if v == mode)


@implements(torch.nn.functional.embedding_bag)
def embedding_bag(input: Tensor, weight: Tensor, offsets: Tensor | None = None,
                  max_norm: float | None = None, norm_type: float = 2,
                  scale_grad_by_freq: bool = False, mode: str = "mean", sparse: bool = False,
                  per_sample_weights: Tensor | None = None, include_last_offset: bool = False,
                  padding_idx: int | None = None) -> Tensor:
    r"""Sums, means or maxima of bags of embeddings, without the intermediate lookup.

    ``input`` ``(B, N)`` (``B`` bags of ``N`` indices) or ``(N,)`` with ``offsets`` ``(B,)``
    (or ``(B + 1,)`` with ``include_last_offset``) giving where each bag starts; ``weight``
    ``(num_embeddings, D)`` -> ``(B, D)``. ``per_sample_weights`` (mode ``"sum"``) weight each
    index; ``padding_idx`` rows are left out of the bags; ``max_norm`` renormalizes as in
    :func:`embedding`. ``sparse=True`` is refused when the weight needs a gradient.

    Backward: torch's ``_embedding_bag_backward`` (dense: each bag's gradient, divided by the
    bag's size for ``"mean"``, times the index's weight, to its rows; for ``"max"``, to the
    row that gave each maximum) and ``_embedding_bag_per_sample_weights_backward``."""
    with no_dispatch():
        edges = (None, edge(weight) if is_grad_enabled() else None, None,
                 edge(per_sample_weights) if is_grad_enabled() else None)
        if edges[1] is None and edges[3] is None:
            return wrap(_torch_embedding_bag(input, weight, offsets, max_norm, norm_type,
                                             scale_grad_by_freq, mode, sparse,
                                             per_sample_weights, include_last_offset,
                                             padding_idx))
        psw_shape = None if per_sample_weights is None else per_sample_weights.shape
        input, weight, offsets, per_sample_weights, include_last_offset, mode_enum = (
            _bag_arguments(input, weight, offsets, mode, scale_grad_by_freq, sparse,
                           per_sample_weights, include_last_offset))
        if sparse:
            raise _sparse_refused()
        return apply(_embedding_bag_forward, edges, input, weight, offsets,
                     per_sample_weights, psw_shape, max_norm, norm_type, scale_grad_by_freq,
                     mode_enum, include_last_offset, padding_idx,
                     (edges[1] is not None, edges[3] is not None))
