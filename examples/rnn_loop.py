"""An RNNCell unrolled by hand: each step's state written into a preallocated buffer
(``buf[t] = cell(x[t], h)``), a linear read-out of every step, MSE to a target sequence."""

import torch
import torch.nn as nn

torch.manual_seed(1)
steps, batch, features, hidden = 12, 6, 3, 10
cell = nn.RNNCell(features, hidden)
readout = nn.Linear(hidden, 1)
params = list(cell.parameters()) + list(readout.parameters())
opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
x = torch.randn(steps, batch, features)
target = torch.sin(torch.linspace(0, 3, steps)).unsqueeze(1).expand(steps, batch)

for epoch in range(25):
    h = torch.zeros(batch, hidden)
    buf = torch.zeros(steps, batch, hidden)
    for t in range(steps):
        h = cell(x[t], h)
        buf[t] = h
    pred = readout(buf).squeeze(-1)
    loss = nn.functional.mse_loss(pred, target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(epoch, f"{loss.item():.9f}", f"{cell.weight_hh.grad.norm().item():.9f}")
