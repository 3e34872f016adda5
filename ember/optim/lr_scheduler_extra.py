"""OneCycleLR, ReduceLROnPlateau and SequentialLR (PyTorch's), re-exported by `lr_scheduler`.

As the schedulers there, they keep their counters as 0-d tensors and compute the new learning
rates with tensor ops and `where`, so `step()` reads no value and traces, with two exceptions
written down where they occur: OneCycleLR's `cycle_momentum` (the momentum/betas it writes are
Python numbers, PyTorch's hyperparameters) and a SequentialLR holding such a scheduler.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Literal

import numpy as np

from .._core import dtypes as dt
from .._core.errors import ConcretizationError, op_error
from .._core.state import TLS, no_grad
from ..autograd import assign_
from ..ops import lax
from ..tensor import Tensor, tensor as _tensor
from .lr_scheduler import LRScheduler, _TensorAttr, _where
from .optimizer import LR_DTYPE, Optimizer, write_scalar

__all__ = ["OneCycleLR", "ReduceLROnPlateau", "SequentialLR"]


def _format_param(name: str, optimizer: Optimizer, param) -> list:
    """One value per parameter group: `param` itself, or its items when it is a list/tuple."""
    n = len(optimizer.param_groups)
    if isinstance(param, (list, tuple)):
        if len(param) != n:
            raise ValueError(f"{name} must have the same length as optimizer.param_groups. "
                             f"optimizer.param_groups has {n} values, {name} has {len(param)} values")
        return list(param)
    return [param] * n


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy (Smith & Topin): from ``max_lr / div_factor`` up to `max_lr` over
    ``pct_start * total_steps`` steps, then down to ``initial_lr / final_div_factor``; with
    `three_phase`, back to the initial lr first and only then to the minimum. Each phase anneals
    with ``cos`` (``end + (start - end) / 2 * (1 + cos(pi * pct))``) or ``linear``
    (``(end - start) * pct + start``), PyTorch's formulas, selected per step with `where`.

    `cycle_momentum` moves the momentum (SGD) or beta1 (Adam-like ``betas``) the opposite way
    between `max_momentum` and `base_momentum`. Those are Python numbers (constants of a trace in
    ember, as all hyperparameters but the lr), so with `cycle_momentum=True` (the default)
    `step()` reads the epoch counter and runs eagerly only, and a jitted `opt.step()` keeps the
    momentum it was traced with; use ``cycle_momentum=False`` to trace the schedule.
    Stepping past `total_steps` raises ``ValueError`` (checked eagerly; not inside a trace).
    """

    _sequential_eager = True  # SequentialLR runs it the eager way (bounds check, momentum)

    def __init__(self, optimizer: Optimizer, max_lr: float | list[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: Literal["cos", "linear"] = "cos", cycle_momentum: bool = True,
                 base_momentum: float | list[float] = 0.85, max_momentum: float | list[float] = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        n = self.total_steps
        if three_phase:
            self._schedule_phases = [
                dict(end_step=float(pct_start * n) - 1, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=float(2 * pct_start * n) - 2, start_lr="max_lr", end_lr="initial_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum"),
                dict(end_step=n - 1, start_lr="initial_lr", end_lr="min_lr",
                     start_momentum="max_momentum", end_momentum="max_momentum"),
            ]
        else:
            self._schedule_phases = [
                dict(end_step=float(pct_start * n) - 1, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=n - 1, start_lr="max_lr", end_lr="min_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum"),
            ]
        if not isinstance(pct_start, float) or pct_start < 0 or pct_start > 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy
        max_lrs = _format_param("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for m, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = m / div_factor
                group["max_lr"] = m
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
            self.use_beta1 = "betas" in optimizer.defaults
            max_ms = _format_param("max_momentum", optimizer, max_momentum)
            base_ms = _format_param("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for m_m, b_m, group in zip(max_ms, base_ms, optimizer.param_groups):
                    if self.use_beta1:
                        group["betas"] = (m_m, *group["betas"][1:])
                    else:
                        group["momentum"] = m_m
                    group["max_momentum"] = m_m
                    group["base_momentum"] = b_m
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return lax.add(end, lax.mul((start - end) / 2.0, lax.add(lax.cos(lax.mul(math.pi, pct)), 1.0)))
        return lax.add(lax.mul(end - start, pct), start)

    def _schedule(self, group, start_key: str, end_key: str):
        """The annealed value of this step, phase chosen by `where` (the first with step <= end)."""
        e = self.epoch_f
        phases = self._schedule_phases
        starts = [0.0] + [ph["end_step"] for ph in phases[:-1]]
        out = None
        for i in range(len(phases) - 1, -1, -1):
            ph = phases[i]
            width = ph["end_step"] - starts[i]
            pct = lax.div(lax.sub(e, starts[i]), width if width != 0 else 1.0)
            val = self._anneal(group[ph[start_key]], group[ph[end_key]], pct)
            out = val if out is None else _where(lax.le(e, ph["end_step"]), val, out)
        return out

    def get_lr(self):
        """This step's learning rates (and, with `cycle_momentum`, the groups' momenta, written)."""
        data = self._epoch._data
        if isinstance(data, np.ndarray) and int(data) > self.total_steps:  # eagerly only
            raise ValueError(f"Tried to step {int(data)} times. The specified number of total steps is "
                             f"{self.total_steps}")
        if self.cycle_momentum and TLS.interpreters[-1].level:
            raise op_error(ConcretizationError, "OneCycleLR.step",
                           "cycle_momentum=True writes the momentum/betas as Python numbers, which needs the "
                           "epoch's value; step the scheduler outside the jitted function, or pass "
                           "cycle_momentum=False to trace it")
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._schedule(group, "start_lr", "end_lr"))
            if self.cycle_momentum:  # a Python number: reads the value (eager only)
                mom = self._schedule(group, "start_momentum", "end_momentum").item()
                if self.use_beta1:
                    group["betas"] = (mom, *group["betas"][1:])
                else:
                    group["momentum"] = mom
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by `factor` once the metric passed to `step(metric)` has not
    improved for more than `patience` epochs (PyTorch's rules: `mode` min/max, `threshold_mode`
    rel/abs, `cooldown` epochs after a reduction, floors `min_lr`, changes smaller than `eps`
    skipped).

    `best`, `num_bad_epochs` and `cooldown_counter` are 0-d tensors updated with `where`, and the
    metric may be a 0-d tensor (a loss computed in the same traced step) or a Python number, so
    `step(metric)` reads no value and traces; reading those attributes gives Python numbers.
    """

    best = _TensorAttr(LR_DTYPE)
    num_bad_epochs = _TensorAttr(dt.int64)
    cooldown_counter = _TensorAttr(dt.int64)

    def __init__(self, optimizer: Optimizer, mode: Literal["min", "max"] = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: Literal["rel", "abs"] = "rel",
                 cooldown: int = 0, min_lr: list[float] | float = 0, eps: float = 1e-8):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self._epoch = _tensor(0, dtype=dt.int64)
        self._is_initial = False
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        """Reset `best`, the bad-epoch counter and the cooldown counter."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _init_is_better(self, mode, threshold, threshold_mode) -> None:
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return lax.lt(a, lax.mul(best, 1.0 - self.threshold))
        if self.mode == "min":
            return lax.lt(a, lax.sub(best, self.threshold))
        if self.threshold_mode == "rel":
            return lax.gt(a, lax.mul(best, self.threshold + 1.0))
        return lax.gt(a, lax.add(best, self.threshold))

    @property
    def in_cooldown(self) -> bool:
        """Whether a reduction happened less than `cooldown` epochs ago (reads the counter)."""
        return self.cooldown_counter > 0

    def step(self, metrics, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record this epoch's metric (a number or a one-element tensor) and maybe reduce the lr."""
        with no_grad():
            if isinstance(metrics, Tensor):
                cur = metrics.detach()
                if cur.numel() != 1:
                    raise ValueError(f"the metric must be a number or a one-element tensor, got shape {cur.shape}")
                cur = lax.convert(lax.reshape(cur, ()), LR_DTYPE)
            else:
                cur = lax.full((), float(metrics), LR_DTYPE)
            if epoch is None:
                assign_(self._epoch, lax.add(self._epoch, 1))
            else:
                write_scalar(self._epoch, int(epoch))
            best, bad, cool = self._t_best, self._t_num_bad_epochs, self._t_cooldown_counter
            better = self._is_better(cur, best)
            assign_(best, _where(better, cur, best))
            nbad = _where(better, 0, lax.add(bad, 1))
            in_cd = lax.gt(cool, 0)
            ncool = _where(in_cd, lax.sub(cool, 1), cool)
            nbad = _where(in_cd, 0, nbad)  # bad epochs during the cooldown do not count
            reduce = lax.gt(nbad, self.patience)
            self._reduce_lr(reduce)
            assign_(cool, _where(reduce, self.cooldown, ncool))
            assign_(bad, _where(reduce, 0, nbad))

    def _reduce_lr(self, reduce) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the `optimizer` ({len(groups)}) differs from when "
                    f"`ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually due to a new param "
                    "group being added to the optimizer. Please modify the `min_lrs` field to match the "
                    "length of the `optimizer` param groups.")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old = group["lr"]
            new = lax.max(lax.mul(old, self.factor), float(min_lr))
            write_scalar(old, _where(lax.bitwise_and(reduce, lax.gt(lax.sub(old, new), self.eps)), new, old))

    def get_lr(self):
        """The current learning rates (this scheduler changes them only in `step(metric)`)."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore `state_dict()` (tensors keep their identity)."""
        super().load_state_dict(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)


class SequentialLR(LRScheduler):
    """Run `schedulers` one after another, switching at the `milestones` epochs (PyTorch's).

    At epoch ``milestones[i-1]`` scheduler ``i`` restarts at its epoch 0 (closed form); between
    milestones the active one steps as usual. Under a trace every scheduler's step is computed
    and the active one chosen with `where` (the others' counters are kept as they were), so
    `step()` reads no value; with a OneCycleLR among them it runs eagerly (Python's choice of the
    active scheduler, exactly PyTorch's). Nested SequentialLR and ReduceLROnPlateau are refused.
    """

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int],
                 last_epoch: int = -1):
        if len(schedulers) < 1:
            raise ValueError(f"{type(self).__name__} expects at least one scheduler, but got no scheduler.")
        for i, s in enumerate(schedulers):
            if not hasattr(s, "optimizer"):
                raise TypeError(f"{type(self).__name__} at index {i} should have `optimizer` as its attribute.")
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(
                    f"{type(self).__name__} does not support `ReduceLROnPlateau` scheduler as it requires "
                    "additional kwargs to be specified when calling `step`, but got one at index "
                    f"{i} in the given schedulers sequence.")
            if isinstance(s, SequentialLR):
                raise NotImplementedError("ember's SequentialLR does not nest another SequentialLR")
            if s.optimizer is not optimizer:
                raise ValueError(
                    f"{type(self).__name__} expects all schedulers to belong to the same optimizer, but got "
                    f"scheduler {type(s).__name__} at index {i} has {s.optimizer}, which is different from "
                    f"{type(optimizer).__name__}.")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number "
                f"of milestone points, but got number of schedulers {len(schedulers)} and the number of "
                f"milestones to be equal to {len(milestones)}")
        self._schedulers = list(schedulers)
        self._milestones = [int(m) for m in milestones]
        self._epoch = _tensor(int(last_epoch) + 1, dtype=dt.int64)
        self._is_initial = False
        self.optimizer = optimizer
        for group in optimizer.param_groups:  # back to the initial learning rates
            group["lr"] = group["initial_lr"]
        for s in self._schedulers:  # undo the step each scheduler's constructor took
            s.last_epoch -= 1
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()

    def step(self) -> None:  # type: ignore[override]
        """Advance one epoch: the active scheduler steps (or restarts, at its milestone)."""
        with no_grad():
            if any(getattr(s, "_sequential_eager", False) for s in self._schedulers):
                values = self._eager_values()
            else:
                values = self._traced_values()
            for group, lr in zip(self.optimizer.param_groups, values, strict=True):
                write_scalar(group["lr"], lr)

    def _eager_values(self) -> list:
        e = self.last_epoch + 1
        self.last_epoch = e
        idx = bisect_right(self._milestones, e)
        s = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == e:
            return s._restart_values()
        return s._step_values()

    def _traced_values(self) -> list:
        e = assign_(self._epoch, lax.add(self._epoch, 1))
        idx = lax.full((), 0, dt.int64)
        for m in self._milestones:  # bisect_right: how many milestones are <= e
            idx = lax.add(idx, lax.convert(lax.le(m, e), dt.int64))
        values = [g["lr"] for g in self.optimizer.param_groups]
        for i, s in enumerate(self._schedulers):
            active = lax.eq(idx, i)
            state = s._state_tensors()
            before = [lax.add(t, 0) for t in state]  # copies of the values (fresh tensors)
            restart = None
            if i > 0:
                restart = lax.bitwise_and(active, lax.eq(e, self._milestones[i - 1]))
                r_vals = s._restart_values()
                r_state = [lax.add(t, 0) for t in state]
                for t, b in zip(state, before):
                    assign_(t, b)
            s_vals = s._step_values()
            for t, b, k in zip(state, before, range(len(state))):
                new = _where(active, t, b)
                if restart is not None:
                    new = _where(restart, r_state[k], new)
                assign_(t, new)
            out = []
            for j, (v, sv) in enumerate(zip(values, s_vals)):
                nv = _where(active, sv, v)
                if restart is not None:
                    nv = _where(restart, r_vals[j], nv)
                out.append(nv)
            values = out
        return values

    def state_dict(self) -> dict:
        """Its own attributes (not the optimizer), `last_epoch`, and each scheduler's state dict."""
        out = {k: v for k, v in self.__dict__.items()
               if k not in ("optimizer", "_schedulers", "_epoch", "_is_initial")}
        out["last_epoch"] = self.last_epoch
        out["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore `state_dict()`, the wrapped schedulers' states too."""
        for k, v in state_dict.items():
            if k == "last_epoch":
                self.last_epoch = v
            elif k == "_schedulers":
                for s, sd in zip(self._schedulers, v):
                    s.load_state_dict(sd)
            elif k not in ("optimizer", "_epoch"):
                setattr(self, k, v)
