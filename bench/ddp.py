"""Data-parallel training with and without a communication thread: an MLP with a bucket per
layer, or the flagship CNN (ember/recipes/fashion_mnist.py).

    ember launch -n 2 bench/ddp.py [--model mlp|cnn] [--bucket-mb 4] [--algorithm ring|mpi]

Synthetic 28x28 inputs (no download), AdamW, per-rank batch --batch (global batch * n), eager.
Runs two DDP replicas of the model side by side, one step each in turn (so drift in the machine's
speed hits both): with the buckets' all-reduces on the process group's communication thread (the
default), and with the hooks starting and polling them (comm_thread=False).
Reports samples/s and, from DDP's timeline, the share of buckets whose all-reduce finished
before backward's last hook began to wait, and the exposed communication: from that wait to the
last bucket's done (the time backward is stretched by communication).
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
ap.add_argument("--bucket-mb", type=float, default=4.0, help="bucket cap (the first bucket: a quarter of it)")
ap.add_argument("--algorithm", default="ring", help="all-reduce algorithm: ring (ember's) or mpi")
ap.add_argument("--model", default="mlp", choices=("mlp", "cnn"),
                help="mlp: 784 -> 6 x Linear(1024, 1024) -> 10 (25 MiB of gradients, one bucket a layer "
                     "at --bucket-mb 4); cnn: the flagship FashionCNN (0.8 MiB, 3 buckets at most)")
a = ap.parse_args()
g = dist.init_process_group()
n, r = g.size, g.rank
loss_fn = nn.CrossEntropyLoss()
rng = np.random.default_rng(r)
x = ember.tensor(rng.standard_normal((a.batch, 1, 28, 28)).astype(np.float32))
if a.model == "mlp":
    x = x.reshape(a.batch, 784)


def make():
    if a.model == "cnn":
        return FashionCNN()
    layers = [nn.Linear(784, 1024), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(1024, 10))
y = ember.tensor(rng.integers(0, 10, a.batch))


def setup(threaded: bool):
    ember.manual_seed(0)
    model = make()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=a.bucket_mb, first_bucket_cap_mb=a.bucket_mb / 4,
                                       algorithm=a.algorithm, comm_thread=threaded)
    return model, ddp, ember.optim.AdamW(model.parameters(), lr=1e-3), {k: [] for k in ("step", "bw", "early", "ex")}


def step(model, ddp, opt, rec) -> None:
    ddp.timeline.clear()
    dist.barrier()
    t0 = time.perf_counter()
    loss = loss_fn(ddp(x), y)
    opt.zero_grad()
    tb = time.perf_counter()
    loss.backward()
    t1 = time.perf_counter()
    opt.step()
    rec["step"].append(time.perf_counter() - t0)
    dn = [t for e, b, t in ddp.timeline if e == "done"]
    wait = [t for e, b, t in ddp.timeline if e == "wait"][0]
    rec["early"].append(sum(1 for t in dn if t < wait) / len(dn))  # buckets done before backward waited
    rec["ex"].append(max(dn) - wait)
    rec["bw"].append(t1 - tb)


runs = {threaded: setup(threaded) for threaded in (False, True)}
for i in range(a.steps):  # the two alternate step by step, so drift in the machine's speed hits both
    for threaded in (False, True):
        step(*runs[threaded])
res = {}
for threaded, (model, ddp, opt, rec) in runs.items():
    w = slice(2, None)
    res[threaded] = {"buckets": len(ddp.buckets), "mib": sum(p.numel() for p in model.parameters()) * 4 / 2**20,
                     "step": float(np.median(rec["step"][w])), "backward": float(np.median(rec["bw"][w])),
                     "done_early": float(np.median(rec["early"][w])), "exposed": float(np.median(rec["ex"][w]))}
if r == 0:
    first = res[False]
    print(f"ranks {n}, {a.algorithm} all-reduce: {first['buckets']} buckets for {first['mib']:.2f} MiB of "
          f"gradients, per-rank batch {a.batch}", flush=True)
    for threaded, name in ((False, "hooks poll"), (True, "comm thread")):
        v = res[threaded]
        print(f"  {name:12s} step {v['step'] * 1e3:7.1f} ms  {a.batch * n / v['step']:6.0f} samples/s  "
              f"backward {v['backward'] * 1e3:6.1f} ms  buckets done before backward's end "
              f"{v['done_early'] * 100:3.0f}%  exposed communication {v['exposed'] * 1e3:6.2f} ms", flush=True)
    print(f"  exposed: comm thread / hooks poll = {res[True]['exposed'] / max(res[False]['exposed'], 1e-9):.2f}",
          flush=True)
dist.destroy_process_group()
