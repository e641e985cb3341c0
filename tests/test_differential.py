"""Differential testing: random stacks of shimnn modules against their torch.nn twins.

Hypothesis draws a stack of supported layers (Linear with and without bias, the activations,
in-place variants, Softmax/LogSoftmax, Dropout in eval mode, Flatten/Unflatten), an input
(0-d, 1-d, N-d, empty dimensions; float32/float64; sometimes NaN/inf), an optional loss with a
random reduction, and sometimes one deliberately wrong input (mismatched feature size, wrong
dtype, integer input, wrong target shape or dtype, Linear on a 0-d tensor). The same stack is
built under ``torch.nn`` and ``shimnn`` from the same seed (``parity.twin_modules``), both as a
``Sequential`` (shimnn's fused path when every layer can be chained) and as a user-defined
``Module`` subclass that calls the layers one by one (the per-op path). Then either both raise
the same exception type at the same stage (forward, loss or backward), or outputs, input
gradients, parameter gradients and the warnings issued are bit-identical, with a random upstream
gradient (or the implicit one of a single-element output).

Number of examples: ``CI_EXAMPLES`` by default (bounded, for CI). For an on-demand, longer run
set the environment variable ``SHIMNN_HYPOTHESIS_EXAMPLES``, e.g.::

    SHIMNN_HYPOTHESIS_EXAMPLES=5000 PYTHONPATH=. .venv/bin/python -m pytest -o addopts="" \\
        -q tests/test_differential.py

Both are named hypothesis settings profiles (``shimnn-differential-ci`` and
``shimnn-differential-extended``), applied to these tests only, never loaded globally.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import shimnn
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from parity import check_raises_like, random_like, reraise, twin_modules
from shimnn._chain import _chain_plan, _layers_fusable

CI_EXAMPLES = 100
_EXAMPLES_ENV = "SHIMNN_HYPOTHESIS_EXAMPLES"

settings.register_profile(
    "shimnn-differential-ci", max_examples=CI_EXAMPLES, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile(
    "shimnn-differential-extended", max_examples=int(os.environ.get(_EXAMPLES_ENV) or 0) or 1,
    deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
PROFILE = settings.get_profile(
    "shimnn-differential-extended" if os.environ.get(_EXAMPLES_ENV) else "shimnn-differential-ci")

DTYPES = [torch.float32, torch.float64]
Shape = tuple[int, ...]
LayerSpec = tuple[str, dict[str, Any]]

# Element-wise layers (any shape, shape unchanged). The in-place variants are drawn separately:
# never right after a Flatten/Unflatten (a view), where torch rebases the in-place op onto the
# view's base and shimnn refuses, as documented (README, "Also refused").
ELEMENTWISE: list[LayerSpec] = [
    ("ReLU", {}), ("Tanh", {}), ("Sigmoid", {}), ("LeakyReLU", {"negative_slope": 0.2}),
    ("ELU", {"alpha": 0.7}), ("GELU", {}), ("GELU", {"approximate": "tanh"}), ("SiLU", {}),
    ("Softplus", {"beta": 2.0, "threshold": 3.0}), ("Hardtanh", {"min_val": -0.5, "max_val": 1.5}),
    ("ReLU6", {}), ("Identity", {}), ("Softmax", {"dim": -1}), ("LogSoftmax", {"dim": -1}),
    ("Dropout", {"p": 0.4}),
]
INPLACE: list[LayerSpec] = [
    ("ReLU", {"inplace": True}), ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
    ("ELU", {"inplace": True}), ("SiLU", {"inplace": True}), ("Hardtanh", {"inplace": True}),
    ("ReLU6", {"inplace": True}),
]
PASS_THROUGH = {"Identity", "Dropout"}  # return their input itself (Dropout: in eval mode)
LOSSES = ["MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "BCEWithLogitsLoss",
          "CrossEntropyLoss"]
FAULTS = ["features", "dtype", "int_input", "target_shape", "target_dtype", "linear_on_0d"]


@dataclass
class Case:
    """One drawn example: everything needed to build and run both twins."""

    layers: list[LayerSpec]
    shape: Shape
    dtype: torch.dtype
    input_dtype: torch.dtype
    out_shape: Shape  # of the stack's output, when the stack is valid
    loss: LayerSpec | None
    target_shape: Shape
    target_dtype: torch.dtype
    seed: int
    scale: float
    specials: bool  # sprinkle NaN, +-inf and -0.0 into the input
    input_requires_grad: bool
    implicit_grad: bool  # backward() without a gradient when the result has one element
    fault: str | None = None
    transposed: bool = False  # a column-major input (the last two dims swapped in memory)

    def build(self, nn: Any, container: str) -> torch.nn.Module:
        """The stack under ``nn`` (torch.nn or shimnn), as a Sequential or a per-op subclass."""
        layers = [getattr(nn, name)(**kwargs) for name, kwargs in self.layers]
        model = nn.Sequential(*layers) if container == "sequential" else per_op_chain(nn, layers)
        return model.eval()  # Dropout is the identity in eval mode; nothing else changes


def per_op_chain(nn: Any, layers: list[torch.nn.Module]) -> torch.nn.Module:
    """A user-defined ``nn.Module`` subclass whose forward calls the layers one by one."""

    class PerOp(nn.Module):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            super().__init__()
            for i, layer in enumerate(layers):
                self.add_module(f"l{i}", layer)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.children():
                x = layer(x)
            return x

    return PerOp()


def _flattened(shape: Shape, start: int, end: int) -> Shape:
    if not shape:
        return (1,)
    return shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Draw a stack, an input, a loss and, sometimes, one fault."""
    dtype = draw(st.sampled_from(DTYPES))
    fault = draw(st.one_of(st.none(), st.none(), st.none(), st.sampled_from(FAULTS)))
    shape: Shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    if fault == "linear_on_0d":
        shape = ()
    current = shape
    layers: list[LayerSpec] = []
    after_view = False  # torch rebases in-place ops on views; shimnn refuses them (documented)
    n_layers = draw(st.integers(1, 5))
    for i in range(n_layers):
        kind = draw(st.sampled_from(["linear", "linear", "elementwise", "elementwise",
                                     "inplace", "flatten", "unflatten"]))
        if fault == "linear_on_0d" and i == 0:
            kind = "linear"
        if kind == "linear" and (current or (fault == "linear_on_0d" and i == 0)):
            in_features = current[-1] if current else 1
            if fault == "features" and not any(n == "Linear" for n, _ in layers):
                in_features += 1
            out_features = draw(st.integers(0, 5))
            kwargs: dict[str, Any] = {"in_features": in_features, "out_features": out_features,
                                      "bias": draw(st.booleans())}
            if dtype is torch.float64:
                kwargs["dtype"] = dtype
            layers.append(("Linear", kwargs))
            current = current[:-1] + (out_features,)
            after_view = False
        elif kind == "inplace" and not after_view:
            layers.append(draw(st.sampled_from(INPLACE)))
        elif kind == "flatten":
            if current:
                start = draw(st.integers(0, len(current) - 1))
                end = draw(st.integers(start, len(current) - 1))
            else:
                start, end = 0, 0
            negative_end = bool(current) and draw(st.booleans())  # end_dim=-1 style
            layers.append(("Flatten", {"start_dim": start,
                                       "end_dim": end - len(current) if negative_end else end}))
            current = _flattened(current, start, end)
            after_view = True
        elif kind == "unflatten" and current:
            dim = draw(st.integers(0, len(current) - 1))
            n = current[dim]
            divisors = [d for d in range(1, n + 1) if n % d == 0] or [0]
            a = draw(st.sampled_from(divisors))
            sizes = (a, n // a if a else 2)
            if a and draw(st.booleans()):
                sizes = (a, -1)
            layers.append(("Unflatten", {"dim": dim, "unflattened_size": sizes}))
            current = current[:dim] + (a, n // a if a else 2) + current[dim + 1:]
            after_view = True
        else:
            spec = draw(st.sampled_from(ELEMENTWISE))
            layers.append(spec)
            after_view = after_view and spec[0] in PASS_THROUGH
    loss: LayerSpec | None = None
    target_shape, target_dtype = current, dtype
    if draw(st.booleans()) or fault in ("target_shape", "target_dtype"):
        name = draw(st.sampled_from(LOSSES))
        kwargs = {"reduction": draw(st.sampled_from(["none", "mean", "sum"]))}
        if name == "SmoothL1Loss":
            kwargs["beta"] = draw(st.sampled_from([0.0, 0.5, 1.0]))
        elif name == "HuberLoss":
            kwargs["delta"] = draw(st.sampled_from([0.5, 1.0, 2.0]))
        elif name == "CrossEntropyLoss":
            kwargs["label_smoothing"] = draw(st.sampled_from([0.0, 0.2]))
            kwargs["ignore_index"] = draw(st.sampled_from([-100, 1]))
        loss = (name, kwargs)
        if name == "CrossEntropyLoss":
            class_dim = 1 if len(current) >= 2 else 0
            target_shape = current[:class_dim] + current[class_dim + 1:]
            target_dtype = torch.int64
        if fault == "target_shape":
            target_shape = (target_shape[0] + 1,) + target_shape[1:] if target_shape else (2,)
        elif fault == "target_dtype":
            target_dtype = torch.int32 if target_dtype is torch.int64 else torch.int64
            if name == "CrossEntropyLoss" and draw(st.booleans()):
                target_dtype = DTYPES[1 - DTYPES.index(dtype)]
    input_dtype = dtype
    if fault == "dtype":
        input_dtype = DTYPES[1 - DTYPES.index(dtype)]
    elif fault == "int_input":
        input_dtype = torch.int64
    out_numel = math.prod(current)
    return Case(
        layers=layers, shape=shape, dtype=dtype, input_dtype=input_dtype, out_shape=current,
        loss=loss, target_shape=target_shape, target_dtype=target_dtype,
        seed=draw(st.integers(0, 2**31 - 1)), scale=draw(st.sampled_from([1e-3, 1.0, 30.0])),
        specials=draw(st.integers(0, 4)) == 0, transposed=len(shape) >= 2 and draw(st.booleans()),
        input_requires_grad=input_dtype.is_floating_point and draw(st.booleans()),
        implicit_grad=out_numel == 1 and draw(st.booleans()), fault=fault)


def make_input(case: Case) -> torch.Tensor:
    """The input tensor (a fresh one per call: in-place layers may overwrite it)."""
    g = torch.Generator().manual_seed(case.seed)
    if not case.input_dtype.is_floating_point:
        return torch.randint(-3, 4, case.shape, generator=g, dtype=case.input_dtype)
    shape = case.shape[:-2] + case.shape[:-3:-1] if case.transposed else case.shape
    x = torch.randn(shape, generator=g, dtype=case.input_dtype) * case.scale
    if case.specials and x.numel():
        flat = x.view(-1)
        for i, v in enumerate([float("nan"), float("inf"), -float("inf"), -0.0]):
            flat[(case.seed + 7 * i) % flat.numel()] = v
    if case.transposed:
        x = x.transpose(-1, -2)
    return x.requires_grad_(case.input_requires_grad)


def make_target(case: Case) -> torch.Tensor | None:
    """The loss target: class indices for cross entropy, probabilities for BCE, else values."""
    if case.loss is None:
        return None
    g = torch.Generator().manual_seed(case.seed + 1)
    name = case.loss[0]
    if not case.target_dtype.is_floating_point:
        classes = 1
        if name == "CrossEntropyLoss" and case.out_shape:
            classes = max(case.out_shape[1 if len(case.out_shape) >= 2 else 0], 1)
        return torch.randint(0, classes, case.target_shape, generator=g, dtype=case.target_dtype)
    t = torch.rand(case.target_shape, generator=g, dtype=case.target_dtype)
    return t if name == "BCEWithLogitsLoss" else (t - 0.5) * 4


@dataclass
class Result:
    """What one run produced: the stage reached, outputs, gradients, warnings."""

    stage: str = "build"
    output: torch.Tensor | None = None
    grad: torch.Tensor | None = None  # the upstream gradient used (None: implicit or none)
    input: torch.Tensor | None = None
    warnings: list[tuple[type, str]] = field(default_factory=list)


def run(case: Case, model: torch.nn.Module, nn: Any, result: Result,
        upstream: torch.Tensor | None) -> None:
    """Forward, loss, backward; fills ``result`` as it goes (so its stage survives a raise).

    ``upstream`` is the gradient to use: ``None`` for torch's run, which draws it at random
    from its output; shimnn's run receives a clone of torch's.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            x = make_input(case)
            result.input = x
            result.stage = "forward"
            out = model(x)
            if case.loss is not None:
                result.stage = "loss"
                out = getattr(nn, case.loss[0])(**case.loss[1])(out, make_target(case))
            result.output = out
            if not out.requires_grad or out is x:
                return  # no graph; or the caller's own leaf, whose backward is torch's anyway
            result.stage = "backward"
            if case.implicit_grad and out.numel() == 1:
                out.backward()
                return
            if upstream is None:
                upstream = random_like(out, case.seed + 2)
            result.grad = upstream
            out.backward(upstream.clone())
            result.stage = "done"
        finally:
            result.warnings = [(w.category, str(w.message)) for w in caught]


def note(what: str) -> None:
    """A hypothesis event (shown by ``--hypothesis-show-statistics``), outside a test a no-op."""
    if currently_in_test_context():
        event(what)


def check_case(case: Case, container: str) -> BaseException | None:
    """Run both twins; same exception type and stage, or bit-identical everything.

    Returns torch's exception, if it raised."""
    ref_model, shim_model = twin_modules(lambda nn: case.build(nn, container), case.seed % 1000)
    ref = Result()
    try:
        run(case, ref_model, torch.nn, ref, None)
        ref_exc: BaseException | None = None
    except Exception as e:
        ref_exc = e
    shim = Result()
    if ref_exc is not None:
        note(f"raises {type(ref_exc).__name__} at {ref.stage}")
        check_raises_like(reraise(ref_exc),
                          lambda: run(case, shim_model, shimnn, shim, ref.grad))
        assert shim.stage == ref.stage, f"shimnn raised at {shim.stage}, torch at {ref.stage}"
        assert shim.warnings == ref.warnings
        return ref_exc
    note(f"{container}: {'fused' if _is_fused(shim_model, case) else 'per-op'}")
    with autograd_forbidden():
        run(case, shim_model, shimnn, shim, ref.grad)
    assert shim.stage == ref.stage
    assert shim.warnings == ref.warnings
    assert ref.output is not None and shim.output is not None
    assert_no_autograd_graph(shim.output)
    assert_same(shim.input, ref.input, "the caller's input after the run")  # in-place layers
    if ref.output is ref.input:  # pass-through and in-place layers return their input itself
        _assert_input_returned(shim.output, shim.input)
        return None
    assert shim.output.requires_grad == ref.output.requires_grad
    assert_same(shim.output, ref.output, "output")
    assert_same(getattr(shim.input, "grad", None), getattr(ref.input, "grad", None),
                "input grad")
    ref_params = dict(ref_model.named_parameters())
    for name, p in shim_model.named_parameters():
        assert isinstance(p, shimnn.Parameter)
        assert_same(p.grad, ref_params[name].grad, f"grad of {name}")
        assert_no_autograd_graph(p.grad)
    return None


def _assert_input_returned(out: torch.Tensor, x: torch.Tensor) -> None:
    """torch returned its input itself. shimnn returns it too, or, for a plain input, its
    TrackedTensor alias without a graph (by design: ``.backward()`` on the result is then
    shimnn's; tests/test_activations.py::test_dropout_identity_returns_the_input)."""
    if out is x:
        return
    assert type(x) is torch.Tensor and not x.requires_grad, "a tracked input was not returned"
    assert isinstance(out, shimnn.TrackedTensor) and out.shim_fn is None
    assert out.data_ptr() == x.data_ptr() and out._version == x._version


NON_RELU_INPLACE = {name for name, _ in INPLACE} - {"ReLU"}


def _is_fused(model: torch.nn.Module, case: Case) -> bool:
    if not isinstance(model, shimnn.Sequential):
        return False
    plan = _chain_plan(model, torch.empty(case.shape))
    return plan is not None and _layers_fusable(plan[0])


@PROFILE
@given(case=cases())
def test_random_stacks_match_torch(case: Case) -> None:
    """The same random stack, as a (possibly fused) Sequential and as a per-op subclass."""
    for container in ("sequential", "per_op"):
        check_case(case, container)


@pytest.mark.parametrize("container", ["sequential", "per_op"])
@pytest.mark.parametrize("fault", [None, *FAULTS])
def test_each_fault_kind_is_reachable(container: str, fault: str | None) -> None:
    """A fixed example per fault kind, so every kind runs even in a short hypothesis run."""
    shape: Shape = () if fault == "linear_on_0d" else (3, 4)
    in_features = 1 if not shape else shape[-1] + (fault == "features")
    loss: LayerSpec = (("CrossEntropyLoss", {"reduction": "mean"}) if fault == "target_dtype"
                       else ("MSELoss", {"reduction": "sum"}))
    target_shape: Shape = (3,) if loss[0] == "CrossEntropyLoss" else (3, 2)
    case = Case(
        layers=[("Linear", {"in_features": in_features, "out_features": 2}), ("Tanh", {})],
        shape=shape, dtype=torch.float32,
        input_dtype={"dtype": torch.float64, "int_input": torch.int64}.get(
            fault or "", torch.float32),
        out_shape=(3, 2), loss=loss,
        target_shape=(4, 2) if fault == "target_shape" else target_shape,
        target_dtype=torch.int32 if fault == "target_dtype" else
        (torch.int64 if loss[0] == "CrossEntropyLoss" else torch.float32),
        seed=5, scale=1.0, specials=False, input_requires_grad=fault != "int_input",
        implicit_grad=False, fault=fault)
    torch_raised = check_case(case, container)
    assert (torch_raised is None) == (fault is None), torch_raised


def _pinned(layers: list[LayerSpec], input_requires_grad: bool) -> Case:
    return Case(layers=layers, shape=(4, 3), dtype=torch.float32, input_dtype=torch.float32,
                out_shape=(4, 3), loss=None, target_shape=(4, 3), target_dtype=torch.float32,
                seed=0, scale=1.0, specials=False, input_requires_grad=input_requires_grad,
                implicit_grad=False)


REGRESSIONS = [  # examples the property found where shimnn once differed from torch
    *[pytest.param(
        _pinned([("Linear", {"in_features": 3, "out_features": 3}), (saving, {}),
                 (inplace, {"inplace": True})], False), "sequential",
        id=f"fused-non-relu-inplace-after-saved-output-{saving}-{inplace}")
      for saving in ("Tanh", "Sigmoid", "ReLU") for inplace in sorted(NON_RELU_INPLACE)],
    *[pytest.param(
        _pinned([("Dropout", {"p": 0.4}), *then], True), container,
        id=f"eval-dropout-of-a-leaf-{'-'.join(n for n, _ in then) or 'alone'}-{container}")
      for then in ([], [("ReLU", {"inplace": True})], [("ELU", {"inplace": True})])
      for container in ("sequential", "per_op")],
    *[pytest.param(
        Case(layers=[("Flatten", {"start_dim": 0, "end_dim": 0})], shape=(3,),
             dtype=torch.float32, input_dtype=torch.float32, out_shape=(3,), loss=None,
             target_shape=(3,), target_dtype=torch.float32, seed=0, scale=1.0,
             specials=False, input_requires_grad=True, implicit_grad=False), container,
        id=f"noop-flatten-of-a-leaf-{container}")
      for container in ("sequential", "per_op")],
    *[pytest.param(
        Case(layers=[("Tanh", {})], shape=(0, 0), dtype=torch.float32,
             input_dtype=torch.float32, out_shape=(0, 0),
             loss=("CrossEntropyLoss", {"reduction": reduction, "label_smoothing": 0.2}),
             target_shape=(0,), target_dtype=torch.int64, seed=0, scale=1.0, specials=False,
             input_requires_grad=True, implicit_grad=False), "per_op",
        id=f"cross-entropy-label-smoothing-zero-classes-{reduction}")
      for reduction in ("none", "mean", "sum")],
]


@pytest.mark.parametrize("case,container", REGRESSIONS)
def test_regressions(case: Case, container: str) -> None:
    """Examples the property found where shimnn differed from torch, now fixed: an in-place
    activation after a layer that saved its output in a fused chain, eval Dropout and a no-op
    Flatten of a leaf (torch returns the leaf itself), label smoothing with zero classes."""
    check_case(case, container)
