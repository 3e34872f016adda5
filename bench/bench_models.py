"""The losses of the harness models (mlp, cnn, gpt, lstm), written once with PyTorch's API so that
torch, ember (eager and jit) and the tests run the same model; `cfg` holds the GPT sizes (d, H,
V, L) and the LSTM's (E, hidden, L, V); `M` holds modules: the LSTM's `nn.LSTM`, each framework's
own, so torch runs its fused LSTM kernel."""

EPS_LN = 1e-5


def loss(model, cfg, F, P, x, y, M=None):
    """Cross-entropy of `model` with parameters `P` (and modules `M`) on a batch (x, y)."""
    if model == "lstm":  # a character language model: embedding, 2-layer LSTM, linear head
        out, _ = M["lstm"](F.embedding(x, P["emb"]))
        return F.cross_entropy(F.linear(out, P["head.w"], P["head.b"]).reshape(-1, cfg["V"]), y.reshape(-1))
    if model == "mlp":
        h = F.relu(F.linear(x, P["fc1.w"], P["fc1.b"]))
        h = F.relu(F.linear(h, P["fc2.w"], P["fc2.b"]))
        return F.cross_entropy(F.linear(h, P["fc3.w"], P["fc3.b"]), y)
    if model == "cnn":
        h = F.relu(F.conv2d(x, P["conv1.k"], P["conv1.b"]))
        h = F.relu(F.conv2d(h, P["conv2.k"], P["conv2.b"]))
        h = F.max_pool2d(h, 2).flatten(1)
        return F.cross_entropy(F.linear(h, P["fc.w"], P["fc.b"]), y)
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
