"""Adadelta (PyTorch's update formulas, including weight decay and maximize)."""
from __future__ import annotations

from ..api.creation import zeros, zeros_like
from ..autograd import assign_
from ..ops import lax
from .optimizer import STEP_DTYPE, Optimizer, _compute_dtype, check_hyperparameters

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    r"""PyTorch's Adadelta (single-tensor path), update for update::

        step += 1
        g = -grad if maximize else grad
        g = g + weight_decay * p                         (if weight_decay != 0)
        v = rho * v + (1 - rho) * g * g                  (state "square_avg")
        delta = sqrt(u + eps) / sqrt(v + eps) * g        (u: state "acc_delta")
        u = rho * u + (1 - rho) * delta * delta
        p = p - lr * delta

    `lr` scales the step (default 1.0, Zeiler's original method).
    """

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, foreach: bool | None = None, *, capturable: bool = False,
                 maximize: bool = False, differentiable: bool = False):
        check_hyperparameters(lr, eps=eps, weight_decay=weight_decay)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if differentiable:
            raise NotImplementedError("ember's Adadelta has no differentiable variant")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=False)
        super().__init__(params, defaults)

    def _init_state(self, p, group):
        return {"step": zeros((), dtype=STEP_DTYPE), "square_avg": zeros_like(p), "acc_delta": zeros_like(p)}

    def _update_group(self, group):
        rho, eps, weight_decay, maximize = group["rho"], group["eps"], group["weight_decay"], group["maximize"]
        neg_lr = lax.neg(group["lr"])
        casts = {}
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = self.state[p]
            v, u = st["square_avg"], st["acc_delta"]
            cdt = _compute_dtype(p)
            assign_(st["step"], lax.add(st["step"], 1.0))
            if maximize:
                g = lax.neg(g)
            if weight_decay != 0:
                g = lax.add(g, lax.mul(p, weight_decay))
            v = assign_(v, lax.add(lax.mul(v, rho), lax.mul(lax.mul(g, 1.0 - rho), g)))
            std = lax.sqrt(lax.add(v, eps))
            delta = lax.mul(lax.div(lax.sqrt(lax.add(u, eps)), std), g)
            assign_(u, lax.add(lax.mul(u, rho), lax.mul(lax.mul(delta, 1.0 - rho), delta)))
            assign_(p, lax.add(p, lax.mul(delta, self._cast(casts, "neg_lr", neg_lr, cdt))))
