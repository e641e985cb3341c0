"""The ``shimnn`` command line: ``shimnn demo``, ``shimnn run``, ``shimnn compare``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["main"]


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 25,25,25, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return sizes


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shimnn",
        description="torch.nn with hand-written gradients, bit-identical to torch.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"shimnn {__version__}, "
                        f"torch {torch.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train the seed report's disc network with shimnn and with torch",
        description="Train the seed report's network (points inside a disc) with shimnn and "
                    "with torch from the same seed, side by side.")
    demo.add_argument("--epochs", type=_positive(int), default=25)
    demo.add_argument("--batch-size", type=_positive(int), default=50)
    demo.add_argument("--lr", type=_positive(float), default=0.1)
    demo.add_argument("--hidden", type=_hidden, default=(25, 25, 25),
                      help="hidden layer sizes, comma separated (default 25,25,25)")
    demo.add_argument("--activation", choices=["ReLU", "Tanh"], default="ReLU")
    demo.add_argument("--momentum", type=float, default=0.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    run = sub.add_parser(
        "run", help="run an unmodified PyTorch script with shimnn serving torch.nn/optim",
        description="Run SCRIPT as __main__ with the torch.nn, torch.nn.functional and "
                    "torch.optim names that shimnn implements served by shimnn. Random seeds "
                    "are left alone unless --seed is given.")
    run.add_argument("--seed", type=int, default=None,
                     help="seed Python's, NumPy's and torch's RNGs before the script runs")
    run.add_argument("--torch", action="store_true",
                     help="run with torch itself (no shimnn), e.g. for a comparison")
    run.add_argument("script", help="path to the Python script")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    compare = sub.add_parser(
        "compare", help="run a script under torch and under shimnn and compare what it prints",
        description="Run SCRIPT twice in fresh processes from the same seeds (Python, NumPy, "
                    "torch): with torch, then with shimnn serving torch.nn/optim. Reports "
                    "whether every number printed is identical (first difference shown) and "
                    "the wall-time ratio. Exit status 0 when identical.")
    compare.add_argument("--seed", type=int, default=0, help="seed for both runs (default 0)")
    compare.add_argument("script", help="path to the Python script")
    compare.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    return parser


def _demo(args: argparse.Namespace) -> int:
    import shimnn
    import shimnn.optim
    from shimnn.disc import disc_data, train

    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    data = disc_data(seed=args.seed, dtype=dtype)
    kwargs = dict(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  hidden=args.hidden, activation=args.activation,
                  optimizer_options={"momentum": args.momentum} if args.momentum else None)
    print(f"disc task: 1000 train / 1000 test points, network 2-"
          f"{'-'.join(map(str, args.hidden))}-1 ({args.activation}, Tanh out), MSE, "
          f"SGD lr {args.lr}, batch {args.batch_size}, {args.dtype}, seed {args.seed}")
    ref = train(torch.nn, torch.optim, data, **kwargs)
    shim = train(shimnn, shimnn.optim, data, **kwargs)
    header = (f"{'epoch':>5}  {'loss torch':>11} {'loss shimnn':>11}  {'test err torch':>14} "
              f"{'test err shimnn':>15}  {'same':>4}")
    print(header)
    for e in range(args.epochs):
        same = ref.epoch_loss[e] == shim.epoch_loss[e] and ref.test_error[e] == shim.test_error[e]
        print(f"{e + 1:>5}  {ref.epoch_loss[e]:>11.6f} {shim.epoch_loss[e]:>11.6f}  "
              f"{ref.test_error[e]:>14.2%} {shim.test_error[e]:>15.2%}  "
              f"{'yes' if same else 'NO':>4}")
    identical = ref.losses == shim.losses and all(
        torch.equal(a, b) for a, b in zip(ref.model.parameters(), shim.model.parameters()))
    t_ref, t_shim = sum(ref.epoch_seconds), sum(shim.epoch_seconds)
    print(f"every loss and parameter bit-identical: {'yes' if identical else 'NO'}")
    print(f"training time: torch {t_ref / args.epochs * 1e3:.1f} ms/epoch, shimnn "
          f"{t_shim / args.epochs * 1e3:.1f} ms/epoch ({t_ref / t_shim:.2f}x)")
    return 0 if identical else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    from . import runner

    if not os.path.isfile(args.script):
        parser.error(f"{args.command}: no such script: {args.script}")
    if args.command == "run":
        return runner.run_script(args.script, args.args, seed=args.seed, use_shimnn=not args.torch)
    if args.command == "compare":
        return runner.compare_script(args.script, args.args, seed=args.seed)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
