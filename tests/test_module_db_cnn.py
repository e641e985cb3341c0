"""torch's own module test database (``common_modules.module_db``) for the convolution,
pooling, normalization, padding, upsampling and dropout classes: every sample, float32 and
float64, training and eval where they differ, bit-identical outputs, input and parameter
gradients (random upstream gradient) and buffers (running statistics) after the call."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import shimnn
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from parity import random_like
from shimnn._engine import backward as shim_backward

common_modules = pytest.importorskip("torch.testing._internal.common_modules")

CLASSES = {
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
    "AvgPool1d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "CircularPad1d",
    "CircularPad2d", "CircularPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "GroupNorm", "InstanceNorm1d",
    "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "MaxPool1d", "MaxPool2d", "RMSNorm",
    "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d",
    "ReplicationPad2d", "ReplicationPad3d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d",
}
INFOS = [m for m in common_modules.module_db if m.module_cls.__name__ in CLASSES]
DTYPES = [torch.float32, torch.float64]


def _cases() -> list[Any]:
    cases = []
    for info in INFOS:
        for dtype in DTYPES:
            for training in ((True, False) if info.train_and_eval_differ else (True,)):
                mode = "train" if training else "eval"
                name = f"{info.module_cls.__name__}-{str(dtype)[6:]}-{mode}"
                cases.append(pytest.param(info, dtype, training, id=name))
    return cases


def test_every_class_is_covered() -> None:
    assert {m.module_cls.__name__ for m in INFOS} == CLASSES


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        c = value.detach().clone()
        return c.requires_grad_(value.requires_grad)
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _run(module: torch.nn.Module, args: Any, kwargs: Any, grads: list[torch.Tensor] | None
         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    out = _tensors(module(*args, **kwargs))
    differentiable = [t for t in out if t.requires_grad]
    if grads is None:
        grads = [random_like(t, i) for i, t in enumerate(differentiable)]
    if differentiable:
        if isinstance(module, shimnn.Module):
            shim_backward(differentiable, [g.clone() for g in grads])
        else:
            torch.autograd.backward(differentiable, grads)
    return out, grads


@pytest.mark.parametrize(("info", "dtype", "training"), _cases())
def test_module_db_sample(info: Any, dtype: torch.dtype, training: bool) -> None:
    cls = info.module_cls
    shim_cls = getattr(shimnn, cls.__name__)
    assert shim_cls.__module__.startswith("shimnn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                          training=training)
    for sample in samples:
        c, f = sample.constructor_input, sample.forward_input
        torch.manual_seed(0)
        ref = cls(*c.args, **c.kwargs).to(dtype)
        torch.manual_seed(0)
        shim = shim_cls(*c.args, **c.kwargs).to(dtype)
        assert repr(shim) == repr(ref)
        assert list(shim.state_dict()) == list(ref.state_dict())
        for (name, a), b in zip(shim.state_dict().items(), ref.state_dict().values()):
            assert_same(a, b, f"{sample.desc}: initial {name}")
        ref.train(training)
        shim.train(training)
        ref_args, ref_kwargs = _clone(f.args), _clone(f.kwargs)
        shim_args, shim_kwargs = _clone(f.args), _clone(f.kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_out, grads = _run(ref, ref_args, ref_kwargs, None)
            with autograd_forbidden():
                shim_out, _ = _run(shim, shim_args, shim_kwargs, grads)
        what = f"{cls.__name__}({sample.desc})"
        assert len(shim_out) == len(ref_out)
        for a, b in zip(shim_out, ref_out):
            assert_no_autograd_graph(a)
            assert_same(a, b, f"{what}: output")
        for a, b in zip(_tensors((shim_args, shim_kwargs)), _tensors((ref_args, ref_kwargs))):
            assert_same(a.grad, b.grad, f"{what}: input grad")
        ref_params = dict(ref.named_parameters())
        for name, p in shim.named_parameters():
            assert_same(p.grad, ref_params[name].grad, f"{what}: grad of {name}")
        ref_buffers = dict(ref.named_buffers())
        for name, buf in shim.named_buffers():
            assert_same(buf, ref_buffers[name], f"{what}: buffer {name}")
