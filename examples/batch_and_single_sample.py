"""Full-batch training, then one sample at a time with 1-d inputs."""

import torch
import torch.nn as nn

torch.manual_seed(5)
net = nn.Sequential(nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.05)
crit = nn.MSELoss()
X = torch.randn(20, 3)
Y = X[:, :1] * 2 - X[:, 1:2]
for epoch in range(10):              # full batch
    opt.zero_grad()
    loss = crit(net(X), Y)
    loss.backward()
    opt.step()
    print("batch", epoch, f"{loss.item():.10f}")
for epoch in range(3):               # one 1-d sample at a time
    total = 0.0
    for xi, yi in zip(X, Y):
        opt.zero_grad()
        out = net(xi)                # shape (1,)
        loss = crit(out, yi)
        loss.backward()
        opt.step()
        total += loss.item()
    print("single", epoch, f"{total:.10f}")
