"""The seed report's experiment, under shimnn and under torch, next to the report's numbers.

    .venv/bin/python -m bench.seed_experiment [--runs 10] [--epochs 200] [--json PATH]

For each seed 0..runs-1: disc data (1000 training, 1000 test points) from that seed, the seed
network (2-25-25-25-1, ReLU, Tanh output, MSE) with weights from the same seed, SGD lr 0.1,
batch 50, trained ``epochs`` epochs once by ``shimnn.disc.train`` under each framework (the
order alternates from run to run). Accuracy (1 - test error) is read at epochs 10, 50 and 200
from the per-epoch record and averaged over runs; time per epoch is ``train``'s own per-epoch
record (the training loop only, evaluation excluded). Every run's per-step losses, per-epoch
errors and final parameters are compared bit for bit between the two frameworks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench._timing import environment, environment_line, ratio_spread, spread
from bench._workloads import FRAMEWORKS
from shimnn.disc import Run, disc_data, train
from shimnn.testing import bitwise_identical

MILESTONES = (10, 50, 200)
REPORT_ACCURACY = {"framework": (85.3, 95.6, 96.9), "PyTorch": (73.1, 96.4, 97.8)}
"""The seed report's accuracies (%) at ``MILESTONES``: its own framework, and PyTorch."""
REPORT_EPOCH_S = {"framework": 0.159, "PyTorch": 0.077}
"""The seed report's seconds per epoch."""


def identical(a: Run, b: Run) -> bool:
    """Same per-step losses, per-epoch errors and final parameters, bit for bit (identical
    NaNs are identical; ``-0.0`` is not ``0.0``)."""
    return bitwise_identical(
        [a.losses, a.train_error, a.test_error, dict(a.model.state_dict())],
        [b.losses, b.train_error, b.test_error, dict(b.model.state_dict())])


@dataclass
class SeedRun:
    """What one seed gave under both frameworks."""

    seed: int
    accuracy: dict[str, list[float]]
    """Framework -> accuracy (%) at each milestone."""
    epoch_s: dict[str, float]
    """Framework -> median seconds per epoch over the run."""
    identical: bool


def run_seed(seed: int, epochs: int, milestones: Sequence[int]) -> SeedRun:
    """Train both frameworks on ``seed``'s data from ``seed``'s weights."""
    data = disc_data(seed)
    order = list(FRAMEWORKS) if seed % 2 == 0 else list(reversed(FRAMEWORKS))
    runs = {fw: train(*FRAMEWORKS[fw], data, seed=seed, epochs=epochs) for fw in order}
    return SeedRun(
        seed,
        {fw: [100 * (1 - r.test_error[m - 1]) for m in milestones] for fw, r in runs.items()},
        {fw: statistics.median(r.epoch_seconds) for fw, r in runs.items()},
        identical(runs["shimnn"], runs["torch"]),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="seeds 0..RUNS-1 (default 10)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs per run (default 200)")
    parser.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    args = parser.parse_args(argv)
    milestones = sorted({m for m in MILESTONES if m <= args.epochs} | {args.epochs})

    torch.set_num_threads(1)
    env = environment()
    results = []
    for seed in range(args.runs):
        results.append(run_seed(seed, args.epochs, milestones))
        r = results[-1]
        print(f"seed {seed}: " + "; ".join(
            f"{fw} " + "/".join(f"{a:.1f}" for a in r.accuracy[fw]) for fw in FRAMEWORKS)
            + f" %; identical: {'yes' if r.identical else 'NO'}", file=sys.stderr, flush=True)

    mean = {fw: [statistics.mean(r.accuracy[fw][i] for r in results)
                 for i in range(len(milestones))] for fw in FRAMEWORKS}
    sd = {fw: [statistics.stdev(r.accuracy[fw][i] for r in results) if len(results) > 1 else 0.0
               for i in range(len(milestones))] for fw in FRAMEWORKS}
    epoch_s = {fw: spread([r.epoch_s[fw] for r in results]) for fw in FRAMEWORKS}
    speedup = ratio_spread([r.epoch_s["torch"] for r in results],
                           [r.epoch_s["shimnn"] for r in results])

    print(environment_line(env))
    print(f"\nSeed experiment: {args.runs} runs (seeds 0-{args.runs - 1}), {args.epochs} epochs, "
          "2-25-25-25-1 ReLU/Tanh, MSE, SGD lr 0.1, batch 50; accuracy = 1 - test error on "
          "1000 test points, mean ± standard deviation over runs.\n")
    print("| epochs | seed report: its framework | seed report: PyTorch "
          "| shimnn (this run) | torch (this run) |")
    print("|---:|---:|---:|---:|---:|")
    for i, m in enumerate(milestones):
        report = [f"{REPORT_ACCURACY[k][MILESTONES.index(m)]:.1f} %" if m in MILESTONES else "-"
                  for k in REPORT_ACCURACY]
        ours = [f"{mean[fw][i]:.1f} ± {sd[fw][i]:.1f} %" for fw in ("shimnn", "torch")]
        print(f"| {m} | {' | '.join(report)} | {' | '.join(ours)} |")
    print(f"| s/epoch | {REPORT_EPOCH_S['framework']:.3f} | {REPORT_EPOCH_S['PyTorch']:.3f} "
          f"| {epoch_s['shimnn'].median:.4f} | {epoch_s['torch'].median:.4f} |")
    n_same = sum(r.identical for r in results)
    print(f"\nIdentical runs (losses, errors, final weights bit for bit): {n_same}/{len(results)}"
          + ("" if n_same == len(results) else ", differing seeds: "
             + ", ".join(str(r.seed) for r in results if not r.identical)))
    print(f"Time per epoch: median over runs of each run's median epoch (training loop only, "
          f"one torch thread); torch/shimnn per run: **{speedup.median:.2f}** "
          f"(IQR {speedup.q1:.2f}-{speedup.q3:.2f}); seed report PyTorch/framework: "
          f"{REPORT_EPOCH_S['PyTorch'] / REPORT_EPOCH_S['framework']:.2f}.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "runs": args.runs, "epochs": args.epochs,
                       "milestones": milestones, "mean_accuracy": mean, "sd_accuracy": sd,
                       "per_run": [r.__dict__ for r in results]}, f, indent=1)
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
