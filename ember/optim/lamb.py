"""LAMB: layer-wise adaptive large-batch optimization (You et al., "Large Batch Optimization for
Deep Learning: Training BERT in 76 minutes", ICLR 2020; the update of NVIDIA apex's FusedLAMB and
torch-optimizer's Lamb, which PyTorch itself does not have)."""
from __future__ import annotations

from .._core import dtypes as dt
from ..api.creation import zeros, zeros_like
from ..autograd import assign_
from ..ops import lax
from .optimizer import LR_DTYPE, STEP_DTYPE, Optimizer, _compute_dtype, check_hyperparameters

__all__ = ["LAMB"]


def _norm2(x, cdt):
    """The Euclidean norm of all of `x` as a 0-d tensor of dtype `cdt`."""
    if x.dtype is not cdt:
        x = lax.convert(x, cdt)
    return lax.sqrt(lax.reduce_sum(lax.mul(x, x), tuple(range(x.ndim))))


class LAMB(Optimizer):
    r"""LAMB, per parameter tensor ("layer")::

        step += 1
        g = -grad if maximize else grad
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** step);   v_hat = v / (1 - beta2 ** step)   (bias_correction)
        u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p
        r = ||p|| / ||u||, or 1 when either norm is 0                      (the trust ratio)
        p = p - (lr * r) * u

    That is the paper's Algorithm 2 with phi = identity (no clipping of ||p||), as apex's
    FusedLAMB computes it with ``adam_w_mode=True, use_nvlamb=True`` and no global gradient-norm
    clipping. With ``bias_correction=False`` the moments are used as they are (the paper's
    algorithm as printed, torch-optimizer's default). The trust ratio is computed with tensor
    ops (`where` on the norms), so the step can be traced like Adam's.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, bias_correction: bool = True, *,
                 maximize: bool = False, foreach: bool | None = None):
        check_hyperparameters(lr, betas, eps=eps, weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def _init_state(self, p, group):
        return {"step": zeros((), dtype=STEP_DTYPE), "exp_avg": zeros_like(p), "exp_avg_sq": zeros_like(p)}

    def _update_group(self, group):
        beta1, beta2 = group["betas"]
        eps, weight_decay, maximize = group["eps"], group["weight_decay"], group["maximize"]
        lr = group["lr"]
        casts = {}
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = self.state[p]
            step, m, v = st["step"], st["exp_avg"], st["exp_avg_sq"]
            cdt = _compute_dtype(p)
            step = assign_(step, lax.add(step, 1.0))
            if maximize:
                g = lax.neg(g)
            m = assign_(m, lax.add(lax.mul(m, beta1), lax.mul(g, 1.0 - beta1)))
            v = assign_(v, lax.add(lax.mul(v, beta2), lax.mul(lax.mul(g, 1.0 - beta2), g)))
            if group["bias_correction"]:
                s = lax.convert(step, LR_DTYPE)
                bc1 = lax.sub(1.0, lax.pow(beta1, s))
                bc2 = lax.sub(1.0, lax.pow(beta2, s))
                if cdt is not dt.float64:
                    bc1, bc2 = lax.convert(bc1, cdt), lax.convert(bc2, cdt)
                m, v = lax.div(m, bc1), lax.div(v, bc2)
            u = lax.div(m, lax.add(lax.sqrt(v), eps))
            if weight_decay != 0:
                u = lax.add(u, lax.mul(p, weight_decay))
            w_norm, u_norm = _norm2(p, cdt), _norm2(u, cdt)
            ok = lax.bitwise_and(lax.gt(w_norm, 0.0), lax.gt(u_norm, 0.0))
            trust = lax.select(ok, lax.div(w_norm, lax.select(ok, u_norm, 1.0)), 1.0)
            scale = lax.mul(self._cast(casts, "lr", lr, cdt), trust)
            assign_(p, lax.sub(p, lax.mul(scale, u)))
