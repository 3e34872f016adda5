"""Diagonals with PyTorch's names: diagonal, diag, diag_embed, trace.

A diagonal of an (n, m) matrix is a strided slice of its flattened form (step m + 1), and a
matrix with a given diagonal is the vector padded to rows of m + 1 and re-cut into rows of m, so
all of them are reshapes, pads and slices: differentiable, and lowered natively by ember.jit
without multiplying by an identity (which would turn an inf into NaN off the diagonal).
"""
from __future__ import annotations

from .._core.errors import ShapeError, op_error
from ..ops import lax
from ..tensor import Tensor, as_tensor
from .math import sum
from .shape import _dim, movedim


def diagonal(input, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal of each (dim1, dim2) matrix, as the last dimension of the result."""
    x = as_tensor(input)
    if x.ndim < 2:
        raise op_error(ShapeError, "diagonal", f"needs at least 2 dimensions, got shape {x.shape}")
    d1, d2 = _dim(dim1, x.ndim, "diagonal"), _dim(dim2, x.ndim, "diagonal")
    if d1 == d2:
        raise op_error(ShapeError, "diagonal", f"dim1 and dim2 are the same dimension ({dim1}, {dim2})")
    x = movedim(x, (d1, d2), (-2, -1))
    *lead, n, m = x.shape
    length = max(0, min(n + min(offset, 0), m - max(offset, 0)))
    start = offset if offset >= 0 else -offset * m
    flat = lax.reshape(x, tuple(lead) + (n * m,))
    stop = start + (length - 1) * (m + 1) + 1 if length else 0
    r = len(lead)
    return lax.slice(flat, (0,) * r + (min(start, stop),), tuple(lead) + (stop,), (1,) * r + (m + 1,))


def diag_embed(input, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Tensor:
    """Matrices whose `offset` diagonal (in dims dim1, dim2 of the result) is the last dim of input."""
    x = as_tensor(input)
    *lead, n = x.shape
    r = len(lead)
    # (..., n) -> (..., n, n + 1) with x in column 0 -> cut into rows of n: x lands on the diagonal
    col = lax.pad(lax.reshape(x, tuple(lead) + (n, 1)), 0, ((0, 0, 0),) * r + ((0, 0, 0), (0, n, 0)))
    flat = lax.reshape(col, tuple(lead) + (n * (n + 1),))
    sq = lax.reshape(lax.slice(flat, (0,) * (r + 1), tuple(lead) + (n * n,), (1,) * (r + 1)), tuple(lead) + (n, n))
    k = abs(offset)
    rows, cols = ((0, k), (k, 0)) if offset >= 0 else ((k, 0), (0, k))
    out = lax.pad(sq, 0, ((0, 0, 0),) * r + ((rows[0], rows[1], 0), (cols[0], cols[1], 0))) if k else sq
    nd = out.ndim
    d1, d2 = _dim(dim1, nd, "diag_embed"), _dim(dim2, nd, "diag_embed")
    if d1 == d2:
        raise op_error(ShapeError, "diag_embed", f"dim1 and dim2 are the same dimension ({dim1}, {dim2})")
    return movedim(out, (nd - 2, nd - 1), (d1, d2))


def diag(input, diagonal: int = 0) -> Tensor:
    """A 1-D input's square matrix with it on the `diagonal`, or a 2-D input's diagonal."""
    x = as_tensor(input)
    if x.ndim == 1:
        return diag_embed(x, diagonal)
    if x.ndim == 2:
        return globals()["diagonal"](x, diagonal)
    raise op_error(ShapeError, "diag", f"expects a 1-D or 2-D tensor, got shape {x.shape}")


def trace(input) -> Tensor:
    """The sum of a 2-D tensor's main diagonal."""
    x = as_tensor(input)
    if x.ndim != 2:
        raise op_error(ShapeError, "trace", f"expects a 2-D tensor, got shape {x.shape}")
    return sum(diagonal(x))


__all__ = ["diagonal", "diag_embed", "diag", "trace"]
