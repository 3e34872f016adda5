"""Lion: EvoLved Sign Momentum (Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023),
with the update of lucidrains' `lion-pytorch` reference (PyTorch itself does not have it)."""
from __future__ import annotations

from ..api.creation import zeros_like
from ..autograd import assign_
from ..ops import lax
from .optimizer import Optimizer, _compute_dtype, check_hyperparameters

__all__ = ["Lion"]


class Lion(Optimizer):
    r"""Lion, update for update as `lion_pytorch.Lion`'s ``update_fn``::

        g = -grad if maximize else grad
        p = p * (1 - lr * weight_decay)                  (decoupled weight decay, if != 0)
        p = p - lr * sign(beta1 * m + (1 - beta1) * g)
        m = beta2 * m + (1 - beta2) * g                  (state "exp_avg")

    Every coordinate moves by exactly ``lr`` (or 0 where the interpolation is 0), so Lion wants a
    learning rate 3-10x smaller than AdamW's and a correspondingly larger weight decay. There is
    no step count: the update does not depend on it.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, foreach: bool | None = None):
        check_hyperparameters(lr, betas, weight_decay=weight_decay, betas_closed=True)
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize,
                        foreach=foreach)
        super().__init__(params, defaults)

    def _init_state(self, p, group):
        return {"exp_avg": zeros_like(p)}

    def _update_group(self, group):
        beta1, beta2 = group["betas"]
        weight_decay, maximize = group["weight_decay"], group["maximize"]
        lr = group["lr"]
        neg_lr = lax.neg(lr)
        decay = lax.sub(1.0, lax.mul(lr, weight_decay)) if weight_decay != 0 else None
        casts = {}
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            m = self.state[p]["exp_avg"]
            cdt = _compute_dtype(p)
            if maximize:
                g = lax.neg(g)
            base = p if decay is None else lax.mul(p, self._cast(casts, "decay", decay, cdt))
            update = lax.sign(lax.add(lax.mul(m, beta1), lax.mul(g, 1.0 - beta1)))
            assign_(p, lax.add(base, lax.mul(update, self._cast(casts, "neg_lr", neg_lr, cdt))))
            assign_(m, lax.add(lax.mul(m, beta2), lax.mul(g, 1.0 - beta2)))
