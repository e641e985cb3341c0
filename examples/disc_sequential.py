"""The seed report's task as a plain PyTorch script: nn.Sequential, MSELoss, SGD with momentum.

Run it with torch (`python examples/disc_sequential.py`) or with shimnn
(`shimnn run examples/disc_sequential.py`); `shimnn compare` checks the numbers are identical.
"""

import math

import torch
import torch.nn as nn
import torch.optim as optim

torch.manual_seed(0)
x = torch.rand(1000, 2)
y = ((x - 0.5).pow(2).sum(1, keepdim=True) < 1 / (2 * math.pi)).float() * 2 - 1

model = nn.Sequential(nn.Linear(2, 25), nn.ReLU(), nn.Linear(25, 25), nn.ReLU(),
                      nn.Linear(25, 25), nn.ReLU(), nn.Linear(25, 1), nn.Tanh())
criterion = nn.MSELoss()
optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

for epoch in range(10):
    total = 0.0
    for i in range(0, 1000, 50):
        loss = criterion(model(x[i:i + 50]), y[i:i + 50])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    with torch.no_grad():
        errors = ((model(x) >= 0) != (y > 0)).sum().item()
    print(f"epoch {epoch}: loss {total / 20:.8f} train errors {errors}")
print(model)
print("final loss", loss)
