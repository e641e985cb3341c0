"""Differentiable ops on tracked tensors, reached the ways scripts call them, against torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import shimnn
import shimnn.functional as F
from conftest import assert_no_autograd_graph, autograd_forbidden
from parity import check_function

DTYPES = [torch.float32, torch.float64]


def _x(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0, positive: bool = False
       ) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    return x.abs() + 0.1 if positive else x


UNARY = {
    "relu (torch)": lambda a: torch.relu(a),
    "relu (method)": lambda a: a.relu(),
    "relu (F)": lambda a: TF.relu(a),
    "tanh": lambda a: torch.tanh(a),
    "tanh (method)": lambda a: a.tanh(),
    "clamp min": lambda a: a.clamp(min=0),
    "clamp min max": lambda a: torch.clamp(a, -0.5, 0.5),
    "clamp max": lambda a: a.clamp(max=0.3),
    "clip": lambda a: a.clip(-0.2, 0.2),
    "clamp_min": lambda a: a.clamp_min(0.1),
    "clamp_max": lambda a: torch.clamp_max(a, 0.1),
    "neg": lambda a: -a,
    "pow 2": lambda a: a**2,
    "pow 3": lambda a: a.pow(3),
    "pow 0.5 abs": lambda a: a.abs().pow(0.5),
    "pow 0": lambda a: a**0,
    "pow -1.5": lambda a: (a.abs() + 1) ** -1.5,
    "exp": lambda a: a.exp(),
    "log": lambda a: (a.abs() + 0.5).log(),
    "abs": lambda a: a.abs(),
    "abs (builtin)": lambda a: abs(a),
    "scalar arithmetic": lambda a: 2 - a * 3 + 1 / (a * a + 1) - a / 4 + 0.5 * a - 1,
    "sum": lambda a: a.sum(),
    "sum dim": lambda a: a.sum(1),
    "sum dims keepdim": lambda a: a.sum((0, -1), keepdim=True),
    "mean": lambda a: a.mean(),
    "mean dim": lambda a: torch.mean(a, dim=-1, keepdim=True),
    "view": lambda a: a.view(-1),
    "view shape": lambda a: a.view(a.shape[0], 2, -1),
    "reshape": lambda a: a.reshape(2, -1),
    "reshape transposed": lambda a: a.t().reshape(-1),
    "flatten": lambda a: torch.flatten(a),
    "flatten method": lambda a: a.unsqueeze(0).flatten(1),
    "unflatten": lambda a: a.unflatten(1, (2, 3)),
    "squeeze": lambda a: a[None, :, None].squeeze(),
    "squeeze dim": lambda a: a.unsqueeze(1).squeeze(1),
    "unsqueeze": lambda a: a.unsqueeze(-1) * 2,
    "transpose": lambda a: a.transpose(0, 1),
    "t": lambda a: a.t(),
    "T": lambda a: a.T,
    "narrow": lambda a: a.narrow(1, 2, 3),
    "narrow negative": lambda a: torch.narrow(a, 0, -2, 2),
    "index int": lambda a: a[1],
    "index slices": lambda a: a[1:3, ::2],
    "index mixed": lambda a: a[..., 2:, None][0],
    "index negative": lambda a: a[-1, -3:],
    "cat": lambda a: torch.cat([a, a * 2, a[:1]], 0),
    "cat dim": lambda a: torch.cat((a, a.exp()), dim=1),
    "clone": lambda a: a.clone() * 1,
    "contiguous": lambda a: a.t().contiguous(),
    "double": lambda a: a.double() * 3,
    "to dtype": lambda a: a.to(torch.float64).sum(),
    "float same": lambda a: a.float(),
    "matmul vec": lambda a: a @ torch.linspace(-1, 1, a.shape[1], dtype=a.dtype),
    "matmul mat": lambda a: a @ a.t(),
    "mm": lambda a: torch.mm(a.t(), a),
    "vec matmul": lambda a: a[0] @ a.t(),
    "dot": lambda a: a[0] @ a[1],
    "nd matmul": lambda a: a.view(2, 2, 6) @ a.t()[:6],
    "TF.linear": lambda a: TF.linear(a, a[:3], a[0, :3]),
    "TF.mse_loss": lambda a: TF.mse_loss(a, torch.zeros_like(a)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(UNARY))
def test_unary(name: str, dtype: torch.dtype) -> None:
    check_function(UNARY[name], _x(4, 6, dtype=dtype, seed=len(name)))


BINARY = {
    "add": lambda a, b: a + b,
    "add alpha": lambda a, b: torch.add(a, b, alpha=0.3),
    "sub": lambda a, b: a - b,
    "sub alpha": lambda a, b: a.sub(b, alpha=2),
    "rsub": lambda a, b: torch.rsub(a, b),
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1),
    "div floor": lambda a, b: torch.div(a, b, rounding_mode="floor") + a,
    "matmul": lambda a, b: a @ b.t(),
    "cat": lambda a, b: torch.cat([a, b], 1),
    "mse": lambda a, b: TF.mse_loss(a, b),
    "inplace add": lambda a, b: (a * 1).add_(b, alpha=2),
    "inplace sub": lambda a, b: _isub(a * 1, b),
}


def _isub(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x -= y
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (1, 4)), ((3, 1), (1, 4)),
                                    ((3, 4), (4,)), ((3, 4), ())])
def test_binary_with_broadcasting(name: str, dtype: torch.dtype,
                                  shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    a, b = _x(*shapes[0], dtype=dtype, seed=1), _x(*shapes[1], dtype=dtype, seed=2)
    if name in ("matmul", "cat") and shapes[0] != shapes[1]:
        pytest.skip("shapes do not apply")
    if name == "mse" and shapes[0] != shapes[1]:
        pytest.skip("broadcast mse is covered in test_layers")
    if name.startswith("inplace") and torch.broadcast_shapes(a.shape, b.shape) != a.shape:
        pytest.skip("torch refuses to broadcast an in-place result")
    for rg in ([True, True], [True, False], [False, True]):
        check_function(BINARY[name], a, b, requires_grad=rg)


def test_mixed_dtype_arithmetic() -> None:
    a = _x(3, 4, dtype=torch.float32)
    b = _x(3, 4, dtype=torch.float64, seed=3)
    check_function(lambda x, y: x * y + x / (y * y + 1) - y, a, b)


def test_module_subclass_with_free_forward() -> None:
    def make(nn, F):  # type: ignore[no-untyped-def]
        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc1 = nn.Linear(4, 8)
                self.shared = nn.Linear(8, 8)
                self.act = nn.ReLU()
                self.out = nn.Linear(8, 2)

            def forward(self, x):  # type: ignore[no-untyped-def]
                h = self.act(self.fc1(x))
                h = F.relu(self.shared(h)) + h          # residual
                h = torch.tanh(self.shared(h)) * h      # weight sharing, branches multiplied
                return self.out(h.clamp(min=-0.9))

        return Net()

    torch.manual_seed(0)
    ref = make(torch.nn, TF)
    torch.manual_seed(0)
    shim = make(shimnn, F)
    assert isinstance(shim.fc1, torch.nn.Linear) and isinstance(shim.fc1, shimnn.Linear)
    assert not isinstance(ref.fc1, shimnn.Linear)
    assert [n for n, _ in shim.named_modules()] == [n for n, _ in ref.named_modules()]
    x = _x(5, 4)
    g = _x(5, 2, seed=9)
    ref(x).backward(g)
    with autograd_forbidden():
        out = shim(x)
        assert_no_autograd_graph(out)
        out.backward(g)
    for (n, a), b in zip(shim.named_parameters(), ref.parameters()):
        assert torch.equal(a.grad, b.grad), n


def test_unsupported_variants_raise_at_backward() -> None:
    lin = shimnn.Linear(3, 4)
    h = lin(_x(2, 3))
    for out in (h ** h, 2 ** h, h.clamp(min=torch.zeros(4))):
        assert isinstance(out, shimnn.TrackedTensor)
        with pytest.raises(NotImplementedError, match="no hand-written backward"):
            out.sum().backward(retain_graph=True)
