"""Helpers every op family shares: summing a broadcast gradient back, refusing complex dtypes,
torch's errors for ``out=`` and in-place forms, and the recording of an in-place op."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    BackwardFn,
    Node,
    TrackedTensor,
    check_inplace_target,
    edge,
    is_grad_enabled,
    no_dispatch,
    set_grad_enabled,
    set_node,
    sum_to,
    wrap,
)

__all__ = ["LEAF_INPLACE", "_check_real", "_out_requires_grad", "_record_inplace", "_reduce_to",
           "_suggest_memory_format"]

LEAF_INPLACE = "a leaf Variable that requires grad is being used in an in-place operation."


def _reduce_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a broadcast gradient back to ``like``'s shape and cast it to ``like``'s dtype."""
    grad = sum_to(grad, like.shape)
    return grad if grad.dtype == like.dtype else grad.to(like.dtype)


def _check_real(name: str, *tensors: Tensor | None) -> None:
    for t in tensors:
        if t is not None and t.dtype.is_complex:
            raise NotImplementedError(
                f"shimnn: the backward of {name} is written for real dtypes; got {t.dtype}"
            )


def _out_requires_grad(name: str) -> RuntimeError:
    """torch's error for an ``out=`` call whose inputs need a gradient."""
    return RuntimeError(
        f"{name}(): functions with out=... arguments don't support automatic differentiation, "
        "but one of the arguments requires grad.")


def _record_inplace(
    name: str,
    target: Tensor,
    others: tuple[Any, ...],
    run: Callable[[tuple[bool, ...]], tuple[BackwardFn, tuple[Tensor, ...], str]],
    plain: Callable[[], Any],
) -> Tensor:
    """An in-place op writing into ``target`` whose other inputs are ``others``.

    Nothing needs a gradient: ``plain()`` runs the kernel. Otherwise, as torch: a leaf that
    requires grad raises, a view of a tracked tensor is refused (``check_inplace_target``), a
    plain tensor receiving a gradient-carrying value joins the graph, and ``run(needs)`` (grad
    mode off; ``needs``: whether ``target`` and each of ``others`` need a gradient) runs the
    kernel and returns the backward (one gradient per input, ``target`` first), the tensors it
    saved and the node's name, which becomes ``target``'s node.
    """
    with no_dispatch():
        if is_grad_enabled():
            e_self = edge(target)
            e_others = tuple(edge(o) if isinstance(o, Tensor) else None for o in others)
        else:
            e_self, e_others = None, ()
        if e_self is None and all(e is None for e in e_others):
            plain()
            return target if type(target) is TrackedTensor else wrap(target)
        if e_self is target:
            raise RuntimeError(LEAF_INPLACE)
        check_inplace_target(target, name)
        if type(target) is Tensor:
            # A plain tensor that receives a gradient-carrying value becomes part of the graph.
            target.__class__ = TrackedTensor
        elif type(target) is not TrackedTensor:
            raise NotImplementedError(
                f"shimnn: in-place {name} into a {type(target).__name__} of a value that needs "
                "a gradient; use the out-of-place form")
        needs = (e_self is not None, *(e is not None for e in e_others))
        set_grad_enabled(False)
        try:
            backward, saved, node_name = run(needs)
        finally:
            set_grad_enabled(True)
        set_node(target, Node(node_name, backward, (e_self, *e_others), saved))
        return target


def _suggest_memory_format(t: Tensor) -> torch.memory_format:
    """torch's ``Tensor::suggest_memory_format()`` for a 4-d tensor: channels_last when its
    strides are channels_last-like (c10's ``is_channels_last_strides_2d``, which resolves
    ambiguous size-1 cases to contiguous), else contiguous."""
    if t.dim() != 4 or t.layout != torch.strided:
        return torch.contiguous_format
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return torch.contiguous_format
    low = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < low:
            return torch.contiguous_format
        if d == 0 and low == strides[1]:
            return torch.contiguous_format
        low = strides[d]
        if sizes[d] > 1:
            low *= sizes[d]
    return torch.channels_last
