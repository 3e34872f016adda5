"""Eager dispatch overhead: ember against PyTorch eager and plain numpy, in one run.

Median microseconds per call on 64x64 float32 for (a) add without grad, (b) add with
requires_grad (the tape is recorded), (c) matmul, (d) sum, and (e) forward + backward of a
784-128-64-10 MLP at batch 32 with cross-entropy. Each framework runs the same inputs; rounds
are interleaved so that drift on the machine affects all of them alike.

    python bench/eager_overhead.py            # ember and numpy (and torch if importable)
    PYTHONPATH=. /path/to/venv-with-torch/bin/python bench/eager_overhead.py
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--rounds", type=int, default=7)
ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
a = ap.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(a.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ember  # noqa: E402
import ember.nn.functional as EF  # noqa: E402

try:
    import torch
    import torch.nn.functional as TF
    torch.set_num_threads(a.threads)
except ImportError:
    torch = None

rng = np.random.default_rng(0)
A = rng.standard_normal((64, 64)).astype(np.float32)
B = rng.standard_normal((64, 64)).astype(np.float32)
X = rng.standard_normal((32, 784)).astype(np.float32)
Y = rng.integers(0, 10, 32).astype(np.int64)
W = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32) for i, o in ((784, 128), (128, 64), (64, 10))]
Bs = [np.zeros(o, np.float32) for o in (128, 64, 10)]


def cases_numpy():
    def mlp():
        h1 = np.maximum(X @ W[0].T + Bs[0], 0)
        h2 = np.maximum(h1 @ W[1].T + Bs[1], 0)
        z = h2 @ W[2].T + Bs[2]
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(32), Y]).mean()
        g = p.copy()
        g[np.arange(32), Y] -= 1
        g /= 32
        gw2 = g.T @ h2
        gh2 = (g @ W[2]) * (h2 > 0)
        gw1 = gh2.T @ h1
        gh1 = (gh2 @ W[1]) * (h1 > 0)
        gw0 = gh1.T @ X
        return loss, gw0, gw1, gw2, g.sum(0), gh2.sum(0), gh1.sum(0)
    return {"add": lambda: A + B, "add_grad": None, "matmul": lambda: A @ B, "sum": lambda: A.sum(),
            "mlp_fwd_bwd": mlp}


def cases_tensor_lib(lib, F):
    """The cases for a library with PyTorch's API (ember and torch both have it)."""
    a, b = lib.from_numpy(A), lib.from_numpy(B)
    ag = lib.tensor(A, requires_grad=True)
    x, y = lib.from_numpy(X), lib.from_numpy(Y)
    ws = [lib.tensor(w, requires_grad=True) for w in W]
    bs = [lib.tensor(v, requires_grad=True) for v in Bs]

    def mlp():
        h = F.relu(F.linear(x, ws[0], bs[0]))
        h = F.relu(F.linear(h, ws[1], bs[1]))
        loss = F.cross_entropy(F.linear(h, ws[2], bs[2]), y)
        for p in ws + bs:
            p.grad = None
        loss.backward()
        return loss
    return {"add": lambda: a + b, "add_grad": lambda: ag + b, "matmul": lambda: a @ b, "sum": lambda: a.sum(),
            "mlp_fwd_bwd": mlp}


def per_call_us(fn, budget_s=0.05):
    n = 1
    while True:  # calibrate so one sample takes about budget_s
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > budget_s / 4:
            break
        n *= 4
    n = max(1, int(n * budget_s / max(dt, 1e-9)))
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


frameworks = {"ember": cases_tensor_lib(ember, EF), "numpy": cases_numpy()}
if torch is not None:
    frameworks["torch"] = cases_tensor_lib(torch, TF)
names = ["add", "add_grad", "matmul", "sum", "mlp_fwd_bwd"]
samples = {(f, n): [] for f in frameworks for n in names}
for _ in range(a.rounds):
    for n in names:
        for f, cases in frameworks.items():
            fn = cases[n]
            if fn is not None:
                fn()
                samples[(f, n)].append(per_call_us(fn))

med = {k: statistics.median(v) for k, v in samples.items() if v}
machine = f"{platform.machine()} {os.cpu_count()} cpus, threads={a.threads}, python {platform.python_version()}, " \
          f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch else "")
if a.json:
    print(json.dumps({"machine": machine, "median_us": {f"{f}/{n}": v for (f, n), v in med.items()}}))
else:
    print(f"# eager overhead, median us per call over {a.rounds} interleaved rounds ({machine})")
    cols = list(frameworks)
    print(f"{'case':<14}" + "".join(f"{c:>12}" for c in cols) + ("   ember/torch" if torch else ""))
    for n in names:
        row = f"{n:<14}" + "".join(f"{med.get((c, n), float('nan')):>12.2f}" for c in cols)
        if torch:
            row += f"   {med[('ember', n)] / med[('torch', n)]:>10.2f}x"
        print(row)
