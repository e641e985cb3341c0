"""How close a shimnn step is to the floor (``python -m bench.floor [--batch N] [--clock cpu]``).

Counts the ATen operations one training step of the seed network dispatches (torch vs shimnn),
and times, interleaved, torch, shimnn and two *bare* steps written straight in one function
with no framework (no modules, graph or optimizer objects): in Python with the ATen kernels of
shimnn's Python paths, and in C++ (compiled here on first use, like shimnn's fast paths) with
the kernels and element loops (``shimnn/csrc/fused.h``) shimnn's compiled paths call. The
C++ bare step is the floor for what shimnn computes: what remains above it is framework
overhead. Then the same per call of the step (``model(x)``, the loss, ``zero_grad``,
``backward``, ``step``): shimnn's time for each call inside real steps against the C++ step's
time for that call's kernels.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from bench._timing import CLOCKS, interleaved, set_clock
from bench._workloads import SEED_TASK, Network, batch_data, workload

_threshold_backward = torch.ops.aten.threshold_backward.default._op
_tanh_backward = torch.ops.aten.tanh_backward.default._op
_mse_loss_backward = torch.ops.aten.mse_loss_backward.default._op


def _seed_state(network: Network = SEED_TASK
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor],
                           list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Weights, biases, parameters (interleaved), momentum buffers and one mini-batch."""
    torch.manual_seed(0)
    sizes = network.sizes
    weights = [torch.randn(o, i) * 0.3 for i, o in zip(sizes, sizes[1:])]
    biases = [torch.zeros(o) for o in sizes[1:]]
    params = [t for pair in zip(weights, biases) for t in pair]
    bufs = [torch.zeros_like(p) for p in params]
    x, y = batch_data(network)
    return weights, biases, params, bufs, x, y


def bare_step(network: Network = SEED_TASK, momentum: float = 0.9, lr: float = 0.1
              ) -> Callable[[], None]:
    """One SGD-momentum step of the seed network, hand-written with the ATen kernels of
    shimnn's Python paths (shimnn's element loops are C++ only: see the C++ bare step)."""
    weights, biases, params, bufs, x, y = _seed_state(network)
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
#include "fused.h"  // shimnn's element loops (shimnn/csrc)
#include <chrono>
#include <cstring>
#include <ctime>
#include <vector>
using at::Tensor;

double now(bool cpu) {
  if (!cpu) {
    return std::chrono::duration<double>(
        std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// One SGD-momentum step of an MLP (ReLU hidden layers, Tanh output, MSE loss, float32): the
// kernels shimnn calls (bare_step's ATen kernels, with shimnn's element loops where shimnn
// uses them: ReLU in place, the MSE, Tanh and ReLU backward, the optimizer update; and its
// Linear's bias rows) in C++.
// `phases` (if not empty) gets the seconds of each part added: forward,
// loss, backward (the seed, the loss's and the layers' backward), optimizer step.
void step(const Tensor& x, const Tensor& y, std::vector<Tensor> params, std::vector<Tensor> bufs,
          const Tensor& momentum, double lr, bool cpu, std::vector<double>& phases) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  bool timed = !phases.empty();
  double t0 = timed ? now(cpu) : 0;
  size_t layers = params.size() / 2;
  std::vector<Tensor> acts;
  Tensor h = x;
  for (size_t i = 0; i < layers; ++i) {
    acts.push_back(h);
    // shimnn's Linear: the output's rows filled with the bias, the product added by gemm
    const Tensor& w = params[2 * i];
    const Tensor& b = params[2 * i + 1];
    Tensor out = at::empty({h.size(0), w.size(0)}, h.options());
    float* rows = out.data_ptr<float>();
    const float* bias = b.data_ptr<float>();
    for (int64_t r = 0; r < h.size(0); ++r) {
      std::memcpy(rows + r * w.size(0), bias, w.size(0) * sizeof(float));
    }
    h = out.addmm_(h, w.t());
    if (i == layers - 1) {
      h = at::tanh(h);
    } else {
      shimnn_fused::relu_loop<float>(h.data_ptr<float>(), h.data_ptr<float>(), h.numel());
    }
    acts.push_back(h);
  }
  double t1 = timed ? now(cpu) : 0;
  at::mse_loss(h, y, 1);
  double t2 = timed ? now(cpu) : 0;
  Tensor g = at::empty_like(h);
  shimnn_fused::mse_backward_loop<float>(g.data_ptr<float>(), h.data_ptr<float>(),
                                         y.data_ptr<float>(), 2.0f / h.numel(), 1.0f, h.numel());
  std::vector<Tensor> grads(2 * layers);
  for (size_t i = layers; i-- > 0;) {
    const Tensor& out = acts[2 * i + 1];
    if (i == layers - 1) {
      shimnn_fused::tanh_backward_loop<float, true>(g.data_ptr<float>(), g.data_ptr<float>(),
                                                    out.data_ptr<float>(), g.numel());
    } else {
      shimnn_fused::threshold_backward_loop<float>(g.data_ptr<float>(), g.data_ptr<float>(),
                                                   out.data_ptr<float>(), g.numel());
    }
    grads[2 * i] = g.t().mm(acts[2 * i]);
    grads[2 * i + 1] = g.sum(0);
    if (i) g = g.mm(params[2 * i]);
  }
  double t3 = timed ? now(cpu) : 0;
  shimnn_fused::SgdScalars<float> s{0.0f, momentum.item<float>(), 1.0f, float(-lr)};
  for (size_t i = 0; i < params.size(); ++i) {
    shimnn_fused::sgd_loop<float, false, false, 2, false>(
        params[i].data_ptr<float>(), grads[i].data_ptr<float>(), bufs[i].data_ptr<float>(),
        params[i].numel(), s);
  }
  if (timed) {
    double t4 = now(cpu);
    phases[0] += t1 - t0;
    phases[1] += t2 - t1;
    phases[2] += t3 - t2;
    phases[3] += t4 - t3;
  }
}

// `calls` timed steps: the mean seconds of each part (see step).
std::vector<double> phases(const Tensor& x, const Tensor& y, std::vector<Tensor> params,
                           std::vector<Tensor> bufs, const Tensor& momentum, double lr,
                           bool cpu, int64_t calls) {
  std::vector<double> total(4, 0.0);
  for (int64_t i = 0; i < calls; ++i) step(x, y, params, bufs, momentum, lr, cpu, total);
  for (auto& t : total) t /= calls;
  return total;
}
"""


def _bare_cpp_module() -> object:
    import hashlib

    from torch.utils.cpp_extension import load_inline

    from shimnn import _native
    from shimnn._native import cache_root

    csrc = _native._SOURCE.parent
    fused = (csrc / "fused.h").read_text()
    key = hashlib.sha256(f"{_BARE_CPP}{fused}{torch.__version__}{_native._FLAGS}".encode())
    build = cache_root() / f"bench-floor-{key.hexdigest()[:16]}"
    build.mkdir(parents=True, exist_ok=True)
    return load_inline("shimnn_bench_floor", cpp_sources=[_BARE_CPP],
                       functions=["step", "phases"], extra_cflags=list(_native._FLAGS),
                       extra_include_paths=[str(csrc)], build_directory=str(build))


def bare_cpp_step(network: Network = SEED_TASK, momentum: float = 0.9, lr: float = 0.1
                  ) -> Callable[[], None]:
    """``bare_step`` in C++: the floor for these kernels (no Python between them)."""
    module: Any = _bare_cpp_module()
    _, _, params, bufs, x, y = _seed_state(network)
    mu = torch.tensor(momentum)
    return lambda: module.step(x, y, params, bufs, mu, lr, False, [])


PHASES = ("model(x)", "loss", "zero_grad", "backward", "step")


def bare_cpp_phases(network: Network, calls: int, cpu: bool) -> dict[str, float]:
    """Mean seconds of each call's kernels in the C++ bare step (zero_grad has none)."""
    module: Any = _bare_cpp_module()
    _, _, params, bufs, x, y = _seed_state(network)
    fwd, loss, bwd, opt = module.phases(x, y, params, bufs, torch.tensor(0.9), 0.1, cpu, calls)
    return dict(zip(PHASES, (fwd, loss, 0.0, bwd, opt)))


def shimnn_phases(network: Network, calls: int) -> dict[str, float]:
    """Mean seconds of each call of shimnn's training step, timed inside real steps (the
    clock's own cost, measured, taken off)."""
    from bench._timing import _clock  # the clock set_clock chose

    w = workload("shimnn", network, "momentum")
    model, criterion, opt = w.model, w.criterion, w.optimizer
    clock = _clock
    for _ in range(20):
        w.step()
    total = [0.0] * 5
    empty = 0.0
    for i in range(calls):
        x, y = w.batches[i % len(w.batches)]
        t0 = clock()
        out = model(x)
        t1 = clock()
        loss = criterion(out, y)
        t2 = clock()
        opt.zero_grad()
        t3 = clock()
        loss.backward()
        t4 = clock()
        opt.step()
        t5 = clock()
        t6 = clock()
        empty += t6 - t5
        for k, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
            total[k] += b - a
        del out, loss
    return {name: max(0.0, (t - empty) / calls) for name, t in zip(PHASES, total)}


def phase_table(network: Network, calls: int, cpu: bool) -> str:
    """Markdown table: each call of the step, its kernels' time in C++ and shimnn's time."""
    floor = bare_cpp_phases(network, calls, cpu)
    shim = shimnn_phases(network, calls)
    lines = ["| call | C++ kernels µs | shimnn µs | difference µs |", "|---|---:|---:|---:|"]
    for name in PHASES:
        f, s_ = floor[name] * 1e6, shim[name] * 1e6
        lines.append(f"| `{name}` | {f:.1f} | {s_:.1f} | {s_ - f:+.1f} |")
    f_total, s_total = sum(floor.values()) * 1e6, sum(shim.values()) * 1e6
    lines.append(f"| whole step | {f_total:.1f} | {s_total:.1f} | {s_total - f_total:+.1f} |")
    return "\n".join(lines)


def count_ops(step: object) -> int:
    """Top-level ATen calls (``aten::`` events without an ``aten::`` parent) of one call."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()  # type: ignore[operator]
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    ids = {e.id for e in events}
    return sum(1 for e in events if e.cpu_parent is None or e.cpu_parent.id not in ids)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=SEED_TASK.batch,
                        help="mini-batch size of the seed network (default %(default)s)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: this thread's CPU time")
    args = parser.parse_args(argv)
    set_clock(args.clock)
    network = Network(SEED_TASK.sizes, args.batch, seed_task=True)
    torch.set_num_threads(1)
    relu = torch.relu
    x = torch.randn(50, 25)
    per_call = min(timeit.repeat(lambda: relu(x), number=20000, repeat=5)) / 20000
    print(f"one small dispatch (torch.relu on 50x25 from Python): {per_call * 1e6:.2f} us")
    steps = {"torch": workload("torch", network, "momentum").step,
             "shimnn": workload("shimnn", network, "momentum").step,
             "bare": bare_step(network), "bare C++": bare_cpp_step(network)}
    for name, step in steps.items():
        for _ in range(3):
            step()
        n = count_ops(step)
        print(f"{name:6s} seed network batch {args.batch}, SGD momentum: {n} top-level ATen calls "
              f"per step (x {per_call * 1e6:.2f} us = {n * per_call * 1e6:.0f} us)")
    times = interleaved(steps, blocks=51, block_s=0.02)
    median = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    floor = median["bare C++"]
    clock = "elapsed time" if args.clock == "wall" else "CPU time"
    print(f"interleaved, 51 rounds ({clock}): "
          + ", ".join(f"{n} {m:.0f} us" for n, m in median.items())
          + "; torch/shimnn {:.2f}x, torch/bare {:.2f}x, torch/bare C++ {:.2f}x".format(
              median["torch"] / median["shimnn"], median["torch"] / median["bare"],
              median["torch"] / floor))
    print(f"shimnn is {median['shimnn'] - floor:.0f} us ({median['shimnn'] / floor:.2f}x) above "
          f"the C++ floor for its kernels; {_native_status()}")
    calls = 20000 if args.batch <= 100 else 4000
    print(f"\nPer call of the step ({clock}, mean of {calls} steps each; shimnn timed inside "
          "real steps, the C++ kernels inside the bare C++ step):\n")
    print(phase_table(network, calls, args.clock == "cpu"))


def _native_status() -> str:
    from shimnn import _native

    return _native.status()


if __name__ == "__main__":
    main()
