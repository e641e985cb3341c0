"""Element-wise activations, softmax and ``Identity``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._chain import CHAIN_STEPS, RELU, TANH
from ..ops import activation as A
from .module import Module, torch_init

__all__ = [
    "ELU",
    "GELU",
    "Hardtanh",
    "Identity",
    "LeakyReLU",
    "LogSoftmax",
    "ReLU",
    "ReLU6",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
]

_nn: Any = torch._C._nn


class ReLU(Module, torch.nn.ReLU):
    r"""Apply :math:`\text{ReLU}(x) = \max(0, x)` element-wise.

    Args:
        inplace: overwrite the input instead of allocating the output. Default: ``False``.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.relu`.
    """

    __constants__ = ["inplace"]
    inplace: bool

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return A.relu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Tanh(Module, torch.nn.Tanh):
    r"""Apply :math:`\tanh(x)` element-wise.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.tanh`.
    """

    def forward(self, input: Tensor) -> Tensor:
        return A.tanh(input)


class _ReLUChainStep:
    """How a fused ``Sequential`` runs a ``ReLU`` (see ``container.CHAIN_STEPS``)."""

    kind = RELU

    @staticmethod
    def step(m: ReLU, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        forward = A.relu_inplace_forward if m.inplace else A.relu_forward
        return (*forward(input), ())

    @staticmethod
    def plain(m: ReLU, input: Tensor) -> Tensor:
        return torch.relu_(input) if m.inplace else torch.relu(input)


class _TanhChainStep:
    """How a fused ``Sequential`` runs a ``Tanh`` (see ``container.CHAIN_STEPS``)."""

    kind = TANH

    @staticmethod
    def step(m: Tanh, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        return (*A.tanh_forward(input), ())

    @staticmethod
    def plain(m: Tanh, input: Tensor) -> Tensor:
        return torch.tanh(input)


CHAIN_STEPS[ReLU] = _ReLUChainStep
CHAIN_STEPS[Tanh] = _TanhChainStep


# ---------------------------------------------------------------------------------------------
# More activations (their functional forms are in shimnn/_activations.py)
# ---------------------------------------------------------------------------------------------


class Identity(Module, torch.nn.Identity):
    r"""Return the input itself (the same tensor object), as ``torch.nn.Identity``.

    Args:
        args, kwargs: accepted and ignored (a placeholder keeps a constructor call intact).

    Shape: any, unchanged. Backward: none is recorded; the gradient reaches the input directly.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:
        return input


class Sigmoid(Module, torch.nn.Sigmoid):
    r"""Apply :math:`\sigma(x) = 1 / (1 + e^{-x})` element-wise.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.sigmoid`.
    """

    def forward(self, input: Tensor) -> Tensor:
        return A.sigmoid(input)


class LeakyReLU(Module, torch.nn.LeakyReLU):
    r"""Apply :math:`\max(0, x) + \text{negative\_slope} \cdot \min(0, x)` element-wise.

    Args:
        negative_slope: the slope for negative inputs. Default: ``1e-2``.
        inplace: overwrite the input. Default: ``False``.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.leaky_relu`.
    """

    __constants__ = ["inplace", "negative_slope"]
    inplace: bool
    negative_slope: float

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return A.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self) -> str:
        inplace_str = ", inplace=True" if self.inplace else ""
        return f"negative_slope={self.negative_slope}{inplace_str}"


class ELU(Module, torch.nn.ELU):
    r"""Apply :math:`x` for :math:`x > 0`, :math:`\alpha (e^x - 1)` otherwise, element-wise.

    Args:
        alpha: the :math:`\alpha` value. Default: 1.0.
        inplace: overwrite the input. Default: ``False``.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.elu`.
    """

    __constants__ = ["alpha", "inplace"]
    alpha: float
    inplace: bool

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return A.elu(input, self.alpha, self.inplace)

    def extra_repr(self) -> str:
        inplace_str = ", inplace=True" if self.inplace else ""
        return f"alpha={self.alpha}{inplace_str}"


class GELU(Module, torch.nn.GELU):
    r"""Apply :math:`x \Phi(x)` element-wise, or its tanh estimate.

    Args:
        approximate: ``'none'`` | ``'tanh'``. Default: ``'none'``.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.gelu`.
    """

    __constants__ = ["approximate"]
    approximate: str

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return A.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={repr(self.approximate)}"


class SiLU(Module, torch.nn.SiLU):
    r"""Apply :math:`x \sigma(x)` element-wise (SiLU, swish).

    Args:
        inplace: overwrite the input. Default: ``False``.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.silu`.
    """

    __constants__ = ["inplace"]
    inplace: bool

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return A.silu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        inplace_str = "inplace=True" if self.inplace else ""
        return inplace_str


class Softplus(Module, torch.nn.Softplus):
    r"""Apply :math:`\frac{1}{\beta} \log(1 + e^{\beta x})` element-wise; :math:`x` where
    :math:`\beta x > \text{threshold}`.

    Args:
        beta: the :math:`\beta` value. Default: 1.0.
        threshold: above it, the function is linear. Default: 20.0.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.softplus`.
    """

    __constants__ = ["beta", "threshold"]
    beta: float
    threshold: float

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input: Tensor) -> Tensor:
        return A.softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module, torch.nn.Hardtanh):
    r"""Clamp element-wise to :math:`[\text{min\_val}, \text{max\_val}]`.

    Args:
        min_val: the lower bound. Default: -1.
        max_val: the upper bound. Default: 1.
        inplace: overwrite the input. Default: ``False``.
        min_value, max_value: deprecated names of ``min_val`` and ``max_val`` (FutureWarning).

    ``max_val <= min_val`` raises torch's AssertionError.
    Shape: any, unchanged. Backward: see :func:`shimnn.functional.hardtanh`.
    """

    __constants__ = ["min_val", "max_val", "inplace"]
    min_val: float
    max_val: float
    inplace: bool

    def __init__(
        self,
        min_val: float = -1.0,
        max_val: float = 1.0,
        inplace: bool = False,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> None:
        # torch's own __init__: its deprecation warnings and its check of the bounds.
        torch_init(torch.nn.Hardtanh, self, min_val, max_val, inplace, min_value, max_value)

    def forward(self, input: Tensor) -> Tensor:
        return A.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self) -> str:
        inplace_str = ", inplace=True" if self.inplace else ""
        return f"min_val={self.min_val}, max_val={self.max_val}{inplace_str}"


class ReLU6(Hardtanh, torch.nn.ReLU6):
    r"""Apply :math:`\min(\max(0, x), 6)` element-wise: a :class:`Hardtanh` from 0 to 6.

    Args:
        inplace: overwrite the input. Default: ``False``.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.hardtanh`.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        inplace_str = "inplace=True" if self.inplace else ""
        return inplace_str


class Softmax(Module, torch.nn.Softmax):
    r"""Apply :math:`\exp(x_i) / \sum_j \exp(x_j)` over the slices along ``dim``.

    Args:
        dim: the dim to normalise over. Default: ``None``, torch's deprecated implicit choice
            (0 for 0-, 1- and 3-d inputs, 1 otherwise), with its warning.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.softmax`.
    """

    __constants__ = ["dim"]
    dim: int | None

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        if not hasattr(self, "dim"):
            self.dim = None

    def forward(self, input: Tensor) -> Tensor:
        return A.softmax(input, self.dim, _stacklevel=5)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module, torch.nn.LogSoftmax):
    r"""Apply :math:`x_i - \log \sum_j \exp(x_j)` over the slices along ``dim``.

    Args:
        dim: as :class:`Softmax`.

    Shape: any, unchanged. Backward: see :func:`shimnn.functional.log_softmax`.
    """

    __constants__ = ["dim"]
    dim: int | None

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        if not hasattr(self, "dim"):
            self.dim = None

    def forward(self, input: Tensor) -> Tensor:
        return A.log_softmax(input, self.dim, _stacklevel=5)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


# ---------------------------------------------------------------------------------------------
# How a fused Sequential runs them (container.CHAIN_STEPS, generic chain: kind None).
#
# An in-place layer inside a chain computes its value out of place and differentiates it with
# torch's in-place formula (``*_chain_forward`` in shimnn/_activations.py): the same numbers,
# without overwriting a tensor that an earlier layer of the chain may have saved. Identity and
# Dropout are not chained: they can return the chain's own input, which a following in-place
# layer would then overwrite without the node rewrite (or leaf error) that op needs.
# ---------------------------------------------------------------------------------------------

# The warning of an implicit softmax dim, raised from a chain step or plain(), counted to the
# frame torch's own warning points at (Module._wrapped_call_impl): step/plain, _run_chain,
# _chain.run, Sequential.forward, _call_impl, _wrapped_call_impl.
_CHAIN_STACKLEVEL = 7


class _SigmoidChainStep:
    kind = None

    @staticmethod
    def step(m: Sigmoid, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        return (*A.sigmoid_forward(input), ())

    @staticmethod
    def plain(m: Sigmoid, input: Tensor) -> Tensor:
        return torch.sigmoid(input)


class _LeakyReLUChainStep:
    kind = None

    @staticmethod
    def step(m: LeakyReLU, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        forward = A.leaky_relu_chain_forward if m.inplace else A.leaky_relu_forward
        return (*forward(input, m.negative_slope), ())

    @staticmethod
    def plain(m: LeakyReLU, input: Tensor) -> Tensor:
        kernel = _nn.leaky_relu_ if m.inplace else _nn.leaky_relu
        return kernel(input, m.negative_slope)  # type: ignore[no-any-return]


class _ELUChainStep:
    kind = None

    @staticmethod
    def step(m: ELU, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        forward = A.elu_chain_forward if m.inplace else A.elu_forward
        return (*forward(input, m.alpha), ())

    @staticmethod
    def plain(m: ELU, input: Tensor) -> Tensor:
        kernel = _nn.elu_ if m.inplace else _nn.elu
        return kernel(input, m.alpha)  # type: ignore[no-any-return]


class _GELUChainStep:
    kind = None

    @staticmethod
    def step(m: GELU, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        return (*A.gelu_forward(input, m.approximate), ())

    @staticmethod
    def plain(m: GELU, input: Tensor) -> Tensor:
        return _nn.gelu(input, approximate=m.approximate)  # type: ignore[no-any-return]


class _SiLUChainStep:
    kind = None

    @staticmethod
    def step(m: SiLU, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        # In place, torch's backward reads a copy of the input taken before the op: the same
        # values as the (unchanged) input here.
        return (*A.silu_forward(input), ())

    @staticmethod
    def plain(m: SiLU, input: Tensor) -> Tensor:
        return _nn.silu_(input) if m.inplace else _nn.silu(input)  # type: ignore[no-any-return]


class _SoftplusChainStep:
    kind = None

    @staticmethod
    def step(m: Softplus, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        return (*A.softplus_forward(input, m.beta, m.threshold), ())

    @staticmethod
    def plain(m: Softplus, input: Tensor) -> Tensor:
        return _nn.softplus(input, m.beta, m.threshold)  # type: ignore[no-any-return]


class _HardtanhChainStep:
    kind = None

    @staticmethod
    def step(m: Hardtanh, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        if m.min_val > m.max_val:
            raise ValueError("min_val cannot be greater than max_val")
        # In place, torch's backward reads a copy of the input taken before the op.
        return (*A.hardtanh_forward(input, m.min_val, m.max_val), ())

    @staticmethod
    def plain(m: Hardtanh, input: Tensor) -> Tensor:
        if m.min_val > m.max_val:
            raise ValueError("min_val cannot be greater than max_val")
        kernel = _nn.hardtanh_ if m.inplace else _nn.hardtanh
        return kernel(input, m.min_val, m.max_val)  # type: ignore[no-any-return]


def _chain_softmax_dim(name: str, m: Softmax | LogSoftmax, input: Tensor) -> int:
    if m.dim is not None:
        return m.dim
    return A._get_softmax_dim(name, input.dim(), _CHAIN_STACKLEVEL + 1)


class _SoftmaxChainStep:
    kind = None

    @staticmethod
    def step(m: Softmax, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        return (*A.softmax_forward(input, _chain_softmax_dim("softmax", m, input)), ())

    @staticmethod
    def plain(m: Softmax, input: Tensor) -> Tensor:
        return torch.softmax(input, _chain_softmax_dim("softmax", m, input))


class _LogSoftmaxChainStep:
    kind = None

    @staticmethod
    def step(m: LogSoftmax, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        return (*A.log_softmax_forward(input, _chain_softmax_dim("log_softmax", m, input)), ())

    @staticmethod
    def plain(m: LogSoftmax, input: Tensor) -> Tensor:
        return torch.log_softmax(input, _chain_softmax_dim("log_softmax", m, input))


CHAIN_STEPS[Sigmoid] = _SigmoidChainStep
CHAIN_STEPS[LeakyReLU] = _LeakyReLUChainStep
CHAIN_STEPS[ELU] = _ELUChainStep
CHAIN_STEPS[GELU] = _GELUChainStep
CHAIN_STEPS[SiLU] = _SiLUChainStep
CHAIN_STEPS[Softplus] = _SoftplusChainStep
CHAIN_STEPS[Hardtanh] = _HardtanhChainStep
CHAIN_STEPS[ReLU6] = _HardtanhChainStep
CHAIN_STEPS[Softmax] = _SoftmaxChainStep
CHAIN_STEPS[LogSoftmax] = _LogSoftmaxChainStep
