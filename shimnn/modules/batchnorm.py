"""Batch normalization layers: torch's classes (constructor, buffers, state_dict, repr),
shimnn's ops."""

from __future__ import annotations

import torch
from torch import Tensor

from .._graph import no_dispatch
from ..ops import norm as F
from ._attrs import buffer, parameter
from .module import Module

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


def _batch_norm_forward(self: torch.nn.modules.batchnorm._BatchNorm, input: Tensor) -> Tensor:
    """torch's ``_BatchNorm.forward`` (the same running-statistics bookkeeping:
    ``num_batches_tracked``, the cumulative average for ``momentum=None``), with shimnn's
    :func:`~shimnn.functional.batch_norm`. Buffers and parameters are read from the module's
    dicts, where ``__getattr__`` finds them."""
    with no_dispatch():
        self._check_input_dim(input)
    momentum, training = self.momentum, self.training
    exponential_average_factor = 0.0 if momentum is None else momentum
    if training and self.track_running_stats:
        num_batches_tracked = buffer(self, "num_batches_tracked")
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average
                exponential_average_factor = 1.0 / float(num_batches_tracked)
            else:  # exponential moving average
                exponential_average_factor = momentum
    running_mean, running_var = buffer(self, "running_mean"), buffer(self, "running_var")
    # Statistics are used from the batch in training (and in eval without buffers); the
    # buffers are passed only where torch passes them: to be updated (training, tracked) or to
    # normalize with (eval).
    bn_training = training or (running_mean is None and running_var is None)
    track = not training or self.track_running_stats
    return F.batch_norm(input, running_mean if track else None,
                        running_var if track else None, parameter(self, "weight"),
                        parameter(self, "bias"),
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
