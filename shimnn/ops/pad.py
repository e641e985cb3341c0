"""``pad``: ``F.pad`` in its four modes, following the kernel torch's ``at::pad`` picks.

- ``constant``: ``constant_pad_nd``; backward ``constant_pad_nd(grad, -pad)`` (the crop).
- ``reflect`` / ``replicate``: ``reflection_pad{1,2,3}d`` / ``replication_pad{1,2,3}d`` by the
  length of ``pad``; backward their ``*_backward`` kernels.
- ``circular``: torch's composite ``_pad_circular``: the input copied into the middle of a new
  tensor, then each padded dim's left and right margins copied from the other end of that
  tensor (``copy_`` into slices). Its backward is what torch's engine runs on that graph (a
  ``CopySlices`` and a ``SliceBackward0`` node per copy, newest first): the margins' gradients
  are added back, in that order, into the gradient of the region they were copied from.

The value is always torch's own ``torch._C._nn.pad`` (same checks, errors and result).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Recorded,
    TrackedTensor,
    apply,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    wrap,
)
from ._common import _check_real

__all__ = ["pad"]

_aten = torch.ops.aten
_torch_pad: Any = torch._C._nn.pad
_constant_pad_nd = torch.constant_pad_nd
_PAD_BACKWARD = {
    ("reflect", 1): _aten.reflection_pad1d_backward.default._op,
    ("reflect", 2): _aten.reflection_pad2d_backward.default._op,
    ("reflect", 3): _aten.reflection_pad3d_backward.default._op,
    ("replicate", 1): _aten.replication_pad1d_backward.default._op,
    ("replicate", 2): _aten.replication_pad2d_backward.default._op,
    ("replicate", 3): _aten.replication_pad3d_backward.default._op,
}
_NODE_NAMES = {"reflect": "ReflectionPad{}DBackward0", "replicate": "ReplicationPad{}DBackward0"}


Slice = tuple[int, int, int]
"""``(dim, start, end)``."""


def _circular_steps(shape: Sequence[int], pad: list[int]
                    ) -> tuple[list[Slice], list[Slice], list[tuple[Slice, Slice]], list[int]]:
    """torch's ``_pad_circular`` as data: the input's slices and the output's middle slices
    (in slicing order) of the copy of the input, the margin copies in order (the written
    slice, the source slice, both of the output), and the output shape."""
    n_padded = len(pad) // 2
    n_plain = len(shape) - n_padded
    out_shape = list(shape)
    for i in range(n_padded):
        left, right = pad[2 * (n_padded - i - 1)], pad[2 * (n_padded - i - 1) + 1]
        out_shape[n_plain + i] = shape[n_plain + i] + left + right
    input_slices, middle, copies = [], [], []
    for i in range(n_padded):
        dim = n_padded - i + n_plain - 1
        left, right = max(pad[2 * i], 0), max(pad[2 * i + 1], 0)
        input_slices.append((dim, max(-pad[2 * i], 0), shape[dim] - max(-pad[2 * i + 1], 0)))
        middle.append((dim, left, out_shape[dim] - right))
    for i in range(n_padded):
        dim = n_padded - i + n_plain - 1
        left, right, size = pad[2 * i], pad[2 * i + 1], out_shape[dim]
        if left > 0:
            end = size - max(right, 0)
            copies.append(((dim, 0, left), (dim, end - left, end)))
        if right > 0:
            copies.append(((dim, size - right, size), (dim, max(left, 0), max(left, 0) + right)))
    return input_slices, middle, copies, out_shape


def _narrow(t: Tensor, s: Slice) -> Tensor:
    return t.narrow(s[0], s[1], s[2] - s[1])


def _circular_backward(grad: Tensor, input: Tensor, pad: list[int]) -> Tensor:
    """The gradient of ``_pad_circular`` exactly as torch's engine computes it."""
    input_slices, middle, copies, out_shape = _circular_steps(input.shape, pad)
    options: dict[str, Any] = {"dtype": grad.dtype, "device": grad.device}
    g = grad
    for written, source in reversed(copies):
        # CopySlices: the gradient outside the written slice goes to the tensor as it was
        # before the copy, the slice's gradient to the copy's source (CopyBackwards)...
        result = torch.empty(out_shape, **options).copy_(g)
        written_grad = _narrow(result, written)
        source_grad = written_grad.clone(memory_format=torch.contiguous_format)
        written_grad.zero_()
        # ... a slice of that same tensor (SliceBackward0); the engine adds the two.
        scattered = torch.zeros(out_shape, **options)
        _narrow(scattered, source).copy_(source_grad)
        g = result + scattered
    # The middle: out[middle].copy_(input[slices]), then the input slices' SliceBackward0.
    for s in middle:
        g = _narrow(g, s)
    g = g.clone(memory_format=torch.contiguous_format)
    shapes = [list(input.shape)]
    for dim, start, end in input_slices[:-1]:
        shapes.append(list(shapes[-1]))
        shapes[-1][dim] = end - start
    for s, shape in zip(reversed(input_slices), reversed(shapes)):
        full = torch.zeros(shape, **options)
        _narrow(full, s).copy_(g)
        g = full
    return g


def pad_forward(input: Tensor, pad: Sequence[int], mode: str, value: float | None) -> Recorded:
    """The forward/backward pair of :func:`pad` (grad mode off, plain tensors)."""
    _check_real("pad", input)
    result = _torch_pad(input, pad, mode, value)  # torch's checks and kernel choice
    pads = [int(p) for p in pad]
    if mode == "constant":
        crop = [-p for p in pads]

        def backward(grad: Tensor) -> tuple[Tensor]:
            return (_constant_pad_nd(grad, crop, 0),)

        return result, backward, (), "ConstantPadNdBackward0"
    if mode == "circular":
        def circular(grad: Tensor) -> tuple[Tensor]:
            return (_circular_backward(grad, input, pads),)

        return result, circular, (), "CopySlices"
    n = len(pads) // 2
    kernel_backward = _PAD_BACKWARD[(mode, n)]

    def backward_(grad: Tensor) -> tuple[Tensor]:
        return (kernel_backward(grad, input, pads),)

    return result, backward_, (input,), _NODE_NAMES[mode].format(n)


def _pad(input: Tensor, pad: Sequence[int], mode: str, value: float | None) -> TrackedTensor:
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                return apply(pad_forward, (e_input,), input, pad, mode, value)
        return wrap(_torch_pad(input, pad, mode, value))


@implements(torch.nn.functional.pad, torch._C._nn.pad)
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None
        ) -> TrackedTensor:
    r"""Pad the last ``len(pad) // 2`` dims of ``input`` (``pad`` lists (left, right) pairs from
    the last dim backwards) with ``value`` (``'constant'``), the mirror image without the edge
    (``'reflect'``), the edge value (``'replicate'``) or the other end (``'circular'``).
    Negative pads crop.

    Backward: the crop of ``grad`` (constant); torch's ``reflection_pad*_backward`` /
    ``replication_pad*_backward`` (the margins' gradients added onto the elements they copy);
    for circular, the gradients of the wrapped margins added back onto their sources in
    torch's order.
    """
    return _pad(input, pad, mode, value)


@implements(torch.constant_pad_nd)
def constant_pad_nd(input: Tensor, pad: Sequence[int], value: float = 0) -> TrackedTensor:
    """``torch.constant_pad_nd``: :func:`pad` in ``'constant'`` mode."""
    return _pad(input, pad, "constant", value)
