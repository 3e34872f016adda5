"""The activations PyTorch has at the top level and as Tensor methods: relu, softmax, log_softmax
(torch.relu, x.softmax(dim)); ember.nn.functional re-exports these same functions."""
from __future__ import annotations

from .._core.state import TLS
from ..autograd import assign_
from ..ops import lax
from ..tensor import Tensor
from .math import convert
from .precision import accumulate_in_float32
from .shape import _dim, clone


def inplace_source(input: Tensor, inplace: bool) -> Tensor:
    """What an in-place op reads: a differentiable copy when the tape would save memory it overwrites."""
    return clone(input) if inplace and input.requires_grad and TLS.grad_enabled else input


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0); NaN propagates and the gradient at 0 is 0 (as PyTorch)."""
    src = inplace_source(input, inplace)
    out = lax.select(lax.le(src, 0), 0, src)
    return assign_(input, out) if inplace else out


def shifted_by_max(input: Tensor, dim, dtype):
    """(x - max(x) along dim, dim): the stable starting point of softmax and log_softmax."""
    if dtype is not None:
        input = convert(input, dtype)
    if dim is None:
        raise TypeError("softmax needs dim=")
    d = _dim(dim, input.ndim, "softmax")
    if input.shape[d] == 0:  # nothing to shift (and no max of nothing)
        return input, d
    m = lax.reduce_max(input, (d,)).detach()
    return lax.sub(input, lax.keepdims(m, (d,))), d


@accumulate_in_float32("input")
def softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """exp(x - max) / sum(exp(x - max)) along `dim`."""
    if input.ndim == 0:
        return lax.div(input, input)
    z, d = shifted_by_max(input, dim, dtype)
    e = lax.exp(z)
    return lax.div(e, lax.keepdims(lax.reduce_sum(e, (d,)), (d,)))


@accumulate_in_float32("input")
def log_softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """x - max - log(sum(exp(x - max))) along `dim`."""
    if input.ndim == 0:
        return lax.sub(input, input)
    z, d = shifted_by_max(input, dim, dtype)
    lse = lax.log(lax.reduce_sum(lax.exp(z), (d,)))
    return lax.sub(z, lax.keepdims(lse, (d,)))


__all__ = ["relu", "softmax", "log_softmax"]
