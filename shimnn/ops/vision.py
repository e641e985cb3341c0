"""``vision``: ``interpolate`` (upsampling) and ``pixel_shuffle`` / ``pixel_unshuffle``.

``interpolate``'s value is torch's own ``F.interpolate`` (its argument checks, errors and kernel
choice). Its gradient is the ``upsample_*_backward`` kernel of the mode torch ran, given the
output size and the scale factors torch handed to the kernel: the caller's ``scale_factor``
(as floats) unless an explicit ``size`` or ``recompute_scale_factor`` replaced it by an output
size. Mode ``'area'`` is torch's ``adaptive_avg_pool``; ``antialias=True`` is not
differentiated (its gradient raises, naming it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Recorded,
    TrackedTensor,
    _fallback,
    apply,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    wrap,
)
from ._common import _check_real
from .pool import adaptive_avg_pool1d, adaptive_avg_pool2d

__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle", "upsample", "upsample_bilinear",
           "upsample_nearest"]

_aten = torch.ops.aten
_torch_interpolate = torch.nn.functional.interpolate  # torch's, even while shimnn serves F
_torch_upsample = torch.nn.functional.upsample
_torch_upsample_nearest = torch.nn.functional.upsample_nearest
_torch_upsample_bilinear = torch.nn.functional.upsample_bilinear

# (mode, spatial dims) -> (backward kernel, takes align_corners, node name)
_BACKWARD: dict[tuple[str, int], tuple[Callable[..., Tensor], bool, str]] = {
    ("nearest", 1): (_aten.upsample_nearest1d_backward.default._op, False,
                     "UpsampleNearest1DBackward0"),
    ("nearest", 2): (_aten.upsample_nearest2d_backward.default._op, False,
                     "UpsampleNearest2DBackward0"),
    ("nearest", 3): (_aten.upsample_nearest3d_backward.default._op, False,
                     "UpsampleNearest3DBackward0"),
    ("nearest-exact", 1): (_aten._upsample_nearest_exact1d_backward.default._op, False,
                           "UpsampleNearestExact1DBackward0"),
    ("nearest-exact", 2): (_aten._upsample_nearest_exact2d_backward.default._op, False,
                           "UpsampleNearestExact2DBackward0"),
    ("nearest-exact", 3): (_aten._upsample_nearest_exact3d_backward.default._op, False,
                           "UpsampleNearestExact3DBackward0"),
    ("linear", 1): (_aten.upsample_linear1d_backward.default._op, True,
                    "UpsampleLinear1DBackward0"),
    ("bilinear", 2): (_aten.upsample_bilinear2d_backward.default._op, True,
                      "UpsampleBilinear2DBackward0"),
    ("bicubic", 2): (_aten.upsample_bicubic2d_backward.default._op, True,
                     "UpsampleBicubic2DBackward0"),
    ("trilinear", 3): (_aten.upsample_trilinear3d_backward.default._op, True,
                       "UpsampleTrilinear3DBackward0"),
}


def _scales(input: Tensor, size: Any, scale_factor: Any, mode: str,
            recompute_scale_factor: bool | None) -> list[float | None]:
    """The scale factors torch's ``interpolate`` passes to the kernel (one per spatial dim)."""
    dim = input.dim() - 2
    if size is not None or recompute_scale_factor or mode == "area":
        return [None] * dim
    if isinstance(scale_factor, (list, tuple)):
        return [float(s) for s in scale_factor]
    return [float(scale_factor)] * dim


def interpolate_forward(input: Tensor, size: Any, scale_factor: Any, mode: str,
                        align_corners: bool | None, recompute_scale_factor: bool | None
                        ) -> Recorded:
    """The forward/backward pair of :func:`interpolate` (grad mode off, plain tensors)."""
    _check_real("interpolate", input)
    result = _torch_interpolate(input, size, scale_factor, mode, align_corners,
                                recompute_scale_factor)
    kernel, takes_align, name = _BACKWARD[(mode, input.dim() - 2)]
    output_size = list(result.shape[2:])
    input_size = list(input.shape)
    scales = _scales(input, size, scale_factor, mode, recompute_scale_factor)
    args = (bool(align_corners), *scales) if takes_align else tuple(scales)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (kernel(grad, output_size, input_size, *args),)

    return result, backward, (), name


@implements(torch.nn.functional.interpolate)
def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,
                mode: str = "nearest", align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None, antialias: bool = False
                ) -> TrackedTensor:
    r"""Resize the spatial dims of ``(N, C, *)`` to ``size`` or by ``scale_factor``, by
    ``mode``: ``'nearest'``, ``'nearest-exact'``, ``'linear'`` (3-d), ``'bilinear'`` and
    ``'bicubic'`` (4-d), ``'trilinear'`` (5-d), ``'area'`` (adaptive average pooling).

    Backward: torch's ``upsample_<mode>_backward`` kernel (each input element collects the
    gradients of the outputs it was copied or interpolated into, with the same weights);
    ``'area'``: as :func:`adaptive_avg_pool2d`. ``antialias=True`` raises at backward.
    """
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        spatial = input.dim() - 2
    if e_input is None:
        with no_dispatch():
            return wrap(_torch_interpolate(input, size, scale_factor, mode, align_corners,
                                           recompute_scale_factor, antialias))
    if mode == "area" and not antialias and spatial in (1, 2):
        # torch's checks, and the output size its adaptive average pool gets (computed twice
        # here: this mode is rare).
        with no_dispatch():
            output_size = list(_torch_interpolate(input, size, scale_factor, mode, align_corners,
                                                  recompute_scale_factor).shape[2:])
        pool = adaptive_avg_pool1d if spatial == 1 else adaptive_avg_pool2d
        return pool(input, output_size)
    if antialias or (mode, spatial) not in _BACKWARD:
        return _fallback(_torch_interpolate, (input, size, scale_factor, mode, align_corners,  # type: ignore[no-any-return]
                                              recompute_scale_factor, antialias), {})
    with no_dispatch():
        return apply(interpolate_forward, (e_input,), input, size, scale_factor, mode,
                     align_corners, recompute_scale_factor)


def upsample(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
             align_corners: bool | None = None) -> TrackedTensor:
    """Deprecated ``F.upsample``: torch's warning, then :func:`interpolate`."""
    _warn_deprecated("upsample")
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input: Tensor, size: Any = None, scale_factor: Any = None
                     ) -> TrackedTensor:
    """Deprecated ``F.upsample_nearest``: :func:`interpolate` with ``mode='nearest'``."""
    _warn_deprecated("upsample_nearest")
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input: Tensor, size: Any = None, scale_factor: Any = None
                      ) -> TrackedTensor:
    """Deprecated ``F.upsample_bilinear``: :func:`interpolate`, bilinear, corners aligned."""
    _warn_deprecated("upsample_bilinear")
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


def _warn_deprecated(name: str) -> None:
    import warnings

    if name == "upsample":
        message = ("`nn.functional.upsample` is deprecated. "
                   "Use `nn.functional.interpolate` instead.")
    else:
        message = (f"`nn.functional.{name}` is deprecated. "
                   "Use `nn.functional.interpolate` instead.")
    warnings.warn(message, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# pixel_shuffle
# ---------------------------------------------------------------------------------------------


def _shuffle_forward(kernel: Callable[..., Tensor], inverse: Callable[..., Tensor], name: str,
                     input: Tensor, factor: int) -> Recorded:
    _check_real(kernel.__name__, input)
    result = kernel(input, factor)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (inverse(grad, factor),)

    return result, backward, (), name


def _shuffle(kernel: Callable[..., Tensor], inverse: Callable[..., Tensor], name: str,
             input: Tensor, factor: int) -> TrackedTensor:
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                return apply(_shuffle_forward, (e_input,), kernel, inverse, name, input, factor)
        return wrap(kernel(input, factor))


@implements(torch.pixel_shuffle)
def pixel_shuffle(input: Tensor, upscale_factor: int) -> TrackedTensor:
    r"""Rearrange ``(*, C r^2, H, W)`` into ``(*, C, H r, W r)``.

    Backward: ``pixel_unshuffle(grad, r)``.
    """
    return _shuffle(torch.pixel_shuffle, torch.pixel_unshuffle, "PixelShuffleBackward0", input,
                    upscale_factor)


@implements(torch.pixel_unshuffle)
def pixel_unshuffle(input: Tensor, downscale_factor: int) -> TrackedTensor:
    r"""Rearrange ``(*, C, H r, W r)`` into ``(*, C r^2, H, W)``.

    Backward: ``pixel_shuffle(grad, r)``.
    """
    return _shuffle(torch.pixel_unshuffle, torch.pixel_shuffle, "PixelUnshuffleBackward0",
                    input, downscale_factor)
