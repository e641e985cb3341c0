"""Check your own backward: a hand-written matrix product with a deliberate transpose bug.

This file is shown in docs/custom_backward.md and run by the test suite, which checks that it
prints the report shown there.
"""

import torch

import shimnn
from shimnn.testing import assert_matches_torch


class MatMul(shimnn.Function):
    """y = x @ w for x (n, k), w (k, m); backward: grad_x = grad @ w.T, grad_w = x.T @ grad."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad @ w.t(), grad.t() @ x  # bug: grad_w transposed (Linear's x @ w.T formula)


torch.manual_seed(0)
x, w = torch.randn(4, 3), torch.randn(3, 3)
try:
    assert_matches_torch(MatMul.apply, torch.matmul, x, w)
except AssertionError as report:
    print(report)
