"""pytest-benchmark benchmarks: torch and shimnn side by side in one group per configuration.

Groups: ``step <network> <optimizer>`` (forward, loss, zero_grad, backward, SGD step) and
``forward <network>`` / ``forward-no-grad <network>`` (the forward pass in grad mode and under
``torch.no_grad()``; it does not depend on the optimizer). pytest-benchmark times one
benchmark after another; for a ratio that survives a noisy machine use ``python -m
bench.ratios``, which interleaves the two frameworks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench._timing import calibrate
from bench._workloads import (
    FRAMEWORKS,
    NETWORKS,
    OPTIMIZERS,
    SEQUENCE_NETWORKS,
    Network,
    SequenceNetwork,
    Workload,
    sequence_workload,
    workload,
)

ROUND_S = 0.01
"""Seconds per round (at least one call): several calls per round smooth out the timer on
microsecond steps."""
ROUNDS = 100
"""Rounds per benchmark: about 1 s of timed work, 3 s for the 784-1024-1024-10 steps."""


def _run(benchmark: Any, fn: Callable[[], object]) -> None:
    for _ in range(3):  # warm-up: lazy initialisation, allocator, caches
        fn()
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=calibrate(fn, ROUND_S), warmup_rounds=1)


def _ids(network: Network) -> str:
    return network.slug


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("network", NETWORKS, ids=_ids)
def test_step(benchmark: Any, network: Network, optimizer: str, framework: str) -> None:
    benchmark.group = f"step {network.name} {optimizer}"
    w: Workload = workload(framework, network, optimizer)
    _run(benchmark, w.step)


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
@pytest.mark.parametrize("mode", ["forward", "forward-no-grad"])
@pytest.mark.parametrize("network", NETWORKS, ids=_ids)
def test_forward(benchmark: Any, network: Network, mode: str, framework: str) -> None:
    benchmark.group = f"{mode} {network.name}"
    w: Workload = workload(framework, network)
    _run(benchmark, w.forward if mode == "forward" else w.forward_no_grad)


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("network", SEQUENCE_NETWORKS, ids=lambda n: n.slug)
def test_sequence_step(benchmark: Any, network: SequenceNetwork, optimizer: str,
                       framework: str) -> None:
    benchmark.group = f"step {network.name} {optimizer}"
    _run(benchmark, sequence_workload(framework, network, optimizer).step)
