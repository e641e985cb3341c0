"""torch.tanh called between layers; modules spelled torch.nn.X; weight decay."""

import torch

torch.manual_seed(2)
l1 = torch.nn.Linear(3, 10)
l2 = torch.nn.Linear(10, 10)
l3 = torch.nn.Linear(10, 1)
params = list(l1.parameters()) + list(l2.parameters()) + list(l3.parameters())
opt = torch.optim.SGD(params, lr=0.02, weight_decay=1e-3)
x = torch.randn(40, 3)
y = torch.sin(x.sum(1, keepdim=True))
for step in range(40):
    h = torch.tanh(l1(x))
    h = torch.tanh(l2(h))
    pred = l3(h)
    loss = ((pred - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"{step:2d} {loss.item():.10f}")
