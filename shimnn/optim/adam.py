"""Adam and AdamW, step for step as torch's CPU implementations (``torch.optim.adam``).

The update arithmetic is written here with plain tensor kernels, in the order torch's
``_single_tensor_adam`` (the default path: torch picks its multi-tensor path by default only
for plain tensors on CUDA-like devices) and ``_multi_tensor_adam`` (``foreach=True``) run them,
so parameters and state are bit-identical to torch's.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from .. import _native
from .optimizer import (
    ShimOptimizer,
    _add_one,
    _default_foreach,
    _numbers,
    _step_tensor,
    _to_scalar,
    _upgrade_steps,
    _view_as_real,
)

__all__ = ["Adam", "AdamW", "adam"]


class Adam(ShimOptimizer):
    r"""Adam (``torch.optim.Adam``'s contract), optionally AMSGrad or decoupled weight decay.

    For each parameter :math:`\theta` with gradient :math:`g` (parameters without ``.grad``
    are skipped), step :math:`t` (counted per parameter), :math:`\gamma` = ``lr``,
    :math:`\beta_1, \beta_2` = ``betas``, :math:`\lambda` = ``weight_decay``,
    :math:`\epsilon` = ``eps``:

    .. math::
        g \leftarrow \pm g, \quad
        \begin{cases} \theta \leftarrow \theta (1 - \gamma\lambda) & \text{decoupled} \\
                      g \leftarrow g + \lambda\theta & \text{otherwise} \end{cases} \\
        m \leftarrow \mathrm{lerp}(m, g, 1 - \beta_1), \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        \hat v \leftarrow \max(\hat v, v) \text{ (amsgrad, else } \hat v = v) \\
        \theta \leftarrow \theta - \frac{\gamma}{1 - \beta_1^t}\,
            \frac{m}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \epsilon}

    (:math:`-g` when ``maximize``). Complex parameters update their real view.
    State per parameter: ``step`` (a 0-d float32 CPU tensor, float64 under a float64
    default dtype), ``exp_avg``, ``exp_avg_sq`` and, with ``amsgrad``, ``max_exp_avg_sq``.

    Args:
        params: parameters, named parameters, or dicts defining parameter groups.
        lr: learning rate, a float or a 1-element tensor. Default: 1e-3.
        betas: running-average coefficients of the gradient and its square (floats, or both
            1-element tensors). Default: (0.9, 0.999).
        eps: added to the denominator for numerical stability. Default: 1e-8.
        weight_decay: L2 penalty (or decoupled decay, see below). Default: 0.
        amsgrad: use the AMSGrad variant (maximum of past squared averages). Default: False.
        foreach: ``True`` runs torch's multi-tensor arithmetic; ``None`` picks as torch does
            (the single-tensor path on CPU). Default: None.
        maximize: maximize the objective instead of minimizing it. Default: False.
        capturable, differentiable, fused: accepted for signature compatibility; ``True``
            raises NotImplementedError (no CUDA graphs, no differentiating through the step,
            no fused kernels).
        decoupled_weight_decay: decay the parameter directly, as AdamW. Default: False.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if isinstance(lr, Tensor):
            if foreach and not capturable:
                raise ValueError(
                    "lr as a Tensor is not supported for capturable=False and foreach=True")
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not (
            (isinstance(betas[0], float) and isinstance(betas[1], float))
            or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))
        ):
            raise ValueError("betas must be either both floats or both Tensors")
        for i in (0, 1):
            beta = betas[i]
            if isinstance(beta, Tensor):
                if not capturable and foreach:
                    raise ValueError(f"betas[{i}] as a Tensor is not supported for "
                                     "capturable=False and foreach=True")
                if beta.numel() != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
        betas = cast(tuple[float | Tensor, float | Tensor], tuple(map(_to_scalar, betas)))
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)
        if fused:
            if differentiable:
                raise RuntimeError("`fused` does not support `differentiable`")
            if foreach:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        self._unsupported(differentiable=differentiable, fused=fused, capturable=capturable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("fused", None)
        _upgrade_steps(self)

    _native_kind = 1

    def _step_group(self, group: dict[str, Any]) -> None:
        native = _native.get()
        if native is not None and not group["foreach"]:
            lr, wd, eps, (beta1, beta2) = (group["lr"], group["weight_decay"], group["eps"],
                                           group["betas"])
            if _numbers(lr, wd, eps, beta1, beta2):
                # The CPU case of the code below once the state exists, in C++ (False: not
                # that case, nothing done).
                if native.adam_step(group["params"], self.state, lr, beta1, beta2, eps, wd,
                                    group["amsgrad"], group["maximize"],
                                    group["decoupled_weight_decay"]):
                    return
        params: list[Tensor] = []
        grads: list[Tensor] = []
        exp_avgs: list[Tensor] = []
        exp_avg_sqs: list[Tensor] = []
        max_exp_avg_sqs: list[Tensor] = []
        state_steps: list[Tensor] = []
        amsgrad = group["amsgrad"]
        has_complex = False
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            has_complex |= torch.is_complex(p)
            params.append(p)
            if grad.is_sparse:
                raise RuntimeError(
                    "Adam does not support sparse gradients, please consider SparseAdam instead")
            grads.append(grad)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = _step_tensor()
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if amsgrad:
                    state["max_exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if amsgrad:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            if group["foreach"] and torch.is_tensor(group["lr"]) and not group["capturable"]:
                raise RuntimeError(
                    "lr as a Tensor is not supported for capturable=False and foreach=True")
            state_steps.append(state["step"])
        beta1, beta2 = group["betas"]
        adam(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            state_steps,
            foreach=group["foreach"],
            has_complex=has_complex,
            decoupled_weight_decay=group["decoupled_weight_decay"],
            amsgrad=amsgrad,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )


class AdamW(Adam):
    r"""AdamW (``torch.optim.AdamW``'s contract): Adam with decoupled weight decay.

    Each step first decays the parameter, :math:`\theta \leftarrow \theta (1 - \gamma\lambda)`
    (when :math:`\lambda \ne 0`), then applies Adam's update without :math:`\lambda` in the
    moments:

    .. math::
        m \leftarrow \mathrm{lerp}(m, \pm g, 1 - \beta_1), \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        \theta \leftarrow \theta - \frac{\gamma}{1 - \beta_1^t}\,
            \frac{m}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`\hat v = \max(\hat v, v)` under ``amsgrad`` (else :math:`v`). State as Adam's.

    Args:
        params: parameters, named parameters, or dicts defining parameter groups.
        lr: learning rate, a float or a 1-element tensor. Default: 1e-3.
        betas: running-average coefficients (floats, or both 1-element tensors).
            Default: (0.9, 0.999).
        eps: added to the denominator for numerical stability. Default: 1e-8.
        weight_decay: decoupled weight decay coefficient. Default: 1e-2.
        amsgrad: use the AMSGrad variant. Default: False.
        maximize: maximize the objective instead of minimizing it. Default: False.
        foreach: ``True`` runs torch's multi-tensor arithmetic; ``None`` picks as torch does.
            Default: None.
        capturable, differentiable, fused: accepted for signature compatibility; ``True``
            raises NotImplementedError.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    foreach: bool | None = None,
    has_complex: bool = False,
    decoupled_weight_decay: bool = False,
    *,
    amsgrad: bool,
    beta1: float | Tensor,
    beta2: float | Tensor,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """Apply one Adam update in place (grad mode off); torch's ``adam`` without fused or
    capturable. ``foreach=None`` chooses as torch does."""
    if foreach is None:
        foreach = _default_foreach(params, lr)
    if not all(isinstance(t, Tensor) for t in state_steps):
        raise RuntimeError(
            "API has changed, `state_steps` argument must contain a list of singleton tensors")
    func = _multi_tensor_adam if foreach else _single_tensor_adam
    func(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
         amsgrad=amsgrad, has_complex=has_complex, beta1=beta1, beta2=beta2, lr=lr,
         weight_decay=weight_decay, eps=eps, maximize=maximize,
         decoupled_weight_decay=decoupled_weight_decay)


def _single_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    amsgrad: bool,
    has_complex: bool,
    beta1: Any,
    beta2: Any,
    lr: Any,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """Tensor by tensor, the kernels of torch's ``_single_tensor_adam`` (non-capturable)."""
    lr = _to_scalar(lr)
    beta1 = _to_scalar(beta1)
    beta2 = _to_scalar(beta2)
    # A tensor beta1 is cast once per (device, dtype) and used as lerp's tensor weight.
    beta1_cache: dict[tuple[torch.device, torch.dtype], Tensor] | None = (
        {(beta1.device, beta1.dtype): beta1} if isinstance(beta1, Tensor) else None)
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg = exp_avgs[i]
        exp_avg_sq = exp_avg_sqs[i]
        step_t = state_steps[i]
        step_t += 1
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        max_exp_avg_sq = max_exp_avg_sqs[i] if amsgrad else None
        if torch.is_complex(param):
            grad = torch.view_as_real(grad)
            exp_avg = torch.view_as_real(exp_avg)
            exp_avg_sq = torch.view_as_real(exp_avg_sq)
            if max_exp_avg_sq is not None:
                max_exp_avg_sq = torch.view_as_real(max_exp_avg_sq)
            param = torch.view_as_real(param)
        if beta1_cache is not None:
            key = (param.device, param.dtype)
            if key not in beta1_cache:
                beta1_cache[key] = beta1.to(device=param.device, dtype=param.dtype,
                                            non_blocking=True)
            device_beta1 = beta1_cache[key]
        else:
            device_beta1 = beta1
        exp_avg.lerp_(grad, 1 - device_beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if max_exp_avg_sq is not None:
            torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _multi_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    amsgrad: bool,
    has_complex: bool,
    beta1: Any,
    beta2: Any,
    lr: Any,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """Per device and dtype, the kernels of torch's ``_multi_tensor_adam`` (non-capturable)."""
    if len(params) == 0:
        return
    if isinstance(lr, Tensor):
        raise RuntimeError(
            "lr as a Tensor is not supported for capturable=False and foreach=True")
    if isinstance(beta1, Tensor):
        raise ValueError(
            "beta1 as a Tensor is not supported for capturable=False and foreach=True")
    if isinstance(beta2, Tensor):
        raise ValueError(
            "beta2 as a Tensor is not supported for capturable=False and foreach=True")
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps]  # type: ignore[list-item]
    )
    for (g_params_, g_grads_, g_exp_avgs_, g_exp_avg_sqs_, g_max_, g_steps_), _ in (
            grouped.values()):
        g_params = cast(list[Tensor], g_params_)
        g_grads = cast(list[Tensor], g_grads_)
        g_exp_avgs = cast(list[Tensor], g_exp_avgs_)
        g_exp_avg_sqs = cast(list[Tensor], g_exp_avg_sqs_)
        g_steps = cast(list[Tensor], g_steps_)
        g_max = cast(list[Tensor], g_max_)
        if has_complex:
            if amsgrad:
                _view_as_real(g_params, g_grads, g_exp_avgs, g_exp_avg_sqs, g_max)
            else:
                _view_as_real(g_params, g_grads, g_exp_avgs, g_exp_avg_sqs)
        if maximize:
            g_grads = list(torch._foreach_neg(g_grads))
        _add_one(g_steps)
        if weight_decay != 0:
            if decoupled_weight_decay:
                torch._foreach_mul_(g_params, 1 - lr * weight_decay)
            elif maximize:  # the negated copy is reused
                torch._foreach_add_(g_grads, g_params, alpha=weight_decay)
            else:
                g_grads = list(torch._foreach_add(g_grads, g_params, alpha=weight_decay))
        torch._foreach_lerp_(g_exp_avgs, g_grads, 1 - beta1)
        torch._foreach_mul_(g_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(g_exp_avg_sqs, g_grads, g_grads, 1 - beta2)
        del g_grads
        bias_correction1 = [1 - beta1 ** s.item() for s in g_steps]
        bias_correction2 = [1 - beta2 ** s.item() for s in g_steps]
        step_size = [(lr / bc) * -1 for bc in bias_correction1]
        bias_correction2_sqrt = [bc**0.5 for bc in bias_correction2]
        if amsgrad:
            torch._foreach_maximum_(g_max, g_exp_avg_sqs)
            exp_avg_sq_sqrt = torch._foreach_sqrt(g_max)
        else:
            exp_avg_sq_sqrt = torch._foreach_sqrt(g_exp_avg_sqs)
        torch._foreach_div_(exp_avg_sq_sqrt, bias_correction2_sqrt)
        torch._foreach_add_(exp_avg_sq_sqrt, eps)
        torch._foreach_addcdiv_(g_params, g_exp_avgs, exp_avg_sq_sqrt, step_size)
