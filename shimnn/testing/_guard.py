"""The guard: torch's autograd engine must not run while shimnn computes gradients.

Every backward torch's autograd runs, however it is reached (``Tensor.backward`` and
``torch.autograd.backward`` / ``grad`` on tensors torch recorded, ``torch.autograd.functional``,
``torch.func``, ``torch.autograd.gradcheck``), enters the C++ engine through one Python call:
``torch.autograd.graph._engine_run_backward``, which calls
``Variable._execution_engine.run_backward``. The guard replaces both (and the name
``torch.autograd`` imported from ``.graph``). It does *not* replace ``torch.autograd.backward``
/ ``grad`` themselves: called on shimnn tensors they dispatch through ``__torch_function__``
to shimnn's own engine, which is what a user of ``torch.autograd.grad`` on a shimnn model
should get; called on anything torch recorded they reach the engine, and the guard raises.

Not covered: C++ code calling the engine directly (no Python entry exists to intercept), and
forward-mode AD (``dual_level``, ``make_dual``), which runs no backward engine; shimnn itself
refuses it, naming it, when one of its ops would record under it.
Recording a torch graph is not an engine run; :func:`assert_no_autograd_graph` checks results
for a ``grad_fn``.

The replacements are process-wide and reference-counted, so nested guards and guards in several
threads at once are safe: the first entry installs them, the last exit restores torch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["AutogradCalled", "assert_no_autograd", "assert_no_autograd_graph", "torch_grad_fn"]


class AutogradCalled(AssertionError):
    """Raised when torch's autograd engine is entered inside :func:`assert_no_autograd`."""


_grad_fn: Any = vars(torch._C.TensorBase)["grad_fn"].__get__
Watcher = Callable[[str], None]
"""Called with the name of the engine entry point reached; raising stops the call."""

_lock = threading.Lock()
_watchers: list[Watcher] = []
_saved: list[tuple[Any, str, Any]] = []


class _WatchedEngine:
    """Stands in for ``Variable._execution_engine``: ``run_backward`` is watched, everything
    else (``queue_callback``, ``is_checkpoint_valid``...) is the real engine's."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def run_backward(self, *args: Any, **kwargs: Any) -> Any:
        _notify("Variable._execution_engine.run_backward")
        return self._engine.run_backward(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _notify(entry: str) -> None:
    for watcher in list(_watchers):
        watcher(entry)


def _watched(entry: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        _notify(entry)
        return original(*args, **kwargs)

    call.__wrapped__ = original  # type: ignore[attr-defined]
    return call


def _targets() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, how to wrap its value): torch's engine entry points."""
    import torch.autograd.graph
    from torch.autograd.variable import Variable

    engine = "torch.autograd.graph._engine_run_backward"
    return [
        (Variable, "_execution_engine", _WatchedEngine),
        (torch.autograd.graph, "_engine_run_backward", lambda f: _watched(engine, f)),
        # torch.autograd's backward() and grad() call the name they imported from .graph.
        (torch.autograd, "_engine_run_backward", lambda f: _watched(engine, f)),
    ]


@contextlib.contextmanager
def watch_autograd(watcher: Watcher) -> Iterator[None]:
    """Call ``watcher(entry)`` whenever torch's autograd engine is entered in the block.

    A watcher that raises stops the call (that is :func:`assert_no_autograd`); one that returns
    lets torch's engine run (the pytest plugin counts tests that used it).
    """
    with _lock:
        if not _watchers:
            for owner, name, wrap in _targets():
                if hasattr(owner, name):
                    original = getattr(owner, name)
                    _saved.append((owner, name, original))
                    setattr(owner, name, wrap(original))
        _watchers.append(watcher)
    try:
        yield
    finally:
        with _lock:
            _watchers.remove(watcher)
            if not _watchers:
                while _saved:
                    owner, name, original = _saved.pop()
                    setattr(owner, name, original)


def _forbid(entry: str) -> None:
    raise AutogradCalled(
        f"torch's autograd engine was entered ({entry}) inside shimnn.testing."
        "assert_no_autograd(): this gradient would come from torch's autograd, not from a "
        "hand-written backward. The traceback shows which call reached it.")


@contextlib.contextmanager
def assert_no_autograd() -> Iterator[None]:
    """Make every entry into torch's autograd engine raise :class:`AutogradCalled` in the block.

    ``backward()`` on shimnn tensors (and ``torch.autograd.backward`` / ``grad`` on them, which
    dispatch to shimnn) runs shimnn's engine and is allowed; any backward torch's engine would
    run, on a tensor torch's autograd recorded, raises::

        with shimnn.testing.assert_no_autograd():
            loss = model(x).sum()
            loss.backward()  # shimnn's hand-written backward: fine
    """
    with watch_autograd(_forbid):
        yield


def torch_grad_fn(t: torch.Tensor) -> Any:
    """The ``grad_fn`` torch itself recorded for ``t`` (shimnn's tensors report ``None`` for
    their own property; this reads torch's)."""
    return _grad_fn(t)


def assert_no_autograd_graph(*tensors: Any) -> None:
    """Raise :class:`AutogradCalled` if torch's autograd recorded any of these tensors (a
    ``grad_fn`` of torch's own); non-tensors are ignored."""
    for i, t in enumerate(tensors):
        if isinstance(t, torch.Tensor):
            fn = torch_grad_fn(t)
            if fn is not None:
                raise AutogradCalled(f"torch recorded a graph for tensor {i}: {fn}")
