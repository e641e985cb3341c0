"""shimnn under ``torch.nn.parallel.DistributedDataParallel``.

torch's DDP reduces gradients from hooks on torch autograd's gradient accumulators, which never
run when shimnn computes the gradients: wrapped around a shimnn model it would silently keep
every rank's local gradient. Until shimnn does the reducer's work itself, constructing it around
a model with shimnn parameters raises.
"""

from __future__ import annotations

from typing import Any

import torch

from .modules.module import Parameter

__all__ = ["install"]

_DDP = torch.nn.parallel.DistributedDataParallel
_torch_init = _DDP.__init__


def _init(self: Any, module: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
    if any(isinstance(p, Parameter) for p in module.parameters()):
        raise NotImplementedError(
            "shimnn: DistributedDataParallel cannot reduce the gradients of a model with "
            "shimnn parameters (torch's DDP hooks into torch's autograd, which shimnn "
            "replaces); its ranks would silently train on local gradients. Multi-process "
            "training is not supported yet.")
    _torch_init(self, module, *args, **kwargs)


def install() -> None:
    """Make torch's DDP refuse shimnn models instead of training them silently wrong."""
    if _DDP.__init__ is not _init:
        _DDP.__init__ = _init  # type: ignore[method-assign]
