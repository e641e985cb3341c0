"""Chain fusion: a ``Sequential`` of plain shimnn layers recorded as one node.

The same kernels in the same order as the layers' own forward/backward pairs, with one record
per layer instead of a module call, a tracked tensor and a node each: what an autograd-free
small network saves time on. Each layer type says how it runs fused in :data:`CHAIN_STEPS`
(registered beside the layer). ``chain_forward`` in ``shimnn/csrc/native.cpp`` is the matrix
fast path of :func:`_run_mlp` in C++.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.modules import module as _torch_module

from . import _native
from ._graph import (
    Edge,
    Node,
    TrackedTensor,
    edge,
    is_grad_enabled,
    no_dispatch,
    record,
    refuse_recording_modes,
    refuse_transforms,
    set_grad_enabled,
    wrap,
)
from .modules.module import _CONTEXT_ERRORS, _add_context
from .ops.activation import _tanh_backward, _threshold_backward
from .ops.linear import (
    _check_real,
    _is_column_major,
    _linear,
    _weight_is_row_major,
    linear_rows_backward,
)

__all__ = ["CHAIN_STEPS", "LINEAR", "RELU", "TANH", "run"]


def run(seq: torch.nn.Sequential, input: Any) -> Any:
    """``seq(input)`` as one fused node, or ``NotImplemented`` where the layers must run one
    by one (``Sequential.forward`` then runs them)."""
    if is_grad_enabled():
        refuse_recording_modes()
    else:
        refuse_transforms()
    plan = _chain_plan(seq, input)
    if plan is None:
        return NotImplemented
    layers, kinds = plan
    if kinds is not None:
        native = _native.get()
        if native is not None:
            result = _native_chain(native, layers, kinds, input)
            if result is not None:
                return result if result is not _UNFUSABLE else NotImplemented
    if not _layers_fusable(layers):
        return NotImplemented
    return _run_chain(layers, input, kinds)


Plan = tuple[tuple[Any, ...], "tuple[int, ...] | None"]
"""The children, and their kinds when every one has a matrix fast path."""


def _chain_plan(seq: torch.nn.Sequential, input: Any) -> Plan | None:
    """The children and, if all have a matrix fast path, their kinds; ``None`` unless all of
    them are plain shimnn layers (exact types: a subclass may override forward), with no
    global hook and no tracing. :func:`_layers_fusable` then checks the layers themselves."""
    if (_torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks
            or _torch_module._global_backward_hooks or _torch_module._global_backward_pre_hooks
            or not isinstance(input, Tensor) or torch._C._get_tracing_state() is not None):
        return None
    layers = tuple(seq._modules.values())
    cache = seq.__dict__.get("_shim_chain_types")
    if cache is None or cache[0] != layers:  # identity comparison of the children
        ok = bool(layers) and all(type(m) in CHAIN_STEPS for m in layers)
        kinds = tuple(CHAIN_STEPS[type(m)].kind for m in layers) if ok else ()
        matrix = kinds if ok and None not in kinds else None
        cache = seq.__dict__["_shim_chain_types"] = (layers, ok, matrix)
    if not cache[1]:
        return None
    return layers, cache[2]


def _layers_fusable(layers: tuple[Any, ...]) -> bool:
    """No hook on any layer, in-place layers only right after a Linear (so never first: that
    would have to rewrite the caller's tensor's node). ``chain_forward`` in
    ``shimnn/csrc/native.cpp`` makes the same test."""
    previous = None
    for m in layers:
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return False
        # An in-place layer is fused only right after a Linear, whose fresh output nobody saved:
        # after a layer that saved its output torch's backward must raise, and the unfused path
        # (version-checked node by node) does.
        if vars(m).get("inplace", False) and (
                previous is None or CHAIN_STEPS[type(previous)].kind != LINEAR):
            return False
        previous = m
    return True


_UNFUSABLE = object()


def _native_chain(native: Any, layers: tuple[Any, ...], kinds: tuple[int, ...], input: Tensor
                  ) -> Any:
    """``_run_mlp`` (and, under ``no_grad``, the plain loop of ``_run_chain``) in C++
    (``chain_forward``), for a matrix input: the output, ``_UNFUSABLE`` (see
    :func:`_layers_fusable`), or ``None`` where the Python path must run (it also raises the
    errors, naming the layer)."""
    with no_dispatch():
        if input.dim() != 2:
            return None
        grad_mode = is_grad_enabled()
        e_input = edge(input) if grad_mode else None
        try:
            result = native.chain_forward(layers, kinds, input, e_input, grad_mode)
        except Exception:
            return None
    if result is None or result is False:
        return _UNFUSABLE if result is False else None
    out, backward, inputs, saved, versions, name = result
    if backward is None:
        return wrap(out)
    tracked = record(out, name, backward, inputs, saved, versions)
    tracked._node.takes_retain = True  # type: ignore[union-attr]
    return tracked


ChainStep = Any
CHAIN_STEPS: dict[type, ChainStep] = {}
"""Layer type -> ``step(layer, input, need_input)`` returning ``(output, backward, saved,
node name, parameter edges)``, or ``plain(layer, input)`` under ``no_grad`` (see the layers)."""


def _run_chain(layers: tuple[Any, ...], input: Tensor, kinds: tuple[int, ...] | None) -> Tensor:
    with no_dispatch():
        if not is_grad_enabled():
            h = input
            try:
                for m in layers:
                    layer_input = h
                    h = CHAIN_STEPS[type(m)].plain(m, h)
            except _CONTEXT_ERRORS as error:
                _add_context(error, m, (layer_input,))  # name the layer
                raise
            return h if type(h) is TrackedTensor else wrap(h)
        e_input = edge(input)
        if kinds is not None and input.dim() == 2:
            return _run_mlp(layers, input, e_input)
        upstream = e_input is not None  # does anything before this layer need a gradient?
        steps: list[tuple[Any, int]] = []
        param_edges: list[tuple[Edge, ...]] = []
        saved: list[Tensor] = []
        versions: list[int] = []
        name = ""
        h = input
        set_grad_enabled(False)
        try:
            for m in layers:
                layer_input = h
                h, backward, layer_saved, name, edges = CHAIN_STEPS[type(m)].step(m, h, upstream)
                if upstream or not all(e is None for e in edges):
                    steps.append((backward, len(edges)))
                    param_edges.append(edges)
                    saved += layer_saved
                    versions += [t._version for t in layer_saved]
                    upstream = True
        except _CONTEXT_ERRORS as error:
            _add_context(error, m, (layer_input,))  # name the layer, not just the Sequential
            raise
        finally:
            set_grad_enabled(True)
        if not steps:
            return wrap(h)
        # Newest layer first: the order torch's engine sums gradients of a shared parameter in.
        inputs = (e_input, *[e for edges in reversed(param_edges) for e in edges])
        out = Tensor._make_subclass(TrackedTensor, h)

        def backward(grad: Tensor, retain_graph: bool) -> list[Tensor | None]:
            grads: list[Tensor | None] = []
            g: Tensor | None = grad
            del grad  # g alone holds it: freed once the last layer has used it
            for i in range(len(steps) - 1, -1, -1):
                layer_backward, n = steps[i]
                if not retain_graph:
                    steps[i] = (None, n)  # free this layer's saved tensors now, as torch does
                if g is None:
                    grads.extend([None] * n)
                    continue
                result = layer_backward(g)
                g = result[0]
                grads.extend(result[1:])
            grads.insert(0, g if e_input is not None else None)
            return grads

        node = Node(name, backward, inputs, tuple(saved), tuple(versions))
        node.takes_retain = True
        out._node = node
        return out


LINEAR, RELU, TANH = range(3)
"""Layer kinds the matrix fast path knows (``CHAIN_STEPS[type].kind``)."""


def _run_mlp(layers: tuple[Any, ...], input: Tensor, e_input: Edge) -> Tensor:
    """The chain for a matrix input through Linear and element-wise layers: the same kernels
    and formulas as the layers' own (``ops.linear.linear_rows_backward``, ``relu_forward``,
    ``tanh_forward``), in one loop, with one record per layer instead of a closure."""
    h = input
    upstream = e_input is not None
    records: list[tuple[Any, ...]] = []
    param_edges: list[Edge] = []
    saved: list[Tensor] = []
    versions: list[int] = []  # at save time: a later in-place layer may modify a saved tensor
    name = ""
    set_grad_enabled(False)
    try:
        for m in layers:
            layer_input = h
            kind = CHAIN_STEPS[type(m)].kind
            if kind == LINEAR:
                params = m._parameters
                weight, bias = params["weight"], params["bias"]
                e_weight, e_bias = edge(weight), edge(bias)
                rows = h
                h = _linear(rows, weight, bias)
                name = "MmBackward0" if bias is None else "AddmmBackward0"
                if upstream or e_weight is not None or e_bias is not None:
                    need_weight = e_weight is not None
                    records.append((LINEAR, rows, weight, upstream, need_weight,
                                    e_bias is not None, upstream and _is_column_major(rows),
                                    need_weight and _weight_is_row_major(weight)))
                    param_edges.append(e_weight)
                    param_edges.append(e_bias)
                    if need_weight:
                        saved.append(rows)
                        versions.append(rows._version)
                    if upstream:
                        saved.append(weight)
                        versions.append(weight._version)
                    upstream = True
            elif kind == TANH:
                h = torch.tanh(h)
                name = "TanhBackward0"
                if upstream:
                    records.append((TANH, h))
                    saved.append(h)
                    versions.append(h._version)
            else:  # ReLU: torch.relu_ overwrites the previous layer's fresh output
                inplace = m.inplace
                h = torch.relu_(h) if inplace else torch.relu(h)
                name = "ReluBackward1" if inplace else "ReluBackward0"
                if upstream:
                    records.append((RELU, h))
                    saved.append(h)
                    versions.append(h._version)
    except _CONTEXT_ERRORS as error:
        _add_context(error, m, (layer_input,))  # name the layer, not just the Sequential
        raise
    finally:
        set_grad_enabled(True)
    if not records:
        return wrap(h)
    if h.is_complex():
        _check_real("Sequential", h)
    out = Tensor._make_subclass(TrackedTensor, h)
    param_edges.append(e_input)
    # Input first, then the newest layer first, its bias before its weight: the order torch's
    # engine hands the parameters their gradients in (ops.linear.linear).
    param_edges.reverse()

    def backward(grad: Tensor, retain_graph: bool) -> list[Tensor | None]:
        grads: list[Tensor | None] = []
        g: Tensor | None = grad
        del grad  # g alone holds it: freed once the last layer has used it
        for i in range(len(records) - 1, -1, -1):
            r = records[i]
            if not retain_graph:
                records[i] = ()  # free this layer's saved tensors now, as torch does
            kind = r[0]
            if kind == LINEAR:
                g, grad_weight, grad_bias = linear_rows_backward(g, *r[1:])  # type: ignore[arg-type]
                grads.append(grad_bias)
                grads.append(grad_weight)
            elif kind == RELU:
                g = _threshold_backward(g, r[1], 0)
            else:
                g = _tanh_backward(g, r[1])
        grads.insert(0, g)
        return grads

    node = Node(name, backward, tuple(param_edges), tuple(saved), tuple(versions))
    node.takes_retain = True
    out._node = node
    return out
