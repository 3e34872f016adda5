"""A parallelization planner (CMU-3; FlexFlow's and Alpa's question at the scale of one model):
given a model, an example batch, a device count and a per-device memory cap, choose per layer
data, tensor or pipeline parallelism with a cost model, and say why.

The layers are the model's leaf modules, in the order the example forward calls them (measured
with forward hooks: output sizes, and parameter counts). The cost model, per layer l with P_l
parameters, activations A_l bytes (at the global batch) and F_l forward flops, on n devices:

- memory per device: `state_bytes_per_param` (16: the float32 parameter, its gradient and Adam's
  two moments) x P_l, split n ways under tensor parallelism; plus the activations kept for
  backward: A_l / n under data parallelism (the batch is split), the whole input and output
  under tensor parallelism (every device sees the whole batch), the micro-batches in flight of
  the stage under pipeline parallelism;
- time per step: compute 3 F_l / n / `flops` (forward + backward) under data and tensor
  parallelism; communication at `bandwidth` bytes/s, ring collectives ((n-1)/n of the buffer
  for an all-gather, twice that for an all-reduce): data parallelism all-reduces the layer's
  gradients (4 P_l bytes); tensor parallelism (weights split by output features) all-gathers its
  output forward and all-reduces its input's gradient backward, and a layer after a
  data-parallel one first all-gathers its input (the batch was split);
- pipeline parallelism puts layers on n stages (contiguous, balanced by compute), every stage
  holding its layers' whole state; its step is the slowest stage's compute times
  (M + S - 1) / M (the bubble, S stages, M micro-batches) plus the activations sent between
  stages.

The choice: every layer takes its faster strategy of data and tensor parallelism among those
that fit the cap, given its predecessor's (data parallelism wins where the gradients are small
next to the activations: convolutions, the Linears of a small model); if the sum does not fit,
layers switch from data to tensor parallelism, the most memory saved per second added first; if even that does not fit, the
model is split into pipeline stages, if those fit. A layer that fits no strategy is an error that
names it. `str(plan)` (and `ember.inspect(plan)`) prints the table: layer, parameters,
activations, strategy, memory and time per device, and the total against the cap.
"""
from __future__ import annotations

import numpy as np

from .errors import DistributedError

__all__ = ["plan_parallelism", "ParallelPlan", "LayerPlan"]


class LayerPlan:
    """One layer's facts and its chosen strategy ("data", "tensor" or "pipeline:<stage>")."""

    def __init__(self, name, module, params, act_bytes, flops, in_bytes=0):
        self.name, self.module, self.params, self.act_bytes, self.flops = name, module, params, act_bytes, flops
        self.in_bytes = in_bytes  # its input's activation bytes (at the global batch)
        self.strategy, self.mem, self.time = None, 0.0, 0.0

    def __repr__(self) -> str:
        return f"LayerPlan({self.name}: {self.strategy})"


class ParallelPlan:
    """The chosen strategy per layer, with the cost model's memory and time per device."""

    def __init__(self, layers, devices, cap, kind, why):
        self.layers, self.devices, self.cap, self.kind, self.why = layers, devices, cap, kind, why

    @property
    def memory(self) -> float:
        """Bytes per device the plan needs (the largest stage's, for a pipeline)."""
        if self.kind == "pipeline":
            stages = {}
            for lp in self.layers:
                stages[lp.strategy] = stages.get(lp.strategy, 0.0) + lp.mem
            return max(stages.values())
        return sum(lp.mem for lp in self.layers)

    def strategy(self, name: str) -> str:
        """The strategy of the layer called `name`."""
        return next(lp.strategy for lp in self.layers if lp.name == name)

    def __str__(self) -> str:
        mib = 2 ** 20
        rows = [f"parallel plan: {self.devices} devices, cap {self.cap / mib:.1f} MiB per device: {self.kind} "
                f"({self.why})",
                f"  {'layer':28s} {'params':>10s} {'act MiB':>8s}  {'strategy':12s} {'MiB/dev':>8s} {'ms':>8s}"]
        for lp in self.layers:
            rows.append(f"  {lp.name:28s} {lp.params:>10d} {lp.act_bytes / mib:>8.2f}  {lp.strategy:12s} "
                        f"{lp.mem / mib:>8.2f} {lp.time * 1e3:>8.3f}")
        rows.append(f"  per device: {self.memory / mib:.1f} MiB of {self.cap / mib:.1f}")
        return "\n".join(rows)

    __repr__ = __str__

    def __ember_inspect__(self) -> "ParallelPlan":
        return self


def _flops(m, inp, out) -> float:
    from .. import nn
    if isinstance(m, nn.Linear):
        return 2.0 * out.numel() * m.in_features
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        k = int(np.prod(m.kernel_size))
        return 2.0 * out.numel() * (m.in_channels // m.groups) * k
    return float(out.numel())


def _measure(model, example):
    """LayerPlans of the leaf modules, in the order the example forward calls them."""
    from .._core.state import no_grad
    seen, order, handles = {}, [], []
    names = {id(m): n for n, m in model.named_modules()}

    def hook(m, inp, out):
        if id(m) in seen or not hasattr(out, "numel"):
            return
        params = sum(p.numel() for p in m.parameters(recurse=False))
        x = inp[0] if inp else None
        lp = LayerPlan(names.get(id(m), type(m).__name__) or type(m).__name__, m, params,
                       out.numel() * out.element_size(), _flops(m, x, out),
                       x.numel() * x.element_size() if hasattr(x, "numel") else 0)
        seen[id(m)] = lp
        order.append(lp)
    for m in model.modules():
        if not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(hook))
    try:
        with no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return order


def plan_parallelism(model, example, devices: int, memory_cap: float, *, flops: float = 1e11,
                     bandwidth: float = 1e10, state_bytes_per_param: int = 16,
                     micro_batches: int = 4) -> ParallelPlan:
    """Choose data, tensor or pipeline parallelism per layer of `model` for `devices` devices of
    `memory_cap` bytes each, on the global batch `example` (see the module doc)."""
    n = int(devices)
    if n < 1:
        raise DistributedError(f"plan_parallelism: devices must be >= 1, got {devices}")
    layers = _measure(model, example)
    g = (n - 1) / n  # an all-gather's share of the buffer; an all-reduce moves twice that

    def cost(lp, how, prev):
        """(bytes per device, seconds per step) of layer `lp` under `how`, after a `prev` layer."""
        state, compute = state_bytes_per_param * lp.params, 3 * lp.flops / n / flops
        if how == "data":
            return state + lp.act_bytes / n, compute + 2 * g * 4 * lp.params / bandwidth
        comm = g * lp.act_bytes + 2 * g * lp.in_bytes + (g * lp.in_bytes if prev == "data" else 0.0)
        return state / n + lp.act_bytes + lp.in_bytes, compute + comm / bandwidth

    def evaluate(assign):
        out, prev = [], "data"  # the batch arrives split, as data parallelism has it
        for lp, how in zip(layers, assign):
            out.append(cost(lp, how, prev))
            prev = how
        return out

    assign = []
    for lp in layers:  # each layer's faster strategy that fits, given the one before it
        prev = assign[-1] if assign else "data"
        opts = [(cost(lp, h, prev), h) for h in (("data", "tensor") if lp.params else ("data",))]
        fits = [o for o in opts if o[0][0] <= memory_cap]
        assign.append(min(fits or opts, key=lambda o: (o[0][1], o[1] != "data"))[1])

    def total(a):
        return sum(m for m, _ in evaluate(a))

    moved = False
    while total(assign) > memory_cap:  # to tensor parallelism, the most bytes saved per second added first
        base = evaluate(assign)
        bm, bt = sum(m for m, _ in base), sum(t for _, t in base)
        best = None
        for i, lp in enumerate(layers):
            if assign[i] == "data" and lp.params:
                trial = assign[:i] + ["tensor"] + assign[i + 1:]
                ev = evaluate(trial)
                saved, added = bm - sum(m for m, _ in ev), sum(t for _, t in ev) - bt
                if saved > 0 and (best is None or saved / max(added, 1e-12) > best[0]):
                    best = (saved / max(added, 1e-12), trial)
        if best is None:
            break
        assign, moved = best[1], True
    for lp, how, (m, t) in zip(layers, assign, evaluate(assign)):
        lp.strategy, lp.mem, lp.time = how, m, t
    if total(assign) <= memory_cap:
        if "tensor" not in assign:
            return ParallelPlan(layers, n, memory_cap, "data", "every layer fits and runs fastest data-parallel")
        why = ("data parallelism did not fit the cap; layers moved to tensor parallelism, most bytes saved "
               "per second first") if moved else "each layer at its faster strategy that fits"
        return ParallelPlan(layers, n, memory_cap, "tensor", why)
    # pipeline: contiguous stages balanced by compute, each holding its layers whole
    work = np.cumsum([lp.flops for lp in layers])
    bounds = np.searchsorted(work, work[-1] * np.arange(1, n) / n, side="right") if len(layers) else []
    stage_of = np.searchsorted(np.asarray(bounds), np.arange(len(layers)), side="right")
    M = micro_batches
    for lp, s in zip(layers, stage_of):  # noqa: B007
        lp.strategy = f"pipeline:{int(s)}"
        lp.mem = state_bytes_per_param * lp.params + lp.act_bytes * min(M, n) / M
        lp.time = 3 * lp.flops / flops * (M + n - 1) / M
    plan = ParallelPlan(layers, n, memory_cap, "pipeline", "neither data nor tensor parallelism fit the cap: "
                        f"{n} stages balanced by compute, {M} micro-batches")
    if plan.memory > memory_cap:
        worst = max(layers, key=lambda lp: lp.mem)
        raise DistributedError(f"plan_parallelism: no strategy fits {memory_cap / 2**20:.1f} MiB per device: "
                               f"tensor parallelism needs {total(['tensor' if lp.params else 'data' for lp in layers]) / 2**20:.1f} "
                               f"MiB, a {n}-stage pipeline {plan.memory / 2**20:.1f} MiB (its largest layer, "
                               f"{worst.name}, {worst.mem / 2**20:.1f} MiB); use more devices or a smaller batch")
    return plan
