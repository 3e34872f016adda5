"""The arena executor's "numpy" lowerings: numpy calls that write straight into a planned block.

Each is registered per primitive (`register_lowering(P.x, "numpy", fn)`) as
`fn(steps, eqn, slots, out_slot) -> step or None`: a closure over the executor's value table
(`steps.env`), or None when this equation's case has no `out=` form (the executor then runs the
primitive's own kernel and copies the result in). Single ufuncs need no entry: every elementwise
ufunc is called with `out=` by the executor itself.
"""
from __future__ import annotations

import numpy as np

from ..backend.lowering import register_lowering
from ..ir.core import Var
from ..ops import P
from .executor import compute_dtypes


def _native(e, refs) -> bool:
    """All operands are values (no literals) and the op computes in its result dtype (no
    float16/bfloat16 computed in float32)."""
    return all(r is not None for r in refs) and (compute_dtypes(e) or (None,))[0] is e.out.aval.dtype


@register_lowering(P.select, "numpy")
def select(steps, e, refs, o):
    """select as two copyto calls (small results only)."""
    # np.copyto(where=) is exact but slow on large arrays; there the kernel's bitwise blend wins
    env, ins, out_dt = steps.env, e.inputs, e.out.aval.dtype
    small = int(np.prod(e.out.aval.shape, dtype=np.int64)) < 4096
    if not (small and refs[0] is not None and all(
            a.aval.dtype is out_dt for a in ins[1:] if isinstance(a, Var) or not a.aval.weak)):
        return None
    c, a, b = refs
    la, lb = (None if r is not None else out_dt.np.type(x.value) for r, x in zip(refs[1:], ins[1:]))
    cp = np.copyto

    def run():
        out = env[o]
        cp(out, env[b] if b is not None else lb)
        cp(out, env[a] if a is not None else la, where=env[c])
    return run


@register_lowering(P.convert, "numpy")
def convert(steps, e, refs, o):
    """convert as one copyto with unsafe casting (not float -> int: NaN and inf need ember's rule)."""
    out_dt, src = e.out.aval.dtype, e.inputs[0].aval.dtype
    if not all(r is not None for r in refs) or (out_dt.kind in "iu" and src.kind == "f") \
            or "bfloat16" in (out_dt.name, src.name) or (src.kind == "c" and out_dt.kind != "c") \
            or (src.name, out_dt.name) == ("float64", "float16"):
        return None  # ember's rules: see the convert primitive
    env, a, cp = steps.env, refs[0], np.copyto
    return lambda: cp(env[o], env[a], casting="unsafe")


@register_lowering(P.reduce_sum, "numpy")
def reduce_sum(steps, e, refs, o):
    """np.add.reduce into the planned block."""
    x, out_dt = e.inputs[0], e.out.aval.dtype
    if not (_native(e, refs) and x.aval.dtype is out_dt):
        return None
    env, a, axes = steps.env, refs[0], e.params["axes"]
    axis = None if len(axes) == len(x.aval.shape) else axes
    red, dtype = np.add.reduce, out_dt.np
    return lambda: red(env[a], axis=axis, dtype=dtype, out=env[o])


@register_lowering(P.full, "numpy")
def full(steps, e, refs, o):
    """fill the planned block."""
    env, value = steps.env, e.params["value"]
    return lambda: env[o].fill(value)


@register_lowering(P.pad, "numpy")
def pad(steps, e, refs, o):
    """fill with the padding value, then copy x into its strided place."""
    env, params, x = steps.env, e.params, e.inputs[0]
    if not (all(r is not None for r in refs) and env[o] is not None
            and all(lo >= 0 and hi >= 0 for lo, hi, _ in params["config"])
            and x.aval.dtype is e.out.aval.dtype and not isinstance(params["value"], Var)):
        return None
    a = refs[0]
    inner = env[o][tuple(slice(lo, lo + (n - 1) * (it + 1) + 1 if n else lo, it + 1)
                         for (lo, _, it), n in zip(params["config"], x.aval.shape))]
    value, out, cp = params["value"], env[o], np.copyto

    def run():
        out.fill(value)
        cp(inner, env[a])
    return run


def _extreme(steps, e, refs, o):
    env = steps.env
    if not (_native(e, refs) and e.out.aval.dtype.kind == "f" and env[o] is not None):
        return None
    a, axes = refs[0], e.params["axes"]
    red = (np.maximum if e.prim is P.reduce_max else np.minimum).reduce
    generic = steps._generic(e, refs, o)
    out = env[o]

    def run():
        red(env[a], axis=axes, out=out)
        if not out.all():  # a zero result: -0.0 and 0.0 ties need the kernel's rule
            generic()
    return run


register_lowering(P.reduce_max, "numpy", _extreme)
register_lowering(P.reduce_min, "numpy", _extreme)


@register_lowering(P.reshape, "numpy")
def reshape(steps, e, refs, o):
    """a reshape copy: the block seen with the input's shape."""
    env = steps.env
    if not (all(r is not None for r in refs) and env[o] is not None):
        return None
    a, cp = refs[0], np.copyto
    back = env[o].reshape(e.inputs[0].aval.shape)  # a contiguous block seen with the input's shape
    return lambda: cp(back, env[a])


@register_lowering(P.dot_general, "numpy")
def dot(steps, e, refs, o):
    """dot_general as one matmul over views: (batch..., m, k) @ (batch..., k, n) -> out."""
    x, y = e.inputs
    if not (_native(e, refs) and x.aval.dtype is e.out.aval.dtype is y.aval.dtype):
        return None
    (xc, yc), (xb, yb) = e.params["contract"], e.params["batch"]
    env = steps.env
    if env[o] is None:
        return None
    xs, ys = x.aval.shape, y.aval.shape
    xf = tuple(i for i in range(len(xs)) if i not in xc and i not in xb)
    yf = tuple(i for i in range(len(ys)) if i not in yc and i not in yb)
    bshape = tuple(xs[i] for i in xb)
    m, k, n = (int(np.prod([s[i] for i in d], dtype=np.int64)) for s, d in ((xs, xf), (xs, xc), (ys, yf)))
    xperm, yperm = xb + xf + xc, yb + yc + yf
    xshape, yshape = bshape + (m, k), bshape + (k, n)
    try:
        out = env[o].reshape(bshape + (m, n), copy=False)
    except ValueError:
        return None

    def view(arr, perm, shape):
        return arr.transpose(perm).reshape(shape, copy=False)
    a, b = refs
    mm = np.matmul
    try:
        xv = view(env[a], xperm, xshape) if env[a] is not None else None
        yv = view(env[b], yperm, yshape) if env[b] is not None else None
    except ValueError:
        return None
    if xv is not None and yv is not None:
        return lambda: mm(xv, yv, out)
    fallback = steps._generic(e, refs, o)

    def run():
        try:
            xa = xv if xv is not None else view(env[a], xperm, xshape)
            ya = yv if yv is not None else view(env[b], yperm, yshape)
        except ValueError:  # an input whose strides do not merge: numpy's own kernel
            return fallback()
        mm(xa, ya, out)
    return run
