"""Every primitive x every dtype it claims (`Primitive.dtypes`) against a numpy reference.

`CHECKS` holds one checker per registered primitive and `test_every_primitive_has_a_checker`
asserts its keys equal `ember.ops.REGISTRY`'s, so a new primitive without a test fails here.
Each (primitive, dtype) cell runs through the eager interpreter (`prim.bind`) with

- special values: NaN, +-inf, -0.0, subnormals (1e-40 in float32, 2**-24 in float16, ...), .5 ties,
  integer min/max, negative operands for floor division and remainder;
- layouts: contiguous, transposed and strided views (made with ember's `.T` and `[:, ::2]`), stride-0
  broadcasts (`expand`), implicit broadcasting, empty (size-0) dims, size-1 dims and 0-d tensors;

and checks the result dtype against the promotion table recorded from PyTorch
(tests/fixtures/promotion.json) combined with the primitive's dtype rule. References: the exact numpy
op in the compute dtype, or float64 math rounded to the result dtype (through float32 for
float16/bfloat16, which compute in float32 and round once at the op boundary). Where ember follows
PyTorch rather than numpy (max/min ties and signed zeros, sign(NaN), float remainder's zero sign,
argmax on NaN) the reference is written out here.

Dtypes a primitive does not list must raise `ember.DTypeError` ("no kernel for dtype"), and every
elementwise lowering (a scalar `Expr`) must evaluate to what the numpy kernel computes.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import pathlib
import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ember
from ember._core import dtypes as dt
from ember.ops import expr as E
from ember.ops.core import BOOL, FLOAT, INDEX, REGISTRY, SUM
from ember.ops.packed import pack_weight

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # IEEE specials, on purpose

F64 = np.float64
HALF = (dt.float16, dt.bfloat16)
INTERNAL = dt.ALL + (dt.uint32,)
PROMO_JSON = json.loads((pathlib.Path(__file__).parent / "fixtures" / "promotion.json").read_text())
PROMO = {tuple(k.split(",")): v for k, v in PROMO_JSON["pairs"].items()}


def D(name):
    return dt.as_dtype(name)


# ====================================================================== expected dtypes
def promote(*ds):
    """PyTorch's result_type for tensors (recorded in promotion.json); uint32 only meets itself."""
    out = ds[0]
    for d in ds[1:]:
        if dt.uint32 in (out, d):
            assert out is d, "uint32 is internal: it only meets uint32"
            continue
        out = D(PROMO[(out.name, d.name)])
    return out


def expected_dtypes(prim, *ds):
    """(compute, result) dtype of `prim` on operands of dtypes `ds`, or None if unsupported."""
    p = promote(*ds)
    if p not in prim.dtypes:
        return None
    rule = prim.dtype_rule
    if rule == BOOL:
        out = dt.bool_
    elif rule == INDEX:
        out = dt.int64
    elif rule == FLOAT and p.kind != "f":
        out = p = dt.float32
    elif rule == SUM and p.kind != "f":
        out = p = dt.int64
    else:
        out = p
    compute = dt.float32 if (prim.half_in_f32 and p in HALF) else p
    return compute, out


# ====================================================================== values
def specials(d):
    """Edge-case values representable in dtype `d` (1-D numpy array of that dtype)."""
    if d.kind == "f":
        fi = dt.finfo(d)
        sub = {dt.float32: 1e-40, dt.float16: 2.0 ** -24, dt.bfloat16: 1e-40, dt.float64: 5e-324}[d]
        vals = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.75, -3.75, 7.0, -7.0, 100.0,
                1e-3, sub, -sub, float(fi.smallest_subnormal) * 3, float(fi.tiny), float(fi.max),
                -float(fi.max), math.inf, -math.inf, math.nan]
        with np.errstate(all="ignore"):
            return np.array(vals, F64).astype(d.np)
    if d.kind == "b":
        return np.array([False, True, True, False])
    ii = np.iinfo(d.np)
    vals = [0, 1, -1, 2, -2, 3, -3, 7, -7, 100, -100, ii.min, ii.max, ii.min + 1, ii.max - 1]
    return np.array(sorted({v for v in vals if ii.min <= v <= ii.max}, key=vals.index), d.np)


def moderate(d, shape, rng, lo=-4, hi=4):
    """Random values that are exact in every dtype: quarters for floats, small ints otherwise."""
    if d.kind == "f":
        return (rng.integers(lo * 4, hi * 4 + 1, shape) / 4).astype(d.np)
    if d.kind == "b":
        return rng.random(shape) < 0.5
    if d.kind == "u":
        return rng.integers(0, hi + 1, shape).astype(d.np)
    return rng.integers(lo, hi + 1, shape).astype(d.np)


def T(a):
    """An ember tensor holding a copy of numpy array `a` (its dtype kept)."""
    return ember.tensor(np.array(a))


# ====================================================================== comparison
def tol_for(d, ulps):
    eps = float(dt.finfo(d).eps)
    return dict(rtol=ulps * eps, atol=8 * float(dt.finfo(d).smallest_subnormal))


def assert_matches(got, want, out_dt, tol=None, inputs=(), ctx=""):
    """`got` (Tensor) equals `want` (ndarray): dtype, shape, and values (exact incl. signed zeros
    unless `tol` gives rtol/atol; NaN positions and infinities always exact)."""
    assert got.dtype is out_dt, f"{ctx}: dtype {got.dtype.name}, expected {out_dt.name}"
    g = got.numpy()
    want = np.asarray(want)
    assert g.shape == want.shape, f"{ctx}: shape {g.shape}, expected {want.shape}"
    assert g.dtype == out_dt.np, f"{ctx}: numpy dtype {g.dtype} for {out_dt.name}"
    want = want.astype(out_dt.np)
    if out_dt.kind != "f":
        bad = g != want
    else:
        g64, w64 = g.astype(F64), want.astype(F64)
        gn, wn = np.isnan(g64), np.isnan(w64)
        bad = gn != wn
        both = ~gn & ~wn
        if tol is None:
            bad |= both & ((g64 != w64) | (np.signbit(g64) != np.signbit(w64)))
        else:
            fin = both & np.isfinite(w64)
            bad |= both & ~np.isfinite(w64) & (g64 != w64)
            with np.errstate(all="ignore"):
                bad |= fin & ~(np.abs(g64 - w64) <= tol["atol"] + tol["rtol"] * np.abs(w64))
    if np.any(bad):
        idx = np.argwhere(np.broadcast_to(bad, g.shape))[:6]
        lines = []
        for i in map(tuple, idx):
            ins = [np.broadcast_to(np.asarray(a), g.shape)[i] if np.ndim(a) else a for a in inputs]
            lines.append(f"  at {i}: inputs {ins!r} -> got {g[i]!r}, want {want[i]!r}")
        raise AssertionError(f"{ctx}: {int(np.sum(bad))} of {g.size} elements differ\n" + "\n".join(lines))


def _bits(a):
    """The raw bits of an array (bool as is), to compare NaN payloads and signed zeros exactly."""
    a = np.array(a, order="C")
    if a.dtype.kind == "b":
        return a
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _is_float(a):
    return a.dtype.kind == "f" or a.dtype == ml_dtypes.bfloat16


def assert_bitwise(got, want, out_dt, ctx=""):
    """Exactly the same bits (shape ops move data and must not touch it: NaN payloads, -0.0)."""
    assert got.dtype is out_dt, f"{ctx}: dtype {got.dtype.name}, expected {out_dt.name}"
    g = got.numpy()
    want = np.asarray(want).astype(out_dt.np)
    assert g.shape == want.shape, f"{ctx}: shape {g.shape}, expected {want.shape}"
    np.testing.assert_array_equal(_bits(g), _bits(want), err_msg=ctx)


def no_kernel(fn):
    with pytest.raises(ember.DTypeError, match="no kernel for dtype"):
        fn()


# ====================================================================== layouts
def layout(arr, how):
    """An ember tensor with the values of `arr` (2-D or more) in a given memory layout."""
    if how == "contig":
        t = T(arr)
    elif how == "transposed":
        t = T(np.ascontiguousarray(arr.T)).T
    elif how == "strided":
        big = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), arr.dtype)
        big[..., ::2] = arr
        t = T(big)[..., ::2]
    else:
        raise ValueError(how)
    if how != "contig" and arr.size > 1 and sum(s > 1 for s in arr.shape) >= 2:
        assert not t.is_contiguous(), f"{how} layout is contiguous: the test would be vacuous"
    np.testing.assert_array_equal(_bits(t.numpy()), _bits(arr))
    return t


def operand_sets(cols):
    """(label, numpy operands, ember operands) for elementwise ops; cols[i] is the value set of
    operand i. Operand 0 runs down the rows, operand 1 along the columns (every pair meets),
    operand 2 (select's) follows a checkerboard."""
    n = len(cols)
    grids = []
    for i, c in enumerate(cols):
        shape = [1] * 2
        shape[min(i, 1)] = len(c)
        grids.append(c.reshape(shape) if i < 2 else c)
    full_shape = (len(cols[0]), len(cols[1]) if n > 1 else 2)
    full = [np.ascontiguousarray(np.broadcast_to(g if i < 2 else np.resize(g, full_shape), full_shape))
            for i, g in enumerate(grids)]
    out = []
    for how in ("contig", "transposed", "strided"):
        out.append((how, full, [layout(a, how) for a in full]))
    if n > 1:  # implicit broadcasting: (n, 1) op (1, m) [op (n, m)]
        imp = [grids[0], grids[1]] + full[2:]
        out.append(("broadcast", imp, [T(a) for a in imp]))
    # stride-0 views made by ember's expand
    exp_np = [np.broadcast_to(a[:1], (3,) + a.shape[1:]) for a in full]
    exp_t = [T(a[:1]).expand(3, *a.shape[1:]) for a in full]
    for t in exp_t:
        assert t.stride(0) == 0
    out.append(("expand", exp_np, exp_t))
    out.append(("empty_rows", [a[:0] for a in full], [T(a[:0]) for a in full]))
    out.append(("empty_cols", [a[:, :0] for a in full], [T(a[:, :0]) for a in full]))
    out.append(("size1", [a[1:2, 1:2] for a in full], [T(a[1:2, 1:2]) for a in full]))
    zd = [a[2, 0] if i == 0 else a[0] for i, a in enumerate(full)]  # 0-d first operand, 1-d others
    out.append(("0d", [np.asarray(zd[0])] + zd[1:], [T(np.asarray(zd[0]))] + [T(z) for z in zd[1:]]))
    return out


# ====================================================================== references
def torch_sign(x):
    if x.dtype == np.bool_:
        return x.copy()
    with np.errstate(invalid="ignore"):
        return ((x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)).astype(x.dtype)


def torch_rem(x, y):
    """PyTorch's remainder: fmod, moved into the divisor's sign (so a zero keeps the dividend's)."""
    if x.dtype.kind in "iub":
        return np.remainder(x, y)
    m = np.fmod(x, y)
    return np.where((m != 0) & ((m < 0) != (y < 0)), m + y, m)


def torch_max(x, y):
    """maximum that propagates NaN and keeps the first operand on ties (-0.0 vs 0.0)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(y) if y.dtype.kind == "f" else False, y, np.where(y > x, y, x))


def torch_min(x, y):
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(y) if y.dtype.kind == "f" else False, y, np.where(y < x, y, x))


def _erf64(x):
    return np.vectorize(math.erf, otypes=[F64])(x) if x.size else x.astype(F64)


def _logistic64(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


class EW:
    """An elementwise primitive's reference: `fn` on numpy operands; `mode` 'exact' runs fn in the
    compute dtype, 'f64' in float64 (rounded to the compute, then the result dtype); `ulps` is the
    tolerance (None: exact incl. signed zeros); `cols(i, d)` restricts operand i's values."""

    def __init__(self, fn, mode="exact", ulps=None, cols=None):
        self.fn, self.mode, self.ulps, self._cols = fn, mode, ulps, cols

    def cols(self, i, d):
        v = specials(d)
        return self._cols(i, d, v) if self._cols else v


def ew_reference(prim, spec, arrays, compute, out):
    with np.errstate(all="ignore"):
        if compute.kind == "f" and spec.mode == "f64":
            r = np.asarray(spec.fn(*[a.astype(compute.np).astype(F64) for a in arrays]))
            if r.dtype != np.bool_:
                r = r.astype(compute.np)
        else:
            r = np.asarray(spec.fn(*[a.astype(compute.np) for a in arrays]))
        return r.astype(out.np)


def _nonzero_divisor(i, d, v):
    return v[v != 0] if (i == 1 and d.kind in "iu") else v


def _pow_cols(i, d, v):
    if i == 1 and d.kind in "iu":  # non-negative: integer ** negative integer is not defined here
        return np.array([0, 1, 2, 3, 5, 7, 8, 63, 100], d.np)
    return v


def _shift_cols(i, d, v):
    if i == 1:
        return np.array([0, 1, 2, 3, d.bits - 1, d.bits, d.bits + 1], np.int64).astype(d.np)
    return v


def _ints_kept(fn):
    """Rounding functions leave integers (and bools) as they are."""
    return lambda x: x.copy() if x.dtype.kind in "iub" else fn(x)


UNARY = {
    "neg": EW(np.negative), "abs": EW(np.abs), "sign": EW(torch_sign),
    "exp": EW(np.exp, "f64", 4), "log": EW(np.log, "f64", 4), "log1p": EW(np.log1p, "f64", 4),
    "expm1": EW(np.expm1, "f64", 4), "sqrt": EW(np.sqrt, "f64"), "rsqrt": EW(lambda x: 1 / np.sqrt(x), "f64", 2),
    "sin": EW(np.sin, "f64", 4), "cos": EW(np.cos, "f64", 4), "tanh": EW(np.tanh, "f64", 4),
    "erf": EW(_erf64, "f64", 2), "logistic": EW(_logistic64, "f64", 4),
    "floor": EW(_ints_kept(np.floor)), "ceil": EW(_ints_kept(np.ceil)), "round": EW(_ints_kept(np.rint)),
    "trunc": EW(_ints_kept(np.trunc)),
    "isnan": EW(np.isnan), "bitwise_not": EW(np.invert),
}
BINARY = {
    "add": EW(np.add, "f64"), "sub": EW(np.subtract, "f64"), "mul": EW(np.multiply, "f64"),
    "div": EW(np.true_divide, "f64"),
    "floordiv": EW(np.floor_divide, cols=_nonzero_divisor), "rem": EW(torch_rem, "f64", cols=_nonzero_divisor),
    "fmod": EW(np.fmod, "f64", cols=_nonzero_divisor),
    "pow": EW(np.power, "f64", 4, cols=_pow_cols), "max": EW(torch_max), "min": EW(torch_min),
    "atan2": EW(np.arctan2, "f64", 4),
    "logaddexp": EW(np.logaddexp, "f64", 4),
    "eq": EW(np.equal), "ne": EW(np.not_equal), "lt": EW(np.less), "le": EW(np.less_equal),
    "gt": EW(np.greater), "ge": EW(np.greater_equal),
    "bitwise_and": EW(np.bitwise_and), "bitwise_or": EW(np.bitwise_or), "bitwise_xor": EW(np.bitwise_xor),
    "shift_left": EW(np.left_shift, cols=_shift_cols), "shift_right": EW(np.right_shift, cols=_shift_cols),
}


def check_elementwise(name, d):
    prim, spec = REGISTRY[name], {**UNARY, **BINARY}[name]
    arity = 1 if name in UNARY else 2
    cols = [spec.cols(i, d) for i in range(arity)]
    compute, out = expected_dtypes(prim, *([d] * arity))
    tol = tol_for(out, spec.ulps) if spec.ulps and out.kind == "f" else None
    for how, arrays, tensors in operand_sets(cols):
        got = prim.bind(*tensors)
        want = ew_reference(prim, spec, arrays, compute, out)
        assert_matches(got, want, out, tol, arrays, f"{name}[{d.name}, {how}]")


def check_select(name, d):
    prim = REGISTRY[name]
    v = specials(d)
    cond = np.array([True, False, False, True, True])
    for how, (x, y, c), (tx, ty, tc) in operand_sets([v, v[::-1].copy(), cond]):
        got = prim.bind(tc, tx, ty)
        assert_matches(got, np.where(c, x, y), d, None, (c, x, y), f"select[{d.name}, {how}]")
    # mixed dtypes promote; Python scalars are weak
    for other in dt.ALL:
        want_dt = promote(d, other)
        w = np.resize(specials(other), 5)
        got = prim.bind(T(cond), T(np.resize(v, 5)), T(w))
        assert got.dtype is want_dt
        assert_matches(got, np.where(cond, np.resize(v, 5).astype(want_dt.np), w.astype(want_dt.np)),
                       want_dt, None, (), f"select[{d.name}, {other.name}]")
    with pytest.raises(ember.DTypeError, match="condition must be bool"):
        prim.bind(T(cond.astype(np.int8)), T(v[:5]), T(v[:5]))


def _convert_ok(src, dst, v):
    """Values of `v` whose conversion to `dst` is defined (float -> int: in range, or NaN/inf -> 0)."""
    if src.kind == "f" and dst.kind in "iu":
        info = np.iinfo(dst.np)
        with np.errstate(invalid="ignore"):
            t = np.trunc(v.astype(F64))
        return v[~np.isfinite(t) | ((t >= info.min) & (t <= info.max))]
    return v


def check_convert(name, d):
    prim = REGISTRY[name]
    base = specials(d) if d is not dt.uint32 else np.array([0, 1, 7, 2 ** 31, 2 ** 32 - 1, 255, 256], np.uint32)
    for dst in INTERNAL:
        v = _convert_ok(d, dst, base)
        with np.errstate(all="ignore"):
            want = v.astype(dst.np) if not (d.kind == "f" and dst.kind in "iu") else \
                np.where(np.isfinite(v.astype(F64)), v.astype(F64), 0).astype(dst.np)
        a = np.stack([v, v[::-1]])
        for how in ("contig", "transposed", "strided"):
            got = prim.bind(layout(a, how), dtype=dst)
            assert_matches(got, np.stack([want, want[::-1]]), dst, None, (a,), f"convert[{d.name}->{dst.name}, {how}]")
        got = prim.bind(T(v[:0]), dtype=dst)
        assert got.shape == (0,) and got.dtype is dst
        got = prim.bind(T(v[3]), dtype=dst)
        assert_matches(got, want[3], dst, None, (), f"convert[{d.name}->{dst.name}, 0d]")


def check_bitcast(name, d):
    prim = REGISTRY[name]
    v = specials(d) if d is not dt.uint32 else np.array([0, 1, 7, 2 ** 31, 2 ** 32 - 1], np.uint32)
    a = np.stack([v, v[::-1]])
    for dst in INTERNAL:
        if dst.itemsize != d.itemsize:
            with pytest.raises(ember.DTypeError, match="differ in size"):
                prim.bind(T(a), dtype=dst)
            continue
        for how in ("contig", "transposed", "strided"):
            got = prim.bind(layout(a, how), dtype=dst)
            assert_bitwise(got, a.view(dst.np), dst, f"bitcast[{d.name}->{dst.name}, {how}]")
        assert_bitwise(prim.bind(T(v[2]), dtype=dst), v[2:3].view(dst.np).reshape(()), dst, "bitcast 0d")
        assert prim.bind(T(a[:, :0]), dtype=dst).shape == (2, 0)


# ====================================================================== reductions
def reduction_input(d, rng, kind="sum"):
    """(3, 4, 5) values with special rows: NaN, +-inf, signed-zero ties, subnormals, extremes."""
    x = moderate(d, (3, 4, 5), rng)
    if kind == "prod" and d.kind == "f":
        x = rng.choice(np.array([-2, -1, -0.5, 0.5, 1, 2, 0.25, -0.0], F64), (3, 4, 5)).astype(d.np)
    if d.kind == "f":
        x[0, 0, 2] = np.nan
        x[1, 1, 0], x[1, 1, 3] = np.inf, -np.inf
        x[1, 2, 4] = np.inf
        x[2, 0] = np.array([-0.0, 0.0, -0.0, 0.0, -0.0]).astype(d.np)
        x[2, 1] = np.array([0.0, -0.0, -0.0, 0.0, 0.0]).astype(d.np)
        if kind != "prod":
            x[2, 2] = (float(dt.finfo(d).smallest_subnormal) * np.array([1, 2, 3, 1, 1])).astype(d.np)
        x[0, 3, 1] = np.nan
        x[0, 3, 3] = np.nan
    elif d.kind in "iu":
        ii = np.iinfo(d.np)
        x[2, 3] = np.array([ii.max, ii.min, ii.max, 0, ii.min], np.int64).astype(d.np) if kind != "prod" \
            else x[2, 3]
    return x


def _moveaxes_last(x, axes):
    rest = [i for i in range(x.ndim) if i not in axes]
    return np.transpose(x, rest + list(axes)).reshape([x.shape[i] for i in rest] + [-1])


def ref_extreme(x, axes, greater):
    """First-occurrence extreme along the flattened `axes` (NaN wins, ties keep the first)."""
    flat = _moveaxes_last(x, axes)
    out = np.empty(flat.shape[:-1], x.dtype)
    for i in np.ndindex(out.shape):
        row = flat[i]
        best = row[0]
        for v in row[1:]:
            if best != best:
                break
            if v != v or (v > best if greater else v < best):
                best = v
        out[i] = best
    return out


def ref_arg(x, axis, greater):
    flat = np.moveaxis(x, axis, -1)
    out = np.empty(flat.shape[:-1], np.int64)
    for i in np.ndindex(out.shape):
        row = flat[i]
        k = 0
        for j in range(1, row.size):
            b, v = row[k], row[j]
            if b != b:
                break
            if v != v or (v > b if greater else v < b):
                k = j
        out[i] = k
    return out


def _axes_sets(ndim):
    return [()] + [(i,) for i in range(ndim)] + [c for r in (2, 3) for c in itertools.combinations(range(ndim), r)]


def _reduce_cases(x):
    """(label, numpy input, ember input) for a 3-D array in several layouts."""
    cases = [("contig", x, T(x))]
    xt = np.ascontiguousarray(np.transpose(x, (2, 0, 1)))
    t = ember.tensor(xt).permute(1, 2, 0)
    assert not t.is_contiguous()
    cases.append(("permuted", x, t))
    big = np.concatenate([x, x], axis=1)
    t = T(big)[:, ::2]
    cases.append(("strided", big[:, ::2], t))
    t = T(x[:1]).expand(2, *x.shape[1:])
    cases.append(("expand", np.broadcast_to(x[:1], (2,) + x.shape[1:]), t))
    cases.append(("size1", x[:1, 1:2], T(x[:1, 1:2])))
    return cases


REDUCE_REF = {
    "reduce_sum": lambda x, ax, c: np.sum(x.astype(c), axis=ax, dtype=c),
    "reduce_prod": lambda x, ax, c: np.prod(x.astype(c), axis=ax, dtype=c),
    "reduce_and": lambda x, ax, c: np.all(x != 0, axis=ax),
    "reduce_or": lambda x, ax, c: np.any(x != 0, axis=ax),
    "reduce_max": lambda x, ax, c: ref_extreme(x, ax, True) if _is_float(x) else np.max(x, axis=ax),
    "reduce_min": lambda x, ax, c: ref_extreme(x, ax, False) if _is_float(x) else np.min(x, axis=ax),
}


def check_reduce(name, d):
    prim = REGISTRY[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}-{d.name}".encode()))  # deterministic per cell
    compute, out = expected_dtypes(prim, d)
    x0 = reduction_input(d, rng, "prod" if name == "reduce_prod" else "sum")
    ref = REDUCE_REF[name]
    for how, x, t in _reduce_cases(x0):
        for ax in _axes_sets(x.ndim):
            if name in ("reduce_max", "reduce_min") and any(x.shape[a] == 0 for a in ax):
                continue
            with np.errstate(all="ignore"):
                # sums of quarters and products of powers of two are exact in float32: compare exactly
                want = np.asarray(ref(x.astype(F64) if compute.kind == "f" and name in ("reduce_sum", "reduce_prod")
                                      else x, ax, F64 if compute.kind == "f" else compute.np))
                want = want.astype(compute.np).astype(out.np)
            got = prim.bind(t, axes=ax)
            assert_matches(got, want, out, None, (), f"{name}[{d.name}, {how}, axes={ax}]")
    # 0-d input, and empty dims: identities for sum/prod/and/or, an error for max/min
    z = T(x0[0, 0, 0])
    assert_matches(prim.bind(z, axes=()), np.asarray(ref(x0[0, 0, 0:1], (0,), compute.np)).reshape(()).astype(out.np)
                   if name not in ("reduce_max", "reduce_min") else x0[0, 0, 0], out, None, (), f"{name} 0-d")
    e = x0[:, :0]
    te = T(e)
    if name in ("reduce_max", "reduce_min"):
        with pytest.raises(ember.ShapeError, match="empty"):
            prim.bind(te, axes=(1,))
        assert prim.bind(te, axes=(0,)).shape == (0, 5)
    else:
        ident = {"reduce_sum": 0, "reduce_prod": 1, "reduce_and": True, "reduce_or": False}[name]
        assert_matches(prim.bind(te, axes=(1,)), np.full((3, 5), ident).astype(out.np), out, None, (), f"{name} empty")
        assert_matches(prim.bind(te, axes=(0, 1, 2)), np.asarray(ident).astype(out.np), out, None, (), f"{name} empty all")
        assert prim.bind(te, axes=(0, 2)).shape == (0,)
    with pytest.raises(ember.ShapeError):
        prim.bind(T(x0), axes=(3,))
    if name == "reduce_sum" and d in HALF:
        long_half_sum_check(lambda t: prim.bind(t, axes=(0,)), d, cumulative=False)


def long_half_sum_check(fn, d, cumulative):
    """float16/bfloat16 accumulate in float32 and round once: 3000 x (1 + 1 ulp) sums exactly in
    float32, while accumulating in the half dtype would drop the ulps (and stall)."""
    one_up = float(np.nextafter(np.array(1.0, d.np), np.array(2.0, d.np)))
    x = np.full(3000, one_up, F64)
    want = (np.cumsum(x) if cumulative else np.sum(x)).astype(np.float32).astype(d.np)
    assert_matches(fn(T(x.astype(d.np))), want, d, None, (), f"long {d.name} sum")


def check_arg(name, d):
    prim = REGISTRY[name]
    rng = np.random.default_rng(7)
    x0 = reduction_input(d, rng)
    if d.kind == "f":  # NaN first in one row, later in another; ties everywhere
        x0[1, 3] = np.array([1.0, np.nan, 1.0, np.nan, 2.0]).astype(d.np)
    greater = name == "argmax"
    for how, x, t in _reduce_cases(x0):
        for axis in range(x.ndim):
            got = prim.bind(t, axis=axis)
            assert_matches(got, ref_arg(x, axis, greater), dt.int64, None, (), f"{name}[{d.name}, {how}, axis={axis}]")
    assert_matches(prim.bind(T(x0[0, 0, 0]), axis=0), np.int64(0), dt.int64, None, (), f"{name} 0-d")
    with pytest.raises(ember.ShapeError, match="empty"):
        prim.bind(T(x0[:, :0]), axis=1)
    assert prim.bind(T(x0[:, :0]), axis=0).shape == (0, 5)


def check_cumsum(name, d):
    prim = REGISTRY[name]
    compute, out = expected_dtypes(prim, d)
    x0 = reduction_input(d, np.random.default_rng(3))
    for how, x, t in _reduce_cases(x0):
        for axis in range(x.ndim):
            for reverse in (False, True):
                xs = np.flip(x, axis) if reverse else x
                with np.errstate(all="ignore"):
                    w = np.cumsum(xs.astype(F64 if compute.kind == "f" else compute.np), axis=axis)
                w = np.flip(w, axis) if reverse else w
                want = w.astype(compute.np).astype(out.np)
                got = prim.bind(t, axis=axis, reverse=reverse)
                assert_matches(got, want, out, None, (), f"cumsum[{d.name}, {how}, axis={axis}, rev={reverse}]")
    if d in HALF:
        long_half_sum_check(lambda t: prim.bind(t, axis=0, reverse=False), d, cumulative=True)
    e = T(x0[:, :0])
    assert prim.bind(e, axis=1, reverse=False).shape == (3, 0, 5)
    assert prim.bind(e, axis=1, reverse=False).dtype is out
    assert_matches(prim.bind(T(x0[0, 0, 1]), axis=0, reverse=False),
                   np.asarray(x0[0, 0, 1]).astype(compute.np).astype(out.np), out, None, (), "cumsum 0-d")


def check_cumprod(name, d):
    """Products of powers of two (exact in every dtype, so compared exactly), with NaN, +-inf and
    signed zeros: 0 * inf is NaN and the sign of a zero product follows its factors."""
    prim = REGISTRY[name]
    compute, out = expected_dtypes(prim, d)
    x0 = reduction_input(d, np.random.default_rng(4), "prod")
    for how, x, t in _reduce_cases(x0):
        for axis in range(x.ndim):
            for reverse in (False, True):
                xs = np.flip(x, axis) if reverse else x
                with np.errstate(all="ignore"):
                    w = np.cumprod(xs.astype(F64 if compute.kind == "f" else compute.np), axis=axis)
                w = np.flip(w, axis) if reverse else w
                want = w.astype(compute.np).astype(out.np)
                got = prim.bind(t, axis=axis, reverse=reverse)
                assert_matches(got, want, out, None, (), f"cumprod[{d.name}, {how}, axis={axis}, rev={reverse}]")
    if d.kind in "iu":  # integer products are int64 (as PyTorch's), wrapping on overflow like numpy's
        big = np.array([np.iinfo(d.np).max] * 3 + [-1 if d.kind == "i" else 1] * 2, d.np)
        with np.errstate(all="ignore"):
            want = np.cumprod(big.astype(np.int64))
        assert_matches(prim.bind(T(big), axis=0, reverse=False), want, out, None, (), f"cumprod[{d.name}] wraps")
    e = T(x0[:, :0])
    assert prim.bind(e, axis=1, reverse=True).shape == (3, 0, 5)
    assert prim.bind(e, axis=0, reverse=False).dtype is out
    assert_matches(prim.bind(T(x0[0, 0, 1]), axis=0, reverse=False),
                   np.asarray(x0[0, 0, 1]).astype(compute.np).astype(out.np), out, None, (), "cumprod 0-d")
    with pytest.raises(ember.ShapeError, match="out of range"):
        prim.bind(T(x0), axis=3, reverse=False)


# ====================================================================== sorting
def _order_key(v, descending):
    """PyTorch's order of one value: NaN after +inf ascending (first when descending); -0.0 == 0.0."""
    v = float(v) if not isinstance(v, (bool, np.bool_)) else int(v)
    nan = v != v
    if descending:
        return (0, 0.0) if nan else (1, -v)
    return (1, 0.0) if nan else (0, v)


def ref_argsort(x, axis, descending):
    """A stable sort of every row along `axis` written out (ties keep their input order)."""
    rows = np.moveaxis(x, axis, -1)
    out = np.empty(rows.shape, np.int64)
    for i in np.ndindex(rows.shape[:-1]):
        row = rows[i].tolist() if x.dtype.kind in "iub" else rows[i].astype(F64).tolist()
        out[i] = sorted(range(len(row)), key=lambda j: _order_key(row[j], descending))
    return np.moveaxis(out, -1, axis)


def check_argsort(name, d):
    prim = REGISTRY[name]
    x0 = reduction_input(d, np.random.default_rng(37))
    if d.kind == "f":  # NaN first in one row, ties and signed zeros in others
        x0[1, 3] = np.array([1.0, np.nan, -0.0, np.nan, 0.0]).astype(d.np)
    for how, x, t in _reduce_cases(x0):
        for axis in range(x.ndim):
            for descending in (False, True):
                want = ref_argsort(x, axis, descending)
                got = prim.bind(t, axis=axis, descending=descending, stable=True)
                assert_matches(got, want, dt.int64, None, (), f"argsort[{d.name}, {how}, axis={axis}, "
                               f"desc={descending}]")
                # unstable: any order of the ties, but the same sorted values
                idx = prim.bind(t, axis=axis, descending=descending, stable=False).numpy()
                assert np.array_equal(np.sort(idx, axis), np.broadcast_to(
                    np.arange(x.shape[axis]).reshape([-1 if k == axis else 1 for k in range(x.ndim)]), x.shape))
                sx, sw = np.take_along_axis(x, idx, axis), np.take_along_axis(x, want, axis)
                if _is_float(x):
                    sx, sw = sx.astype(F64), sw.astype(F64)
                np.testing.assert_array_equal(sx, sw, err_msg=f"argsort[{d.name}] stable=False")
    assert_matches(prim.bind(T(x0[0, 0, 0]), axis=0, descending=False, stable=True), np.int64(0), dt.int64, None, (),
                   "argsort 0-d")
    e = prim.bind(T(x0[:, :0]), axis=1, descending=True, stable=True)
    assert e.shape == (3, 0, 5) and e.dtype is dt.int64
    with pytest.raises(ember.ShapeError, match="out of range"):
        prim.bind(T(x0), axis=3, descending=False, stable=True)


def check_searchsorted(name, d):
    """Insertion points into sorted rows (duplicates, signed zeros, +-inf, NaN last), both sides."""
    prim = REGISTRY[name]
    v = specials(d)
    seq = np.sort(np.concatenate([v, v[:5], v[:3]]))  # repeats; numpy's sort puts NaN last
    wide = F64 if _is_float(v) else np.int64  # exact for every dtype here
    vals = np.stack([v, v[::-1]])
    for right in (False, True):
        side = "right" if right else "left"
        want = np.searchsorted(seq.astype(wide), vals.astype(wide), side=side)
        for how in ("contig", "transposed", "strided"):
            got = prim.bind(T(seq), layout(vals, how), right=right)
            assert_matches(got, want, dt.int64, None, (), f"searchsorted[{d.name}, {how}, right={right}]")
        # rows: a batch of sorted sequences, each searched with its own values
        rows = np.stack([seq, np.sort(np.resize(v[::-1], seq.shape))])
        want2 = np.stack([np.searchsorted(r.astype(wide), q.astype(wide), side=side) for r, q in zip(rows, vals)])
        for how in ("contig", "strided"):
            got = prim.bind(layout(rows, how), layout(vals, how), right=right)
            assert_matches(got, want2, dt.int64, None, (), f"searchsorted[{d.name}, rows, {how}, right={right}]")
        assert_matches(prim.bind(T(seq), T(v[3]), right=right), np.searchsorted(seq.astype(wide), v[3].astype(wide),
                       side=side), dt.int64, None, (), "searchsorted 0-d value")
        assert_matches(prim.bind(T(seq[:0]), T(v), right=right), np.zeros(v.shape, np.int64), dt.int64, None, (),
                       "searchsorted into an empty sequence")
        assert prim.bind(T(seq), T(v[:0]), right=right).shape == (0,)
        assert prim.bind(T(rows[:0]), T(vals[:0]), right=right).shape == (0, vals.shape[1])
        # (empty rows, (2, 0): test_searchsorted_empty_rows)
    with pytest.raises(ember.ShapeError, match="at least one dimension"):
        prim.bind(T(v[0]), T(v), right=False)
    with pytest.raises(ember.ShapeError, match="must agree"):
        prim.bind(T(np.stack([seq, seq])), T(v[:4]), right=False)


@pytest.mark.parametrize("seq,vals", [((2, 0), (2, 3)), ((2, 3), (2, 0)), ((2, 0), (2, 0))])
def test_searchsorted_empty_rows(seq, vals):
    """A batch of empty sequences (every insertion point 0), or no values to place."""
    got = REGISTRY["searchsorted"].bind(T(np.zeros(seq, np.float32)), T(np.zeros(vals, np.float32)), right=False)
    assert_matches(got, np.zeros(vals, np.int64), dt.int64, None, (), "searchsorted empty rows")


# ====================================================================== shape primitives
def shape_values(d, shape):
    v = specials(d) if d is not dt.uint32 else np.array([0, 1, 7, 2 ** 31, 2 ** 32 - 1], np.uint32)
    return np.resize(v, shape)


def _shape_inputs(d):
    """(label, numpy, ember) for a (3, 4) array: contiguous, transposed and strided views."""
    a = shape_values(d, (3, 4))
    return [(how, a, layout(a, how)) for how in ("contig", "transposed", "strided")]


def check_reshape(name, d):
    prim = REGISTRY[name]
    for how, a, t in _shape_inputs(d):
        for shape in ((12,), (2, 6), (4, 1, 3), (1, 12, 1)):
            assert_bitwise(prim.bind(t, shape=shape), a.reshape(shape), d, f"reshape[{d.name}, {how}, {shape}]")
    assert_bitwise(prim.bind(T(shape_values(d, (0, 3))), shape=(3, 0, 2)), np.zeros((3, 0, 2), d.np), d, "reshape empty")
    assert_bitwise(prim.bind(T(shape_values(d, ())), shape=(1, 1)), shape_values(d, ()).reshape(1, 1), d, "reshape 0d")
    with pytest.raises(ember.ShapeError):
        prim.bind(T(shape_values(d, (3, 4))), shape=(5,))


def check_broadcast_in_dim(name, d):
    prim = REGISTRY[name]
    for how, a, t in _shape_inputs(d):
        for shape, dims in (((2, 3, 4), (1, 2)), ((3, 5, 4), (0, 2)), ((3, 4), (0, 1))):
            want = np.broadcast_to(a.reshape([a.shape[dims.index(i)] if i in dims else 1 for i in range(len(shape))]), shape)
            assert_bitwise(prim.bind(t, shape=shape, dims=dims), want, d, f"broadcast_in_dim[{d.name}, {how}, {shape}]")
    col = shape_values(d, (3, 1))
    assert_bitwise(prim.bind(T(col), shape=(3, 0), dims=(0, 1)), np.zeros((3, 0), d.np), d, "bid to empty")
    assert_bitwise(prim.bind(T(col), shape=(2, 3, 6), dims=(1, 2)), np.broadcast_to(col, (2, 3, 6)), d, "bid size-1")
    assert_bitwise(prim.bind(T(col[0, 0]), shape=(2, 2), dims=()), np.full((2, 2), col[0, 0]), d, "bid 0d")
    with pytest.raises(ember.ShapeError):
        prim.bind(T(col), shape=(4, 2), dims=(0, 1))


def check_transpose(name, d):
    prim = REGISTRY[name]
    for how, a, t in _shape_inputs(d):
        assert_bitwise(prim.bind(t, perm=(1, 0)), a.T, d, f"transpose[{d.name}, {how}]")
        assert_bitwise(prim.bind(t, perm=(0, 1)), a, d, f"transpose id[{d.name}, {how}]")
    b = shape_values(d, (2, 0, 3))
    assert_bitwise(prim.bind(T(b), perm=(2, 0, 1)), np.transpose(b, (2, 0, 1)), d, "transpose empty")
    c = shape_values(d, (2, 3, 4))
    assert_bitwise(prim.bind(T(c), perm=(1, 2, 0)), np.transpose(c, (1, 2, 0)), d, "transpose 3d")
    with pytest.raises(ember.ShapeError):
        prim.bind(T(c), perm=(0, 0, 1))


def check_slice(name, d):
    prim = REGISTRY[name]
    for how, a, t in _shape_inputs(d):
        for start, stop, step in (((0, 0), (3, 4), (1, 1)), ((1, 0), (3, 4), (1, 2)), ((0, 1), (3, 4), (2, 3)),
                                  ((2, 2), (2, 4), (1, 1)), ((0, 3), (3, 4), (5, 5))):
            want = a[tuple(slice(*s) for s in zip(start, stop, step))]
            got = prim.bind(t, start=start, stop=stop, step=step)
            assert_bitwise(got, want, d, f"slice[{d.name}, {how}, {start}:{stop}:{step}]")
    with pytest.raises(ember.ShapeError):
        prim.bind(T(shape_values(d, (3, 4))), start=(0, 0), stop=(4, 4), step=(1, 1))


def ref_pad(x, value, config):
    """Independent pad: interior holes, then edge padding, negative amounts crop."""
    out = x
    for ax, (lo, hi, it) in enumerate(config):
        n = out.shape[ax]
        m = n + max(n - 1, 0) * it
        shape = list(out.shape)
        shape[ax] = m
        grown = np.full(shape, value, x.dtype)
        idx = [slice(None)] * out.ndim
        idx[ax] = slice(0, m, it + 1)
        grown[tuple(idx)] = out
        parts = []
        if lo > 0:
            s = list(shape)
            s[ax] = lo
            parts.append(np.full(s, value, x.dtype))
        keep = [slice(None)] * out.ndim
        keep[ax] = slice(max(-lo, 0), m - max(-hi, 0))
        parts.append(grown[tuple(keep)])
        if hi > 0:
            s = list(shape)
            s[ax] = hi
            parts.append(np.full(s, value, x.dtype))
        out = np.concatenate(parts, axis=ax)
    return out


def check_pad(name, d):
    prim = REGISTRY[name]
    value = {"f": -0.0, "b": True, "i": -1, "u": 7}[d.kind]
    for how, a, t in _shape_inputs(d):
        for config in (((1, 2, 0), (0, 1, 0)), ((0, 0, 1), (2, 0, 2)), ((-1, 1, 0), (1, -2, 1)), ((0, -3, 0), (0, 0, 0))):
            want = ref_pad(a, np.asarray(value).astype(d.np), config)
            got = prim.bind(t, value=value, config=config)
            assert_bitwise(got, want, d, f"pad[{d.name}, {how}, {config}]")
    e = shape_values(d, (0, 2))
    assert_bitwise(prim.bind(T(e), value=value, config=((1, 1, 3), (0, 0, 1))),
                   ref_pad(e, np.asarray(value).astype(d.np), ((1, 1, 3), (0, 0, 1))), d, "pad empty")


def check_concatenate(name, d):
    prim = REGISTRY[name]
    parts = _shape_inputs(d)
    got = prim.bind(*[t for _, _, t in parts], axis=0)
    assert_bitwise(got, np.concatenate([a for _, a, _ in parts], 0), d, f"concatenate[{d.name}] axis 0")
    got = prim.bind(*[t for _, _, t in parts], axis=1)
    assert_bitwise(got, np.concatenate([a for _, a, _ in parts], 1), d, f"concatenate[{d.name}] axis 1")
    a = shape_values(d, (3, 4))
    assert_bitwise(prim.bind(T(a[:0]), T(a), axis=0), a, d, "concatenate with empty")
    assert_bitwise(prim.bind(T(a), axis=1), a, d, "concatenate one")
    if d is not dt.uint32:  # mixed dtypes promote like PyTorch's cat
        for other in dt.ALL:
            p = promote(d, other)
            b = shape_values(other, (2, 4))
            got = prim.bind(T(a), T(b), axis=0)
            assert_matches(got, np.concatenate([a.astype(p.np), b.astype(p.np)]), p, None, (),
                           f"concatenate[{d.name}, {other.name}]")
    with pytest.raises(ember.ShapeError):
        prim.bind(T(a), T(shape_values(d, (3, 5))), axis=0)


def check_rev(name, d):
    prim = REGISTRY[name]
    for how, a, t in _shape_inputs(d):
        for axes in ((), (0,), (1,), (0, 1)):
            assert_bitwise(prim.bind(t, axes=axes), np.flip(a, axes) if axes else a, d, f"rev[{d.name}, {how}, {axes}]")
    e = shape_values(d, (0, 3))
    assert_bitwise(prim.bind(T(e), axes=(0, 1)), e, d, "rev empty")


# ====================================================================== linalg, conv, windows
def _letters(nx, ny, contract, batch):
    (xc, yc), (xb, yb) = contract, batch
    pool = iter("abcdefghijklmnop")
    xs, ys = [None] * nx, [None] * ny
    for i, j in zip(xb, yb):
        xs[i] = ys[j] = next(pool)
    for i, j in zip(xc, yc):
        xs[i] = ys[j] = next(pool)
    for k in range(nx):
        xs[k] = xs[k] or next(pool)
    for k in range(ny):
        ys[k] = ys[k] or next(pool)
    out = [xs[i] for i in xb] + [xs[i] for i in range(nx) if i not in xc + xb] + \
        [ys[i] for i in range(ny) if i not in yc + yb]
    return f"{''.join(xs)},{''.join(ys)}->{''.join(out)}"


DOT_CASES = [  # (x shape, y shape, contract, batch)
    ((3, 4), (4, 5), ((1,), (0,)), ((), ())),
    ((4, 3), (4, 5), ((0,), (0,)), ((), ())),
    ((3, 4), (5, 4), ((1,), (1,)), ((), ())),
    ((2, 3, 4), (2, 4, 5), ((2,), (1,)), ((0,), (0,))),
    ((3, 2, 2), (2, 2, 5), ((1, 2), (0, 1)), ((), ())),
    ((2, 3, 4), (4, 5), ((2,), (0,)), ((), ())),
    ((2, 3, 4), (5, 4), ((2,), (1,)), ((), ())),
    ((4,), (4,), ((0,), (0,)), ((), ())),
    ((3,), (4,), ((), ()), ((), ())),
    ((3, 0), (0, 2), ((1,), (0,)), ((), ())),
    ((0, 4), (4, 2), ((1,), (0,)), ((), ())),
    ((2, 4, 3), (3, 2, 4), ((1,), (2,)), ((0,), (1,))),
]


def _exact_ref(fn, arrays, compute, out):
    """fn on int64 (ints: wraps to the dtype like the kernel) or float64 operands, cast to the result."""
    wide = np.int64 if compute.kind in "iub" else F64
    with np.errstate(all="ignore"):
        r = fn(*[a.astype(wide) for a in arrays])
    return np.asarray(r).astype(compute.np).astype(out.np)


def _nonc(a, how):
    return layout(a, how) if a.ndim >= 2 else T(a)


def check_dot_general(name, d):
    prim = REGISTRY[name]
    rng = np.random.default_rng(11)
    compute, out = expected_dtypes(prim, d, d)
    for xs, ys, contract, batch in DOT_CASES:
        x, y = moderate(d, xs, rng, -3, 3), moderate(d, ys, rng, -3, 3)
        sub = _letters(len(xs), len(ys), contract, batch)
        want = _exact_ref(lambda a, b: np.einsum(sub, a, b), [x, y], compute, out)
        for how in ("contig", "transposed", "strided"):
            got = prim.bind(_nonc(x, how), _nonc(y, how), contract=contract, batch=batch)
            assert_matches(got, want, out, None, (), f"dot_general[{d.name}, {how}, {xs}x{ys} {contract} {batch}]")
    if d.kind == "f":  # NaN and inf propagate through the contraction
        x = moderate(d, (3, 4), rng)
        y = moderate(d, (4, 2), rng)
        x[0, 1], x[1, 2], y[3, 1] = np.nan, np.inf, 0.0
        want = _exact_ref(lambda a, b: a @ b, [x, y], compute, out)
        assert_matches(prim.bind(T(x), T(y), contract=((1,), (0,)), batch=((), ())), want, out, None, (), "dot nan/inf")
    for other in dt.ALL:  # mixed operand dtypes promote
        p = promote(d, other)
        if other is dt.bool_ or d is dt.bool_:
            continue
        x, y = moderate(d, (2, 3), rng, 0, 3), moderate(other, (3, 2), rng, 0, 3)
        c2, o2 = expected_dtypes(prim, d, other)
        want = _exact_ref(lambda a, b: a @ b, [x, y], c2, o2)
        assert_matches(prim.bind(T(x), T(y), contract=((1,), (0,)), batch=((), ())), want, p, None, (),
                       f"dot_general[{d.name} x {other.name}]")
    with pytest.raises(ember.ShapeError):
        prim.bind(T(moderate(d, (3, 4), rng)), T(moderate(d, (5, 2), rng)), contract=((1,), (0,)), batch=((), ()))


def check_packed_matmul(name, d):
    """8-bit activations (full range, any layout) x a packed int8 weight (including -128): the exact
    int32 sums, as dot_general's with an int32 result."""
    prim = REGISTRY[name]
    rng = np.random.default_rng(12)
    lo, hi = (-128, 128) if d is dt.int8 else (0, 256)
    for xs, (k, n) in (((3, 5), (5, 7)), ((2, 3, 17), (17, 33)), ((0, 4), (4, 3)), ((1, 1), (1, 1)),
                       ((6,), (6, 2)), ((4, 16), (16, 0))):
        x = rng.integers(lo, hi, xs).astype(d.np)
        w = rng.integers(-128, 128, (k, n)).astype(np.int8)
        if w.size:
            w.flat[0] = -128
        want = np.matmul(x.astype(np.int64), w.astype(np.int64))
        for how in ("contig", "transposed", "strided"):
            got = prim.bind(_nonc(x, how), T(pack_weight(w)), k=k, n=n)
            assert_bitwise(got, want, dt.int32, f"packed_matmul[{d.name}, {how}, {xs}x{(k, n)}]")
    with pytest.raises(ember.ShapeError, match="k=5"):
        prim.bind(T(np.zeros((2, 4), d.np)), T(pack_weight(np.zeros((5, 3), np.int8))), k=5, n=3)
    blob = pack_weight(np.zeros((4, 3), np.int8))
    blob[0] ^= 1  # the right size, not pack_weight's header
    with pytest.raises(ember.ShapeError, match="header"):
        prim.bind(T(np.zeros((2, 4), d.np)), T(blob), k=4, n=3)


def _dil(n, k):
    return 0 if n == 0 else 1 + k * (n - 1)


def ref_conv(lhs, rhs, strides, padding, ldil, rdil, groups):
    """Naive N-d grouped, dilated convolution (cross-correlation) in the operands' dtype."""
    n, c = lhs.shape[:2]
    o, cg = rhs.shape[:2]
    sp, ks = lhs.shape[2:], rhs.shape[2:]
    outs = tuple((_dil(s, ld) + lo + hi - _dil(k, rd)) // st + 1
                 for s, k, st, (lo, hi), ld, rd in zip(sp, ks, strides, padding, ldil, rdil))
    res = np.zeros((n, o) + outs, lhs.dtype)
    og = o // groups
    for b, oc in itertools.product(range(n), range(o)):
        g = oc // og
        for pos in np.ndindex(*outs):
            acc = lhs.dtype.type(0)
            for ic in range(cg):
                for kpos in np.ndindex(*ks):
                    idx = []
                    for p, k, st, (lo, _), ld, rd, s in zip(pos, kpos, strides, padding, ldil, rdil, sp):
                        q = p * st + k * rd - lo
                        if q < 0 or q % ld or q // ld >= s:
                            break
                        idx.append(q // ld)
                    else:
                        acc = acc + lhs[(b, g * cg + ic) + tuple(idx)] * rhs[(oc, ic) + kpos]
            res[(b, oc) + pos] = acc
    return res


CONV_CASES = [  # lhs shape, rhs shape, strides, padding, lhs_dilation, rhs_dilation, groups
    ((2, 4, 7), (6, 2, 3), (2,), ((1, 0),), (1,), (1,), 2),
    ((1, 2, 5), (3, 2, 2), (1,), ((2, -1),), (2,), (2,), 1),
    ((1, 2, 4, 5), (3, 2, 2, 3), (1, 2), ((1, 0), (0, 1)), (1, 1), (1, 1), 1),
    ((0, 2, 4), (3, 2, 2), (1,), ((0, 0),), (1,), (1,), 1),
    ((1, 1, 3), (2, 1, 1), (1,), ((0, 0),), (1,), (1,), 1),
]


def check_conv_general(name, d):
    prim = REGISTRY[name]
    rng = np.random.default_rng(5)
    compute, out = expected_dtypes(prim, d, d)
    for ls, rs, st_, pad, ld, rd, g in CONV_CASES:
        lhs, rhs = moderate(d, ls, rng, -2, 2), moderate(d, rs, rng, -2, 2)
        want = _exact_ref(lambda a, b: ref_conv(a, b, st_, pad, ld, rd, g), [lhs, rhs], compute, out)
        for how in ("contig", "transposed", "strided"):
            got = prim.bind(_nonc(lhs, how), _nonc(rhs, how), window_strides=st_, padding=pad, lhs_dilation=ld,
                            rhs_dilation=rd, groups=g)
            assert_matches(got, want, out, None, (), f"conv[{d.name}, {how}, {ls}*{rs}]")
    if d.kind == "f":
        lhs, rhs = moderate(d, (1, 1, 4), rng), moderate(d, (1, 1, 2), rng)
        lhs[0, 0, 1] = np.nan
        want = _exact_ref(lambda a, b: ref_conv(a, b, (1,), ((0, 0),), (1,), (1,), 1), [lhs, rhs], compute, out)
        got = prim.bind(T(lhs), T(rhs), window_strides=(1,), padding=((0, 0),), lhs_dilation=(1,), rhs_dilation=(1,),
                        groups=1)
        assert_matches(got, want, out, None, (), "conv nan")
    with pytest.raises(ember.ShapeError):
        prim.bind(T(moderate(d, (1, 3, 4), rng)), T(moderate(d, (2, 2, 2), rng)), window_strides=(1,),
                  padding=((0, 0),), lhs_dilation=(1,), rhs_dilation=(1,), groups=1)


def ref_window(x, kind, window, strides, padding, bdil, wdil):
    """Naive reduce_window: max (NaN propagates, padding never wins) or sum (padding adds 0)."""
    outs = tuple((_dil(s, bd) + lo + hi - _dil(k, wd)) // st + 1
                 for s, k, st, (lo, hi), bd, wd in zip(x.shape, window, strides, padding, bdil, wdil))
    res = np.zeros(outs, x.dtype)
    for pos in np.ndindex(*outs):
        vals = []
        for kpos in np.ndindex(*window):
            idx = []
            for p, k, st, (lo, _), bd, wd, s in zip(pos, kpos, strides, padding, bdil, wdil, x.shape):
                q = p * st + k * wd - lo
                if q < 0 or q % bd or q // bd >= s:
                    break
                idx.append(q // bd)
            else:
                vals.append(x[tuple(idx)])
        if kind == "sum":
            res[pos] = sum(vals, x.dtype.type(0))
        else:
            if not vals:
                res[pos] = -np.inf if _is_float(x) else np.iinfo(x.dtype).min
            else:
                arr = np.array(vals, x.dtype)
                res[pos] = np.nan if _is_float(arr) and np.isnan(arr.astype(F64)).any() else arr.max()
    return res


WINDOW_CASES = [  # shape, window, strides, padding, base_dilation, window_dilation
    ((2, 5, 6), (1, 2, 3), (1, 2, 1), ((0, 0), (1, 0), (0, 1)), (1, 1, 1), (1, 1, 1)),
    ((1, 6, 5), (1, 3, 2), (1, 1, 2), ((0, 0), (0, 0), (1, 1)), (1, 1, 1), (1, 2, 1)),
    ((2, 4, 4), (1, 2, 2), (1, 2, 2), ((0, 0), (0, 0), (0, 0)), (1, 2, 1), (1, 1, 1)),
    ((0, 4, 4), (1, 2, 2), (1, 1, 1), ((0, 0), (0, 0), (0, 0)), (1, 1, 1), (1, 1, 1)),
]


def check_reduce_window(name, d):
    prim = REGISTRY[name]
    kind = "max" if name.endswith("max") else "sum"
    rng = np.random.default_rng(9)
    compute, out = expected_dtypes(prim, d)
    for shape, win, strides, pad, bd, wd in WINDOW_CASES:
        x = moderate(d, shape, rng)
        if d.kind == "f" and x.size:
            x[0, 1, 1], x[0, 2, 3] = np.nan, -np.inf
        want = _exact_ref(lambda a: ref_window(a, kind, win, strides, pad, bd, wd), [x], compute, out)
        if kind == "max":  # max selects, so compare in the input dtype (no int64/float64 detour needed)
            want = ref_window(x, kind, win, strides, pad, bd, wd).astype(out.np)
        for how in ("contig", "transposed", "strided"):
            got = prim.bind(_nonc(x, how), window=win, strides=strides, padding=pad, base_dilation=bd,
                            window_dilation=wd)
            assert_matches(got, want, out, None, (), f"{name}[{d.name}, {how}, {shape} {win}]")


def ref_select_and_scatter_add(source, operand, window, strides, padding):
    out = np.zeros(operand.shape, F64 if operand.dtype.kind == "f" else np.int64)
    for pos in np.ndindex(*source.shape):
        best, arg = None, None
        for kpos in np.ndindex(*window):
            idx = tuple(p * s + k - lo for p, s, k, (lo, _) in zip(pos, strides, kpos, padding))
            if any(i < 0 or i >= n for i, n in zip(idx, operand.shape)):
                continue
            v = operand[idx]
            if best is None or (best == best and (v != v or v > best)):
                best, arg = v, idx
        if arg is not None:
            out[arg] += source[pos]
    return out


def check_select_and_scatter_add(name, d):
    prim = REGISTRY[name]
    rng = np.random.default_rng(13)
    compute, out = expected_dtypes(prim, d, d)
    for shape, win, strides, pad in (((2, 5, 6), (1, 2, 3), (1, 2, 1), ((0, 0), (1, 0), (0, 1))),
                                     ((1, 4, 4), (1, 2, 2), (1, 2, 2), ((0, 0), (0, 0), (0, 0))),
                                     ((1, 4, 4), (1, 3, 3), (1, 1, 1), ((0, 0), (1, 1), (1, 1)))):
        operand = moderate(d, shape, rng, -2, 2)  # small range: many ties (the first one wins)
        if d.kind == "f":
            operand[0, 1, 1] = np.nan
        outs = tuple((s + lo + hi - k) // st + 1 for s, k, st, (lo, hi) in zip(shape, win, strides, pad))
        source = moderate(d, outs, rng, 0, 3)
        want = ref_select_and_scatter_add(source.astype(F64 if compute.kind == "f" else np.int64), operand.astype(
            compute.np), win, strides, pad).astype(compute.np).astype(out.np)
        for how in ("contig", "transposed"):
            got = prim.bind(_nonc(source, how), _nonc(operand, how), window=win, strides=strides, padding=pad)
            assert_matches(got, want, out, None, (), f"select_and_scatter_add[{d.name}, {how}, {shape}]")


# ====================================================================== indexing
INDEX_DTYPES = (dt.int8, dt.int16, dt.int32, dt.int64, dt.uint8)


def check_gather(name, d):
    prim = REGISTRY[name]
    for how, a, t in _shape_inputs(d):
        for axis in (0, 1):
            n = a.shape[axis]
            for idt in INDEX_DTYPES:
                raw = [0, n - 1, 1, 1] + ([-1, -n] if idt.kind == "i" else [])
                idx = np.array(raw, idt.np)
                want = np.take(a, idx.astype(np.int64), axis=axis)
                assert_bitwise(prim.bind(t, T(idx), axis=axis), want, d, f"gather[{d.name}, {how}, axis {axis}, {idt.name}]")
            idx2 = np.array([[0, 1], [n - 1, -1]], np.int64)
            assert_bitwise(prim.bind(t, T(idx2), axis=axis), np.take(a, idx2, axis=axis), d, "gather 2-d idx")
            assert prim.bind(t, T(np.zeros(0, np.int64)), axis=axis).shape == (a.shape[:axis] + (0,) + a.shape[axis + 1:])
    a = shape_values(d, (3, 4))
    with pytest.raises(IndexError, match="out of bounds"):
        prim.bind(T(a), T(np.array([3], np.int64)), axis=0)
    with pytest.raises(ember.DTypeError, match="integer"):
        prim.bind(T(a), T(np.array([0.0], np.float32)), axis=0)


def _scatter_ref(x, idx, upd, axis, compute, out):
    acc = x.astype(compute.np)
    moved = np.moveaxis(acc, axis, 0)
    u = np.moveaxis(upd.astype(compute.np).reshape(x.shape[:axis] + (-1,) + x.shape[axis + 1:]), axis, 0)
    np.add.at(moved, idx.ravel().astype(np.int64) % x.shape[axis], u)
    return acc.astype(out.np)


def check_scatter_add(name, d):
    prim = REGISTRY[name]
    rng = np.random.default_rng(17)
    compute, out = expected_dtypes(prim, d, d)
    for axis in (0, 1):
        x = moderate(d, (3, 4), rng)
        n = x.shape[axis]
        for idt in (dt.int64, dt.int32, dt.uint8, dt.int8):
            idx = np.array([0, n - 1, 0, 1, 0] if idt.kind == "u" else [0, -1, 0, 1, -n], idt.np)
            upd_shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
            upd = moderate(d, upd_shape, rng)
            want = _scatter_ref(x, idx, upd, axis, compute, out)
            for how in ("contig", "transposed", "strided"):
                got = prim.bind(layout(x, how), T(idx), layout(upd, how), axis=axis)
                assert_matches(got, want, out, None, (), f"scatter_add[{d.name}, {how}, axis {axis}, {idt.name}]")
        e = np.zeros(0, np.int64)
        got = prim.bind(T(x), T(e), T(moderate(d, x.shape[:axis] + (0,) + x.shape[axis + 1:], rng)), axis=axis)
        assert_matches(got, x.astype(out.np), out, None, (), "scatter_add empty")
    if d.kind == "f":  # NaN and inf in updates propagate
        x = moderate(d, (3, 2), rng)
        upd = np.array([[np.nan, np.inf], [1.0, -np.inf]]).astype(d.np)
        idx = np.array([2, 2], np.int64)
        assert_matches(prim.bind(T(x), T(idx), T(upd), axis=0), _scatter_ref(x, idx, upd, 0, compute, out), out, None,
                       (), "scatter_add nan")
    with pytest.raises(IndexError, match="out of bounds"):
        prim.bind(T(moderate(d, (3, 4), rng)), T(np.array([3])), T(moderate(d, (1, 4), rng)), axis=0)


def check_take_along_axis(name, d):
    prim = REGISTRY[name]
    for how, a, t in _shape_inputs(d):
        for axis in (0, 1):
            n = a.shape[axis]
            for idt in INDEX_DTYPES:
                base = np.array([[0, n - 1, 1, 0], [1, 1, 0, n - 1]])
                idx = np.resize(base, (2, a.shape[1]) if axis == 0 else (a.shape[0], 2))
                if idt.kind == "i":
                    idx = idx - n * (idx % 2)  # mix in negative indices
                want = np.take_along_axis(a, idx.astype(np.int64) % n, axis=axis)
                got = prim.bind(t, T(idx.astype(idt.np)), axis=axis)
                assert_bitwise(got, want, d, f"take_along_axis[{d.name}, {how}, axis {axis}, {idt.name}]")
    a = shape_values(d, (3, 4))
    assert prim.bind(T(a), T(np.zeros((3, 0), np.int64)), axis=1).shape == (3, 0)
    with pytest.raises(IndexError, match="out of bounds"):
        prim.bind(T(a), T(np.full((3, 1), 4)), axis=1)
    with pytest.raises(ember.ShapeError):
        prim.bind(T(a), T(np.zeros((2, 2), np.int64)), axis=1)


def check_scatter_add_along_axis(name, d):
    prim = REGISTRY[name]
    rng = np.random.default_rng(19)
    compute, out = expected_dtypes(prim, d, d)
    x = moderate(d, (3, 4), rng)
    for axis in (0, 1):
        n = x.shape[axis]
        ishape = (2, 4) if axis == 0 else (3, 3)
        for idt in (dt.int64, dt.int32, dt.uint8):
            idx = rng.integers(0, n, ishape)
            if idt.kind == "i":
                idx = idx - n * (rng.random(ishape) < 0.3)
            upd = moderate(d, ishape, rng)
            acc = x.astype(compute.np)
            for pos in np.ndindex(*ishape):
                tgt = list(pos)
                tgt[axis] = idx[pos] % n
                acc[tuple(tgt)] = acc[tuple(tgt)] + upd[pos].astype(compute.np)
            want = acc.astype(out.np)
            for how in ("contig", "transposed", "strided"):
                got = prim.bind(layout(x, how), T(idx.astype(idt.np)), layout(upd, how), axis=axis)
                assert_matches(got, want, out, None, (), f"scatter_add_along_axis[{d.name}, {how}, {axis}, {idt.name}]")
    with pytest.raises(IndexError, match="out of bounds"):
        prim.bind(T(x), T(np.full((3, 1), 4)), T(moderate(d, (3, 1), rng)), axis=1)


def _write_ref(x, idx, upd, axis, out):
    """PyTorch's scatter written out: positions in order, so of repeated indices the last wins."""
    acc = x.astype(out.np)
    n = x.shape[axis]
    idx = np.broadcast_to(idx, upd.shape)
    for pos in np.ndindex(*upd.shape):
        tgt = list(pos)
        tgt[axis] = int(idx[pos]) % n
        acc[tuple(tgt)] = np.asarray(upd[pos]).astype(out.np)
    return acc


def check_scatter_along_axis(name, d):
    prim = REGISTRY[name]
    rng = np.random.default_rng(41)
    x = np.resize(shape_values(d, (12,))[::-1], (3, 4))
    for axis in (0, 1):
        n = x.shape[axis]
        ishape = (2, 4) if axis == 0 else (3, 3)
        for idt in (dt.int64, dt.int32, dt.uint8, dt.int8):
            idx = rng.integers(0, n, ishape)  # repeats included: the last write wins
            if idt.kind == "i":
                idx = idx - n * (rng.random(ishape) < 0.3)
            upd = shape_values(d, ishape)
            want = _write_ref(x, idx, upd, axis, d)
            for how in ("contig", "transposed", "strided"):
                got = prim.bind(layout(x, how), T(idx.astype(idt.np)), layout(upd, how), axis=axis)
                assert_matches(got, want, d, None, (), f"scatter_along_axis[{d.name}, {how}, {axis}, {idt.name}]")
        # indices broadcast (size 1) across the other dim; fewer updates than x along the axis
        bshape = (1, 4) if axis == 0 else (3, 1)
        idx = rng.integers(-n, n, bshape)
        upd = shape_values(d, (2, 4) if axis == 0 else (3, 2))
        idx = np.concatenate([idx, (idx + 1) % n], axis)
        assert_matches(prim.bind(T(x), T(idx), T(upd), axis=axis), _write_ref(x, idx, upd, axis, d), d, None, (),
                       f"scatter_along_axis[{d.name}] broadcast indices")
        got = prim.bind(T(x), T(np.zeros(ishape[:axis] + (0,) + ishape[axis + 1:], np.int64)),
                        T(shape_values(d, ishape[:axis] + (0,) + ishape[axis + 1:])), axis=axis)
        assert_matches(got, x, d, None, (), "scatter_along_axis no updates")
    if d is not dt.uint32:  # the updates' dtype promotes with x's, as in eager scatter
        for other in dt.ALL:
            p = promote(d, other)
            idx, upd = np.array([[2, 0, 1, 0]]), shape_values(other, (1, 4))
            got = prim.bind(T(x), T(idx), T(upd), axis=0)
            assert_matches(got, _write_ref(x, idx, upd, 0, p), p, None, (),
                           f"scatter_along_axis[{d.name}, {other.name}]")
    with pytest.raises(IndexError, match="out of bounds"):
        prim.bind(T(x), T(np.full((3, 1), 4)), T(shape_values(d, (3, 1))), axis=1)
    with pytest.raises(ember.ShapeError):
        prim.bind(T(x), T(np.zeros((2, 2), np.int64)), T(shape_values(d, (2, 5))), axis=1)


def test_scatter_along_axis_updates_cover_part_of_x():
    x, idx, upd = np.zeros((3, 4), np.float32), np.array([[0, 1], [2, 0]]), np.array([[1, 2], [3, 4]], np.float32)
    want = _write_ref(x, idx, upd, 0, dt.float32)  # torch.zeros(3, 4).scatter(0, idx, upd)
    added = REGISTRY["scatter_add_along_axis"].bind(T(x), T(idx), T(upd), axis=0)  # distinct indices: the same
    assert_matches(added, want, dt.float32, None, (), "scatter_add_along_axis, updates (2, 2) into (3, 4)")
    got = REGISTRY["scatter_along_axis"].bind(T(x), T(idx), T(upd), axis=0)
    assert_matches(got, want, dt.float32, None, (), "scatter_along_axis, updates (2, 2) into (3, 4)")


# ====================================================================== linear algebra (float32/float64 only)
def _well_conditioned(rng, shape):
    """Matrices (*batch, m, n) with singular values in [1, 3]."""
    *batch, m, n = shape
    k = min(m, n)
    u = np.linalg.qr(rng.standard_normal(tuple(batch) + (m, m)))[0][..., :k]
    v = np.linalg.qr(rng.standard_normal(tuple(batch) + (n, n)))[0][..., :k]
    return (u * rng.uniform(1.0, 3.0, tuple(batch) + (k,))[..., None, :]) @ np.swapaxes(v, -1, -2)


def _spd_with_garbage(rng, shape, keep_lower=True):
    """An SPD matrix in one triangle (diagonal included) and large unrelated values strictly in the
    other, which must not be read."""
    x = rng.standard_normal(shape)
    a = x @ np.swapaxes(x, -1, -2) / shape[-1] + np.eye(shape[-1])
    junk = 100 * rng.standard_normal(shape)
    n = shape[-1]
    return np.where(np.tri(n, dtype=bool), a, junk) if keep_lower else np.where(np.tri(n, k=-1, dtype=bool), junk, a)


def _sym_from(a, lower):
    t = np.tril(a) if lower else np.triu(a)
    return t + np.swapaxes(t, -1, -2) - np.eye(a.shape[-1]) * a  # the diagonal once


def _triangular_with_garbage(rng, shape, upper):
    n = shape[-1]
    t = rng.uniform(-0.5, 0.5, shape) + np.eye(n) * rng.uniform(1.0, 2.0, shape[:-1])[..., None, :]
    mask = np.triu(np.ones((n, n), bool)) if upper else np.tril(np.ones((n, n), bool))
    return np.where(mask, t, 100 * rng.standard_normal(shape))


def _split(packed, name, a_shape, **params):
    """numpy twin of decompositions.unpack: the components of a packed output."""
    from ember.ops.decompositions import PARTS
    batch, out, off = packed.shape[:-1], [], 0
    for s in PARTS[name](*a_shape[-2:], **params):
        size = math.prod(s)
        out.append(packed[..., off:off + size].reshape(batch + tuple(s)))
        off += size
    return out


def _mT(x):
    return np.swapaxes(x, -1, -2)


def _eye_like(x):  # identities of x's last-dim size, batched like x
    return np.broadcast_to(np.eye(x.shape[-1]), x.shape[:-2] + (x.shape[-1],) * 2)


def _qr_ref_check(got, a, mode, tol, ctx):
    m, n = a.shape[-2:]
    q, r = _split(got, "qr", a.shape, mode=mode)
    k = min(m, n)
    _, rr = np.linalg.qr(a, mode="reduced")  # R is unique up to the signs of its rows
    dg, dw = np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., :k], np.sign(np.diagonal(rr, axis1=-2, axis2=-1))
    np.testing.assert_allclose(dg[..., :, None] * r[..., :k, :], dw[..., :, None] * rr, **tol, err_msg=ctx)
    assert np.all(np.tril(r, -1) == 0), ctx  # exactly upper triangular (complete: zero rows below k)
    if mode != "r":
        np.testing.assert_allclose(q @ r, a, **tol, err_msg=ctx)
        np.testing.assert_allclose(_mT(q) @ q, _eye_like(q), **tol, err_msg=ctx)


def _eigh_ref_check(got, a, uplo, tol, ctx):
    w, v = _split(got, "eigh", a.shape)
    s = _sym_from(a, uplo == "L")
    np.testing.assert_allclose(w, np.linalg.eigvalsh(s), **tol, err_msg=ctx)
    np.testing.assert_allclose(s @ v, v * w[..., None, :], **tol, err_msg=ctx)
    np.testing.assert_allclose(_mT(v) @ v, _eye_like(v), **tol, err_msg=ctx)


def _svd_ref_check(got, a, full, tol, ctx):
    u, s, vh = _split(got, "svd", a.shape, full_matrices=full)
    k = s.shape[-1]
    np.testing.assert_allclose(s, np.linalg.svd(a, compute_uv=False), **tol, err_msg=ctx)
    np.testing.assert_allclose((u[..., :, :k] * s[..., None, :]) @ vh[..., :k, :], a, **tol, err_msg=ctx)
    for f in (u, _mT(vh)):
        np.testing.assert_allclose(_mT(f) @ f, _eye_like(f), **tol, err_msg=ctx)


def _tri_ref(a, b, upper, unit):
    t = np.triu(a) if upper else np.tril(a)
    if unit:
        t = t - np.eye(a.shape[-1]) * t + np.eye(a.shape[-1])
    return np.linalg.solve(t, b)


def _linalg_cases(rng):
    """{name: [(params, [operand arrays], reference)]}: the reference is numpy's result from the
    float64 operands, or for a decomposition a checker (packed output, A, tol, context)."""
    sq, sq1, rect, wide = (_well_conditioned(rng, s) for s in ((2, 3, 3), (3, 3), (2, 4, 3), (3, 4)))
    b = rng.standard_normal((2, 3, 2))
    spd_l, spd_u = _spd_with_garbage(rng, (2, 3, 3), True), _spd_with_garbage(rng, (2, 3, 3), False)
    cases = {
        "inv": [({}, [a], np.linalg.inv) for a in (sq, sq1)],
        "solve": [({}, [sq, b], np.linalg.solve), ({}, [sq1, b[0]], np.linalg.solve)],
        "triangular_solve": [(dict(upper=u, unitriangular=un), [_triangular_with_garbage(rng, (2, 3, 3), u), b],
                              (lambda u, un: lambda a, b: _tri_ref(a, b, u, un))(u, un))
                             for u in (False, True) for un in (False, True)],
        "det": [({}, [a], np.linalg.det) for a in (sq, sq1)],
        "slogdet": [({}, [a], lambda a: np.stack(np.linalg.slogdet(a), -1)) for a in (sq, sq1)],
        "cholesky": [({}, [spd_l], lambda a: np.linalg.cholesky(_sym_from(a, True)))],
        "qr": [(dict(mode=md), [a], (lambda md: lambda g, a, tol, ctx: _qr_ref_check(g, a, md, tol, ctx))(md))
               for md in ("reduced", "complete", "r") for a in (rect, wide)],
        "eigh": [(dict(UPLO=ul), [a], (lambda ul: lambda g, a, tol, ctx: _eigh_ref_check(g, a, ul, tol, ctx))(ul))
                 for ul, a in (("L", spd_l), ("U", spd_u))],
        "eigvalsh": [(dict(UPLO=ul), [a], (lambda ul: lambda a: np.linalg.eigvalsh(_sym_from(a, ul == "L")))(ul))
                     for ul, a in (("L", spd_l), ("U", spd_u))],
        "svd": [(dict(full_matrices=f), [a], (lambda f: lambda g, a, tol, ctx: _svd_ref_check(g, a, f, tol, ctx))(f))
                for f in (False, True) for a in (rect, wide)],
        "svdvals": [({}, [a], lambda a: np.linalg.svd(a, compute_uv=False)) for a in (rect, wide)],
        "pinv": [(dict(atol=0.0, rtol=1e-7, hermitian=False), [a], np.linalg.pinv) for a in (rect, wide, sq)] +
                [(dict(atol=0.0, rtol=1e-7, hermitian=True), [_sym_from(spd_l, True)], np.linalg.pinv)],
    }
    return cases


_LINALG_PARAMS = {"triangular_solve": dict(upper=True, unitriangular=False), "qr": dict(mode="reduced"),
                  "eigh": dict(UPLO="L"), "eigvalsh": dict(UPLO="L"), "svd": dict(full_matrices=False),
                  "pinv": dict(atol=0.0, rtol=1e-7, hermitian=False)}
LINALG = ("inv", "solve", "triangular_solve", "det", "slogdet", "cholesky", "qr", "eigh", "eigvalsh", "svd",
          "svdvals", "pinv")
LINALG_TOL = {dt.float32: dict(rtol=5e-5, atol=5e-5), dt.float64: dict(rtol=1e-11, atol=1e-11)}
# a primitive of one operand on empty inputs: (shape in, shape out) -- empty batches, 0 x 0 matrices
LINALG_EMPTY = {
    "inv": [((0, 3, 3), (0, 3, 3)), ((2, 0, 0), (2, 0, 0))], "det": [((0, 3, 3), (0,)), ((2, 0, 0), (2,))],
    "slogdet": [((0, 3, 3), (0, 2))], "cholesky": [((0, 3, 3), (0, 3, 3)), ((2, 0, 0), (2, 0, 0))],
    "eigvalsh": [((0, 3, 3), (0, 3)), ((2, 0, 0), (2, 0))], "svdvals": [((0, 4, 3), (0, 3)), ((3, 0), (0,))],
    "pinv": [((0, 4, 3), (0, 3, 4)), ((3, 0), (0, 3))],
}


def check_linalg(name, d):
    """float32/float64 against numpy's float64 LAPACK on well-conditioned inputs, in every layout.
    Decompositions are checked through what is unique about them: Q R = A with R's rows sign-
    normalised, A V = V diag(w), U S Vh = A, orthonormal factors."""
    prim = REGISTRY[name]
    tol = LINALG_TOL[d]
    for params, ops, ref in _linalg_cases(np.random.default_rng(zlib.crc32(name.encode())))[name]:
        ops = [o.astype(d.np) for o in ops]
        o64 = [o.astype(F64) for o in ops]
        for how in ("contig", "transposed", "strided"):
            ctx = f"{name}[{d.name}, {how}, {[o.shape for o in ops]}, {params}]"
            got = prim.bind(*[layout(o, how) for o in ops], **params)
            assert got.dtype is d, f"{ctx}: dtype {got.dtype.name}"
            g = got.numpy().astype(F64)
            if name in ("qr", "eigh", "svd"):
                ref(g, o64[0], tol, ctx)
            else:
                want = ref(*o64)
                assert g.shape == want.shape, f"{ctx}: shape {g.shape}, expected {want.shape}"
                np.testing.assert_allclose(g, want, **tol, err_msg=ctx)
    for sin, sout in LINALG_EMPTY.get(name, []):
        got = prim.bind(T(np.zeros(sin, d.np)), **_LINALG_PARAMS.get(name, {}))
        assert got.shape == sout and got.dtype is d, f"{name}[{d.name}] empty {sin}: {got.shape} {got.dtype.name}"
    if name == "solve" and d is dt.float32:  # the operands promote: float32 A, float64 B -> float64
        a, b = _well_conditioned(np.random.default_rng(3), (3, 3)), np.ones((3, 1))
        got = prim.bind(T(a.astype(np.float32)), T(b))
        assert got.dtype is dt.float64
        np.testing.assert_allclose(got.numpy(), np.linalg.solve(a.astype(np.float32).astype(F64), b), rtol=1e-12)
    with pytest.raises(ember.ShapeError):
        if name in ("solve", "triangular_solve"):
            prim.bind(T(np.eye(3, dtype=d.np)), T(np.ones((4, 1), d.np)),
                      **({} if name == "solve" else dict(upper=True, unitriangular=False)))
        else:
            prim.bind(T(np.ones(3, d.np)), **_LINALG_PARAMS.get(name, {}))


# ====================================================================== creation and random
def check_full(name, d):
    prim = REGISTRY[name]
    vals = specials(d) if d is not dt.uint32 else np.array([0, 2 ** 32 - 1], np.uint32)
    for v in vals[:: max(1, len(vals) // 8)].tolist() + [vals[-1].item()]:
        for shape in ((), (0,), (2, 3), (1, 0, 2)):
            got = prim.bind(shape=shape, value=v, dtype=d)
            assert_bitwise(got, np.full(shape, v, d.np), d, f"full[{d.name}, {v!r}, {shape}]")
    got = prim.bind(shape=(2,), value=-0.0, dtype=d)
    assert_bitwise(got, np.full((2,), -0.0, d.np), d, "full -0.0")
    with pytest.raises(ember.ShapeError):
        prim.bind(shape=(-1,), value=0, dtype=d)


def check_iota(name, d):
    prim = REGISTRY[name]
    for shape, dim in (((5,), 0), ((3, 4), 0), ((3, 4), 1), ((2, 0, 3), 2), ((2, 0, 3), 1), ((1,), 0)):
        r = np.arange(shape[dim]).reshape((-1,) + (1,) * (len(shape) - dim - 1))
        want = np.broadcast_to(r, shape).astype(d.np)
        assert_bitwise(prim.bind(shape=shape, dim=dim, dtype=d), want, d, f"iota[{d.name}, {shape}, {dim}]")
    with pytest.raises(ember.ShapeError):
        prim.bind(shape=(3,), dim=1, dtype=d)


# Random123's known-answer vectors for Philox4x32-10 (kat_vectors): counter, key -> output
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def check_random_bits(name, d):
    from ember.ops.philox import philox4x32_10
    prim = REGISTRY[name]
    for ctr, key, want in PHILOX_KAT:
        got = philox4x32_10(np.array([ctr], np.uint32), np.array(key, np.uint32))
        np.testing.assert_array_equal(got[0], np.array(want, np.uint32))
    # key words 0-1 = the Philox key, words 2-3 = the 64-bit block counter; element i is word i % 4
    # of block (counter + i // 4), with the carry into the high word
    key = np.array([0xA4093822, 0x299F31D0, 0xFFFFFFFF, 7], np.uint32)
    got = prim.bind(T(key), shape=(3, 3))
    assert got.dtype is dt.uint32 and got.shape == (3, 3)
    blocks = np.array([[0xFFFFFFFF, 7, 0, 0], [0, 8, 0, 0], [1, 8, 0, 0]], np.uint32)
    want = philox4x32_10(blocks, key[:2]).reshape(-1)[:9].reshape(3, 3)
    np.testing.assert_array_equal(got.numpy(), want)
    z = prim.bind(T(np.zeros(4, np.uint32)), shape=(5,)).numpy()
    np.testing.assert_array_equal(z[:4], np.array(PHILOX_KAT[0][2], np.uint32))
    for shape in ((), (0,), (2, 0)):
        r = prim.bind(T(key), shape=shape)
        assert r.shape == shape and r.dtype is dt.uint32


def check_check_classes(name, d):
    """The targets come back unchanged; one outside [0, n) that is not `ignore` is an IndexError."""
    prim = REGISTRY[name]
    t = np.array([[0, 3], [9, 2]], d.np)
    for ignore in (None, 9):
        got = prim.bind(T(t), n=10, ignore=ignore, op="nll")
        assert_bitwise(got, t, d, f"check_classes[{d.name}]")
    with pytest.raises(IndexError, match="target 9 is out of bounds for 9 classes"):
        prim.bind(T(t), n=9, ignore=None, op="nll")
    if d.kind == "i":
        with pytest.raises(IndexError, match="target -1 is out of bounds"):
            prim.bind(T(np.array([-1, 0], d.np)), n=2, ignore=-100, op="nll")
    assert prim.bind(T(np.zeros(0, d.np)), n=0, ignore=None, op="nll").shape == (0,)


def check_complex_only(name, d):
    raise AssertionError(f"{name} claims the real dtype {d.name}; its cells are complex "
                         "(tests/test_complex_dtypes.py)")


def check_complex(name, d):
    """complex(re, im) from two real tensors (broadcast, specials kept in each part)."""
    re = np.array([[0.0, -0.0, np.nan, np.inf, -1.5]], d.np)
    im = np.array([[1.0], [-np.inf], [np.nan]], d.np)
    for how in ("contig", "transposed"):
        got = REGISTRY[name].bind(layout(np.broadcast_to(re, (3, 5)).copy(), how), T(im))
        want = np.empty((3, 5), dt.COMPLEX_OF[d].np)
        want.real, want.imag = re, im
        assert got.dtype is dt.COMPLEX_OF[d]
        np.testing.assert_array_equal(_bits(got.numpy().real), _bits(want.real))
        np.testing.assert_array_equal(_bits(got.numpy().imag), _bits(want.imag))


def check_fft_r2c(name, d):
    """The real-to-complex DFT equals numpy's rfftn, on views and over several axes."""
    x = np.random.default_rng(7).standard_normal((4, 6)).astype(d.np)
    for how in ("contig", "transposed", "strided"):
        for axes in ((1,), (0,), (0, 1), (1, 0)):
            got = REGISTRY[name].bind(layout(x, how), axes=axes, norm="backward")
            assert got.dtype is dt.COMPLEX_OF[d]
            want = np.fft.rfftn(x.astype(np.float64), axes=axes)
            np.testing.assert_allclose(got.numpy(), want, **tol_for(d, 64))


# ====================================================================== the registry of checks
CHECKS = {
    **{n: check_complex_only for n in ("real", "imag", "conj", "complex_abs", "fft_c2c", "fft_c2r")},
    "complex": check_complex, "fft_r2c": check_fft_r2c,
    **{n: check_elementwise for n in UNARY}, **{n: check_elementwise for n in BINARY},
    "select": check_select, "convert": check_convert, "bitcast": check_bitcast,
    **{n: check_reduce for n in REDUCE_REF}, "argmax": check_arg, "argmin": check_arg, "cumsum": check_cumsum,
    "cumprod": check_cumprod, "argsort": check_argsort, "searchsorted": check_searchsorted,
    "reshape": check_reshape, "broadcast_in_dim": check_broadcast_in_dim, "transpose": check_transpose,
    "slice": check_slice, "pad": check_pad, "concatenate": check_concatenate, "rev": check_rev,
    "dot_general": check_dot_general, "packed_matmul": check_packed_matmul, "conv_general": check_conv_general,
    "reduce_window_max": check_reduce_window, "reduce_window_sum": check_reduce_window,
    "select_and_scatter_add": check_select_and_scatter_add,
    "gather": check_gather, "scatter_add": check_scatter_add, "take_along_axis": check_take_along_axis,
    "scatter_add_along_axis": check_scatter_add_along_axis, "check_classes": check_check_classes,
    "scatter_along_axis": check_scatter_along_axis, **{n: check_linalg for n in LINALG},
    "full": check_full, "iota": check_iota, "random_bits": check_random_bits,
}

CELLS = [(n, d.name) for n, p in REGISTRY.items() for d in INTERNAL if d in p.dtypes]
UNSUPPORTED = [(n, d.name) for n, p in REGISTRY.items() for d in INTERNAL
               if d not in p.dtypes and p.kind != "creation"]


def test_every_primitive_has_a_checker():
    assert set(CHECKS) == set(REGISTRY), (
        f"primitives without a dtype test: {sorted(set(REGISTRY) - set(CHECKS))}; "
        f"checks for unknown primitives: {sorted(set(CHECKS) - set(REGISTRY))}")
    assert len(CELLS) > 500


@pytest.mark.parametrize("name,dtype", CELLS, ids=[f"{n}-{d}" for n, d in CELLS])
def test_cell(name, dtype):
    CHECKS[name](name, D(dtype))


# ---------------------------------------------------------------- unsupported dtypes
def _minimal_call(name, d):
    """Call primitive `name` with its promoted operands in dtype `d`."""
    prim = REGISTRY[name]
    v = lambda shape=(2, 2): T(np.zeros(shape, d.np))  # noqa: E731
    if name in UNARY:
        return prim.bind(v())
    if name in BINARY or name == "dot_general":
        return prim.bind(v(), v()) if name in BINARY else prim.bind(v(), v(), contract=((1,), (0,)), batch=((), ()))
    calls = {
        "select": lambda: prim.bind(T(np.ones((2, 2), bool)), v(), v()),
        "argmax": lambda: prim.bind(v(), axis=0), "argmin": lambda: prim.bind(v(), axis=0),
        "cumsum": lambda: prim.bind(v(), axis=0, reverse=False),
        "cumprod": lambda: prim.bind(v(), axis=0, reverse=False),
        "argsort": lambda: prim.bind(v(), axis=0, descending=False, stable=True),
        "searchsorted": lambda: prim.bind(v((3,)), v((2,)), right=False),
        "scatter_along_axis": lambda: prim.bind(v(), T(np.zeros((1, 2), np.int64)), v((1, 2)), axis=0),
        "packed_matmul": lambda: prim.bind(v(), T(pack_weight(np.zeros((2, 2), np.int8))), k=2, n=2),
        "conv_general": lambda: prim.bind(v((1, 1, 3)), v((1, 1, 2)), window_strides=(1,), padding=((0, 0),),
                                          lhs_dilation=(1,), rhs_dilation=(1,), groups=1),
        "reduce_window_max": lambda: prim.bind(v(), window=(1, 1), strides=(1, 1), padding=((0, 0), (0, 0)),
                                               base_dilation=(1, 1), window_dilation=(1, 1)),
        "reduce_window_sum": lambda: prim.bind(v(), window=(1, 1), strides=(1, 1), padding=((0, 0), (0, 0)),
                                               base_dilation=(1, 1), window_dilation=(1, 1)),
        "select_and_scatter_add": lambda: prim.bind(v(), v(), window=(1, 1), strides=(1, 1), padding=((0, 0), (0, 0))),
        "random_bits": lambda: prim.bind(v((4,)), shape=(2,)),
        "convert": lambda: prim.bind(v(), dtype=dt.float32), "bitcast": lambda: prim.bind(v(), dtype=d),
        "gather": lambda: prim.bind(v(), T(np.zeros(1, np.int64)), axis=0),
        "check_classes": lambda: prim.bind(v(), n=2, ignore=None, op="nll"),
        "take_along_axis": lambda: prim.bind(v(), T(np.zeros((1, 2), np.int64)), axis=0),
        "scatter_add": lambda: prim.bind(v(), T(np.zeros(1, np.int64)), v((1, 2)), axis=0),
        "scatter_add_along_axis": lambda: prim.bind(v(), T(np.zeros((1, 2), np.int64)), v((1, 2)), axis=0),
        "reshape": lambda: prim.bind(v(), shape=(4,)), "transpose": lambda: prim.bind(v(), perm=(1, 0)),
        "broadcast_in_dim": lambda: prim.bind(v(), shape=(2, 2), dims=(0, 1)),
        "slice": lambda: prim.bind(v(), start=(0, 0), stop=(1, 1), step=(1, 1)),
        "pad": lambda: prim.bind(v(), value=0, config=((0, 0, 0), (0, 0, 0))),
        "concatenate": lambda: prim.bind(v(), v(), axis=0), "rev": lambda: prim.bind(v(), axes=(0,)),
        **{n: (lambda: prim.bind(v())) for n in ("real", "imag", "conj", "complex_abs")},
        "complex": lambda: prim.bind(v(), v()),
        "fft_c2c": lambda: prim.bind(v(), axes=(0,), inverse=False, norm="backward"),
        "fft_r2c": lambda: prim.bind(v(), axes=(0,), norm="backward"),
        "fft_c2r": lambda: prim.bind(v(), axes=(1,), n=2, norm="backward"),
    }
    if name in calls:
        return calls[name]()
    if name in LINALG:  # an identity: defined for every op (the dtype is what is refused)
        e = T(np.eye(2).astype(d.np))
        return prim.bind(*((e, e) if name in ("solve", "triangular_solve") else (e,)), **_LINALG_PARAMS.get(name, {}))
    assert prim.kind == "reduction", name
    return prim.bind(v(), axes=(0,))


@pytest.mark.parametrize("name,dtype", UNSUPPORTED, ids=[f"{n}-{d}" for n, d in UNSUPPORTED])
def test_unsupported_dtype_raises(name, dtype):
    no_kernel(lambda: _minimal_call(name, D(dtype)))


def test_supported_minimal_calls_succeed():
    """The calls used for the unsupported cells are well-formed (so their errors are the dtype's)."""
    for name, p in REGISTRY.items():
        if p.kind == "creation":
            continue
        d = next(d for d in INTERNAL + dt.COMPLEX if d in p.dtypes)
        if name == "random_bits":
            d = dt.uint32
        assert isinstance(_minimal_call(name, d), ember.Tensor)


def test_linalg_primitives_name_their_dtypes():
    """float32/float64 only (PyTorch's CPU linalg has no half precision): any other dtype is a
    DTypeError that names the dtype and the supported ones."""
    for name in LINALG:
        assert REGISTRY[name].dtypes == {dt.float32, dt.float64}, name
        for d in (dt.float16, dt.bfloat16, dt.int64, dt.int32, dt.bool_):
            with pytest.raises(ember.DTypeError, match=rf"{name}: no kernel for dtype {d.name} "
                               r"\(supports float32, float64\)"):
                _minimal_call(name, d)

# ---------------------------------------------------------------- mixed dtypes and Python scalars
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_mixed_dtypes_and_scalars(name):
    """Every pair of user dtypes (and each Python scalar kind) promotes as in PyTorch, then the
    primitive runs in the promoted dtype or raises DTypeError when it has no kernel for it."""
    prim, spec = REGISTRY[name], BINARY[name]
    checked = 0
    for a, b in itertools.product(dt.ALL, dt.ALL):
        x, y = spec.cols(0, a)[:7], np.resize(spec.cols(1, b), 7)
        exp = expected_dtypes(prim, a, b)
        if exp is None:
            no_kernel(lambda: prim.bind(T(x[:, None]), T(y[None, :])))
            continue
        compute, out = exp
        if name in ("floordiv", "rem", "fmod") and compute.kind != "f":
            y = y[y != 0]  # integer division by zero raises (test_integer_division_by_zero_raises)
        got = prim.bind(T(x[:, None]), T(y[None, :]))
        want = ew_reference(prim, spec, [x[:, None], y[None, :]], compute, out)
        tol = tol_for(out, spec.ulps) if spec.ulps and out.kind == "f" else None
        assert_matches(got, want, out, tol, (x[:, None], y[None, :]), f"{name}[{a.name}, {b.name}]")
        checked += 1
    for a in dt.ALL:
        for s, kind in ((True, "bool"), (3, "int"), (2.5, "float")):
            want_promoted = D(PROMO_JSON["scalar"][f"{a.name},{kind}"])
            if want_promoted not in prim.dtypes:
                no_kernel(lambda: prim.bind(T(specials(a)[:3]), s))
                continue
            if name in ("shift_left", "shift_right") and kind == "bool":
                continue
            got = prim.bind(T(specials(a)[:3]), s)
            rule_out = expected_dtypes(prim, want_promoted)[1]
            assert got.dtype is rule_out, f"{name}({a.name}, {kind}) -> {got.dtype.name}, want {rule_out.name}"
            rhs = spec.cols(1, a)
            rhs = rhs[rhs != 0] if name in ("floordiv", "rem", "fmod") else rhs  # (nor negative int powers)
            got_r = prim.bind(s, T(rhs[:3]))
            assert got_r.dtype is rule_out
            checked += 1
    assert checked > 0


# ---------------------------------------------------------------- hypothesis: shapes and broadcasting
def _values(d, idx):
    v = specials(d)
    return v[np.asarray(idx) % len(v)]


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_broadcasting(name, data):
    prim, spec = REGISTRY[name], BINARY[name]
    d = data.draw(st.sampled_from([d for d in dt.ALL if d in prim.dtypes]), label="dtype")
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0,
                                                         max_side=4), label="shapes")
    arrays = []
    for i, shape in enumerate(shapes.input_shapes):
        idx = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 30)), label=f"idx{i}")
        arrays.append(np.asarray(spec.cols(i, d)[idx % len(spec.cols(i, d))]))
    transpose = data.draw(st.booleans(), label="transposed")
    tensors = [T(np.array(a.T, order="C")).T if transpose and a.ndim >= 2 else T(a) for a in arrays]
    compute, out = expected_dtypes(prim, d, d)
    got = prim.bind(*tensors)
    assert got.shape == shapes.result_shape
    tol = tol_for(out, spec.ulps) if spec.ulps and out.kind == "f" else None
    assert_matches(got, ew_reference(prim, spec, arrays, compute, out), out, tol, arrays, f"{name}[{d.name}]")


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_shapes(name, data):
    prim, spec = REGISTRY[name], UNARY[name]
    d = data.draw(st.sampled_from([d for d in dt.ALL if d in prim.dtypes]), label="dtype")
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4), label="shape")
    idx = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 30)), label="idx")
    perm = data.draw(st.permutations(range(len(shape))), label="perm")
    a = np.asarray(_values(d, idx))
    # stored in another dim order, then permuted back by ember: a non-contiguous view of `a`
    t = T(np.array(np.transpose(a, np.argsort(perm)), order="C")).permute(*perm) if a.ndim else T(a)
    compute, out = expected_dtypes(prim, d)
    tol = tol_for(out, spec.ulps) if spec.ulps and out.kind == "f" else None
    assert_matches(prim.bind(t), ew_reference(prim, spec, [a], compute, out), out, tol, [a], f"{name}[{d.name}]")


# ---------------------------------------------------------------- division by zero
@pytest.mark.parametrize("name", ["floordiv", "rem", "fmod"])
def test_integer_division_by_zero_raises(name):
    for d in dt.INTS:
        with pytest.raises(ZeroDivisionError):
            REGISTRY[name].bind(T(np.array([1, 2], d.np)), T(np.array([1, 0], d.np)))
    # floats give IEEE results instead
    got = REGISTRY[name].bind(T(np.array([1.0, -1.0, 0.0], np.float32)), T(np.zeros(3, np.float32)))
    assert got.dtype is dt.float32


# ---------------------------------------------------------------- lowerings
def _random_operands(name, compute, rng, n=64):
    """Random finite operands in the compute dtype, inside each primitive's defined domain."""
    def r(i):
        if compute.kind == "f":
            lo, hi = (0.1, 4) if name in ("log", "sqrt", "rsqrt") else (-0.9, 4) if name == "log1p" else (-4, 4)
            if name == "pow" and i == 0:
                lo = 0.1
            return rng.uniform(lo, hi, n).astype(compute.np)
        if compute.kind == "b":
            return rng.random(n) < 0.5
        if name in ("shift_left", "shift_right") and i == 1:
            return rng.integers(0, compute.bits, n).astype(compute.np)
        if name == "pow" and i == 1:
            return rng.integers(0, 4, n).astype(compute.np)
        lo = 0 if compute.kind == "u" else -50
        v = rng.integers(lo, 50, n).astype(compute.np)
        if name in ("floordiv", "rem", "fmod") and i == 1:
            v[v == 0] = 3
        return v
    return r


@pytest.mark.parametrize("name", sorted(n for n, p in REGISTRY.items() if p.kind == "elementwise"))
def test_lowering_matches_impl(name):
    prim = REGISTRY[name]
    if prim.lowering is None:  # (complex values run on the host: C has no complex type)
        assert name in ("bitcast", "real", "imag", "conj", "complex", "complex_abs"), \
            f"elementwise {name} has no lowering"
        return
    rng = np.random.default_rng(23)
    for d in sorted(prim.dtypes & set(INTERNAL), key=INTERNAL.index):
        if name == "convert":
            for dst in INTERNAL:
                x = _random_operands(name, d, rng)(0)
                e = prim.lowering(E.var(0), dtype=dst)
                np.testing.assert_array_equal(E.evaluate(e, [x], d.np), prim.impl(x, dtype=dst))
            continue
        arity = 3 if name == "select" else 1 if name in UNARY else 2
        key = (d,) * (2 if name == "select" else arity)
        compute = prim.resolve_dtypes(key)[0]
        gen = _random_operands(name, compute, rng)
        ops = [gen(i) for i in range(arity)]
        if name == "select":
            ops = [rng.random(64) < 0.5] + [gen(0), gen(1)]
        e = prim.lowering(*[E.var(i) for i in range(arity)])
        assert isinstance(e, E.Expr)
        with np.errstate(all="ignore"):
            got = np.asarray(E.evaluate(e, ops, compute.np))
            want = np.asarray(prim.impl(*ops))
        # (a lowering's value type follows its operands; rounding ops on ints give floats in numpy)
        assert got.shape == want.shape
        got = got.astype(want.dtype)
        if want.dtype.kind == "f":
            eps = 4 * np.finfo(want.dtype).eps
            # logaddexp = max(x, y) + log1p(...) cancels near 0: its error scales with the operands
            atol = eps * float(np.max(np.abs(ops))) if name == "logaddexp" else 0
            np.testing.assert_allclose(got, want, rtol=eps, atol=atol, err_msg=f"{name}[{d.name}]")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{name}[{d.name}]")


@pytest.mark.parametrize("name", sorted(n for n, p in REGISTRY.items() if isinstance(p.lowering, tuple)))
def test_reduction_combiner_matches_impl(name):
    """A reduction's lowering (combiner, identity) folds to what its kernel computes."""
    prim = REGISTRY[name]
    comb, ident = prim.lowering
    assert comb in E.FUNCS
    fn = E.FUNCS[comb]
    rng = np.random.default_rng(29)
    x = rng.uniform(-4, 4, (3, 5)) if comb not in ("and", "or") else rng.random((3, 5)) < 0.5
    start = np.full(3, float(ident) if isinstance(ident, str) else ident, x.dtype)
    if prim.kind == "window":
        params = dict(window=(1, 5), strides=(1, 1), padding=((0, 0), (0, 0)), base_dilation=(1, 1),
                      window_dilation=(1, 1))
        want = functools.reduce(fn, x.T, start)[:, None]
        np.testing.assert_allclose(prim.impl(x, **params), want, rtol=1e-12)
    elif name in ("cumsum", "cumprod"):
        acc, cols = start, []
        for c in x.T:
            acc = fn(acc, c)
            cols.append(acc)
        np.testing.assert_allclose(prim.impl(x, axis=1, reverse=False), np.stack(cols, 1), rtol=1e-12)
    else:
        np.testing.assert_allclose(prim.impl(x, axes=(1,)), functools.reduce(fn, x.T, start), rtol=1e-12)


# ---------------------------------------------------------------- explicit semantics
@pytest.mark.parametrize("d", [dt.float32, dt.float64, dt.float16, dt.bfloat16])
def test_round_half_to_even_keeps_the_zero_sign(d):
    x = np.array([-2.5, -1.5, -0.5, -0.0, 0.5, 1.5, 2.5, 3.5, -0.25], F64).astype(d.np)
    want = np.array([-2.0, -2.0, -0.0, -0.0, 0.0, 2.0, 2.0, 4.0, -0.0]).astype(d.np)
    assert_matches(REGISTRY["round"].bind(T(x)), want, d, None, (x,), f"round[{d.name}]")


@pytest.mark.parametrize("d", [dt.float32, dt.float16, dt.bfloat16])
def test_extreme_reductions_agree_with_argmax_bitwise(d):
    """amax(x) is x[argmax(x)] bit for bit (signed zeros, NaN first), like max(a, b) keeps a on ties."""
    rng = np.random.default_rng(31)
    x = rng.choice(np.array([0.0, -0.0, -1.0, np.nan], F64), (40, 6), p=[0.4, 0.4, 0.15, 0.05]).astype(d.np)
    for red, arg in (("reduce_max", "argmax"), ("reduce_min", "argmin")):
        r = REGISTRY[red].bind(T(x), axes=(1,)).numpy()
        i = REGISTRY[arg].bind(T(x), axis=1).numpy()
        np.testing.assert_array_equal(_bits(r), _bits(x[np.arange(40), i]), err_msg=red)
