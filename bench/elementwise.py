"""Elementwise chain on N float32 values (x is (N/1024, 1024); w, b are (1024,) broadcast rows):

    y = tanh( gelu_tanh(x * w + b) * 0.5 + x )        # 6 ops: mul, add, gelu, mul, add, tanh

gelu_tanh(h) = 0.5*h*(1 + tanh(sqrt(2/pi)*(h + 0.044715*h^3)))  (numpy has no gelu: it is expanded).
Minimum memory traffic of a fused kernel: read x + write y = 8*N bytes -> "eff_gbps".

The peers run as in the baseline harness their numbers were first measured with; ember adds
ember (eager) and ember_jit (ember.jit: one fused native kernel).

usage: python elementwise.py --framework numpy|torch|torch_compile|tinygrad|jax|ember|ember_jit --n 16777216 --threads 2

Diagnostic variants (not anchors):
  numpy_out, torch_out : same unfused ops, but written into preallocated buffers (out=/in-place),
                         i.e. the unfused cost without fresh 64 MB allocations (page faults) per op.
  torch_thp, torch_compile_thp : torch with THP_MEM_ALLOC_ENABLE=1 (torch's CPU allocator then
                         madvises transparent huge pages for large blocks -> far fewer page faults).
"""
import argparse
import atexit
import math
import os
import shutil
import tempfile
import time

from benchutil import pin_threads, timed, stats, emit

ap = argparse.ArgumentParser()
ap.add_argument("--framework", required=True, choices=["numpy", "torch", "torch_compile", "tinygrad", "jax", "ember", "ember_jit",
                                                         "numpy_out", "torch_out", "torch_thp", "torch_compile_thp"])
ap.add_argument("--n", type=int, default=16 * 2**20)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--repeats", type=int, default=9)
ap.add_argument("--warm-cache", action="store_true",
                help="use the frameworks' default on-disk compile caches instead of fresh empty ones")
a = ap.parse_args()
pin_threads(a.threads)
if not a.warm_cache:
    tmp = tempfile.mkdtemp(prefix="ewcache_")
    atexit.register(shutil.rmtree, tmp, True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tmp, "inductor")
    os.environ["CACHEDB"] = os.path.join(tmp, "tinygrad_cache.db")
    os.environ["EMBER_CACHE_DIR"] = os.path.join(tmp, "ember")

if a.framework.endswith("_thp"):
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"

import numpy as np  # noqa: E402

C0 = math.sqrt(2.0 / math.pi)
cols = 1024
assert a.n % cols == 0
rng = np.random.default_rng(0)
X = rng.standard_normal((a.n // cols, cols), dtype=np.float32)
W = rng.standard_normal(cols, dtype=np.float32)
B = rng.standard_normal(cols, dtype=np.float32)


def ref_numpy(x, w, b):
    h = x * w + b
    g = 0.5 * h * (1.0 + np.tanh(C0 * (h + 0.044715 * (h * h * h))))
    return np.tanh(g * 0.5 + x)


extra = {}
out = {}
if a.framework == "numpy":
    def fn():
        out["y"] = ref_numpy(X, W, B)
    def result():
        return out["y"]
    extra["numpy_version"] = np.__version__
elif a.framework == "numpy_out":
    h, g, y = (np.empty_like(X) for _ in range(3))
    def fn():
        np.multiply(X, W, out=h); np.add(h, B, out=h)
        np.multiply(h, h, out=g); np.multiply(g, h, out=g); np.multiply(g, 0.044715, out=g)
        np.add(g, h, out=g); np.multiply(g, C0, out=g); np.tanh(g, out=g); np.add(g, 1.0, out=g)
        np.multiply(g, h, out=g); np.multiply(g, 0.5, out=g)
        np.multiply(g, 0.5, out=g); np.add(g, X, out=g); np.tanh(g, out=y)
    def result():
        return y
    extra["numpy_version"] = np.__version__
elif a.framework == "torch_out":
    import torch
    torch.set_num_threads(a.threads)
    tx, tw, tb = (torch.from_numpy(v) for v in (X, W, B))
    th, tg, ty = (torch.empty_like(tx) for _ in range(3))
    def fn():
        torch.mul(tx, tw, out=th); th.add_(tb)
        torch._C._nn.gelu(th, approximate="tanh", out=tg)
        tg.mul_(0.5).add_(tx); torch.tanh(tg, out=ty)
    def result():
        return ty.numpy()
    extra.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads())
elif a.framework in ("torch", "torch_compile", "torch_thp", "torch_compile_thp"):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    tx, tw, tb = (torch.from_numpy(v) for v in (X, W, B))
    def chain(x, w, b):
        return torch.tanh(F.gelu(x * w + b, approximate="tanh") * 0.5 + x)
    f = torch.compile(chain) if a.framework.startswith("torch_compile") else chain
    def fn():
        with torch.no_grad():
            out["y"] = f(tx, tw, tb)
    def result():
        return out["y"].numpy()
    extra.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads())
elif a.framework == "tinygrad":
    from importlib.metadata import version
    from tinygrad import Tensor, TinyJit, Device
    tx, tw, tb = Tensor(X).realize(), Tensor(W).realize(), Tensor(B).realize()
    dev = Device[Device.DEFAULT]
    @TinyJit
    def jchain(x, w, b):
        return ((x * w + b).gelu() * 0.5 + x).tanh().realize()
    def fn():
        out["y"] = jchain(tx, tw, tb)
        dev.synchronize()
    def result():
        return out["y"].numpy()
    extra.update(tinygrad_version=version("tinygrad"), tinygrad_device=Device.DEFAULT)
elif a.framework in ("ember", "ember_jit"):
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import ember
    import ember.nn.functional as F
    ex, ew, eb = (ember.from_numpy(v) for v in (X, W, B))
    def echain(x, w, b):
        return ember.tanh(F.gelu(x * w + b, approximate="tanh") * 0.5 + x)
    ef = ember.jit(echain) if a.framework == "ember_jit" else echain
    def fn():
        out["y"] = ef(ex, ew, eb)
    def result():
        return out["y"].numpy()
    extra.update(ember_version=ember.__version__, ember_threads=ember.get_num_threads())
elif a.framework == "jax":
    import jax
    import jax.numpy as jnp
    jx, jw, jb = jnp.asarray(X), jnp.asarray(W), jnp.asarray(B)
    @jax.jit
    def jchain(x, w, b):
        return jnp.tanh(jax.nn.gelu(x * w + b, approximate=True) * 0.5 + x)
    def fn():
        out["y"] = jchain(jx, jw, jb).block_until_ready()
    def result():
        return np.asarray(out["y"])
    extra["jax_version"] = jax.__version__

t0 = time.perf_counter()
fn()
first_call_s = time.perf_counter() - t0
t0 = time.perf_counter()
fn()
second_call_s = time.perf_counter() - t0
ts = timed(fn, a.warmup, a.repeats)
y = result()
err = float(np.max(np.abs(y - ref_numpy(X, W, B))))
s = stats(ts)
emit({"bench": "elementwise", "framework": a.framework, "n_elems": a.n, "threads": a.threads,
      "warm_cache": a.warm_cache, "first_call_s": first_call_s, "second_call_s": second_call_s, **s,
      "ms_median": s["median_s"] * 1e3, "gelem_per_s": a.n / s["median_s"] / 1e9,
      "eff_gbps_median": 8 * a.n / s["median_s"] / 1e9, "eff_gbps_best": 8 * a.n / s["min_s"] / 1e9,
      "max_abs_err_vs_numpy": err, "times_s": ts, **extra})
