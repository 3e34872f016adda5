"""Sorting and searching with PyTorch's names: sort, argsort, msort, topk, kthvalue, median,
nanmedian, searchsorted, bucketize, and the data-dependent unique, unique_consecutive, bincount.

Values are gathered from the input at the positions `argsort` returns, so they are differentiable
(the gradient goes back to the picked elements) and trace under ember.jit. NaN sorts after +inf:
median and kthvalue return NaN once the position they pick holds one, with the index of that NaN
in the input, as PyTorch does. `unique` and `bincount` have a data-dependent result shape and run
eagerly only.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from .._core import dtypes as dt
from .._core.errors import ShapeError, data_dependent, op_error
from ..ops import lax
from ..tensor import Tensor, as_tensor, from_numpy
from .math import _axes

SortResult = namedtuple("SortResult", ["values", "indices"])


def _dim(input: Tensor, dim: int, op: str) -> int | None:
    """`dim` as a non-negative axis, or None for a 0-d input."""
    ax = _axes(input, dim, op)
    return ax[0] if ax else None


def argsort(input, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    """Indices that sort `input` along `dim` (NaN last ascending, first descending)."""
    input = as_tensor(input)
    ax = _dim(input, dim, "argsort")
    if ax is None:
        return lax.full((), 0, dt.int64)
    return lax.argsort(input, ax, bool(descending), bool(stable))


def sort(input, dim: int = -1, descending: bool = False, stable: bool = False) -> SortResult:
    """(values, indices) of `input` sorted along `dim`."""
    input = as_tensor(input)
    ax = _dim(input, dim, "sort")
    if ax is None:
        return SortResult(input, lax.full((), 0, dt.int64))
    idx = lax.argsort(input, ax, bool(descending), bool(stable))
    return SortResult(lax.take_along_axis(input, idx, ax), idx)


def msort(input) -> Tensor:
    """`input` sorted along its first dimension."""
    return sort(input, 0).values


def _pick(input: Tensor, idx: Tensor, ax: int, start: int, stop: int) -> SortResult:
    lo = tuple(start if d == ax else 0 for d in range(idx.ndim))
    hi = tuple(stop if d == ax else s for d, s in enumerate(idx.shape))
    sel = lax.slice(idx, lo, hi, (1,) * idx.ndim)
    return SortResult(lax.take_along_axis(input, sel, ax), sel)


def topk(input, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> SortResult:
    """The k largest (or smallest) elements along `dim` and their indices, sorted."""
    input = as_tensor(input)
    ax = _dim(input, dim, "topk")
    n = input.shape[ax] if ax is not None else 1
    if not 0 <= k <= n:
        raise op_error(ShapeError, "topk", f"k={k} is out of range for dimension {dim} of size {n} "
                       f"(shape {input.shape})")
    if ax is None:
        return SortResult(input, lax.full((), 0, dt.int64))
    return _pick(input, lax.argsort(input, ax, bool(largest), True), ax, 0, k)


def _squeeze(r: SortResult, ax: int, keepdim: bool) -> SortResult:
    if keepdim:
        return r
    shape = tuple(s for d, s in enumerate(r.values.shape) if d != ax)
    return SortResult(lax.reshape(r.values, shape), lax.reshape(r.indices, shape))


def kthvalue(input, k: int, dim: int = -1, keepdim: bool = False) -> SortResult:
    """The k-th smallest element along `dim` (k counts from 1) and its index."""
    input = as_tensor(input)
    ax = _dim(input, dim, "kthvalue")
    n = input.shape[ax] if ax is not None else 1
    if not 1 <= k <= n:
        raise op_error(ShapeError, "kthvalue", f"k={k} is out of range for dimension {dim} of size {n} "
                       f"(shape {input.shape})")
    if ax is None:
        return SortResult(input, lax.full((), 0, dt.int64))
    return _squeeze(_pick(input, lax.argsort(input, ax, False, True), ax, k - 1, k), ax, keepdim)


def _median(input, dim, keepdim: bool, ignore_nan: bool, op: str):
    input = as_tensor(input)
    if dim is None:
        flat = lax.reshape(input, (input.numel(),))
        if flat.shape[0] == 0:  # PyTorch: the median of nothing is NaN
            return lax.full((), float("nan"), input.dtype if input.dtype.kind == "f" else dt.float32)
        return _median(flat, 0, False, ignore_nan, op).values
    ax = _dim(input, dim, op)
    if ax is None:
        return SortResult(input, lax.full((), 0, dt.int64))
    n = input.shape[ax]
    if n == 0:
        raise op_error(ShapeError, op, f"dimension {dim} of shape {input.shape} is empty")
    idx = lax.argsort(input, ax, False, True)
    kept = tuple(1 if d == ax else s for d, s in enumerate(input.shape))
    half = lax.full(kept, (n - 1) // 2, dt.int64)
    if input.dtype.kind != "f":
        pos = half
    else:  # NaNs sort last; count them along the axis
        nans = lax.keepdims(lax.reduce_sum(lax.convert(lax.isnan(input), dt.int64), (ax,)), (ax,))
        if ignore_nan:  # the lower median of the others; a row of NaNs: its middle one (PyTorch)
            pos = lax.select(lax.eq(nans, n), half, lax.floordiv(lax.sub(lax.full(kept, n - 1, dt.int64), nans), 2))
        else:  # the first NaN, once there is one
            pos = lax.select(lax.gt(nans, 0), lax.sub(lax.full(kept, n, dt.int64), nans), half)
    sel = lax.take_along_axis(idx, pos, ax)
    return _squeeze(SortResult(lax.take_along_axis(input, sel, ax), sel), ax, keepdim)


def median(input, dim=None, keepdim: bool = False):
    """The lower median of all elements, or (values, indices) along `dim`; NaN if there is one."""
    return _median(input, dim, keepdim, False, "median")


def nanmedian(input, dim=None, keepdim: bool = False):
    """median, ignoring NaNs."""
    return _median(input, dim, keepdim, True, "nanmedian")


def searchsorted(sorted_sequence, input, *, out_int32: bool = False, right: bool = False, side=None,
                 sorter=None) -> Tensor:
    """Insertion points of `input` into the innermost dimension of `sorted_sequence`."""
    seq = as_tensor(sorted_sequence)
    if side is not None:
        if side not in ("left", "right") or (right and side == "left"):
            raise op_error(ValueError, "searchsorted", f"side must be 'left' or 'right' (and agree with "
                           f"right={right}), got {side!r}")
        right = side == "right"
    if sorter is not None:
        seq = lax.take_along_axis(seq, as_tensor(sorter), seq.ndim - 1)
    v = as_tensor(input) if isinstance(input, Tensor) else as_tensor(input, dtype=seq.dtype)
    out = lax.searchsorted(seq, v, bool(right))
    return lax.convert(out, dt.int32) if out_int32 else out


def bucketize(input, boundaries, *, out_int32: bool = False, right: bool = False) -> Tensor:
    """The bucket of each element among 1-D `boundaries` (right=False: boundaries[i-1] < x <= boundaries[i])."""
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def _int_array(input, op: str) -> np.ndarray:
    data_dependent(op, input._data)
    return np.asarray(input._data)


def unique(input, sorted: bool = True, return_inverse: bool = False, return_counts: bool = False, dim=None):
    """The distinct elements (or slices along `dim`), sorted; NaNs are each distinct, as PyTorch's."""
    input = as_tensor(input)
    a = _int_array(input, "unique")
    if dim is not None:
        d = _dim(input, dim, "unique")
        vals, inv, counts = np.unique(a, return_inverse=True, return_counts=True, axis=d if d is not None else None,
                                      equal_nan=False)
    else:
        vals, inv, counts = np.unique(a.ravel(), return_inverse=True, return_counts=True, equal_nan=False)
        inv = inv.reshape(a.shape)
    out = [from_numpy(np.ascontiguousarray(vals))]
    if return_inverse:
        out.append(from_numpy(inv.astype(np.int64).reshape(a.shape if dim is None else (-1,))))
    if return_counts:
        out.append(from_numpy(counts.astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)


def unique_consecutive(input, return_inverse: bool = False, return_counts: bool = False, dim=None):
    """Collapse each run of equal consecutive elements (or slices along `dim`) to one."""
    input = as_tensor(input)
    a = _int_array(input, "unique_consecutive")
    d = 0 if dim is None else _dim(input, dim, "unique_consecutive")
    x = a.ravel() if dim is None else np.moveaxis(a, d, 0)
    n = x.shape[0]
    if n == 0:
        starts = np.zeros(0, np.int64)
    else:
        diff = (x[1:] != x[:-1]).reshape(n - 1, -1).any(axis=1)
        starts = np.concatenate([[0], np.nonzero(diff)[0] + 1]).astype(np.int64)
    vals = x[starts] if dim is None else np.moveaxis(x[starts], 0, d)
    out = [from_numpy(np.ascontiguousarray(vals))]
    if return_inverse:
        inv = np.cumsum(np.isin(np.arange(n), starts)) - 1
        out.append(from_numpy(inv.astype(np.int64).reshape(a.shape if dim is None else (-1,))))
    if return_counts:
        out.append(from_numpy(np.diff(np.append(starts, n)).astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)


def bincount(input, weights=None, minlength: int = 0) -> Tensor:
    """Counts (or summed weights) of each non-negative integer in the 1-D `input`."""
    input = as_tensor(input)
    a = _int_array(input, "bincount")
    if input.ndim != 1 or input.dtype.kind not in "iu":
        raise op_error(ShapeError, "bincount", f"input must be a 1-D integer tensor, got {input.dtype.name}"
                       f"{list(input.shape)}")
    if a.size and a.min() < 0:
        raise op_error(ValueError, "bincount", f"input must be non-negative, got {a.min()}")
    if minlength < 0:
        raise op_error(ValueError, "bincount", f"minlength must be non-negative, got {minlength}")
    if weights is None:
        return from_numpy(np.bincount(a, minlength=minlength).astype(np.int64))
    w = as_tensor(weights)
    if w.shape != input.shape:
        raise op_error(ShapeError, "bincount", f"weights of shape {w.shape} do not match input {input.shape}")
    wd = np.asarray(w._data if w.dtype is not dt.bfloat16 else w._data.astype(np.float32))
    out = np.bincount(a, weights=wd.astype(np.float64), minlength=minlength)
    return from_numpy(out.astype(np.float32 if w.dtype is dt.float32 else np.float64))  # PyTorch's dtypes


__all__ = ["argsort", "sort", "msort", "topk", "kthvalue", "median", "nanmedian", "searchsorted", "bucketize",
           "unique", "unique_consecutive", "bincount", "SortResult"]
