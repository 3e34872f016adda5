"""`dot_general`: a contraction with batch and contracting dims (JAX's dimension numbers).

Output dims are the batch dims (in the given order), then the free dims of x, then those of y,
each in increasing order. Transposes feeding a contraction fold into these numbers, so a GEMM
never needs a materialised transpose.

`preferred` (JAX's `preferred_element_type`; a param only when given) is the dtype the products
are summed and returned in: int8/uint8 operands with `preferred=int32` give the exact int32 sums
(the numpy kernel: np.matmul on int32 copies; sums wrap modulo 2**32 as int32 matmul does, first
possible from k = 65794 on). It must hold the operands' promoted dtype. The CPU backend lowers the
8-bit case to its own int8 GEMM (backend/cpu/qgemm.py).
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from . import lax
from .core import Aval, P, Primitive, register

DOT_DTYPES = tuple(d for d in dt.ALL if d is not dt.bool_)


def _free(ndim, contract, batch):
    return tuple(i for i in range(ndim) if i not in contract and i not in batch)


def preferred_dtype(op: str, promoted, preferred):
    """`preferred` as a DType, checked: it must hold the operands' promoted dtype `promoted`."""
    p = dt.as_dtype(preferred)
    if p not in DOT_DTYPES or dt.PROMOTION[(promoted, p)] is not p:
        raise op_error(DTypeError, op, f"preferred={p.name} cannot hold the {promoted.name} operands' products")
    return p


def _dot_abstract(x: Aval, y: Aval, *, contract, batch, preferred=None) -> Aval:
    (xc, yc), (xb, yb) = contract, batch
    bad = (len(xc) != len(yc) or len(xb) != len(yb)
           or any(not 0 <= i < len(x.shape) for i in xc + xb) or any(not 0 <= i < len(y.shape) for i in yc + yb)
           or len(set(xc + xb)) != len(xc + xb) or len(set(yc + yb)) != len(yc + yb))
    if not bad:
        bad = any(x.shape[i] != y.shape[j] for i, j in zip(xc, yc)) or \
            any(x.shape[i] != y.shape[j] for i, j in zip(xb, yb))
    if bad:
        raise op_error(ShapeError, "matmul", f"cannot contract shapes {x.shape} and {y.shape} "
                       f"(contracting dims {xc} with {yc}, batch dims {xb} with {yb})")
    _, out = P.dot_general.resolve_dtypes((x.dtype, y.dtype))
    if preferred is not None:
        out = preferred_dtype("matmul", out, preferred)
    shape = tuple(x.shape[i] for i in xb) + tuple(x.shape[i] for i in _free(len(x.shape), xc, xb)) + \
        tuple(y.shape[i] for i in _free(len(y.shape), yc, yb))
    return Aval(shape, out)


def _dot_impl(x, y, *, contract, batch, preferred=None):
    if preferred is not None:  # summed in `preferred` (float32 for a half type, then rounded)
        ct = np.float32 if preferred in (dt.float16, dt.bfloat16) else preferred.np
        out = _dot_impl(x.astype(ct, copy=False), y.astype(ct, copy=False), contract=contract, batch=batch)
        return out.astype(preferred.np, copy=False)
    (xc, yc), (xb, yb) = contract, batch
    if not xb and x.ndim == 2 and y.ndim == 2 and len(xc) == 1:
        # every 2-D contraction is one GEMM with transposes as views (BLAS flags)
        return np.matmul(x if xc[0] == 1 else x.T, y if yc[0] == 0 else y.T)
    if not xb and y.ndim == 2 and len(xc) == 1 and xc[0] == x.ndim - 1:
        # (..., k) x (k, n) or (n, k): fold the leading dims into the GEMM rows
        lead = x.shape[:-1]
        out = np.matmul(x.reshape(math.prod(lead), x.shape[-1]), y if yc[0] == 0 else y.T)  # not -1: k may be 0
        return out.reshape(lead + out.shape[-1:])
    xf, yf = _free(x.ndim, xc, xb), _free(y.ndim, yc, yb)
    nb = math.prod(x.shape[i] for i in xb)
    nk = math.prod(x.shape[i] for i in xc)
    nm = math.prod(x.shape[i] for i in xf)
    nn = math.prod(y.shape[i] for i in yf)
    if len(xc) != len(yc) or any(x.shape[i] != y.shape[j] for i, j in zip(xc + xb, yc + yb)):
        raise ValueError("contracting or batch dims differ in size")
    a = np.transpose(x, xb + xf + xc).reshape(nb, nm, nk)
    b = np.transpose(y, yb + yc + yf).reshape(nb, nk, nn)
    out = np.matmul(a, b)
    return out.reshape(tuple(x.shape[i] for i in xb) + tuple(x.shape[i] for i in xf) +
                       tuple(y.shape[i] for i in yf))


def _dot_vjp(g, out, x, y, *, contract, batch, preferred=None):
    (xc, yc), (xb, yb) = contract, batch
    xf, yf = _free(len(x.shape), xc, xb), _free(len(y.shape), yc, yb)
    nb = len(xb)
    gb = tuple(range(nb))
    gxf = tuple(range(nb, nb + len(xf)))
    gyf = tuple(range(nb + len(xf), nb + len(xf) + len(yf)))
    gx = gy = None
    if x.dtype.kind == "f" and getattr(x, "_rg", True):
        t = lax.dot_general(g, y, (gyf, yf), (gb, yb))
        src = xb + xf + tuple(c for _, c in sorted(zip(yc, xc)))
        gx = _to_order(t, src)
        if preferred is not None and gx.dtype is not x.dtype:
            gx = lax.convert(gx, x.dtype)
    if y.dtype.kind == "f" and getattr(y, "_rg", True):
        t = lax.dot_general(g, x, (gxf, xf), (gb, xb))
        src = yb + yf + tuple(c for _, c in sorted(zip(xc, yc)))
        gy = _to_order(t, src)
        if preferred is not None and gy.dtype is not y.dtype:
            gy = lax.convert(gy, y.dtype)
    return gx, gy


def _to_order(t, src):
    perm = tuple(sorted(range(len(src)), key=src.__getitem__))
    return t if perm == tuple(range(len(perm))) else lax.transpose(t, perm)


register(Primitive("dot_general", impl=_dot_impl, abstract=_dot_abstract, vjp=_dot_vjp, kind="linalg",
                   dtypes=DOT_DTYPES, promote_args=(0, 1), lowering=None,
                   doc="GEMM-shaped contraction; lowered to a BLAS call"))
