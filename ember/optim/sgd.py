"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's SGD)."""
from __future__ import annotations

from ..ops import lax
from ..autograd import assign_
from ..api.creation import zeros, zeros_like
from .optimizer import STEP_DTYPE, Optimizer, _compute_dtype, check_hyperparameters

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""PyTorch's SGD, update for update::

        g = -grad if maximize else grad
        g = g + weight_decay * p                              (if weight_decay != 0)
        buf = g                       on the first step       (if momentum != 0)
        buf = momentum * buf + (1 - dampening) * g   after it
        g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    PyTorch creates the momentum buffer on the first step; ember creates it (zeros) and a step
    count with the optimizer, and selects the first-step rule with tensor ops on the step count:
    ``buf = (momentum * nf) * buf + (1 - dampening * nf) * g`` with ``nf = (step != 0)`` as 0.0/1.0
    (exactly ``g`` on the first step, bit for bit PyTorch's rule after it).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None):
        check_hyperparameters(lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if differentiable or fused:
            raise NotImplementedError("ember's SGD has no differentiable or fused variant")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=False,
                        fused=None)
        super().__init__(params, defaults)

    def _init_state(self, p, group):
        if group["momentum"] == 0:
            return {}
        return {"momentum_buffer": zeros_like(p), "step": zeros((), dtype=STEP_DTYPE)}

    def _after_load_state(self, p, cur, saved, group):
        # PyTorch's state has no step count: a saved buffer means the first step has been taken,
        # a missing (None) one that it has not
        if group["momentum"] == 0 or "step" in saved:
            return
        if "momentum_buffer" not in cur:
            cur.update(self._init_state(p, group))
        buf = saved.get("momentum_buffer")
        with_buf = buf is not None
        if not with_buf:
            cur["momentum_buffer"].zero_()
        cur["step"].fill_(1.0 if with_buf else 0.0)

    def _update_group(self, group):
        momentum, dampening = group["momentum"], group["dampening"]
        weight_decay, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
        neg_lr = lax.neg(group["lr"])
        casts = {}
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            cdt = _compute_dtype(p)
            if maximize:
                g = lax.neg(g)
            if weight_decay != 0:
                g = lax.add(g, lax.mul(p, weight_decay))
            if momentum != 0:
                st = self.state[p]
                if "momentum_buffer" not in st:  # momentum switched on after construction
                    st.update(self._init_state(p, group))
                buf, step = st["momentum_buffer"], st["step"]
                nf = lax.convert(lax.ne(step, 0), cdt)  # 0.0 on the first step, 1.0 after
                new_buf = lax.mul(buf, lax.mul(nf, momentum))
                if dampening != 0:
                    # 1 on the first step, (1 - dampening) after it (both exact)
                    c = lax.add(lax.sub(1.0, nf), lax.mul(nf, 1.0 - dampening))
                    new_buf = lax.add(new_buf, lax.mul(g, c))
                else:
                    new_buf = lax.add(new_buf, g)
                new_buf = assign_(buf, new_buf)  # continue from the stored (rounded) buffer
                assign_(step, lax.add(step, 1.0))
                g = lax.add(g, lax.mul(new_buf, momentum)) if nesterov else new_buf
            assign_(p, lax.add(p, lax.mul(g, self._cast(casts, "neg_lr", neg_lr, cdt))))
