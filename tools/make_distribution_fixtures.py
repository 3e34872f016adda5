"""Generate the torch.distributions reference fixtures: tests/fixtures/distributions.{safetensors,json}.

    /tmp/tv/bin/python tools/make_distribution_fixtures.py   (a venv with torch, numpy, safetensors)

The cases live in tests/_distribution_cases.py, shared with tests/test_distributions.py. Per case
(float64): log_prob(value), entropy(), the listed attributes (cdf means cdf(value)), and the
gradients of sum(log_prob) + sum(entropy) with respect to each parameter; per KL case,
kl_divergence(p, q) and its gradients. Keys: ``{case}.p{i}``, ``.value``, ``.log_prob``,
``.entropy``, ``.{attr}``, ``.grad{i}``; ``kl.{case}.p{i}``, ``.out``, ``.grad{i}``.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.distributions as D
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from _distribution_cases import CASES, KL_CASES  # noqa: E402

torch.set_num_threads(1)


def arr(t) -> np.ndarray:
    return np.array(t.detach().numpy(), order="C")


def main() -> None:
    out, meta = {}, {}
    for name, make, params, value, attrs in CASES:
        ps = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
        d = make(D, *ps)
        v = torch.tensor(value, dtype=torch.int64 if value.dtype.kind == "i" else torch.float64)
        lp, ent = d.log_prob(v), d.entropy()
        for i, p in enumerate(params):
            out[f"{name}.p{i}"] = np.array(p, np.float64, order="C")
        out[f"{name}.value"] = np.array(value, order="C")
        out[f"{name}.log_prob"], out[f"{name}.entropy"] = arr(lp), arr(ent)
        for a in attrs:
            out[f"{name}.{a}"] = arr(d.cdf(v) if a == "cdf" else getattr(d, a))
        loss = lp.sum() + ent.sum()
        grads = torch.autograd.grad(loss, ps, allow_unused=True)
        for i, g in enumerate(grads):
            out[f"{name}.grad{i}"] = arr(g if g is not None else torch.zeros_like(ps[i]))
        meta[name] = {"attrs": attrs, "batch_shape": list(d.batch_shape), "event_shape": list(d.event_shape)}
    for name, make, params in KL_CASES:
        ps = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
        p, q = make(D, *ps)
        kl = D.kl_divergence(p, q)
        for i, a in enumerate(params):
            out[f"kl.{name}.p{i}"] = np.array(a, np.float64, order="C")
        out[f"kl.{name}.out"] = arr(kl)
        finite = torch.where(torch.isfinite(kl), kl, torch.zeros_like(kl)).sum()
        for i, g in enumerate(torch.autograd.grad(finite, ps, allow_unused=True)):
            out[f"kl.{name}.grad{i}"] = arr(g if g is not None else torch.zeros_like(ps[i]))
    save_file(out, os.path.join(ROOT, "tests", "fixtures", "distributions.safetensors"))
    with open(os.path.join(ROOT, "tests", "fixtures", "distributions.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": meta}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(CASES)} cases, {len(KL_CASES)} KL cases, {len(out)} tensors")


if __name__ == "__main__":
    main()
