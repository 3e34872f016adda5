"""Generate PyTorch reference fixtures for ember's 1-, 2- and 3-D pooling layers (PI-3).

Run from the repository root with a separate torch environment (torch is never an ember
dependency; ember's tests read the outputs with numpy and safetensors):

    /tmp/tv/bin/python tools/make_pool_fixtures.py

Outputs tests/fixtures/pool.safetensors (tensors) and tests/fixtures/pool.json (one record per
case), read by tests/test_nn_pool3d.py. A case is a module (`torch.nn.<cls>(**kwargs)`, called with
its tensor inputs positionally) or a functional (`torch.nn.functional.<fn>`, every argument by
keyword, so ember's argument names are checked too), in float32 and float64.

Inputs are drawn with numpy from a seed derived from the case's base name (float32 and float64
share the values). Some are non-contiguous views of the stored C-contiguous base (`views`: {"perm":
the permutation applied} or {"step": every step-th element of the last dim}); some hold ties, inf,
-inf and NaN (for the max pools that reduce_window serves, at most one NaN per window: there ember
sends a window's gradient to its first NaN, PyTorch to its last; the indexed forms, dilated windows
and adaptive pools follow PyTorch's rule exactly and get several). MaxUnpool inputs are the values
and indices of torch's own max pool. Recorded: outputs (integer indices too), a fixed cotangent per
float output and the gradients of sum(out_i * gout_i) w.r.t. the float inputs.

Tensor keys: {case}.in.{arg}, {case}.out.{i}, {case}.gout.{i}, {case}.grad.in.{arg}.
"""
from __future__ import annotations

import json
import os
import warnings
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
BASE_SEED = 20250611
TDT = {"float32": torch.float32, "float64": torch.float64}
BOTH = ("float32", "float64")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)  # max_unpool is untagged; its indices are unique here
warnings.filterwarnings("ignore")


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(BASE_SEED + zlib.crc32(name.encode()))


def _c(a) -> np.ndarray:
    return np.array(a, order="C", copy=True)


def to_np(t: torch.Tensor) -> np.ndarray:
    return _c(t.detach().numpy())


class View:
    """A non-contiguous input: `base` (stored) permuted by `perm`, or every `step`-th element of its last dim."""

    def __init__(self, base: np.ndarray, perm=None, step=None):
        self.base, self.perm, self.step = base, perm, step

    def spec(self) -> dict:
        return {"perm": list(self.perm)} if self.perm is not None else {"step": self.step}

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        return t.permute(self.perm) if self.perm is not None else t[..., ::self.step]


# ====================================================================== input generators
def X(*shape, positive=False):
    def gen(rng):
        x = rng.standard_normal(shape)
        return {"input": np.abs(x) + 0.1 if positive else x}
    return gen


def Xperm(shape, perm):
    """A non-contiguous input of `shape`: a permuted view of a C-contiguous base."""
    inv = np.argsort(perm)
    base_shape = tuple(shape[i] for i in inv)
    return lambda rng: {"input": View(rng.standard_normal(base_shape), perm=tuple(perm))}


def Xstep(shape, step):
    """A non-contiguous input of `shape`: every step-th element of the last dim of a wider base."""
    base_shape = tuple(shape[:-1]) + (shape[-1] * step,)
    return lambda rng: {"input": View(rng.standard_normal(base_shape), step=step)}


def Xties(*shape):
    """Small integers as floats: many equal values in a window (the tie-breaking rule)."""
    return lambda rng: {"input": rng.integers(0, 3, shape).astype(np.float64)}


def Xspecial(*shape):
    """Normal values with +inf, -inf and one NaN at fixed positions."""
    def gen(rng):
        x = rng.standard_normal(shape)
        flat = x.reshape(-1)
        n = flat.size
        flat[1] = np.inf
        flat[n // 3] = -np.inf
        flat[(2 * n) // 3] = np.nan
        return {"input": x}
    return gen


def Xmaxspecial(*shape):
    """Ties, a whole -inf run along the last dim, +inf and several NaN (neighbours: one window holds
    two, where the last one wins)."""
    def gen(rng):
        x = rng.integers(0, 3, shape).astype(np.float64)
        flat = x.reshape(-1)
        last = shape[-1]
        flat[:last] = -np.inf
        flat[last + 1] = np.inf
        mid = flat.size // 2
        flat[mid] = flat[mid + 1] = np.nan
        flat[-1] = np.nan
        return {"input": x}
    return gen


def unpool_inputs(nd, shape, k, s=None, p=0, unbatched=False):
    """MaxUnpool inputs: the values and indices of torch's max_pool{nd}d on a random input."""
    def gen(rng):
        x = torch.tensor(rng.standard_normal(shape))
        v, i = getattr(F, f"max_pool{nd}d")(x, k, s, p, return_indices=True)
        if unbatched:
            v, i = v[0], i[0]
        return {"input": v.numpy(), "indices": i.numpy().astype(np.int64)}
    return gen


# ====================================================================== cases
CASES = []


def M(base, cls, kwargs, gen, fkw=None):
    CASES.append((base, "module", cls, kwargs, gen, fkw or {}))


def Fn(base, fn, kwargs, gen):
    CASES.append((base, "fn", fn, kwargs, gen, {}))


# max pooling, 1-D
M("mp1d", "MaxPool1d", dict(kernel_size=3), X(2, 3, 10))
M("mp1d_s2p1_ceil", "MaxPool1d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), X(2, 2, 8))
M("mp1d_dilation", "MaxPool1d", dict(kernel_size=2, stride=1, dilation=3), X(1, 2, 9))
M("mp1d_dilation_ceil_special", "MaxPool1d", dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True),
  Xmaxspecial(2, 2, 9))
M("mp1d_unbatched", "MaxPool1d", dict(kernel_size=2), X(3, 7))
M("mp1d_special", "MaxPool1d", dict(kernel_size=2), Xspecial(2, 2, 8))
M("mp1d_strided_view", "MaxPool1d", dict(kernel_size=3, stride=2), Xstep((2, 3, 9), 2))
M("mp1d_transposed", "MaxPool1d", dict(kernel_size=2, stride=1), Xperm((2, 3, 6), (0, 2, 1)))
M("mp1d_indices_ties", "MaxPool1d", dict(kernel_size=3, stride=1, padding=1, return_indices=True), Xties(2, 2, 9))
M("mp1d_indices_special", "MaxPool1d", dict(kernel_size=3, stride=2, return_indices=True), Xmaxspecial(2, 2, 9))
M("mp1d_indices_dilation_unbatched", "MaxPool1d", dict(kernel_size=2, dilation=2, return_indices=True), X(2, 9))
Fn("f_max_pool1d", "max_pool1d", dict(kernel_size=2, stride=1, padding=1, return_indices=True), X(1, 2, 5))
# max pooling, 2-D: the dilated form (a scan over the window's taps) with ties and NaN
M("mp2d_dilation_ties", "MaxPool2d", dict(kernel_size=2, stride=1, dilation=2), Xties(2, 2, 5, 6))
M("mp2d_dilation_special", "MaxPool2d", dict(kernel_size=2, stride=2, dilation=(1, 2), ceil_mode=True),
  Xmaxspecial(1, 2, 5, 7))
# max pooling, 3-D
M("mp3d", "MaxPool3d", dict(kernel_size=2), X(2, 2, 4, 6, 6))
M("mp3d_s2p1_ceil", "MaxPool3d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), X(1, 2, 5, 6, 7))
M("mp3d_rect_stride", "MaxPool3d", dict(kernel_size=(1, 2, 3), stride=(1, 2, 1)), X(1, 2, 3, 5, 6))
M("mp3d_size1", "MaxPool3d", dict(kernel_size=(1, 2, 2), padding=(0, 1, 0)), X(2, 1, 1, 4, 4))
M("mp3d_dilation", "MaxPool3d", dict(kernel_size=2, stride=1, dilation=(1, 2, 2)), X(1, 1, 4, 5, 5))
M("mp3d_unbatched", "MaxPool3d", dict(kernel_size=2, stride=(2, 1, 2)), X(2, 4, 4, 4))
M("mp3d_special", "MaxPool3d", dict(kernel_size=2), Xspecial(1, 2, 4, 4, 4))
M("mp3d_transposed", "MaxPool3d", dict(kernel_size=2), Xperm((1, 2, 4, 4, 6), (0, 1, 4, 2, 3)))
M("mp3d_indices", "MaxPool3d", dict(kernel_size=(2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0),
                                    return_indices=True), X(2, 2, 4, 5, 6))
M("mp3d_indices_special_ceil", "MaxPool3d", dict(kernel_size=2, stride=2, ceil_mode=True, return_indices=True),
  Xmaxspecial(1, 2, 3, 5, 5))
M("mp3d_indices_ties_dilation", "MaxPool3d", dict(kernel_size=2, stride=1, dilation=2, return_indices=True),
  Xties(1, 2, 4, 4, 5))
M("mp3d_indices_unbatched", "MaxPool3d", dict(kernel_size=2, return_indices=True), X(2, 2, 4, 4))
Fn("f_max_pool3d", "max_pool3d", dict(kernel_size=(2, 2, 1), stride=1), Xstep((1, 2, 3, 3, 4), 3))
Fn("f_max_pool3d_with_indices", "max_pool3d", dict(kernel_size=3, stride=2, padding=1, return_indices=True),
   X(1, 1, 5, 4, 5))
# average pooling
M("ap1d", "AvgPool1d", dict(kernel_size=3), X(2, 3, 10))
M("ap1d_s2p1", "AvgPool1d", dict(kernel_size=3, stride=2, padding=1), X(2, 2, 9))
M("ap1d_nocount", "AvgPool1d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), X(2, 2, 9))
M("ap1d_ceil", "AvgPool1d", dict(kernel_size=4, stride=3, padding=2, ceil_mode=True), X(1, 2, 10))
M("ap1d_ceil_nocount", "AvgPool1d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                         count_include_pad=False), X(1, 2, 8))
M("ap1d_unbatched", "AvgPool1d", dict(kernel_size=2), X(3, 7))
M("ap1d_special", "AvgPool1d", dict(kernel_size=2, stride=1), Xspecial(1, 2, 8))
M("ap1d_transposed", "AvgPool1d", dict(kernel_size=2), Xperm((2, 4, 6), (0, 2, 1)))
Fn("f_avg_pool1d", "avg_pool1d", dict(kernel_size=3, stride=1, padding=1, count_include_pad=False), X(2, 2, 6))
M("ap3d", "AvgPool3d", dict(kernel_size=2), X(2, 2, 4, 6, 6))
M("ap3d_s2p1", "AvgPool3d", dict(kernel_size=3, stride=2, padding=1), X(1, 2, 5, 6, 7))
M("ap3d_ceil_nocount", "AvgPool3d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                         count_include_pad=False), X(1, 2, 6, 6, 5))
M("ap3d_ceil_count", "AvgPool3d", dict(kernel_size=(2, 3, 3), stride=2, padding=(1, 1, 0), ceil_mode=True),
  X(1, 1, 4, 6, 5))
M("ap3d_divisor", "AvgPool3d", dict(kernel_size=2, divisor_override=3), X(1, 2, 4, 4, 6))
M("ap3d_rect_size1", "AvgPool3d", dict(kernel_size=(1, 2, 3), stride=(1, 1, 2)), X(2, 1, 1, 4, 7))
M("ap3d_unbatched", "AvgPool3d", dict(kernel_size=2, stride=1), X(2, 3, 3, 3))
M("ap3d_strided_view", "AvgPool3d", dict(kernel_size=2), Xstep((1, 2, 4, 4, 4), 2))
Fn("f_avg_pool3d", "avg_pool3d", dict(kernel_size=2, stride=(1, 2, 2), padding=1, divisor_override=5),
   X(1, 2, 3, 4, 4))
# adaptive pooling
M("aap1d", "AdaptiveAvgPool1d", dict(output_size=3), X(2, 3, 7))
M("aap1d_upsample", "AdaptiveAvgPool1d", dict(output_size=5), X(1, 2, 3))
M("aap1d_unbatched", "AdaptiveAvgPool1d", dict(output_size=4), X(3, 9))
M("aap3d", "AdaptiveAvgPool3d", dict(output_size=(2, 3, 4)), X(2, 2, 5, 7, 6))
M("aap3d_none_global", "AdaptiveAvgPool3d", dict(output_size=(None, 2, 1)), X(1, 2, 3, 5, 4))
M("aap3d_unbatched", "AdaptiveAvgPool3d", dict(output_size=2), X(2, 5, 4, 3))
M("aap3d_transposed", "AdaptiveAvgPool3d", dict(output_size=(3, 2, 2)), Xperm((1, 2, 5, 4, 3), (0, 1, 3, 4, 2)))
Fn("f_adaptive_avg_pool3d", "adaptive_avg_pool3d", dict(output_size=(1, 3, 2)), X(1, 2, 4, 7, 5))
M("amp1d", "AdaptiveMaxPool1d", dict(output_size=3), X(2, 3, 7))
M("amp1d_indices_ties", "AdaptiveMaxPool1d", dict(output_size=4, return_indices=True), Xties(2, 2, 9))
M("amp1d_indices_special", "AdaptiveMaxPool1d", dict(output_size=3, return_indices=True), Xmaxspecial(2, 2, 8))
M("amp1d_upsample_unbatched", "AdaptiveMaxPool1d", dict(output_size=5, return_indices=True), X(2, 3))
M("amp3d", "AdaptiveMaxPool3d", dict(output_size=(2, 3, 2)), X(2, 2, 5, 7, 4))
M("amp3d_indices_special", "AdaptiveMaxPool3d", dict(output_size=2, return_indices=True), Xmaxspecial(1, 2, 4, 4, 4))
M("amp3d_none_unbatched", "AdaptiveMaxPool3d", dict(output_size=(None, 2, 3), return_indices=True), X(2, 3, 5, 4))
M("amp3d_strided_view", "AdaptiveMaxPool3d", dict(output_size=(1, 2, 2), return_indices=True),
  Xstep((1, 2, 3, 4, 5), 2))
Fn("f_adaptive_max_pool1d", "adaptive_max_pool1d", dict(output_size=3, return_indices=True), X(1, 3, 8))
Fn("f_adaptive_max_pool3d", "adaptive_max_pool3d", dict(output_size=(2, 1, 3), return_indices=True),
   X(1, 2, 3, 4, 5))
# unpooling
M("unpool1d", "MaxUnpool1d", dict(kernel_size=2), unpool_inputs(1, (2, 3, 8), 2))
M("unpool1d_s2p1_output_size", "MaxUnpool1d", dict(kernel_size=3, stride=2, padding=1),
  unpool_inputs(1, (1, 2, 9), 3, 2, 1), dict(output_size=[10]))
M("unpool1d_unbatched", "MaxUnpool1d", dict(kernel_size=3), unpool_inputs(1, (1, 2, 9), 3, unbatched=True))
M("unpool3d", "MaxUnpool3d", dict(kernel_size=2), unpool_inputs(3, (2, 2, 4, 4, 6), 2))
M("unpool3d_s_p_output_size", "MaxUnpool3d", dict(kernel_size=(2, 3, 3), stride=2, padding=(0, 1, 1)),
  unpool_inputs(3, (1, 2, 4, 5, 5), (2, 3, 3), 2, (0, 1, 1)), dict(output_size=[1, 2, 5, 6, 5]))
M("unpool3d_unbatched", "MaxUnpool3d", dict(kernel_size=2), unpool_inputs(3, (1, 2, 2, 4, 4), 2, unbatched=True))
Fn("f_max_unpool1d", "max_unpool1d", dict(kernel_size=2, output_size=(7,)), unpool_inputs(1, (2, 2, 7), 2))
Fn("f_max_unpool3d", "max_unpool3d", dict(kernel_size=2, stride=(1, 2, 2)),
   unpool_inputs(3, (1, 1, 3, 4, 4), 2, (1, 2, 2)))
# power-average pooling
M("lp1d", "LPPool1d", dict(norm_type=2, kernel_size=3, stride=2), X(2, 3, 9))
M("lp1d_p3_ceil", "LPPool1d", dict(norm_type=3, kernel_size=3, stride=2, ceil_mode=True), X(1, 2, 8, positive=True))
M("lp1d_unbatched", "LPPool1d", dict(norm_type=1.5, kernel_size=2), X(3, 6, positive=True))
M("lp2d", "LPPool2d", dict(norm_type=2, kernel_size=2), X(2, 2, 4, 6))
M("lp2d_rect", "LPPool2d", dict(norm_type=1.5, kernel_size=(2, 3), stride=(1, 2)), X(1, 2, 4, 7, positive=True))
M("lp2d_transposed", "LPPool2d", dict(norm_type=2, kernel_size=2, stride=1), Xperm((1, 2, 4, 5), (0, 1, 3, 2)))
M("lp3d", "LPPool3d", dict(norm_type=2, kernel_size=2, stride=(1, 2, 2)), X(1, 2, 3, 4, 4))
Fn("f_lp_pool1d", "lp_pool1d", dict(norm_type=4, kernel_size=2, stride=1), X(1, 2, 5))
Fn("f_lp_pool2d", "lp_pool2d", dict(norm_type=2, kernel_size=3, stride=2, ceil_mode=True), X(1, 2, 6, 6))


# ====================================================================== running a case
def run_case(base, kind, target, kwargs, gen, fkw, dname, tensors) -> dict:
    dtype = TDT[dname]
    name = f"{base}_{dname}"
    rng = rng_for(base)
    raw = gen(rng)
    call, leaves, views, grads_in = {}, {}, {}, []
    for k, a in raw.items():
        base_arr = a.base if isinstance(a, View) else a
        if base_arr.dtype.kind in "iu":
            t = torch.tensor(base_arr, dtype=torch.int64)
        else:
            t = torch.tensor(base_arr, dtype=dtype).requires_grad_(True)
            grads_in.append(k)
        leaves[k] = t
        tensors[f"{name}.in.{k}"] = to_np(t)
        if isinstance(a, View):
            views[k] = a.spec()
            call[k] = a.apply(t)
            assert not call[k].is_contiguous()
        else:
            call[k] = t
    static = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if kind == "module":
        m = getattr(nn, target)(**static)
        out = m(*call.values(), **{k: tuple(v) for k, v in fkw.items()})
    else:
        out = getattr(F, target)(**call, **static)
    outs = list(out) if isinstance(out, tuple) else [out]
    loss, out_kinds = 0, []
    for i, o in enumerate(outs):
        tensors[f"{name}.out.{i}"] = to_np(o)
        if o.is_floating_point():
            g = torch.tensor(rng.standard_normal(tuple(o.shape)), dtype=o.dtype)
            tensors[f"{name}.gout.{i}"] = to_np(g)
            loss = loss + (o * g).sum()
            out_kinds.append("float")
        else:
            out_kinds.append("int")
    loss.backward()
    for k in grads_in:
        tensors[f"{name}.grad.in.{k}"] = to_np(leaves[k].grad)
    return {"name": name, "base": base, "kind": kind, "target": target, "kwargs": kwargs, "forward_kwargs": fkw,
            "dtype": dname, "inputs": list(raw), "views": views, "outputs": out_kinds, "grads_in": grads_in}


def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    records = []
    for base, kind, target, kwargs, gen, fkw in CASES:
        for dname in BOTH:
            records.append(run_case(base, kind, target, kwargs, gen, fkw, dname, tensors))
    names = [r["name"] for r in records]
    assert len(names) == len(set(names)), "duplicate case names"
    meta = {"torch_version": torch.__version__, "generator": "tools/make_pool_fixtures.py", "cases": records}
    tensors = {k: _c(v) for k, v in tensors.items()}
    path = os.path.join(OUT_DIR, "pool.safetensors")
    save_file(tensors, path, metadata={"torch_version": torch.__version__, "generator": "tools/make_pool_fixtures.py"})
    os.chmod(path, 0o644)
    with open(os.path.join(OUT_DIR, "pool.json"), "w") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"{len(records)} cases, {len(tensors)} tensors, {os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
