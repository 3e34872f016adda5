"""ember.jit float32 GEMM (SGEMM through CBLAS) against ember.jit int8 -> int32 GEMM (ember's own
AVX2 kernel, backend/cpu/qgemm.py), side by side on the same shapes, 1 and 2 threads.

Shapes (m x k x n): the flagship MLP's GEMMs at batch 64 (784->512, 512->512, 512->10) and one
larger 256 x 1024 x 1024. int8 operands come in two ranges, both computed exactly:
  - "7-bit acts": uint8 activations in [0, 127] (fbgemm's reduce_range), int8 weights in
    [-128, 127]: 2 * 127 * 128 <= 32767, so the vpmaddubsw kernel runs (32 MACs per two
    multiply-pipe instructions);
  - "full":       uint8 activations in [0, 255], int8 weights in [-128, 127]: a vpmaddubsw pair
    sum could saturate int16, so the int16 vpmaddwd kernel runs (exact for any values).

  - "packed":     the Int8Linear path: uint8 activations in [0, 255] against int8 weights in
    [-64, 64] (``reduce_range=True``) packed once (`packed_matmul`, ops/packed.py), vpmaddubsw.

With Intel MKL's libmkl_rt installed (``pip install mkl``, or --mkl PATH), its
``cblas_gemm_s8u8s32`` on the "packed" operands (uint8 A, int8 B, row major) is timed too, and
whether its sums are exact: on CPUs without AVX-512 VNNI its int16 paths saturate, and on AMD CPUs
it takes a generic path (measured on the Zen 3 of the README: 14 GMAC/s and inexact, against
ember's ~85 GMAC/s exact), which is why ember runs its own kernel rather than MKL's.

"call" is the median wall time of the jitted call (what a user sees: includes ember's per-call
overhead, a few microseconds); "kernel" is the GEMM kernel alone (the step profile's mean).

usage: python bench/int8_gemm.py [--repeats 30] [--threads 1 2] [--mkl PATH]
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
    kern = sum(t for label, t, _, _ in prof if label in ("dot_general", "packed_matmul"))
    return statistics.median(ts), kern


def _mkl(path):
    """MKL's cblas_gemm_s8u8s32 as f(a uint8 (m, k), b int8 (k, n)) -> int32 (m, n), or None."""
    import ctypes
    from ember.backend.cpu import blas
    for cand in ([path] if path else blas.mkl_candidates()):
        try:
            lib = ctypes.CDLL(cand)
            fn = lib.cblas_gemm_s8u8s32
            break
        except (OSError, AttributeError):
            continue
    else:
        return None, None
    vp, ci = ctypes.c_void_p, ctypes.c_int
    fn.restype = None
    fn.argtypes = [ci] * 7 + [ctypes.c_float, vp, ci, ctypes.c_int8, vp, ci, ctypes.c_int8, ctypes.c_float, vp, ci, vp]
    co = np.zeros(1, np.int32)

    def gemm(a, b, c):
        m, k = a.shape
        n = b.shape[1]
        fn(101, 111, 111, 171, m, n, k, 1.0, a.ctypes.data, k, 0, b.ctypes.data, n, 0, 0.0, c.ctypes.data, n,
           co.ctypes.data)  # row major, no transposes, a fixed (zero) offset of C
    return gemm, lib


def _time_mkl(gemm, lib, a, b, nt, repeats):
    lib.MKL_Set_Num_Threads(nt)
    c = np.zeros((a.shape[0], b.shape[1]), np.int32)
    for _ in range(3):
        gemm(a, b, c)
    exact = np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gemm(a, b, c)
        ts.append(time.perf_counter() - t0)
    return min(ts), exact


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--mkl", default="", help="path of libmkl_rt (default: where the mkl wheel installs it)")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    from ember.ops.packed import pack_weight
    mkl, lib = _mkl(a.mkl)
    print("MKL cblas_gemm_s8u8s32:", "found" if mkl else "not found (pip install mkl to time it)")
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
                pk = ember.jit(lambda x, p, k=k, n=n: lax.packed_matmul(x, p, k, n), backend="native")
                for rname, hi in (("7-bit acts", 127), ("full", 255), ("packed", 255)):
                    xq = rng.integers(0, hi + 1, (m, k), dtype=np.uint8)
                    wq = rng.integers(-128, 128, (k, n), dtype=np.int8)
                    fn = i8
                    if rname == "packed":
                        wq = rng.integers(-64, 65, (k, n)).astype(np.int8)
                        fn, args = pk, (ember.tensor(xq), ember.tensor(pack_weight(wq)))
                    else:
                        args = (ember.tensor(xq), ember.tensor(wq))
                    out = fn(*args).numpy()
                    assert np.array_equal(out, xq.astype(np.int32) @ wq.astype(np.int32))
                    ci, ki = measure(fn, args, a.repeats)
                    print(f"{name + f' {m}x{k}x{n}':>22} {nt:>3} | {cf * 1e3:8.3f}ms {kf * 1e3:7.3f}ms | "
                          f"{rname:>10} {ci * 1e3:7.3f}ms {ki * 1e3:7.3f}ms | {cf / ci:13.2f}x {kf / ki:6.2f}x",
                          flush=True)
                    if rname == "packed" and mkl:
                        tm, exact = _time_mkl(mkl, lib, xq, wq, nt, a.repeats)
                        print(f"{'':>22} {nt:>3} | {'':>19} | {'MKL s8u8':>10} {tm * 1e3:7.3f}ms "
                              f"{m * k * n / tm / 1e9:6.1f} GMAC/s, {'exact' if exact else 'NOT exact'}; "
                              f"ember packed {m * k * n / ki / 1e9:.1f} GMAC/s", flush=True)


if __name__ == "__main__":
    main()
