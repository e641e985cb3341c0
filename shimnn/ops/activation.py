"""More element-wise activations, softmax and dropout: hand-written forward/backward pairs.

Public through :mod:`shimnn.functional` (this module's ``__all__``).

Every value is computed by the ATen kernel torch's own function calls, and every gradient by the
derivative kernel torch's ``derivatives.yaml`` names for it (``sigmoid_backward``,
``leaky_relu_backward``, ``elu_backward``...), on the same saved tensor (the input, the result,
or a copy of the input taken before an in-place op, as torch saves it), so values and gradients
are bit-identical to torch on CPU.

Each op has up to three forward/backward pairs (grad mode off, plain tensors):

- ``x_forward``: the out-of-place op;
- ``x_inplace_forward``: the in-place op, recorded by rewriting the tensor's node;
- ``x_chain_forward`` (in-place ops only): what a fused ``Sequential`` runs for an in-place
  layer. It computes the same value out of place, and differentiates it with the in-place
  formula (the same kernel on the same values as torch's in-place op). Inside a chain the
  overwritten tensor is an intermediate nobody else sees, so writing it out of place changes no
  value and cannot corrupt a tensor an earlier layer saved.
"""

from __future__ import annotations

import operator
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._graph import (
    Node,
    Recorded,
    TrackedTensor,
    apply,
    check_inplace_target,
    edge,
    implements,
    is_grad_enabled,
    no_dispatch,
    run_kernel,
    set_node,
    wrap,
)
from ._common import _check_real

__all__: list[str] = [
    "dropout",
    "dropout1d",
    "dropout2d",
    "elu",
    "elu_",
    "gelu",
    "hardtanh",
    "hardtanh_",
    "leaky_relu",
    "leaky_relu_",
    "log_softmax",
    "relu",
    "relu6",
    "relu_",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
]

_nn: Any = torch._C._nn
# The ATen kernels torch's derivative formulas call (`.default._op`: the cheapest entry point).
_threshold_backward = torch.ops.aten.threshold_backward.default._op
_tanh_backward = torch.ops.aten.tanh_backward.default._op
_sigmoid_backward = torch.ops.aten.sigmoid_backward.default._op
_leaky_relu_backward = torch.ops.aten.leaky_relu_backward.default._op
_elu_backward = torch.ops.aten.elu_backward.default._op
_gelu_backward = torch.ops.aten.gelu_backward.default._op
_silu_backward = torch.ops.aten.silu_backward.default._op
_softplus_backward = torch.ops.aten.softplus_backward.default._op
_hardtanh_backward = torch.ops.aten.hardtanh_backward.default._op
_softmax_backward_data = torch.ops.aten._softmax_backward_data.default._op
_log_softmax_backward_data = torch.ops.aten._log_softmax_backward_data.default._op

_LEAF_INPLACE = "a leaf Variable that requires grad is being used in an in-place operation."


# ---------------------------------------------------------------------------------------------
# recording helpers
# ---------------------------------------------------------------------------------------------


def _unary_op(forward: Callable[..., Recorded], kernel: Callable[..., Tensor], input: Tensor,
              *args: Any) -> TrackedTensor:
    """``kernel(input, *args)``, recording ``forward``'s backward when a gradient is needed."""
    with no_dispatch():
        if is_grad_enabled():
            e_input = edge(input)
            if e_input is not None:
                return apply(forward, (e_input,), input, *args)
        return wrap(kernel(input, *args))


def _inplace_op(name: str, forward: Callable[..., Recorded], kernel_: Callable[..., Any],
                input: Tensor, *args: Any) -> TrackedTensor:
    """The in-place op ``kernel_(input, *args)``; returns ``input``.

    As torch: a leaf that requires grad raises; a tracked tensor gets a new node (the in-place
    op's backward, whose input edge is the tensor's old node), so later uses of the tensor
    differentiate through the op. ``forward`` runs the op and returns its backward.
    """
    with no_dispatch():
        e_input = edge(input) if is_grad_enabled() else None
        if e_input is None:
            kernel_(input, *args)
            return input if type(input) is TrackedTensor else wrap(input)
        if e_input is input:
            raise RuntimeError(_LEAF_INPLACE)
        check_inplace_target(input, name)
        _, backward, saved, node_name = run_kernel(forward, input, *args)
        set_node(input, Node(node_name, backward, (e_input,), saved))
        return input  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# relu, tanh
# ---------------------------------------------------------------------------------------------


def relu_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of :func:`relu` (grad mode off, plain tensors)."""
    _check_real("relu", input)
    result = torch.relu(input)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_threshold_backward(grad, result, 0),)

    return result, backward, (result,), "ReluBackward0"


def relu_inplace_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of :func:`relu_`: ``input`` is overwritten."""
    _check_real("relu_", input)
    torch.relu_(input)
    result = input.detach()  # an alias that shares the version counter, without a graph

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_threshold_backward(grad, result, 0),)

    return input, backward, (result,), "ReluBackward1"


def tanh_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of :func:`tanh` (grad mode off, plain tensors)."""
    _check_real("tanh", input)
    result = torch.tanh(input)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_tanh_backward(grad, result),)

    return result, backward, (result,), "TanhBackward0"


@implements(torch.relu, torch.Tensor.relu, torch.nn.functional.relu)
def relu(input: Tensor, inplace: bool = False) -> TrackedTensor:
    r"""Apply :math:`\max(x, 0)` element-wise. Shape: any, unchanged.

    Backward: ``grad`` where the result is positive, 0 elsewhere
    (``threshold_backward(grad, result, 0)``, which writes +0.0, never -0.0).
    """
    if inplace:
        return relu_(input)
    return _unary_op(relu_forward, torch.relu, input)


@implements(torch.relu_, torch.Tensor.relu_, torch.nn.functional.relu_)
def relu_(input: Tensor) -> TrackedTensor:
    """In-place :func:`relu`; returns ``input``. Backward as :func:`relu`."""
    return _inplace_op("relu_", relu_inplace_forward, torch.relu_, input)


@implements(torch.tanh, torch.Tensor.tanh, torch.nn.functional.tanh)
def tanh(input: Tensor) -> TrackedTensor:
    r"""Apply :math:`\tanh(x)` element-wise. Shape: any, unchanged.

    Backward: :math:`grad \cdot (1 - y^2)` with :math:`y = \tanh(x)`, computed by torch's fused
    ``tanh_backward(grad, y)`` kernel (the plain formula differs in the last bit).
    """
    return _unary_op(tanh_forward, torch.tanh, input)


# ---------------------------------------------------------------------------------------------
# sigmoid
# ---------------------------------------------------------------------------------------------


def sigmoid_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of :func:`sigmoid` (grad mode off, plain tensors)."""
    _check_real("sigmoid", input)
    result = torch.sigmoid(input)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_sigmoid_backward(grad, result),)

    return result, backward, (result,), "SigmoidBackward0"


def sigmoid_inplace_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of ``sigmoid_``: ``input`` is overwritten, the result saved."""
    _check_real("sigmoid_", input)
    torch.sigmoid_(input)
    result = input.detach()  # an alias sharing the version counter, without a graph

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_sigmoid_backward(grad, result),)

    return input, backward, (result,), "SigmoidBackward0"


@implements(torch.sigmoid, torch.Tensor.sigmoid, torch.nn.functional.sigmoid, torch.special.expit)
def sigmoid(input: Tensor) -> TrackedTensor:
    r"""Apply :math:`\sigma(x) = 1 / (1 + e^{-x})` element-wise. Shape: any, unchanged.

    Backward: :math:`grad \cdot y (1 - y)` with :math:`y = \sigma(x)`, computed by torch's
    fused ``sigmoid_backward(grad, y)`` kernel.
    """
    return _unary_op(sigmoid_forward, torch.sigmoid, input)


@implements(torch.sigmoid_, torch.Tensor.sigmoid_)
def _sigmoid_(input: Tensor) -> TrackedTensor:
    """In-place :func:`sigmoid`; returns ``input``. Backward as :func:`sigmoid` (on the result)."""
    return _inplace_op("sigmoid_", sigmoid_inplace_forward, torch.sigmoid_, input)


# ---------------------------------------------------------------------------------------------
# leaky_relu
# ---------------------------------------------------------------------------------------------


def leaky_relu_forward(input: Tensor, negative_slope: float) -> Recorded:
    """The forward/backward pair of :func:`leaky_relu` (grad mode off, plain tensors)."""
    _check_real("leaky_relu", input)
    result = _nn.leaky_relu(input, negative_slope)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_leaky_relu_backward(grad, input, negative_slope, False),)

    return result, backward, (input,), "LeakyReluBackward0"


def _leaky_relu_result_backward(result: Tensor, negative_slope: float) -> Callable[..., Any]:
    def backward(grad: Tensor) -> tuple[Tensor]:
        # The kernel refuses a negative slope on a result (torch's own error).
        return (_leaky_relu_backward(grad, result, negative_slope, True),)

    return backward


def leaky_relu_inplace_forward(input: Tensor, negative_slope: float) -> Recorded:
    """The forward/backward pair of :func:`leaky_relu_`: ``input`` is overwritten."""
    _check_real("leaky_relu_", input)
    _nn.leaky_relu_(input, negative_slope)
    result = input.detach()
    return (input, _leaky_relu_result_backward(result, negative_slope), (result,),
            "LeakyReluBackward1")


def leaky_relu_chain_forward(input: Tensor, negative_slope: float) -> Recorded:
    """``leaky_relu_`` in a fused chain: the value out of place, the in-place backward."""
    _check_real("leaky_relu_", input)
    result = _nn.leaky_relu(input, negative_slope)
    return (result, _leaky_relu_result_backward(result, negative_slope), (result,),
            "LeakyReluBackward1")


@implements(torch.nn.functional.leaky_relu, torch._C._nn.leaky_relu)
def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False
               ) -> TrackedTensor:
    r"""Apply :math:`\max(0, x) + \text{negative\_slope} \cdot \min(0, x)` element-wise.

    Shape: any, unchanged.

    Backward: ``grad`` where :math:`x > 0`, ``grad * negative_slope`` elsewhere (at 0 too), by
    torch's ``leaky_relu_backward(grad, x, negative_slope, False)``. In place, the same kernel on
    the result (``self_is_result=True``), which refuses a negative slope as torch does.
    """
    if inplace:
        return leaky_relu_(input, negative_slope)
    return _unary_op(leaky_relu_forward, _nn.leaky_relu, input, negative_slope)


@implements(torch.nn.functional.leaky_relu_)
def leaky_relu_(input: Tensor, negative_slope: float = 0.01) -> TrackedTensor:
    """In-place :func:`leaky_relu`; returns ``input``. Backward as :func:`leaky_relu`, on the
    result."""
    return _inplace_op("leaky_relu_", leaky_relu_inplace_forward, _nn.leaky_relu_, input,
                       negative_slope)


# ---------------------------------------------------------------------------------------------
# elu
# ---------------------------------------------------------------------------------------------


def elu_forward(input: Tensor, alpha: float, scale: float = 1.0, input_scale: float = 1.0
                ) -> Recorded:
    """The forward/backward pair of :func:`elu` (grad mode off, plain tensors)."""
    _check_real("elu", input)
    result = _nn.elu(input, alpha, scale, input_scale)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_elu_backward(grad, alpha, scale, input_scale, False, input),)

    return result, backward, (input,), "EluBackward0"


def _elu_result_backward(result: Tensor, alpha: float, scale: float, input_scale: float
                         ) -> Callable[..., Any]:
    def backward(grad: Tensor) -> tuple[Tensor]:
        # On the result: alpha < 0 is refused by the kernel (torch's own error).
        return (_elu_backward(grad, alpha, scale, input_scale, True, result),)

    return backward


def elu_inplace_forward(input: Tensor, alpha: float, scale: float = 1.0,
                        input_scale: float = 1.0) -> Recorded:
    """The forward/backward pair of :func:`elu_`: ``input`` is overwritten."""
    _check_real("elu_", input)
    _nn.elu_(input, alpha, scale, input_scale)
    result = input.detach()
    return (input, _elu_result_backward(result, alpha, scale, input_scale), (result,),
            "EluBackward1")


def elu_chain_forward(input: Tensor, alpha: float) -> Recorded:
    """``elu_`` in a fused chain: the value out of place, the in-place backward."""
    _check_real("elu_", input)
    result = _nn.elu(input, alpha)
    return result, _elu_result_backward(result, alpha, 1.0, 1.0), (result,), "EluBackward1"


@implements(torch.nn.functional.elu)
def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> TrackedTensor:
    r"""Apply :math:`x` for :math:`x > 0`, :math:`\alpha (e^x - 1)` otherwise, element-wise.

    Shape: any, unchanged.

    Backward: ``grad`` where :math:`x > 0`, :math:`grad \cdot \alpha e^x` elsewhere, by torch's
    ``elu_backward(grad, alpha, 1, 1, is_result=False, x)``. In place, the same kernel on the
    result :math:`y` (:math:`grad \cdot (y + \alpha)` where :math:`y \le 0`), which refuses a
    negative ``alpha`` as torch does.
    """
    if inplace:
        return elu_(input, alpha)
    return _unary_op(elu_forward, _nn.elu, input, alpha)


@implements(torch.nn.functional.elu_)
def elu_(input: Tensor, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0
         ) -> TrackedTensor:
    """In-place :func:`elu`; returns ``input``. Backward as :func:`elu`, on the result.

    ``scale`` and ``input_scale`` are those of the ATen op this name is bound to in torch.
    """
    return _inplace_op("elu_", elu_inplace_forward, _nn.elu_, input, alpha, scale, input_scale)


# ---------------------------------------------------------------------------------------------
# gelu, silu, softplus
# ---------------------------------------------------------------------------------------------


def gelu_forward(input: Tensor, approximate: str) -> Recorded:
    """The forward/backward pair of :func:`gelu` (grad mode off, plain tensors)."""
    _check_real("gelu", input)
    result = _nn.gelu(input, approximate=approximate)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_gelu_backward(grad, input, approximate=approximate),)

    return result, backward, (input,), "GeluBackward0"


def _gelu_kernel(input: Tensor, approximate: str) -> Tensor:
    return _nn.gelu(input, approximate=approximate)  # type: ignore[no-any-return]


@implements(torch.nn.functional.gelu)
def gelu(input: Tensor, approximate: str = "none") -> TrackedTensor:
    r"""Apply :math:`x \Phi(x)` element-wise (``approximate='none'``), or its tanh estimate
    :math:`0.5 x (1 + \tanh(\sqrt{2/\pi} (x + 0.044715 x^3)))` (``approximate='tanh'``).

    Shape: any, unchanged. Another ``approximate`` raises torch's RuntimeError.

    Backward: :math:`grad \cdot (\Phi(x) + x \phi(x))` (or the tanh form's derivative), by
    torch's ``gelu_backward(grad, x, approximate=approximate)``.
    """
    return _unary_op(gelu_forward, _gelu_kernel, input, approximate)


def silu_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of :func:`silu`; also the fused-chain form of ``silu_``,
    whose backward reads the input as it was before the op (a copy in torch; the unchanged
    input here)."""
    _check_real("silu", input)
    result = _nn.silu(input)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_silu_backward(grad, input),)

    return result, backward, (input,), "SiluBackward0"


def silu_inplace_forward(input: Tensor) -> Recorded:
    """The forward/backward pair of ``silu_``: like torch, a copy of the input is taken before
    it is overwritten, and the backward reads the copy."""
    _check_real("silu_", input)
    original = input.clone()
    _nn.silu_(input)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_silu_backward(grad, original),)

    return input, backward, (original,), "SiluBackward0"


@implements(torch.nn.functional.silu)
def silu(input: Tensor, inplace: bool = False) -> TrackedTensor:
    r"""Apply :math:`x \sigma(x)` element-wise (SiLU, swish). Shape: any, unchanged.

    Backward: :math:`grad \cdot \sigma(x) (1 + x (1 - \sigma(x)))`, by torch's
    ``silu_backward(grad, x)``; in place, on a copy of ``x`` taken before the op (as torch).
    """
    if inplace:
        return _silu_(input)
    return _unary_op(silu_forward, _nn.silu, input)


@implements(torch._C._nn.silu_)
def _silu_(input: Tensor) -> TrackedTensor:
    return _inplace_op("silu_", silu_inplace_forward, _nn.silu_, input)


def softplus_forward(input: Tensor, beta: float, threshold: float) -> Recorded:
    """The forward/backward pair of :func:`softplus` (grad mode off, plain tensors)."""
    _check_real("softplus", input)
    result = _nn.softplus(input, beta, threshold)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_softplus_backward(grad, input, beta, threshold),)

    return result, backward, (input,), "SoftplusBackward0"


@implements(torch.nn.functional.softplus)
def softplus(input: Tensor, beta: float = 1, threshold: float = 20) -> TrackedTensor:
    r"""Apply :math:`\frac{1}{\beta} \log(1 + e^{\beta x})` element-wise, and :math:`x` where
    :math:`\beta x > \text{threshold}`. Shape: any, unchanged.

    Backward: ``grad`` where :math:`\beta x > \text{threshold}`, else
    :math:`grad \cdot z / (z + 1)` with :math:`z = e^{\beta x}`, by torch's
    ``softplus_backward(grad, x, beta, threshold)``.
    """
    return _unary_op(softplus_forward, _nn.softplus, input, beta, threshold)


# ---------------------------------------------------------------------------------------------
# hardtanh, relu6
# ---------------------------------------------------------------------------------------------


def hardtanh_forward(input: Tensor, min_val: float, max_val: float) -> Recorded:
    """The forward/backward pair of :func:`hardtanh`; also the fused-chain form of
    ``hardtanh_`` (whose backward reads the input as it was before the op)."""
    _check_real("hardtanh", input)
    result = _nn.hardtanh(input, min_val, max_val)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_hardtanh_backward(grad, input, min_val, max_val),)

    return result, backward, (input,), "HardtanhBackward0"


def hardtanh_inplace_forward(input: Tensor, min_val: float, max_val: float) -> Recorded:
    """The forward/backward pair of :func:`hardtanh_`: like torch, a copy of the input is
    taken before it is overwritten, and the backward reads the copy."""
    _check_real("hardtanh_", input)
    original = input.clone()
    _nn.hardtanh_(input, min_val, max_val)

    def backward(grad: Tensor) -> tuple[Tensor]:
        return (_hardtanh_backward(grad, original, min_val, max_val),)

    return input, backward, (original,), "HardtanhBackward0"


@implements(torch.nn.functional.hardtanh, torch._C._nn.hardtanh)
def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
             ) -> TrackedTensor:
    r"""Clamp element-wise to :math:`[\text{min\_val}, \text{max\_val}]`.

    Shape: any, unchanged. ``min_val > max_val`` raises torch's ValueError.

    Backward: ``grad`` strictly inside :math:`(\text{min\_val}, \text{max\_val})`, 0 at and
    beyond the bounds, by torch's ``hardtanh_backward(grad, x, min_val, max_val)``; in place,
    on a copy of ``x`` taken before the op (as torch).
    """
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    if inplace:
        return hardtanh_(input, min_val, max_val)
    return _unary_op(hardtanh_forward, _nn.hardtanh, input, min_val, max_val)


@implements(torch.nn.functional.hardtanh_)
def hardtanh_(input: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> TrackedTensor:
    """In-place :func:`hardtanh`; returns ``input``. Backward as :func:`hardtanh`."""
    return _inplace_op("hardtanh_", hardtanh_inplace_forward, _nn.hardtanh_, input, min_val,
                       max_val)


def _relu6_kernel(input: Tensor, min_val: float, max_val: float) -> Tensor:
    return _nn.relu6(input)  # type: ignore[no-any-return]


def _relu6_kernel_(input: Tensor, min_val: float, max_val: float) -> Tensor:
    return _nn.relu6_(input)  # type: ignore[no-any-return]


@implements(torch.nn.functional.relu6, torch._C._nn.relu6)
def relu6(input: Tensor, inplace: bool = False) -> TrackedTensor:
    r"""Apply :math:`\min(\max(0, x), 6)` element-wise: torch's ``hardtanh(x, 0, 6)``.

    Shape: any, unchanged. Backward: as :func:`hardtanh` with bounds 0 and 6
    (``hardtanh_backward``); torch names the node ``HardtanhBackward0`` too.
    """
    if inplace:
        return _inplace_op("relu6_", hardtanh_inplace_forward, _relu6_kernel_, input, 0.0, 6.0)
    return _unary_op(hardtanh_forward, _relu6_kernel, input, 0.0, 6.0)


# ---------------------------------------------------------------------------------------------
# softmax, log_softmax
# ---------------------------------------------------------------------------------------------


def _get_softmax_dim(name: str, ndim: int, stacklevel: int) -> int:
    """torch's implicit-dim choice, with its deprecation warning (``stacklevel`` as torch's:
    counted from this function)."""
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. "
        "Change the call to include dim=X as an argument.",
        stacklevel=stacklevel,
    )
    return 0 if ndim in (0, 1, 3) else 1


def _softmax_pair(kernel: Callable[..., Tensor], backward_kernel: Callable[..., Tensor],
                  name: str, input: Tensor, dim: int, dtype: torch.dtype | None) -> Recorded:
    _check_real(name, input)
    cast = dtype is not None and dtype != input.dtype
    converted = input.to(dtype) if cast else input  # torch's input.toType(dtype)
    result = kernel(converted, dim, False)
    input_dtype, converted_dtype = input.dtype, converted.dtype

    def backward(grad: Tensor) -> tuple[Tensor]:
        g = backward_kernel(grad, result, dim, converted_dtype)
        # ToCopyBackward0: the gradient goes back to the input's dtype.
        return (g.to(input_dtype) if cast else g,)

    return result, backward, (result,), name


def softmax_forward(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Recorded:
    """The forward/backward pair of :func:`softmax` (grad mode off, plain tensors)."""
    return _softmax_pair(torch._softmax, _softmax_backward_data, "SoftmaxBackward0", input,
                         dim, dtype)


def log_softmax_forward(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Recorded:
    """The forward/backward pair of :func:`log_softmax` (grad mode off, plain tensors)."""
    return _softmax_pair(torch._log_softmax, _log_softmax_backward_data, "LogSoftmaxBackward0",
                         input, dim, dtype)


def _softmax_kernel(input: Tensor, dim: int, dtype: torch.dtype | None) -> Tensor:
    return torch.softmax(input, dim, dtype=dtype)


def _log_softmax_kernel(input: Tensor, dim: int, dtype: torch.dtype | None) -> Tensor:
    return torch.log_softmax(input, dim, dtype=dtype)


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
            dtype: torch.dtype | None = None) -> TrackedTensor:
    r"""Apply :math:`\exp(x_i) / \sum_j \exp(x_j)` over the slices along ``dim``.

    Shape: any, unchanged. ``dim=None`` picks 0 for 0-, 1- and 3-d inputs and 1 otherwise,
    with torch's deprecation warning (``_stacklevel`` as torch's). With ``dtype`` the input is
    cast first.

    Backward: :math:`y \odot (grad - \sum_{dim} grad \odot y)` with :math:`y` the result, by
    torch's ``_softmax_backward_data(grad, y, dim, dtype)``; then cast back to the input's
    dtype when ``dtype`` changed it (torch's ``ToCopyBackward0``).
    """
    if dim is None:
        with no_dispatch():
            ndim = input.dim()
        dim = _get_softmax_dim("softmax", ndim, _stacklevel)
    return _unary_op(softmax_forward, _softmax_kernel, input, dim, dtype)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype: torch.dtype | None = None) -> TrackedTensor:
    r"""Apply :math:`x_i - \log \sum_j \exp(x_j)` over the slices along ``dim``.

    Shape: any, unchanged. ``dim=None``, ``_stacklevel`` and ``dtype`` as :func:`softmax`.

    Backward: :math:`grad - e^{y} \sum_{dim} grad` with :math:`y` the result, by torch's
    ``_log_softmax_backward_data(grad, y, dim, dtype)``; then cast back to the input's dtype
    when ``dtype`` changed it.
    """
    if dim is None:
        with no_dispatch():
            ndim = input.dim()
        dim = _get_softmax_dim("log_softmax", ndim, _stacklevel)
    return _unary_op(log_softmax_forward, _log_softmax_kernel, input, dim, dtype)


# Reached through torch.nn.functional's own softmax/log_softmax, which calls
# handle_torch_function -> TrackedTensor.__torch_function__ -> here: three more frames than
# torch's path, so the warning still points at the caller.
_DISPATCH_FRAMES = 3


@implements(torch.nn.functional.softmax)
def _dispatched_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                        dtype: torch.dtype | None = None) -> TrackedTensor:
    return softmax(input, dim, _stacklevel + _DISPATCH_FRAMES + 1, dtype)


@implements(torch.nn.functional.log_softmax)
def _dispatched_log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                            dtype: torch.dtype | None = None) -> TrackedTensor:
    return log_softmax(input, dim, _stacklevel + _DISPATCH_FRAMES + 1, dtype)


def _require_dim(name: str, input: Tensor, dim: Any) -> int:
    """``dim`` as an int; anything else goes to torch's own ``name`` first, on a plain copy
    with grad mode off, so a bad one raises what the installed torch raises (its type and
    message vary between releases)."""
    if isinstance(dim, int):
        return dim
    with no_dispatch(), torch.no_grad():
        getattr(torch._C._VariableFunctions, name)(input.detach(), dim)
    return operator.index(dim)


@implements(torch.softmax, torch.Tensor.softmax, torch.special.softmax)
def _softmax_method(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> TrackedTensor:
    """``torch.softmax(input, dim, dtype=None)`` / ``Tensor.softmax``: ``dim`` required."""
    return _unary_op(softmax_forward, _softmax_kernel, input, _require_dim("softmax", input, dim),
                     dtype)


@implements(torch.log_softmax, torch.Tensor.log_softmax, torch.special.log_softmax)
def _log_softmax_method(input: Tensor, dim: int, dtype: torch.dtype | None = None
                        ) -> TrackedTensor:
    """``torch.log_softmax(input, dim, dtype=None)`` / ``Tensor.log_softmax``."""
    return _unary_op(log_softmax_forward, _log_softmax_kernel, input,
                     _require_dim("log_softmax", input, dim), dtype)


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------


def _dropout_noise(input: Tensor, p: float) -> Tensor:
    """torch's CPU ``_dropout`` mask: ``zeros({})`` for p = 1; otherwise ``empty_like(input)``,
    ``bernoulli_(1 - p)``, ``div_(1 - p)``: the same calls, so the same draws from the global
    generator in the same order (and the same generator state afterwards)."""
    if p == 1:
        return torch.zeros((), dtype=input.dtype, device=input.device)
    noise = torch.empty_like(input)
    noise.bernoulli_(1 - p)
    noise.div_(1 - p)
    return noise


def _mask_backward(noise: Tensor) -> Callable[..., Any]:
    def backward(grad: Tensor) -> tuple[Tensor]:
        return (grad * noise,)  # MulBackward0: grad * other

    return backward


def dropout_forward(input: Tensor, p: float) -> Recorded:
    """The forward/backward pair of :func:`dropout` in training (``0 < p <= 1``, non-empty)."""
    _check_real("dropout", input)
    noise = _dropout_noise(input, p)
    return input * noise, _mask_backward(noise), (noise,), "MulBackward0"


def dropout_inplace_forward(input: Tensor, p: float) -> Recorded:
    """In-place :func:`dropout` in training: ``input.mul_(mask)``."""
    _check_real("dropout_", input)
    noise = _dropout_noise(input, p)
    input.mul_(noise)
    return input, _mask_backward(noise), (noise,), "MulBackward0"


def _dropout_kernel(input: Tensor, p: float) -> Tensor:
    return input * _dropout_noise(input, p)


def _dropout_kernel_(input: Tensor, p: float) -> Tensor:
    return input.mul_(_dropout_noise(input, p))


def _returned_input(input: Tensor) -> TrackedTensor:
    """What torch's dropout returns when it does nothing: the input itself. So is a leaf that
    needs a gradient (an in-place op on the result must raise torch's leaf error); another
    plain tensor is returned as a TrackedTensor alias without a graph."""
    with no_dispatch():
        if type(input) is TrackedTensor or (is_grad_enabled() and edge(input) is input):
            return input  # type: ignore[return-value]
        return wrap(input)


def _dropout(input: Tensor, p: float, train: bool, inplace: bool) -> TrackedTensor:
    """ATen's ``dropout``/``dropout_`` on CPU (``_dropout_impl``)."""
    if not (p >= 0 and p <= 1):
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {p}")
    with no_dispatch():
        empty = input.numel() == 0
    if p == 0 or not train or empty:
        return _returned_input(input)
    if inplace:
        return _inplace_op("mul_", dropout_inplace_forward, _dropout_kernel_, input, p)
    return _unary_op(dropout_forward, _dropout_kernel, input, p)


@implements(torch.nn.functional.dropout)
def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
            ) -> TrackedTensor:
    r"""In training, zero each element with probability ``p`` and scale the others by
    :math:`1/(1-p)`; the identity (the input itself) when ``training=False``, ``p == 0`` or the
    input is empty.

    Shape: any, unchanged. ``p`` outside :math:`[0, 1]` raises torch's ValueError. The mask is
    drawn from torch's global generator exactly as torch's CPU dropout draws it, so a seed
    gives torch's mask and leaves the generator in torch's state.

    Backward: ``grad * mask`` with the saved mask (:math:`0` or :math:`1/(1-p)`; the 0-d zero
    for ``p == 1``), as torch's ``MulBackward0``.
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return _dropout(input, p, training, inplace)


@implements(torch.dropout)
def _torch_dropout(input: Tensor, p: float, train: bool) -> TrackedTensor:
    return _dropout(input, p, train, False)


@implements(torch.dropout_)
def _torch_dropout_(input: Tensor, p: float, train: bool) -> TrackedTensor:
    return _dropout(input, p, train, True)


# ---------------------------------------------------------------------------------------------
# feature (channel) dropout: dropout1d, dropout2d
# ---------------------------------------------------------------------------------------------


def _feature_noise(input: Tensor, p: float, batched: Sequence[int]) -> Tensor:
    """torch's ``_dropout_impl`` mask with ``feature_dropout``: ``zeros({})`` for p = 1,
    otherwise ``make_feature_noise`` (``new_empty`` of ``(N, C, 1, ...)`` for the input's
    batched shape ``batched``), ``bernoulli_(1 - p)``, ``div_(1 - p)``: the same draws from
    the global generator. The mask has the input's rank (unbatched: the batch dim dropped)."""
    if p == 1:
        return torch.zeros((), dtype=input.dtype, device=input.device)
    if len(batched) < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    noise = input.new_empty([batched[0], batched[1], *([1] * (len(batched) - 2))])
    noise.bernoulli_(1 - p)
    noise.div_(1 - p)
    return noise if len(batched) == input.dim() else noise.squeeze(0)


def feature_dropout_forward(input: Tensor, p: float, batched: Sequence[int]) -> Recorded:
    """The forward/backward pair of feature dropout in training (``0 < p <= 1``)."""
    _check_real("feature_dropout", input)
    noise = _feature_noise(input, p, batched)
    return input * noise, _mask_backward(noise), (noise,), "MulBackward0"


def feature_dropout_inplace_forward(input: Tensor, p: float, batched: Sequence[int]
                                    ) -> Recorded:
    """In-place feature dropout in training: ``input.mul_(mask)``."""
    _check_real("feature_dropout_", input)
    noise = _feature_noise(input, p, batched)
    input.mul_(noise)
    return input, _mask_backward(noise), (noise,), "MulBackward0"


def _feature_kernel(input: Tensor, p: float, batched: Sequence[int]) -> Tensor:
    return input * _feature_noise(input, p, batched)


def _feature_kernel_(input: Tensor, p: float, batched: Sequence[int]) -> Tensor:
    return input.mul_(_feature_noise(input, p, batched))


def _feature_dropout(input: Tensor, p: float, train: bool, inplace: bool,
                     batched: Sequence[int] | None = None) -> TrackedTensor:
    """ATen's ``feature_dropout``/``feature_dropout_``; ``batched``: the shape the mask is
    drawn for (default the input's; an unbatched input of dropout1d passes ``(1, *shape)``)."""
    if not (p >= 0 and p <= 1):
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {p}")
    with no_dispatch():
        empty = input.numel() == 0
        shape = list(input.shape) if batched is None else list(batched)
    if p == 0 or not train or empty:
        return _returned_input(input)
    if inplace:
        return _inplace_op("mul_", feature_dropout_inplace_forward, _feature_kernel_, input, p,
                           shape)
    return _unary_op(feature_dropout_forward, _feature_kernel, input, p, shape)


@implements(torch.feature_dropout)
def _torch_feature_dropout(input: Tensor, p: float, train: bool) -> TrackedTensor:
    return _feature_dropout(input, p, train, False)


@implements(torch.feature_dropout_)
def _torch_feature_dropout_(input: Tensor, p: float, train: bool) -> TrackedTensor:
    return _feature_dropout(input, p, train, True)


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
              ) -> TrackedTensor:
    r"""In training, zero each channel (``input[n, c]``, a 1-d signal) of ``(N, C, L)`` or
    ``(C, L)`` with probability ``p`` and scale the others by :math:`1/(1-p)`; the identity
    otherwise. The mask (one draw per channel) comes from torch's global generator as torch
    draws it.

    Backward: ``grad * mask`` (``MulBackward0``).
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    with no_dispatch():
        inp_dim = input.dim()
        shape = list(input.shape)
    if inp_dim not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {inp_dim}D input. "
            "Note that dropout1d exists to provide channel-wise dropout on inputs with 1 "
            "spatial dimension, a channel dimension, and an optional batch dimension "
            "(i.e. 2D or 3D inputs).")
    if inp_dim == 3:
        return _feature_dropout(input, p, training, inplace)
    if inplace:  # torch: unsqueeze_(0), feature_dropout_, squeeze_(0): the mask of (1, C, L)
        return _feature_dropout(input, p, training, True, [1, *shape])
    from .shape import squeeze, unsqueeze

    return squeeze(_feature_dropout(unsqueeze(input, 0), p, training, False), 0)  # type: ignore[return-value]


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              _stacklevel: int = 2) -> TrackedTensor:
    r"""In training, zero each channel (``input[n, c]``, a 2-d map) of ``(N, C, H, W)`` with
    probability ``p`` and scale the others by :math:`1/(1-p)`; the identity otherwise. As
    torch, a 3-d input is taken as ``(N, C, L)`` (with torch's warning), another rank warns.

    Backward: ``grad * mask`` (``MulBackward0``).
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    with no_dispatch():
        inp_dim = input.dim()
    if inp_dim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {inp_dim}-D input to dropout2d, which is deprecated "
            "and will result in an error in a future release. To retain the behavior "
            "and silence this warning, please use dropout instead. Note that dropout2d "
            "exists to provide channel-wise dropout on inputs with 2 spatial dimensions, "
            "a channel dimension, and an optional batch dimension (i.e. 3D or 4D inputs).",
            stacklevel=_stacklevel)
    if inp_dim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
            "1D dropout behavior is desired - input is interpreted as shape (N, C, L), where C "
            "is the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=_stacklevel)
    return _feature_dropout(input, p, training, inplace)


@implements(torch.nn.functional.dropout1d)
def _dispatched_dropout1d(input: Tensor, p: float = 0.5, training: bool = True,
                          inplace: bool = False) -> TrackedTensor:
    return dropout1d(input, p, training, inplace)


_torch_dropout2d_code = torch.nn.functional.dropout2d.__code__


@implements(torch.nn.functional.dropout2d)
def _dispatched_dropout2d(input: Tensor, p: float = 0.5, training: bool = True,
                          inplace: bool = False) -> TrackedTensor:
    # Reached through torch's own dropout2d (and shimnn's dispatch, whose depth depends on the
    # call): its warnings point at the caller of torch's function, found on the stack.
    frame = sys._getframe(1)
    level = 3  # the caller of this function, counted from dropout2d's warnings.warn
    while frame is not None and frame.f_code is not _torch_dropout2d_code:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return dropout2d(input, p, training, inplace, level + 1 if frame is not None else 2)
