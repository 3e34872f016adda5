"""Generate the PyTorch reference fixtures for ember.optim: tests/fixtures/optim.{safetensors,json}.

Run from the repository root with the separate torch environment (torch is never imported by
ember or its tests):

    /work/torchenv/bin/python tools/make_optim_fixtures.py

Deterministic and idempotent (inputs drawn with numpy from fixed seeds; torch single-threaded;
the optimizers run PyTorch's single-tensor path, `foreach=False`, which is what PyTorch uses on
the CPU by default). Three parts:

1. Optimizer trajectories. A fixed problem: four parameters of shapes (3, 4), (5,), (2, 3, 2)
   and () with targets; at step t the gradient is ``c * (p - target) + noise[t]`` (noise stored),
   except that parameter 1 gets no gradient (``grad = None``) at the steps in ``skip``. Each case
   runs 10 steps in float32 and in float64 and stores the parameters after every step and the
   optimizer's final state. Some cases use two parameter groups or step an LR scheduler after
   every optimizer step.
2. Schedulers: the learning rates of a two-group optimizer (lr 0.1 and 0.05) after construction
   and after each of 100 `scheduler.step()` calls (101 values per group). `warmup_cosine*` are
   torch's SequentialLR(LinearLR, CosineAnnealingLR), the reference for ember's WarmupCosineLR.
3. clip_grad_norm_: the total norm and the clipped gradients for norm types 2, 1 and inf, with a
   max_norm that clips and one that does not.

Keys: ``problem.{f32|f64}.{init|target}.p{i}``, ``problem.{f32|f64}.noise{t}.p{i}``,
``{case}.step{t}.p{i}``, ``{case}.state.p{i}.{name}``, ``sched.{case}``
(float64, shape (101, groups)), ``clip.{case}.{grads|out}.p{i}``, ``clip.{case}.total_norm``.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
warnings.filterwarnings("ignore", category=UserWarning)

SHAPES = [(3, 4), (5,), (2, 3, 2), ()]
C = 0.5
STEPS = 10
SKIP = {1: [3, 4]}  # parameter index -> steps at which it has no gradient
DT = {"f32": (torch.float32, np.float32), "f64": (torch.float64, np.float64)}

OPT_CASES = [
    # name, optimizer, kwargs, groups (None: one group of all params), scheduler
    ("sgd", "SGD", dict(lr=0.1), None, None),
    ("sgd_momentum", "SGD", dict(lr=0.1, momentum=0.9), None, None),
    ("sgd_dampening", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.3), None, None),
    ("sgd_nesterov", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True), None, None),
    ("sgd_weight_decay", "SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05), None, None),
    ("sgd_maximize", "SGD", dict(lr=0.1, momentum=0.5, maximize=True), None, None),
    ("sgd_cosine", "SGD", dict(lr=0.1, momentum=0.9), None, ("CosineAnnealingLR", dict(T_max=6))),
    ("adam", "Adam", dict(lr=0.01), None, None),
    ("adam_weight_decay", "Adam", dict(lr=0.01, weight_decay=0.1), None, None),
    ("adam_amsgrad", "Adam", dict(lr=0.01, amsgrad=True), None, None),
    ("adam_maximize", "Adam", dict(lr=0.01, maximize=True), None, None),
    ("adam_betas", "Adam", dict(lr=0.02, betas=(0.5, 0.9), eps=1e-6), None, None),
    ("adam_steplr", "Adam", dict(lr=0.01), None, ("StepLR", dict(step_size=3, gamma=0.5))),
    ("adam_groups", "Adam", dict(lr=0.01),
     [dict(params=[0, 1]), dict(params=[2, 3], lr=0.003, weight_decay=0.1, amsgrad=True)], None),
    ("adamw", "AdamW", dict(lr=0.01), None, None),
    ("adamw_amsgrad", "AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True), None, None),
]

SCHED_CASES = [
    # name, scheduler (or "warmup_cosine"), kwargs
    ("steplr", "StepLR", dict(step_size=10, gamma=0.5)),
    ("cosine", "CosineAnnealingLR", dict(T_max=30, eta_min=0.001)),
    ("cosine_full", "CosineAnnealingLR", dict(T_max=100)),
    ("linear_warmup", "LinearLR", dict(start_factor=0.25, total_iters=20)),
    ("linear_decay", "LinearLR", dict(start_factor=1.0, end_factor=0.1, total_iters=50)),
    ("lambda_exp", "LambdaLR", dict(lr_lambda="exp")),
    ("lambda_warmup", "LambdaLR", dict(lr_lambda="warmup")),
    ("warmup_cosine", "WarmupCosineLR",
     dict(warmup_steps=10, total_steps=100, min_lr=1e-4, warmup_start_factor=0.01)),
    ("warmup_cosine_zero_min", "WarmupCosineLR",
     dict(warmup_steps=5, total_steps=100, min_lr=0.0, warmup_start_factor=0.2)),
]
LAMBDAS = {"exp": lambda e: 0.95 ** e, "warmup": lambda e: min(1.0, (e + 1) / 10)}
SCHED_STEPS = 100
SCHED_LRS = [0.1, 0.05]

CLIP_SHAPES = [(3, 4), (5,), (2, 3, 2)]


def _c(a) -> np.ndarray:
    return np.array(a, order="C", copy=True)


def problem(tensors: dict) -> None:
    rng = np.random.default_rng(20240611)
    init = [rng.standard_normal(s) for s in SHAPES]
    target = [rng.standard_normal(s) for s in SHAPES]
    noise = [[rng.standard_normal(s) * 0.1 for s in SHAPES] for _ in range(STEPS)]
    for short, (_, npd) in DT.items():
        for i in range(len(SHAPES)):
            tensors[f"problem.{short}.init.p{i}"] = _c(init[i].astype(npd))
            tensors[f"problem.{short}.target.p{i}"] = _c(target[i].astype(npd))
            for t in range(STEPS):
                tensors[f"problem.{short}.noise{t}.p{i}"] = _c(noise[t][i].astype(npd))


def run_optimizer(tensors: dict, name, opt_name, kwargs, groups, sched, short, cls=None) -> dict:
    """One trajectory of the fixed problem; `cls` (default: torch.optim's single-tensor path) is
    any optimizer class taking torch.optim's arguments (make_optim2_fixtures' references)."""
    tdt = DT[short][0]
    params = [torch.tensor(tensors[f"problem.{short}.init.p{i}"], dtype=tdt, requires_grad=True)
              for i in range(len(SHAPES))]
    targets = [torch.tensor(tensors[f"problem.{short}.target.p{i}"]) for i in range(len(SHAPES))]
    extra = {} if cls is not None else {"foreach": False}
    cls = cls or getattr(torch.optim, opt_name)
    if groups is None:
        opt = cls(params, **extra, **kwargs)
    else:
        opt = cls([dict(g, params=[params[i] for i in g["params"]]) for g in groups], **extra, **kwargs)
    scheduler = getattr(torch.optim.lr_scheduler, sched[0])(opt, **sched[1]) if sched else None
    case = f"{name}_{short}"
    for t in range(STEPS):
        for i, p in enumerate(params):
            if t in SKIP.get(i, []):
                p.grad = None
            else:
                noise = torch.tensor(tensors[f"problem.{short}.noise{t}.p{i}"])
                with torch.no_grad():
                    p.grad = C * (p - targets[i]) + noise
        opt.step()
        if scheduler is not None:
            scheduler.step()
        for i, p in enumerate(params):
            tensors[f"{case}.step{t}.p{i}"] = _c(p.detach().numpy())
    state_keys = {}
    for i, p in enumerate(params):
        keys = []
        for k, v in opt.state[p].items():
            if isinstance(v, torch.Tensor):
                tensors[f"{case}.state.p{i}.{k}"] = _c(v.detach().numpy())
                keys.append(k)
        state_keys[str(i)] = keys
    return {"name": case, "optimizer": opt_name, "kwargs": kwargs, "groups": groups,
            "scheduler": {"type": sched[0], "kwargs": sched[1]} if sched else None,
            "dtype": {"f32": "float32", "f64": "float64"}[short], "state_keys": state_keys}


def run_scheduler(tensors: dict, name, kind, kwargs) -> dict:
    dummy = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD([{"params": [dummy[0]], "lr": SCHED_LRS[0]},
                           {"params": [dummy[1]], "lr": SCHED_LRS[1]}], lr=SCHED_LRS[0])
    S = torch.optim.lr_scheduler
    if kind == "WarmupCosineLR":
        W, T = kwargs["warmup_steps"], kwargs["total_steps"]
        warm = S.LinearLR(opt, start_factor=kwargs["warmup_start_factor"], end_factor=1.0, total_iters=W)
        cos = S.CosineAnnealingLR(opt, T_max=T - W, eta_min=kwargs["min_lr"])
        sched = S.SequentialLR(opt, [warm, cos], milestones=[W])
    elif kind == "LambdaLR":
        sched = S.LambdaLR(opt, LAMBDAS[kwargs["lr_lambda"]])
    else:
        sched = getattr(S, kind)(opt, **kwargs)
    lrs = [[g["lr"] for g in opt.param_groups]]
    for _ in range(SCHED_STEPS):
        opt.step()
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    tensors[f"sched.{name}"] = np.array(lrs, dtype=np.float64)
    return {"name": name, "scheduler": kind, "kwargs": kwargs, "lrs": SCHED_LRS, "steps": SCHED_STEPS}


def run_clip(tensors: dict) -> list:
    rng = np.random.default_rng(7)
    base = [rng.standard_normal(s) for s in CLIP_SHAPES]
    cases = []
    for short, (tdt, npd) in DT.items():
        for norm_type, tag in ((2.0, "l2"), (1.0, "l1"), (float("inf"), "inf")):
            for max_norm, ctag in ((0.5, "clip"), (100.0, "noclip")):
                case = f"{tag}_{ctag}_{short}"
                params = [torch.zeros(s, dtype=tdt, requires_grad=True) for s in CLIP_SHAPES]
                for i, p in enumerate(params):
                    p.grad = torch.tensor(base[i].astype(npd))
                    tensors[f"clip.{case}.grads.p{i}"] = _c(base[i].astype(npd))
                total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type, foreach=False)
                tensors[f"clip.{case}.total_norm"] = _c(total.detach().numpy())
                for i, p in enumerate(params):
                    tensors[f"clip.{case}.out.p{i}"] = _c(p.grad.numpy())
                cases.append({"name": case, "norm_type": "inf" if norm_type == float("inf") else norm_type,
                              "max_norm": max_norm, "dtype": {"f32": "float32", "f64": "float64"}[short],
                              "n": len(CLIP_SHAPES)})
    return cases


def main() -> None:
    tensors: dict = {}
    problem(tensors)
    opt_cases = [run_optimizer(tensors, *case, short) for case in OPT_CASES for short in DT]
    sched_cases = [run_scheduler(tensors, *case) for case in SCHED_CASES]
    clip_cases = run_clip(tensors)
    meta = {
        "torch_version": torch.__version__,
        "problem": {"shapes": [list(s) for s in SHAPES], "c": C, "steps": STEPS,
                    "skip": {str(k): v for k, v in SKIP.items()},
                    "grad": "c * (p - target) + noise[t]; no grad for parameter i at the steps skip[i]"},
        "optimizers": opt_cases,
        "schedulers": sched_cases,
        "clip": clip_cases,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, "optim.safetensors")
    save_file(tensors, path, metadata={"torch_version": torch.__version__})
    os.chmod(path, 0o644)  # safetensors writes 0600
    with open(os.path.join(OUT_DIR, "optim.json"), "w") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"optim: {len(opt_cases)} optimizer runs, {len(sched_cases)} schedulers, "
          f"{len(clip_cases)} clip cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
