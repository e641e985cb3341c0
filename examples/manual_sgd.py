"""Training without an optimizer: p -= lr * p.grad under no_grad, p.data updates, zero_grad."""

import torch
import torch.nn as nn

torch.manual_seed(4)
model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2))
nn.init.xavier_uniform_(model[0].weight)
nn.init.zeros_(model[0].bias)
x, y = torch.randn(50, 6), torch.randn(50, 2)
lr = 0.05
for step in range(30):
    model.zero_grad()
    loss = nn.functional.mse_loss(model(x), y, reduction="sum") / 50
    loss.backward()
    if step % 2 == 0:
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    else:
        for p in model.parameters():
            p.data -= lr * p.grad
    print(step, round(loss.item(), 8))
print(model[2].weight)
