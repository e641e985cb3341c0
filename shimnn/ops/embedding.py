"""``embedding``: rows of a weight matrix looked up by index, as torch's ``F.embedding``.

The value is torch's own ``F.embedding`` (with ``max_norm``, torch first renormalizes the
looked-up rows of the weight in place, under no_grad, by ``embedding_renorm_``; so does this).
The gradient is the kernel torch's derivative calls for a dense weight,
``embedding_dense_backward(grad, indices, num_weights, padding_idx, scale_grad_by_freq)``:
rows at ``padding_idx`` get none, and with ``scale_grad_by_freq`` each row's gradient is divided
by how often its index occurs in the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._graph import Recorded, apply, edge, implements, is_grad_enabled, no_dispatch, wrap
from ._common import _check_real

__all__ = ["embedding"]

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
