"""Never a silently wrong gradient: every family of cases that once differed from torch silently.

Each case is one function written against a module namespace (``torch.nn`` or ``shimnn``), run
under both from the same seed: torch with its autograd, shimnn with autograd forbidden. The
returned values (outputs, gradients) must be bit-identical, or, where marked, shimnn may instead
raise an error that names what it does not support; it may never return something else. The
suite runs with the compiled fast paths and without them (``make test``).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as TF

import shimnn
from conftest import assert_same, autograd_forbidden


def _run(case: Callable[[Any], Any], mod: Any) -> Any:
    torch.manual_seed(0)
    if mod is shimnn:
        with no_torch_engine():
            return case(mod)
    return case(mod)


class _NoEngine:
    """torch's engine object, replaced: any use of torch's autograd engine raises."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"torch's autograd engine was used ({name})")


@contextlib.contextmanager
def no_torch_engine() -> Iterator[None]:
    """torch's autograd engine forbidden; torch.autograd.grad/backward stay callable (on
    shimnn tensors they run shimnn's engine)."""
    variable = torch.autograd.variable.Variable
    engine = variable._execution_engine
    variable._execution_engine = _NoEngine()
    try:
        with autograd_forbidden(engine_only=True):
            yield
    finally:
        variable._execution_engine = engine


def _compare(shim: Any, ref: Any, what: str) -> None:
    if isinstance(ref, (tuple, list)):
        assert isinstance(shim, (tuple, list)) and len(shim) == len(ref), what
        for i, (a, b) in enumerate(zip(shim, ref)):
            _compare(a, b, f"{what}[{i}]")
    elif isinstance(ref, torch.Tensor) or ref is None:
        assert_same(shim, ref, what)
    else:
        assert shim == ref, f"{what}: {shim!r} vs {ref!r}"


def exact(case: Callable[[Any], Any]) -> None:
    """shimnn returns what torch returns, bit for bit."""
    _compare(_run(case, shimnn), _run(case, torch.nn), case.__name__)


def exact_or_refused(case: Callable[[Any], Any]) -> None:
    """shimnn returns what torch returns, or raises NotImplementedError naming shimnn."""
    ref = _run(case, torch.nn)
    try:
        shim = _run(case, shimnn)
    except NotImplementedError as error:
        assert "shimnn" in str(error), error
        return
    _compare(shim, ref, case.__name__)


def raises_like(case: Callable[[Any], Any], same_message: bool = False) -> None:
    """Both raise, the same exception type (and message)."""
    with pytest.raises(Exception) as ref:
        _run(case, torch.nn)
    with pytest.raises(Exception) as shim:
        _run(case, shimnn)
    assert type(shim.value) is type(ref.value), f"{shim.value!r} vs torch's {ref.value!r}"
    if same_message:
        assert str(shim.value) == str(ref.value)


def param(mod: Any, *shape: int) -> torch.Tensor:
    return mod.Parameter(torch.randn(*shape))


# ---------------------------------------------------------------------------------------------
# 1. A fresh seed gradient, and gradients never shared between owners
# ---------------------------------------------------------------------------------------------


def test_a_scalar_loss_plus_a_0d_parameter_keeps_every_later_backward_exact() -> None:
    def case(mod: Any) -> Any:
        model = mod.Sequential(mod.Linear(2, 3), mod.ReLU(), mod.Linear(3, 1))
        offset = mod.Parameter(torch.tensor(0.5))
        x, y = torch.randn(4, 2), torch.randn(4, 1)
        grads = []
        for _ in range(3):
            loss = mod.MSELoss()(model(x), y) + offset
            loss.backward()
            grads.append(offset.grad.clone())
        torch.manual_seed(1)
        other = mod.Linear(2, 1)
        other(x).sum().backward()
        return grads, other.bias.grad, other.weight.grad

    exact(case)


def test_100_steps_with_a_0d_parameter_accumulation_and_hooks_then_an_unrelated_model() -> None:
    def case(mod: Any) -> Any:
        model = mod.Sequential(mod.Linear(3, 8), mod.Tanh(), mod.Linear(8, 1))
        scale = mod.Parameter(torch.tensor(1.0))
        bias = mod.Parameter(torch.tensor(0.0))
        params = [*model.parameters(), scale, bias]
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
        bias.register_hook(lambda g: g * 0.5)
        seen = []
        x, y = torch.randn(16, 3), torch.randn(16, 1)
        for step in range(100):
            for half in (x[:8], x[8:]):  # two backwards accumulate before each step
                out = model(half) * scale + bias
                h = out.sum() * 0 + out.mean()
                h.register_hook(lambda g: seen.append(g.clone()))
                loss = ((out - y[:8]) ** 2).mean() + h
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=step % 2 == 0)
        torch.manual_seed(3)
        other = mod.Linear(3, 2)
        other(x).sum().backward()
        return [p.detach() for p in params], seen[-3:], other.weight.grad, other.bias.grad

    exact(case)


def test_a_grad_sharing_the_seeds_memory_keeps_later_backwards_exact() -> None:
    def case(mod: Any) -> Any:
        w = mod.Parameter(torch.tensor(2.0))
        grads = []
        for _ in range(3):
            # A view of the seed reaches the leaf: its .grad is a detached view of the seed's
            # memory, so that seed is never reused; modifying .grad must not change a later one.
            w.reshape(()).backward()
            grads.append(w.grad.clone())
            w.grad.mul_(0)
        return grads

    exact(case)


def test_a_gradient_kept_by_a_hook_is_copied_into_grad_a_fresh_one_is_stored() -> None:
    kept: list[torch.Tensor] = []
    p = shimnn.Parameter(torch.randn(3))
    h = p + 0  # AddBackward0 passes the very gradient on
    h.register_hook(lambda g: kept.append(g))
    h.backward(torch.ones(3))
    assert p.grad is not kept[0]
    p.grad.mul_(2)
    assert torch.equal(kept[0], torch.ones(3))

    class Triple(shimnn.Function):
        made: Any = None

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return x * 1.0

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            out = g * 3.0
            Triple.made = weakref.ref(out)
            return out

    q = shimnn.Parameter(torch.randn(3))
    Triple.apply(q).sum().backward()
    assert Triple.made() is q.grad  # nothing else held it: stored, as torch's AccumulateGrad


def test_gradients_alias_exactly_where_torch_aliases_them() -> None:
    def case(mod: Any) -> Any:
        a, b = param(mod, 2, 2), param(mod, 2, 2)
        g = torch.ones(4)
        (a.view(-1) + b.view(-1)).backward(g)
        shared = a.grad.data_ptr() == b.grad.data_ptr() == g.data_ptr()  # torch's own aliasing
        p, q = param(mod, 3), param(mod, 3)
        (p + q).backward(torch.ones(3))
        return shared, p.grad.data_ptr() == q.grad.data_ptr()

    exact(case)


# ---------------------------------------------------------------------------------------------
# 2-4. Mutation decided by schema: inplace= keywords, out=, writes into plain tensors, views
# ---------------------------------------------------------------------------------------------

INPLACE_KEYWORD_CASES = {
    "F.selu": lambda h: TF.selu(h, inplace=True),
    "F.celu": lambda h: TF.celu(h, inplace=True),
    "F.threshold": lambda h: TF.threshold(h, 0.1, 2.0, inplace=True),
    "F.hardswish": lambda h: TF.hardswish(h, inplace=True),
    "F.hardsigmoid": lambda h: TF.hardsigmoid(h, inplace=True),
    "F.mish": lambda h: TF.mish(h, inplace=True),
    "F.rrelu": lambda h: TF.rrelu(h, inplace=True),
    "F.alpha_dropout": lambda h: TF.alpha_dropout(h, 0.3, True, inplace=True),
    "F.relu": lambda h: TF.relu(h, inplace=True),
    "F.elu": lambda h: TF.elu(h, inplace=True),
    "F.leaky_relu": lambda h: TF.leaky_relu(h, 0.1, inplace=True),
    "F.hardtanh": lambda h: TF.hardtanh(h, inplace=True),
    "F.silu": lambda h: TF.silu(h, inplace=True),
}


@pytest.mark.parametrize("name", sorted(INPLACE_KEYWORD_CASES))
def test_inplace_keyword_is_a_write(name: str) -> None:
    fn = INPLACE_KEYWORD_CASES[name]

    def case(mod: Any) -> Any:
        p = param(mod, 6)
        h = p * 1.5
        out = fn(h)
        (h * torch.arange(6.0)).sum().backward()
        return out is h, h.detach(), p.grad

    exact_or_refused(case)


@pytest.mark.parametrize("module", ["SELU", "Hardswish", "CELU", "Mish", "Hardsigmoid",
                                    "ReLU", "ELU", "LeakyReLU", "Hardtanh", "SiLU"])
def test_module_with_inplace_true_is_a_write(module: str) -> None:
    def case(mod: Any) -> Any:
        p = param(mod, 6)
        h = p * 1.5
        getattr(mod, module)(inplace=True)(h)
        (h * torch.arange(6.0)).sum().backward()
        return h.detach(), p.grad

    exact_or_refused(case)


OUT_CASES = {
    "sin": lambda h, o: torch.sin(h, out=o),
    "cat": lambda h, o: torch.cat([h, h], out=o),
    "stack": lambda h, o: torch.stack([h, h], out=o),
    "matmul": lambda h, o: torch.matmul(h, h.t(), out=o),
    "clamp": lambda h, o: torch.clamp(h, 0, 1, out=o),
    "where": lambda h, o: torch.where(h > 0, h, h * 2, out=o),
    "nan_to_num": lambda h, o: torch.nan_to_num(h, out=o),
    "add": lambda h, o: torch.add(h, 1, out=o),
    "exp": lambda h, o: torch.exp(h, out=o),
    "sum": lambda h, o: torch.sum(h, 0, out=o),
    "F.normalize": lambda h, o: TF.normalize(h, out=o),
}


@pytest.mark.parametrize("name", sorted(OUT_CASES))
def test_out_with_a_gradient_raises_like_torch(name: str) -> None:
    fn = OUT_CASES[name]

    def case(mod: Any) -> Any:
        h = param(mod, 2, 2) * 1.0
        fn(h, torch.empty(0))

    raises_like(case)

    def into_self(mod: Any) -> Any:
        h = param(mod, 2, 2) * 1.0
        fn(h, h)

    raises_like(into_self)


def test_out_without_a_gradient_just_computes() -> None:
    def case(mod: Any) -> Any:
        h = param(mod, 2, 2) * 1.0
        out = torch.empty(2, 2)
        with torch.no_grad():
            torch.sin(h, out=out)
        return out

    exact(case)


def _writes() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Writes of a value that needs a gradient (``h``, 2x3) into a plain tensor."""

    def setitem_rows(h: torch.Tensor) -> torch.Tensor:
        buf = torch.zeros(4, 3)
        for t in range(2):
            buf[t] = h[t] * (t + 1)  # an RNN loop collecting its outputs
        return buf

    def slice_iadd(h: torch.Tensor) -> torch.Tensor:
        buf = torch.ones(2, 5)
        buf[:, :3] += h
        return buf

    def nested(h: torch.Tensor) -> torch.Tensor:
        buf = torch.zeros(3, 2, 3)
        buf[1][0] = h[0]
        return buf

    def view_copy(h: torch.Tensor) -> torch.Tensor:
        buf = torch.zeros(2, 6)
        view = buf[:, 1:4]
        view.copy_(h)
        return buf

    def mask(h: torch.Tensor) -> torch.Tensor:
        buf = torch.zeros(2, 3)
        buf[torch.tensor([[True, False, True], [False, True, True]])] = h[0, 1] * 3
        return buf

    return {
        "buf[t] = h": setitem_rows,
        "buf[:, :3] += h": slice_iadd,
        "buf[i][j] = h": nested,
        "buf[:, 1:4].copy_(h)": view_copy,
        "buf[mask] = scalar h": mask,
        "buf.copy_(h)": lambda h: torch.zeros(2, 3).copy_(h),
        "buf.copy_(broadcast h)": lambda h: torch.zeros(4, 2, 3).copy_(h[0]),
        "buf.copy_(float64 h)": lambda h: torch.zeros(2, 3, dtype=torch.float64).copy_(h),
        "buf.mul_(h)": lambda h: torch.full((2, 3), 2.0).mul_(h),
        "buf.add_(h, alpha)": lambda h: torch.ones(2, 3).add_(h, alpha=0.5),
        "buf += h": lambda h: _iadd(torch.ones(2, 3), h),
        "buf.addcmul_(h, h)": lambda h: torch.ones(2, 3).addcmul_(h, h),
        "buf.index_copy_": lambda h: torch.ones(4, 3).index_copy_(0, torch.tensor([0, 2]), h),
        "buf.index_add_": lambda h: torch.ones(4, 3).index_add_(0, torch.tensor([0, 2]), h),
        "buf.scatter_": lambda h: torch.ones(2, 3).scatter_(1, torch.tensor([[0, 1, 2]] * 2), h),
        "buf.masked_scatter_": lambda h: torch.ones(2, 3).masked_scatter_(
            torch.ones(2, 3, dtype=torch.bool), h),
        "buf.lerp_": lambda h: torch.ones(2, 3).lerp_(h, 0.3),
        "buf.addmm_": lambda h: torch.ones(2, 2).addmm_(h, h.t()),
        "buf.put_": lambda h: torch.ones(6).put_(torch.tensor([1, 4]), h[0, :2]),
        "buf.fill_(h.sum())": lambda h: torch.ones(2, 3).fill_(h.sum()),
        "buf.index_put_": lambda h: torch.zeros(4, 3).index_put_((torch.tensor([3, 1]),), h),
        "buf[idx] = h": lambda h: _setitem(torch.zeros(4, 3), torch.tensor([3, 1]), h),
    }


def _iadd(buf: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    buf += h
    return buf


def _setitem(buf: torch.Tensor, index: Any, value: Any) -> torch.Tensor:
    buf[index] = value
    return buf


@pytest.mark.parametrize("name", sorted(_writes()))
def test_a_write_into_a_plain_tensor_joins_the_graph(name: str) -> None:
    write = _writes()[name]

    def case(mod: Any) -> Any:
        p = param(mod, 2, 3)
        h = p * 2.0
        buf = write(h)
        weights = torch.randn(buf.shape, dtype=buf.dtype)
        (buf * weights).sum().backward()
        return buf.detach(), p.grad

    exact_or_refused(case)


EXACT_WRITES = {"buf[t] = h", "buf[:, :3] += h", "buf[i][j] = h", "buf[:, 1:4].copy_(h)",
                "buf[mask] = scalar h", "buf.copy_(h)", "buf.copy_(broadcast h)",
                "buf.copy_(float64 h)", "buf.mul_(h)", "buf.add_(h, alpha)", "buf += h",
                "buf.fill_(h.sum())", "buf.index_put_", "buf[idx] = h"}


@pytest.mark.parametrize("name", sorted(EXACT_WRITES))
def test_the_common_writes_are_exact_not_refused(name: str) -> None:
    write = _writes()[name]

    def case(mod: Any) -> Any:
        p = param(mod, 2, 3)
        buf = write(p * 2.0)
        (buf * torch.randn(buf.shape, dtype=buf.dtype)).sum().backward()
        return buf.detach(), p.grad

    exact(case)


def test_rnn_style_loop_collecting_outputs_trains_like_torch() -> None:
    def case(mod: Any) -> Any:
        cell = mod.Linear(5, 4)
        head = mod.Linear(4, 1)
        opt = torch.optim.SGD([*cell.parameters(), *head.parameters()], lr=0.1)
        xs = torch.randn(6, 3, 1)
        losses = []
        for _ in range(5):
            h = torch.zeros(3, 4)
            outputs = torch.zeros(6, 3, 4)
            for t in range(6):
                h = torch.tanh(cell(torch.cat([xs[t], h], 1)))
                outputs[t] = h
            loss = head(outputs).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return losses, [p.detach() for p in cell.parameters()]

    exact(case)


VIEW_CASES = {
    "h[0].relu_()": lambda h: h[0].relu_(),
    "h[:, 1:] *= 2": lambda h: _imul(h[:, 1:], 2.0),
    "h.t().add_(1)": lambda h: h.t().add_(1.0),
    "h[1].copy_(h[0])": lambda h: h[1].copy_(h[0] * 3),
    "h[0] = 0": lambda h: _setitem(h, 0, 0.0),
    "h[h > 0] = 0": lambda h: _setitem(h, h > 0, 0.0),
    "h.zero_()": lambda h: h.zero_(),
}


def _imul(t: torch.Tensor, value: float) -> torch.Tensor:
    t *= value
    return t


@pytest.mark.parametrize("name", sorted(VIEW_CASES))
def test_in_place_writes_into_views_of_tensors_that_need_a_gradient(name: str) -> None:
    write = VIEW_CASES[name]

    def case(mod: Any) -> Any:
        p, q = param(mod, 2, 3), param(mod, 2, 3)
        h = p * 2.0
        write(h)
        (h * q).sum().backward()
        return h.detach(), p.grad, q.grad

    exact(case)


def test_a_view_taken_before_its_base_changed_follows_the_base() -> None:
    def case(mod: Any) -> Any:
        p = param(mod, 2, 3)
        h = p * 2.0
        v = h[1]
        h.mul_(3.0)
        (v * v).sum().backward()
        return v.detach(), p.grad

    exact(case)


def test_set_with_a_gradient_raises_at_backward_like_torch() -> None:
    def case(mod: Any) -> Any:
        p = param(mod, 3)
        z = (p * 0.0).detach()  # (torch does not dispatch a plain tensor's set_ to shimnn)
        z.set_(p * 2.0)
        z.sum().backward()

    raises_like(case)


def test_leaf_and_view_of_leaf_writes_raise_like_torch() -> None:
    raises_like(lambda mod: param(mod, 3).add_(1.0))
    raises_like(lambda mod: param(mod, 3)[0].mul_(2.0))
    raises_like(lambda mod: _setitem(param(mod, 3), 0, 1.0))
    raises_like(lambda mod: param(mod, 3).copy_(torch.ones(3)))


INPLACE_KWARGS = {
    "clamp_(min=0)": lambda h: h.clamp_(min=0.0),
    "masked_fill_(value=)": lambda h: h.masked_fill_(h > 0, value=1.0),
    "nan_to_num_(nan=0.0)": lambda h: h.nan_to_num_(nan=0.0),
    "index_fill_(value=)": lambda h: h.index_fill_(1, torch.tensor([0]), value=2.0),
}


@pytest.mark.parametrize("name", sorted(INPLACE_KWARGS))
def test_inplace_ops_with_keyword_arguments(name: str) -> None:
    write = INPLACE_KWARGS[name]

    def case(mod: Any) -> Any:
        p = param(mod, 2, 3)
        h = p * 2.0
        write(h)
        (h * torch.arange(6.0).view(2, 3)).sum().backward()
        return h.detach(), p.grad

    exact_or_refused(case)


# ---------------------------------------------------------------------------------------------
# 6. Engine semantics
# ---------------------------------------------------------------------------------------------


def test_backward_inputs_with_a_non_leaf_fills_its_grad() -> None:
    def case(mod: Any) -> Any:
        p = param(mod, 3)
        h = p * 2.0
        (h * 3.0).sum().backward(inputs=[h])
        return h.grad, p.grad, h.retains_grad

    exact(case)


def test_backward_inputs_runs_only_what_leads_to_them() -> None:
    def case(mod: Any) -> Any:
        p, q = param(mod, 3), param(mod, 3)
        h = p * 2.0
        unrelated = torch.special.erfcx(q)  # no hand-written backward: must not be run
        (h.sum() + unrelated.sum()).backward(inputs=[p])
        return p.grad, q.grad

    exact(case)


def test_retain_grad_then_inplace_reports_the_new_version() -> None:
    def case(mod: Any) -> Any:
        p = param(mod, 4)
        h = p * 2.0
        h.retain_grad()
        h.relu_()
        (h * 3.0).sum().backward()
        return h.grad, p.grad

    exact(case)


def test_requires_grad_false_between_forward_and_backward() -> None:
    def case(mod: Any) -> Any:
        p, q = param(mod, 3), param(mod, 3)
        y = (p * q).sum()
        p.requires_grad_(False)
        y.backward()
        return p.grad, q.grad

    exact(case)


def test_hooks_see_torch_values_and_order() -> None:
    def case(mod: Any) -> Any:
        order: list[str] = []
        p = param(mod, 3)
        p.register_hook(lambda g: order.append("leaf") or g * 2)
        p.register_post_accumulate_grad_hook(lambda t: order.append("post"))
        h = p * 3.0
        h.register_hook(lambda g: order.append("h") or g + 1)
        (h ** 2).sum().backward()
        return order, p.grad

    exact(case)


# ---------------------------------------------------------------------------------------------
# 5. torch.autograd.Function subclasses run in shimnn's engine
# ---------------------------------------------------------------------------------------------


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        return -ctx.lam * grad, None


class StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class TwoOutputs(torch.autograd.Function):
    @staticmethod
    def forward(x: torch.Tensor) -> Any:
        return x * 2, x.sin(), (x > 0).sum()

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.mark_non_differentiable(output[2])

    @staticmethod
    def backward(ctx: Any, g1: torch.Tensor, g2: torch.Tensor, g3: Any) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g1 * 2 + g2 * x.cos()


class ScaleInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.mul_(3.0)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * 3.0


class BroadcastGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.sum(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.expand(3, 4, 2).double()  # a broadcast, differently typed gradient


def test_gradient_reversal_and_straight_through_train_like_torch() -> None:
    def case(mod: Any) -> Any:
        features, head = mod.Linear(3, 4), mod.Linear(4, 1)
        opt = torch.optim.SGD([*features.parameters(), *head.parameters()], lr=0.1)
        x = torch.randn(8, 3)
        for _ in range(5):
            h = features(x)
            loss = head(GradReverse.apply(h, 0.5)).pow(2).mean()
            loss = loss + StraightThrough.apply(h).mul(h).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.detach() for p in features.parameters()]

    exact(case)


def test_custom_function_with_several_outputs_setup_context_and_unused_output() -> None:
    def case(mod: Any) -> Any:
        p = param(mod, 5)
        a, b, count = TwoOutputs.apply(p * 1.5)
        (a * b).sum().backward(retain_graph=True)
        first = p.grad.clone()
        a.sum().backward()  # b gets no gradient: backward sees zeros for it
        return first, p.grad, count, count.requires_grad, a.requires_grad

    exact(case)


def test_custom_function_mark_dirty_and_a_broadcast_gradient() -> None:
    def case(mod: Any) -> Any:
        p, q = param(mod, 4), param(mod, 3, 4, 2)
        h = p * 2.0
        out = ScaleInPlace.apply(h)
        (out * torch.arange(4.0)).sum().backward()
        BroadcastGrad.apply(q * 1.0).sum().backward()
        return out is h, h.detach(), p.grad, q.grad

    exact(case)


def test_custom_function_errors_like_torch() -> None:
    class TooMany(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return x * 1.0

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> Any:
            return grad, grad

    class WrongShape(TooMany):
        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> Any:
            return grad[:1]

    raises_like(lambda mod: TooMany.apply(param(mod, 3) * 1.0).sum().backward())
    raises_like(lambda mod: WrongShape.apply(param(mod, 3) * 1.0).sum().backward())

    def twice(mod: Any) -> Any:
        y = TwoOutputs.apply(param(mod, 3) * 1.0)[0].sum()
        y.backward()
        y.backward()

    raises_like(twice)


# ---------------------------------------------------------------------------------------------
# 7. torch's autograd tools: honoured or refused
# ---------------------------------------------------------------------------------------------


def test_detect_anomaly_names_the_node_that_returned_nan() -> None:
    def case(mod: Any) -> Any:
        p = mod.Parameter(torch.zeros(3))
        with torch.autograd.detect_anomaly():
            (p / p).sum().backward()

    with pytest.warns(UserWarning):
        with pytest.raises(RuntimeError) as ref:
            _run(case, torch.nn)
    with pytest.warns(UserWarning):
        with pytest.raises(RuntimeError) as shim:
            _run(case, shimnn)
    assert str(shim.value) == str(ref.value) == \
        "Function 'DivBackward0' returned nan values in its 1th output."


def _refused(case: Callable[[], Any], match: str) -> None:
    with pytest.raises(NotImplementedError, match=match):
        with autograd_forbidden():
            case()


def test_forward_ad_torch_func_saved_tensor_hooks_and_autocast_are_refused() -> None:
    import torch.autograd.forward_ad as fwad
    from torch.func import functional_call
    from torch.func import grad as func_grad

    model = shimnn.Linear(3, 2)
    x = torch.randn(4, 3)

    def forward_ad() -> Any:
        with fwad.dual_level():
            return model(fwad.make_dual(x, torch.ones(4, 3)))

    def func_transform() -> Any:
        return func_grad(lambda p: functional_call(model, p, (x,)).sum())(
            dict(model.named_parameters()))

    def saved_hooks() -> Any:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            return model(x)

    def autocast() -> Any:
        with torch.autocast("cpu", torch.bfloat16):
            return model(x)

    _refused(forward_ad, "forward-mode AD")
    _refused(func_transform, "torch.func")
    _refused(saved_hooks, "saved_tensors_hooks")
    _refused(autocast, "autocast")
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        ref = torch.nn.Linear(3, 2)
        ref.load_state_dict(model.state_dict())
        assert_same(model(x), ref(x))  # inference under autocast: torch's kernels, same bits


# ---------------------------------------------------------------------------------------------
# 8. shimnn's modules are instances of torch's classes of the same name
# ---------------------------------------------------------------------------------------------


def test_every_shimnn_module_is_an_instance_of_torchs_class_of_that_name() -> None:
    import torch.nn.modules.loss as torch_loss

    for name in shimnn.modules.__all__:
        shim_cls, torch_cls = getattr(shimnn, name), getattr(torch.nn, name, None)
        if torch_cls is None or name == "Module":
            continue
        assert issubclass(shim_cls, torch_cls), name
    assert isinstance(shimnn.Linear(2, 2), torch.nn.Linear)
    with shimnn.patch_torch():
        assert isinstance(torch.nn.MSELoss(), torch_loss._Loss)
        assert isinstance(torch.nn.CrossEntropyLoss(), torch_loss._WeightedLoss)

    def decay_groups(mod: Any) -> Any:
        model = mod.Sequential(mod.Linear(2, 3), mod.ReLU(), mod.Linear(3, 1))
        return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]

    exact(decay_groups)


# ---------------------------------------------------------------------------------------------
# 9. torch.autograd.grad / torch.autograd.backward run shimnn's engine
# ---------------------------------------------------------------------------------------------


def _grad_cases() -> dict[str, Callable[[Any], Any]]:
    def simple(mod: Any) -> Any:
        p = param(mod, 3)
        h = p * 2.0
        loss = (h * h).sum()
        return torch.autograd.grad(loss, [p, h]), p.grad

    def grad_outputs(mod: Any) -> Any:
        p = param(mod, 2, 3)
        out = p * 3.0
        return torch.autograd.grad(out, p, grad_outputs=torch.randn(2, 3), retain_graph=True)

    def unused(mod: Any) -> Any:
        p, q = param(mod, 3), param(mod, 3)
        loss = (p * 2.0).sum()
        return torch.autograd.grad(loss, [p, q], allow_unused=True, materialize_grads=True)

    def backward_fn(mod: Any) -> Any:
        p, q = param(mod, 3), param(mod, 3)
        torch.autograd.backward([(p * q).sum(), (p * 2.0).sum()], inputs=[q])
        return p.grad, q.grad

    def module_params(mod: Any) -> Any:
        model = mod.Sequential(mod.Linear(3, 4), mod.Tanh(), mod.Linear(4, 1))
        loss = model(torch.randn(5, 3)).pow(2).mean()
        return torch.autograd.grad(loss, list(model.parameters())), [
            p.grad for p in model.parameters()]

    return {"simple": simple, "grad_outputs": grad_outputs, "unused": unused,
            "backward": backward_fn, "module parameters": module_params}


@pytest.mark.parametrize("name", sorted(_grad_cases()))
def test_torch_autograd_grad_and_backward_on_shimnn_tensors(name: str) -> None:
    exact(_grad_cases()[name])


def test_torch_autograd_grad_errors_like_torch() -> None:
    def unused(mod: Any) -> Any:
        p, q = param(mod, 3), param(mod, 3)
        torch.autograd.grad((p * 2.0).sum(), [p, q])

    def no_grad_input(mod: Any) -> Any:
        p = param(mod, 3)
        torch.autograd.grad((p * 2.0).sum(), [torch.ones(3)])

    raises_like(unused, same_message=True)
    raises_like(no_grad_input, same_message=True)
    with pytest.raises(NotImplementedError, match="create_graph"):
        p = shimnn.Parameter(torch.ones(2))
        torch.autograd.grad((p * p).sum(), p, create_graph=True)


# ---------------------------------------------------------------------------------------------
# 10. DistributedDataParallel refuses shimnn models (it would train them silently wrong)
# ---------------------------------------------------------------------------------------------


def test_ddp_around_a_shimnn_model_uses_shimnns_reducer() -> None:
    """DDP's gradients come from shimnn's reducer for shimnn models (tests/test_ddp.py proves
    them bitwise); torch's models keep torch's."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    try:
        shim = torch.nn.parallel.DistributedDataParallel(shimnn.Linear(2, 2))
        assert type(shim.reducer).__module__ == "shimnn._reducer"
        ref = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        assert type(ref.reducer) is torch.distributed.Reducer
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Crashes met on the way
# ---------------------------------------------------------------------------------------------


def test_save_load_weights_only_and_deepcopy() -> None:
    import copy
    import io

    params = [shimnn.Parameter(torch.randn(3)), shimnn.Parameter(torch.ones(2), False)]
    buffer = io.BytesIO()
    torch.save(params, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert [type(p) for p in loaded] == [shimnn.Parameter] * 2
    assert [p.requires_grad for p in loaded] == [True, False]
    for a, b in zip(loaded, params):
        assert_same(a, b)
    h = params[0] * 2.0
    copied = copy.deepcopy(h.detach())
    assert_same(copied, h)
    raises_like(lambda mod: copy.deepcopy(param(mod, 3) * 2.0))


def test_a_view_taken_before_a_write_into_its_plain_base_follows_it() -> None:
    def plain_base(mod: Any) -> Any:
        p = param(mod, 3)
        buf = torch.zeros(2, 3)
        column = buf[:, 1]  # a plain view, taken before buf joins the graph
        buf[0] = p * 2.0
        (column * p[1]).sum().backward()  # column[0] is p[1] * 2
        return column.detach(), p.grad

    def tracked_base(mod: Any) -> Any:
        p = param(mod, 3)
        h = (p * 0.0).detach()  # a tracked value that needs no gradient
        row = h[0:1]
        h.copy_(p * 3.0)
        (row * p).sum().backward()
        return row.detach(), p.grad

    exact(plain_base)
    exact(tracked_base)


# ---------------------------------------------------------------------------------------------
# Found by the op_db sweep (tests/op_sweep.py)
# ---------------------------------------------------------------------------------------------


def test_fallback_values_follow_torchs_grad_mode_kernel_choice() -> None:
    def case(mod: Any) -> Any:
        a = param(mod, 4, 3)
        return torch.linalg.svdvals(a * 1.0), torch.linalg.eigvalsh((a.T @ a) * 1.0)

    exact_or_refused(lambda mod: _values(case(mod)))


def _values(result: Any) -> Any:
    return [t.detach() for t in result]


def test_amax_of_a_0d_tensor_over_its_dim() -> None:
    def case(mod: Any) -> Any:
        p = mod.Parameter(torch.tensor(1.5))
        torch.amax(p * 1.0, dim=-1).backward(torch.tensor(2.0))
        torch.amin(p * 1.0, dim=(0,), keepdim=True).backward(torch.tensor(3.0))
        return p.grad

    exact(case)


@pytest.mark.parametrize("op", ["transpose_", "t_", "swapdims_", "unsqueeze_", "squeeze_"])
def test_metadata_only_inplace_ops(op: str) -> None:
    args = {"transpose_": (0, 1), "t_": (), "swapdims_": (0, 1), "unsqueeze_": (0,),
            "squeeze_": ()}[op]

    def case(mod: Any) -> Any:
        p = param(mod, 2, 2)
        h = p * 2.0
        alias = h.detach()
        getattr(h, op)(*args)
        (h * torch.arange(float(h.numel())).view(h.shape)).sum().backward()
        return h.detach(), h.stride(), alias, p.grad

    exact(case)

    def on_view(mod: Any) -> Any:
        base = param(mod, 4) * 1.0
        view = base.view(2, 2)
        getattr(view, op)(*args)
        (view * torch.arange(4.0).view(view.shape)).sum().backward()
        return base.detach(), view.detach()

    exact_or_refused(on_view)


@pytest.mark.parametrize("op", ["elu_", "leaky_relu_", "relu_", "hardtanh_", "sigmoid_"])
def test_shimnns_own_inplace_ops_on_views_keep_their_formula(op: str) -> None:
    fn = {"elu_": lambda v: TF.elu(v, inplace=True),
          "leaky_relu_": lambda v: TF.leaky_relu(v, 0.1, inplace=True),
          "relu_": lambda v: v.relu_(), "hardtanh_": lambda v: TF.hardtanh(v, inplace=True),
          "sigmoid_": lambda v: v.sigmoid_()}[op]

    def case(mod: Any) -> Any:
        p = param(mod, 10, 10)
        h = p * 3.0
        fn(h[2:8, 1:9])
        (h * torch.randn(10, 10)).sum().backward()
        return h.detach(), p.grad

    exact(case)


def test_an_error_inside_a_view_write_leaves_grad_mode_on() -> None:
    v = (shimnn.Parameter(torch.randn(4)) * 1.0).view(2, 2)
    with pytest.raises(RuntimeError):
        v.clamp_()  # torch's own error: neither min nor max
    assert torch.is_grad_enabled()


def test_out_into_an_integer_tensor_needs_no_gradient() -> None:
    def case(mod: Any) -> Any:
        h = param(mod, 3, 4) * 1.0
        index = torch.empty(3, dtype=torch.long)
        torch.argmax(h, 1, out=index)
        return index

    exact(case)
