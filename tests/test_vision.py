"""F.pad (all modes), interpolate / Upsample, pixel_shuffle, Dropout1d / Dropout2d against
torch: values, gradients, RNG consumption, warnings, modules, errors."""

from __future__ import annotations

import warnings
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

PADS: list[tuple[tuple[int, ...], tuple[int, ...]]] = [
    ((2, 3, 4), (1, 2)), ((3, 4), (1, 1)), ((1, 2, 3), (3, 1)), ((1, 2, 3), (3, 3)),
    ((1, 2, 3), (-1, 2)), ((1, 1, 2, 3), (1, 2, 2, 1)), ((1, 1, 2, 3), (2, 3, 2, 2)),
    ((1, 1, 3, 3), (3, 3, 3, 1)), ((3, 4, 5), (1, 1, 1, 1)), ((2, 3, 4, 5), (-1, 2, 1, -2)),
    ((2, 2, 3, 4, 5), (1, 1, 1, 1, 1, 1)), ((2, 3, 4, 5), (0, 0, 2, 0)), ((2, 3, 4), (0, 0)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("case", PADS, ids=str)
def test_pad(case: tuple[tuple[int, ...], tuple[int, ...]], mode: str,
             dtype: torch.dtype) -> None:
    shape, pads = case
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    try:
        TF.pad(x, pads, mode)
    except (RuntimeError, NotImplementedError) as e:  # the combinations torch refuses
        r, s = check_raises_like(lambda: TF.pad(x.clone().requires_grad_(), pads, mode),
                                 lambda: TF.pad(shimnn.Parameter(x.clone()), pads, mode))
        assert str(s) == str(r) == str(e)
        return
    check_function(lambda t: TF.pad(t, pads, mode), x)
    check_function(lambda t: TF.pad(t * 1.0, pads, mode) * 2.0, x, seed=1)
    if mode == "constant":
        check_function(lambda t: TF.pad(t, pads, value=-2.5), x, seed=2)
        check_function(lambda t: torch.constant_pad_nd(t, pads, 1.0), x, seed=3)
    if len(shape) == 4:
        check_function(lambda t: TF.pad(t, pads, mode), x.to(memory_format=torch.channels_last),
                       seed=4)


PAD_MODULES: list[tuple[str, Any, tuple[int, ...]]] = [
    ("ZeroPad1d", (1, 2), (3, 4)), ("ZeroPad2d", (1, 2, 3, 4), (1, 2, 3, 4)),
    ("ZeroPad3d", 1, (1, 2, 2, 3, 2)), ("ConstantPad1d", ((1, 2), 3.5), (2, 3, 4)),
    ("ConstantPad2d", (2, -1.0), (2, 3, 4)), ("ConstantPad3d", ((1, 0, 0, 1, 1, 0), 2.0),
                                              (1, 2, 2, 2, 2)),
    ("ReflectionPad1d", (2, 1), (2, 3, 4)), ("ReflectionPad2d", (1, 2, 2, 1), (2, 3, 4, 5)),
    ("ReflectionPad3d", 1, (1, 2, 3, 3, 3)), ("ReplicationPad1d", 3, (2, 4)),
    ("ReplicationPad2d", (0, 2, 3, 1), (3, 4, 5)), ("ReplicationPad3d", 2, (1, 1, 2, 2, 2)),
    ("CircularPad1d", (3, 1), (1, 2, 3)), ("CircularPad2d", (2, 3, 2, 2), (1, 1, 2, 3)),
    ("CircularPad3d", 1, (1, 1, 2, 3, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PAD_MODULES, ids=lambda c: f"{c[0]}{c[1]}")
def test_pad_modules(case: tuple[str, Any, tuple[int, ...]], dtype: torch.dtype) -> None:
    name, args, shape = case
    args = args if isinstance(args, tuple) and name.startswith("Constant") else (args,)
    ref, shim = twin_modules(lambda nn: getattr(nn, name)(*args))
    assert repr(shim) == repr(ref)
    check_module(ref, shim, [torch.randn(shape, dtype=dtype)])


INTERPOLATIONS: list[tuple[str, Callable[[torch.Tensor], Any]]] = [
    ("nearest x2", lambda t: TF.interpolate(t, scale_factor=2)),
    ("nearest x1.7", lambda t: TF.interpolate(t, scale_factor=1.7)),
    ("nearest (1.5, 0.6)", lambda t: TF.interpolate(t, scale_factor=(1.5, 0.6))),
    ("nearest size", lambda t: TF.interpolate(t, size=(9, 4))),
    ("nearest-exact", lambda t: TF.interpolate(t, size=11, mode="nearest-exact")),
    ("bilinear x2", lambda t: TF.interpolate(t, scale_factor=2, mode="bilinear")),
    ("bilinear corners", lambda t: TF.interpolate(t, scale_factor=1.3, mode="bilinear",
                                                  align_corners=True)),
    ("bilinear recompute", lambda t: TF.interpolate(t, scale_factor=1.3, mode="bilinear",
                                                    recompute_scale_factor=True)),
    ("bilinear size", lambda t: TF.interpolate(t, size=(8, 3), mode="bilinear")),
    ("bicubic", lambda t: TF.interpolate(t, size=(8, 3), mode="bicubic")),
    ("area", lambda t: TF.interpolate(t, size=(3, 3), mode="area")),
    ("area 1", lambda t: TF.interpolate(t, size=1, mode="area")),
    ("1d nearest", lambda t: TF.interpolate(t[:, :, 0], scale_factor=2)),
    ("1d linear", lambda t: TF.interpolate(t[:, :, 0], scale_factor=2.5, mode="linear")),
    ("1d area", lambda t: TF.interpolate(t[:, :, 0], size=3, mode="area")),
    ("upsample", lambda t: TF.upsample(t, scale_factor=2)),
    ("upsample_bilinear", lambda t: TF.upsample_bilinear(t, scale_factor=2)),
    ("upsample_nearest", lambda t: TF.upsample_nearest(t, size=(6, 6))),
    ("trilinear", lambda t: TF.interpolate(torch.cat([t.unsqueeze(2), t.unsqueeze(2) * 2], 2),
                                           scale_factor=2, mode="trilinear")),
    ("pixel_shuffle", lambda t: TF.pixel_shuffle(torch.cat([t[:, :, :4, :4]] * 4, 1), 2)),
    ("pixel_unshuffle", lambda t: TF.pixel_unshuffle(t[:, :, :4, :6], 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", INTERPOLATIONS, ids=[c[0] for c in INTERPOLATIONS])
def test_interpolate(case: tuple[str, Callable[[torch.Tensor], Any]], channels_last: bool,
                     dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # upsample* are deprecated
        check_function(case[1], x)


def test_antialias_refused_at_backward() -> None:
    x = shimnn.Parameter(torch.randn(1, 1, 8, 8))
    out = F.interpolate(x, size=(3, 3), mode="bilinear", antialias=True)
    assert_same(out, TF.interpolate(x.detach(), size=(3, 3), mode="bilinear", antialias=True))
    with pytest.raises(NotImplementedError, match="interpolate"):
        out.sum().backward()


@pytest.mark.parametrize("case", [
    ("Upsample", {"scale_factor": 2}), ("Upsample", {"size": (7, 5), "mode": "bilinear"}),
    ("Upsample", {"scale_factor": 1.5, "mode": "bicubic", "align_corners": True}),
    ("UpsamplingNearest2d", {"scale_factor": 3}), ("UpsamplingBilinear2d", {"size": 9}),
    ("PixelShuffle", {"upscale_factor": 2}), ("PixelUnshuffle", {"downscale_factor": 2}),
], ids=str)
def test_upsampling_modules(case: tuple[str, dict[str, Any]]) -> None:
    name, kwargs = case
    ref, shim = twin_modules(lambda nn: getattr(nn, name)(**kwargs))
    assert repr(shim) == repr(ref)
    check_module(ref, shim, [torch.randn(2, 4, 4, 6, dtype=torch.float64)])


def test_interpolate_errors_like_torch() -> None:
    x = torch.randn(1, 2, 4, 4)
    calls: list[Callable[[torch.Tensor], Any]] = [
        lambda t: TF.interpolate(t),
        lambda t: TF.interpolate(t, size=3, scale_factor=2),
        lambda t: TF.interpolate(t, size=(3, 3, 3)),
        lambda t: TF.interpolate(t, scale_factor=2, align_corners=True),
        lambda t: TF.interpolate(t, scale_factor=2, mode="linear"),
        lambda t: TF.interpolate(t, size=2, recompute_scale_factor=True),
        lambda t: TF.pixel_shuffle(t, 3),
    ]
    for call in calls:
        r, s = check_raises_like(lambda: call(x.clone().requires_grad_()),
                                 lambda: call(shimnn.Parameter(x.clone())))
        assert str(s) == str(r)


# ---------------------------------------------------------------------------------------------
# channel dropout
# ---------------------------------------------------------------------------------------------


def _dropout_pair(f: Callable[..., Any], shape: tuple[int, ...], p: float, training: bool,
                  inplace: bool, dtype: torch.dtype) -> None:
    x = torch.randn(shape, dtype=dtype)
    torch.manual_seed(5)
    a = x.clone().requires_grad_()
    with warnings.catch_warnings(record=True) as ref_warnings:
        warnings.simplefilter("always")
        ref = f(a * 1.0, p, training, inplace)
    grad = random_like(ref, 1)
    if ref.requires_grad:
        ref.backward(grad)
    state = torch.random.get_rng_state()
    torch.manual_seed(5)
    b = shimnn.Parameter(x.clone())
    with warnings.catch_warnings(record=True) as shim_warnings, autograd_forbidden():
        warnings.simplefilter("always")
        out = f(b * 1.0, p, training, inplace)
        out.backward(grad.clone())
    assert torch.equal(torch.random.get_rng_state(), state), "RNG consumed differently"
    assert_same(out, ref, "output")
    assert_same(b.grad, a.grad, "gradient")
    assert [str(w.message) for w in shim_warnings] == [str(w.message) for w in ref_warnings]
    assert [w.filename for w in shim_warnings] == [w.filename for w in ref_warnings]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("case", [("dropout2d", (4, 3, 5, 6)), ("dropout2d", (4, 3, 5)),
                                  ("dropout2d", (3, 5)), ("dropout2d", (2, 3, 2, 2, 2)),
                                  ("dropout1d", (4, 3, 5)), ("dropout1d", (3, 5))], ids=str)
def test_channel_dropout(case: tuple[str, tuple[int, ...]], inplace: bool, p: float,
                         dtype: torch.dtype) -> None:
    name, shape = case
    f = getattr(TF, name)
    for training in (True, False):
        _dropout_pair(f, shape, p, training, inplace, dtype)


@pytest.mark.parametrize("name,shape", [("Dropout2d", (4, 3, 5, 6)), ("Dropout1d", (4, 3, 5)),
                                        ("Dropout1d", (3, 5))])
def test_channel_dropout_modules(name: str, shape: tuple[int, ...]) -> None:
    ref, shim = twin_modules(lambda nn: getattr(nn, name)(0.4))
    assert repr(shim) == repr(ref)
    x = torch.randn(shape)
    for training in (True, False):
        ref.train(training)
        shim.train(training)
        torch.manual_seed(3)
        ref_out = ref(x.clone().requires_grad_())
        torch.manual_seed(3)
        with autograd_forbidden():
            out = shim(x.clone().requires_grad_())
        assert_same(out, ref_out)


def test_channel_dropout_errors_and_in_place_on_a_leaf() -> None:
    x = torch.randn(2, 3, 4, 4)
    for call in [lambda t: TF.dropout2d(t, 1.5), lambda t: TF.dropout1d(t, 0.5),
                 lambda t: TF.dropout2d(t, 0.5, inplace=True),
                 lambda t: TF.dropout1d(t[0], 0.5, inplace=True),
                 lambda t: TF.dropout2d(t[:1], 0.5, inplace=True),
                 lambda t: torch.feature_dropout(t[0, 0, 0], 0.5, True)]:
        r, s = check_raises_like(lambda: call(x.clone().requires_grad_()),
                                 lambda: call(shimnn.Parameter(x.clone())))
        assert str(s) == str(r)
    y = torch.randn(3, 5)
    r, s = check_raises_like(lambda: TF.dropout1d(y.clone().requires_grad_(), 0.5, inplace=True),
                             lambda: TF.dropout1d(shimnn.Parameter(y.clone()), 0.5, inplace=True))
    assert str(s) == str(r)


def test_channel_dropout_in_place_on_a_view() -> None:
    """In place into a view of a tensor that needs a gradient: the write goes through the
    view's base, as torch's CopySlices."""
    x = torch.randn(4, 3, 5, 5)

    def run(t: torch.Tensor) -> torch.Tensor:
        h = t * 2.0
        TF.dropout2d(h[1:3], 0.5, inplace=True)
        return h

    torch.manual_seed(4)
    a = x.clone().requires_grad_()
    ref = run(a)
    grad = random_like(ref, 0)
    ref.backward(grad)
    torch.manual_seed(4)
    b = shimnn.Parameter(x.clone())
    with autograd_forbidden():
        out = run(b)
        out.backward(grad)
    assert_same(out, ref)
    assert_same(b.grad, a.grad)
