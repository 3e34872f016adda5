"""Generate PyTorch reference fixtures for the second batch of ember.nn layers, losses and functions.

Run from the repository root with a separate torch virtualenv (torch is never an ember dependency,
not even a test one; tests/test_nn_extra.py reads the outputs with numpy and safetensors):

    /tmp/tv/bin/python tools/make_nn2_fixtures.py

Outputs:
    tests/fixtures/nn2.safetensors   tensors (inputs, module state, outputs, cotangents, gradients)
    tests/fixtures/nn2.json          one record per case, plus the orthogonal_ references

Each case calls either a module, `torch.nn.<cls>(**kwargs)` (its state dict overwritten with fixed
random values, so the numbers do not depend on torch's RNG), or a function,
`torch.nn.functional.<fn>(*args, **kwargs)`, on inputs drawn with numpy from a seed derived from the
case's base name (the float32 and float64 variants share the values). Inputs include special values
where they are meaningful: 0, +-inf, NaN, large magnitudes, the kinks of piecewise functions,
softplus' threshold, empty and size-1 dims. Recorded: the output, a fixed random cotangent and the
gradients of sum(out * gout) w.r.t. every float input (except those listed in the case's "no_grad")
and every parameter.

Tensor keys: {case}.in.{arg}, {case}.sd.{param}, {case}.out, {case}.gout, {case}.grad.in.{arg},
{case}.grad.p.{param}; orthogonal.{name}.sample / .result. The script is deterministic and rewrites
both files from scratch.
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
BASE_SEED = 20250211
TDT = {"float32": torch.float32, "float64": torch.float64}
INF, NAN = float("inf"), float("nan")

torch.manual_seed(0)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
warnings.filterwarnings("ignore", message="reduction: 'mean' divides")
warnings.filterwarnings("ignore", message="Using a target size")


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(BASE_SEED + zlib.crc32(name.encode()))


def _c(a) -> np.ndarray:
    return np.array(a, order="C", copy=True)


# ====================================================================== input generators
def X(*shape, scale=1.0, specials=()):
    """Normal values times `scale`, the first elements replaced by `specials`."""
    def gen(rng):
        a = rng.standard_normal(shape) * scale
        flat = a.reshape(-1)
        for k, v in enumerate(specials[:flat.size]):
            flat[k] = v
        return a
    return gen


def U(lo, hi, *shape, specials=()):
    def gen(rng):
        a = rng.uniform(lo, hi, shape)
        flat = a.reshape(-1)
        for k, v in enumerate(specials[:flat.size]):
            flat[k] = v
        return a
    return gen


def signs(*shape, zeros=0):
    """+-1 targets (as floats), the first `zeros` of them 0 (which the loss ignores)."""
    def gen(rng):
        a = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        a.reshape(-1)[:zeros] = 0.0
        return a
    return gen


def ints(lo, hi, *shape, must=()):
    def gen(rng):
        a = rng.integers(lo, hi, shape).astype(np.int64)
        for k, v in enumerate(must):
            a.flat[k] = v
        return a
    return gen


def probs(*shape):
    def gen(rng):
        p = rng.random(shape) + 0.05
        return p / p.sum(-1, keepdims=True)
    return gen


def log_probs(*shape):
    g = probs(*shape)
    return lambda rng: np.log(g(rng))


SPECIAL = (0.0, NAN, INF, -INF, 1e4, -1e4, 50.0, -50.0, 1e-4, -1e-4)


# ====================================================================== cases
# (base, kind, target, ctor-or-call kwargs, {input: generator}, options)
#   kind "module": torch.nn.<target>(**kwargs)(*inputs); "function": F.<target>(*inputs, **kwargs)
#   options: kw (input names passed by keyword), ctor (inputs passed to the constructor, e.g. weight),
#            no_grad (float inputs whose gradient is not recorded), reductions (loss modules: one case each)
CASES = []


def add(base, kind, target, kwargs, inputs, **opt):
    CASES.append((base, kind, target, kwargs, inputs, opt))


def act(base, cls, kwargs, gen, fn=None, fkw=None):
    add(base, "module", cls, kwargs, {"input": gen})
    if fn:
        add(base + "_fn", "function", fn, fkw if fkw is not None else kwargs, {"input": gen})


# ---------------------------------------------------------------- activations (PI-3)
act("elu", "ELU", {}, X(4, 7, scale=2, specials=SPECIAL), "elu")
act("elu_alpha", "ELU", {"alpha": 0.7}, X(3, 6, scale=2, specials=SPECIAL), "elu")
act("celu", "CELU", {"alpha": 0.5}, X(4, 7, scale=2, specials=SPECIAL), "celu")
act("selu", "SELU", {}, X(4, 7, scale=2, specials=SPECIAL), "selu")
act("hardtanh", "Hardtanh", {}, X(4, 7, specials=SPECIAL + (-1.0, 1.0)), "hardtanh")
act("hardtanh_bounds", "Hardtanh", {"min_val": -2.0, "max_val": 1.5}, X(3, 6, scale=2, specials=(-2.0, 1.5, NAN, INF)),
    "hardtanh")
act("relu6", "ReLU6", {}, X(4, 7, scale=4, specials=SPECIAL + (6.0, 3.0)), "relu6")
act("hardsigmoid", "Hardsigmoid", {}, X(4, 7, scale=3, specials=SPECIAL + (-3.0, 3.0)), "hardsigmoid")
act("hardswish", "Hardswish", {}, X(4, 7, scale=3, specials=SPECIAL + (-3.0, 3.0)), "hardswish")
act("mish", "Mish", {}, X(4, 7, scale=3, specials=(0.0, NAN, 1e4, 50.0, -50.0, 20.0, -20.0, 1e-4)), "mish")
act("softplus", "Softplus", {}, X(4, 7, scale=5, specials=SPECIAL + (20.0, 19.9, 20.1, -20.0)), "softplus")
act("softplus_beta", "Softplus", {"beta": 2.0, "threshold": 10.0},
    X(4, 7, scale=3, specials=SPECIAL + (5.0, 4.99, 5.01, -5.0)), "softplus")
act("logsigmoid", "LogSigmoid", {}, X(4, 7, scale=5, specials=SPECIAL), "logsigmoid")
act("softsign", "Softsign", {}, X(4, 7, scale=3, specials=(0.0, NAN, 1e4, -1e4, 50.0, 1e-4)), "softsign")
act("tanhshrink", "Tanhshrink", {}, X(4, 7, scale=2, specials=SPECIAL), "tanhshrink")
act("elu_empty", "ELU", {"alpha": 0.5}, X(0, 3))
act("hardswish_size1", "Hardswish", {}, X(1, 1, scale=3))
act("softplus_0d", "Softplus", {"beta": 0.5}, X())
add("prelu", "module", "PReLU", {}, {"input": X(3, 5, scale=2, specials=(0.0, NAN, INF, -INF))})
add("prelu_channels", "module", "PReLU", {"num_parameters": 3}, {"input": X(2, 3, 4, scale=2, specials=(0.0, -INF))})
add("prelu_1d", "module", "PReLU", {}, {"input": X(6, scale=2)})
add("prelu_fn", "function", "prelu", {}, {"input": X(2, 4, 3, specials=(0.0,)), "weight": U(-1, 1, 4)})

# ---------------------------------------------------------------- losses (PI-4)
RED = ("none", "mean", "sum")


def loss(base, cls, kwargs, inputs, reductions=RED, **opt):
    add(base, "module", cls, kwargs, inputs, reductions=reductions, **opt)


loss("smoothl1", "SmoothL1Loss", {}, {"input": X(4, 5, scale=2, specials=(0.0, 1.0, -1.0, 3.0)), "target": X(4, 5)})
loss("smoothl1_beta", "SmoothL1Loss", {"beta": 0.5},
     {"input": X(4, 5, specials=(0.5, -0.5, 0.2)), "target": X(4, 5, specials=(0.0, 0.0, 0.0))})
loss("smoothl1_beta0", "SmoothL1Loss", {"beta": 0.0}, {"input": X(3, 4), "target": X(3, 4)})
loss("smoothl1_special", "SmoothL1Loss", {}, {"input": X(2, 4, specials=(NAN, INF, -INF, 1e4)), "target": X(2, 4)},
     reductions=("none",))
loss("huber", "HuberLoss", {}, {"input": X(4, 5, scale=2, specials=(1.0, -1.0)),
                                "target": X(4, 5, specials=(0.0, 0.0))})
loss("huber_delta", "HuberLoss", {"delta": 0.7}, {"input": X(4, 5, scale=2), "target": X(4, 5)})
add("huber_weight_fn", "function", "huber_loss", {"delta": 1.5},
    {"input": X(3, 4, scale=2), "target": X(3, 4), "weight": U(0.2, 2, 3, 4)}, kw=("weight",), no_grad=("weight",))
loss("bce", "BCELoss", {}, {"input": U(0.02, 0.98, 4, 5), "target": U(0, 1, 4, 5)})
loss("bce_weight", "BCELoss", {}, {"input": U(0.02, 0.98, 4, 3), "target": U(0, 1, 4, 3), "weight": U(0.2, 2, 3)},
     ctor=("weight",))
loss("bce_edges", "BCELoss", {}, {"input": U(0.02, 0.98, 3, 4, specials=(0.0, 1.0, 0.0, 1.0, 1e-13, 1 - 1e-7, 1e-30)),
                                  "target": U(0, 1, 3, 4, specials=(0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5))},
     no_grad=("target",))
loss("kldiv", "KLDivLoss", {}, {"input": log_probs(4, 5), "target": probs(4, 5)}, reductions=RED + ("batchmean",))
loss("kldiv_logtarget", "KLDivLoss", {"log_target": True}, {"input": log_probs(3, 6), "target": log_probs(3, 6)},
     reductions=RED + ("batchmean",))
loss("kldiv_zero_target", "KLDivLoss", {}, {"input": log_probs(2, 4), "target": U(0, 1, 2, 4, specials=(0.0, 0.0))},
     reductions=("sum",), no_grad=("target",))
loss("cosemb", "CosineEmbeddingLoss", {}, {"input1": X(6, 5), "input2": X(6, 5), "target": signs(6, zeros=1)},
     no_grad=("target",))
loss("cosemb_margin", "CosineEmbeddingLoss", {"margin": 0.3}, {"input1": X(8, 4), "input2": X(8, 4),
                                                               "target": signs(8)}, no_grad=("target",))
loss("cosemb_1d", "CosineEmbeddingLoss", {"margin": -0.5},
     {"input1": X(5), "input2": X(5), "target": lambda r: np.array(-1.0)},
     reductions=("none", "mean"), no_grad=("target",))
loss("triplet", "TripletMarginLoss", {}, {"anchor": X(6, 5), "positive": X(6, 5), "negative": X(6, 5)})
loss("triplet_p1_swap", "TripletMarginLoss", {"margin": 0.5, "p": 1.0, "swap": True},
     {"anchor": X(7, 4), "positive": X(7, 4), "negative": X(7, 4)})
loss("triplet_p3_eps", "TripletMarginLoss", {"p": 3.0, "eps": 1e-3}, {"anchor": X(5, 3), "positive": X(5, 3),
                                                                      "negative": X(5, 3)}, reductions=("none",))
loss("marginrank", "MarginRankingLoss", {}, {"input1": X(7), "input2": X(7), "target": signs(7)})
loss("marginrank_margin", "MarginRankingLoss", {"margin": 0.2}, {"input1": X(3, 4), "input2": X(3, 4),
                                                                 "target": signs(3, 4)})
loss("softmargin", "SoftMarginLoss", {},
     {"input": X(4, 5, scale=3, specials=(0.0, 30.0, -30.0)), "target": signs(4, 5)},
     no_grad=("target",))

# ---------------------------------------------------------------- distances, normalize, one_hot
add("normalize", "function", "normalize", {}, {"input": X(4, 5, specials=(0.0,))})
add("normalize_zero_row", "function", "normalize", {"dim": 1}, {"input": X(3, 4, specials=(0.0, 0.0, 0.0, 0.0))})
add("normalize_p1_dim0", "function", "normalize", {"p": 1.0, "dim": 0}, {"input": X(4, 3)})
add("normalize_p3_eps", "function", "normalize", {"p": 3.0, "dim": -1, "eps": 0.5}, {"input": X(2, 3, 4, scale=0.3)})
add("normalize_pinf", "function", "normalize", {"p": INF, "dim": 1}, {"input": X(3, 5)})
add("cossim", "function", "cosine_similarity", {}, {"x1": X(4, 6), "x2": X(4, 6)})
add("cossim_dim_last_bcast", "function", "cosine_similarity", {"dim": -1}, {"x1": X(3, 1, 4), "x2": X(5, 4)})
add("cossim_zero", "function", "cosine_similarity", {"dim": 1, "eps": 1e-6},
    {"x1": X(3, 4, specials=(0.0, 0.0, 0.0, 0.0)), "x2": X(3, 4, scale=1e-7)})
add("cossim_large", "function", "cosine_similarity", {"dim": 0}, {"x1": X(5, 3, scale=1e25), "x2": X(5, 3, scale=1e25)})
add("pdist", "function", "pairwise_distance", {}, {"x1": X(5, 4), "x2": X(5, 4)})
add("pdist_p1_keepdim", "function", "pairwise_distance", {"p": 1.0, "keepdim": True}, {"x1": X(3, 2, 4), "x2": X(4)})
add("pdist_p3_eps", "function", "pairwise_distance", {"p": 3.0, "eps": 1e-2}, {"x1": X(4, 3), "x2": X(4, 3)})
add("pdist_pinf", "function", "pairwise_distance", {"p": INF}, {"x1": X(4, 5), "x2": X(4, 5)})
add("pdist_same", "function", "pairwise_distance", {"eps": 0.0}, {"x1": X(2, 3), "x2": X(2, 3)}, same=("x1", "x2"))
add("one_hot", "function", "one_hot", {}, {"tensor": ints(0, 5, 3, 4, must=(4, 0))})
add("one_hot_classes", "function", "one_hot", {"num_classes": 7}, {"tensor": ints(0, 7, 6, must=(6,))})
add("one_hot_empty", "function", "one_hot", {"num_classes": 3}, {"tensor": ints(0, 3, 0, 2)})
add("one_hot_0d", "function", "one_hot", {"num_classes": 4}, {"tensor": lambda r: np.array(2, np.int64)})

# ---------------------------------------------------------------- pad (reflect, replicate, circular)
for mode in ("reflect", "replicate", "circular"):
    add(f"pad_{mode}_1d", "function", "pad", {"pad": [2, 1], "mode": mode}, {"input": X(2, 3, 5)})
    add(f"pad_{mode}_1d_nobatch", "function", "pad", {"pad": [0, 3], "mode": mode}, {"input": X(3, 4)})
    add(f"pad_{mode}_1d_crop", "function", "pad", {"pad": [-1, 2], "mode": mode}, {"input": X(2, 2, 5)})
    add(f"pad_{mode}_2d", "function", "pad", {"pad": [1, 2, 2, 0], "mode": mode}, {"input": X(2, 2, 4, 3)})
    add(f"pad_{mode}_2d_nobatch", "function", "pad", {"pad": [1, 1, 1, 1], "mode": mode}, {"input": X(2, 3, 3)})
    add(f"pad_{mode}_2d_crop", "function", "pad", {"pad": [2, -1, -1, 1], "mode": mode}, {"input": X(1, 2, 4, 5)})
    add(f"pad_{mode}_3d", "function", "pad", {"pad": [1, 0, 0, 2, 1, 1], "mode": mode}, {"input": X(1, 2, 3, 4, 3)})
    add(f"pad_{mode}_3d_nobatch", "function", "pad", {"pad": [1, 1, 2, 1, 0, 1], "mode": mode},
        {"input": X(2, 3, 3, 4)})
    add(f"pad_{mode}_size1", "function", "pad", {"pad": [1, 1], "mode": mode},
        {"input": X(1, 1, 2 if mode == "reflect" else 1)})
add("pad_reflect_empty_batch", "function", "pad", {"pad": [1, 2], "mode": "reflect"}, {"input": X(0, 2, 4)})
add("pad_circular_full", "function", "pad", {"pad": [3, 3], "mode": "circular"}, {"input": X(2, 1, 3)})


# ====================================================================== running a case
def jsonable(v):
    """JSON has no inf: an infinite float becomes the string "inf" / "-inf" (the tests map it back)."""
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float) and np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def fill_state(module: nn.Module, rng, dtype) -> dict:
    sd = module.state_dict()
    new = {k: torch.tensor(rng.uniform(-0.5, 0.6, tuple(v.shape)), dtype=dtype) for k, v in sd.items()}
    module.load_state_dict(new)
    return new


def run_case(base, kind, target, kwargs, inputs, opt, reduction, dname, tensors) -> dict:
    dtype = TDT[dname]
    name = f"{base}_{reduction}_{dname}" if reduction else f"{base}_{dname}"
    rng = rng_for(base)
    raw = {k: g(rng) for k, g in inputs.items()}
    same = opt.get("same", ())
    if same:  # identical inputs: the distance is exactly 0 (eps=0), where the norm's gradient is masked
        raw[same[1]] = raw[same[0]].copy()
    ctor_names = opt.get("ctor", ())
    kw_names = opt.get("kw", ())
    no_grad = set(opt.get("no_grad", ()))
    ts, grads_in = {}, []
    for k, a in raw.items():
        if a.dtype.kind in "iu":
            t = torch.tensor(a, dtype=torch.int64)
        else:
            t = torch.tensor(a, dtype=dtype)
            if k not in ctor_names and k not in no_grad:
                t.requires_grad_(True)
                grads_in.append(k)
        ts[k] = t
        tensors[f"{name}.in.{k}"] = _c(t.detach().numpy())
    args = [ts[k] for k in raw if k not in ctor_names and k not in kw_names]
    kw = {k: ts[k] for k in kw_names}
    state, pgrads = {}, []
    if kind == "module":
        ck = dict(kwargs)
        ck.update({k: ts[k] for k in ctor_names})
        if reduction:
            ck["reduction"] = reduction
        m = getattr(nn, target)(**ck)
        m = m.to(dtype)
        if list(m.parameters()):
            state = fill_state(m, rng, dtype)
        out = m(*args, **kw)
    else:
        fk = dict(kwargs)
        if "pad" in fk:
            fk["pad"] = tuple(fk["pad"])
        out = getattr(F, target)(*args, **kw, **fk)
        m = None
    tensors[f"{name}.out"] = _c(out.detach().numpy())
    if out.dtype.is_floating_point and out.requires_grad:
        g = torch.tensor(rng.standard_normal(tuple(out.shape)), dtype=out.dtype)
        tensors[f"{name}.gout"] = _c(g.numpy())
        (out * g).sum().backward()
        for k in grads_in:
            gr = ts[k].grad if ts[k].grad is not None else torch.zeros_like(ts[k])
            tensors[f"{name}.grad.in.{k}"] = _c(gr.numpy())
        if m is not None:
            for pn, p in m.named_parameters():
                tensors[f"{name}.grad.p.{pn}"] = _c(p.grad.numpy())
                pgrads.append(pn)
    else:
        grads_in = []
    for k, v in state.items():
        tensors[f"{name}.sd.{k}"] = _c(v.numpy())
    return {"name": name, "base": base, "kind": kind, "target": target, "kwargs": jsonable(kwargs),
            "reduction": reduction, "dtype": dname, "inputs": list(raw), "ctor": list(ctor_names), "kw": list(kw_names),
            "grads_in": grads_in, "grads_params": pgrads, "state_keys": list(state),
            "has_grad": f"{name}.gout" in tensors}


def make_orthogonal(tensors) -> list:
    """torch.nn.init.orthogonal_ itself, with the normal sample it draws recorded (same seed, same stream)."""
    out = []
    for name, shape, gain in (("wide", (3, 5), 1.0), ("tall", (6, 4), 2.0), ("square", (4, 4), 1.0),
                              ("conv", (4, 2, 3), 0.5)):
        for dname, dtype in TDT.items():
            rows = shape[0]
            cols = int(np.prod(shape)) // rows
            torch.manual_seed(11)
            sample = torch.empty((rows, cols), dtype=dtype).normal_(0, 1)
            torch.manual_seed(11)
            t = torch.empty(shape, dtype=dtype)
            nn.init.orthogonal_(t, gain=gain)
            key = f"orthogonal.{name}_{dname}"
            tensors[f"{key}.sample"] = _c(sample.numpy())
            tensors[f"{key}.result"] = _c(t.numpy())
            out.append({"name": f"{name}_{dname}", "shape": list(shape), "gain": gain, "dtype": dname})
    return out


def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    cases = []
    for base, kind, target, kwargs, inputs, opt in CASES:
        for reduction in opt.get("reductions", (None,)):
            for dname in TDT:
                cases.append(run_case(base, kind, target, kwargs, inputs, opt, reduction, dname, tensors))
    meta = {"torch_version": torch.__version__, "generator": "tools/make_nn2_fixtures.py", "cases": cases,
            "orthogonal": make_orthogonal(tensors)}
    tensors = {k: _c(v) for k, v in tensors.items()}
    path = os.path.join(OUT_DIR, "nn2.safetensors")
    save_file(tensors, path, metadata={"torch_version": torch.__version__, "generator": "tools/make_nn2_fixtures.py"})
    os.chmod(path, 0o644)
    with open(os.path.join(OUT_DIR, "nn2.json"), "w") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"{len(cases)} cases, {len(meta['orthogonal'])} orthogonal references, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
