"""Speed of shimnn against torch (and scikit-learn) as interleaved ratios, in one process.

    .venv/bin/python -m bench.ratios [--quick] [--networks {all,mlp,cnn,rnn,lm}] [--json PATH]

For every configuration of ``bench._workloads`` (4 multi-layer perceptrons: training step with
plain SGD, with momentum 0.9 and with Adam, forward in grad mode and under ``torch.no_grad()``;
3 convolutional networks: training step with SGD momentum; an LSTM, an Embedding + GRU
language model and a 2-layer Transformer encoder: SGD and Adam steps, forward) torch and shimnn
run in
alternating short blocks (``bench._timing.interleaved``); the table gives each one's median time
per call and the median and interquartile range of the per-block ratios torch/shimnn (above 1:
shimnn is faster); an RL-style update (8-64-64-2 Tanh MLP, Adam lr 3e-4, ``clip_grad_norm_(0.5)``,
batch 64) with shimnn's Adam and with ``torch.optim.Adam`` over shimnn's parameters. Then one
epoch of the seed task (1000 disc points, 20 mini-batches of 50; SGD, momentum, Adam) under
scikit-learn's ``MLPRegressor``, torch and shimnn, interleaved the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from bench._timing import (
    CLOCKS,
    Spread,
    environment,
    environment_line,
    interleaved,
    ratio_spread,
    set_clock,
    spread,
)
from bench._workloads import (
    CNN_NETWORKS,
    EPOCH_OPTIMIZERS,
    FRAMEWORKS,
    NETWORKS,
    OPTIMIZERS,
    RL_TASK,
    SEQUENCE_NETWORKS,
    TOKEN_NETWORKS,
    cnn_workload,
    epoch_workload,
    rl_workload,
    sequence_workload,
    sklearn_epoch,
    token_workload,
    workload,
)


@dataclass(frozen=True)
class Settings:
    """How long to measure: ``blocks`` interleaved rounds of about ``block_s`` seconds each."""

    blocks: int
    block_s: float
    warmup_s: float


FULL = Settings(blocks=101, block_s=0.02, warmup_s=0.3)
QUICK = Settings(blocks=21, block_s=0.01, warmup_s=0.1)


@dataclass
class Result:
    """One configuration: per-block seconds per call for each contender, and their summary."""

    configuration: str
    mode: str
    seconds: dict[str, list[float]]

    def time(self, name: str) -> Spread:
        """Median and quartiles of ``name``'s seconds per call."""
        return spread(self.seconds[name])

    def ratio(self, numerator: str, denominator: str = "shimnn") -> Spread:
        """Per-block ratios ``numerator / denominator`` (above 1: the denominator is faster)."""
        return ratio_spread(self.seconds[numerator], self.seconds[denominator])


def _measure(configuration: str, mode: str, fns: dict[str, Callable[[], object]],
             settings: Settings) -> Result:
    print(f"  {configuration}, {mode}...", file=sys.stderr, flush=True)
    seconds = interleaved(fns, blocks=settings.blocks, block_s=settings.block_s,
                          warmup_s=settings.warmup_s)
    return Result(configuration, mode, seconds)


def measure_cnn_steps(settings: Settings) -> list[Result]:
    """Training steps (SGD with momentum) of the convolutional networks."""
    results = []
    for network in CNN_NETWORKS:
        ws = {fw: cnn_workload(fw, network) for fw in FRAMEWORKS}
        results.append(_measure(network.name, "step momentum",
                                {fw: w.step for fw, w in ws.items()}, settings))
    return results


def measure_steps(settings: Settings) -> list[Result]:
    """Training steps (each optimizer) and forward passes (grad mode, no_grad) per network."""
    results = []
    for network in NETWORKS:
        for optimizer in OPTIMIZERS:
            ws = {fw: workload(fw, network, optimizer) for fw in FRAMEWORKS}
            results.append(_measure(network.name, f"step {optimizer}",
                                    {fw: w.step for fw, w in ws.items()}, settings))
        ws = {fw: workload(fw, network) for fw in FRAMEWORKS}
        results.append(_measure(network.name, "forward",
                                {fw: w.forward for fw, w in ws.items()}, settings))
        results.append(_measure(network.name, "forward no_grad",
                                {fw: w.forward_no_grad for fw, w in ws.items()}, settings))
    return results


def measure_rl(settings: Settings) -> list[Result]:
    """The RL-style update (Tanh MLP, Adam, clip_grad_norm_), with the framework's own Adam and
    with torch.optim.Adam over shimnn's parameters (a script that swaps only torch.nn)."""
    own = {fw: rl_workload(fw) for fw in FRAMEWORKS}
    swap = {"torch": rl_workload("torch"), "shimnn": rl_workload("shimnn", "torch")}
    return [_measure(RL_TASK.name, "step adam + clip_grad_norm_",
                     {fw: w.step for fw, w in own.items()}, settings),
            _measure(RL_TASK.name, "step torch.optim.Adam + clip_grad_norm_",
                     {fw: w.step for fw, w in swap.items()}, settings)]


def measure_sequences(settings: Settings) -> list[Result]:
    """The sequence models: SGD and Adam steps, forward in grad mode and under no_grad."""
    results = []
    for seq in SEQUENCE_NETWORKS:
        for optimizer in ("sgd", "adam"):
            ws = {fw: sequence_workload(fw, seq, optimizer) for fw in FRAMEWORKS}
            results.append(_measure(seq.name, f"step {optimizer}",
                                    {fw: w.step for fw, w in ws.items()}, settings))
        ws = {fw: sequence_workload(fw, seq) for fw in FRAMEWORKS}
        results.append(_measure(seq.name, "forward",
                                {fw: w.forward for fw, w in ws.items()}, settings))
        results.append(_measure(seq.name, "forward no_grad",
                                {fw: w.forward_no_grad for fw, w in ws.items()}, settings))
    return results


def measure_token_models(settings: Settings) -> list[Result]:
    """The token models (GRU language model, Transformer encoder): SGD and Adam steps,
    forward in grad mode and under no_grad."""
    results = []
    for net in TOKEN_NETWORKS:
        for optimizer in ("sgd", "adam"):
            ws = {fw: token_workload(fw, net, optimizer) for fw in FRAMEWORKS}
            results.append(_measure(net.name, f"step {optimizer}",
                                    {fw: w.step for fw, w in ws.items()}, settings))
        ws = {fw: token_workload(fw, net) for fw in FRAMEWORKS}
        results.append(_measure(net.name, "forward",
                                {fw: w.forward for fw, w in ws.items()}, settings))
        results.append(_measure(net.name, "forward no_grad",
                                {fw: w.forward_no_grad for fw, w in ws.items()}, settings))
    return results


def measure_epochs(settings: Settings) -> list[Result]:
    """One epoch of the seed task under scikit-learn, torch and shimnn, per optimizer."""
    results = []
    for optimizer in EPOCH_OPTIMIZERS:
        fns: dict[str, Callable[[], object]] = {"sklearn": sklearn_epoch(optimizer)}
        fns.update({fw: epoch_workload(fw, optimizer) for fw in FRAMEWORKS})
        results.append(_measure("seed 2-25-25-25-1, 1000 points, batch 50",
                                f"epoch {optimizer}", fns, settings))
    return results


def _us(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:,.0f}" if us >= 1000 else f"{us:.1f}"


def _ratio(s: Spread) -> str:
    return f"**{s.median:.2f}** ({s.q1:.2f}-{s.q3:.2f})"


def step_table(results: Sequence[Result]) -> str:
    """Markdown table of the step and forward results."""
    lines = ["| configuration | measured | torch µs/call | shimnn µs/call "
             "| torch/shimnn (IQR) |",
             "|---|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.configuration} | {r.mode} | {_us(r.time('torch').median)} "
                     f"| {_us(r.time('shimnn').median)} | {_ratio(r.ratio('torch'))} |")
    return "\n".join(lines)


def epoch_table(results: Sequence[Result]) -> str:
    """Markdown table of the per-epoch comparison with scikit-learn."""
    lines = ["| optimizer | sklearn ms/epoch | torch ms/epoch | shimnn ms/epoch "
             "| sklearn/shimnn (IQR) | torch/shimnn (IQR) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        ms = {name: f"{r.time(name).median * 1e3:.2f}" for name in r.seconds}
        lines.append(f"| {r.mode.removeprefix('epoch ')} | {ms['sklearn']} | {ms['torch']} "
                     f"| {ms['shimnn']} | {_ratio(r.ratio('sklearn'))} "
                     f"| {_ratio(r.ratio('torch'))} |")
    return "\n".join(lines)


def _as_json(r: Result) -> dict[str, object]:
    others = [name for name in r.seconds if name != "shimnn"]
    return {
        "configuration": r.configuration,
        "mode": r.mode,
        "seconds_per_call": {name: asdict(r.time(name)) for name in r.seconds},
        "ratio_to_shimnn": {name: asdict(r.ratio(name)) for name in others},
        "per_block_seconds": r.seconds,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ratios", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.blocks} blocks of {QUICK.block_s * 1e3:.0f} ms instead of "
                             f"{FULL.blocks} of {FULL.block_s * 1e3:.0f} ms")
    parser.add_argument("--json", metavar="PATH", help="also save the results (with every "
                        "per-block time) as JSON")
    parser.add_argument("--networks", choices=["all", "mlp", "cnn", "rnn", "lm"],
                        default="all",
                        help="the multi-layer perceptrons (and the epoch comparison), the "
                        "convolutional networks, the sequence models (LSTM), the token models "
                        "(Embedding + GRU language model, Transformer encoder), or all "
                        "(default)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: this thread's CPU time, which "
                        "an overloaded machine's other processes do not inflate")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    set_clock(args.clock)

    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    torch.set_num_threads(1)
    threadpool_limits(limits=1)  # scikit-learn's BLAS too: one thread for every contender
    env = environment()
    print("measuring (progress on stderr)...", file=sys.stderr)
    mlp, cnn = args.networks in ("all", "mlp"), args.networks in ("all", "cnn")
    rnn = args.networks in ("all", "rnn")
    lm = args.networks in ("all", "lm")
    steps = ((measure_steps(settings) + measure_rl(settings) if mlp else [])
             + (measure_cnn_steps(settings) if cnn else [])
             + (measure_sequences(settings) if rnn else [])
             + (measure_token_models(settings) if lm else []))
    epochs = measure_epochs(settings) if mlp else []

    print(environment_line(env))
    clock = "elapsed time" if args.clock == "wall" else "CPU time of the timing thread"
    print(f"\nClock: {clock}. "
          f"Interleaved in one process: {settings.blocks} rounds, each contender one block of "
          f"about {settings.block_s * 1e3:.0f} ms (at least one call) per round; times are "
          "medians over blocks; ratio = median of the per-block ratios, IQR in parentheses. "
          "Above 1: shimnn is faster.\n")
    print(step_table(steps))
    if epochs:
        print("\nPer epoch, seed task (1000 disc points, 20 mini-batches of 50; SGD lr 0.1, "
              "Adam lr 1e-3; scikit-learn `MLPRegressor.partial_fit` with solver 'sgd' or "
              "'adam', one BLAS thread):\n")
        print(epoch_table(epochs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "settings": asdict(settings), "clock": args.clock,
                       "steps": [_as_json(r) for r in steps],
                       "epochs": [_as_json(r) for r in epochs]}, f, indent=1)
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
