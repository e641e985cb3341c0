"""shimnn's source never reaches into torch.autograd (the runtime tests forbid it as well)."""

from __future__ import annotations

import ast
from pathlib import Path

import shimnn

SOURCE = Path(shimnn.__file__).parent


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_no_autograd_in_shimnn_source() -> None:
    offenders = []
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            name = ""
            if isinstance(node, ast.Attribute):
                name = _dotted(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                name = " ".join([getattr(node, "module", "") or ""] +
                                [a.name for a in node.names])
            if "autograd" in name:
                offenders.append(f"{path.name}:{node.lineno}: {name}")
    assert offenders == []
