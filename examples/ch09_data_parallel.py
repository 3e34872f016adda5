"""Chapter 9 (distributed training): data parallelism over MPI. Each rank trains on its shard of
the batch; DistributedDataParallel all-reduces the gradient buckets during backward.

    ember launch -n 2 examples/ch09_data_parallel.py      (needs ember[mpi])
"""
import numpy as np

import ember
import ember.distributed as dist
import ember.nn as nn


def main() -> None:
    g = dist.init_process_group()
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 4))
    ddp = dist.DistributedDataParallel(model)
    opt = ember.optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 16)).astype(np.float32), rng.integers(0, 4, 64)
    per = 64 // g.size
    shard = slice(g.rank * per, (g.rank + 1) * per)
    for step in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ddp(ember.tensor(x[shard])), ember.tensor(y[shard]))
        loss.backward()
        opt.step()
    w = model[0].weight.detach().numpy()
    total = ember.tensor(w.copy())
    dist.all_reduce(total)
    same = np.allclose(total.numpy() / g.size, w)
    if g.rank == 0:
        print(f"{g.size} ranks, 20 steps: final loss {loss:.4f}; parameters equal on every rank: {same}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
