"""shimnn.optim.SGD against torch.optim.SGD: trajectories, state, validation, schedulers."""

from __future__ import annotations

import itertools

import pytest
import torch

import shimnn
import shimnn.optim
from conftest import assert_same, autograd_forbidden
from parity import check_raises_like

OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for m, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 1e-2],
                                              [False, True], [False, True])
    if not (n and (m == 0 or d != 0))
]


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in [(5, 3), (5,), (1, 5), ()]]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(
    f"{k}={v}" for k, v in o.items() if v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("foreach", [None, True])
def test_sgd_trajectory_matches_torch(options: dict, dtype: torch.dtype, foreach: bool | None
                                      ) -> None:
    ref_p = [p.clone() for p in _params(dtype)]
    shim_p = [p.clone() for p in _params(dtype)]
    ref = torch.optim.SGD(ref_p, lr=0.05, foreach=foreach, **options)
    shim = shimnn.optim.SGD(shim_p, lr=0.05, foreach=foreach, **options)
    g = torch.Generator().manual_seed(1)
    for step in range(30):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in ref_p]
        for i, (a, b, gr) in enumerate(zip(ref_p, shim_p, grads)):
            # One parameter sometimes has no gradient: it must be skipped, buffer untouched.
            a.grad = None if (i == 3 and step % 4 == 1) else gr.clone()
            b.grad = None if (i == 3 and step % 4 == 1) else gr.clone()
        ref.step()
        with autograd_forbidden():
            shim.step()
        for i, (a, b) in enumerate(zip(shim_p, ref_p)):
            assert_same(a, b, f"param {i} after step {step}")
            assert_same(a.grad, b.grad, f"grad {i} after step {step}")  # foreach nesterov
        for a, b in zip(shim_p, ref_p):
            assert_same(shim.state[a].get("momentum_buffer"), ref.state[b].get("momentum_buffer"))


def test_param_groups_and_add_param_group() -> None:
    ref_p, shim_p = _params(torch.float32), _params(torch.float32)
    ref = torch.optim.SGD([{"params": ref_p[:2]}, {"params": ref_p[2:3], "lr": 0.5,
                                                     "momentum": 0.5}], lr=0.1)
    shim = shimnn.optim.SGD([{"params": shim_p[:2]}, {"params": shim_p[2:3], "lr": 0.5,
                                                        "momentum": 0.5}], lr=0.1)
    ref.add_param_group({"params": [ref_p[3]], "weight_decay": 0.1, "nesterov": False})
    shim.add_param_group({"params": [shim_p[3]], "weight_decay": 0.1, "nesterov": False})
    assert repr(shim).replace("SGD", "") == repr(ref).replace("SGD", "")
    for step in range(5):
        for a, b in zip(ref_p, shim_p):
            a.grad = torch.full_like(a, 0.1 * step + 0.3)
            b.grad = a.grad.clone()
        ref.step()
        shim.step()
    for a, b in zip(shim_p, ref_p):
        assert_same(a, b)


def test_state_dict_interchanges_with_torch() -> None:
    torch.manual_seed(0)
    model = shimnn.Sequential(shimnn.Linear(3, 4), shimnn.Tanh(), shimnn.Linear(4, 1))
    ref_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    ref_model.load_state_dict(model.state_dict())
    shim = shimnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    for _ in range(3):
        for m, opt, nn in ((model, shim, shimnn), (ref_model, ref, torch.nn)):
            opt.zero_grad()
            nn.MSELoss()(m(x), y).backward()
            opt.step()
    sd, ref_sd = shim.state_dict(), ref.state_dict()
    assert sd["param_groups"] == ref_sd["param_groups"]
    assert sd["state"].keys() == ref_sd["state"].keys()
    for k in sd["state"]:
        assert_same(sd["state"][k]["momentum_buffer"], ref_sd["state"][k]["momentum_buffer"])
    # torch's optimizer state continues a shimnn optimizer, and back.
    shim2 = shimnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    shim2.load_state_dict(ref_sd)
    ref2 = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    ref2.load_state_dict(sd)
    for m, opt, nn in ((model, shim2, shimnn), (ref_model, ref2, torch.nn)):
        opt.zero_grad()
        nn.MSELoss()(m(x), y).backward()
        opt.step()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert_same(a, b)


def test_zero_grad_modes() -> None:
    for set_to_none in (True, False):
        ref_p, shim_p = _params(torch.float32), _params(torch.float32)
        ref, shim = torch.optim.SGD(ref_p, lr=0.1), shimnn.optim.SGD(shim_p, lr=0.1)
        for a, b in zip(ref_p, shim_p):
            a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
        ref.zero_grad(set_to_none=set_to_none)
        shim.zero_grad(set_to_none=set_to_none)
        for a, b in zip(shim_p, ref_p):
            assert_same(a.grad, b.grad)


def test_closure_and_step_hooks() -> None:
    torch.manual_seed(0)
    model = shimnn.Linear(2, 1)
    opt = shimnn.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    x = torch.randn(4, 2)

    def closure():  # type: ignore[no-untyped-def]
        opt.zero_grad()
        loss = (model(x) * model(x)).sum()
        loss.backward()
        return loss

    before = model.weight.detach().clone()
    loss = opt.step(closure)
    assert calls == ["pre", "post"]
    assert isinstance(loss, torch.Tensor)
    assert not torch.equal(model.weight.detach(), before)


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(lr=0.1, momentum=-0.1),
                                    dict(lr=0.1, weight_decay=-1.0),
                                    dict(lr=0.1, nesterov=True),
                                    dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
                                    dict(lr=torch.tensor([0.1, 0.2]))])
def test_invalid_hyperparameters_raise_like_torch(kwargs: dict) -> None:
    params = _params(torch.float32)
    ref_exc, shim_exc = check_raises_like(lambda: torch.optim.SGD(params, **kwargs),
                                          lambda: shimnn.optim.SGD(params, **kwargs))
    assert str(shim_exc) == str(ref_exc)


def test_empty_and_tensor_params_raise_like_torch() -> None:
    check_raises_like(lambda: torch.optim.SGD([], lr=0.1), lambda: shimnn.optim.SGD([], lr=0.1))
    t = torch.zeros(2)
    check_raises_like(lambda: torch.optim.SGD(t, lr=0.1), lambda: shimnn.optim.SGD(t, lr=0.1))


def test_lr_scheduler_drives_shimnn_sgd() -> None:
    ref_p, shim_p = _params(torch.float64), _params(torch.float64)
    ref = torch.optim.SGD(ref_p, lr=0.5, momentum=0.9)
    shim = shimnn.optim.SGD(shim_p, lr=0.5, momentum=0.9)
    sched = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (ref, shim)]
    for step in range(7):
        for a, b in zip(ref_p, shim_p):
            a.grad = torch.full_like(a, 0.01 * (step + 1))
            b.grad = a.grad.clone()
        ref.step()
        shim.step()
        for s in sched:
            s.step()
        assert shim.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
    for a, b in zip(shim_p, ref_p):
        assert_same(a, b)


def test_tensor_lr() -> None:
    ref_p, shim_p = _params(torch.float32), _params(torch.float32)
    ref = torch.optim.SGD(ref_p, lr=torch.tensor(0.3), momentum=0.5)
    shim = shimnn.optim.SGD(shim_p, lr=torch.tensor(0.3), momentum=0.5)
    for _ in range(3):
        for a, b in zip(ref_p, shim_p):
            a.grad = torch.full_like(a, 0.7)
            b.grad = a.grad.clone()
        ref.step()
        shim.step()
    for a, b in zip(shim_p, ref_p):
        assert_same(a, b)
