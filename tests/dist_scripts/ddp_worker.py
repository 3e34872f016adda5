"""Under mpiexec (or alone): 5 SGD steps of an MLP at global batch 64, with DDP when n > 1.

argv: out.npz [algorithm]. Rank 0 writes the final parameters and the DDP timeline (DT-1, DT-11, BE-11).
"""
import sys
import time

import numpy as np

import ember
import ember.distributed as dist
from ember import nn

out = sys.argv[1]
algorithm = sys.argv[2] if len(sys.argv) > 2 else "mpi"
g = dist.init_process_group()
n, r = g.size, g.rank

ember.manual_seed(1 + r)  # different init per rank: DDP's broadcast must make them equal
model = nn.Sequential(nn.Linear(32, 512), nn.Tanh(), nn.Linear(512, 512), nn.Tanh(),
                      nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 10))
if n == 1:
    ember.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 512), nn.Tanh(), nn.Linear(512, 512), nn.Tanh(),
                          nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 10))
ddp = dist.DistributedDataParallel(model, algorithm=algorithm) if n > 1 else model
opt = ember.optim.SGD(model.parameters(), lr=0.1)
rng = np.random.default_rng(0)
X = rng.standard_normal((5, 64, 32)).astype(np.float32)
Y = rng.integers(0, 10, (5, 64))
loss_fn = nn.CrossEntropyLoss()
per = 64 // n
ends = []
for step in range(5):
    xb = ember.tensor(X[step, r * per:(r + 1) * per])
    yb = ember.tensor(Y[step, r * per:(r + 1) * per])
    opt.zero_grad()
    loss = loss_fn(ddp(xb), yb)
    loss.backward()
    ends.append(time.perf_counter())
    opt.step()
if r == 0:
    res = {f"p{i}": p.detach().numpy() for i, p in enumerate(model.parameters())}
    if n > 1:
        tl = ddp.timeline
        res["starts"] = np.array([[b, t] for e, b, t in tl if e == "start"])
        res["backward_end"] = np.array(ends)
        res["nbuckets"] = np.array(len(ddp.buckets))
        res["calls"] = np.array(g.stats[f"calls:all_reduce:{'ring' if algorithm != 'mpi' else 'mpi'}"])
    np.savez(out, **res)
dist.destroy_process_group()

# BE-11: 100 small parameters -> ceil(bytes / bucket) all-reduce calls, equal to per-parameter all-reduce
if n > 1:
    dist.init_process_group()
    g = dist.group()
    ember.manual_seed(5 + r)
    small = nn.Sequential(*[nn.Linear(3, 3) for _ in range(50)])
    d2 = dist.DistributedDataParallel(small, algorithm=algorithm)
    key = f"calls:all_reduce:{'ring' if algorithm != 'mpi' else 'mpi'}"
    before = g.stats[key]
    x = ember.tensor(np.random.default_rng(r).standard_normal((4, 3)).astype(np.float32))
    # the local gradients, reduced one parameter at a time, are the reference
    with d2.no_sync():
        d2(x).sum().backward()
    local = [p.grad.numpy().copy() for p in small.parameters()]
    for p in small.parameters():
        p.grad = None
    d2(x).sum().backward()
    calls = g.stats[key] - before
    nbytes = sum(p.numel() * 4 for p in small.parameters())
    assert calls <= -(-nbytes // (1 << 20)), calls
    for a, p in zip(local, small.parameters()):
        t = ember.tensor(a)
        dist.all_reduce(t, op="avg", algorithm="mpi")
        assert np.allclose(t.numpy(), p.grad.numpy(), rtol=1e-6, atol=1e-7)
    if r == 0:
        print(f"BE11 OK calls={calls}", flush=True)
    dist.destroy_process_group()

# DT-11 with the communication thread: a layer whose backward takes 0.3 s sits between the last
# layer (its own bucket) and the first; the last layer's all-reduce must finish during that 0.3 s
# (done before backward's last hook waits), and the gradients equal those of the polling hooks.
if n > 1:
    import threading

    from ember import autograd

    class Slow(autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, gr):
            time.sleep(0.3)
            return gr

    class SlowBackward(nn.Module):
        def forward(self, x):
            return Slow.apply(x)

    dist.init_process_group()
    grads = {}
    for threaded in (True, False):
        ember.manual_seed(9)
        m = nn.Sequential(nn.Linear(32, 256), SlowBackward(), nn.Linear(256, 256))
        d3 = dist.DistributedDataParallel(m, algorithm=algorithm, first_bucket_cap_mb=0.25, bucket_cap_mb=0.25,
                                          comm_thread=threaded)
        x = ember.tensor(np.random.default_rng(r).standard_normal((8, 32)).astype(np.float32))
        d3(x).sum().backward()
        grads[threaded] = [p.grad.numpy().copy() for p in m.parameters()]
        if threaded:
            tl = d3.timeline
            wait = [t for e, b, t in tl if e == "wait"][0]
            first_done = [t for e, b, t in tl if e == "done" and b == 0][0]
            assert len(d3.buckets) >= 2 and first_done < wait, tl
            assert any(t.name.startswith("ember-comm-") for t in threading.enumerate())
    for a, b in zip(grads[True], grads[False]):
        assert np.array_equal(a, b)
    dist.destroy_process_group()
    assert not any(t.name.startswith("ember-comm-") for t in threading.enumerate())
    if r == 0:
        print("COMMTHREAD OK", flush=True)
