"""Parity of the losses against torch: values, gradients (input, target, weight), errors, API."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import shimnn
import shimnn.functional as SF
import shimnn.optim
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from parity import (
    assert_error_like,
    check_module,
    check_raises_like,
    check_same_outcome,
    twin_modules,
)

TF = torch.nn.functional
DTYPES = [torch.float32, torch.float64]
REDUCTIONS = ["none", "mean", "sum"]
LOSS_NAMES = ["L1Loss", "SmoothL1Loss", "HuberLoss", "BCELoss", "BCEWithLogitsLoss", "NLLLoss",
              "CrossEntropyLoss"]
FUNCTIONAL_NAMES = ["l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
                    "binary_cross_entropy_with_logits", "nll_loss", "cross_entropy"]


class Fn(torch.nn.Module):
    """A functional form as a module (no parameters), for ``check_module``."""

    def __init__(self, fn: Callable[..., torch.Tensor], **kwargs: Any) -> None:
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args, **self.kwargs)


def check_functional(name: str, args: list[torch.Tensor], requires_grad: list[bool] | None = None,
                     seed: int = 0, **kwargs: Any) -> None:
    """``torch.nn.functional.<name>`` vs ``shimnn.functional.<name>``: values and gradients."""
    check_module(Fn(getattr(TF, name), **kwargs), Fn(getattr(SF, name), **kwargs), args,
                 requires_grad, seed)


def check_node_name(torch_out: torch.Tensor, shim_out: torch.Tensor) -> None:
    assert isinstance(shim_out, shimnn.TrackedTensor)
    assert shim_out.shim_fn is not None
    assert shim_out.shim_fn.name == type(torch_out.grad_fn).__name__


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape: tuple[int, ...], dtype: torch.dtype, seed: int, scale: float = 1.0
           ) -> torch.Tensor:
    return torch.randn(shape, generator=_gen(seed), dtype=dtype) * scale


def _rand(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=_gen(seed), dtype=dtype)


GRAD_COMBOS = [[True, False], [True, True], [False, True]]

# ---------------------------------------------------------------------------------------------
# L1, smooth L1, Huber
# ---------------------------------------------------------------------------------------------

POINTWISE = {
    "L1Loss": lambda nn, r: nn.L1Loss(reduction=r),
    "SmoothL1Loss": lambda nn, r: nn.SmoothL1Loss(reduction=r, beta=0.5),
    "SmoothL1Loss-beta0": lambda nn, r: nn.SmoothL1Loss(reduction=r, beta=0.0),
    "HuberLoss": lambda nn, r: nn.HuberLoss(reduction=r, delta=0.7),
}
POINTWISE_SHAPES = [((5, 3), (5, 3)), ((), ()), ((0, 2), (0, 2)), ((7,), (7,)), ((4, 1), (4,)),
                    ((3,), (2, 3)), ((2, 1, 3), (4, 1)), ((0,), (3, 0))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", list(POINTWISE))
def test_pointwise_losses(loss: str, reduction: str, dtype: torch.dtype) -> None:
    make = POINTWISE[loss]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broadcast shapes warn, in both
        for i, (xs, ys) in enumerate(POINTWISE_SHAPES):
            x, y = _randn(xs, dtype, i), _randn(ys, dtype, 100 + i)
            rg = GRAD_COMBOS[i % 3]  # each shape one combination; every combination covered
            check_module(make(torch.nn, reduction), make(shimnn, reduction), [x, y], rg, i)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_smooth_l1_and_huber_at_the_boundary(reduction: str, dtype: torch.dtype) -> None:
    # |x - y| exactly at beta / delta, just inside and outside, 0, both signs; beta = 0.
    d = torch.tensor([0.5, -0.5, 0.5 - 1e-7, 0.5 + 1e-7, 0.0, -0.0, 1.0, -1.0, 2.0, -3.0,
                      1e-30], dtype=dtype)
    y = _randn((11,), dtype, 1).round()
    x = y + d
    for beta in (0.5, 1.0, 0.0, 2):
        check_functional("smooth_l1_loss", [x, y], [True, True], reduction=reduction, beta=beta)
    for delta in (0.5, 1.0, 2, 1e-3):
        check_functional("huber_loss", [x, y], [True, True], reduction=reduction, delta=delta)
    check_functional("l1_loss", [x, y], [True, True], reduction=reduction)
    check_functional("l1_loss", [x, x.clone()], [True, True], reduction=reduction)  # sgn(0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["l1_loss", "huber_loss"])
def test_weighted_l1_and_huber(name: str, reduction: str) -> None:
    # torch's Python composite with `weight`, including the weight's own gradient.
    for dtype in DTYPES:
        x, y, w = _randn((4, 3), dtype, 0), _randn((4, 3), dtype, 1), _rand((4, 3), dtype, 2)

        def ref(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return getattr(TF, name)(a, b, reduction=reduction, weight=c)

        def shim(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return getattr(SF, name)(a, b, reduction=reduction, weight=c)

        for rg in ([True, True, True], [True, False, False], [False, True, False],
                   [False, False, True]):
            check_module(Fn(ref), Fn(shim), [x, y, w], rg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the target broadcasts over a leading dim
            check_module(Fn(ref), Fn(shim), [x, _randn((2, 4, 3), dtype, 3), w],
                         [True, True, True])


def test_pointwise_losses_mixed_dtypes() -> None:
    # Broadcast and promoted: torch's engine casts each gradient before ExpandBackward sums it.
    x32, y64 = _randn((3, 1, 4), torch.float32, 0), _randn((5, 4), torch.float64, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reduction in REDUCTIONS:
            for args in ([x32, y64], [y64, x32]):
                check_functional("l1_loss", args, [True, True], reduction=reduction)
                check_functional("smooth_l1_loss", args, [True, True], reduction=reduction)
                check_functional("smooth_l1_loss", args, [True, True], reduction=reduction,
                                 beta=0.0)
                # torch's huber_loss_backward refuses mixed dtypes: so does shimnn's, in the
                # same words (the values still match).
                ref_in = [a.clone().requires_grad_() for a in args]
                ref_out = TF.huber_loss(*ref_in, reduction=reduction)
                shim_in = [shimnn.Parameter(a.clone()) for a in args]
                with autograd_forbidden():
                    shim_out = SF.huber_loss(*shim_in, reduction=reduction)
                assert_same(shim_out, ref_out, "output")
                ref_exc, shim_exc = check_raises_like(lambda: ref_out.sum().backward(),
                                                      lambda: shim_out.sum().backward())
                assert str(shim_exc) == str(ref_exc)


def test_pointwise_losses_legacy_arguments() -> None:
    for size_average, reduce in [(None, False), (False, None), (True, True), (False, True),
                                 (True, False)]:
        for cls in ("L1Loss", "SmoothL1Loss"):
            with warnings.catch_warnings(record=True) as ref_w:
                warnings.simplefilter("always")
                ref = getattr(torch.nn, cls)(size_average=size_average, reduce=reduce)
            with warnings.catch_warnings(record=True) as shim_w:
                warnings.simplefilter("always")
                shim = getattr(shimnn, cls)(size_average=size_average, reduce=reduce)
            assert [str(w.message) for w in shim_w] == [str(w.message) for w in ref_w]
            assert shim.reduction == ref.reduction
            check_module(ref, shim, [_randn((4, 2), torch.float32, 0),
                                     _randn((4, 2), torch.float32, 1)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in ("l1_loss", "smooth_l1_loss"):
                check_functional(name, [_randn((3,), torch.float64, 0),
                                        _randn((3,), torch.float64, 1)],
                                 size_average=size_average, reduce=reduce)


def test_broadcast_warnings_match_torch() -> None:
    x, y = torch.randn(3, 1), torch.randn(3)
    for name in ("l1_loss", "smooth_l1_loss", "huber_loss"):
        for shim_call in (lambda: getattr(SF, name)(x, y),  # shimnn's own function
                          lambda: getattr(TF, name)(shimnn.Parameter(x), y)):  # via torch
            with warnings.catch_warnings(record=True) as ref_w:
                warnings.simplefilter("always")
                getattr(TF, name)(x, y)
            with warnings.catch_warnings(record=True) as shim_w:
                warnings.simplefilter("always")
                shim_call()
            assert [str(w.message) for w in shim_w] == [str(w.message) for w in ref_w]
            assert [w.filename for w in shim_w] == [w.filename for w in ref_w] == [__file__]


# ---------------------------------------------------------------------------------------------
# binary cross entropy
# ---------------------------------------------------------------------------------------------


def _probabilities(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    p = _rand(shape, dtype, seed)
    flat = p.view(-1)
    edges = [0.0, 1.0, 0.0, 1.0, 0.5, 1e-30, 1 - 1e-7]
    flat[: min(len(edges), flat.numel())] = torch.tensor(edges[: flat.numel()], dtype=dtype)
    return p


BCE_SHAPES = [(4, 3), (), (7,), (0, 3), (2, 3, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_loss(reduction: str, dtype: torch.dtype) -> None:
    # Probabilities exactly 0 and 1, against targets 0 and 1 and in between: torch clamps each
    # log at -100, so the loss and the input's gradient stay finite; the target's is -logit.
    for i, shape in enumerate(BCE_SHAPES):
        p = _probabilities(shape, dtype, i)
        t = _rand(shape, dtype, 50 + i)
        if t.numel() >= 4:
            t.view(-1)[:4] = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=dtype)
        weights: list[torch.Tensor | None] = [None, _rand(shape, dtype, 7)]
        if len(shape) >= 1:
            weights.append(_rand(shape[-1:], dtype, 8))  # broadcast over leading dims
        for j, weight in enumerate(weights):
            rg = GRAD_COMBOS[(i + j) % 3]
            check_module(torch.nn.BCELoss(weight=weight, reduction=reduction),
                         shimnn.BCELoss(weight=weight, reduction=reduction), [p, t], rg, i)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_loss(reduction: str, dtype: torch.dtype) -> None:
    for i, shape in enumerate(BCE_SHAPES):
        x = _randn(shape, dtype, i, scale=5.0)
        if x.numel() >= 4:
            x.view(-1)[:4] = torch.tensor([1e3, -1e3, 1e3, -1e3], dtype=dtype)  # large logits
        t = _rand(shape, dtype, 50 + i)
        if t.numel() >= 4:
            t.view(-1)[:4] = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=dtype)
        options: list[dict[str, torch.Tensor | None]] = [{}, {"weight": _rand(shape, dtype, 3)}]
        if len(shape) >= 1:
            options += [{"pos_weight": _rand(shape[-1:], dtype, 4) * 3},
                        {"weight": _rand(shape[:1] + (1,) * (len(shape) - 1), dtype, 5),
                         "pos_weight": _rand(shape[-1:], dtype, 6) * 3}]
        for j, opts in enumerate(options):
            rg = GRAD_COMBOS[(i + j) % 3]
            check_module(torch.nn.BCEWithLogitsLoss(reduction=reduction, **opts),
                         shimnn.BCEWithLogitsLoss(reduction=reduction, **opts), [x, t], rg, i)


def test_bce_mixed_dtypes_and_legacy_arguments() -> None:
    x32, t64 = _randn((3, 4), torch.float32, 0), _rand((3, 4), torch.float64, 1)
    for reduction in REDUCTIONS:
        check_functional("binary_cross_entropy_with_logits", [x32, t64], [True, True],
                         reduction=reduction, weight=_rand((3, 1), torch.float32, 2),
                         pos_weight=_rand((4,), torch.float64, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for size_average, reduce in [(None, False), (False, None), (True, True)]:
            for cls in ("BCELoss", "BCEWithLogitsLoss"):
                ref = getattr(torch.nn, cls)(size_average=size_average, reduce=reduce)
                shim = getattr(shimnn, cls)(size_average=size_average, reduce=reduce)
                assert shim.reduction == ref.reduction
                check_module(ref, shim, [_rand((4, 2), torch.float64, 0),
                                         _rand((4, 2), torch.float64, 1)])
            check_functional("binary_cross_entropy",
                             [_rand((3,), torch.float32, 0), _rand((3,), torch.float32, 1)],
                             size_average=size_average, reduce=reduce)


def test_aten_binary_cross_entropy_with_logits() -> None:
    # torch.binary_cross_entropy_with_logits: the ATen op with an integer reduction.
    x, t = _randn((4, 3), torch.float64, 0), _rand((4, 3), torch.float64, 1)
    pw, grad = _rand((3,), torch.float64, 2), _randn((4, 3), torch.float64, 3)
    for reduction in (0, 1, 2):
        ref_x, ref_t = x.clone().requires_grad_(), t.clone().requires_grad_()
        ref = torch.binary_cross_entropy_with_logits(ref_x, ref_t, None, pw, reduction)
        ref.backward(grad if reduction == 0 else None)
        shim_x, shim_t = shimnn.Parameter(x.clone()), shimnn.Parameter(t.clone())
        with autograd_forbidden():
            out = torch.binary_cross_entropy_with_logits(shim_x, shim_t, None, pw, reduction)
            check_node_name(ref, out)
            out.backward(grad if reduction == 0 else None)
        assert_same(out, ref, "output")
        assert_same(shim_x.grad, ref_x.grad, "grad of input")
        assert_same(shim_t.grad, ref_t.grad, "grad of target")


# ---------------------------------------------------------------------------------------------
# nll_loss and cross_entropy
# ---------------------------------------------------------------------------------------------

# (input shape, target shape); the class dim has 4 classes.
CLASS_SHAPES = [((5, 4), (5,)), ((4,), ()), ((2, 4, 3), (2, 3)), ((2, 4, 3, 2), (2, 3, 2)),
                ((2, 4, 3, 2, 2), (2, 3, 2, 2)), ((0, 4), (0,)), ((0, 4, 3), (0, 3)),
                ((2, 4, 0), (2, 0)), ((1, 4), (1,))]


def _targets(shape: tuple[int, ...], seed: int, ignored: int = 1) -> torch.Tensor:
    t = torch.randint(0, 4, shape, generator=_gen(seed))
    if t.numel() > 1:
        t.view(-1)[:ignored] = -100
    return t


def _layouts(shape: tuple[int, ...]) -> list[str]:
    # A permuted (non-contiguous) input takes torch's .contiguous() copy for 3-d and 5-d+.
    return ["contiguous", "permuted"] if len(shape) >= 3 else ["contiguous"]


def _class_inputs(shape: tuple[int, ...], dtype: torch.dtype, seed: int, layout: str
                  ) -> torch.Tensor:
    if layout == "permuted" and len(shape) >= 3:
        x = _randn(tuple(reversed(shape)), dtype, seed, scale=3.0)
        return x.permute(*reversed(range(len(shape))))
    return _randn(shape, dtype, seed, scale=3.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(reduction: str, dtype: torch.dtype) -> None:
    for i, (xs, ts) in enumerate(CLASS_SHAPES):
        for layout in _layouts(xs):
            logp = TF.log_softmax(_class_inputs(xs, dtype, i, layout), 1 if len(xs) > 1 else 0)
            for weight, ignore_index in ((None, -100), (_rand((4,), dtype, 9), -100),
                                         (_rand((4,), dtype, 9), 2)):
                t = _targets(ts, i)
                t[t == -100] = ignore_index
                check_module(
                    torch.nn.NLLLoss(weight=weight, ignore_index=ignore_index,
                                     reduction=reduction),
                    shimnn.NLLLoss(weight=weight, ignore_index=ignore_index, reduction=reduction),
                    [logp, t], [True, False], i)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_indices(reduction: str, dtype: torch.dtype) -> None:
    for i, (xs, ts) in enumerate(CLASS_SHAPES):
        for layout in _layouts(xs):
            x = _class_inputs(xs, dtype, i, layout)
            t = _targets(ts, i)
            for weight in (None, _rand((4,), dtype, 9)):
                for smoothing in (0.0, 0.2, 1.0) if i < 2 else (0.0, 0.2):
                    check_module(
                        torch.nn.CrossEntropyLoss(weight=weight, reduction=reduction,
                                                  label_smoothing=smoothing),
                        shimnn.CrossEntropyLoss(weight=weight, reduction=reduction,
                                                label_smoothing=smoothing),
                        [x, t], [True, False], i)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_ignored_and_extreme(reduction: str) -> None:
    x = _randn((5, 3), torch.float32, 0)
    every_target_ignored = torch.full((5,), -100)
    ignore_one = torch.tensor([0, 1, 2, 1, 0])
    large = torch.tensor([[1e4, -1e4, 0.0], [3e38, 0.0, -3e38], [float("inf"), 0.0, 1.0],
                          [88.0, 89.0, -104.0], [1e-30, 0.0, -1e-30]])
    for weight in (None, torch.tensor([0.2, 0.0, 3.0])):
        for smoothing in (0.0, 0.1):
            def loss(nn: Any, ignore_index: int = -100) -> Any:
                return nn.CrossEntropyLoss(weight=weight, reduction=reduction,
                                           ignore_index=ignore_index, label_smoothing=smoothing)

            # every target ignored: the mean is nan (0/0), as in torch
            check_module(loss(torch.nn), loss(shimnn), [x, every_target_ignored], [True, False])
            check_module(loss(torch.nn, 1), loss(shimnn, 1), [x, ignore_one], [True, False])
            check_module(loss(torch.nn), loss(shimnn), [large, ignore_one], [True, False])
            if weight is None or not smoothing:  # else torch's gather refuses uint8 indices
                check_module(loss(torch.nn), loss(shimnn),
                             [x, torch.tensor([0, 1, 2, 1, 0], dtype=torch.uint8)],
                             [True, False])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probabilities(reduction: str, dtype: torch.dtype) -> None:
    for i, (xs, _) in enumerate(CLASS_SHAPES[:7]):
        x = _randn(xs, dtype, i, scale=3.0)
        target = _rand(xs, dtype, 40 + i)
        if len(xs) > 1 and target.numel():
            target = target / target.sum(1, keepdim=True)
        for weight in (None, _rand((4,), dtype, 9)):
            for k, smoothing in enumerate((0.0, 0.3)):
                check_module(
                    torch.nn.CrossEntropyLoss(weight=weight, reduction=reduction,
                                              label_smoothing=smoothing),
                    shimnn.CrossEntropyLoss(weight=weight, reduction=reduction,
                                            label_smoothing=smoothing),
                    [x, target], GRAD_COMBOS[(i + k) % 3], i)
                if weight is not None:  # a weight that requires grad: torch differentiates it
                    def ref(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                        return TF.cross_entropy(a, b, weight=c, reduction=reduction,
                                                label_smoothing=smoothing)

                    def shim(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                        return SF.cross_entropy(a, b, weight=c, reduction=reduction,
                                                label_smoothing=smoothing)

                    rg3 = [True, True, True] if (i + k) % 2 else [False, False, True]
                    check_module(Fn(ref), Fn(shim), [x, target, weight], rg3, i)


def test_cross_entropy_probabilities_mixed_dtypes() -> None:
    x, t = _randn((3, 4), torch.float32, 0), _rand((3, 4), torch.float64, 1)
    for reduction in REDUCTIONS:
        check_functional("cross_entropy", [x, t], [True, True], reduction=reduction,
                         weight=_rand((4,), torch.float64, 2), label_smoothing=0.2)
        check_functional("cross_entropy", [t, x], [True, True], reduction=reduction)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(0, 4),
    classes=st.integers(1, 5),
    spatial=st.lists(st.integers(0, 3), min_size=0, max_size=3),
    weighted=st.booleans(),
    smoothing=st.sampled_from([0.0, 0.05, 0.5]),
    ignored=st.integers(0, 3),
    reduction=st.sampled_from(REDUCTIONS),
    dtype=st.sampled_from(DTYPES),
    probabilities=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_and_nll_random_shapes(batch: int, classes: int, spatial: list[int],
                                             weighted: bool, smoothing: float, ignored: int,
                                             reduction: str, dtype: torch.dtype,
                                             probabilities: bool, seed: int) -> None:
    shape = (batch, classes, *spatial)
    x = _randn(shape, dtype, seed, scale=4.0)
    weight = _rand((classes,), dtype, seed + 1) if weighted else None
    if probabilities:
        target = _rand(shape, dtype, seed + 2)
        rg = [True, True]
    else:
        target = torch.randint(0, classes, (batch, *spatial), generator=_gen(seed + 3))
        if target.numel():
            target.view(-1)[: min(ignored, target.numel())] = -100
        rg = [True, False]
        check_module(torch.nn.NLLLoss(weight=weight, reduction=reduction),
                     shimnn.NLLLoss(weight=weight, reduction=reduction),
                     [TF.log_softmax(x, 1), target], rg, seed)
    check_module(torch.nn.CrossEntropyLoss(weight=weight, reduction=reduction,
                                           label_smoothing=smoothing),
                 shimnn.CrossEntropyLoss(weight=weight, reduction=reduction,
                                         label_smoothing=smoothing),
                 [x, target], rg, seed)


def test_class_losses_legacy_arguments() -> None:
    x = _randn((4, 3), torch.float64, 0)
    t = torch.tensor([0, 2, 1, -100])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for size_average, reduce in [(None, False), (False, None), (True, True), (False, True)]:
            for cls in ("NLLLoss", "CrossEntropyLoss"):
                ref = getattr(torch.nn, cls)(size_average=size_average, reduce=reduce)
                shim = getattr(shimnn, cls)(size_average=size_average, reduce=reduce)
                assert shim.reduction == ref.reduction
                check_module(ref, shim, [x, t], [True, False])
                check_functional("nll_loss" if cls == "NLLLoss" else "cross_entropy", [x, t],
                                 [True, False], size_average=size_average, reduce=reduce)


# ---------------------------------------------------------------------------------------------
# node names, dispatch from torch's functions, no-grad
# ---------------------------------------------------------------------------------------------

NODE_CASES: list[tuple[str, Callable[[], list[torch.Tensor]], dict[str, Any]]] = [
    ("l1_loss", lambda: [torch.randn(3), torch.randn(3)], {}),
    ("l1_loss", lambda: [torch.randn(3), torch.randn(3)], {"reduction": "sum"}),
    ("l1_loss", lambda: [torch.randn(3), torch.randn(3)], {"reduction": "none"}),
    ("l1_loss", lambda: [torch.randn(3), torch.randn(3)], {"weight": torch.rand(3)}),
    ("smooth_l1_loss", lambda: [torch.randn(3), torch.randn(3)], {}),
    ("smooth_l1_loss", lambda: [torch.randn(3), torch.randn(3)], {"beta": 0.0}),
    ("huber_loss", lambda: [torch.randn(3), torch.randn(3)], {}),
    ("huber_loss", lambda: [torch.randn(3), torch.randn(3)], {"weight": torch.rand(3)}),
    ("binary_cross_entropy", lambda: [torch.rand(3), torch.rand(3)], {}),
    ("binary_cross_entropy_with_logits", lambda: [torch.randn(3), torch.rand(3)], {}),
    ("nll_loss", lambda: [torch.randn(2, 3), torch.tensor([0, 2])], {}),
    ("nll_loss", lambda: [torch.randn(2, 3, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long)], {}),
    ("nll_loss", lambda: [torch.randn(2, 3, 2), torch.zeros(2, 2, dtype=torch.long)],
     {"reduction": "none"}),
    ("cross_entropy", lambda: [torch.randn(2, 3), torch.tensor([0, 2])], {}),
    ("cross_entropy", lambda: [torch.randn(2, 3), torch.tensor([0, 2])],
     {"label_smoothing": 0.1}),
    ("cross_entropy", lambda: [torch.randn(2, 3), torch.rand(2, 3)], {}),
    ("cross_entropy", lambda: [torch.randn(0, 3), torch.rand(0, 3)], {}),
    ("cross_entropy", lambda: [torch.randn(2, 3), torch.rand(2, 3)], {"reduction": "none"}),
]


@pytest.mark.parametrize("case", range(len(NODE_CASES)))
def test_torch_functions_dispatch_to_shimnn(case: int) -> None:
    # torch.nn.functional.X on a shimnn parameter runs shimnn's loss: same value, no autograd
    # graph, a node named as torch names its own.
    name, make_args, kwargs = NODE_CASES[case]
    torch.manual_seed(case)
    args = make_args()
    ref_args = [args[0].clone().requires_grad_(), *args[1:]]
    ref = getattr(TF, name)(*ref_args, **kwargs)
    ref.sum().backward()
    param = shimnn.Parameter(args[0].clone())
    with autograd_forbidden():
        out = getattr(TF, name)(param, *args[1:], **kwargs)
        assert_no_autograd_graph(out)
        check_node_name(ref, out)
        out.sum().backward()
    assert_same(out, ref, "output")
    assert_same(param.grad, ref_args[0].grad, "grad")


def test_torch_l1_loss_keeps_its_weight() -> None:
    # torch 2.13's l1_loss forwards a tensor-subclass call without `weight`; shimnn recovers it.
    x, y, w = torch.randn(3, 4), torch.randn(3, 4), torch.rand(3, 4)
    ref_x = x.clone().requires_grad_()
    ref = TF.l1_loss(ref_x, y, weight=w)
    ref.backward()
    param = shimnn.Parameter(x.clone())
    with autograd_forbidden():
        out = TF.l1_loss(param, y, weight=w)
        out.backward()
    assert_same(out, ref, "output")
    assert_same(param.grad, ref_x.grad, "grad")


def test_no_grad_records_nothing() -> None:
    x = shimnn.Parameter(torch.randn(4, 3))
    t = torch.tensor([0, 2, 1, 1])
    with autograd_forbidden():
        for ctx in (torch.no_grad, torch.inference_mode):
            with ctx():
                for out in (SF.cross_entropy(x, t, label_smoothing=0.1), SF.nll_loss(x, t),
                            SF.l1_loss(x, torch.zeros(4, 3)),
                            SF.binary_cross_entropy_with_logits(x, torch.ones(4, 3))):
                    assert isinstance(out, shimnn.TrackedTensor)
                    assert out.shim_fn is None and not out.requires_grad
        # A weight that requires grad is only refused when a graph is recorded, as in torch.
        with torch.no_grad():
            SF.nll_loss(x, t, weight=torch.ones(3, requires_grad=True))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).requires_grad_()


def _p(*shape: int) -> torch.Tensor:
    return torch.rand(*shape).requires_grad_()


_T = torch.tensor([0, 1, 2])
_W = torch.rand(4).requires_grad_()

ERROR_CASES: dict[str, Callable[[Any], Any]] = {
    "l1 invalid reduction": lambda F: F.l1_loss(_x(3), _x(3), reduction="avg"),
    "l1 not broadcastable": lambda F: F.l1_loss(_x(3), _x(4)),
    "l1 weight invalid reduction": lambda F: F.l1_loss(_x(3), _x(3), reduction="elementwise_mean",
                                                       weight=torch.rand(3)),
    "l1 weight size": lambda F: F.l1_loss(_x(3), _x(3), weight=torch.rand(1)),
    "smooth_l1 invalid reduction": lambda F: F.smooth_l1_loss(_x(3), _x(3), reduction="avg"),
    "smooth_l1 negative beta": lambda F: F.smooth_l1_loss(_x(3), _x(3), beta=-1.0),
    "huber invalid reduction": lambda F: F.huber_loss(_x(3), _x(3), reduction="avg"),
    "huber zero delta": lambda F: F.huber_loss(_x(3), _x(3), delta=0.0),
    "huber weight invalid reduction": lambda F: F.huber_loss(_x(3), _x(3), reduction="x",
                                                             weight=torch.rand(3)),
    "huber weight size": lambda F: F.huber_loss(_x(3), _x(3), weight=torch.rand(2)),
    "bce invalid reduction": lambda F: F.binary_cross_entropy(_p(3), torch.rand(3),
                                                              reduction="avg"),
    "bce target shape": lambda F: F.binary_cross_entropy(_p(3, 4), torch.rand(4)),
    "bce input above 1": lambda F: F.binary_cross_entropy(
        (torch.rand(3) + 1.5).requires_grad_(), torch.rand(3)),
    "bce weight requires grad": lambda F: F.binary_cross_entropy(_p(3, 4), torch.rand(3, 4),
                                                                 weight=_W),
    "bce weight not broadcastable": lambda F: F.binary_cross_entropy(_p(3, 4), torch.rand(3, 4),
                                                                     weight=torch.rand(5)),
    "bce weight larger": lambda F: F.binary_cross_entropy(_p(3, 4), torch.rand(3, 4),
                                                          weight=torch.rand(2, 3, 4)),
    "bce target dtype": lambda F: F.binary_cross_entropy(_p(3), torch.rand(3).double()),
    "bce_logits invalid reduction": lambda F: F.binary_cross_entropy_with_logits(
        _x(3), torch.rand(3), reduction="avg"),
    "bce_logits target shape": lambda F: F.binary_cross_entropy_with_logits(_x(3, 4),
                                                                            torch.rand(4)),
    "bce_logits weight requires grad": lambda F: F.binary_cross_entropy_with_logits(
        _x(3, 4), torch.rand(3, 4), weight=_W),
    "bce_logits pos_weight requires grad": lambda F: F.binary_cross_entropy_with_logits(
        _x(3, 4), torch.rand(3, 4), pos_weight=_W),
    "bce_logits weight larger": lambda F: F.binary_cross_entropy_with_logits(
        _x(3, 4), torch.rand(3, 4), weight=torch.rand(2, 3, 4)),
    "bce_logits pos_weight not broadcastable": lambda F: F.binary_cross_entropy_with_logits(
        _x(3, 4), torch.rand(3, 4), pos_weight=torch.rand(3)),
    "nll invalid reduction": lambda F: F.nll_loss(_x(3, 4), _T, reduction="avg"),
    "nll class index too large": lambda F: F.nll_loss(_x(3, 4), torch.tensor([0, 1, 4])),
    "nll negative class index": lambda F: F.nll_loss(_x(3, 4), torch.tensor([0, 1, -1])),
    "nll spatial index out of range": lambda F: F.nll_loss(
        _x(2, 3, 4), torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0]])),
    "nll float target": lambda F: F.nll_loss(_x(3, 4), _T.float()),
    "nll int32 target": lambda F: F.nll_loss(_x(3, 4), _T.int()),
    "nll batch mismatch": lambda F: F.nll_loss(_x(3, 4), _T[:2]),
    "nll 0-d input": lambda F: F.nll_loss(torch.randn(()).requires_grad_(), torch.tensor(1)),
    "nll 0-d target": lambda F: F.nll_loss(_x(3, 4), torch.tensor(1)),
    "nll 1-d input, 1-d target": lambda F: F.nll_loss(_x(4), _T),
    "nll 2-d target": lambda F: F.nll_loss(_x(3, 4), torch.zeros(3, 2, dtype=torch.long)),
    "nll 3-d target shape": lambda F: F.nll_loss(_x(2, 3, 4),
                                                 torch.zeros(2, 5, dtype=torch.long)),
    "nll 4-d target shape": lambda F: F.nll_loss(_x(2, 3, 4, 5),
                                                 torch.zeros(2, 5, 4, dtype=torch.long)),
    "nll weight shape": lambda F: F.nll_loss(_x(3, 4), _T, weight=torch.rand(3)),
    "nll weight dtype": lambda F: F.nll_loss(_x(3, 4), _T, weight=torch.rand(4).double()),
    "nll weight requires grad": lambda F: F.nll_loss(_x(3, 4), _T, weight=_W),
    "nll weight requires grad, input not": lambda F: F.nll_loss(torch.randn(3, 4), _T,
                                                                weight=_W),
    "nll weight requires grad, bad index": lambda F: F.nll_loss(
        _x(3, 4), torch.tensor([0, 1, 9]), weight=_W),
    "nll weight requires grad, bad batch": lambda F: F.nll_loss(_x(3, 4), _T[:2], weight=_W),
    "ce invalid reduction": lambda F: F.cross_entropy(_x(3, 4), _T, reduction="avg"),
    "ce class index too large": lambda F: F.cross_entropy(_x(3, 4), torch.tensor([0, 1, 4])),
    "ce class index too large, smoothing": lambda F: F.cross_entropy(
        _x(3, 4), torch.tensor([0, 1, 4]), label_smoothing=0.2),
    "ce int32 target": lambda F: F.cross_entropy(_x(3, 4), _T.int()),
    "ce int32 target, smoothing": lambda F: F.cross_entropy(_x(3, 4), _T.int(),
                                                            label_smoothing=0.2),
    "ce batch mismatch": lambda F: F.cross_entropy(_x(3, 4), _T[:2]),
    "ce 2-d target": lambda F: F.cross_entropy(_x(3, 4), torch.zeros(3, 2, dtype=torch.long)),
    "ce spatial target shape": lambda F: F.cross_entropy(_x(2, 3, 4),
                                                         torch.zeros(2, 5, dtype=torch.long)),
    "ce 0-d input, 0-d index": lambda F: F.cross_entropy(torch.randn(()).requires_grad_(),
                                                         torch.tensor(1)),
    "ce 0-d input, 0-d probability": lambda F: F.cross_entropy(
        torch.randn(()).requires_grad_(), torch.tensor(1.0)),
    "ce smoothing above 1": lambda F: F.cross_entropy(_x(3, 4), _T, label_smoothing=1.5),
    "ce weight shape": lambda F: F.cross_entropy(_x(3, 4), _T, weight=torch.rand(3)),
    "ce weight requires grad": lambda F: F.cross_entropy(_x(3, 4), _T, weight=_W),
    "ce weight requires grad, smoothing": lambda F: F.cross_entropy(
        _x(3, 4), _T, weight=_W, label_smoothing=0.1),
    "ce probabilities, integer target": lambda F: F.cross_entropy(
        _x(3, 4), torch.ones(3, 4, dtype=torch.long)),
    "ce probabilities, ignore_index": lambda F: F.cross_entropy(_x(3, 4), torch.rand(3, 4),
                                                                ignore_index=0),
    "ce probabilities, weight shape": lambda F: F.cross_entropy(_x(3, 4), torch.rand(3, 4),
                                                                weight=torch.rand(3)),
    "ce probabilities, 2-d weight": lambda F: F.cross_entropy(_x(3, 4), torch.rand(3, 4),
                                                              weight=torch.rand(1, 4)),
    "ce probabilities, smoothing above 1": lambda F: F.cross_entropy(
        _x(3, 4), torch.rand(3, 4), label_smoothing=1.5),
    "ce uint8 target, weight, smoothing": lambda F: F.cross_entropy(
        _x(3, 4), _T.to(torch.uint8), weight=torch.rand(4), label_smoothing=0.1),
    "ce integer input": lambda F: F.cross_entropy(torch.ones(3, 4, dtype=torch.long), _T),
}


@pytest.mark.parametrize("grad_mode", [True, False])
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_like_torch(case: str, grad_mode: bool) -> None:
    call = ERROR_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.set_grad_enabled(grad_mode):
            try:
                call(TF)
            except Exception:
                pass
            else:
                assert not grad_mode, "torch raises in grad mode"
                with autograd_forbidden():
                    call(SF)  # torch does not raise without grad mode: neither does shimnn
                return
            ref, shim = check_raises_like(lambda: call(TF), lambda: call(SF))
    assert str(shim) == str(ref)


def test_invalid_reduction_in_modules() -> None:
    x, p, t = torch.randn(3, 4), torch.rand(3, 4), torch.tensor([0, 1, 2])
    for cls, args in [("L1Loss", (x, x)), ("SmoothL1Loss", (x, x)), ("HuberLoss", (x, x)),
                      ("BCELoss", (p, p)), ("BCEWithLogitsLoss", (x, p)), ("NLLLoss", (x, t)),
                      ("CrossEntropyLoss", (x, t)), ("CrossEntropyLoss", (x, p))]:
        ref, shim = check_raises_like(lambda: getattr(torch.nn, cls)(reduction="avg")(*args),
                                      lambda: getattr(shimnn, cls)(reduction="avg")(*args))
        assert type(ref) is ValueError
        assert_error_like(ref, shim, cls)


def test_huber_delta_type_checked() -> None:
    """torch 2.13 checks delta's type in HuberLoss's constructor, 2.11 and 2.12 only in the
    forward: shimnn's outcome is the installed torch's, at the same step."""
    ref, shim = check_same_outcome(lambda: torch.nn.HuberLoss(delta="1"),  # type: ignore[arg-type]
                                   lambda: shimnn.HuberLoss(delta="1"))  # type: ignore[arg-type]
    if not isinstance(ref, BaseException):
        x, y = torch.randn(3), torch.randn(3)
        check_same_outcome(lambda: ref(x, y), lambda: shim(shimnn.Parameter(x.clone()), y))


def test_complex_inputs_refused_with_a_gradient() -> None:
    x = shimnn.Parameter(torch.randn(3, dtype=torch.complex64))
    with pytest.raises(NotImplementedError, match="real dtypes"):
        SF.l1_loss(x, torch.zeros(3, dtype=torch.complex64))


# ---------------------------------------------------------------------------------------------
# API: signatures, attributes, buffers, repr
# ---------------------------------------------------------------------------------------------


def _signature(fn: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", FUNCTIONAL_NAMES)
def test_functional_signatures_match_torch(name: str) -> None:
    assert _signature(getattr(SF, name)) == _signature(getattr(TF, name))
    assert name in SF.__all__
    doc = getattr(SF, name).__doc__
    assert doc and "Backward" in doc and "Shape" in doc


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_module_api_matches_torch(name: str) -> None:
    ref_cls, shim_cls = getattr(torch.nn, name), getattr(shimnn, name)
    assert _signature(shim_cls.__init__) == _signature(ref_cls.__init__)
    assert _signature(shim_cls.forward) == _signature(ref_cls.forward)
    assert getattr(shim_cls, "__constants__", None) == getattr(ref_cls, "__constants__", None)
    assert name in shimnn.modules.loss.__all__ and name in shimnn.__all__
    assert issubclass(shim_cls, ref_cls)  # isinstance checks keyed on torch's classes hold
    private = [c.__name__ for c in shim_cls.__mro__ if c.__name__.startswith("_")]
    assert list(dict.fromkeys(private))[:2] == \
        [c.__name__ for c in ref_cls.__mro__ if c.__name__.startswith("_")][:2]
    assert shim_cls.__doc__
    ref, shim = ref_cls(), shim_cls()
    assert repr(shim) == repr(ref)
    assert vars(shim).keys() >= {"reduction"}
    for attr in ("reduction", "ignore_index", "label_smoothing", "beta", "delta"):
        assert getattr(shim, attr, None) == getattr(ref, attr, None), attr


def test_weight_buffers_like_torch() -> None:
    w, pw = torch.rand(4), torch.rand(4)
    cases = [("BCELoss", {"weight": w}), ("NLLLoss", {"weight": w}),
             ("CrossEntropyLoss", {"weight": w, "ignore_index": 3, "label_smoothing": 0.25}),
             ("BCEWithLogitsLoss", {"weight": w, "pos_weight": pw}),
             ("BCEWithLogitsLoss", {"pos_weight": pw}),
             ("SmoothL1Loss", {"beta": 0.5}), ("HuberLoss", {"delta": 2})]
    for name, kwargs in cases:
        ref = getattr(torch.nn, name)(**kwargs)
        shim = getattr(shimnn, name)(**kwargs)
        assert repr(shim) == repr(ref)
        assert list(shim.state_dict()) == list(ref.state_dict())
        assert [n for n, _ in shim.named_buffers()] == [n for n, _ in ref.named_buffers()]
        for key, value in ref.state_dict().items():
            assert_same(shim.state_dict()[key], value, key)
        for attr, value in kwargs.items():
            assert getattr(shim, attr) is value
        shim.load_state_dict(ref.state_dict())
        if "weight" in kwargs:
            shim64 = shim.double()
            assert shim64.weight is not None and shim64.weight.dtype == torch.float64


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def _train(nn: Any, optim: Any, model: torch.nn.Module, loss_fn: torch.nn.Module,
           x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for step in range(steps):
        batch = slice((step * 16) % 64, (step * 16) % 64 + 16)
        opt.zero_grad()
        loss = loss_fn(model(x[batch]), y[batch])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "weight": [0.5, 1.0, 2.0]}])
def test_classifier_training_bit_identical(options: dict[str, Any], dtype: torch.dtype) -> None:
    def make(nn: Any) -> Any:
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)

    ref_model, shim_model = twin_modules(make, seed=5)
    x = _randn((64, 4), dtype, 1)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    kwargs = dict(options)
    if "weight" in kwargs:
        kwargs["weight"] = torch.tensor(kwargs["weight"], dtype=dtype)
    ref = _train(torch.nn, torch.optim, ref_model, torch.nn.CrossEntropyLoss(**kwargs), x, y, 30)
    with autograd_forbidden():
        shim = _train(shimnn, shimnn.optim, shim_model, shimnn.CrossEntropyLoss(**kwargs), x, y,
                      30)
    assert shim == ref
    assert ref[-1] < ref[0]
    for (name, a), b in zip(shim_model.named_parameters(), ref_model.parameters()):
        assert_same(a, b, name)
        assert_no_autograd_graph(a, a.grad)
