"""Shape primitives: reshape, broadcast_in_dim, transpose, slice, pad, concatenate, rev.

In eager mode reshape (when the layout allows), broadcast_in_dim, transpose, slice and rev return
numpy views that share the input's storage; the Tensor layer records that aliasing.
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .._core.errors import ShapeError, op_error
from . import lax
from .core import ALL_DTYPES, Aval, Primitive, register


def _shape_prim(name, impl, abstract, vjp, is_view=False, promote_args=(0,)):
    return register(Primitive(name, impl=impl, abstract=abstract, vjp=vjp, kind="shape",
                              dtypes=ALL_DTYPES + dt.COMPLEX + (dt.uint32,),
                              is_view=is_view, half_in_f32=False, promote_args=promote_args))


# ---- reshape
def _reshape_abstract(x: Aval, *, shape) -> Aval:
    if math.prod(shape) != math.prod(x.shape) or any(d < 0 for d in shape):
        raise op_error(ShapeError, "reshape", f"cannot reshape a tensor of shape {x.shape} "
                       f"({math.prod(x.shape)} elements) to {shape}")
    return Aval(shape, x.dtype, x.weak)


_shape_prim("reshape", lambda x, *, shape: np.reshape(x, shape), _reshape_abstract,
            lambda g, out, x, *, shape: (lax.reshape(g, x.shape),), is_view=True)


# ---- broadcast_in_dim: operand dim i becomes output dim dims[i]
def _bid_abstract(x: Aval, *, shape, dims) -> Aval:
    ok = len(dims) == len(x.shape) and all(0 <= d < len(shape) for d in dims) and \
        list(dims) == sorted(set(dims)) and all(x.shape[i] in (1, shape[d]) for i, d in enumerate(dims))
    if not ok:
        raise op_error(ShapeError, "broadcast", f"cannot broadcast shape {x.shape} to {shape} "
                       f"(operand dims map to {dims})")
    return Aval(shape, x.dtype, x.weak)


def broadcast_view(x: np.ndarray, shape: tuple) -> np.ndarray:
    """A read-only view of `x` (same rank) broadcast to `shape` by zero strides.

    Builds the ndarray directly when `x` is contiguous: np.broadcast_to costs ~8x more per call,
    which dominates small eager ops."""
    if x.flags.c_contiguous and x.size:
        strides = tuple(0 if n == 1 and m != 1 else st for n, m, st in zip(x.shape, shape, x.strides))
        out = np.ndarray(shape, x.dtype, x, 0, strides)
        out.flags.writeable = False
        return out
    return np.broadcast_to(x, shape)


def _bid_impl(x, *, shape, dims):
    expanded = [1] * len(shape)
    for i, d in enumerate(dims):
        expanded[d] = x.shape[i]
    return broadcast_view(np.reshape(x, expanded), shape)


def _bid_vjp(g, out, x, *, shape, dims):
    summed = tuple(i for i in range(len(shape)) if i not in dims) + \
        tuple(d for i, d in enumerate(dims) if x.shape[i] == 1 and shape[d] != 1)
    if summed:
        g = lax.reduce_sum(g, tuple(sorted(summed)))
    if g.shape != x.shape:
        g = lax.reshape(g, x.shape)
    return (g,)


_shape_prim("broadcast_in_dim", _bid_impl, _bid_abstract, _bid_vjp, is_view=True)


# ---- transpose
def _transpose_abstract(x: Aval, *, perm) -> Aval:
    if sorted(perm) != list(range(len(x.shape))):
        raise op_error(ShapeError, "transpose", f"{perm} is not a permutation of the dims of shape {x.shape}")
    return Aval(tuple(x.shape[p] for p in perm), x.dtype, x.weak)


_shape_prim("transpose", lambda x, *, perm: np.transpose(x, perm), _transpose_abstract,
            lambda g, out, x, *, perm: (lax.transpose(g, tuple(np.argsort(perm).tolist())),), is_view=True)


# ---- slice: start/stop/step per dim, 0 <= start <= stop <= size, step >= 1
def _slice_out(start, stop, step):
    return tuple(max(0, -(-(b - a) // s)) for a, b, s in zip(start, stop, step))


def _slice_abstract(x: Aval, *, start, stop, step) -> Aval:
    ok = len(start) == len(stop) == len(step) == len(x.shape) and all(
        0 <= a <= b <= n and s >= 1 for a, b, s, n in zip(start, stop, step, x.shape))
    if not ok:
        raise op_error(ShapeError, "slice", f"slice {start}:{stop}:{step} does not fit shape {x.shape}")
    return Aval(_slice_out(start, stop, step), x.dtype, x.weak)


def _slice_impl(x, *, start, stop, step):
    if len(start) != x.ndim or not all(0 <= a <= b <= n and s >= 1 for a, b, s, n in zip(start, stop, step, x.shape)):
        raise ValueError("slice out of range")  # numpy would clip silently; -> _slice_abstract's error
    return x[tuple(slice(a, b, s) for a, b, s in zip(start, stop, step))]


def _slice_vjp(g, out, x, *, start, stop, step):
    cfg = []
    for a, s, n, m in zip(start, step, x.shape, g.shape):
        if m == 0:
            cfg.append((n, 0, 0))
        else:
            last = a + (m - 1) * s
            cfg.append((a, n - last - 1, s - 1))
    return (lax.pad(g, 0, cfg),)


_shape_prim("slice", _slice_impl, _slice_abstract, _slice_vjp, is_view=True)


# ---- pad: (lo, hi, interior) per dim; negative lo/hi crop
def _pad_out(shape, config):
    return tuple(lo + hi + n + max(0, n - 1) * it for n, (lo, hi, it) in zip(shape, config))


def _pad_abstract(x: Aval, *, value, config) -> Aval:
    if len(config) != len(x.shape) or any(it < 0 for _, _, it in config):
        raise op_error(ShapeError, "pad", f"padding {config} does not fit shape {x.shape}")
    out = _pad_out(x.shape, config)
    if any(d < 0 for d in out):
        raise op_error(ShapeError, "pad", f"padding {config} crops shape {x.shape} below zero")
    return Aval(out, x.dtype, x.weak)


def _pad_impl(x, *, value, config):
    grown = [(max(lo, 0), max(hi, 0), it) for lo, hi, it in config]
    shape = _pad_out(x.shape, grown)
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(slice(lo, lo + (n - 1) * (it + 1) + 1 if n else lo, it + 1)
              for (lo, _, it), n in zip(grown, x.shape))] = x
    crop = tuple(slice(-min(lo, 0), d + min(hi, 0)) for (lo, hi, _), d in zip(config, shape))
    return out[crop]


def _pad_vjp(g, out, x, *, value, config):
    unpadded = lax.pad(g, 0, [(-lo, -hi, 0) for lo, hi, _ in config])
    return (lax.slice(unpadded, (0,) * len(config), unpadded.shape, [it + 1 for _, _, it in config]),)


_shape_prim("pad", _pad_impl, _pad_abstract, _pad_vjp)


# ---- concatenate
def _concat_abstract(*xs: Aval, axis) -> Aval:
    from .core import P
    first = xs[0]
    for x in xs[1:]:
        if len(x.shape) != len(first.shape) or any(a != b for i, (a, b) in enumerate(zip(x.shape, first.shape))
                                                   if i != axis):
            raise op_error(ShapeError, "concatenate", "shapes " + ", ".join(str(a.shape) for a in xs) +
                           f" differ outside dim {axis}")
    key = tuple(x.dtype for x in xs)
    _, out = P.concatenate.resolve_dtypes(key)
    shape = list(first.shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    return Aval(tuple(shape), out)


def _concat_vjp(g, out, *xs, axis):
    res, off = [], 0
    for x in xs:
        n = x.shape[axis]
        start = [0] * len(g.shape)
        stop = list(g.shape)
        start[axis], stop[axis] = off, off + n
        res.append(lax.slice(g, start, stop, (1,) * len(g.shape)))
        off += n
    return tuple(res)


register(Primitive("concatenate", impl=lambda *xs, axis: np.concatenate(xs, axis=axis),
                   abstract=_concat_abstract, vjp=_concat_vjp, kind="shape", half_in_f32=False,
                   dtypes=ALL_DTYPES + dt.COMPLEX + (dt.uint32,)))


# ---- rev (flip)
def _rev_abstract(x: Aval, *, axes) -> Aval:
    if any(not 0 <= a < len(x.shape) for a in axes):
        raise op_error(ShapeError, "flip", f"axes {axes} out of range for shape {x.shape}")
    return Aval(x.shape, x.dtype, x.weak)


_shape_prim("rev", lambda x, *, axes: np.flip(x, axes) if axes else x.view(), _rev_abstract,
            lambda g, out, x, *, axes: (lax.rev(g, axes),), is_view=True)
