"""Complex-number primitives: real and imaginary parts, conjugate, building a complex, modulus.

Gradients follow PyTorch's convention for a real loss L of a complex z = x + iy: z's gradient is
dL/dx + i dL/dy, and a VJP maps an output gradient g to `conj(f'(z)) * g` for holomorphic f
(so mul's VJP is `g * conj(y)`). Seen that way, `real`'s VJP turns g into the complex g + 0i,
`imag`'s into 0 + ig, and `complex(re, im)`'s splits g back into its parts.

Complex tensors run on the host: the C backend has no complex type, so a jitted graph that holds
one sends those units to the numpy executor (the jit report names them).
"""
from __future__ import annotations

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, op_error
from ..backend.lowering import mark_unlowered
from . import lax
from .core import CUSTOM, Aval, Primitive, register


def _part_abstract(name):
    def rule(x: Aval) -> Aval:
        if x.dtype.kind != "c":
            raise op_error(DTypeError, name, f"needs a complex tensor, got {x.dtype.name}")
        return Aval(x.shape, dt.REAL_OF[x.dtype])
    return rule


def _complex_abstract(re: Aval, im: Aval) -> Aval:
    from .core import broadcast_shapes
    d = dt.promote_types(re.dtype, im.dtype)
    if d not in dt.COMPLEX_OF:
        raise op_error(DTypeError, "complex", "real and imaginary parts must be float32 or float64, "
                       f"got {re.dtype.name} and {im.dtype.name}")
    return Aval(broadcast_shapes("complex", re.shape, im.shape), dt.COMPLEX_OF[d])


def _complex_impl(re, im):
    out = np.empty(np.broadcast_shapes(re.shape, im.shape), dt.COMPLEX_OF[dt.from_numpy_dtype(re.dtype)].np)
    out.real, out.imag = re, im
    return out


def _abs_vjp(g, out, z):
    # d|z| pulled back: g * z / |z|, and 0 at z = 0 (PyTorch's subgradient)
    safe = lax.select(lax.eq(out, 0), lax.full(out.shape, 1, out.dtype), out)
    unit = lax.div(z, lax.complex(safe, lax.zeros_like(safe)))
    return (lax.mul(lax.complex(g, lax.zeros_like(g)), unit),)


def _complex_prim(name, impl, abstract, vjp):
    p = register(Primitive(name, impl=impl, abstract=abstract, vjp=vjp, dtype_rule=CUSTOM,
                           kind="elementwise", promote_args=(0, 1) if name == "complex" else (0,),
                           half_in_f32=False,
                           dtypes=dt.COMPLEX if name != "complex" else (dt.float32, dt.float64)))
    mark_unlowered(p, "cpu", "C kernels have no complex type")
    return p


_complex_prim("real", lambda z: z.real.copy(), _part_abstract("real"),
              lambda g, out, z: (lax.complex(g, lax.zeros_like(g)),))
_complex_prim("imag", lambda z: z.imag.copy(), _part_abstract("imag"),
              lambda g, out, z: (lax.complex(lax.zeros_like(g), g),))
_complex_prim("conj", np.conjugate, lambda z: Aval(z.shape, z.dtype) if z.dtype.kind == "c" else
              _part_abstract("conj")(z), lambda g, out, z: (lax.conj(g),))
_complex_prim("complex", _complex_impl, _complex_abstract,
              lambda g, out, re, im: (lax.unbroadcast(lax.real(g), re.shape),
                                      lax.unbroadcast(lax.imag(g), im.shape)))
P_cabs = _complex_prim("complex_abs", lambda z: np.abs(z), _part_abstract("complex_abs"), _abs_vjp)
P_cabs.needs_out = True
