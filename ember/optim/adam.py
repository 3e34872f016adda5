"""Adam and AdamW (PyTorch's update formulas, including bias correction and AMSGrad)."""
from __future__ import annotations

from .._core import dtypes as dt
from ..api.creation import zeros, zeros_like
from ..autograd import assign_
from ..ops import lax
from .optimizer import LR_DTYPE, STEP_DTYPE, Optimizer, _compute_dtype, check_hyperparameters

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""PyTorch's Adam (single-tensor path), update for update::

        step += 1
        g = -grad if maximize else grad
        p = p * (1 - lr * weight_decay)          (decoupled_weight_decay, i.e. AdamW)
        g = g + weight_decay * p                 (otherwise, if weight_decay != 0)
        m = lerp(m, g, 1 - beta1)                (PyTorch's lerp: m + w * (g - m) for w < 0.5)
        v = beta2 * v + (1 - beta2) * g * g
        v_max = maximum(v_max, v)                (amsgrad; the denominator then uses v_max)
        bc1 = 1 - beta1 ** step;  bc2 = 1 - beta2 ** step
        p = p + (-lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)

    The bias corrections are computed from the step-count tensor with tensor ops in float64 (as
    PyTorch computes them in Python floats) and cast to the parameter's dtype.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False):
        check_hyperparameters(lr, betas, eps=eps, weight_decay=weight_decay)
        if differentiable or fused:
            raise NotImplementedError(f"ember's {type(self).__name__} has no differentiable or fused variant")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=False, fused=None, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _init_state(self, p, group):
        st = {"step": zeros((), dtype=STEP_DTYPE), "exp_avg": zeros_like(p), "exp_avg_sq": zeros_like(p)}
        if group["amsgrad"]:
            st["max_exp_avg_sq"] = zeros_like(p)
        return st

    def _update_group(self, group):
        beta1, beta2 = group["betas"]
        eps, weight_decay, amsgrad = group["eps"], group["weight_decay"], group["amsgrad"]
        maximize, decoupled = group["maximize"], group["decoupled_weight_decay"]
        lr = group["lr"]
        w1 = 1.0 - beta1
        casts = {}
        decay = lax.sub(1.0, lax.mul(lr, weight_decay)) if (weight_decay != 0 and decoupled) else None
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = self.state[p]
            if amsgrad and "max_exp_avg_sq" not in st:  # amsgrad switched on after construction
                st["max_exp_avg_sq"] = zeros_like(p)
            step, m, v = st["step"], st["exp_avg"], st["exp_avg_sq"]
            cdt = _compute_dtype(p)
            step = assign_(step, lax.add(step, 1.0))
            if maximize:
                g = lax.neg(g)
            base = p
            if weight_decay != 0:
                if decoupled:
                    base = lax.mul(p, self._cast(casts, "decay", decay, cdt))
                else:
                    g = lax.add(g, lax.mul(p, weight_decay))
            if abs(w1) < 0.5:
                m_new = lax.add(m, lax.mul(lax.sub(g, m), w1))
            else:
                m_new = lax.sub(g, lax.mul(lax.sub(g, m), 1.0 - w1))
            m_new = assign_(m, m_new)
            v_new = assign_(v, lax.add(lax.mul(v, beta2), lax.mul(lax.mul(g, 1.0 - beta2), g)))
            if amsgrad:
                v_new = assign_(st["max_exp_avg_sq"], lax.max(st["max_exp_avg_sq"], v_new))
            # scalar prologue in float64 (PyTorch does it in Python floats), cast once
            s = lax.convert(step, LR_DTYPE)
            bc1 = lax.sub(1.0, lax.pow(beta1, s))
            bc2 = lax.sub(1.0, lax.pow(beta2, s))
            neg_step_size = lax.neg(lax.div(lr, bc1))
            bc2_sqrt = lax.pow(bc2, 0.5)
            if cdt is not dt.float64:
                neg_step_size = lax.convert(neg_step_size, cdt)
                bc2_sqrt = lax.convert(bc2_sqrt, cdt)
            denom = lax.add(lax.div(lax.sqrt(v_new), bc2_sqrt), eps)
            assign_(p, lax.add(base, lax.div(lax.mul(m_new, neg_step_size), denom)))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay``."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused, decoupled_weight_decay=True)
