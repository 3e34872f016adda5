"""Primitives with no tensor operands: `full` and `iota`, and counter-based `random_bits`.

`random_bits(key, shape)` is Philox4x32-10 (Salmon et al., SC'11): `key` is a uint32[4] tensor
(two key words = the seed, two counter words = the offset, in blocks of four outputs). Element i
of the output is word i % 4 of Philox(counter = offset + i // 4, key). The same (seed, offset) gives
the same bits in numpy and in generated code, and blocks can be drawn in parallel.
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from .core import ALL_DTYPES, CUSTOM, Aval, Primitive, register
from .philox import philox4x32_10


def _full_abstract(*, shape, value, dtype) -> Aval:
    if any(d < 0 for d in shape):
        raise op_error(ShapeError, "full", f"negative dimension in shape {shape}")
    return Aval(shape, dtype)


register(Primitive("full", impl=lambda *, shape, value, dtype: np.full(shape, value, dtype.np),
                   abstract=_full_abstract, dtype_rule=CUSTOM, kind="creation", dtypes=ALL_DTYPES + dt.COMPLEX + (dt.uint32,),
                   lowering=None))


def _iota_abstract(*, shape, dim, dtype) -> Aval:
    if not 0 <= dim < len(shape):
        raise op_error(ShapeError, "iota", f"dim {dim} out of range for shape {shape}")
    return Aval(shape, dtype)


def _iota_impl(*, shape, dim, dtype):
    r = np.arange(shape[dim], dtype=dtype.np if dtype.kind != "b" else np.int64).astype(dtype.np, copy=False)
    r = r.reshape((-1,) + (1,) * (len(shape) - dim - 1))
    return np.broadcast_to(r, shape).copy()


register(Primitive("iota", impl=_iota_impl, abstract=_iota_abstract, dtype_rule=CUSTOM,
                   kind="creation", dtypes=ALL_DTYPES))


def _bits_abstract(key: Aval, *, shape) -> Aval:
    if key.dtype is not dt.uint32 or key.shape != (4,):
        raise op_error(DTypeError, "random_bits", f"key must be uint32[4], got {key}")
    return Aval(shape, dt.uint32)


def _bits_impl(key, *, shape):
    n = math.prod(shape)
    blocks = -(-n // 4)
    k = key.astype(np.uint32)
    lo = np.uint64(k[2]) + np.arange(blocks, dtype=np.uint64)
    hi = np.uint64(k[3]) + (lo >> np.uint64(32))  # carry into the high counter word
    ctr = np.zeros((blocks, 4), np.uint32)
    ctr[:, 0] = (lo & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    ctr[:, 1] = hi.astype(np.uint32)
    out = philox4x32_10(ctr, k[:2])
    return out.reshape(-1)[:n].reshape(shape)


register(Primitive("random_bits", impl=_bits_impl, abstract=_bits_abstract, dtype_rule=CUSTOM,
                   kind="random", dtypes=(dt.uint32,), half_in_f32=False))
