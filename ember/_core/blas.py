"""numpy's BLAS (its bundled OpenBLAS), where eager matmuls run, reached through ctypes.

`ember.set_num_threads` sets its thread count (`set_num_threads`, `get_num_threads`). The CBLAS
the native step calls (MKL or this one) is chosen in `ember.backend.cpu.blas`, which finds
libraries with `load` and their functions with `symbol`. Nothing is looked up until first use.
"""
from __future__ import annotations

import ctypes
import glob
import os

# (symbol, bits of blasint): numpy's scipy-openblas, OpenBLAS's ILP64 names, MKL's ILP64 names,
# then the plain LP64 CBLAS names every library has
GEMM = {"s": (("scipy_cblas_sgemm64_", 64), ("cblas_sgemm64_", 64), ("cblas_sgemm_64", 64), ("cblas_sgemm", 32)),
        "d": (("scipy_cblas_dgemm64_", 64), ("cblas_dgemm64_", 64), ("cblas_dgemm_64", 64), ("cblas_dgemm", 32))}
_SET = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")

_numpy: list = []  # [(CDLL or None, path)], filled on first use


def _numpy_candidates() -> list:
    import numpy as np
    root = os.path.dirname(np.__file__)
    found = sorted(glob.glob(os.path.join(root, "..", "numpy.libs", "*openblas*.so*")))
    found += sorted(glob.glob(os.path.join(root, ".libs", "*openblas*.so*")))
    found = [os.path.normpath(p) for p in found]
    return found + ["libopenblas.so.0", "libopenblas.so", "libcblas.so.3"]


def load(paths) -> tuple:
    """(CDLL, path) of the first of `paths` that loads and has an sgemm, or (None, None)."""
    for path in paths:
        try:
            cand = ctypes.CDLL(path)
        except OSError:
            continue
        if any(hasattr(cand, s) for s, _ in GEMM["s"]):
            return cand, path
    return None, None


def library() -> ctypes.CDLL | None:
    """numpy's BLAS (already loaded by numpy, so the same copy), or None when none is found."""
    if not _numpy:
        _numpy.append(load(_numpy_candidates()))
    return _numpy[0][0]


def symbol(names, lib) -> tuple:
    """(function, entry) of the first of `names` (str or (str, bits)) that `lib` has, or (None, None)."""
    for entry in names:
        name = entry[0] if isinstance(entry, tuple) else entry
        if lib is not None and hasattr(lib, name):
            return getattr(lib, name), entry
    return None, None


def set_num_threads(n: int) -> bool:
    """Set numpy's OpenBLAS thread count; False when its BLAS offers no such call."""
    fn, _ = symbol(_SET, library())
    if fn is None:
        return False
    fn.argtypes, fn.restype = [ctypes.c_int], None
    fn(int(n))
    return True


def get_num_threads() -> int | None:
    """numpy's OpenBLAS thread count, or None when unknown."""
    fn, _ = symbol(_GET, library())
    if fn is None:
        return None
    fn.argtypes, fn.restype = [], ctypes.c_int
    return int(fn())


def numpy_path() -> str | None:
    """The file numpy's BLAS was loaded from, or None."""
    library()
    return _numpy[0][1]
