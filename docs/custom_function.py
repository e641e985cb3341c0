"""Your own layer with a hand-written backward: the function and its derivative.

This file is shown in docs/custom_backward.md and run by the test suite.
"""

import torch

import shimnn


class Softsign(shimnn.Function):
    """softsign(x) = x / (1 + |x|); derivative 1 / (1 + |x|)^2."""

    @staticmethod
    def forward(ctx, x):
        denominator = x.abs() + 1
        ctx.save_for_backward(denominator)
        return x / denominator

    @staticmethod
    def backward(ctx, grad):
        (denominator,) = ctx.saved_tensors
        return grad / (denominator * denominator)


class SoftsignLayer(shimnn.Module):
    def forward(self, x):
        return Softsign.apply(x)


model = shimnn.Sequential(shimnn.Linear(2, 8), SoftsignLayer(), shimnn.Linear(8, 1))
loss = shimnn.MSELoss()(model(torch.randn(16, 2)), torch.zeros(16, 1))
loss.backward()  # runs Softsign.backward, written above
print(loss.shim_fn, model[0].weight.grad.shape)
