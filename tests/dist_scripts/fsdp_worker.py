"""Under mpiexec -n N, FullyShardedDataParallel (ZeRO-3, DT-12).

argv: train OUT CKPT -- 20 AdamW steps with DDP, then with FSDP, from the same weights on the same
    batches (dropout and a BatchNorm included; lr 1e-3: Adam magnifies the rounding differences of
    sums taken in another order over 4 ranks roughly in proportion to lr); rank r writes OUT.r.npz: both final parameter
    vectors, the bytes each phase kept (tracemalloc: current after the last step and peak), the
    collectives FSDP's steps called, and its Adam moments' shard; then a sharded checkpoint in CKPT.
argv: load OUT CKPT -- on any number of ranks: load CKPT's newest sharded checkpoint, write the
    full parameters, this rank's moment shards and the optimizer's step count to OUT.r.npz.
"""
import gc
import sys
import tracemalloc

import numpy as np

import ember
import ember.distributed as dist
from ember import nn
from ember.checkpoint import CheckpointManager

mode, out, ckpt = sys.argv[1], sys.argv[2], sys.argv[3]
g = dist.init_process_group()
n, r = g.size, g.rank
rng = np.random.default_rng(0)
X = rng.standard_normal((20, 8 * n, 24)).astype(np.float32)
Y = rng.integers(0, 5, (20, 8 * n))
loss_fn = nn.CrossEntropyLoss()


def model():
    ember.manual_seed(3)
    # no bias before the BatchNorm: its true gradient is 0, and Adam turns the rounding of that 0,
    # which differs with the order of the sums over 4 ranks, into steps of size lr
    return nn.Sequential(nn.Linear(24, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(256, 512), nn.Tanh(), nn.Linear(512, 256), nn.Tanh(), nn.Linear(256, 5))


def train(forward, opt):
    for s in range(20):
        xb, yb = ember.tensor(X[s, r * 8:(r + 1) * 8]), ember.tensor(Y[s, r * 8:(r + 1) * 8])
        ember.manual_seed(100 * s + r)
        opt.zero_grad()
        loss_fn(forward(xb), yb).backward()
        opt.step()


def moments(opt):
    """This rank's shards of Adam's moments, by unit."""
    return {f"{k}{u}": opt.state[p][k].numpy() for u, p in enumerate(opt.param_groups[0]["params"])
            for k in ("exp_avg", "exp_avg_sq")}


NAMES = [k for k, _ in model().named_parameters()]  # the buffers are not compared: DDP broadcasts
# rank 0's every forward (broadcast_buffers), FSDP keeps each rank's own, as PyTorch's do


def flat(sd):
    return np.concatenate([sd[k].numpy().reshape(-1) for k in NAMES])


mgr = CheckpointManager(ckpt, keep=2)
if mode == "train":
    tracemalloc.start()
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    m1 = model()
    ddp = dist.DistributedDataParallel(m1, algorithm="ring")
    o1 = ember.optim.AdamW(m1.parameters(), lr=1e-3, weight_decay=0.05)
    tracemalloc.reset_peak()  # the peak of the steps, not of building the model
    train(ddp, o1)
    gc.collect()
    cur, peak = tracemalloc.get_traced_memory()
    ddp_bytes, ddp_peak = cur - base, peak - base
    p_ddp = flat(m1.state_dict())
    del ddp, o1
    m1 = None
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    fsdp = dist.FullyShardedDataParallel(model(), algorithm="ring")
    o2 = ember.optim.AdamW(fsdp.parameters(), lr=1e-3, weight_decay=0.05)
    tracemalloc.reset_peak()
    before = dict(g.stats)
    train(fsdp, o2)
    calls = {k: g.stats[k] - before.get(k, 0) for k in g.stats if k.startswith("calls:")}
    gc.collect()
    cur, peak = tracemalloc.get_traced_memory()
    fsdp_bytes, fsdp_peak = cur - base, peak - base
    tracemalloc.stop()
    p_fsdp = flat(fsdp.state_dict())
    dist.save_sharded_checkpoint(mgr, 20, fsdp, o2, epoch=1)
    np.savez(f"{out}.{r}.npz", ddp=p_ddp, fsdp=p_fsdp, ddp_bytes=ddp_bytes, fsdp_bytes=fsdp_bytes,
             ddp_peak=ddp_peak, fsdp_peak=fsdp_peak, totals=[u.total for u in fsdp.units], **moments(o2),
             ag=calls.get("calls:all_gather:ring", 0), rs=calls.get("calls:reduce_scatter:ring", 0),
             ar=sum(v for k, v in calls.items() if k.startswith("calls:all_reduce")),
             units=len(fsdp.units))
else:
    fsdp = dist.FullyShardedDataParallel(model(), algorithm="ring")
    o2 = ember.optim.AdamW(fsdp.parameters(), lr=1e-3, weight_decay=0.05)
    pos = dist.load_sharded_checkpoint(mgr, fsdp, o2)
    np.savez(f"{out}.{r}.npz", fsdp=flat(fsdp.state_dict()), **moments(o2), epoch=pos["epoch"],
             step=int(o2.state[o2.param_groups[0]["params"][0]]["step"].item()))
dist.destroy_process_group()
