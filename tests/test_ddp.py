"""``torch.nn.parallel.DistributedDataParallel`` around shimnn models, bit for bit torch's DDP.

The multi-process tests start 2, 3 and 4 gloo ranks on 127.0.0.1 (``tests/ddp_worker.py``; a
file store for the rendezvous, so no port is chosen here, and gloo binds free ones itself) and
compare, on every rank, every loss, every reduced gradient and the final parameters with torch's
DDP around torch's modules, over the scenarios in ``ddp_worker.SCENARIOS``: the seed network and
784-1024-1024-10 (several buckets, rebuilt in gradient-ready order), SGD momentum and Adam,
``no_sync`` accumulation, unused parameters, ``static_graph``, ``gradient_as_bucket_view``,
``batched_grad_copy``, torch's comm hooks, ZeroRedundancyOptimizer, BatchNorm buffers. With 3
ranks only the exact division and bucket layout give torch's bits. Every rank's processes are
reaped, with a deadline. By default every scenario runs with 2 ranks and a subset with 3 and 4;
``SHIMNN_DDP_FULL=1`` runs every scenario with 2, 3 and 4 ranks.

The in-process tests (one rank) check what shimnn refuses, the errors torch raises, and the
engine pieces DDP needs: hooks on a parameter's AccumulateGrad, their order, final callbacks.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import shimnn
import shimnn.optim
from conftest import autograd_forbidden
from shimnn import _engine
from shimnn.disc import make_network

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORKER = Path(__file__).with_name("ddp_worker.py")
sys.path.insert(0, str(WORKER.parent))
import ddp_worker  # noqa: E402

FULL = os.environ.get("SHIMNN_DDP_FULL") == "1"
_DDP_OPTIONS = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters


def _missing_option(name: str) -> str | None:
    """The DDP keyword of scenario ``name`` that the installed torch's DDP lacks (torch 2.11
    has no ``batched_grad_copy``), or None."""
    return next((k for k in ddp_worker.SCENARIOS[name].get("ddp", {})
                 if k not in _DDP_OPTIONS), None)


def _scenario_param(world: int, name: str) -> Any:
    missing = _missing_option(name)
    return pytest.param(world, name, id=f"{world}-{name}", marks=[pytest.mark.skip(
        reason=f"torch {torch.__version__}'s DistributedDataParallel has no {missing}")]
        if missing else [])


ALL = [name for name in ddp_worker.SCENARIOS if not name.startswith("mutant")]
MUTANTS = [name for name in ddp_worker.SCENARIOS if name.startswith("mutant")]
PLAN: dict[int, list[str]] = {2: ALL, 3: ALL + MUTANTS, 4: ALL} if FULL else {
    2: [name for name in ALL if not name.startswith("big") and name != "seed_batched_copy"],
    3: ["seed_sgd", "seed_bucket_view", "seed_batched_copy", "seed_fp16_hook",
        "rank_dependent", "big_small_buckets", *MUTANTS],
    4: ["seed_sgd", "seed_adam", "rank_dependent"],
}
TIMEOUT = 900 if FULL else 300


def launch(world: int, scenarios: list[str], folder: Path, timeout: float) -> list[Any]:
    """Run ``world`` worker ranks to completion (killed at the deadline; always reaped) and
    return each rank's results."""
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    store, logs = folder / "store", [folder / f"rank{r}.log" for r in range(world)]
    procs: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        for rank in range(world):
            with open(logs[rank], "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, str(WORKER), str(rank), str(world), str(store),
                     str(folder / f"rank{rank}.pt"), ",".join(scenarios)],
                    stdout=log, stderr=subprocess.STDOUT, env=env))
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    if any(p.returncode != 0 for p in procs):
        tails = "\n".join(f"--- rank {r} (exit {p.returncode}):\n"
                          f"{logs[r].read_text(errors='replace')[-3000:]}"
                          for r, p in enumerate(procs))
        pytest.fail(f"a DDP worker failed or timed out after {timeout} s:\n{tails}")
    return [torch.load(folder / f"rank{r}.pt") for r in range(world)]


@functools.cache
def results(world: int) -> list[Any]:
    with tempfile.TemporaryDirectory() as folder:
        return launch(world, [name for name in PLAN[world] if _missing_option(name) is None],
                      Path(folder), TIMEOUT)


@pytest.mark.parametrize("world,scenario", [_scenario_param(w, s) for w, names in PLAN.items()
                                            for s in names if s not in MUTANTS])
def test_bitwise_equal_to_torch_ddp(world: int, scenario: str) -> None:
    ranks = [r[scenario] for r in results(world)]
    for rank, r in enumerate(ranks):
        assert r["differences"] == [], f"rank {rank}: {r['differences'][:5]}"
        assert r["shimnn"] == r["torch"]
    assert ranks[0]["steps"] >= 4
    # Different data on every rank, the same parameters at the end: the gradients were reduced.
    assert len({r["shimnn"] for r in ranks}) == 1


@pytest.mark.parametrize("scenario", MUTANTS)
def test_a_reducer_unlike_torchs_is_caught_with_3_ranks(scenario: str) -> None:
    """The comparison has teeth: dividing by 3 instead of multiplying by 1/3, or keeping the
    first iteration's bucket layout, changes the last bits (and is reported)."""
    for rank, r in enumerate(results(3)):
        assert r[scenario]["differences"], f"rank {rank}: the deviation went unnoticed"
        assert r[scenario]["shimnn"] != r[scenario]["torch"]


def test_plan_covers_the_issue() -> None:
    assert {"seed_sgd", "seed_adam", "seed_no_sync", "unused", "seed_allreduce_hook",
            "big_small_buckets"} <= set(PLAN[2]) | set(PLAN[3])
    assert "big_small_buckets" in PLAN[3] and len(PLAN[3]) >= 3


# ---------------------------------------------------------------------------------------------
# One rank, in this process
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def group(tmp_path: Path) -> Iterator[None]:
    """A one-rank gloo group for the test."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


DDP = torch.nn.parallel.DistributedDataParallel


def _raised(fn: Any) -> tuple[type[BaseException], str] | None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - comparing what each raises
        return type(exc), str(exc)
    return None


def _model(nn: Any) -> Any:
    torch.manual_seed(0)
    return make_network(nn)


def test_one_rank_trains_as_torch(group: None) -> None:
    runs = []
    for nn, optim in ((torch.nn, torch.optim), (shimnn, shimnn.optim)):
        model = DDP(_model(nn))
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses = []
        guard = autograd_forbidden() if nn is shimnn else contextlib.nullcontext()
        with guard:
            for step in range(5):
                g = torch.Generator().manual_seed(step)
                x, y = torch.rand(20, 2, generator=g), torch.rand(20, 1, generator=g)
                loss = nn.MSELoss()(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.detach())
        runs.append((torch.stack(losses), [p.detach() for p in model.parameters()]))
        assert type(model.reducer).__module__ == (
            "shimnn._reducer" if nn is shimnn else "torch._C._distributed_c10d")
    for a, b in zip(runs[0][1] + [runs[0][0]], runs[1][1] + [runs[1][0]]):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_unused_parameter_without_find_unused_raises_as_torch(group: None) -> None:
    """torch's error at the next iteration (the reduction never finished), word for word."""
    class Net(shimnn.Module):
        def __init__(self, nn: Any) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(2, 1), nn.Linear(2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    errors = []
    for nn in (torch.nn, shimnn):
        torch.manual_seed(0)
        model = DDP(Net(nn))
        model(torch.rand(3, 2)).sum().backward()
        errors.append(_raised(lambda: model(torch.rand(3, 2))))
    assert errors[0] is not None and errors[0] == errors[1]
    assert "find_unused_parameters=True" in errors[1][1]


def test_static_graph_after_training_raises_as_torch(group: None) -> None:
    errors = []
    for nn in (torch.nn, shimnn):
        model = DDP(_model(nn))
        model(torch.rand(3, 2)).sum().backward()
        errors.append(_raised(model._set_static_graph))
    assert errors[0] is not None and errors[0] == errors[1]


def test_comm_hook_errors_as_torch(group: None) -> None:
    """A second hook, and a hook that returns no future: torch's errors, as torch."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    for second in (lambda m: m.register_comm_hook(None, default_hooks.allreduce_hook),
                   lambda m: m._register_builtin_comm_hook(dist.BuiltinCommHookType.ALLREDUCE)):
        errors = []
        for nn in (torch.nn, shimnn):
            model = DDP(_model(nn))
            model.register_comm_hook(None, default_hooks.fp16_compress_hook)
            errors.append(_raised(lambda: second(model)))
        assert errors[0] is not None and errors[0] == errors[1]
    # bf16 compression needs NCCL: torch's own check refuses it without NCCL (the CPU build),
    # for both; a build with NCCL (the CUDA wheels of 2.11, 2.12) accepts it, for both
    errors = [_raised(lambda: DDP(_model(nn)).register_comm_hook(
        None, default_hooks.bf16_compress_hook)) for nn in (torch.nn, shimnn)]
    assert (errors[0] is None) == dist.is_nccl_available() and errors[0] == errors[1]
    model = DDP(_model(shimnn))
    model.register_comm_hook(None, lambda state, bucket: bucket.buffer())
    with pytest.raises(RuntimeError, match="must return a torch.futures.Future"):
        model(torch.rand(3, 2)).sum().backward()


def test_hooks_see_torchs_grad_bucket(group: None) -> None:
    """A Python hook gets GradBucket's API: index, buffer, gradients, parameters, is_last."""
    seen: dict[str, list[Any]] = {"torch": [], "shimnn": []}

    def hook(state, bucket):  # type: ignore[no-untyped-def]  (torch checks the annotations)
        state.append((bucket.index(), bucket.is_last(), bucket.buffer().clone(),
                      [g.clone() for g in bucket.gradients()],
                      [tuple(p.shape) for p in bucket.parameters()]))
        fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    for key, nn in (("torch", torch.nn), ("shimnn", shimnn)):
        model = DDP(_model(nn), bucket_cap_mb=0.001)
        model.register_comm_hook(seen[key], hook)
        for _ in range(2):  # the second backward has the rebuilt buckets
            model(torch.rand(3, 2)).sum().backward()
    assert len(seen["torch"]) == len(seen["shimnn"]) > 2
    for a, b in zip(seen["torch"], seen["shimnn"]):
        assert a[0] == b[0] and a[1] == b[1] and a[4] == b[4]
        assert torch.equal(a[2], b[2]) and all(torch.equal(x, y) for x, y in zip(a[3], b[3]))


@pytest.mark.parametrize("option", [
    "mixed_precision", "delay_all_reduce_named_params", "sparse", "complex", "python_reducer"])
def test_unsupported_options_raise_at_construction(group: None, option: str) -> None:
    model, kwargs = _model(shimnn), {}
    if option == "mixed_precision":
        kwargs = dict(mixed_precision=torch.nn.parallel.distributed._MixedPrecision(
            param_dtype=torch.float16))
    elif option == "delay_all_reduce_named_params":
        named = list(model.named_parameters())
        kwargs = dict(delay_all_reduce_named_params=named[:2],
                      param_to_hook_all_reduce=named[0][1])
    elif option == "sparse":
        model = shimnn.Sequential(shimnn.Embedding(10, 3, sparse=True), shimnn.Linear(3, 1))
    elif option == "complex":
        model = shimnn.Linear(2, 2, dtype=torch.complex64)
    mode = (torch._dynamo.config.patch(optimize_ddp="python_reducer")
            if option == "python_reducer" else contextlib.nullcontext())
    with mode, pytest.raises(NotImplementedError, match="shimnn"):
        DDP(model, **kwargs)


def test_join_and_optimizer_in_backward_raise(group: None) -> None:
    from torch.distributed.algorithms.join import Join
    from torch.distributed.optim import _apply_optimizer_in_backward

    model = DDP(_model(shimnn))
    with pytest.raises(NotImplementedError, match="shimnn.*join"):
        with model.join():
            pass
    with pytest.raises(NotImplementedError, match="shimnn.*Join"):
        with Join([model]):
            pass
    # _apply_optimizer_in_backward itself needs torch's autograd graph (it fails on shimnn
    # parameters by itself); DDP's part, for parameters that carry optimizers, refuses.
    inner = _model(shimnn)
    with pytest.raises(AttributeError):
        _apply_optimizer_in_backward(torch.optim.SGD, inner.parameters(), {"lr": 0.1})
    for p in inner.parameters():
        p._in_backward_optimizers = [torch.optim.SGD([p], lr=0.1)]
    with pytest.raises(NotImplementedError, match="shimnn.*optimizer in backward"):
        DDP(inner)(torch.rand(3, 2))


def test_torch_params_with_a_shimnn_forward_raise(group: None) -> None:
    """A model whose parameters are torch's but whose forward is shimnn's: torch's reducer
    would never see the gradients, so the forward refuses."""
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(1, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return shimnn.functional.linear(x, self.weight)

    model = DDP(Net())
    with pytest.raises(NotImplementedError, match="shimnn computed"):
        model(torch.rand(3, 2))
    with torch.no_grad():
        model(torch.rand(3, 2))  # nothing to reduce: allowed


def test_fsdp_and_fully_shard_raise(group: None) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    with pytest.raises(NotImplementedError, match="shimnn.*FullyShardedDataParallel"):
        FullyShardedDataParallel(_model(shimnn))
    with pytest.raises(NotImplementedError, match="shimnn.*fully_shard"):
        fully_shard(_model(shimnn))


def test_ddp_pickles_and_keeps_shimnns_reducer(group: None) -> None:
    import pickle

    model = DDP(_model(shimnn))
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone.reducer).__module__ == "shimnn._reducer"
    clone(torch.rand(3, 2)).sum().backward()
    assert all(p.grad is not None for p in clone.parameters())


# ---------------------------------------------------------------------------------------------
# The engine pieces
# ---------------------------------------------------------------------------------------------


def test_queue_callback_outside_backward_raises_as_torch() -> None:
    from torch.autograd.variable import Variable

    expected = _raised(lambda: Variable._execution_engine.queue_callback(lambda: None))
    assert expected is not None
    assert _raised(lambda: _engine.queue_callback(lambda: None)) == expected


def test_final_callbacks_run_after_the_walk_in_order() -> None:
    model = _model(shimnn)
    events: list[str] = []

    def hook(p: torch.Tensor) -> None:
        if not events:
            _engine.queue_callback(lambda: events.append("first"))
            _engine.queue_callback(lambda: (events.append("second"),
                                            _engine.queue_callback(lambda: events.append("3"))))
        events.append("leaf")

    for p in model.parameters():
        p.register_post_accumulate_grad_hook(hook)
    with autograd_forbidden():
        model(torch.rand(4, 2)).sum().backward()
    assert events == ["leaf"] * 8 + ["first", "second", "3"]


def _accumulate_order(nn: Any, build: Any, x: torch.Tensor) -> list[tuple[str, bool]]:
    """The order parameters' AccumulateGrad runs in, and whether a gradient was defined."""
    torch.manual_seed(0)
    model = build(nn)
    order: list[tuple[str, bool]] = []
    names = {id(p): n for n, p in model.named_parameters()}
    accumulators = []  # the tensors hold their AccumulateGrad weakly
    for p in model.parameters():
        name = names[id(p)]
        if nn is torch.nn:
            accumulators.append(p.view_as(p).grad_fn.next_functions[0][0])
            accumulators[-1].register_hook(lambda gi, go, name=name: order.append(
                (name, go[0] is not None)))
        else:
            _engine.register_accumulate_grad_hook(p, lambda leaf: order.append(
                (names[id(leaf)], leaf.grad is not None)))
    out = model(x)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    return order


class _Sink(torch.autograd.Function):
    """DDP's _DDPSink: outputs a loss does not use get undefined gradients."""

    @staticmethod
    def forward(ctx: Any, *xs: torch.Tensor) -> Any:
        ctx.set_materialize_grads(False)
        return tuple(x.clone() for x in xs)

    @staticmethod
    def backward(ctx: Any, *gs: Any) -> Any:
        return gs


def _two_heads(nn: Any) -> Any:
    class Net(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 3), nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> Any:
            return _Sink.apply(self.a(x), torch.relu(self.b(x)))

    return Net()


def _residual(nn: Any) -> Any:
    class Net(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(2, 5), nn.Linear(5, 5), nn.Linear(5, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.a(x))
            return self.c(h + torch.tanh(self.b(h)))  # type: ignore[no-any-return]

    return Net()


@pytest.mark.parametrize("build,shape", [
    (make_network, (7, 2)),
    (lambda nn: nn.Sequential(nn.Linear(8, 4), nn.Sigmoid(), nn.Linear(4, 2, bias=False),
                              nn.GELU(), nn.Linear(2, 1)), (5, 8)),
    (lambda nn: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), (2, 6, 3)),
    (lambda nn: nn.Linear(3, 2), (3,)),
    (_residual, (4, 2)),
    (_two_heads, (4, 2)),
], ids=["seed", "chain", "3d", "1d", "residual", "unused-output"])
def test_accumulate_grad_runs_in_torchs_order(build: Any, shape: tuple[int, ...]) -> None:
    """The order DDP's buckets are rebuilt in, and hooks see: torch's. A leaf that no defined
    gradient reached (behind an output the loss does not use) runs its AccumulateGrad too, as
    in torch, but at the end of shimnn's walk, since shimnn does not run nodes that received
    only undefined gradients (torch does, in their order; with DDP this only decides when a
    bucket is complete, not its layout: buckets are not rebuilt with find_unused_parameters)."""
    x = torch.rand(shape)
    expected = _accumulate_order(torch.nn, build, x)
    with autograd_forbidden():
        got = _accumulate_order(shimnn, build, x)
    assert [e for e in got if e[1]] == [e for e in expected if e[1]]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))


def test_accumulate_grad_hook_removed_and_freed() -> None:
    p = shimnn.Parameter(torch.ones(3))
    calls: list[int] = []
    handle = _engine.register_accumulate_grad_hook(p, lambda leaf: calls.append(1))
    (p * 2).sum().backward()
    handle.remove()
    (p * 2).sum().backward()
    assert calls == [1]
    key = id(p)
    del p, handle
    assert key not in _engine._ACCUMULATE_GRAD_HOOKS


def test_no_warning_spam_for_torch_models(group: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = DDP(_model(torch.nn))
        model(torch.rand(3, 2)).sum().backward()
