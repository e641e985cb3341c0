"""Reliability: memory, threads, checkpoints and a catalogue of misuse, with torch as the oracle.

- Memory: a graph that is never backpropagated is released with its output; a backward frees
  what the graph saved; thousands of training steps and forward-only evaluations do not grow
  the number of live nodes, Python's traced memory or the resident set.
- Concurrency: models trained in separate threads at the same time give, bit for bit, what they
  give when trained alone; backward calls of two threads interleave safely; grad mode is per
  thread.
- Checkpoints: ``torch.save`` of shimnn model and optimizer state continues in torch and back,
  bit-identical to uninterrupted training; ``copy.deepcopy``, ``pickle`` and whole-object
  ``torch.save`` of (model, optimizer); ``load_state_dict`` with bad entries behaves as torch's.
- Misuse: a table of named cases (backward misuse, integer inputs, wrong shapes and dtypes,
  invalid constructor arguments, NaN/inf, empty and 0-d tensors), each run under torch and
  under shimnn: the same exception type (and torch's message within shimnn's), or bit-identical
  results. torch modules shimnn lacks compute inside a shimnn graph and refuse a gradient,
  naming the operation.
"""

from __future__ import annotations

import copy
import gc
import io
import os
import pickle
import sys
import threading
import tracemalloc
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import shimnn
import shimnn.optim
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from parity import check_raises_like, random_like, reraise, twin_modules
from shimnn import Node

INF, NAN = float("inf"), float("nan")


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """One framework's names, so that a scenario is written once and run under both."""

    name: str
    nn: Any
    F: Any
    optim: Any

    def leaf(self, t: torch.Tensor) -> torch.Tensor:
        """A leaf that requires grad (under shimnn a ``shimnn.Parameter``, so that torch calls
        on it reach shimnn's ops, as ``parity.check_function`` does)."""
        t = t.detach().clone()
        return shimnn.Parameter(t) if self is SHIM else t.requires_grad_()

    def build(self, make: Callable[[Any], Any], seed: int = 0) -> Any:
        """``make(nn)`` from a fixed seed: the same weights under both frameworks."""
        torch.manual_seed(seed)
        return make(self.nn)


TORCH = Api("torch", torch.nn, torch.nn.functional, torch.optim)
SHIM = Api("shimnn", shimnn, shimnn.functional, shimnn.optim)


def assert_same_tree(shim: Any, ref: Any, what: str = "result") -> None:
    """Bit-identical tensors (``conftest.assert_same``) inside equal nested containers."""
    if isinstance(ref, torch.Tensor) or ref is None:
        assert ref is None or isinstance(shim, torch.Tensor), f"{what}: {shim!r} vs {ref!r}"
        assert_same(shim, ref, what)
    elif isinstance(ref, (tuple, list)):
        assert type(shim) is type(ref) and len(shim) == len(ref), f"{what}: {shim!r} vs {ref!r}"
        for i, (a, b) in enumerate(zip(shim, ref)):
            assert_same_tree(a, b, f"{what}[{i}]")
    elif isinstance(ref, dict):
        assert list(shim) == list(ref), f"{what}: keys {list(shim)} vs {list(ref)}"
        for k in ref:
            assert_same_tree(shim[k], ref[k], f"{what}[{k!r}]")
    else:
        assert shim == ref, f"{what}: {shim!r} vs {ref!r}"


def tensors_in(tree: Any) -> list[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for item in tree for t in tensors_in(item)]
    if isinstance(tree, dict):
        return tensors_in(list(tree.values()))
    return []


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    """Every parameter's gradient, by name."""
    return {n: p.grad for n, p in model.named_parameters()}


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's value (detached copies), by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture
def one_intra_op_thread() -> Iterator[None]:
    """Run torch kernels on the calling thread only, restoring the setting afterwards.

    On a shared two-core machine torch's intra-op threads spin against other processes, which
    makes a small-matrix step vary from 0.2 ms to 10 ms; the memory tests run thousands of steps
    and measure memory, not kernels, so they take the predictable single-threaded path.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def live_node_ids() -> set[int]:
    """The ids of every live ``shimnn.Node`` (nodes have ``__slots__`` and no ``__weakref__``,
    so the garbage collector's list of tracked objects is how to see them)."""
    return {id(o) for o in gc.get_objects() if type(o) is Node}


def graph_nodes(root: Node | None) -> list[Node]:
    """Every node reachable from ``root`` through its input edges."""
    found: dict[int, Node] = {}
    stack: list[Any] = [root]
    while stack:
        n = stack.pop()
        if type(n) is Node and id(n) not in found:
            found[id(n)] = n
            stack.extend(n.inputs)
    return list(found.values())


class PerOpNet(shimnn.Module):
    """A user-defined module: every layer a separate node, torch calls between them."""

    def __init__(self) -> None:
        super().__init__()
        self.a = shimnn.Linear(8, 16)
        self.b = shimnn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.b(torch.tanh(self.a(x))) * 2.0, -1)


MEMORY_MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "fused matrix chain": lambda: shimnn.Sequential(
        shimnn.Linear(8, 16), shimnn.ReLU(), shimnn.Linear(16, 4), shimnn.Tanh()),
    "fused general chain": lambda: shimnn.Sequential(
        shimnn.Linear(8, 16), shimnn.Sigmoid(), shimnn.Linear(16, 4), shimnn.LogSoftmax(-1)),
    "unfused Sequential": lambda: shimnn.Sequential(
        shimnn.Linear(8, 16), shimnn.Dropout(0.0), shimnn.GELU(), shimnn.Flatten(0, -1),
        shimnn.Unflatten(0, (5, 16)), shimnn.Linear(16, 4)),
    "per-op module": PerOpNet,
}


def _own_saved(nodes: list[Node], model: torch.nn.Module, x: torch.Tensor
               ) -> list[weakref.ref[torch.Tensor]]:
    """Weak references to what the graph saved, except parameters and the caller's input
    (which the caller keeps alive); non-empty, or the test would prove nothing."""
    keep = {id(p) for p in model.parameters()} | {id(x)}
    saved = [weakref.ref(t) for n in nodes for t in (n.saved or ()) if id(t) not in keep]
    assert saved, "the graph saved nothing of its own"
    return saved


@pytest.mark.parametrize("name", list(MEMORY_MODELS))
def test_unused_graph_is_released_with_its_output(name: str) -> None:
    """A grad-mode forward never backpropagated: dropping the loss frees every node and every
    saved tensor at once, by reference counting (the cyclic collector is off)."""
    torch.manual_seed(0)
    model = MEMORY_MODELS[name]()
    x = torch.randn(5, 8)
    gc.collect()
    before = live_node_ids()
    gc.disable()
    try:
        loss = shimnn.MSELoss()(model(x), torch.zeros(5, 4))
        created = live_node_ids() - before
        nodes = graph_nodes(loss.shim_fn)
        assert {id(n) for n in nodes} == created
        saved = _own_saved(nodes, model, x)
        loss_ref = weakref.ref(loss)
        del loss, nodes
        assert loss_ref() is None
        assert [r for r in saved if r() is not None] == []
        assert live_node_ids() & created == set()
    finally:
        gc.enable()


@pytest.mark.parametrize("name", list(MEMORY_MODELS))
def test_backward_releases_the_graph(name: str) -> None:
    """After backward the nodes hold nothing (their saved tensors are gone while the loss is
    still alive); with retain_graph they hold everything until the last backward."""
    torch.manual_seed(0)
    model = MEMORY_MODELS[name]()
    x = torch.randn(5, 8)
    loss = shimnn.MSELoss()(model(x), torch.zeros(5, 4))
    nodes = graph_nodes(loss.shim_fn)
    saved = _own_saved(nodes, model, x)
    saving = [n for n in nodes if n.saved]  # view nodes save nothing and keep nothing
    loss.backward(retain_graph=True)
    assert all(r() is not None for r in saved)
    assert all(n.saved and n.backward is not None for n in saving)
    loss.backward()
    assert all(n.saved is None and n.backward is None for n in saving)
    gc.collect()
    assert [r for r in saved if r() is not None] == []


def resident_bytes() -> int:
    """The process's resident set size, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_tensor_bytes() -> int:
    """The bytes of every distinct storage that a live Python tensor views (tensor storage is
    allocated outside Python's allocator, so tracemalloc does not see it)."""
    seen: set[int] = set()
    total = 0
    with torch._C.DisableTorchFunctionSubclass():
        for o in gc.get_objects():
            if not issubclass(type(o), torch.Tensor):  # (no attribute access on odd objects)
                continue
            try:
                storage = o.untyped_storage()
            except (RuntimeError, NotImplementedError):  # sparse, meta...
                continue
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


@dataclass
class Growth:
    """What a loop added: live nodes, Python-traced bytes, tensor storage bytes, resident
    bytes."""

    nodes: int
    traced: int
    tensors: int
    resident: int


def measure_growth(step: Callable[[], Any], warmup: int, steps: int) -> Growth:
    """Run ``step`` ``warmup`` times (optimizer state, caches and allocator pools settle), then
    ``steps`` times under tracemalloc; return what is still live afterwards."""
    for _ in range(warmup):
        step()
    gc.collect()
    nodes_before, tensors_before = len(live_node_ids()), live_tensor_bytes()
    resident_before = resident_bytes()
    tracemalloc.start()
    try:
        traced_before = tracemalloc.get_traced_memory()[0]
        for _ in range(steps):
            step()
        gc.collect()
        traced_after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return Growth(len(live_node_ids()) - nodes_before, traced_after - traced_before,
                  live_tensor_bytes() - tensors_before, resident_bytes() - resident_before)


# Bounds for a loop of a few thousand steps after warm-up. Python objects: one leaked node (a
# Node with its tuples is well over 200 bytes) per step would add > 400 KB over 2,000 steps;
# 64 KiB leaves room for one-off caches (interned strings, tracemalloc's own frames) and none for
# a per-step leak. Tensor storage: the loops' activations are 64x64 float32 (16 KiB) each, so
# one leaked activation per step passes 64 KiB within 5 steps. Resident memory is the coarse,
# whole-process check: one leaked activation per step adds > 32 MB over 2,000 steps in a fresh
# process; 8 MiB is the allocator's and interpreter's noise (glibc keeps freed pages,
# tracemalloc's tables grow). It can also miss a leak: a process that freed memory earlier (the
# rest of the suite) reuses those pages first, which is why the two exact measures come first.
TRACED_BOUND = 64 * 1024
TENSOR_BOUND = 64 * 1024
RESIDENT_BOUND = 8 * 1024 * 1024


def test_growth_measurement_detects_a_leak(one_intra_op_thread: None) -> None:
    """The measurement can fail: keeping every step's loss (its graph and saved activations)
    exceeds the node, Python-memory and tensor-memory bounds within 500 steps. (Resident
    memory need not grow: see the bounds' comment.)"""
    model, x, y = _mlp(), torch.randn(64, 16), torch.randn(64, 1)
    leaked: list[torch.Tensor] = []
    growth = measure_growth(lambda: leaked.append(shimnn.MSELoss()(model(x), y)), 10, 500)
    leaked.clear()
    assert growth.nodes == 2 * 500, growth  # the fused chain's node and the loss's, per step
    assert growth.traced > TRACED_BOUND and growth.tensors > TENSOR_BOUND, growth


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return shimnn.Sequential(shimnn.Linear(16, 64), shimnn.ReLU(), shimnn.Linear(64, 64),
                             shimnn.Tanh(), shimnn.Linear(64, 1))


def test_training_loop_does_not_grow(one_intra_op_thread: None) -> None:
    """3,000 steps of a small MLP with momentum SGD, as a script would train it."""
    model = _mlp()
    opt = shimnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 16), torch.randn(64, 1)
    loss_fn = shimnn.MSELoss()
    losses: list[float] = []

    def step() -> None:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if len(losses) < 10:
            losses.append(loss.item())

    growth = measure_growth(step, warmup=200, steps=3000)
    assert growth.nodes == 0, growth
    assert growth.traced < TRACED_BOUND, growth
    assert growth.tensors < TENSOR_BOUND, growth
    assert growth.resident < RESIDENT_BOUND, growth
    assert losses[-1] < losses[0]  # it did train


def test_forward_only_evaluations_do_not_grow(one_intra_op_thread: None) -> None:
    """2,000 grad-mode forwards (fused and per-op, with a loss) never backpropagated."""
    fused, per_op = _mlp(), PerOpNet()
    x, x8 = torch.randn(64, 16), torch.randn(64, 8)
    y = torch.randn(64, 1)
    kept: list[torch.Tensor] = []

    def step() -> None:
        loss = shimnn.MSELoss()(fused(x), y)
        out = per_op(x8)
        assert loss.shim_fn is not None and out.shim_fn is not None
        kept[:] = [loss]  # the previous iteration's graph is dropped here, as in a loop

    growth = measure_growth(step, warmup=100, steps=2000)
    kept.clear()
    assert growth.nodes == 0, growth  # (the last loss's graph replaced the warm-up's)
    assert growth.traced < TRACED_BOUND, growth
    assert growth.tensors < TENSOR_BOUND, growth
    assert growth.resident < RESIDENT_BOUND, growth


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One model's training run: built in the main thread (torch's default generator is global
    and not per thread), trained wherever."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    loss: torch.nn.Module
    batches: list[tuple[torch.Tensor, torch.Tensor]]


class TwoLayer(shimnn.Module):
    """A user-defined module with torch calls between layers (the per-op path)."""

    def __init__(self, n_in: int, hidden: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.fc1 = shimnn.Linear(n_in, hidden, dtype=dtype)
        self.fc2 = shimnn.Linear(hidden, 1, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)) * 0.5 + torch.tanh(self.fc1(x)))


def _batches(seed: int, n: int, shape: tuple[int, int], target: Callable[[torch.Generator], Any],
             dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=g, dtype=dtype), target(g)) for _ in range(n)]


def make_jobs(steps: int) -> list[Job]:
    """Three different models, sizes, dtypes, losses and optimizers, from different seeds."""
    torch.manual_seed(1)
    a = shimnn.Sequential(shimnn.Linear(4, 32), shimnn.Tanh(), shimnn.Linear(32, 3))
    torch.manual_seed(2)
    b = TwoLayer(6, 24, torch.float64)
    torch.manual_seed(3)
    c = shimnn.Sequential(shimnn.Linear(3, 8), shimnn.GELU(), shimnn.Flatten(),
                          shimnn.Linear(8, 8), shimnn.Softplus(), shimnn.Linear(8, 2))
    return [
        Job(a, shimnn.optim.SGD(a.parameters(), lr=0.05, momentum=0.9), shimnn.CrossEntropyLoss(),
            _batches(11, steps, (16, 4), lambda g: torch.randint(0, 3, (16,), generator=g))),
        Job(b, shimnn.optim.Adam(b.parameters(), lr=0.01), shimnn.MSELoss(),
            _batches(12, steps, (10, 6),
                     lambda g: torch.randn(10, 1, generator=g, dtype=torch.float64),
                     torch.float64)),
        Job(c, shimnn.optim.RMSprop(c.parameters(), lr=0.01, momentum=0.5),
            shimnn.SmoothL1Loss(), _batches(13, steps, (7, 3), lambda g: torch.randn(
                7, 2, generator=g))),
    ]


def train(job: Job, barrier: threading.Barrier | None = None) -> list[torch.Tensor]:
    """The job's training loop; returns the loss of every step. With a barrier, every thread
    finishes its forward before any starts its backward, and its backward before any steps."""
    losses = []
    for x, y in job.batches:
        job.opt.zero_grad()
        loss = job.loss(job.model(x), y)
        if barrier is not None:
            barrier.wait()
        loss.backward()
        if barrier is not None:
            barrier.wait()
        job.opt.step()
        losses.append(loss.detach().clone())
    return losses


def run_threads(targets: list[Callable[[], Any]], barriers: tuple[threading.Barrier, ...] = ()
                ) -> list[Any]:
    """Run each target in its own thread, all released at once; re-raise the first error
    (after breaking ``barriers``, which the targets share, so that no thread waits forever).

    The interpreter switches threads every microsecond meanwhile (instead of every 5 ms), so
    that shimnn's Python code interleaves as finely as it can."""
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets), timeout=60)

    def body(i: int) -> None:
        try:
            start.wait()
            results[i] = targets[i]()
        except BaseException as e:  # noqa: B036 - handed to the main thread
            errors.append(e)
            for barrier in (start, *barriers):
                barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(targets))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def _assert_same_runs(shim: tuple[list[torch.Tensor], Job], ref: tuple[list[torch.Tensor], Job],
                      what: str) -> None:
    (losses, job), (ref_losses, ref_job) = shim, ref
    assert_same_tree(losses, ref_losses, f"{what}: losses")
    assert_same_tree(params(job.model), params(ref_job.model), f"{what}: parameters")


def test_models_trained_in_threads_match_training_alone() -> None:
    """Three different models trained at the same time, one per thread."""
    steps = 150
    alone = [(train(job), job) for job in make_jobs(steps)]
    jobs = make_jobs(steps)
    with autograd_forbidden():
        together = run_threads([lambda job=job: train(job) for job in jobs])
    for i, (losses, job) in enumerate(zip(together, jobs)):
        _assert_same_runs((losses, job), alone[i], f"model {i}")


def test_interleaved_backward_calls_match_training_alone() -> None:
    """Two threads in lockstep: both forwards, then both backwards at once, then both steps."""
    steps = 100
    alone = [(train(job), job) for job in make_jobs(steps)[:2]]
    jobs = make_jobs(steps)[:2]
    barrier = threading.Barrier(2, timeout=60)
    with autograd_forbidden():
        together = run_threads([lambda job=job: train(job, barrier) for job in jobs],
                               (barrier,))
    for i, (losses, job) in enumerate(zip(together, jobs)):
        _assert_same_runs((losses, job), alone[i], f"model {i}")


def test_grad_mode_is_per_thread() -> None:
    """One thread evaluates under no_grad while another trains: the evaluations record no graph
    and the training is unchanged (shimnn switches grad mode off around every kernel)."""
    steps = 60
    alone_job = make_jobs(steps)[0]
    alone = (train(alone_job), alone_job)
    job, evaluated = make_jobs(steps)[0], make_jobs(steps)[2]
    x = torch.randn(7, 3)

    def evaluate() -> bool:
        with torch.no_grad():
            for _ in range(steps * 5):
                out = evaluated.model(x)
                if out.shim_fn is not None or out.requires_grad:
                    return False
        return True

    with autograd_forbidden():
        losses, no_graph = run_threads([lambda: train(job), evaluate])
    assert no_graph
    _assert_same_runs((losses, job), alone, "trained next to a no_grad thread")


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _classifier(nn: Any) -> torch.nn.Module:
    return nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(),
                         nn.Linear(12, 3))


OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "SGD-momentum": ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "Adam": ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
}


def test_checkpointed_optimizers_are_shimnn_own() -> None:
    """The optimizers exchanged below are shimnn's own classes, not torch's re-exported."""
    for name in ("SGD", "Adam"):
        assert getattr(shimnn.optim, name).__module__.startswith("shimnn.optim")
        assert getattr(shimnn.optim, name) is not getattr(torch.optim, name)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)


def train_steps(api: Api, model: torch.nn.Module, opt: torch.optim.Optimizer, first: int,
                n: int) -> list[torch.Tensor]:
    """Steps ``first`` .. ``first + n - 1`` (each with its own batch); their losses."""
    losses = []
    loss_fn = api.nn.CrossEntropyLoss()
    for step in range(first, first + n):
        x, y = _batch(step)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach().clone())
    return losses


def _optimizer(api: Api, model: torch.nn.Module, key: str) -> torch.optim.Optimizer:
    name, options = OPTIMIZERS[key]
    return getattr(api.optim, name)(model.parameters(), **options)  # type: ignore[no-any-return]


def _saved(obj: Any) -> Any:
    """``obj`` through ``torch.save`` and ``torch.load`` (weights_only, torch's default)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("direction", ["shimnn->torch", "torch->shimnn"])
@pytest.mark.parametrize("key", list(OPTIMIZERS))
def test_checkpoint_resumes_bit_identically_across_frameworks(key: str, direction: str) -> None:
    source, dest = (SHIM, TORCH) if direction == "shimnn->torch" else (TORCH, SHIM)
    model = source.build(_classifier, seed=0)
    opt = _optimizer(source, model, key)
    train_steps(source, model, opt, 0, 5)
    checkpoint = _saved({"model": model.state_dict(), "optim": opt.state_dict()})
    # The destination starts from other weights: the checkpoint must overwrite all of them.
    resumed = dest.build(_classifier, seed=99)
    resumed_opt = _optimizer(dest, resumed, key)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optim"])
    if dest is SHIM:
        assert all(isinstance(p, shimnn.Parameter) for p in resumed.parameters())
        with autograd_forbidden():
            resumed_losses = train_steps(dest, resumed, resumed_opt, 5, 8)
    else:
        resumed_losses = train_steps(dest, resumed, resumed_opt, 5, 8)
    uninterrupted = train_steps(source, model, opt, 5, 8)
    assert_same_tree(resumed_losses, uninterrupted, "losses after resuming")
    assert_same_tree(params(resumed), params(model), "parameters after resuming")
    assert_same_tree(_optimizer_state(resumed_opt), _optimizer_state(opt), "optimizer state")


def _optimizer_state(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [dict(opt.state[p]) for group in opt.param_groups for p in group["params"]]


def _copies(pair: tuple[torch.nn.Module, torch.optim.Optimizer]
            ) -> dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]]:
    buf = io.BytesIO()
    torch.save(pair, buf)
    buf.seek(0)
    return {
        "deepcopy": copy.deepcopy(pair),
        "pickle": pickle.loads(pickle.dumps(pair)),
        "torch.save": torch.load(buf, weights_only=False),
    }


@pytest.mark.parametrize("key", list(OPTIMIZERS))
def test_copied_model_and_optimizer_train_like_torch_copies(key: str) -> None:
    """(model, optimizer) copied mid-training, with gradients present: the copy keeps shimnn's
    classes, the link between optimizer and parameters, and trains like the torch twin copied
    the same way; training it leaves the original alone."""
    ref, shim = twin_modules(_classifier)
    ref_opt, shim_opt = _optimizer(TORCH, ref, key), _optimizer(SHIM, shim, key)
    train_steps(TORCH, ref, ref_opt, 0, 3)
    train_steps(SHIM, shim, shim_opt, 0, 3)
    original = params(shim)
    ref_copies = _copies((ref, ref_opt))
    for how, (model, opt) in _copies((shim, shim_opt)).items():
        ref_model, ref_model_opt = ref_copies[how]
        assert type(model) is shimnn.Sequential and type(opt) is type(shim_opt), how
        assert all(type(p) is shimnn.Parameter for p in model.parameters()), how
        assert opt.param_groups[0]["params"][0] is next(model.parameters()), how
        assert_same_tree(grads(model), grads(ref_model), f"{how}: gradients of the copy")
        assert_same_tree(_optimizer_state(opt), _optimizer_state(ref_model_opt), how)
        with autograd_forbidden():
            losses = train_steps(SHIM, model, opt, 3, 4)
        ref_losses = train_steps(TORCH, ref_model, ref_model_opt, 3, 4)
        assert_same_tree(losses, ref_losses, f"{how}: losses")
        assert_same_tree(params(model), params(ref_model), f"{how}: parameters")
        assert_same_tree(params(shim), original, f"{how}: the original after training a copy")


def _state_dict_edit(edit: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    if "missing" in edit:
        del sd["2.bias"]
    if "unexpected" in edit:
        sd["9.weight"] = torch.zeros(2)
        sd["2.extra"] = torch.zeros(1)
    if "shape" in edit:
        sd["0.weight"] = torch.zeros(12, 4)
    if "dtype" in edit:
        sd["2.weight"] = sd["2.weight"].double() + 1
    return sd


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("edit", ["none", "missing", "unexpected", "missing+unexpected",
                                  "shape", "shape+missing", "dtype"])
def test_load_state_dict_with_bad_entries_like_torch(edit: str, strict: bool) -> None:
    """Same exception type and message, or the same (missing_keys, unexpected_keys); and the
    same weights afterwards (torch copies the good entries even when it raises)."""
    ref, shim = twin_modules(_classifier, seed=0)
    source = _state_dict_edit(edit, dict(TORCH.build(_classifier, seed=5).state_dict()))
    ref_call = lambda: ref.load_state_dict(source, strict=strict)  # noqa: E731
    shim_call = lambda: shim.load_state_dict(source, strict=strict)  # noqa: E731
    try:
        ref_result = ref_call()
    except Exception as e:
        ref_exc, shim_exc = check_raises_like(reraise(e), shim_call)
        assert str(shim_exc) == str(ref_exc)
    else:
        shim_result = shim_call()
        assert shim_result == ref_result
        assert type(shim_result) is type(ref_result)
    assert_same_tree(params(shim), params(ref), "weights after the load")
    assert all(type(p) is shimnn.Parameter for p in shim.parameters())


# ---------------------------------------------------------------------------------------------
# Misuse catalogue
# ---------------------------------------------------------------------------------------------


TORCHS, SAME = "<torch's message within shimnn's>", "<the same message>"
# A case whose outcome differs between torch releases (mse_loss_backward refuses mixed dtypes in
# torch 2.11; 2.13 promotes): whatever the installed torch does, shimnn must do.
VARIES = "<the installed torch decides>"


@dataclass(frozen=True)
class Misuse:
    """A named scenario run under both frameworks.

    ``run(api)`` returns what to compare (tensors, gradients, flags); raising is an outcome
    too. ``torch_raises`` is what torch does (an exception type, or ``None``: it returns), so
    the case is known to test what its name says. When both raise, the types must be the same,
    and ``message`` says how the messages compare: ``TORCHS`` (shimnn's contains torch's:
    shimnn may prefix the module and its inputs), ``SAME`` (verbatim), or a phrase both must
    contain (the engine's errors: torch adds hints about its anomaly mode).
    """

    name: str
    run: Callable[[Api], Any]
    torch_raises: type[BaseException] | None | str
    message: str = TORCHS


def check_misuse(case: Misuse) -> None:
    """Run ``case`` under torch, then under shimnn (autograd forbidden); compare outcomes."""
    with warnings.catch_warnings(record=True) as ref_warnings:
        warnings.simplefilter("always")
        try:
            ref_value = case.run(TORCH)
            ref_exc: BaseException | None = None
        except Exception as e:
            ref_exc = e
    if case.torch_raises is VARIES:
        pass
    elif case.torch_raises is None:
        assert ref_exc is None, f"torch raised {ref_exc!r}"
    else:
        assert type(ref_exc) is case.torch_raises, f"torch raised {ref_exc!r}"
    with warnings.catch_warnings(record=True) as shim_warnings:
        warnings.simplefilter("always")
        if ref_exc is not None:
            ref_e, shim_e = check_raises_like(reraise(ref_exc), lambda: case.run(SHIM))
            if case.message == SAME:
                assert str(shim_e) == str(ref_e)
            elif case.message == TORCHS:
                assert str(ref_e) in str(shim_e), f"shimnn: {shim_e}\ntorch: {ref_e}"
            else:
                assert case.message in str(ref_e) and case.message in str(shim_e), (
                    f"shimnn: {shim_e}\ntorch: {ref_e}")
        else:
            with autograd_forbidden():
                shim_value = case.run(SHIM)
            assert_no_autograd_graph(*tensors_in(shim_value))
            assert_same_tree(shim_value, ref_value)
    assert [(w.category, str(w.message)) for w in shim_warnings] == [
        (w.category, str(w.message)) for w in ref_warnings]


def _x(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def _ints(*shape: int, high: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(-high, high + 1, shape, generator=g)


def _mlp_of(api: Api) -> torch.nn.Module:
    return api.build(lambda nn: nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)))


def _per_op_of(api: Api) -> Callable[[torch.Tensor], torch.Tensor]:
    lin1, lin2 = api.build(lambda nn: (nn.Linear(3, 4), nn.Linear(4, 2)))
    return lambda x: lin2(api.F.tanh(lin1(x)))


def _forward_backward(api: Api, module: torch.nn.Module, *inputs: torch.Tensor
                      ) -> tuple[Any, ...]:
    """``module(*leaves)``; backward of a random gradient if the output has a graph; returns
    the output, the inputs' gradients and the module's parameter gradients."""
    leaves = [api.leaf(t) if t.dtype.is_floating_point else t for t in inputs]
    out = module(*leaves)
    if out.requires_grad:
        out.backward(random_like(out, 3))
    return (out, [t.grad if t.dtype.is_floating_point else None for t in leaves],
            grads(module))


def _backward_twice(api: Api, fused: bool) -> Any:
    """The second backward through a freed graph."""
    x = _x(5, 3)
    out = _mlp_of(api)(x) if fused else _per_op_of(api)(x)
    loss = api.nn.MSELoss()(out, torch.zeros(5, 2))
    loss.backward()
    loss.backward()


def _backward_after_retain(api: Api) -> Any:
    """retain_graph keeps the graph for exactly one more backward."""
    loss = api.nn.MSELoss()(_mlp_of(api)(_x(5, 3)), torch.zeros(5, 2))
    loss.backward(retain_graph=True)
    loss.backward()
    loss.backward()


def _no_graph(api: Api, how: str) -> Any:
    """backward() of a scalar that has no graph."""
    model = _mlp_of(api)
    if how == "no_grad":
        with torch.no_grad():
            out = model(_x(5, 3)).sum()
    elif how == "detach":
        out = model(_x(5, 3)).sum().detach()
    elif how == "frozen model":  # nothing requires grad: frozen parameters, plain input
        model.requires_grad_(False)
        out = model(_x(5, 3)).sum()
    else:  # an integer result of a tracked tensor
        out = model(_x(5, 3)).argmax()
    out.backward()


def _modified_saved(api: Api, what: str) -> Any:
    """A tensor the graph saved is changed in place between forward and backward."""
    x = _x(5, 3)
    model = _mlp_of(api)
    lin1, act, lin2 = model[0], model[1], model[2]
    fused = what.endswith("fused")
    if what.startswith("a saved activation"):
        h = act(lin1(x))  # Sigmoid saves its output
        if "grad mode" in what:
            h += 1.0
            out = lin2(h)
        else:
            out = lin2(h)
            with torch.no_grad():
                h.add_(1.0)
    elif what == "the input saved by Linear":  # for the first weight's gradient
        out = model(x)
        x.add_(1.0)
    else:
        out = model(x) if fused else lin2(act(lin1(x)))
        # The second weight multiplies a tensor that needs a gradient: backward reads it. The
        # first one multiplies the input, which needs none: backward never reads it.
        with torch.no_grad():
            (lin2 if "needed" in what else lin1).weight.mul_(0.5)
    out.sum().backward()
    return grads(model)


def _int_into_module(api: Api, name: str, kwargs: dict[str, Any]) -> Any:
    module = api.build(lambda nn: getattr(nn, name)(**kwargs))
    return _forward_backward(api, module, _ints(4, 3))


def _loss_call(api: Api, name: str, kwargs: dict[str, Any], input: torch.Tensor,
               target: torch.Tensor) -> Any:
    """A loss module on (input, target); backward when it has a graph; the result and the
    input's gradient."""
    leaf = api.leaf(input) if input.dtype.is_floating_point else input
    out = getattr(api.nn, name)(**kwargs)(leaf, target)
    if out.requires_grad:
        out.backward(random_like(out, 4))
    return out, getattr(leaf, "grad", None)


def _module_call(make: Callable[[Any], torch.nn.Module], *inputs: torch.Tensor
                 ) -> Callable[[Api], Any]:
    return lambda api: _forward_backward(api, api.build(make), *inputs)


def _optimizer_ctor(name: str, **kwargs: Any) -> Callable[[Api], Any]:
    def run(api: Api) -> Any:
        getattr(api.optim, name)([api.leaf(torch.zeros(2))], **kwargs)

    return run


def _nonfinite(*values: float, shape: tuple[int, int] = (4, 3)) -> torch.Tensor:
    x = _x(*shape)
    flat = x.view(-1)
    for i, v in enumerate(values):
        flat[(5 * i + 1) % flat.numel()] = v
    return x


def _weights_with(api: Api, value: float) -> torch.nn.Module:
    model = _mlp_of(api)
    with torch.no_grad():
        model[0].weight[1, 2] = value
        model[2].bias[0] = value
    return model


ACTIVATIONS: list[tuple[str, dict[str, Any]]] = [
    ("ReLU", {}), ("ReLU", {"inplace": True}), ("Tanh", {}), ("Sigmoid", {}),
    ("LeakyReLU", {}), ("ELU", {}), ("GELU", {}), ("SiLU", {}), ("Softplus", {}),
    ("Hardtanh", {}), ("ReLU6", {}), ("Identity", {}), ("Softmax", {"dim": -1}),
    ("LogSoftmax", {"dim": -1}), ("Dropout", {"p": 0.5}),
]
POINTWISE_LOSSES = ["MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "BCEWithLogitsLoss"]
_CE = "CrossEntropyLoss"
_T3 = torch.tensor([0, 2, 1])

SECOND_TIME = "backward through the graph a second time"
INPLACE = "modified by an inplace operation"
NOT_FOR_LONG = {"LeakyReLU", "ELU", "GELU", "SiLU", "Softplus", "Softmax", "LogSoftmax"}

MISUSES: list[Misuse] = [
    # --- backward misuse --------------------------------------------------------------------
    Misuse("backward twice, fused Sequential", lambda api: _backward_twice(api, True),
           RuntimeError, SECOND_TIME),
    Misuse("backward twice, per-op", lambda api: _backward_twice(api, False), RuntimeError,
           SECOND_TIME),
    Misuse("backward thrice after one retain_graph", _backward_after_retain, RuntimeError,
           SECOND_TIME),
    *[Misuse(f"backward without a graph: {how}", lambda api, how=how: _no_graph(api, how),
             RuntimeError, message=SAME) for how in ("no_grad", "detach", "frozen model")],
    *[Misuse(f"backward after in-place change of {what}",
             lambda api, what=what: _modified_saved(api, what), RuntimeError, INPLACE)
      for what in ("a saved activation in grad mode (+=)", "a saved activation under no_grad",
                   "the input saved by Linear", "a needed parameter, fused",
                   "a needed parameter, per-op")],
    *[Misuse(f"in-place change of {what}: backward does not need it",
             lambda api, what=what: _modified_saved(api, what), None)
      for what in ("the first weight, fused", "the first weight, per-op")],
    Misuse("backward with a gradient of the wrong shape",
           lambda api: _mlp_of(api)(_x(5, 3)).backward(torch.ones(5, 3)), RuntimeError,
           message=SAME),
    Misuse("backward of a non-scalar without a gradient",
           lambda api: _mlp_of(api)(_x(5, 3)).backward(), RuntimeError, message=SAME),
    Misuse("requires_grad_(False) on a computed tensor",
           lambda api: _mlp_of(api)(_x(5, 3)).requires_grad_(False), RuntimeError,
           message=SAME),
    # --- integer inputs ---------------------------------------------------------------------
    Misuse("int64 input into Linear", lambda api: _int_into_module(
        api, "Linear", {"in_features": 3, "out_features": 2}), RuntimeError),
    *[Misuse(f"int64 input into {name}{kwargs or ''}",
             lambda api, name=name, kwargs=kwargs: _int_into_module(api, name, kwargs),
             NotImplementedError if name in NOT_FOR_LONG else
             RuntimeError if name == "Dropout" else None)  # Dropout: in training mode
      for name, kwargs in ACTIVATIONS],
    *[Misuse(f"int64 input and target into {name}", lambda api, name=name: _loss_call(
        api, name, {}, _ints(4, 3), _ints(4, 3)),
        RuntimeError if name == "L1Loss" else NotImplementedError)
      for name in POINTWISE_LOSSES],
    Misuse("int64 logits into CrossEntropyLoss", lambda api: _loss_call(
        api, _CE, {}, _ints(3, 4), _T3), NotImplementedError),
    *[Misuse(f"float input, int64 target into {name}", lambda api, name=name: _loss_call(
        api, name, {}, _x(4, 3), _ints(4, 3)),
        RuntimeError if name in ("BCEWithLogitsLoss", "HuberLoss") else
        VARIES if name == "MSELoss" else None)
      for name in POINTWISE_LOSSES],
    # --- wrong shapes and dtypes ------------------------------------------------------------
    Misuse("Linear: wrong feature size", _module_call(lambda nn: nn.Linear(3, 2), _x(4, 5)),
           RuntimeError),
    Misuse("Linear: float64 input, float32 weights",
           _module_call(lambda nn: nn.Linear(3, 2), _x(4, 3, dtype=torch.float64)),
           RuntimeError),
    Misuse("Linear: float16 input", _module_call(lambda nn: nn.Linear(3, 2),
                                                 _x(4, 3).half()), RuntimeError),
    Misuse("Linear: 0-d input", _module_call(lambda nn: nn.Linear(1, 2), _x()), RuntimeError),
    Misuse("Sequential: second Linear mismatched", _module_call(
        lambda nn: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)), _x(4, 3)),
        RuntimeError),
    Misuse("Sequential: float64 input into a fused chain", _module_call(
        lambda nn: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)),
        _x(4, 3, dtype=torch.float64)), RuntimeError),
    Misuse("Softmax: dim out of range", _module_call(lambda nn: nn.Softmax(dim=2), _x(4, 3)),
           IndexError),
    Misuse("LogSoftmax: dim out of range in a Sequential", _module_call(
        lambda nn: nn.Sequential(nn.Linear(3, 3), nn.LogSoftmax(dim=-3)), _x(4, 3)),
        IndexError),
    Misuse("Flatten: start_dim after end_dim", _module_call(lambda nn: nn.Flatten(2, 1),
                                                            _x(2, 3, 4)), RuntimeError),
    Misuse("Flatten: dim out of range", _module_call(lambda nn: nn.Flatten(0, 5), _x(2, 3)),
           IndexError),
    Misuse("Unflatten: sizes do not multiply to the dim", _module_call(
        lambda nn: nn.Unflatten(1, (2, 2)), _x(3, 5)), RuntimeError),
    Misuse("Unflatten: dim out of range", _module_call(lambda nn: nn.Unflatten(3, (1, 1)),
                                                       _x(3, 5)), IndexError),
    Misuse("Hardtanh: float64 input into float32 stack", _module_call(
        lambda nn: nn.Sequential(nn.Hardtanh(), nn.Linear(3, 1)), _x(2, 3).double()),
        RuntimeError),
    *[Misuse(f"{dtype} input into {name}", lambda api, name=name, kwargs=kwargs, dtype=dtype:
             _forward_backward(api, api.build(lambda nn: getattr(nn, name)(**kwargs)),
                               _x(4, 3).to(dtype)), None)
      for name, kwargs in ACTIVATIONS if not kwargs.get("inplace")
      for dtype in (torch.float16, torch.bfloat16)],
    Misuse("bfloat16 input into a float32 Linear", _module_call(
        lambda nn: nn.Linear(3, 2), _x(4, 3).bfloat16()), RuntimeError),
    *[Misuse(f"{name}: shapes not broadcastable", lambda api, name=name: _loss_call(
        api, name, {}, _x(4, 3), _x(4, 2)), RuntimeError if name != "BCEWithLogitsLoss"
        else ValueError) for name in POINTWISE_LOSSES],
    *[Misuse(f"{name}: broadcastable but different shapes (warns)",
             lambda api, name=name: _loss_call(api, name, {}, _x(4, 1), _x(4, 3).sigmoid()),
             None if name != "BCEWithLogitsLoss" else ValueError)
      for name in POINTWISE_LOSSES],
    *[Misuse(f"{name}: float32 input, float64 target", lambda api, name=name: _loss_call(
        api, name, {}, _x(4, 3), _x(4, 3, dtype=torch.float64).sigmoid()),
        RuntimeError if name == "HuberLoss"  # torch's huber backward refuses it
        else VARIES if name == "MSELoss" else None)
      for name in POINTWISE_LOSSES],
    Misuse("CrossEntropyLoss: target batch mismatch", lambda api: _loss_call(
        api, _CE, {}, _x(3, 4), _T3[:2]), ValueError),
    Misuse("CrossEntropyLoss: float target of class-index shape", lambda api: _loss_call(
        api, _CE, {}, _x(3, 4), _T3.float()), RuntimeError),
    Misuse("CrossEntropyLoss: int32 target", lambda api: _loss_call(
        api, _CE, {}, _x(3, 4), _T3.int()), RuntimeError),
    Misuse("CrossEntropyLoss: class index out of range", lambda api: _loss_call(
        api, _CE, {}, _x(3, 4), torch.tensor([0, 4, 1])), IndexError),
    Misuse("CrossEntropyLoss: spatial target shape", lambda api: _loss_call(
        api, _CE, {}, _x(2, 3, 4), torch.zeros(2, 5, dtype=torch.long)), RuntimeError),
    Misuse("CrossEntropyLoss: after a fused Sequential, wrong classes", lambda api: _loss_call(
        api, _CE, {}, _mlp_of(api)(_x(3, 3)), torch.tensor([0, 2, 1])), IndexError),
    # --- invalid constructor arguments ------------------------------------------------------
    Misuse("Linear(-1, 3)", lambda api: api.nn.Linear(-1, 3), RuntimeError, message=SAME),
    Misuse("Linear(3, -2)", lambda api: api.nn.Linear(3, -2), RuntimeError, message=SAME),
    Misuse("Linear(2.5, 3)", lambda api: api.nn.Linear(2.5, 3), TypeError, message=SAME),
    Misuse("Dropout(p=-0.1)", lambda api: api.nn.Dropout(-0.1), ValueError, message=SAME),
    Misuse("Dropout(p=1.5)", lambda api: api.nn.Dropout(1.5), ValueError, message=SAME),
    *[Misuse(f"{name}(reduction='avg') called", lambda api, name=name: _loss_call(
        api, name, {"reduction": "avg"}, _x(3, 4), _T3 if name == _CE else _x(3, 4)),
        ValueError) for name in [*POINTWISE_LOSSES, _CE]],
    Misuse("GELU(approximate='fast') called", _module_call(lambda nn: nn.GELU("fast"),
                                                           _x(2, 3)), RuntimeError),
    Misuse("SmoothL1Loss(beta=-1) called", lambda api: _loss_call(
        api, "SmoothL1Loss", {"beta": -1.0}, _x(3, 4), _x(3, 4)), RuntimeError),
    Misuse("HuberLoss(delta=0) called", lambda api: _loss_call(
        api, "HuberLoss", {"delta": 0.0}, _x(3, 4), _x(3, 4)), RuntimeError),
    Misuse("CrossEntropyLoss(label_smoothing=1.5) called", lambda api: _loss_call(
        api, _CE, {"label_smoothing": 1.5}, _x(3, 4), _T3), RuntimeError),
    *[Misuse(f"{name}({kwargs})", _optimizer_ctor(name, **kwargs), ValueError,
             message=SAME)
      for name, kwargs in [
          ("SGD", {"lr": 0.1, "dampening": 0.5, "nesterov": True, "momentum": 0.9}),
          ("SGD", {"lr": -0.1, "momentum": 0.9}),
          ("Adam", {"betas": (0.9, 1.0)}), ("Adam", {"lr": -1e-3, "amsgrad": True}),
          ("AdamW", {"betas": (-0.1, 0.99)}), ("AdamW", {"eps": -1.0}),
          ("AdamW", {"weight_decay": -1e-2}),
          ("RMSprop", {"lr": -0.1}), ("RMSprop", {"eps": -1.0}),
          ("RMSprop", {"weight_decay": -1.0}), ("RMSprop", {"alpha": -0.1, "centered": True}),
          ("Adagrad", {"lr": -0.1}), ("Adagrad", {"eps": -1e-10}),
          ("Adagrad", {"weight_decay": -0.5}),
      ]],
    Misuse("SGD without lr on parameters", lambda api: api.optim.SGD(
        [api.leaf(torch.zeros(2))], lr=None), TypeError),
    # --- NaN and infinity -------------------------------------------------------------------
    *[Misuse(f"NaN/inf input through {name}", lambda api, name=name: _forward_backward(
        api, _mlp_of(api) if name == "fused Sequential" else api.build(
            lambda nn: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.0), nn.Softplus(),
                                     nn.Linear(4, 2), nn.LogSoftmax(-1))),
        _nonfinite(NAN, INF, -INF, -0.0)), None)
      for name in ("fused Sequential", "unfused Sequential")],
    *[Misuse(f"{value} in the weights", lambda api, value=value: _forward_backward(
        api, _weights_with(api, value), _x(4, 3)), None) for value in (NAN, INF, -INF)],
    *[Misuse(f"NaN/inf through {name}", lambda api, name=name, kwargs=kwargs: _forward_backward(
        api, api.build(lambda nn: getattr(nn, name)(**kwargs)),
        _nonfinite(NAN, INF, -INF, -0.0)), None)
      for name, kwargs in ACTIVATIONS if not kwargs.get("inplace")],
    *[Misuse(f"NaN/inf in input and target of {name}", lambda api, name=name: _loss_call(
        api, name, {"reduction": "none"}, _nonfinite(NAN, INF, -INF),
        _nonfinite(INF, -INF, NAN, -0.0).flip(0)), None) for name in POINTWISE_LOSSES],
    Misuse("inf logits into CrossEntropyLoss", lambda api: _loss_call(
        api, _CE, {}, _nonfinite(INF, -INF, NAN, shape=(3, 4)), _T3), None),
    Misuse("NaN loss from a fused Sequential, then SGD", lambda api: _nan_step(api), None),
    # --- empty batches and 0-d tensors ------------------------------------------------------
    Misuse("empty batch through a fused Sequential", _module_call(
        lambda nn: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), _x(0, 3)), None),
    Misuse("empty batch through an unfused Sequential", _module_call(
        lambda nn: nn.Sequential(nn.Linear(3, 4), nn.Identity(), nn.Softmax(-1)), _x(0, 3)),
        None),
    *[Misuse(f"empty batch into {name} ({reduction})", lambda api, name=name, r=reduction:
             _loss_call(api, name, {"reduction": r}, _x(0, 4),
                        torch.zeros(0, dtype=torch.long) if name == _CE else _x(0, 4)), None)
      for name in [*POINTWISE_LOSSES, _CE] for reduction in ("mean", "sum")],
    Misuse("zero features: Linear(0, 2)", _module_call(lambda nn: nn.Linear(0, 2), _x(4, 0)),
           None),
    Misuse("zero outputs: Linear(3, 0) then MSE", lambda api: _loss_call(
        api, "MSELoss", {}, api.build(lambda nn: nn.Linear(3, 0))(_x(4, 3)), _x(4, 0)), None),
    *[Misuse(f"0-d input into {name}", lambda api, name=name, kwargs=kwargs: _forward_backward(
        api, api.build(lambda nn: getattr(nn, name)(**kwargs)), _x()), None)
      for name, kwargs in ACTIVATIONS if not kwargs.get("inplace")],
    *[Misuse(f"0-d input and target into {name}", lambda api, name=name: _loss_call(
        api, name, {}, _x(), _x(seed=1).sigmoid()), None) for name in POINTWISE_LOSSES],
    Misuse("1-d logits and 0-d target into CrossEntropyLoss", lambda api: _loss_call(
        api, _CE, {}, _x(4), torch.tensor(2)), None),
    Misuse("0-d logits into CrossEntropyLoss", lambda api: _loss_call(
        api, _CE, {}, _x(), torch.tensor(0)), RuntimeError),
    Misuse("1-d input into a fused Sequential, implicit backward", lambda api: _implicit_1d(api),
           None),
]


def _nan_step(api: Api) -> Any:
    """A NaN reaches the loss; SGD spreads it into exactly the parameters torch's does."""
    model = _mlp_of(api)
    opt = api.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = _x(5, 3)
    x[2, 1] = NAN
    for _ in range(2):
        opt.zero_grad()
        api.nn.MSELoss()(model(x), torch.zeros(5, 2)).backward()
        opt.step()
    return params(model)


def _implicit_1d(api: Api) -> Any:
    model = api.build(lambda nn: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    x = api.leaf(_x(3))
    out = model(x)
    out.backward()  # one element: the implicit gradient
    return out, x.grad, grads(model)


@pytest.mark.parametrize("case", MISUSES, ids=[case.name for case in MISUSES])
def test_misuse_like_torch(case: Misuse) -> None:
    check_misuse(case)


# torch modules shimnn does not implement, placed inside a shimnn Sequential: the forward is
# torch's value; a gradient through them is refused, naming the operation.
UNSUPPORTED: list[tuple[str, Callable[[Any], torch.nn.Module], torch.Tensor, str]] = [
    ("PReLU", lambda nn: torch.nn.PReLU(4), _x(5, 4), "prelu"),
    ("PReLU-3d", lambda nn: torch.nn.PReLU(4), _x(5, 4, 3), "prelu"),
    ("LocalResponseNorm", lambda nn: torch.nn.LocalResponseNorm(2), _x(5, 4, 3),
     "local_response_norm"),
    ("LogSigmoid", lambda nn: torch.nn.LogSigmoid(), _x(5, 4), "log_sigmoid"),
]


def _with_foreign(make: Callable[[Any], torch.nn.Module], x: torch.Tensor
                  ) -> Callable[[Any], torch.nn.Module]:
    """The foreign module between shimnn layers (its input is a tracked tensor)."""
    if x.dim() == 3:
        return lambda nn: nn.Sequential(nn.Linear(3, 3), make(nn), nn.Flatten(),
                                        nn.Linear(12, 2))
    return lambda nn: nn.Sequential(nn.Linear(4, 4), make(nn), nn.Tanh(), nn.Linear(4, 2))


@pytest.mark.parametrize("name,make,x,op", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_torch_module_shimnn_lacks_computes_then_refuses_backward(
        name: str, make: Callable[[Any], torch.nn.Module], x: torch.Tensor, op: str) -> None:
    check_foreign(_with_foreign(make, x), x, name, op)


@pytest.mark.parametrize("name,make,x,op", UNSUPPORTED[:2], ids=[u[0] for u in UNSUPPORTED[:2]])
def test_torch_module_with_parameters_as_first_layer(
        name: str, make: Callable[[Any], torch.nn.Module], x: torch.Tensor, op: str) -> None:
    """First, on a plain input, a torch module with its own parameters is recorded by torch's
    autograd: the forward works, and a backward into it raises naming the torch layer the user
    wrote (not only torch's node), and that shimnn lacks it."""
    features = x[0].numel()
    check_foreign(lambda nn: nn.Sequential(make(nn), nn.Flatten(), nn.Linear(features, 2)),
                  x, name, rf"torch's {name.split('-')[0]} layer `.*` \(its output's node: "
                  rf"\w+Backward\d\).*shimnn does not implement")


def test_torch_layer_shimnn_has_as_first_layer_is_named_with_shimnns_version() -> None:
    """torch's Embedding first in a shimnn model: the error names torch.nn.Embedding (not its
    node) and points at shimnn.Embedding, which exists."""
    torch.manual_seed(0)
    model = shimnn.Sequential(torch.nn.Embedding(10, 4), shimnn.Linear(4, 1))
    loss = model(torch.randint(0, 10, (3, 5))).mean()
    with pytest.raises(NotImplementedError) as error, autograd_forbidden():
        loss.backward()
    message = str(error.value)
    assert "torch's Embedding layer `Embedding(10, 4)`" in message
    assert "build that layer as shimnn.Embedding" in message
    assert hasattr(shimnn, "Embedding")


def check_foreign(make: Callable[[Any], torch.nn.Module], x: torch.Tensor, name: str,
                  op: str) -> None:
    """Forward through a model holding a torch module shimnn lacks: torch's value, bit for bit;
    backward: refused with an error naming ``op``; no_grad: fine; torch: backward works."""
    ref, shim = twin_modules(make)
    assert isinstance(shim, shimnn.Sequential)
    ref_out = ref(x)
    with autograd_forbidden():
        out = shim(x)
        assert_no_autograd_graph(out)
        assert_same(out, ref_out, f"forward through {name}")
        with pytest.raises((NotImplementedError, RuntimeError), match=op):
            out.sum().backward()
        # Without a gradient through it (no_grad, or detached before it) it is fine.
        with torch.no_grad():
            assert_same(shim(x), ref_out)
    ref_out.sum().backward()  # torch can: shimnn refused rather than give a wrong gradient
