"""shimnn: torch.nn's modules with every gradient written by hand, bit-identical to torch.

``import shimnn as nn`` in place of ``import torch.nn as nn`` (and ``shimnn.optim`` for
``torch.optim``): the same classes, signatures and numbers, while ``loss.backward()`` runs
shimnn's hand-written backward functions and torch's autograd engine never runs.

A ``torch.nn`` name shimnn does not implement resolves to torch's own; a gradient that would
flow through it raises an error naming it instead of being silently wrong.

(PYTEST_DONT_REWRITE: ``shimnn run -m pytest`` imports this package before pytest starts, so
pytest's assertion rewriting, which the ``pytest11`` entry point asks for, cannot apply to it.)
"""

from typing import Any

import torch.nn

from . import _ddp, functional, init, modules, ops, optim, utils  # noqa: F401
from . import function as _function
from ._graph import Node, TrackedTensor
from ._patch import patch_torch
from .function import Function, FunctionCtx
from .modules import *  # noqa: F403

__version__ = "0.1.0"

__all__ = ["Function", "FunctionCtx", "Node", "TrackedTensor", "functional", "init", "optim",
           "patch_torch", *modules.__all__]


# torch.autograd.Function subclasses applied to shimnn tensors run in shimnn's engine.
_function.install()
# torch's DistributedDataParallel refuses shimnn models (it would train them silently wrong).
_ddp.install()


def __getattr__(name: str) -> Any:
    return getattr(torch.nn, name)
