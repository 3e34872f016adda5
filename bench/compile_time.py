"""First-call time of the jitted MLP training step (bench/train.py's model and sizes) in a fresh
process: cold (empty kernel cache) and warm (the cache the cold run filled). Each measurement is a
new interpreter, so nothing is cached in memory.

usage: python compile_time.py [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
import ember
import ember.nn.functional as F
from bench_models import loss
rng = np.random.default_rng(0)
P = {}
for i, (a, b) in enumerate([(784, 1024), (1024, 1024), (1024, 10)]):
    P[f"fc{i + 1}.w"] = ember.tensor((rng.standard_normal((b, a)) * 0.03).astype(np.float32), requires_grad=True)
    P[f"fc{i + 1}.b"] = ember.tensor(np.zeros(b, np.float32), requires_grad=True)
x = ember.from_numpy(rng.standard_normal((256, 784)).astype(np.float32))
y = ember.from_numpy(rng.integers(0, 10, 256))
opt = ember.optim.Adam(list(P.values()), lr=1e-3)
def step(x, y):
    opt.zero_grad(set_to_none=True)
    out = loss("mlp", None, F, P, x, y)
    out.backward()
    opt.step()
    return out
f = ember.jit(step)
t0 = time.perf_counter()
f(x, y)
first = time.perf_counter() - t0
t0 = time.perf_counter()
f(x, y)
second = time.perf_counter() - t0
exe = next(iter(f.cache.values())).exe
print(json.dumps({"first_call_s": first, "second_call_s": second, "executor": type(exe).__name__}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    res = {"cold": [], "warm": []}
    for _ in range(a.rounds):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, EMBER_CACHE_DIR=d)
            for kind in ("cold", "warm"):
                r = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(__file__)], env=env,
                                   capture_output=True, text=True, check=True)
                res[kind].append(json.loads(r.stdout.strip().splitlines()[-1]))
    for kind, rows in res.items():
        ts = [r["first_call_s"] for r in rows]
        print(json.dumps({"bench": "compile_time", "model": "mlp", "cache": kind,
                          "executor": rows[0]["executor"], "first_call_s_median": statistics.median(ts),
                          "min": min(ts), "max": max(ts), "steady_call_s": rows[-1]["second_call_s"]}))


if __name__ == "__main__":
    main()
