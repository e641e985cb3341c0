"""Loss functions as modules, mirroring torch.nn's loss classes.

The classes, constructor signatures and defaults, attributes, buffers, ``__constants__`` and
``repr`` are torch's; ``forward`` calls the hand-written :mod:`shimnn.functional` losses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import loss as F
from .module import Module, compiled_call, torch_init

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "L1Loss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
]


class _Loss(Module, torch.nn.modules.loss._Loss):
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


class _WeightedLoss(_Loss, torch.nn.modules.loss._WeightedLoss):
    """A loss with a per-class (or per-element) ``weight``, registered as a buffer."""

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.weight: Tensor | None


class L1Loss(_Loss, torch.nn.L1Loss):
    r"""Mean absolute error :math:`|x_n - y_n|` between each element of the input and target.

    Args:
        size_average, reduce: deprecated; see ``reduction``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape: input and target of the same shape (broadcastable, with torch's warning); a scalar,
    or the broadcast shape for ``'none'``. Backward: see :func:`shimnn.functional.l1_loss`.
    """

    __constants__ = ["reduction"]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)


class NLLLoss(_WeightedLoss, torch.nn.NLLLoss):
    r"""Negative log likelihood :math:`-w_{y_n} x_{n, y_n}` of log-probabilities at class
    indices.

    Args:
        weight: a manual rescaling weight per class, a tensor of size ``C`` (a buffer).
        size_average, reduce: deprecated; see ``reduction``.
        ignore_index: a target value that is ignored (adds nothing, and is left out of the
            mean's denominator). Default: -100.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'`` (the weighted mean).

    Shape: input ``(C)``, ``(N, C)`` or ``(N, C, d_1, ..., d_K)``; target ``()``, ``(N)`` or
    ``(N, d_1, ..., d_K)`` of class indices in ``[0, C)``; a scalar, or the target's shape for
    ``'none'``. Backward: see :func:`shimnn.functional.nll_loss`.
    """

    __constants__ = ["ignore_index", "reduction"]
    ignore_index: int

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class MSELoss(_Loss, torch.nn.MSELoss):
    r"""Mean squared error between each element of the input :math:`x` and target :math:`y`.

    Args:
        size_average, reduce: deprecated; see ``reduction``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape: input and target of the same shape (broadcastable, with torch's warning); a scalar,
    or the input's shape for ``'none'``. Backward: see :func:`shimnn.functional.mse_loss`.
    """

    __constants__ = ["reduction"]
    __call__ = compiled_call  # the call and forward's compiled case in one C++ call

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class BCELoss(_WeightedLoss, torch.nn.BCELoss):
    r"""Binary cross entropy :math:`-w_n [y_n \log x_n + (1 - y_n) \log(1 - x_n)]` between
    probabilities (each logarithm clamped at -100, as torch does).

    Args:
        weight: a manual rescaling weight broadcastable to the input (a buffer).
        size_average, reduce: deprecated; see ``reduction``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape: input and target of the same shape, input values in [0, 1]; a scalar, or the
    input's shape for ``'none'``. Backward: see
    :func:`shimnn.functional.binary_cross_entropy`.
    """

    __constants__ = ["reduction"]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, weight=self.weight,
                                      reduction=self.reduction)


class BCEWithLogitsLoss(_Loss, torch.nn.BCEWithLogitsLoss):
    r"""A sigmoid and binary cross entropy in one, computed stably from the logits:
    :math:`-w_n [p\,y_n \log \sigma(x_n) + (1 - y_n) \log(1 - \sigma(x_n))]`.

    Args:
        weight: a manual rescaling weight broadcastable to the input (a buffer).
        size_average, reduce: deprecated; see ``reduction``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        pos_weight: a weight of positive examples broadcast with the target, e.g. ``(C,)`` for
            ``(N, C)`` inputs (a buffer).

    Shape: input and target of the same shape; a scalar, or the input's shape for ``'none'``.
    Backward: see :func:`shimnn.functional.binary_cross_entropy_with_logits`.
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.weight: Tensor | None
        self.pos_weight: Tensor | None

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(
            input,
            target,
            self.weight,
            pos_weight=self.pos_weight,
            reduction=self.reduction,
        )


class SmoothL1Loss(_Loss, torch.nn.SmoothL1Loss):
    r"""Smooth L1 loss: squared below ``beta``, absolute above:
    :math:`0.5 (x - y)^2 / \beta` if :math:`|x - y| < \beta`, else
    :math:`|x - y| - 0.5 \beta`.

    Args:
        size_average, reduce: deprecated; see ``reduction``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        beta: the threshold between the two regimes (non-negative; 0 gives the L1 loss).
            Default: 1.0.

    Shape: input and target of the same shape (broadcastable, with torch's warning); a scalar,
    or the broadcast shape for ``'none'``. Backward: see
    :func:`shimnn.functional.smooth_l1_loss`.
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss, torch.nn.HuberLoss):
    r"""Huber loss: squared below ``delta``, ``delta``-scaled absolute above:
    :math:`0.5 (x - y)^2` if :math:`|x - y| < \delta`, else
    :math:`\delta (|x - y| - 0.5 \delta)`.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        delta: the threshold between the two regimes (positive; a float or an int).
            Default: 1.0.

    Shape: input and target of the same shape (broadcastable, with torch's warning); a scalar,
    or the broadcast shape for ``'none'``. Backward: see :func:`shimnn.functional.huber_loss`.
    """

    __constants__ = ["reduction", "delta"]

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        torch_init(torch.nn.HuberLoss, self, reduction=reduction, delta=delta)  # torch's checks

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class CrossEntropyLoss(_WeightedLoss, torch.nn.CrossEntropyLoss):
    r"""Cross entropy between logits and class indices or class probabilities
    (``log_softmax`` then the negative log likelihood).

    Args:
        weight: a manual rescaling weight per class, a tensor of size ``C`` (a buffer).
        size_average, reduce: deprecated; see ``reduction``.
        ignore_index: a class-index target value that is ignored. Default: -100.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        label_smoothing: in [0, 1]: the target becomes a mixture of itself and the uniform
            distribution. Default: 0.0.

    Shape: input ``(C)``, ``(N, C)`` or ``(N, C, d_1, ..., d_K)``; target of class indices
    ``()``, ``(N)`` or ``(N, d_1, ..., d_K)``, or of probabilities of the input's shape; a
    scalar, or the target's (class-index) shape for ``'none'``. Backward: see
    :func:`shimnn.functional.cross_entropy`.
    """

    __constants__ = ["ignore_index", "reduction", "label_smoothing"]
    ignore_index: int
    label_smoothing: float

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )
