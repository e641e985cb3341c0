"""Containers."""

from __future__ import annotations

import torch

from .module import Module

__all__ = ["Sequential"]


class Sequential(torch.nn.Sequential, Module):
    r"""Chain modules: the output of each is the input of the next.

    Exactly ``torch.nn.Sequential`` (positional modules or an ``OrderedDict``; indexing,
    slicing, ``len``, iteration, ``append``, ``insert``, ``extend``), as a shimnn module.
    """
