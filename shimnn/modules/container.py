"""Containers."""

from __future__ import annotations

from typing import Any

import torch

from .. import _chain
from .module import Module, compiled_call

__all__ = ["Sequential"]


class Sequential(torch.nn.Sequential, Module):
    r"""Chain modules: the output of each is the input of the next.

    Exactly ``torch.nn.Sequential`` (positional modules or an ``OrderedDict``; indexing,
    slicing, ``len``, iteration, ``append``, ``insert``, ``extend``), as a shimnn module.

    When every child is a plain shimnn layer (``Linear``, ``ReLU``, ``Tanh``...) and no hook is
    registered, the chain runs as one recorded node: the same kernels in the same order, without
    a tracked tensor and a module call per layer. Its backward runs the layers' backward
    functions in reverse and frees each layer's saved tensors as soon as it is done.
    """

    __call__ = compiled_call  # the fused chain's whole call in C++ where no hook needs torch's

    def forward(self, input: Any) -> Any:
        result = _chain.run(self, input)
        if result is NotImplemented:
            return super().forward(input)
        return result
