"""ONNX shape and indexing op handlers: Reshape, Squeeze, Concat, Split, Slice, Gather/Scatter,
Expand, Tile, Pad... (registered into `ops.OPS` when `ops` is imported)."""
from __future__ import annotations

import numpy as np

from .. import api as E
from .._core import dtypes as dt
from ..ops import lax
from . import host
from .ops import _ax, _zero, const, ints, register, static

# ------------------------------------------------------------------ shapes
def _reshape_target(x, shape, allowzero=0):
    shape = list(shape)
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            shape[i] = x.shape[i]
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = int(np.prod(x.shape)) // known if known else 0
    return tuple(shape)


@register("Reshape")
def reshape_attr(ctx, x):
    return lax.reshape(x, _reshape_target(x, ctx.attr("shape")))


@register("Reshape", since=5)
def reshape(ctx, x, shape):
    return lax.reshape(x, _reshape_target(x, ints(shape), ctx.attr("allowzero", 0)))


@register("Flatten")
def flatten(ctx, x):
    a = _ax(ctx.attr("axis", 1), x.ndim)
    return lax.reshape(x, (int(np.prod(x.shape[:a])), int(np.prod(x.shape[a:]))))


def _squeeze(x, axes):
    axes = [_ax(a, x.ndim) for a in axes] if axes else [i for i, s in enumerate(x.shape) if s == 1]
    return lax.reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in axes))


def _unsqueeze(x, axes):
    n = x.ndim + len(axes)
    axes = sorted(_ax(a, n) for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return lax.reshape(x, tuple(shape))


@register("Squeeze")
def squeeze_attr(ctx, x):
    return _squeeze(x, ctx.attr("axes"))


@register("Squeeze", since=13)
def squeeze(ctx, x, axes=None):
    return _squeeze(x, ints(axes) if axes is not None else None)


@register("Unsqueeze")
def unsqueeze_attr(ctx, x):
    return _unsqueeze(x, ctx.attr("axes"))


@register("Unsqueeze", since=13)
def unsqueeze(ctx, x, axes):
    return _unsqueeze(x, ints(axes))


@register("Transpose")
def transpose(ctx, x):
    perm = ctx.attr("perm") or list(reversed(range(x.ndim)))
    return lax.transpose(x, perm)


@register("Concat")
def concat(ctx, *xs):
    xs = [x for x in xs if x is not None]
    return lax.concatenate(xs, _ax(ctx.attr("axis", 0), xs[0].ndim))


def _split(ctx, x, sizes):
    axis = _ax(ctx.attr("axis", 0), x.ndim)
    n = x.shape[axis]
    if sizes is None:
        k = ctx.attr("num_outputs", ctx.n_out)
        if ctx.has("num_outputs"):
            c = -(-n // k)
            sizes = [c] * (n // c) + ([n % c] if n % c else [])
        else:
            sizes = [n // k] * k
    outs, off = [], 0
    for s in sizes:
        start, stop = [0] * x.ndim, list(x.shape)
        start[axis], stop[axis] = off, off + s
        outs.append(lax.slice(x, start, stop, [1] * x.ndim))
        off += s
    return tuple(outs)


@register("Split")
def split_attr(ctx, x, split=None):  # opset 1/2 had an optional second input too
    return _split(ctx, x, ctx.attr("split") or (ints(split) if split is not None else None))


@register("Split", since=13)
def split(ctx, x, split=None):
    return _split(ctx, x, ints(split) if split is not None else None)


def _slice(x, starts, ends, axes, steps):
    axes = [_ax(a, x.ndim) for a in (axes if axes is not None else range(len(starts)))]
    steps = steps if steps is not None else [1] * len(starts)
    lo, hi, st = [0] * x.ndim, list(x.shape), [1] * x.ndim
    flip = []
    for a, s, e, k in zip(axes, starts, ends, steps):
        n = x.shape[a]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if k > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
            lo[a], hi[a], st[a] = s, max(e, s), k
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
            flip.append(a)
            lo[a], hi[a], st[a] = n - 1 - s, max(n - 1 - e, n - 1 - s), -k
    if flip:
        x = lax.rev(x, flip)
    return lax.slice(x, lo, hi, st)


@register("Slice")
def slice_attr(ctx, x):
    return _slice(x, ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None)


@register("Slice", since=10)
def slice_(ctx, x, starts, ends, axes=None, steps=None):
    return _slice(x, ints(starts), ints(ends), ints(axes) if axes is not None else None,
                  ints(steps) if steps is not None else None)


def _fix_index(idx, n):
    return lax.select(lax.lt(idx, 0), lax.add(idx, n), idx)


def _gather_known(x, idx: np.ndarray, axis: int):
    """Gather with indices known at trace time: a slice when they are one index or evenly spaced."""
    n = x.shape[axis]
    idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"Gather indices {idx.reshape(-1).tolist()[:8]} out of range for axis {axis} of size {n}")
    flat = idx.reshape(-1)
    step = int(flat[1] - flat[0]) if flat.size > 1 else 1
    if flat.size == 0 or step < 1 or (np.diff(flat) != step).any():
        return lax.gather(x, const(idx), axis)
    lo, hi, st = [0] * x.ndim, list(x.shape), [1] * x.ndim
    lo[axis], hi[axis], st[axis] = int(flat[0]), int(flat[-1]) + 1, step
    return lax.reshape(lax.slice(x, lo, hi, st), x.shape[:axis] + idx.shape + x.shape[axis + 1:])


@register("Gather")
def gather(ctx, x, idx):
    axis = _ax(ctx.attr("axis", 0), x.ndim)
    known = host.value(idx)
    if known is not None:
        return _gather_known(x, np.asarray(known), axis)
    return lax.gather(x, _fix_index(idx, x.shape[axis]), axis)


@register("GatherElements")
def gather_elements(ctx, x, idx):
    axis = _ax(ctx.attr("axis", 0), x.ndim)
    return lax.take_along_axis(x, _fix_index(idx, x.shape[axis]), axis)


def _nd_linear(x_shape, idx, b):
    """Flat row index into x reshaped to (prod(batch)*prod(indexed dims), rest) for GatherND/ScatterND."""
    k = idx.shape[-1]
    bshape, kshape = x_shape[:b], x_shape[b:b + k]
    strides = np.array([int(np.prod(kshape[i + 1:])) for i in range(k)], np.int64)
    kdims = np.array(kshape, np.int64)
    idx = E.convert(idx, dt.int64)
    idx = lax.select(lax.lt(idx, 0), lax.add(idx, const(kdims)), idx)
    lin = lax.reduce_sum(lax.mul(idx, const(strides)), (idx.ndim - 1,))
    if b:
        nb = int(np.prod(bshape))
        bpos = np.arange(nb, dtype=np.int64).reshape(bshape + (1,) * (lin.ndim - b)) * int(np.prod(kshape))
        lin = lax.add(lin, const(bpos))
    rows = int(np.prod(bshape)) * int(np.prod(kshape))
    return lin, (rows,) + tuple(x_shape[b + k:])


@register("GatherND")
def gather_nd(ctx, x, idx):
    lin, flat = _nd_linear(x.shape, idx, ctx.attr("batch_dims", 0))
    return lax.gather(lax.reshape(x, flat), lin, 0)


def _scatter(x, mask_src, upd_src, reduction, ctx):
    """Combine `x` with scattered updates: mask_src(ones) marks written places, upd_src(updates) sums them."""
    if reduction == "add":
        return lax.add(x, upd_src)
    if reduction == "none":
        return lax.select(lax.gt(mask_src, 0), upd_src, x)
    raise ctx.unsupported(f"reduction={reduction!r}")


_COMBINE = {"mul": lax.mul, "max": lax.max, "min": lax.min}


def _scatter_rounds(ctx, x, lin, upd, reduction):
    """Fold rows `upd` into rows `lin` (static) of `x` with mul/max/min, in rounds of distinct rows."""
    fn = _COMBINE.get(reduction)
    if fn is None:
        raise ctx.unsupported(f"reduction={reduction!r}")
    lin = np.asarray(lin, np.int64).reshape(-1)
    occ = np.zeros(lin.shape, np.int64)
    seen: dict = {}
    for i, p in enumerate(lin.tolist()):
        occ[i] = seen.get(p, 0)
        seen[p] = occ[i] + 1
    rows = x.shape[0]
    for r in range(int(occ.max()) + 1 if lin.size else 0):
        sel = np.nonzero(occ == r)[0]
        pos = lin[sel]
        vals = lax.gather(upd, const(sel), 0)
        placed = lax.scatter_add(lax.full(x.shape, 0, x.dtype), const(pos), vals, 0)
        hit = np.zeros((rows,) + (1,) * (x.ndim - 1), bool)
        hit[pos] = True
        x = lax.select(const(hit), fn(x, placed), x)
    return x


@register("ScatterElements")
def scatter_elements(ctx, x, idx, upd):
    axis = _ax(ctx.attr("axis", 0), x.ndim)
    idx = _fix_index(idx, x.shape[axis])
    zeros = lax.full(x.shape, 0, x.dtype)
    red = ctx.attr("reduction", "none")
    if red in _COMBINE:  # each update element's flat position in x, read at run time
        pos = np.indices(idx.shape)
        pos[axis] = static(idx)
        lin = np.ravel_multi_index(tuple(pos), x.shape).reshape(-1)
        flat = (int(np.prod(x.shape)),)
        return lax.reshape(_scatter_rounds(ctx, lax.reshape(x, flat), lin, lax.reshape(upd, (lin.size,)), red), x.shape)
    mask = lax.scatter_add_along_axis(lax.full(x.shape, 0, dt.int32), idx, lax.full(upd.shape, 1, dt.int32), axis)
    return _scatter(x, mask, lax.scatter_add_along_axis(zeros, idx, upd, axis), red, ctx)


register("Scatter")(scatter_elements)


@register("ScatterND")
def scatter_nd(ctx, x, idx, upd):
    lin, flat = _nd_linear(x.shape, idx, 0)
    lin = lax.reshape(lin, (-1,) if lin.ndim else (1,))
    lin = lax.reshape(lin, (int(np.prod(lin.shape)),))
    u = lax.reshape(upd, (lin.shape[0],) + flat[1:])
    red = ctx.attr("reduction", "none")
    if red in _COMBINE:
        return lax.reshape(_scatter_rounds(ctx, lax.reshape(x, flat), static(lin), u, red), x.shape)
    zeros = lax.full(flat, 0, x.dtype)
    mask = lax.scatter_add(lax.full(flat, 0, dt.int32), lin, lax.full(u.shape, 1, dt.int32), 0)
    out = _scatter(lax.reshape(x, flat), mask, lax.scatter_add(zeros, lin, u, 0), ctx.attr("reduction", "none"), ctx)
    return lax.reshape(out, x.shape)


@register("Expand")
def expand(ctx, x, shape):
    out = tuple(np.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))
    return lax.broadcast_to(x, out)


@register("Tile")
def tile(ctx, x, repeats):
    return E.repeat(x, *ints(repeats)) if x.ndim else x


@register("Trilu")
def trilu(ctx, x, k=None):
    k = int(static(k).reshape(-1)[0]) if k is not None else 0
    n, m = x.shape[-2], x.shape[-1]
    d = np.arange(m)[None, :] - np.arange(n)[:, None]
    keep = d >= k if ctx.attr("upper", 1) else d <= k
    return lax.select(const(keep), x, _zero(x))


@register("DepthToSpace")
def depth_to_space(ctx, x):
    b = ctx.attr("blocksize")
    N, C, H, W = x.shape
    if ctx.attr("mode", "DCR") == "DCR":
        y = lax.transpose(lax.reshape(x, (N, b, b, C // (b * b), H, W)), (0, 3, 4, 1, 5, 2))
    else:
        y = lax.transpose(lax.reshape(x, (N, C // (b * b), b, b, H, W)), (0, 1, 4, 2, 5, 3))
    return lax.reshape(y, (N, C // (b * b), H * b, W * b))


@register("SpaceToDepth")
def space_to_depth(ctx, x):
    b = ctx.attr("blocksize")
    N, C, H, W = x.shape
    perm = (0, 1, 3, 5, 2, 4) if ctx.attr("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    y = lax.transpose(lax.reshape(x, (N, C, H // b, b, W // b, b)), perm)
    return lax.reshape(y, (N, C * b * b, H // b, W // b))


@register("NonZero")
def nonzero(ctx, x):
    nz = np.stack(np.nonzero(static(x))) if x.ndim else np.zeros((0, int(bool(static(x)))), np.int64)
    return const(nz.astype(np.int64))


@register("Compress")
def compress(ctx, x, cond):
    keep = np.nonzero(static(cond).reshape(-1))[0].astype(np.int64)
    if not ctx.has("axis"):
        return lax.gather(lax.reshape(x, (int(np.prod(x.shape)),)), const(keep), 0)
    return lax.gather(x, const(keep), _ax(ctx.attr("axis"), x.ndim))


def _pad(ctx, x, pads, mode, value, axes=None):
    nd = x.ndim
    axes = [_ax(a, nd) for a in axes] if axes is not None else list(range(nd))
    k = len(axes)
    cfg = [(0, 0)] * nd
    for i, a in enumerate(axes):
        cfg[a] = (pads[i], pads[i + k])
    if mode == "constant":
        return lax.pad(x, value, [(lo, hi, 0) for lo, hi in cfg])
    npmode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(mode)
    if npmode is None:
        raise ctx.unsupported(f"mode={mode!r}")
    for a, (lo, hi) in enumerate(cfg):
        if lo or hi:
            if lo < 0 or hi < 0:
                raise ctx.unsupported(f"negative pads with mode={mode!r}")
            idx = np.pad(np.arange(x.shape[a]), (lo, hi), mode=npmode).astype(np.int64)
            x = lax.gather(x, const(idx), a)
    return x


@register("Pad")
def pad_attr(ctx, x):
    return _pad(ctx, x, ctx.attr("pads") or ctx.attr("paddings"), ctx.attr("mode", "constant"),
                ctx.attr("value", 0.0))


@register("Pad", since=11)
def pad(ctx, x, pads, value=None, axes=None):
    v = static(value).reshape(-1)[0].item() if value is not None else 0
    return _pad(ctx, x, ints(pads), ctx.attr("mode", "constant"), v,
                ints(axes) if axes is not None else None)
