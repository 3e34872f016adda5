"""Spatial layers of torch.nn.functional, written in primitives (PI-3): transposed and 3-D
convolution, group / instance / RMS normalisation, pixel (un)shuffle and unfold / fold.

Everything here re-exports from `ember.nn.functional` (as do the resampling and pooling forms of
`functional_resample`). No function has a kernel of its own:

- a transposed convolution is `conv_general` with lhs_dilation = stride (zeros between the input
  elements), the kernel flipped and its in/out channels swapped per group, and padding
  dilation * (k - 1) - padding (+ output_padding at the high end) — the VJP of a convolution;
- unfold is one strided slice of the zero-padded input per kernel tap, and fold is the transpose:
  each tap's block is placed with an interior-padded `pad` and the blocks are summed in tap order
  (the order of PyTorch's col2im), so inf and NaN propagate exactly as there.
"""
from __future__ import annotations

import math

from .._core import dtypes as dt
from .._core.errors import ShapeError, op_error
from .._core.state import no_grad
from ..api.precision import accumulate_in_float32
from .. import api as E
from ..ops import lax
from ..tensor import Tensor
from .functional import _batched, _conv, _pair

__all__ = ["conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "group_norm", "instance_norm",
           "rms_norm", "pixel_shuffle", "pixel_unshuffle", "unfold", "fold"]


# ---------------------------------------------------------------- convolution
def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> Tensor:
    """3-D convolution over (N, C, D, H, W) or (C, D, H, W) with weight (O, C/groups, kd, kh, kw)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 3, "conv3d")


def _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, nd, op):
    x, unbatched = _batched(input, nd, op)
    s, p, op_, d = (_pair(v, nd) for v in (stride, padding, output_padding, dilation))
    if weight.ndim != nd + 2:
        raise op_error(ShapeError, op, f"expects a {nd + 2}-D weight (in_channels, out_channels / groups, "
                       f"*kernel), got shape {weight.shape}")
    cin = x.shape[1]
    if not isinstance(groups, int) or groups < 1 or cin % groups:
        raise op_error(ShapeError, op, f"groups={groups} must be a positive divisor of the {cin} input channels "
                       f"of input shape {input.shape}")
    if weight.shape[0] != cin:
        raise op_error(ShapeError, op, f"input of shape {input.shape} has {cin} channels "
                       f"(dim {0 if unbatched else 1}), but weight of shape {weight.shape} expects {weight.shape[0]} "
                       f"(weight is (in_channels, out_channels / groups, *kernel))")
    if any(v < 1 for v in s + d) or any(v < 0 for v in p + op_):
        raise ValueError(f"{op}: stride {s} and dilation {d} must be positive, padding {p} and output_padding "
                         f"{op_} non-negative")
    if any(o >= st and o >= dd for o, st, dd in zip(op_, s, d)):
        raise ValueError(f"{op}: output_padding {op_} must be smaller than either stride {s} or dilation {d} "
                         f"(input shape {input.shape}, weight shape {weight.shape})")
    k = weight.shape[2:]
    out_sp = tuple((n - 1) * st - 2 * pp + dd * (kk - 1) + o + 1
                   for n, st, pp, dd, kk, o in zip(x.shape[2:], s, p, d, k, op_))
    if any(o <= 0 for o in out_sp):
        raise op_error(ShapeError, op, f"input of shape {input.shape} with weight {weight.shape}, stride {s}, "
                       f"padding {p} and dilation {d} gives the non-positive output size {out_sp}")
    cg, og = cin // groups, weight.shape[1]
    sp = tuple(range(3, nd + 3))
    w = lax.transpose(lax.reshape(weight, (groups, cg, og) + k), (0, 2, 1) + sp)
    w = lax.rev(lax.reshape(w, (groups * og, cg) + k), tuple(range(2, nd + 2)))
    pads = [(dd * (kk - 1) - pp, dd * (kk - 1) - pp + o) for dd, kk, pp, o in zip(d, k, p, op_)]
    out = lax.conv_general(x, w, (1,) * nd, pads, s, d, groups)
    if bias is not None:
        if tuple(bias.shape) != (groups * og,):
            raise op_error(ShapeError, op, f"bias of shape {bias.shape} does not fit the {groups * og} output "
                           f"channels of weight {weight.shape}")
        out = lax.add(out, lax.reshape(bias, (bias.shape[0],) + (1,) * nd))
    return lax.reshape(out, out.shape[1:]) if unbatched else out


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                     output_padding=0, groups: int = 1, dilation=1) -> Tensor:
    """Transposed 1-D convolution over (N, C_in, L) with weight (C_in, C_out / groups, k)."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 1,
                           "conv_transpose1d")


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                     output_padding=0, groups: int = 1, dilation=1) -> Tensor:
    """Transposed 2-D convolution over (N, C_in, H, W) with weight (C_in, C_out / groups, kh, kw)."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 2,
                           "conv_transpose2d")


def conv_transpose3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                     output_padding=0, groups: int = 1, dilation=1) -> Tensor:
    """Transposed 3-D convolution over (N, C_in, D, H, W) with weight (C_in, C_out / groups, *k)."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 3,
                           "conv_transpose3d")


# ---------------------------------------------------------------- normalisation
def _check_channel_param(op: str, input: Tensor, what: str, t) -> None:
    c = input.shape[1]
    if isinstance(t, Tensor) and tuple(t.shape) != (c,):
        raise op_error(ShapeError, op, f"input of shape {input.shape} has {c} channels (dim 1), but {what} has "
                       f"shape {t.shape}")


def _affine(out: Tensor, weight, bias) -> Tensor:
    cshape = (out.shape[1],) + (1,) * (out.ndim - 2)
    if weight is not None:
        out = lax.mul(out, lax.reshape(weight, cshape))
    if bias is not None:
        out = lax.add(out, lax.reshape(bias, cshape))
    return out


@accumulate_in_float32("input", "weight", "bias")
def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalise (N, C, *) over each group of C / num_groups channels and the spatial dims, then scale
    and shift per channel."""
    if input.ndim < 2:
        raise op_error(ShapeError, "group_norm", f"expects an input (N, C, *), got shape {input.shape}")
    n, c = input.shape[:2]
    if not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise op_error(ShapeError, "group_norm", f"expected the {c} channels (dim 1) of input shape {input.shape} "
                       f"to be divisible by num_groups={num_groups}")
    for what, t in (("weight", weight), ("bias", bias)):
        _check_channel_param("group_norm", input, what, t)
    m = (c // num_groups) * math.prod(input.shape[2:])
    x = lax.reshape(input, (n, num_groups, m))
    mean = lax.div(lax.reduce_sum(x, (2,)), m)
    xc = lax.sub(x, lax.reshape(mean, (n, num_groups, 1)))
    var = lax.div(lax.reduce_sum(lax.mul(xc, xc), (2,)), m)
    out = lax.mul(xc, lax.reshape(lax.rsqrt(lax.add(var, eps)), (n, num_groups, 1)))
    return _affine(lax.reshape(out, input.shape), weight, bias)


@accumulate_in_float32("input", "weight", "bias")
def instance_norm(input: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None,
                  weight: Tensor | None = None, bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each (sample, channel) of (N, C, *) over its spatial dims, then scale and shift.

    With use_input_stats and running statistics, these are updated in place under no_grad as PyTorch
    does (batch_norm over (1, N*C, *)): r = (1 - momentum) * r + momentum * mean over the batch of
    the per-instance mean (unbiased variance); without use_input_stats they normalise instead."""
    if input.ndim < 3:
        raise op_error(ShapeError, "instance_norm", f"expects an input (N, C, *spatial), got shape {input.shape}")
    n, c = input.shape[:2]
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_channel_param("instance_norm", input, what, t)
    ax = tuple(range(2, input.ndim))
    cnt = math.prod(input.shape[2:])
    if use_input_stats:
        if cnt == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.shape}")
        mean = lax.div(lax.reduce_sum(input, ax), cnt)
        xc = lax.sub(input, lax.expand_reduced(mean, input.shape, ax))
        ss = lax.reduce_sum(lax.mul(xc, xc), ax)
        scale = lax.rsqrt(lax.add(lax.div(ss, cnt), eps))
        out = lax.mul(xc, lax.expand_reduced(scale, input.shape, ax))
        with no_grad():
            keep = 1.0 - momentum
            if running_mean is not None:
                bm = lax.div(lax.reduce_sum(mean.detach(), (0,)), n)
                E.assign_(running_mean, lax.add(lax.mul(running_mean, keep), lax.mul(bm, momentum)))
            if running_var is not None:
                bv = lax.div(lax.reduce_sum(lax.div(ss.detach(), cnt - 1), (0,)), n)
                E.assign_(running_var, lax.add(lax.mul(running_var, keep), lax.mul(bv, momentum)))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("Expected running_mean and running_var to be defined when use_input_stats is false")
        cshape = (1, c) + (1,) * len(ax)
        xc = lax.sub(input, lax.reshape(running_mean, cshape))
        out = lax.mul(xc, lax.reshape(lax.rsqrt(lax.add(running_var, eps)), cshape))
    return _affine(out, weight, bias)


@accumulate_in_float32("input", "weight")
def _rms_norm(input: Tensor, ns: tuple, weight, eps: float) -> Tensor:
    ax = tuple(range(input.ndim - len(ns), input.ndim))
    ms = lax.div(lax.reduce_sum(lax.mul(input, input), ax), math.prod(ns))
    out = lax.mul(input, lax.expand_reduced(lax.rsqrt(lax.add(ms, eps)), input.shape, ax))
    return lax.mul(out, weight) if weight is not None else out


def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x^2 over the trailing normalized_shape dims) + eps) * weight; eps None means
    the machine epsilon of the input's dtype (as PyTorch)."""
    ns = _pair(normalized_shape, 1)
    if tuple(input.shape[input.ndim - len(ns):]) != ns or len(ns) > input.ndim:
        raise op_error(ShapeError, "rms_norm", f"normalized_shape {ns} does not match the trailing dims of input "
                       f"shape {input.shape}")
    if weight is not None and tuple(weight.shape) != ns:
        raise op_error(ShapeError, "rms_norm", f"weight of shape {weight.shape} does not match normalized_shape {ns}")
    if eps is None:
        eps = float(dt.finfo(input.dtype if input.dtype.kind == "f" else dt.float32).eps)
    return _rms_norm(input, ns, weight, eps)


# ---------------------------------------------------------------- pixel shuffle
def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """(*, C r^2, H, W) -> (*, C, H r, W r): channel blocks become r x r pixel blocks."""
    r = int(upscale_factor)
    if input.ndim < 3:
        raise op_error(ShapeError, "pixel_shuffle", f"expects an input with at least 3 dims, got shape {input.shape}")
    if r < 1:
        raise ValueError(f"pixel_shuffle expects a positive upscale_factor, got {upscale_factor}")
    *lead, c, h, w = input.shape
    if c % (r * r):
        raise op_error(ShapeError, "pixel_shuffle", f"the channel dim (-3) of input shape {input.shape} must be "
                       f"divisible by upscale_factor**2 = {r * r}")
    lead, nl = tuple(lead), len(lead)
    x = lax.reshape(input, lead + (c // (r * r), r, r, h, w))
    x = lax.transpose(x, tuple(range(nl)) + tuple(nl + i for i in (0, 3, 1, 4, 2)))
    return lax.reshape(x, lead + (c // (r * r), h * r, w * r))


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """(*, C, H r, W r) -> (*, C r^2, H, W): the inverse of pixel_shuffle."""
    r = int(downscale_factor)
    if input.ndim < 3:
        raise op_error(ShapeError, "pixel_unshuffle", f"expects an input with at least 3 dims, got shape "
                       f"{input.shape}")
    if r < 1:
        raise ValueError(f"pixel_unshuffle expects a positive downscale_factor, got {downscale_factor}")
    *lead, c, h, w = input.shape
    if h % r or w % r:
        raise op_error(ShapeError, "pixel_unshuffle", f"the spatial dims (H, W) = {(h, w)} of input shape "
                       f"{input.shape} must be divisible by downscale_factor = {r}")
    lead, nl = tuple(lead), len(lead)
    x = lax.reshape(input, lead + (c, h // r, r, w // r, r))
    x = lax.transpose(x, tuple(range(nl)) + tuple(nl + i for i in (0, 2, 4, 1, 3)))
    return lax.reshape(x, lead + (c * r * r, h // r, w // r))


# ---------------------------------------------------------------- unfold / fold
def _blocks(op, spatial, k, d, p, s):
    """The number of sliding blocks per spatial dim, each at least 1 (else a ShapeError)."""
    if any(v < 1 for v in k + d + s) or any(v < 0 for v in p):
        raise ValueError(f"{op}: kernel_size {k}, dilation {d} and stride {s} must be positive, padding {p} "
                         f"non-negative")
    blocks = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, kk, dd, pp, ss in zip(spatial, k, d, p, s))
    if any(b < 1 for b in blocks):
        raise op_error(ShapeError, op, f"spatial size {tuple(spatial)} with kernel_size={k}, dilation={d}, "
                       f"padding={p}, stride={s} gives {blocks} sliding blocks; each must be at least 1")
    return blocks


def unfold(input: Tensor, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """im2col: (N, C, H, W) -> (N, C * kh * kw, L), a column per sliding block, rows channel-major."""
    x, unbatched = _batched(input, 2, "unfold")
    k, d, p, s = (_pair(v) for v in (kernel_size, dilation, padding, stride))
    n, c, h, w = x.shape
    oh, ow = _blocks("unfold", (h, w), k, d, p, s)
    if p != (0, 0):
        x = lax.pad(x, 0, [(0, 0, 0), (0, 0, 0), (p[0], p[0], 0), (p[1], p[1], 0)])
    taps = []
    for i in range(k[0]):
        for j in range(k[1]):
            a, b = i * d[0], j * d[1]
            t = lax.slice(x, (0, 0, a, b), (n, c, a + (oh - 1) * s[0] + 1, b + (ow - 1) * s[1] + 1), (1, 1) + s)
            taps.append(lax.reshape(t, (n, c, 1, oh * ow)))
    out = taps[0] if len(taps) == 1 else lax.concatenate(taps, 2)
    out = lax.reshape(out, (n, c * k[0] * k[1], oh * ow))
    return lax.reshape(out, out.shape[1:]) if unbatched else out


def fold(input: Tensor, output_size, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """col2im: (N, C * kh * kw, L) -> (N, C, H, W), summing the values of overlapping blocks."""
    if input.ndim not in (2, 3):
        raise op_error(ShapeError, "fold", f"expects a 2-D (unbatched) or 3-D input (N, C * prod(kernel_size), L), "
                       f"got shape {input.shape}")
    unbatched = input.ndim == 2
    x = lax.reshape(input, (1,) + input.shape) if unbatched else input
    H, W = _pair(output_size)
    k, d, p, s = (_pair(v) for v in (kernel_size, dilation, padding, stride))
    n, ck, L = x.shape
    K = k[0] * k[1]
    if ck % K:
        raise op_error(ShapeError, "fold", f"dim 1 of input shape {input.shape} must be divisible by the product "
                       f"of kernel_size {k} = {K}")
    oh, ow = _blocks("fold", (H, W), k, d, p, s)
    if oh * ow != L:
        raise op_error(ShapeError, "fold", f"output_size={(H, W)}, kernel_size={k}, dilation={d}, padding={p}, "
                       f"stride={s} give {oh} * {ow} = {oh * ow} sliding blocks, but input shape {input.shape} "
                       f"has {L} (dim {1 if unbatched else 2})")
    c = ck // K
    x = lax.reshape(x, (n, c, K, oh, ow))
    hp, wp = H + 2 * p[0], W + 2 * p[1]
    total = None
    for t in range(K):
        i, j = divmod(t, k[1])
        blk = lax.reshape(lax.slice(x, (0, 0, t, 0, 0), (n, c, t + 1, oh, ow), (1,) * 5), (n, c, oh, ow))
        a, b = i * d[0], j * d[1]
        cfg = [(0, 0, 0), (0, 0, 0), (a, hp - a - (oh - 1) * s[0] - 1, s[0] - 1),
               (b, wp - b - (ow - 1) * s[1] - 1, s[1] - 1)]
        placed = lax.pad(blk, 0, cfg)
        total = placed if total is None else lax.add(total, placed)
    if p != (0, 0):
        total = lax.slice(total, (0, 0, p[0], p[1]), (n, c, p[0] + H, p[1] + W), (1, 1, 1, 1))
    return lax.reshape(total, total.shape[1:]) if unbatched else total


from .functional_resample import *  # noqa: E402,F401,F403  (interpolate, adaptive and indexed pooling)
from .functional_resample import __all__ as _resample_all  # noqa: E402

__all__ = __all__ + list(_resample_all)
