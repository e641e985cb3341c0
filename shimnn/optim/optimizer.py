"""The step machinery shared by shimnn's optimizers.

``torch.optim.Optimizer`` provides parameter groups, ``state``, ``state_dict`` and hooks; this
subclass runs the step itself (step hooks, closure, grad mode off, no subclass dispatch) so
each optimizer only writes its update rule in ``_step_group``. Also the helpers torch's adaptive
optimizers share (the ``step`` counter tensor, old state-dict upgrades, foreach defaults).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
from torch import Tensor
from torch.autograd import profiler as _profiler
from torch.optim.optimizer import (
    Optimizer,
    _get_foreach_kernels_supported_devices,
    _global_optimizer_post_hooks,
    _global_optimizer_pre_hooks,
)
from torch.profiler import record_function

from .. import _native
from .._graph import is_grad_enabled, no_dispatch, set_grad_enabled

__all__ = ["ShimOptimizer"]


def _to_scalar(x: Any) -> Any:
    """A multi-dimensional 1-element tensor hyper-parameter squeezed to 0-d (torch's rule)."""
    if isinstance(x, Tensor) and x.dim() != 0:
        return x.squeeze()
    return x


def _scalar_dtype() -> torch.dtype:
    """The dtype torch gives ``state['step']`` (non-fused): float64 only under that default."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _default_foreach(params: list[Tensor], lr: Any = None) -> bool:
    """torch's choice when ``foreach`` is ``None``, as torch makes it for the same model's
    ``torch.nn.Parameter``s: the multi-tensor path only when every parameter is on a device with
    foreach kernels (CUDA-like; never CPU). Adam also never takes it with a tensor lr."""
    devices = _get_foreach_kernels_supported_devices()
    foreach = all(p is None or (isinstance(p, Tensor) and p.device.type in devices)
                  for p in params)
    return foreach and not isinstance(lr, Tensor) and not torch.jit.is_scripting()


def _step_tensor() -> Tensor:
    return torch.tensor(0.0, dtype=_scalar_dtype())


def _upgrade_steps(opt: Optimizer) -> None:
    """Old state dicts stored ``step`` as a number: make it the tensor torch stores (on the
    parameter's device, float32 when fused, for capturable or fused groups)."""
    for group in opt.param_groups:
        fused = group.get("fused")
        on_device = group.get("capturable") or fused
        for p in group["params"]:
            p_state = opt.state.get(p, [])
            if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                step_val = float(p_state["step"])
                p_state["step"] = (
                    torch.tensor(step_val, dtype=torch.float32 if fused else _scalar_dtype(),
                                 device=p.device)
                    if on_device else torch.tensor(step_val, dtype=_scalar_dtype()))


def _view_as_real(params: list[Tensor], *state_and_grads: list[Tensor]) -> None:
    for i, p in enumerate(params):
        if torch.is_complex(p):
            params[i] = torch.view_as_real(params[i])
            for s in state_and_grads:
                s[i] = torch.view_as_real(s[i])


def _numbers(*values: Any) -> bool:
    """Every value a Python float or int (not a tensor): what the compiled steps take."""
    return all(type(v) is float or type(v) is int for v in values)


_SCALARS: dict[torch.dtype, tuple[float, Tensor]] = {}  # the last scalar, by dtype


def _foreach_mul_(tensors: list[Tensor], value: Any) -> None:
    """``torch._foreach_mul_(tensors, value)`` for a number ``value``.

    On CPU, for float32 and float64 tensors, the number goes in as a 0-d tensor of their dtype:
    the kernel multiplies by the same value (the scalar cast to the tensors' dtype, which is its
    compute type), without wrapping the number into a new tensor for every tensor of the list
    (about 1.5 us each).
    """
    dtype = tensors[0].dtype if tensors else None
    if (type(value) is float and (dtype is torch.float32 or dtype is torch.float64)
            and all([t.dtype is dtype and t.is_cpu for t in tensors])):
        cached = _SCALARS.get(dtype)
        if cached is None or cached[0] != value:
            cached = _SCALARS[dtype] = (value, torch.tensor(value, dtype=dtype))
        torch._foreach_mul_(tensors, cached[1])
    else:
        torch._foreach_mul_(tensors, value)


def _add_one(steps: list[Tensor]) -> None:
    """torch's multi-tensor step count: one wrapped 1.0 for CPU steps, else the number 1."""
    if steps[0].is_cpu:
        torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)


class ShimOptimizer(Optimizer):
    """The step shared by shimnn's optimizers: hooks, closure, grad mode off, no dispatch.

    Subclasses implement ``_step_group(group)``.
    """

    def _unsupported(self, **flags: Any) -> None:
        name = f"shimnn.optim.{type(self).__name__}"
        if flags.get("differentiable"):
            raise NotImplementedError(
                f"{name}: differentiable=True needs autograd (shimnn does not differentiate "
                "through the optimizer step)")
        if flags.get("fused"):
            raise NotImplementedError(f"{name}: fused=True is not supported")
        if flags.get("capturable"):
            raise NotImplementedError(
                f"{name}: capturable=True (CUDA graph capture) is not supported")

    _native_kind: int | None = None
    """The compiled single-group step of this class (``optimizer_step`` in
    ``shimnn/csrc/native.cpp``: 0 SGD, 1 Adam/AdamW), or None."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_step_group" in cls.__dict__ and "_native_kind" not in cls.__dict__:
            cls._native_kind = None  # a subclass with its own update: its _step_group runs

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (run with grad enabled).
        """
        kind = self._native_kind
        if (kind is not None and closure is None and not _profiler._is_profiler_enabled
                and not (_global_optimizer_pre_hooks or self._optimizer_step_pre_hooks
                         or self._optimizer_step_post_hooks or _global_optimizer_post_hooks)):
            native = _native.get()
            # One group, no hook, closure or profiler: the whole step in one C++ call (False:
            # not that case, nothing done; the step below runs).
            if native is not None and native.optimizer_step(kind, self.param_groups, self.state):
                return None
        if _profiler._is_profiler_enabled:
            # torch's profile_hook_step: the whole step (hooks included) in this scope
            with record_function(f"Optimizer.step#{type(self).__name__}.step"):
                return self._step(closure)
        return self._step(closure)

    def _step(self, closure: Callable[[], Any] | None) -> Any:
        args: tuple[Any, ...] = (closure,)
        kwargs: dict[str, Any] = {}
        if _global_optimizer_pre_hooks or self._optimizer_step_pre_hooks:
            for pre_hook in chain(_global_optimizer_pre_hooks.values(),
                                  self._optimizer_step_pre_hooks.values()):
                result = pre_hook(self, args, kwargs)
                if result is not None:
                    if isinstance(result, tuple) and len(result) == 2:
                        args, kwargs = result
                    else:
                        raise RuntimeError(
                            f"{type(self).step} must return None or a tuple of "
                            f"(new_args, new_kwargs), but got {result}.")
            closure = kwargs.get("closure", args[0] if args else None)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        prev_grad_mode = is_grad_enabled()
        set_grad_enabled(False)
        try:
            with no_dispatch():
                for group in self.param_groups:
                    # A loaded or edited group may carry these flags: refuse, never ignore.
                    if group.get("differentiable") or group.get("fused") or group.get(
                            "capturable"):
                        self._unsupported(**group)
                    self._step_group(group)
        finally:
            set_grad_enabled(prev_grad_mode)
        self._optimizer_step_code()
        if self._optimizer_step_post_hooks or _global_optimizer_post_hooks:
            for post_hook in chain(self._optimizer_step_post_hooks.values(),
                                   _global_optimizer_post_hooks.values()):
                post_hook(self, args, kwargs)
        return loss


    # torch.optim.Optimizer wraps `step` in a profiler scope and the step hooks unless it is
    # marked hooked; this step runs the hooks itself, and opens the scope only while a profiler
    # runs (it costs a few microseconds per step otherwise).
    step.hooked = True  # type: ignore[attr-defined]

    def _step_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients: ``None`` (default) or zeros, as ``torch.optim`` does (in
        torch's profiler scope ``Optimizer.zero_grad#<class>.zero_grad`` while a profiler
        runs)."""
        if _profiler._is_profiler_enabled:
            with record_function(f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"):
                return self._zero_grad(set_to_none)
        return self._zero_grad(set_to_none)

    def _zero_grad(self, set_to_none: bool) -> None:
        native = _native.get()
        if set_to_none and native is not None and type(self.param_groups) is list:
            native.clear_grads(self.param_groups)  # the loop below, in C++
            return
        with no_dispatch():
            for group in self.param_groups:
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    if set_to_none:
                        p.grad = None
                    else:
                        grad.requires_grad_(False)
                        grad.zero_()
