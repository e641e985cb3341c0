"""shimnn's source never reaches into torch.autograd (the runtime tests forbid it as well).

The only mentions allowed are the ones through which shimnn takes torch's autograd entry points
over or refuses torch's autograd modes, each listed here with why; none of them calls into
torch's engine or records a torch graph.

The test harness users call, ``shimnn.testing``, has two more named places: the guard (it
*replaces* torch's engine entry points so that they raise) and the reference side of
``assert_matches_torch`` (torch's autograd is the oracle there, run on torch's tensors; the
shimnn side runs inside the guard, which ``tests/test_testing.py`` checks).
"""

from __future__ import annotations

import ast
import re
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
    # DDP: torch's C++ reducer (kept for DDP's logger) gets its hooks taken off the parameters'
    # torch AccumulateGrad nodes, so that none of its reduction can ever run.
    ("_ddp.py", "cpp._remove_autograd_hooks"),
    # torch's legacy CPU profiler (it lives in torch._C._autograd; it is not the engine): it
    # lists the ATen ops torch's linear/matmul call on scratch tensors, to follow their path.
    ("_paths.py", "torch._C._autograd._profiler_enabled"),
    ("_paths.py", "torch._C._autograd._enable_profiler_legacy"),
    ("_paths.py", "torch._C._autograd._disable_profiler_legacy"),
    # Read only: whether a profiler runs, for the optimizers' step scope (as torch's own).
    ("optimizer.py", "torch.autograd profiler"),
}
# shimnn.testing files that may name torch.autograd, and why (see the module docstring).
HARNESS = {"testing/_guard.py": "replaces the engine entry points with ones that raise",
           "testing/_parity.py": "runs the torch reference side with torch's autograd"}
# Elsewhere in shimnn.testing its own names (assert_no_autograd...) are fine; torch's are not.
TORCH_AUTOGRAD = re.compile(r"(^|[. ])_?autograd($|[. ])")


def _names(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every whole attribute chain (a.b.c, not its inner a.b) and import."""
    tree = ast.parse(path.read_text(), str(path))
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            found.append((node.lineno, _dotted(node)))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node.lineno, " ".join([getattr(node, "module", "") or ""] +
                                                [a.name for a in node.names]).strip()))
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
            if harness:
                bad = bool(TORCH_AUTOGRAD.search(name))
            else:
                bad = "autograd" in name and (path.name, name) not in ALLOWED
            if bad:
                offenders.append(f"{rel}:{lineno}: {name}")
    assert offenders == []


def test_the_harness_exceptions_exist_and_the_check_sees_them() -> None:
    for rel in HARNESS:
        assert any(TORCH_AUTOGRAD.search(name) for _, name in _names(SOURCE / rel)), rel
