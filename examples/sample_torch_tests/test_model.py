"""A small torch test suite as a team would write it: plain torch, nothing about shimnn.

``pytest examples/sample_torch_tests`` runs it with torch. ``shimnn run -m pytest
examples/sample_torch_tests`` (or ``pytest --shimnn examples/sample_torch_tests``) runs it with
shimnn serving torch.nn, torch.nn.functional and torch.optim: the tests pass with hand-written
gradients, except ``test_running_product_features``, whose model uses ``torch.cumprod``, an
operation shimnn has no backward for: it fails with shimnn's error naming ``cumprod``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def make_model(hidden: int = 16) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 3))


def make_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # three classes
    return x, y


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_output_shape(batch: int) -> None:
    assert make_model()(torch.randn(batch, 4)).shape == (batch, 3)


def test_training_step_decreases_loss() -> None:
    model = make_model()
    x, y = make_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_gradient_shapes() -> None:
    model = make_model()
    x, y = make_data()
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.shape == p.shape, name
        assert torch.isfinite(p.grad).all(), name


def test_adam_fits_a_regression() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Linear(32, 1))
    x, _ = make_data()
    target = x.sum(dim=1, keepdim=True)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = F.mse_loss(model(x), target).item()
    for _ in range(200):
        opt.zero_grad()
        loss = F.mse_loss(model(x), target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first


def test_dropout_is_off_in_eval_mode() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    assert torch.equal(model(x), model(x))


def test_running_product_features() -> None:
    class RunningProduct(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumprod(torch.sigmoid(self.gate(x)), dim=1).sum(dim=1)

    model = RunningProduct()
    x, _ = make_data(8)
    model(x).pow(2).mean().backward()
    assert model.gate.weight.grad is not None
