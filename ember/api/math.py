"""PyTorch-style math on tensors: elementwise functions, reductions and in-place variants."""
from __future__ import annotations

import builtins
from collections import namedtuple

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from .._core.state import default_dtype
from ..ops import lax
from ..ops.core import P, bind, normalize_axes
from ..tensor import Tensor
from .precision import accumulate_in_float32
from .shape import nonzero


def _t(x):
    """Operand as a Tensor or a Python scalar (numpy values become tensors)."""
    if isinstance(x, (Tensor, bool, int, float, complex)):
        return x
    from ..tensor import as_tensor
    return as_tensor(x)


# ---------------------------------------------------------------- elementwise
def add(input, other, *, alpha=1):
    """input + alpha * other."""
    if alpha != 1:
        other = bind(P.mul, _t(other), alpha)
    return bind(P.add, _t(input), _t(other))


def sub(input, other, *, alpha=1):
    """input - alpha * other."""
    if alpha != 1:
        other = bind(P.mul, _t(other), alpha)
    return bind(P.sub, _t(input), _t(other))


def mul(input, other): return bind(P.mul, _t(input), _t(other))
def div(input, other, *, rounding_mode=None):
    """True division, or 'floor'/'trunc' rounding division."""
    if rounding_mode is None:
        return bind(P.div, _t(input), _t(other))
    if rounding_mode == "floor":
        return bind(P.floordiv, _t(input), _t(other))
    if rounding_mode == "trunc":
        if _is_intlike(input, other) and _result_dtype(input, other).kind in "iu":
            # exact (no round trip through float32, which loses int64 digits): floor division,
            # plus one where the remainder is non-zero and the quotient negative
            a, b = _t(input), _t(other)
            r = bind(P.rem, a, b)
            return bind(P.add, bind(P.floordiv, a, b), lax.bitwise_and(lax.ne(r, 0), lax.ne(lax.lt(r, 0), lax.lt(a, 0))))
        if _is_intlike(input, other):
            return convert(bind(P.trunc, bind(P.div, _t(input), _t(other))), _result_dtype(input, other))
        return _zero_grad(bind(P.trunc, bind(P.div, _detached(input), _detached(other))), input, other)
    raise ValueError(f"rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")


def _detached(x):
    return x.detach() if isinstance(x, Tensor) else _t(x)


def _zero_grad(out: Tensor, *xs) -> Tensor:
    """`out`, differentiable with a zero gradient for the floating tensors among `xs` (PyTorch's
    rule for rounding division: 0 even where the quotient is inf or NaN, so no 0 * inf)."""
    never = None
    for x in xs:
        if isinstance(x, Tensor) and x.requires_grad:
            never = lax.full(out.shape, False, dt.bool_) if never is None else never
            out = lax.select(never, x, out)
    return out


def _is_intlike(*xs):
    return builtins.all((isinstance(x, Tensor) and x.dtype.kind != "f") or isinstance(x, int) for x in xs)


def _result_dtype(*xs):
    return result_type(*xs)


def floor_divide(input, other): return bind(P.floordiv, _t(input), _t(other))
def remainder(input, other): return bind(P.rem, _t(input), _t(other))
def fmod(input, other):
    """C-style remainder (sign of the dividend); d/dx = 1 and d/dy = -trunc(x / y) (PyTorch)."""
    return bind(P.fmod, _t(input), _t(other))


def pow(input, exponent): return bind(P.pow, _t(input), _t(exponent))
def maximum(input, other): return bind(P.max, _t(input), _t(other))
def minimum(input, other): return bind(P.min, _t(input), _t(other))


def fmax(input, other):
    """Elementwise maximum ignoring NaN: NaN only where both are NaN (PyTorch's fmax)."""
    return _nan_ignoring(P.max, input, other)


def fmin(input, other):
    """Elementwise minimum ignoring NaN: NaN only where both are NaN (PyTorch's fmin)."""
    return _nan_ignoring(P.min, input, other)


def _nan_ignoring(prim, input, other):
    # input where it wins, ties included, or where other is NaN; else other. The gradient goes
    # to the operand selected, all of it (PyTorch's fmax/fmin)
    input, other = _t(input), _t(other)
    if result_type(input, other).kind != "f":
        return bind(prim, input, other)
    wins = bind(P.ge if prim is P.max else P.le, input, other)
    return lax.select(lax.bitwise_or(wins, bind(P.isnan, other)), input, other)


def signbit(input):
    """True where the sign bit is set: negative numbers, -0.0 and NaNs with the sign bit."""
    d = input.dtype
    if d.kind == "f":
        return lax.lt(lax.bitcast(input, {2: dt.int16, 4: dt.int32, 8: dt.int64}[d.itemsize]), 0)
    if d.kind == "i":
        return lax.lt(input, 0)
    return lax.full(input.shape, False, dt.bool_)
def atan2(input, other): return bind(P.atan2, _t(input), _t(other))
def logaddexp(input, other): return bind(P.logaddexp, _t(input), _t(other))
def neg(input): return bind(P.neg, input)
def abs(input):
    """|input|; for a complex tensor its modulus (a real tensor)."""
    return bind(P.complex_abs if input.dtype.kind == "c" else P.abs, input)
def sign(input): return bind(P.sign, input)
def exp(input): return bind(P.exp, input)
def log(input): return bind(P.log, input)
def log1p(input): return bind(P.log1p, input)
def expm1(input): return bind(P.expm1, input)
def sqrt(input): return bind(P.sqrt, input)
def rsqrt(input): return bind(P.rsqrt, input)
def sin(input): return bind(P.sin, input)
def cos(input): return bind(P.cos, input)
def tanh(input): return bind(P.tanh, input)
def erf(input): return bind(P.erf, input)
def sigmoid(input): return bind(P.logistic, input)
def floor(input): return bind(P.floor, input)
def ceil(input): return bind(P.ceil, input)
def trunc(input): return bind(P.trunc, input)
def isnan(input): return bind(P.isnan, input)
def log2(input): return mul(log(input), 1.4426950408889634)
def exp2(input): return exp(mul(input, 0.6931471805599453))
def square(input): return mul(input, input)
def reciprocal(input): return div(1, input)
def isinf(input): return eq(abs(input), float("inf")) if input.dtype.kind == "f" else zeros_like_bool(input)
def isfinite(input):
    if input.dtype.kind != "f":
        return lax.full(input.shape, True, dt.bool_)
    return lax.bitwise_not(lax.bitwise_or(isnan(input), isinf(input)))


def zeros_like_bool(x): return lax.full(x.shape, False, dt.bool_)


def round(input, *, decimals: int = 0):
    """Round half to even (optionally to `decimals` places, as PyTorch: scale, round, unscale)."""
    if decimals == 0:
        return bind(P.round, input)
    s = 10.0 ** decimals
    return div(bind(P.round, mul(input, s)), s)


def eq(input, other): return bind(P.eq, _t(input), _t(other))
def ne(input, other): return bind(P.ne, _t(input), _t(other))
def lt(input, other): return bind(P.lt, _t(input), _t(other))
def le(input, other): return bind(P.le, _t(input), _t(other))
def gt(input, other): return bind(P.gt, _t(input), _t(other))
def ge(input, other): return bind(P.ge, _t(input), _t(other))
def logical_not(input): return lax.bitwise_not(convert(input, dt.bool_))
def logical_and(input, other): return lax.bitwise_and(convert(input, dt.bool_), convert(_t(other), dt.bool_))
def logical_or(input, other): return lax.bitwise_or(convert(input, dt.bool_), convert(_t(other), dt.bool_))
def logical_xor(input, other): return lax.bitwise_xor(convert(input, dt.bool_), convert(_t(other), dt.bool_))
def bitwise_and(input, other): return bind(P.bitwise_and, _t(input), _t(other))
def bitwise_or(input, other): return bind(P.bitwise_or, _t(input), _t(other))
def bitwise_xor(input, other): return bind(P.bitwise_xor, _t(input), _t(other))
def bitwise_not(input): return bind(P.bitwise_not, input)


def where(condition, input=None, other=None):
    """Elementwise choice: input where condition is true, else other; where(condition) alone is
    nonzero(condition, as_tuple=True)."""
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    c = _t(condition)
    if c.dtype is not dt.bool_:
        c = convert(c, dt.bool_)
    return bind(P.select, c, _t(input), _t(other))


def clamp(input, min=None, max=None):
    """Limit values to [min, max]; NaN stays NaN; min > max gives max (PyTorch)."""
    if min is None and max is None:
        raise ValueError("clamp needs at least one of min and max")
    out = input
    if min is not None:
        out = _clamp_side(out, _t(min), lax.lt)
    if max is not None:
        out = _clamp_side(out, _t(max), lax.gt)
    return out


def _clamp_side(x, bound, cmp):
    # select keeps NaN of x (the comparison is False) and passes the gradient to the chosen side
    nan_bound = isnan(bound) if isinstance(bound, Tensor) and bound.dtype.kind == "f" else None
    pick_bound = cmp(x, bound)
    if nan_bound is not None:
        pick_bound = lax.bitwise_or(pick_bound, nan_bound)
    return lax.select(pick_bound, bound, x)


clip = clamp


def convert(input, dtype) -> Tensor:
    """Cast to `dtype` (differentiable between floating dtypes)."""
    d = dt.as_dtype(dtype)
    if isinstance(input, Tensor) and input.dtype is d:
        return input
    return bind(P.convert, _t(input), dtype=d)


def result_type(*xs) -> dt.DType:
    """The dtype an elementwise op on these operands produces (ember's promotion table)."""
    strong = [x.dtype for x in xs if isinstance(x, Tensor)]
    weak = [dt.scalar_kind(x) for x in xs if not isinstance(x, Tensor)]
    if not strong:
        return dt.weak_scalar_dtype(builtins.max(weak, key=dt.SCALAR_ORDER.index), default_dtype())
    r = strong[0]
    for d in strong[1:]:
        r = dt.promote_types(r, d)
    for k in weak:
        r = dt.promote_with_scalar(r, k, default_dtype())
    return r


def lerp(input, end, weight): return add(input, mul(weight, sub(end, input)))


# ---------------------------------------------------------------- reductions
_ALL_AXES = [tuple(range(n)) for n in range(33)]


def _axes(x: Tensor, dim, op: str) -> tuple:
    if dim is None:
        return _ALL_AXES[x.ndim]
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if x.ndim == 0:
        for d in dims:
            if d not in (0, -1):
                raise op_error(ShapeError, op, f"dim {d} out of range for a 0-d tensor")
        return ()
    return normalize_axes(op, dims, x.ndim)


def _keep(out: Tensor, x: Tensor, axes: tuple, keepdim: bool) -> Tensor:
    if not keepdim or not axes:
        return out
    return lax.reshape(out, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


def sum(input, dim=None, keepdim: bool = False, *, dtype=None):
    """Sum over `dim` (all dims by default); ints and bools sum in int64."""
    if dim is None and dtype is None and not keepdim:  # the common case, without the checks below
        return bind(P.reduce_sum, input, axes=_ALL_AXES[input._data.ndim])
    if dtype is not None:
        input = convert(input, dtype)
    ax = _axes(input, dim, "sum")
    out = bind(P.reduce_sum, input, axes=ax)
    return _keep(out, input, ax, keepdim) if keepdim else out


def prod(input, dim=None, keepdim: bool = False, *, dtype=None):
    """Product over `dim`."""
    if dtype is not None:
        input = convert(input, dtype)
    ax = _axes(input, dim, "prod")
    return _keep(lax.reduce_prod(input, ax), input, ax, keepdim)


def mean(input, dim=None, keepdim: bool = False, *, dtype=None):
    """Mean over `dim` (floating dtypes only, as in PyTorch)."""
    if dtype is not None:
        input = convert(input, dtype)
    if input.dtype.kind not in "fc":
        raise op_error(DTypeError, "mean", f"mean needs a floating input, got {input.dtype.name}; "
                       "pass dtype=ember.float32")
    return _mean(input, _axes(input, dim, "mean"), keepdim)


@accumulate_in_float32("input")
def _mean(input, ax, keepdim):
    n = int(np.prod([input.shape[a] for a in ax], dtype=np.int64))
    s = lax.reduce_sum(input, ax)
    return _keep(lax.div(s, n) if n else lax.mul(s, float("nan")), input, ax, keepdim)


def amax(input, dim=None, keepdim: bool = False):
    """Maximum over `dim` (NaN propagates)."""
    ax = _axes(input, dim, "amax")
    return _keep(lax.reduce_max(input, ax), input, ax, keepdim)


def amin(input, dim=None, keepdim: bool = False):
    """Minimum over `dim` (NaN propagates)."""
    ax = _axes(input, dim, "amin")
    return _keep(lax.reduce_min(input, ax), input, ax, keepdim)


MaxMin = namedtuple("MaxMin", ["values", "indices"])


def max(input, dim=None, keepdim: bool = False):
    """max(x): the maximum; max(x, dim): (values, indices); max(x, y): elementwise maximum."""
    if isinstance(dim, Tensor):
        return maximum(input, dim)
    if dim is None:
        return amax(input)
    return MaxMin(amax(input, dim, keepdim), argmax(input, dim, keepdim))


def min(input, dim=None, keepdim: bool = False):
    """min(x): the minimum; min(x, dim): (values, indices); min(x, y): elementwise minimum."""
    if isinstance(dim, Tensor):
        return minimum(input, dim)
    if dim is None:
        return amin(input)
    return MaxMin(amin(input, dim, keepdim), argmin(input, dim, keepdim))


def _arg(prim, input, dim, keepdim):
    if dim is None:
        flat = lax.reshape(input, (input.numel(),))
        return bind(prim, flat, axis=0)
    ax = _axes(input, dim, prim.name)
    if not ax:
        return lax.full((), 0, dt.int64)
    out = bind(prim, input, axis=ax[0])
    return _keep(out, input, ax, keepdim)


def argmax(input, dim=None, keepdim: bool = False):
    """Index of the first maximum (NaN counts as the maximum)."""
    return _arg(P.argmax, input, dim, keepdim)


def argmin(input, dim=None, keepdim: bool = False):
    """Index of the first minimum (NaN counts as the minimum)."""
    return _arg(P.argmin, input, dim, keepdim)


def all(input, dim=None, keepdim: bool = False):
    ax = _axes(input, dim, "all")
    return _keep(lax.reduce_and(convert(input, dt.bool_), ax), input, ax, keepdim)


def any(input, dim=None, keepdim: bool = False):
    ax = _axes(input, dim, "any")
    return _keep(lax.reduce_or(convert(input, dt.bool_), ax), input, ax, keepdim)


@accumulate_in_float32("input")
def var(input, dim=None, *, correction=1, keepdim: bool = False, unbiased=None):
    """Variance with Bessel's correction by default (`correction=0` for the biased one)."""
    if unbiased is not None:
        correction = 1 if unbiased else 0
    if correction is None:  # PyTorch: None means the default, 1
        correction = 1
    ax = _axes(input, dim, "var")
    n = int(np.prod([input.shape[a] for a in ax], dtype=np.int64))
    m = mean(input, ax, keepdim=True)
    d = sub(input, m)
    s = lax.reduce_sum(mul(d, d), ax)
    den = builtins.max(n - correction, 0)
    out = lax.div(s, den) if den else lax.mul(s, float("nan"))
    return _keep(out, input, ax, keepdim)


def std(input, dim=None, *, correction=1, keepdim: bool = False, unbiased=None):
    """Standard deviation (square root of `var`)."""
    return sqrt(var(input, dim, correction=correction, keepdim=keepdim, unbiased=unbiased))


@accumulate_in_float32("input")
def logsumexp(input, dim, keepdim: bool = False):
    """log(sum(exp(x))) over `dim`, computed stably (all -inf rows give -inf)."""
    ax = _axes(input, dim, "logsumexp")
    if builtins.any(input.shape[a] == 0 for a in ax):  # log(sum of nothing) = -inf
        return _keep(log(lax.reduce_sum(exp(input), ax)), input, ax, keepdim)
    m = lax.reduce_max(input, ax)
    m = lax.select(isinf(m), lax.zeros_like(m), m)  # -inf/inf rows: shift by 0
    mb = lax.expand_reduced(m, input.shape, ax)
    from .._core.state import no_grad
    with no_grad():
        mb = mb.detach()
        m = m.detach()
    out = lax.add(log(lax.reduce_sum(exp(sub(input, mb)), ax)), m)
    return _keep(out, input, ax, keepdim)


def cumsum(input, dim: int, *, dtype=None):
    """Cumulative sum along `dim`."""
    if dtype is not None:
        input = convert(input, dtype)
    ax = _axes(input, dim, "cumsum")
    if not ax:
        return lax.reshape(lax.cumsum(lax.reshape(input, (1,)), 0), ())
    return lax.cumsum(input, ax[0])


def cumprod(input, dim: int, *, dtype=None):
    """Cumulative product along `dim` (differentiable through zeros, as PyTorch's)."""
    if dtype is not None:
        input = convert(input, dtype)
    ax = _axes(input, dim, "cumprod")
    if not ax:
        return lax.reshape(lax.cumprod(lax.reshape(input, (1,)), 0), ())
    return lax.cumprod(input, ax[0])


def nan_to_num(input, nan: float = 0.0, posinf=None, neginf=None):
    """NaN, +inf and -inf replaced (by default with 0 and the dtype's largest and lowest finite values)."""
    if input.dtype.kind != "f":
        return input
    info = dt.finfo(input.dtype)
    big = info.max if posinf is None else posinf
    low = info.min if neginf is None else neginf
    full = lambda v: lax.full((), v, input.dtype)  # noqa: E731
    out = lax.select(isnan(input), full(nan), input)
    out = lax.select(eq(input, float("inf")), full(big), out)
    return lax.select(eq(input, float("-inf")), full(low), out)


def norm(input, p=2, dim=None, keepdim: bool = False):
    """Vector p-norm over `dim` (all elements by default)."""
    ax = _axes(input, dim, "norm")
    a = abs(input)
    if p == float("inf"):
        return amax(a, ax, keepdim)
    if p == float("-inf"):
        return amin(a, ax, keepdim)
    if p == 0:  # the number of non-zero elements
        return sum(convert(ne(a, 0), a.dtype), ax, keepdim)
    if p == 2:
        return sqrt(sum(mul(a, a), ax, keepdim))
    if p == 1:
        return sum(a, ax, keepdim)
    return pow(sum(pow(a, p), ax, keepdim), 1.0 / p)


def allclose(input, other, rtol=1e-5, atol=1e-8, equal_nan=False) -> bool:
    return bool(np.allclose(np.asarray(input), np.asarray(other), rtol=rtol, atol=atol, equal_nan=equal_nan))


def equal(input, other) -> bool:
    return input.shape == other.shape and bool(np.array_equal(np.asarray(input), np.asarray(other)))


__all__ = [_n for _n, _v in list(globals().items())
           if not _n.startswith("_") and getattr(_v, "__module__", None) == __name__]
