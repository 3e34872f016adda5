"""The three models of bench/train.py (same layers, losses and optimizers), at toy sizes
so that eager-vs-jit agreement runs in CI; `loss(F, P, x, y)` is the harness's `torch_api_loss`."""
import importlib.util
import os

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "_harness_models", os.path.join(os.path.dirname(__file__), "..", "bench", "bench_models.py"))
_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_models)

CFGS = {
    "mlp": dict(batch=8, opt="adam", lr=1e-3, wd=0.0, sizes=(20, 32, 32, 10)),
    "cnn": dict(batch=4, opt="sgd", lr=1e-2, wd=0.0, c1=4, c2=8, hw=10),
    "gpt": dict(batch=2, opt="adamw", lr=3e-4, wd=0.01, L=2, d=16, H=2, T=8, V=32),
}


def init_params(model, rng, cfg=None):
    """The model's parameters as numpy arrays (PyTorch's default initialisation)."""
    cfg = cfg or CFGS[model]
    P = {}

    def lin(name, fin, fout, bias=True, std=None):
        if std is None:
            bound = 1.0 / np.sqrt(fin)
            P[name + ".w"] = rng.uniform(-bound, bound, (fout, fin)).astype(np.float32)
            if bias:
                P[name + ".b"] = rng.uniform(-bound, bound, (fout,)).astype(np.float32)
        else:
            P[name + ".w"] = (rng.standard_normal((fout, fin)) * std).astype(np.float32)
            if bias:
                P[name + ".b"] = np.zeros((fout,), np.float32)
    if model == "mlp":
        a, b, c, d = cfg["sizes"]
        lin("fc1", a, b); lin("fc2", b, c); lin("fc3", c, d)
    elif model == "cnn":
        for name, cin, cout in (("conv1", 1, cfg["c1"]), ("conv2", cfg["c1"], cfg["c2"])):
            bound = 1.0 / np.sqrt(cin * 9)
            P[name + ".k"] = rng.uniform(-bound, bound, (cout, cin, 3, 3)).astype(np.float32)
            P[name + ".b"] = rng.uniform(-bound, bound, (cout,)).astype(np.float32)
        s = (cfg["hw"] - 4) // 2
        lin("fc", cfg["c2"] * s * s, 10)
    else:
        d, V, T = cfg["d"], cfg["V"], cfg["T"]
        P["wte"] = (rng.standard_normal((V, d)) * 0.02).astype(np.float32)
        P["wpe"] = (rng.standard_normal((T, d)) * 0.02).astype(np.float32)
        for layer in range(cfg["L"]):
            p = f"h{layer}."
            P[p + "ln1.g"], P[p + "ln1.b"] = np.ones(d, np.float32), np.zeros(d, np.float32)
            lin(p + "attn", d, 3 * d, std=0.02)
            lin(p + "proj", d, d, std=0.02)
            P[p + "ln2.g"], P[p + "ln2.b"] = np.ones(d, np.float32), np.zeros(d, np.float32)
            lin(p + "fc", d, 4 * d, std=0.02)
            lin(p + "fc2", 4 * d, d, std=0.02)
        P["lnf.g"], P["lnf.b"] = np.ones(d, np.float32), np.zeros(d, np.float32)
        lin("head", d, V, bias=False, std=0.02)
    return P


def make_data(model, rng, n=4, cfg=None):
    """`n` (x, y) batches."""
    cfg = cfg or CFGS[model]
    B = cfg["batch"]
    out = []
    for _ in range(n):
        if model == "mlp":
            x = rng.standard_normal((B, cfg["sizes"][0])).astype(np.float32)
            y = rng.integers(0, 10, (B,))
        elif model == "cnn":
            x = rng.standard_normal((B, 1, cfg["hw"], cfg["hw"])).astype(np.float32)
            y = rng.integers(0, 10, (B,))
        else:
            x = rng.integers(0, cfg["V"], (B, cfg["T"]))
            y = rng.integers(0, cfg["V"], (B, cfg["T"]))
        out.append((x, y.astype(np.int64)))
    return out


def loss(model, F, P, x, y, cfg=None):
    """The harness's loss (bench/bench_models.py), with PyTorch's functional API."""
    return _models.loss(model, cfg or CFGS[model], F, P, x, y)


def build(model, ember, opt_name=None, cfg=None, seed=0, momentum=0.0):
    """(params dict, optimizer, data, step(x, y) -> loss) for ember, eager; `cfg` replaces the
    model's toy configuration, `seed` the seeds of its parameters (`seed`) and data (`seed + 1`)."""
    import ember.nn.functional as F
    cfg = cfg or CFGS[model]
    P = {k: ember.tensor(v, requires_grad=True)
         for k, v in init_params(model, np.random.default_rng(seed), cfg).items()}
    data = [(ember.tensor(x), ember.tensor(y)) for x, y in make_data(model, np.random.default_rng(seed + 1), cfg=cfg)]
    opt_name = opt_name or cfg["opt"]
    params = list(P.values())
    if opt_name == "adam":
        opt = ember.optim.Adam(params, lr=cfg["lr"])
    elif opt_name == "adamw":
        opt = ember.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["wd"])
    else:
        opt = ember.optim.SGD(params, lr=cfg["lr"], momentum=momentum)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        out = loss(model, F, P, x, y, cfg)
        out.backward()
        opt.step()
        return out
    return P, opt, data, step
