"""A `class Net(nn.Module)` with its own forward using F.relu; `from torch import nn`."""

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


torch.manual_seed(1)
net = Net()
data = torch.randn(64, 4)
target = torch.randn(64, 3)
opt = torch.optim.SGD(net.parameters(), lr=0.05, nesterov=True, momentum=0.8)
for step in range(30):
    opt.zero_grad()
    out = net(data)
    loss = F.mse_loss(out, target)
    loss.backward()
    opt.step()
    if step % 5 == 0:
        print(step, loss.item(), net.fc1.weight.grad.norm().item())
print([round(p.sum().item(), 10) for p in net.parameters()])
