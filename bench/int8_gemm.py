"""ember.jit float32 GEMM (SGEMM through CBLAS) against ember.jit int8 -> int32 GEMM (ember's own
AVX2 kernel, backend/cpu/qgemm.py), side by side on the same shapes, 1 and 2 threads.

Shapes (m x k x n): the flagship MLP's GEMMs at batch 64 (784->512, 512->512, 512->10) and one
larger 256 x 1024 x 1024. int8 operands come in two ranges, both computed exactly:
  - "7-bit acts": uint8 activations in [0, 127] (fbgemm's reduce_range), int8 weights in
    [-128, 127]: 2 * 127 * 128 <= 32767, so the vpmaddubsw kernel runs (32 MACs per two
    multiply-pipe instructions);
  - "full":       uint8 activations in [0, 255], int8 weights in [-128, 127]: a vpmaddubsw pair
    sum could saturate int16, so the int16 vpmaddwd kernel runs (exact for any values).

"call" is the median wall time of the jitted call (what a user sees: includes ember's per-call
overhead, a few microseconds); "kernel" is the GEMM kernel alone (the step profile's mean).

usage: python bench/int8_gemm.py [--repeats 30] [--threads 1 2]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import ember  # noqa: E402
from ember.ops import lax  # noqa: E402

SHAPES = [(64, 784, 512, "mlp fc1"), (64, 512, 512, "mlp fc2"), (64, 512, 10, "mlp fc3"),
          (256, 1024, 1024, "large")]


def _exe(j):
    (ent,) = j.cache.values()
    return ent.exe


def measure(fn, args, repeats):
    """(median call seconds, mean kernel seconds) of jitted `fn` on `args`."""
    for _ in range(3):
        fn(*args)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t0)
    exe = _exe(fn)
    prof = exe.profile([np.asarray(a.numpy()) for a in args], repeats=repeats)
    kern = sum(t for label, t, _, _ in prof if label == "dot_general")
    return statistics.median(ts), kern


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':>22} {'thr':>3} | {'fp32 call':>9} {'kernel':>8} | {'int8':>10} {'call':>8} {'kernel':>8} "
          f"| {'fp32/int8 call':>14} {'kernel':>7}")
    for nt in a.threads:
        with ember.num_threads(nt):
            for m, k, n, name in SHAPES:
                f32 = ember.jit(lambda x, w: lax.dot_general(x, w, ((1,), (0,))), backend="native")
                i8 = ember.jit(lambda x, w: lax.dot_general(x, w, ((1,), (0,)), preferred=ember.int32),
                               backend="native")
                xf = ember.tensor(rng.standard_normal((m, k)).astype(np.float32))
                wf = ember.tensor(rng.standard_normal((k, n)).astype(np.float32))
                cf, kf = measure(f32, (xf, wf), a.repeats)
                for rname, hi in (("7-bit acts", 127), ("full", 255)):
                    xq = rng.integers(0, hi + 1, (m, k), dtype=np.uint8)
                    wq = rng.integers(-128, 128, (k, n), dtype=np.int8)
                    args = (ember.tensor(xq), ember.tensor(wq))
                    out = i8(*args).numpy()
                    assert np.array_equal(out, xq.astype(np.int32) @ wq.astype(np.int32))
                    ci, ki = measure(i8, args, a.repeats)
                    print(f"{name + f' {m}x{k}x{n}':>22} {nt:>3} | {cf * 1e3:8.3f}ms {kf * 1e3:7.3f}ms | "
                          f"{rname:>10} {ci * 1e3:7.3f}ms {ki * 1e3:7.3f}ms | {cf / ci:13.2f}x {kf / ki:6.2f}x",
                          flush=True)


if __name__ == "__main__":
    main()
