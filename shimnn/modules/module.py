"""``Module`` and ``Parameter``: torch's own base classes, with shimnn differentiating.

``Module`` subclasses ``torch.nn.Module`` so that ``state_dict``, ``.to()``, ``train()``,
``repr``, forward hooks, ``torch.save`` and weight exchange with torch models behave exactly as
torch users know. ``Parameter`` subclasses ``torch.nn.Parameter``; operations on it reach
shimnn's hand-written ops through ``__torch_function__`` instead of torch's autograd.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor
from torch.nn.modules import module as _torch_module

from .. import _native
from .._graph import _torch_function, no_dispatch, tensor_backward
from .._traceback import without_shimnn_frames

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


# torch.load(..., weights_only=True) (torch's default) may rebuild shimnn parameters.
torch.serialization.add_safe_globals([_rebuild_parameter, Parameter])


class Module(torch.nn.Module):
    """Base class of shimnn modules, and of yours: a ``torch.nn.Module`` in every way.

    A ``torch.nn.Parameter`` assigned to a shimnn module becomes a :class:`Parameter` in place
    (same object), so the module's own ``forward`` is differentiated by shimnn.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # torch.nn.Module's own __init__, skipping that of the torch layer a shimnn layer also
        # subclasses (shimnn.Linear is a torch.nn.Linear, so isinstance checks keyed on torch's
        # classes hold; its own __init__ sets up what torch's would).
        torch.nn.Module.__init__(self, *args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        if type(value) is _TorchParameter:
            value.__class__ = Parameter
        super().__setattr__(name, value)

    def _call_impl(self, *args: Any, **kwargs: Any) -> Any:
        # torch's fast path (no hooks) with the same frame depth, so warnings' stack levels
        # point where torch's do; an error is re-raised (same exception, same type) with a
        # message that names this module and its inputs.
        m = _torch_module
        if (self._forward_hooks or self._forward_pre_hooks or self._backward_hooks
                or self._backward_pre_hooks or m._global_forward_hooks
                or m._global_forward_pre_hooks or m._global_backward_hooks
                or m._global_backward_pre_hooks or _get_tracing_state()):
            return super()._call_impl(*args, **kwargs)
        try:
            return self.forward(*args, **kwargs)
        except _CONTEXT_ERRORS as error:
            _add_context(error, self, args)
            raise without_shimnn_frames(error)  # noqa: B904  shimnn frames hidden: SHIMNN_FULL_TRACEBACK=1

    __call__ = torch.nn.Module.__call__  # (torch's __call__ dispatches to _call_impl)

    def _backward_hooks_unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__}: module backward hooks run inside torch's autograd engine, "
            "which shimnn replaces; register a hook on the output tensor instead "
            "(output.register_hook(fn))"
        )

    register_full_backward_hook = _backward_hooks_unsupported  # type: ignore[assignment]
    register_full_backward_pre_hook = _backward_hooks_unsupported  # type: ignore[assignment]
    register_backward_hook = _backward_hooks_unsupported  # type: ignore[assignment]


def compiled_call(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``__call__`` of the classes with a compiled call (``Sequential``, ``MSELoss``): what
    torch's ``Module.__call__`` without hooks and their ``forward`` do, in one C++ call
    (``module_call`` in ``shimnn/csrc/native.cpp``), or, where that returns NotImplemented (a
    hook, torch.compile, tracing, an input it does not take), torch's ``Module.__call__``."""
    if not kwargs:
        native = _native.get()
        if native is not None:
            result = native.module_call(self, args, CALL_CONTEXT)
            if result is not NotImplemented:
                return result
    return _torch_call(self, *args, **kwargs)


_torch_call = torch.nn.Module.__call__

CALL_CONTEXT: tuple[Any, ...] = ()
"""What the compiled module calls take from Python (the classes, torch's module globals with
the global hooks, and the engine functions they defer to); set by :mod:`shimnn.modules` once
its classes exist."""


def torch_init(torch_class: type, self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
    """Run ``torch_class.__init__`` on ``self``: the installed torch's own argument checks,
    attributes and warnings (their texts change between releases). Warnings are re-emitted so
    that they point at the line that built the shimnn module, as torch's point at the caller."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch_class.__init__(self, *args, **kwargs)  # type: ignore[misc]
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=3)


_CONTEXT_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)
_get_tracing_state = torch._C._get_tracing_state


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        with no_dispatch():
            return f"shape {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    return type(value).__name__


def _add_context(error: BaseException, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
    """Prefix the message of ``error`` with the module and its inputs (innermost module only)."""
    if getattr(error, "_shimnn_context", False) or not error.args or not isinstance(
            error.args[0], str):
        return
    names = ("input", "target") if len(args) == 2 else tuple(f"input {i}" for i in range(
        len(args))) if len(args) > 2 else ("input",)
    inputs = ", ".join(f"{name} {_describe(a)}" for name, a in zip(names, args))
    extra = module.extra_repr()
    label = f"{type(module).__name__}({extra})" if "\n" not in extra else type(module).__name__
    error.args = (f"{label} got {inputs}: {error.args[0]}", *error.args[1:])
    error._shimnn_context = True  # type: ignore[attr-defined]
