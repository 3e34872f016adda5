"""Under mpiexec -n 2: DDP with gradient compression (DT-13). argv: out_prefix.

For each codec (none over the ring, fp16, bf16, fp8 with error feedback): the bytes one
synchronised backward sends, the averaged gradients (every rank writes its own, to compare), and
the loss after 60 SGD steps on a fixed classification task. Rank r writes out_prefix.r.npz.
"""
import sys

import numpy as np

import ember
import ember.distributed as dist
from ember import nn

out = sys.argv[1]
g = dist.init_process_group()
n, r = g.size, g.rank
rng = np.random.default_rng(0)
W = rng.standard_normal((20, 4)).astype(np.float32)
X = rng.standard_normal((60, 32, 20)).astype(np.float32)
Y = (X @ W).argmax(-1)
res = {}
for name in ("none", "fp16", "bf16", "fp8"):
    ember.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 4))
    ddp = dist.DistributedDataParallel(model, algorithm="ring", compression=None if name == "none" else name,
                                       bucket_cap_mb=0.1)
    opt = ember.optim.SGD(model.parameters(), lr=0.2)
    loss_fn = nn.CrossEntropyLoss()
    per = 32 // n
    for step in range(60):
        xb = ember.tensor(X[step, r * per:(r + 1) * per])
        yb = ember.tensor(Y[step, r * per:(r + 1) * per])
        opt.zero_grad()
        before = g.stats["bytes_sent"]
        loss_fn(ddp(xb), yb).backward()
        if step == 0:
            res[f"{name}_bytes"] = np.array(g.stats["bytes_sent"] - before)
            res[f"{name}_grads"] = np.concatenate([p.grad.numpy().reshape(-1) for p in model.parameters()])
        opt.step()
    with ember.no_grad():
        res[f"{name}_loss"] = np.array(float(loss_fn(model(ember.tensor(X.reshape(-1, 20))),
                                                     ember.tensor(Y.reshape(-1))).numpy()))
    res[f"{name}_calls"] = np.array(g.stats[f"calls:all_reduce:ring{'' if name == 'none' else '_' + name}"])
np.savez(f"{out}.{r}.npz", **res)
dist.destroy_process_group()
