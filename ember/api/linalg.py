"""matmul with PyTorch's broadcasting rules, lowered to one dot_general."""
from __future__ import annotations

from .._core.errors import ShapeError, op_error
from ..ops import lax
from ..tensor import Tensor
from .shape import expand, reshape


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product: 1-D vectors, 2-D matrices and broadcast batches of matrices (x @ y)."""
    a, b = input, other
    if a.ndim == 0 or b.ndim == 0:
        raise op_error(ShapeError, "matmul", f"both operands need at least 1 dim, got {a.shape} and {b.shape}")
    if b.ndim <= 2:
        # (..., n, k) @ (k, m) or (k,): contract the last dim of a with the first of b, no batch
        return lax.dot_general(a, b, ((a.ndim - 1,), (0,)))
    if a.ndim == 1:
        out = matmul(reshape(a, (1, a.shape[0])), b)
        return reshape(out, out.shape[:-2] + out.shape[-1:])
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    try:
        import numpy as np
        batch = tuple(np.broadcast_shapes(batch_a, batch_b))
    except ValueError:
        raise op_error(ShapeError, "matmul", f"batch dims of {a.shape} and {b.shape} do not broadcast") from None
    if batch_a != batch:
        a = expand(a, batch + a.shape[-2:])
    if batch_b != batch:
        b = expand(b, batch + b.shape[-2:])
    nb = len(batch)
    return lax.dot_general(a, b, ((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb))))


def mm(input, mat2):
    if input.ndim != 2 or mat2.ndim != 2:
        raise op_error(ShapeError, "mm", f"expects 2-D operands, got {input.shape} and {mat2.shape}")
    return matmul(input, mat2)


def bmm(input, mat2):
    if input.ndim != 3 or mat2.ndim != 3:
        raise op_error(ShapeError, "bmm", f"expects 3-D operands, got {input.shape} and {mat2.shape}")
    return matmul(input, mat2)


def dot(input, other):
    if input.ndim != 1 or other.ndim != 1:
        raise op_error(ShapeError, "dot", f"expects 1-D operands, got {input.shape} and {other.shape}")
    return matmul(input, other)


def outer(input, vec2):
    return lax.dot_general(reshape(input, (-1, 1)), reshape(vec2, (1, -1)), ((1,), (0,)))


__all__ = [_n for _n, _v in list(globals().items())
           if not _n.startswith("_") and getattr(_v, "__module__", None) == __name__]
