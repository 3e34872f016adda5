"""Run under mpiexec: every collective, both algorithms, against a numpy reference (DT-7/8/9).

With EMBER_TEST_NO_PICKLE=1, pickle and mpi4py's pickle hooks raise for the whole run.
Prints "COLLECTIVES OK <n>" on rank 0 when everything matched.
"""
import os
import pickle
import sys

import numpy as np

import ember
import ember.distributed as dist
from ember.distributed import ReduceOp

if os.environ.get("EMBER_TEST_NO_PICKLE") == "1":
    from mpi4py import MPI

    def boom(*a, **k):
        raise AssertionError("pickle used during a collective")
    pickle.dumps = pickle.loads = pickle.dump = pickle.load = boom
    MPI.pickle.__init__(dumps=boom, loads=boom)
    try:  # the patch is live: mpi4py's object (lower-case) calls now fail
        MPI.COMM_SELF.sendrecv({"x": 1}, dest=0, source=0)
        raise SystemExit("pickle patch not effective")
    except AssertionError:
        pass

g = dist.init_process_group()
n, r = dist.get_world_size(), dist.get_rank()


def data(rank, shape=(5, 7), dtype=np.float32, salt=0):
    rng = np.random.default_rng(1000 * rank + salt)
    return (rng.integers(1, 4, size=shape)).astype(dtype)  # small ints: exact sums/products


def T(a):
    return ember.tensor(a.copy())


def check(name, got, want):
    got = np.asarray(got)
    if got.shape != np.shape(want) or not np.allclose(got, want, rtol=1e-6, atol=0):
        print(f"rank {r}: {name} mismatch\n got {got}\n want {want}", flush=True)
        sys.exit(3)


REF = {"sum": lambda xs: np.sum(xs, 0), "avg": lambda xs: np.sum(xs, 0) / n, "prod": lambda xs: np.prod(xs, 0),
       "max": lambda xs: np.max(xs, 0), "min": lambda xs: np.min(xs, 0)}

# the book's example (DT-7): [2,4,6], [1,2,3], [4,8,12] -> [7,14,21]
if n == 3:
    for algo in ("mpi", "ember", "tree"):
        t = ember.tensor([[2., 4., 6.], [1., 2., 3.], [4., 8., 12.]][r])
        dist.all_reduce(t, algorithm=algo)
        check("book allreduce " + algo, t.numpy(), [7., 14., 21.])

algos_ar = ["mpi", "ring", "tree"] + (["recursive_doubling"] if n & (n - 1) == 0 else [])
for algo in algos_ar:
    for op in ("sum", "avg", "prod", "max", "min"):
        for shape in [(5, 7), (3,), (1,), (2, 3, 4)]:
            xs = [data(k, shape) for k in range(n)]
            t = T(xs[r])
            ptr = t.data_ptr()
            dist.all_reduce(t, op=op, algorithm=algo)
            assert t.data_ptr() == ptr  # in place
            check(f"all_reduce {algo} {op} {shape}", t.numpy(), REF[op](xs))
    # non-contiguous tensor
    xs = [data(k, (6, 4)) for k in range(n)]
    t = T(xs[r]).transpose(0, 1)
    dist.all_reduce(t, algorithm=algo)
    check(f"all_reduce {algo} noncontig", t.numpy(), np.sum(xs, 0).T)
    # float64 / int32
    for dt in (np.float64, np.int32):
        xs = [data(k, (9,), dt) for k in range(n)]
        t = T(xs[r])
        dist.all_reduce(t, algorithm=algo)
        check(f"all_reduce {algo} {dt}", t.numpy(), np.sum(xs, 0))
    # async
    xs = [data(k, (50,)) for k in range(n)]
    t = T(xs[r])
    w = dist.all_reduce(t, async_op=True, algorithm=algo)
    w.wait()
    assert w.is_completed()
    check(f"all_reduce async {algo}", t.numpy(), np.sum(xs, 0))

for algo in ("mpi", "ember"):
    for root in range(n):
        xs = [data(k, (4, 3)) for k in range(n)]
        t = T(xs[r])
        dist.broadcast(t, src=root, algorithm=algo)
        check(f"broadcast {algo} {root}", t.numpy(), xs[root])
        for op in ("sum", "max", "min", "prod", "avg"):
            t = T(xs[r])
            w = dist.reduce(t, dst=root, op=op, algorithm=algo, async_op=True)
            w.wait()
            check(f"reduce {algo} {op} {root}", t.numpy(), REF[op](xs) if r == root else xs[r])
        lst = [ember.zeros(4, 3) for _ in range(n)] if r == root else None
        dist.gather(T(xs[r]), lst, dst=root, algorithm=algo)
        if r == root:
            for k in range(n):
                check(f"gather {algo}", lst[k].numpy(), xs[k])
        out = ember.zeros(4, 3)
        sl = [T(data(k, (4, 3), salt=7)) for k in range(n)] if r == root else None
        dist.scatter(out, sl, src=root, algorithm=algo)
        check(f"scatter {algo}", out.numpy(), data(r, (4, 3), salt=7))  # rank i gets chunk i
    xs = [data(k, (2, 5)) for k in range(n)]
    lst = [ember.zeros(2, 5) for _ in range(n)]
    w = dist.all_gather(lst, T(xs[r]), algorithm=algo, async_op=True)
    w.wait()
    for k in range(n):
        check(f"all_gather {algo}", lst[k].numpy(), xs[k])  # rank order
    for op in ("sum", "max", "avg"):
        ins = {k: [data(k, (3, 2), salt=10 + i) for i in range(n)] for k in range(n)}
        out = ember.zeros(3, 2)
        dist.reduce_scatter(out, [T(a) for a in ins[r]], op=op, algorithm=algo)
        check(f"reduce_scatter {algo} {op}", out.numpy(), REF[op]([ins[k][r] for k in range(n)]))
        mine = np.stack(ins[r])  # the same pieces as one (n, 3, 2) tensor; it is not modified
        out = ember.zeros(6)
        dist.reduce_scatter_tensor(out, T(mine), op=op, algorithm=algo)
        check(f"reduce_scatter_tensor {algo} {op}", out.numpy(), REF[op]([ins[k][r] for k in range(n)]).reshape(-1))
        check(f"reduce_scatter_tensor {algo} input kept", mine, np.stack(ins[r]))
    big = ember.zeros(n, 2, 5)
    dist.all_gather_into_tensor(big, T(xs[r]), algorithm=algo)
    check(f"all_gather_into_tensor {algo}", big.numpy(), np.stack(xs))
    for bad in (lambda: dist.all_gather_into_tensor(ember.zeros(n * 10 + 1), T(xs[r]), algorithm=algo),
                lambda: dist.reduce_scatter_tensor(ember.zeros(5), ember.zeros(n * 6), algorithm=algo)):
        try:
            bad()
        except dist.DistributedError as e:
            assert "world_size" in str(e), e
        else:
            raise AssertionError("a wrong-sized tensor was accepted")
    ins = {k: [data(k, (3,), salt=20 + i) for i in range(n)] for k in range(n)}
    outs = [ember.zeros(3) for _ in range(n)]
    dist.all_to_all(outs, [T(a) for a in ins[r]], algorithm=algo)
    for k in range(n):
        check(f"all_to_all {algo}", outs[k].numpy(), ins[k][r])

# send / recv around a ring, isend/irecv
if n > 1:
    t = T(data(r, (8,)))
    got = ember.zeros(8)
    w = dist.isend(t, (r + 1) % n, tag=5)
    src = dist.recv(got, None, tag=5)
    w.wait()
    assert src == (r - 1) % n, src
    check("send/recv", got.numpy(), data((r - 1) % n, (8,)))
    w = dist.irecv(got, (r + 1) % n, tag=6)
    dist.send(t, (r - 1) % n, tag=6)
    assert w.wait() == (r + 1) % n
    check("isend/irecv", got.numpy(), data((r + 1) % n, (8,)))

# DT-9: the ring sends exactly 2(n-1)/n of the buffer in 2(n-1) messages; DT-8: tree rounds
N = 1200 * 12
before = dict(g.stats)
dist.all_reduce(ember.ones(N), algorithm="ring")
sent = g.stats["bytes_sent"] - before.get("bytes_sent", 0)
msgs = g.stats["messages_sent"] - before.get("messages_sent", 0)
assert sent == 2 * (n - 1) * N * 4 // n, (sent, N * 4)
assert msgs == 2 * (n - 1), msgs
before = dict(g.stats)
dist.broadcast(ember.ones(10), src=0, algorithm="tree")
msgs = g.stats["messages_sent"] - before.get("messages_sent", 0)
import math
assert msgs <= max(1, math.ceil(math.log2(n))) if n > 1 else msgs == 0, msgs
dist.barrier()
if r == 0:
    print(f"COLLECTIVES OK {n} ring_bytes_ok", flush=True)
dist.destroy_process_group()
