"""Adagrad, step for step as torch's CPU implementation (``torch.optim.adagrad``).

The arithmetic mirrors torch's ``_single_tensor_adagrad`` (default, including sparse
gradients) and ``_multi_tensor_adagrad`` (``foreach=True``) kernel for kernel: bit-identical
parameters. (The two paths agree on real CPU tensors; for complex ones the multi-tensor path
applies weight decay to the real view, which can round differently, so each is kept.)
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

__all__ = ["Adagrad", "adagrad"]


class Adagrad(ShimOptimizer):
    r"""Adagrad (``torch.optim.Adagrad``'s contract).

    For each parameter :math:`\theta` with gradient :math:`g` (parameters without ``.grad``
    are skipped), step :math:`t` (per parameter), :math:`\gamma` = ``lr``, :math:`\eta` =
    ``lr_decay``, :math:`\lambda` = ``weight_decay``, :math:`\epsilon` = ``eps``, and the sum
    :math:`s` starting at ``initial_accumulator_value``:

    .. math::
        g \leftarrow \pm g + \lambda\theta, \quad
        \tilde\gamma = \frac{\gamma}{1 + (t - 1)\eta}, \quad
        s \leftarrow s + g^2, \quad
        \theta \leftarrow \theta - \tilde\gamma \frac{g}{\sqrt{s} + \epsilon}

    (:math:`-g` when ``maximize``). Sparse gradients update only their indices (no weight
    decay with them); complex parameters update their real view. State per parameter, made
    at construction for the constructor's parameters: ``step`` (0-d float32 tensor) and
    ``sum``.

    Args:
        params: parameters, named parameters, or dicts defining parameter groups.
        lr: learning rate, a float or a 1-element tensor. Default: 1e-2.
        lr_decay: learning rate decay. Default: 0.
        weight_decay: L2 penalty. Default: 0.
        initial_accumulator_value: initial value of the sum of squared gradients. Default: 0.
        eps: added to the denominator for numerical stability. Default: 1e-10.
        foreach: ``True`` runs torch's multi-tensor arithmetic; ``None`` picks as torch does
            (the single-tensor path on CPU). Default: None.
        maximize: maximize the objective instead of minimizing it. Default: False.
        differentiable, fused: accepted for signature compatibility; ``True`` raises
            NotImplementedError.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        if fused:
            if differentiable:
                raise RuntimeError("`fused` does not support `differentiable`")
            if foreach:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        self._unsupported(differentiable=differentiable, fused=fused)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, initial_accumulator_value)

    def _init_state(self, p: Tensor, initial_accumulator_value: float) -> None:
        state = self.state[p]
        state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
        init_value = (complex(initial_accumulator_value, initial_accumulator_value)
                      if torch.is_complex(p) else initial_accumulator_value)
        state["sum"] = torch.full_like(p, init_value, memory_format=torch.preserve_format)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fused = None
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            fused = group.setdefault("fused", None)
        _upgrade_steps(self)
        state_values = list(self.state.values())
        step_is_tensor = len(state_values) != 0 and torch.is_tensor(state_values[0]["step"])
        if not step_is_tensor:
            for s in state_values:
                s["step"] = torch.tensor(float(s["step"]),
                                         dtype=torch.float32 if fused else _scalar_dtype())

    def share_memory(self) -> None:
        """Call ``share_memory_()`` on the state's ``sum`` tensors."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def _step_group(self, group: dict[str, Any]) -> None:
        params: list[Tensor] = []
        grads: list[Tensor] = []
        state_sums: list[Tensor] = []
        state_steps: list[Tensor] = []
        has_sparse_grad = has_complex = False
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            has_sparse_grad |= grad.is_sparse
            has_complex |= torch.is_complex(p)
            params.append(p)
            grads.append(grad)
            state = self.state[p]
            if len(state) == 0:  # a parameter added later (torch reads the defaults' value)
                self._init_state(p, self.defaults["initial_accumulator_value"])
            state_sums.append(state["sum"])
            state_steps.append(state["step"])
        adagrad(
            params,
            grads,
            state_sums,
            state_steps,
            has_sparse_grad=has_sparse_grad,
            foreach=group["foreach"],
            has_complex=has_complex,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            lr_decay=group["lr_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )


def adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    has_sparse_grad: bool = False,
    foreach: bool | None = None,
    has_complex: bool = False,
    *,
    lr: float | Tensor,
    weight_decay: float,
    lr_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """Apply one Adagrad update in place (grad mode off); torch's ``adagrad`` without fused.
    ``foreach=None`` chooses as torch does."""
    if not all(isinstance(t, Tensor) for t in state_steps):
        raise RuntimeError(
            "API has changed, `state_steps` argument must contain a list of singleton tensors")
    if foreach is None:
        foreach = _default_foreach(params)
    func = _multi_tensor_adagrad if foreach else _single_tensor_adagrad
    func(params, grads, state_sums, state_steps, lr=lr, weight_decay=weight_decay,
         lr_decay=lr_decay, eps=eps, has_sparse_grad=has_sparse_grad, maximize=maximize,
         has_complex=has_complex)


def _make_sparse(grad: Tensor, grad_indices: Tensor, values: Tensor) -> Tensor:
    return torch.sparse_coo_tensor(grad_indices, values, grad.size())


def _single_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Any,
    weight_decay: float,
    lr_decay: float,
    eps: float,
    has_sparse_grad: bool,
    maximize: bool,
    has_complex: bool,
) -> None:
    """Tensor by tensor, the kernels of torch's ``_single_tensor_adagrad``."""
    lr = _to_scalar(lr)
    for param, grad, state_sum, step_t in zip(params, grads, state_sums, state_steps,
                                              strict=True):
        step_t += 1
        step = step_t.item()
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            if grad.is_sparse:
                raise RuntimeError(
                    "weight_decay option is not compatible with sparse gradients")
            grad = grad.add(param, alpha=weight_decay)
        clr = lr / (1 + (step - 1) * lr_decay)
        if grad.is_sparse:
            grad = grad.coalesce()  # the update is non-linear so indices must be unique
            grad_indices = grad._indices()
            grad_values = grad._values()
            state_sum.add_(_make_sparse(grad, grad_indices, grad_values.pow(2)))
            std = state_sum.sparse_mask(grad)
            std_values = std._values().sqrt_().add_(eps)
            param.add_(_make_sparse(grad, grad_indices, grad_values / std_values), alpha=-clr)
        else:
            if torch.is_complex(param):
                grad = torch.view_as_real(grad)
                state_sum = torch.view_as_real(state_sum)
                param = torch.view_as_real(param)
            state_sum.addcmul_(grad, grad, value=1)
            std = state_sum.sqrt().add_(eps)
            param.addcdiv_(grad, std, value=-clr)


def _multi_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Any,
    weight_decay: float,
    lr_decay: float,
    eps: float,
    has_sparse_grad: bool,
    maximize: bool,
    has_complex: bool,
) -> None:
    """Per device and dtype, the kernels of torch's ``_multi_tensor_adagrad``; a group with a
    sparse gradient takes the single-tensor path, as in torch."""
    if len(params) == 0:
        return
    lr = _to_scalar(lr)
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, state_sums, state_steps]  # type: ignore[list-item]
    )
    for (g_params_, g_grads_, g_sums_, g_steps_), _ in grouped.values():
        g_params = cast(list[Tensor], g_params_)
        g_grads = cast(list[Tensor], g_grads_)
        g_sums = cast(list[Tensor], g_sums_)
        g_steps = cast(list[Tensor], g_steps_)
        if has_sparse_grad and any(g.is_sparse for g in g_grads):
            _single_tensor_adagrad(
                g_params, g_grads, g_sums, g_steps, lr=lr, weight_decay=weight_decay,
                lr_decay=lr_decay, eps=eps, has_sparse_grad=True, maximize=maximize,
                has_complex=has_complex)
            continue
        if has_complex:
            _view_as_real(g_params, g_grads, g_sums)
        if maximize:
            g_grads = list(torch._foreach_neg(g_grads))
        _add_one(g_steps)
        if weight_decay != 0:
            if maximize:  # the negated copy is reused
                torch._foreach_add_(g_grads, g_params, alpha=weight_decay)
            else:
                g_grads = list(torch._foreach_add(g_grads, g_params, alpha=weight_decay))
        minus_clr = [-lr / (1 + (s.item() - 1) * lr_decay) for s in g_steps]
        torch._foreach_addcmul_(g_sums, g_grads, g_grads, value=1)
        std = torch._foreach_sqrt(g_sums)
        torch._foreach_add_(std, eps)
        if weight_decay != 0 or maximize:  # g_grads is already a copy: scale it in place
            torch._foreach_mul_(g_grads, minus_clr)
            numerator = g_grads
        else:
            numerator = list(torch._foreach_mul(g_grads, minus_clr))
        torch._foreach_addcdiv_(g_params, numerator, std)
