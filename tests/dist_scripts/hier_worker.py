"""Under `ember launch -n N --ranks-per-node K` (DT-19): all-reduce of the same buffer with ember's
flat ring and with the hierarchical algorithm; rank r writes OUT.r.npz: both results, the bytes
each sent to ranks on other nodes and in all, and DDP's gradients with each algorithm.
argv: OUT."""
import sys

import numpy as np

import ember
import ember.distributed as dist
from ember import nn

out = sys.argv[1]
g = dist.init_process_group()
r = g.rank
res = {"nodes": np.array(g.nodes)}
for dtype in (np.float32, np.int64):
    x = (np.random.default_rng(r).standard_normal(10_001) * 100).astype(dtype)
    for algo in ("ring", "hierarchical"):
        t = ember.tensor(x.copy())
        before = dict(g.stats)
        dist.all_reduce(t, algorithm=algo)
        res[f"{algo}_{np.dtype(dtype).name}"] = t.numpy()
        res[f"{algo}_internode_{np.dtype(dtype).name}"] = g.stats["bytes_internode"] - before.get("bytes_internode", 0)
        res[f"{algo}_sent_{np.dtype(dtype).name}"] = g.stats["bytes_sent"] - before.get("bytes_sent", 0)
rng = np.random.default_rng(0)
X = ember.tensor(rng.standard_normal((8 * g.size, 12)).astype(np.float32))
Y = ember.tensor(rng.integers(0, 3, 8 * g.size))
for algo in ("ring", "hierarchical"):
    ember.manual_seed(0)
    m = nn.Sequential(nn.Linear(12, 40), nn.Tanh(), nn.Linear(40, 3))
    ddp = dist.DistributedDataParallel(m, algorithm=algo)
    nn.CrossEntropyLoss()(ddp(X[r * 8:(r + 1) * 8]), Y[r * 8:(r + 1) * 8]).backward()
    res[f"ddp_{algo}"] = np.concatenate([p.grad.numpy().reshape(-1) for p in m.parameters()])
np.savez(f"{out}.{r}.npz", **res)
dist.destroy_process_group()
