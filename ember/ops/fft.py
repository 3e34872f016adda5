"""Discrete Fourier transform primitives: complex-to-complex, real-to-complex and complex-to-real.

Each transforms several axes at once with numpy's pocketfft (`np.fft.fftn`/`rfftn`/`irfftn`);
`norm` is numpy's and PyTorch's ("backward": no scale forward, 1/n inverse; "ortho"; "forward").
Zero-padding and cropping to a requested length happen in ember/api/fft.py, so the primitives
take the lengths their input has (for `fft_c2r`, the output's last length `n`, whose input holds
n//2 + 1 bins).

VJPs, in PyTorch's convention (a complex value's gradient is dL/dRe + i dL/dIm):
- c2c is complex-linear with a symmetric matrix A, so its adjoint is conj(A conj(g));
- r2c keeps half the spectrum of a real signal: the adjoint zero-pads g back to the full
  length, applies the forward transform to conj(g) and keeps the real part;
- c2r reads each of the bins 1..n - (n//2 + 1) twice (as itself and as its mirror's conjugate),
  so its adjoint is r2c of g, with the inverse's scale, those bins doubled (PyTorch's
  `fft_c2r_backward`).
"""
from __future__ import annotations

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from ..backend.lowering import mark_unlowered
from . import lax
from .core import CUSTOM, Aval, Primitive, register

#: the norm whose forward scale is another norm's inverse scale
SWAP = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


def _check_axes(op: str, x: Aval, axes: tuple) -> None:
    if len(set(axes)) != len(axes) or any(not 0 <= a < len(x.shape) for a in axes):
        raise op_error(ShapeError, op, f"axes {axes} are not distinct dims of shape {x.shape}")
    if any(x.shape[a] == 0 for a in axes):
        raise op_error(ShapeError, op, f"cannot transform an empty dimension of shape {x.shape} "
                       f"(axes {axes})")


def _c2c_abstract(x: Aval, *, axes, inverse, norm) -> Aval:
    if x.dtype.kind != "c":
        raise op_error(DTypeError, "fft_c2c", f"needs a complex input, got {x.dtype.name}")
    _check_axes("fft_c2c", x, axes)
    return Aval(x.shape, x.dtype)


def _c2c_impl(x, *, axes, inverse, norm):
    f = np.fft.ifftn if inverse else np.fft.fftn
    return np.asarray(f(x, axes=axes, norm=norm), x.dtype)


def _c2c_vjp(g, out, x, *, axes, inverse, norm):
    return (lax.conj(lax.fft_c2c(lax.conj(g), axes, inverse, norm)),)


def _r2c_abstract(x: Aval, *, axes, norm) -> Aval:
    if x.dtype not in dt.COMPLEX_OF:
        raise op_error(DTypeError, "fft_r2c", f"needs a float32 or float64 input, got {x.dtype.name}")
    _check_axes("fft_r2c", x, axes)
    shape = list(x.shape)
    shape[axes[-1]] = shape[axes[-1]] // 2 + 1
    return Aval(tuple(shape), dt.COMPLEX_OF[x.dtype])


def _r2c_impl(x, *, axes, norm):
    return np.asarray(np.fft.rfftn(x, axes=axes, norm=norm), dt.COMPLEX_OF[dt.from_numpy_dtype(x.dtype)].np)


def _r2c_vjp(g, out, x, *, axes, norm):
    last = axes[-1]
    n, m = x.shape[last], g.shape[last]
    config = [(0, 0, 0)] * len(g.shape)
    config[last] = (0, n - m, 0)
    full = lax.pad(g, 0.0, config)
    return (lax.real(lax.fft_c2c(lax.conj(full), axes, False, norm)),)


def _c2r_abstract(x: Aval, *, axes, n, norm) -> Aval:
    if x.dtype.kind != "c":
        raise op_error(DTypeError, "fft_c2r", f"needs a complex input, got {x.dtype.name}")
    _check_axes("fft_c2r", x, axes)
    if n < 1 or x.shape[axes[-1]] != n // 2 + 1:
        raise op_error(ShapeError, "fft_c2r", f"an output length {n} needs {n // 2 + 1} bins on axis "
                       f"{axes[-1]}, got shape {x.shape}")
    shape = list(x.shape)
    shape[axes[-1]] = n
    return Aval(tuple(shape), dt.REAL_OF[x.dtype])


def _c2r_impl(x, *, axes, n, norm):
    s = [x.shape[a] for a in axes[:-1]] + [n]
    return np.asarray(np.fft.irfftn(x, s=s, axes=axes, norm=norm), dt.REAL_OF[dt.from_numpy_dtype(x.dtype)].np)


def _c2r_vjp(g, out, x, *, axes, n, norm):
    last = axes[-1]
    gi = lax.fft_r2c(g, axes, SWAP[norm])
    m = gi.shape[last]
    twice = n - m  # bins 1..twice have a mirror image in the full spectrum
    if twice > 0:
        shape = [1] * len(gi.shape)
        shape[last] = m
        k = lax.iota(shape, last, dt.int64)
        real = dt.REAL_OF[gi.dtype]
        w = lax.select(lax.bitwise_and(lax.ge(k, 1), lax.le(k, twice)), lax.full(shape, 2, real),
                       lax.full(shape, 1, real))
        gi = lax.mul(gi, w)
    return (gi,)


def _fft_prim(name, impl, abstract, vjp, dtypes):
    p = register(Primitive(name, impl=impl, abstract=abstract, vjp=vjp, dtype_rule=CUSTOM, kind="fft",
                           promote_args=(0,), half_in_f32=False, dtypes=dtypes))
    mark_unlowered(p, "cpu", "numpy's pocketfft")
    return p


_fft_prim("fft_c2c", _c2c_impl, _c2c_abstract, _c2c_vjp, dt.COMPLEX)
_fft_prim("fft_r2c", _r2c_impl, _r2c_abstract, _r2c_vjp, (dt.float32, dt.float64))
_fft_prim("fft_c2r", _c2r_impl, _c2r_abstract, _c2r_vjp, dt.COMPLEX)

