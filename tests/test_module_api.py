"""The Module API scripts use works as in torch: same repr, keys, state, conversions."""

from __future__ import annotations

import copy
import io
import pickle
from collections import OrderedDict

import pytest
import torch

import shimnn
from conftest import assert_same
from parity import check_module, twin_modules


def _net(nn):  # type: ignore[no-untyped-def]
    return nn.Sequential(nn.Linear(2, 25), nn.ReLU(), nn.Linear(25, 25), nn.ReLU(inplace=True),
                         nn.Linear(25, 1, bias=False), nn.Tanh())


def test_repr_and_structure_match_torch() -> None:
    ref, shim = twin_modules(_net)
    assert repr(shim) == repr(ref)
    assert repr(shimnn.MSELoss(reduction="sum")) == repr(torch.nn.MSELoss(reduction="sum"))
    assert [n for n, _ in shim.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert list(shim.state_dict().keys()) == list(ref.state_dict().keys())
    assert [type(m).__name__ for m in shim.modules()] == [type(m).__name__ for m in ref.modules()]
    assert [n for n, _ in shim.named_modules()] == [n for n, _ in ref.named_modules()]
    assert len(list(shim.children())) == len(list(ref.children()))
    assert isinstance(shim, torch.nn.Module) and isinstance(shim, shimnn.Module)
    assert isinstance(shim[0].weight, torch.nn.Parameter)
    assert isinstance(shim[0].weight, shimnn.Parameter)
    assert repr(shim[0].weight) == repr(ref[0].weight)
    assert shim[0].in_features == 2 and shim[0].out_features == 25
    assert shim[4].bias is None and shim[3].inplace


def test_state_dict_round_trips_both_ways() -> None:
    ref, shim = twin_modules(_net, seed=1)
    torch.manual_seed(99)
    other = _net(shimnn)
    other.load_state_dict(ref.state_dict())
    for a, b in zip(other.parameters(), ref.parameters()):
        assert_same(a, b)
    ref2 = _net(torch.nn)
    ref2.load_state_dict(shim.state_dict())
    for a, b in zip(ref2.parameters(), shim.parameters()):
        assert_same(a, b)
    assert all(isinstance(p, shimnn.Parameter) for p in other.parameters())
    for v in shim.state_dict().values():
        assert type(v) is torch.Tensor and not v.requires_grad


def test_load_state_dict_errors_like_torch() -> None:
    ref, shim = twin_modules(lambda nn: nn.Linear(3, 2))
    bad = {"weight": torch.zeros(2, 3)}
    with pytest.raises(RuntimeError) as ref_exc:
        ref.load_state_dict(bad)
    with pytest.raises(RuntimeError) as shim_exc:
        shim.load_state_dict(bad)
    assert str(shim_exc.value) == str(ref_exc.value)
    assert (shim.load_state_dict(bad, strict=False) == ref.load_state_dict(bad, strict=False))


def test_train_eval_apply_zero_grad() -> None:
    _, shim = twin_modules(_net)
    assert shim.training
    shim.eval()
    assert not any(m.training for m in shim.modules())
    shim.train()
    assert all(m.training for m in shim.modules())
    seen = []
    shim.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Sequential" and seen.count("Linear") == 3
    shim(torch.randn(3, 2)).sum().backward()
    assert all(p.grad is not None for p in shim.parameters())
    shim.zero_grad()
    assert all(p.grad is None for p in shim.parameters())


@pytest.mark.parametrize("convert", ["double", "float", "to_double", "to_cpu"])
def test_conversions_keep_shimnn_parameters(convert: str) -> None:
    ref, shim = twin_modules(_net)
    for m in (ref, shim):
        if convert == "double":
            m.double()
        elif convert == "float":
            m.double().float()
        elif convert == "to_double":
            m.to(torch.float64)
        else:
            m.to("cpu")
    assert all(isinstance(p, shimnn.Parameter) for p in shim.parameters())
    dtype = next(ref.parameters()).dtype
    check_module(ref, shim, [torch.randn(4, 2, dtype=dtype)])


def test_sequential_container_api() -> None:
    ref, shim = twin_modules(_net)
    assert len(shim) == len(ref) == 6
    assert isinstance(shim[1:3], shimnn.Sequential)
    assert repr(shim[1:3]) == repr(ref[1:3])
    assert repr(shim[-1]) == repr(ref[-1])
    assert [type(m).__name__ for m in shim] == [type(m).__name__ for m in ref]
    shim.append(shimnn.Tanh())
    ref.append(torch.nn.Tanh())
    assert len(shim) == 7
    check_module(ref, shim, [torch.randn(5, 2)])
    torch.manual_seed(0)
    named = shimnn.Sequential(OrderedDict([("fc", shimnn.Linear(2, 3)), ("act", shimnn.ReLU())]))
    torch.manual_seed(0)
    ref_named = torch.nn.Sequential(OrderedDict([("fc", torch.nn.Linear(2, 3)),
                                                 ("act", torch.nn.ReLU())]))
    assert repr(named) == repr(ref_named)
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    check_module(ref_named, named, [torch.randn(4, 2)])


def test_deepcopy_pickle_and_torch_save() -> None:
    ref, shim = twin_modules(_net)
    for clone in (copy.deepcopy(shim), pickle.loads(pickle.dumps(shim))):
        assert all(isinstance(p, shimnn.Parameter) for p in clone.parameters())
        for a, b in zip(clone.parameters(), shim.parameters()):
            assert_same(a, b)
            assert a.data_ptr() != b.data_ptr()
        ref.zero_grad()
        check_module(ref, clone, [torch.randn(3, 2)])
    buf = io.BytesIO()
    torch.save(shim.state_dict(), buf)
    buf.seek(0)
    ref2 = _net(torch.nn)
    ref2.load_state_dict(torch.load(buf))
    for a, b in zip(ref2.parameters(), shim.parameters()):
        assert_same(a, b)


def test_user_module_with_torch_parameter() -> None:
    class Affine(shimnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = shimnn.Linear(3, 3)
            self.scale = torch.nn.Parameter(torch.tensor(2.0))  # torch's class, converted

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.inner(x) * self.scale

    m = Affine()
    assert isinstance(m.scale, shimnn.Parameter)
    m(torch.randn(2, 3)).sum().backward()
    assert m.scale.grad is not None and m.inner.weight.grad is not None


def test_module_backward_hooks_are_refused() -> None:
    m = shimnn.Linear(2, 2)
    with pytest.raises(NotImplementedError, match="register_hook"):
        m.register_full_backward_hook(lambda *a: None)


@pytest.mark.parametrize("dims", [(1, -1), (0, -1), (1, 2), (-2, -1)])
def test_flatten_unflatten(dims: tuple[int, int]) -> None:
    x = torch.randn(2, 3, 4, 2)
    check_module(torch.nn.Flatten(*dims), shimnn.Flatten(*dims), [x])
    assert repr(shimnn.Flatten(*dims)) == repr(torch.nn.Flatten(*dims))
    ref, shim = twin_modules(lambda nn: nn.Sequential(nn.Flatten(), nn.Linear(24, 6),
                                                      nn.Unflatten(1, (2, 3)), nn.Tanh()))
    assert repr(shim) == repr(ref)
    check_module(ref, shim, [x])
    with pytest.raises(TypeError) as ref_exc:
        torch.nn.Unflatten(1, (2, 3.0))
    with pytest.raises(TypeError) as shim_exc:
        shimnn.Unflatten(1, (2, 3.0))
    assert str(shim_exc.value) == str(ref_exc.value)


@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "RMSprop"])
def test_torch_optimizers_and_schedulers_drive_shimnn_parameters(optimizer: str) -> None:
    # The parameter idioms of real scripts: torch.optim's own optimizers and schedulers step
    # shimnn parameters whose .grad shimnn filled, exactly as they step torch's.
    ref, shim = twin_modules(lambda nn: nn.Sequential(nn.Linear(3, 8), nn.Tanh(),
                                                      nn.Linear(8, 1)))
    opts = [getattr(torch.optim, optimizer)(m.parameters(), lr=0.05) for m in (ref, shim)]
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9) for o in opts]
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        x, y = torch.randn(10, 3, generator=g), torch.randn(10, 1, generator=g)
        for m, o, s, nn in zip((ref, shim), opts, scheds, (torch.nn, shimnn)):
            o.zero_grad()
            nn.MSELoss()(m(x), y).backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            o.step()
            s.step()
    for a, b in zip(shim.parameters(), ref.parameters()):
        assert_same(a, b)
        assert isinstance(a, shimnn.Parameter)
