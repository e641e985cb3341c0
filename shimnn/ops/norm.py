"""``norm``: batch, instance, group, layer and RMS normalization, on torch's CPU paths.

- ``batch_norm``: torch's ``_batch_norm_impl_index`` checks, then ``native_batch_norm`` (which
  also updates the running statistics in place, in training); backward
  ``native_batch_norm_backward`` with torch's output mask. An empty input is torch's
  ``clone() * weight[0] + bias[0]``.
- ``instance_norm``: torch's own composite: ``batch_norm`` of the input viewed as one sample
  of ``N * C`` channels, the weight, bias and running statistics repeated ``N`` times; the
  running statistics get the mean of their ``N`` updated copies. Backward through the views
  and ``repeat_backward``.
- ``group_norm``: ``native_group_norm`` on the input in its suggested memory format; backward
  ``native_group_norm_backward`` (gradient and input in that format, as torch's formula).
- ``layer_norm``: ``native_layer_norm`` / ``native_layer_norm_backward``.
- ``rms_norm``: torch 2.13's composite in grad mode (``x * rsqrt(mean(x^2) + eps) * weight``),
  differentiated as torch's engine runs its six nodes. Under ``no_grad`` torch's own function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    sum_to,
    wrap,
)
from ._common import _check_real, _reduce_to, _suggest_memory_format

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]

_aten = torch.ops.aten
# torch's own function (taken before shimnn.patch_torch can replace it), for its checks.
_functional_batch_norm = torch.nn.functional.batch_norm


def _meta(t: Any) -> Any:
    return None if t is None else torch.empty(t.shape, dtype=t.dtype, device="meta")
_native_batch_norm = _aten.native_batch_norm.default._op
_native_batch_norm_backward = _aten.native_batch_norm_backward.default._op
_native_group_norm = _aten.native_group_norm.default._op
_native_group_norm_backward = _aten.native_group_norm_backward.default._op
_native_layer_norm = _aten.native_layer_norm.default._op
_native_layer_norm_backward = _aten.native_layer_norm_backward.default._op

Grads3 = tuple[Tensor | None, Tensor | None, Tensor | None]


def _edges3(input: Tensor, weight: Tensor | None, bias: Tensor | None) -> Any:
    """The edges of (input, weight, bias) and torch's output mask, or None if none is needed."""
    if not is_grad_enabled():
        return None
    edges = (edge(input), edge(weight), edge(bias))
    mask = [e is not None for e in edges]
    return (edges, mask) if mask[0] or mask[1] or mask[2] else None


# ---------------------------------------------------------------------------------------------
# batch_norm
# ---------------------------------------------------------------------------------------------


def _verify_batch_size(size: Sequence[int]) -> None:
    """torch.nn.functional's check: more than one value per channel in training."""
    prod = size[0]
    for s in size[2:]:
        prod *= s
    if prod == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {size}")


def _batch_norm_checks_pass(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                            running_mean: Tensor | None, running_var: Tensor | None,
                            training: bool) -> bool:
    """``_batch_norm_impl_index``'s checks (torch raises their errors when they fail)."""
    if input.dim() < 2 or (not training and (running_mean is None or running_var is None)):
        return False
    c = input.shape[1]
    for t in (running_mean, running_var, weight, bias):
        if t is not None and t.numel() != c:
            return False
    return True


def batch_norm_pieces(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                      running_mean: Tensor | None, running_var: Tensor | None, training: bool,
                      momentum: float, eps: float, mask: list[bool]
                      ) -> tuple[Tensor, Callable[[Tensor], Grads3], tuple[Tensor, ...], str]:
    """The forward/backward pair of torch's ``at::batch_norm`` (grad mode off, plain tensors):
    output, backward, saved tensors, node name. The running statistics are updated in place by
    the kernel, as torch's."""
    if input.numel() == 0:
        return _empty_batch_norm(input, weight, bias, mask)
    out, save_mean, save_invstd = _native_batch_norm(input, weight, bias, running_mean,
                                                     running_var, training, momentum, eps)

    def backward(grad: Tensor) -> Grads3:
        return _native_batch_norm_backward(grad, input, weight, running_mean, running_var,  # type: ignore[no-any-return]
                                           save_mean, save_invstd, training, eps, mask)

    saved = [input, save_mean, save_invstd]
    for t in (weight, running_mean, running_var):
        if t is not None:
            saved.append(t)
    return out, backward, tuple(saved), "NativeBatchNormBackward0"


def _empty_batch_norm(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                      mask: list[bool]
                      ) -> tuple[Tensor, Callable[[Tensor], Grads3], tuple[Tensor, ...], str]:
    """torch's batch norm of an empty input: ``input.clone() * weight[0] + bias[0]``."""
    cloned = input.clone()
    out = cloned
    w0 = None
    if weight is not None:
        w0 = weight[0]
        out = out * w0
    if bias is not None:
        out = out + bias[0]

    def backward(grad: Tensor) -> Grads3:
        grad_weight = grad_bias = None
        if mask[2] and bias is not None:
            grad_bias = torch.zeros_like(bias)
            grad_bias[0] = grad.sum()  # SelectBackward0 of AddBackward0's sum_to(grad, ())
        grad_input = grad
        if w0 is not None:
            if mask[1] and weight is not None:
                grad_weight = torch.zeros_like(weight)
                grad_weight[0] = (grad * cloned).sum()
            grad_input = grad * w0
        return grad_input, grad_weight, grad_bias

    name = "AddBackward0" if bias is not None else "MulBackward0" if weight is not None \
        else "CloneBackward0"
    return out, backward, (), name


def _batch_norm(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                running_mean: Tensor | None, running_var: Tensor | None, training: bool,
                momentum: float, eps: float, cudnn_enabled: bool) -> TrackedTensor:
    """``torch.batch_norm``."""
    with no_dispatch():
        recorded = _edges3(input, weight, bias)
        if recorded is not None and _batch_norm_checks_pass(input, weight, bias, running_mean,
                                                            running_var, training):
            edges, mask = recorded
            # (A complex input: the kernel raises torch's own NotImplementedError.)
            return apply(batch_norm_pieces, edges, input, weight, bias, running_mean,
                         running_var, training, momentum, eps, mask)
        out = torch.batch_norm(input, weight, bias, running_mean, running_var, training,
                               momentum, eps, cudnn_enabled)  # torch's value, or its error
        if recorded is not None:
            raise NotImplementedError("shimnn: batch_norm accepted inputs shimnn rejects")
        return wrap(out)


@implements(torch.nn.functional.batch_norm)
def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> TrackedTensor:
    r"""Normalize each channel (dim 1) of ``(N, C, *)``: in training by the batch's mean and
    biased variance (and update ``running_mean``/``running_var`` in place with ``momentum``,
    the unbiased variance), otherwise by the running statistics; then ``* weight + bias``.

    Backward: torch's ``native_batch_norm_backward`` (in training through the batch
    statistics: :math:`\frac{w}{\sigma}(g - \bar g - \hat x \overline{g \hat x})`).
    """
    with no_dispatch():
        size = input.size()
    if training:
        _verify_batch_size(size)
    if eps <= 0.0:  # the installed torch decides (2.13 allows 0 in eval, 2.11/2.12 do not)
        with no_dispatch(), torch.no_grad():
            _functional_batch_norm(_meta(input), _meta(running_mean), _meta(running_var),
                                   _meta(weight), _meta(bias), training, momentum, eps)
    return _batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
                       torch.backends.cudnn.enabled)


@implements(torch.batch_norm)
def _torch_batch_norm(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                      running_mean: Tensor | None, running_var: Tensor | None, training: bool,
                      momentum: float, eps: float, cudnn_enabled: bool) -> TrackedTensor:
    return _batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
                       cudnn_enabled)


# ---------------------------------------------------------------------------------------------
# instance_norm
# ---------------------------------------------------------------------------------------------


def _repeat_backward(grad: Tensor, repeat: int, size: int) -> Tensor:
    """torch's ``repeat_backward`` for a 1-d tensor repeated ``repeat`` times."""
    if repeat == 0:
        return torch.zeros(size, dtype=grad.dtype, device=grad.device)
    if repeat == 1:
        return grad
    return grad.reshape(repeat, size).sum([0])


def instance_norm_forward(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                          running_mean: Tensor | None, running_var: Tensor | None,
                          use_input_stats: bool, momentum: float, eps: float, mask: list[bool]
                          ) -> Recorded:
    """torch's ``at::instance_norm`` (grad mode off, plain tensors; a complex input: the batch
    norm kernel raises torch's own error)."""
    b, c = input.shape[0], input.shape[1]
    shape = [1, b * c, *input.shape[2:]]
    weight_, bias_, mean_, var_ = (None if t is None else t.repeat(b)
                                   for t in (weight, bias, running_mean, running_var))
    reshaped = input.contiguous().view(shape)
    out, grads, saved, _ = batch_norm_pieces(reshaped, weight_, bias_, mean_, var_,
                                             use_input_stats, momentum, eps, mask)
    if running_mean is not None and mean_ is not None:
        running_mean.copy_(mean_.view(b, c).mean(0, False))
    if running_var is not None and var_ is not None:
        running_var.copy_(var_.view(b, c).mean(0, False))
    input_shape, out_shape = input.shape, out.shape

    def backward(grad: Tensor) -> Grads3:
        grad_input, grad_weight, grad_bias = grads(grad.reshape(out_shape))
        if grad_input is not None:
            grad_input = grad_input.reshape(input_shape)
        if grad_weight is not None:
            grad_weight = _repeat_backward(grad_weight, b, c)
        if grad_bias is not None:
            grad_bias = _repeat_backward(grad_bias, b, c)
        return grad_input, grad_weight, grad_bias

    return out.view(input_shape), backward, saved, "ViewBackward0"


def _instance_norm(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                   running_mean: Tensor | None, running_var: Tensor | None,
                   use_input_stats: bool, momentum: float, eps: float, cudnn_enabled: bool
                   ) -> TrackedTensor:
    """``torch.instance_norm``."""
    with no_dispatch():
        recorded = _edges3(input, weight, bias)
        if recorded is not None and input.dim() >= 2 and (
                use_input_stats or (running_mean is not None and running_var is not None)):
            b, c = input.shape[0], input.shape[1]
            if all(t is None or t.numel() * b == b * c
                   for t in (weight, bias, running_mean, running_var)):
                edges, mask = recorded
                return apply(instance_norm_forward, edges, input, weight, bias, running_mean,
                             running_var, use_input_stats, momentum, eps, mask)
        out = torch.instance_norm(input, weight, bias, running_mean, running_var,
                                  use_input_stats, momentum, eps, cudnn_enabled)
        if recorded is not None:
            raise NotImplementedError("shimnn: instance_norm accepted inputs shimnn rejects")
        return wrap(out)


@implements(torch.nn.functional.instance_norm)
def instance_norm(input: Tensor, running_mean: Tensor | None = None,
                  running_var: Tensor | None = None, weight: Tensor | None = None,
                  bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> TrackedTensor:
    r"""Normalize each channel of each sample of ``(N, C, *)`` by its own mean and biased
    variance (``use_input_stats``, updating the running statistics with their mean over the
    batch) or by the running statistics; then ``* weight + bias`` per channel.

    Backward: as torch, ``native_batch_norm_backward`` on the input viewed as
    ``(1, N * C, *)``; the weight and bias gradients summed over the ``N`` repeats.
    """
    if use_input_stats:
        with no_dispatch():
            size = input.size()
        prod = 1
        for s in size[2:]:
            prod *= s
        if prod == 1:
            raise ValueError(
                f"Expected more than 1 spatial element when training, got input size {size}")
    return _instance_norm(input, weight, bias, running_mean, running_var, use_input_stats,
                          momentum, eps, torch.backends.cudnn.enabled)


@implements(torch.instance_norm)
def _torch_instance_norm(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                         running_mean: Tensor | None, running_var: Tensor | None,
                         use_input_stats: bool, momentum: float, eps: float,
                         cudnn_enabled: bool) -> TrackedTensor:
    return _instance_norm(input, weight, bias, running_mean, running_var, use_input_stats,
                          momentum, eps, cudnn_enabled)


# ---------------------------------------------------------------------------------------------
# group_norm
# ---------------------------------------------------------------------------------------------


def _group_norm_checks_pass(input: Tensor, num_groups: int, weight: Tensor | None,
                            bias: Tensor | None) -> bool:
    """``check_group_norm_inputs`` (torch raises their errors when they fail)."""
    c = input.shape[1]
    return num_groups > 0 and c % num_groups == 0 and all(
        t is None or (t.dim() == 1 and t.numel() == c) for t in (weight, bias))


def group_norm_forward(input: Tensor, num_groups: int, weight: Tensor | None,
                       bias: Tensor | None, eps: float, mask: list[bool]) -> Recorded:
    """The forward/backward pair of :func:`group_norm` (grad mode off, plain tensors)."""
    _check_real("group_norm", input, weight, bias)
    fmt = _suggest_memory_format(input)
    x = input.contiguous(memory_format=fmt)
    gamma = None if weight is None else weight.contiguous()
    beta = None if bias is None else bias.contiguous()
    n, c = input.shape[0], input.shape[1]
    hxw = math.prod(input.shape[2:])
    out, mean, rstd = _native_group_norm(x, gamma, beta, n, c, hxw, num_groups, eps)
    x_fmt = _suggest_memory_format(x)
    # torch 2.13's channels_last kernel crashes (segfault) when grad_input is not wanted:
    # shimnn asks for it and drops it (grad_weight and grad_bias are the same bits either way).
    kernel_mask = [True, mask[1], mask[2]] if x_fmt is torch.channels_last else mask

    def backward(grad: Tensor) -> Grads3:
        grad_input, grad_weight, grad_bias = _native_group_norm_backward(
            grad.contiguous(memory_format=x_fmt), x.contiguous(memory_format=x_fmt), mean, rstd,
            gamma, n, c, hxw, num_groups, kernel_mask)
        return grad_input if mask[0] else None, grad_weight, grad_bias

    saved = tuple(t for t in (x, gamma, mean, rstd) if t is not None)
    return out, backward, saved, "NativeGroupNormBackward0"


def _group_norm(input: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None,
                eps: float, cudnn_enabled: bool) -> TrackedTensor:
    """``torch.group_norm``."""
    with no_dispatch():
        recorded = _edges3(input, weight, bias)
        if recorded is not None and input.dim() >= 2 and _group_norm_checks_pass(
                input, num_groups, weight, bias):
            edges, mask = recorded
            return apply(group_norm_forward, edges, input, num_groups, weight, bias, eps, mask)
        out = torch.group_norm(input, num_groups, weight, bias, eps, cudnn_enabled)
        if recorded is not None:
            raise NotImplementedError("shimnn: group_norm accepted inputs shimnn rejects")
        return wrap(out)


@implements(torch.nn.functional.group_norm)
def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> TrackedTensor:
    r"""Split the channels of ``(N, C, *)`` into ``num_groups`` groups and normalize each group
    of each sample by its mean and biased variance; then ``* weight + bias`` per channel.

    Backward: torch's ``native_group_norm_backward``.
    """
    with no_dispatch():
        dim = input.dim()
        if dim < 2:
            raise RuntimeError(
                f"Expected at least 2 dimensions for input tensor but received {dim}")
        size = list(input.size())
    _verify_batch_size([size[0] * size[1] // num_groups, num_groups, *size[2:]])
    return _group_norm(input, num_groups, weight, bias, eps, torch.backends.cudnn.enabled)


@implements(torch.group_norm)
def _torch_group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,
                      bias: Tensor | None = None, eps: float = 1e-5,
                      cudnn_enabled: bool = True) -> TrackedTensor:
    return _group_norm(input, num_groups, weight, bias, eps, cudnn_enabled)


# ---------------------------------------------------------------------------------------------
# layer_norm
# ---------------------------------------------------------------------------------------------


def layer_norm_forward(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None,
                       bias: Tensor | None, eps: float, mask: list[bool]) -> Recorded:
    """The forward/backward pair of :func:`layer_norm` (grad mode off, plain tensors)."""
    _check_real("layer_norm", input, weight, bias)
    out, mean, rstd = _native_layer_norm(input, normalized_shape, weight, bias, eps)

    def backward(grad: Tensor) -> Grads3:
        return _native_layer_norm_backward(grad, input, normalized_shape, mean, rstd, weight,  # type: ignore[no-any-return]
                                           bias, mask)

    saved = [input, mean, rstd]
    for t in (weight, bias):
        if t is not None:
            saved.append(t)
    return out, backward, tuple(saved), "NativeLayerNormBackward0"


def _layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None,
                bias: Tensor | None, eps: float, cudnn_enable: bool) -> TrackedTensor:
    """``torch.layer_norm``: ``native_layer_norm``'s output (its checks raise torch's errors)."""
    with no_dispatch():
        recorded = _edges3(input, weight, bias)
        if recorded is not None and isinstance(normalized_shape, (list, tuple)):
            edges, mask = recorded
            return apply(layer_norm_forward, edges, input, list(normalized_shape), weight, bias,
                         eps, mask)
        out = torch.layer_norm(input, normalized_shape, weight, bias, eps, cudnn_enable)
        if recorded is not None:
            raise NotImplementedError("shimnn: layer_norm accepted inputs shimnn rejects")
        return wrap(out)


@implements(torch.nn.functional.layer_norm)
def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> TrackedTensor:
    r"""Normalize over the trailing ``normalized_shape`` dims by their mean and biased
    variance, then ``* weight + bias`` (both of ``normalized_shape``).

    Backward: torch's ``native_layer_norm_backward``: grad_input
    :math:`\frac{1}{\sigma}(g w - \overline{g w} - \hat x \overline{g w \hat x})`, grad_weight
    :math:`\sum g \hat x`, grad_bias :math:`\sum g` over the leading dims.
    """
    return _layer_norm(input, normalized_shape, weight, bias, eps, torch.backends.cudnn.enabled)


@implements(torch.layer_norm)
def _torch_layer_norm(input: Tensor, normalized_shape: Sequence[int],
                      weight: Tensor | None = None, bias: Tensor | None = None,
                      eps: float = 1e-5, cudnn_enable: bool = True) -> TrackedTensor:
    return _layer_norm(input, normalized_shape, weight, bias, eps, cudnn_enable)


# ---------------------------------------------------------------------------------------------
# rms_norm
# ---------------------------------------------------------------------------------------------


def rms_norm_forward(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None,
                     eps: float | None, need_input: bool, need_weight: bool) -> Recorded:
    """torch 2.13's ``rms_norm`` composite in grad mode (grad mode off here, plain tensors).

    torch records ``pow, mean, add_, rsqrt, mul, mul(weight), contiguous``, with the input
    read by the first and by ``mul``. This one node returns the input's two gradients
    separately, ``mul``'s first, so that the engine adds them where torch's does.
    """
    _check_real("rms_norm", input, weight)
    dtype = input.dtype
    opmath = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    x = input.to(opmath)
    if eps is None:
        eps = torch.finfo(opmath).eps
    dims = [input.dim() - i - 1 for i in range(len(normalized_shape))]
    squares = x.pow(2)
    r = torch.rsqrt(squares.mean(dims, keepdim=True).add_(eps))
    normed = x.mul(r)
    out = normed if weight is None else normed.mul(weight)
    channels_last = _suggest_memory_format(input) is torch.channels_last
    if not channels_last:
        out = out.contiguous()
    out = out.type_as(input)
    count = math.prod(squares.shape[d] for d in dims)
    upcast = opmath is not dtype

    def backward(grad: Tensor) -> tuple[Tensor | None, ...]:
        g = grad.to(opmath) if upcast else grad
        grad_weight = None
        if weight is not None:
            if need_weight:
                grad_weight = _reduce_to(g * normed, weight)
            g = g * weight
        if not need_input:
            return (None, grad_weight) if upcast else (None, None, grad_weight)
        grad_x = g * r
        grad_r = sum_to(g * x, r.shape)
        grad_mean = grad_r.mul(-0.5).mul(r.pow(3))  # RsqrtBackward0; AddBackward1 passes it
        grad_squares = grad_mean.expand(squares.shape) / count  # MeanBackward1
        grad_pow = grad_squares * (2.0 * x.pow(1.0))  # PowBackward0
        if upcast:  # one ToCopyBackward0 node before both uses: they are added first
            return (grad_x + grad_pow).to(dtype), grad_weight
        return grad_x, grad_pow, grad_weight

    saved = tuple(t for t in (x, r, normed, weight) if t is not None)
    return out, backward, saved, "MulBackward0" if channels_last else "CloneBackward0"


def _rms_norm_checks_pass(input: Tensor, normalized_shape: Sequence[int],
                          weight: Tensor | None) -> bool:
    n = len(normalized_shape)
    shape = list(normalized_shape)
    return (n > 0 and input.dim() >= n and list(input.shape[input.dim() - n:]) == shape
            and (weight is None or list(weight.shape) == shape))


@implements(torch.nn.functional.rms_norm, torch.rms_norm)
def rms_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
             eps: float | None = None) -> TrackedTensor:
    r"""Divide by the root mean square over the trailing ``normalized_shape`` dims (plus
    ``eps``, by default the dtype's machine epsilon), then ``* weight``.

    Backward: torch's composite, node by node: ``grad * w``; into ``x`` directly
    (``* rsqrt(...)``) and through ``rsqrt`` (``-0.5 g r^3``), the mean (divided by the count)
    and the square (``* 2x``), the two added where torch's engine adds them.
    """
    with no_dispatch():
        if is_grad_enabled() and isinstance(normalized_shape, (list, tuple)):
            e_input, e_weight = edge(input), edge(weight)
            if (e_input is not None or e_weight is not None) and _rms_norm_checks_pass(
                    input, normalized_shape, weight) and (
                    weight is None or weight.dtype == input.dtype):
                upcast = input.dtype in (torch.float16, torch.bfloat16)
                edges = (e_input, e_weight) if upcast else (e_input, e_input, e_weight)
                return apply(rms_norm_forward, edges, input, list(normalized_shape), weight,
                             eps, e_input is not None, e_weight is not None)
        out = torch.rms_norm(input, normalized_shape, weight, eps)  # torch's value or error
        if is_grad_enabled() and (edge(input) is not None or edge(weight) is not None):
            raise NotImplementedError(
                "shimnn: rms_norm with a weight whose dtype differs from the input's is not "
                "differentiated (torch promotes and casts back in its composite); cast the "
                "weight to the input's dtype")
        return wrap(out)
