"""Batch normalization layers: torch's classes (constructor, buffers, state_dict, repr),
shimnn's ops."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import norm as F
from .module import Module

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


def _batch_norm_forward(self: torch.nn.modules.batchnorm._BatchNorm, input: Tensor) -> Tensor:
    """torch's ``_BatchNorm.forward`` (the same running-statistics bookkeeping:
    ``num_batches_tracked``, the cumulative average for ``momentum=None``), with shimnn's
    :func:`~shimnn.functional.batch_norm`."""
    self._check_input_dim(input)
    if self.momentum is None:
        exponential_average_factor = 0.0
    else:
        exponential_average_factor = self.momentum
    if self.training and self.track_running_stats:
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                exponential_average_factor = 1.0 / float(self.num_batches_tracked)
            else:  # exponential moving average
                exponential_average_factor = self.momentum
    if self.training:
        bn_training = True
    else:
        bn_training = (self.running_mean is None) and (self.running_var is None)
    # The buffers are passed only where torch passes them: to be updated (training, tracked)
    # or to normalize with (eval).
    track = not self.training or self.track_running_stats
    return F.batch_norm(input, self.running_mean if track else None,
                        self.running_var if track else None, self.weight, self.bias,
                        bn_training, exponential_average_factor, self.eps)


class BatchNorm1d(torch.nn.BatchNorm1d, Module):
    r"""``torch.nn.BatchNorm1d`` (arguments, buffers, ``num_batches_tracked``, state_dict),
    computed and differentiated by :func:`shimnn.functional.batch_norm`.

    Shape: :math:`(N, C)` or :math:`(N, C, L)`, unchanged.
    """

    forward = _batch_norm_forward


class BatchNorm2d(torch.nn.BatchNorm2d, Module):
    r"""``torch.nn.BatchNorm2d`` (arguments, buffers, ``num_batches_tracked``, state_dict),
    computed and differentiated by :func:`shimnn.functional.batch_norm`.

    Shape: :math:`(N, C, H, W)`, unchanged.
    """

    forward = _batch_norm_forward


class BatchNorm3d(torch.nn.BatchNorm3d, Module):
    r"""``torch.nn.BatchNorm3d``, computed and differentiated by
    :func:`shimnn.functional.batch_norm`. Shape: :math:`(N, C, D, H, W)`, unchanged."""

    forward = _batch_norm_forward
