"""shimnn's source never reaches into torch.autograd (the runtime tests forbid it as well).

The only mentions allowed are the ones through which shimnn takes torch's autograd entry points
over or refuses torch's autograd modes, each listed here with why; none of them calls into
torch's engine or records a torch graph."""

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


ALLOWED = {
    # torch.autograd.grad / torch.autograd.backward on shimnn tensors reach shimnn's engine
    # through __torch_function__: these name the callables shimnn registers for them.
    ("_engine.py", "torch.autograd.grad"),
    ("_engine.py", "torch.autograd.backward"),
    # torch.autograd.Function subclasses applied to shimnn tensors run in shimnn's engine.
    ("function.py", "torch.autograd.Function"),
    ("function.py", "torch.autograd.function._SingleLevelFunction.setup_context"),
    # Read only, to refuse what shimnn cannot honour: forward-mode AD's level, the
    # saved-tensors hooks in use, torch's anomaly-mode flags.
    ("_graph.py", "torch.autograd.forward_ad"),
    ("_graph.py", "torch._C._autograd._top_saved_tensors_default_hooks"),
}


def test_no_autograd_in_shimnn_source() -> None:
    offenders = []
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        # Only whole attribute chains (a.b.c), not their inner parts (a.b).
        inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        for node in ast.walk(tree):
            name = ""
            if isinstance(node, ast.Attribute) and id(node) not in inner:
                name = _dotted(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                name = " ".join([getattr(node, "module", "") or ""] +
                                [a.name for a in node.names]).strip()
            if "autograd" in name and (path.name, name) not in ALLOWED:
                offenders.append(f"{path.name}:{node.lineno}: {name}")
    assert offenders == []

