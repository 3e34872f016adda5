"""Generate tests/fixtures/prune.{json,safetensors}: torch.nn.utils.prune's masks, torch.topk's choice
among ties, and the distillation losses (values and gradients) that tests/test_deploy_*.py compare
against without torch.

    python3 -m venv /tmp/tvp && /tmp/tvp/bin/pip install -q torch==2.13.0 numpy safetensors
    /tmp/tvp/bin/python tools/make_prune_fixtures.py

Weights are rounded to one decimal so that many magnitudes tie (the mask then depends on how
torch.topk breaks ties). Keys: ``{case}.w{i}`` (the weights), ``{case}.mask{i}`` (after each
pruning round, i-th tensor), ``topk{j}.x`` / ``.sel`` (a 0/1 array of the picked indices),
``kd{j}.s`` / ``.t`` / ``.y`` / ``.loss`` / ``.grad``, ``at.s`` / ``.t`` / ``.loss`` / ``.grad``.
The json lists each case's rounds (method and arguments).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)


def C(a) -> np.ndarray:
    return np.array(a, order="C", copy=True)


def tied(rng, shape, decimals=1) -> np.ndarray:
    return np.round(rng.standard_normal(shape), decimals).astype(np.float32)


def holder(w: np.ndarray) -> torch.nn.Module:
    m = torch.nn.Module()
    m.weight = torch.nn.Parameter(torch.tensor(w))
    return m


# each case: (name, shapes, rounds); a round is (method, kwargs); "global" prunes every tensor together
CASES = [
    ("l1_frac", [(6, 10)], [("l1", {"amount": 0.37})]),
    ("l1_int", [(4, 3, 3, 3)], [("l1", {"amount": 50})]),
    ("l1_round_half", [(10,)], [("l1", {"amount": 0.25})]),
    ("l1_partial_sort", [(40, 50)], [("l1", {"amount": 20})]),
    ("l1_all", [(3, 4)], [("l1", {"amount": 1.0})]),
    ("l1_none", [(3, 4)], [("l1", {"amount": 0})]),
    ("l1_iterative", [(8, 16)], [("l1", {"amount": 0.3}), ("l1", {"amount": 0.5}), ("l1", {"amount": 7})]),
    ("global_frac", [(5, 8), (4, 3, 2, 2), (20,)], [("global", {"amount": 0.6})]),
    ("global_int", [(5, 8), (16, 4)], [("global", {"amount": 33})]),
    ("global_iterative", [(6, 6), (30,)], [("global", {"amount": 0.25}), ("global", {"amount": 0.5})]),
    ("ln_l1_dim0", [(8, 3, 3, 3)], [("ln", {"amount": 0.5, "n": 1, "dim": 0})]),
    ("ln_l2_dim0_int", [(8, 3, 3, 3)], [("ln", {"amount": 3, "n": 2, "dim": 0})]),
    ("ln_l2_dim1", [(6, 8, 2, 2)], [("ln", {"amount": 0.25, "n": 2, "dim": 1})]),
    ("ln_linear_dim_neg", [(6, 9)], [("ln", {"amount": 4, "n": 1, "dim": -1})]),
    ("ln_iterative", [(10, 4, 3, 3)], [("ln", {"amount": 0.3, "n": 2, "dim": 0}),
                                        ("ln", {"amount": 0.5, "n": 2, "dim": 0})]),
    ("mixed", [(6, 4, 3, 3)], [("ln", {"amount": 2, "n": 1, "dim": 0}), ("l1", {"amount": 0.4})]),
]


def with_tied_filters(w: np.ndarray, rng) -> np.ndarray:
    """Make some slices along dims 0 and 1 sign-flipped copies of others: exactly equal norms."""
    w = w.copy()
    for d in (0, 1):
        if w.ndim > 1 and w.shape[d] >= 4:
            src = np.take(w, [0, 1], axis=d)
            flip = np.where(rng.random(src.shape) < 0.5, -1, 1).astype(np.float32)
            idx = [slice(None)] * w.ndim
            idx[d] = slice(w.shape[d] - 2, w.shape[d])
            w[tuple(idx)] = src * flip
    return w


def prune_cases(out: dict, meta: dict) -> None:
    rng = np.random.default_rng(1234)
    for name, shapes, rounds in CASES:
        ws = [with_tied_filters(tied(rng, s), rng) for s in shapes]
        mods = [holder(w) for w in ws]
        for i, w in enumerate(ws):
            out[f"{name}.w{i}"] = C(w)
        for r, (method, kw) in enumerate(rounds):
            if method == "l1":
                prune.l1_unstructured(mods[0], "weight", **kw)
            elif method == "ln":
                prune.ln_structured(mods[0], "weight", **kw)
            else:
                prune.global_unstructured([(m, "weight") for m in mods], prune.L1Unstructured, **kw)
            for i, m in enumerate(mods):
                if hasattr(m, "weight_mask"):
                    out[f"{name}.mask{r}.{i}"] = C(m.weight_mask.detach().numpy())
        meta[name] = {"shapes": shapes, "rounds": rounds}


def topk_cases(out: dict) -> list:
    """torch.topk on tie-heavy vectors: both of its CPU paths (partial sort when k*64 <= n)."""
    rng = np.random.default_rng(99)
    info = []
    j = 0
    for n in (7, 33, 64, 200, 1500):
        for levels in (2, 4, 16):
            x = rng.integers(0, levels, n).astype(np.float32) * 0.5
            for k in sorted({1, max(1, n // 64), n // 3, n - 2}):
                for largest in (False, True):
                    idx = torch.topk(torch.tensor(x), k, largest=largest).indices.numpy()
                    sel = np.zeros(n, np.uint8)
                    sel[idx] = 1
                    out[f"topk{j}.x"], out[f"topk{j}.sel"] = C(x), C(sel)
                    info.append({"k": int(k), "largest": largest})
                    j += 1
    return info


def kd_reference(s, t, y, T, alpha):
    """The KD loss written with torch.nn.functional.kl_div (log_softmax, softmax, batchmean)."""
    kd = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean") * T * T
    return alpha * kd + (1 - alpha) * F.cross_entropy(s, y)


def kd_cases(out: dict) -> list:
    rng = np.random.default_rng(7)
    info = []
    for j, (T, alpha, shape) in enumerate([(1.0, 0.5, (6, 5)), (4.0, 0.9, (6, 5)), (4.0, 0.0, (8, 10)),
                                           (2.0, 1.0, (4, 3)), (20.0, 0.7, (5, 7)), (3.0, 0.3, (4, 6, 3))]):
        s = (rng.standard_normal(shape) * 3).astype(np.float32)
        t = (rng.standard_normal(shape) * 3).astype(np.float32)
        y = rng.integers(0, shape[1], (shape[0],) + shape[2:]).astype(np.int64)
        st = torch.tensor(s, requires_grad=True)
        loss = kd_reference(st, torch.tensor(t), torch.tensor(y), T, alpha)
        loss.backward()
        for k, v in (("s", s), ("t", t), ("y", y), ("loss", loss.detach().numpy()), ("grad", st.grad.numpy())):
            out[f"kd{j}.{k}"] = C(v)
        info.append({"temperature": T, "alpha": alpha})
    return info


def at_case(out: dict) -> None:
    """Zagoruyko & Komodakis's reference at_loss (p = 2) and its gradient."""
    rng = np.random.default_rng(11)
    s = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    t = rng.standard_normal((3, 6, 5, 5)).astype(np.float32)
    st = torch.tensor(s, requires_grad=True)

    def at(x):
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))
    loss = (at(st) - at(torch.tensor(t))).pow(2).mean()
    loss.backward()
    for k, v in (("s", s), ("t", t), ("loss", loss.detach().numpy()), ("grad", st.grad.numpy())):
        out[f"at.{k}"] = C(v)


def main() -> None:
    out, meta = {}, {}
    prune_cases(out, meta)
    topk = topk_cases(out)
    kd = kd_cases(out)
    at_case(out)
    save_file(out, os.path.join(ROOT, "tests", "fixtures", "prune.safetensors"))
    with open(os.path.join(ROOT, "tests", "fixtures", "prune.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": meta, "topk": topk, "kd": kd}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
