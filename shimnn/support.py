"""The support table: which torch.nn / functional / optim names shimnn implements.

Generated from the code (``shimnn support``), so it cannot go stale: the README embeds its
output and a test fails when they differ.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from types import ModuleType

import torch

__all__ = ["support_rows", "support_summary", "support_table", "tensor_operations"]


# torch.nn.functional helpers that are not operations.
_NOT_OPS = {"assert_int_or_pair", "boolean_dispatch", "handle_torch_function",
            "has_torch_function", "has_torch_function_unary", "has_torch_function_variadic"}


def _public(module: ModuleType, kind: str) -> list[str]:
    names = []
    for name in dir(module):
        if name.startswith("_") or name in _NOT_OPS:
            continue
        value = getattr(module, name)
        if kind == "module" and inspect.isclass(value) and issubclass(value, torch.nn.Module):
            names.append(name)
        elif kind == "function" and callable(value) and not inspect.isclass(value) and (
                getattr(value, "__module__", "") or "").startswith("torch"):
            names.append(name)
        elif kind == "optimizer" and inspect.isclass(value) and issubclass(
                value, torch.optim.Optimizer) and value is not torch.optim.Optimizer:
            names.append(name)
    return sorted(names)


def _shim_owned(shim_module: ModuleType, names: Iterable[str]) -> set[str]:
    owned = set()
    for name in names:
        value = shim_module.__dict__.get(name)
        if value is not None and (getattr(value, "__module__", "") or "").startswith("shimnn"):
            owned.add(name)
    return owned


_OPERATORS = {"__add__": "+", "__radd__": "+", "__iadd__": "+=", "__sub__": "-",
              "__rsub__": "-", "__isub__": "-=", "__mul__": "*", "__rmul__": "*",
              "__truediv__": "/", "__rdiv__": "/", "__rtruediv__": "/", "__div__": "/",
              "__neg__": "unary -", "__matmul__": "@", "__rmatmul__": "@", "__pow__": "**",
              "__getitem__": "[ ] (ints, slices, int and bool tensors)", "__abs__": "abs()"}


def _tensor_ops() -> list[str]:
    from ._graph import HANDLED

    names = set()
    for func in HANDLED:
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a property: .T, .mT
            name = "." + getattr(getattr(func, "__self__", None), "__name__", name)
        elif getattr(func, "__module__", "") == "torch.autograd":
            name = f"torch.autograd.{name}"  # grad, backward: shimnn's engine
        names.add(_OPERATORS.get(name, name))
    return sorted(n for n in names if n and not n.startswith("_"))


def support_rows() -> list[tuple[str, list[str], list[str]]]:
    """For each torch namespace: its title, the names shimnn implements, the names it lacks
    (from the installed torch's public names)."""
    import shimnn
    import shimnn.functional
    import shimnn.optim

    rows = []
    for title, torch_module, shim_module, kind in (
            ("`torch.nn` modules", torch.nn, shimnn, "module"),
            ("`torch.nn.functional`", torch.nn.functional, shimnn.functional, "function"),
            ("`torch.optim`", torch.optim, shimnn.optim, "optimizer")):
        names = _public(torch_module, kind)
        owned = _shim_owned(shim_module, names)
        rows.append((title, [n for n in names if n in owned], [n for n in names if n not in owned]))
    return rows


def tensor_operations() -> list[str]:
    """The operations on shimnn's tensors that have a hand-written backward (``torch.X``,
    ``Tensor.X``, operators)."""
    return _tensor_ops()


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def support_table() -> str:
    """Markdown: for each torch namespace, the names shimnn implements and those it lacks."""
    rows = [f"| {title} ({len(have)} of {len(have) + len(lack)}) | {_names(have)} | "
            f"{_names(lack)} |" for title, have, lack in support_rows()]
    return "\n".join([
        "| torch namespace | implemented by shimnn (hand-written backward) | not yet: torch's "
        "own, and a gradient through them raises naming them |",
        "|---|---|---|",
        *rows,
        "",
        f"Operations on tracked tensors (`torch.X`, `Tensor.X`, operators): "
        f"{_names(tensor_operations())}.",
    ])


def _short_names(names: Iterable[str]) -> str:
    """:func:`_names` with the 1-d/2-d/3-d variants of a class on one entry
    (``Conv1d/2d``)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        match = re.fullmatch(r"(.+?)([123]d)", name)
        stem, dims = (match.group(1), match.group(2)) if match else (name, "")
        groups.setdefault(stem, []).append(dims)
    return ", ".join(f"`{stem}{'/'.join(dims)}`" for stem, dims in groups.items())


def support_summary() -> str:
    """Markdown for the README: counts per namespace, the module and optimizer names."""
    lines = ["| torch namespace | implemented by shimnn (hand-written backward) |", "|---|---|"]
    for title, have, lack in support_rows():
        listed = f": {_short_names(have)}" if "functional" not in title else ""
        lines.append(f"| {title} | {len(have)} of {len(have) + len(lack)}{listed} |")
    lines.append(f"| operations on tracked tensors (`torch.X`, `Tensor.X`, operators) | "
                 f"{len(tensor_operations())} |")
    return "\n".join(lines)
