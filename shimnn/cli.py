"""The ``shimnn`` command line: ``shimnn demo``, ``shimnn run``, ``shimnn compare`` (a script,
``-m MODULE`` or a console script), ``shimnn support``, ``shimnn native``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["main"]


def _hidden(text: str) -> tuple[int, ...]:
    """``25,25,25`` -> (25, 25, 25); an empty item (``25,,25``) is an error, not skipped."""
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected positive sizes separated by commas, like 25,25,25, got {text!r}") from None
    if min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return sizes


def _choice(names: Sequence[str]) -> Callable[[str], str]:
    """A choice among torch's class names, also accepted in torch's lower-case spelling
    (``adam``, ``relu``: as in ``torch.optim.adam``, ``F.relu``)."""
    by_lower = {name.lower(): name for name in names}

    def parse(text: str) -> str:
        name = by_lower.get(text.lower())
        if name is None:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {text!r} (choose from {', '.join(names)}; any case)")
        return name

    parse.__name__ = "choice"
    return parse


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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train the seed report's network (points inside a disc) with torch and "
                    "with shimnn from the same seeds: a table at epoch milestones (loss, "
                    "errors, bit-identity, median time per epoch) and PNG figures.")
    demo.add_argument("--epochs", type=_positive(int), default=100, help="training epochs")
    demo.add_argument("--batch-size", type=_positive(int), default=50, help="mini-batch size")
    demo.add_argument("--lr", type=_positive(float), default=0.1, help="learning rate")
    demo.add_argument("--hidden", type=_hidden, default="25,25,25",
                      help="hidden layer sizes, comma separated")
    activations, optimizers = ["ReLU", "Tanh"], ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]
    demo.add_argument("--activation", type=_choice(activations), default="ReLU",
                      metavar="{" + ",".join(activations) + "}",
                      help="hidden layers' activation (any case: relu)")
    demo.add_argument("--optimizer", type=_choice(optimizers), default="SGD",
                      metavar="{" + ",".join(optimizers) + "}",
                      help="torch.optim optimizer (any case: adam)")
    demo.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    demo.add_argument("--seed", type=int, default=0, help="the first run's seed")
    demo.add_argument("--runs", type=_positive(int), default=1,
                      help="average over this many seeds (seed, seed+1...), as the report did")
    demo.add_argument("--dtype", type=_choice(["float32", "float64"]), default="float32",
                      metavar="{float32,float64}", help="parameter and data dtype")
    demo.add_argument("--out", default="demo-output", help="folder for the PNG figures")
    demo.add_argument("--no-figures", action="store_true", help="skip the figures")
    demo.add_argument("--progress", action="store_true",
                      help="show the progress bar even when stderr is not a terminal")
    run = sub.add_parser(
        "run", help="run an unmodified PyTorch program with shimnn serving torch.nn/optim",
        usage="shimnn run [-h] [--seed SEED] [--torch] [--nproc-per-node N] "
              "(SCRIPT | -m MODULE) [args ...]",
        description="Run SCRIPT as __main__ (or, like python -m, MODULE; or an installed "
                    "console script such as pytest or torchrun) with the torch.nn, "
                    "torch.nn.functional and torch.optim names that shimnn implements served "
                    "by shimnn, in this process and in every Python process it starts "
                    "(torchrun workers, spawned children). Random seeds are left alone unless "
                    "--seed is given. With --nproc-per-node N, the program runs as N "
                    "processes on this machine, as torchrun --standalone --nproc-per-node N "
                    "runs it.")
    run.add_argument("--seed", type=int, default=None,
                     help="seed Python's, NumPy's and torch's RNGs before the program runs")
    run.add_argument("--torch", action="store_true",
                     help="run with torch itself (no shimnn), e.g. for a comparison")
    _target_arguments(run)
    compare = sub.add_parser(
        "compare", help="run a program under torch and under shimnn and compare what it prints",
        usage="shimnn compare [-h] [--seed SEED] [--nproc-per-node N] (SCRIPT | -m MODULE) "
              "[args ...]",
        description="Run SCRIPT (or -m MODULE) twice in fresh processes from the same seeds "
                    "(Python, NumPy, torch): with torch, then with shimnn serving "
                    "torch.nn/optim. Reports whether every number printed is identical (first "
                    "difference shown) and the wall-time ratio. Exit status 0 when identical.")
    compare.add_argument("--seed", type=int, default=0, help="seed for both runs (default 0)")
    _target_arguments(compare)
    sub.add_parser("support", help="print the support table (Markdown)",
                   description="Print which torch.nn, torch.nn.functional and torch.optim "
                               "names shimnn implements.")
    sub.add_parser("native", help="build the compiled fast paths now (if needed) and say "
                   "whether they are in use",
                   description="shimnn builds its C++ fast paths in a background process on "
                               "first use (about 30 s to 1.5 min; cached in $SHIMNN_CACHE, "
                               "else $XDG_CACHE_HOME/shimnn or ~/.cache/shimnn; a C++ "
                               "compiler and ninja are needed). This builds them now, in the "
                               "foreground (e.g. in a container image; it retries a build "
                               "that failed and shows the compiler's error), and prints "
                               "their status. Exit status 0 when they are in use.")
    return parser


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc-per-node", "--nproc_per_node", dest="nproc_per_node",
                        type=_positive(int), default=None, metavar="N",
                        help="run the script (or -m MODULE) as N processes on this machine "
                             "through torchrun (torch.distributed.run --standalone "
                             "--nproc-per-node N): each sees RANK, WORLD_SIZE, LOCAL_RANK, "
                             "MASTER_ADDR and MASTER_PORT")
    parser.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE",
                        help="run a module (or package) as __main__, like python -m; the rest "
                             "of the command line is its arguments")
    parser.add_argument("script", nargs="?", help="path to the Python script, or the name of "
                                                  "an installed console script (pytest, "
                                                  "torchrun)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the program's own arguments")


def _target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The program a run/compare command names, and its arguments."""
    from .runner import Target, find_console_script

    if args.module is not None:
        if not args.module:
            parser.error(f"{args.command}: argument -m: expected a module name")
        target, target_args = Target("module", args.module[0]), list(args.module[1:])
    elif args.script is None:
        parser.error(f"{args.command}: give a script, a console script or -m MODULE")
    elif os.path.isfile(args.script):
        target, target_args = Target("script", args.script), list(args.args)
    elif os.sep not in args.script and find_console_script(args.script) is not None:
        target, target_args = Target("console_script", args.script), list(args.args)
    else:
        parser.error(f"{args.command}: no such script: {args.script} (not a file, nor an "
                     "installed console script)")
    if args.nproc_per_node is None:
        return target, target_args
    if target.kind == "console_script":
        parser.error(f"{args.command}: --nproc-per-node runs a script or -m MODULE, not the "
                     f"console script {target.name}")
    # torchrun on this machine: a free rendezvous port, N workers, each patched like any child.
    return Target("module", "torch.distributed.run"), [
        "--standalone", f"--nproc-per-node={args.nproc_per_node}", *target.argv(), *target_args]


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    if args.momentum and args.optimizer != "SGD":
        raise SystemExit("shimnn demo: error: --momentum applies to --optimizer SGD only")
    if args.momentum < 0:
        raise SystemExit(f"shimnn demo: error: --momentum must be >= 0, got {args.momentum}")
    cfg = DemoConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     hidden=args.hidden, activation=args.activation, optimizer=args.optimizer,
                     momentum=args.momentum, seed=args.seed, runs=args.runs, dtype=args.dtype,
                     out=args.out, figures=not args.no_figures)
    return run_demo(cfg, show_progress=True if args.progress else None)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. shimnn's own commands end a failure with one line on stderr (no
    traceback) and exit status 1; ``run`` and ``compare`` report the program's own."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = _command(parser, args)
        sys.stdout.flush()  # inside the try: a closed pipe fails here, not at exit
        return status
    except BrokenPipeError:  # `shimnn support | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except KeyboardInterrupt:
        print(f"shimnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.command in ("run", "compare"):
            raise
        from .demo import DemoError

        what = str(error) if isinstance(error, DemoError) else f"{type(error).__name__}: {error}"
        print(f"shimnn {args.command}: error: {what}", file=sys.stderr)
        return 1


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _demo(args)
    if args.command == "support":
        from .support import support_table

        print(support_table())
        return 0
    if args.command == "native":
        from . import _native

        in_use, line = _native.build_now()
        print(line)
        return 0 if in_use else 1
    from . import runner

    target, target_args = _target(parser, args)
    if args.command == "run":
        return runner.run_target(target, target_args, seed=args.seed, use_shimnn=not args.torch)
    if args.command == "compare":
        return runner.compare_target(target, target_args, seed=args.seed)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
