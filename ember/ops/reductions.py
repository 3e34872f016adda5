"""Reduction primitives. `axes` is a sorted tuple of non-negative dims; reduced dims are dropped.

Integer and bool sums and products accumulate in int64 (PyTorch); float16/bfloat16 accumulate in
float32. max/min propagate NaN and raise on an empty reduction; argmax/argmin return the first
index of the extreme value, a NaN counting as the extreme.
"""
from __future__ import annotations

import numpy as np

from .._core import dtypes as dt
from .._core.errors import ShapeError, op_error
from .._core.state import TLS
from . import expr as E
from . import lax
from .core import ALL_DTYPES, BOOL, CUSTOM, INDEX, NUMERIC, SUM, SAME, Aval, Primitive, normalize_axes, register


def _reduced_shape(shape, axes):
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_abstract(prim):
    def rule(x: Aval, *, axes) -> Aval:
        ax = normalize_axes(prim.name, axes, len(x.shape))
        if ax != tuple(axes):
            raise op_error(ShapeError, prim.name, f"axes must be sorted and non-negative, got {axes}")
        _, out = prim.resolve_dtypes((x.dtype,))
        if prim.name in ("reduce_max", "reduce_min") and any(x.shape[a] == 0 for a in ax):
            raise op_error(ShapeError, prim.name, f"cannot reduce an empty dimension of shape {x.shape} "
                           "(max/min have no identity)")
        return Aval(_reduced_shape(x.shape, ax), out)
    return rule


def _reduction(name, impl, vjp, rule, dtypes, combiner, identity):
    p = Primitive(name, impl=impl, vjp=vjp, dtype_rule=rule, dtypes=dtypes, kind="reduction",
                  lowering=(combiner, identity), needs_out=name in ("reduce_max", "reduce_min", "reduce_prod"))
    p.abstract = _reduce_abstract(p)
    return register(p)


def _sum_impl(x, *, axes):
    if len(axes) == x.ndim:  # a full reduction: axis=None and a 0-d out are numpy's fast path
        return np.add.reduce(x, axis=None, dtype=x.dtype, out=np.empty((), x.dtype))
    return np.add.reduce(x, axis=axes, dtype=x.dtype)


def _extreme_vjp(g, out, x, *, axes):
    # the gradient is shared evenly among the positions that attain the extreme (PyTorch amax)
    ob = lax.expand_reduced(out, x.shape, axes)
    mask = lax.convert(lax.eq(x, ob), g.dtype)
    count = lax.expand_reduced(lax.reduce_sum(mask, axes), x.shape, axes)
    return (lax.div(lax.mul(lax.expand_reduced(g, x.shape, axes), mask), count),)


def _prod_vjp(g, out, x, *, axes):
    # product of the other elements, also where x has zeros: out/x at the non-zeros (0 if the
    # group holds a zero, but still differentiable: d(out/x_j)/dx_i is right for the double
    # backward), the product of the non-zeros at a single zero, 0 at zeros when two or more
    iszero = lax.eq(x, 0)
    nz = lax.select(iszero, lax.full(x.shape, 1, x.dtype), x)
    p_nz = lax.expand_reduced(lax.reduce_prod(nz, axes), x.shape, axes)
    zc = lax.expand_reduced(lax.reduce_sum(lax.convert(iszero, dt.int32), axes), x.shape, axes)
    ob = lax.expand_reduced(out, x.shape, axes)
    zero = lax.zeros_like(x)
    others = lax.select(iszero, lax.select(lax.eq(zc, 1), p_nz, zero), lax.div(ob, nz))
    return (lax.mul(lax.expand_reduced(g, x.shape, axes), others),)


_reduction("reduce_sum", _sum_impl, lambda g, out, x, *, axes: (lax.expand_reduced(g, x.shape, axes),),
           SUM, ALL_DTYPES + dt.COMPLEX, "add", 0)
_reduction("reduce_prod", lambda x, *, axes: np.multiply.reduce(x, axis=axes, dtype=x.dtype), _prod_vjp, SUM,
           ALL_DTYPES, "mul", 1)
def _first_extreme(fn):
    # NaN propagates; among equal extremes the first one along the reduced axes is the result, so
    # a -0.0/0.0 tie is decided like the elementwise max/min (and x[argmax] == amax bitwise)
    def impl(x, *, axes):
        r = fn(x, axis=axes)
        if x.dtype.kind == "f" and axes and x.size:
            z = np.equal(r, 0)
            if z.any():
                rest = [i for i in range(x.ndim) if i not in axes]
                flat = np.transpose(x, rest + list(axes)).reshape(r.shape + (-1,))
                first = np.take_along_axis(flat, np.argmax(flat == 0, axis=-1)[..., None], -1)[..., 0]
                r = np.where(z, first, r)
        return r
    return impl


_reduction("reduce_max", _first_extreme(np.max), _extreme_vjp, SAME, ALL_DTYPES, "max", "-inf")
_reduction("reduce_min", _first_extreme(np.min), _extreme_vjp, SAME, ALL_DTYPES, "min", "inf")
_reduction("reduce_and", lambda x, *, axes: np.all(x, axis=axes), None, BOOL, ALL_DTYPES, "and", True)
_reduction("reduce_or", lambda x, *, axes: np.any(x, axis=axes), None, BOOL, ALL_DTYPES, "or", False)


def _arg_abstract(prim):
    def rule(x: Aval, *, axis) -> Aval:
        if not 0 <= axis < max(len(x.shape), 1):
            raise op_error(ShapeError, prim.name, f"axis {axis} is out of range for shape {x.shape}")
        if x.shape and x.shape[axis] == 0:
            raise op_error(ShapeError, prim.name, f"cannot take {prim.name} of an empty dimension {x.shape}")
        prim.resolve_dtypes((x.dtype,))
        return Aval(_reduced_shape(x.shape, (axis,)), dt.int64)
    return rule


for _name, _fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    _p = register(Primitive(_name, impl=(lambda f: lambda x, *, axis: f(x, axis=axis) if x.ndim else np.zeros((), np.int64))(_fn),
                            dtype_rule=INDEX, dtypes=NUMERIC, kind="reduction", half_in_f32=True))
    _p.abstract = _arg_abstract(_p)


def _scan_impl(ufunc):
    def impl(x, *, axis, reverse):
        if x.ndim == 0:  # np.cumsum would return shape (1,)
            return np.array(x, dtype=x.dtype)
        if reverse:
            return np.flip(ufunc.accumulate(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
        return ufunc.accumulate(x, axis=axis, dtype=x.dtype)
    return impl


def _scan_abstract(name):
    def rule(x: Aval, *, axis, reverse) -> Aval:
        if not 0 <= axis < max(len(x.shape), 1):
            raise op_error(ShapeError, name, f"axis {axis} is out of range for shape {x.shape}")
        _, out = REGISTRY_SCANS[name].resolve_dtypes((x.dtype,))
        return Aval(x.shape, out)
    return rule


def _cumprod_vjp(g, out, x, *, axis, reverse):
    if TLS.grad_enabled and x.ndim and x.shape[axis] > 1:  # a higher derivative will be taken
        return (_cumprod_vjp_pairwise(g, x, axis, reverse),)
    # before the first zero (in scan order) dx_i = sum_{j>=i} g_j out_j / x_i; at the first zero
    # z, dx_z = sum_{j>=z} g_j prod_{k<=j, k!=z} x_k, the cumprod of x with x_z set to 1; after
    # it, 0 (every product there holds x_z). PyTorch's cumprod_backward, written with scans.
    iszero = lax.eq(x, 0)
    zc = lax.cumsum(lax.convert(iszero, dt.int32), axis, reverse)
    before = lax.eq(zc, 0)
    first = lax.bitwise_and(iszero, lax.eq(zc, 1))
    zero, one = lax.zeros_like(x), lax.full(x.shape, 1, x.dtype)
    tail = lax.cumsum(lax.select(before, lax.mul(g, out), zero), axis, not reverse)
    part1 = lax.select(before, lax.div(tail, lax.select(before, x, one)), zero)
    cy = lax.cumprod(lax.select(first, one, x), axis, reverse)
    total = lax.reduce_sum(lax.select(before, zero, lax.mul(g, cy)), (axis,)) if x.ndim else lax.mul(g, cy)
    at_zero = lax.expand_reduced(total, x.shape, (axis,)) if x.ndim else total
    return (lax.add(part1, lax.select(first, at_zero, zero)),)


def _cumprod_vjp_pairwise(g, x, axis, reverse):
    """dx_i = prod_{k<i} x_k * sum_{j>=i} g_j prod_{i<k<=j} x_k, with no division, so it is
    differentiable everywhere (zeros included). O(n^2) per row along `axis`: used only when the
    VJP itself will be differentiated, as PyTorch's double-backward formula."""
    if reverse:
        r = lax.rev
        return r(_cumprod_vjp_pairwise(r(g, (axis,)), r(x, (axis,)), axis, False), (axis,))
    nd, n = x.ndim, x.shape[axis]
    perm = tuple(d for d in range(nd) if d != axis) + (axis,)
    inv = tuple(perm.index(d) for d in range(nd))
    xm, gm = lax.transpose(x, perm), lax.transpose(g, perm)
    lead = xm.shape[:-1]
    pair = lead + (n, n)                                  # [..., i, j]
    i_idx, j_idx = lax.iota(pair, nd - 1, dt.int32), lax.iota(pair, nd, dt.int32)
    xj = lax.broadcast_in_dim(xm, pair, tuple(range(nd - 1)) + (nd,))
    one = lax.full(pair, 1, x.dtype)
    span = lax.cumprod(lax.select(lax.gt(j_idx, i_idx), xj, one), nd)   # prod_{i<k<=j} x_k (1 for j<=i)
    gj = lax.broadcast_in_dim(gm, pair, tuple(range(nd - 1)) + (nd,))
    tail = lax.reduce_sum(lax.select(lax.ge(j_idx, i_idx), lax.mul(gj, span), lax.zeros_like(span)), (nd,))
    before = lax.concatenate([lax.full(lead + (1,), 1, x.dtype), lax.slice(xm, (0,) * nd, lead + (n - 1,), (1,) * nd)],
                             nd - 1)
    return lax.transpose(lax.mul(lax.cumprod(before, nd - 1), tail), inv)


P_cumsum = register(Primitive("cumsum", impl=_scan_impl(np.add), abstract=_scan_abstract("cumsum"),
                              vjp=lambda g, out, x, *, axis, reverse: (lax.cumsum(g, axis, not reverse),),
                              dtype_rule=SUM, dtypes=ALL_DTYPES, kind="reduction", lowering=("add", 0)))
P_cumprod = register(Primitive("cumprod", impl=_scan_impl(np.multiply), abstract=_scan_abstract("cumprod"),
                               vjp=_cumprod_vjp, dtype_rule=SUM, dtypes=ALL_DTYPES, kind="reduction",
                               lowering=("mul", 1), needs_out=True))
REGISTRY_SCANS = {"cumsum": P_cumsum, "cumprod": P_cumprod}
