"""ember.fft: discrete Fourier transforms with PyTorch's names, arguments and gradients.

`n`/`s` zero-pad or crop the input along the transformed dims before the transform (for the
c2r transforms, `n`/`s` are the output lengths). `norm` is "backward" (the default: no scale
forward, 1/n inverse), "ortho" (1/sqrt(n) both ways) or "forward" (1/n forward). Real inputs of
`fft`/`ifft` become complex; integer inputs compute in the default float's complex dtype;
float16 and bfloat16 are refused (as PyTorch on the CPU). The primitives and their VJPs live in
ember/ops/fft.py.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from .._core.state import default_dtype
from ..ops import lax
from ..ops.fft import SWAP
from ..tensor import Tensor, tensor
from .math import convert
from .shape import roll

__all__ = ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fft2", "ifft2", "rfft2", "irfft2",
           "hfft2", "ihfft2", "fftn", "ifftn", "rfftn", "irfftn", "hfftn", "ihfftn",
           "fftfreq", "rfftfreq", "fftshift", "ifftshift"]

_NORMS = ("backward", "ortho", "forward")


def _norm(op: str, norm) -> str:
    if norm is None:
        return "backward"
    if norm not in _NORMS:
        raise op_error(ValueError, op, f"norm must be one of {_NORMS} or None, got {norm!r}")
    return norm


def _real_input(op: str, x: Tensor) -> Tensor:
    """`x` as float32/float64 (integers and bools in the default float)."""
    if x.dtype.kind == "c":
        raise op_error(DTypeError, op, f"expects a real input tensor, got {x.dtype.name}")
    if x.dtype in (dt.float16, dt.bfloat16):
        raise op_error(DTypeError, op, f"has no {x.dtype.name} kernel; convert to float32 first")
    return x if x.dtype in dt.COMPLEX_OF else convert(x, default_dtype())


def _complex_input(op: str, x: Tensor) -> Tensor:
    """`x` as complex64/complex128 (a real input gains a zero imaginary part)."""
    if x.dtype.kind == "c":
        return x
    x = _real_input(op, x)
    return convert(x, dt.COMPLEX_OF[x.dtype])


def _dims(op: str, x: Tensor, s, dim, default) -> tuple:
    """The transformed dims (non-negative, in the caller's order) and their requested lengths."""
    nd = x.ndim
    if dim is None:
        dims = tuple(range(nd - len(s), nd)) if s is not None else default(nd)
    else:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if s is not None and len(s) != len(dims):
        raise op_error(ShapeError, op, f"s {tuple(s)} and dim {dims} must have the same length")
    out = []
    for d in dims:
        if not -nd <= d < max(nd, 1) or nd == 0:
            raise op_error(ShapeError, op, f"dim {d} is out of range for a tensor of shape {x.shape}")
        out.append(d % nd)
    if len(set(out)) != len(out):
        raise op_error(ShapeError, op, f"dims {dims} repeat a dim")
    sizes = tuple(x.shape[d] for d in out) if s is None else tuple(
        x.shape[d] if n == -1 else int(n) for d, n in zip(out, s))
    if any(n < 1 for n in sizes):
        raise op_error(ShapeError, op, f"invalid number of data points {sizes} for shape {x.shape}")
    return tuple(out), sizes


def _resize(x: Tensor, dims: tuple, sizes: tuple) -> Tensor:
    """`x` cropped or zero-padded at the end of each of `dims` to `sizes`."""
    shape = x.shape
    stop, config = list(shape), [(0, 0, 0)] * x.ndim
    for d, n in zip(dims, sizes):
        stop[d] = min(shape[d], n)
        config[d] = (0, max(n - shape[d], 0), 0)
    if tuple(stop) != shape:
        x = lax.slice(x, (0,) * x.ndim, tuple(stop), (1,) * x.ndim)
    if any(c[1] for c in config):
        x = lax.pad(x, 0.0, config)
    return x


def _all(nd):
    return tuple(range(nd))


def _last(nd):
    return (nd - 1,)


def _last2(nd):
    return (nd - 2, nd - 1)


def _c2c(op, x, s, dim, norm, inverse, default):
    x = _complex_input(op, x)
    dims, sizes = _dims(op, x, s, dim, default)
    return lax.fft_c2c(_resize(x, dims, sizes), dims, inverse, _norm(op, norm))


def _r2c(op, x, s, dim, norm, default):
    x = _real_input(op, x)
    dims, sizes = _dims(op, x, s, dim, default)
    return lax.fft_r2c(_resize(x, dims, sizes), dims, _norm(op, norm))


def _c2r(op, x, s, dim, norm, default):
    x = _complex_input(op, x)
    dims, sizes = _dims(op, x, s, dim, default)
    if s is None or s[-1] == -1:  # the output length the input's half-spectrum came from
        sizes = sizes[:-1] + (2 * (x.shape[dims[-1]] - 1),)
    n = sizes[-1]
    if n < 1:
        raise op_error(ShapeError, op, f"invalid number of data points ({n}) for shape {x.shape}; pass n")
    return lax.fft_c2r(_resize(x, dims, sizes[:-1] + (n // 2 + 1,)), dims, n, _norm(op, norm))


def _one(n):
    return None if n is None else (n,)


def fft(input: Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """The 1-D discrete Fourier transform along `dim`."""
    return _c2c("fft", input, _one(n), dim, norm, False, _last)


def ifft(input: Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """The 1-D inverse DFT along `dim`."""
    return _c2c("ifft", input, _one(n), dim, norm, True, _last)


def rfft(input: Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """The 1-D DFT of a real signal: the n//2 + 1 non-negative frequencies."""
    return _r2c("rfft", input, _one(n), dim, norm, _last)


def irfft(input: Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """The inverse of rfft: a real signal of length `n` (default 2 * (bins - 1))."""
    return _c2r("irfft", input, _one(n), dim, norm, _last)


def hfft(input: Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """The DFT of a Hermitian-symmetric signal given by its first half: a real spectrum."""
    return _c2r("hfft", lax.conj(_complex_input("hfft", input)), _one(n), dim, SWAP[_norm("hfft", norm)], _last)


def ihfft(input: Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """The inverse of hfft: the half-spectrum of a real signal's inverse DFT."""
    return lax.conj(_r2c("ihfft", input, _one(n), dim, SWAP[_norm("ihfft", norm)], _last))


def fft2(input: Tensor, s: Sequence[int] | None = None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """The 2-D DFT over `dim` (the last two by default)."""
    return _c2c("fft2", input, s, dim, norm, False, _last2)


def ifft2(input: Tensor, s: Sequence[int] | None = None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """The 2-D inverse DFT."""
    return _c2c("ifft2", input, s, dim, norm, True, _last2)


def rfft2(input: Tensor, s: Sequence[int] | None = None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """The 2-D DFT of a real signal (half-spectrum on the last of `dim`)."""
    return _r2c("rfft2", input, s, dim, norm, _last2)


def irfft2(input: Tensor, s: Sequence[int] | None = None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """The inverse of rfft2."""
    return _c2r("irfft2", input, s, dim, norm, _last2)


def hfft2(input: Tensor, s: Sequence[int] | None = None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """The 2-D DFT of a Hermitian-symmetric signal given by its half (a real result)."""
    return _c2r("hfft2", lax.conj(_complex_input("hfft2", input)), s, dim, SWAP[_norm("hfft2", norm)], _last2)


def ihfft2(input: Tensor, s: Sequence[int] | None = None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """The inverse of hfft2."""
    return lax.conj(_r2c("ihfft2", input, s, dim, SWAP[_norm("ihfft2", norm)], _last2))


def fftn(input: Tensor, s: Sequence[int] | None = None, dim=None, norm: str | None = None) -> Tensor:
    """The N-D DFT over `dim` (all dims by default, or the last len(s))."""
    return _c2c("fftn", input, s, dim, norm, False, _all)


def ifftn(input: Tensor, s: Sequence[int] | None = None, dim=None, norm: str | None = None) -> Tensor:
    """The N-D inverse DFT."""
    return _c2c("ifftn", input, s, dim, norm, True, _all)


def rfftn(input: Tensor, s: Sequence[int] | None = None, dim=None, norm: str | None = None) -> Tensor:
    """The N-D DFT of a real signal (half-spectrum on the last of `dim`)."""
    return _r2c("rfftn", input, s, dim, norm, _all)


def irfftn(input: Tensor, s: Sequence[int] | None = None, dim=None, norm: str | None = None) -> Tensor:
    """The inverse of rfftn."""
    return _c2r("irfftn", input, s, dim, norm, _all)


def hfftn(input: Tensor, s: Sequence[int] | None = None, dim=None, norm: str | None = None) -> Tensor:
    """The N-D DFT of a Hermitian-symmetric signal given by its half (a real result)."""
    return _c2r("hfftn", lax.conj(_complex_input("hfftn", input)), s, dim, SWAP[_norm("hfftn", norm)], _all)


def ihfftn(input: Tensor, s: Sequence[int] | None = None, dim=None, norm: str | None = None) -> Tensor:
    """The inverse of hfftn."""
    return lax.conj(_r2c("ihfftn", input, s, dim, SWAP[_norm("ihfftn", norm)], _all))


def _freq(n: int, values, dtype, requires_grad: bool) -> Tensor:
    d = dt.as_dtype(dtype) if dtype is not None else default_dtype()
    return tensor(np.asarray(values, d.np), dtype=d, requires_grad=requires_grad)


def fftfreq(n: int, d: float = 1.0, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """The sample frequencies of an n-point DFT: [0, 1, ..., -1] / (d * n)."""
    return _freq(n, np.fft.fftfreq(int(n), d), dtype, requires_grad)


def rfftfreq(n: int, d: float = 1.0, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """The sample frequencies of rfft's n//2 + 1 bins."""
    return _freq(n, np.fft.rfftfreq(int(n), d), dtype, requires_grad)


def _shift_dims(x: Tensor, dim) -> tuple:
    if dim is None:
        return tuple(range(x.ndim))
    return (dim,) if isinstance(dim, int) else tuple(dim)


def fftshift(input: Tensor, dim=None) -> Tensor:
    """The zero frequency moved to the centre of each of `dim` (all by default)."""
    dims = _shift_dims(input, dim)
    return roll(input, tuple(input.shape[d] // 2 for d in dims), dims) if dims else input


def ifftshift(input: Tensor, dim=None) -> Tensor:
    """The inverse of fftshift."""
    dims = _shift_dims(input, dim)
    return roll(input, tuple(-(input.shape[d] // 2) for d in dims), dims) if dims else input
