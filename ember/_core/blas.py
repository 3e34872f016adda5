"""The BLAS library numpy uses, reached through ctypes: its thread count and its GEMM entry points.

ember's native step calls `cblas_sgemm`/`cblas_dgemm` through pointers resolved here (numpy's
bundled OpenBLAS, or a system OpenBLAS/CBLAS when numpy has none), and `ember.set_num_threads`
sets OpenBLAS's thread count through `set_num_threads`. Nothing is looked up until first use.
"""
from __future__ import annotations

import ctypes
import glob
import os

# (symbol, bits of blasint): numpy's scipy-openblas first, then the plain OpenBLAS names
_GEMM = {"s": (("scipy_cblas_sgemm64_", 64), ("cblas_sgemm64_", 64), ("cblas_sgemm", 32)),
         "d": (("scipy_cblas_dgemm64_", 64), ("cblas_dgemm64_", 64), ("cblas_dgemm", 32))}
_SET = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")
_LOCAL = ("openblas_set_num_threads_local",)

_lib: list = []  # [CDLL or None], filled on first use


def _candidates() -> list:
    import numpy as np
    root = os.path.dirname(np.__file__)
    found = sorted(glob.glob(os.path.join(root, "..", "numpy.libs", "*openblas*.so*")))
    found += sorted(glob.glob(os.path.join(root, ".libs", "*openblas*.so*")))
    return found + ["libopenblas.so.0", "libopenblas.so", "libcblas.so.3"]


def library() -> ctypes.CDLL | None:
    """numpy's BLAS (already loaded by numpy, so the same copy), or None when none is found."""
    if not _lib:
        lib = None
        for path in _candidates():
            try:
                cand = ctypes.CDLL(path)
            except OSError:
                continue
            if any(hasattr(cand, s) for s, _ in _GEMM["s"]):
                lib = cand
                break
        _lib.append(lib)
    return _lib[0]


def _symbol(names) -> tuple:
    lib = library()
    for entry in names:
        name = entry[0] if isinstance(entry, tuple) else entry
        if lib is not None and hasattr(lib, name):
            return getattr(lib, name), entry
    return None, None


def gemm(kind: str) -> tuple | None:
    """(address, blasint bits) of cblas_{s,d}gemm, or None when no CBLAS is loaded."""
    fn, entry = _symbol(_GEMM[kind])
    return None if fn is None else (ctypes.cast(fn, ctypes.c_void_p).value, entry[1])


def set_threads_local_address() -> int | None:
    """Address of `openblas_set_num_threads_local` (a per-thread count), or None."""
    fn, _ = _symbol(_LOCAL)
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value


def set_num_threads(n: int) -> bool:
    """Set OpenBLAS's thread count; False when the BLAS offers no such call."""
    fn, _ = _symbol(_SET)
    if fn is None:
        return False
    fn.argtypes, fn.restype = [ctypes.c_int], None
    fn(int(n))
    return True


def get_num_threads() -> int | None:
    """OpenBLAS's thread count, or None when unknown."""
    fn, _ = _symbol(_GET)
    if fn is None:
        return None
    fn.argtypes, fn.restype = [], ctypes.c_int
    return int(fn())
