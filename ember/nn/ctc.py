"""Connectionist temporal classification (PyTorch's F.ctc_loss and nn.CTCLoss).

The loss is -log of the total probability of every alignment of the target to the input frames,
computed by the forward (alpha) recursion over the extended target (a blank between and around
the labels), in log space and batched: at frame t,

    alpha_t(s) = logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2) if allowed) + lp[t, l'_s]

where the skip from s-2 is allowed when l'_s is a label different from l'_{s-2}. Written with ember
ops, so the gradient is autograd's (the same as PyTorch's hand-written backward, which also treats
log_probs as free inputs) and ember.jit unrolls the T frames. Impossible alignments (a target
longer than its input allows) carry a large finite negative log-probability instead of -inf, so no
NaN appears in the backward pass; their loss is reported as inf, or 0 with `zero_infinity`.
"""
from __future__ import annotations

import numpy as np

from .. import api as E
from .._core.errors import ShapeError, op_error
from ..api.precision import autocast_float32
from ..ops import lax
from ..tensor import Tensor, tensor
from .module import Module

_NEG = -1e30  # log(0) stand-in: exp(_NEG - m) is 0, and every logsumexp stays finite


def _lengths(x, n: int, what: str) -> np.ndarray:
    a = np.asarray(x.numpy() if isinstance(x, Tensor) else x, np.int64).reshape(-1)
    if a.shape != (n,):
        raise op_error(ShapeError, "ctc_loss", f"{what} must hold one length per batch element ({n}), got {a.shape}")
    return a


def _lse3(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    m = E.maximum(E.maximum(a, b), c).detach()
    return m + E.log(E.exp(a - m) + E.exp(b - m) + E.exp(c - m))


@autocast_float32("log_probs")
def ctc_loss(log_probs: Tensor, targets, input_lengths, target_lengths, blank: int = 0,
             reduction: str = "mean", zero_infinity: bool = False) -> Tensor:
    """CTC loss of (T, N, C) log-probabilities (or (T, C) unbatched) against padded (N, S) or
    concatenated 1-D targets."""
    if reduction not in ("none", "mean", "sum"):
        raise op_error(ValueError, "ctc_loss", f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    unbatched = log_probs.ndim == 2
    lp = E.unsqueeze(log_probs, 1) if unbatched else log_probs
    if lp.ndim != 3:
        raise op_error(ShapeError, "ctc_loss", f"log_probs must be (T, N, C) or (T, C), got {tuple(log_probs.shape)}")
    T, N, C = lp.shape
    if not 0 <= blank < C:
        raise op_error(ValueError, "ctc_loss", f"blank {blank} is not a class index for {C} classes")
    il, tl = _lengths(input_lengths, N, "input_lengths"), _lengths(target_lengths, N, "target_lengths")
    tg = np.asarray(targets.numpy() if isinstance(targets, Tensor) else targets, np.int64)
    if unbatched and tg.ndim == 1:
        tg = tg[None]
    if tg.ndim == 2:
        rows = [tg[n, :tl[n]] for n in range(N)]
    else:  # concatenated targets
        if tg.size != tl.sum():
            raise op_error(ShapeError, "ctc_loss", f"1-D targets of length {tg.size} do not match target_lengths "
                           f"summing to {int(tl.sum())}")
        rows = np.split(tg, np.cumsum(tl)[:-1])
    if (il > T).any() or (il < 0).any() or (tl < 0).any():
        raise op_error(ValueError, "ctc_loss", f"input_lengths {il.tolist()} must lie in [0, {T}] and "
                       f"target_lengths {tl.tolist()} be non-negative")
    L = 2 * int(tl.max(initial=0)) + 1
    ext = np.full((N, L), blank, np.int64)   # blank, l1, blank, l2, ..., blank
    skip = np.zeros((N, L), bool)            # may alpha(s) come from alpha(s - 2)?
    for n, r in enumerate(rows):
        if ((r < 0) | (r >= C) | (r == blank)).any():
            raise op_error(ValueError, "ctc_loss", f"targets of batch element {n} must be classes in [0, {C}) "
                           f"other than the blank {blank}, got {r.tolist()}")
        ext[n, 1:2 * len(r):2] = r
        skip[n, 3:2 * len(r):2] = r[1:] != r[:-1]
    dtype = lp.dtype
    neg = lax.full((N, L), _NEG, dtype)
    pad1, pad2 = lax.full((N, 1), _NEG, dtype), lax.full((N, min(2, L)), _NEG, dtype)
    idx = tensor(ext)
    step_ok = tensor(skip)
    alive0 = tensor(np.arange(L)[None, :] < np.minimum(2, 2 * tl + 1)[:, None])
    # frame 0: start in the first blank or the first label
    emit = E.gather(lp[0], 1, idx)
    alpha = E.where(alive0, emit, neg)
    for t in range(1, T):
        emit = E.gather(lp[t], 1, idx)
        prev1 = E.cat([pad1, alpha[:, :L - 1]], 1)  # alpha(s - 1), and alpha(s - 2) where allowed
        prev2 = E.where(step_ok, E.cat([pad2, alpha[:, :L - 2]], 1)[:, :L], neg)
        new = _lse3(alpha, prev1, prev2) + emit
        alpha = E.where(tensor((t < il)[:, None]), new, alpha)  # frames past an input's length: frozen
    last = tensor(np.stack([2 * tl, np.maximum(2 * tl - 1, 0)], 1))
    ends = lax.take_along_axis(alpha, last, 1)
    one_end = tensor((tl == 0)[:, None] & (np.arange(2) == 1)[None, :])
    ends = E.where(one_end, lax.full(ends.shape, _NEG, dtype), ends)  # an empty target ends only in the blank
    m = E.amax(ends, 1, keepdim=True).detach()
    nll = -(m[:, 0] + E.log(E.exp(ends - m).sum(1)))
    nll = E.where(tensor(il == 0) & tensor(tl > 0), lax.full((N,), -_NEG, dtype), nll)
    impossible = nll >= -_NEG / 2
    nll = E.where(impossible, 0.0 if zero_infinity else float("inf"), nll)
    if reduction == "none":
        return nll[0] if unbatched else nll
    if reduction == "sum":
        return nll.sum()
    return (nll / tensor(np.maximum(tl, 1)).to(dtype)).mean()


class CTCLoss(Module):
    """nn.CTCLoss(blank=0, reduction='mean', zero_infinity=False)."""

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False):
        super().__init__()
        self.blank, self.reduction, self.zero_infinity = blank, reduction, zero_infinity

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        return ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction,
                        self.zero_infinity)


__all__ = ["ctc_loss", "CTCLoss"]
