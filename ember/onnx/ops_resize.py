"""ONNX resampling op handlers: Resize, Upsample, GridSample, AffineGrid and CenterCropPad
(registered into `ops.OPS` when `ops` is imported).

Resize is separable: for each resized axis the source taps and their weights depend only on the
sizes, scales, roi and attributes, so they are computed in numpy as an (out, in) weight matrix
(or, for nearest, an index vector) and applied to the data with ember ops.
"""
from __future__ import annotations

import math

import numpy as np

from .. import api as E
from .._core import dtypes as dt
from ..ops import lax
from .ops import _ax, const, register, static

_MODES = ("align_corners", "asymmetric", "tf_crop_and_resize", "pytorch_half_pixel", "half_pixel",
          "half_pixel_symmetric")


# ------------------------------------------------------------------ coefficients
def _nearest(rule):
    def coeffs(r, scale):
        if r == 1 or float(r).is_integer():
            return np.array([0.0, 1.0])
        if rule == "round_prefer_floor":
            return np.array([r <= 0.5, r > 0.5], np.float64)
        if rule == "round_prefer_ceil":
            return np.array([r < 0.5, r >= 0.5], np.float64)
        if rule == "floor":
            return np.array([1.0, 0.0])
        if rule == "ceil":
            return np.array([0.0, 1.0])
        if rule == "simple":  # Resize-10 / Upsample: floor when upsampling, ceil when downsampling
            return np.array([1.0, 0.0]) if scale >= 1 else np.array([0.0, 1.0])
        raise ValueError(rule)
    return coeffs


def _linear(r, scale):
    return np.array([1 - r, r])


def _linear_aa(r, scale):
    scale = min(scale, 1.0)
    start = int(np.floor(-1 / scale) + 1)
    args = (np.arange(start, start + 2 - 2 * start) - r) * scale
    c = np.clip(1 - np.abs(args), 0, 1)
    return c / c.sum()


def _cubic(a):
    def coeffs(r, scale):
        return np.array([((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                         ((a + 2) * r - (a + 3)) * r * r + 1,
                         ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1,
                         ((a * ((1 - r) + 1) - 5 * a) * ((1 - r) + 1) + 8 * a) * ((1 - r) + 1) - 4 * a])
    return coeffs


def _cubic_aa(a):
    def k(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a if x < 2 else 0.0

    def coeffs(r, scale):
        scale = min(scale, 1.0)
        i0 = int(np.floor(-2 / scale) + 1)
        c = np.array([k(scale * (i - r)) for i in range(i0, 2 - i0)])
        return c / c.sum()
    return coeffs


def _source_coords(ctm, n_in, n_out, scale, roi):
    """Source coordinate of each output index along one axis, and the tf_crop_and_resize outside mask."""
    y = np.arange(n_out, dtype=np.float64)
    width = scale * n_in
    outside = None
    if ctm == "align_corners":
        x = np.zeros(n_out) if width == 1 else y * (n_in - 1) / (width - 1)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "tf_crop_and_resize":
        lo, hi = roi
        x = np.full(n_out, (hi - lo) * (n_in - 1) / 2) if width == 1 else y * (hi - lo) * (n_in - 1) / (width - 1)
        x = x + lo * (n_in - 1)
        outside = (x < 0) | (x > n_in - 1)
    elif ctm == "pytorch_half_pixel":
        x = np.full(n_out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    else:  # half_pixel_symmetric
        x = n_in / 2 * (1 - n_out / width) + (y + 0.5) / scale - 0.5
    return x, outside


def _taps(coeff_fn, ctm, n_in, n_out, scale, roi, exclude_outside):
    """(indices (out, n) clamped into [0, n_in), weights (out, n), outside mask or None) for one axis."""
    x, outside = _source_coords(ctm, n_in, n_out, scale, roi)
    xi = np.floor(x)
    ratio = np.where(x == xi, 1.0, x - xi)
    w = np.stack([np.asarray(coeff_fn(float(r), scale), np.float64) for r in ratio]) if n_out else np.zeros((0, 2))
    n = w.shape[1]
    pad = int(math.ceil(n / 2))
    xp = x + pad
    pp = np.floor(xp)
    frac = xp - pp
    if n % 2 == 0:
        off = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        off = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    idx = (pp + off).astype(np.int64)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        s = w.sum(-1, keepdims=True)
        w = w / np.where(s == 0, 1.0, s)
    return np.clip(idx, 0, n_in - 1), w, outside


def _apply_axis(x, axis, idx, w, outside, extrapolation):
    """Resample `x` along `axis` with taps `idx` and weights `w` (gather when each row picks one tap)."""
    nd = x.ndim
    one_hot = np.all((w == 0) | (w == 1), axis=1) & (w.sum(1) == 1) if w.size else np.ones(len(w), bool)
    if one_hot.all():
        y = lax.gather(x, const(idx[np.arange(len(idx)), np.argmax(w, 1)].astype(np.int64)), axis)
    else:
        mat = np.zeros((len(idx), x.shape[axis]), np.float64)
        np.add.at(mat, (np.repeat(np.arange(len(idx)), idx.shape[1]), idx.reshape(-1)), w.reshape(-1))
        y = lax.dot_general(x, const(mat.astype(x.dtype.np)), ((axis,), (1,)))  # resized axis last
        perm = list(range(nd - 1))
        perm.insert(axis, nd - 1)
        y = lax.transpose(y, perm)
    if outside is not None and outside.any():
        shape = [1] * nd
        shape[axis] = len(outside)
        y = lax.select(const(outside.reshape(shape)), lax.full((), extrapolation, y.dtype), y)
    return y


def resize_nd(ctx, x, scales, sizes, roi, coeff_fn, ctm, axes=None):
    """Resize `x` over `axes` to `sizes` (or by `scales`), one separable pass per axis."""
    r = x.ndim
    axes = list(range(r)) if axes is None else [_ax(a, r) for a in axes]
    full_scale, full_size = [1.0] * r, list(x.shape)
    if sizes is not None:
        for a, s in zip(axes, sizes):
            full_size[a] = int(s)
        full_scale = [full_size[i] / x.shape[i] if x.shape[i] else 1.0 for i in range(r)]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            if policy not in ("not_larger", "not_smaller"):
                raise ctx.unsupported(f"keep_aspect_ratio_policy={policy!r}")
            pick = min if policy == "not_larger" else max
            s = pick(full_scale[a] for a in axes)
            full_scale = [s if i in axes else 1.0 for i in range(r)]
            full_size = [int(s * x.shape[i] + 0.5) if i in axes else x.shape[i] for i in range(r)]
    else:
        sc = np.asarray(scales)
        for a, s in zip(axes, sc):
            full_scale[a] = float(s)
        full_size = [int(v) for v in (np.array(full_scale, sc.dtype) * np.array(x.shape))]
    full_roi = None
    if roi is not None and roi.size:
        full_roi = [0.0] * r + [1.0] * r
        k = len(axes)
        for i, a in enumerate(axes):
            full_roi[a], full_roi[r + a] = float(roi[i]), float(roi[k + i])
    if ctm == "tf_crop_and_resize" and full_roi is None:
        raise ctx.unsupported("tf_crop_and_resize without roi")
    work = x.dtype in (dt.float16, dt.float32, dt.bfloat16)
    y = E.convert(x, dt.float64) if work else x
    ev = ctx.attr("extrapolation_value", 0.0)
    for a in axes:
        sc, n_out = full_scale[a], full_size[a]
        a_roi = None if full_roi is None else (full_roi[a], full_roi[a + r])
        if math.isclose(sc, 1.0) and n_out == y.shape[a] and (a_roi is None or (
                math.isclose(a_roi[0], 0.0) and math.isclose(a_roi[1], 1.0))):
            continue
        if sc <= 0:
            raise ctx.unsupported(f"scale {sc} on axis {a}")
        idx, w, outside = _taps(coeff_fn, ctm, y.shape[a], n_out, sc, a_roi, ctx.attr("exclude_outside", 0))
        if y.dtype.kind != "f" and not np.all((w == 0) | (w == 1)):
            raise ctx.unsupported(f"interpolating a {y.dtype.name} tensor")
        y = _apply_axis(y, a, idx, w, outside, ev)
    return E.convert(y, x.dtype) if work else y


def _coeff_fn(ctx, mode, nearest_rule):
    aa = ctx.attr("antialias", 0)
    if mode == "nearest":
        if aa:
            raise ctx.unsupported("antialias with mode='nearest'")
        if nearest_rule not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple"):
            raise ctx.unsupported(f"nearest_mode={nearest_rule!r}")
        return _nearest(nearest_rule)
    if mode == "linear":
        return _linear_aa if aa else _linear
    if mode == "cubic":
        a = ctx.attr("cubic_coeff_a", -0.75)
        return _cubic_aa(a) if aa else _cubic(a)
    raise ctx.unsupported(f"mode={mode!r}")


@register("Resize", since=10)
def resize_10(ctx, x, scales):
    """Resize-10: scales only, asymmetric coordinates (as Upsample)."""
    mode = ctx.attr("mode", "nearest")
    return resize_nd(ctx, x, static(scales).reshape(-1), None, None, _coeff_fn(ctx, mode, "simple"), "asymmetric")


@register("Resize", since=11)
def resize(ctx, x, roi=None, scales=None, sizes=None):
    """Resize-11 to 19: nearest/linear/cubic, every coordinate transformation mode, axes, antialias."""
    mode = ctx.attr("mode", "nearest")
    ctm = ctx.attr("coordinate_transformation_mode", "half_pixel")
    if ctm not in _MODES:
        raise ctx.unsupported(f"coordinate_transformation_mode={ctm!r}")
    fn = _coeff_fn(ctx, mode, ctx.attr("nearest_mode", "round_prefer_floor"))
    sc = static(scales).reshape(-1) if scales is not None else None
    sz = [int(v) for v in static(sizes).reshape(-1)] if sizes is not None else None
    if sz is not None and len(sz) == 0:
        sz = None
    if sc is not None and sc.size == 0:
        sc = None
    if (sc is None) == (sz is None):
        raise ctx.unsupported("both or neither of scales and sizes")
    rv = static(roi).reshape(-1).astype(np.float64) if roi is not None else None
    return resize_nd(ctx, x, sc, sz, rv, fn, ctm, ctx.attr("axes"))


@register("Upsample")
def upsample_attr(ctx, x):
    """Upsample-1/7: scales as an attribute."""
    mode = ctx.attr("mode", "nearest")
    return resize_nd(ctx, x, np.asarray(ctx.attr("scales"), np.float32), None, None,
                     _coeff_fn(ctx, "linear" if mode == "bilinear" else mode, "simple"), "asymmetric")


@register("Upsample", since=9)
def upsample(ctx, x, scales):
    """Upsample-9: scales as an input."""
    mode = ctx.attr("mode", "nearest")
    return resize_nd(ctx, x, static(scales).reshape(-1), None, None, _coeff_fn(ctx, mode, "simple"), "asymmetric")


# ------------------------------------------------------------------ GridSample, AffineGrid
def _reflect(x, lo, hi):
    """Reflect coordinates outside [lo, hi] back in by the near border, repeatedly."""
    rng = hi - lo
    below, above = lax.lt(x, lo), lax.gt(x, hi)
    dx = lax.select(below, lax.sub(lo, x), lax.sub(x, hi))
    n = lax.trunc(lax.div(dx, rng))
    r = lax.sub(dx, lax.mul(n, rng))
    even = lax.eq(lax.rem(n, 2), 0)
    lo_side = lax.select(even, lax.add(lo, r), lax.sub(hi, r))
    hi_side = lax.select(even, lax.sub(hi, r), lax.add(lo, r))
    return lax.select(below, lo_side, lax.select(above, hi_side, x))


def _cubic_w(t, a=-0.75):
    """Keys cubic weights of the taps at -1, 0, 1, 2 for fractional offset t."""
    def near(s):
        return lax.add(lax.mul(lax.mul(lax.sub(lax.mul(s, a + 2), a + 3), s), s), 1)

    def far(s):
        return lax.sub(lax.mul(lax.add(lax.mul(lax.sub(lax.mul(s, a), 5 * a), s), 8 * a), s), 4 * a)
    u = lax.sub(1, t)
    return [far(lax.add(t, 1)), near(t), near(u), far(lax.add(u, 1))]


@register("GridSample", since=16)
def grid_sample(ctx, x, grid):
    """Sample x (N, C, *S) at the normalised grid (N, *O, nd): nearest/linear/cubic, zeros/border/reflection."""
    mode = ctx.attr("mode", "linear")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)  # GridSample-16's names
    pad = ctx.attr("padding_mode", "zeros")
    align = ctx.attr("align_corners", 0)
    if mode not in ("nearest", "linear", "cubic"):
        raise ctx.unsupported(f"mode={mode!r}")
    if pad not in ("zeros", "border", "reflection"):
        raise ctx.unsupported(f"padding_mode={pad!r}")
    if mode == "cubic" and pad == "border":  # onnx's reference clamps the coordinate, onnxruntime each tap
        raise ctx.unsupported("mode='cubic' with padding_mode='border' (the reference and onnxruntime disagree)")
    N, C = x.shape[:2]
    S = list(x.shape[2:])
    nd = len(S)
    O = list(grid.shape[1:-1])
    P = int(np.prod(O))
    g = lax.reshape(grid, (N, P, nd))
    taps_per_dim = []  # per spatial dim: list of (int index tensor (N, P), weight tensor or None)
    for i, L in enumerate(S):
        n = lax.reshape(lax.slice(g, (0, 0, nd - 1 - i), (N, P, nd - i), (1, 1, 1)), (N, P))
        v = lax.mul(lax.add(n, 1), (L - 1) / 2.0) if align else lax.div(lax.sub(lax.mul(lax.add(n, 1), L), 1), 2.0)
        lo, hi = (0.0, L - 1.0) if align else (-0.5, L - 0.5)
        if mode == "nearest":
            v = lax.round(v)
        if pad == "border":
            v = lax.min(lax.max(v, 0.0), L - 1.0)
        elif pad == "reflection":
            v = _reflect(v, lo, hi)
        if mode == "nearest":
            taps = [(v, None)]
        else:
            f = lax.floor(v)
            t = lax.sub(v, f)
            if mode == "linear":
                taps = [(f, lax.sub(1, t)), (lax.add(f, 1), t)]
            else:
                taps = [(lax.add(f, k - 1), w) for k, w in enumerate(_cubic_w(t))]
        taps_per_dim.append([(_tap_index(p, L, lo, hi, pad), w) for p, w in taps])
    xf = lax.reshape(x, (N, C, int(np.prod(S))))
    strides = [int(np.prod(S[i + 1:])) for i in range(nd)]
    out = None
    for combo in np.ndindex(*[len(t) for t in taps_per_dim]):
        lin, ok, w = None, None, None
        for i, k in enumerate(combo):
            (idx, valid), wk = taps_per_dim[i][k]
            term = lax.mul(idx, strides[i])
            lin = term if lin is None else lax.add(lin, term)
            ok = valid if ok is None else lax.bitwise_and(ok, valid)
            if wk is not None:
                w = wk if w is None else lax.mul(w, wk)
        idx = lax.broadcast_to(lax.reshape(lin, (N, 1, P)), (N, C, P))
        val = lax.take_along_axis(xf, idx, 2)
        if w is not None:
            val = lax.mul(val, lax.reshape(E.convert(w, x.dtype), (N, 1, P)))
        if ok is not None:
            val = lax.select(lax.reshape(ok, (N, 1, P)), val, lax.full((), 0, x.dtype))
        out = val if out is None else lax.add(out, val)
    return lax.reshape(out, (N, C) + tuple(O))


def _tap_index(p, L, lo, hi, pad):
    """(int64 index clamped into [0, L), in-range mask or None) of a tap at float position p."""
    if pad == "zeros":
        ok = lax.bitwise_and(lax.ge(p, 0), lax.le(p, L - 1))
        return E.convert(lax.min(lax.max(p, 0.0), L - 1.0), dt.int64), ok
    if pad == "border":
        return E.convert(lax.min(lax.max(p, 0.0), L - 1.0), dt.int64), None
    q = lax.trunc(_reflect(p, lo, hi))
    return E.convert(lax.min(lax.max(q, 0.0), L - 1.0), dt.int64), None


@register("AffineGrid", since=20)
def affine_grid(ctx, theta, size):
    """Sampling grid (N, *S, nd) of theta (N, nd, nd+1) applied to the normalised output coordinates."""
    sz = [int(v) for v in static(size).reshape(-1)]
    N, S = sz[0], sz[2:]
    nd = len(S)
    if nd not in (2, 3):
        raise ctx.unsupported(f"{nd} spatial dimensions")
    align = ctx.attr("align_corners", 0)
    axes = []
    for L in S:
        if align:
            a = np.linspace(-1.0, 1.0, L) if L > 1 else np.array([-1.0])
        else:
            a = (np.arange(L) * 2.0 + 1) / L - 1
        axes.append(a)
    mesh = np.meshgrid(*axes, indexing="ij")  # per spatial dim, in (D,) H, W order
    homo = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(int(np.prod(S)))], 0)  # (nd+1, P): x, y, (z), 1
    base = const(homo.astype(theta.dtype.np))
    out = E.matmul(theta, base)  # (N, nd, P)
    return lax.reshape(lax.transpose(out, (0, 2, 1)), (N,) + tuple(S) + (nd,))
