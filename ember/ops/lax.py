"""Thin functions over the primitives, one per primitive plus a few helpers.

VJP rules are written with these, so they run through `bind` like any user op: under the eager
interpreter they compute, under a tracer they record, and with `create_graph` they are
differentiated again. An elementwise op whose operands are all Python scalars folds to a Python
scalar computed in float64/int64, so weak scalars keep their precision. The names follow the
primitives (JAX's `lax`), not PyTorch's Tensor API; that lives in layer 3.
"""
from __future__ import annotations

import numpy as np

from .._core.state import TLS
from .core import P, bind

_PY = frozenset((bool, int, float))
builtins_complex = complex


def _ew(prim, *xs):
    """An elementwise primitive; on Python scalars only, folded to a Python scalar.

    Weak scalars keep their full precision: `y - 1` for a Python float exponent inside pow's VJP
    is a float64 value, not a float32 tensor of the default dtype."""
    for x in xs:
        if x.__class__ not in _PY:
            return bind(prim, *xs)
    kinds = {x.__class__ for x in xs}
    arrays = [np.asarray(x, np.float64 if float in kinds else np.int64 if int in kinds else np.bool_) for x in xs]
    with np.errstate(all="ignore"):
        return np.asarray(prim.impl(*arrays)).item()


# ---- elementwise
def add(x, y): return _ew(P.add, x, y)
def sub(x, y): return _ew(P.sub, x, y)
def mul(x, y): return _ew(P.mul, x, y)
def div(x, y): return _ew(P.div, x, y)
def floordiv(x, y): return _ew(P.floordiv, x, y)
def rem(x, y): return _ew(P.rem, x, y)
def pow(x, y): return _ew(P.pow, x, y)
def max(x, y): return _ew(P.max, x, y)
def min(x, y): return _ew(P.min, x, y)
def atan2(x, y): return _ew(P.atan2, x, y)
def neg(x): return _ew(P.neg, x)
def abs(x): return _ew(P.abs, x)
def sign(x): return _ew(P.sign, x)
def exp(x): return _ew(P.exp, x)
def log(x): return _ew(P.log, x)
def log1p(x): return _ew(P.log1p, x)
def expm1(x): return _ew(P.expm1, x)
def sqrt(x): return _ew(P.sqrt, x)
def rsqrt(x): return _ew(P.rsqrt, x)
def sin(x): return _ew(P.sin, x)
def cos(x): return _ew(P.cos, x)
def tanh(x): return _ew(P.tanh, x)
def erf(x): return _ew(P.erf, x)
def logistic(x): return _ew(P.logistic, x)
def floor(x): return _ew(P.floor, x)
def ceil(x): return _ew(P.ceil, x)
def round(x): return _ew(P.round, x)
def trunc(x): return _ew(P.trunc, x)
def isnan(x): return _ew(P.isnan, x)
def eq(x, y): return _ew(P.eq, x, y)
def ne(x, y): return _ew(P.ne, x, y)
def lt(x, y): return _ew(P.lt, x, y)
def le(x, y): return _ew(P.le, x, y)
def gt(x, y): return _ew(P.gt, x, y)
def ge(x, y): return _ew(P.ge, x, y)
def bitwise_and(x, y): return _ew(P.bitwise_and, x, y)
def bitwise_or(x, y): return _ew(P.bitwise_or, x, y)
def bitwise_xor(x, y): return _ew(P.bitwise_xor, x, y)
def bitwise_not(x): return _ew(P.bitwise_not, x)
def shift_left(x, y): return _ew(P.shift_left, x, y)
def shift_right(x, y): return _ew(P.shift_right, x, y)
def select(c, x, y):
    if c.__class__ is bool:  # a condition folded from Python scalars
        c = np.asarray(c)
    return bind(P.select, c, x, y)
def convert(x, dtype): return bind(P.convert, x, dtype=dtype)
def real(x): return bind(P.real, x)
def imag(x): return bind(P.imag, x)
def complex(re, im): return bind(P.complex, re, im)
def complex_abs(x): return bind(P.complex_abs, x)


def conj(x):
    """The complex conjugate; any other value unchanged (so real VJPs record no extra op)."""
    if x.__class__ is builtins_complex:
        return x.conjugate()
    d = getattr(x, "dtype", None)
    return bind(P.conj, x) if d is not None and getattr(d, "kind", None) == "c" else x
def bitcast(x, dtype): return bind(P.bitcast, x, dtype=dtype)


# ---- creation
def full(shape, value, dtype): return bind(P.full, shape=tuple(shape), value=value, dtype=dtype)
def iota(shape, dim, dtype): return bind(P.iota, shape=tuple(shape), dim=dim, dtype=dtype)
def zeros_like(x): return full(x.shape, 0, x.dtype)


# ---- reductions (axes: sorted non-negative tuple; the reduced dims are dropped)
def reduce_sum(x, axes): return bind(P.reduce_sum, x, axes=tuple(axes))
def reduce_max(x, axes): return bind(P.reduce_max, x, axes=tuple(axes))
def reduce_min(x, axes): return bind(P.reduce_min, x, axes=tuple(axes))
def reduce_prod(x, axes): return bind(P.reduce_prod, x, axes=tuple(axes))
def reduce_and(x, axes): return bind(P.reduce_and, x, axes=tuple(axes))
def reduce_or(x, axes): return bind(P.reduce_or, x, axes=tuple(axes))
def argmax(x, axis): return bind(P.argmax, x, axis=axis)
def argmin(x, axis): return bind(P.argmin, x, axis=axis)
def cumsum(x, axis, reverse=False): return bind(P.cumsum, x, axis=axis, reverse=reverse)
def cumprod(x, axis, reverse=False): return bind(P.cumprod, x, axis=axis, reverse=reverse)
def argsort(x, axis, descending=False, stable=True):
    return bind(P.argsort, x, axis=axis, descending=descending, stable=stable)
def searchsorted(seq, v, right=False): return bind(P.searchsorted, seq, v, right=right)


# ---- shapes and views
def reshape(x, shape): return bind(P.reshape, x, shape=tuple(shape))
def broadcast_in_dim(x, shape, dims): return bind(P.broadcast_in_dim, x, shape=tuple(shape), dims=tuple(dims))
def transpose(x, perm): return bind(P.transpose, x, perm=tuple(perm))
def slice(x, start, stop, step): return bind(P.slice, x, start=tuple(start), stop=tuple(stop), step=tuple(step))
def pad(x, value, config): return bind(P.pad, x, value=value, config=tuple(tuple(c) for c in config))
def concatenate(xs, axis): return bind(P.concatenate, *xs, axis=axis)
def rev(x, axes): return bind(P.rev, x, axes=tuple(axes))


# ---- Fourier transforms (ops/fft.py)
def fft_c2c(x, axes, inverse, norm): return bind(P.fft_c2c, x, axes=tuple(axes), inverse=bool(inverse), norm=norm)
def fft_r2c(x, axes, norm): return bind(P.fft_r2c, x, axes=tuple(axes), norm=norm)
def fft_c2r(x, axes, n, norm): return bind(P.fft_c2r, x, axes=tuple(axes), n=int(n), norm=norm)


# ---- contractions, windows, indexing, random
def dot_general(x, y, contract, batch=((), ()), preferred=None):
    contract = (tuple(contract[0]), tuple(contract[1]))
    batch = (tuple(batch[0]), tuple(batch[1]))
    if preferred is not None:  # a param only when it changes the result dtype (ops/linalg.py)
        from .linalg import preferred_dtype
        _, out = P.dot_general.resolve_dtypes((x.dtype, y.dtype))
        preferred = preferred_dtype("matmul", out, preferred)
        if preferred is not out:
            if not TLS.interpreters[-1].level:  # eager: the kernel on `preferred` copies, directly
                res = bind(P.dot_general, _as(x, preferred), _as(y, preferred), contract=contract, batch=batch)
                return res if res.dtype is preferred else convert(res, preferred)
            return bind(P.dot_general, x, y, contract=contract, batch=batch, preferred=preferred)
    return bind(P.dot_general, x, y, contract=contract, batch=batch)


def packed_matmul(x, packed, k, n):
    """x (..., k) int8/uint8 times the (k, n) int8 weight `ops.packed.pack_weight` packed: int32."""
    return bind(P.packed_matmul, x, packed, k=int(k), n=int(n))


def _as(x, dtype):
    """`x` in `dtype` (a half type: float32, as the kernel sums half values in float32)."""
    from .._core import dtypes as dt
    d = dt.float32 if dtype in (dt.float16, dt.bfloat16) else dtype
    return x if x.dtype is d else convert(x, d)


def conv_general(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, groups=1):
    return bind(P.conv_general, lhs, rhs, window_strides=tuple(window_strides),
                padding=tuple(tuple(p) for p in padding), lhs_dilation=tuple(lhs_dilation),
                rhs_dilation=tuple(rhs_dilation), groups=groups)


def reduce_window(x, kind, window, strides, padding, base_dilation=None, window_dilation=None):
    nd = len(window)
    prim = P.reduce_window_max if kind == "max" else P.reduce_window_sum
    return bind(prim, x, window=tuple(window), strides=tuple(strides),
                padding=tuple(tuple(p) for p in padding),
                base_dilation=tuple(base_dilation or (1,) * nd),
                window_dilation=tuple(window_dilation or (1,) * nd))


def select_and_scatter_add(source, operand, window, strides, padding):
    return bind(P.select_and_scatter_add, source, operand, window=tuple(window),
                strides=tuple(strides), padding=tuple(tuple(p) for p in padding))


def gather(x, idx, axis): return bind(P.gather, x, idx, axis=axis)
def scatter_add(x, idx, upd, axis): return bind(P.scatter_add, x, idx, upd, axis=axis)
def take_along_axis(x, idx, axis): return bind(P.take_along_axis, x, idx, axis=axis)
def scatter_add_along_axis(x, idx, upd, axis): return bind(P.scatter_add_along_axis, x, idx, upd, axis=axis)
def scatter_along_axis(x, idx, upd, axis): return bind(P.scatter_along_axis, x, idx, upd, axis=axis)
def random_bits(key, shape): return bind(P.random_bits, key, shape=tuple(shape))
def check_classes(t, n, ignore, op): return bind(P.check_classes, t, n=int(n), ignore=ignore, op=op)


# ---- helpers for VJPs
def unbroadcast(g, shape):
    """Sum `g` down to `shape` (undoing implicit numpy broadcasting); None passes through."""
    if g is None or shape is None:
        return None
    gshape = g.shape
    if gshape == tuple(shape):
        return g
    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, d in enumerate(shape) if d == 1 and gshape[i + lead] != 1)
    if axes:
        g = reduce_sum(g, axes)
    if g.shape != tuple(shape):
        g = reshape(g, shape)
    return g


def broadcast_to(x, shape):
    """numpy-style broadcast of `x` to `shape`."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = len(shape) - len(x.shape)
    keep = tuple(i for i, d in enumerate(x.shape) if d == shape[i + lead])
    if len(keep) != len(x.shape):
        x = reshape(x, tuple(x.shape[i] for i in keep))
    return broadcast_in_dim(x, shape, tuple(i + lead for i in keep))


def keepdims(x, axes):
    """A reduction's result (reduced dims dropped) reshaped to keep them as size-1 dims."""
    shape = list(x.shape)
    for a in sorted(axes):
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


def expand_reduced(g, in_shape, axes):
    """Broadcast a reduction's cotangent (reduced dims dropped) back to the input shape."""
    kept = tuple(i for i in range(len(in_shape)) if i not in axes)
    return broadcast_in_dim(g, in_shape, kept)
