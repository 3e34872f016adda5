"""Elementwise primitives: arithmetic, math functions, comparisons, bitwise ops, select and casts.

Operands broadcast with numpy's rules; Python scalars are weakly typed. Integer floor division
and remainder follow numpy (floor semantics) and raise ZeroDivisionError on a zero divisor as
PyTorch does; `round` is half-to-even; `max`/`min` propagate NaN.
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from . import expr as E
from . import lax
from .core import (ALL_DTYPES, BOOL, COMPLEX, CUSTOM, FLOAT, NUMERIC, SAME, Aval, Primitive,
                   elementwise_abstract, register)

FLOATS = dt.FLOATS
# uint32 is internal (random bits): the arithmetic the generator needs supports it
WITH_U32 = ALL_DTYPES + (dt.uint32,)
INTS_BOOL = dt.INTS + (dt.bool_,)
SIGNED = tuple(d for d in NUMERIC if d is not dt.uint8)


def _shape(x):
    return getattr(x, "shape", None)


def _is_float(x):
    """Whether operand x needs a cotangent: floating, and (for a saved tensor) requiring grad."""
    d = getattr(x, "dtype", None)
    return d is not None and d.kind in "fc" and getattr(x, "_rg", True)


def _zero(g):
    return lax.zeros_like(g)


def _elementwise(name, impl, vjp=None, lowering=None, dtypes=ALL_DTYPES, rule=SAME,
                 needs_out=False, doc=""):
    p = Primitive(name, impl=impl, vjp=vjp, lowering=lowering, dtypes=dtypes, dtype_rule=rule,
                  kind="elementwise", needs_out=needs_out, doc=doc)
    p.abstract = elementwise_abstract(p)
    return register(p)


def _unary_lowering(fn):
    return lambda x: E.call(fn, x)


def _binary_lowering(fn):
    return lambda x, y: E.call(fn, x, y)


# ---------------------------------------------------------------- arithmetic
def _div_int_checked(ufunc):
    def impl(x, y):
        if x.dtype.kind in "iub" and np.any(np.equal(y, 0)):
            raise ZeroDivisionError("integer division or remainder by zero")
        return ufunc(x, y)
    return impl


def _extreme_vjp(lose_x, lose_y):
    # PyTorch's rule: ties share the gradient equally; an operand gets nothing only where it
    # loses, so with a NaN (no operand loses) both get all of it
    def vjp(g, out, x, y):
        g_or_half = lax.select(lax.eq(x, y), lax.mul(g, 0.5), g)
        gx = lax.select(lose_x(x, y), _zero(g), g_or_half) if _is_float(x) else None
        gy = lax.select(lose_y(x, y), _zero(g), g_or_half) if _is_float(y) else None
        return lax.unbroadcast(gx, _shape(x)), lax.unbroadcast(gy, _shape(y))
    return vjp


_max_vjp = _extreme_vjp(lax.lt, lax.gt)
_min_vjp = _extreme_vjp(lax.gt, lax.lt)


def _pow_vjp(g, out, x, y):
    gx = gy = None
    if _is_float(x):
        # d/dx x**y = y * x**(y-1), defined as 0 where y == 0 (PyTorch)
        d = lax.mul(y, lax.pow(x, lax.sub(y, 1)))
        gx = lax.unbroadcast(lax.select(lax.eq(y, 0), lax.zeros_like(d), lax.mul(g, d)), _shape(x))
    if _is_float(y):
        # d/dy x**y = x**y * log(x), defined as 0 where x == 0 and y >= 0
        d = lax.mul(out, lax.log(x))
        mask = lax.bitwise_and(lax.eq(x, 0), lax.ge(y, 0))
        gy = lax.unbroadcast(lax.select(mask, lax.zeros_like(d), lax.mul(g, d)), _shape(y))
    return gx, gy


def _atan2_vjp(g, out, y, x):
    den = lax.add(lax.mul(x, x), lax.mul(y, y))
    recip = lax.div(1.0, den)
    recip = lax.select(lax.eq(den, 0), lax.zeros_like(recip), recip)  # 0 at the origin (PyTorch)
    return (lax.unbroadcast(lax.mul(g, lax.mul(x, recip)), _shape(y)) if _is_float(y) else None,
            lax.unbroadcast(lax.neg(lax.mul(g, lax.mul(y, recip))), _shape(x)) if _is_float(x) else None)


_elementwise("add", np.add, dtypes=WITH_U32 + COMPLEX, lowering=_binary_lowering("add"),
             vjp=lambda g, out, x, y: (lax.unbroadcast(g, _shape(x)), lax.unbroadcast(g, _shape(y))))
_elementwise("sub", np.subtract, dtypes=NUMERIC + COMPLEX, lowering=_binary_lowering("sub"),
             vjp=lambda g, out, x, y: (lax.unbroadcast(g, _shape(x)), lax.unbroadcast(lax.neg(g), _shape(y))))
# complex operands: the VJP multiplies by the conjugate derivative (lax.conj is a no-op on reals);
# a real operand's complex cotangent keeps its real part (autograd converts it to the operand's dtype)
_elementwise("mul", np.multiply, dtypes=WITH_U32 + COMPLEX, lowering=_binary_lowering("mul"),
             vjp=lambda g, out, x, y: (lax.unbroadcast(lax.mul(g, lax.conj(y)), _shape(x)),
                                       lax.unbroadcast(lax.mul(g, lax.conj(x)), _shape(y))))
_elementwise("div", np.true_divide, dtypes=ALL_DTYPES + COMPLEX, rule=FLOAT, lowering=_binary_lowering("div"),
             needs_out=True,
             vjp=lambda g, out, x, y: (
                 lax.unbroadcast(lax.div(g, lax.conj(y)), _shape(x)),
                 lax.unbroadcast(lax.neg(lax.div(lax.mul(g, lax.conj(out)), lax.conj(y))), _shape(y))))
_elementwise("floordiv", _div_int_checked(np.floor_divide), dtypes=NUMERIC,
             lowering=_binary_lowering("floordiv"),
             vjp=lambda g, out, x, y: (lax.unbroadcast(_zero(g), _shape(x)) if _is_float(x) else None,
                                       lax.unbroadcast(_zero(g), _shape(y)) if _is_float(y) else None))
def _remainder(x, y):
    # PyTorch's float remainder: fmod moved into the divisor's sign, so a zero result keeps the
    # dividend's sign (numpy's np.remainder gives the divisor's: remainder(-3.0, 1.5) = 0.0, not -0.0)
    if x.dtype.kind in "iub":
        return np.remainder(x, y)
    m = np.fmod(x, y)
    return np.where((m != 0) & ((m < 0) != (y < 0)), m + y, m)


_elementwise("rem", _div_int_checked(_remainder), dtypes=NUMERIC + (dt.uint32,), lowering=_binary_lowering("mod"),
             vjp=lambda g, out, x, y: (lax.unbroadcast(g, _shape(x)),
                                       lax.unbroadcast(lax.neg(lax.mul(g, lax.floordiv(x, y))), _shape(y))))
_elementwise("fmod", _div_int_checked(np.fmod), dtypes=NUMERIC, lowering=_binary_lowering("fmod"),
             vjp=lambda g, out, x, y: (  # PyTorch: d/dx = 1, d/dy = -trunc(x / y)
                 lax.unbroadcast(g, _shape(x)) if _is_float(x) else None,
                 lax.unbroadcast(lax.neg(lax.mul(g, lax.trunc(lax.div(x, y)))), _shape(y)) if _is_float(y) else None))
_elementwise("pow", np.power, dtypes=NUMERIC, lowering=_binary_lowering("pow"), vjp=_pow_vjp,
             needs_out=True)
def _first_on_ties(ufunc):
    # NaN propagates; where x == y (only -0.0 vs 0.0 can differ) the first operand wins, as in PyTorch
    def impl(x, y):
        r = ufunc(x, y)
        if r.dtype.kind == "f":
            tie = np.equal(x, y)
            if tie.any():
                r = np.where(tie, x, r)
        return r
    return impl


_elementwise("max", _first_on_ties(np.maximum), lowering=_binary_lowering("max"), vjp=_max_vjp)
_elementwise("min", _first_on_ties(np.minimum), lowering=_binary_lowering("min"), vjp=_min_vjp)
_elementwise("atan2", np.arctan2, dtypes=ALL_DTYPES, rule=FLOAT, lowering=_binary_lowering("atan2"),
             vjp=_atan2_vjp)


def _logaddexp_lowering(x, y):
    # max(x, y) + log1p(exp(-|x - y|)), and x + log(2) where x == y (so inf + inf stays inf)
    tail = E.call("log1p", E.call("exp", E.call("neg", E.call("abs", x - y))))
    return E.call("select", E.call("eq", x, y), x + math.log(2.0), E.call("max", x, y) + tail)


def _logaddexp_vjp(g, out, x, y):
    # d/dx log(e^x + e^y) = e^(x - out)
    return (lax.unbroadcast(lax.mul(g, lax.exp(lax.sub(x, out))), _shape(x)) if _is_float(x) else None,
            lax.unbroadcast(lax.mul(g, lax.exp(lax.sub(y, out))), _shape(y)) if _is_float(y) else None)


_elementwise("logaddexp", np.logaddexp, dtypes=ALL_DTYPES, rule=FLOAT, lowering=_logaddexp_lowering,
             vjp=_logaddexp_vjp, needs_out=True, doc="log(exp(x) + exp(y)) without overflow")

# ---------------------------------------------------------------- unary math
_SQRT_PI_2 = 2.0 / math.sqrt(math.pi)


def _logistic(x):
    # stable on both tails: exp of a non-positive number only
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


# erf in float64 with the Cephes rational approximations (relative error < 5e-16): x*T(x^2)/U(x^2)
# for |x| < 1, else 1 - erfc with exp(-x^2) P(|x|)/Q(|x|) (|x| < 8) or R/S (|x| >= 8)
_ERF_T = (9.60497373987051638749E0, 9.00260197203842689217E1, 2.23200534594684319226E3,
          7.00332514112805075473E3, 5.55923013010394962768E4)
_ERF_U = (3.35617141647503099647E1, 5.21357949780152679795E2, 4.59432382970980127987E3,
          2.26290000613890934246E4, 4.92673942608635921086E4)
_ERFC_P = (2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0,
           4.86371970985681366614E1, 1.96520832956077098242E2, 5.26445194995477358631E2,
           9.34528527171957607540E2, 1.02755188689515710272E3, 5.57535335369399327526E2)
_ERFC_Q = (1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2,
           9.75708501743205489753E2, 1.82390916687909736289E3, 2.24633760818710981792E3,
           1.65666309194161350182E3, 5.57535340817727675546E2)
_ERFC_R = (5.64189583547755073984E-1, 1.27536670759978104416E0, 5.01905042251180477414E0,
           6.16021097993053585195E0, 7.40974269950448939160E0, 2.97886665372100240670E0)
_ERFC_S = (2.26052863220117276590E0, 9.39603524938001434673E0, 1.20489539808096656605E1,
           1.70814450747565897222E1, 9.60896809063285067485E0, 3.36907645100081516050E0)


def _poly(x, c, monic=False):
    r = x + c[0] if monic else np.full_like(x, c[0])
    for k in c[1:]:
        r = r * x + k
    return r


def _erf(x):
    v = np.asarray(x, np.float64)
    a = np.minimum(np.abs(v), 30.0)  # erfc(30) underflows to 0: erf is exactly +-1 beyond
    s = np.minimum(a, 1.0)
    z = s * s
    small = np.copysign(s, v) * _poly(z, _ERF_T) / _poly(z, _ERF_U, True)
    e = np.exp(-a * a)
    erfc = np.where(a < 8, e * _poly(a, _ERFC_P) / _poly(a, _ERFC_Q, True),
                    e * _poly(a, _ERFC_R) / _poly(a, _ERFC_S, True))
    out = np.where(a < 1, small, np.copysign(1.0 - erfc, v))
    out = np.where(np.isnan(v), v, out)
    return out.astype(x.dtype, copy=False)


def _rsqrt(x):
    return np.reciprocal(np.sqrt(x))


def _sign(x):
    if x.dtype.kind == "b":
        return x.copy()
    s = np.sign(x)
    return np.where(s != s, s.dtype.type(0), s) if s.dtype.kind == "f" else s  # sign(NaN) = 0 (PyTorch)


def _float_unary(name, impl, vjp, lowering, needs_out=False, more_dtypes=()):
    _elementwise(name, impl, vjp=vjp, lowering=lowering, dtypes=ALL_DTYPES + more_dtypes, rule=FLOAT,
                 needs_out=needs_out)


_elementwise("neg", np.negative, dtypes=NUMERIC + COMPLEX, lowering=_unary_lowering("neg"),
             vjp=lambda g, out, x: (lax.neg(g),))
_elementwise("abs", np.abs, dtypes=NUMERIC, lowering=_unary_lowering("abs"),
             vjp=lambda g, out, x: (lax.mul(g, lax.sign(x)),))
_elementwise("sign", _sign, dtypes=ALL_DTYPES, lowering=_unary_lowering("sign"),
             vjp=lambda g, out, x: (_zero(g),))
_float_unary("exp", np.exp, lambda g, out, x: (lax.mul(g, lax.conj(out)),), _unary_lowering("exp"), True,
             COMPLEX)
_float_unary("log", np.log, lambda g, out, x: (lax.div(g, x),), _unary_lowering("log"))
_float_unary("log1p", np.log1p, lambda g, out, x: (lax.div(g, lax.add(x, 1)),), _unary_lowering("log1p"))
_float_unary("expm1", np.expm1, lambda g, out, x: (lax.mul(g, lax.add(out, 1)),),
             _unary_lowering("expm1"), True)
_float_unary("sqrt", np.sqrt, lambda g, out, x: (lax.div(g, lax.mul(out, 2)),), _unary_lowering("sqrt"), True)
_float_unary("rsqrt", _rsqrt, lambda g, out, x: (lax.mul(lax.mul(g, -0.5), lax.div(out, x)),),
             lambda x: 1 / E.call("sqrt", x), True)
_float_unary("sin", np.sin, lambda g, out, x: (lax.mul(g, lax.cos(x)),), _unary_lowering("sin"))
_float_unary("cos", np.cos, lambda g, out, x: (lax.neg(lax.mul(g, lax.sin(x))),), _unary_lowering("cos"))
_float_unary("tanh", np.tanh, lambda g, out, x: (lax.mul(g, lax.sub(1, lax.mul(out, out))),),
             _unary_lowering("tanh"), True)
_float_unary("erf", _erf, lambda g, out, x: (lax.mul(g, lax.mul(_SQRT_PI_2, lax.exp(lax.neg(lax.mul(x, x))))),),
             _unary_lowering("erf"))
_float_unary("logistic", _logistic, lambda g, out, x: (lax.mul(g, lax.mul(out, lax.sub(1, out))),),
             lambda x: 1 / (1 + E.call("exp", -x)), True)


def _rounding(name, ufunc, fn):
    _elementwise(name, lambda x: x.copy() if x.dtype.kind in "iub" else ufunc(x), dtypes=NUMERIC,
                 lowering=_unary_lowering(fn), vjp=lambda g, out, x: (_zero(g),))


_rounding("floor", np.floor, "floor")
_rounding("ceil", np.ceil, "ceil")
_rounding("round", np.rint, "round_even")
_rounding("trunc", np.trunc, "trunc")
_elementwise("isnan", np.isnan, dtypes=ALL_DTYPES + COMPLEX, rule=BOOL, lowering=_unary_lowering("isnan"))

# ---------------------------------------------------------------- comparisons and bitwise
for _n, _u, _f in (("eq", np.equal, "eq"), ("ne", np.not_equal, "ne"), ("lt", np.less, "lt"),
                   ("le", np.less_equal, "le"), ("gt", np.greater, "gt"), ("ge", np.greater_equal, "ge")):
    _elementwise(_n, _u, dtypes=WITH_U32 + (COMPLEX if _n in ("eq", "ne") else ()), rule=BOOL,
                 lowering=_binary_lowering(_f))

_elementwise("bitwise_and", np.bitwise_and, dtypes=INTS_BOOL + (dt.uint32,), lowering=_binary_lowering("and"))
_elementwise("bitwise_or", np.bitwise_or, dtypes=INTS_BOOL + (dt.uint32,), lowering=_binary_lowering("or"))
_elementwise("bitwise_xor", np.bitwise_xor, dtypes=INTS_BOOL + (dt.uint32,), lowering=_binary_lowering("xor"))
_elementwise("bitwise_not", np.invert, dtypes=INTS_BOOL + (dt.uint32,), lowering=_unary_lowering("not"))
_elementwise("shift_left", np.left_shift, dtypes=dt.INTS + (dt.uint32,), lowering=_binary_lowering("shl"))
_elementwise("shift_right", np.right_shift, dtypes=dt.INTS + (dt.uint32,), lowering=_binary_lowering("shr"))


# ---------------------------------------------------------------- select
def _select_abstract(c: Aval, x: Aval, y: Aval) -> Aval:
    from .core import broadcast_shapes
    from .._core.errors import DTypeError, op_error
    if c.dtype is not dt.bool_:
        raise op_error(DTypeError, "select", f"the condition must be bool, got {c.dtype.name}")
    key = tuple(("i" if a.dtype.kind in "ui" else a.dtype.kind) if a.weak else a.dtype for a in (x, y))
    _, out = P_select.resolve_dtypes(key)
    return Aval(broadcast_shapes("select", c.shape, x.shape, y.shape), out, x.weak and y.weak)


def _select_vjp(g, out, c, x, y):
    z = 0.0  # weak: takes g's dtype
    return (None, lax.unbroadcast(lax.select(c, g, z), _shape(x)) if _is_float(x) else None,
            lax.unbroadcast(lax.select(c, z, g), _shape(y)) if _is_float(y) else None)


_INT_OF_SIZE = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def _select_impl(c, x, y):
    if c.dtype.kind != "b":
        raise TypeError("the condition must be bool")  # eager agrees with _select_abstract
    # np.where is slow on small arrays (~5x a multiply); for a full-shape operand and either another
    # one or a +0 scalar, a bitwise blend through an integer view is exact (it moves bits, NaN and
    # -0.0 included) and several times faster
    full, other, take = (x, y, True) if x.shape == c.shape else (y, x, False)
    if full.shape == c.shape and c.ndim and full.dtype.itemsize in (4, 8) and full.flags.c_contiguous:
        it = _INT_OF_SIZE[full.dtype.itemsize]
        m = c.astype(it)
        if take:
            np.negative(m, out=m)  # all ones where c, zeros elsewhere
        else:
            np.subtract(m, 1, out=m)  # all ones where not c
        fv = full.view(it)
        if other.ndim == 0 and other == 0 and math.copysign(1.0, other) > 0:  # +0 (bits all zero)
            return np.bitwise_and(fv, m).view(full.dtype)
        if other.shape == full.shape and other.flags.c_contiguous:
            return (np.bitwise_and(fv, m) | np.bitwise_and(other.view(it), ~m)).view(full.dtype)
    return np.where(c, x, y)


P_select = register(Primitive(
    "select", impl=_select_impl, abstract=_select_abstract, vjp=_select_vjp,
    lowering=lambda c, x, y: E.call("select", c, x, y), kind="elementwise", promote_args=(1, 2),
    dtypes=ALL_DTYPES + COMPLEX))


# ---------------------------------------------------------------- casts
def _convert_abstract(x: Aval, *, dtype) -> Aval:
    return Aval(x.shape, dtype, False)


def _convert_impl(x, *, dtype):
    x = np.asarray(x)  # a Python scalar keeps its full precision (float64/int64) until the cast
    if x.dtype.kind == "c" and dtype.kind != "c":
        x = x.real  # PyTorch: a cast to a real dtype keeps the real part
    if dtype.bits == 16 and dtype.kind == "f" and x.dtype.kind in "iuf" and x.dtype.itemsize >= 4 \
            and x.dtype != np.float32:
        x = x.astype(np.float32)  # PyTorch rounds float64 and wide ints to a half type through float
    if dtype.kind in "iu" and x.dtype.name == "bfloat16":
        # truncated, and 0 where that lies outside the integer range (ml_dtypes' rule, written
        # out: older ml_dtypes versions wrap instead)
        info = np.iinfo(dtype.np)
        with np.errstate(invalid="ignore"):
            t = np.trunc(x.astype(np.float32))
            return np.where((t >= info.min) & (t < float(info.max) + 1), t, 0).astype(dtype.np)
    if dtype.kind in "iu" and x.dtype.kind == "f":
        # float -> int truncates toward zero; NaN/inf give the C cast's undefined value in numpy,
        # so make it deterministic (0) instead
        with np.errstate(invalid="ignore"):
            x = np.where(np.isfinite(x), x, 0)
    return x.astype(dtype.np)


def _convert_vjp(g, out, x, *, dtype):
    if not _is_float(x) or dtype.kind not in "fc":
        return (None,)
    return (lax.convert(g, x.dtype),)  # complex -> real keeps g's real part


register(Primitive("convert", impl=_convert_impl, abstract=_convert_abstract, vjp=_convert_vjp,
                   lowering=lambda x, *, dtype: E.cast(x, dtype.name), dtype_rule=CUSTOM,
                   kind="elementwise", promote_args=(), half_in_f32=False,
                   dtypes=dt.ALL + dt.COMPLEX + (dt.uint32,)))


def _bitcast_abstract(x: Aval, *, dtype) -> Aval:
    if x.dtype.itemsize != dtype.itemsize:
        from .._core.errors import DTypeError, op_error
        raise op_error(DTypeError, "bitcast", f"{x.dtype.name} and {dtype.name} differ in size")
    return Aval(x.shape, dtype, False)


def _bitcast_impl(x, *, dtype):
    if x.dtype.itemsize != dtype.itemsize:
        raise TypeError("bitcast between dtypes of different sizes")  # -> _bitcast_abstract's error
    return x.view(dtype.np) if x.ndim else x.reshape(1).view(dtype.np).reshape(())


register(Primitive("bitcast", impl=_bitcast_impl,
                   abstract=_bitcast_abstract, dtype_rule=CUSTOM, kind="elementwise", promote_args=(0,),
                   half_in_f32=False, dtypes=dt.ALL + (dt.uint32,),
                   lowering=None))
