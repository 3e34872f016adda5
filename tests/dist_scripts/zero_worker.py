"""Under mpiexec -n N: 20 AdamW steps of an MLP with DDP, then with ZeroRedundancyOptimizer (DT-12),
from the same weights on the same batches. argv: out_prefix. Rank r writes out_prefix.r.npz: both
final parameter vectors, both optimizers' state bytes, and the collectives ZeRO's steps called."""
import sys

import numpy as np

import ember
import ember.distributed as dist
from ember import nn

out = sys.argv[1]
g = dist.init_process_group()
n, r = g.size, g.rank
rng = np.random.default_rng(0)
X = rng.standard_normal((20, 8 * n, 24)).astype(np.float32)
Y = rng.integers(0, 5, (20, 8 * n))
loss_fn = nn.CrossEntropyLoss()


def model():
    ember.manual_seed(3)
    return nn.Sequential(nn.Linear(24, 100), nn.Tanh(), nn.Linear(100, 77), nn.Tanh(), nn.Linear(77, 5))


def train(m, forward, opt):
    for s in range(20):
        xb, yb = ember.tensor(X[s, r * 8:(r + 1) * 8]), ember.tensor(Y[s, r * 8:(r + 1) * 8])
        opt.zero_grad()
        loss_fn(forward(xb), yb).backward()
        opt.step()
    return np.concatenate([p.detach().numpy().reshape(-1) for p in m.parameters()])


m1 = model()
ddp = dist.DistributedDataParallel(m1, algorithm="ring")
o1 = ember.optim.AdamW(m1.parameters(), lr=1e-2, weight_decay=0.05)
p_ddp = train(m1, ddp, o1)
ddp_state = sum(v._data.nbytes for st in o1.state.values() for v in st.values() if hasattr(v, "_data"))
m2 = model()
o2 = dist.ZeroRedundancyOptimizer(m2.parameters(), ember.optim.AdamW, lr=1e-2, weight_decay=0.05)
before = dict(g.stats)
p_zero = train(m2, m2, o2)
calls = {k: g.stats[k] - before.get(k, 0) for k in g.stats if k.startswith("calls:")}
np.savez(f"{out}.{r}.npz", ddp=p_ddp, zero=p_zero, ddp_state=ddp_state, zero_state=o2.state_bytes(),
         rs=calls.get("calls:reduce_scatter:ring", 0), ag=calls.get("calls:all_gather:ring", 0),
         ar=sum(v for k, v in calls.items() if k.startswith("calls:all_reduce")))
dist.destroy_process_group()
