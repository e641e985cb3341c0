"""Should a ``Sequential`` of conv / pool / norm layers run as one fused node?
(``python -m bench.cnn_chain``)

Measures, interleaved in one process, one thread:

1. what fusion saves per layer where it exists: a fused ``Sequential`` of 8 small
   Linear/ReLU layers against the same layers called one by one (same kernels), per layer;
2. a CNN ``Sequential`` (conv-ReLU-pool twice, global average pool, flatten, linear) training
   step at batch 16 and 64 on 1x8x8 inputs: torch and shimnn (layer by layer) per step, and
   the share that the per-layer saving of (1) would be of shimnn's step if these layers fused.
"""

from __future__ import annotations

from typing import Any

import torch

import shimnn
from bench._timing import interleaved, ratio_spread, spread


def _mlp_step(fused: bool) -> Any:
    torch.manual_seed(0)
    layers = [m for _ in range(4) for m in (shimnn.Linear(16, 16), shimnn.ReLU())]
    seq = shimnn.Sequential(*layers)
    x = torch.randn(8, 16)

    def step() -> None:
        h = x
        if fused:
            h = seq(h)
        else:
            for m in layers:
                h = m(h)
        h.sum().backward()

    return step, len(layers)


def _cnn(nn: Any) -> Any:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _cnn_step(nn: Any, optim: Any, batch: int) -> Any:
    model = _cnn(nn)
    opt = optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g)
    loss = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()

    return step, len(model)


def main() -> None:
    torch.set_num_threads(1)
    fused, n = _mlp_step(True)
    unfused, _ = _mlp_step(False)
    s = interleaved({"fused": fused, "unfused": unfused}, blocks=41, block_s=0.02)
    saving = (spread(s["unfused"]).median - spread(s["fused"]).median) / n
    print(f"MLP chain of {n} small layers: fused {spread(s['fused']).median * 1e6:.1f} us, "
          f"layer by layer {spread(s['unfused']).median * 1e6:.1f} us per step: fusion saves "
          f"{saving * 1e6:.2f} us per layer")
    for batch in (16, 64):
        fns = {"torch": _cnn_step(torch.nn, torch.optim, batch)[0],
               "shimnn": _cnn_step(shimnn, shimnn.optim, batch)[0]}
        layers = _cnn_step(shimnn, shimnn.optim, batch)[1]
        t = interleaved(fns, blocks=41, block_s=0.02)
        shim = spread(t["shimnn"]).median
        print(f"CNN Sequential 1x8x8 b{batch} ({layers} layers): torch "
              f"{spread(t['torch']).median * 1e6:.0f} us, shimnn {shim * 1e6:.0f} us per step "
              f"(torch/shimnn {ratio_spread(t['torch'], t['shimnn']).median:.2f}); fusing "
              f"would save about {layers * saving * 1e6:.0f} us = "
              f"{100 * layers * saving / shim:.1f}% of shimnn's step")


if __name__ == "__main__":
    main()
