"""RMSprop (PyTorch's update formulas: centered variant, momentum, weight decay)."""
from __future__ import annotations

from ..api.creation import zeros, zeros_like
from ..autograd import assign_
from ..ops import lax
from .optimizer import STEP_DTYPE, Optimizer, _compute_dtype, check_hyperparameters

__all__ = ["RMSprop"]


def _lerp_(dst, end, weight: float):
    """``dst = lerp(dst, end, weight)`` in place, with PyTorch's CPU formula for each weight range."""
    if abs(weight) < 0.5:
        return assign_(dst, lax.add(dst, lax.mul(lax.sub(end, dst), weight)))
    return assign_(dst, lax.sub(end, lax.mul(lax.sub(end, dst), 1.0 - weight)))


class RMSprop(Optimizer):
    r"""PyTorch's RMSprop (single-tensor path), update for update::

        step += 1
        g = -grad if maximize else grad
        g = g + weight_decay * p                         (if weight_decay != 0)
        v = alpha * v + (1 - alpha) * g * g              (state "square_avg")
        avg = sqrt(v - ga * ga) + eps, ga = lerp(ga, g, 1 - alpha)   (centered; state "grad_avg")
        avg = sqrt(v) + eps                              (otherwise)
        buf = momentum * buf + g / avg;  p = p - lr * buf    (momentum > 0)
        p = p + (-lr * g) / avg                          (otherwise)

    The step count is kept (as PyTorch does) though the update does not read it.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False):
        check_hyperparameters(lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        if differentiable:
            raise NotImplementedError("ember's RMSprop has no differentiable variant")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=False)
        super().__init__(params, defaults)

    def _init_state(self, p, group):
        st = {"step": zeros((), dtype=STEP_DTYPE), "square_avg": zeros_like(p)}
        if group["momentum"] > 0:
            st["momentum_buffer"] = zeros_like(p)
        if group["centered"]:
            st["grad_avg"] = zeros_like(p)
        return st

    def _update_group(self, group):
        alpha, eps, weight_decay = group["alpha"], group["eps"], group["weight_decay"]
        momentum, centered, maximize = group["momentum"], group["centered"], group["maximize"]
        neg_lr = lax.neg(group["lr"])
        casts = {}
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = self.state[p]
            # options switched on after construction get their (zero) buffers now
            if momentum > 0 and "momentum_buffer" not in st:
                st["momentum_buffer"] = zeros_like(p)
            if centered and "grad_avg" not in st:
                st["grad_avg"] = zeros_like(p)
            cdt = _compute_dtype(p)
            assign_(st["step"], lax.add(st["step"], 1.0))
            if maximize:
                g = lax.neg(g)
            if weight_decay != 0:
                g = lax.add(g, lax.mul(p, weight_decay))
            v = st["square_avg"]
            v = assign_(v, lax.add(lax.mul(v, alpha), lax.mul(lax.mul(g, 1.0 - alpha), g)))
            if centered:
                ga = _lerp_(st["grad_avg"], g, 1.0 - alpha)
                avg = lax.sqrt(lax.sub(v, lax.mul(ga, ga)))
            else:
                avg = lax.sqrt(v)
            avg = lax.add(avg, eps)
            nlr = self._cast(casts, "neg_lr", neg_lr, cdt)
            if momentum > 0:
                buf = st["momentum_buffer"]
                buf = assign_(buf, lax.add(lax.mul(buf, momentum), lax.div(g, avg)))
                assign_(p, lax.add(p, lax.mul(buf, nlr)))
            else:
                assign_(p, lax.add(p, lax.div(lax.mul(g, nlr), avg)))
