"""A second, independent oracle: central finite differences in float64 (shimnn.testing.gradcheck).

shimnn's gradients are compared with (f(x + h) - f(x - h)) / 2h, computed from forward values
only. Tolerance: with h = 1e-6 in float64 the truncation error is O(h^2) ~ 1e-12 times the third
derivative and the rounding error ~ 1e-16 / h ~ 1e-10 times |f|, so 1e-6 relative (plus 1e-8
absolute) is far above both and far below any real mistake. Inputs keep ReLU away from its kink
(|pre-activation| > 1e-3 is checked), where a difference quotient is meaningless.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import shimnn
import shimnn.functional as F
from conftest import autograd_forbidden
from shimnn.testing import gradcheck

H = 1e-6
TOLERANCE = {"eps": H, "rtol": 1e-6, "atol": 1e-8}


def numerical_grad(f: Callable[[], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """d f() / d t by central differences, for a scalar ``f`` of tensors it closes over (the
    other test files' helper; ``shimnn.testing.gradcheck`` is the full check)."""
    grad = torch.zeros_like(t)
    flat, gflat = t.data.view(-1), grad.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            orig = flat[i].item()
            flat[i] = orig + H
            up = f().item()
            flat[i] = orig - H
            down = f().item()
            flat[i] = orig
            gflat[i] = (up - down) / (2 * H)
    return grad


def check(f: Callable[[], torch.Tensor], tensors: list[torch.Tensor]) -> None:
    """shimnn's backward of a scalar ``f`` (closing over ``tensors``) against central
    differences, for the other test files."""
    for t in tensors:
        t.grad = None
    with autograd_forbidden():
        f().backward()
    for t in tensors:
        expected = numerical_grad(f, t)
        torch.testing.assert_close(t.grad, expected, rtol=1e-6, atol=1e-8)


class Closure(shimnn.Module):
    """``f(*inputs)`` as a module holding ``modules`` and ``params``, so gradcheck checks their
    parameters too."""

    def __init__(self, f: Callable[..., torch.Tensor], *modules: torch.nn.Module,
                 **params: torch.Tensor) -> None:
        super().__init__()
        self.f = f
        self.parts = shimnn.Sequential(*modules) if modules else None
        for name, p in params.items():
            setattr(self, name, shimnn.Parameter(p))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.f(self, *inputs)


def _weights(v: torch.Tensor) -> torch.Tensor:
    return torch.linspace(-1.0, 1.3, v.numel(), dtype=torch.float64).view(v.shape)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_network_gradients_match_finite_differences(reduction: str) -> None:
    torch.manual_seed(0)
    model = shimnn.Sequential(shimnn.Linear(3, 5), shimnn.Tanh(), shimnn.Linear(5, 4),
                              shimnn.ReLU(), shimnn.Linear(4, 2)).double()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 2, dtype=torch.float64)
    with torch.no_grad():
        pre = model[2](model[1](model[0](x)))
    assert pre.abs().min() > 1e-3
    loss = shimnn.MSELoss(reduction=reduction)
    with autograd_forbidden():
        assert gradcheck(Closure(lambda m, t: loss(m.parts[0](t), y), model), x, **TOLERANCE)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4)])
def test_linear_nd_and_1d_inputs(shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    lin = shimnn.Linear(4, 3).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = _weights(torch.empty(*shape[:-1], 3))
    assert gradcheck(Closure(lambda m, t: (F.tanh(m.parts[0](t)) * w).sum(), lin), x,
                     **TOLERANCE)
    # The output itself, not a scalar of it: one backward per output element.
    assert gradcheck(Closure(lambda m, t: F.tanh(m.parts[0](t)), lin), x, **TOLERANCE)


def test_loss_arithmetic_and_broadcasting() -> None:
    torch.manual_seed(2)
    lin = shimnn.Linear(4, 4).double()

    def f(m: Closure) -> torch.Tensor:
        a, b = m.a, m.b
        h = m.parts[0](b) * a - b / (a * a + 1)
        return F.mse_loss(h, torch.zeros(3, 4, dtype=torch.float64)) * 0.5 - h.mean() + 2 / (
            h.sum() + 10)

    # Leaves used directly in arithmetic are shimnn Parameters: shimnn records their operations.
    closure = Closure(f, lin, a=torch.randn(3, 1, dtype=torch.float64),
                      b=torch.randn(1, 4, dtype=torch.float64))
    assert gradcheck(closure, **TOLERANCE)
