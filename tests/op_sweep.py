"""Parity sweep over torch's own operator database: every op, fed shimnn tracked tensors.

For every OpInfo in ``torch.testing._internal.common_methods_invocations.op_db`` and its CPU
sample inputs in float32 and float64, each variant of the op (function, the function on the
leaves themselves, method, operator, in-place, in-place on a view, in-place into a plain
tensor, ``out=`` into a plain or a tracked tensor) runs twice:

- under torch, on inputs ``leaf * 1.0`` where ``leaf`` is a plain tensor that requires grad;
- under shimnn (torch's autograd forbidden), on inputs ``leaf * 1.0`` where ``leaf`` is a
  ``shimnn.Parameter``: a TrackedTensor whose node leads back to a shimnn leaf, which is what
  a user holds after any shimnn op.

then backward with the same random upstream gradient on every output that requires grad.
torch's error inputs of each op (``error_inputs_func``) must raise under shimnn too.
Each call ends in one of:

- ``identical``: outputs, mutated tensors, ``requires_grad`` flags, identity of returned
  tensors, and every leaf's ``.grad`` (``None`` in the same places) equal bit for bit, NaN bits
  included;
- ``raises``: shimnn raises (at the call or in backward) where torch succeeded, or both raise;
- ``silent``: anything else (the case the project promises never happens);
- ``autograd``: shimnn's side entered torch's autograd engine or returned a tensor with a torch
  ``grad_fn``;
- ``error``: the harness itself failed (kept apart, and driven to zero).

``python -m tests.op_sweep --full --out bench/results/op_sweep.md`` writes the full tally;
``tests/test_op_sweep.py`` runs a fixed subset in the suite (all of it with
``SHIMNN_SWEEP=full``) and fails on any silent case not listed in
``tests/op_sweep_known_silent.txt``, and on any listed case that is no longer silent.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import random
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # conftest, as pytest sees it

import shimnn  # noqa: E402
import shimnn._graph as _graph  # noqa: E402
from conftest import AutogradCalled, autograd_forbidden  # noqa: E402
from shimnn._engine import backward as _engine_backward  # noqa: E402  (several roots)

IDENTICAL, RAISES, SILENT, AUTOGRAD, ERROR = "identical", "raises", "silent", "autograd", "error"
OUTCOMES = (IDENTICAL, RAISES, SILENT, AUTOGRAD, ERROR)
DTYPES = (torch.float32, torch.float64)
KNOWN_SILENT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "op_sweep_known_silent.txt")

# Samples bigger than this (total elements of their tensors) are skipped: they cost time and
# add nothing a smaller sample of the same op does not show.
NUMEL_CAP = 20_000
_c_grad_fn: Any = vars(torch._C.TensorBase)["grad_fn"].__get__
_no_dispatch = torch._C.DisableTorchFunctionSubclass


# ---------------------------------------------------------------------------------------------
# Cases and their outcome
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One variant of one op on one sample in one dtype, and how it ended."""

    op: str  # OpInfo name, ".variant_test_name" appended when there is one
    variant: str
    dtype: str
    sample: int
    outcome: str = IDENTICAL
    detail: str = ""  # the first problem found (silent/autograd/error) or the raise
    raised: str = ""  # for "raises": refused / other error / both raise (same or other type)

    @property
    def key(self) -> str:
        return f"{self.op} {self.variant} {self.dtype} {self.sample}"


class _Verdict:
    """Problems found while comparing one case; the worst decides the outcome."""

    _rank = {IDENTICAL: 0, RAISES: 1, SILENT: 2, AUTOGRAD: 3}

    def __init__(self) -> None:
        self.outcome = IDENTICAL
        self.details: list[str] = []
        self.raised = ""

    def add(self, outcome: str, detail: str) -> None:
        if outcome == RAISES and not self.raised:
            self.raised = _raise_kind(detail)
        if self._rank[outcome] > self._rank[self.outcome]:
            self.outcome = outcome
            self.details.insert(0, detail)
        else:
            self.details.append(detail)

    @property
    def detail(self) -> str:
        return "; ".join(self.details[:2])


RAISE_KINDS = ("refused", "other error", "both, same type", "both, other type")


def _raise_kind(detail: str) -> str:
    """How a raise compares with torch: shimnn refused (NotImplementedError) or failed otherwise
    where torch succeeded; or both raised, with the same exception type or not."""
    if detail.startswith("both raise"):
        shim, _, ref = detail.partition(" | torch ")
        same = shim.split("shimnn ", 1)[-1].split(":", 1)[0] == ref.split(":", 1)[0]
        return RAISE_KINDS[2] if same else RAISE_KINDS[3]
    return RAISE_KINDS[0] if "NotImplementedError" in detail else RAISE_KINDS[1]


def full_name(op: Any) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def _exc_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:160] if msg else ''}"


def _autograd_in(e: BaseException) -> bool:
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 10:
        if isinstance(cur, AutogradCalled):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


# ---------------------------------------------------------------------------------------------
# Trees of arguments and results
# ---------------------------------------------------------------------------------------------


def _map(fn: Callable[[Tensor], Any], x: Any) -> Any:
    """``fn`` applied to every tensor in nested lists, tuples and dicts (other values kept)."""
    if isinstance(x, Tensor):
        return fn(x)
    if isinstance(x, torch.Size):
        return x
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a named tuple
        return type(x)(*(_map(fn, v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_map(fn, v) for v in x)
    if isinstance(x, dict):
        return {k: _map(fn, v) for k, v in x.items()}
    return x


def _flat(x: Any) -> list[Any]:
    """The leaves of a result: tensors and plain values, in order."""
    if isinstance(x, Tensor) or isinstance(x, torch.Size):
        return [x]
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in _flat(v)]
    if isinstance(x, dict):
        return [leaf for k in sorted(x, key=str) for leaf in _flat(x[k])]
    return [x]


def _tensors(x: Any) -> list[Tensor]:
    return [t for t in _flat(x) if isinstance(t, Tensor)]


def _numel(sample: Any) -> int:
    return sum(t.numel() for t in _tensors([sample.input, sample.args, sample.kwargs]))


_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
         torch.bfloat16: torch.int16}


def _dense(t: Tensor) -> Tensor:
    t = t.detach()
    if t.layout is not torch.strided:
        t = t.to_dense()
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    return t.resolve_neg().resolve_conj().contiguous().reshape(-1)


def compare_tensors(shim: Tensor, ref: Tensor) -> str | None:
    """None when bit-identical (NaN bits included), else what differs."""
    with _no_dispatch(), torch.no_grad():
        if shim.dtype != ref.dtype:
            return f"dtype {shim.dtype} vs torch {ref.dtype}"
        if shim.shape != ref.shape:
            return f"shape {tuple(shim.shape)} vs torch {tuple(ref.shape)}"
        if shim.layout != ref.layout:
            return f"layout {shim.layout} vs torch {ref.layout}"
        a, b = _dense(shim), _dense(ref)
        bits = _BITS.get(a.dtype)
        if bits is None:
            return None if torch.equal(a, b) else f"values differ ({int((a != b).sum())} of " \
                                                  f"{a.numel()} elements)"
        if torch.equal(a.view(bits), b.view(bits)):
            return None
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        differ = a.view(bits) != b.view(bits)
        n = int(differ.sum())
        if torch.equal(nan_a, nan_b) and bool((differ <= nan_a).all()):
            return f"NaN bits only ({n} of {a.numel()} elements)"
        finite = ~(nan_a | nan_b)
        diff = (a[finite].double() - b[finite].double()).abs()
        biggest = f"{diff.max().item():.3g}" if diff.numel() else "nan"
        return f"values differ ({n} of {a.numel()} elements, max |diff| {biggest})"


def compare_meta(shim: Tensor, ref: Tensor) -> str | None:
    """None when dtype, shape and layout agree (values not compared), else what differs."""
    with _no_dispatch():
        for what in ("dtype", "shape", "layout"):
            a, b = getattr(shim, what), getattr(ref, what)
            if a != b:
                return f"{what} {a} vs torch {b}"
    return None


# The ops torch 2.13's op_db flags ``has_nondeterministic_output`` (uninitialized memory).
_UNINITIALIZED_OUTPUT = frozenset({
    "empty", "empty_like", "empty_permuted", "empty_strided", "new_empty", "new_empty_strided",
    "torch.ops.aten._efficient_attention_forward", "torch.ops.aten._flash_attention_forward"})


def reproducible(op: Any, sample: Any) -> bool:
    """Whether torch's own result is the same bits every time for this sample (measured).

    - ``has_nondeterministic_output`` ops (uninitialized memory: ``empty_like``...);
    - ``linalg.lstsq`` with LAPACK's ``gelsy`` driver: torch's own solution differs between
      two identical calls in one process (MKL 2024.2, 14 of 18 samples; the other drivers are
      reproducible).

    torch 2.11 and 2.12's OpInfos have no ``has_nondeterministic_output``; there the ops that
    2.13's op_db flags (all of them return uninitialized memory) count as not reproducible.
    """
    flagged = getattr(op, "has_nondeterministic_output", None)
    if flagged is None:
        flagged = op.name in _UNINITIALIZED_OUTPUT
    if flagged:
        return False
    return not (op.name == "linalg.lstsq" and sample.kwargs.get("driver") == "gelsy")


def _same_value(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return repr(a) == repr(b)


# ---------------------------------------------------------------------------------------------
# One side of a case: build inputs, call, backward
# ---------------------------------------------------------------------------------------------


@dataclass
class Side:
    """The inputs one side built from a sample: leaves and the tensors handed to the op."""

    leaves: list[Tensor]
    input: Any
    args: Any
    kwargs: Any
    base: Tensor | None = None  # for an in-place call on a view: the tracked base


def build(sample: Any, shim: bool, *, plain_self: bool = False, view_self: bool = False,
          direct: bool = False, track_all: bool = False) -> Side:
    """Each floating tensor of the sample that requires grad becomes ``leaf * 1.0``: a leaf
    tensor (torch) or ``shimnn.Parameter`` (shimnn), seen through one recorded op (``direct``:
    the leaf itself). Other tensors are copied. The same tensor object twice in the sample
    stays one tensor. ``plain_self``: the input is a plain copy (a write into a plain tensor);
    ``view_self``: the input is a view of its tracked self (``base``); ``track_all``: every
    real floating tensor is tracked, whether the sample asks for a gradient or not."""
    memo: dict[int, Tensor] = {}
    leaves: list[Tensor] = []

    def track(t: Tensor) -> Tensor:
        done = memo.get(id(t))
        if done is not None:
            return done
        with _no_dispatch(), torch.no_grad():
            data = t.detach().clone()
        if t.requires_grad or (track_all and t.dtype.is_floating_point):
            leaf = shimnn.Parameter(data) if shim else data.requires_grad_()
            leaves.append(leaf)
            x = leaf if direct else leaf * 1.0
        else:
            x = data
        memo[id(t)] = x
        return x

    inp = sample.input
    if plain_self and isinstance(inp, Tensor):
        with _no_dispatch(), torch.no_grad():
            memo[id(inp)] = inp.detach().clone()
    args, kwargs = _map(track, sample.args), _map(track, sample.kwargs)
    new_input = _map(track, inp)
    side = Side(leaves, new_input, args, kwargs)
    if view_self and isinstance(new_input, Tensor):
        side.base = new_input
        side.input = new_input.view(new_input.shape)
    return side


@dataclass
class Run:
    """What one side did: the call's result or exception, the tensors to differentiate."""

    side: Side
    exc: BaseException | None = None
    result: Any = None
    mutated: list[Tensor] = field(default_factory=list)  # self / base / out, after the call
    candidates: list[Any] = field(default_factory=list)  # what backward starts from
    identity: list[bool] = field(default_factory=list)  # result is self / out


@dataclass(frozen=True)
class Variant:
    name: str
    fn: Callable[..., Any]
    kind: str  # "call", "call_leaf", "inplace", "inplace_view", "inplace_plain", "out"


def call(variant: Variant, sample: Any, side: Side, out: Any, seed: int) -> Run:
    """One side's call of the variant (torch's global RNG seeded first), and what backward
    starts from: the processed outputs, or the mutated tensor (self, a view's base, out)."""
    run = Run(side)
    _seed(seed)
    try:
        if variant.kind == "out":
            run.result = variant.fn(side.input, *side.args, **side.kwargs, out=out)
        else:
            run.result = variant.fn(side.input, *side.args, **side.kwargs)
        if variant.kind.startswith("call"):  # what torch's tests differentiate (may compute)
            run.candidates = _flat(sample.output_process_fn_grad(run.result))
    except Exception as e:
        run.exc = e
        return run
    if variant.kind == "out":
        run.mutated = _tensors(out)
        run.candidates = list(run.mutated)
        res = _flat(run.result)
        run.identity = [len(res) == len(run.mutated)
                        and all(r is o for r, o in zip(res, run.mutated))]
    elif not variant.kind.startswith("call"):
        run.mutated = [side.input] if side.base is None else [side.input, side.base]
        run.candidates = [side.input if side.base is None else side.base]
        run.identity = [run.result is side.input]
    return run


def _roots(run: Run, positions: Sequence[int]) -> list[Tensor]:
    return [run.candidates[i] for i in positions]


def random_grads(roots: Sequence[Tensor], seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    with _no_dispatch():
        return [torch.randn(r.shape, dtype=r.dtype, generator=g) for r in roots]


def _is_tracked(t: Any) -> bool:
    return isinstance(t, Tensor) and (t.dtype.is_floating_point or t.dtype.is_complex) and bool(
        t.requires_grad)


# ---------------------------------------------------------------------------------------------
# One case: torch, then shimnn, then the comparison
# ---------------------------------------------------------------------------------------------


def run_case(op: Any, variant: Variant, sample: Any, index: int, dtype: torch.dtype,
             out_like: Any) -> Case:
    name = full_name(op)
    case = Case(name, variant.name, str(dtype).replace("torch.", ""), index)
    seed = zlib.crc32(f"{name}|{variant.name}|{dtype}|{index}".encode())
    try:
        verdict = _compare(op, variant, sample, dtype, out_like, seed)
    except Exception as e:  # the harness failed: reported apart, never hidden
        case.outcome, case.detail = ERROR, f"harness: {_exc_text(e)}"
        return case
    case.outcome, case.detail, case.raised = verdict.outcome, verdict.detail, verdict.raised
    return case


def _fresh_out(out_like: Any, variant: Variant, side: Side, shim: bool) -> Any:
    """``out=`` tensors shaped like torch's result: plain, or (``out_tracked``) floating ones
    as ``leaf * 1.0`` like the inputs (``torch.sin(h, out=h2)``), their leaves appended to the
    side's."""
    def fill(t: Tensor) -> Tensor:
        with _no_dispatch(), torch.no_grad():
            if t.dtype.is_floating_point or t.dtype.is_complex:
                buf = torch.full_like(t.detach(), float("nan"))
            else:
                return torch.zeros_like(t.detach())
        if variant.name != "out_tracked" or not buf.dtype.is_floating_point:
            return buf
        leaf = shimnn.Parameter(buf) if shim else buf.requires_grad_()
        side.leaves.append(leaf)
        return leaf * 1.0

    return _map(fill, out_like)


def _compare(op: Any, variant: Variant, sample: Any, dtype: torch.dtype, out_like: Any,
             seed: int) -> _Verdict:
    torch.set_grad_enabled(True)
    v = _Verdict()
    try:
        _compare_sides(v, op, variant, sample, dtype, out_like, seed)
    finally:
        if not torch.is_grad_enabled():  # global state a user's later code would run under
            v.add(SILENT, "shimnn left torch's grad mode disabled")
            torch.set_grad_enabled(True)
    return v


def _compare_sides(v: _Verdict, op: Any, variant: Variant, sample: Any, dtype: torch.dtype,
                   out_like: Any, seed: int) -> None:
    kw = {"plain_self": variant.kind == "inplace_plain",
          "view_self": variant.kind == "inplace_view", "direct": variant.kind == "call_leaf"}

    # torch: the oracle, with its autograd.
    ref_side = build(sample, shim=False, **kw)
    ref = call(variant, sample, ref_side, _fresh_out(out_like, variant, ref_side, False), seed)
    positions: list[int] = []
    ref_bw: BaseException | None = None
    grads: list[Tensor] = []
    if ref.exc is None:
        positions = [i for i, c in enumerate(ref.candidates) if _is_tracked(c)]
        grads = random_grads(_roots(ref, positions), seed + 1)
        if positions:
            try:
                torch.autograd.backward(_roots(ref, positions), grads)
            except Exception as e:
                ref_bw = e

    # shimnn, with torch's autograd forbidden.
    with autograd_forbidden():
        try:
            shim_side = build(sample, shim=True, **kw)
        except Exception as e:
            v.add(AUTOGRAD if _autograd_in(e) else RAISES, f"building inputs: {_exc_text(e)}")
            return
        shim = call(variant, sample, shim_side, _fresh_out(out_like, variant, shim_side, True),
                    seed)
        if shim.exc is not None:
            if _autograd_in(shim.exc):
                v.add(AUTOGRAD, f"call: {_exc_text(shim.exc)}")
            elif ref.exc is not None:
                v.add(RAISES, f"both raise at the call: shimnn {_exc_text(shim.exc)} | torch "
                              f"{_exc_text(ref.exc)}")
            else:
                v.add(RAISES, f"shimnn raises at the call: {_exc_text(shim.exc)}")
            return
        _check_no_torch_graph(v, shim)
        if ref.exc is not None:
            _torch_raised(v, ref.exc, shim, seed)
            return
        _compare_forward(v, op, sample, ref, shim)
        _compare_backward(v, ref, shim, positions, grads, ref_bw, seed, reproducible(op, sample))


def _torch_graph(t: Tensor) -> str | None:
    """The name of the torch autograd node behind ``t``, if torch recorded one."""
    with _no_dispatch():
        fn = _c_grad_fn(t)
        return None if fn is None else str(fn.name())


def _check_no_torch_graph(v: _Verdict, shim: Run) -> None:
    for t in _tensors(shim.result) + shim.mutated:
        name = _torch_graph(t)
        if name is not None:
            v.add(AUTOGRAD, f"a shimnn result has a torch grad_fn ({name})")
            return


def _shim_backward(roots: list[Tensor], grads: list[Tensor], retain: bool = False
                   ) -> BaseException | None:
    try:
        _engine_backward(roots, [g.clone() for g in grads], retain_graph=retain)
    except Exception as e:
        return e
    return None


def _torch_raised(v: _Verdict, ref_exc: BaseException, shim: Run, seed: int) -> None:
    """torch refused the call; shimnn must refuse it too, at the latest in backward."""
    what = f"torch raises at the call ({_exc_text(ref_exc)}), shimnn returns"
    roots = [c for c in shim.candidates if _is_tracked(c)]
    if not roots:
        v.add(SILENT, f"{what} a result with nothing to differentiate")
        return
    e = _shim_backward(roots, random_grads(roots, seed + 1))
    if e is None:
        v.add(SILENT, f"{what} and its backward runs")
    elif _autograd_in(e):
        v.add(AUTOGRAD, f"backward: {_exc_text(e)}")
    else:
        v.add(RAISES, f"torch raises at the call, shimnn in backward: {_exc_text(e)}")


def _compare_forward(v: _Verdict, op: Any, sample: Any, ref: Run, shim: Run) -> None:
    nondeterministic = not reproducible(op, sample)
    pairs = [("output", _flat(ref.result), _flat(shim.result)),
             ("mutated", ref.mutated, shim.mutated)]
    for what, a, b in pairs:
        if len(a) != len(b):
            v.add(SILENT, f"{what}: {len(b)} values vs torch {len(a)}")
            continue
        for i, (r, s) in enumerate(zip(a, b)):
            if isinstance(r, Tensor) != isinstance(s, Tensor):
                v.add(SILENT, f"{what} {i}: {type(s).__name__} vs torch {type(r).__name__}")
                continue
            if not isinstance(r, Tensor):
                if not _same_value(s, r):
                    v.add(SILENT, f"{what} {i}: {s!r:.60} vs torch {r!r:.60}")
                continue
            problem = compare_meta(s, r) if nondeterministic else compare_tensors(s, r)
            if problem:
                v.add(SILENT, f"{what} {i}: {problem}")
            if _is_tracked(r) and not _is_tracked(s):
                v.add(SILENT, f"{what} {i}: not tracked (requires_grad=False), torch's is "
                              f"({_torch_graph(r)})")
    if ref.identity != shim.identity:
        v.add(SILENT, f"returns self/out: {shim.identity} vs torch {ref.identity}")


def _compare_backward(v: _Verdict, ref: Run, shim: Run, positions: list[int],
                      grads: list[Tensor], ref_bw: BaseException | None, seed: int,
                      values: bool) -> None:
    if len(shim.candidates) != len(ref.candidates):
        return  # reported by the forward comparison
    leaves_ref, leaves_shim = ref.side.leaves, shim.side.leaves

    # Outputs shimnn tracks and torch does not: a gradient through them is one torch never
    # computes. shimnn must refuse it (or send nothing to a leaf).
    extras = [i for i, c in enumerate(shim.candidates)
              if i not in positions and _is_tracked(c)]
    if extras:
        roots = _roots(shim, extras)
        e = _shim_backward(roots, random_grads(roots, seed + 2), retain=True)
        if e is None:
            reached = [k for k, p in enumerate(leaves_shim) if p.grad is not None]
            if reached:
                v.add(SILENT, f"gradient through output(s) {extras}, which torch does not "
                              f"differentiate, reaches input(s) {reached}")
        elif _autograd_in(e):
            v.add(AUTOGRAD, f"backward: {_exc_text(e)}")
        else:
            v.add(RAISES, f"output(s) {extras} tracked where torch's are not; backward raises: "
                          f"{_exc_text(e)}")
        for p in leaves_shim:
            p.grad = None

    usable = [i for i in positions if _is_tracked(shim.candidates[i])]
    shim_bw: BaseException | None = None
    if usable:
        shim_bw = _shim_backward(_roots(shim, usable), [grads[positions.index(i)] for i in usable])
    if shim_bw is not None:
        if _autograd_in(shim_bw):
            v.add(AUTOGRAD, f"backward: {_exc_text(shim_bw)}")
        elif ref_bw is not None:
            v.add(RAISES, f"both raise in backward: shimnn {_exc_text(shim_bw)} | torch "
                          f"{_exc_text(ref_bw)}")
        else:
            v.add(RAISES, f"shimnn raises in backward: {_exc_text(shim_bw)}")
        return
    if ref_bw is not None:
        v.add(SILENT, f"torch raises in backward ({_exc_text(ref_bw)}), shimnn does not")
        return
    for k, (pr, ps) in enumerate(zip(leaves_ref, leaves_shim)):
        gr, gs = pr.grad, ps.grad
        if gr is None and gs is None:
            continue
        if gs is None:
            v.add(SILENT, f"grad of input {k}: None, torch has one")
        elif gr is None:
            v.add(SILENT, f"grad of input {k}: present, torch has None")
        else:
            if _torch_graph(gs) is not None:
                v.add(AUTOGRAD, f"grad of input {k} has a torch grad_fn")
            problem = compare_tensors(gs, gr) if values else compare_meta(gs, gr)
            if problem:
                v.add(SILENT, f"grad of input {k}: {problem}")


# ---------------------------------------------------------------------------------------------
# One OpInfo: its variants, its samples
# ---------------------------------------------------------------------------------------------


def variants(op: Any) -> list[Variant]:
    found = [Variant("function", op.op, "call"), Variant("function_leaf", op.op, "call_leaf")]
    if op.method_variant is not None:
        found.append(Variant("method", op.method_variant, "call"))
    operator_variant = getattr(op, "operator_variant", None)
    if operator_variant is not None:
        found.append(Variant("operator", operator_variant, "call"))
    if op.inplace_variant is not None:
        found += [Variant("inplace", op.inplace_variant, "inplace"),
                  Variant("inplace_view", op.inplace_variant, "inplace_view"),
                  Variant("inplace_plain", op.inplace_variant, "inplace_plain")]
    inplace_operator = getattr(op, "inplace_operator_variant", None)
    if inplace_operator is not None:
        found.append(Variant("inplace_operator", inplace_operator, "inplace"))
    if op.supports_out:
        found += [Variant("out", op.op, "out"), Variant("out_tracked", op.op, "out")]
    return found


def float_dtypes(op: Any) -> list[torch.dtype]:
    supported = op.supported_dtypes("cpu")
    return [d for d in DTYPES if d in supported]


def _seed(seed: int) -> None:
    """Seed torch's CPU generator (``torch.manual_seed`` also queues a seed for every lazy
    accelerator module, recording a stack trace each time: 1.5 ms a call under pytest)."""
    torch.default_generator.manual_seed(seed)


def _seed_all(seed: int) -> None:
    _seed(seed)
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass


def samples(op: Any, dtype: torch.dtype, limit: int | None) -> list[Any]:
    """The op's CPU samples in ``dtype``, the same every run (seeded by the op's name)."""
    _seed_all(zlib.crc32(f"{full_name(op)}|{dtype}".encode()))
    # op.sample_inputs would wrap these in an iterator that inspects the stack (slow).
    it: Iterator[Any] = iter(op.sample_inputs_func(op, "cpu", dtype, True))
    found = []
    for s in it:
        found.append(s)
        if limit is not None and len(found) >= limit:
            break
    return found


@dataclass
class OpReport:
    name: str
    family: str
    cases: list[Case] = field(default_factory=list)
    skipped_big: int = 0
    skipped_time: int = 0
    untracked: int = 0
    seconds: float = 0.0  # CPU time (the machines are shared: wall time is noise)

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.cases)


def family(op: Any) -> str:
    """Where the op lives: shimnn's op family when shimnn implements it, else torch's grouping
    (namespace prefix, or the OpInfo kind for torch's core ops)."""
    for fn in (op.op, op.method_variant, op.inplace_variant):
        impl = _graph.HANDLED.get(fn) if fn is not None else None
        if impl is not None:
            return "shimnn " + impl.__module__.rsplit(".", 1)[-1]
    if "." in op.name:
        prefix = op.name.split(".")[0]
        return f"torch.{prefix}" if prefix != "nn" else "torch.nn.functional"
    kind = {"UnaryUfuncInfo": "unary ufuncs", "BinaryUfuncInfo": "binary ufuncs",
            "ReductionOpInfo": "reductions", "SpectralFuncInfo": "spectral",
            "ShapeFuncInfo": "shape"}.get(type(op).__name__, "other")
    return f"torch core: {kind}"


def is_handled(op: Any) -> bool:
    return family(op).startswith("shimnn ")


def sweep_op(op: Any, *, max_samples: int | None = None, time_limit: float | None = None,
             numel_cap: int = NUMEL_CAP) -> OpReport:
    """Every variant of ``op`` on its samples in float32 and float64, on one thread (the same
    bits wherever it runs; and OpenMP threads spinning on a shared 2-core machine made tiny
    kernels ~10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _sweep_op(op, max_samples, time_limit, numel_cap)
    finally:
        torch.set_num_threads(threads)


def _sweep_op(op: Any, max_samples: int | None, time_limit: float | None, numel_cap: int
              ) -> OpReport:
    report = OpReport(full_name(op), family(op))
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in float_dtypes(op):
            try:
                found = samples(op, dtype, max_samples)
            except Exception as e:
                report.cases.append(Case(report.name, "samples", str(dtype)[6:], -1, ERROR,
                                         f"sample generation: {_exc_text(e)}"))
                continue
            vs = variants(op)
            for index, sample in enumerate(found):
                if time_limit is not None and time.perf_counter() - start > time_limit:
                    report.skipped_time += 1
                    continue
                if _numel(sample) > numel_cap:
                    report.skipped_big += 1
                    continue
                if not any(t.requires_grad for t in _tensors(
                        [sample.input, sample.args, sample.kwargs])):
                    report.untracked += 1
                    continue
                out_like = _out_like(op, sample)
                for variant in vs:
                    if variant.kind.startswith("inplace") and not isinstance(sample.input, Tensor):
                        continue
                    if variant.kind == "inplace_plain" and not any(
                            t.requires_grad for t in _tensors([sample.args, sample.kwargs])):
                        continue
                    if variant.kind == "out" and out_like is None:
                        continue
                    if variant.name.endswith("operator") and sample.kwargs:
                        continue  # Python's operators take no keyword arguments
                    report.cases.append(run_case(op, variant, sample, index, dtype, out_like))
        report.cases += error_cases(op)
    report.seconds = time.process_time() - cpu
    return report


def error_cases(op: Any) -> list[Case]:
    """torch's error inputs of ``op`` (``error_inputs_func``), every floating tensor tracked:
    where torch raises, shimnn must raise too (``identical``: the same exception type;
    ``raises``: another type; ``silent``: shimnn returns), and leave grad mode as it was."""
    if op.error_inputs_func is None:
        return []
    name = full_name(op)
    _seed_all(zlib.crc32(f"{name}|errors".encode()))
    try:
        errors = list(op.error_inputs_func(op, "cpu"))
    except Exception as e:
        return [Case(name, "error_input", "-", -1, ERROR, f"error inputs: {_exc_text(e)}")]
    cases = []
    for index, error in enumerate(errors):
        sample = error.sample_input
        case = Case(name, "error_input", "-", index)
        try:
            _error_case(case, op, sample)
        except Exception as e:  # the harness failed
            case.outcome, case.detail = ERROR, f"harness: {_exc_text(e)}"
        if case.detail != "torch does not raise":
            cases.append(case)
    return cases


def _error_case(case: Case, op: Any, sample: Any) -> None:
    torch.set_grad_enabled(True)
    ref = build(sample, shim=False, track_all=True)
    try:
        op.op(ref.input, *ref.args, **ref.kwargs)
    except Exception as e:
        ref_exc: BaseException = e
    else:
        case.detail = "torch does not raise"  # on tracked inputs: nothing to compare
        return
    v = _Verdict()
    with autograd_forbidden():
        try:
            shim = build(sample, shim=True, track_all=True)
            op.op(shim.input, *shim.args, **shim.kwargs)
        except Exception as e:
            if _autograd_in(e):
                v.add(AUTOGRAD, f"call: {_exc_text(e)}")
            elif type(e) is not type(ref_exc):
                v.add(RAISES, f"both raise at the call: shimnn {_exc_text(e)} | torch "
                              f"{_exc_text(ref_exc)}")
        else:
            v.add(SILENT, f"torch raises ({_exc_text(ref_exc)}), shimnn returns")
    if not torch.is_grad_enabled():
        v.add(SILENT, "shimnn left torch's grad mode disabled")
        torch.set_grad_enabled(True)
    case.outcome, case.detail, case.raised = v.outcome, v.detail, v.raised


def _out_like(op: Any, sample: Any) -> Any:
    """The torch result's structure, for ``out=`` (None: the op returns no tensors)."""
    if not op.supports_out:
        return None
    try:
        with torch.no_grad():
            _seed(0)
            res = op.op(sample.input, *sample.args, **sample.kwargs)
    except Exception:
        return None
    if isinstance(res, Tensor):
        return res
    if isinstance(res, (list, tuple)) and res and all(isinstance(t, Tensor) for t in res):
        return tuple(res)
    return None


# ---------------------------------------------------------------------------------------------
# Which ops, and the known-silent list
# ---------------------------------------------------------------------------------------------


def op_db() -> list[Any]:
    from torch.testing._internal.common_methods_invocations import op_db as db

    return [op for op in db if float_dtypes(op)]


CI_STRIDE = 3  # the CI subset: every 3rd OpInfo, plus every op shimnn implements
CI_MAX_SAMPLES = 16


def ci_subset(ops: Sequence[Any]) -> list[Any]:
    return [op for i, op in enumerate(ops) if i % CI_STRIDE == 0 or is_handled(op)]


def native_path() -> str:
    """Which of shimnn's paths runs: "1" with the compiled fast paths, "0" without."""
    from shimnn import _native

    return "1" if _native.get() is not None else "0"


def read_known(path: str = KNOWN_SILENT_FILE, native: str | None = None) -> set[str]:
    """The case keys (``op variant dtype sample``) listed as silent on this path.

    One line per op, variant and dtype: ``op variant dtype 0,3,7  # what differs``, with
    ``native=1`` or ``native=0`` after the samples when only that path is silent."""
    native = native_path() if native is None else native
    known: set[str] = set()
    if not os.path.exists(path):
        return known
    with open(path) as f:
        for line in f:
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            op, variant, dtype, indices, *tag = fields
            if tag and tag != [f"native={native}"]:
                continue
            known.update(f"{op} {variant} {dtype} {i}" for i in indices.split(","))
    return known


def write_known(runs: dict[str, Sequence[OpReport]], path: str = KNOWN_SILENT_FILE) -> None:
    """Write the silent cases of one sweep per path (``{"1": reports, "0": reports}``)."""
    silent: dict[str, dict[str, Case]] = {
        native: {c.key: c for r in reports for c in r.cases if c.outcome == SILENT}
        for native, reports in runs.items()}
    every = {k: c for cases in silent.values() for k, c in cases.items()}
    groups: dict[tuple[str, str, str, str], list[Case]] = {}
    for key, c in every.items():
        paths = [n for n in runs if key in silent[n]]
        tag = "" if len(paths) == len(runs) else f"native={paths[0]}"
        groups.setdefault((c.op, c.variant, c.dtype, tag), []).append(c)
    lines = ["# Silent cases of tests/op_sweep.py not fixed yet. tests/test_op_sweep.py fails on a",
             "# silent case missing here and on a listed case that is no longer silent.",
             "# Regenerate: python -m tests.op_sweep --full --write-known (runs both paths)",
             "# op variant dtype samples [native=N: that path only]  # the first sample's "
             "difference"]
    for (op, variant, dtype, tag), cases in groups.items():
        indices = ",".join(str(c.sample) for c in sorted(cases, key=lambda c: c.sample))
        fields = f"{op} {variant} {dtype} {indices}" + (f" {tag}" if tag else "")
        lines.append(f"{fields}  # {cases[0].detail[:110]}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


# Silent cases by likely cause: (name, rule). Diagnosed in the sweep's findings; a case that
# matches no rule is reported as "unclassified" (a new kind of problem).
CAUSES: tuple[tuple[str, Callable[[Case], bool]], ...] = (
    ("out= with an input that requires grad: torch refuses, shimnn returns an untracked result",
     lambda c: c.variant.startswith("out")
     and "don't support automatic differentiation" in c.detail),
    ("out= of a composite op: torch's out joins the graph (CopyBackwards), shimnn's stays plain",
     lambda c: c.variant.startswith("out") and "CopyBackwards" in c.detail),
    ("out= with no derivative: torch's out gets a node whose backward raises, shimnn's is plain",
     lambda c: c.variant.startswith("out") and "NotImplemented" in c.detail),
    ("out= returns new tensors instead of the out tensors",
     lambda c: c.variant.startswith("out") and c.detail.startswith("returns self/out")),
    ("write of a tracked value into a plain tensor: torch's destination joins the graph",
     lambda c: c.variant == "inplace_plain" and "not tracked" in c.detail),
    ("in-place op on a view changes the base's values differently (metadata-only op written "
     "as data)", lambda c: c.variant == "inplace_view" and c.detail.startswith("mutated 1")),
    ("in-place op's gradient differs (not recorded, or recorded with another formula)",
     lambda c: c.variant.startswith("inplace") and c.detail.startswith("grad of input")
     and "values differ" in c.detail),
    ("a gradient of the wrong shape reaches a leaf",
     lambda c: c.detail.startswith("grad of input") and " shape " in c.detail),
    ("an exception inside shimnn left torch's grad mode disabled",
     lambda c: "grad mode left disabled" in c.detail),
    ("forward bits differ: torch's kernel path depends on requires_grad / grad mode",
     lambda c: "values differ" in c.detail.split(";")[0] and c.detail.startswith("output")),
)


def cause(case: Case) -> str:
    for name, rule in CAUSES:
        if rule(case):
            return name
    return "unclassified"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown(reports: Sequence[OpReport], seconds: float, command: str) -> str:
    totals = collections.Counter(c.outcome for r in reports for c in r.cases)
    lines = [
        "# op_db parity sweep",
        "",
        f"torch {torch.__version__}, shimnn {shimnn.__version__}, "
        f"SHIMNN_NATIVE={os.environ.get('SHIMNN_NATIVE', '(unset)')}; {len(reports)} OpInfos, "
        f"{sum(len(r.cases) for r in reports)} calls in {seconds:.0f} s of CPU time (one "
        f"thread). Command: `{command}`.",
        "",
        "Each call: an op_db sample in float32/float64, one variant (function, method, operator, "
        "in-place, in-place on a view, in-place into a plain tensor, out= into a plain or a "
        "tracked tensor, torch's error inputs), inputs as shimnn "
        "tracked tensors (function_leaf: the leaves themselves); outputs and every input "
        "gradient compared bit for bit with torch.",
        "",
        "| outcome | calls |", "|---|---:|",
        *(f"| {o} | {totals.get(o, 0)} |" for o in OUTCOMES),
        "",
        f"Skipped samples: {sum(r.skipped_big for r in reports)} over {NUMEL_CAP} elements, "
        f"{sum(r.skipped_time for r in reports)} past the time limit, "
        f"{sum(r.untracked for r in reports)} with no tensor that requires grad.",
        "",
        "## By family", "",
        "| family | OpInfos | identical | raises | silent | autograd | error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    fams: dict[str, list[OpReport]] = collections.defaultdict(list)
    for r in reports:
        fams[r.family].append(r)
    for fam in sorted(fams):
        rs = fams[fam]
        counts = [sum(r.count(o) for r in rs) for o in OUTCOMES]
        lines.append(f"| {fam} | {len(rs)} | " + " | ".join(map(str, counts)) + " |")
    lines += ["", "## By variant", "",
              "| variant | identical | raises | silent | autograd | error |",
              "|---|---:|---:|---:|---:|---:|"]
    by_variant: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in reports:
        for c in r.cases:
            by_variant[c.variant][c.outcome] += 1
    for name in sorted(by_variant):
        lines.append(f"| {name} | " + " | ".join(str(by_variant[name][o]) for o in OUTCOMES)
                     + " |")
    causes: dict[str, list[Case]] = collections.defaultdict(list)
    for r in reports:
        for c in r.cases:
            if c.outcome == SILENT:
                causes[cause(c)].append(c)
    lines += ["", "## Silent calls by likely cause", "", "| cause | calls | OpInfos |",
              "|---|---:|---:|"]
    for name, cs in sorted(causes.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"| {name} | {len(cs)} | {len({c.op for c in cs})} |")
    raised = collections.Counter(c.raised for r in reports for c in r.cases
                                 if c.outcome == RAISES)
    lines += ["", "## Raising calls", "",
              "refused: shimnn raised NotImplementedError where torch succeeded; other error: "
              "shimnn raised another exception where torch succeeded; both: torch raised too.",
              "", "| kind | calls |", "|---|---:|",
              *(f"| {k} | {raised.get(k, 0)} |" for k in RAISE_KINDS)]
    bad: dict[tuple[str, str, str], list[Case]] = {}
    for r in reports:
        for c in r.cases:
            if c.outcome in (SILENT, AUTOGRAD, ERROR):
                bad.setdefault((c.op, c.variant, c.outcome), []).append(c)
    lines += ["", f"## Every silent, autograd and harness-error call "
              f"({sum(map(len, bad.values()))}, by op and variant)", "",
              "| op | variant | outcome | calls (dtype: samples) | what differs (first call) |",
              "|---|---|---|---|---|"]
    for (op, variant, outcome), cs in bad.items():
        by_dtype: dict[str, list[str]] = collections.defaultdict(list)
        for c in cs:
            by_dtype[c.dtype].append(str(c.sample))
        where = "; ".join(f"{d}: {','.join(i)}" for d, i in by_dtype.items())
        lines.append(f"| {op} | {variant} | {outcome} | {len(cs)} ({where}) | "
                     f"{_md_escape(cs[0].detail[:200])} |")
    lines += ["", "## Per OpInfo", "",
              "| OpInfo | family | identical | raises | silent | autograd | error | s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in reports:
        lines.append(f"| {r.name} | {r.family} | " + " | ".join(str(r.count(o)) for o in OUTCOMES)
                     + f" | {r.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="every OpInfo, every sample")
    parser.add_argument("--ops", default="", help="comma-separated OpInfo names (full names)")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per OpInfo")
    parser.add_argument("--out", default="", help="markdown report path")
    parser.add_argument("--json", default="", help="every case, as JSON lines")
    parser.add_argument("--write-known", action="store_true",
                        help="rewrite tests/op_sweep_known_silent.txt from this run")
    parser.add_argument("--verbose", "-v", action="store_true")
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    ops = op_db()
    if a.ops:
        wanted = set(a.ops.split(","))
        ops = [op for op in ops if full_name(op) in wanted or op.name in wanted]
    elif not a.full:
        ops = ci_subset(ops)
    max_samples = a.max_samples if (a.full or a.ops or a.max_samples) else CI_MAX_SAMPLES
    cpu = time.process_time()
    reports = []
    for op in ops:
        r = sweep_op(op, max_samples=max_samples, time_limit=a.time_limit)
        reports.append(r)
        counts = " ".join(f"{o}={r.count(o)}" for o in OUTCOMES if r.count(o))
        print(f"{r.seconds:6.1f}s {r.name}: {counts}", flush=True)
        if a.verbose:
            for c in r.cases:
                if c.outcome in (SILENT, AUTOGRAD, ERROR):
                    print(f"    {c.key}: {c.outcome}: {c.detail}")
    seconds = time.process_time() - cpu
    totals = collections.Counter(c.outcome for r in reports for c in r.cases)
    print(f"total {seconds:.0f}s CPU: " + " ".join(f"{o}={totals.get(o, 0)}" for o in OUTCOMES))
    if a.out:
        command = "python -m tests.op_sweep " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(a.out, "w") as f:
            f.write(markdown(reports, seconds, command))
    if a.json:
        import json

        with open(a.json, "w") as f:
            for r in reports:
                for c in r.cases:
                    f.write(json.dumps({"family": r.family, **vars(c)}) + "\n")
    if a.write_known:
        from shimnn import _native

        this = native_path()
        runs = {this: reports}
        previous = _native.set_enabled(this == "0")  # the other path, where it can run
        try:
            if native_path() != this:
                runs[native_path()] = [
                    sweep_op(op, max_samples=max_samples, time_limit=a.time_limit) for op in ops]
        finally:
            _native.set_enabled(previous)
        write_known(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
