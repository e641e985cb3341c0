"""Which kernel path the *installed* torch takes for ``linear`` and ``matmul``.

torch's ``linear`` and ``matmul`` are compositions, not kernels: by the operands' ranks,
layouts and whether an operand requires grad, they run ``addmm`` on flattened rows, one ``mm``
on the batch folded into rows, or ``expand`` + ``bmm``; each path has its own gradient kernels,
so shimnn must take the same one to be bit-identical. The rule changes between torch releases
(2.14 folds batches containing a dim of size 1 where 2.13 ran ``bmm``), so shimnn does not copy
it: it asks the installed torch. Once per distinct case (shapes, strides, dtype, device, which
operands require grad), torch's own function runs on scratch tensors of the same shapes and
strides under ``torch.no_grad()`` (the ``requires_grad`` flags that decide folding are still
visible to it; no graph is recorded), and torch's CPU profiler, thread-local and without
kineto, lists the ATen ops it called; the answer is cached.

Why the profiler and not a ``TorchDispatchMode``: any active dispatch mode makes torch's
``isTensorSubclassLike`` true for every tensor, and ``matmul`` consults it (a 3-d operand of
batch 1 is squeezed to a matrix when it "requires grad or is subclass-like"), so a dispatch
mode changes the very path it watches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._C._profiler import ProfilerConfig, ProfilerState, _ExperimentalConfig

__all__ = ["linear_path", "matmul_path", "rnn_uses_mkldnn"]

_CACHE_LIMIT = 4096  # distinct cases kept (a training loop has a handful)
_linear_paths: dict[tuple[Any, ...], str] = {}
_matmul_paths: dict[tuple[Any, ...], str] = {}
_rnn_paths: dict[tuple[Any, ...], bool] = {}
Calls = list[tuple[str, list[list[int]]]]
"""The ATen ops called, in order, with their arguments' shapes."""

# The legacy CPU profiler: record_function callbacks only, on this thread.
_profiler_enabled = torch._C._autograd._profiler_enabled
_enable_profiler = torch._C._autograd._enable_profiler_legacy
_disable_profiler = torch._C._autograd._disable_profiler_legacy


def _scratch(t: Tensor, requires_grad: bool = False) -> Tensor:
    """A tensor with ``t``'s shape, strides, dtype and device (zeros: the values are unused)."""
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    with torch.no_grad():
        out.zero_()
    return out.requires_grad_(requires_grad) if requires_grad else out


def _record_here(fn: Callable[[], Any], grad_enabled: bool = False) -> Calls:
    config = ProfilerConfig(ProfilerState.CPU, True, False, False, False, False,
                            _ExperimentalConfig())
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(grad_enabled)
    _enable_profiler(config)
    try:
        with torch._C.DisableTorchFunctionSubclass():
            fn()
    finally:
        events = _disable_profiler()
        torch.set_grad_enabled(previous)
    return [(e.name().removeprefix("aten::"), e.shapes()) for thread in events for e in thread
            if e.kind() == "push"]


def _record(fn: Callable[[], Any], grad_enabled: bool = False) -> Calls:
    """Run ``fn`` (grad mode off unless ``grad_enabled``) and list the ATen ops it called. When
    a profiler is already running on this thread (the user's), the probe runs on a thread of
    its own."""
    if not _profiler_enabled():
        return _record_here(fn, grad_enabled)
    outcome: list[Any] = []

    def probe() -> None:
        try:
            outcome.append(_record_here(fn, grad_enabled))
        except BaseException as error:  # re-raised on the caller's thread
            outcome.append(error)

    thread = threading.Thread(target=probe, name="shimnn-path-probe")
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]  # type: ignore[no-any-return]


def _remember(cache: dict[tuple[Any, ...], str], key: tuple[Any, ...], path: str) -> str:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = path
    return path


def _unknown(name: str, calls: Calls) -> NotImplementedError:
    ops = ", ".join(op for op, _ in calls[:40])
    return NotImplementedError(
        f"shimnn: torch {torch.__version__}'s {name} took a kernel path shimnn does not know "
        f"(ATen ops: {ops}); please report it")


def linear_path(input: Tensor, weight: Tensor, bias: Tensor | None,
                weight_requires_grad: bool) -> str:
    """The path torch's ``linear(input, weight, bias)`` takes: ``"addmm"`` (one addmm on the
    input's rows), ``"fold"`` (one mm on the rows, the bias added after) or ``"bmm"`` (the
    weight expanded over the batch)."""
    key = (input.shape, input.stride(), input.dtype, input.device, weight.shape,
           weight.stride(), None if bias is None else bias.shape, weight_requires_grad)
    path = _linear_paths.get(key)
    if path is not None:
        return path
    x, w = _scratch(input), _scratch(weight, weight_requires_grad)
    b = None if bias is None else _scratch(bias)
    calls = _record(lambda: torch._C._nn.linear(x, w, b))
    ops = {op for op, _ in calls}
    if "addmm" in ops:
        path = "addmm"
    elif "bmm" in ops:
        path = "bmm"
    elif "mm" in ops:
        path = "fold"
    else:
        raise _unknown("linear", calls)
    return _remember(_linear_paths, key, path)


def matmul_path(a: Tensor, b: Tensor, a_requires_grad: bool, b_requires_grad: bool) -> str:
    """The path torch's ``matmul(a, b)`` takes when an operand has 3 or more dims:
    ``"fold"`` (the larger operand's batch folded into the rows of one mm or mv),
    ``"squeeze0"`` / ``"squeeze1"`` (that 3-d operand, of batch 1, squeezed to a matrix,
    then folded) or ``"batched"`` (both expanded to the broadcast batch, one bmm)."""
    key = (a.shape, a.stride(), b.shape, b.stride(), a.dtype, a.device, a_requires_grad,
           b_requires_grad)
    path = _matmul_paths.get(key)
    if path is not None:
        return path
    x, y = _scratch(a, a_requires_grad), _scratch(b, b_requires_grad)
    calls = _record(lambda: torch.matmul(x, y))
    ops = {op for op, _ in calls}
    # The operand squeezed from (1, n, m): their shapes differ (else no squeeze is needed).
    squeezed = [shapes[0] for op, shapes in calls if op == "squeeze" and shapes]
    if "bmm" in ops:
        path = "batched"
    elif list(a.shape) in squeezed and a.shape != b.shape:
        path = "squeeze0"
    elif list(b.shape) in squeezed and a.shape != b.shape:
        path = "squeeze1"
    elif ops & {"mm", "mv"} and min(a.dim(), b.dim()) <= 2:
        path = "fold"
    else:
        raise _unknown("matmul", calls)
    return _remember(_matmul_paths, key, path)


def rnn_uses_mkldnn(fn: Callable[..., Any], input: Tensor, batch_sizes: Tensor | None,
                    states: list[Tensor], params: list[Tensor], has_biases: bool,
                    num_layers: int, dropout: float, train: bool, bidirectional: bool,
                    batch_first: bool) -> bool:
    """Whether torch's recurrent layer ``fn`` (``torch.lstm``, ``torch.gru``...) runs oneDNN's
    ``mkldnn_rnn_layer`` for these arguments (``states``: ``[h, c]`` for an LSTM, ``[h]``
    otherwise). The rule changes between releases (2.13 runs a packed LSTM whose batch sizes
    are all equal on oneDNN, 2.12 never a packed one), so torch's own function runs, in the
    caller's grad mode, on scratch tensors of the same shapes (none requires grad: nothing is
    recorded), the global generator's state restored after it (dropout draws). Cached by
    shapes, dtypes, flags and, for a packed input, whether its batch sizes are all equal."""
    grad_enabled = torch.is_grad_enabled()
    sizes = None if batch_sizes is None else batch_sizes.tolist()
    uniform = sizes is not None and sizes.count(sizes[0]) == len(sizes)
    key = (input.shape, input.stride(), input.dtype, input.device,
           None if sizes is None else (len(sizes), uniform),
           tuple((t.shape, t.dtype, t.device) for t in (*states, *params)), has_biases,
           num_layers, dropout > 0, train, bidirectional, batch_first, grad_enabled,
           torch._C._get_mkldnn_enabled())
    path = _rnn_paths.get(key)
    if path is not None:
        return path
    x = _scratch(input)
    hx: Any = [_scratch(t) for t in states]
    weights = [_scratch(t) for t in params]
    if fn is not torch.lstm:
        hx = hx[0]
    rng = torch.get_rng_state()
    try:
        if batch_sizes is None:
            calls = _record(lambda: fn(x, hx, weights, has_biases, num_layers, dropout, train,
                                       bidirectional, batch_first), grad_enabled)
        else:
            calls = _record(lambda: fn(x, batch_sizes, hx, weights, has_biases, num_layers,
                                       dropout, train, bidirectional), grad_enabled)
    finally:
        torch.set_rng_state(rng)
    if len(_rnn_paths) >= _CACHE_LIMIT:
        _rnn_paths.clear()
    used = any(op == "mkldnn_rnn_layer" for op, _ in calls)
    _rnn_paths[key] = used
    return used
