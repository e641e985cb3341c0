"""GPU check (run on a machine with CUDA): parity torch vs shimnn on the GPU, and speed.

``python -m bench.gpu_check [--out FILE]``. Parity is against the torch installed there (the
kernels are that torch's), so a different torch version than the CPU suite's is fine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import shimnn
import shimnn.optim
from shimnn.disc import disc_data, train
from shimnn.testing import bitwise_identical

OPTIONS = {"sgd": {}, "momentum": {"momentum": 0.9}, "nesterov": {"momentum": 0.9,
                                                                   "nesterov": True}}


def _to(data: tuple[torch.Tensor, ...], device: str) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device) for t in data)


def parity(device: str, lines: list[str]) -> bool:
    ok = True
    for dtype in (torch.float32, torch.float64):
        data = _to(disc_data(seed=1, dtype=dtype), device)
        for name, opts in OPTIONS.items():
            for optimizer in ("SGD", "Adam"):
                if optimizer == "Adam" and name != "sgd":
                    continue
                kwargs = dict(seed=2, epochs=5, lr=0.1 if optimizer == "SGD" else 0.01,
                              optimizer=optimizer, optimizer_options=opts, evaluate=False)
                torch.set_default_device(device)  # the models' parameters on the GPU
                try:
                    ref = train(torch.nn, torch.optim, data, **kwargs)
                    shim = train(shimnn, shimnn.optim, data, **kwargs)
                finally:
                    torch.set_default_device("cpu")
                same = bitwise_identical(
                    [ref.losses, list(ref.model.parameters())],
                    [shim.losses, list(shim.model.parameters())])
                grads = bitwise_identical([p.grad for p in ref.model.parameters()],
                                          [p.grad for p in shim.model.parameters()])
                ok &= same and grads
                lines.append(f"parity {device} {dtype} {optimizer} {name}: losses and params "
                             f"{'identical' if same else 'DIFFERENT'}, grads "
                             f"{'identical' if grads else 'DIFFERENT'} over {len(ref.losses)} "
                             "steps")
    # A few modules with random upstream gradients.
    g = torch.Generator().manual_seed(0)
    for make in (lambda nn: nn.Linear(7, 5), lambda nn: nn.Sequential(
            nn.Linear(7, 16), nn.GELU(), nn.Linear(16, 3), nn.LogSoftmax(-1))):
        torch.manual_seed(3)
        ref = make(torch.nn).to(device)
        torch.manual_seed(3)
        shim = make(shimnn).to(device)
        x = torch.randn(33, 7, generator=g).to(device)
        xr, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_r, out_s = ref(xr), shim(xs)
        up = torch.randn(out_r.shape, generator=g).to(device)
        out_r.backward(up)
        out_s.backward(up)
        same = bitwise_identical([out_r, xr.grad, *(p.grad for p in ref.parameters())],
                                 [out_s, xs.grad, *(p.grad for p in shim.parameters())])
        ok &= same
        verdict = "identical" if same else "DIFFERENT"
        lines.append(f"parity {device} {type(shim).__name__}: {verdict}")
    return ok


def speed(device: str, batch: int, lines: list[str]) -> None:
    sizes = (2, 25, 25, 25, 1)
    steps = {}
    for name, nn, optim in (("torch", torch.nn, torch.optim),
                            ("shimnn", shimnn, shimnn.optim)):
        torch.manual_seed(0)
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers[-1] = nn.Tanh()
        model = nn.Sequential(*layers).to(device)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        crit = nn.MSELoss()
        x, y = torch.rand(batch, 2, device=device), torch.rand(batch, 1, device=device)

        def step(model=model, opt=opt, crit=crit, x=x, y=y) -> None:  # type: ignore[no-untyped-def]
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = step
    for s in steps.values():
        for _ in range(50):
            s()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {n: [] for n in steps}
    for _ in range(30):
        for n, s in steps.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(100):
                s()
            torch.cuda.synchronize()
            times[n].append((time.perf_counter() - start) / 100)
    ratios = [a / b for a, b in zip(times["torch"], times["shimnn"])]
    lines.append(f"speed {device} seed net batch {batch} SGD momentum: torch "
                 f"{statistics.median(times['torch']) * 1e6:.1f} us/step, shimnn "
                 f"{statistics.median(times['shimnn']) * 1e6:.1f} us/step, ratio "
                 f"{statistics.median(ratios):.2f}x (median of 30 interleaved blocks)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [f"torch {torch.__version__}, cuda {torch.version.cuda}, "
             f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}"]
    if not torch.cuda.is_available():
        print(lines[0])
        return 2
    ok = parity("cuda", lines)
    for batch in (50, 1000):
        speed("cuda", batch, lines)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
