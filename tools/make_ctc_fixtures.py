"""Generate the F.ctc_loss reference fixtures: tests/fixtures/ctc.{json,safetensors}.

    /tmp/tv/bin/python tools/make_ctc_fixtures.py   (a venv with torch, numpy, safetensors)

Per case and dtype: logits (seeded normals), the loss of log_softmax(logits), and d loss / d logits.
The gradient is taken with respect to the logits because PyTorch's CTC backward returns, as the
gradient with respect to log_probs, exp(log_probs) - posterior: the gradient with respect to the
logits of a log_softmax in front (which its backward then leaves unchanged), not d loss / d log_probs
(which is -posterior, ember's, checked by gradcheck). Through a log_softmax both agree. Cases: padded and concatenated targets, repeated labels, an empty
target, an impossible alignment (inf, and 0 with zero_infinity), unbatched input, a non-zero
blank, each reduction. The JSON holds targets, lengths and options.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)

CASES = [
    dict(name="padded_mean", T=6, N=3, C=5, targets=[[1, 2, 2], [3, 0, 0], [4, 1, 0]], tl=[3, 1, 2], il=[6, 4, 5]),
    dict(name="padded_sum", T=6, N=3, C=5, targets=[[1, 2, 2], [3, 0, 0], [4, 1, 0]], tl=[3, 1, 2], il=[6, 4, 5],
         reduction="sum"),
    dict(name="concat_none", T=8, N=2, C=4, targets=[1, 1, 2, 3, 3], tl=[3, 2], il=[8, 7], reduction="none"),
    dict(name="empty_target", T=4, N=2, C=3, targets=[[1, 2], [0, 0]], tl=[2, 0], il=[4, 3], reduction="none"),
    dict(name="impossible", T=3, N=2, C=3, targets=[[1, 1, 1], [2, 0, 0]], tl=[3, 1], il=[3, 3], reduction="none"),
    dict(name="impossible_zero_inf", T=3, N=2, C=3, targets=[[1, 1, 1], [2, 0, 0]], tl=[3, 1], il=[3, 3],
         zero_infinity=True),
    dict(name="unbatched", T=5, N=None, C=4, targets=[1, 3], tl=[2], il=[5], reduction="sum"),
    dict(name="blank_last", T=7, N=2, C=4, targets=[[0, 1, 2], [2, 2, 0]], tl=[3, 2], il=[7, 6], blank=3),
]


def main() -> None:
    out, meta = {}, {}
    for c in CASES:
        for dtype in ("float32", "float64"):
            key = f"{c['name']}.{dtype}"
            rng = np.random.default_rng(sum(map(ord, c["name"])))
            shape = (c["T"], c["C"]) if c["N"] is None else (c["T"], c["N"], c["C"])
            x = rng.standard_normal(shape).astype(dtype)
            logits = torch.tensor(x, requires_grad=True)
            lp = torch.log_softmax(logits, -1)
            tgt = torch.tensor(c["targets"])
            il = torch.tensor(c["il"]) if c["N"] is not None else torch.tensor(c["il"][0])
            tl = torch.tensor(c["tl"]) if c["N"] is not None else torch.tensor(c["tl"][0])
            loss = F.ctc_loss(lp, tgt, il, tl, blank=c.get("blank", 0), reduction=c.get("reduction", "mean"),
                              zero_infinity=c.get("zero_infinity", False))
            finite = torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss)).sum()
            (g,) = torch.autograd.grad(finite, logits)
            out[f"{key}.logits"] = np.array(x, order="C")
            out[f"{key}.loss"] = np.array(loss.detach().numpy(), order="C")
            out[f"{key}.grad"] = np.array(g.numpy(), order="C")
        meta[c["name"]] = {k: v for k, v in c.items() if k not in ("name", "T", "N", "C")}
    save_file(out, os.path.join(ROOT, "tests", "fixtures", "ctc.safetensors"))
    with open(os.path.join(ROOT, "tests", "fixtures", "ctc.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": meta}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(len(out), "tensors")


if __name__ == "__main__":
    main()
