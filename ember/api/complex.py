"""Complex tensors (PyTorch names): parts, conjugate, polar form and the real-pair view.

`view_as_real` and `view_as_complex` return copies, not views (ember's storage keeps one dtype
per buffer); their values and gradients are PyTorch's.
"""
from __future__ import annotations

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from ..ops import lax
from ..tensor import Tensor
from .math import convert

__all__ = ["real", "imag", "conj", "conj_physical", "complex", "polar", "angle", "view_as_real",
           "view_as_complex", "is_complex", "is_floating_point"]


def _complex_input(x: Tensor, op: str) -> Tensor:
    if x.dtype.kind != "c":
        raise op_error(DTypeError, op, f"needs a complex tensor, got {x.dtype.name}")
    return x


def real(input: Tensor) -> Tensor:
    """The real part (a real tensor; a real input is returned as it is)."""
    return lax.real(input) if input.dtype.kind == "c" else input


def imag(input: Tensor) -> Tensor:
    """The imaginary part of a complex tensor."""
    return lax.imag(_complex_input(input, "imag"))


def conj(input: Tensor) -> Tensor:
    """The complex conjugate (a real input is returned as it is)."""
    return lax.conj(input)


conj_physical = conj


def complex(real: Tensor, imag: Tensor) -> Tensor:
    """real + i*imag from two float32 or two float64 tensors (broadcast together)."""
    return lax.complex(real, imag)


def polar(abs: Tensor, angle: Tensor) -> Tensor:
    """abs * (cos(angle) + i sin(angle))."""
    return lax.complex(lax.mul(abs, lax.cos(angle)), lax.mul(abs, lax.sin(angle)))


def angle(input: Tensor) -> Tensor:
    """The argument atan2(imag, real) of a complex tensor; for a real one 0 or pi by sign."""
    if input.dtype.kind == "c":
        return lax.atan2(lax.imag(input), lax.real(input))
    x = input if input.dtype.kind == "f" else convert(input, dt.float32)
    pi = lax.full(x.shape, 3.141592653589793, x.dtype)
    return lax.select(lax.lt(x, 0), pi, lax.select(lax.isnan(x), x, lax.zeros_like(x)))


def view_as_real(input: Tensor) -> Tensor:
    """A complex tensor as a real one with a trailing dimension of 2 (real, imag)."""
    z = _complex_input(input, "view_as_real")
    parts = [lax.reshape(p, z.shape + (1,)) for p in (lax.real(z), lax.imag(z))]
    return lax.concatenate(parts, len(z.shape))


def view_as_complex(input: Tensor) -> Tensor:
    """A real tensor whose last dimension is 2 (real, imag) as a complex tensor."""
    if input.dtype not in dt.COMPLEX_OF:
        raise op_error(DTypeError, "view_as_complex", f"needs float32 or float64, got {input.dtype.name}")
    if not input.shape or input.shape[-1] != 2:
        raise op_error(ShapeError, "view_as_complex", f"the last dimension must be 2, got shape {input.shape}")
    n = len(input.shape) - 1
    start, stop, step = (0,) * (n + 1), tuple(input.shape), (1,) * (n + 1)
    re = lax.slice(input, start, stop[:-1] + (1,), step)
    im = lax.slice(input, start[:-1] + (1,), stop, step)
    return lax.complex(lax.reshape(re, input.shape[:-1]), lax.reshape(im, input.shape[:-1]))


def is_complex(input: Tensor) -> bool:
    """Whether the tensor's dtype is complex."""
    return input.dtype.kind == "c"


def is_floating_point(input: Tensor) -> bool:
    """Whether the tensor's dtype is a floating (real) one."""
    return input.dtype.kind == "f"
