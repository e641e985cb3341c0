"""The backward walk: accumulation, fan-in order, freeing, errors, as torch's engine behaves."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import shimnn
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden
from parity import check_raises_like, random_like, twin_modules


def _pair(make, seed=0):  # type: ignore[no-untyped-def]
    return twin_modules(make, seed)


def test_gradients_accumulate_over_backwards_like_torch() -> None:
    ref, shim = _pair(lambda nn: nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)))
    for step in range(4):
        x = torch.randn(5, 4)
        g = random_like(torch.empty(5, 2), step)
        ref(x).backward(g)
        with autograd_forbidden():
            shim(x).backward(g)
        for (n, a), b in zip(shim.named_parameters(), ref.parameters()):
            assert_same(a.grad, b.grad, f"{n} after backward {step}")


def test_weight_sharing_sums_in_torch_order() -> None:
    # One layer used three times: three contributions fan into the same leaf, summed in the
    # engine's order (newest node first) before accumulating.
    ref, shim = _pair(lambda nn: nn.Linear(6, 6))
    x = torch.randn(4, 6, dtype=torch.float32)

    def run(m, F):  # type: ignore[no-untyped-def]
        h = F.tanh(m(x))
        h = F.relu(m(h))
        return F.tanh(m(h)) * h

    g = random_like(torch.empty(4, 6), 7)
    run(ref, torch.nn.functional).backward(g)
    with autograd_forbidden():
        out = run(shim, shimnn.functional)
        assert_no_autograd_graph(out)
        out.backward(g)
    assert_same(shim.weight.grad, ref.weight.grad, "shared weight")
    assert_same(shim.bias.grad, ref.bias.grad, "shared bias")


def test_second_backward_raises_and_retain_graph_allows_it() -> None:
    _, shim = _pair(lambda nn: nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)))
    ref, _ = _pair(lambda nn: nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)))
    x = torch.randn(2, 3)
    ref_loss, shim_loss = ref(x).sum(), shim(x).sum()
    ref_loss.backward(retain_graph=True)
    with autograd_forbidden():
        shim_loss.backward(retain_graph=True)
    ref_loss.backward()
    with autograd_forbidden():
        shim_loss.backward()
    for a, b in zip(shim.parameters(), ref.parameters()):
        assert_same(a.grad, b.grad)
    ref_exc, shim_exc = check_raises_like(ref_loss.backward, shim_loss.backward)
    assert "second time" in str(shim_exc)


def test_backward_without_graph_raises_like_torch() -> None:
    ref, shim = _pair(lambda nn: nn.Linear(3, 1))
    x = torch.randn(2, 3)
    with torch.no_grad():
        ref_out, shim_out = ref(x).sum(), shim(x).sum()
    ref_exc, shim_exc = check_raises_like(ref_out.backward, shim_out.backward)
    assert str(shim_exc) == str(ref_exc)


def test_non_scalar_backward_needs_gradient() -> None:
    ref, shim = _pair(lambda nn: nn.Linear(3, 2))
    x = torch.randn(4, 3)
    ref_exc, shim_exc = check_raises_like(lambda: ref(x).backward(), lambda: shim(x).backward())
    assert str(shim_exc) == str(ref_exc)
    check_raises_like(lambda: ref(x).backward(torch.ones(3)),
                      lambda: shim(x).backward(torch.ones(3)))


def test_inplace_change_of_saved_tensor_raises() -> None:
    # Tanh saves its output; changing it in place makes the backward impossible.
    for make in (lambda nn: nn.Tanh(), lambda nn: nn.ReLU()):
        ref, shim = _pair(lambda nn: nn.Sequential(nn.Linear(3, 3), make(nn)))
        x = torch.randn(2, 3)
        ref_out, shim_out = ref(x), shim(x)
        with torch.no_grad():
            ref_out.mul_(2)
            shim_out.mul_(2)
        _, shim_exc = check_raises_like(lambda: ref_out.sum().backward(),
                                        lambda: shim_out.sum().backward())
        assert "modified by an inplace operation" in str(shim_exc)


def test_parameter_changed_between_forward_and_backward_raises() -> None:
    ref, shim = _pair(lambda nn: nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)))
    x = torch.randn(2, 3)
    ref_loss, shim_loss = ref(x).sum(), shim(x).sum()
    for m in (ref, shim):
        with torch.no_grad():
            m[2].weight.add_(1.0)
    check_raises_like(ref_loss.backward, shim_loss.backward)


def test_scalar_arithmetic_on_losses() -> None:
    ref, shim = _pair(lambda nn: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    x, y = torch.randn(6, 3), torch.randn(6, 1)

    def run(m, nn):  # type: ignore[no-untyped-def]
        out = m(x)
        l1 = nn.MSELoss()(out, y)
        l2 = nn.MSELoss(reduction="sum")(out, y)
        total = -l1 * 0.5 + l2 / 3 - 2 * l1 + (1 - l2) + 0.25 / (l1 + 1) - l2 * l1
        total += l1
        total -= 0.5 * l2
        return total

    ref_total = run(ref, torch.nn)
    ref_total.backward()
    with autograd_forbidden():
        shim_total = run(shim, shimnn)
        assert_no_autograd_graph(shim_total)
        shim_total.backward()
    assert_same(shim_total, ref_total, "total loss")
    for (n, a), b in zip(shim.named_parameters(), ref.parameters()):
        assert_same(a.grad, b.grad, n)


def test_input_marked_requires_grad_receives_grad() -> None:
    ref, shim = _pair(lambda nn: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    x_ref = torch.randn(5, 3, requires_grad=True)
    x_shim = x_ref.detach().clone().requires_grad_()
    g = random_like(torch.empty(5, 2), 3)
    ref(x_ref).backward(g)
    with autograd_forbidden():
        shim(x_shim).backward(g)
    assert_same(x_shim.grad, x_ref.grad, "input grad")
    assert_no_autograd_graph(x_shim.grad)


def test_backward_inputs_restricts_accumulation() -> None:
    ref, shim = _pair(lambda nn: nn.Linear(3, 1))
    x = torch.randn(4, 3)
    ref(x).sum().backward(inputs=[ref.weight])
    with autograd_forbidden():
        shim(x).sum().backward(inputs=[shim.weight])
    assert_same(shim.weight.grad, ref.weight.grad)
    assert shim.bias.grad is None and ref.bias.grad is None


def test_outputs_usable_by_ordinary_torch_code() -> None:
    _, shim = _pair(lambda nn: nn.Sequential(nn.Linear(2, 3), nn.Tanh()))
    ref, _ = _pair(lambda nn: nn.Sequential(nn.Linear(2, 3), nn.Tanh()))
    x = torch.randn(4, 2)
    with autograd_forbidden():
        out, r = shim(x), ref(x)
        assert out.argmax(1).tolist() == r.argmax(1).tolist()
        assert torch.equal(out > 0, r > 0)
        assert out.sum().item() == r.sum().item()
        assert out.detach().numpy().tolist() == r.detach().numpy().tolist()
        assert repr(out) == repr(r)
        assert str(out) == str(r)
        assert f"{out.sum():.6f}" == f"{r.sum():.6f}"
        assert out.shape == r.shape and out.dtype == r.dtype and len(out) == len(r)
        check_raises_like(lambda: r.numpy(), lambda: out.numpy())
        assert out.requires_grad and not out.is_leaf and out.grad_fn is None
        assert out.shim_fn is not None and out.shim_fn.name == "TanhBackward0"
        assert out.detach().shim_fn is None


@pytest.mark.parametrize("shape", [(3,), (2, 2), (40, 30), (0, 3), ()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repr_matches_torch(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype) * 1000
    ref = torch.tanh(x.clone().requires_grad_())
    shim = shimnn.functional.tanh(x.clone().requires_grad_())
    assert repr(shim) == repr(ref)
    leaf_ref = x.clone().requires_grad_()
    shim_leaf = shimnn.functional.tanh(x)
    with torch.no_grad():
        shim_leaf = shimnn.functional.tanh(x).requires_grad_()
        leaf_ref = torch.tanh(x).requires_grad_()
    assert repr(shim_leaf) == repr(leaf_ref)


def test_forward_without_backward_frees_saved_tensors() -> None:
    _, shim = _pair(lambda nn: nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)))
    x = torch.randn(128, 64)
    out = shim(x)
    node = out.shim_fn
    params = {p.data_ptr() for p in shim.parameters()}
    own = [t for t in node.saved if t.data_ptr() not in params and t.data_ptr() != x.data_ptr()]
    assert own
    saved = weakref.ref(own[0])
    del out, node, own
    gc.collect()
    assert saved() is None


def test_backward_releases_saved_tensors() -> None:
    _, shim = _pair(lambda nn: nn.Sequential(nn.Linear(8, 8), nn.Tanh()))
    out = shim(torch.randn(4, 8))
    node = out.shim_fn
    saved = weakref.ref(node.saved[0])
    out.sum().backward()
    assert node.saved is None and node.backward is None
    gc.collect()
    assert saved() is None


def test_create_graph_is_refused() -> None:
    _, shim = _pair(lambda nn: nn.Linear(2, 1))
    with pytest.raises(NotImplementedError, match="create_graph"):
        shim(torch.randn(3, 2)).sum().backward(create_graph=True)


def test_unsupported_op_fails_at_backward_naming_it() -> None:
    _, shim = _pair(lambda nn: nn.Linear(2, 3))
    out = shim(torch.randn(4, 2))
    weird = torch.special.erfcx(out)  # no hand-written backward in shimnn
    assert isinstance(weird, shimnn.TrackedTensor)
    assert_no_autograd_graph(weird)
    with pytest.raises(RuntimeError, match="erfcx"):
        weird.sum().backward()
    # ... while the same op in no_grad, or on a detached value, is fine.
    with torch.no_grad():
        torch.special.erfcx(shim(torch.randn(4, 2)))
    torch.special.erfcx(shim(torch.randn(4, 2)).detach())


def test_inplace_on_leaf_parameter_raises_like_torch() -> None:
    ref, shim = _pair(lambda nn: nn.Linear(2, 2))
    check_raises_like(lambda: ref.weight.mul_(2), lambda: shim.weight.mul_(2))
    check_raises_like(lambda: ref.weight.add_(1), lambda: shim.weight.add_(1))
    with torch.no_grad():
        shim.weight.mul_(2)  # fine without grad, as in torch


def test_tensor_hooks_run_like_torch() -> None:
    ref, shim = _pair(lambda nn: nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)))
    x = torch.randn(4, 3)
    seen = {}
    for name, m in (("ref", ref), ("shim", shim)):
        h = m[1](m[0](x))
        h.register_hook(lambda g, name=name: g * 2)
        h.retain_grad()
        m[0].weight.register_hook(lambda g, name=name: seen.setdefault(name, g.clone()))
        m[2](h).sum().backward()
        seen[name + "_h"] = h.grad
    assert_same(seen["shim"], seen["ref"])
    assert_same(seen["shim_h"], seen["ref_h"])
    for a, b in zip(shim.parameters(), ref.parameters()):
        assert_same(a.grad, b.grad)


def test_torch_autograd_history_entering_a_shimnn_graph_is_refused() -> None:
    # a * 2 on a plain leaf is recorded by torch, not shimnn: its gradient cannot reach `a`,
    # so the backward raises, naming torch's node (the forward computes as usual).
    a = torch.randn(3, requires_grad=True)
    lin = shimnn.Linear(3, 1)
    out = lin(a * 2)
    with pytest.raises(NotImplementedError, match=r"torch's mul \(node MulBackward0\)"):
        out.sum().backward()
    assert a.grad is None
    p = shimnn.Parameter(torch.randn(3))
    lin(p * 2).sum().backward()  # a shimnn Parameter records its own arithmetic
    assert p.grad is not None and a.grad is None


@pytest.mark.parametrize("act", ["Tanh", "ReLU"])
def test_inplace_layer_after_a_saving_layer_raises_in_a_sequential(act: str) -> None:
    # The first activation saves its output; the in-place ReLU then overwrites it: torch
    # raises at backward, and so must a Sequential (never a silently wrong gradient).
    ref, shim = _pair(lambda nn: nn.Sequential(nn.Linear(3, 4), getattr(nn, act)(),
                                               nn.ReLU(inplace=True), nn.Linear(4, 1)))
    x = torch.randn(5, 3)
    ref_out, shim_out = ref(x), shim(x)
    _, shim_exc = check_raises_like(lambda: ref_out.sum().backward(),
                                    lambda: shim_out.sum().backward())
    assert "modified by an inplace operation" in str(shim_exc)


def test_non_differentiable_torch_call_mixing_torch_and_shimnn_graphs() -> None:
    ref, shim = _pair(lambda nn: nn.Linear(3, 2))
    x = torch.randn(4, 3)
    out_ref, out_shim = ref(x), shim(x)  # one recorded by torch, one by shimnn
    assert torch.equal(out_ref, out_shim)
    assert torch.allclose(out_shim, out_ref) and bool((out_shim == out_ref).all())


def test_calls_without_tensor_results_on_tracked_tensors_answer_as_torch() -> None:
    """The fast path for calls whose result holds no tensor (item, shape, size...)."""
    w = shimnn.Parameter(torch.randn(3, 2))
    tracked, plain = w * 2, w.detach() * 2
    scalar, plain_scalar = tracked.sum(), plain.sum()
    assert scalar.item() == plain_scalar.item() and type(scalar.item()) is float
    assert float(scalar) == float(plain_scalar) and bool(scalar) == bool(plain_scalar)
    assert tracked.tolist() == plain.tolist()
    assert (tracked.shape, tracked.dtype, tracked.device, tracked.ndim, tracked.layout) == (
        plain.shape, plain.dtype, plain.device, plain.ndim, plain.layout)
    assert (tracked.size(), tracked.size(1), tracked.dim(), tracked.numel(), len(tracked),
            tracked.stride(), tracked.is_contiguous(), tracked.element_size()) == (
        plain.size(), plain.size(1), plain.dim(), plain.numel(), len(plain), plain.stride(),
        plain.is_contiguous(), plain.element_size())
    assert torch.tensor([10, 20, 30])[torch.tensor(1) + 0 * scalar.long()] == 20
    scalar.backward()  # the graph is untouched by those calls
    assert torch.equal(w.grad, torch.full((3, 2), 2.0))
