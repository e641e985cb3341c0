"""Loss functions."""

from __future__ import annotations

from torch import Tensor

from .. import functional as F
from .module import Module

__all__ = ["MSELoss"]


class _Loss(Module):
    reduction: str

    def __init__(
        self, size_average: bool | None = None, reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            self.reduction = F._legacy_reduction(size_average, reduce)
        else:
            self.reduction = reduction


class MSELoss(_Loss):
    r"""Mean squared error between each element of the input :math:`x` and target :math:`y`.

    Args:
        size_average, reduce: deprecated; see ``reduction``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape: input and target of the same shape (broadcastable, with torch's warning); a scalar,
    or the input's shape for ``'none'``. Backward: see :func:`shimnn.functional.mse_loss`.
    """

    __constants__ = ["reduction"]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)
