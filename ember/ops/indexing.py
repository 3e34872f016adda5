"""Gather and scatter primitives along one axis.

- `gather(x, idx, axis)`: numpy `take` — out shape x.shape[:axis] + idx.shape + x.shape[axis+1:]
  (embedding lookup, integer-array indexing);
- `scatter_add(x, idx, upd, axis)`: x with `upd` added at the gathered positions (its transpose);
- `take_along_axis` / `scatter_add_along_axis`: the per-row variants (cross-entropy's pick);
- `scatter_along_axis`: the per-row write (PyTorch's scatter), the last of repeated indices winning.

Negative indices count from the end; an index out of range raises IndexError naming it.
"""
from __future__ import annotations

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from . import lax
from ..backend.lowering import mark_unlowered
from .core import ALL_DTYPES, Aval, P, Primitive, register

INDEX_DTYPES = (dt.int8, dt.int16, dt.int32, dt.int64, dt.uint8)


def _check_index(op, x: Aval, idx: Aval, axis):
    if idx.dtype not in INDEX_DTYPES:
        raise op_error(DTypeError, op, f"indices must be an integer tensor, got {idx.dtype.name}")
    if not 0 <= axis < max(len(x.shape), 1):
        raise op_error(ShapeError, op, f"axis {axis} out of range for shape {x.shape}")


def check_bounds(idx, n, op):
    """`idx` if every index lies in [-n, n), else IndexError naming the first that does not."""
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)].ravel()[0]
        raise IndexError(f"{op}: index {bad} is out of bounds for a dimension of size {n}")
    return idx


def _gather_abstract(x: Aval, idx: Aval, *, axis) -> Aval:
    _check_index("index", x, idx, axis)
    return Aval(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype, x.weak)


def _gather_impl(x, idx, *, axis):
    return np.take(x, idx, axis=axis)  # mode="raise": numpy checks the bounds


def _updated(name: str, x: Aval, upd: Aval) -> Aval:
    """The result of adding `upd` into `x`: x's shape, the promoted dtype (as eager mode computes)."""
    key = tuple(("b" if a.dtype.kind == "b" else "i" if a.dtype.kind in "ui" else "f") if a.weak else a.dtype
                for a in (x, upd))
    return Aval(x.shape, getattr(P, name).resolve_dtypes(key)[1])


def _scatter_add_abstract(x: Aval, idx: Aval, upd: Aval, *, axis) -> Aval:
    _check_index("index_add", x, idx, axis)
    want = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    if upd.shape != want:
        raise op_error(ShapeError, "index_add", f"updates of shape {upd.shape} do not fit {want} "
                       f"(tensor {x.shape}, indices {idx.shape}, axis {axis})")
    return _updated("scatter_add", x, upd)


def _scatter_add_impl(x, idx, upd, *, axis):
    idx = check_bounds(idx, x.shape[axis], "index_add") % max(x.shape[axis], 1)
    out = np.array(x, copy=True)
    if axis == 0 and idx.ndim <= 1 and x.ndim == 2 and out.dtype.kind == "f" and idx.size:
        # dense rows: one matmul-free bincount-style accumulation per column block
        np.add.at(out, idx.ravel(), upd.reshape(idx.size, x.shape[1]))  # not -1: x may have a 0 dim
        return out
    moved = np.moveaxis(out, axis, 0)
    u = np.moveaxis(upd.reshape(x.shape[:axis] + (idx.size,) + x.shape[axis + 1:]), axis, 0)
    np.add.at(moved, idx.ravel(), u)
    return out


register(Primitive("gather", impl=_gather_impl, abstract=_gather_abstract, kind="index",
                   promote_args=(0,), half_in_f32=False, dtypes=ALL_DTYPES + dt.COMPLEX,
                   vjp=lambda g, out, x, idx, *, axis: (lax.scatter_add(lax.zeros_like(x), idx, g, axis), None)))
register(Primitive("scatter_add", impl=_scatter_add_impl, abstract=_scatter_add_abstract, kind="index",
                   promote_args=(0, 2), dtypes=ALL_DTYPES + dt.COMPLEX,
                   vjp=lambda g, out, x, idx, upd, *, axis: (g, None, lax.gather(g, idx, axis))))


def _tal_abstract(x: Aval, idx: Aval, *, axis) -> Aval:
    _check_index("take_along_axis", x, idx, axis)
    if len(idx.shape) != len(x.shape) or any(
            a != b and a != 1 for i, (a, b) in enumerate(zip(idx.shape, x.shape)) if i != axis):
        raise op_error(ShapeError, "take_along_axis", f"indices of shape {idx.shape} do not fit "
                       f"tensor {x.shape} along axis {axis}")
    return Aval(tuple(idx.shape[i] if i == axis else x.shape[i] for i in range(len(x.shape))), x.dtype, x.weak)


def _tal_impl(x, idx, *, axis):
    return np.take_along_axis(x, idx, axis=axis)  # fancy indexing checks the bounds


def _sal_abstract(x: Aval, idx: Aval, upd: Aval, *, axis, name: str = "scatter_add_along_axis") -> Aval:
    # as PyTorch's scatter_add: the updates may cover less than x in dims other than `axis`
    _check_index(name, x, idx, axis)
    if len(upd.shape) != len(x.shape) or len(idx.shape) != len(x.shape) or any(
            i != u and i != 1 or d != axis and u > n for d, (i, u, n) in enumerate(zip(idx.shape, upd.shape, x.shape))):
        raise op_error(ShapeError, name, f"indices {idx.shape} and updates {upd.shape} do "
                       f"not fit tensor {x.shape} along axis {axis}")
    return _updated(name, x, upd)


def _sal_vjp(g, out, x, idx, upd, *, axis):
    shape = tuple(g.shape[d] if d == axis else n for d, n in enumerate(upd.shape))
    gu = g if shape == tuple(g.shape) else lax.slice(g, (0,) * len(shape), shape, (1,) * len(shape))
    return g, None, lax.take_along_axis(gu, idx, axis)


def _sal_impl(x, idx, upd, *, axis):
    idx = check_bounds(idx, x.shape[axis], "scatter_add_along_axis") % max(x.shape[axis], 1)
    out = np.array(x, copy=True)
    full = [np.broadcast_to(np.arange(n).reshape((-1,) + (1,) * (x.ndim - i - 1)), upd.shape)
            for i, n in enumerate(upd.shape)]
    full[axis] = np.broadcast_to(idx, upd.shape)
    np.add.at(out, tuple(full), upd)
    return out


register(Primitive("take_along_axis", impl=_tal_impl, abstract=_tal_abstract, kind="index",
                   promote_args=(0,), half_in_f32=False, dtypes=ALL_DTYPES + dt.COMPLEX,
                   vjp=lambda g, out, x, idx, *, axis: (
                       lax.scatter_add_along_axis(lax.zeros_like(x), idx, g, axis), None)))
register(Primitive("scatter_add_along_axis", impl=_sal_impl, abstract=_sal_abstract, kind="index",
                   promote_args=(0, 2), dtypes=ALL_DTYPES + dt.COMPLEX, vjp=_sal_vjp))


def _set_impl(x, idx, upd, *, axis):
    idx = check_bounds(idx, x.shape[axis], "scatter") % max(x.shape[axis], 1)
    out = np.array(x, copy=True)
    # every update's full position (the updates may cover less of x than x's other dims, as in
    # scatter_add_along_axis); with a repeated index the last write wins
    full = [np.broadcast_to(np.arange(n).reshape((-1,) + (1,) * (x.ndim - i - 1)), upd.shape)
            for i, n in enumerate(upd.shape)]
    full[axis] = np.broadcast_to(idx, upd.shape)
    out[tuple(full)] = upd
    return out


def _set_vjp(g, out, x, idx, upd, *, axis):
    # PyTorch's: the written positions get no gradient, each update the cotangent where it went
    shape = tuple(g.shape[d] if d == axis else n for d, n in enumerate(upd.shape))
    gu = g if shape == tuple(g.shape) else lax.slice(g, (0,) * len(shape), shape, (1,) * len(shape))
    return (lax.scatter_along_axis(g, idx, lax.zeros_like(upd), axis), None, lax.take_along_axis(gu, idx, axis))


_P_set = register(Primitive("scatter_along_axis", impl=_set_impl, kind="index", promote_args=(0, 2), dtypes=ALL_DTYPES,
                   abstract=lambda x, idx, upd, *, axis: _sal_abstract(x, idx, upd, axis=axis, name="scatter_along_axis"), vjp=_set_vjp,
                   doc="x with upd written (not added) at the per-row positions idx along `axis`"))
# the last of repeated indices must win, which a parallel C scatter would not guarantee
mark_unlowered(_P_set, "cpu", "writes in index order, the last repeated index winning")


def _classes_abstract(t: Aval, *, n, ignore, op) -> Aval:
    if t.dtype not in INDEX_DTYPES:
        raise op_error(DTypeError, op, f"class targets must be integers, got {t.dtype.name}")
    return Aval(t.shape, t.dtype)


def _classes_impl(t, *, n, ignore, op):
    bad = (t < 0) | (t >= n)
    if ignore is not None:
        bad &= t != ignore
    if bad.any():
        raise IndexError(f"{op}: target {t[bad].ravel()[0]} is out of bounds for {n} classes")
    return t


# the same bounds check eagerly and in a compiled step: its result is the target itself, so the
# check stays in the graph as long as the target is used
register(Primitive("check_classes", impl=_classes_impl, abstract=_classes_abstract, kind="index",
                   dtypes=INDEX_DTYPES, half_in_f32=False,
                   doc="class targets unchanged; IndexError for one outside [0, n) that is not `ignore`"))
