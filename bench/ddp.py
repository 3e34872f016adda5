"""Data-parallel throughput of the flagship CNN (ember/recipes/fashion_mnist.py) at 1 and 2 ranks.

    ember launch -n 1 bench/ddp.py ; ember launch -n 2 bench/ddp.py

Synthetic 28x28 inputs (no download), AdamW, per-rank batch 64 (global 64*n), eager.
Reports samples/s and, from DDP's timeline, how much of the all-reduce ran during backward:
overlapped = last bucket start - first bucket start; exposed = last bucket done - last bucket start.
"""
import argparse
import time

import numpy as np

import ember
import ember.distributed as dist
from ember import nn
from ember.recipes.fashion_mnist import FashionCNN

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=12)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--bucket-mb", type=float, default=25.0)
a = ap.parse_args()
g = dist.init_process_group()
n, r = g.size, g.rank
ember.manual_seed(0)
model = FashionCNN()
ddp = dist.DistributedDataParallel(model, bucket_cap_mb=a.bucket_mb)
opt = ember.optim.AdamW(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
rng = np.random.default_rng(r)
x = ember.tensor(rng.standard_normal((a.batch, 1, 28, 28)).astype(np.float32))
y = ember.tensor(rng.integers(0, 10, a.batch))
times, ov, ex = [], [], []
for step in range(a.steps):
    ddp.timeline.clear()
    dist.barrier()
    t0 = time.perf_counter()
    loss = loss_fn(ddp(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t0)
    st = [t for e, b, t in ddp.timeline if e == "start"]
    dn = [t for e, b, t in ddp.timeline if e == "done"]
    ov.append(st[-1] - st[0])
    ex.append(dn[-1] - st[-1])
warm = slice(2, None)
med = float(np.median(times[warm]))
if r == 0:
    nparam = sum(p.numel() for p in model.parameters())
    print(f"ranks {n}: {len(ddp.buckets)} buckets for {nparam * 4 / 2**20:.2f} MiB of gradients; "
          f"step {med * 1e3:.1f} ms; {a.batch * n / med:.0f} samples/s; "
          f"all-reduce during backward {np.median(ov[warm]) * 1e3:.2f} ms, exposed after backward "
          f"{np.median(ex[warm]) * 1e3:.2f} ms", flush=True)
dist.destroy_process_group()
