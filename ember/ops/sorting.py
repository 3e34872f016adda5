"""Order primitives: `argsort` along one axis and `searchsorted` into sorted rows.

Both return int64 indices and have no VJP: sorted values, top-k, k-th values and medians are built
on them in ember/api/sorting.py by gathering the input with `take_along_axis`, whose VJP (a scatter
of the cotangent back to the picked positions) is the gradient PyTorch computes for them.

Order is PyTorch's: NaN sorts after +inf (ascending), so it comes first when descending; equal
values keep their input order when `stable` (numpy's stable sort; the unstable path is the same
sort, which PyTorch also allows). -0.0 and 0.0 are equal.
"""
from __future__ import annotations

import numpy as np

from .._core import dtypes as dt
from .._core.errors import ShapeError, op_error
from ..backend.lowering import mark_unlowered
from .core import INDEX, NUMERIC, Aval, Primitive, register

ORDERED = tuple(NUMERIC) + (dt.bool_,)


def _argsort_abstract(x: Aval, *, axis, descending, stable) -> Aval:
    if not 0 <= axis < max(len(x.shape), 1):
        raise op_error(ShapeError, "argsort", f"dim {axis} is out of range for shape {x.shape}")
    P_argsort.resolve_dtypes((x.dtype,))
    return Aval(x.shape, dt.int64)


def _argsort_impl(x, *, axis, descending, stable):
    if x.ndim == 0:
        return np.zeros((), np.int64)
    if not descending:
        return np.argsort(x, axis=axis, kind="stable").astype(np.int64, copy=False)
    # descending and stable: sort the reversed row ascending, reverse the order, map positions
    # back; ties then keep their input order and NaNs (last ascending) come first
    r = np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    return (x.shape[axis] - 1 - r).astype(np.int64, copy=False)


P_argsort = register(Primitive("argsort", impl=_argsort_impl, abstract=_argsort_abstract, dtype_rule=INDEX,
                               dtypes=ORDERED, kind="index",
                               doc="int64 positions that sort x along `axis` (NaN last ascending)"))


def _check_rows(seq: tuple, v: tuple) -> None:
    if not seq:
        raise op_error(ShapeError, "searchsorted", "the sorted sequence must have at least one dimension")
    if len(seq) > 1 and (len(v) != len(seq) or v[:-1] != seq[:-1]):
        raise op_error(ShapeError, "searchsorted", f"sorted_sequence of shape {seq} and values of "
                       f"shape {v} must agree in all but the last dimension")


def _searchsorted_abstract(seq: Aval, v: Aval, *, right) -> Aval:
    _check_rows(seq.shape, v.shape)
    P_searchsorted.resolve_dtypes((seq.dtype, v.dtype))
    return Aval(v.shape, dt.int64)


def _searchsorted_impl(seq, v, *, right):
    _check_rows(seq.shape, v.shape)
    side = "right" if right else "left"
    if seq.ndim == 1:
        return np.searchsorted(seq, v, side=side).astype(np.int64, copy=False)
    n = int(np.prod(seq.shape[:-1]))  # not -1: a last dim may be 0
    rows_s, rows_v = seq.reshape(n, seq.shape[-1]), v.reshape(n, v.shape[-1])
    out = np.empty(rows_v.shape, np.int64)
    for i in range(rows_s.shape[0]):
        out[i] = np.searchsorted(rows_s[i], rows_v[i], side=side)
    return out.reshape(v.shape)


P_searchsorted = register(Primitive("searchsorted", impl=_searchsorted_impl, abstract=_searchsorted_abstract,
                                    dtype_rule=INDEX, dtypes=NUMERIC, kind="index",
                                    doc="int64 insertion points of values into sorted rows"))

for _p in (P_argsort, P_searchsorted):
    mark_unlowered(_p, "cpu", "a sort or a binary search per row, numpy's")
