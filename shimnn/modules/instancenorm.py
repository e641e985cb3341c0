"""Instance normalization layers: torch's classes (constructor, buffers, state_dict, repr,
input checks and warnings), shimnn's ops."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import norm as F
from ..ops import shape as S
from ._attrs import buffer, parameter
from .module import Module

__all__ = ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


class _InstanceNorm:
    """torch's ``_InstanceNorm`` with :func:`shimnn.functional.instance_norm` (an unbatched
    input is unsqueezed and squeezed back by shimnn's views, as torch does). A mixin placed
    before torch's class, and ``Module`` after it, so that torch's ``__init__`` runs."""

    def _handle_no_batch_input(self, input: Tensor) -> Tensor:
        return S.squeeze(self._apply_instance_norm(S.unsqueeze(input, 0)), 0)

    def _apply_instance_norm(self, input: Tensor) -> Tensor:
        m: torch.nn.modules.instancenorm._InstanceNorm = self  # type: ignore[assignment]
        return F.instance_norm(input, buffer(m, "running_mean"), buffer(m, "running_var"),
                               parameter(m, "weight"), parameter(m, "bias"),
                               m.training or not m.track_running_stats,
                               m.momentum if m.momentum is not None else 0.0, m.eps)


class InstanceNorm1d(_InstanceNorm, torch.nn.InstanceNorm1d, Module):
    r"""``torch.nn.InstanceNorm1d``, by :func:`shimnn.functional.instance_norm`.

    Shape: :math:`(N, C, L)` or :math:`(C, L)`, unchanged.
    """


class InstanceNorm2d(_InstanceNorm, torch.nn.InstanceNorm2d, Module):
    r"""``torch.nn.InstanceNorm2d``, by :func:`shimnn.functional.instance_norm`.

    Shape: :math:`(N, C, H, W)` or :math:`(C, H, W)`, unchanged.
    """


class InstanceNorm3d(_InstanceNorm, torch.nn.InstanceNorm3d, Module):
    r"""``torch.nn.InstanceNorm3d``, by :func:`shimnn.functional.instance_norm`.

    Shape: :math:`(N, C, D, H, W)` or :math:`(C, D, H, W)`, unchanged.
    """
