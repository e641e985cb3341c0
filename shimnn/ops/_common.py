"""Helpers every op family shares: summing a broadcast gradient back, refusing complex dtypes."""

from __future__ import annotations

from torch import Tensor

from .._graph import sum_to

__all__ = ["_check_real", "_reduce_to"]


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
