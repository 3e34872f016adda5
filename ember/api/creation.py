"""Tensor creation: zeros, ones, full, arange, linspace, eye and the *_like variants."""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .._core.state import default_dtype
from ..backend import as_device
from ..ops import lax
from ..tensor import Tensor, from_array, trace_constant


def _shape(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    return tuple(int(s) for s in size)


def _finish(t: Tensor, device, requires_grad: bool) -> Tensor:
    if device is not None:
        as_device(device)
    t = trace_constant(t)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _fill(shape, value, dtype, device, requires_grad):
    d = dt.as_dtype(dtype) if dtype is not None else default_dtype()
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return _finish(from_array(np.full(shape, value, d.np), d), device, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros (default dtype float32)."""
    return _fill(_shape(size), 0, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of ones."""
    return _fill(_shape(size), 1, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """An uninitialised tensor (ember fills it with zeros: no garbage values leak)."""
    return _fill(_shape(size), 0, dtype, device, requires_grad)


def full(size, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor filled with `fill_value` (dtype inferred from it: bool, int64 or the default float)."""
    if dtype is None:
        dtype = dt.weak_scalar_dtype(dt.scalar_kind(fill_value) or "f", default_dtype())
    return _fill(tuple(size), fill_value, dtype, device, requires_grad)


def zeros_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _fill(input.shape, 0, dtype or input.dtype, device, requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _fill(input.shape, 1, dtype or input.dtype, device, requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _fill(input.shape, 0, dtype or input.dtype, device, requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _fill(input.shape, fill_value, dtype or input.dtype, device, requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Values from start (inclusive) to end (exclusive) by step; int64 unless a bound is a float."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    if dtype is None:
        isf = any(isinstance(v, float) for v in (start, end, step))
        dtype = default_dtype() if isf else dt.int64
    d = dt.as_dtype(dtype)
    n = max(0, math.ceil((end - start) / step))
    arr = (start + np.arange(n, dtype=np.float64 if d.kind == "f" else np.int64) * step).astype(d.np)
    return _finish(from_array(arr, d), device, requires_grad)


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """`steps` evenly spaced values from start to end inclusive."""
    d = dt.as_dtype(dtype) if dtype is not None else default_dtype()
    return _finish(from_array(np.linspace(start, end, steps).astype(d.np), d), device, requires_grad)


def eye(n: int, m: int | None = None, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Identity matrix."""
    d = dt.as_dtype(dtype) if dtype is not None else default_dtype()
    return _finish(from_array(np.eye(n, m, dtype=d.np), d), device, requires_grad)


def iota_like(shape, dim, dtype=dt.int64) -> Tensor:
    return lax.iota(shape, dim, dtype)


__all__ = [_n for _n, _v in list(globals().items())
           if not _n.startswith("_") and getattr(_v, "__module__", None) == __name__]
