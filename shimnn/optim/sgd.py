"""Stochastic gradient descent, step for step as torch's default CPU implementation."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from .. import _native
from .optimizer import ShimOptimizer, _default_foreach, _foreach_mul_, _numbers

__all__ = ["SGD", "sgd"]


class SGD(ShimOptimizer):
    r"""Stochastic gradient descent, optionally with momentum (``torch.optim.SGD``'s contract).

    For each parameter :math:`p` with gradient :math:`g` (parameters without ``.grad`` are
    skipped), with :math:`\mu` = ``momentum``, :math:`\tau` = ``dampening``,
    :math:`\lambda` = ``weight_decay``, :math:`\gamma` = ``lr``:

    .. math::
        g \leftarrow \pm g + \lambda p, \quad
        b \leftarrow \begin{cases} g & \text{first step} \\ \mu b + (1 - \tau) g \end{cases},
        \quad g \leftarrow \begin{cases} g + \mu b & \text{nesterov} \\ b \end{cases},
        \quad p \leftarrow p - \gamma g

    (:math:`-g` when ``maximize``; no :math:`b` when :math:`\mu = 0`).

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate. Default: 1e-3.
        momentum: momentum factor. Default: 0.
        dampening: dampening for momentum. Default: 0.
        weight_decay: L2 penalty. Default: 0.
        nesterov: Nesterov momentum (needs momentum > 0 and no dampening). Default: False.
        maximize: maximize the objective instead of minimizing it. Default: False.
        foreach: ``True`` reproduces torch's multi-tensor path, which also adds the momentum
            buffer into ``.grad`` in place under Nesterov; ``None``/``False`` torch's
            default single-tensor path. Both give the same parameters. Default: None.
        differentiable, fused: accepted for signature compatibility; ``True`` is not
            supported (shimnn does not differentiate through the step).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        self._unsupported(differentiable=differentiable, fused=fused)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    _native_kind = 0

    def _step_group(self, group: dict[str, Any]) -> None:
        native = _native.get()
        if native is not None and not group["foreach"]:
            lr, wd = group["lr"], group["weight_decay"]
            if _numbers(lr, wd):
                # The CPU case of the code below, in C++ (False: not that case, nothing done).
                if native.sgd_step(group["params"], self.state, lr, group["momentum"],
                                   group["dampening"], wd, group["nesterov"], group["maximize"]):
                    return
        params: list[Tensor] = []
        grads: list[Tensor] = []
        for p in group["params"]:
            grad = p.grad
            if grad is not None:
                params.append(p)
                grads.append(grad)
        if not params:
            return
        momentum = group["momentum"]
        bufs: list[Tensor | None] = []
        states: list[dict[str, Any]] = []
        if momentum != 0:
            state = self.state
            states = [state[p] for p in params]
            bufs = [s.get("momentum_buffer") for s in states]
        sgd(
            params,
            grads,
            bufs,
            weight_decay=group["weight_decay"],
            momentum=momentum,
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            foreach=group["foreach"],
        )
        for s, buf in zip(states, bufs):
            s["momentum_buffer"] = buf


def sgd(
    params: list[Tensor],
    grads: list[Tensor] | tuple[Tensor, ...],
    momentum_buffer_list: list[Tensor | None],
    *,
    weight_decay: float | Tensor,
    momentum: float,
    lr: float | Tensor,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    foreach: bool | None = None,
) -> None:
    """Apply one SGD update in place; new momentum buffers are stored in the list.

    ``foreach=None`` makes torch's choice (its single-tensor path on CPU). Each tensor sees
    exactly the kernels of torch's single-tensor SGD in the same order; on CPU the
    ``torch._foreach_*`` calls run those same kernels tensor by tensor, in one dispatch, so
    they serve both paths there. Elsewhere the single-tensor path loops, as torch's does.
    """
    alpha = -float(lr)
    cpu_only = all([p.is_cpu for p in params])
    if foreach is None:  # torch never picks its multi-tensor path on CPU
        foreach = not cpu_only and _default_foreach(params)
    if any([g.is_sparse for g in grads]) or not (foreach or cpu_only):
        for i, (p, g) in enumerate(zip(params, grads)):
            g = -g if maximize else g
            if weight_decay != 0:
                g = g.add(p, alpha=float(weight_decay))
            if momentum != 0:
                buf = momentum_buffer_list[i]
                if buf is None:
                    buf = momentum_buffer_list[i] = g.detach().clone()
                else:
                    buf.mul_(momentum).add_(g, alpha=1 - dampening)
                g = g.add(buf, alpha=momentum) if nesterov else buf
            p.add_(g, alpha=alpha)
        return
    grads_owned = False
    if maximize:
        grads = torch._foreach_neg(grads)
        grads_owned = True
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=float(weight_decay))
        grads_owned = True
    if momentum != 0:
        if not any([b is None for b in momentum_buffer_list]):
            bufs: list[Tensor] = momentum_buffer_list  # type: ignore[assignment]
            _foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1 - dampening)
        else:
            for i, b in enumerate(momentum_buffer_list):
                if b is None:
                    momentum_buffer_list[i] = grads[i].detach().clone()
                else:
                    b.mul_(momentum).add_(grads[i], alpha=1 - dampening)
            bufs = momentum_buffer_list  # type: ignore[assignment]
        if nesterov:
            if foreach and not grads_owned:
                torch._foreach_add_(grads, bufs, alpha=momentum)  # torch's foreach path does this
            else:
                grads = torch._foreach_add(grads, bufs, alpha=momentum)
        else:
            grads = bufs
    torch._foreach_add_(params, grads, alpha=alpha)
