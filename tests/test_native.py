"""The compiled fast paths (shimnn/csrc/native.cpp) against the Python paths and torch.

``make test`` runs the whole suite twice: with the compiled paths required (``SHIMNN_NATIVE=1``)
and disabled (``SHIMNN_NATIVE=0``). The tests here compare the two paths directly, in one
process, and prove that the compiled ones are taken where they should be.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import shimnn
import shimnn.optim
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from shimnn import _engine, _graph, _native

native = _native.get()
needs_native = pytest.mark.skipif(native is None, reason=_native.status())


@contextlib.contextmanager
def native_enabled(flag: bool) -> Iterator[None]:
    previous = _native.set_enabled(flag)
    try:
        yield
    finally:
        _native.set_enabled(previous)


def test_required_build_is_in_use() -> None:
    """Under SHIMNN_NATIVE=1 (what `make test` sets first) the build must have worked."""
    if os.environ.get("SHIMNN_NATIVE") == "1":
        assert native is not None, _native.status()
        assert _native.status() == "native fast paths: in use"
    elif os.environ.get("SHIMNN_NATIVE") == "0":
        assert native is None
        assert "disabled" in _native.status()


def test_source_never_calls_autograd() -> None:
    source = (Path(shimnn.__file__).parent / "csrc" / "native.cpp").read_text()
    code = re.sub(r"//[^\n]*", "", source)  # comments may name what they replace
    for forbidden in ("torch::autograd", "autograd::backward", "autograd::grad", "run_backward",
                      "requires_grad_(", "set_requires_grad", "AutoGradMode no_grad(true)"):
        assert forbidden not in code, forbidden


# ---------------------------------------------------------------------------------------------
# Sequential chains: compiled vs Python vs torch
# ---------------------------------------------------------------------------------------------

CHAINS = {
    "seed": ["L2-25", "R", "L25-25", "R", "L25-25", "R", "L25-1", "T"],
    "inplace": ["L3-4", "Ri", "L4-4n", "T", "L4-2", "Ri"],
    "no-bias": ["L3-5n", "T", "L5-2n"],
    "act-first": ["T", "L3-4", "R", "L4-3"],
    "frozen": ["L3-4f", "R", "L4-4", "T", "L4-2f"],
    "linear-only": ["L3-3"],
}


def _build(nn: Any, spec: list[str], dtype: torch.dtype) -> Any:
    torch.manual_seed(0)
    layers: list[Any] = []
    for code in spec:
        if code[0] == "L":
            sizes, flags = code[1:].split("-")[0], code[1:].split("-")[1]
            out = int("".join(c for c in flags if c.isdigit()))
            layer = nn.Linear(int(sizes), out, bias="n" not in flags, dtype=dtype)
            if "f" in flags:
                layer.weight.requires_grad_(False)
            layers.append(layer)
        elif code == "T":
            layers.append(nn.Tanh())
        else:
            layers.append(nn.ReLU(inplace=code == "Ri"))
    return nn.Sequential(*layers)


def _run(nn: Any, spec: list[str], dtype: torch.dtype, layout: str, input_grad: bool,
         retain: bool) -> tuple[list[Any], str | None]:
    model = _build(nn, spec, dtype)
    in_features = model[0].in_features if hasattr(model[0], "in_features") else int(
        spec[1][1:].split("-")[0])
    g = torch.Generator().manual_seed(1)
    base = torch.randn(7, in_features, generator=g, dtype=dtype)
    x = base.t().contiguous().t() if layout == "column-major" else base
    if input_grad:
        x = x.detach().requires_grad_(True) if nn is torch.nn else shimnn.Parameter(x)
    out = model(x)
    upstream = torch.randn(out.shape, generator=g, dtype=dtype)
    out.backward(upstream, retain_graph=retain)
    if retain:
        out.backward(upstream * 0.5)
    results = [out.detach(), x.grad if input_grad else None]
    results += [p.grad for p in model.parameters()]
    node = getattr(out, "_node", None)
    return results, None if node is None else node.name


@needs_native
@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "column-major"])
@pytest.mark.parametrize("input_grad", [False, True])
@pytest.mark.parametrize("retain", [False, True])
def test_chain_matches_python_path_and_torch(chain: str, dtype: torch.dtype, layout: str,
                                             input_grad: bool, retain: bool) -> None:
    spec = CHAINS[chain]
    ref, _ = _run(torch.nn, spec, dtype, layout, input_grad, retain)
    with native_enabled(False):
        python, python_name = _run(shimnn, spec, dtype, layout, input_grad, retain)
    with autograd_forbidden():
        compiled, compiled_name = _run(shimnn, spec, dtype, layout, input_grad, retain)
    assert compiled_name == python_name
    for i, (c, p, r) in enumerate(zip(compiled, python, ref)):
        assert_same(c, r, f"{chain} tensor {i} vs torch")
        assert_same(c, p, f"{chain} tensor {i} vs the Python path")
        assert_no_autograd_graph(c)


@needs_native
@pytest.mark.parametrize("rows,features,width", [(1, 1, 1), (1, 7, 3), (50, 2, 25),
                                                 (1000, 25, 25), (64, 256, 256), (5, 784, 1024),
                                                 (257, 33, 1), (3, 1, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "column-major"])
def test_chain_linear_bias_rows_are_torchs(rows: int, features: int, width: int,
                                           dtype: torch.dtype, layout: str) -> None:
    """The chain's Linear (its output's rows filled with the bias, the product added by the
    same gemm) gives torch's output and gradients over the shapes MKL treats differently."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(rows, features, generator=g, dtype=dtype)
    x = base.t().contiguous().t() if layout == "column-major" else base
    upstream = torch.randn(rows, width, generator=g, dtype=dtype)
    results = []
    for nn in (torch.nn, shimnn):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(features, width, dtype=dtype), nn.ReLU())
        with autograd_forbidden() if nn is shimnn else contextlib.nullcontext():
            out = model(x)
            out.backward(upstream)
        results.append([out.detach(), model[0].weight.grad, model[0].bias.grad])
    for i, (c, r) in enumerate(zip(*results)):
        assert_same(c, r, f"tensor {i}")


@needs_native
@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chain_under_no_grad_matches_python_path_and_torch(chain: str, dtype: torch.dtype,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    spec = CHAINS[chain]
    in_features = int(next(c for c in spec if c[0] == "L")[1:].split("-")[0])
    x = torch.randn(9, in_features, dtype=dtype).t().contiguous().t()  # column-major too
    calls: list[Any] = []
    compiled_forward = native.chain_forward
    monkeypatch.setattr(native, "chain_forward", lambda *a: calls.append(
        compiled_forward(*a)) or calls[-1])
    with torch.no_grad():
        ref = _build(torch.nn, spec, dtype)(x)
        with native_enabled(False):
            python = _build(shimnn, spec, dtype)(x)
        assert calls == []
        compiled = _build(shimnn, spec, dtype)(x)
    assert len(calls) == 1 and calls[0][1] is None  # computed in C++, nothing recorded
    assert type(compiled) is shimnn.TrackedTensor and compiled._node is None
    assert_same(compiled, ref, "vs torch")
    assert_same(compiled, python, "vs the Python path")


@needs_native
def test_chain_node_is_compiled_and_records_what_python_does() -> None:
    x = torch.randn(6, 3)
    with native_enabled(False):
        py_out = _build(shimnn, CHAINS["inplace"], torch.float32)(x)
    out = _build(shimnn, CHAINS["inplace"], torch.float32)(x)
    assert isinstance(out._node.backward, native.Chain)
    assert not isinstance(py_out._node.backward, native.Chain)
    assert out._node.name == py_out._node.name == "ReluBackward1"
    assert out._node.versions == py_out._node.versions
    assert [tuple(t.shape) for t in out._node.saved] == [
        tuple(t.shape) for t in py_out._node.saved]
    assert out._version == py_out._version == 1  # the in-place ReLU bumped it


@needs_native
def test_chain_saved_tensor_modified_in_place_raises_like_torch() -> None:
    model = _build(shimnn, CHAINS["seed"], torch.float32)
    ref = _build(torch.nn, CHAINS["seed"], torch.float32)
    x = torch.randn(5, 2)
    out, ref_out = model(x), ref(x)
    with torch.no_grad():
        model[2].weight.add_(1.0)
        ref[2].weight.add_(1.0)
    with pytest.raises(RuntimeError) as expected:
        ref_out.sum().backward()
    with pytest.raises(RuntimeError) as got:
        out.sum().backward()
    assert "modified by an inplace operation" in str(got.value)
    assert "[torch.FloatTensor [25, 25]]" in str(got.value)
    assert "modified by an inplace operation" in str(expected.value)


@needs_native
def test_chain_bad_input_falls_back_and_names_the_layer() -> None:
    model = _build(shimnn, CHAINS["seed"], torch.float32)
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=2.*shape \(4, 3\)"):
        model(torch.randn(4, 3))


@needs_native
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("which", ["input", "target", "both"])
def test_mse_loss_matches_python_path_and_torch(reduction: str, dtype: torch.dtype,
                                                which: str) -> None:
    g = torch.Generator().manual_seed(0)
    x0, y0 = (torch.randn(6, 3, generator=g, dtype=dtype) for _ in range(2))
    upstream = torch.randn(() if reduction != "none" else (6, 3), generator=g, dtype=dtype)

    def run(make: Any, mse: Any) -> list[Any]:
        x = make(x0) if which != "target" else x0.clone()
        y = make(y0) if which != "input" else y0.clone()
        loss = mse(x, y, reduction=reduction)
        node = getattr(loss, "_node", None)
        backward = None if node is None else node.backward
        loss.backward(upstream, retain_graph=True)
        loss.backward(upstream)  # twice: a retained graph
        return [loss.detach(), x.grad if which != "target" else None,
                y.grad if which != "input" else None, loss, backward]

    ref = run(lambda t: t.clone().requires_grad_(True), torch.nn.functional.mse_loss)
    with native_enabled(False):
        python = run(shimnn.Parameter, shimnn.functional.mse_loss)
    with autograd_forbidden():
        compiled = run(shimnn.Parameter, shimnn.functional.mse_loss)
    assert isinstance(compiled[4], native.MseLoss)
    assert not isinstance(python[4], native.MseLoss)
    assert compiled[3]._node.name == python[3]._node.name == "MseLossBackward0"
    for i in range(3):
        assert_same(compiled[i], ref[i], f"tensor {i} vs torch")
        assert_same(compiled[i], python[i], f"tensor {i} vs the Python path")
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        compiled[3].backward(upstream)


# ---------------------------------------------------------------------------------------------
# Module calls: a fused Sequential's and MSELoss's whole call compiled (module_call)
# ---------------------------------------------------------------------------------------------

INPUTS = ["plain", "view", "column-major", "parameter", "tracked", "no_grad"]


def _module_call_run(nn: Any, kind: str, reduction: str, target_grad: bool,
                     dtype: torch.dtype) -> list[Any]:
    model = _build(nn, CHAINS["seed"], dtype)
    g = torch.Generator().manual_seed(4)
    data = torch.randn(12, 2, generator=g, dtype=dtype)
    y0 = torch.randn(6, 1, generator=g, dtype=dtype)
    x: Any = data[3:9] if kind == "view" else data[:6].clone()
    if kind == "column-major":
        x = x.t().contiguous().t()
    if kind == "parameter":
        x = x.requires_grad_(True) if nn is torch.nn else shimnn.Parameter(x)
    if kind == "tracked":  # the output of another module needing a gradient
        pre = nn.Linear(2, 2, dtype=dtype)
        x = pre(x)
    y = (y0.clone().requires_grad_(True) if nn is torch.nn else shimnn.Parameter(y0)
         ) if target_grad else y0
    criterion = nn.MSELoss(reduction=reduction)
    if kind == "no_grad":
        with torch.no_grad():
            out = model(x)
            loss = criterion(out, y)
        return [out, loss]
    out = model(x)
    loss = criterion(out, y)
    upstream = torch.randn(loss.shape, generator=g, dtype=dtype)
    loss.backward(upstream)
    grads = [p.grad for p in model.parameters()]
    if kind == "parameter":
        grads.append(x.grad)
    if kind == "tracked":
        grads += [pre.weight.grad, pre.bias.grad]
    if target_grad:
        grads.append(y.grad)
    return [out.detach(), loss.detach(), *grads]


@needs_native
@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_call_matches_python_path_and_torch(kind: str, reduction: str,
                                                   target_grad: bool, dtype: torch.dtype,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _module_call_run(torch.nn, kind, reduction, target_grad, dtype)
    with native_enabled(False):
        python = _module_call_run(shimnn, kind, reduction, target_grad, dtype)
    warm = _build(shimnn, CHAINS["seed"], dtype)
    warm(torch.randn(3, 2, dtype=dtype))  # its plan cached: later calls of a model are compiled
    with monkeypatch.context() as patch, autograd_forbidden():
        # taken: no forward runs in Python (the first call of each model plans in Python)
        calls: list[str] = []
        forward = shimnn.Sequential.forward
        patch.setattr(shimnn.Sequential, "forward", lambda self, i: calls.append("seq") or
                      forward(self, i))
        patch.setattr(shimnn.MSELoss, "forward", lambda *a: pytest.fail("MSELoss.forward ran"))
        compiled = _module_call_run(shimnn, kind, reduction, target_grad, dtype)
    assert calls == ["seq"]  # the model's first call only
    for i, (c, p, r) in enumerate(zip(compiled, python, ref)):
        assert_same(c, r, f"tensor {i} vs torch")
        assert_same(c, p, f"tensor {i} vs the Python path")
        assert type(c) is shimnn.TrackedTensor or type(c) is not torch.Tensor or i >= 2


@needs_native
def test_module_call_records_what_the_python_path_records() -> None:
    x, y = torch.randn(5, 2), torch.randn(5, 1)
    runs = []
    for compiled in (True, False):
        with native_enabled(compiled):
            model, criterion = _build(shimnn, CHAINS["seed"], torch.float32), shimnn.MSELoss()
            model(x)  # plans
            out = model(x)
            loss = criterion(out, y)
        runs.append((out, loss))
    (c_out, c_loss), (p_out, p_loss) = runs
    for c, p in ((c_out, p_out), (c_loss, p_loss)):
        assert type(c) is type(p) is shimnn.TrackedTensor
        assert c._node.name == p._node.name and c._node.takes_retain == p._node.takes_retain
        assert c._node.versions == p._node.versions and c.requires_grad and not c.is_leaf
        assert c.grad_fn is None and c._base is None and c._version == p._version
        assert [type(e) for e in c._node.inputs] == [type(e) for e in p._node.inputs]
    assert c_loss._node.inputs[0] is c_out._node
    assert isinstance(c_out._node.backward, native.Chain)
    assert isinstance(c_loss._node.backward, native.MseLoss)


@needs_native
@pytest.mark.parametrize("case", ["forward-hook", "pre-hook", "global-hook", "compiled",
                                  "children-changed", "subclass", "broadcast", "bad-shape",
                                  "bad-reduction"])
def test_module_call_leaves_to_python_what_torch_does_there(case: str) -> None:
    """Hooks, torch.compile's call, changed children, subclasses, broadcasting targets (a
    warning) and errors take the Python path, with torch's behaviour."""
    torch.manual_seed(0)
    model = _build(shimnn, CHAINS["seed"], torch.float32)
    ref = _build(torch.nn, CHAINS["seed"], torch.float32)
    criterion, ref_criterion = shimnn.MSELoss(), torch.nn.MSELoss()
    x, y = torch.randn(4, 2), torch.randn(4, 1)
    model(x)  # plans
    seen: list[str] = []
    handles: list[Any] = []
    if case == "forward-hook":
        for m in (model, ref):
            handles.append(m.register_forward_hook(lambda m, a, o: seen.append("hook") or o * 2))
    elif case == "pre-hook":
        for m in (criterion, ref_criterion):
            handles.append(m.register_forward_pre_hook(lambda m, a: seen.append("pre")))
    elif case == "global-hook":
        handles.append(torch.nn.modules.module.register_module_forward_hook(
            lambda m, a, o: seen.append(type(m).__name__)))
    elif case == "compiled":
        model._compiled_call_impl = lambda i: seen.append("compiled") or model._call_impl(i)
    elif case == "children-changed":
        torch.manual_seed(5)
        model[2] = shimnn.Linear(25, 25)
        torch.manual_seed(5)
        ref[2] = torch.nn.Linear(25, 25)
    elif case == "subclass":
        class Doubling(shimnn.Sequential):
            def forward(self, input: Any) -> Any:
                seen.append("subclass")
                return super().forward(input) * 2

        model = Doubling(*model)
        model(x)

        class RefDoubling(torch.nn.Sequential):
            def forward(self, input: Any) -> Any:
                return super().forward(input) * 2

        ref = RefDoubling(*ref)
    try:
        if case == "broadcast":
            with pytest.warns(UserWarning, match="target size") as shim_warnings:
                loss = criterion(model(x), y[:1])
            with pytest.warns(UserWarning, match="target size") as ref_warnings:
                ref_loss = ref_criterion(ref(x), y[:1])
            # each points at its MSELoss.forward, as torch's stack level does
            assert shim_warnings[0].filename.endswith("shimnn/modules/loss.py")
            assert ref_warnings[0].filename.endswith("torch/nn/modules/loss.py")
        elif case == "bad-shape":
            with pytest.raises(RuntimeError, match=r"Linear\(in_features=2.*shape \(4, 3\)"):
                model(torch.randn(4, 3))
            return
        elif case == "bad-reduction":
            criterion.reduction = "bogus"
            ref_criterion.reduction = "bogus"
            with pytest.raises(ValueError) as expected:
                ref_criterion(ref(x), y)
            with pytest.raises(ValueError) as got:
                criterion(model(x), y)
            assert str(got.value).endswith(str(expected.value))  # shimnn names the module first
            return
        else:
            loss = criterion(model(x), y)
            ref_loss = ref_criterion(ref(x), y)
    finally:
        for h in handles:
            h.remove()
    loss.backward()
    ref_loss.backward()
    assert_same(loss, ref_loss, case)
    for p, r in zip(model.parameters(), ref.parameters()):
        assert_same(p.grad, r.grad, case)
    expected = {"forward-hook": ["hook", "hook"], "pre-hook": ["pre", "pre"],
                "global-hook": ([type(m).__name__ for m in ref] + ["Sequential", "MSELoss"]) * 2,
                "compiled": ["compiled"], "subclass": ["subclass", "subclass"]}
    assert seen == expected.get(case, [])


# ---------------------------------------------------------------------------------------------
# The engine's helpers
# ---------------------------------------------------------------------------------------------


def _walk_graph(order: list[str], scalar: bool = False) -> dict[str, Any]:
    """A graph with every case the walk distinguishes: fan-in to a node and to a leaf, a
    gradient sent twice (add), a None gradient, a node with several outputs, hooks on a leaf,
    a post-accumulate hook, a leaf that stopped requiring grad, a user-held gradient, a view
    gradient, another dtype. Returns the leaves and what the backward functions produced.
    ``scalar``: the root is a 0-d loss (its implicit gradient, the compiled backward_root)."""
    leaves = {n: torch.zeros(2, requires_grad=True) for n in "abcdefg"}
    made: dict[str, Any] = {}

    def fresh(name: str, value: float) -> Any:
        def backward(g: torch.Tensor) -> Any:
            out = g * value
            made[name] = weakref.ref(out)
            return (out,)
        return backward

    a, b, c, d, e, f, g = leaves.values()
    n_a = _graph.Node("A", fresh("a", 2.0), (a,))
    n_twice = _graph.Node("Twice", lambda grad: (grad, grad), (b, c))  # torch's add: one tensor
    n_none = _graph.Node("NoneFor", lambda grad: (grad * 3, None), (d, e))
    multi = _graph.Node("Multi", lambda grads: (grads[0] + grads[1],), (f,))
    multi.outputs = 2
    n_view = _graph.Node("View", lambda grad: (grad.reshape(2),), (g,))
    d.register_hook(lambda grad: grad * 10)
    a.register_post_accumulate_grad_hook(lambda p: order.append("a"))
    c.register_post_accumulate_grad_hook(lambda p: order.append("c"))
    e.requires_grad_(False)  # after the forward: torch leaves its .grad alone
    top = _graph.Node("Top", lambda grad: (grad, grad, grad, grad, grad, grad.reshape(1, 2),
                                           a.new_ones(2, dtype=torch.float64)),
                      (n_a, n_twice, n_none, _graph.Output(multi, 0), _graph.Output(multi, 1),
                       n_view, a))
    if scalar:
        root = _graph.record(torch.zeros(()), "Root", lambda grad: (grad * torch.ones(2),),
                             (top,))
    else:
        root = _graph.record(torch.zeros(2), "Root", lambda grad: (grad,), (top,))
    return {"leaves": leaves, "made": made, "root": root}


@needs_native
def test_compiled_walk_is_the_python_walk() -> None:
    results = []
    for compiled in (True, False):
        previous = _native.set_enabled(compiled)
        try:
            order: list[str] = []
            graph = _walk_graph(order)
            graph["root"].backward(torch.full((2,), 0.5))
        finally:
            _native.set_enabled(previous)
        results.append((graph, order))
    (compiled, c_order), (python, p_order) = results
    assert c_order == p_order == ["c", "a"]  # accumulated as soon as their last gradient came
    for name in "abcdefg":
        c_grad, p_grad = compiled["leaves"][name].grad, python["leaves"][name].grad
        assert (c_grad is None) == (p_grad is None), name
        if c_grad is not None:
            assert_same(c_grad, p_grad, name)
    assert compiled["leaves"]["e"].grad is None  # no longer requires grad
    for graph in (compiled, python):
        assert graph["made"]["a"]() is None  # summed with another gradient: a new tensor
        b, c = graph["leaves"]["b"].grad, graph["leaves"]["c"].grad
        assert b.data_ptr() != c.data_ptr()  # one tensor sent twice: the first one is copied


@needs_native
@pytest.mark.parametrize("retain", [False, True])
def test_compiled_scalar_backward_is_the_python_walk(retain: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """loss.backward() of a 0-d loss runs entirely in C++ (backward_root): the same gradients,
    accumulation order and ownership as the Python walk."""
    results = []
    for compiled in (True, False):
        with native_enabled(compiled), monkeypatch.context() as patch:
            if compiled:  # taken: _engine._run (the Python entry) never runs
                patch.setattr(_engine, "_run", lambda *a, **k: pytest.fail("not compiled"))
            order: list[str] = []
            graph = _walk_graph(order, scalar=True)
            graph["root"].backward(retain_graph=retain)
            if retain:
                graph["root"].backward()
        results.append((graph, order))
    (compiled, c_order), (python, p_order) = results
    assert c_order == p_order and c_order[:2] == ["c", "a"]
    for name in "abcdefg":
        c_grad, p_grad = compiled["leaves"][name].grad, python["leaves"][name].grad
        assert (c_grad is None) == (p_grad is None), name
        if c_grad is not None:
            assert_same(c_grad, p_grad, name)
    for graph in (compiled, python):
        b, c = graph["leaves"]["b"].grad, graph["leaves"]["c"].grad
        assert b.data_ptr() != c.data_ptr()


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hooks", [False, True])
def test_compiled_loss_backward_matches_python_path_and_torch(dtype: torch.dtype,
                                                              hooks: bool) -> None:
    """A fused chain and an MSE loss, backward from the scalar loss over several steps (the
    seed recycled, .grad accumulated in place), with and without tensor hooks and retain_grad
    on the chain's output: compiled, Python and torch agree bit for bit, and gradients that
    nothing else holds are stored as they come."""

    def run(nn: Any) -> list[Any]:
        model = _build(nn, CHAINS["seed"], dtype)
        g = torch.Generator().manual_seed(3)
        x, y = torch.randn(9, 2, generator=g, dtype=dtype), torch.randn(9, 1, generator=g,
                                                                         dtype=dtype)
        seen: list[Any] = []
        for step in range(3):
            out = model(x)
            if hooks:
                out.register_hook(lambda grad: seen.append(grad.clone()) or grad * 2)
                out.retain_grad()
            loss = nn.MSELoss()(out, y)
            loss.backward()
            seen += [loss.detach(), out.grad if hooks else None]
            if step == 1:
                for p in model.parameters():
                    p.grad = None
        return seen + [p.grad for p in model.parameters()]

    ref = run(torch.nn)
    with native_enabled(False):
        python = run(shimnn)
    with autograd_forbidden():
        compiled = run(shimnn)
    for i, (c, p, r) in enumerate(zip(compiled, python, ref)):
        assert_same(c, r, f"tensor {i} vs torch")
        assert_same(c, p, f"tensor {i} vs the Python path")


# ---------------------------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------------------------

SGD_OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for m, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 1e-2],
                                              [False, True], [False, True])
    if not (n and (m == 0 or d != 0))
]


def _sgd_run(cls: Any, dtype: torch.dtype, options: dict[str, Any]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g, dtype=dtype).requires_grad_(True)
              for s in [(5, 3), (5,), (1, 5), ()]]
    opt = cls(params, lr=0.05, **options)
    for step in range(6):
        for i, p in enumerate(params):
            # a parameter without a gradient on some steps: skipped, its buffer kept
            p.grad = None if (step + i) % 4 == 3 else torch.randn(
                p.shape, generator=g, dtype=dtype)
        opt.step()
    bufs = [b for b in (opt.state[p].get("momentum_buffer") for p in params) if b is not None]
    versions = torch.tensor([t._version for t in params + bufs])  # torch's in-place counts
    return [p.detach() for p in params] + bufs + [versions]


@needs_native
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=lambda o: "-".join(
    f"{k}={v}" for k, v in o.items() if v) or "plain")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sgd_step_matches_python_path_and_torch(options: dict[str, Any], dtype: torch.dtype,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    compiled_step = native.optimizer_step  # a one-group step: sgd_step in one C++ call
    monkeypatch.setattr(native, "optimizer_step", lambda *a: calls.append(compiled_step(*a))
                        or calls[-1])
    ref = _sgd_run(torch.optim.SGD, dtype, options)
    with native_enabled(False):
        python = _sgd_run(shimnn.optim.SGD, dtype, options)
    assert calls == []
    compiled = _sgd_run(shimnn.optim.SGD, dtype, options)
    assert calls == [True] * 6  # every step took the compiled path
    assert len(compiled) == len(python) == len(ref)
    for i, (c, p, r) in enumerate(zip(compiled, python, ref)):
        assert_same(c, r, f"tensor {i} vs torch")
        assert_same(c, p, f"tensor {i} vs the Python path")


@needs_native
def test_sgd_step_declines_what_it_does_not_handle() -> None:
    state: dict[Any, Any] = {}
    mixed = [torch.ones(2, requires_grad=True), torch.ones(2, dtype=torch.float64,
                                                             requires_grad=True)]
    for p in mixed:
        p.grad = torch.ones_like(p)
    half = torch.ones(2, dtype=torch.float16, requires_grad=True)
    half.grad = torch.ones_like(half)
    sparse = torch.ones(3, requires_grad=True)
    sparse.grad = torch.ones(3).to_sparse()
    for params in (mixed, [half], [sparse]):
        before = [p.detach().clone() for p in params]
        assert native.sgd_step(params, state, 0.1, 0.9, 0.0, 0.0, False, False) is False
        for p, b in zip(params, before):
            assert torch.equal(p.detach(), b)
    assert state == {}
    # The optimizer then runs its Python path, which handles them as torch does.
    ref = [p.detach().clone().requires_grad_(True) for p in mixed]
    for r, p in zip(ref, mixed):
        r.grad = p.grad.clone()
    shimnn.optim.SGD(mixed, lr=0.1, momentum=0.9).step()
    torch.optim.SGD(ref, lr=0.1, momentum=0.9).step()
    for p, r in zip(mixed, ref):
        assert_same(p.detach(), r.detach())


# ---------------------------------------------------------------------------------------------
# The optimizers' fused element loops (csrc/fused.h)
# ---------------------------------------------------------------------------------------------

needs_fused = pytest.mark.skipif(native is None or not native.fused_hardware(),
                                 reason="no hardware fused multiply-add: the kernels run")


def _optimizer_pair(name: str, dtype: torch.dtype, params: list[torch.Tensor],
                    **options: Any) -> tuple[list[list[torch.Tensor]], list[Any]]:
    """The same parameters for torch.optim's and shimnn.optim's ``name``, and both optimizers."""
    twins = [[p.detach().clone().to(dtype).requires_grad_(True) for p in params]
             for _ in range(2)]
    opts = [getattr(optim, name)(ps, **options) for optim, ps in
            zip((torch.optim, shimnn.optim), twins)]
    return twins, opts


def _step_twins(twins: list[list[torch.Tensor]], opts: list[Any], steps: int,
                grads: Any = None, versions: bool = True) -> None:
    """``steps`` steps of both with the same random gradients (``grads(params, step)`` sets
    them when given); bit-identical parameters and state after each, and the same versions
    (when ``versions``)."""
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        news = [torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3 for p in twins[0]]
        for ps in twins:
            if grads is not None:
                grads(ps, [n.clone() for n in news])
            else:
                for p, n in zip(ps, news):
                    p.grad = n.clone()
        opts[0].step()
        with autograd_forbidden():
            opts[1].step()
        for i, (r, c) in enumerate(zip(*twins)):
            assert_same(c.detach(), r.detach(), f"param {i} after step {step}")
            assert not versions or c._version == r._version, f"param {i}'s version, step {step}"
            for key, value in opts[0].state[r].items():
                if isinstance(value, torch.Tensor):
                    assert_same(opts[1].state[c][key], value, f"state[{i}][{key!r}]")
                    assert not versions or opts[1].state[c][key]._version == value._version


OPTIMIZER_CASES = [
    ("SGD", dict(lr=0.0731, momentum=0.9)),
    ("SGD", dict(lr=0.0731, momentum=0.8317, dampening=0.2913, weight_decay=0.0173)),
    ("SGD", dict(lr=0.0731, momentum=0.9, nesterov=True, maximize=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.0731)),
    ("Adam", dict(lr=3e-4)),
    ("Adam", dict(lr=0.0131, betas=(0.3, 0.97), eps=1.3e-3, weight_decay=0.02, maximize=True)),
    ("Adam", dict(lr=0.0131, weight_decay=0.02, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.0131)),
]


@needs_fused
@pytest.mark.parametrize("name,options", OPTIMIZER_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZER_CASES)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_loops_are_verified_used_and_torchs(name: str, options: dict[str, Any],
                                                  dtype: torch.dtype) -> None:
    """Each configuration's loop is verified against the kernels once, then used: the
    parameters, state and versions are torch.optim's after every step."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g) for s in [(7, 5), (7,), (3, 37), (1,), ()]]
    twins, opts = _optimizer_pair(name, dtype, params, **options)
    _step_twins(twins, opts, steps=6)
    family = f"{'sgd' if name == 'SGD' else 'adam'} {str(dtype).split('.')[1]}"
    checks = [ok for f, _, ok in native.fused_checks() if f == family]
    assert checks and all(checks), f"{family}: {native.fused_checks()}"


@needs_fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chain_loops_on_edge_values_are_torchs(dtype: torch.dtype) -> None:
    """The chain's element loops (ReLU in place, its backward, Tanh's backward, MSE's) on
    signed zeros, subnormals, infinities and NaNs: torch's bits, outputs and gradients, and the
    loops were the ones used."""
    tiny = torch.finfo(dtype).tiny / 4  # subnormal
    x = torch.tensor([[0.0, -0.0, 1.0], [tiny, -tiny, 2.0], [float("inf"), 1.0, -1.0],
                      [float("nan"), 3.0, 0.5], [1e30, -1e30, 0.25]], dtype=dtype)
    target = torch.tensor([[0.0, -0.0], [1.0, float("nan")], [2.0, 3.0], [-1.0, 0.0],
                           [0.0, 1e30]], dtype=dtype)
    results = []
    for nn in (torch.nn, shimnn):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4, dtype=dtype), nn.ReLU(), nn.Linear(4, 4, dtype=dtype),
                              nn.Tanh(), nn.Linear(4, 2, dtype=dtype), nn.ReLU())
        with torch.no_grad():  # an identity-like first layer: the edge values reach the ReLU
            model[0].weight.copy_(torch.eye(4, 3, dtype=dtype))
            model[0].bias.copy_(torch.tensor([-0.0, 0.0, -0.0, 0.0], dtype=dtype))
        out = model(x)
        loss = nn.MSELoss()(out, target)
        with autograd_forbidden() if nn is shimnn else contextlib.nullcontext():
            loss.backward()
        results.append([out.detach(), loss.detach()] + [p.grad for p in model.parameters()])
    for i, (c, r) in enumerate(zip(*results)):
        assert_same(c, r, f"tensor {i}")
    used = {f for f, _, ok in native.fused_checks() if ok}
    name = str(dtype).split(".")[1]
    assert {f"relu {name}", f"threshold_backward {name}", f"mse_loss_backward {name}"} <= used
    assert f"tanh_backward fused {name}" in used or f"tanh_backward {name}" in used


_TWO_THREADS = r"""
import threading, torch, shimnn
from shimnn import _native
assert _native.get() is not None

def build(nn, seed):  # in the main thread: torch's generator is global
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2), nn.Tanh())

def run(nn, model, seed, out):
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(seed))
    for _ in range(5):
        model.zero_grad()
        nn.MSELoss()(model(x), torch.zeros(64, 2)).backward()
    out[seed] = [p.grad.clone() for p in model.parameters()]

ours, ref = {}, {}
models = {s: build(shimnn, s) for s in (1, 2)}
threads = [threading.Thread(target=run, args=(shimnn, models[s], s, ours)) for s in (1, 2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for s in (1, 2):
    run(torch.nn, build(torch.nn, s), s, ref)
    assert all(torch.equal(a, b) for a, b in zip(ours[s], ref[s])), s
names = [f for f, _, ok in _native.get().fused_checks() if ok]
assert len(names) == len(set(names)) and "threshold_backward float32" in names, names
print("ok")
"""


@needs_fused
def test_chain_loops_first_verified_from_two_threads() -> None:
    """A fresh process whose first backward passes run in two threads at once (a chain's
    backward runs its loops without the GIL): each loop is verified once, and both models get
    torch's gradients."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _TWO_THREADS], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "SHIMNN_NATIVE": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


@needs_fused
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_fused_loops_on_random_configurations_are_torchs(data: st.DataObject) -> None:
    """Random sizes (across vector tails and ATen's grain size), dtypes and hyper-parameters:
    SGD and Adam/AdamW through the fused loops give torch.optim's parameters and state."""
    name = data.draw(st.sampled_from(["SGD", "Adam", "AdamW"]))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    sizes = data.draw(st.lists(st.integers(1, 40000), min_size=1, max_size=3))
    lr = data.draw(st.floats(1e-4, 0.5))
    if name == "SGD":
        momentum = data.draw(st.sampled_from([0.0, 0.5, 0.9, 0.37]))
        nesterov = momentum > 0 and data.draw(st.booleans())
        options: dict[str, Any] = dict(
            lr=lr, momentum=momentum, nesterov=nesterov,
            dampening=0.0 if nesterov else data.draw(st.sampled_from([0.0, 0.1, 0.63])),
            weight_decay=data.draw(st.sampled_from([0.0, 1e-4, 0.031])),
            maximize=data.draw(st.booleans()))
    else:
        options = dict(lr=lr, betas=(data.draw(st.floats(0.0, 0.99)),
                                     data.draw(st.floats(0.5, 0.9999))),
                       eps=data.draw(st.sampled_from([1e-8, 1e-6, 3.3e-3])),
                       weight_decay=data.draw(st.sampled_from([0.0, 0.01, 0.27])),
                       maximize=data.draw(st.booleans()))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    params = [torch.randn(n, generator=g) for n in sizes]
    twins, opts = _optimizer_pair(name, dtype, params, **options)
    _step_twins(twins, opts, steps=3)


@needs_fused
def test_fused_verification_rejects_a_loop_one_rounding_off() -> None:
    """The verification has the power to tell: a loop that rounds the update's product before
    adding it (where torch's kernels fuse the two) fails it, for SGD and Adam, float32 and
    float64."""
    assert native.verification_rejects_unfused()


@needs_native
def test_one_call_step_leaves_a_subclass_update_and_a_dispatch_mode_their_way() -> None:
    """A subclass's own _step_group runs (the one-call step is for shimnn's update only), and
    under a TorchDispatchMode the step's ATen kernels reach the mode, as torch's do."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class Logging(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    class Mine(shimnn.optim.SGD):
        def _step_group(self, group: dict[str, Any]) -> None:
            seen.append("mine")
            super()._step_group(group)

    twins, opts = _optimizer_pair("SGD", torch.float32, [torch.randn(4, 3)], lr=0.0731,
                                  momentum=0.9)
    _step_twins(twins, opts, steps=1)  # the buffers exist: the next steps update them
    opts[1] = Mine(twins[1], lr=0.0731, momentum=0.9)
    opts[1].load_state_dict(copy.deepcopy(opts[0].state_dict()))  # (a load shares tensors)
    _step_twins(twins, opts, steps=1, versions=False)  # (the copied buffer's count restarts)
    assert seen == ["mine"]
    seen.clear()
    twins[1][0].grad = twins[0][0].grad = torch.ones(4, 3)
    opts[0].step()
    with Logging():
        opts[1].step()
    assert "aten.add_.Tensor" in seen or "aten._foreach_add_.List" in seen, seen
    assert_same(twins[1][0].detach(), twins[0][0].detach())


def _transposed(ps: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    for p, g in zip(ps, grads):
        p.grad = g.t().contiguous().t() if g.dim() == 2 else g  # strides unlike the loops'


def _one_storage(ps: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])  # every gradient a view of one tensor
    start = 0
    for p, g in zip(ps, grads):
        p.grad = flat[start:start + g.numel()].view(g.shape)
        start += g.numel()


@needs_fused
@pytest.mark.parametrize("name,options", [("SGD", dict(lr=0.0731, momentum=0.9)),
                                          ("Adam", dict(lr=0.0131))])
@pytest.mark.parametrize("case", ["transposed", "one-storage", "transposed-param", "large"])
def test_fused_loops_leave_other_layouts_to_the_kernels(name: str, options: dict[str, Any],
                                                        case: str) -> None:
    """Non-contiguous gradients or parameters, and gradients sharing a storage, run torch's
    kernels; a parameter above ATen's grain size, with two threads, is split as they split it."""
    g = torch.Generator().manual_seed(0)
    shapes = [(70000,), (3,)] if case == "large" else [(6, 4), (4,), (3, 5)]
    params = [torch.randn(s, generator=g) for s in shapes]
    if case == "transposed-param":
        params = [p.t().contiguous().t() if p.dim() == 2 else p for p in params]
    twins, opts = _optimizer_pair(name, torch.float32, params, **options)
    if case == "transposed-param":
        assert not twins[1][0].is_contiguous()  # the clones kept the transposed strides
    grads = {"transposed": _transposed, "one-storage": _one_storage}.get(case)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if case == "large" else threads)
    try:
        _step_twins(twins, opts, steps=4, grads=grads)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_disabled_means_python_paths() -> None:
    with native_enabled(False):
        assert _native.get() is None
        assert "disabled" in _native.status()
        out = _build(shimnn, CHAINS["seed"], torch.float32)(torch.randn(3, 2))
        assert type(out._node.backward).__module__ != "shimnn_native"
        loss = shimnn.functional.mse_loss(shimnn.Parameter(torch.ones(2)), torch.zeros(2))
        assert type(loss._node.backward).__module__ != "shimnn_native"


def test_build_failure_falls_back_with_a_reason(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """A build that fails: the first use starts it in the background and runs the Python
    paths; once it has failed, the status says why (and how to retry); SHIMNN_NATIVE=1 makes
    it an error."""
    import time

    monkeypatch.setattr(_native, "_SOURCE", tmp_path / "broken.cpp")
    (tmp_path / "broken.cpp").write_text("this is not C++\n")
    monkeypatch.setattr(_native, "_module", None)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "_enabled", True)
    monkeypatch.setattr(_native, "_building", None)
    monkeypatch.setenv("SHIMNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SHIMNN_NATIVE", raising=False)
    assert _native.get() is None
    assert "being built in the background" in _native.status()
    deadline = time.monotonic() + 300
    while "being built" in _native.status():
        assert time.monotonic() < deadline, "the background build did not finish"
        monkeypatch.setattr(_native, "_next_poll", 0.0)
        time.sleep(0.5)
    assert _native.status().startswith("native fast paths: unavailable (build failed: ")
    assert "`shimnn native` retries" in _native.status()
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setenv("SHIMNN_NATIVE", "1")
    with pytest.raises(RuntimeError, match="SHIMNN_NATIVE=1, but the native fast paths are "
                       "unavailable"):
        _native.get()


@pytest.mark.parametrize("where", ["forward", "forward_pre", "inplace-first", "global"])
def test_chain_with_hooks_or_inplace_first_runs_layer_by_layer_like_torch(where: str) -> None:
    """What makes a chain unfusable (checked in C++ when compiled, in Python otherwise) leaves
    every layer to run as a module: hooks are called, and the numbers are torch's."""
    calls: list[str] = []

    def build(nn: Any) -> Any:
        torch.manual_seed(0)
        first = [nn.ReLU(inplace=True)] if where == "inplace-first" else []
        model = nn.Sequential(*first, nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        if where == "forward":
            model[1].register_forward_hook(lambda m, args, out: calls.append("f") or out * 2)
        elif where == "forward_pre":
            model[0].register_forward_pre_hook(lambda m, args: calls.append("p") or (
                args[0] + 1,))
        return model

    results = []
    for nn in (torch.nn, shimnn):
        model = build(nn)
        x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
        x = x.requires_grad_(True) if nn is torch.nn else shimnn.Parameter(x)
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, args, out: calls.append("g")) if where == "global" else None
        try:
            inp = x * 1 if where == "inplace-first" else x  # a non-leaf the ReLU overwrites
            out = model(inp)
        finally:
            if handle is not None:
                handle.remove()
        out.backward(torch.ones(out.shape))
        results.append([out.detach(), x.grad, *[p.grad for p in model.parameters()]])
        if nn is shimnn and native is not None:
            assert not isinstance(out._node.backward, native.Chain)
    if where != "inplace-first":  # the hooks ran, as often for both frameworks
        assert len(calls) >= 2 and len(calls) % 2 == 0
    for i, (s, r) in enumerate(zip(results[1], results[0])):
        assert_same(s, r, f"tensor {i}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sgd_momentum_changed_between_steps_like_torch(dtype: torch.dtype) -> None:
    """The compiled step keeps the last momentum as a tensor: a new value must replace it."""
    results = []
    for cls in (torch.optim.SGD, shimnn.optim.SGD):
        g = torch.Generator().manual_seed(0)
        params = [torch.randn(4, 3, generator=g, dtype=dtype).requires_grad_(True)]
        opt = cls(params, lr=0.1, momentum=0.9)
        for momentum in [0.9, 0.9, 0.5, 0.5, 0.99, 0.9]:
            opt.param_groups[0]["momentum"] = momentum
            params[0].grad = torch.randn(4, 3, generator=g, dtype=dtype)
            opt.step()
        results.append(params[0].detach())
    assert_same(results[1], results[0])


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("SHIMNN_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _native.cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("SHIMNN_CACHE")
    assert _native.cache_root() == tmp_path / "xdg" / "shimnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _native.cache_root() == Path.home() / ".cache" / "shimnn"


ADAM_OPTIONS = [
    dict(cls=c, amsgrad=a, maximize=m, weight_decay=wd)
    for c, a, m, wd in itertools.product(["Adam", "AdamW"], [False, True], [False, True],
                                         [0.0, 0.05])
]


def _adam_run(optim: Any, dtype: torch.dtype, options: dict[str, Any]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g, dtype=dtype).requires_grad_(True)
              for s in [(5, 3), (5,), (1, 5), ()]]
    kwargs = {k: v for k, v in options.items() if k != "cls"}
    opt = getattr(optim, options["cls"])(params, lr=0.01, betas=(0.8, 0.95), eps=1e-6, **kwargs)
    for step in range(8):
        for i, p in enumerate(params):
            p.grad = None if (step + i) % 5 == 4 else torch.randn(
                p.shape, generator=g, dtype=dtype)
        opt.step()
    state = [t for p in params for t in opt.state[p].values()]
    versions = torch.tensor([t._version for t in params + state])  # torch's in-place counts
    return [p.detach() for p in params] + state + [versions]


@needs_native
@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=lambda o: "-".join(
    f"{k}={v}" for k, v in o.items() if v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_step_matches_python_path_and_torch(options: dict[str, Any], dtype: torch.dtype,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    compiled_step = native.optimizer_step  # a one-group step: adam_step in one C++ call
    monkeypatch.setattr(native, "optimizer_step", lambda *a: calls.append(compiled_step(*a))
                        or calls[-1])
    ref = _adam_run(torch.optim, dtype, options)
    with native_enabled(False):
        python = _adam_run(shimnn.optim, dtype, options)
    assert calls == []
    compiled = _adam_run(shimnn.optim, dtype, options)
    # The first step creates the state in Python; a parameter first seen later (its gradient
    # skipped at step 0) sends that step to Python too; every other step is compiled.
    assert calls[0] is False and calls.count(True) >= 6
    assert len(compiled) == len(python) == len(ref)
    for i, (c, p, r) in enumerate(zip(compiled, python, ref)):
        assert_same(c, r, f"tensor {i} vs torch")
        assert_same(c, p, f"tensor {i} vs the Python path")
