"""Resampling and pooling forms of torch.nn.functional, written in primitives (PI-3): interpolate,
max / average / LP pooling in 1, 2 and 3 spatial dims, adaptive average / max pooling, max pooling
with indices and max unpooling.

Re-exported from `ember.nn.functional` (through `functional_spatial`; `F.max_pool2d` and
`F.avg_pool2d`, defined there, call the N-d forms here). The geometry is worked out
in numpy at trace time, with PyTorch's CPU formulas and in its arithmetic precision (the nearest
source index floor(dst * scale) in float32, the linear / cubic source positions in the input's
float type), and becomes constant index and weight tensors:

- interpolate resamples one spatial dim at a time: a `gather` per tap along that dim, times the
  tap's weights (nearest has one tap and no weight, linear two, cubic four);
- every pool is one function of the number of spatial dims nd (`_max_pool`, `_avg_pool`,
  `_max_pool_with_indices`, `_adaptive_max_pool`, `_max_unpool`, `_lp_pool`); the {1,2,3}d names
  only pick nd. Max pooling is one `reduce_window_max` over the -inf padded (N, C, *spatial) input
  (its VJP `select_and_scatter_add`), or, with a dilated window, a scan over the window's strided
  taps (`select` where a tap is greater or NaN, so the gradient goes to PyTorch's element); average
  pooling a `reduce_window_sum` divided by the window size or a windowed count; LP pooling is
  PyTorch's composite on average pooling;
- adaptive pooling gathers each output's window [floor(i in / out), ceil((i + 1) in / out)),
  padded to the longest window with a mask, and reduces it;
- max pooling with indices (and adaptive max pooling) builds the table of every window's flat
  per-channel spatial positions (row-major over the outputs, then the taps), picks, per window,
  PyTorch's index (the last NaN, else the first maximum, in row-major window order) with integer
  reductions, then `take_along_axis` reads the value, so the gradient flows to that element only,
  as in PyTorch; max unpooling scatters the values back to those flat indices.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from ..api.activations import relu
from ..api.precision import accumulate_in_float32
from ..ops import lax
from ..tensor import Tensor, from_numpy
from .functional import _batched, _pair, _pool_geometry

__all__ = ["interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
           "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
           "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
           "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices",
           "max_pool1d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
           "avg_pool1d", "avg_pool3d", "lp_pool1d", "lp_pool2d", "lp_pool3d",
           "max_unpool1d", "max_unpool2d", "max_unpool3d"]

_LINEAR_DIMS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}
_MODES = ("nearest", "nearest-exact", "area") + tuple(_LINEAR_DIMS)
_CUBIC_A = -0.75


def _const(a: np.ndarray, like: Tensor | None = None) -> Tensor:
    t = from_numpy(np.ascontiguousarray(a))
    return t.to(like.dtype) if like is not None and t.dtype is not like.dtype else t


def _along(w: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A 1-D array shaped to broadcast along `axis` of an ndim-dim tensor (trailing dims only)."""
    return w.reshape(w.shape + (1,) * (ndim - axis - 1))


# ---------------------------------------------------------------- interpolate: PyTorch's index rules
def _scale(n_in: int, n_out: int, align_corners: bool, scale, f):
    """area_pixel_compute_scale: the source step per output step, in float type f."""
    if align_corners:
        return f(n_in - 1) / f(n_out - 1) if n_out > 1 else f(0)
    return f(1.0 / scale) if scale is not None and scale > 0 else f(n_in) / f(n_out)


def _nearest_taps(n_in: int, n_out: int, scale, exact: bool):
    """[(index, None)]: floor(dst * scale) ('nearest') or floor((dst + 0.5) * scale) ('nearest-exact'),
    with scale in float32 as PyTorch's kernels compute it; clamped to n_in - 1."""
    dst = np.arange(n_out)
    if not exact and n_out == n_in:
        return [(dst, None)]
    if not exact and n_out == 2 * n_in:
        return [(dst >> 1, None)]
    s = _scale(n_in, n_out, False, scale, np.float32)
    if exact:
        src = np.floor(((dst + 0.5) * np.float64(s)).astype(np.float32))
    else:
        src = np.floor(dst.astype(np.float32) * s)
    return [(np.minimum(src.astype(np.int64), n_in - 1), None)]


def _linear_taps(n_in: int, n_out: int, align_corners: bool, scale, f):
    """[(i0, 1 - l), (i1, l)] from compute_source_index_and_lambda (identity when the sizes match)."""
    if n_out == n_in:
        return None
    s = _scale(n_in, n_out, align_corners, scale, f)
    dst = np.arange(n_out).astype(f)
    src = s * dst if align_corners else np.maximum(s * (dst + f(0.5)) - f(0.5), f(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src - i0.astype(f), f(0), f(1)).astype(f)
    i1 = i0 + (i0 < n_in - 1)
    return [(i0, (f(1) - lam).astype(f)), (i1, lam)]


def _cubic_taps(n_in: int, n_out: int, align_corners: bool, scale, f):
    """Four clamped taps with Keys' cubic convolution coefficients (A = -0.75), as PyTorch's bicubic."""
    s = _scale(n_in, n_out, align_corners, scale, f)
    dst = np.arange(n_out).astype(f)
    src = s * dst if align_corners else s * (dst + f(0.5)) - f(0.5)
    i = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    t = np.clip(src - i.astype(f), f(0), f(1)).astype(f)
    a = f(_CUBIC_A)

    def cc1(x):
        return ((a + f(2)) * x - (a + f(3))) * x * x + f(1)

    def cc2(x):
        return ((a * x - f(5) * a) * x + f(8) * a) * x - f(4) * a
    x2 = f(1) - t
    coeffs = (cc2(t + f(1)), cc1(t), cc1(x2), cc2(x2 + f(1)))
    return [(np.clip(i - 1 + j, 0, n_in - 1), coeffs[j].astype(f)) for j in range(4)]


def _apply_taps(x: Tensor, axis: int, taps) -> Tensor:
    out = None
    for idx, w in taps:
        g = lax.gather(x, _const(idx), axis)
        if w is not None:
            g = lax.mul(g, _const(_along(w, axis, x.ndim), x))
        out = g if out is None else lax.add(out, g)
    return out


def _output_geometry(input: Tensor, nd: int, size, scale_factor, recompute_scale_factor):
    """(output sizes, scales passed to the kernels) as F.interpolate computes them."""
    spatial = input.shape[2:]
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
        sizes = tuple(int(v) for v in _pair(size, nd))
        if len(sizes) != nd:
            raise op_error(ShapeError, "interpolate", f"size {size} does not match the {nd} spatial dims of input "
                           f"shape {input.shape}")
        scales = (None,) * nd
    elif scale_factor is not None:
        sf = tuple(float(v) for v in _pair(scale_factor, nd))
        if len(sf) != nd:
            raise op_error(ShapeError, "interpolate", f"scale_factor {scale_factor} does not match the {nd} spatial "
                           f"dims of input shape {input.shape}")
        sizes = tuple(int(math.floor(n * v)) for n, v in zip(spatial, sf))
        scales = (None,) * nd if recompute_scale_factor else sf
    else:
        raise ValueError("either size or scale_factor should be defined")
    if any(n <= 0 for n in spatial) or any(n <= 0 for n in sizes):
        raise op_error(ShapeError, "interpolate", f"input and output sizes should be greater than 0, but got input "
                       f"shape {input.shape} and output size {sizes}")
    return sizes, scales


@accumulate_in_float32("input")
def interpolate(input: Tensor, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    """Resample the spatial dims of (N, C, *spatial) to `size` or by `scale_factor` (PyTorch's rules).

    Modes: 'nearest' (source floor(dst * scale)), 'nearest-exact', 'linear' (3-D input),
    'bilinear' / 'bicubic' (4-D), 'trilinear' (5-D), 'area' (adaptive average pooling).
    align_corners (linear modes only) maps the corner pixels' centres onto each other."""
    if mode not in _MODES:
        raise ValueError(f"interpolate: mode must be one of {', '.join(_MODES)}, got {mode!r}")
    nd = input.ndim - 2
    if nd < 1:
        raise op_error(ShapeError, "interpolate", f"expects an input (N, C, *spatial) with 1 to 3 spatial dims, got "
                       f"shape {input.shape}")
    if mode in _LINEAR_DIMS:
        if _LINEAR_DIMS[mode] != nd:
            raise op_error(ShapeError, "interpolate", f"got a {input.ndim}-D input of shape {input.shape}, but "
                           f"mode {mode!r} needs a {_LINEAR_DIMS[mode] + 2}-D input")
        if input.dtype.kind != "f":
            raise op_error(DTypeError, "interpolate", f"mode {mode!r} needs a floating input, got {input.dtype.name}")
        align_corners = bool(align_corners)
    elif align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if antialias:
        raise NotImplementedError("interpolate(antialias=True) is not supported in ember")
    sizes, scales = _output_geometry(input, nd, size, scale_factor, recompute_scale_factor)
    if mode == "area":
        return _adaptive_avg(input, sizes, "interpolate")
    f = np.float64 if input.dtype is dt.float64 else np.float32
    x = input
    for i in reversed(range(nd)):  # the last dim first, as PyTorch's separable loops
        axis, n_in, n_out = 2 + i, input.shape[2 + i], sizes[i]
        if mode in ("nearest", "nearest-exact"):
            taps = _nearest_taps(n_in, n_out, scales[i], mode == "nearest-exact")
            if n_out == n_in and mode == "nearest":
                continue
        elif mode == "bicubic":
            taps = _cubic_taps(n_in, n_out, align_corners, scales[i], f)
        else:
            taps = _linear_taps(n_in, n_out, align_corners, scales[i], f)
            if taps is None:
                continue
        x = _apply_taps(x, axis, taps)
    return x


def upsample(input: Tensor, size=None, scale_factor=None, mode: str = "nearest", align_corners=None) -> Tensor:
    """Deprecated alias of interpolate (PyTorch's F.upsample)."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input: Tensor, size=None, scale_factor=None) -> Tensor:
    """interpolate(mode='nearest')."""
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input: Tensor, size=None, scale_factor=None) -> Tensor:
    """interpolate(mode='bilinear', align_corners=True) (PyTorch's F.upsample_bilinear)."""
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


# ---------------------------------------------------------------- adaptive pooling
def _windows(n_in: int, n_out: int):
    """(index (n_out, K) clamped into range, valid mask, window lengths) of the adaptive windows."""
    i = np.arange(n_out)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    k = int((end - start).max())
    idx = start[:, None] + np.arange(k)[None, :]
    valid = idx < end[:, None]
    return np.minimum(idx, n_in - 1), valid, end - start


def _out_size(op: str, input: Tensor, output_size, nd: int) -> tuple:
    spatial = input.shape[input.ndim - nd:]
    os_ = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * nd
    if len(os_) != nd:
        raise op_error(ShapeError, op, f"output_size {output_size} must have {nd} entries")
    out = tuple(n if o is None else int(o) for n, o in zip(spatial, os_))
    if any(o <= 0 for o in out) or any(n <= 0 for n in spatial):
        raise op_error(ShapeError, op, f"output size {out} and the spatial dims of input shape {input.shape} must be "
                       f"positive")
    return out


def _adaptive_avg(input: Tensor, out: tuple, op: str) -> Tensor:
    """Mean over PyTorch's adaptive windows of the trailing len(out) dims (a reshape where they divide)."""
    if input.dtype.kind != "f":
        raise op_error(DTypeError, op, f"needs a floating input, got {input.dtype.name}")
    nd = len(out)
    x, counts = input, []
    for i in reversed(range(nd)):
        axis = input.ndim - nd + i
        n_in, n_out = x.shape[axis], out[i]
        if n_in == n_out:
            continue
        if n_in % n_out == 0:
            split = x.shape[:axis] + (n_out, n_in // n_out) + x.shape[axis + 1:]
            x = lax.reduce_sum(lax.reshape(x, split), (axis + 1,))
            counts.append((axis, np.full(n_out, n_in // n_out)))
            continue
        idx, valid, cnt = _windows(n_in, n_out)
        g = lax.gather(x, _const(idx.reshape(-1)), axis)
        g = lax.reshape(g, x.shape[:axis] + idx.shape + x.shape[axis + 1:])
        g = lax.select(_const(valid.reshape(valid.shape + (1,) * (g.ndim - axis - 2))), g, 0.0)
        x = lax.reduce_sum(g, (axis + 1,))
        counts.append((axis, cnt))
    if not counts:
        return x
    f = np.float64 if input.dtype is dt.float64 else np.float32
    div = np.ones((1,) * x.ndim, f)
    for axis, cnt in counts:
        div = div * _along(cnt.astype(f), axis, x.ndim)
    if np.all(div == div.flat[0]):
        return lax.div(x, float(div.flat[0]))
    return lax.div(x, _const(div, x))


def _adaptive_avg_pool(input: Tensor, output_size, nd: int, op: str) -> Tensor:
    if input.ndim not in (nd + 1, nd + 2):
        raise op_error(ShapeError, op, f"expects a {nd + 1}-D or {nd + 2}-D input, got shape {input.shape}")
    return _adaptive_avg(input, _out_size(op, input, output_size, nd), op)


def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    """Average-pool (N, C, L) or (C, L) to output_size over PyTorch's adaptive windows."""
    return _adaptive_avg_pool(input, output_size, 1, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average-pool (N, C, H, W) or (C, H, W) to output_size (None keeps that dim) over PyTorch's windows
    [floor(i H / oh), ceil((i + 1) H / oh))."""
    return _adaptive_avg_pool(input, output_size, 2, "adaptive_avg_pool2d")


def adaptive_avg_pool3d(input: Tensor, output_size) -> Tensor:
    """Average-pool (N, C, D, H, W) or (C, D, H, W) to output_size (None keeps that dim)."""
    return _adaptive_avg_pool(input, output_size, 3, "adaptive_avg_pool3d")


# ---------------------------------------------------------------- N-d pooling windows
def _ints(op: str, name: str, v, nd: int, least: int) -> tuple:
    """An int, or a sequence of 1 or nd ints, as nd ints >= least (PyTorch's _single / _pair / _triple)."""
    t = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    if len(t) == 1:
        t = t * nd
    if len(t) != nd or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in t):
        raise op_error(ShapeError, op, f"{name} must be a single int or a tuple of {nd} ints, got {v!r}")
    t = tuple(int(i) for i in t)
    if any(i < least for i in t):
        raise op_error(ShapeError, op, f"{name} must be {'positive' if least else 'non-negative'}, got {t}")
    return t


def _default(v) -> bool:
    return v is None or (isinstance(v, (tuple, list)) and len(v) == 0)


def _window_geometry(op: str, x: Tensor, nd: int, kernel_size, stride, padding, dilation, ceil_mode: bool,
                     shape: tuple):
    """(kernel, stride, padding, dilation, per-dim (lo, hi) pads, output sizes) of a pooling window over
    the spatial dims of batched x; `shape` (the caller's input shape) is what the errors name."""
    k = _ints(op, "kernel_size", kernel_size, nd, 1)
    s = k if _default(stride) else _ints(op, "stride", stride, nd, 1)
    p = _ints(op, "padding", padding, nd, 0)
    d = _ints(op, "dilation", dilation, nd, 1)
    if any(2 * pp > kk for pp, kk in zip(p, k)):
        raise op_error(ShapeError, op, f"padding {p} should be at most half of kernel_size {k} (input shape "
                       f"{shape})")
    sp = tuple(x.shape[2:])
    pads = _pool_geometry(sp, k, s, p, d, ceil_mode)
    outs = tuple((n + lo + hi - dd * (kk - 1) - 1) // ss + 1 for n, (lo, hi), kk, ss, dd in zip(sp, pads, k, s, d))
    if any(o <= 0 for o in outs):
        raise op_error(ShapeError, op, f"input of shape {shape} is too small for kernel_size {k} (stride {s}, "
                       f"padding {p}, dilation {d}): output size {outs}")
    return k, s, p, d, pads, outs


def _unbatch(t: Tensor, unbatched: bool) -> Tensor:
    return lax.reshape(t, t.shape[1:]) if unbatched else t


def _max_pool(input: Tensor, nd: int, kernel_size, stride, padding, dilation, ceil_mode: bool, op: str) -> Tensor:
    """max_pool{1,2,3}d without indices: one reduce_window "max" over the -inf padded windows (its VJP
    is select_and_scatter_add), or, with a dilated window, a max scan over the window's strided taps."""
    x, unbatched = _batched(input, nd, op)
    k, s, _, d, pads, outs = _window_geometry(op, x, nd, kernel_size, stride, padding, dilation, ceil_mode,
                                              input.shape)
    if any(dd != 1 for dd in d):
        return _unbatch(_dilated_max(x, k, s, d, pads, outs), unbatched)
    out = lax.reduce_window(x, "max", (1, 1) + k, (1, 1) + s, [(0, 0), (0, 0)] + pads, None, (1, 1) + d)
    return _unbatch(out, unbatched)


def _dilated_max(x: Tensor, k: tuple, s: tuple, d: tuple, pads: list, outs: tuple) -> Tensor:
    """Max over dilated windows as a scan over the window's taps, each a strided slice of the -inf
    padded input (reduce_window's gradient does not support window dilation). A tap replaces the
    running maximum where it is greater or NaN: PyTorch's rule (the first maximum, the last NaN), and
    `select` sends the gradient to that tap only."""
    xp = lax.pad(x, float("-inf"), [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads])
    n, c = x.shape[:2]
    best = None
    for tap in itertools.product(*(range(kk) for kk in k)):
        start = (0, 0) + tuple(t * dd for t, dd in zip(tap, d))
        stop = (n, c) + tuple(a + (o - 1) * ss + 1 for a, o, ss in zip(start[2:], outs, s))
        v = lax.slice(xp, start, stop, (1, 1) + s)
        if best is None:
            best = v
            continue
        take = lax.gt(v, best)
        if v.dtype.kind == "f":
            take = lax.bitwise_or(take, lax.isnan(v))
        best = lax.select(take, v, best)
    return best


def _avg_pool(input: Tensor, nd: int, kernel_size, stride, padding, ceil_mode: bool, count_include_pad: bool,
              divisor_override, op: str) -> Tensor:
    """avg_pool{1,2,3}d: a reduce_window "sum" over the zero-padded windows, divided by the window
    size, by divisor_override, or (ceil_mode / count_include_pad=False) by a windowed sum of ones."""
    x, unbatched = _batched(input, nd, op)
    k, s, p, _, pads, _ = _window_geometry(op, x, nd, kernel_size, stride, padding, 1, ceil_mode, input.shape)
    if divisor_override is not None and divisor_override == 0:
        raise op_error(ShapeError, op, "divisor_override must be non-zero")
    win = (1, 1) + k
    strides = (1, 1) + s
    total = lax.reduce_window(x, "sum", win, strides, [(0, 0), (0, 0)] + pads)
    if divisor_override:
        out = lax.div(total, divisor_override)
    elif not ceil_mode and (count_include_pad or not any(p)):
        out = lax.div(total, math.prod(k))
    else:
        # divisor per window: cells inside the input, plus the symmetric padding if counted
        ones = lax.full((1, 1) + tuple(x.shape[2:]), 1, x.dtype)
        if count_include_pad:
            ones = lax.pad(ones, 1, [(0, 0, 0), (0, 0, 0)] + [(pp, pp, 0) for pp in p])
            extra = [(0, 0), (0, 0)] + [(0, hi - pp) for (_, hi), pp in zip(pads, p)]
        else:
            extra = [(0, 0), (0, 0)] + pads
        div = lax.reduce_window(ones, "sum", win, strides, extra)
        out = lax.div(total, div.detach())
    return _unbatch(out, unbatched)


# ---------------------------------------------------------------- max pooling with indices
def _window_table(dims, sizes):
    """The (prod(outs), prod(taps)) table of flat input positions of every window and its valid mask,
    from one (index (out, tap) in range, valid (out, tap)) pair per spatial dim: row-major over the
    output positions, then over the window's taps, as PyTorch's flat per-channel indices."""
    nd = len(sizes)
    table, valid = np.zeros((), np.int64), np.ones((), bool)
    for i, ((idx, ok), n) in enumerate(zip(dims, sizes)):
        shape = [1] * (2 * nd)
        shape[i], shape[nd + i] = idx.shape
        table = table * n + idx.reshape(shape)
        valid = valid & ok.reshape(shape)
    p = math.prod(i.shape[0] for i, _ in dims)
    return table.reshape(p, -1), valid.reshape(p, -1)


def _indexed_max(x: Tensor, table: np.ndarray, valid: np.ndarray, out_sp: tuple, op: str):
    """Per window (a row of `table`: flat spatial positions, `valid` marking real ones): PyTorch's
    argmax (the last NaN, else the first maximum) and the value there, both shaped (N, C, *out_sp)."""
    if x.dtype.kind != "f":
        raise op_error(DTypeError, op, f"needs a floating input, got {x.dtype.name}")
    n, c = x.shape[:2]
    p, k = table.shape
    flat = lax.reshape(x, (n, c, math.prod(x.shape[2:])))
    g = lax.reshape(lax.gather(flat.detach(), _const(table.reshape(-1)), 2), (n, c, p, k))
    vm = _const(valid)
    v = lax.select(vm, g, lax.full((), float("-inf"), g.dtype))
    pos = lax.iota((n, c, p, k), 3, dt.int64)
    last_nan = lax.reduce_max(lax.select(lax.isnan(v), pos, -1), (3,))
    top = lax.keepdims(lax.reduce_max(v, (3,)), (3,))
    hit = lax.bitwise_and(lax.eq(v, top), vm)
    first = lax.reduce_min(lax.select(hit, pos, k), (3,))
    chosen = lax.select(lax.ge(last_nan, 0), last_nan, lax.min(first, k - 1))
    tb = lax.broadcast_in_dim(_const(table), (n, c, p, k), (2, 3))
    index = lax.reshape(lax.take_along_axis(tb, lax.reshape(chosen, (n, c, p, 1)), 3), (n, c, p))
    value = lax.take_along_axis(flat, index, 2)
    return lax.reshape(value, (n, c) + out_sp), lax.reshape(index, (n, c) + out_sp)


def _max_pool_with_indices(input: Tensor, nd: int, kernel_size, stride, padding, dilation, ceil_mode: bool,
                           op: str):
    x, unbatched = _batched(input, nd, op)
    k, s, p, d, _, outs = _window_geometry(op, x, nd, kernel_size, stride, padding, dilation, ceil_mode,
                                           input.shape)
    dims = []
    for o, ss, pp, kk, dd, n in zip(outs, s, p, k, d, x.shape[2:]):
        q = np.arange(o)[:, None] * ss - pp + np.arange(kk)[None, :] * dd  # input positions (out, tap)
        dims.append((np.clip(q, 0, n - 1), (q >= 0) & (q < n)))
    table, valid = _window_table(dims, x.shape[2:])
    out, idx = _indexed_max(x, table, valid, outs, op)
    return _unbatch(out, unbatched), _unbatch(idx, unbatched)


def _adaptive_max_pool(input: Tensor, output_size, nd: int, op: str):
    x, unbatched = _batched(input, nd, op)
    outs = _out_size(op, x, output_size, nd)
    dims = [_windows(n, o)[:2] for n, o in zip(x.shape[2:], outs)]
    table, valid = _window_table(dims, x.shape[2:])
    out, idx = _indexed_max(x, table, valid, outs, op)
    return _unbatch(out, unbatched), _unbatch(idx, unbatched)


def adaptive_max_pool1d_with_indices(input: Tensor, output_size, return_indices: bool = True):
    """(max, index of the max along L) over PyTorch's adaptive windows of (N, C, L) or (C, L)."""
    return _adaptive_max_pool(input, output_size, 1, "adaptive_max_pool1d")


def adaptive_max_pool2d_with_indices(input: Tensor, output_size, return_indices: bool = True):
    """(max, flat H * W index of the max) over PyTorch's adaptive windows of (N, C, H, W) or (C, H, W)."""
    return _adaptive_max_pool(input, output_size, 2, "adaptive_max_pool2d")


def adaptive_max_pool3d_with_indices(input: Tensor, output_size, return_indices: bool = True):
    """(max, flat D * H * W index of the max) over PyTorch's adaptive windows of (N, C, D, H, W) or
    (C, D, H, W)."""
    return _adaptive_max_pool(input, output_size, 3, "adaptive_max_pool3d")


def adaptive_max_pool1d(input: Tensor, output_size, return_indices: bool = False):
    """Max over PyTorch's adaptive windows; with return_indices also the index of each max."""
    out, idx = adaptive_max_pool1d_with_indices(input, output_size)
    return (out, idx) if return_indices else out


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """Max over PyTorch's adaptive windows; with return_indices also the flat H * W index of each max."""
    out, idx = adaptive_max_pool2d_with_indices(input, output_size)
    return (out, idx) if return_indices else out


def adaptive_max_pool3d(input: Tensor, output_size, return_indices: bool = False):
    """Max over PyTorch's adaptive windows; with return_indices also the flat D * H * W index of each max."""
    out, idx = adaptive_max_pool3d_with_indices(input, output_size)
    return (out, idx) if return_indices else out


def max_pool1d_with_indices(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode: bool = False, return_indices: bool = True):
    """(max, index along L of the max) over the windows of max_pool1d (padding never wins)."""
    return _max_pool_with_indices(input, 1, kernel_size, stride, padding, dilation, ceil_mode, "max_pool1d")


def max_pool2d_with_indices(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode: bool = False, return_indices: bool = True):
    """(max, flat H * W index of the max) over the windows of max_pool2d (padding never wins)."""
    return _max_pool_with_indices(input, 2, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")


def max_pool3d_with_indices(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode: bool = False, return_indices: bool = True):
    """(max, flat D * H * W index of the max) over the windows of max_pool3d (padding never wins)."""
    return _max_pool_with_indices(input, 3, kernel_size, stride, padding, dilation, ceil_mode, "max_pool3d")


def max_pool1d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Max over windows of (N, C, L) or (C, L); padding counts as -inf."""
    if return_indices:
        return max_pool1d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_pool(input, 1, kernel_size, stride, padding, dilation, ceil_mode, "max_pool1d")


def max_pool3d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Max over windows of (N, C, D, H, W) or (C, D, H, W); padding counts as -inf."""
    if return_indices:
        return max_pool3d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_pool(input, 3, kernel_size, stride, padding, dilation, ceil_mode, "max_pool3d")


def avg_pool1d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """Mean over windows of (N, C, L) or (C, L); padding counts as 0 and, if count_include_pad, in the
    divisor."""
    return _avg_pool(input, 1, kernel_size, stride, padding, ceil_mode, count_include_pad, None, "avg_pool1d")


def avg_pool3d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override=None) -> Tensor:
    """Mean over windows of (N, C, D, H, W) or (C, D, H, W); padding counts as 0 and, if
    count_include_pad, in the divisor."""
    return _avg_pool(input, 3, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                     "avg_pool3d")


# ---------------------------------------------------------------- LP pooling
def _lp_pool(input: Tensor, nd: int, norm_type, kernel_size, stride, ceil_mode: bool, op: str) -> Tensor:
    """PyTorch's composite: (sum over the window of x ** p) ** (1 / p), as avg_pool * window size."""
    k = _ints(op, "kernel_size", kernel_size, nd, 1)
    out = _avg_pool(lax.pow(input, float(norm_type)), nd, k, stride, 0, ceil_mode, True, None, op)
    out = lax.mul(lax.sign(out), relu(lax.abs(out)))
    return lax.pow(lax.mul(out, math.prod(k)), 1.0 / float(norm_type))


def lp_pool1d(input: Tensor, norm_type, kernel_size, stride=None, ceil_mode: bool = False) -> Tensor:
    """Power-average pooling over (N, C, L) or (C, L): (sum of x ** norm_type) ** (1 / norm_type)."""
    return _lp_pool(input, 1, norm_type, kernel_size, stride, ceil_mode, "lp_pool1d")


def lp_pool2d(input: Tensor, norm_type, kernel_size, stride=None, ceil_mode: bool = False) -> Tensor:
    """Power-average pooling over (N, C, H, W) or (C, H, W)."""
    return _lp_pool(input, 2, norm_type, kernel_size, stride, ceil_mode, "lp_pool2d")


def lp_pool3d(input: Tensor, norm_type, kernel_size, stride=None, ceil_mode: bool = False) -> Tensor:
    """Power-average pooling over (N, C, D, H, W) or (C, D, H, W)."""
    return _lp_pool(input, 3, norm_type, kernel_size, stride, ceil_mode, "lp_pool3d")


# ---------------------------------------------------------------- max unpooling
def _unpool_size(op: str, input_sp, k, s, p, output_size):
    nd = len(k)
    default = tuple((n - 1) * ss - 2 * pp + kk for n, ss, pp, kk in zip(input_sp, s, p, k))
    if output_size is None:
        return default
    want = tuple(int(v) for v in output_size)
    if len(want) not in (nd, nd + 1, nd + 2):
        raise ValueError(f"{op}: output_size should be of length {nd}, {nd + 1} or {nd + 2}, got {output_size}")
    want = want[-nd:]
    for dd, (o, de, ss) in enumerate(zip(want, default, s)):
        if not de - ss < o < de + ss:
            raise ValueError(f'invalid output_size "{tuple(want)}" (dim {dd} must be between {de - ss} and '
                             f'{de + ss})')
    return want


def _max_unpool(input: Tensor, indices: Tensor, nd: int, kernel_size, stride, padding, output_size,
                op: str) -> Tensor:
    """Each value written at its flat per-channel spatial index (scatter_along_axis), zeros elsewhere."""
    x, unbatched = _batched(input, nd, op)
    if tuple(indices.shape) != tuple(input.shape):
        raise op_error(ShapeError, op, f"indices of shape {indices.shape} must match input of shape "
                       f"{input.shape}")
    if indices.dtype.kind not in "iu":
        raise op_error(DTypeError, op, f"indices must be integers, got {indices.dtype.name}")
    k = _ints(op, "kernel_size", kernel_size, nd, 1)
    s = k if _default(stride) else _ints(op, "stride", stride, nd, 1)
    outs = _unpool_size(op, x.shape[2:], k, s, _ints(op, "padding", padding, nd, 0), output_size)
    n, c = x.shape[:2]
    size = math.prod(x.shape[2:])
    idx = lax.reshape(indices, (n, c, size))
    out = lax.scatter_along_axis(lax.full((n, c, math.prod(outs)), 0, x.dtype), idx, lax.reshape(x, (n, c, size)), 2)
    return _unbatch(lax.reshape(out, (n, c) + tuple(outs)), unbatched)


def max_unpool1d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    """The partial inverse of max_pool1d: each value written at its index along L, zeros elsewhere."""
    return _max_unpool(input, indices, 1, kernel_size, stride, padding, output_size, "max_unpool1d")


def max_unpool2d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    """The partial inverse of max_pool2d: each value written at its flat H * W index, zeros elsewhere."""
    return _max_unpool(input, indices, 2, kernel_size, stride, padding, output_size, "max_unpool2d")


def max_unpool3d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    """The partial inverse of max_pool3d: each value written at its flat D * H * W index, zeros elsewhere."""
    return _max_unpool(input, indices, 3, kernel_size, stride, padding, output_size, "max_unpool3d")
