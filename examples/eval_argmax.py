"""Classification-style training (MSE on one-hot targets) with argmax accuracy under no_grad."""

import torch
import torch.nn as nn

torch.manual_seed(6)
n, classes = 300, 3
x = torch.randn(n, 2)
labels = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
targets = torch.zeros(n, classes)
targets[torch.arange(n), labels] = 1.0
model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, classes))
opt = torch.optim.SGD(model.parameters(), lr=0.2)
for epoch in range(15):
    model.train()
    for i in range(0, n, 30):
        opt.zero_grad()
        loss = nn.MSELoss()(model(x[i:i + 30]), targets[i:i + 30])
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
        acc = (pred == labels).float().mean().item()
    print(f"epoch {epoch} loss {loss.item():.8f} accuracy {acc:.4f}")
