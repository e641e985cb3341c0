"""Flatten and Unflatten: reshaping layers (their backward reshapes the gradient back)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..ops import shape as _shape_ops
from .module import Module

__all__ = ["Flatten", "Unflatten"]


class Flatten(Module, torch.nn.Flatten):
    r"""Flatten the dims ``start_dim..end_dim`` into one.

    Args:
        start_dim: first dim to flatten. Default: 1.
        end_dim: last dim to flatten. Default: -1.

    Shape: :math:`(*, S_{start}, ..., S_{end}, *)` -> :math:`(*, \prod S_i, *)`.
    Backward: ``grad.reshape(input.shape)``.
    """

    __constants__ = ["start_dim", "end_dim"]
    start_dim: int
    end_dim: int

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        return _shape_ops.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module, torch.nn.Unflatten):
    r"""Expand the dim ``dim`` into the shape ``unflattened_size``.

    Args:
        dim: the dim to unflatten.
        unflattened_size: its new shape (a tuple or list of ints, or a ``torch.Size``).

    Shape: :math:`(*, S_{dim}, *)` -> :math:`(*, U_1, ..., U_n, *)` with
    :math:`\prod U_i = S_{dim}`. Backward: ``grad.reshape(input.shape)``.
    """

    __constants__ = ["dim", "unflattened_size"]
    dim: int
    unflattened_size: list[int] | tuple[int, ...]

    def __init__(self, dim: int, unflattened_size: list[int] | tuple[int, ...]) -> None:
        super().__init__()
        self._require_tuple_int(unflattened_size)
        self.dim = dim
        self.unflattened_size = unflattened_size

    def _require_tuple_int(self, input: Any) -> None:
        if isinstance(input, (tuple, list)):
            for idx, elem in enumerate(input):
                if not isinstance(elem, int):
                    raise TypeError(
                        "unflattened_size must be tuple of ints, "
                        + f"but found element of type {type(elem).__name__} at pos {idx}"
                    )
            return
        raise TypeError(
            f"unflattened_size must be a tuple of ints, but found type {type(input).__name__}"
        )

    def forward(self, input: Tensor) -> Tensor:
        return _shape_ops.unflatten(input, self.dim, self.unflattened_size)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
