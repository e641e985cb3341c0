"""``shimnn demo``: the seed report's disc task, trained with torch and with shimnn side by side.

Prints, at epoch milestones, loss and train/test error for both frameworks, whether every
loss and parameter so far is bit-identical (identical NaNs count as identical), and the median
time of one epoch so far; writes PNG figures (decision regions of both models side by side,
learning curves) into an output folder. ``--runs N`` averages over N seeds, as the report's
accuracy table did. Errors the user can fix (an unwritable folder) are :class:`DemoError`:
the command line prints them as one line.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .disc import RADIUS, Run, disc_data, train_epochs

__all__ = ["DemoConfig", "DemoError", "decision_figure", "learning_curves_figure", "run_demo"]


class DemoError(Exception):
    """A problem with the demo's options or environment, reported as one line."""


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
    """Every parameter bit for bit (a NaN equals a NaN with the same bits)."""
    from .testing import bitwise_identical

    return bitwise_identical(list(a.parameters()), list(b.parameters()))


def _train_pair(cfg: DemoConfig, seed: int, progress: _Progress
                ) -> tuple[Run, Run, list[bool]]:
    """Train torch and shimnn from ``seed``, alternating epoch by epoch (both see the same
    machine load); after each epoch, check every loss so far and every parameter are
    bit-identical."""
    import shimnn
    import shimnn.optim
    from shimnn.testing import bitwise_identical

    data = disc_data(seed=seed, dtype=getattr(torch, cfg.dtype))
    options: dict[str, Any] = {"momentum": cfg.momentum} if cfg.momentum else {}
    kwargs: dict[str, Any] = dict(seed=seed, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                  lr=cfg.lr, hidden=cfg.hidden, activation=cfg.activation,
                                  optimizer=cfg.optimizer, optimizer_options=options)
    same: list[bool] = []
    ref_run = shim_run = None
    for ref_run, shim_run in zip(train_epochs(torch.nn, torch.optim, data, **kwargs),
                                 train_epochs(shimnn, shimnn.optim, data, **kwargs)):
        same.append(bitwise_identical(ref_run.losses, shim_run.losses)
                    and _identical(ref_run.model, shim_run.model))
        progress.step(f"run {seed - cfg.seed + 1}/{cfg.runs}, epoch {len(same)}")
    assert ref_run is not None and shim_run is not None
    return ref_run, shim_run, same


def _prepare_output(cfg: DemoConfig) -> None:
    """Create the figures' folder before training, so a bad ``--out`` fails at once."""
    if not cfg.figures:
        return
    try:
        os.makedirs(cfg.out, exist_ok=True)
        probe = os.path.join(cfg.out, ".shimnn-demo-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise DemoError(f"cannot write the figures to {cfg.out!r}: {error.strerror or error} "
                        "(choose another --out, or --no-figures)") from None


def _settle_native() -> tuple[str, bool | None]:
    """Decide, before any epoch is timed, which of shimnn's paths this run uses: the compiled
    ones if they are built; else the Python paths for the whole run (a background build is not
    picked up half-way, which would change the times mid-table). Returns a line saying which,
    and the setting to restore afterwards (None: unchanged)."""
    from . import _native

    if _native.get() is not None:
        return "shimnn's compiled fast paths: in use", None
    why = _native.status().removeprefix("native fast paths: ")
    previous = _native.set_enabled(False)
    return (f"shimnn's compiled fast paths: not used in this run ({why}); timing the Python "
            "paths", previous)


def run_demo(cfg: DemoConfig, *, show_progress: bool | None = None) -> int:
    """Run the demo; returns 0 if every run stayed bit-identical, 1 otherwise."""
    from . import _native

    _prepare_output(cfg)
    torch.set_num_threads(1)
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    native_line, restore = _settle_native()
    try:
        return _run(cfg, show_progress, native_line)
    finally:
        if restore is not None:
            _native.set_enabled(restore)


def _run(cfg: DemoConfig, show_progress: bool, native_line: str) -> int:
    progress = _Progress(cfg.epochs * cfg.runs, show_progress)
    print(f"Disc task (seed report): 1000 train / 1000 test points in [0,1]^2, label +1 inside "
          f"the disc of radius 1/sqrt(2 pi). Network 2-{'-'.join(map(str, cfg.hidden))}-1 "
          f"({cfg.activation}, Tanh out), MSE, {cfg.optimizer} lr {cfg.lr}"
          f"{f' momentum {cfg.momentum}' if cfg.momentum else ''}, batch {cfg.batch_size}, "
          f"{cfg.dtype}, {cfg.runs} run(s) from seed {cfg.seed}.")
    print(native_line + ".")
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


TIME_NOTE = ("ms/epoch: the median time of one training epoch (forward, loss, backward, "
             "optimizer step, over every mini-batch; evaluation excluded) over the epochs up to "
             "that row; speed-up: torch's time / shimnn's (above 1: shimnn is faster). Errors: "
             "the share of points whose predicted sign is wrong.")


def _print_table(cfg: DemoConfig, pairs: list[tuple[Run, Run, list[bool]]]) -> None:
    header = ("epoch", "loss torch", "loss shimnn", "train err torch / shimnn", "test err torch",
              "test err shimnn", "bit-identical", "ms/epoch torch", "ms/epoch shimnn",
              "speed-up")
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
    print()
    print(TIME_NOTE)
    if any(math.isnan(r.epoch_loss[-1]) for r, _, _ in pairs):
        print("The loss diverged to NaN (in both frameworks alike): try a smaller --lr or "
              "--momentum.")


_TORCH_STYLE = dict(lw=3, color="#b5541c", alpha=0.5, label="PyTorch (autograd)")
_SHIM_STYLE = dict(lw=1, color="#1f5fa0", ls="--", label="shimnn (hand-written backward)")


def decision_figure(cfg: DemoConfig, pairs: list[tuple[Run, Run, list[bool]]]) -> Any:
    """The decision regions of both models (first run) over the test points, side by side:
    a matplotlib Figure whose axes are labelled and whose legend names every mark."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ref, shim, _ = pairs[0]
    dtype = getattr(torch, cfg.dtype)
    _, _, test_x, test_y = disc_data(seed=cfg.seed, dtype=dtype)
    n = 300
    axis = torch.linspace(0, 1, n, dtype=dtype)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    inside_colour, outside_colour = "#a8cbe8", "#f4c7a1"
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6), constrained_layout=True)
    for ax, (name, run) in zip(axes, (("PyTorch (autograd)", ref),
                                      ("shimnn (hand-written backward)", shim))):
        with torch.no_grad():
            z = run.model(grid).reshape(n, n).detach()
        z = torch.nan_to_num(z, nan=-1.0)  # a diverged model: everything "outside"
        ax.contourf(gx.numpy(), gy.numpy(), z.numpy(), levels=[-1.0, 0.0, 1.0],
                    colors=[outside_colour, inside_colour])
        inside = test_y[:, 0] > 0
        ax.scatter(test_x[inside, 0], test_x[inside, 1], s=6, c="#1f5fa0")
        ax.scatter(test_x[~inside, 0], test_x[~inside, 1], s=6, c="#b5541c")
        ax.add_patch(plt.Circle((0.5, 0.5), RADIUS, fill=False, ls="--", color="black"))
        ax.set_title(f"{name}\ntest error {run.test_error[-1]:.1%} after {cfg.epochs} epochs")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="x1 (first input)", ylabel="x2 (second input)")
        ax.set_aspect("equal")
    handles = [Patch(color=inside_colour, label="predicted inside (output >= 0)"),
               Patch(color=outside_colour, label="predicted outside (output < 0)"),
               Line2D([], [], ls="", marker="o", ms=4, color="#1f5fa0",
                      label="test point, label +1 (inside)"),
               Line2D([], [], ls="", marker="o", ms=4, color="#b5541c",
                      label="test point, label -1 (outside)"),
               Line2D([], [], ls="--", color="black", label="the true disc (radius 1/sqrt(2 pi))")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    same = "bit-identical" if _identical(ref.model, shim.model) else "DIFFERENT"
    fig.suptitle(f"Decision regions on the test set; the two models' parameters are {same}")
    return fig


def learning_curves_figure(cfg: DemoConfig, pairs: list[tuple[Run, Run, list[bool]]]) -> Any:
    """Training loss and test error (%) per epoch of both (first run), on top of each other."""
    import matplotlib.pyplot as plt

    ref, shim, _ = pairs[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    epochs = range(1, cfg.epochs + 1)
    ax1.plot(epochs, ref.epoch_loss, **_TORCH_STYLE)
    ax1.plot(epochs, shim.epoch_loss, **_SHIM_STYLE)
    ax1.set(xlabel="epoch", ylabel="mean training loss (MSE)", title="Training loss")
    ax2.plot(epochs, [100 * e for e in ref.test_error], **_TORCH_STYLE)
    ax2.plot(epochs, [100 * e for e in shim.test_error], **_SHIM_STYLE)
    ax2.set(xlabel="epoch", ylabel="test error (%)", title="Test error")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    return fig


def _figures(cfg: DemoConfig, pairs: list[tuple[Run, Run, list[bool]]]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('(matplotlib is not installed: no figures; `pip install "shimnn[demo]"`)')
        return []
    written = []
    for name, make in (("decision_regions.png", decision_figure),
                       ("learning_curves.png", learning_curves_figure)):
        fig = make(cfg, pairs)
        path = os.path.join(cfg.out, name)
        try:
            fig.savefig(path, dpi=110)
        except OSError as error:
            raise DemoError(f"cannot write {path!r}: {error.strerror or error}") from None
        finally:
            plt.close(fig)
        written.append(path)
    return written
