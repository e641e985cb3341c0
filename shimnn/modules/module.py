"""``Module`` and ``Parameter``: torch's own base classes, with shimnn differentiating.

``Module`` subclasses ``torch.nn.Module`` so that ``state_dict``, ``.to()``, ``train()``,
``repr``, forward hooks, ``torch.save`` and weight exchange with torch models behave exactly as
torch users know. ``Parameter`` subclasses ``torch.nn.Parameter``; operations on it reach
shimnn's hand-written ops through ``__torch_function__`` instead of torch's autograd.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from .._graph import _torch_function, no_dispatch, tensor_backward

__all__ = ["Module", "Parameter"]


_TorchParameter = torch.nn.parameter.Parameter  # torch's class, even while shimnn serves torch.nn


def _rebuild_parameter(data: Tensor, requires_grad: bool, hooks: Any = None) -> Parameter:
    return Parameter(data, requires_grad)


class Parameter(_TorchParameter):
    r"""A tensor that is a module parameter (``torch.nn.Parameter``), differentiated by shimnn.

    Args:
        data: the parameter's tensor. Default: an empty tensor.
        requires_grad: whether ``backward()`` accumulates a gradient into ``.grad``.
            Default: ``True``.
    """

    __torch_function__: Any = classmethod(_torch_function)
    # Identity hashing, as Tensor.__hash__, without a Python-level call (optimizer state).
    __hash__ = object.__hash__

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True) -> Parameter:
        if data is None:
            data = torch.empty(0)
        with no_dispatch():
            if type(data) is not Tensor:
                data = data.detach()  # a plain alias of a subclass tensor
            return Tensor._make_subclass(cls, data, requires_grad)  # type: ignore[return-value]

    def __reduce_ex__(self, proto: Any) -> Any:
        with no_dispatch():
            return (_rebuild_parameter, (self.detach(), self.requires_grad, OrderedDict()))

    backward = tensor_backward  # a parameter used as a loss: shimnn's engine, never autograd


class Module(torch.nn.Module):
    """Base class of shimnn modules, and of yours: a ``torch.nn.Module`` in every way.

    A ``torch.nn.Parameter`` assigned to a shimnn module becomes a :class:`Parameter` in place
    (same object), so the module's own ``forward`` is differentiated by shimnn.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if type(value) is _TorchParameter:
            value.__class__ = Parameter
        super().__setattr__(name, value)

    def _backward_hooks_unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__}: module backward hooks run inside torch's autograd engine, "
            "which shimnn replaces; register a hook on the output tensor instead "
            "(output.register_hook(fn))"
        )

    register_full_backward_hook = _backward_hooks_unsupported  # type: ignore[assignment]
    register_full_backward_pre_hook = _backward_hooks_unsupported  # type: ignore[assignment]
    register_backward_hook = _backward_hooks_unsupported  # type: ignore[assignment]
