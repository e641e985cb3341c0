"""shimnn.optim.{Adam, AdamW, RMSprop, Adagrad} against torch.optim's: bit-identical parameters
and state after every step, state-dict interchange, schedulers, validation, signatures."""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

import shimnn
import shimnn.optim
from conftest import assert_same, autograd_forbidden
from parity import check_raises_like

NAMES = ["Adam", "AdamW", "RMSprop", "Adagrad"]


def _grid(**axes: list[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


OPTIONS: dict[str, list[dict[str, Any]]] = {
    "Adam": _grid(amsgrad=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True],
                  decoupled_weight_decay=[False, True]),
    "AdamW": _grid(amsgrad=[False, True], weight_decay=[0.0, 0.05], maximize=[False, True]),
    "RMSprop": _grid(momentum=[0.0, 0.9], centered=[False, True], weight_decay=[0.0, 0.1],
                     maximize=[False, True]),
    "Adagrad": _grid(lr_decay=[0.0, 0.1], weight_decay=[0.0, 0.1],
                     initial_accumulator_value=[0.0, 0.1], maximize=[False, True]),
}
LR = {"Adam": 0.05, "AdamW": 0.05, "RMSprop": 0.01, "Adagrad": 0.1}
CASES = [(name, o) for name in NAMES for o in OPTIONS[name]]


def _id(case: tuple[str, dict[str, Any]]) -> str:
    name, options = case
    return "-".join([name] + [f"{k}={v}" for k, v in options.items() if v])


def _pair(name: str) -> tuple[type, type]:
    return getattr(torch.optim, name), getattr(shimnn.optim, name)


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in [(5, 3), (5,), (1, 5), ()]]


def _grad_of(i: int, step: int, grad: torch.Tensor) -> torch.Tensor | None:
    if i == 3 and step % 4 == 1:  # the 0-d parameter sometimes has no gradient
        return None
    if i == 2 and step < 3:  # state made late: this parameter's step count lags
        return None
    return grad


def assert_same_state(shim: torch.optim.Optimizer, ref: torch.optim.Optimizer,
                      shim_p: list[torch.Tensor], ref_p: list[torch.Tensor], what: str) -> None:
    for i, (a, b) in enumerate(zip(shim_p, ref_p)):
        sa, sb = shim.state.get(a, {}), ref.state.get(b, {})
        assert list(sa) == list(sb), f"{what}: state keys of param {i}: {list(sa)} vs {list(sb)}"
        for key in sb:
            if isinstance(sb[key], torch.Tensor):
                assert_same(sa[key], sb[key], f"{what}: state[{i}][{key!r}]")
                assert sa[key].device == sb[key].device
            else:
                assert sa[key] == sb[key]


def run_twins(ref: torch.optim.Optimizer, shim: torch.optim.Optimizer,
              ref_p: list[torch.Tensor], shim_p: list[torch.Tensor], steps: int, seed: int = 1,
              grad_of: Callable[[int, int, torch.Tensor], torch.Tensor | None] = _grad_of,
              after_step: Callable[[], None] | None = None) -> None:
    """Identical random gradients into both; bit-identical params, grads, state every step."""
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for i, (a, b) in enumerate(zip(ref_p, shim_p)):
            gr_i = grad_of(i, step, torch.randn(a.shape, generator=g, dtype=a.dtype))
            a.grad = None if gr_i is None else gr_i.clone()
            b.grad = None if gr_i is None else gr_i.clone()
        ref.step()
        with autograd_forbidden():
            shim.step()
        if after_step is not None:
            after_step()
        for i, (a, b) in enumerate(zip(shim_p, ref_p)):
            assert_same(a, b, f"param {i} after step {step}")
            assert_same(a.grad, b.grad, f"grad {i} after step {step}")
        assert_same_state(shim, ref, shim_p, ref_p, f"after step {step}")


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("foreach", [None, True])
def test_trajectory_matches_torch(case: tuple[str, dict[str, Any]], dtype: torch.dtype,
                                  foreach: bool | None) -> None:
    name, options = case
    torch_cls, shim_cls = _pair(name)
    ref_p, shim_p = _params(dtype), _params(dtype)
    ref = torch_cls(ref_p, lr=LR[name], foreach=foreach, **options)
    shim = shim_cls(shim_p, lr=LR[name], foreach=foreach, **options)
    run_twins(ref, shim, ref_p, shim_p, steps=30)


@pytest.mark.parametrize("name,options", [
    ("Adam", dict(betas=(0.5, 0.8), eps=1e-3, amsgrad=True)),
    ("AdamW", dict(betas=(0.0, 0.0), eps=0.0, weight_decay=0.5)),
    ("RMSprop", dict(alpha=0.5, eps=1e-3, momentum=0.5, centered=True)),
    ("RMSprop", dict(alpha=0.0)),
    ("Adagrad", dict(eps=1e-3, lr_decay=2.0, initial_accumulator_value=2.0)),
])
@pytest.mark.parametrize("foreach", [None, True])
def test_unusual_hyperparameters(name: str, options: dict[str, Any], foreach: bool | None
                                 ) -> None:
    torch_cls, shim_cls = _pair(name)
    ref_p, shim_p = _params(torch.float32), _params(torch.float32)
    ref = torch_cls(ref_p, lr=0.3, foreach=foreach, **options)
    shim = shim_cls(shim_p, lr=0.3, foreach=foreach, **options)
    run_twins(ref, shim, ref_p, shim_p, steps=30)


@pytest.mark.parametrize("name,options", [
    ("Adam", dict(amsgrad=True, weight_decay=0.1)), ("AdamW", dict(maximize=True)),
    ("RMSprop", dict(momentum=0.9, centered=True, weight_decay=0.1)),
    ("Adagrad", dict(lr_decay=0.1, initial_accumulator_value=0.2, weight_decay=0.1)),
])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("foreach", [None, True])
def test_complex_parameters(name: str, options: dict[str, Any], dtype: torch.dtype,
                            foreach: bool | None) -> None:
    torch_cls, shim_cls = _pair(name)
    real = torch.float32 if dtype == torch.complex64 else torch.float64
    ref_p = _params(dtype) + _params(real, seed=3)[:1]  # complex and real in one group
    shim_p = [p.clone() for p in ref_p]
    ref = torch_cls(ref_p, lr=0.05, foreach=foreach, **options)
    shim = shim_cls(shim_p, lr=0.05, foreach=foreach, **options)
    run_twins(ref, shim, ref_p, shim_p, steps=10)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtypes_and_param_groups(name: str) -> None:
    """Several groups with their own options, float32 and float64 in one group, foreach."""
    torch_cls, shim_cls = _pair(name)
    extra = {"Adam": {"amsgrad": True}, "AdamW": {"weight_decay": 0.3},
             "RMSprop": {"momentum": 0.5, "centered": True},
             "Adagrad": {"lr_decay": 0.5}}[name]
    for foreach in (None, True):
        ref_p = _params(torch.float32) + _params(torch.float64, seed=5)
        shim_p = [p.clone() for p in ref_p]

        def groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
            return [{"params": ps[:2] + ps[6:]}, {"params": ps[2:6], "lr": 0.2, **extra}]

        ref = torch_cls(groups(ref_p), lr=0.05, foreach=foreach)
        shim = shim_cls(groups(shim_p), lr=0.05, foreach=foreach)
        assert repr(shim) == repr(ref)
        assert shim.param_groups[1].keys() == ref.param_groups[1].keys()
        run_twins(ref, shim, ref_p, shim_p, steps=8)


def _torch_adagrad_steps_a_group_added_later() -> bool:
    opt = torch.optim.Adagrad([torch.zeros(1, requires_grad=True)])
    later = torch.zeros(1, requires_grad=True)
    opt.add_param_group({"params": [later]})
    later.grad = torch.ones(1)
    try:
        opt.step()
    except KeyError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_later(name: str) -> None:
    torch_cls, shim_cls = _pair(name)
    ref_p, shim_p = _params(torch.float64), _params(torch.float64)
    # Adagrad makes state at construction from its argument, later from the defaults' value,
    # never from the group's.
    init = {"initial_accumulator_value": 0.1} if name == "Adagrad" else {}
    later = {"initial_accumulator_value": 0.7} if name == "Adagrad" else {}
    ref = torch_cls(ref_p[:2], lr=0.1, **init)
    shim = shim_cls(shim_p[:2], lr=0.1, **init)
    assert_same_state(shim, ref, shim_p, ref_p, "after construction")  # Adagrad: eager state
    run_twins(ref, shim, ref_p[:2], shim_p[:2], steps=3)
    ref.add_param_group({"params": ref_p[2:], "lr": 0.3, **later})
    shim.add_param_group({"params": shim_p[2:], "lr": 0.3, **later})
    assert shim.param_groups[1].keys() == ref.param_groups[1].keys()
    if name == "Adagrad" and not _torch_adagrad_steps_a_group_added_later():
        # torch before 2.13 creates Adagrad's state only at construction: its step then fails
        # on the new group (KeyError 'sum'). shimnn initialises it lazily, as 2.13 does.
        pytest.skip(f"torch {torch.__version__}'s Adagrad cannot step a group added later")
    run_twins(ref, shim, ref_p, shim_p, steps=6)


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "Adagrad"])
@pytest.mark.parametrize("scheduler", ["step", "exponential", "cosine"])
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_lr_scheduler_drives_both(name: str, scheduler: str, tensor_lr: bool) -> None:
    torch_cls, shim_cls = _pair(name)
    ref_p, shim_p = _params(torch.float32), _params(torch.float32)
    ref = torch_cls(ref_p, lr=torch.tensor(0.1) if tensor_lr else 0.1)
    shim = shim_cls(shim_p, lr=torch.tensor(0.1) if tensor_lr else 0.1)
    make = {
        "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
        "exponential": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
        "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7),
    }[scheduler]
    scheds = [make(ref), make(shim)]

    def after_step() -> None:
        for s in scheds:
            s.step()
        lr_ref, lr_shim = ref.param_groups[0]["lr"], shim.param_groups[0]["lr"]
        if tensor_lr:
            assert_same(lr_shim, lr_ref, "lr")
        else:
            assert lr_shim == lr_ref

    run_twins(ref, shim, ref_p, shim_p, steps=12, after_step=after_step)


@pytest.mark.parametrize("name", NAMES)
def test_tensor_hyperparameters(name: str) -> None:
    torch_cls, shim_cls = _pair(name)
    kwargs: dict[str, Any] = {"lr": torch.tensor([0.07])}  # 1-element, squeezed to 0-d
    if name in ("Adam", "AdamW"):
        kwargs["betas"] = (torch.tensor(0.8), torch.tensor([0.9], dtype=torch.float64))
    ref_p, shim_p = _params(torch.float64), _params(torch.float64)
    ref = torch_cls(ref_p, **kwargs)
    shim = shim_cls(shim_p, **kwargs)
    run_twins(ref, shim, ref_p, shim_p, steps=10)


def _trained_pair(name: str, steps: int = 5, **options: Any
                  ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer,
                             list[torch.Tensor], list[torch.Tensor]]:
    torch_cls, shim_cls = _pair(name)
    ref_p, shim_p = _params(torch.float32), _params(torch.float32)
    ref = torch_cls(ref_p, lr=0.05, **options)
    shim = shim_cls(shim_p, lr=0.05, **options)
    run_twins(ref, shim, ref_p, shim_p, steps=steps)
    return ref, shim, ref_p, shim_p


STATE_OPTIONS = {"Adam": {"amsgrad": True}, "AdamW": {"amsgrad": True},
                 "RMSprop": {"momentum": 0.9, "centered": True}, "Adagrad": {"lr_decay": 0.1}}


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_interchanges_with_torch(name: str) -> None:
    torch_cls, shim_cls = _pair(name)
    options = STATE_OPTIONS[name]
    ref, shim, ref_p, shim_p = _trained_pair(name, **options)
    sd, ref_sd = shim.state_dict(), ref.state_dict()
    assert sd["param_groups"] == ref_sd["param_groups"]
    assert list(sd["state"]) == list(ref_sd["state"])
    for k in ref_sd["state"]:
        assert list(sd["state"][k]) == list(ref_sd["state"][k])
        for key, value in ref_sd["state"][k].items():
            assert_same(sd["state"][k][key], value, f"state {k} {key}")
        step = sd["state"][k]["step"]
        assert step.shape == () and step.dtype == torch.float32 and step.device.type == "cpu"
    # Both directions: torch's state continues in shimnn, shimnn's in torch.
    ref_p2, shim_p2 = [p.clone() for p in ref_p], [p.clone() for p in shim_p]
    shim2 = shim_cls(shim_p2, lr=1.0)
    shim2.load_state_dict(copy.deepcopy(ref_sd))
    ref2 = torch_cls(ref_p2, lr=1.0)
    ref2.load_state_dict(copy.deepcopy(sd))
    assert shim2.param_groups[0].keys() == ref2.param_groups[0].keys()
    run_twins(ref2, shim2, ref_p2, shim_p2, steps=10, seed=7)
    run_twins(ref, shim, ref_p, shim_p, steps=10, seed=7)  # the uninterrupted run
    for a, b in zip(shim_p2, shim_p):
        assert_same(a, b, "resumed vs uninterrupted")


@pytest.mark.parametrize("name", NAMES)
def test_old_state_dicts_and_setstate(name: str) -> None:
    """State dicts from older torch (step a number, option keys missing) load like torch's;
    deepcopy (``__getstate__``/``__setstate__``) keeps training identical."""
    torch_cls, shim_cls = _pair(name)
    ref, shim, ref_p, shim_p = _trained_pair(name, **STATE_OPTIONS[name])
    old = ref.state_dict()
    for s in old["state"].values():
        s["step"] = int(s["step"].item())
    for group in old["param_groups"]:
        for key in ("foreach", "maximize", "differentiable", "capturable", "fused",
                    "decoupled_weight_decay", "amsgrad"):
            group.pop(key, None)
    ref2, shim2 = torch_cls(ref_p, lr=1.0), shim_cls(shim_p, lr=1.0)
    ref2.load_state_dict(copy.deepcopy(old))
    shim2.load_state_dict(copy.deepcopy(old))
    assert shim2.param_groups[0].keys() == ref2.param_groups[0].keys()
    assert {k: v for k, v in shim2.param_groups[0].items() if k != "params"} == {
        k: v for k, v in ref2.param_groups[0].items() if k != "params"}
    assert_same_state(shim2, ref2, shim_p, ref_p, "after loading an old state dict")
    shim3 = copy.deepcopy(shim2)
    assert type(shim3) is shim_cls
    shim3_p = shim3.param_groups[0]["params"]
    ref3 = copy.deepcopy(ref2)
    run_twins(ref3, shim3, ref3.param_groups[0]["params"], shim3_p, steps=5)


def test_adamw_forces_decoupled_weight_decay_on_load() -> None:
    ref, shim, ref_p, shim_p = _trained_pair("Adam", weight_decay=0.1)
    sd = ref.state_dict()
    ref_w = torch.optim.AdamW(ref_p, lr=0.05)
    shim_w = shimnn.optim.AdamW(shim_p, lr=0.05)
    ref_w.load_state_dict(copy.deepcopy(sd))
    shim_w.load_state_dict(copy.deepcopy(sd))
    assert shim_w.param_groups[0]["decoupled_weight_decay"] is True
    assert ref_w.param_groups[0]["decoupled_weight_decay"] is True
    run_twins(ref_w, shim_w, ref_p, shim_p, steps=5)


def test_float64_default_dtype_step() -> None:
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for name in NAMES:
            torch_cls, shim_cls = _pair(name)
            ref_p, shim_p = _params(torch.float32), _params(torch.float32)
            run_twins(torch_cls(ref_p), shim_cls(shim_p), ref_p, shim_p, steps=3)
            assert shim_cls(shim_p).state_dict() is not None
    finally:
        torch.set_default_dtype(prev)


def _sparse_grad(i: int, step: int, grad: torch.Tensor) -> torch.Tensor | None:
    if i == 0:  # rows 0, 2 and (twice, uncoalesced) 4 of the 5x3 parameter
        idx = torch.tensor([[0, 4, 2, 4]])
        vals = torch.stack([grad[0], grad[1], grad[2], grad[3]])
        return torch.sparse_coo_tensor(idx, vals, grad.shape, check_invariants=True)
    return _grad_of(i, step, grad)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # torch's own sparse_coo_tensor
@pytest.mark.parametrize("foreach", [None, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_adagrad_sparse_gradients(foreach: bool | None, maximize: bool) -> None:
    ref_p, shim_p = _params(torch.float64), _params(torch.float64)
    ref = torch.optim.Adagrad(ref_p, lr=0.1, lr_decay=0.1, foreach=foreach, maximize=maximize)
    shim = shimnn.optim.Adagrad(shim_p, lr=0.1, lr_decay=0.1, foreach=foreach,
                                maximize=maximize)
    g = torch.Generator().manual_seed(1)
    for step in range(10):
        for i, (a, b) in enumerate(zip(ref_p, shim_p)):
            gr = _sparse_grad(i, step, torch.randn(a.shape, generator=g, dtype=a.dtype))
            a.grad = None if gr is None else gr.clone()
            b.grad = None if gr is None else gr.clone()
        ref.step()
        with autograd_forbidden():
            shim.step()
        for i, (a, b) in enumerate(zip(shim_p, ref_p)):
            assert_same(a, b, f"param {i} after step {step}")
        assert_same_state(shim, ref, shim_p, ref_p, f"after step {step}")


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradient_errors_like_torch(name: str) -> None:
    torch_cls, shim_cls = _pair(name)
    options = {"weight_decay": 0.1} if name == "Adagrad" else {}
    ref_p, shim_p = _params(torch.float32), _params(torch.float32)
    ref, shim = torch_cls(ref_p, **options), shim_cls(shim_p, **options)
    for a, b in zip(ref_p, shim_p):
        a.grad = torch.ones_like(a).to_sparse()
        b.grad = torch.ones_like(b).to_sparse()
    ref_exc, shim_exc = check_raises_like(ref.step, shim.step)
    assert str(shim_exc) == str(ref_exc)


INVALID: list[tuple[str, dict[str, Any]]] = [
    *[(n, dict(lr=-1.0)) for n in NAMES],
    *[(n, dict(lr=torch.tensor([0.1, 0.2]))) for n in NAMES],
    *[(n, dict(eps=-1e-3)) for n in NAMES],
    *[(n, dict(weight_decay=-0.1)) for n in NAMES],
    *[(n, dict(betas=(1.0, 0.9))) for n in ("Adam", "AdamW")],
    *[(n, dict(betas=(0.9, -0.1))) for n in ("Adam", "AdamW")],
    *[(n, dict(betas=(0.9, torch.tensor(0.9)))) for n in ("Adam", "AdamW")],
    *[(n, dict(betas=(torch.tensor(0.9), torch.tensor(0.99)), foreach=True))
      for n in ("Adam", "AdamW")],
    *[(n, dict(betas=(torch.tensor([0.9, 0.8]), torch.tensor(0.99)))) for n in ("Adam",)],
    *[(n, dict(betas=(torch.tensor(0.9), torch.tensor([0.9, 0.8])))) for n in ("Adam",)],
    *[(n, dict(lr=torch.tensor(0.1), foreach=True)) for n in ("Adam", "AdamW")],
    *[(n, dict(fused=True, differentiable=True)) for n in ("Adam", "AdamW", "Adagrad")],
    *[(n, dict(fused=True, foreach=True)) for n in ("Adam", "AdamW", "Adagrad")],
    ("RMSprop", dict(momentum=-0.5)),
    ("RMSprop", dict(alpha=-0.5)),
    ("Adagrad", dict(lr_decay=-0.5)),
    ("Adagrad", dict(initial_accumulator_value=-0.5)),
]


@pytest.mark.parametrize("name,kwargs", INVALID,
                         ids=[f"{n}-{'-'.join(k)}" for n, k in INVALID])
def test_invalid_hyperparameters_raise_like_torch(name: str, kwargs: dict[str, Any]) -> None:
    torch_cls, shim_cls = _pair(name)
    params = _params(torch.float32)
    ref_exc, shim_exc = check_raises_like(lambda: torch_cls(params, **kwargs),
                                          lambda: shim_cls(params, **kwargs))
    assert str(shim_exc) == str(ref_exc)


@pytest.mark.parametrize("name", NAMES)
def test_empty_and_tensor_params_raise_like_torch(name: str) -> None:
    torch_cls, shim_cls = _pair(name)
    for params in ([], torch.zeros(2)):
        ref_exc, shim_exc = check_raises_like(lambda: torch_cls(params),
                                              lambda: shim_cls(params))
        assert str(shim_exc) == str(ref_exc)


def test_foreach_tensor_lr_set_later_raises_like_torch() -> None:
    ref_p, shim_p = _params(torch.float32), _params(torch.float32)
    ref = torch.optim.Adam(ref_p, foreach=True)
    shim = shimnn.optim.Adam(shim_p, foreach=True)
    for o, ps in ((ref, ref_p), (shim, shim_p)):
        o.param_groups[0]["lr"] = torch.tensor(0.1)
        for p in ps:
            p.grad = torch.ones_like(p)
    ref_exc, shim_exc = check_raises_like(ref.step, shim.step)
    assert str(shim_exc) == str(ref_exc)


@pytest.mark.parametrize("name,flag", [
    (n, f) for n in NAMES for f in ("differentiable", "fused", "capturable")
    if not (n == "RMSprop" and f == "fused") and not (n == "Adagrad" and f == "capturable")])
def test_unsupported_flags_raise_not_implemented(name: str, flag: str) -> None:
    _, shim_cls = _pair(name)
    with pytest.raises(NotImplementedError, match=f"shimnn.optim.{name}: {flag}=True"):
        shim_cls(_params(torch.float32), **{flag: True})
    # A loaded state dict carrying the flag is refused at the step, not silently ignored.
    p = _params(torch.float32)
    opt = shim_cls(p)
    sd = opt.state_dict()
    sd["param_groups"][0][flag] = True
    opt.load_state_dict(sd)
    for t in p:
        t.grad = torch.ones_like(t)
    with pytest.raises(NotImplementedError, match=f"{flag}=True"):
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_signature_defaults_and_repr_match_torch(name: str) -> None:
    torch_cls, shim_cls = _pair(name)
    ref_sig = inspect.signature(torch_cls.__init__).parameters
    shim_sig = inspect.signature(shim_cls.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in shim_sig.values()] == [
        (p.name, p.kind, p.default) for p in ref_sig.values()]
    ref, shim = torch_cls(_params(torch.float32)), shim_cls(_params(torch.float32))
    assert repr(shim) == repr(ref)
    assert shim.defaults == ref.defaults
    assert shim_cls.__doc__ and "Args:" in shim_cls.__doc__
    assert getattr(shim_cls.step, "hooked", False)


@pytest.mark.parametrize("name", NAMES)
def test_zero_grad_closure_and_hooks(name: str) -> None:
    torch_cls, shim_cls = _pair(name)
    for set_to_none in (True, False):
        ref_p, shim_p = _params(torch.float32), _params(torch.float32)
        ref, shim = torch_cls(ref_p), shim_cls(shim_p)
        for a, b in zip(ref_p, shim_p):
            a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
        ref.zero_grad(set_to_none=set_to_none)
        shim.zero_grad(set_to_none=set_to_none)
        for a, b in zip(shim_p, ref_p):
            assert_same(a.grad, b.grad)

    torch.manual_seed(0)
    model = shimnn.Linear(2, 1)
    opt = shim_cls(model.parameters(), lr=0.1)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    x = torch.randn(4, 2)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (model(x) * model(x)).sum()
        loss.backward()
        return loss

    before = model.weight.detach().clone()
    with autograd_forbidden():
        loss = opt.step(closure)
    assert calls == ["pre", "post"]
    assert isinstance(loss, torch.Tensor)
    assert not torch.equal(model.weight.detach(), before)

    # A pre-hook that returns something else than None or (args, kwargs): torch's error type.
    ref = torch_cls(_params(torch.float32))
    shim = shim_cls(_params(torch.float32))
    for o in (ref, shim):
        o.register_step_pre_hook(lambda o, a, k: 3)
    check_raises_like(ref.step, shim.step)


@pytest.mark.parametrize("name", NAMES)
def test_train_small_model_like_torch(name: str) -> None:
    """shimnn.Sequential(Linear, Tanh, Linear) + shimnn.MSELoss with the shimnn optimizer vs
    the same torch model with torch's: 50 steps, identical losses and parameters."""
    torch_cls, shim_cls = _pair(name)

    def make(nn: Any) -> torch.nn.Module:
        return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))

    torch.manual_seed(0)
    ref_model = make(torch.nn)
    torch.manual_seed(0)
    model = make(shimnn)
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert_same(a, b, "initial parameters")
    options = {"Adam": dict(amsgrad=True, weight_decay=1e-3), "AdamW": {},
               "RMSprop": dict(momentum=0.5), "Adagrad": dict(lr_decay=1e-3)}[name]
    ref = torch_cls(ref_model.named_parameters(), lr=0.01, **options)  # named: torch >= 2.6
    shim = shim_cls(model.named_parameters(), lr=0.01, **options)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 3, generator=g), torch.randn(32, 2, generator=g)
    ref_losses, losses = [], []
    for _ in range(50):
        ref.zero_grad()
        ref_loss = torch.nn.MSELoss()(ref_model(x), y)
        ref_loss.backward()
        ref.step()
        ref_losses.append(ref_loss.item())
        with autograd_forbidden():
            shim.zero_grad()
            loss = shimnn.MSELoss()(model(x), y)
            loss.backward()
            shim.step()
        losses.append(loss.item())
    assert losses == ref_losses
    assert losses[-1] < losses[0]
    for (n, a), b in zip(model.named_parameters(), ref_model.parameters()):
        assert_same(a, b, n)
        assert_same(shim.state[a]["step"], ref.state[b]["step"], n)
    assert shim.state_dict()["param_groups"] == ref.state_dict()["param_groups"]


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_step_is_a_profiler_scope_as_torchs(name: str) -> None:
    """Under torch's profiler a step and a zero_grad show torch's ranges
    (``Optimizer.step#<class>.step``, ``Optimizer.zero_grad#<class>.zero_grad``)."""
    seen = {}
    for nn, optim in ((torch.nn, torch.optim), (shimnn, shimnn.optim)):
        torch.manual_seed(0)
        p = nn.Parameter(torch.randn(4))
        p.grad = torch.randn(4)
        opt = getattr(optim, name)([p], lr=0.1)
        calls: list[bool] = []
        opt.register_step_pre_hook(lambda *a: calls.append(True))
        with torch.profiler.profile() as prof:
            opt.step()
            opt.zero_grad()
        names = [e.name for e in prof.events()]
        seen[nn] = (f"Optimizer.step#{name}.step" in names
                    and f"Optimizer.zero_grad#{name}.zero_grad" in names, calls,
                    p.detach().clone())
    assert seen[shimnn][0] and seen[torch.nn][0]
    assert seen[shimnn][1] == seen[torch.nn][1] == [True]
    assert torch.equal(seen[shimnn][2], seen[torch.nn][2])
