"""Gradient clipping: `clip_grad_norm_` and `clip_grad_value_` (PyTorch's `torch.nn.utils` ones).

Both work on the gradients in place with tensor ops only: the clip coefficient
``min(1, max_norm / (total_norm + 1e-6))`` stays a 0-d tensor and is multiplied into every
gradient (a factor of exactly 1.0 when no clipping is needed), so no value is read into Python
and the clip can be traced into a training step.
"""
from __future__ import annotations

import math
from typing import Iterable

from .._core import dtypes as dt
from .._core.state import no_grad
from ..api.math import clamp as _clamp, norm as _norm
from ..api.shape import stack as _stack
from ..autograd import assign_
from ..ops import lax
from ..tensor import Tensor, tensor as _tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm"]


def _params(parameters) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


def get_total_norm(tensors: Iterable[Tensor], norm_type: float = 2.0,
                   error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """The `norm_type`-norm of all `tensors` taken together (the norm of their norms)."""
    tensors = [tensors] if isinstance(tensors, Tensor) else [t for t in tensors if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        return _tensor(0.0)
    with no_grad():
        norms = [_norm(t.detach(), norm_type) for t in tensors]
        d = norms[0].dtype
        for n in norms[1:]:
            d = dt.promote_types(d, n.dtype)
        norms = [n if n.dtype is d else lax.convert(n, d) for n in norms]
        total = norms[0] if len(norms) == 1 and norm_type in (1.0, 2.0, math.inf) \
            else _norm(_stack(norms), norm_type)
    if error_if_nonfinite:
        # reads the value: eager only (a traced step cannot raise on a value)
        if not bool(lax.bitwise_not(lax.bitwise_or(lax.isnan(total), lax.eq(lax.abs(total), math.inf)))):
            raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is "
                               "non-finite, so it cannot be clipped. To disable this error and scale the "
                               "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    return total


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """Scale the gradients of `parameters` in place so that their total norm is at most `max_norm`.

    Returns the total norm before clipping (a 0-d tensor). Every gradient is multiplied by
    ``min(1, max_norm / (total_norm + 1e-6))`` computed as a tensor. `foreach` is accepted for
    PyTorch compatibility (ember always loops over the gradients with elementwise ops).
    """
    params = [p for p in _params(parameters) if p.grad is not None]
    total = get_total_norm([p.grad for p in params], norm_type, error_if_nonfinite)
    if not params:
        return total
    with no_grad():
        coef = lax.min(lax.div(float(max_norm), lax.add(total, 1e-6)), 1.0)
        casts = {}
        for p in params:
            g = p.grad
            c = casts.get(g.dtype)
            if c is None:
                c = casts[g.dtype] = coef if coef.dtype is g.dtype else lax.convert(coef, g.dtype)
            _write_grad(p, lax.mul(g, c))
    return total


def _write_grad(p: Tensor, new: Tensor) -> None:
    g = p.grad
    if g._data.flags.writeable:
        assign_(g, new)
    else:  # a read-only (broadcast) gradient: replace it
        p.grad = new


def clip_grad_value_(parameters, clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every gradient of `parameters` to ``[-clip_value, clip_value]`` in place."""
    clip_value = float(clip_value)
    with no_grad():
        for p in _params(parameters):
            g = p.grad
            if g is not None:
                _write_grad(p, _clamp(g, -clip_value, clip_value))  # NaN stays NaN, as in PyTorch
