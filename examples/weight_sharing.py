"""One layer applied three times in one forward, one activation instance reused."""

import torch
import torch.nn as nn


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.step = nn.Linear(8, 8)   # shared: used three times per forward
        self.act = nn.Tanh()
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        h = self.act(self.inp(x))
        for _ in range(3):
            h = self.act(self.step(h))
        return self.out(h)


torch.manual_seed(3)
model = Recurrent()
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5, dampening=0.1)
x, y = torch.randn(32, 5), torch.randn(32, 1)
for step in range(25):
    loss = nn.MSELoss()(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(step, f"{loss.item():.9f}", f"{model.step.weight.grad.abs().sum().item():.9f}")
