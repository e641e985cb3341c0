"""Per-call cost of single tensor operations, forward + backward, torch vs shimnn, interleaved.

    .venv/bin/python -m bench.ops [--quick] [--json PATH]

Sequence models call these ops once per time step, on small tensors, where the cost is the
framework's per-call overhead rather than the arithmetic. Each row times ``op(x)`` on a leaf
that requires grad (a torch leaf; a shimnn Parameter), then ``out.backward(g)`` with a fixed
upstream gradient; the ratio torch/shimnn above 1 means shimnn is faster.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

import torch

import shimnn
from bench._timing import environment, environment_line, interleaved, ratio_spread, spread

B, T, H = 16, 20, 32  # batch, sequence length, hidden size (issue 12's LSTM row)


def _ops() -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], tuple[int, ...]]]:
    idx = torch.randint(0, B, (B,))
    mask = torch.rand(B, H) > 0.5
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    tokens = torch.randint(0, 100, (B, T))
    return {
        "x * 2 (reference: an existing op)": (lambda x: x * 2.0, (B, H)),
        "relu (reference)": (lambda x: x.relu(), (B, H)),
        "h[:, t] (select)": (lambda x: x[:, 3], (B, T, H)),
        "h.permute(1, 0, 2)": (lambda x: x.permute(1, 0, 2), (B, T, H)),
        "h.expand(4, B, H)": (lambda x: x.expand(4, B, H), (B, H)),
        "h.unbind(1) (20 outputs, 1 used)": (lambda x: x.unbind(1)[5], (B, T, H)),
        "h.chunk(4, -1)[1]": (lambda x: x.chunk(4, -1)[1], (B, 4 * H)),
        "torch.stack([h, h])": (lambda x: torch.stack([x, x]), (B, H)),
        "torch.cat([h, h], -1)": (lambda x: torch.cat([x, x], -1), (B, H)),
        "bmm (B, T, H) @ (B, H, T)": (lambda x: torch.bmm(x, x.transpose(1, 2)), (B, T, H)),
        "matmul 4-d (2, 8, T, 4)": (lambda x: x @ x.transpose(-2, -1), (2, 8, T, 4)),
        "masked_fill causal": (lambda x: x.masked_fill(causal, -1e9), (B, T, T)),
        "softmax(-1)": (lambda x: x.softmax(-1), (B, T, T)),
        "h[idx] (advanced)": (lambda x: x[idx], (B, H)),
        "h[mask] (boolean)": (lambda x: x[mask], (B, H)),
        "gather": (lambda x: x.gather(1, idx[:, None].expand(B, 4) % H), (B, H)),
        "index_select": (lambda x: x.index_select(0, idx), (B, H)),
        "where": (lambda x: torch.where(mask, x, 0.0), (B, H)),
        "max(dim)": (lambda x: x.max(-1)[0], (B, H)),
        "amax(dim)": (lambda x: x.amax(-1), (B, H)),
        "logsumexp": (lambda x: x.logsumexp(-1), (B, H)),
        "cumsum": (lambda x: x.cumsum(-1), (B, H)),
        "var(dim)": (lambda x: x.var(-1), (B, H)),
        "norm(dim)": (lambda x: x.norm(dim=-1), (B, H)),
        "sqrt": (lambda x: x.sqrt(), (B, H)),
        "sin": (lambda x: x.sin(), (B, H)),
        "triu": (lambda x: x.triu(), (T, T)),
        "embedding (100, H)": (lambda w: torch.nn.functional.embedding(tokens, w), (100, H)),
        "RNN-style loop, T steps (select, 2 matmuls, tanh, stack)": (_rnn_loop, (B, T + H, H)),
        "causal attention (bmm, masked_fill, softmax, bmm)": (
            lambda x: torch.softmax((x @ x.transpose(-2, -1)).masked_fill(causal, -math.inf)
                                    / math.sqrt(H), -1) @ x, (B, T, H)),
    }


def _rnn_loop(p: torch.Tensor) -> torch.Tensor:
    """A hand-written recurrence over ``T`` steps: inputs ``p[:, :T]``, weight ``p[0, T:]``."""
    x, w = p[:, :T], p[0, T:]
    h = x[:, 0]
    outs = []
    for t in range(T):
        h = torch.tanh(x[:, t] @ w + h @ w)
        outs.append(h)
    return torch.stack(outs, 1)


def _step(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, g: torch.Tensor
          ) -> Callable[[], None]:
    def run() -> None:  # .grad keeps accumulating (in place, in both): no reset to time
        op(x).backward(g)

    return run


def measure(blocks: int, block_s: float) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    rows = []
    for name, (op, shape) in _ops().items():
        torch.manual_seed(0)
        base = torch.rand(shape) + 0.5
        ref_x = base.clone().requires_grad_()
        shim_x = shimnn.Parameter(base.clone())
        with torch.no_grad():
            g = torch.randn(op(base).shape)
        seconds = interleaved({"torch": _step(op, ref_x, g), "shimnn": _step(op, shim_x, g)},
                              blocks=blocks, block_s=block_s, warmup_s=0.05)
        ratio = ratio_spread(seconds["torch"], seconds["shimnn"])
        rows.append({"op": name, "torch_us": spread(seconds["torch"]).median * 1e6,
                     "shimnn_us": spread(seconds["shimnn"]).median * 1e6,
                     "ratio": ratio.median, "ratio_q1": ratio.q1, "ratio_q3": ratio.q3})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    blocks, block_s = (11, 0.01) if args.quick else (31, 0.02)
    rows = measure(blocks, block_s)
    env = environment()
    print(environment_line(env))
    print()
    print("| op (forward + backward) | torch µs | shimnn µs | torch/shimnn (IQR) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['op']} | {r['torch_us']:.1f} | {r['shimnn_us']:.1f} | "
              f"{r['ratio']:.2f} ({r['ratio_q1']:.2f}–{r['ratio_q3']:.2f}) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
