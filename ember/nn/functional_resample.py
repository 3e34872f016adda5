"""Resampling and pooling forms of torch.nn.functional, written in primitives (PI-3): interpolate,
adaptive average / max pooling, max pooling with indices and max unpooling.

Re-exported from `ember.nn.functional` (through `functional_spatial`). The geometry is worked out
in numpy at trace time, with PyTorch's CPU formulas and in its arithmetic precision (the nearest
source index floor(dst * scale) in float32, the linear / cubic source positions in the input's
float type), and becomes constant index and weight tensors:

- interpolate resamples one spatial dim at a time: a `gather` per tap along that dim, times the
  tap's weights (nearest has one tap and no weight, linear two, cubic four);
- adaptive pooling gathers each output's window [floor(i in / out), ceil((i + 1) in / out)),
  padded to the longest window with a mask, and reduces it;
- max pooling with indices (max_pool2d_with_indices; F.max_pool2d itself stays the reduce_window
  form) picks, per window, PyTorch's index (the last NaN, else the first
  maximum, in row-major window order) with integer reductions, then `take_along_axis` reads the
  value, so the gradient flows to that element only, as in PyTorch.
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from ..api.precision import accumulate_in_float32
from ..ops import lax
from ..tensor import Tensor, from_numpy
from .functional import _batched, _pair, _pool_geometry

__all__ = ["interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "adaptive_avg_pool1d",
           "adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
           "max_pool2d_with_indices", "max_unpool2d"]

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


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average-pool (N, C, H, W) or (C, H, W) to output_size (None keeps that dim) over PyTorch's windows
    [floor(i H / oh), ceil((i + 1) H / oh))."""
    if input.ndim not in (3, 4):
        raise op_error(ShapeError, "adaptive_avg_pool2d", f"expects a 3-D or 4-D input, got shape {input.shape}")
    return _adaptive_avg(input, _out_size("adaptive_avg_pool2d", input, output_size, 2), "adaptive_avg_pool2d")


def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    """Average-pool (N, C, L) or (C, L) to output_size over PyTorch's adaptive windows."""
    if input.ndim not in (2, 3):
        raise op_error(ShapeError, "adaptive_avg_pool1d", f"expects a 2-D or 3-D input, got shape {input.shape}")
    return _adaptive_avg(input, _out_size("adaptive_avg_pool1d", input, _pair(output_size, 1), 1),
                         "adaptive_avg_pool1d")


# ---------------------------------------------------------------- max pooling with indices
def _indexed_max(x: Tensor, table: np.ndarray, valid: np.ndarray, out_sp: tuple, op: str):
    """Per window (a row of `table`: flat H * W positions, `valid` marking real ones): PyTorch's
    argmax (the last NaN, else the first maximum) and the value there, both shaped (N, C, *out_sp)."""
    if x.dtype.kind != "f":
        raise op_error(DTypeError, op, f"needs a floating input, got {x.dtype.name}")
    n, c, h, w = x.shape
    p, k = table.shape
    flat = lax.reshape(x, (n, c, h * w))
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


def adaptive_max_pool2d_with_indices(input: Tensor, output_size, return_indices: bool = True):
    """(max, flat H * W index of the max) over PyTorch's adaptive windows of (N, C, H, W) or (C, H, W)."""
    x, unbatched = _batched(input, 2, "adaptive_max_pool2d")
    oh, ow = _out_size("adaptive_max_pool2d", x, output_size, 2)
    h, w = x.shape[2:]
    ih, vh, _ = _windows(h, oh)
    iw, vw, _ = _windows(w, ow)
    table = (ih[:, None, :, None] * w + iw[None, :, None, :]).reshape(oh * ow, -1)
    valid = (vh[:, None, :, None] & vw[None, :, None, :]).reshape(oh * ow, -1)
    out, idx = _indexed_max(x, table, valid, (oh, ow), "adaptive_max_pool2d")
    if unbatched:
        out, idx = lax.reshape(out, out.shape[1:]), lax.reshape(idx, idx.shape[1:])
    return out, idx


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """Max over PyTorch's adaptive windows; with return_indices also the flat H * W index of each max."""
    out, idx = adaptive_max_pool2d_with_indices(input, output_size)
    return (out, idx) if return_indices else out


def max_pool2d_with_indices(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode: bool = False, return_indices: bool = True):
    """(max, flat H * W index of the max) over the windows of max_pool2d (padding never wins)."""
    x, unbatched = _batched(input, 2, "max_pool2d")
    k = _pair(kernel_size)
    s = _pair(stride) if stride not in (None, ()) else k
    p, d = _pair(padding), _pair(dilation)
    h, w = x.shape[2:]
    pads = _pool_geometry((h, w), k, s, p, d, ceil_mode)
    outs = tuple((n + lo + hi - dd * (kk - 1) - 1) // ss + 1 for n, (lo, hi), kk, ss, dd in zip((h, w), pads, k, s, d))
    if any(o <= 0 for o in outs):
        raise op_error(ShapeError, "max_pool2d", f"input of shape {input.shape} is too small for kernel_size {k} "
                       f"(stride {s}, padding {p}, dilation {d}): output size {outs}")
    rows = [np.arange(o)[:, None] * ss - pp + np.arange(kk)[None, :] * dd  # input positions (out, tap)
            for o, ss, pp, kk, dd in zip(outs, s, p, k, d)]
    vh, vw = ((r >= 0) & (r < n) for r, n in zip(rows, (h, w)))
    ih, iw = (np.clip(r, 0, n - 1) for r, n in zip(rows, (h, w)))
    table = (ih[:, None, :, None] * w + iw[None, :, None, :]).reshape(outs[0] * outs[1], -1)
    valid = (vh[:, None, :, None] & vw[None, :, None, :]).reshape(outs[0] * outs[1], -1)
    out, idx = _indexed_max(x, table, valid, outs, "max_pool2d")
    if unbatched:
        out, idx = lax.reshape(out, out.shape[1:]), lax.reshape(idx, idx.shape[1:])
    return out, idx


def _unpool_size(input_sp, k, s, p, output_size):
    default = tuple((n - 1) * ss - 2 * pp + kk for n, ss, pp, kk in zip(input_sp, s, p, k))
    if output_size is None:
        return default
    want = tuple(int(v) for v in output_size)[-2:]
    if len(want) != 2:
        raise ValueError(f"max_unpool2d: output_size should be of length 2, 3 or 4, got {output_size}")
    for dd, (o, de, ss) in enumerate(zip(want, default, s)):
        if not de - ss < o < de + ss:
            raise ValueError(f'invalid output_size "{tuple(want)}" (dim {dd} must be between {de - ss} and '
                             f'{de + ss})')
    return want


def max_unpool2d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    """The partial inverse of max_pool2d: each value written at its flat H * W index, zeros elsewhere."""
    x, unbatched = _batched(input, 2, "max_unpool2d")
    if tuple(indices.shape) != tuple(input.shape):
        raise op_error(ShapeError, "max_unpool2d", f"indices of shape {indices.shape} must match input of shape "
                       f"{input.shape}")
    if indices.dtype.kind not in "iu":
        raise op_error(DTypeError, "max_unpool2d", f"indices must be integers, got {indices.dtype.name}")
    k = _pair(kernel_size)
    s = _pair(stride) if stride not in (None, ()) else k
    oh, ow = _unpool_size(x.shape[2:], k, s, _pair(padding), output_size)
    n, c, h, w = x.shape
    idx = lax.reshape(indices, (n, c, h * w))
    out = lax.scatter_along_axis(lax.full((n, c, oh * ow), 0, x.dtype), idx, lax.reshape(x, (n, c, h * w)), 2)
    out = lax.reshape(out, (n, c, oh, ow))
    return lax.reshape(out, out.shape[1:]) if unbatched else out
