"""Generate the reference fixtures for ember.optim's second batch: tests/fixtures/optim2.{safetensors,json}.

Run from the repository root with the separate torch environment (torch is never imported by
ember or its tests):

    /tmp/tv/bin/python tools/make_optim2_fixtures.py

Deterministic and idempotent (inputs from numpy with fixed seeds; torch single-threaded; PyTorch's
single-tensor path, `foreach=False`). tests/fixtures/optim.* (tools/make_optim_fixtures.py) are
left as they are. Four parts:

1. Optimizer trajectories, the scheme of make_optim_fixtures.py: the same fixed problem (four
   parameters of shapes (3, 4), (5,), (2, 3, 2), (), gradient ``c * (p - target) + noise[t]``,
   parameter 1 without a gradient at the steps in ``skip``), 10 steps in float32 and float64,
   parameters after every step and the final state; some cases with two parameter groups or an
   LR scheduler. PyTorch's RMSprop, Adagrad and Adadelta, and two optimizers PyTorch does not
   have, written here with torch tensor ops (so that the reference is still computed outside
   ember):

   - LAMB: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"
     (ICLR 2020, arXiv:1904.00962), Algorithm 2 with phi = identity, as NVIDIA apex's
     ``FusedLAMB`` (csrc/multi_tensor_lamb.cu: ``adam_w_mode=True``, ``use_nvlamb=True``,
     ``max_grad_norm=0``) and torch-optimizer's ``Lamb`` compute it: Adam moments, bias
     correction (optional), ``u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p``, trust ratio
     ``||p|| / ||u||`` (1 when either norm is 0), ``p -= lr * ratio * u``.
   - Lion: Chen et al., "Symbolic Discovery of Optimization Algorithms" (arXiv:2302.06675),
     Program 1, as lucidrains' ``lion-pytorch`` (lion_pytorch/lion_pytorch.py, ``update_fn``):
     ``p *= 1 - lr * wd; p -= lr * sign(b1 * m + (1 - b1) * g); m = b2 * m + (1 - b2) * g``.

2. L-BFGS: torch.optim.LBFGS, with and without ``line_search_fn="strong_wolfe"``, 10 calls of
   ``step(closure)`` on two deterministic closures: ``quartic`` (a separable convex quadratic
   plus quartic in the fixed problem's parameters; parameter 1 is not in the loss, so its
   ``.grad`` stays None) and ``rosenbrock`` (the 5-dimensional Rosenbrock function of two
   parameters of shapes (2,) and (3,), from (-1.2, 1, -1.2, 1, -1.2), plus a third parameter
   outside the loss). Stored: the parameters and the returned loss after every call, and the
   final state (``func_evals``, ``n_iter``, ``d``, ``prev_flat_grad``).

3. Schedulers: the learning rates of a two-group optimizer (lr 0.1 and 0.05) after construction
   and after each of 100 steps (101 values per group), as in make_optim_fixtures.py; OneCycleLR
   with ``cycle_momentum`` also stores the momentum (SGD) or beta1 (Adam) trace; ReduceLROnPlateau
   is stepped with a stored metric sequence; CosineAnnealingWarmRestarts also with fractional
   ``step(epoch)`` calls.

The options of each case are chosen so that the comparison is well-conditioned at the tolerances
of tests/test_optim.py (float32: rtol 1e-6 + atol 1e-7; float64: rtol 1e-12). On this build
PyTorch's float32 `sqrt` is not correctly rounded (1 ulp off now and then) and `lerp`, `addcmul`
and `add(alpha=)` contract to FMA (measured); a heavy momentum (RMSprop 0.9 at lr 1e-2: 1.1x the
tolerance), a centered RMSprop with a small alpha (alpha 0.3: v - ga^2 cancels, 170x) or a long
L-BFGS run along Rosenbrock's valley (50 strong-Wolfe iterations from (-1.2, 1, ...): 0.09 apart
in float32 after different line-search decisions, 1e-9 relative in float64) magnify those last
bits past them, so they are not used here (the centered small-alpha branch is checked against a
closed form in tests/test_optim_extra.py instead).

Keys: ``problem.{f32|f64}.{init|target}.p{i}``, ``problem.{f32|f64}.noise{t}.p{i}``,
``{case}.step{t}.p{i}``, ``{case}.state.p{i}.{name}``, ``lbfgs.{case}.step{t}.p{i}``,
``lbfgs.{case}.loss``, ``lbfgs.{case}.state.{name}``, ``lbfgs.quartic.{f32|f64}.{a|b}.p{i}``,
``sched.{case}`` (float64, (101, groups)), ``sched.{case}.momentum``, ``sched.{case}.metrics``.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch
from safetensors.numpy import save_file

from make_optim_fixtures import C, DT, SHAPES, SKIP, STEPS, _c, problem  # the same problem
from make_optim_fixtures import run_optimizer as _trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
warnings.filterwarnings("ignore", category=UserWarning)

DTYPE_NAME = {"f32": "float32", "f64": "float64"}


# ====================================================================== reference LAMB and Lion
class RefLAMB(torch.optim.Optimizer):
    """LAMB (You et al. 2020, Algorithm 2; apex FusedLAMB with adam_w_mode and use_nvlamb)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 bias_correction=True, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction, maximize=maximize))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                step = st["step"].item()
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(g * (1 - b1))
                v.mul_(b2).add_(g * (1 - b2) * g)
                if group["bias_correction"]:
                    m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
                else:
                    m_hat, v_hat = m, v
                u = m_hat / (v_hat.sqrt() + eps)
                if wd != 0:
                    u = u + p * wd
                w_norm = (p * p).sum().sqrt()
                u_norm = (u * u).sum().sqrt()
                trust = w_norm / u_norm if (w_norm > 0 and u_norm > 0) else torch.tensor(1.0, dtype=p.dtype)
                p.sub_((lr * trust) * u)


class RefLion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, Program 1; lucidrains' lion-pytorch update_fn)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = -p.grad if group["maximize"] else p.grad
                st = self.state[p]
                if not st:
                    st["exp_avg"] = torch.zeros_like(p)
                exp_avg = st["exp_avg"]
                p.data.mul_(1.0 - lr * wd)
                update = exp_avg.clone().mul_(b1).add(grad, alpha=1.0 - b1).sign_()
                p.add_(update, alpha=-lr)
                exp_avg.mul_(b2).add_(grad, alpha=1.0 - b2)


REFERENCE = {"LAMB": RefLAMB, "Lion": RefLion}

OPT_CASES = [
    # name, optimizer, kwargs, groups (None: one group of all params), scheduler
    ("rmsprop", "RMSprop", dict(lr=0.01), None, None),
    ("rmsprop_centered", "RMSprop", dict(lr=0.01, centered=True), None, None),
    ("rmsprop_momentum", "RMSprop", dict(lr=0.003, momentum=0.9), None, None),
    ("rmsprop_centered_momentum_wd", "RMSprop",
     dict(lr=0.01, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.1), None, None),
    ("rmsprop_maximize", "RMSprop", dict(lr=0.01, momentum=0.3, maximize=True), None, None),
    ("rmsprop_groups", "RMSprop", dict(lr=0.01),
     [dict(params=[0, 1]), dict(params=[2, 3], lr=0.003, centered=True, momentum=0.9, weight_decay=0.05)],
     None),
    ("adagrad", "Adagrad", dict(lr=0.1), None, None),
    ("adagrad_lr_decay", "Adagrad", dict(lr=0.1, lr_decay=0.05), None, None),
    ("adagrad_all", "Adagrad",
     dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-8), None, None),
    ("adagrad_maximize", "Adagrad", dict(lr=0.1, maximize=True), None, None),
    # a group's own initial_accumulator_value is ignored by PyTorch (the constructor's is used)
    ("adagrad_groups", "Adagrad", dict(lr=0.1),
     [dict(params=[0, 2]), dict(params=[1, 3], lr=0.05, lr_decay=0.1, initial_accumulator_value=0.1)], None),
    ("adagrad_steplr", "Adagrad", dict(lr=0.1), None, ("StepLR", dict(step_size=3, gamma=0.5))),
    ("adadelta", "Adadelta", dict(), None, None),
    ("adadelta_wd", "Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1), None, None),
    ("adadelta_maximize", "Adadelta", dict(lr=1.0, maximize=True), None, None),
    ("adadelta_groups", "Adadelta", dict(lr=1.0),
     [dict(params=[0, 1]), dict(params=[2, 3], lr=2.0, rho=0.95, weight_decay=0.01)], None),
    ("lamb", "LAMB", dict(lr=0.01), None, None),
    ("lamb_wd_betas", "LAMB", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1), None, None),
    ("lamb_no_bias_correction", "LAMB", dict(lr=0.02, bias_correction=False, eps=1e-8), None, None),
    ("lamb_groups", "LAMB", dict(lr=0.01),
     [dict(params=[0, 1]), dict(params=[2, 3], lr=0.05, weight_decay=0.01, maximize=True)], None),
    ("lion", "Lion", dict(lr=0.01), None, None),
    ("lion_wd_betas", "Lion", dict(lr=0.01, betas=(0.95, 0.98), weight_decay=0.5), None, None),
    ("lion_groups", "Lion", dict(lr=0.01),
     [dict(params=[0, 2]), dict(params=[1, 3], lr=0.003, weight_decay=1.0)], None),
    ("lion_cosine", "Lion", dict(lr=0.02, weight_decay=0.1), None, ("CosineAnnealingLR", dict(T_max=6))),
]

# ====================================================================== L-BFGS
LBFGS_CASES = [
    # name, closure, kwargs
    ("quartic", "quartic", dict(max_iter=4, history_size=10)),
    ("quartic_wolfe", "quartic", dict(max_iter=4, history_size=10, line_search_fn="strong_wolfe")),
    ("quartic_short_history", "quartic", dict(lr=0.5, max_iter=2, history_size=2)),
    ("rosenbrock", "rosenbrock", dict(lr=0.02, max_iter=3, history_size=5)),
    # lr 4: the first trial steps overshoot, so the bracketing interpolation and the zoom run
    ("rosenbrock_wolfe", "rosenbrock", dict(lr=4.0, max_iter=2, history_size=3, line_search_fn="strong_wolfe")),
]
ROSEN_X0 = [[-1.2, 1.0], [-1.2, 1.0, -1.2], [0.5, -0.5]]


def quartic_loss(params, a, b, targets):
    """sum_i sum(0.5 * a_i * (p_i - t_i)^2 + 0.25 * b_i * (p_i - t_i)^4), i in (0, 2, 3)."""
    total = None
    for i in (0, 2, 3):
        d = params[i] - targets[i]
        d2 = d * d
        term = (a[i] * d2 * 0.5 + b[i] * d2 * d2 * 0.25).sum()
        total = term if total is None else total + term
    return total


def rosenbrock_loss(params):
    """sum_k 100 * (x[k+1] - x[k]^2)^2 + (1 - x[k])^2 with x = cat(params[0], params[1])."""
    x = torch.cat([params[0], params[1]])
    lo, hi = x[:-1], x[1:]
    r = hi - lo * lo
    s = 1.0 - lo
    return (r * r * 100.0 + s * s).sum()


def lbfgs_quartic_inputs(tensors: dict) -> None:
    rng = np.random.default_rng(99)
    a = [rng.uniform(0.2, 4.0, s) for s in SHAPES]
    b = [rng.uniform(0.0, 0.5, s) for s in SHAPES]
    for short, (_, npd) in DT.items():
        for i in range(len(SHAPES)):
            tensors[f"lbfgs.quartic.{short}.a.p{i}"] = _c(a[i].astype(npd))
            tensors[f"lbfgs.quartic.{short}.b.p{i}"] = _c(b[i].astype(npd))


def run_lbfgs(tensors: dict, name, closure_kind, kwargs, short) -> dict:
    tdt = DT[short][0]
    if closure_kind == "quartic":
        params = [torch.tensor(tensors[f"problem.{short}.init.p{i}"], dtype=tdt, requires_grad=True)
                  for i in range(len(SHAPES))]
        targets = [torch.tensor(tensors[f"problem.{short}.target.p{i}"]) for i in range(len(SHAPES))]
        a = [torch.tensor(tensors[f"lbfgs.quartic.{short}.a.p{i}"]) for i in range(len(SHAPES))]
        b = [torch.tensor(tensors[f"lbfgs.quartic.{short}.b.p{i}"]) for i in range(len(SHAPES))]

        def f():
            return quartic_loss(params, a, b, targets)
    else:
        params = [torch.tensor(x, dtype=tdt, requires_grad=True) for x in ROSEN_X0]

        def f():
            return rosenbrock_loss(params)
    opt = torch.optim.LBFGS(params, **kwargs)

    def closure():
        opt.zero_grad()
        loss = f()
        loss.backward()
        return loss

    case = f"{name}_{short}"
    losses = []
    for t in range(STEPS):
        losses.append(float(opt.step(closure)))
        for i, p in enumerate(params):
            tensors[f"lbfgs.{case}.step{t}.p{i}"] = _c(p.detach().numpy())
    tensors[f"lbfgs.{case}.loss"] = np.array(losses, dtype=np.float64)
    st = opt.state[params[0]]
    for k in ("d", "prev_flat_grad"):
        tensors[f"lbfgs.{case}.state.{k}"] = _c(st[k].numpy())
    return {"name": case, "closure": closure_kind, "kwargs": kwargs, "dtype": DTYPE_NAME[short],
            "n_params": len(params), "func_evals": st["func_evals"], "n_iter": st["n_iter"],
            "history": len(st["old_dirs"])}


# ====================================================================== schedulers
def _sched(kind, **kwargs):
    return {"type": kind, "kwargs": kwargs}


SCHED_CASES = [
    # name, scheduler spec, optimizer ("sgd" | "adam"), extra
    ("multistep", _sched("MultiStepLR", milestones=[10, 30, 30, 60], gamma=0.5), "sgd", None),
    ("multistep_at_zero", _sched("MultiStepLR", milestones=[0, 50], gamma=0.3), "sgd", None),
    ("exponential", _sched("ExponentialLR", gamma=0.97), "sgd", None),
    ("cawr", _sched("CosineAnnealingWarmRestarts", T_0=10, eta_min=0.001), "sgd", None),
    ("cawr_mult", _sched("CosineAnnealingWarmRestarts", T_0=5, T_mult=2), "sgd", None),
    ("cawr_fractional", _sched("CosineAnnealingWarmRestarts", T_0=3, T_mult=2, eta_min=0.01), "sgd",
     {"epochs": [k * 0.25 for k in range(1, 101)]}),
    ("onecycle_cos", _sched("OneCycleLR", max_lr=[1.0, 0.5], total_steps=100, cycle_momentum=False),
     "sgd", None),
    ("onecycle_linear", _sched("OneCycleLR", max_lr=0.4, total_steps=100, pct_start=0.25,
                               anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0,
                               cycle_momentum=False), "sgd", None),
    ("onecycle_three_phase_momentum", _sched("OneCycleLR", max_lr=0.8, total_steps=120, three_phase=True),
     "sgd_momentum", None),
    ("onecycle_betas", _sched("OneCycleLR", max_lr=[0.01, 0.02], epochs=10, steps_per_epoch=10,
                              base_momentum=0.8, max_momentum=0.9), "adam", None),
    ("plateau_min_rel", _sched("ReduceLROnPlateau", factor=0.5, patience=3), "sgd", {"metrics": "plateau"}),
    ("plateau_max_abs_cooldown", _sched("ReduceLROnPlateau", mode="max", threshold=0.01, threshold_mode="abs",
                                        patience=2, cooldown=3, factor=0.3, min_lr=[0.001, 0.004]),
     "sgd", {"metrics": "rising"}),
    ("plateau_min_abs_eps", _sched("ReduceLROnPlateau", threshold=0.05, threshold_mode="abs", patience=1,
                                   factor=0.7, min_lr=0.02, eps=1e-3), "sgd", {"metrics": "plateau"}),
    ("plateau_max_rel", _sched("ReduceLROnPlateau", mode="max", patience=4, factor=0.8), "sgd",
     {"metrics": "rising"}),
    ("sequential_linear_exponential", _sched(
        "SequentialLR", schedulers=[_sched("LinearLR", start_factor=0.1, total_iters=10),
                                    _sched("ExponentialLR", gamma=0.95)], milestones=[10]), "sgd", None),
    ("sequential_three", _sched(
        "SequentialLR", schedulers=[_sched("ExponentialLR", gamma=0.9), _sched("StepLR", step_size=5, gamma=0.5),
                                    _sched("CosineAnnealingLR", T_max=20, eta_min=0.001)],
        milestones=[15, 40]), "sgd", None),
    ("sequential_multistep_cawr", _sched(
        "SequentialLR", schedulers=[_sched("MultiStepLR", milestones=[3, 6]),
                                    _sched("CosineAnnealingWarmRestarts", T_0=7, T_mult=2)],
        milestones=[20]), "sgd", None),
    ("sequential_onecycle_exponential", _sched(
        "SequentialLR", schedulers=[_sched("OneCycleLR", max_lr=0.5, total_steps=30, cycle_momentum=False),
                                    _sched("ExponentialLR", gamma=0.95)], milestones=[30]), "sgd", None),
]
SCHED_STEPS = 100
SCHED_LRS = [0.1, 0.05]


def metric_sequences() -> dict:
    rng = np.random.default_rng(5)
    t = np.arange(SCHED_STEPS)
    plateau = 1.0 / (1.0 + 0.05 * t) + 0.02 * rng.standard_normal(SCHED_STEPS)
    plateau[40:55] = plateau[39]  # an exact plateau
    rising = np.minimum(0.9, 0.3 + 0.01 * t) + 0.005 * rng.standard_normal(SCHED_STEPS)
    return {"plateau": plateau, "rising": rising}


def run_optimizer(tensors: dict, name, opt_name, kwargs, groups, sched, short) -> dict:
    """make_optim_fixtures' trajectory, with the torch-op references for LAMB and Lion."""
    return _trajectory(tensors, name, opt_name, kwargs, groups, sched, short, REFERENCE.get(opt_name))


def build_scheduler(opt, spec):
    S = torch.optim.lr_scheduler
    kw = dict(spec["kwargs"])
    if spec["type"] == "SequentialLR":
        kw["schedulers"] = [build_scheduler(opt, s) for s in kw["schedulers"]]
    return getattr(S, spec["type"])(opt, **kw)


def run_scheduler(tensors: dict, metrics: dict, name, spec, opt_kind, extra) -> dict:
    dummy = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    groups = [{"params": [dummy[0]], "lr": SCHED_LRS[0]}, {"params": [dummy[1]], "lr": SCHED_LRS[1]}]
    if opt_kind == "adam":
        opt = torch.optim.Adam(groups, lr=SCHED_LRS[0])
    else:
        opt = torch.optim.SGD(groups, lr=SCHED_LRS[0], momentum=0.9 if opt_kind == "sgd_momentum" else 0.0)
    sched = build_scheduler(opt, spec)
    extra = extra or {}
    seq = metrics[extra["metrics"]] if "metrics" in extra else None

    def momenta():
        return [g["betas"][0] if opt_kind == "adam" else g["momentum"] for g in opt.param_groups]

    lrs, moms = [[g["lr"] for g in opt.param_groups]], [momenta()]
    for k in range(SCHED_STEPS):
        opt.step()
        if seq is not None:
            sched.step(float(seq[k]))
        elif "epochs" in extra:
            sched.step(extra["epochs"][k])
        else:
            sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        moms.append(momenta())
    tensors[f"sched.{name}"] = np.array(lrs, dtype=np.float64)
    out = {"name": name, "spec": spec, "optimizer": opt_kind, "lrs": SCHED_LRS, "steps": SCHED_STEPS}
    if spec["type"] == "OneCycleLR" and spec["kwargs"].get("cycle_momentum", True):
        tensors[f"sched.{name}.momentum"] = np.array(moms, dtype=np.float64)
        out["momentum"] = True
    if seq is not None:
        tensors[f"sched.{name}.metrics"] = _c(seq.astype(np.float64))
        out["metrics"] = True
    if "epochs" in extra:
        out["epochs"] = extra["epochs"]
    return out


def main() -> None:
    tensors: dict = {}
    problem(tensors)
    lbfgs_quartic_inputs(tensors)
    opt_cases = [run_optimizer(tensors, *case, short) for case in OPT_CASES for short in DT]
    lbfgs_cases = [run_lbfgs(tensors, *case, short) for case in LBFGS_CASES for short in DT]
    metrics = metric_sequences()
    sched_cases = [run_scheduler(tensors, metrics, *case) for case in SCHED_CASES]
    meta = {
        "torch_version": torch.__version__,
        "problem": {"shapes": [list(s) for s in SHAPES], "c": C, "steps": STEPS,
                    "skip": {str(k): v for k, v in SKIP.items()},
                    "grad": "c * (p - target) + noise[t]; no grad for parameter i at the steps skip[i]"},
        "optimizers": opt_cases,
        "lbfgs": {"cases": lbfgs_cases, "rosenbrock_x0": ROSEN_X0, "steps": STEPS},
        "schedulers": sched_cases,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, "optim2.safetensors")
    save_file(tensors, path, metadata={"torch_version": torch.__version__})
    os.chmod(path, 0o644)  # safetensors writes 0600
    with open(os.path.join(OUT_DIR, "optim2.json"), "w") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"optim2: {len(opt_cases)} optimizer runs, {len(lbfgs_cases)} L-BFGS runs, "
          f"{len(sched_cases)} schedulers, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
