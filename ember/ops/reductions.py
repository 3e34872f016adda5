"""Reduction primitives. `axes` is a sorted tuple of non-negative dims; reduced dims are dropped.

Integer and bool sums and products accumulate in int64 (PyTorch); float16/bfloat16 accumulate in
float32. max/min propagate NaN and raise on an empty reduction; argmax/argmin return the first
index of the extreme value, a NaN counting as the extreme.
"""
from __future__ import annotations

import numpy as np

from .._core import dtypes as dt
from .._core.errors import ShapeError, op_error
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
           SUM, ALL_DTYPES, "add", 0)
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


def _cumsum_impl(x, *, axis, reverse):
    if x.ndim == 0:  # np.cumsum would return shape (1,)
        return np.array(x, dtype=x.dtype)
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
    return np.cumsum(x, axis=axis, dtype=x.dtype)


def _cumsum_abstract(x: Aval, *, axis, reverse) -> Aval:
    if not 0 <= axis < max(len(x.shape), 1):
        raise op_error(ShapeError, "cumsum", f"axis {axis} is out of range for shape {x.shape}")
    _, out = P_cumsum.resolve_dtypes((x.dtype,))
    return Aval(x.shape, out)


P_cumsum = register(Primitive("cumsum", impl=_cumsum_impl, abstract=_cumsum_abstract,
                              vjp=lambda g, out, x, *, axis, reverse: (lax.cumsum(g, axis, not reverse),),
                              dtype_rule=SUM, dtypes=ALL_DTYPES, kind="reduction", lowering=("add", 0)))
