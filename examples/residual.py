"""A residual block (h + f(h)), a learning-rate scheduler, and state_dict save/load."""

import io

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = nn.ReLU()

    def forward(self, h):
        return h + self.act(self.fc(h))


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 16)
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


torch.manual_seed(7)
model = ResNet()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
x, y = torch.randn(64, 4), torch.randn(64, 1)
for step in range(20):
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    sched.step()
    print(step, f"{loss.item():.9f}", sched.get_last_lr())
buffer = io.BytesIO()
torch.save(model.state_dict(), buffer)
buffer.seek(0)
clone = ResNet()
clone.load_state_dict(torch.load(buffer))
print(torch.equal(clone(x), model(x)))
