"""Adagrad (PyTorch's update formulas: learning-rate decay, weight decay, initial accumulator)."""
from __future__ import annotations

from .._core import dtypes as dt
from ..api.creation import full_like, zeros
from ..autograd import assign_
from ..ops import lax
from .optimizer import LR_DTYPE, STEP_DTYPE, Optimizer, _compute_dtype, check_hyperparameters

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""PyTorch's Adagrad (single-tensor path, dense gradients), update for update::

        step += 1
        g = -grad if maximize else grad
        g = g + weight_decay * p                         (if weight_decay != 0)
        clr = lr / (1 + (step - 1) * lr_decay)           (float64 tensor ops on the step count)
        sum = sum + g * g
        p = p + (-clr * g) / (sqrt(sum) + eps)

    `sum` starts at the constructor's `initial_accumulator_value` (state "sum", created by the
    constructor as in PyTorch, which also ignores a parameter group's own value of it).
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 foreach: bool | None = None, *, maximize: bool = False, differentiable: bool = False,
                 fused: bool | None = None):
        check_hyperparameters(lr, lr_decay=lr_decay, weight_decay=weight_decay,
                              initial_accumulator_value=initial_accumulator_value, eps=eps)
        if differentiable or fused:
            raise NotImplementedError("ember's Adagrad has no differentiable or fused variant")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=False, fused=None)
        super().__init__(params, defaults)

    def _init_state(self, p, group):
        return {"step": zeros((), dtype=STEP_DTYPE),
                "sum": full_like(p, self.defaults["initial_accumulator_value"])}

    def _update_group(self, group):
        lr_decay, eps, weight_decay = group["lr_decay"], group["eps"], group["weight_decay"]
        maximize = group["maximize"]
        lr = group["lr"]
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = self.state[p]
            step, acc = st["step"], st["sum"]
            cdt = _compute_dtype(p)
            step = assign_(step, lax.add(step, 1.0))
            if maximize:
                g = lax.neg(g)
            if weight_decay != 0:
                g = lax.add(g, lax.mul(p, weight_decay))
            # PyTorch: clr = lr / (1 + (step - 1) * lr_decay) in Python floats
            s = lax.convert(step, LR_DTYPE)
            neg_clr = lax.neg(lax.div(lr, lax.add(1.0, lax.mul(lax.sub(s, 1.0), lr_decay))))
            if cdt is not dt.float64:
                neg_clr = lax.convert(neg_clr, cdt)
            acc = assign_(acc, lax.add(acc, lax.mul(g, g)))
            std = lax.add(lax.sqrt(acc), eps)
            assign_(p, lax.add(p, lax.div(lax.mul(g, neg_clr), std)))
