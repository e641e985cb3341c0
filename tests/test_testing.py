"""shimnn.testing, the public parity API: each failure report, gradcheck against torch's own,
the autograd guard, and the README's worked example.

torch's autograd runs here only for the reference side (torch.autograd.gradcheck on a
torch.autograd.Function with the same bug as a shimnn.Function), never inside shimnn.
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError as TorchGradcheckError

import shimnn
from shimnn.testing import (
    AutogradCalled,
    GradcheckError,
    ParityError,
    assert_bitwise_equal,
    assert_matches_torch,
    assert_no_autograd,
    compare_tensors,
    gradcheck,
)

ROOT = Path(__file__).parent.parent


# --- user Functions, right and wrong --------------------------------------------------------


class MatMul(shimnn.Function):
    @staticmethod
    def forward(ctx, x, w):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x, w)
        return x @ w

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        x, w = ctx.saved_tensors
        return grad @ w.t(), x.t() @ grad


class MatMulTransposed(MatMul):
    """The weight gradient transposed: right for y = x @ w.T, wrong here."""

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        x, w = ctx.saved_tensors
        return grad @ w.t(), grad.t() @ x


class TorchMatMulTransposed(torch.autograd.Function):
    """The same bug in torch's own autograd.Function: torch's gradcheck is the reference."""

    @staticmethod
    def forward(ctx, x, w):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x, w)
        return x @ w

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        x, w = ctx.saved_tensors
        return grad @ w.t(), grad.t() @ x


class ScaleOff(shimnn.Function):
    """A wrong value: 2.0001 x where torch computes 2 x (the gradient is right)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        return x * 2.0001

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        return grad * 2.0


class MaskRelu(shimnn.Function):
    """relu as ``x * (x > 0)``: the right values, but -0.0 where torch's relu gives 0.0."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return x * (x > 0)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class NegByMul(shimnn.Function):
    """-x as ``x * -1``: a NaN keeps its sign bit, where torch's neg flips it."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        return x * -1.0

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        return -grad


class TanhTextbook(shimnn.Function):
    """tanh' = 1 - y^2 written out, not torch's fused tanh_backward: ulp-level differences."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


def _report(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(ParityError) as info:
        assert_matches_torch(*args, **kwargs)
    return str(info.value)


def _block(report: str, name: str) -> str:
    """The lines of one tensor's part of a report."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")),
               len(lines))
    return "\n".join(lines[start:end])


# --- assert_matches_torch: agreement ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_right_function_and_module_pass_and_return_both_sides(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(5, 3, generator=g, dtype=dtype), torch.randn(3, 4, generator=g,
                                                                     dtype=dtype)
    result = assert_matches_torch(MatMul.apply, torch.matmul, x, w)
    assert isinstance(result.outputs, shimnn.TrackedTensor)
    assert result.inputs[1].grad is not None and result.reference_inputs[1].grad is not None
    assert_bitwise_equal(result.inputs[1].grad, result.reference_inputs[1].grad)
    torch.manual_seed(0)
    ref = torch.nn.Linear(3, 2).to(dtype)
    shim = shimnn.Linear(3, 2).to(dtype)  # other weights: the reference's are loaded into it
    assert_matches_torch(shim, ref, x)
    assert_bitwise_equal(shim.weight, ref.weight)
    assert shim.weight.grad is not None and ref.weight.grad is not None


def test_several_outputs_nested_inputs_and_explicit_gradients() -> None:
    def split(pair: tuple[torch.Tensor, torch.Tensor], scale: float) -> tuple[torch.Tensor, ...]:
        a, b = pair
        h = torch.tanh(a * b)
        return h * scale, (h - b).sum()

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    result = assert_matches_torch(split, split, (a, b), 0.5)
    assert len(result.outputs) == 2
    grads = [torch.full((4, 3), 0.25), torch.tensor(2.0)]
    assert_matches_torch(split, split, (a, b), 0.5, grad_outputs=grads, requires_grad=[True,
                                                                                     False])


def test_identical_nan_bits_agree_and_requires_grad_flags() -> None:
    x = torch.tensor([1.0, float("nan"), -3.0, 0.0])
    assert_matches_torch(torch.neg, torch.neg, x)
    result = assert_matches_torch(torch.neg, torch.neg, x, requires_grad=False)
    assert not result.outputs.requires_grad
    with pytest.raises(ValueError, match="requires_grad has 2 entries for 1 input tensors"):
        assert_matches_torch(torch.neg, torch.neg, x, requires_grad=[True, False])


# --- assert_matches_torch: each failure report -------------------------------------------


def test_report_wrong_value() -> None:
    report = _report(ScaleOff.apply, lambda t: t * 2.0, torch.linspace(-2, 2, 9))
    assert report.splitlines()[0] == (
        "shimnn.testing.assert_matches_torch: ScaleOff.apply (shimnn) vs "
        "test_report_wrong_value.<locals>.<lambda> (torch), seed 0: 1 of 2 tensors differ")
    block = _block(report, "output 0")
    assert block.splitlines()[0] == "output 0: 8 of 9 elements differ (float32, shape (9,))"
    # -4 * 2.0001 is the largest absolute difference; every relative difference is 5e-5
    assert "largest absolute difference 0.0002 at (0,): shimnn -4.00019979, torch -4" in block
    assert "largest relative difference 5e-05" in block or "4.99e-05" in block
    assert "float64 rerun: 8 of 9 elements differ" in block and "not rounding" in block
    assert "grad of input 0: bit-identical (float32, shape (9,))" in report


def test_report_wrong_gradient_names_the_input_and_says_float64_disagrees() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(4, 3), torch.randn(3, 3)
    report = _report(MatMulTransposed.apply, torch.matmul, x, w)
    assert "output 0: bit-identical" in report and "grad of input 0: bit-identical" in report
    block = _block(report, "grad of input 1")
    # A transpose: the diagonal agrees, the six other elements do not.
    assert block.splitlines()[0] == "grad of input 1: 6 of 9 elements differ (float32, shape " \
                                    "(3, 3))"
    expected = (x.t() @ _upstream(x @ w)).t()  # what the bug computes, independently
    found = re.search(r"at \((\d), (\d)\): shimnn (\S+),", block)
    assert found is not None
    i, j = int(found.group(1)), int(found.group(2))
    assert i != j and float(found.group(3)) == pytest.approx(float(expected[i, j]), rel=1e-6)
    assert "float64 rerun: 6 of 9 elements differ" in block
    assert block.endswith("so this is not rounding: the formula differs from torch's")


def _upstream(out: torch.Tensor, seed: int = 0) -> torch.Tensor:
    from shimnn.testing._parity import _upstream_seed, random_like

    return random_like(out, _upstream_seed(seed, 0))


def test_report_wrong_parameter_gradient_of_a_module() -> None:
    class Bad(shimnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = shimnn.Parameter(torch.randn(3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return MatMulTransposed.apply(x, self.weight)

    class Good(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.weight

    torch.manual_seed(1)
    bad, good = Bad(), Good()
    report = _report(bad, good, torch.randn(5, 3), state_dict=bad.state_dict())
    assert "grad of input 0: bit-identical" in report
    assert "grad of parameter weight: 6 of 9 elements differ" in report
    assert "float64 rerun: 6 of 9 elements differ" in report


def test_report_negative_zero() -> None:
    x = torch.linspace(-2, 2, 9)
    report = _report(MaskRelu.apply, torch.relu, x, seed=3)
    out = _block(report, "output 0")
    assert out.splitlines()[1] == ("  4 differ only in the sign of zero, first at (0,): "
                                   "shimnn -0.0, torch 0.0")
    assert "float64 rerun: the values agree but differ in the sign of zero" in out
    grad = _block(report, "grad of input 0")  # grad * mask: -0.0 where the gradient is < 0
    n = int(((_upstream(x, 3) < 0) & (x <= 0)).sum())
    assert n > 0 and f"{n} differ only in the sign of zero" in grad
    # A tolerance ignores the sign of zero.
    assert_matches_torch(MaskRelu.apply, torch.relu, x, seed=3, atol=0.0)


def test_report_nan_bits_and_nan_against_a_number() -> None:
    x = torch.tensor([1.0, float("nan"), -3.0])
    report = _report(NegByMul.apply, torch.neg, x)
    neg_nan = torch.neg(x)[1:2].view(torch.int32).item() & 0xFFFFFFFF
    mul_nan = (x * -1.0)[1:2].view(torch.int32).item() & 0xFFFFFFFF
    assert neg_nan != mul_nan
    assert (f"1 NaN with other bits than torch's NaN, first at (1,): shimnn nan "
            f"(0x{mul_nan:08x}), torch nan (0x{neg_nan:08x})") in report
    assert "the values agree but differ in the bits of a NaN" in report

    class ZeroToNan(shimnn.Function):
        @staticmethod
        def forward(ctx, t):  # type: ignore[no-untyped-def]
            return t / t * t

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def]
            return grad

    report = _report(ZeroToNan.apply, lambda t: t * 1.0, torch.tensor([4.0, 0.0, 9.0]))
    assert "1 NaN in shimnn where torch has a number, first at (1,): shimnn nan, torch 0.0" in \
        report
    assert "1 NaN where torch has a number), so this is not rounding" in report


def test_report_tolerance_cases() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 33)
    report = _report(TanhTextbook.apply, torch.tanh, x)
    block = _block(report, "grad of input 0")
    n = int(re.search(r"(\d+) of 2112 elements differ", block).group(1))  # type: ignore[union-attr]
    assert 0 < n < 2112 and "largest relative difference" in block
    assert "float64 rerun: differs only at rounding level" in block and "not a wrong formula" in \
        block
    # Rounding, measured above: a tolerance a few float32 ulps wide accepts it ...
    assert_matches_torch(TanhTextbook.apply, torch.tanh, x, atol=1e-6, rtol=1e-5)
    # ... a tighter one names the elements it rejects.
    tight = _report(TanhTextbook.apply, torch.tanh, x, rtol=1e-9)
    assert "tolerance atol=0, rtol=1e-09" in tight.splitlines()[0]
    assert f"grad of input 0: {n} of 2112 elements exceed atol=0, rtol=1e-09" in tight
    # float64 inputs: no rerun, the size of the difference decides.
    report64 = _report(TanhTextbook.apply, torch.tanh, x.double())
    assert "in float64 already: differs only at rounding level" in report64
    assert "float64" not in _report(TanhTextbook.apply, torch.tanh, x,
                                    check_float64=False).split("(float32, shape (64, 33))")[-1]


def test_report_structure_mismatches() -> None:
    def detached(t: torch.Tensor) -> torch.Tensor:
        return (t * 2).detach()

    report = _report(detached, lambda t: t * 2, torch.ones(3))
    assert "output 0: requires_grad is False in shimnn, True in torch" in report
    assert "grad of input 0: shimnn gave None, torch float32 tensor of shape (3,)" in report
    report = _report(lambda t: t.double(), lambda t: t * 1.0, torch.ones(2))
    assert "output 0: shimnn gave a float64 tensor of shape (2,), torch a float32 tensor" in \
        report
    report = _report(lambda t: (t, t * 2), lambda t: t * 1.0, torch.ones(2))
    assert "outputs: shimnn returned 2 tensors, torch 1" in report


def test_misuse_is_named() -> None:
    with pytest.raises(ValueError, match="returned a shimnn tensor: it ran through shimnn"):
        assert_matches_torch(shimnn.ReLU(), shimnn.ReLU(), torch.randn(3))

    def uses_torch_autograd(t: torch.Tensor) -> torch.Tensor:
        leaf = torch.ones(2, requires_grad=True)
        (leaf * 3).sum().backward()
        return t * 2

    with pytest.raises(AutogradCalled, match="engine was entered"):
        assert_matches_torch(uses_torch_autograd, lambda t: t * 2, torch.ones(2))
    with pytest.raises(NotImplementedError, match="cumprod") as info:
        assert_matches_torch(lambda t: t.cumprod(0), lambda t: t.cumprod(0), torch.ones(3))
    assert "raised by shimnn's side of assert_matches_torch" in str(info.value.__notes__)


def test_compare_tensors_and_assert_bitwise_equal() -> None:
    assert compare_tensors(None, None).equal
    assert compare_tensors(torch.tensor([1, 2]), torch.tensor([1, 2])).equal
    d = compare_tensors(torch.tensor([1, 2]), torch.tensor([1, 3]), "ints")
    assert not d.equal and "first at (1,): shimnn 2, torch 3" in str(d)
    z = torch.zeros(2, 2, dtype=torch.complex64)
    assert compare_tensors(z, z.clone()).equal
    with pytest.raises(ParityError, match=r"weight: 1 of 4 elements differ .*\n.* at \(1, 0\)"):
        assert_bitwise_equal(torch.tensor([[0.0, 1.0], [2.5, 3.0]]),
                             torch.tensor([[0.0, 1.0], [2.0, 3.0]]), "weight")


# --- the suite's own helpers are the public ones ------------------------------------------


def test_the_suite_helpers_are_shimnn_testing() -> None:
    import conftest
    import parity

    for engine_only in (False, True):
        with conftest.autograd_forbidden(engine_only), pytest.raises(AutogradCalled):
            torch.ones(1, requires_grad=True).sum().backward()
    assert conftest.AutogradCalled is AutogradCalled
    with pytest.raises(ParityError, match="sign of zero"):
        conftest.assert_same(torch.tensor([-0.0]), torch.tensor([0.0]), "x")
    with pytest.raises(ParityError, match="grad of parameter weight"):
        parity.check_module(torch.nn.Linear(2, 2), _WrongLinear(), [torch.randn(3, 2)])


class _WrongLinear(shimnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = shimnn.Parameter(torch.zeros(2, 2))
        self.bias = shimnn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return MatMulTransposed.apply(x, self.weight.t()) + self.bias


# --- gradcheck ---------------------------------------------------------------------------


def _double_leaves(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.detach().double().requires_grad_() for t in ts)


def test_gradcheck_passes_a_right_backward_and_modules() -> None:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 3, generator=g), torch.randn(3, 2, generator=g)
    assert gradcheck(MatMul.apply, _double_leaves(x, w))
    assert gradcheck(MatMul.apply, *_double_leaves(x, w), eps=1e-6)  # variadic form
    torch.manual_seed(0)
    model = shimnn.Sequential(shimnn.Linear(3, 4), shimnn.Tanh(), shimnn.Linear(4, 2))
    assert gradcheck(model, torch.randn(5, 3))  # the parameters, from a float64 copy
    assert model[0].weight.dtype == torch.float32 and model[0].weight.grad is None


def test_gradcheck_catches_what_torch_gradcheck_catches_with_the_same_message() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(4, 3), torch.randn(3, 3)
    with pytest.raises(TorchGradcheckError) as torch_info:
        torch.autograd.gradcheck(TorchMatMulTransposed.apply, _double_leaves(x, w))
    with assert_no_autograd(), pytest.raises(GradcheckError) as shim_info:
        gradcheck(MatMulTransposed.apply, _double_leaves(x, w))
    torch_message, message = str(torch_info.value), str(shim_info.value)
    assert torch_message.startswith("Jacobian mismatch for output 0 with respect to input 1,")
    # Same Jacobians (numerical from the same forward, analytical from the same wrong formula).
    assert message.startswith(torch_message)
    extra = message[len(torch_message):]
    assert "input 1 is tensor argument 1 of MatMulTransposed.apply (shape (3, 3))" in extra
    assert "48 of 108 entries differ beyond atol=1e-05 + rtol=0.001 * |numerical|" in extra
    # raise_exception=False returns False, as torch's does.
    assert torch.autograd.gradcheck(TorchMatMulTransposed.apply, _double_leaves(x, w),
                                    raise_exception=False) is False
    assert gradcheck(MatMulTransposed.apply, _double_leaves(x, w), raise_exception=False) is False


def test_gradcheck_other_failures() -> None:
    class Noisy(shimnn.Function):
        @staticmethod
        def forward(ctx, t):  # type: ignore[no-untyped-def]
            return t * 2

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def]
            return grad * 2 + torch.rand_like(grad) * 1e-3

    with pytest.raises(GradcheckError, match="Backward is not reentrant"):
        gradcheck(Noisy.apply, torch.ones(3, dtype=torch.float64, requires_grad=True))
    with pytest.raises(ValueError, match="at least one input tensor to require gradient"):
        gradcheck(MatMul.apply, torch.ones(2, 2), torch.ones(2, 2))
    # No differentiable output: the numerical Jacobian must be zero.
    assert gradcheck(lambda t: (t > 0).double(), torch.ones(2, requires_grad=True))


# --- assert_no_autograd ------------------------------------------------------------------


def test_guard_forbids_every_torch_engine_entry_and_allows_shimnn() -> None:
    def leaf() -> torch.Tensor:
        return torch.ones(3, requires_grad=True)

    calls = {
        "Tensor.backward": lambda: (leaf() * 2).sum().backward(),
        "torch.autograd.grad": lambda: torch.autograd.grad((leaf() * 2).sum(), [leaf()],
                                                           allow_unused=True),
        "autograd.functional.jacobian": lambda: torch.autograd.functional.jacobian(
            torch.sin, torch.ones(2)),
        "torch.func.grad": lambda: torch.func.grad(lambda t: t.sin().sum())(torch.ones(2)),
    }
    with assert_no_autograd():
        for name, call in calls.items():
            with pytest.raises(AutogradCalled):
                call()
                pytest.fail(name)
        p = shimnn.Parameter(torch.ones(3))
        (shimnn.functional.relu(p) * 2).sum().backward()  # shimnn's engine: allowed
        assert p.grad is not None
        # torch.autograd's own functions on shimnn tensors dispatch to shimnn's engine.
        (g,) = torch.autograd.grad((p * 3).sum(), [p])
        assert g.tolist() == [3.0, 3.0, 3.0]
        torch.autograd.backward([(p * 2).sum()])
        assert p.grad.tolist() == [4.0, 4.0, 4.0]
    # Restored afterwards.
    x = leaf()
    (x * 2).sum().backward()
    assert x.grad is not None


def test_guard_nests_and_is_shared_by_threads() -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def worker() -> None:
        try:
            with assert_no_autograd():
                start.wait()
                with assert_no_autograd():
                    pass
                with pytest.raises(AutogradCalled):
                    torch.ones(1, requires_grad=True).sum().backward()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    torch.ones(1, requires_grad=True).sum().backward()  # every guard has left


# --- the README example ------------------------------------------------------------------


def test_readme_check_your_own_backward_example_prints_what_the_readme_shows() -> None:
    script = ROOT / "docs" / "check_backward.py"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(script), run_name="__main__")
    printed = out.getvalue()
    assert printed.startswith("shimnn.testing.assert_matches_torch: MatMul.apply (shimnn)")
    doc = (ROOT / "docs" / "custom_backward.md").read_text()
    section = doc.split("## Check your own backward")[1].split("\n## ")[0]
    body = script.read_text().split('"""', 2)[2].strip()
    assert body in section, "docs/custom_backward.md is stale: paste docs/check_backward.py"
    assert f"```text\n{printed}```" in section, "docs/custom_backward.md shows another report"
