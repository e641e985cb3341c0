"""Normalization against torch: batch, instance, group, layer and RMS norm, bit for bit
(outputs, gradients, running statistics, num_batches_tracked), modules, errors and the
adversarial cases."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as TF

import shimnn
import shimnn.functional as F
from conftest import assert_same, autograd_forbidden
from parity import check_function, check_module, check_raises_like, random_like, twin_modules

DTYPES = [torch.float32, torch.float64]
# torch 2.13 added bias= to the batch and instance norms (2.11 and 2.12 lack it).
NORM_BIAS_FALSE = [{"bias": False}] if "bias" in inspect.signature(
    torch.nn.modules.batchnorm._NormBase.__init__).parameters else []


def _x(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0, channels_last: bool = False
       ) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype) * 3 + 1
    return x.to(memory_format=torch.channels_last) if channels_last else x


def _stats(c: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(c, generator=g, dtype=dtype), torch.rand(c, generator=g, dtype=dtype) + .5


def _compare_with_stats(f: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor, stats: tuple[torch.Tensor | None, ...]) -> None:
    """f(input, weight, bias, running_mean, running_var) under both; the statistics too."""
    ref_stats = [None if s is None else s.clone() for s in stats]
    shim_stats = [None if s is None else s.clone() for s in stats]
    ref_in = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref = f(*ref_in, *ref_stats)
    grad = random_like(ref, 3)
    ref.backward(grad)
    shim_in = [shimnn.Parameter(t.clone()) for t in (x, weight, bias)]
    with autograd_forbidden():
        out = f(*shim_in, *shim_stats)
        out.backward(grad.clone())
    assert_same(out, ref, "output")
    for a, b in zip(shim_in, ref_in):
        assert_same(a.grad, b.grad, "gradient")
    for a, b in zip(shim_stats, ref_stats):
        if a is not None:
            assert_same(a, b, "running statistic")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0])
def test_batch_norm(momentum: float, training: bool, channels_last: bool,
                    dtype: torch.dtype) -> None:
    x = _x((4, 3, 5, 6), dtype, channels_last=channels_last)
    w, b = _x((3,), dtype, 1), _x((3,), dtype, 2)
    _compare_with_stats(
        lambda x, w, b, m, v: TF.batch_norm(x, m, v, w, b, training, momentum, 1e-5),
        x, w, b, _stats(3, dtype))
    _compare_with_stats(
        lambda x, w, b, m, v: torch.batch_norm(x[:, :, 0], w, b, m, v, training, momentum,
                                               1e-3, False), x, w, b, _stats(3, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_variants(dtype: torch.dtype) -> None:
    x, w, b = _x((4, 3, 5, 6), dtype), _x((3,), dtype, 1), _x((3,), dtype, 2)
    check_function(lambda t, w, b: TF.batch_norm(t, None, None, w, b, True), x, w, b)
    check_function(lambda t: TF.batch_norm(t, None, None, None, None, True), x, seed=1)
    check_function(lambda t, w, b: TF.batch_norm(t, None, None, w, b, True), x, w, b,
                   requires_grad=[False, True, True], seed=2)
    check_function(lambda t, w: TF.batch_norm(t[:, :, 0, 0], None, None, w, None, True), x, w,
                   seed=3)
    check_function(lambda t, w, b: TF.batch_norm(t[..., :1], None, None, w, b, True) + t.mean(),
                   x, w, b, seed=4)
    # An empty batch: torch's clone path (no affine: torch's own backward crashes with one).
    check_function(lambda t: TF.batch_norm(t[:0], None, None, None, None, True), x, seed=5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (8, 3)), ("BatchNorm1d", (4, 3, 5)),
                                       ("BatchNorm2d", (4, 3, 5, 6))])
def test_batch_norm_modules_train_then_eval(cls: str, shape: tuple[int, ...],
                                            momentum: float | None, dtype: torch.dtype) -> None:
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, momentum=momentum).to(dtype))
    for step in range(3):
        check_module(ref, shim, [_x(shape, dtype, step)], seed=step)
        for (name, a), c in zip(shim.state_dict().items(), ref.state_dict().values()):
            assert_same(a, c, f"step {step}: {name}")
    ref.eval()
    shim.eval()
    check_module(ref, shim, [_x(shape, dtype, 9)], seed=9)
    for cfg in ({"affine": False}, {"track_running_stats": False}, *NORM_BIAS_FALSE):
        ref2, shim2 = twin_modules(lambda nn: getattr(nn, cls)(3, **cfg).to(dtype))
        assert repr(shim2) == repr(ref2)
        assert list(shim2.state_dict()) == list(ref2.state_dict())
        for training in (True, False):
            ref2.train(training)
            shim2.train(training)
            check_module(ref2, shim2, [_x(shape, dtype, 4)], seed=4)
            for a, c in zip(shim2.buffers(), ref2.buffers()):
                assert_same(a, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm(channels_last: bool, dtype: torch.dtype) -> None:
    x = _x((4, 3, 5, 6), dtype, channels_last=channels_last)
    w, b = _x((3,), dtype, 1), _x((3,), dtype, 2)
    for track in (False, True):
        for use in (True, False):
            if not use and not track:
                continue
            _compare_with_stats(
                lambda x, w, b, m, v: TF.instance_norm(x, m, v, w, b, use, 0.3, 1e-5),
                x, w, b, _stats(3, dtype) if track else (None, None))
    check_function(lambda t: TF.instance_norm(t), x)
    check_function(lambda t: TF.instance_norm(t[:1]), x, seed=1)
    check_function(lambda t, w: torch.instance_norm(t[:, :, 0], w, None, None, None, True,
                                                    0.1, 1e-5, False), x, w, seed=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,shape", [("InstanceNorm1d", (4, 3, 7)), ("InstanceNorm1d", (3, 7)),
                                       ("InstanceNorm2d", (2, 3, 4, 5)),
                                       ("InstanceNorm2d", (3, 4, 5))])
@pytest.mark.parametrize("kwargs", [{}, {"affine": True}, {"track_running_stats": True},
                                    {"affine": True, "track_running_stats": True},
                                    *({"affine": True, "track_running_stats": True, **c}
                                      for c in NORM_BIAS_FALSE)],
                         ids=str)
def test_instance_norm_modules(cls: str, shape: tuple[int, ...], kwargs: dict[str, Any],
                               dtype: torch.dtype) -> None:
    ref, shim = twin_modules(lambda nn: getattr(nn, cls)(3, **kwargs).to(dtype))
    assert repr(shim) == repr(ref)
    for training in (True, False, True):
        ref.train(training)
        shim.train(training)
        check_module(ref, shim, [_x(shape, dtype, int(training))])
        for a, c in zip(shim.buffers(), ref.buffers()):
            assert_same(a, c, "buffer")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_norm(groups: int, channels_last: bool, dtype: torch.dtype) -> None:
    x = _x((4, 6, 5, 3), dtype, channels_last=channels_last)
    w, b = _x((6,), dtype, 1), _x((6,), dtype, 2)
    check_function(lambda t, w, b: TF.group_norm(t, groups, w, b), x, w, b)
    check_function(lambda t, w, b: TF.group_norm(t[:, :, 0], groups, w, b, 1e-3), x, w, b,
                   seed=1)
    check_function(lambda t: TF.group_norm(t, groups), x, seed=2)
    check_function(lambda t, w: torch.group_norm(t, groups, w, None, 1e-5, False), x, w, seed=3)
    check_function(lambda t, w, b: TF.group_norm(t, groups, w, b), x, w, b,
                   requires_grad=[False, True, True], seed=4) if not channels_last else None


def test_group_norm_channels_last_without_input_gradient() -> None:
    """torch 2.13's channels_last kernel crashes without grad_input (torch's own backward
    segfaults there); shimnn computes it and drops it. The weight and bias gradients are the
    kernel's, as torch gives them when the input needs a gradient too."""
    x = _x((4, 6, 5, 3), torch.float32, channels_last=True)
    w, b = _x((6,), torch.float32, 1), _x((6,), torch.float32, 2)
    ref_in = [x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()]
    ref = TF.group_norm(ref_in[0], 3, ref_in[1], ref_in[2])
    grad = random_like(ref, 0)
    ref.backward(grad)
    pw, pb = shimnn.Parameter(w.clone()), shimnn.Parameter(b.clone())
    with autograd_forbidden():
        out = F.group_norm(x, 3, pw, pb)
        out.backward(grad)
    assert_same(out, ref)
    assert_same(pw.grad, ref_in[1].grad)
    assert_same(pb.grad, ref_in[2].grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalized_shape", [(6,), (5, 6), (3, 5, 6)], ids=str)
def test_layer_norm_and_rms_norm(normalized_shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = _x((4, 3, 5, 6), dtype)
    w, b = _x(normalized_shape, dtype, 1), _x(normalized_shape, dtype, 2)
    ns = normalized_shape
    cases: list[tuple[Callable[..., Any], tuple[torch.Tensor, ...]]] = [
        (lambda t, w, b: TF.layer_norm(t, ns, w, b), (x, w, b)),
        (lambda t, w: TF.layer_norm(t, ns, w, eps=1e-3), (x, w)),
        (lambda t: TF.layer_norm(t, ns), (x,)),
        (lambda t, w, b: torch.layer_norm(t[::2], ns, w, b), (x, w, b)),
        (lambda t, w: TF.layer_norm(t, ns, w) + t, (x, w)),
        (lambda t, w: TF.rms_norm(t, ns, w), (x, w)),
        (lambda t, w: TF.rms_norm(t, ns, w, 1e-5), (x, w)),
        (lambda t: TF.rms_norm(t, ns), (x,)),
        (lambda t, w: torch.rms_norm(t[::2], ns, w), (x, w)),
        # The input's gradient has three sources; torch's engine adds them in its order.
        (lambda t, w: TF.rms_norm(t, ns, w) + t * 2, (x, w)),
        (lambda t, w: t.sum() * TF.rms_norm(t, ns, w), (x, w)),
        (lambda t, w: TF.rms_norm(t * 1.5, ns, w) * TF.rms_norm(t, ns), (x, w)),
    ]
    for i, (f, inputs) in enumerate(cases):
        check_function(f, *inputs, seed=i)
    check_function(lambda t, w: TF.rms_norm(t, ns, w), x, w, requires_grad=[False, True])
    check_function(lambda t, w: TF.layer_norm(t, ns, w), x, w, requires_grad=[True, False])


def test_rms_norm_half_precision_and_channels_last() -> None:
    for dtype in (torch.float16, torch.bfloat16):
        x, w = _x((4, 5, 6), torch.float32).to(dtype), _x((6,), torch.float32, 1).to(dtype)
        check_function(lambda t, w: TF.rms_norm(t, (6,), w) + t, x, w)
    x = _x((2, 3, 4, 5), torch.float32, channels_last=True)
    check_function(lambda t, w: TF.rms_norm(t, (5,), w), x, _x((5,), torch.float32, 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    ("LayerNorm", ((6,),), {}), ("LayerNorm", ((5, 6),), {"bias": False}),
    ("LayerNorm", ((6,),), {"elementwise_affine": False}), ("RMSNorm", ((6,),), {}),
    ("RMSNorm", ((5, 6),), {"eps": 1e-6}), ("RMSNorm", (6,), {"elementwise_affine": False}),
    ("GroupNorm", (3, 3), {}), ("GroupNorm", (1, 3), {"affine": False}),
], ids=str)
def test_norm_modules(case: tuple[str, tuple[Any, ...], dict[str, Any]],
                      dtype: torch.dtype) -> None:
    name, args, kwargs = case
    ref, shim = twin_modules(lambda nn: getattr(nn, name)(*args, **kwargs).to(dtype))
    assert repr(shim) == repr(ref)
    assert list(shim.state_dict()) == list(ref.state_dict())
    with torch.no_grad():  # non-trivial affine parameters
        for p, q in zip(shim.parameters(), ref.parameters()):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
            q.copy_(p)
    check_module(ref, shim, [_x((4, 3, 5, 6), dtype)])


def test_errors_like_torch() -> None:
    x = torch.randn(4, 3, 5)
    w3 = torch.randn(3)
    calls: list[Callable[[torch.Tensor], Any]] = [
        lambda t: TF.batch_norm(t, None, None, torch.randn(4), None, True),
        lambda t: TF.batch_norm(t, torch.zeros(2), torch.ones(3), None, None, True),
        lambda t: TF.batch_norm(t, None, None, None, None, False),
        lambda t: TF.batch_norm(t[:1, :, :1], None, None, w3, None, True),
        lambda t: TF.batch_norm(t, None, None, w3, None, True, eps=0.0),
        lambda t: TF.instance_norm(t[:, :, :1]),
        lambda t: TF.instance_norm(t, None, None, use_input_stats=False),
        lambda t: TF.group_norm(t, 2),
        lambda t: TF.group_norm(t, 3, torch.randn(4)),
        lambda t: TF.group_norm(t[0, 0], 1),
        lambda t: TF.layer_norm(t, (4,)),
        lambda t: TF.layer_norm(t, 5),
        lambda t: TF.layer_norm(t, (5,), torch.randn(4)),
        lambda t: TF.rms_norm(t, (4,)),
        lambda t: TF.rms_norm(t, (5,), torch.randn(3)),
    ]
    for call in calls:
        ref, shim = check_raises_like(lambda: call(x.clone().requires_grad_()),
                                      lambda: call(shimnn.Parameter(x.clone())))
        assert str(shim) == str(ref)
    ref, shim = check_raises_like(lambda: torch.nn.BatchNorm2d(3)(torch.randn(2, 3, 4)),
                                  lambda: shimnn.BatchNorm2d(3)(torch.randn(2, 3, 4)))
    assert str(shim).endswith(str(ref)) and str(shim).startswith("BatchNorm2d(3")
    check_raises_like(lambda: torch.nn.InstanceNorm1d(3, affine=True)(torch.randn(2, 4, 5)),
                      lambda: shimnn.InstanceNorm1d(3, affine=True)(torch.randn(2, 4, 5)))


def test_running_stats_modified_in_place_raise_like_torch() -> None:
    def run(nn: Any) -> None:
        torch.manual_seed(0)
        m = nn.BatchNorm1d(3).eval()
        out = m(torch.randn(4, 3, requires_grad=True) * 1.0)
        with torch.no_grad():
            m.running_mean.add_(1.0)  # saved by the backward in eval mode
        out.sum().backward()

    ref, shim = check_raises_like(lambda: run(torch.nn), lambda: run(shimnn))
    assert "modified by an inplace operation" in str(shim)


def test_in_place_after_norm_and_hooks() -> None:
    ref, shim = twin_modules(lambda nn: nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3),
                                                      nn.ReLU(inplace=True)))
    x = torch.randn(4, 2, 5, 5)
    seen: dict[str, torch.Tensor] = {}

    def run(m: Any, key: str) -> torch.Tensor:
        h = m[1](m[0](x))
        h.register_hook(lambda g: seen.__setitem__(key, g.clone()))
        return (m[2](h) * h.detach()).sum()

    loss_ref = run(ref, "torch")
    loss_ref.backward()
    with autograd_forbidden():
        loss = run(shim, "shimnn")
        loss.backward()
    assert_same(loss, loss_ref)
    assert_same(seen["shimnn"], seen["torch"], "hooked gradient")
    for p, q in zip(shim.parameters(), ref.parameters()):
        assert_same(p.grad, q.grad)
    check_module(ref, shim, [x])  # fused Sequential (or layer by layer): the same numbers


def test_rms_norm_mixed_dtypes_refused() -> None:
    x = shimnn.Parameter(torch.randn(3, 4))
    with pytest.raises(NotImplementedError, match="rms_norm"):
        F.rms_norm(x, (4,), torch.ones(4, dtype=torch.float64))
    with torch.no_grad():  # a value only: torch's
        assert_same(F.rms_norm(x, (4,), torch.ones(4, dtype=torch.float64)),
                    TF.rms_norm(x.detach(), (4,), torch.ones(4, dtype=torch.float64)))
