"""Learning-rate schedulers that write into the optimizer's 0-d learning-rate tensors.

A scheduler keeps its epoch counter as a 0-d int64 tensor and computes each new learning rate
with tensor ops from that counter and the group's current `lr` tensor, then copies it into the
`lr` tensor in place. `step()` reads no tensor value into Python, so it can be traced with the
training step and replayed (the counter and the `lr` tensors are state, updated in place).

StepLR, MultiStepLR, ExponentialLR, LinearLR and CosineAnnealingLR use PyTorch's *recursive*
("chainable") rules, selected per epoch with `where` instead of Python branches, so they give
PyTorch's values and compose with outside changes to `group["lr"]` as PyTorch's do;
`step(epoch)` uses the closed forms. LambdaLR, WarmupCosineLR and CosineAnnealingWarmRestarts are
closed forms of their counters (absolute: they overwrite the `lr`); counters other than the epoch
are `_TensorAttr`s (0-d tensors that read as Python numbers). OneCycleLR, ReduceLROnPlateau and
SequentialLR live in `lr_scheduler_extra.py` and are re-exported here.
"""
from __future__ import annotations

import math
import types
from collections import Counter
from typing import Callable, Iterable

from .._core import dtypes as dt
from .._core.state import no_grad
from ..autograd import assign_
from ..ops import lax
from ..tensor import Tensor, tensor as _tensor
from .optimizer import LR_DTYPE, Optimizer, write_scalar

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "LinearLR", "CosineAnnealingLR",
           "CosineAnnealingWarmRestarts", "LambdaLR", "WarmupCosineLR", "OneCycleLR",
           "ReduceLROnPlateau", "SequentialLR"]


def _where(cond, a, b):
    return lax.select(cond, a, b)


def _and(a, b):
    return lax.bitwise_and(a, b)


class _TensorAttr:
    """A scheduler attribute held as a 0-d tensor (`self._t_<name>`), updated in place so that a
    traced `step()` carries it; reading the attribute gives its value as a Python number (eager
    use, state dicts), assigning writes into the tensor."""

    def __init__(self, dtype: dt.DType):
        self.dtype = dtype

    def __set_name__(self, owner, name: str) -> None:
        self.name, self.key = name, "_t_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj.__dict__[self.key].item()

    def __set__(self, obj, value) -> None:
        t = obj.__dict__.get(self.key)
        if t is None:
            obj.__dict__[self.key] = _tensor(value.item() if isinstance(value, Tensor) else value,
                                             dtype=self.dtype)
        else:
            write_scalar(t, value)


def _tensor_attr_names(cls) -> list[str]:
    names = []
    for klass in reversed(cls.__mro__):
        for k, v in vars(klass).items():
            if isinstance(v, _TensorAttr) and k not in names:
                names.append(k)
    return names


class LRScheduler:
    """Base class: `step()` advances `last_epoch` and writes `get_lr()` into each group's `lr`.

    Subclasses implement `get_lr()` (values for the new epoch, as 0-d tensors or Python numbers,
    written with tensor ops on `self.epoch`/`self.epoch_f` and `group["lr"]`) and optionally
    `_get_closed_form_lr()` for `step(epoch)`.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"].item())
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when "
                                   "resuming a scheduler with last_epoch >= 0")
        self.base_lrs: list[float] = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self._epoch = _tensor(int(last_epoch), dtype=dt.int64)
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        """The constructor's step (``get_lr`` sees `_is_initial`); SequentialLR calls it too."""
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    # ---- the epoch counter (a tensor; the int view is for eager use)
    @property
    def epoch(self) -> Tensor:
        """The epoch counter, a 0-d int64 tensor updated in place."""
        return self._epoch

    @property
    def epoch_f(self) -> Tensor:
        """The epoch counter as a 0-d float64 tensor (for the formulas)."""
        return lax.convert(self._epoch, LR_DTYPE)

    @property
    def last_epoch(self) -> int:
        return int(self._epoch.item())

    @last_epoch.setter
    def last_epoch(self, value: int) -> None:
        write_scalar(self._epoch, int(value))

    # ---- stepping
    def get_lr(self) -> list:
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (or jump to `epoch`, closed form) and write the new learning rates."""
        with no_grad():
            if epoch is None:
                values = self._step_values()
            else:
                write_scalar(self._epoch, int(epoch))
                closed = getattr(self, "_get_closed_form_lr", None)
                values = closed() if closed is not None else self.get_lr()
            for group, lr in zip(self.optimizer.param_groups, values, strict=True):
                write_scalar(group["lr"], lr)

    def _step_values(self) -> list:
        """Advance the scheduler's own state by one epoch (in place); the new learning rates."""
        assign_(self._epoch, lax.add(self._epoch, 1))
        return self.get_lr()

    def _restart_values(self) -> list:
        """Set the epoch to 0 and give the closed-form learning rates there (SequentialLR's milestones)."""
        write_scalar(self._epoch, 0)
        closed = getattr(self, "_get_closed_form_lr", None)
        return closed() if closed is not None else self.get_lr()

    def _state_tensors(self) -> list[Tensor]:
        """The 0-d tensors `_step_values` may write: the epoch and every `_TensorAttr`."""
        return [self._epoch] + [getattr(self, "_t_" + n) for n in _tensor_attr_names(type(self))]

    def get_last_lr(self) -> list[float]:
        """The learning rates now in the optimizer's groups, as Python floats."""
        return [g["lr"].item() for g in self.optimizer.param_groups]

    # ---- state dicts
    def state_dict(self) -> dict:
        """Every attribute except the optimizer (callables are skipped); `last_epoch` as an int."""
        out = {}
        for k, v in self.__dict__.items():
            if k in ("optimizer", "_epoch", "_is_initial") or k.startswith("_t_") or callable(v):
                continue
            if k == "lr_lambdas":
                continue
            out[k] = v
        for name in _tensor_attr_names(type(self)):
            out[name] = getattr(self, name)
        out["last_epoch"] = self.last_epoch
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore `state_dict()`; the epoch counter is written in place (keeps its identity)."""
        for k, v in state_dict.items():
            if k == "last_epoch":
                self.last_epoch = v
            elif k not in ("lr_lambdas", "optimizer", "_epoch") and not k.startswith("_t_"):
                setattr(self, k, v)  # a _TensorAttr is written into its tensor


class StepLR(LRScheduler):
    """Multiply the learning rate by `gamma` every `step_size` epochs: ``base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return [g["lr"] for g in self.optimizer.param_groups]
        e = self._epoch
        decay = _and(lax.ne(e, 0), lax.eq(lax.rem(e, self.step_size), 0))
        return [_where(decay, lax.mul(g["lr"], self.gamma), g["lr"]) for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        k = lax.convert(lax.floordiv(self._epoch, self.step_size), LR_DTYPE)
        return [lax.mul(base, lax.pow(self.gamma, k)) for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the learning rate by a factor going linearly from `start_factor` to `end_factor`
    over `total_iters` epochs: ``base_lr * (start + (end - start) * min(epoch, total_iters) / total_iters)``."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1):
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        e = self._epoch
        first = lax.eq(e, 0)
        if self._is_initial:
            return [_where(first, lax.mul(g["lr"], self.start_factor), g["lr"]) for g in groups]
        d = self.end_factor - self.start_factor
        ef = self.epoch_f
        # PyTorch: lr * (1 + d / (total * start + (epoch - 1) * d)) while 0 < epoch <= total
        ratio = lax.add(1.0, lax.div(d, lax.add(self.total_iters * self.start_factor,
                                                  lax.mul(lax.sub(ef, 1.0), d))))
        hold = lax.gt(e, self.total_iters)
        out = []
        for g in groups:
            lr = g["lr"]
            out.append(_where(first, lax.mul(lr, self.start_factor),
                              _where(hold, lr, lax.mul(lr, ratio))))
        return out

    def _get_closed_form_lr(self):
        ef = lax.min(self.epoch_f, float(self.total_iters))
        f = lax.add(self.start_factor,
                    lax.div(lax.mul(self.end_factor - self.start_factor, ef), float(self.total_iters)))
        return [lax.mul(base, f) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the base learning rate to `eta_min` over `T_max` epochs (and back up
    after it, periodically, as PyTorch's):
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``, computed with PyTorch's
    recursive rule so that outside changes to the learning rate carry through."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self._is_initial:
            return [g["lr"] for g in groups]
        T, m = self.T_max, self.eta_min
        e = self._epoch
        ef = self.epoch_f
        restart = lax.eq(lax.rem(lax.sub(e, 1 + T), 2 * T), 0)
        num = lax.add(1.0, lax.cos(lax.div(lax.mul(math.pi, ef), float(T))))
        den = lax.add(1.0, lax.cos(lax.div(lax.mul(math.pi, lax.sub(ef, 1.0)), float(T))))
        # den is 0 only at a restart, where the other branch is taken: divide by 1 there instead
        ratio = lax.div(num, _where(restart, 1.0, den))
        out = []
        for base, g in zip(self.base_lrs, groups):
            lr = g["lr"]
            up = lax.add(lr, (base - m) * (1 - math.cos(math.pi / T)) / 2)
            rec = lax.add(lax.mul(ratio, lax.sub(lr, m)), m)
            out.append(_where(restart, up, rec))
        return out

    def _get_closed_form_lr(self):
        c = lax.add(1.0, lax.cos(lax.div(lax.mul(math.pi, self.epoch_f), float(self.T_max))))
        return [lax.add(self.eta_min, lax.div(lax.mul(base - self.eta_min, c), 2.0)) for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``, one function or one per group.

    The function receives the epoch as a 0-d float64 *tensor* (so that the schedule can be traced):
    write it with tensor ops (``0.95 ** e``, ``ember.minimum(1.0, (e + 1) / 10)``). Python control
    flow on it works eagerly but reads the value (and cannot be traced). It may return a tensor or
    a Python number.
    """

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable | list, last_epoch: int = -1):
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != len(optimizer.param_groups):
                raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        ef = self.epoch_f
        out = []
        for fn, base in zip(self.lr_lambdas, self.base_lrs):
            f = fn(ef)
            out.append(lax.mul(base, f) if isinstance(f, Tensor) else base * f)
        return out

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict:
        out = super().state_dict()
        out["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) else dict(fn.__dict__)
                             for fn in self.lr_lambdas]
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for fn, saved in zip(self.lr_lambdas, state_dict.get("lr_lambdas", [])):
            if saved is not None:
                fn.__dict__.update(saved)


class WarmupCosineLR(LRScheduler):
    r"""Linear warmup, then cosine decay to `min_lr`, as a closed form of the epoch ``t``::

        W = warmup_steps, T = total_steps, s = warmup_start_factor
        lr(t) = base_lr * (s + (1 - s) * t / W)                                   for t < W
        lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * min(t - W, T - W) / (T - W))) / 2
                                                                                  for t >= W

    so the warmup starts at ``s * base_lr``, the cosine starts at ``base_lr`` at ``t = W``,
    reaches `min_lr` at ``t = T`` and stays there after it. Up to ``t = T`` this is exactly
    PyTorch's ``SequentialLR([LinearLR(opt, s, 1.0, W), CosineAnnealingLR(opt, T - W, min_lr)],
    milestones=[W])`` (the tests compare against it); PyTorch's cosine climbs back up after ``T``.
    `warmup_steps=0` gives a plain cosine from the first step.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr: float = 0.0,
                 warmup_start_factor: float = 0.0, last_epoch: int = -1):
        if warmup_steps < 0 or total_steps <= warmup_steps:
            raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
        if not 0.0 <= warmup_start_factor <= 1.0:
            raise ValueError(f"warmup_start_factor must be in [0, 1], got {warmup_start_factor}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)
        self.warmup_start_factor = float(warmup_start_factor)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        W, T, s, m = self.warmup_steps, self.total_steps, self.warmup_start_factor, self.min_lr
        t = self.epoch_f
        k = lax.min(lax.max(lax.sub(t, float(W)), 0.0), float(T - W))
        c = lax.add(1.0, lax.cos(lax.div(lax.mul(math.pi, k), float(T - W))))
        out = []
        for base in self.base_lrs:
            cos_lr = lax.add(m, lax.div(lax.mul(base - m, c), 2.0))
            if W == 0:
                out.append(cos_lr)
                continue
            warm = lax.mul(base, lax.add(s, lax.div(lax.mul(1.0 - s, t), float(W))))
            out.append(_where(lax.lt(t, float(W)), warm, cos_lr))
        return out

    _get_closed_form_lr = get_lr


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by `gamma` at each of the `milestones` epochs (by ``gamma ** n``
    at a milestone listed n times): ``base_lr * gamma ** (number of milestones <= epoch)``."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1):
        self.milestones = Counter(int(m) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if not self.milestones:
            return [g["lr"] for g in groups]
        e = self._epoch
        factor = lax.full((), 1.0, LR_DTYPE)  # exactly 1 off the milestones, as PyTorch keeps the lr
        for m, n in self.milestones.items():
            factor = _where(lax.eq(e, m), self.gamma ** n, factor)
        return [lax.mul(g["lr"], factor) for g in groups]

    def _get_closed_form_lr(self):
        k = lax.full((), 0.0, LR_DTYPE)
        for m, n in self.milestones.items():
            k = lax.add(k, lax.mul(lax.convert(lax.ge(self._epoch, m), LR_DTYPE), float(n)))
        return [lax.mul(base, lax.pow(self.gamma, k)) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by `gamma` every epoch: ``base_lr * gamma ** epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self._is_initial:
            return [g["lr"] for g in groups]
        return [lax.mul(g["lr"], self.gamma) for g in groups]

    def _get_closed_form_lr(self):
        return [lax.mul(base, lax.pow(self.gamma, self.epoch_f)) for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""SGDR (Loshchilov & Hutter): cosine annealing from the base learning rate to `eta_min` over
    ``T_i`` epochs, then a restart; ``T_0`` epochs first, each period `T_mult` times the last::

        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    `T_cur` (epochs since the last restart) and `T_i` are 0-d float64 tensors updated with `where`
    on restarts, so `step()` traces; `step(epoch)` (a float epoch too, PyTorch's per-batch use)
    computes them in Python, as PyTorch does.
    """

    T_cur = _TensorAttr(LR_DTYPE)
    T_i = _TensorAttr(LR_DTYPE)

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1):
        if not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = float(eta_min)
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        m = self.eta_min
        c = lax.add(1.0, lax.cos(lax.div(lax.mul(math.pi, self._t_T_cur), self._t_T_i)))
        return [lax.add(m, lax.div(lax.mul(base - m, c), 2.0)) for base in self.base_lrs]

    def _step_values(self):
        assign_(self._epoch, lax.add(self._epoch, 1))
        t_cur, t_i = self._t_T_cur, self._t_T_i
        cur = lax.add(t_cur, 1.0)
        restart = lax.ge(cur, t_i)
        assign_(t_cur, _where(restart, lax.rem(cur, t_i), cur))
        if self.T_mult != 1:
            assign_(t_i, _where(restart, lax.mul(t_i, float(self.T_mult)), t_i))
        return self.get_lr()

    def step(self, epoch: float | None = None) -> None:
        """Advance one epoch, or jump to `epoch` (an int or a float: a fraction of a period)."""
        if epoch is None and self._is_initial and self.last_epoch < 0:
            epoch = 0
        with no_grad():
            if epoch is None:
                values = self._step_values()
            else:
                if epoch < 0:
                    raise ValueError(f"Expected non-negative epoch, but got {epoch}")
                T_0, T_mult = self.T_0, self.T_mult
                if epoch >= T_0:
                    if T_mult == 1:
                        self.T_cur = epoch % T_0
                    else:
                        n = int(math.log((epoch / T_0 * (T_mult - 1) + 1), T_mult))
                        self.T_cur = epoch - T_0 * (T_mult ** n - 1) / (T_mult - 1)
                        self.T_i = T_0 * T_mult ** n
                else:
                    self.T_i = T_0
                    self.T_cur = epoch
                self.last_epoch = math.floor(epoch)
                values = self.get_lr()
            for group, lr in zip(self.optimizer.param_groups, values, strict=True):
                write_scalar(group["lr"], lr)


from .lr_scheduler_extra import OneCycleLR, ReduceLROnPlateau, SequentialLR  # noqa: E402,F401
