"""Peak memory of one training step, torch against shimnn, each in a fresh process.

    .venv/bin/python -m bench.memory [--batch 4096] [--steps 5] [--momentum 0.9]
                                     [--malloc-default] [--json PATH]

The step is 784-1024-1024-10 (ReLU, MSE on random targets, SGD lr 0.1): forward, loss,
zero_grad, backward, optimizer step, at batch 4096.

Method: the kernel's peak resident set size. Linux tracks the high-water mark of each process's
resident memory (``VmHWM`` in ``/proc/self/status``) and resets it to the current size when
``5`` is written to ``/proc/self/clear_refs``. So, after warm-up steps (lazy initialisation,
gradients and optimizer state allocated), each measured step does: collect garbage, read the
current ``VmRSS``, reset the mark, run the step, read ``VmHWM``; the growth is the difference.
This sees every page any allocator touched during the step, torch's or Python's, exactly (no
sampling thread that could miss a short peak); ``tracemalloc`` sees only Python's allocator,
and torch keeps no allocation statistics for CPU tensors.

Freed memory must go back to the operating system for the resident size to follow the live
data. glibc serves large blocks with ``mmap`` and unmaps them when freed, but it raises its
``mmap`` threshold (up to 32 MiB) each time such a block is freed, after which blocks of that
size come from the heap and may stay resident when freed, making the "before" size depend on
history. Each child therefore runs with ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc's initial
threshold; setting it explicitly turns the adjustment off); ``--malloc-default`` leaves glibc's
defaults. Each framework runs in its own fresh interpreter (``--child``), so neither inherits the
other's allocator state.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from bench._timing import environment, environment_line
from bench._workloads import FRAMEWORKS, Network, Workload, batch_data, build_model

NETWORK_SIZES = (784, 1024, 1024, 10)
MMAP_THRESHOLD = "131072"
MIB = 1024 * 1024


def _status_bytes(key: str) -> int:
    """A field of ``/proc/self/status`` (kB there) in bytes."""
    with open("/proc/self/status") as f:
        match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    if match is None:
        raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")
    return int(match.group(1)) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(framework: str, batch: int, steps: int, momentum: float) -> dict[str, list[int]]:
    """Runs in the fresh process: warm up, then measure ``steps`` steps one by one."""
    torch.set_num_threads(1)
    network = Network(NETWORK_SIZES, batch)
    nn, optim = FRAMEWORKS[framework]
    model = build_model(nn, network)
    x, y = batch_data(network)
    w = Workload(model, optim.SGD(model.parameters(), lr=0.1, momentum=momentum),
                 nn.MSELoss(), x, y, [(x, y)])
    for _ in range(2):
        w.step()
    before, peak = [], []
    for _ in range(steps):
        gc.collect()
        before.append(_status_bytes("VmRSS"))
        _reset_peak()
        w.step()
        peak.append(_status_bytes("VmHWM"))
    return {"rss_before": before, "peak": peak, "growth": [p - b for p, b in zip(peak, before)]}


def run_child(framework: str, args: argparse.Namespace) -> dict[str, list[int]]:
    """``child`` in a fresh interpreter (from the repository root, so ``-m bench`` resolves)."""
    env = dict(os.environ)
    if not args.malloc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    cmd = [sys.executable, "-m", "bench.memory", "--child", framework, "--batch",
           str(args.batch), "--steps", str(args.steps), "--momentum", str(args.momentum)]
    out = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, env=env, check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, list[int]] = json.loads(out.strip().splitlines()[-1])
    return result


def _mib(values: Sequence[int]) -> float:
    return statistics.median(values) / MIB


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=5, help="measured steps (median reported)")
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--malloc-default", action="store_true",
                        help="keep glibc's dynamic mmap threshold in the children")
    parser.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    parser.add_argument("--child", choices=list(FRAMEWORKS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.steps, args.momentum)))
        return

    torch.set_num_threads(1)
    results = {fw: run_child(fw, args) for fw in FRAMEWORKS}
    shape = "-".join(map(str, NETWORK_SIZES))
    optimizer = f"SGD lr 0.1{f', momentum {args.momentum}' if args.momentum else ''}"
    malloc = ("glibc defaults" if args.malloc_default
              else f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}")
    print(environment_line(environment()))
    print(f"\nOne training step of {shape} at batch {args.batch} ({optimizer}), float32; each "
          f"framework in a fresh process ({malloc}); peak resident size by VmHWM reset through "
          f"/proc/self/clear_refs; median of {args.steps} steps after 2 warm-up steps.\n")
    print("| framework | RSS before step (MiB) | peak RSS during step (MiB) "
          "| growth during step (MiB) |")
    print("|---|---:|---:|---:|")
    for fw, r in results.items():
        print(f"| {fw} | {_mib(r['rss_before']):.1f} | {_mib(r['peak']):.1f} "
              f"| {_mib(r['growth']):.1f} |")
    growth = {fw: _mib(r["growth"]) for fw, r in results.items()}
    peak = {fw: _mib(r["peak"]) for fw, r in results.items()}
    ratio = f"{growth['shimnn'] / growth['torch']:.3f}" if growth["torch"] else "n/a"
    print(f"\nshimnn/torch: growth during the step **{ratio}**, peak resident size "
          f"{peak['shimnn'] / peak['torch']:.3f} (below 1: shimnn needs less)")
    print("Growth per measured step (MiB): " + "; ".join(
        f"{fw} " + ", ".join(f"{g / MIB:.1f}" for g in r["growth"]) for fw, r in results.items()))
    mb = {name: n * 4 / MIB for name, n in (
        ("input", args.batch * NETWORK_SIZES[0]), ("hidden activation", args.batch * 1024),
        ("parameters", sum(a * b + b for a, b in zip(NETWORK_SIZES, NETWORK_SIZES[1:]))))}
    print("For scale: " + ", ".join(f"{k} {v:.1f} MiB" for k, v in mb.items()) + ".")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment(), "batch": args.batch,
                       "momentum": args.momentum, "malloc": malloc, "results": results}, f,
                      indent=1)
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
