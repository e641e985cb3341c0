"""RMSprop, step for step as torch's CPU implementation (``torch.optim.rmsprop``).

The arithmetic mirrors torch's ``_single_tensor_rmsprop`` (default) and
``_multi_tensor_rmsprop`` (``foreach=True``) kernel for kernel: bit-identical parameters.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from .optimizer import (
    ShimOptimizer,
    _add_one,
    _default_foreach,
    _scalar_dtype,
    _to_scalar,
    _upgrade_steps,
    _view_as_real,
)

__all__ = ["RMSprop", "rmsprop"]


class RMSprop(ShimOptimizer):
    r"""RMSprop (``torch.optim.RMSprop``'s contract), optionally centered and with momentum.

    For each parameter :math:`\theta` with gradient :math:`g` (parameters without ``.grad``
    are skipped), :math:`\gamma` = ``lr``, :math:`\alpha` = ``alpha``, :math:`\lambda` =
    ``weight_decay``, :math:`\mu` = ``momentum``, :math:`\epsilon` = ``eps``:

    .. math::
        g \leftarrow \pm g + \lambda\theta, \quad
        v \leftarrow \alpha v + (1 - \alpha) g^2, \quad
        d \leftarrow \begin{cases}
            \sqrt{v - \bar g^2} + \epsilon,\ \bar g \leftarrow \mathrm{lerp}(\bar g, g, 1-\alpha)
                & \text{centered} \\
            \sqrt{v} + \epsilon & \text{otherwise} \end{cases} \\
        \theta \leftarrow \begin{cases}
            \theta - \gamma b,\ b \leftarrow \mu b + g / d & \mu > 0 \\
            \theta - \gamma\, g / d & \text{otherwise} \end{cases}

    (:math:`-g` when ``maximize``). Complex parameters update their real view. State per
    parameter: ``step`` (0-d float32 tensor), ``square_avg``, ``momentum_buffer`` (when
    ``momentum > 0`` at its first step), ``grad_avg`` (when ``centered``).

    Args:
        params: parameters, named parameters, or dicts defining parameter groups.
        lr: learning rate, a float or a 1-element tensor. Default: 1e-2.
        alpha: smoothing constant. Default: 0.99.
        eps: added to the denominator for numerical stability. Default: 1e-8.
        weight_decay: L2 penalty. Default: 0.
        momentum: momentum factor. Default: 0.
        centered: normalize by an estimate of the gradient's variance. Default: False.
        capturable: accepted for signature compatibility; ``True`` raises NotImplementedError.
        foreach: ``True`` runs torch's multi-tensor arithmetic; ``None`` picks as torch does
            (the single-tensor path on CPU). Default: None.
        maximize: maximize the objective instead of minimizing it. Default: False.
        differentiable: accepted for signature compatibility; ``True`` raises
            NotImplementedError (shimnn does not differentiate through the step).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)
        self._unsupported(differentiable=differentiable, capturable=capturable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("capturable", False)
        _upgrade_steps(self)

    def _step_group(self, group: dict[str, Any]) -> None:
        params: list[Tensor] = []
        grads: list[Tensor] = []
        square_avgs: list[Tensor] = []
        grad_avgs: list[Tensor] = []
        momentum_buffer_list: list[Tensor] = []
        state_steps: list[Tensor] = []
        momentum = group["momentum"]
        centered = group["centered"]
        has_complex = False
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            has_complex |= torch.is_complex(p)
            params.append(p)
            if grad.is_sparse:
                raise RuntimeError("RMSprop does not support sparse gradients")
            grads.append(grad)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.zeros((), dtype=_scalar_dtype())
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if momentum > 0:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)
                if centered:
                    state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            square_avgs.append(state["square_avg"])
            state_steps.append(state["step"])
            if momentum > 0:
                momentum_buffer_list.append(state["momentum_buffer"])
            if centered:
                grad_avgs.append(state["grad_avg"])
        rmsprop(
            params,
            grads,
            square_avgs,
            grad_avgs,
            momentum_buffer_list,
            state_steps,
            foreach=group["foreach"],
            maximize=group["maximize"],
            has_complex=has_complex,
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=momentum,
            centered=centered,
        )


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffer_list: list[Tensor],
    state_steps: list[Tensor],
    foreach: bool | None = None,
    maximize: bool = False,
    has_complex: bool = False,
    *,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
) -> None:
    """Apply one RMSprop update in place (grad mode off); torch's ``rmsprop`` without
    capturable. ``foreach=None`` chooses as torch does."""
    if not all(isinstance(t, Tensor) for t in state_steps):
        raise RuntimeError(
            "API has changed, `state_steps` argument must contain a list of singleton tensors")
    if foreach is None:
        foreach = _default_foreach(params)
    func = _multi_tensor_rmsprop if foreach else _single_tensor_rmsprop
    func(params, grads, square_avgs, grad_avgs, momentum_buffer_list, state_steps, lr=lr,
         alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
         centered=centered, maximize=maximize, has_complex=has_complex)


def _single_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffer_list: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Any,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    has_complex: bool,
) -> None:
    """Tensor by tensor, the kernels of torch's ``_single_tensor_rmsprop``."""
    lr = _to_scalar(lr)
    for i, param in enumerate(params):
        step = state_steps[i]
        grad = grads[i]
        grad = grad if not maximize else -grad
        square_avg = square_avgs[i]
        step += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        is_complex_param = torch.is_complex(param)
        if is_complex_param:
            param = torch.view_as_real(param)
            grad = torch.view_as_real(grad)
            square_avg = torch.view_as_real(square_avg)
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = grad_avgs[i]
            if is_complex_param:
                grad_avg = torch.view_as_real(grad_avg)
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            buf = momentum_buffer_list[i]
            if is_complex_param:
                buf = torch.view_as_real(buf)
            buf.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buf, alpha=-lr)
        else:
            param.addcdiv_(grad, avg, value=-lr)


def _multi_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffer_list: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Any,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    has_complex: bool,
) -> None:
    """Per device and dtype, the kernels of torch's ``_multi_tensor_rmsprop``
    (non-capturable)."""
    if len(params) == 0:
        return
    lr = _to_scalar(lr)
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, square_avgs, grad_avgs, momentum_buffer_list, state_steps]  # type: ignore[list-item]
    )
    for (g_params_, g_grads_, g_square_avgs_, g_grad_avgs_, g_bufs_, g_steps_), _ in (
            grouped.values()):
        g_params = cast(list[Tensor], g_params_)
        g_grads = cast(list[Tensor], g_grads_)
        g_square_avgs = cast(list[Tensor], g_square_avgs_)
        g_steps = cast(list[Tensor], g_steps_)
        if has_complex:
            state_and_grads = [g_grads, g_square_avgs]
            if momentum > 0:
                state_and_grads.append(cast(list[Tensor], g_bufs_))
            if centered:
                state_and_grads.append(cast(list[Tensor], g_grad_avgs_))
            _view_as_real(g_params, *state_and_grads)
        if maximize:
            g_grads = list(torch._foreach_neg(g_grads))
        _add_one(g_steps)
        if weight_decay != 0:
            if maximize:  # the negated copy is reused
                torch._foreach_add_(g_grads, g_params, alpha=weight_decay)
            else:
                g_grads = list(torch._foreach_add(g_grads, g_params, alpha=weight_decay))
        torch._foreach_mul_(g_square_avgs, alpha)
        torch._foreach_addcmul_(g_square_avgs, g_grads, g_grads, value=1 - alpha)
        if centered:
            g_grad_avgs = cast(list[Tensor], g_grad_avgs_)
            torch._foreach_lerp_(g_grad_avgs, g_grads, 1 - alpha)
            avg = torch._foreach_addcmul(g_square_avgs, g_grad_avgs, g_grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
            torch._foreach_add_(avg, eps)
        else:
            avg = torch._foreach_sqrt(g_square_avgs)
            torch._foreach_add_(avg, eps)
        if momentum > 0:
            g_bufs = cast(list[Tensor], g_bufs_)
            torch._foreach_mul_(g_bufs, momentum)
            torch._foreach_addcdiv_(g_bufs, g_grads, avg)
            torch._foreach_add_(g_params, g_bufs, alpha=-lr)
        else:
            torch._foreach_addcdiv_(g_params, g_grads, avg, value=-lr)
