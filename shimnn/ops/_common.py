"""Helpers every op family shares: summing a broadcast gradient back, refusing complex dtypes."""

from __future__ import annotations

import torch
from torch import Tensor

from .._graph import sum_to

__all__ = ["_check_real", "_reduce_to", "_suggest_memory_format"]


def _reduce_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a broadcast gradient back to ``like``'s shape and cast it to ``like``'s dtype."""
    grad = sum_to(grad, like.shape)
    return grad if grad.dtype == like.dtype else grad.to(like.dtype)


def _check_real(name: str, *tensors: Tensor | None) -> None:
    for t in tensors:
        if t is not None and t.dtype.is_complex:
            raise NotImplementedError(
                f"shimnn: the backward of {name} is written for real dtypes; got {t.dtype}"
            )


def _suggest_memory_format(t: Tensor) -> torch.memory_format:
    """torch's ``Tensor::suggest_memory_format()`` for a 4-d tensor: channels_last when its
    strides are channels_last-like (c10's ``is_channels_last_strides_2d``, which resolves
    ambiguous size-1 cases to contiguous), else contiguous."""
    if t.dim() != 4 or t.layout != torch.strided:
        return torch.contiguous_format
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return torch.contiguous_format
    low = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < low:
            return torch.contiguous_format
        if d == 0 and low == strides[1]:
            return torch.contiguous_format
        low = strides[d]
        if sizes[d] > 1:
            low *= sizes[d]
    return torch.channels_last
