"""The BLAS libraries ember reaches through ctypes.

Two roles, often one library:
- numpy's BLAS (its bundled OpenBLAS), where eager matmuls run: `ember.set_num_threads` sets its
  thread count (`set_num_threads`, `get_num_threads`).
- the step's CBLAS, whose `cblas_sgemm`/`cblas_dgemm` the native step calls through addresses
  resolved at load (`gemm`). `EMBER_BLAS` chooses it (`state.blas_choice`): by default Intel MKL's
  `mkl_rt` when it is installed (`pip install 'ember[mkl]'`), else numpy's. Inside the step each
  GEMM runs on one thread, the step's own OpenMP threads splitting the work, through the library's
  per-thread count (`set_threads_local_address`). MKL is put on its GNU OpenMP layer, so the
  process keeps one OpenMP runtime (MD-16).

Nothing is looked up until first use.
"""
from __future__ import annotations

import ctypes
import glob
import os
import site
import sys

from .state import blas_choice

# (symbol, bits of blasint): numpy's scipy-openblas, OpenBLAS's ILP64 names, MKL's ILP64 names,
# then the plain LP64 CBLAS names every library has
_GEMM = {"s": (("scipy_cblas_sgemm64_", 64), ("cblas_sgemm64_", 64), ("cblas_sgemm_64", 64), ("cblas_sgemm", 32)),
         "d": (("scipy_cblas_dgemm64_", 64), ("cblas_dgemm64_", 64), ("cblas_dgemm_64", 64), ("cblas_dgemm", 32))}
_SET = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")
_LOCAL = ("openblas_set_num_threads_local", "MKL_Set_Num_Threads_Local")
_MKL_THREADING_GNU = 3  # MKL_THREADING_GNU in mkl_service.h

_numpy: list = []  # [(CDLL or None, path)], filled on first use
_step: list = []  # [(CDLL or None, what it is)], filled on first use


def _numpy_candidates() -> list:
    import numpy as np
    root = os.path.dirname(np.__file__)
    found = sorted(glob.glob(os.path.join(root, "..", "numpy.libs", "*openblas*.so*")))
    found += sorted(glob.glob(os.path.join(root, ".libs", "*openblas*.so*")))
    found = [os.path.normpath(p) for p in found]
    return found + ["libopenblas.so.0", "libopenblas.so", "libcblas.so.3"]


def _mkl_candidates() -> list:
    # the mkl wheel installs into <prefix>/lib (a venv, conda, or a --user install)
    dirs = [sys.prefix, getattr(site, "USER_BASE", None) or ""]
    found = [p for d in dirs if d for p in sorted(glob.glob(os.path.join(d, "lib", "libmkl_rt.so*")), reverse=True)]
    return found + ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]


def _load(paths) -> tuple:
    """(CDLL, path) of the first of `paths` that loads and has an sgemm, or (None, None)."""
    for path in paths:
        try:
            cand = ctypes.CDLL(path)
        except OSError:
            continue
        if any(hasattr(cand, s) for s, _ in _GEMM["s"]):
            return cand, path
    return None, None


def library() -> ctypes.CDLL | None:
    """numpy's BLAS (already loaded by numpy, so the same copy), or None when none is found."""
    if not _numpy:
        _numpy.append(_load(_numpy_candidates()))
    return _numpy[0][0]


def step_library() -> tuple:
    """(CDLL or None, description) of the CBLAS the native step calls, chosen by `EMBER_BLAS`."""
    if not _step:
        choice = blas_choice()
        lib = None
        if choice in ("auto", "mkl"):
            lib, path = _load(_mkl_candidates())
            if lib is None and choice == "mkl":
                raise RuntimeError("EMBER_BLAS=mkl, but Intel MKL's libmkl_rt was not found: "
                                   "install it with pip install 'ember[mkl]'")
        elif choice != "numpy":
            lib, path = _load([choice])
            if lib is None:
                raise RuntimeError(f"EMBER_BLAS={choice!r} does not load as a CBLAS library "
                                   "with cblas_sgemm; unset it to use numpy's BLAS")
        if lib is None:
            lib, path = library(), _numpy[0][1]
            what = "none" if lib is None else f"numpy's BLAS ({path})"
        else:
            layer = getattr(lib, "MKL_Set_Threading_Layer", None)
            if layer is not None and "MKL_THREADING_LAYER" not in os.environ:
                layer.argtypes, layer.restype = [ctypes.c_int], ctypes.c_int
                layer(_MKL_THREADING_GNU)
            what = f"{'Intel MKL' if layer is not None else 'CBLAS'} ({path})"
        _step.append((lib, what))
    return _step[0]


def describe() -> str:
    """Which library the native step's GEMMs call, for EMBER_DEBUG and ember.inspect."""
    return step_library()[1]


def _symbol(names, lib) -> tuple:
    for entry in names:
        name = entry[0] if isinstance(entry, tuple) else entry
        if lib is not None and hasattr(lib, name):
            return getattr(lib, name), entry
    return None, None


def gemm(kind: str) -> tuple | None:
    """(address, blasint bits) of the step library's cblas_{s,d}gemm, or None without one."""
    fn, entry = _symbol(_GEMM[kind], step_library()[0])
    return None if fn is None else (ctypes.cast(fn, ctypes.c_void_p).value, entry[1])


def set_threads_local_address() -> int | None:
    """Address of the step library's per-thread thread count setter, `int f(int)`, or None."""
    fn, _ = _symbol(_LOCAL, step_library()[0])
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value


def set_num_threads(n: int) -> bool:
    """Set numpy's OpenBLAS thread count; False when its BLAS offers no such call."""
    fn, _ = _symbol(_SET, library())
    if fn is None:
        return False
    fn.argtypes, fn.restype = [ctypes.c_int], None
    fn(int(n))
    return True


def get_num_threads() -> int | None:
    """numpy's OpenBLAS thread count, or None when unknown."""
    fn, _ = _symbol(_GET, library())
    if fn is None:
        return None
    fn.argtypes, fn.restype = [], ctypes.c_int
    return int(fn())
