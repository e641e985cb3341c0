"""shimnn.Function: user-defined ops with a hand-written forward and backward."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

import shimnn
from conftest import assert_no_autograd_graph, assert_same, autograd_forbidden

ROOT = Path(__file__).parent.parent


class ShimCube(shimnn.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return x.pow(3)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        (x,) = ctx.saved_tensors
        return grad * (x.pow(2.0) * 3.0)  # torch's pow_backward, kernel for kernel


class TorchCube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return x.pow(3)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        (x,) = ctx.saved_tensors
        return grad * (x.pow(2.0) * 3.0)


class Scale(shimnn.Function):
    """Two inputs, one of them a number: ``x * s``."""

    @staticmethod
    def forward(ctx, x, s):  # type: ignore[no-untyped-def]
        ctx.s = s
        return x * s

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        return grad * ctx.s, None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_function_matches_torch_pow_and_autograd_function(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    lin_ref = torch.nn.Linear(5, 4).to(dtype)
    lin = shimnn.Linear(5, 4).to(dtype)
    lin.load_state_dict(lin_ref.state_dict())
    x = torch.randn(6, 5, dtype=dtype)
    g = torch.randn(6, 4, dtype=dtype)
    (lin_ref(x).pow(3)).backward(g)
    builtin = lin_ref.weight.grad.clone()
    lin_ref.weight.grad = None
    TorchCube.apply(lin_ref(x)).backward(g)
    with autograd_forbidden():
        out = ShimCube.apply(lin(x))
        assert_no_autograd_graph(out)
        assert out.shim_fn.name == "ShimCubeBackward"
        out.backward(g)
    assert_same(lin.weight.grad, builtin, "vs torch's pow")
    assert_same(lin.weight.grad, lin_ref.weight.grad, "vs torch.autograd.Function")


def test_function_with_non_tensor_argument_and_no_grad() -> None:
    lin = shimnn.Linear(3, 3)
    x = torch.randn(2, 3)
    Scale.apply(lin(x), 2.5).sum().backward()
    assert lin.weight.grad is not None
    with torch.no_grad():
        out = Scale.apply(lin(x), 2.0)
    assert out.shim_fn is None


def test_function_errors() -> None:
    class WrongCount(shimnn.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[no-untyped-def]
            return x * 2

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def]
            return grad, grad

    class WrongShape(shimnn.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[no-untyped-def]
            return x.sum()

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def]
            return grad

    p = shimnn.Parameter(torch.randn(3))
    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        WrongCount.apply(p).sum().backward()
    with pytest.raises(RuntimeError, match="invalid gradient at index 0"):
        WrongShape.apply(p).backward()
    out = ShimCube.apply(p)
    out.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        out.sum().backward()


def test_documented_example_runs_and_matches_finite_differences() -> None:
    namespace = runpy.run_path(str(ROOT / "docs" / "custom_function.py"))
    softsign = namespace["Softsign"]
    x = shimnn.Parameter(torch.linspace(-3, 3, 13, dtype=torch.float64))
    softsign.apply(x).sum().backward()
    # Independent oracle: torch's own softsign derivative. The hand-written formula
    # grad / (1 + |x|)^2 is not torch's composite decomposition, so equality is to rounding.
    ref = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.softsign(ref).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-12, atol=1e-15)


def test_readme_shows_the_documented_example() -> None:
    readme = (ROOT / "docs" / "custom_backward.md").read_text()
    example = (ROOT / "docs" / "custom_function.py").read_text()
    body = example.split('"""', 2)[2].strip()
    assert body in readme, "docs/custom_backward.md is stale: paste docs/custom_function.py"
