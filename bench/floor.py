"""How close a shimnn step is to the floor (``python -m bench.floor``).

Counts the ATen operations one training step of the seed network dispatches (torch vs shimnn),
and times, interleaved, torch, shimnn and two *bare* steps: the same kernels shimnn calls,
written straight in one function with no framework (no modules, graph or optimizer objects),
once in Python and once in C++ (compiled here on first use, like shimnn's fast paths). The C++
bare step is the floor for these kernels: what remains above it is framework overhead.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from bench._timing import interleaved
from bench._workloads import SEED_TASK, batch_data, workload

_threshold_backward = torch.ops.aten.threshold_backward.default._op
_tanh_backward = torch.ops.aten.tanh_backward.default._op
_mse_loss_backward = torch.ops.aten.mse_loss_backward.default._op


def _seed_state() -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor],
                          list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Weights, biases, parameters (interleaved), momentum buffers and one mini-batch."""
    torch.manual_seed(0)
    sizes = SEED_TASK.sizes
    weights = [torch.randn(o, i) * 0.3 for i, o in zip(sizes, sizes[1:])]
    biases = [torch.zeros(o) for o in sizes[1:]]
    params = [t for pair in zip(weights, biases) for t in pair]
    bufs = [torch.zeros_like(p) for p in params]
    x, y = batch_data(SEED_TASK)
    return weights, biases, params, bufs, x, y


def bare_step(momentum: float = 0.9, lr: float = 0.1) -> Callable[[], None]:
    """One SGD-momentum step of the seed network, hand-written with shimnn's kernels."""
    weights, biases, params, bufs, x, y = _seed_state()
    ones = torch.ones(())
    last = len(weights) - 1

    def step() -> None:
        h, acts = x, []
        for i, (w, b) in enumerate(zip(weights, biases)):
            acts.append(h)
            h = torch._C._nn.linear(h, w, b)
            h = torch.tanh(h) if i == last else torch.relu(h)
            acts.append(h)
        torch._C._nn.mse_loss(h, y, 1)
        g = _mse_loss_backward(ones, h, y, 1)
        grads: list[torch.Tensor] = [g] * len(params)
        for i in range(last, -1, -1):
            out, inp = acts[2 * i + 1], acts[2 * i]
            g = _tanh_backward(g, out) if i == last else _threshold_backward(g, out, 0)
            grads[2 * i], grads[2 * i + 1] = g.t().mm(inp), g.sum(0)
            if i:
                g = g.mm(weights[i])
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        torch._foreach_add_(params, bufs, alpha=-lr)

    return step


_BARE_CPP = r"""
#include <torch/extension.h>
#include <vector>
using at::Tensor;

// One SGD-momentum step of an MLP (ReLU hidden layers, Tanh output, MSE loss), the kernels
// of bare_step in C++.
void step(const Tensor& x, const Tensor& y, std::vector<Tensor> params, std::vector<Tensor> bufs,
          const Tensor& momentum, double lr) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  size_t layers = params.size() / 2;
  std::vector<Tensor> acts;
  Tensor h = x;
  for (size_t i = 0; i < layers; ++i) {
    acts.push_back(h);
    h = at::linear(h, params[2 * i], params[2 * i + 1]);
    h = i == layers - 1 ? at::tanh(h) : at::relu(h);
    acts.push_back(h);
  }
  at::mse_loss(h, y, 1);
  Tensor g = at::mse_loss_backward(at::ones({}, h.options()), h, y, 1);
  std::vector<Tensor> grads(2 * layers);
  for (size_t i = layers; i-- > 0;) {
    const Tensor& out = acts[2 * i + 1];
    g = i == layers - 1 ? at::tanh_backward(g, out) : at::threshold_backward(g, out, 0);
    grads[2 * i] = g.t().mm(acts[2 * i]);
    grads[2 * i + 1] = g.sum(0);
    if (i) g = g.mm(params[2 * i]);
  }
  at::_foreach_mul_(bufs, momentum);
  at::_foreach_add_(bufs, grads);
  at::_foreach_add_(params, bufs, -lr);
}
"""


def bare_cpp_step(momentum: float = 0.9, lr: float = 0.1) -> Callable[[], None]:
    """``bare_step`` in C++: the floor for these kernels (no Python between them)."""
    import hashlib

    from torch.utils.cpp_extension import load_inline

    from shimnn._native import cache_root

    key = hashlib.sha256(f"{_BARE_CPP}{torch.__version__}".encode()).hexdigest()[:16]
    build = cache_root() / f"bench-floor-{key}"
    build.mkdir(parents=True, exist_ok=True)
    module = load_inline("shimnn_bench_floor", cpp_sources=[_BARE_CPP], functions=["step"],
                         extra_cflags=["-O2"], build_directory=str(build))
    _, _, params, bufs, x, y = _seed_state()
    mu = torch.tensor(momentum)
    return lambda: module.step(x, y, params, bufs, mu, lr)


def count_ops(step: object) -> int:
    """Top-level ATen calls (``aten::`` events without an ``aten::`` parent) of one call."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()  # type: ignore[operator]
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    ids = {e.id for e in events}
    return sum(1 for e in events if e.cpu_parent is None or e.cpu_parent.id not in ids)


def main() -> None:
    torch.set_num_threads(1)
    relu = torch.relu
    x = torch.randn(50, 25)
    per_call = min(timeit.repeat(lambda: relu(x), number=20000, repeat=5)) / 20000
    print(f"one small dispatch (torch.relu on 50x25 from Python): {per_call * 1e6:.2f} us")
    steps = {"torch": workload("torch", SEED_TASK, "momentum").step,
             "shimnn": workload("shimnn", SEED_TASK, "momentum").step,
             "bare": bare_step(), "bare C++": bare_cpp_step()}
    for name, step in steps.items():
        for _ in range(3):
            step()
        n = count_ops(step)
        print(f"{name:6s} seed network batch 50, SGD momentum: {n} top-level ATen calls per "
              f"step (x {per_call * 1e6:.2f} us = {n * per_call * 1e6:.0f} us)")
    times = interleaved(steps, blocks=51, block_s=0.02)
    median = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    floor = median["bare C++"]
    print("interleaved, 51 rounds: " + ", ".join(f"{n} {m:.0f} us" for n, m in median.items())
          + "; torch/shimnn {:.2f}x, torch/bare {:.2f}x, torch/bare C++ {:.2f}x".format(
              median["torch"] / median["shimnn"], median["torch"] / median["bare"],
              median["torch"] / floor))
    print(f"shimnn is {median['shimnn'] - floor:.0f} us ({median['shimnn'] / floor:.2f}x) above "
          f"the C++ floor for its kernels; {_native_status()}")


def _native_status() -> str:
    from shimnn import _native

    return _native.status()


if __name__ == "__main__":
    main()
