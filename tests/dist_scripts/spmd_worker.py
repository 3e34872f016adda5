"""Under mpiexec -n 4 (DT-14): sharding annotations partitioned by ember.distributed.spmd.

Rank r writes OUT.r.npz: for each case the assembled result, the unsharded numpy result, the
collectives of the compiled program and its text (rank 0)."""
import sys

import numpy as np

import ember
import ember.distributed as dist

out = sys.argv[1]
g = dist.init_process_group()
n, r = g.size, g.rank
rng = np.random.default_rng(0)
x, w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((16, 32), (32, 64), (64, 24)))
b1 = rng.standard_normal(64).astype(np.float32)
T = ember.tensor
res = {}


@dist.spmd
def two_matmuls(x, w1, w2):  # the book's figure: one all-gather between the matmuls
    y = dist.matmul(x, w1, ((n, 1), (1, 1)))
    return dist.matmul(y, w2, ((1, 1), (1, n)))


@dist.spmd
def contracted(x, w1):  # both split on the contracted dimension: partial sums, one all-reduce
    return dist.matmul(x, w1, ((1, n), (n, 1)))


@dist.spmd
def mlp(x, w1, b1, w2):  # bias, activation and a reduction ride along
    h = ember.tanh(dist.matmul(x, w1, ((n, 1), (1, 1))) + b1)
    return dist.matmul(h, w2, ((n, 1), (1, 1))).sum(0)


for name, f, args, want in (
        ("two", two_matmuls, (x, w1, w2), x @ w1 @ w2),
        ("contracted", contracted, (x, w1), x @ w1),
        ("mlp", mlp, (x, w1, b1, w2), (np.tanh(x @ w1 + b1) @ w2).sum(0))):
    local = f(*map(T, args))
    res[f"{name}_got"] = f.gather(local).numpy()
    res[f"{name}_want"] = want
    res[f"{name}_local_shape"] = np.array(local.shape)
    res[f"{name}_colls"] = np.array([c[0] for c in f.collectives] or [""])
    res[f"{name}_layout"] = np.array(f.out_layouts[0])
    res[f"{name}_program"] = np.array(str(f.program))
before = dict(g.stats)
two_matmuls(*map(T, (x, w1, w2)))  # a second call reuses the compiled program
res["second_calls"] = np.array(sum(v - before.get(k, 0) for k, v in g.stats.items() if k.startswith("calls:")))
try:
    dist.spmd(lambda a: dist.shard(a, (2, 2)))(T(x))
except dist.DistributedError as e:
    res["err"] = np.array(str(e))
np.savez(f"{out}.{r}.npz", **res)
dist.destroy_process_group()
