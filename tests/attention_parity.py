"""Parity helpers for attention and transformer modules: keyword arguments, tuple outputs
(``(output, weights)``, ``None`` entries), dropout (torch's global generator reseeded before each
side's forward and compared after), inputs that are the same tensor object (self-attention)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

import shimnn
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from parity import random_like


def _leaves(args: Sequence[Any], as_parameter: bool, requires_grad: bool) -> list[Any]:
    """Copies of the tensor arguments (floating ones as leaves that require grad); an argument
    repeated (the same object) stays one object."""
    copies: dict[int, Any] = {}
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            if id(a) not in copies:
                c = a.detach().clone()
                if requires_grad and c.dtype.is_floating_point:
                    c = shimnn.Parameter(c) if as_parameter else c.requires_grad_()
                copies[id(a)] = c
            out.append(copies[id(a)])
        else:
            out.append(a)
    return out


def _outputs(result: Any) -> list[torch.Tensor | None]:
    return list(result) if isinstance(result, tuple) else [result]


def _run(call: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], shim: bool,
         seed: int, grad: bool, no_grad: bool) -> tuple[list[Any], list[Any]]:
    torch.manual_seed(seed)
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        if shim:
            with autograd_forbidden():
                outs = _outputs(call(*args, **kwargs))
                assert_no_autograd_graph(*outs)
        else:
            outs = _outputs(call(*args, **kwargs))
    state = torch.random.get_rng_state()
    roots, grads = [], []
    for k, o in enumerate(outs):
        if isinstance(o, torch.Tensor) and o.requires_grad:
            roots.append(o)
            grads.append(random_like(o, 100 + k))
    if grad and roots:
        if shim:
            with autograd_forbidden(engine_only=True):
                torch.autograd.backward(roots, grads)
        else:
            torch.autograd.backward(roots, grads)
    return outs, [state]


def check_call(ref: Callable[..., Any], shim: Callable[..., Any], args: Sequence[Any],
               kwargs: dict[str, Any] | None = None, *, ref_module: Any = None,
               shim_module: Any = None, requires_grad: bool = True, grad: bool = True,
               seed: int = 7, strides: bool = True, no_grad: bool = False) -> None:
    """``ref(*args, **kwargs)`` under torch and ``shim(...)`` under shimnn on copies of the
    same tensors: outputs (values, strides, requires_grad), the generator state afterwards,
    input gradients and (given the modules) parameter gradients, bit for bit. ``no_grad``:
    the calls run under ``torch.no_grad()``.

    A module gets plain leaves (as a model gets data); a function gets ``shimnn.Parameter``
    leaves, so the torch functions it calls reach shimnn's ops."""
    kwargs = kwargs or {}
    ref_args = _leaves(args, False, requires_grad)
    shim_args = _leaves(args, shim_module is None, requires_grad)
    ref_out, ref_state = _run(ref, ref_args, kwargs, False, seed, grad, no_grad)
    shim_out, shim_state = _run(shim, shim_args, kwargs, True, seed, grad, no_grad)
    assert torch.equal(ref_state[0], shim_state[0]), "random numbers drawn differ"
    assert len(ref_out) == len(shim_out)
    for i, (a, b) in enumerate(zip(shim_out, ref_out)):
        if b is None or not isinstance(b, torch.Tensor):
            assert a is b or a == b, f"output {i}: {a!r} vs {b!r}"
            continue
        assert_same(a, b, f"output {i}")
        assert a.requires_grad == b.requires_grad, f"output {i} requires_grad"
        if strides:
            with torch._C.DisableTorchFunctionSubclass():
                assert a.stride() == b.stride(), f"output {i} strides {a.stride()} vs {b.stride()}"
    for i, (a, b) in enumerate(zip(shim_args, ref_args)):
        if isinstance(b, torch.Tensor):
            assert_same(a.grad, b.grad, f"grad of input {i}")
    if ref_module is not None:
        shim_params = dict(shim_module.named_parameters())
        for name, p in ref_module.named_parameters():
            assert_same(shim_params[name].grad, p.grad, f"grad of {name}")


def check_module_call(make: Callable[[Any], torch.nn.Module], args: Sequence[Any],
                      kwargs: dict[str, Any] | None = None, *, dtype: torch.dtype = torch.float32,
                      training: bool = True, **options: Any) -> tuple[Any, Any]:
    """The module ``make(nn)`` under torch.nn and shimnn from the same seed (same initial
    state dict), in ``dtype``, in training or eval mode, through :func:`check_call`."""
    torch.manual_seed(0)
    ref = make(torch.nn).to(dtype).train(training)
    torch.manual_seed(0)
    shim = make(shimnn).to(dtype).train(training)
    ref_state, shim_state = ref.state_dict(), shim.state_dict()
    assert list(ref_state) == list(shim_state)
    for k in ref_state:
        assert_same(shim_state[k], ref_state[k], f"initial {k}")
    cast = [a.to(dtype) if isinstance(a, torch.Tensor) and a.dtype.is_floating_point else a
            for a in args]
    check_call(ref, shim, cast, kwargs, ref_module=ref, shim_module=shim, **options)
    return ref, shim


def module_db_samples(cls: type, dtype: torch.dtype, training: bool) -> list[Any]:
    """torch's own ``module_db`` samples for ``cls``."""
    import pytest

    common_modules = pytest.importorskip("torch.testing._internal.common_modules")
    info = next(m for m in common_modules.module_db if m.module_cls is cls)
    return list(info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                        training=training))
