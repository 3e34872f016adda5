"""The three models of ../shared/bench/train.py (same layers, losses and optimizers), at toy sizes
so that eager-vs-jit agreement runs in CI; `loss(F, P, x, y)` is the harness's `torch_api_loss`."""
import numpy as np

CFGS = {
    "mlp": dict(batch=8, opt="adam", lr=1e-3, wd=0.0, sizes=(20, 32, 32, 10)),
    "cnn": dict(batch=4, opt="sgd", lr=1e-2, wd=0.0, c1=4, c2=8, hw=10),
    "gpt": dict(batch=2, opt="adamw", lr=3e-4, wd=0.01, L=2, d=16, H=2, T=8, V=32),
}
EPS_LN = 1e-5


def init_params(model, rng):
    cfg = CFGS[model]
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


def make_data(model, rng, n=4):
    cfg = CFGS[model]
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


def loss(model, F, P, x, y):
    """The harness's loss, with PyTorch's functional API."""
    if model == "mlp":
        h = F.relu(F.linear(x, P["fc1.w"], P["fc1.b"]))
        h = F.relu(F.linear(h, P["fc2.w"], P["fc2.b"]))
        return F.cross_entropy(F.linear(h, P["fc3.w"], P["fc3.b"]), y)
    if model == "cnn":
        h = F.relu(F.conv2d(x, P["conv1.k"], P["conv1.b"]))
        h = F.relu(F.conv2d(h, P["conv2.k"], P["conv2.b"]))
        h = F.max_pool2d(h, 2).flatten(1)
        return F.cross_entropy(F.linear(h, P["fc.w"], P["fc.b"]), y)
    cfg = CFGS[model]
    d, H, V = cfg["d"], cfg["H"], cfg["V"]
    B, T = x.shape
    h = F.embedding(x, P["wte"]) + P["wpe"][:T]
    for layer in range(cfg["L"]):
        p = f"h{layer}."
        z = F.layer_norm(h, (d,), P[p + "ln1.g"], P[p + "ln1.b"], EPS_LN)
        q, k, v = F.linear(z, P[p + "attn.w"], P[p + "attn.b"]).split(d, dim=-1)
        q, k, v = (t.view(B, T, H, d // H).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
        h = h + F.linear(o, P[p + "proj.w"], P[p + "proj.b"])
        z = F.layer_norm(h, (d,), P[p + "ln2.g"], P[p + "ln2.b"], EPS_LN)
        z = F.gelu(F.linear(z, P[p + "fc.w"], P[p + "fc.b"]), approximate="tanh")
        h = h + F.linear(z, P[p + "fc2.w"], P[p + "fc2.b"])
    h = F.layer_norm(h, (d,), P["lnf.g"], P["lnf.b"], EPS_LN)
    logits = F.linear(h, P["head.w"])
    return F.cross_entropy(logits.view(-1, V), y.view(-1))


def build(model, ember, opt_name=None):
    """(params dict, optimizer, data, step(x, y) -> loss) for ember, eager."""
    import ember.nn.functional as F
    cfg = CFGS[model]
    P = {k: ember.tensor(v, requires_grad=True) for k, v in init_params(model, np.random.default_rng(0)).items()}
    data = [(ember.tensor(x), ember.tensor(y)) for x, y in make_data(model, np.random.default_rng(1))]
    opt_name = opt_name or cfg["opt"]
    params = list(P.values())
    if opt_name == "adam":
        opt = ember.optim.Adam(params, lr=cfg["lr"])
    elif opt_name == "adamw":
        opt = ember.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["wd"])
    else:
        opt = ember.optim.SGD(params, lr=cfg["lr"])

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        out = loss(model, F, P, x, y)
        out.backward()
        opt.step()
        return out
    return P, opt, data, step
