"""One rank of the DDP parity tests (tests/test_ddp.py): torch's DDP around torch's modules,
then around shimnn's, in the same gloo group on 127.0.0.1, compared bit for bit on this rank.

    python tests/ddp_worker.py RANK WORLD_SIZE STORE_FILE OUT_FILE SCENARIO[,SCENARIO...]

Each scenario builds its network from a rank-dependent seed (DDP's construction broadcasts rank
0's parameters), trains a few steps on this rank's own data and records every loss, every
gradient after each backward (after DDP's reduction) and the final parameters (and buffers);
the torch and shimnn records must be bitwise equal. ``OUT_FILE`` gets, per scenario, the
differences found (none expected) and a digest of the final parameters of each, which the test
compares across ranks: equal digests with different data per rank prove that the gradients
were reduced (buffers such as BatchNorm's running statistics stay per rank, as in torch).
shimnn's half runs under ``assert_no_autograd``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # 127.0.0.1

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import shimnn  # noqa: E402
import shimnn.optim  # noqa: E402
from shimnn.disc import generate_disc_set, make_network  # noqa: E402
from shimnn.testing import assert_no_autograd  # noqa: E402

# name -> options: net, optimizer, steps, batch (per rank), ddp (DDP keyword arguments),
# accumulate (no_sync micro-batches before the synchronized one), hook, zero, set_to_none.
SCENARIOS: dict[str, dict[str, Any]] = {
    "seed_sgd": dict(net="seed", optimizer="sgd"),
    "seed_adam": dict(net="seed", optimizer="adam"),
    "seed_float64": dict(net="seed", optimizer="sgd", dtype=torch.float64),
    "seed_no_sync": dict(net="seed", optimizer="sgd", accumulate=2),
    "seed_bucket_view": dict(net="seed", optimizer="sgd", set_to_none=False,
                             ddp=dict(gradient_as_bucket_view=True)),
    "seed_bucket_view_none": dict(net="seed", optimizer="adam",
                                  ddp=dict(gradient_as_bucket_view=True)),
    "seed_batched_copy": dict(net="seed", optimizer="sgd", ddp=dict(batched_grad_copy=True)),
    "seed_static_graph": dict(net="seed", optimizer="adam", ddp=dict(static_graph=True)),
    "seed_allreduce_hook": dict(net="seed", optimizer="sgd", hook="allreduce"),
    "seed_fp16_hook": dict(net="seed", optimizer="sgd", hook="fp16"),
    "seed_builtin_fp16": dict(net="seed", optimizer="sgd", hook="builtin_fp16"),
    "seed_builtin_allreduce": dict(net="seed", optimizer="adam", hook="builtin_allreduce"),
    "seed_replicate": dict(net="seed", optimizer="adam", replicate=True),
    "seed_zero_sgd": dict(net="seed", optimizer="sgd", zero=True),
    "seed_zero_adam": dict(net="seed", optimizer="adam", zero=True),
    "unused": dict(net="unused", optimizer="sgd", ddp=dict(find_unused_parameters=True)),
    "unused_static": dict(net="unused", optimizer="sgd", ddp=dict(static_graph=True)),
    "rank_dependent": dict(net="rank_dependent", optimizer="adam",
                           ddp=dict(find_unused_parameters=True)),
    "batchnorm": dict(net="batchnorm", optimizer="sgd"),
    "big_small_buckets": dict(net="big", optimizer="adam", steps=4, batch=32,
                              ddp=dict(bucket_cap_mb=1)),
    "big_default_buckets": dict(net="big", optimizer="sgd", steps=4, batch=32),
    "big_bucket_view": dict(net="big", optimizer="sgd", steps=4, batch=32, set_to_none=False,
                            ddp=dict(bucket_cap_mb=2, gradient_as_bucket_view=True)),
    # Deliberately wrong reducers, which the comparison must catch (with 3 ranks): a division
    # instead of torch's multiplication by 1/world_size, and the initial layout kept.
    "mutant_divide": dict(net="seed", optimizer="sgd", mutation="divide"),
    "mutant_keep_layout": dict(net="big", optimizer="sgd", steps=3, batch=16,
                               ddp=dict(bucket_cap_mb=1), mutation="keep_layout"),
}


@contextlib.contextmanager
def mutated(mutation: str | None) -> Iterator[None]:
    """shimnn's reducer with one deliberate deviation from torch's (none: as it is)."""
    from shimnn._reducer import Reducer

    if mutation is None:
        yield
        return
    name = {"divide": "mark_variable_ready_dense", "keep_layout": "_rebuild_buckets"}[mutation]
    original = getattr(Reducer, name)

    def divide(self: Any, index: int) -> None:
        bucket_index, i = self.variable_locators[index]
        bucket = self.buckets[bucket_index]
        torch.div(bucket.variables[i].grad, self.div_factor, out=bucket.views_in[i])

    def keep_layout(self: Any) -> bool:
        self.ensure_prior_reduction_finished()
        return False

    setattr(Reducer, name, divide if mutation == "divide" else keep_layout)
    try:
        yield
    finally:
        setattr(Reducer, name, original)


def _network(nn: ModuleType, net: str, dtype: torch.dtype) -> Any:
    if net == "seed":
        return make_network(nn, dtype=dtype)
    if net == "big":
        return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                             nn.Linear(1024, 10))
    if net == "batchnorm":
        return nn.Sequential(nn.Linear(2, 25), nn.BatchNorm1d(25), nn.ReLU(), nn.Linear(25, 1),
                             nn.Tanh())

    class Unused(nn.Module):  # type: ignore[name-defined,misc]
        """The seed network and a layer the forward never uses."""

        def __init__(self) -> None:
            super().__init__()
            self.body = make_network(nn)
            self.unused = nn.Linear(25, 3)

        def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
            return self.body(x)  # type: ignore[no-any-return]

    class RankDependent(nn.Module):  # type: ignore[name-defined,misc]
        """A branch that only some ranks use, at some steps (the used map decides)."""

        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 25)
            self.b = nn.Linear(25, 1)
            self.c = nn.Linear(25, 1)

        def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
            h = torch.relu(self.a(x))
            out = self.b(h)
            if (dist.get_rank() + step) % 2 == 0:
                out = out + self.c(h)
            return torch.tanh(out)

    return {"unused": Unused, "rank_dependent": RankDependent}[net]()


def _data(net: str, rank: int, step: int, batch: int, dtype: torch.dtype
          ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + step)
    if net == "big":
        return torch.rand(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g)
    return generate_disc_set(batch, g, dtype)


def _hook(ddp: Any, name: str) -> None:
    if name == "allreduce":
        ddp.register_comm_hook(None, default_hooks.allreduce_hook)
    elif name == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif name == "builtin_fp16":
        ddp._register_builtin_comm_hook(dist.BuiltinCommHookType.FP16_COMPRESS)
    else:
        ddp._register_builtin_comm_hook(dist.BuiltinCommHookType.ALLREDUCE)


def train(nn: ModuleType, optim: ModuleType, options: dict[str, Any]) -> dict[str, Any]:
    """Train one scenario with ``nn``'s modules and ``optim``'s optimizers."""
    rank = dist.get_rank()
    net, dtype = options["net"], options.get("dtype", torch.float32)
    torch.manual_seed(100 + rank)  # different on every rank: DDP broadcasts rank 0's
    model = _network(nn, net, dtype)
    if options.get("replicate"):  # the composable form: DDP inside, hooks on the module
        from torch.distributed._composable import replicate

        ddp = replicate(model, **options.get("ddp", {}))
    else:
        ddp = DDP(model, **options.get("ddp", {}))
    if "hook" in options:
        _hook(ddp, options["hook"])
    params = list(model.parameters())
    make = {"sgd": lambda ps, cls=optim.SGD: cls(ps, lr=0.05, momentum=0.9),
            "adam": lambda ps, cls=optim.Adam: cls(ps, lr=1e-3)}[options["optimizer"]]
    if options.get("zero"):
        from torch.distributed.optim import ZeroRedundancyOptimizer

        cls = optim.SGD if options["optimizer"] == "sgd" else optim.Adam
        kwargs = dict(lr=0.05, momentum=0.9) if cls is optim.SGD else dict(lr=1e-3)
        opt = ZeroRedundancyOptimizer(params, optimizer_class=cls, **kwargs)
    else:
        opt = make(params)
    criterion = nn.CrossEntropyLoss() if net == "big" else nn.MSELoss()
    record: dict[str, list[Any]] = {"loss": [], "grad": []}
    takes_step = net in ("unused", "rank_dependent")
    for step in range(options.get("steps", 6)):
        opt.zero_grad(set_to_none=options.get("set_to_none", True))
        batches = [_data(net, rank, 10 * step + i, options.get("batch", 50), dtype)
                   for i in range(options.get("accumulate", 0) + 1)]

        def forward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = ddp(x, step) if takes_step else ddp(x)
            loss = criterion(out, y)
            loss.backward()
            return loss.detach().clone()

        if len(batches) > 1:
            with ddp.no_sync():
                for x, y in batches[:-1]:
                    record["loss"].append(forward(x, y))
        record["loss"].append(forward(*batches[-1]))
        record["grad"].append([None if p.grad is None else p.grad.clone() for p in params])
        opt.step()
    record["state"] = [t.detach().clone() for t in model.state_dict().values()]
    record["params"] = [p.detach().clone() for p in params]
    return record


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def differences(ref: Any, got: Any, where: str = "") -> list[str]:
    """Where the two records differ (bits: -0.0 is not 0.0)."""
    if isinstance(ref, dict):
        return [d for k in ref for d in differences(ref[k], got[k], f"{where}.{k}")]
    if isinstance(ref, list):
        if len(ref) != len(got):
            return [f"{where}: {len(ref)} vs {len(got)} entries"]
        return [d for i, (a, b) in enumerate(zip(ref, got))
                for d in differences(a, b, f"{where}[{i}]")]
    if ref is None or got is None:
        return [] if ref is got else [f"{where}: {ref is None} vs {got is None} (None)"]
    if ref.dtype != got.dtype or ref.shape != got.shape or not torch.equal(_bits(ref),
                                                                             _bits(got)):
        diff = (ref.double() - got.double()).abs().max().item() if ref.shape == got.shape else -1
        return [f"{where}: differ ({ref.dtype} {tuple(ref.shape)} vs {got.dtype} "
                f"{tuple(got.shape)}, max abs diff {diff})"]
    return []


def digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(_bits(t).numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str]) -> int:
    rank, world, store, out = int(argv[0]), int(argv[1]), argv[2], argv[3]
    names = argv[4].split(",")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    results: dict[str, Any] = {}
    try:
        for name in names:
            options = SCENARIOS[name]
            reference = train(torch.nn, torch.optim, options)
            with assert_no_autograd(), mutated(options.get("mutation")):
                shimmed = train(shimnn, shimnn.optim, options)
            results[name] = {"differences": differences(reference, shimmed),
                             "torch": digest(reference["params"]),
                             "shimnn": digest(shimmed["params"]),
                             "steps": len(shimmed["loss"])}
    finally:
        torch.save(results, out)
        gc.collect()  # the DDPs (and the process group they hold) go first
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
