"""shimnn's source never reaches into torch.autograd (the runtime tests forbid it as well).

The one exception is the test harness users call, ``shimnn.testing``, in two named places:
the guard (it *replaces* torch's engine entry points so that they raise) and the reference side
of ``assert_matches_torch`` (torch's autograd is the oracle there, run on torch's tensors; the
shimnn side runs inside the guard, which ``tests/test_testing.py`` checks).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import shimnn

SOURCE = Path(shimnn.__file__).parent
# shimnn.testing files that may name torch.autograd, and why (see the module docstring).
HARNESS = {"testing/_guard.py": "replaces the engine entry points with ones that raise",
           "testing/_parity.py": "runs the torch reference side with torch's autograd"}
# In shimnn.testing, its own names (assert_no_autograd...) are fine; torch's module is not.
TORCH_AUTOGRAD = re.compile(r"(^|[. ])_?autograd($|[. ])")


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _names(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            found.append((node.lineno, _dotted(node)))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node.lineno, " ".join([getattr(node, "module", "") or ""] +
                                                [a.name for a in node.names])))
    return found


def test_no_autograd_in_shimnn_source() -> None:
    offenders = []
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) >= 8
    for path in files:
        rel = path.relative_to(SOURCE).as_posix()
        if rel in HARNESS:
            continue
        harness = rel.startswith("testing/")
        for lineno, name in _names(path):
            if (TORCH_AUTOGRAD.search(name) if harness else "autograd" in name):
                offenders.append(f"{rel}:{lineno}: {name}")
    assert offenders == []


def test_the_harness_exceptions_exist_and_the_check_sees_them() -> None:
    for rel in HARNESS:
        assert any(TORCH_AUTOGRAD.search(name) for _, name in _names(SOURCE / rel)), rel
