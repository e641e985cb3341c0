"""The seed report's task: is a point of the unit square inside the disc of area 1/2?

Points are uniform in [0, 1]^2; the label is +1 inside the disc of centre (0.5, 0.5) and
radius 1/sqrt(2*pi), -1 outside. The network is the report's multi-layer perceptron
(2-25-25-25-1, ReLU hidden layers, Tanh output) trained with MSE and SGD. Every function takes
the module namespace (``torch.nn`` or ``shimnn``) and optimizer namespace (``torch.optim`` or
``shimnn.optim``) to use, so the same code runs under both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

__all__ = ["Run", "disc_data", "error_rate", "generate_disc_set", "make_network", "train",
           "train_epochs"]

RADIUS = 1 / math.sqrt(2 * math.pi)


def generate_disc_set(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
                      ) -> tuple[Tensor, Tensor]:
    """``n`` points ``(n, 2)`` and their labels ``(n, 1)`` in {-1, +1}."""
    x = torch.rand(n, 2, generator=generator, dtype=dtype)
    inside = (x - 0.5).pow(2).sum(1, keepdim=True) < RADIUS**2
    return x, inside.to(dtype) * 2 - 1


def make_network(nn: ModuleType, hidden: Sequence[int] = (25, 25, 25),
                 activation: str = "ReLU", dtype: torch.dtype = torch.float32) -> Any:
    """The report's MLP: 2 inputs, ``hidden`` layers with ``activation``, 1 Tanh output."""
    sizes = [2, *hidden]
    layers: list[Any] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b, dtype=dtype), getattr(nn, activation)()]
    layers += [nn.Linear(sizes[-1], 1, dtype=dtype), nn.Tanh()]
    return nn.Sequential(*layers)


def error_rate(model: Any, x: Tensor, y: Tensor) -> float:
    """Fraction of points whose predicted sign differs from the label."""
    with torch.no_grad():
        pred = model(x)
    return float(((pred >= 0) != (y > 0)).float().mean())


@dataclass
class Run:
    """What one training run produced: per-step losses, per-epoch metrics, final model."""

    model: Any
    losses: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    train_error: list[float] = field(default_factory=list)
    test_error: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def train(
    nn: ModuleType,
    optim: ModuleType,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    on_epoch: Callable[[int, Run], None] | None = None,
    **options: Any,
) -> Run:
    """Train the report's network on ``data`` = (train_x, train_y, test_x, test_y).

    Options as :func:`train_epochs`; ``on_epoch(epoch, run)`` is called after each epoch.
    """
    run: Run | None = None
    for epoch, run in enumerate(train_epochs(nn, optim, data, **options)):
        if on_epoch is not None:
            on_epoch(epoch, run)
    assert run is not None
    return run


def train_epochs(
    nn: ModuleType,
    optim: ModuleType,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    seed: int = 0,
    epochs: int = 100,
    batch_size: int = 50,
    lr: float = 0.1,
    hidden: Sequence[int] = (25, 25, 25),
    activation: str = "ReLU",
    optimizer: str = "SGD",
    optimizer_options: dict[str, Any] | None = None,
    evaluate: bool = True,
) -> Iterator[Run]:
    """Train epoch by epoch, yielding the :class:`Run` after each (so two frameworks can be
    trained interleaved). The weights come from ``torch.manual_seed(seed)``; mini-batches are
    taken in order, so runs that differ only in ``nn``/``optim`` see exactly the same numbers.
    """
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(seed)
    model = make_network(nn, hidden, activation, train_x.dtype)
    criterion = nn.MSELoss()
    opt = getattr(optim, optimizer)(model.parameters(), lr=lr, **(optimizer_options or {}))
    run = Run(model)
    n = train_x.shape[0]
    for _ in range(epochs):
        start = time.perf_counter()
        total = 0.0
        for i in range(0, n, batch_size):
            out = model(train_x[i:i + batch_size])
            loss = criterion(out, train_y[i:i + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()
            run.losses.append(value)
            total += value
        run.epoch_seconds.append(time.perf_counter() - start)
        run.epoch_loss.append(total / math.ceil(n / batch_size))
        if evaluate:
            run.train_error.append(error_rate(model, train_x, train_y))
            run.test_error.append(error_rate(model, test_x, test_y))
        yield run


def disc_data(seed: int = 0, n_train: int = 1000, n_test: int = 1000,
              dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train and test sets drawn from a generator seeded with ``seed`` (the global RNG is
    untouched)."""
    g = torch.Generator().manual_seed(seed)
    return (*generate_disc_set(n_train, g, dtype), *generate_disc_set(n_test, g, dtype))
