"""Data-parallel training of the disc task with DistributedDataParallel (gloo, CPU).

Two processes, each with its own shard of every mini-batch; DDP averages the gradients, so
both keep the same weights. Launch it as a torch user would:

    python examples/ddp_seed.py                              # torch.multiprocessing.spawn
    torchrun --standalone --nproc-per-node 2 examples/ddp_seed.py

and under shimnn, unchanged:

    shimnn run examples/ddp_seed.py
    shimnn run --nproc-per-node 2 examples/ddp_seed.py       # = shimnn run torchrun ...
    shimnn compare examples/ddp_seed.py                      # identical numbers?
"""

import gc
import math
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

EPOCHS, BATCH, LR = 5, 50, 0.1


def disc_set(n, generator):
    x = torch.rand(n, 2, generator=generator)
    inside = (x - 0.5).pow(2).sum(1, keepdim=True) < 1 / (2 * math.pi)
    return x, inside.float() * 2 - 1


def train(rank, world_size, init_method, lines):
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    train_x, train_y = disc_set(1000, g)
    test_x, test_y = disc_set(1000, g)
    torch.manual_seed(rank)  # different weights on every rank: DDP starts them from rank 0's
    model = nn.Sequential(nn.Linear(2, 25), nn.ReLU(), nn.Linear(25, 25), nn.ReLU(),
                          nn.Linear(25, 25), nn.ReLU(), nn.Linear(25, 1), nn.Tanh())
    ddp = DistributedDataParallel(model)
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=0.9)
    for epoch in range(EPOCHS):
        total = torch.zeros(())
        for i in range(0, len(train_x), BATCH):
            x = train_x[i:i + BATCH][rank::world_size]  # this rank's shard of the batch
            y = train_y[i:i + BATCH][rank::world_size]
            loss = criterion(ddp(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach()
        dist.all_reduce(total)  # the mean loss over the ranks, summed over the batches
        with torch.no_grad():
            error = ((model(test_x) >= 0) != (test_y > 0)).float().mean().item()
        lines.append(f"epoch {epoch + 1}: loss {total.item() / world_size:.9f}, "
                     f"test error {error:.4f}")
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    lines.append(f"weights: sum {weights.sum().item():.9f}, "
                 f"first {[round(v, 9) for v in weights[:3].tolist()]}")
    del ddp, optimizer  # DDP holds the process group: release it before destroying the group
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    return lines


def spawned(rank, world_size, init_method, queue):
    lines = train(rank, world_size, init_method, [])
    if rank == 0:
        queue.put(lines)


if __name__ == "__main__":
    if "RANK" in os.environ:  # started by torchrun: one process per rank
        lines = train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", [])
        if os.environ["RANK"] == "0":
            print("\n".join(lines))
    else:  # start the ranks here; rank 0 sends its lines back to print them
        with tempfile.TemporaryDirectory() as folder:
            queue = mp.get_context("spawn").SimpleQueue()
            mp.spawn(spawned, args=(2, f"file://{os.path.join(folder, 'store')}", queue),
                     nprocs=2)
            print("\n".join(queue.get()))
    sys.stdout.flush()
