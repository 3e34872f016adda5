"""ONNX quantization op handlers: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv (registered into `ops.OPS` when `ops` is
imported).

They follow the onnx reference implementation exactly. Integer products are taken in float64,
which holds them exactly (|a * b| < 2^16, sums far below 2^53), and converted to int32. QLinear*
rescale in float64 as the reference does (an int32 array times a float32 scale promotes to float64
in numpy) before rounding half to even and saturating. Quantized types ember has: int8, uint8,
int16 and int32 accumulators; 2- and 4-bit, uint16 and float8 types are refused as unsupported.
"""
from __future__ import annotations

import numpy as np

from .._core import dtypes as dt
from ..ops import lax
from .ops import _ax, const, register
from .ops_nn import _geometry

_RANGE = {dt.uint8: (0, 255), dt.int8: (-128, 127), dt.int16: (-32768, 32767)}
_ONNX_TYPES = {2: dt.uint8, 3: dt.int8, 5: dt.int16}


def _qtype(ctx, d):
    if d not in _RANGE:
        raise ctx.unsupported(f"quantized type {d.name} (ember has int8, uint8 and int16)")
    return d


def _per_axis(ctx, v, x, axis, block=0):
    """Scale or zero point shaped to broadcast against x: a scalar, per `axis`, or per block."""
    if v.ndim == 0 or v.size == 1 and not block:
        return lax.reshape(v, ())
    axis = _ax(axis, x.ndim)
    if not block:
        if v.ndim != 1 or v.shape[0] != x.shape[axis]:
            raise ctx.unsupported(f"a per-axis parameter of shape {tuple(v.shape)} for axis {axis} of {tuple(x.shape)}")
        return lax.reshape(v, tuple(v.shape[0] if i == axis else 1 for i in range(x.ndim)))
    reps = np.minimum(np.arange(x.shape[axis]) // block, v.shape[axis] - 1)  # the last block may be short
    if v.ndim != x.ndim or any(v.shape[i] != x.shape[i] for i in range(x.ndim) if i != axis):
        raise ctx.unsupported(f"blocked parameters of shape {tuple(v.shape)} for {tuple(x.shape)}")
    idx = lax.reshape(const(reps.astype(np.int64)), tuple(x.shape[axis] if i == axis else 1 for i in range(x.ndim)))
    idx = lax.broadcast_to(idx, tuple(v.shape[i] if i != axis else x.shape[axis] for i in range(x.ndim)))
    return lax.take_along_axis(v, idx, axis)


def _saturate(y, d):
    """Round half to even, clip to d's range, convert (y is float)."""
    lo, hi = _RANGE[d]
    return lax.convert(lax.min(lax.max(lax.round(y), float(lo)), float(hi)), d)


@register("QuantizeLinear", since=10)
def quantize_linear(ctx, x, scale, zero_point=None):
    """y = saturate(round(x / scale) + zero_point); uint8 without a zero point or output_dtype."""
    axis, block = ctx.attr("axis", 1), ctx.attr("block_size", 0)
    out = zero_point.dtype if zero_point is not None else _ONNX_TYPES.get(ctx.attr("output_dtype", 2) or 2)
    if out is None:
        raise ctx.unsupported(f"output_dtype {ctx.attr('output_dtype')} (ember has int8, uint8 and int16)")
    _qtype(ctx, out)
    q = lax.round(lax.div(x, _per_axis(ctx, scale, x, axis, block)))
    if zero_point is not None:
        q = lax.add(lax.convert(q, dt.float64), lax.convert(_per_axis(ctx, zero_point, x, axis, block), dt.float64))
    lo, hi = _RANGE[out]
    return lax.convert(lax.min(lax.max(q, float(lo)), float(hi)), out)


@register("DequantizeLinear", since=10)
def dequantize_linear(ctx, x, scale, zero_point=None):
    """y = (x - zero_point) * scale, in float32, as scale's type (or output_dtype)."""
    axis, block = ctx.attr("axis", 1), ctx.attr("block_size", 0)
    if x.dtype not in _RANGE and x.dtype is not dt.int32:
        _qtype(ctx, x.dtype)
    dx = lax.convert(x, dt.float32)
    if zero_point is not None:
        dx = lax.sub(dx, lax.convert(_per_axis(ctx, zero_point, x, axis, block), dt.float32))
    y = lax.mul(dx, _per_axis(ctx, scale, x, axis, block))
    out = ctx.attr("output_dtype", 0)
    return lax.convert(y, dt.float32 if out == 1 else dt.float16 if out == 10 else scale.dtype)


@register("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(ctx, x):
    """uint8 y, its scale and zero point from x's range (which always includes 0)."""
    f32 = dt.float32
    hi = lax.max(lax.reduce_max(x, tuple(range(x.ndim))) if x.ndim else x, 0.0)
    lo = lax.min(lax.reduce_min(x, tuple(range(x.ndim))) if x.ndim else x, 0.0)
    span = lax.sub(hi, lo)
    scale = lax.div(lax.select(lax.eq(span, 0.0), lax.full((), 1.0, f32), span), 255.0)
    zp = lax.round(lax.min(lax.max(lax.sub(0.0, lax.div(lo, scale)), 0.0), 255.0))
    y = lax.min(lax.max(lax.add(lax.round(lax.div(x, scale)), zp), 0.0), 255.0)
    return lax.convert(y, dt.uint8), lax.convert(scale, x.dtype), lax.convert(zp, dt.uint8)


def _centered(ctx, v, zp, axis_of_zp=None):
    """v - zero_point in float64 (exact for 8- and 16-bit values)."""
    if v.dtype not in _RANGE:
        _qtype(ctx, v.dtype)
    v = lax.convert(v, dt.float64)
    if zp is None:
        return v
    z = lax.convert(zp, dt.float64)
    if z.ndim == 1 and z.shape[0] > 1:
        if axis_of_zp is None:
            raise ctx.unsupported(f"a zero point of shape {tuple(zp.shape)} here")
        ax = _ax(axis_of_zp, v.ndim)
        z = lax.reshape(z, tuple(z.shape[0] if i == ax else 1 for i in range(v.ndim)))
    elif z.ndim:
        z = lax.reshape(z, ())
    return lax.sub(v, z)


def _matmul64(a, b):
    from .. import api as E
    return E.matmul(a, b)


def _conv64(ctx, x, w):
    k = ctx.attr("kernel_shape") or list(w.shape[2:])
    s, d, pads = _geometry(ctx, x, k)
    return lax.conv_general(x, w, s, pads, [1] * len(k), d, ctx.attr("group", 1))


@register("MatMulInteger", since=10)
def matmul_integer(ctx, a, b, a_zero_point=None, b_zero_point=None):
    """(a - a_zp) @ (b - b_zp) in int32; a's zero point may be per row, b's per column."""
    return lax.convert(_matmul64(_centered(ctx, a, a_zero_point, -2), _centered(ctx, b, b_zero_point, -1)), dt.int32)


@register("ConvInteger", since=10)
def conv_integer(ctx, x, w, x_zero_point=None, w_zero_point=None):
    """conv(x - x_zp, w - w_zp) in int32; w's zero point may be per output channel."""
    return lax.convert(_conv64(ctx, _centered(ctx, x, x_zero_point), _centered(ctx, w, w_zero_point, 0)), dt.int32)


def _requantize(ctx, acc, a_scale, b_scale, y_scale, y_zero_point, like, axis=None):
    """saturate(round(acc * (a_scale * b_scale / y_scale)) + y_zp) as the reference computes it."""
    if b_scale.ndim and b_scale.shape[0] > 1:
        b_scale = lax.reshape(b_scale, tuple(b_scale.shape[0] if i == axis else 1 for i in range(acc.ndim)))
    elif b_scale.ndim:
        b_scale = lax.reshape(b_scale, ())
    mult = lax.div(lax.mul(lax.reshape(a_scale, ()), b_scale), lax.reshape(y_scale, ()))  # in the scales' type
    r = lax.mul(acc, lax.convert(mult, dt.float64))
    out = like.dtype if y_zero_point is None else y_zero_point.dtype
    if y_zero_point is not None:
        r = lax.add(r, lax.convert(lax.reshape(y_zero_point, ()), dt.float64))
    return _saturate(r, _qtype(ctx, out))


@register("QLinearMatMul", since=10)
def qlinear_matmul(ctx, a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
    """Quantized matmul: int32 accumulation of the centered operands, requantized to y's type."""
    acc = _matmul64(_centered(ctx, a, a_zp, -2), _centered(ctx, b, b_zp, -1))
    return _requantize(ctx, acc, a_scale, b_scale, y_scale, y_zp, a, axis=acc.ndim - 1)


@register("QLinearConv", since=10)
def qlinear_conv(ctx, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias=None):
    """Quantized convolution with an optional int32 bias, requantized to y's type."""
    acc = _conv64(ctx, _centered(ctx, x, x_zp), _centered(ctx, w, w_zp, 0))
    if bias is not None:
        acc = lax.add(acc, lax.reshape(lax.convert(bias, dt.float64), (bias.shape[0],) + (1,) * (acc.ndim - 2)))
    return _requantize(ctx, acc, x_scale, w_scale, y_scale, y_zp, x, axis=1)
