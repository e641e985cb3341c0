"""DistributedDataParallel training step, torch's DDP around torch's modules vs around shimnn's.

    .venv/bin/python -m bench.ddp [--quick] [--world-size 2] [--json PATH] [--markdown PATH]

Starts ``--world-size`` gloo ranks on 127.0.0.1 (``torch.multiprocessing`` spawn, a file store);
every rank builds, for each configuration, torch's DDP over a torch model and over the same
model in shimnn (same seed, same data), and times one training step (DDP forward, loss,
``zero_grad``, backward with the gradient all-reduce, optimizer step), the two interleaved in
short blocks (``bench._timing.interleaved``). The ranks agree on every call count (rank 0's,
broadcast), so both run the same contender at the same time; rank 0's times are reported. Above 1:
shimnn's step is faster. One torch thread per rank.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench._timing import environment, environment_line, interleaved, ratio_spread, spread


@dataclass(frozen=True)
class Config:
    """A network (its sizes; the seed one ends in Tanh and trains on disc points), the batch
    per rank and the optimizer."""

    sizes: tuple[int, ...]
    batch: int
    optimizer: str

    @property
    def name(self) -> str:
        seed = "seed " if self.sizes == SEED else ""
        return f"{seed}{'-'.join(map(str, self.sizes))} b{self.batch}"


SEED = (2, 25, 25, 25, 1)


CONFIGS = (
    Config(SEED, 50, "momentum"),
    Config(SEED, 50, "adam"),
    Config(SEED, 1000, "momentum"),
    Config((64, 256, 256, 10), 64, "momentum"),
    Config((784, 1024, 1024, 10), 256, "momentum"),
)


def _step(nn: Any, optim: Any, config: Config, rank: int) -> Any:
    """One training step of ``config`` under DDP, built from ``nn``/``optim``."""
    from shimnn.disc import generate_disc_set, make_network

    torch.manual_seed(0)
    sizes = config.sizes
    if sizes == SEED:
        net = make_network(nn)
    else:
        layers: list[Any] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        net = nn.Sequential(*layers[:-1])
    model = torch.nn.parallel.DistributedDataParallel(net)
    g = torch.Generator().manual_seed(rank)
    if sizes == SEED:
        x, y = generate_disc_set(config.batch, g)
    else:
        x, y = torch.randn(config.batch, sizes[0], generator=g), torch.randn(
            config.batch, sizes[-1], generator=g)
    criterion = nn.MSELoss()
    opt = (optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if config.optimizer ==
           "momentum" else optim.Adam(model.parameters(), lr=1e-3))

    def step() -> None:
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _agree(value: int) -> int:
    """Rank 0's value, on every rank."""
    t = torch.tensor([value], dtype=torch.int64)
    dist.broadcast(t, 0)
    return int(t.item())


def _worker(rank: int, world: int, store: str, blocks: int, block_s: float, out: str) -> None:
    import shimnn
    import shimnn.optim

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    rows = []
    fns: dict[str, Any] = {}
    try:
        for config in CONFIGS:
            fns = {"torch": _step(torch.nn, torch.optim, config, rank),
                   "shimnn": _step(shimnn, shimnn.optim, config, rank)}
            counts = {}
            for name, fn in fns.items():
                for _ in range(5):  # warm up (buckets rebuilt after the first step)
                    fn()
                start = time.perf_counter()
                for _ in range(3):
                    fn()
                per_call = (time.perf_counter() - start) / 3
                counts[name] = _agree(max(1, round(block_s / per_call)))
            times = interleaved(fns, blocks=blocks, block_s=block_s, warmup_s=0.0, calls=counts)
            if rank == 0:
                rows.append({"config": config.name, "optimizer": config.optimizer,
                             "torch_us": spread(times["torch"]).scaled(1e6).median,
                             "shimnn_us": spread(times["shimnn"]).scaled(1e6).median,
                             "ratio": asdict(ratio_spread(times["torch"], times["shimnn"])),
                             "calls_per_block": counts})
                print(f"{config.name} {config.optimizer}: torch/shimnn "
                      f"{rows[-1]['ratio']['median']:.2f}", file=sys.stderr, flush=True)
    finally:
        fns.clear()
        gc.collect()  # the DDPs (and the process group they hold) go first
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        with open(out, "w") as f:
            json.dump(rows, f)


def markdown(rows: list[dict[str, Any]], env: dict[str, object], world: int, blocks: int,
             block_s: float) -> str:
    lines = [
        environment_line(env), "",
        f"{world} gloo rank{'s' if world > 1 else ''} on 127.0.0.1, one torch thread each; "
        "torch's "
        "DistributedDataParallel around torch's modules vs around shimnn's. One training step: "
        "DDP forward, MSE loss, zero_grad, backward (with the bucketed all-reduce), optimizer "
        f"step. Interleaved: {blocks} rounds of blocks of about {block_s * 1e3:.0f} ms (the "
        "ranks agree on the call counts); rank 0's medians; ratio = median of the per-block "
        "ratios, IQR in parentheses. Above 1: shimnn is faster.", "",
        "| network, batch per rank | optimizer | torch µs/step | shimnn µs/step | "
        "torch/shimnn (IQR) |",
        "|---|---|---:|---:|---:|"]
    for r in rows:
        q = r["ratio"]
        lines.append(f"| {r['config']} | {r['optimizer']} | {r['torch_us']:,.1f} | "
                     f"{r['shimnn_us']:,.1f} | **{q['median']:.2f}** ({q['q1']:.2f}-"
                     f"{q['q3']:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="21 rounds of 20 ms (else 61 of 40)")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--json", help="write the rows and the environment here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    blocks, block_s = (21, 0.02) if args.quick else (61, 0.04)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "rows.json")
        mp.spawn(_worker, args=(args.world_size, os.path.join(folder, "store"), blocks,
                                block_s, out), nprocs=args.world_size)
        with open(out) as f:
            rows = json.load(f)
    env = environment()
    text = markdown(rows, env, args.world_size, blocks, block_s)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "world_size": args.world_size, "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
