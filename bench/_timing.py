"""The one timing helper every benchmark uses: interleaved blocks, compared as ratios.

The machine is shared and noisy, so absolute times drift by tens of percent within a minute.
A ratio of two workloads timed in the same process, in short blocks that alternate many times,
sees the same drift on both sides and is stable; its median over blocks (and the spread of the
per-block ratios) is what the benchmarks report.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "CLOCKS",
    "Spread",
    "calibrate",
    "environment",
    "environment_line",
    "interleaved",
    "spread",
    "ratio_spread",
    "set_clock",
]


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}
"""``wall``: elapsed time (the default). ``cpu``: the CPU time of the calling thread, which
excludes the time other processes on an overloaded machine hold the cores (with one torch
thread every kernel runs on the calling thread)."""
_clock: Callable[[], float] = time.perf_counter


def set_clock(name: str) -> None:
    """Time every following measurement with ``CLOCKS[name]``."""
    global _clock
    _clock = CLOCKS[name]


def calibrate(fn: Callable[[], object], target_s: float, max_calls: int = 1 << 16) -> int:
    """How many consecutive calls of ``fn`` take about ``target_s`` seconds (at least 1).

    Doubles the count until one batch of calls takes a quarter of the target, then times that
    batch twice more and scales by the fastest of the three (a load spike during calibration
    would otherwise shrink the count)."""
    calls = 1
    while True:
        elapsed = _time_calls(fn, calls)
        if elapsed >= target_s / 4 or calls >= max_calls:
            break
        calls *= 2
    elapsed = min(elapsed, _time_calls(fn, calls), _time_calls(fn, calls))
    return max(1, min(max_calls, round(calls * target_s / max(elapsed, 1e-9))))


def _time_calls(fn: Callable[[], object], calls: int) -> float:
    clock = _clock
    start = clock()
    for _ in range(calls):
        fn()
    return clock() - start


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    blocks: int,
    block_s: float,
    warmup_s: float = 0.2,
    calls: Mapping[str, int] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, one value per block, timed interleaved.

    Each function first runs for ``warmup_s`` (caches, lazy initialisation, allocator), then
    gets a call count that fills about ``block_s`` seconds (or ``calls[name]``). Then ``blocks``
    rounds run; in each round every function runs one block of its calls, and the order rotates
    from round to round so no function always follows the same other one. The garbage collector
    stays enabled: collecting what a framework leaves behind is part of its cost.
    """
    names = list(fns)
    counts: dict[str, int] = {}
    for name in names:
        deadline = time.perf_counter() + warmup_s
        fns[name]()
        while time.perf_counter() < deadline:
            fns[name]()
        counts[name] = (calls or {}).get(name) or calibrate(fns[name], block_s)
    gc.collect()
    per_call: dict[str, list[float]] = {name: [] for name in names}
    for b in range(blocks):
        shift = b % len(names)
        for name in names[shift:] + names[:shift]:
            per_call[name].append(_time_calls(fns[name], counts[name]) / counts[name])
    return per_call


@dataclass(frozen=True)
class Spread:
    """Median and interquartile range of a sample."""

    median: float
    q1: float
    q3: float

    def scaled(self, factor: float) -> Spread:
        """The same statistics times ``factor`` (e.g. seconds to microseconds)."""
        return Spread(self.median * factor, self.q1 * factor, self.q3 * factor)


def spread(values: Sequence[float]) -> Spread:
    """Median and quartiles (inclusive method: quartiles stay within the data)."""
    if len(values) == 1:
        return Spread(values[0], values[0], values[0])
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Spread(q2, q1, q3)


def ratio_spread(numerator: Sequence[float], denominator: Sequence[float]) -> Spread:
    """Statistics of the per-block ratios ``numerator[i] / denominator[i]``: block ``i`` of both
    ran side by side, so each ratio sees one load condition."""
    if len(numerator) != len(denominator):
        raise ValueError("ratio of samples of different lengths")
    return spread([a / b for a, b in zip(numerator, denominator)])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment() -> dict[str, object]:
    """What the numbers depend on: CPU, cores, Python, torch, torch's thread count."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "shimnn_native": _native_status(),
    }


def _native_status() -> str:
    from shimnn import _native

    return _native.status().removeprefix("native fast paths: ")


def environment_line(env: Mapping[str, object]) -> str:
    """``environment()`` as one Markdown line."""
    return (f"Machine: {env['cpu']}, {env['cores']} cores ({env['usable_cores']} usable); "
            f"Python {env['python']}; torch {env['torch']}; "
            f"torch threads {env['torch_threads']}; shimnn's compiled fast paths: "
            f"{env.get('shimnn_native', 'not recorded')}")
