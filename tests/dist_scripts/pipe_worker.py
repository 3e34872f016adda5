"""Under mpiexec -n S: a 8-block MLP cut into S stages (DT-3, DT-5). argv: out_prefix.

For GPipe and 1F1B at M = 1, 2, 4, 8 micro-batches: each stage's parameter gradients against the
full-batch gradients of the whole model computed locally, the loss on the last rank, and the
measured bubble of each stage (the median of 3 steps). Rank r writes out_prefix.r.npz."""
import sys

import numpy as np

import ember
import ember.distributed as dist
from ember import nn

out = sys.argv[1]
g = dist.init_process_group()
S, r = g.size, g.rank
rng = np.random.default_rng(0)
X = ember.tensor(rng.standard_normal((1024, 512)).astype(np.float32))
Y = ember.tensor(rng.integers(0, 10, 1024))
loss_fn = nn.CrossEntropyLoss()


def blocks():
    ember.manual_seed(7)
    bs = [m for _ in range(8) for m in (nn.Linear(512, 512), nn.Tanh())]
    return bs + [nn.Linear(512, 10)]


full = nn.Sequential(*blocks())
ref_loss = loss_fn(full(X), Y)
ref_loss.backward()
per = 16 // S
lo, hi = r * per, (r + 1) * per + (1 if r == S - 1 else 0)
ref = [p.grad.numpy().copy() for m in list(full)[lo:hi] for p in m.parameters()]
res = {"ref_loss": float(ref_loss.detach().numpy())}
stage_mod = nn.Sequential(*blocks()[lo:hi])
stage = dist.PipelineStage(stage_mod)
for sched in ("gpipe", "1f1b"):
    for M in (1, 2, 4, 8):
        bubbles = []
        for rep in range(3):
            stage_mod.zero_grad()
            dist.barrier()
            loss = stage.train_step(X if r == 0 else None, Y if r == S - 1 else None, loss_fn,
                                    micro_batches=M, schedule=sched)
            bubbles.append(stage.bubble())
        got = [p.grad.numpy() for p in stage_mod.parameters()]
        res[f"{sched}{M}_err"] = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
        res[f"{sched}{M}_bubble"] = float(np.median(bubbles))
        if loss is not None:
            res[f"{sched}{M}_loss"] = loss
np.savez(f"{out}.{r}.npz", **res)
dist.destroy_process_group()
