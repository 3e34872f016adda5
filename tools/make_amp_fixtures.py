"""Generate the torch.amp reference fixtures: tests/fixtures/amp.json.

    /tmp/tv/bin/python tools/make_amp_fixtures.py   (a venv with torch and numpy)

1. GradScaler: one parameter w (float32, 3 values) trained by SGD(lr=0.1) on loss = sum(c_t * w)
   for 12 steps, where c_t holds an inf at steps 2 and 7 and a value that overflows float32 once
   scaled (3e38) at step 9; init_scale=4, growth_interval=3. Stored per step: the scale after
   update(), w after the step, and whether the step ran.
2. The autocast dtype policy on the CPU (bfloat16 and float16): the result dtype of each listed
   op on float32 inputs inside torch.autocast("cpu").
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)


def scaler_trajectory() -> dict:
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=3)
    rng = np.random.default_rng(0)
    cs, scales, ws, ran = [], [], [], []
    for t in range(12):
        c = rng.standard_normal(3).astype(np.float32)
        if t in (2, 7):
            c[1] = np.inf
        if t == 9:
            c[0] = 3e38
        cs.append(c.tolist())
        opt.zero_grad()
        before = w.detach().clone()
        scaler.scale((torch.from_numpy(c) * w).sum()).backward()
        scaler.step(opt)
        scaler.update()
        ran.append(bool((w.detach() != before).any()))
        scales.append(scaler.get_scale())
        ws.append(w.detach().tolist())
    return {"c": cs, "scale": scales, "w": ws, "ran": ran, "init": [1.0, -2.0, 0.5]}


def policy() -> dict:
    x, w = torch.randn(2, 4), torch.randn(3, 4)
    img, k = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    t = torch.tensor([0, 2])
    ops = {
        "matmul": lambda: x @ w.T,
        "linear_no_bias": lambda: F.linear(x, w),
        "linear_bias": lambda: F.linear(x, w, torch.zeros(3)),
        "nll_loss_of_log_softmax": lambda: F.nll_loss(torch.log_softmax(x @ w.T, -1), t),
        "conv2d_no_bias": lambda: F.conv2d(img, k),
        "add": lambda: x + x,
        "softmax_of_matmul": lambda: torch.softmax(x @ w.T, -1),
        "cross_entropy_of_matmul": lambda: F.cross_entropy(x @ w.T, t),
        "mse_loss_of_matmul": lambda: F.mse_loss(x @ w.T, torch.zeros(2, 3)),
        "sum_of_matmul": lambda: (x @ w.T).sum(),
        "float64_matmul": lambda: x.double() @ w.double().T,
    }
    out = {}
    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        with torch.autocast("cpu", dtype=dtype):
            out[name] = {k: str(f().dtype).replace("torch.", "") for k, f in ops.items()}
    return out


def main() -> None:
    data = {"torch": torch.__version__, "scaler": scaler_trajectory(), "policy": policy()}
    with open(os.path.join(ROOT, "tests", "fixtures", "amp.json"), "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(data["policy"], indent=1), data["scaler"]["scale"], data["scaler"]["ran"])


if __name__ == "__main__":
    main()
