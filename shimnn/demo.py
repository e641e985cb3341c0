"""``shimnn demo``: the seed report's disc task, trained with torch and with shimnn side by side.

Prints, at epoch milestones, loss and train/test error for both frameworks, whether every
parameter is still bit-identical, and milliseconds per epoch; writes PNG figures (decision
regions of both models side by side, learning curves) into an output folder. ``--runs N``
averages over N seeds, as the report's accuracy table did.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .disc import RADIUS, Run, disc_data, train_epochs

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """The demo's options (the command line's flags)."""

    epochs: int = 100
    batch_size: int = 50
    lr: float = 0.1
    hidden: Sequence[int] = (25, 25, 25)
    activation: str = "ReLU"
    optimizer: str = "SGD"
    momentum: float = 0.0
    seed: int = 0
    runs: int = 1
    dtype: str = "float32"
    out: str = "demo-output"
    figures: bool = True


def _milestones(epochs: int) -> list[int]:
    marks = {1, epochs}
    for m in (5, 10, 25, 50, 100, 200, 500, 1000):
        if m < epochs:
            marks.add(m)
    return sorted(marks)


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or forced)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{label} {elapsed:5.1f}s")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _identical(a: Any, b: Any) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def _train_pair(cfg: DemoConfig, seed: int, progress: _Progress
                ) -> tuple[Run, Run, list[bool]]:
    """Train torch and shimnn from ``seed``, alternating epoch by epoch (both see the same
    machine load); after each epoch, check every loss so far and every parameter are
    bit-identical."""
    import shimnn
    import shimnn.optim

    data = disc_data(seed=seed, dtype=getattr(torch, cfg.dtype))
    options: dict[str, Any] = {"momentum": cfg.momentum} if cfg.momentum else {}
    kwargs: dict[str, Any] = dict(seed=seed, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                  lr=cfg.lr, hidden=cfg.hidden, activation=cfg.activation,
                                  optimizer=cfg.optimizer, optimizer_options=options)
    same: list[bool] = []
    ref_run = shim_run = None
    for ref_run, shim_run in zip(train_epochs(torch.nn, torch.optim, data, **kwargs),
                                 train_epochs(shimnn, shimnn.optim, data, **kwargs)):
        same.append(ref_run.losses == shim_run.losses
                    and _identical(ref_run.model, shim_run.model))
        progress.step(f"run {seed - cfg.seed + 1}/{cfg.runs}, epoch {len(same)}")
    assert ref_run is not None and shim_run is not None
    return ref_run, shim_run, same


def run_demo(cfg: DemoConfig, *, show_progress: bool | None = None) -> int:
    """Run the demo; returns 0 if every run stayed bit-identical, 1 otherwise."""
    torch.set_num_threads(1)
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    progress = _Progress(cfg.epochs * cfg.runs, show_progress)
    print(f"Disc task (seed report): 1000 train / 1000 test points in [0,1]^2, label +1 inside "
          f"the disc of radius 1/sqrt(2 pi). Network 2-{'-'.join(map(str, cfg.hidden))}-1 "
          f"({cfg.activation}, Tanh out), MSE, {cfg.optimizer} lr {cfg.lr}"
          f"{f' momentum {cfg.momentum}' if cfg.momentum else ''}, batch {cfg.batch_size}, "
          f"{cfg.dtype}, {cfg.runs} run(s) from seed {cfg.seed}.")
    pairs = [_train_pair(cfg, cfg.seed + r, progress) for r in range(cfg.runs)]
    _print_table(cfg, pairs)
    identical = all(all(same) for _, _, same in pairs)
    print(f"\nEvery loss and parameter bit-identical between torch and shimnn: "
          f"{'yes' if identical else 'NO'}")
    if cfg.figures:
        written = _figures(cfg, pairs)
        if written:
            print("Figures: " + ", ".join(written))
    return 0 if identical else 1


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _print_table(cfg: DemoConfig, pairs: list[tuple[Run, Run, list[bool]]]) -> None:
    header = ("epoch", "loss torch", "loss shimnn", "train err t/s", "test err torch",
              "test err shimnn", "identical", "ms/ep torch", "ms/ep shimnn", "speed-up")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for m in _milestones(cfg.epochs):
        e = m - 1
        ref_loss = _mean([r.epoch_loss[e] for r, _, _ in pairs])
        shim_loss = _mean([s.epoch_loss[e] for _, s, _ in pairs])
        train_t = _mean([r.train_error[e] for r, _, _ in pairs])
        train_s = _mean([s.train_error[e] for _, s, _ in pairs])
        test_t = _mean([r.test_error[e] for r, _, _ in pairs])
        test_s = _mean([s.test_error[e] for _, s, _ in pairs])
        same = all(same[e] for _, _, same in pairs)
        # Time per epoch up to this milestone (median over epochs, then mean over runs).
        t_ref = _mean([sorted(r.epoch_seconds[:m])[m // 2] for r, _, _ in pairs]) * 1e3
        t_shim = _mean([sorted(s.epoch_seconds[:m])[m // 2] for _, s, _ in pairs]) * 1e3
        print(f"| {m} | {ref_loss:.6f} | {shim_loss:.6f} | {train_t:.1%} / {train_s:.1%} | "
              f"{test_t:.1%} | {test_s:.1%} | {'yes' if same else 'NO'} | {t_ref:.2f} | "
              f"{t_shim:.2f} | {t_ref / t_shim:.2f}x |")


def _figures(cfg: DemoConfig, pairs: list[tuple[Run, Run, list[bool]]]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no figures; `pip install matplotlib`)")
        return []
    os.makedirs(cfg.out, exist_ok=True)
    ref, shim, _ = pairs[0]
    dtype = getattr(torch, cfg.dtype)
    _, _, test_x, test_y = disc_data(seed=cfg.seed, dtype=dtype)
    n = 300
    axis = torch.linspace(0, 1, n, dtype=dtype)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    for ax, (name, run) in zip(axes, (("PyTorch (autograd)", ref),
                                      ("shimnn (hand-written backward)", shim))):
        with torch.no_grad():
            z = run.model(grid).reshape(n, n).detach()
        ax.contourf(gx.numpy(), gy.numpy(), z.numpy(), levels=[-1.0, 0.0, 1.0],
                    colors=["#f4c7a1", "#a8cbe8"])
        inside = test_y[:, 0] > 0
        ax.scatter(test_x[inside, 0], test_x[inside, 1], s=6, c="#1f5fa0", label="label +1")
        ax.scatter(test_x[~inside, 0], test_x[~inside, 1], s=6, c="#b5541c", label="label -1")
        ax.add_patch(plt.Circle((0.5, 0.5), RADIUS, fill=False, ls="--", color="black"))
        ax.set_title(f"{name}\ntest error {run.test_error[-1]:.1%} after {cfg.epochs} epochs")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
    axes[0].legend(loc="upper right", fontsize=8)
    same = "identical" if _identical(ref.model, shim.model) else "DIFFERENT"
    fig.suptitle(f"Decision regions (blue: predicted inside); parameters {same}")
    regions = os.path.join(cfg.out, "decision_regions.png")
    fig.savefig(regions, dpi=110)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    epochs = range(1, cfg.epochs + 1)
    ax1.plot(epochs, ref.epoch_loss, lw=3, color="#b5541c", alpha=0.5, label="PyTorch")
    ax1.plot(epochs, shim.epoch_loss, lw=1, color="#1f5fa0", ls="--", label="shimnn")
    ax1.set(xlabel="epoch", ylabel="mean training loss (MSE)", title="Training loss")
    ax2.plot(epochs, ref.test_error, lw=3, color="#b5541c", alpha=0.5, label="PyTorch")
    ax2.plot(epochs, shim.test_error, lw=1, color="#1f5fa0", ls="--", label="shimnn")
    ax2.set(xlabel="epoch", ylabel="test error", title="Test error")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    curves = os.path.join(cfg.out, "learning_curves.png")
    fig.savefig(curves, dpi=110)
    plt.close(fig)
    return [regions, curves]

