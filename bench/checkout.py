"""torch/shimnn step ratios of the shimnn in another checkout, for before/after comparisons
(``python -m bench.checkout PATH``, e.g. a ``git worktree add`` of an older commit).

Imports ``shimnn`` and ``bench._workloads`` from ``PATH`` (its own workloads, so an older
checkout runs as it was), then times torch's and that shimnn's training steps interleaved in
this process on the thread's CPU clock: for each network of ``bench._workloads.NETWORKS`` and
SGD momentum / Adam, 61 blocks, each torch's calls then shimnn's; the ratio is the median of the
per-block ratios. Run it on both checkouts, one after the other: each ratio is measured against
torch in its own process, so the two runs compare even when the machine's load changes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any


def ratio(torch_step: Any, shimnn_step: Any, calls: int, blocks: int = 61) -> float:
    """Median over ``blocks`` of torch's time / shimnn's for ``calls`` steps each."""
    for _ in range(50):
        torch_step()
        shimnn_step()
    ratios = []
    for _ in range(blocks):
        t0 = time.thread_time()
        for _ in range(calls):
            torch_step()
        t1 = time.thread_time()
        for _ in range(calls):
            shimnn_step()
        t2 = time.thread_time()
        ratios.append((t1 - t0) / (t2 - t1))
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.checkout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="the checkout whose shimnn (and bench) to measure")
    args = parser.parse_args()
    sys.path.insert(0, args.path)
    for name in [m for m in sys.modules if m == "bench" or m.startswith(("bench.", "shimnn"))]:
        del sys.modules[name]  # this checkout's bench package was imported to run us
    import torch

    torch.set_num_threads(1)
    import shimnn
    from bench import _workloads

    print(f"shimnn from {shimnn.__file__}")
    for net in _workloads.NETWORKS:
        for optimizer in ("momentum", "adam"):
            t = _workloads.workload("torch", net, optimizer)
            s = _workloads.workload("shimnn", net, optimizer)
            r = ratio(t.step, s.step, calls=30 if net.batch <= 64 else 5)
            print(f"{net.name} {optimizer}: {r:.2f}", flush=True)


if __name__ == "__main__":
    main()
