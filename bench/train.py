"""Training-step benchmark: forward + backward + optimizer update, fp32 (or --amp bf16 autocast),
identical init and data.

models (defaults = the anchor configurations; lstm runs on torch, torch_compile, ember, ember_jit):
  mlp: 784-1024-1024-10, ReLU, cross-entropy, batch 256, Adam(lr 1e-3)
  cnn: conv3x3(1->32) ReLU, conv3x3(32->64) ReLU, maxpool2, linear(9216->10), batch 64, SGD(lr 1e-2)
  gpt: 4 pre-LN blocks, d_model 256, 4 heads, context 128, vocab 256, MLP 4x GELU(tanh), untied head,
       batch 16, AdamW(lr 3e-4, wd 0.01)
  lstm: byte embedding 128, nn.LSTM(128, 512, num_layers=2, batch_first), linear head to 256, sequence 64,
        batch 32, Adam(lr 1e-3); each framework's own nn.LSTM (torch's fused CPU kernel)
frameworks: ember (eager), ember_jit (ember.jit over the whole step), torch (eager), torch_compile (torch.compile on loss fn; optimizer per --torch-opt,
            optionally compiled with --compile-opt), tinygrad (TinyJit over the whole step),
            jax (jax.jit over the whole step, optax optimizer, donated params/state)

Parameters are initialised once in numpy (seed 0) and loaded into each framework; the same 4
random batches are cycled in the same order, so step-0 losses agree across frameworks.
Each timed step ends with the loss copied to the host (a sync point).

The peers' models, data, initialisation, thread pinning and timing are those of the baseline
harness the peer numbers were first measured with; ember is one more framework in it. ember_jit's GEMMs run on
Intel MKL when ember[mkl] is installed in the environment, else on numpy's OpenBLAS
(EMBER_BLAS=numpy forces the latter); the JSON's "ember_blas" says which.

usage: python train.py --model mlp|cnn|gpt|lstm --framework ember|ember_jit|torch|torch_compile|tinygrad|jax
                       [--steps 20 --warmup 3 --threads 2 --batch B --torch-opt default|fused|foreach]
                       [--compile-opt] [--warm-cache]
"""
import argparse
import atexit
import os
import shutil
import tempfile
import time

import bench_models
from benchutil import pin_threads, stats, emit

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True, choices=["mlp", "cnn", "gpt", "lstm"])
ap.add_argument("--framework", required=True, choices=["ember", "ember_jit", "torch", "torch_compile", "tinygrad", "jax"])
ap.add_argument("--steps", type=int, default=20, help="timed steps")
ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the first two")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=None)
ap.add_argument("--torch-opt", default="default", choices=["default", "fused", "foreach"])
ap.add_argument("--compile-opt", action="store_true", help="torch_compile: also torch.compile opt.step")
ap.add_argument("--amp", default="none", choices=["none", "bf16"],
                help="ember/ember_jit/torch/torch_compile: run the loss under autocast (bfloat16 matmuls)")
ap.add_argument("--record-losses", action="store_true", help="store every step's loss in the JSON")
ap.add_argument("--warm-cache", action="store_true",
                help="use the default on-disk compile caches (default: fresh empty ones = cold compile)")
a = ap.parse_args()
pin_threads(a.threads)
if not a.warm_cache:
    _tmp = tempfile.mkdtemp(prefix="traincache_")
    atexit.register(shutil.rmtree, _tmp, True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(_tmp, "inductor")
    os.environ["CACHEDB"] = os.path.join(_tmp, "tinygrad_cache.db")
    os.environ["EMBER_CACHE_DIR"] = os.path.join(_tmp, "ember")

import numpy as np  # noqa: E402

CFG = {
    "mlp": dict(batch=256, opt="adam", lr=1e-3, wd=0.0),
    "cnn": dict(batch=64, opt="sgd", lr=1e-2, wd=0.0),
    "gpt": dict(batch=16, opt="adamw", lr=3e-4, wd=0.01, L=4, d=256, H=4, T=128, V=256),
    "lstm": dict(batch=32, opt="adam", lr=1e-3, wd=0.0, E=128, hidden=512, L=2, T=64, V=256),
}[a.model]
TOKENS = a.model in ("gpt", "lstm")  # integer inputs
Bsz = a.batch or CFG["batch"]
NBATCH = 4
EPS_LN = 1e-5


# ---------------------------------------------------------------- shared init / data (numpy)
def init_params(rng):
    P = {}
    def lin(name, fin, fout, bias=True, std=None):
        if std is None:  # torch.nn.Linear-style uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / np.sqrt(fin)
            P[name + ".w"] = rng.uniform(-bound, bound, (fin, fout)).astype(np.float32)
            if bias:
                P[name + ".b"] = rng.uniform(-bound, bound, (fout,)).astype(np.float32)
        else:
            P[name + ".w"] = (rng.standard_normal((fin, fout)) * std).astype(np.float32)
            if bias:
                P[name + ".b"] = np.zeros((fout,), np.float32)
    if a.model == "mlp":
        lin("fc1", 784, 1024); lin("fc2", 1024, 1024); lin("fc3", 1024, 10)
    elif a.model == "cnn":
        for name, cin, cout in (("conv1", 1, 32), ("conv2", 32, 64)):
            bound = 1.0 / np.sqrt(cin * 9)
            P[name + ".k"] = rng.uniform(-bound, bound, (cout, cin, 3, 3)).astype(np.float32)
            P[name + ".b"] = rng.uniform(-bound, bound, (cout,)).astype(np.float32)
        lin("fc", 64 * 12 * 12, 10)
    elif a.model == "lstm":
        E_, H_, V = CFG["E"], CFG["hidden"], CFG["V"]
        P["emb"] = rng.standard_normal((V, E_)).astype(np.float32)
        bound = 1.0 / np.sqrt(H_)
        for l in range(CFG["L"]):  # nn.LSTM's own keys and layout
            fin = E_ if l == 0 else H_
            for name, shape in ((f"weight_ih_l{l}", (4 * H_, fin)), (f"weight_hh_l{l}", (4 * H_, H_)),
                                (f"bias_ih_l{l}", (4 * H_,)), (f"bias_hh_l{l}", (4 * H_,))):
                P["lstm." + name] = rng.uniform(-bound, bound, shape).astype(np.float32)
        lin("head", H_, V)
    else:
        d, V, T = CFG["d"], CFG["V"], CFG["T"]
        P["wte"] = (rng.standard_normal((V, d)) * 0.02).astype(np.float32)
        P["wpe"] = (rng.standard_normal((T, d)) * 0.02).astype(np.float32)
        for l in range(CFG["L"]):
            p = f"h{l}."
            P[p + "ln1.g"], P[p + "ln1.b"] = np.ones(d, np.float32), np.zeros(d, np.float32)
            lin(p + "attn", d, 3 * d, std=0.02)
            lin(p + "proj", d, d, std=0.02)
            P[p + "ln2.g"], P[p + "ln2.b"] = np.ones(d, np.float32), np.zeros(d, np.float32)
            lin(p + "fc", d, 4 * d, std=0.02)
            lin(p + "fc2", 4 * d, d, std=0.02)
        P["lnf.g"], P["lnf.b"] = np.ones(d, np.float32), np.zeros(d, np.float32)
        lin("head", d, V, bias=False, std=0.02)
    return P


def make_data(rng):
    out = []
    for _ in range(NBATCH):
        if a.model == "mlp":
            x = rng.standard_normal((Bsz, 784)).astype(np.float32)
            y = rng.integers(0, 10, (Bsz,)).astype(np.int32)
        elif a.model == "cnn":
            x = rng.standard_normal((Bsz, 1, 28, 28)).astype(np.float32)
            y = rng.integers(0, 10, (Bsz,)).astype(np.int32)
        else:  # gpt, lstm
            x = rng.integers(0, CFG["V"], (Bsz, CFG["T"])).astype(np.int32)
            y = rng.integers(0, CFG["V"], (Bsz, CFG["T"])).astype(np.int32)
        out.append((x, y))
    return out


def model_flops_per_step():
    """Analytic matmul/conv FLOPs of one training step, counted as 3 x forward."""
    if a.model == "mlp":
        f = 2 * Bsz * (784 * 1024 + 1024 * 1024 + 1024 * 10)
    elif a.model == "cnn":
        f = 2 * Bsz * (26 * 26 * 32 * 9 + 24 * 24 * 64 * 32 * 9 + 9216 * 10)
    elif a.model == "lstm":
        E_, H_, T, V = CFG["E"], CFG["hidden"], CFG["T"], CFG["V"]
        f = 2 * Bsz * T * (4 * H_ * (E_ + H_) + (CFG["L"] - 1) * 4 * H_ * 2 * H_ + H_ * V)
    else:
        d, T, V, L = CFG["d"], CFG["T"], CFG["V"], CFG["L"]
        per_layer = 2 * Bsz * T * (d * 3 * d + d * d + 2 * d * 4 * d) + 2 * 2 * Bsz * T * T * d
        f = L * per_layer + 2 * Bsz * T * d * V
    return 3 * f


NP_PARAMS = init_params(np.random.default_rng(0))
NP_DATA = make_data(np.random.default_rng(1))
n_params = int(sum(v.size for v in NP_PARAMS.values()))
extra = {}


def torch_api_loss(F, P, x, y, M=None):
    """The models' loss, written once for every framework with PyTorch's functional API."""
    return bench_models.loss(a.model, CFG, F, P, x, y, M)


def lstm_module(nn, P, dtype_kw):
    """The framework's nn.LSTM with the shared weights (its parameters become P's "lstm.*")."""
    m = nn.LSTM(CFG["E"], CFG["hidden"], num_layers=CFG["L"], batch_first=True, **dtype_kw)
    for k in [k for k in P if k.startswith("lstm.")]:
        setattr(m, k[len("lstm."):], P.pop(k))
    return {"lstm": m}


# ---------------------------------------------------------------- torch
def build_torch():
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    extra.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                 torch_opt=a.torch_opt, compile_opt=a.compile_opt)
    P = {}
    for k, v in NP_PARAMS.items():
        # nn.Linear layout is (out, in): store the transpose so F.linear is used idiomatically
        t = torch.tensor(np.ascontiguousarray(v.T) if k.endswith(".w") else v)
        P[k] = t.requires_grad_()
    M = None
    if a.model == "lstm":
        P = {k: (torch.nn.Parameter(v) if k.startswith("lstm.") else v) for k, v in P.items()}
        M = lstm_module(torch.nn, P, {})
    data = [(torch.from_numpy(x).long() if TOKENS else torch.from_numpy(x),
             torch.from_numpy(y).long()) for x, y in NP_DATA]

    def loss_fn(P, x, y):
        if a.amp == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return torch_api_loss(F, P, x, y, M)
        return torch_api_loss(F, P, x, y, M)

    okw = {} if a.torch_opt == "default" else {a.torch_opt: True}
    params = list(P.values()) + ([] if M is None else list(M["lstm"].parameters()))
    if CFG["opt"] == "adam":
        opt = torch.optim.Adam(params, lr=CFG["lr"], **okw)
    elif CFG["opt"] == "adamw":
        opt = torch.optim.AdamW(params, lr=CFG["lr"], weight_decay=CFG["wd"], **okw)
    else:
        opt = torch.optim.SGD(params, lr=CFG["lr"], **okw)

    fwd = loss_fn
    opt_step = opt.step
    if a.framework == "torch_compile":
        fwd = torch.compile(loss_fn)
        if a.compile_opt:
            opt_step = torch.compile(opt.step)

    def step(i):
        x, y = data[i % NBATCH]
        opt.zero_grad(set_to_none=True)
        loss = fwd(P, x, y)
        loss.backward()
        opt_step()
        return loss.item()
    return step


# ---------------------------------------------------------------- ember (eager)
def build_ember():
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import ember
    import ember.nn.functional as F
    from ember.backend.cpu import blas
    extra.update(ember_version=ember.__version__, ember_mode="jit" if a.framework == "ember_jit" else "eager",
                 ember_blas=blas.describe())
    P = {}
    for k, v in NP_PARAMS.items():
        # nn.Linear layout is (out, in), as in the torch builder
        P[k] = ember.tensor(np.ascontiguousarray(v.T) if k.endswith(".w") else v, requires_grad=True)
    M = None
    if a.model == "lstm":
        P = {k: (ember.nn.Parameter(v.detach()) if k.startswith("lstm.") else v) for k, v in P.items()}
        M = lstm_module(ember.nn, P, {})
    data = [(ember.from_numpy(x.astype(np.int64) if TOKENS else x), ember.from_numpy(y.astype(np.int64)))
            for x, y in NP_DATA]

    def loss_fn(x, y):
        if a.amp == "bf16":
            with ember.autocast(dtype=ember.bfloat16):
                return torch_api_loss(F, P, x, y, M)
        return torch_api_loss(F, P, x, y, M)

    params = list(P.values()) + ([] if M is None else list(M["lstm"].parameters()))
    if CFG["opt"] == "adam":
        opt = ember.optim.Adam(params, lr=CFG["lr"])
    elif CFG["opt"] == "adamw":
        opt = ember.optim.AdamW(params, lr=CFG["lr"], weight_decay=CFG["wd"])
    else:
        opt = ember.optim.SGD(params, lr=CFG["lr"])

    def train_step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        return loss

    if a.framework == "ember_jit":
        train_step = ember.jit(train_step)

    def step(i):
        x, y = data[i % NBATCH]
        return train_step(x, y).item()
    return step


# ---------------------------------------------------------------- tinygrad
def build_tinygrad():
    from importlib.metadata import version
    from tinygrad import Tensor, TinyJit, Device, nn
    from tinygrad.helpers import Context
    extra.update(tinygrad_version=version("tinygrad"), tinygrad_device=Device.DEFAULT)
    P = {k: Tensor(v).realize() for k, v in NP_PARAMS.items()}
    data = [(Tensor(x).realize(), Tensor(y).realize()) for x, y in NP_DATA]
    if a.model == "gpt":
        emb = nn.Embedding(CFG["V"], CFG["d"])
        emb.weight = P["wte"]

    def loss_fn(x, y):
        if a.model == "mlp":
            h = x.linear(P["fc1.w"], P["fc1.b"]).relu()
            h = h.linear(P["fc2.w"], P["fc2.b"]).relu()
            return h.linear(P["fc3.w"], P["fc3.b"]).sparse_categorical_crossentropy(y)
        if a.model == "cnn":
            h = x.conv2d(P["conv1.k"], P["conv1.b"]).relu()
            h = h.conv2d(P["conv2.k"], P["conv2.b"]).relu()
            h = h.max_pool2d((2, 2)).flatten(1)
            return h.linear(P["fc.w"], P["fc.b"]).sparse_categorical_crossentropy(y)
        d, H, V = CFG["d"], CFG["H"], CFG["V"]
        B, T = x.shape
        h = emb(x) + P["wpe"][:T]
        for l in range(CFG["L"]):
            p = f"h{l}."
            z = h.layernorm(eps=EPS_LN) * P[p + "ln1.g"] + P[p + "ln1.b"]
            q, k, v = z.linear(P[p + "attn.w"], P[p + "attn.b"]).split(d, dim=-1)
            q, k, v = (t.reshape(B, T, H, d // H).transpose(1, 2) for t in (q, k, v))
            o = q.scaled_dot_product_attention(k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
            h = h + o.linear(P[p + "proj.w"], P[p + "proj.b"])
            z = h.layernorm(eps=EPS_LN) * P[p + "ln2.g"] + P[p + "ln2.b"]
            z = z.linear(P[p + "fc.w"], P[p + "fc.b"]).gelu()
            h = h + z.linear(P[p + "fc2.w"], P[p + "fc2.b"])
        h = h.layernorm(eps=EPS_LN) * P["lnf.g"] + P["lnf.b"]
        logits = h.linear(P["head.w"])
        return logits.reshape(-1, V).sparse_categorical_crossentropy(y.reshape(-1))

    params = list(P.values())
    if CFG["opt"] == "adam":
        opt = nn.optim.Adam(params, lr=CFG["lr"])
    elif CFG["opt"] == "adamw":
        opt = nn.optim.AdamW(params, lr=CFG["lr"], weight_decay=CFG["wd"])
    else:
        opt = nn.optim.SGD(params, lr=CFG["lr"])

    @TinyJit
    def jstep(x, y):
        with Context(TRAINING=1):
            opt.zero_grad()
            loss = loss_fn(x, y).backward()
            Tensor.realize(loss, *opt.schedule_step())
        return loss

    def step(i):
        x, y = data[i % NBATCH]
        return jstep(x, y).item()
    return step


# ---------------------------------------------------------------- jax
def build_jax():
    import jax
    import jax.numpy as jnp
    import optax
    from importlib.metadata import version
    extra.update(jax_version=jax.__version__, optax_version=version("optax"))
    params = {k: jnp.asarray(v) for k, v in NP_PARAMS.items()}
    data = [(jnp.asarray(x), jnp.asarray(y)) for x, y in NP_DATA]

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + EPS_LN) * g + b

    def loss_fn(P, x, y):
        if a.model == "mlp":
            h = jax.nn.relu(x @ P["fc1.w"] + P["fc1.b"])
            h = jax.nn.relu(h @ P["fc2.w"] + P["fc2.b"])
            logits = h @ P["fc3.w"] + P["fc3.b"]
        elif a.model == "cnn":
            dn = ("NCHW", "OIHW", "NCHW")
            h = jax.lax.conv_general_dilated(x, P["conv1.k"], (1, 1), "VALID", dimension_numbers=dn)
            h = jax.nn.relu(h + P["conv1.b"][None, :, None, None])
            h = jax.lax.conv_general_dilated(h, P["conv2.k"], (1, 1), "VALID", dimension_numbers=dn)
            h = jax.nn.relu(h + P["conv2.b"][None, :, None, None])
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            logits = h.reshape(h.shape[0], -1) @ P["fc.w"] + P["fc.b"]
        else:
            d, H, V = CFG["d"], CFG["H"], CFG["V"]
            B, T = x.shape
            h = P["wte"][x] + P["wpe"][:T]
            for l in range(CFG["L"]):
                p = f"h{l}."
                z = ln(h, P[p + "ln1.g"], P[p + "ln1.b"])
                qkv = z @ P[p + "attn.w"] + P[p + "attn.b"]
                q, k, v = (t.reshape(B, T, H, d // H) for t in jnp.split(qkv, 3, axis=-1))
                o = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(B, T, d)
                h = h + o @ P[p + "proj.w"] + P[p + "proj.b"]
                z = ln(h, P[p + "ln2.g"], P[p + "ln2.b"])
                z = jax.nn.gelu(z @ P[p + "fc.w"] + P[p + "fc.b"], approximate=True)
                h = h + z @ P[p + "fc2.w"] + P[p + "fc2.b"]
            h = ln(h, P["lnf.g"], P["lnf.b"])
            logits = (h @ P["head.w"]).reshape(-1, V)
            y = y.reshape(-1)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    if CFG["opt"] == "adam":
        tx = optax.adam(CFG["lr"], b1=0.9, b2=0.999, eps=1e-8)
    elif CFG["opt"] == "adamw":
        tx = optax.adamw(CFG["lr"], b1=0.9, b2=0.999, eps=1e-8, weight_decay=CFG["wd"])
    else:
        tx = optax.sgd(CFG["lr"])
    state = {"params": params, "opt": tx.init(params)}

    def jstep(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    jstep = jax.jit(jstep, donate_argnums=(0, 1))

    def step(i):
        x, y = data[i % NBATCH]
        state["params"], state["opt"], loss = jstep(state["params"], state["opt"], x, y)
        jax.block_until_ready(state["params"])
        return float(loss)
    return step


# ---------------------------------------------------------------- run
res = {"bench": "train", "model": a.model, "framework": a.framework, "batch": Bsz, "threads": a.threads, "amp": a.amp,
       "optimizer": CFG["opt"], "n_params": n_params, "warm_cache": a.warm_cache}
try:
    t0 = time.perf_counter()
    step = {"ember": build_ember, "ember_jit": build_ember, "torch": build_torch, "torch_compile": build_torch,
            "tinygrad": build_tinygrad, "jax": build_jax}[a.framework]()
    res["build_s"] = time.perf_counter() - t0
    i = 0
    losses = []
    t0 = time.perf_counter(); loss0 = step(i); res["first_step_s"] = time.perf_counter() - t0; i += 1
    t0 = time.perf_counter(); losses += [loss0, step(i)]; res["second_step_s"] = time.perf_counter() - t0; i += 1
    for _ in range(a.warmup):
        losses.append(step(i)); i += 1
    ts = []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        last = step(i)
        ts.append(time.perf_counter() - t0)
        losses.append(last)
        i += 1
    res["cpu_util"] = (time.process_time() - c0) / (time.perf_counter() - w0)
    s = stats(ts)
    s.pop("cpu_util", None)
    res.update(s)
    res["ms_median"] = s["median_s"] * 1e3
    res["samples_per_s"] = Bsz / s["median_s"]
    if TOKENS:
        res["tokens_per_s"] = Bsz * CFG["T"] / s["median_s"]
    res["model_gflop_per_step"] = model_flops_per_step() / 1e9
    res["achieved_gflops"] = model_flops_per_step() / s["median_s"] / 1e9
    res["loss_step0"] = loss0
    res["loss_last"] = last
    res["steps_total"] = i
    res["times_s"] = ts
    if a.record_losses:
        res["losses"] = losses
    res["status"] = "ok"
except Exception as e:  # record the failure honestly
    import traceback
    res["status"] = "error"
    res["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
    res["traceback_tail"] = traceback.format_exc()[-3000:]
res.update(extra)
emit(res)
