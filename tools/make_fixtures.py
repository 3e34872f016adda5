"""Generate ember's PyTorch reference fixtures under tests/fixtures/.

Run from the repository root with a *separate* virtualenv that has torch (torch is never an
ember dependency, not even a test one):

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch==2.13.0 numpy safetensors
    /work/torchenv/bin/python tools/make_fixtures.py

The outputs are committed to the repository and read by ember's tests with numpy and
``safetensors.numpy`` only (no torch at test time):

    tests/fixtures/promotion.json            torch's dtype promotion for ember's 10 dtypes
    tests/fixtures/functional.safetensors    torch.nn.functional forward outputs and gradients
    tests/fixtures/functional.json           one record per case (function, kwargs, tensors)
    tests/fixtures/ops.safetensors           torch.* results where torch's semantics are the
    tests/fixtures/ops.json                  reference and numpy may differ

The script is deterministic and idempotent: every input is drawn with numpy from a seed derived
from the case's name (so adding a case never changes another one), torch runs single-threaded
with deterministic algorithms, and the files are rewritten from scratch each run. It writes
nothing outside tests/fixtures/.

Tensor key scheme (both .safetensors files):
    {case}.{arg}        an input, named as torch's parameter (input, weight, target, query, ...)
    {case}.out          the forward result
    {case}.gout         the cotangent fed to out.backward() (functional only)
    {case}.grad.{arg}   d<out, gout>/d{arg} for each arg in the case's "grads" list
bfloat16 tensors (ops only) are stored as their raw uint16 bit patterns; the case's "bf16_bits"
lists those keys (view them with ``arr.view(ml_dtypes.bfloat16)``).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
BASE_SEED = 20240611

torch.manual_seed(0)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_default_dtype(torch.float32)
warnings.filterwarnings("ignore", message="Using padding='same'")
warnings.filterwarnings("ignore", message=r"var\(\): degrees of freedom")  # var_unbiased_n1, on purpose

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
TORCH_TO_NAME = {v: k for k, v in DTYPES.items()}
SHORT = {"float32": "f32", "float64": "f64"}
NP_FLOAT = {"float32": np.float32, "float64": np.float64}


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(BASE_SEED + zlib.crc32(name.encode()))


def dname(t: torch.dtype) -> str:
    return TORCH_TO_NAME[t]


def _c(a) -> np.ndarray:
    """A C-contiguous copy that keeps 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    return np.array(a, order="C", copy=True)


def to_np(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return _c(t.view(torch.int16).numpy().view(np.uint16))
    return _c(t.numpy())


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False)
        f.write("\n")


# ====================================================================== 1. promotion
def make_promotion() -> dict:
    names = list(DTYPES)

    def vec(n):
        return torch.ones(3, dtype=DTYPES[n])

    pairs = {}
    for a in names:
        for b in names:
            pairs[f"{a},{b}"] = dname(torch.result_type(vec(a), vec(b)))
    scalar = {}
    for a in names:
        for kind, s in (("bool", True), ("int", 2), ("float", 2.5)):
            scalar[f"{a},{kind}"] = dname(torch.result_type(vec(a), s))
    true_div = {}
    unary = {}
    for a in names:
        t = vec(a)
        true_div[a] = dname((t / t).dtype)
        unary[a] = {}
        for op in ("sin", "exp"):
            try:
                unary[a][op] = dname(getattr(torch, op)(t).dtype)
            except Exception as e:  # noqa: BLE001 - recorded, not hidden
                unary[a][op] = {"error": f"{type(e).__name__}: {e}"}
    return {
        "torch_version": torch.__version__,
        "dtypes": names,
        "note": ("pairs[a,b] = torch.result_type(1-d tensor a, 1-d tensor b); scalar[a,kind] = "
                 "torch.result_type(1-d tensor a, python True/2/2.5); true_div[a] = dtype of t/t; "
                 "unary_float[a][op] = dtype of torch.<op>(t) or {'error': msg}"),
        "pairs": pairs,
        "scalar": scalar,
        "true_div": true_div,
        "unary_float": unary,
    }


# ====================================================================== 2. functional
def N(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def U(rng, lo, hi, *shape):
    return rng.uniform(lo, hi, shape)


BIG = np.array([-1e4, -30.0, -10.0, -5.0, -1.0, -1e-3, -0.0, 0.0, 1e-3, 1.0, 5.0, 10.0, 30.0, 1e4])


def _softmax_special(rng):
    x = np.array([
        [1e4, -1e4, 0.0, 30.0, -30.0],
        [30.0, 30.0, 30.0, 30.0, 30.0],
        [-1e4, -1e4, -1e4, -1e4, -1e4],
        [1e4, 1e4, -1e4, 0.0, -0.0],
        [-30.0, 30.0, -30.0, 30.0, 0.0],
        [0.0, -0.0, 0.0, -0.0, 0.0],
    ])
    return {"input": x}


def _ce_special(rng):
    x = np.array([
        [1e4, -1e4, 0.0, 30.0, -30.0],
        [30.0, 30.0, 30.0, 30.0, 30.0],
        [-1e4, -1e4, -1e4, -1e4, -1e4],
        [1e4, 1e4, -1e4, 0.0, -0.0],
        [-30.0, 30.0, -30.0, 30.0, 0.0],
        [-1e4, 1e4, 0.0, 0.0, 0.0],
    ])
    return x


def _pool_special(rng):
    # ties, exact zeros, -0.0 and all-negative borders (padding must act as -inf, not 0)
    vals = np.array([-2.0, -1.0, -0.0, 0.0, 1.0])
    x = vals[rng.integers(0, len(vals), (2, 2, 6, 6))]
    x[0, 0] = -1.0 - (np.arange(36).reshape(6, 6) % 2)  # all negative, many ties
    x[0, 1] = 0.0
    x[0, 1, ::2, ::2] = -0.0
    return {"input": x}


def _sdpa(L, S, E=8, mask=None, scale=1.0):
    def gen(rng):
        d = {"query": N(rng, 2, 3, L, E, scale=scale), "key": N(rng, 2, 3, S, E, scale=scale),
             "value": N(rng, 2, 3, S, E)}
        if mask == "bool":
            m = rng.random((2, 3, L, S)) < 0.7
            m[..., 0] = True  # no fully-masked row
            d["attn_mask"] = m
        elif mask == "float":
            m = N(rng, L, S)
            m[rng.random((L, S)) < 0.2] = -np.inf
            m[:, 0] = 0.0
            d["attn_mask"] = m
        return d
    return gen


def _layer_norm(shape, affine):
    def gen(rng):
        d = {"input": N(rng, 2, 3, 4, 5) * 2 + 0.5}
        if affine:
            d["weight"] = N(rng, *shape) * 0.5 + 1
            d["bias"] = N(rng, *shape)
        return d
    return gen


def _layer_norm_special(rng):
    x = N(rng, 4, 5)
    x[0] = 3.0                      # constant row: var = 0, eps matters
    x[1] = 1e4 + N(rng, 5) * 1e-2   # large offset, small spread (cancellation)
    x[2] = [-30.0, 30.0, -0.0, 0.0, 1.0]
    return {"input": x, "weight": N(rng, 5) * 0.5 + 1, "bias": N(rng, 5)}


def _conv(cin=4, cout=6, k=(3, 3), groups=1, bias=True, hw=(7, 7)):
    def gen(rng):
        d = {"input": N(rng, 2, cin, *hw), "weight": N(rng, cout, cin // groups, *k) * 0.3}
        if bias:
            d["bias"] = N(rng, cout)
        return d
    return gen


def _ce(shape, C, soft=False, ignore=False, weight=False):
    def gen(rng):
        n = shape[0]
        rest = shape[1:]
        d = {"input": N(rng, n, C, *rest) * 2}
        if soft:
            p = rng.random((n, C, *rest))
            d["target"] = p / p.sum(axis=1, keepdims=True)
        else:
            t = rng.integers(0, C, (n, *rest)).astype(np.int64)
            if ignore:
                t.reshape(-1)[::3] = -100
            d["target"] = t
        if weight:
            d["weight"] = U(rng, 0.5, 2.0, C)
        return d
    return gen


def _ce_special_gen(soft):
    def gen(rng):
        x = _ce_special(rng)
        if soft:
            p = rng.random(x.shape)
            p[:, 1] = 0.0
            return {"input": x, "target": p / p.sum(axis=1, keepdims=True)}
        return {"input": x, "target": np.array([0, 2, 4, 1, 3, 0], dtype=np.int64)}
    return gen


def _nll(ignore=False):
    def gen(rng):
        x = N(rng, 6, 5)
        lp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        t = rng.integers(0, 5, 6).astype(np.int64)
        if ignore:
            t[[1, 4]] = -100
        return {"input": lp, "target": t}
    return gen


def _pair(shape, special=False):
    def gen(rng):
        a, b = N(rng, *shape), N(rng, *shape)
        if special:
            b.reshape(-1)[::3] = a.reshape(-1)[::3]  # exact ties: |a-b| = 0
        return {"input": a, "target": b}
    return gen


def _bce(pos_weight=False, special=False):
    def gen(rng):
        if special:
            x = BIG.reshape(2, 7)
        else:
            x = N(rng, 3, 4) * 2
        d = {"input": x, "target": rng.random(x.shape)}
        if special:
            d["target"][0, :3] = [0.0, 1.0, 0.0]
        if pos_weight:
            d["pos_weight"] = U(rng, 0.5, 3.0, x.shape[-1])
        return d
    return gen


def _unary(shape=(3, 4, 5)):
    return lambda rng: {"input": N(rng, *shape) * 2}


def _unary_special(rng):
    return {"input": BIG.copy()}


def _relu_special(rng):
    return {"input": np.array([-1e4, -30.0, -1.0, -1e-30, -0.0, 0.0, 0.0, 1e-30, 1.0, 30.0, 1e4])}


# (base name, function, input generator, kwargs, grads or None for "all floating inputs")
FUNCTIONAL = [
    ("relu", "relu", _unary(), {}, None),
    ("relu_special", "relu", _relu_special, {}, None),
    ("gelu", "gelu", _unary(), {"approximate": "none"}, None),
    ("gelu_tanh", "gelu", _unary(), {"approximate": "tanh"}, None),
    ("gelu_special", "gelu", _unary_special, {"approximate": "none"}, None),
    ("gelu_tanh_special", "gelu", _unary_special, {"approximate": "tanh"}, None),
    ("silu", "silu", _unary(), {}, None),
    ("silu_special", "silu", _unary_special, {}, None),
    ("sigmoid", "sigmoid", _unary(), {}, None),
    ("sigmoid_special", "sigmoid", _unary_special, {}, None),
    ("tanh", "tanh", _unary(), {}, None),
    ("tanh_special", "tanh", _unary_special, {}, None),
    ("softmax_dm1", "softmax", _unary(), {"dim": -1}, None),
    ("softmax_d0", "softmax", _unary(), {"dim": 0}, None),
    ("softmax_special", "softmax", _softmax_special, {"dim": -1}, None),
    ("log_softmax_dm1", "log_softmax", _unary(), {"dim": -1}, None),
    ("log_softmax_d1", "log_softmax", _unary(), {"dim": 1}, None),
    ("log_softmax_special", "log_softmax", _softmax_special, {"dim": -1}, None),
    ("layer_norm_last", "layer_norm", _layer_norm((5,), False), {"normalized_shape": [5], "eps": 1e-5}, None),
    ("layer_norm_last_affine", "layer_norm", _layer_norm((5,), True), {"normalized_shape": [5], "eps": 1e-5}, None),
    ("layer_norm_last2", "layer_norm", _layer_norm((4, 5), False), {"normalized_shape": [4, 5], "eps": 1e-5}, None),
    ("layer_norm_last2_affine", "layer_norm", _layer_norm((4, 5), True), {"normalized_shape": [4, 5], "eps": 1e-5}, None),
    ("layer_norm_special", "layer_norm", _layer_norm_special, {"normalized_shape": [5], "eps": 1e-5}, None),
    ("dropout_p0_train", "dropout", _unary(), {"p": 0.0, "training": True}, None),
    ("dropout_eval", "dropout", _unary(), {"p": 0.5, "training": False}, None),
    ("conv2d_s1_p0", "conv2d", _conv(), {"stride": 1, "padding": 0}, None),
    ("conv2d_s1_p0_nobias", "conv2d", _conv(bias=False), {"stride": 1, "padding": 0}, None),
    ("conv2d_s2_p1", "conv2d", _conv(), {"stride": 2, "padding": 1}, None),
    ("conv2d_s2_p1_nobias", "conv2d", _conv(bias=False), {"stride": 2, "padding": 1}, None),
    ("conv2d_same", "conv2d", _conv(), {"stride": 1, "padding": "same"}, None),
    ("conv2d_same_even_kernel", "conv2d", _conv(k=(2, 4)), {"stride": 1, "padding": "same"}, None),
    ("conv2d_dil2", "conv2d", _conv(), {"stride": 1, "padding": 0, "dilation": 2}, None),
    ("conv2d_dil2_same", "conv2d", _conv(), {"stride": 1, "padding": "same", "dilation": 2}, None),
    ("conv2d_groups2", "conv2d", _conv(groups=2), {"stride": 1, "padding": 1, "groups": 2}, None),
    ("conv2d_groups2_nobias", "conv2d", _conv(groups=2, bias=False), {"stride": 2, "padding": 0, "groups": 2}, None),
    ("conv2d_rect_s21_p10", "conv2d", _conv(k=(3, 2), hw=(8, 6)), {"stride": [2, 1], "padding": [1, 0]}, None),
    ("max_pool2d_k2", "max_pool2d", _unary((2, 3, 7, 7)), {"kernel_size": 2, "stride": 2, "padding": 0, "ceil_mode": False}, None),
    ("max_pool2d_k3_s2_p1", "max_pool2d", _unary((2, 3, 7, 7)), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": False}, None),
    ("max_pool2d_k2_special", "max_pool2d", _pool_special, {"kernel_size": 2, "stride": 2, "padding": 0, "ceil_mode": False}, None),
    ("max_pool2d_k3_s2_p1_special", "max_pool2d", _pool_special, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": False}, None),
    ("avg_pool2d_k2", "avg_pool2d", _unary((2, 3, 7, 7)), {"kernel_size": 2, "stride": 2, "padding": 0}, None),
    ("avg_pool2d_k3_s2_p1_incl", "avg_pool2d", _unary((2, 3, 7, 7)), {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": True}, None),
    ("avg_pool2d_k3_s2_p1_excl", "avg_pool2d", _unary((2, 3, 7, 7)), {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, None),
    ("avg_pool2d_k2_s2_p1_excl", "avg_pool2d", _unary((2, 3, 6, 6)), {"kernel_size": 2, "stride": 2, "padding": 1, "count_include_pad": False}, None),
    ("cross_entropy_mean", "cross_entropy", _ce((6,), 5), {"reduction": "mean"}, None),
    ("cross_entropy_sum", "cross_entropy", _ce((6,), 5), {"reduction": "sum"}, None),
    ("cross_entropy_none", "cross_entropy", _ce((6,), 5), {"reduction": "none"}, None),
    ("cross_entropy_ignore", "cross_entropy", _ce((6,), 5, ignore=True), {"reduction": "mean", "ignore_index": -100}, None),
    ("cross_entropy_ignore_none", "cross_entropy", _ce((6,), 5, ignore=True), {"reduction": "none", "ignore_index": -100}, None),
    ("cross_entropy_smooth", "cross_entropy", _ce((6,), 5), {"reduction": "mean", "label_smoothing": 0.1}, None),
    ("cross_entropy_smooth_ignore", "cross_entropy", _ce((6,), 5, ignore=True), {"reduction": "mean", "label_smoothing": 0.1, "ignore_index": -100}, None),
    ("cross_entropy_prob", "cross_entropy", _ce((6,), 5, soft=True), {"reduction": "mean"}, None),
    ("cross_entropy_prob_smooth", "cross_entropy", _ce((6,), 5, soft=True), {"reduction": "mean", "label_smoothing": 0.1}, None),
    ("cross_entropy_weight", "cross_entropy", _ce((6,), 5, weight=True), {"reduction": "mean"}, ["input"]),
    ("cross_entropy_ncd_mean", "cross_entropy", _ce((3, 4), 5), {"reduction": "mean"}, None),
    ("cross_entropy_ncd_none", "cross_entropy", _ce((3, 4), 5), {"reduction": "none"}, None),
    ("cross_entropy_ncd_ignore", "cross_entropy", _ce((3, 4), 5, ignore=True), {"reduction": "mean", "ignore_index": -100}, None),
    ("cross_entropy_ncd_prob", "cross_entropy", _ce((3, 4), 5, soft=True), {"reduction": "mean"}, None),
    ("cross_entropy_special", "cross_entropy", _ce_special_gen(False), {"reduction": "mean"}, None),
    ("cross_entropy_special_smooth", "cross_entropy", _ce_special_gen(False), {"reduction": "none", "label_smoothing": 0.1}, None),
    ("cross_entropy_special_prob", "cross_entropy", _ce_special_gen(True), {"reduction": "none"}, None),
    ("mse_loss_mean", "mse_loss", _pair((3, 4)), {"reduction": "mean"}, None),
    ("mse_loss_sum", "mse_loss", _pair((3, 4)), {"reduction": "sum"}, None),
    ("mse_loss_none", "mse_loss", _pair((3, 4)), {"reduction": "none"}, None),
    ("l1_loss_mean", "l1_loss", _pair((3, 4)), {"reduction": "mean"}, None),
    ("l1_loss_sum", "l1_loss", _pair((3, 4)), {"reduction": "sum"}, None),
    ("l1_loss_none", "l1_loss", _pair((3, 4)), {"reduction": "none"}, None),
    ("l1_loss_special", "l1_loss", _pair((3, 4), special=True), {"reduction": "none"}, None),
    ("nll_loss_mean", "nll_loss", _nll(), {"reduction": "mean"}, None),
    ("nll_loss_sum", "nll_loss", _nll(), {"reduction": "sum"}, None),
    ("nll_loss_none", "nll_loss", _nll(), {"reduction": "none"}, None),
    ("nll_loss_ignore", "nll_loss", _nll(ignore=True), {"reduction": "mean", "ignore_index": -100}, None),
    ("bce_logits_mean", "binary_cross_entropy_with_logits", _bce(), {"reduction": "mean"}, None),
    ("bce_logits_sum", "binary_cross_entropy_with_logits", _bce(), {"reduction": "sum"}, None),
    ("bce_logits_none", "binary_cross_entropy_with_logits", _bce(), {"reduction": "none"}, None),
    ("bce_logits_pos_weight", "binary_cross_entropy_with_logits", _bce(pos_weight=True), {"reduction": "mean"},
     ["input", "target"]),  # torch: not differentiable w.r.t. pos_weight
    ("bce_logits_special", "binary_cross_entropy_with_logits", _bce(special=True), {"reduction": "none"}, None),
    ("sdpa_square", "scaled_dot_product_attention", _sdpa(5, 5), {}, None),
    ("sdpa_nonsquare", "scaled_dot_product_attention", _sdpa(5, 7), {}, None),
    ("sdpa_causal", "scaled_dot_product_attention", _sdpa(5, 5), {"is_causal": True}, None),
    ("sdpa_bool_mask", "scaled_dot_product_attention", _sdpa(5, 7, mask="bool"), {}, None),
    ("sdpa_float_mask", "scaled_dot_product_attention", _sdpa(5, 7, mask="float"), {}, None),
    ("sdpa_scale", "scaled_dot_product_attention", _sdpa(5, 7), {"scale": 0.5}, None),
    ("sdpa_special", "scaled_dot_product_attention", _sdpa(5, 5, scale=6.0), {"is_causal": True}, None),
    ("linear", "linear", lambda r: {"input": N(r, 4, 6), "weight": N(r, 3, 6), "bias": N(r, 3)}, {}, None),
    ("linear_3d", "linear", lambda r: {"input": N(r, 2, 4, 6), "weight": N(r, 3, 6), "bias": N(r, 3)}, {}, None),
    ("linear_nobias", "linear", lambda r: {"input": N(r, 4, 6), "weight": N(r, 3, 6)}, {}, None),
    ("embedding", "embedding",
     lambda r: {"input": np.array([[1, 3, 3, 9, 0], [2, 3, 8, 1, 1]], dtype=np.int64), "weight": N(r, 10, 4)},
     {}, ["weight"]),
    ("embedding_padding_idx", "embedding",
     lambda r: {"input": np.array([[1, 3, 3, 9, 0], [2, 0, 8, 1, 1]], dtype=np.int64), "weight": N(r, 10, 4)},
     {"padding_idx": 0}, ["weight"]),
]


def make_functional():
    tensors: dict[str, np.ndarray] = {}
    cases = []
    for base, fn_name, gen, kwargs, grads in FUNCTIONAL:
        raw = gen(rng_for(base))
        fn = getattr(F, fn_name)
        for dt in ("float32", "float64"):
            name = f"{base}_{SHORT[dt]}"
            ins: dict[str, torch.Tensor] = {}
            for arg, a in raw.items():
                a = np.asarray(a)
                if a.dtype.kind == "f":
                    a = a.astype(NP_FLOAT[dt])
                elif a.dtype.kind in "iu":
                    a = a.astype(np.int64)
                ins[arg] = torch.from_numpy(_c(a))
            grad_args = grads if grads is not None else [k for k, v in ins.items() if v.is_floating_point()]
            for k in grad_args:
                ins[k].requires_grad_(True)
            out = fn(**ins, **kwargs)
            g = rng_for(base + "/gout").standard_normal(tuple(out.shape)).astype(NP_FLOAT[dt])
            gout = torch.from_numpy(_c(g))
            out.backward(gout)
            for k, v in ins.items():
                tensors[f"{name}.{k}"] = to_np(v)
            tensors[f"{name}.out"] = to_np(out)
            tensors[f"{name}.gout"] = to_np(gout)
            for k in grad_args:
                tensors[f"{name}.grad.{k}"] = to_np(ins[k].grad)
            cases.append({
                "name": name,
                "base": base,
                "function": fn_name,
                "torch": f"torch.nn.functional.{fn_name}",
                "dtype": dt,
                "inputs": list(ins),
                "input_dtypes": {k: dname(v.dtype) for k, v in ins.items()},
                "kwargs": kwargs,
                "grads": list(grad_args),
                "out_shape": list(out.shape),
                "special": "special" in base,
            })
    return tensors, cases


# ====================================================================== 3. ops
def make_ops():
    tensors: dict[str, np.ndarray] = {}
    cases = []

    def add(name, op, inputs: dict, kwargs=None, note=None, fn=None):
        kwargs = kwargs or {}
        ins = {}
        for k, v in inputs.items():
            ins[k] = v if isinstance(v, torch.Tensor) else torch.from_numpy(_c(v))
        f = fn or getattr(torch, op.removeprefix("torch."))
        out = f(**ins, **kwargs)
        bf16 = []
        for k, v in ins.items():
            tensors[f"{name}.{k}"] = to_np(v)
            if v.dtype == torch.bfloat16:
                bf16.append(f"{name}.{k}")
        tensors[f"{name}.out"] = to_np(out)
        if out.dtype == torch.bfloat16:
            bf16.append(f"{name}.out")
        rec = {
            "name": name,
            "op": op,
            "inputs": list(ins),
            "input_dtypes": {k: dname(v.dtype) for k, v in ins.items()},
            "kwargs": kwargs,
            "out_dtype": dname(out.dtype),
            "out_shape": list(out.shape),
            "bf16_bits": bf16,
        }
        if note:
            rec["note"] = note
        cases.append(rec)

    r = rng_for("ops")
    # --- integer floor division / remainder / fmod with negative operands (no zero divisors)
    a = np.array([7, -7, 7, -7, 0, 1, -1, 5, -5, 13, -13, 100, -100, 3, -3, 2**20 + 1], dtype=np.int64)
    b = np.array([2, 2, -2, -2, 3, -3, 3, 5, 5, -4, -4, 7, 7, -1, -1, -3], dtype=np.int64)
    a = np.concatenate([a, r.integers(-50, 50, 16)])
    bb = r.integers(1, 9, 16) * r.choice([-1, 1], 16)
    b = np.concatenate([b, bb])
    for it in ("int32", "int64"):
        npd = np.dtype(it)
        for op in ("floor_divide", "remainder", "fmod"):
            add(f"{op}_{it}", f"torch.{op}", {"input": a.astype(npd), "other": b.astype(npd)})
        add(f"div_floor_{it}", "torch.div", {"input": a.astype(npd), "other": b.astype(npd)},
            {"rounding_mode": "floor"})
        add(f"div_trunc_{it}", "torch.div", {"input": a.astype(npd), "other": b.astype(npd)},
            {"rounding_mode": "trunc"})
        add(f"true_divide_{it}", "torch.true_divide", {"input": a.astype(npd), "other": b.astype(npd)})
        add(f"remainder_scalar_{it}", "torch.remainder", {"input": a.astype(npd)}, {"other": -3})
        add(f"floor_divide_scalar_{it}", "torch.floor_divide", {"input": a.astype(npd)}, {"other": -3})
    # --- float remainder / fmod / floor_divide with negative operands
    fa = np.array([5.5, -5.5, 5.5, -5.5, 0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 1e-3, -1e-3, 7.25, -7.25])
    fb = np.array([2.0, 2.0, -2.0, -2.0, 3.0, 3.0, -3.0, 3.0, 1.5, 1.5, 1.0, 1.0, -0.5, -0.5])
    fa = np.concatenate([fa, r.standard_normal(16) * 10])
    fb = np.concatenate([fb, (r.uniform(0.5, 4.0, 16)) * r.choice([-1, 1], 16)])
    for ft in ("float32", "float64"):
        for op in ("remainder", "fmod", "floor_divide"):
            add(f"{op}_{ft}", f"torch.{op}", {"input": fa.astype(ft), "other": fb.astype(ft)})
    # --- round half to even
    x = np.array([-3.5, -2.5, -1.5, -0.5, -0.0, 0.5, 1.5, 2.5, 3.5, 4.5, 0.49999997, -0.49999997,
                  1.4999999, 2.5000002, 8388607.5, 8388608.5, 1e10, -1e10, np.nan, np.inf, -np.inf],
                 dtype=np.float32)
    add("round_float32", "torch.round", {"input": x})
    add("round_float64", "torch.round", {"input": x.astype(np.float64)})
    xd = np.array([0.25, 0.35, -0.25, 1.05, 2.675, -2.675, 0.15, 12.345], dtype=np.float32)
    add("round_decimals1_float32", "torch.round", {"input": xd}, {"decimals": 1})
    # --- maximum / minimum / fmax / fmin with NaN and signed zeros
    ma = np.array([1.0, np.nan, np.nan, 2.0, -0.0, 0.0, -np.inf, np.inf, 3.0], dtype=np.float32)
    mb = np.array([np.nan, 1.0, np.nan, 1.0, 0.0, -0.0, 1.0, np.nan, 3.0], dtype=np.float32)
    for op in ("maximum", "minimum", "fmax", "fmin"):
        add(f"{op}_float32", f"torch.{op}", {"input": ma, "other": mb})
    # --- sign
    add("sign_float32", "torch.sign",
        {"input": np.array([-2.0, -0.0, 0.0, 3.0, np.nan, np.inf, -np.inf, -1e-40], dtype=np.float32)})
    add("sign_int32", "torch.sign", {"input": np.array([-5, 0, 7], dtype=np.int32)})
    add("signbit_float32", "torch.signbit",
        {"input": np.array([-2.0, -0.0, 0.0, 3.0, np.nan, -np.nan, np.inf, -np.inf], dtype=np.float32)})
    # --- integer pow with non-negative exponents
    pa = np.array([0, 1, -1, 2, -2, 3, -3, 5, 7, -7, 10, 0], dtype=np.int64)
    pb = np.array([0, 5, 3, 10, 9, 4, 5, 3, 2, 3, 9, 0], dtype=np.int64)
    for it in ("int32", "int64"):
        add(f"pow_{it}", "torch.pow", {"input": pa.astype(it), "exponent": pb.astype(it)})
        add(f"pow_scalar3_{it}", "torch.pow", {"input": pa.astype(it)}, {"exponent": 3})
    add("pow_int8_overflow", "torch.pow", {"input": np.array([2, 3, -3, 5, 127], dtype=np.int8)},
        {"exponent": 5}, note="wraps modulo 2**8")
    add("pow_float_scalar_int32", "torch.pow", {"input": pa.astype(np.int32)}, {"exponent": 0.5},
        note="int tensor ** python float -> default float dtype")
    # --- float16 / bfloat16 arithmetic on random inputs
    h1 = r.standard_normal((4, 8)) * 3
    h2 = r.standard_normal((4, 8)) * 3
    for lp, tdt in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        t1 = torch.from_numpy(h1).to(tdt)
        t2 = torch.from_numpy(h2).to(tdt)
        add(f"add_{lp}", "torch.add", {"input": t1, "other": t2})
        add(f"mul_{lp}", "torch.mul", {"input": t1, "other": t2})
        add(f"exp_{lp}", "torch.exp", {"input": t1})
        add(f"sum_{lp}", "torch.sum", {"input": t1})
        add(f"sum_dim1_{lp}", "torch.sum", {"input": t1}, {"dim": 1})
        add(f"mean_{lp}", "torch.mean", {"input": t1})
        add(f"div_{lp}", "torch.div", {"input": t1, "other": t2})
    add("add_float16_bfloat16", "torch.add",
        {"input": torch.from_numpy(h1).to(torch.float16), "other": torch.from_numpy(h2).to(torch.bfloat16)})
    big = rng_for("sum10000").uniform(0.0, 1.0, 10000).astype(np.float16)
    add("sum10000_float16", "torch.sum", {"input": big},
        note="torch accumulates float16 sums in float32 and rounds once; naive float16 accumulation stalls")
    add("mean10000_float16", "torch.mean", {"input": big})
    add("cumsum10000_float16", "torch.cumsum", {"input": big}, {"dim": 0})
    # --- integer / bool reductions: dtype of the result
    ia = r.integers(-100, 100, (3, 5))
    for it in ("int8", "int32", "uint8", "bool"):
        arr = (ia > 0) if it == "bool" else (np.abs(ia) if it == "uint8" else ia).astype(it)
        add(f"sum_{it}", "torch.sum", {"input": arr})
        add(f"cumsum_{it}", "torch.cumsum", {"input": arr}, {"dim": 1})
        add(f"prod_{it}", "torch.prod", {"input": (arr[:, :3] if it != "bool" else arr)}, {"dim": 1})
    # --- mean / var / std on float32
    v = (r.standard_normal((4, 50)) * 3 + 10).astype(np.float32)
    add("mean_float32", "torch.mean", {"input": v})
    add("mean_dim1_float32", "torch.mean", {"input": v}, {"dim": 1})
    for corr in (1, 0):
        tag = "unbiased" if corr else "biased"
        add(f"var_{tag}_float32", "torch.var", {"input": v}, {"correction": corr})
        add(f"var_{tag}_dim1_float32", "torch.var", {"input": v}, {"dim": 1, "correction": corr})
        add(f"var_{tag}_dim0_keepdim_float32", "torch.var", {"input": v}, {"dim": 0, "correction": corr, "keepdim": True})
        add(f"std_{tag}_float32", "torch.std", {"input": v}, {"correction": corr})
        add(f"std_{tag}_dim1_float32", "torch.std", {"input": v}, {"dim": 1, "correction": corr})
    add("var_unbiased_n1_float32", "torch.var", {"input": v[:, :1]}, {"dim": 1, "correction": 1},
        note="one sample, correction 1: 0/0")
    add("var_large_offset_float32", "torch.var", {"input": (v - 10 + 1e4).astype(np.float32)}, {"dim": 1})
    # --- logsumexp
    ls = np.array([[1e4, 0.0, -1e4, 30.0], [-np.inf, -np.inf, -np.inf, -np.inf],
                   [np.inf, 1.0, 2.0, 3.0], [-30.0, -30.0, -30.0, -30.0], [0.0, -np.inf, 1.0, 2.0]],
                  dtype=np.float32)
    add("logsumexp_special_float32", "torch.logsumexp", {"input": ls}, {"dim": 1})
    lr = r.standard_normal((3, 4, 5)).astype(np.float32) * 5
    add("logsumexp_dim2_float32", "torch.logsumexp", {"input": lr}, {"dim": 2})
    add("logsumexp_dim01_keepdim_float32", "torch.logsumexp", {"input": lr}, {"dim": [0, 1], "keepdim": True})
    add("logsumexp_dim1_float64", "torch.logsumexp", {"input": lr.astype(np.float64)}, {"dim": 1})
    # --- cumsum
    add("cumsum_dim1_float32", "torch.cumsum", {"input": lr}, {"dim": 1})
    add("cumsum_dimm1_float64", "torch.cumsum", {"input": lr.astype(np.float64)}, {"dim": -1})
    add("cumsum_nan_float32", "torch.cumsum",
        {"input": np.array([1.0, 2.0, np.nan, 3.0, np.inf, -np.inf], dtype=np.float32)}, {"dim": 0})
    # --- argmax / argmin with ties and NaN
    am = np.array([[1.0, 3.0, 3.0, 2.0], [np.nan, 1.0, np.nan, 5.0], [2.0, 2.0, 2.0, 2.0],
                   [-np.inf, -np.inf, -1.0, -1.0], [0.0, -0.0, 0.0, -0.0]], dtype=np.float32)
    add("argmax_dim1_float32", "torch.argmax", {"input": am}, {"dim": 1})
    add("argmax_dim0_float32", "torch.argmax", {"input": am}, {"dim": 0})
    add("argmax_flat_float32", "torch.argmax", {"input": am})
    add("argmin_dim1_float32", "torch.argmin", {"input": am}, {"dim": 1})
    add("argmax_ties_flat_float32", "torch.argmax", {"input": am[2:]})
    add("argmax_ties_int32", "torch.argmax", {"input": np.array([[1, 5, 5, 0], [7, 7, 7, 7]], dtype=np.int32)}, {"dim": 1})
    add("max_dim1_float32", "torch.amax", {"input": am}, {"dim": 1})
    # --- clamp
    cx = np.array([-np.inf, -5.0, -1.0, -0.0, 0.0, 0.5, 1.0, 5.0, np.inf, np.nan], dtype=np.float32)
    add("clamp_both_float32", "torch.clamp", {"input": cx}, {"min": -1.0, "max": 1.0})
    add("clamp_min_float32", "torch.clamp", {"input": cx}, {"min": 0.0})
    add("clamp_max_float32", "torch.clamp", {"input": cx}, {"max": 0.0})
    add("clamp_min_gt_max_float32", "torch.clamp", {"input": cx}, {"min": 2.0, "max": 1.0},
        note="min > max: every element becomes max")
    add("clamp_tensor_bounds_float32", "torch.clamp",
        {"input": cx, "min": np.full(10, -1.0, np.float32), "max": np.array([np.nan] + [1.0] * 9, np.float32)})
    add("clamp_int32", "torch.clamp", {"input": np.array([-7, -1, 0, 3, 9], dtype=np.int32)}, {"min": -2, "max": 4})
    add("clamp_int32_float_bound", "torch.clamp", {"input": np.array([-7, -1, 0, 3, 9], dtype=np.int32)},
        {"min": -2.5, "max": 4.5}, note="int tensor with python float bounds promotes to float32")
    # --- where
    cond = r.random((3, 4)) < 0.5
    wx = r.standard_normal((3, 4)).astype(np.float32)
    wy = r.standard_normal((1, 4)).astype(np.float32)
    add("where_float32", "torch.where", {"condition": cond, "input": wx, "other": wy})
    add("where_int32_float32", "torch.where",
        {"condition": cond, "input": r.integers(-5, 5, (3, 4)).astype(np.int32), "other": wy})
    add("where_int8_int16", "torch.where",
        {"condition": cond, "input": r.integers(-5, 5, (3, 4)).astype(np.int8),
         "other": r.integers(-5, 5, (4,)).astype(np.int16)})
    add("where_scalar_other_int32", "torch.where",
        {"condition": cond, "input": r.integers(-5, 5, (3, 4)).astype(np.int32)}, {"other": 2.5},
        note="python float other: weak scalar")
    add("where_nan_float32", "torch.where",
        {"condition": np.array([True, False, True, False]),
         "input": np.array([np.nan, np.nan, 1.0, 2.0], np.float32),
         "other": np.array([0.0, 1.0, np.nan, np.nan], np.float32)})
    return tensors, cases


# ====================================================================== main
def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    # one key only: safetensors keeps metadata in a hash map, so two keys come out in random order
    meta = {"generator": f"tools/make_fixtures.py, torch {torch.__version__}"}

    write_json(os.path.join(OUT_DIR, "promotion.json"), make_promotion())

    ft, fc = make_functional()
    save_file(ft, os.path.join(OUT_DIR, "functional.safetensors"), metadata=meta)
    os.chmod(os.path.join(OUT_DIR, "functional.safetensors"), 0o644)
    write_json(os.path.join(OUT_DIR, "functional.json"), {
        "torch_version": torch.__version__,
        "seed": BASE_SEED,
        "call": ("torch.nn.functional.<function>(**{arg: tensor[f'{name}.{arg}'] for arg in inputs}, **kwargs); "
                 "out.backward(tensor[f'{name}.gout']); tensor[f'{name}.grad.{arg}'] for arg in grads"),
        "keys": "{name}.{arg}, {name}.out, {name}.gout, {name}.grad.{arg}",
        "cases": fc,
    })

    ot, oc = make_ops()
    save_file(ot, os.path.join(OUT_DIR, "ops.safetensors"), metadata=meta)
    os.chmod(os.path.join(OUT_DIR, "ops.safetensors"), 0o644)
    write_json(os.path.join(OUT_DIR, "ops.json"), {
        "torch_version": torch.__version__,
        "seed": BASE_SEED,
        "call": "<op>(**{arg: tensor[f'{name}.{arg}'] for arg in inputs}, **kwargs) -> tensor[f'{name}.out']",
        "keys": "{name}.{arg}, {name}.out",
        "bfloat16": ("bfloat16 tensors are stored as their raw uint16 bit patterns (the top 16 bits of the "
                     "float32); the keys are listed in each case's bf16_bits; decode with "
                     "arr.view(ml_dtypes.bfloat16) or (arr.astype(uint32) << 16).view(float32)"),
        "cases": oc,
    })
    print(f"functional: {len(fc)} cases, {len(ft)} tensors; ops: {len(oc)} cases, {len(ot)} tensors")


if __name__ == "__main__":
    main()
