"""The CBLAS the CPU step's GEMMs call, through addresses resolved at load (`gemm`).

`EMBER_BLAS` chooses it (`ember._core.state.blas_choice`): by default Intel MKL's `mkl_rt` when
it is installed (`pip install 'ember[mkl]'`), else numpy's OpenBLAS (`ember._core.blas`). Inside
the step each GEMM runs on one thread, the step's own OpenMP threads splitting the work, through
the library's per-thread count (`set_threads_local_address`). MKL is put on its GNU OpenMP layer,
so the process keeps one OpenMP runtime (MD-16). Nothing is looked up until first use.
"""
from __future__ import annotations

import ctypes
import glob
import os
import site
import sys

from ..._core.blas import GEMM, library, load, numpy_path, symbol
from ..._core.state import blas_choice

_LOCAL = ("openblas_set_num_threads_local", "MKL_Set_Num_Threads_Local")
_MKL_THREADING_GNU = 3  # MKL_THREADING_GNU in mkl_service.h
_step: list = []  # [(CDLL or None, what it is)], filled on first use


def mkl_candidates() -> list:
    """Where Intel MKL's libmkl_rt may be: the mkl wheel installs into <prefix>/lib."""
    # the mkl wheel installs into <prefix>/lib (a venv, conda, or a --user install)
    dirs = [sys.prefix, getattr(site, "USER_BASE", None) or ""]
    found = [p for d in dirs if d for p in sorted(glob.glob(os.path.join(d, "lib", "libmkl_rt.so*")), reverse=True)]
    return found + ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]


def step_library() -> tuple:
    """(CDLL or None, description) of the CBLAS the native step calls, chosen by `EMBER_BLAS`."""
    if not _step:
        choice = blas_choice()
        lib = None
        if choice in ("auto", "mkl"):
            lib, path = load(mkl_candidates())
            if lib is None and choice == "mkl":
                raise RuntimeError("EMBER_BLAS=mkl, but Intel MKL's libmkl_rt was not found: "
                                   "install it with pip install 'ember[mkl]'")
        elif choice != "numpy":
            lib, path = load([choice])
            if lib is None:
                raise RuntimeError(f"EMBER_BLAS={choice!r} does not load as a CBLAS library "
                                   "with cblas_sgemm; unset it to use numpy's BLAS")
        if lib is None:
            lib, path = library(), numpy_path()
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


def gemm(kind: str) -> tuple | None:
    """(address, blasint bits) of the step library's cblas_{s,d}gemm, or None without one."""
    fn, entry = symbol(GEMM[kind], step_library()[0])
    return None if fn is None else (ctypes.cast(fn, ctypes.c_void_p).value, entry[1])


def set_threads_local_address() -> int | None:
    """Address of the step library's per-thread thread count setter, `int f(int)`, or None."""
    fn, _ = symbol(_LOCAL, step_library()[0])
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value
