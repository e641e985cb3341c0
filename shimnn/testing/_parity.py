"""``assert_matches_torch``: the same computation under shimnn and under torch, bit for bit.

torch's side runs with torch's autograd (it is the oracle); shimnn's side runs inside
:func:`~shimnn.testing.assert_no_autograd`. Both get copies of the same inputs and the same
random upstream gradient (an all-ones gradient hides transposition mistakes).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from ._guard import assert_no_autograd, assert_no_autograd_graph
from ._report import (
    NAN_VS_NUMBER,
    NUMBER_VS_NAN,
    ParityError,
    TensorDiff,
    bits_equal,
    compare_tensors,
)

__all__ = ["ParityResult", "assert_matches_torch", "random_like"]

_LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16, torch.complex64)
_no_dispatch = torch._C.DisableTorchFunctionSubclass


def random_like(t: Tensor, seed: int) -> Tensor:
    """A standard-normal tensor with ``t``'s shape and dtype, from its own generator seeded with
    ``seed`` (torch's global generator is not touched)."""
    g = torch.Generator().manual_seed(seed)
    with _no_dispatch():
        return torch.randn(t.shape, generator=g, dtype=t.dtype)


@dataclass
class ParityResult:
    """What both sides computed (returned when they agree).

    Attributes:
        outputs: shimnn's return value.
        reference_outputs: torch's return value.
        inputs: the tensors shimnn received (their ``.grad`` filled by shimnn's backward).
        reference_inputs: the tensors torch received (``.grad`` filled by torch's autograd).
    """

    outputs: Any
    reference_outputs: Any
    inputs: list[Tensor]
    reference_inputs: list[Tensor]


def _tensors(obj: Any) -> list[Tensor]:
    """The tensors in ``obj`` (nested tuples, lists and dict values), in order."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, Mapping):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _map(obj: Any, fn: Callable[[Tensor], Any]) -> Any:
    """``obj`` with every tensor ``t`` in it replaced by ``fn(t)`` (same nesting)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_map(o, fn) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map(o, fn) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _name(f: Any) -> str:
    """How a report names a callable: ``Linear``, ``MatMul.apply``, ``torch.matmul``."""
    if isinstance(f, torch.nn.Module):
        return type(f).__name__
    owner = getattr(f, "__self__", None)
    if isinstance(owner, type):  # Function.apply, a classmethod bound to the user's class
        return f"{owner.__name__}.{f.__name__}"
    try:
        torch_name = torch.overrides.resolve_name(f)
    except Exception:
        torch_name = None
    if torch_name:
        return str(torch_name)
    return str(getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f))


def _requires_grad(tensors: list[Tensor], requires_grad: bool | Sequence[bool] | None
                   ) -> list[bool]:
    differentiable = [t.dtype.is_floating_point or t.dtype.is_complex for t in tensors]
    if requires_grad is None:
        return differentiable
    if isinstance(requires_grad, bool):
        return [requires_grad and d for d in differentiable]
    flags = list(requires_grad)
    if len(flags) != len(tensors):
        raise ValueError(f"requires_grad has {len(flags)} entries for {len(tensors)} input "
                         "tensors")
    return flags


def _leaf(t: Tensor, rg: bool, parameter: bool) -> Tensor:
    with _no_dispatch():
        c = t.detach().clone()  # clone keeps the layout (a transposed input stays transposed)
    if not rg:
        return c
    if parameter:
        import shimnn

        return shimnn.Parameter(c)
    return c.requires_grad_()


@dataclass
class _Side:
    outputs: Any
    leaves: list[Tensor]
    named: list[tuple[str, Tensor | None]]  # output k, grad of input i, ... in report order
    differentiable: list[bool]  # per output: requires grad
    grads: list[Tensor]  # the upstream gradient of each differentiable output


def _collect(module: Any, outputs: list[Tensor], leaves: list[Tensor], flags: list[bool]
             ) -> list[tuple[str, Tensor | None]]:
    named: list[tuple[str, Tensor | None]] = [(f"output {k}", o) for k, o in enumerate(outputs)]
    with _no_dispatch():  # reading .grad of shimnn tensors needs no shimnn dispatch
        named += [(f"grad of input {i}", t.grad) for i, (t, rg) in enumerate(zip(leaves, flags))
                  if rg]
        if isinstance(module, torch.nn.Module):
            named += [(f"grad of parameter {n}", p.grad) for n, p in module.named_parameters()]
            named += [(f"buffer {n}", b) for n, b in module.named_buffers()]
    return named


def _run_reference(reference: Any, args: Any, tensors: list[Tensor], flags: list[bool],
                   grad_outputs: Sequence[Tensor] | None, seed: int) -> _Side:
    leaves = [_leaf(t, rg, parameter=False) for t, rg in zip(tensors, flags)]
    it = iter(leaves)
    out = reference(*_map(args, lambda _: next(it)))
    outputs = _tensors(out)
    import shimnn

    if any(isinstance(o, shimnn.TrackedTensor) for o in outputs):
        raise ValueError(
            f"the reference {_name(reference)} returned a shimnn tensor: it ran through shimnn, "
            "not torch. Pass torch's own module or function (is torch patched by "
            "shimnn.patch_torch(), `shimnn run` or `pytest --shimnn` here?).")
    differentiable = [o.requires_grad for o in outputs]
    roots = [o for o, d in zip(outputs, differentiable) if d]
    grads = _upstream(roots, grad_outputs, seed)
    if roots:
        torch.autograd.backward(roots, grads)
    return _Side(out, leaves, _collect(reference, outputs, leaves, flags), differentiable,
                 grads)


def _upstream_seed(seed: int, k: int) -> int:
    """The generator seed of output ``k``'s upstream gradient. Not ``seed`` itself: inputs made
    with ``torch.manual_seed(seed); torch.randn(...)`` would then equal the gradient (a
    gradient equal to the input hides a transposed ``x.T @ grad``, which is symmetric)."""
    return (0x5EED_CAFE * (seed + 1) + 7919 * k) % (1 << 63)


def _upstream(roots: list[Tensor], grad_outputs: Sequence[Tensor] | None, seed: int
              ) -> list[Tensor]:
    if grad_outputs is None:
        return [random_like(o, _upstream_seed(seed, k)) for k, o in enumerate(roots)]
    grads = list(grad_outputs)
    if len(grads) != len(roots):
        raise ValueError(f"grad_outputs has {len(grads)} tensors for {len(roots)} outputs that "
                         "require grad")
    return [g.detach().clone() for g in grads]


def _run_shim(shim: Any, args: Any, tensors: list[Tensor], flags: list[bool],
              grads: list[Tensor], ref_differentiable: list[bool]) -> _Side:
    from .._engine import backward

    parameter = not isinstance(shim, torch.nn.Module)
    leaves = [_leaf(t, rg, parameter) for t, rg in zip(tensors, flags)]
    it = iter(leaves)
    with assert_no_autograd():
        out = shim(*_map(args, lambda _: next(it)))
        outputs = _tensors(out)
        assert_no_autograd_graph(*outputs)
        differentiable = [o.requires_grad for o in outputs]
        roots: list[Tensor] = []
        root_grads: list[Tensor] = []
        if len(outputs) == len(ref_differentiable):
            upstream = iter(grads)  # one per output torch differentiates, in order
            for o, d, r in zip(outputs, differentiable, ref_differentiable):
                g = next(upstream) if r else None
                if d and g is not None:
                    roots.append(o)
                    root_grads.append(g.clone())
        if len(roots) == 1:
            roots[0].backward(root_grads[0])  # the path a user's loss.backward() takes
        elif roots:
            backward(roots, root_grads)
    named = _collect(shim, outputs, leaves, flags)
    assert_no_autograd_graph(*(t for _, t in named))
    return _Side(out, leaves, named, differentiable, root_grads)


def _compare(shim_side: _Side, ref_side: _Side, atol: float | None, rtol: float | None
             ) -> list[TensorDiff]:
    diffs: list[TensorDiff] = []
    s_out = [n for n, _ in shim_side.named if n.startswith("output ")]
    r_out = [n for n, _ in ref_side.named if n.startswith("output ")]
    if len(s_out) != len(r_out):
        diffs.append(TensorDiff("outputs", False, f"shimnn returned {len(s_out)} tensors, torch "
                                                  f"{len(r_out)}"))
        return diffs
    for k, (ds, dr) in enumerate(zip(shim_side.differentiable, ref_side.differentiable)):
        if ds != dr:
            diffs.append(TensorDiff(f"output {k}", False, f"requires_grad is {ds} in shimnn, "
                                                          f"{dr} in torch"))
    shim_named = dict(shim_side.named)
    ref_named = dict(ref_side.named)
    for name in [n for n, _ in ref_side.named] + [n for n, _ in shim_side.named
                                                  if n not in ref_named]:
        if name not in shim_named:
            diffs.append(TensorDiff(name, False, "missing in shimnn's module"))
        elif name not in ref_named:
            diffs.append(TensorDiff(name, False, "missing in torch's module"))
        else:
            diffs.append(compare_tensors(shim_named[name], ref_named[name], name, atol=atol,
                                         rtol=rtol))
    return diffs


def _rounding_level(a: Tensor, b: Tensor) -> TensorDiff:
    """Whether two float64 tensors differ by no more than rounding could make them."""
    with _no_dispatch():
        scale = float(b.detach().abs().nan_to_num(0.0, 0.0, 0.0).max()) if b.numel() else 0.0
    return compare_tensors(a, b, "", atol=1e-12 * max(scale, 1e-300), rtol=1e-9)


def _bits_only(d: TensorDiff) -> str | None:
    """``d``'s kinds of difference when no value differs (only zero signs or NaN bits)."""
    if d.numeric or d.special.get(NAN_VS_NUMBER) or d.special.get(NUMBER_VS_NAN):
        return None
    return " and ".join(d.special) or None


def _judge(d: TensorDiff, a: Tensor, b: Tensor, where: str) -> str:
    """The verdict on a float64 difference ``d`` between ``a`` and ``b``."""
    bits = _bits_only(d)
    if bits is not None:
        return (f"{where}: the values agree but differ {bits}, which rounding does not do: "
                "shimnn's formula or kernel is not torch's")
    nans = [k for k in (NAN_VS_NUMBER, NUMBER_VS_NAN) if d.special.get(k)]
    if not nans and _rounding_level(a, b).equal:
        return (f"{where}: differs only at rounding level (largest absolute difference "
                f"{d.max_abs:.3g}), so this is rounding (order of operations or kernel "
                "choice), not a wrong formula")
    how = [f"largest absolute difference {d.max_abs:.3g}"] if d.numeric else []
    how += [f"{d.special[k]} {k}" for k in nans]
    return (f"{where}: {d.summary.split(' (')[0]} ({'; '.join(how)}), so this is not rounding: "
            "the formula differs from torch's")


def _verdict(diff64: TensorDiff | None, a64: Any, b64: Any) -> str:
    if diff64 is None:
        return "float64 rerun: this tensor is missing there"
    if diff64.equal:
        return ("float64 rerun: bit-identical, so this is float32 rounding (order of operations "
                "or kernel choice), not a wrong formula")
    if diff64.dtype is None:
        return f"float64 rerun: {diff64.summary}"
    return _judge(diff64, a64, b64, "float64 rerun")


def _add_verdicts(failing: list[TensorDiff], shim_side: _Side, ref_side: _Side,
                  rerun: Callable[[], tuple[_Side, _Side]]) -> None:
    """The float64 line of each value difference: rerun in float64 for low-precision tensors,
    judge float64 tensors by the size of their difference."""
    shim_named, ref_named = dict(shim_side.named), dict(ref_side.named)
    for d in failing:
        if d.dtype == torch.float64:
            d.verdict = _judge(d, shim_named[d.name], ref_named[d.name],  # type: ignore[arg-type]
                               "in float64 already")
    low = [d for d in failing if d.dtype in _LOW_PRECISION]
    if not low:
        return
    try:
        shim64, ref64 = rerun()
    except Exception as exc:  # reported, not hidden
        for d in low:
            d.verdict = f"float64 rerun failed: {type(exc).__name__}: {exc}"
        return
    s64, r64 = dict(shim64.named), dict(ref64.named)
    for d in low:
        if d.name in s64 and d.name in r64:
            a, b = s64[d.name], r64[d.name]
            d.verdict = _verdict(compare_tensors(a, b, d.name), a, b)
        else:
            d.verdict = _verdict(None, None, None)


def _to_float64(t: Tensor) -> Tensor:
    with _no_dispatch():
        if t.dtype.is_complex:
            return t.to(torch.complex128)
        return t.double() if t.dtype.is_floating_point else t


def assert_matches_torch(
    shim: Callable[..., Any],
    reference: Callable[..., Any],
    *inputs: Any,
    requires_grad: bool | Sequence[bool] | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    check_float64: bool = True,
    grad_outputs: Sequence[Tensor] | None = None,
    state_dict: Mapping[str, Any] | None = None,
) -> ParityResult:
    """Check that ``shim`` under shimnn computes what ``reference`` computes under torch.

    Both are called on copies of ``inputs``; torch's side runs with torch's autograd, shimnn's
    inside :func:`assert_no_autograd`. Then each differentiable output gets the same random
    upstream gradient and both sides run backward. Compared, **bit for bit** by default:
    every output, the gradient of every input that requires grad, and (when both are modules)
    the gradient of every parameter and every buffer, matched by name.

    Args:
        shim: what is tested: a shimnn module, a ``shimnn.Function``'s ``apply``, or any
            callable. A module gets plain leaf tensors (as a model gets data); any other
            callable gets ``shimnn.Parameter`` leaves, so the torch functions it calls on them
            (``torch.tanh(x)``, ``x @ w``) reach shimnn's hand-written ops. The same callable
            may be passed as ``shim`` and ``reference``.
        reference: the same computation in torch (a ``torch.nn`` module, a torch function, a
            ``torch.autograd.Function``'s ``apply``).
        *inputs: the arguments; tensors may sit in nested tuples, lists and dicts. Non-tensor
            arguments are passed to both unchanged.
        requires_grad: which input tensors (in order of appearance) require grad: ``None``
            (default) for every floating-point one, a bool for all, or one flag per tensor.
        seed: seeds the upstream gradients (output ``k``'s generator is seeded from ``seed``
            and ``k``; torch's global generator is not used).
        atol, rtol: opt-in tolerance: an element agrees when ``|shimnn - torch| <= atol +
            rtol * |torch|`` (NaN where torch has NaN). Default: bitwise, where ``-0.0``
            differs from ``0.0`` and NaNs agree only with identical bits.
        check_float64: when a float32 (or half) tensor differs, rerun both sides in float64
            and say whether the difference persists there (a wrong formula) or vanishes
            (rounding: order of operations or a different kernel).
        grad_outputs: explicit upstream gradients, one per output that requires grad,
            instead of random ones.
        state_dict: when both are modules, loaded into both first. Without it, the
            reference's state dict is loaded into ``shim`` (unless they are equal already).

    Returns:
        A :class:`ParityResult` with both sides' outputs and input tensors.

    Raises:
        ParityError: an ``AssertionError`` whose message names each tensor (``output 0``,
            ``grad of input 1``, ``grad of parameter weight``), how many elements differ, the
            largest absolute and relative difference and where, zero-sign and NaN
            differences, and the float64 rerun's verdict.
        AutogradCalled: shimnn's side entered torch's autograd engine.
    """
    tensors = _tensors(inputs)
    flags = _requires_grad(tensors, requires_grad)
    modules = isinstance(shim, torch.nn.Module) and isinstance(reference, torch.nn.Module)
    snapshot: dict[str, Tensor] | None = None
    if modules:
        snapshot = _share_state(shim, reference, state_dict)  # type: ignore[arg-type]

    def run(shim_: Any, reference_: Any, tensors_: list[Tensor],
            grad_outputs_: Sequence[Tensor] | None) -> tuple[_Side, _Side]:
        ref_side = _run_reference(reference_, inputs, tensors_, flags, grad_outputs_, seed)
        try:
            shim_side = _run_shim(shim_, inputs, tensors_, flags, ref_side.grads,
                                  ref_side.differentiable)
        except Exception as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"(raised by shimnn's side of assert_matches_torch: "
                             f"{_name(shim_)})")
            raise
        return shim_side, ref_side

    shim_side, ref_side = run(shim, reference, tensors, grad_outputs)
    diffs = _compare(shim_side, ref_side, atol, rtol)
    failing = [d for d in diffs if not d.equal]
    if failing:
        if check_float64:
            def rerun() -> tuple[_Side, _Side]:
                s, r = shim, reference
                if modules and snapshot is not None:
                    copies = [cast(torch.nn.Module, copy.deepcopy(m)) for m in (shim, reference)]
                    for m in copies:
                        m.load_state_dict(snapshot)
                        m.double()
                        for p in m.parameters():
                            p.grad = None
                    s, r = copies
                grads64 = None if grad_outputs is None else [_to_float64(g) for g in grad_outputs]
                return run(s, r, [_to_float64(t) for t in tensors], grads64)

            _add_verdicts(failing, shim_side, ref_side, rerun)
        tol = "" if atol is None and rtol is None else (
            f", tolerance atol={atol or 0.0:g}, rtol={rtol or 0.0:g}")
        header = (f"shimnn.testing.assert_matches_torch: {_name(shim)} (shimnn) vs "
                  f"{_name(reference)} (torch), seed {seed}{tol}: {len(failing)} of "
                  f"{len(diffs)} tensors differ")
        raise ParityError("\n".join([header, *(str(d) for d in diffs)]), failing)
    return ParityResult(shim_side.outputs, ref_side.outputs, shim_side.leaves, ref_side.leaves)


def _share_state(shim: torch.nn.Module, reference: torch.nn.Module,
                 state_dict: Mapping[str, Any] | None) -> dict[str, Tensor]:
    """Give both modules the same state; returns a copy of it (for the float64 rerun)."""
    if state_dict is not None:
        reference.load_state_dict(state_dict)
        shim.load_state_dict(state_dict)
    else:
        with _no_dispatch():  # reading state needs no shimnn dispatch
            ref_state, shim_state = reference.state_dict(), shim.state_dict()
        if list(ref_state) != list(shim_state) or not all(
                bits_equal(shim_state[k], v) for k, v in ref_state.items()):
            shim.load_state_dict(ref_state)
    with _no_dispatch():
        return {k: v.detach().clone() for k, v in shim.state_dict().items()}
