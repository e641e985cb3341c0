"""Convolutions against torch: values and gradients bit for bit over many configurations,
channels_last, modules (padding modes, init, repr), errors, and the adversarial cases."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import shimnn
import shimnn.functional as F
from conftest import assert_same, autograd_forbidden
from parity import check_function, check_module, check_raises_like, twin_modules

DTYPES = [torch.float32, torch.float64]
# (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups)
CONFIGS: list[tuple[Any, ...]] = [
    (2, 3, 4, 8, 8, 3, 1, 1, 1, 1),
    (2, 4, 4, 7, 9, 3, 2, 0, 1, 2),
    (1, 4, 4, 6, 6, 3, 1, "same", 2, 4),  # depthwise, dilated, 'same'
    (2, 3, 5, 6, 7, 2, 1, "same", 1, 1),  # even kernel: torch pads the input first
    (3, 2, 6, 5, 5, (2, 3), (1, 2), (1, 0), 1, 2),
    (2, 3, 4, 8, 8, 3, 1, "valid", 1, 1),
    (4, 1, 8, 8, 8, 5, 1, 2, 1, 1),
    (2, 6, 6, 9, 9, 3, 3, 1, (2, 1), 6),
]


def _kernel(k: Any) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else k


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, tuple) else v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_conv2d_and_conv1d(config: tuple[Any, ...], channels_last: bool,
                           dtype: torch.dtype) -> None:
    n, cin, cout, h, w, k, s, p, d, g = config
    torch.manual_seed(0)
    x = torch.randn(n, cin, h, w, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin // g, *_kernel(k), dtype=dtype)
    bias = torch.randn(cout, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's once-per-process 'same' padding warning
        check_function(lambda x, w, b: TF.conv2d(x, w, b, s, p, d, g), x, weight, bias)
        # The first layer: no input gradient (torch's output mask [False, True, True]).
        check_function(lambda x, w, b: TF.conv2d(x, w, b, s, p, d, g), x, weight, bias,
                       requires_grad=[False, True, True], seed=1)
        check_function(lambda x, w: torch.conv2d(x, w, None, s, p, d, g), x, weight, seed=2)
        check_function(lambda x, w: TF.conv2d(x, w, None, s, p, d, g), x, weight,
                       requires_grad=[True, False], seed=3)
        check_function(lambda x, w, b: TF.conv2d(x[0], w, b, s, p, d, g), x, weight, bias,
                       seed=4)  # unbatched
        check_function(lambda x, w, b: TF.conv1d(x[:, :, 0], w[..., 0], b, _first(s),
                                                 _first(p), _first(d), g), x, weight, bias,
                       seed=5)
        check_function(lambda x, w, b: TF.conv1d(x[-1, :, 0], w[..., 0], b, _first(s),
                                                 _first(p), _first(d), g), x, weight, bias,
                       seed=6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("config", [c for c in CONFIGS if not isinstance(c[7], str)], ids=str)
def test_conv_transpose(config: tuple[Any, ...], channels_last: bool,
                        dtype: torch.dtype) -> None:
    n, cin, cout, h, w, k, s, p, d, g = config
    torch.manual_seed(1)
    x = torch.randn(n, cin, h, w, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(cin, cout // g, *_kernel(k), dtype=dtype)
    bias = torch.randn(cout, dtype=dtype)
    check_function(lambda x, w, b: TF.conv_transpose2d(x, w, b, s, p, 0, g, d), x, weight, bias)
    check_function(lambda x, w, b: TF.conv_transpose2d(x, w, b, 2, p, 1, g, d), x, weight, bias,
                   seed=1)
    check_function(lambda x, w, b: TF.conv_transpose2d(x[0], w, b, 2, p, 1, g, d), x, weight,
                   bias, requires_grad=[False, True, True], seed=2)
    check_function(lambda x, w, b: TF.conv_transpose1d(x[:, :, 1], w[..., 0], b, 2, _first(p),
                                                       1, g, _first(d)), x, weight, bias,
                   seed=3)
    check_function(lambda x, w, b: torch.convolution(x, w, b, [2, 2], [0, 0], [1, 1], True,
                                                     [1, 0], g), x, weight, bias, seed=4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), cin=st.integers(1, 4), cout=st.integers(1, 4),
       h=st.integers(3, 9), w=st.integers(3, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
       sh=st.integers(1, 3), pad=st.integers(0, 2), dil=st.integers(1, 2),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_conv2d_random_shapes(n: int, cin: int, cout: int, h: int, w: int, kh: int, kw: int,
                              sh: int, pad: int, dil: int, dtype: torch.dtype,
                              seed: int) -> None:
    if (h + 2 * pad - dil * (kh - 1) - 1) < 0 or (w + 2 * pad - dil * (kw - 1) - 1) < 0:
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g, dtype=dtype)
    weight = torch.randn(cout, cin, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    check_function(lambda x, w, b: TF.conv2d(x, w, b, sh, pad, dil), x, weight, bias, seed=seed)


def test_gradient_keeps_torchs_memory_format() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    weight = torch.randn(4, 3, 3, 3)
    ref_x, ref_w = x.clone().requires_grad_(), weight.clone().requires_grad_()
    TF.conv2d(ref_x, ref_w, padding=1).sum().backward()
    shim_x, shim_w = shimnn.Parameter(x.clone()), shimnn.Parameter(weight.clone())
    with autograd_forbidden():
        out = F.conv2d(shim_x, shim_w, padding=1)
        assert out.stride() == TF.conv2d(x, weight, padding=1).stride()
        out.sum().backward()
    assert shim_x.grad is not None and ref_x.grad is not None
    assert shim_x.grad.stride() == ref_x.grad.stride()
    assert_same(shim_x.grad, ref_x.grad)
    assert_same(shim_w.grad, ref_w.grad)


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------

MODULES: list[tuple[str, tuple[Any, ...], dict[str, Any], tuple[int, ...]]] = [
    ("Conv2d", (3, 4, 3), {}, (2, 3, 7, 7)),
    ("Conv2d", (3, 6, 3), {"stride": 2, "padding": 1, "groups": 3, "bias": False}, (2, 3, 8, 8)),
    ("Conv2d", (3, 4, (3, 2)), {"padding": "same", "dilation": (1, 2)}, (2, 3, 7, 7)),
    ("Conv2d", (3, 4, 4), {"padding": "same"}, (2, 3, 7, 7)),
    ("Conv2d", (2, 4, 3), {"padding": 2, "padding_mode": "reflect"}, (2, 2, 6, 6)),
    ("Conv2d", (2, 4, 3), {"padding": (1, 2), "padding_mode": "replicate"}, (2, 2, 6, 6)),
    ("Conv2d", (2, 4, 3), {"padding": 1, "padding_mode": "circular"}, (2, 2, 5, 6)),
    ("Conv2d", (2, 4, 4), {"padding": "same", "padding_mode": "circular"}, (2, 2, 5, 6)),
    ("Conv2d", (2, 4, 3), {"padding": 1, "padding_mode": "reflect"}, (2, 5, 6)),
    ("Conv1d", (3, 4, 3), {}, (2, 3, 9)),
    ("Conv1d", (4, 4, 3), {"groups": 4, "padding": "same", "padding_mode": "reflect"}, (2, 4, 9)),
    ("Conv1d", (3, 4, 2), {"padding": 1, "padding_mode": "circular"}, (3, 9)),
    ("ConvTranspose2d", (3, 4, 3), {"stride": 2, "output_padding": 1}, (2, 3, 5, 5)),
    ("ConvTranspose2d", (4, 4, 3), {"groups": 2, "dilation": 2, "bias": False}, (4, 5, 5)),
    ("ConvTranspose1d", (3, 4, 3), {"stride": 3, "padding": 1}, (2, 3, 5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MODULES, ids=lambda c: f"{c[0]}{c[1]}{c[2]}")
def test_modules(case: tuple[str, tuple[Any, ...], dict[str, Any], tuple[int, ...]],
                 dtype: torch.dtype) -> None:
    name, args, kwargs, shape = case
    ref, shim = twin_modules(lambda nn: getattr(nn, name)(*args, **kwargs).to(dtype))
    assert repr(shim) == repr(ref)
    assert isinstance(shim, getattr(torch.nn, name))
    x = torch.randn(shape, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_module(ref, shim, [x])
        check_module(ref, shim, [x], requires_grad=[False], seed=1)
        if len(shape) == 4:
            check_module(ref, shim, [x.to(memory_format=torch.channels_last)], seed=2)


def test_conv_transpose_output_size() -> None:
    ref, shim = twin_modules(lambda nn: nn.ConvTranspose2d(3, 2, 3, stride=2))
    x = torch.randn(1, 3, 4, 4)

    class WithSize(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, t: torch.Tensor) -> Any:
            return self.m(t, output_size=[10, 10])

    check_module(WithSize(ref), WithSize(shim), [x])


def test_conv_chain_trains_like_torch() -> None:
    """A small CNN (conv, relu in place, pool, flatten, linear) for a few SGD steps."""

    def make(nn: Any) -> Any:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(),
                             nn.Linear(6, 3))

    ref, shim = twin_modules(make)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    opt_shim = shimnn.optim.SGD(shim.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        x = torch.randn(8, 1, 6, 6, generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        loss_ref = TF.cross_entropy(ref(x), y)
        opt_ref.zero_grad()
        loss_ref.backward()
        opt_ref.step()
        with autograd_forbidden():
            loss = shimnn.functional.cross_entropy(shim(x), y)
            opt_shim.zero_grad()
            loss.backward()
            opt_shim.step()
        assert_same(loss, loss_ref, "loss")
    for (name, a), b in zip(shim.state_dict().items(), ref.state_dict().values()):
        assert_same(a, b, name)


# ---------------------------------------------------------------------------------------------
# errors and adversarial cases
# ---------------------------------------------------------------------------------------------


def test_errors_like_torch() -> None:
    w = torch.randn(4, 3, 3, 3)
    calls = [
        lambda x, w: TF.conv2d(x, w),
        lambda x, w: TF.conv2d(x[:, :2], w),  # channel mismatch
        lambda x, w: TF.conv2d(x[0, 0], w),  # 2-d input
        lambda x, w: TF.conv2d(x, w, stride=2, padding="same"),
        lambda x, w: TF.conv2d(x, w, padding="full"),
        lambda x, w: TF.conv2d(x, w, groups=2),
        lambda x, w: TF.conv2d(x, w.double()),
        lambda x, w: TF.conv2d(x[..., :2, :2], w),  # kernel larger than the input
        lambda x, w: TF.conv2d(x, w, stride=(1, 2, 3)),
        lambda x, w: TF.conv_transpose2d(x, w, output_padding=2),
        lambda x, w: torch.convolution(x[0], w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
    ]
    x = torch.randn(2, 3, 5, 5)
    for call in calls[1:]:
        ref, shim = check_raises_like(lambda: call(x.clone().requires_grad_(), w),
                                      lambda: call(shimnn.Parameter(x.clone()), w))
        assert str(shim) == str(ref)
    m = shimnn.Conv2d(3, 4, 3)
    r, s = check_raises_like(lambda: torch.nn.Conv2d(3, 4, 3)(torch.randn(2, 5, 6, 6)),
                             lambda: m(torch.randn(2, 5, 6, 6)))
    assert str(s).endswith(str(r).split("expected input")[-1])
    assert str(s).startswith("Conv2d(3, 4")
    check_raises_like(lambda: torch.nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect"),
                      lambda: shimnn.ConvTranspose2d(3, 4, 3, padding_mode="reflect"))


def test_complex_refused() -> None:
    x = shimnn.Parameter(torch.randn(1, 1, 4, 4, dtype=torch.complex64))
    with pytest.raises(NotImplementedError, match="conv2d"):
        F.conv2d(x, torch.randn(1, 1, 3, 3, dtype=torch.complex64))


def _run_both(f: Any, x: torch.Tensor) -> tuple[BaseException | None, BaseException | None]:
    errors: list[BaseException | None] = []
    for framework in ("torch", "shimnn"):
        torch.manual_seed(0)
        nn: Any = torch.nn if framework == "torch" else shimnn
        conv = nn.Conv2d(2, 3, 3, padding=1)
        inp = x.clone().requires_grad_()
        try:
            f(nn, conv, inp).sum().backward()
        except Exception as e:
            errors.append(e)
        else:
            errors.append(None)
    return errors[0], errors[1]


def test_input_modified_in_place_after_conv_raises_like_torch() -> None:
    x = torch.randn(1, 2, 5, 5)

    def f(nn: Any, conv: Any, t: torch.Tensor) -> torch.Tensor:
        h = t * 2.0
        out = conv(h)
        h.mul_(3)  # conv saved h
        return out

    ref, shim = _run_both(f, x)
    assert ref is not None and shim is not None
    assert type(shim) is type(ref) and "modified by an inplace operation" in str(shim)


def test_in_place_relu_after_conv_and_views_and_hooks() -> None:
    def f(nn: Any) -> Any:
        return nn.Conv2d(2, 3, 3, padding=1)

    ref, shim = twin_modules(f)
    x = torch.randn(2, 2, 5, 5)
    seen: dict[str, list[torch.Tensor]] = {"torch": [], "shimnn": []}

    def run(m: Any, key: str) -> torch.Tensor:
        out = m(x)
        out.register_hook(lambda g: seen[key].append(g.clone()))
        h = TF.relu(out, inplace=True)
        v = h[:, 1:].transpose(2, 3)
        return (v * v).sum() + h.mean()

    loss_ref = run(ref, "torch")
    loss_ref.backward()
    with autograd_forbidden():
        loss = run(shim, "shimnn")
        loss.backward()
    assert_same(loss, loss_ref)
    assert len(seen["torch"]) == len(seen["shimnn"]) == 1
    assert_same(seen["shimnn"][0], seen["torch"][0], "hooked gradient")
    for (name, p), q in zip(shim.named_parameters(), ref.parameters()):
        assert_same(p.grad, q.grad, name)


def test_write_into_a_buffer_like_torch() -> None:
    ref, shim = twin_modules(lambda nn: nn.Conv1d(2, 2, 3, padding=1))
    x = torch.randn(3, 2, 6)

    def run(m: Any) -> torch.Tensor:
        buf = torch.zeros(3, 2, 2, 6)
        for i in range(2):
            buf[:, :, i] = m(x * (i + 1))
        return (buf * buf).sum()

    loss_ref = run(ref)
    loss_ref.backward()
    with autograd_forbidden():
        loss = run(shim)
        loss.backward()
    assert_same(loss, loss_ref)
    for p, q in zip(shim.parameters(), ref.parameters()):
        assert_same(p.grad, q.grad)


def test_no_grad_and_plain_inputs() -> None:
    m = shimnn.Conv2d(3, 2, 3)
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        out = m(x)
    assert out.shim_fn is None
    assert_same(out, torch.nn.functional.conv2d(x, m.weight.detach(), m.bias.detach()))
    m.requires_grad_(False)
    with autograd_forbidden():
        out = m(x)
    assert isinstance(out, shimnn.TrackedTensor) and out.shim_fn is None


def test_parametrized_weight_like_torch() -> None:
    """A parametrization replaces ``weight`` by a property: the module reads it, not the
    parameter dict."""

    class Double(torch.nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * 2.0

    ref, shim = twin_modules(lambda nn: nn.Conv2d(2, 3, 3))
    for m in (ref, shim):
        torch.nn.utils.parametrize.register_parametrization(m, "weight", Double())
    x = torch.randn(2, 2, 5, 5)
    ref_out = ref(x)
    ref_out.sum().backward()
    with autograd_forbidden():
        out = shim(x)
        out.sum().backward()
    assert_same(out, ref_out)
    for p, q in zip(shim.parameters(), ref.parameters()):
        assert_same(p.grad, q.grad)
