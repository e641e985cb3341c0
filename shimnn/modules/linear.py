"""Linear layers."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._chain import CHAIN_STEPS, LINEAR
from .._graph import Recorded, edge
from ..ops import linear as F
from .module import Module, Parameter

__all__ = ["Linear"]


class Linear(Module, torch.nn.Linear):
    r"""Apply an affine transformation :math:`y = xA^T + b`.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: if ``False``, the layer learns no additive bias. Default: ``True``.
        device, dtype: where and how the parameters are created.

    Shape:
        - Input: :math:`(*, H_{in})`, any number of leading dimensions including none.
        - Output: :math:`(*, H_{out})`.

    Attributes:
        weight: :math:`(H_{out}, H_{in})`, initialised from :math:`\mathcal{U}(-\sqrt{k},
            \sqrt{k})`, :math:`k = 1/H_{in}`, consuming the RNG exactly as ``torch.nn.Linear``.
        bias: :math:`(H_{out})`, initialised the same way.

    Backward: see :func:`shimnn.functional.linear`.
    """

    __constants__ = ["in_features", "out_features"]
    in_features: int
    out_features: int
    weight: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(torch.empty((out_features, in_features), **factory_kwargs))
        if bias:
            self.bias = Parameter(torch.empty(out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw weight, then bias, from :math:`\\mathcal{U}(-1/\\sqrt{H_{in}}, 1/\\sqrt{H_{in}})`.

        Uses torch's own init functions, so the RNG stream and the bounds are torch's.
        """
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class _LinearChainStep:
    """How a fused ``Sequential`` runs a ``Linear`` (see ``container.CHAIN_STEPS``)."""

    kind = LINEAR

    @staticmethod
    def step(m: Linear, input: Tensor, need_input: bool) -> tuple[Any, ...]:
        params: dict[str, Any] = m._parameters
        weight, bias = params["weight"], params["bias"]
        e_weight, e_bias = edge(weight), edge(bias)
        recorded: Recorded = F.linear_forward(input, weight, bias, need_input,
                                              e_weight is not None, e_bias is not None)
        return (*recorded, (e_bias, e_weight))  # linear_forward's gradient order

    @staticmethod
    def plain(m: Linear, input: Tensor) -> Tensor:
        params: dict[str, Any] = m._parameters
        return F._linear(input, params["weight"], params["bias"])


CHAIN_STEPS[Linear] = _LinearChainStep


class NonDynamicallyQuantizableLinear(Linear,
                                      torch.nn.modules.linear.NonDynamicallyQuantizableLinear):
    """``MultiheadAttention.out_proj``'s class in torch (a ``Linear`` that quantization leaves
    alone): the same layer, an instance of torch's class of that name."""


CHAIN_STEPS[NonDynamicallyQuantizableLinear] = _LinearChainStep
