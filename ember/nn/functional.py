"""Composite layers and losses written in primitives (PyTorch's torch.nn.functional names).

Nothing here has a kernel of its own: each function is a few primitives, so autodiff, the
tracer and the fusion passes see through all of them.
"""
from __future__ import annotations

import math

import numpy as np

from .. import api as E
from ..api import activations as _activations
from ..api.activations import log_softmax, relu, softmax  # noqa: F401  (also torch.softmax, x.relu())
from ..api.precision import accumulate_in_float32, autocast_float32
from .._core.state import TLS
from .._core import dtypes as dt
from .._core.errors import ShapeError, op_error
from ..ops import lax
from ..tensor import Tensor


def _pair(v, n=2) -> tuple:
    """An int or a sequence as n values; a one-element sequence repeats (PyTorch)."""
    if isinstance(v, (tuple, list)):
        return tuple(v) * n if len(v) == 1 else tuple(v)
    return (v,) * n


# ---------------------------------------------------------------- activations
_inplace_src = _activations.inplace_source


def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    return lax.select(lax.gt(input, 0), input, lax.mul(input, negative_slope))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """GELU: x * Phi(x) exactly (erf), or with the tanh approximation."""
    if approximate == "tanh":
        inner = lax.mul(lax.add(input, lax.mul(lax.mul(lax.mul(input, input), input), 0.044715)),
                        math.sqrt(2.0 / math.pi))
        return lax.mul(lax.mul(input, 0.5), lax.add(lax.tanh(inner), 1.0))
    if approximate != "none":
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return lax.mul(lax.mul(input, 0.5), lax.add(lax.erf(lax.mul(input, 1.0 / math.sqrt(2.0))), 1.0))


def silu(input: Tensor) -> Tensor:
    """x * sigmoid(x)."""
    return lax.mul(input, lax.logistic(input))


def sigmoid(input: Tensor) -> Tensor:
    return lax.logistic(input)


def tanh(input: Tensor) -> Tensor:
    return lax.tanh(input)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    bx = lax.mul(input, beta)
    soft = lax.div(lax.add(lax.log1p(lax.exp(lax.neg(lax.abs(bx)))), lax.max(bx, 0.0)), beta)
    return lax.select(lax.gt(bx, threshold), input, soft)


# ---------------------------------------------------------------- normalisation and dropout
@accumulate_in_float32("input", "weight", "bias")
def layer_norm(input: Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing `normalized_shape` dims, then scale and shift."""
    ns = _pair(normalized_shape, 1)
    if tuple(input.shape[input.ndim - len(ns):]) != ns:
        raise op_error(ShapeError, "layer_norm", f"normalized_shape {ns} does not match the trailing dims "
                       f"of input shape {input.shape}")
    ax = tuple(range(input.ndim - len(ns), input.ndim))
    n = math.prod(ns)
    mean = lax.div(lax.reduce_sum(input, ax), n)
    xc = lax.sub(input, lax.expand_reduced(mean, input.shape, ax))
    var = lax.div(lax.reduce_sum(lax.mul(xc, xc), ax), n)
    out = lax.mul(xc, lax.expand_reduced(lax.rsqrt(lax.add(var, eps)), input.shape, ax))
    if weight is not None:
        out = lax.mul(out, weight)
    if bias is not None:
        out = lax.add(out, bias)
    return out


@accumulate_in_float32("input", "weight", "bias")
def batch_norm(input: Tensor, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum=0.1, eps: float = 1e-5) -> Tensor:
    """Normalise over every dim but the channel dim 1, then scale and shift per channel.

    Training uses the batch statistics (biased variance) and, when running_mean / running_var are
    given, updates them in place under no_grad (the storages stay the same objects):
    r = momentum * stat + (1 - momentum) * r, with the unbiased variance. `momentum` may be a
    0-d tensor. Eval normalises with the running statistics.
    """
    if input.ndim < 2:
        raise op_error(ShapeError, "batch_norm", f"expects an input with a channel dim 1, got shape {input.shape}")
    C = input.shape[1]
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if isinstance(t, Tensor) and tuple(t.shape) != (C,):
            built = t.shape[0] if t.ndim else t.shape
            raise op_error(ShapeError, "batch_norm", f"input of shape {input.shape} has {C} channels (dim 1), but "
                           f"{what} has shape {t.shape}: the layer was built for num_features={built}")
    cshape = (C,) + (1,) * (input.ndim - 2)
    ax = (0,) + tuple(range(2, input.ndim))
    n = input.numel() // C if C else 0
    if training and n == 0:  # an empty batch: nothing to normalise, no statistics to update
        xc, var = input, lax.full((C,), 1.0, input.dtype)
    elif training:
        if n == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
        mean = lax.div(lax.reduce_sum(input, ax), n)
        xc = lax.sub(input, lax.reshape(mean, cshape))
        ss = lax.reduce_sum(lax.mul(xc, xc), ax)
        var = lax.div(ss, n)
        from .._core.state import no_grad
        with no_grad():
            keep = 1.0 - momentum if isinstance(momentum, (int, float)) else lax.sub(1.0, momentum)
            if running_mean is not None:
                E.assign_(running_mean, lax.add(lax.mul(mean.detach(), momentum), lax.mul(running_mean, keep)))
            if running_var is not None:
                unbiased = lax.div(ss.detach(), n - 1)
                E.assign_(running_var, lax.add(lax.mul(unbiased, momentum), lax.mul(running_var, keep)))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        xc = lax.sub(input, lax.reshape(running_mean, cshape))
        var = running_var
    # the per-channel scale folds in the weight: one full-size multiply instead of two
    scale = lax.rsqrt(lax.add(var, eps))
    if weight is not None:
        scale = lax.mul(scale, weight)
    out = lax.mul(xc, lax.reshape(scale, cshape))
    if bias is not None:
        out = lax.add(out, lax.reshape(bias, cshape))
    return out


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            generator=None) -> Tensor:
    """Zero elements with probability p and scale the rest by 1/(1-p) (identity in eval)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        out = lax.mul(_inplace_src(input, inplace), 0.0)
    else:
        keep = E.random._uniform01(input.shape, input.dtype, generator)
        out = lax.select(lax.lt(keep, 1.0 - p), lax.mul(_inplace_src(input, inplace), 1.0 / (1.0 - p)), 0.0)
    return E.assign_(input, out) if inplace else out


# ---------------------------------------------------------------- linear, embedding, pad
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, with weight (out_features, in_features) as in PyTorch."""
    if input.shape[-1] != weight.shape[-1]:
        raise op_error(ShapeError, "linear", f"input of shape {input.shape} does not fit weight of shape "
                       f"{weight.shape} (in_features {weight.shape[-1]})")
    out = lax.dot_general(input, weight, ((input.ndim - 1,), (weight.ndim - 1,)))
    if bias is not None and TLS.autocast is not None and bias.dtype is dt.float32:
        bias = lax.convert(bias, out.dtype)  # PyTorch's linear is one autocast op: bias included
    return lax.add(out, bias) if bias is not None else out


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of `weight` picked by integer `input`; the padding row gets no gradient."""
    out = lax.gather(weight, E.shape._index_tensor(input), 0)
    if padding_idx is not None:
        pad = padding_idx % weight.shape[0]
        is_pad = lax.expand_reduced(lax.eq(input, pad), out.shape, (out.ndim - 1,)) if out.ndim else lax.eq(input, pad)
        out = lax.select(is_pad, out.detach(), out)
    return out


def pad(input: Tensor, pad, mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad trailing dims by (left, right) pairs, last dim first (negative values crop).

    mode 'constant' fills with `value` (0 by default) on any number of dims; 'reflect', 'replicate'
    and 'circular' pad the last 1, 2 or 3 dims of a (batched) input as PyTorch does."""
    if mode != "constant":
        return _pad_nonconstant(input, pad, mode, value)
    if value is None:
        value = 0.0
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise op_error(ShapeError, "pad", f"padding {pad} does not fit input of shape {input.shape}")
    cfg = [(0, 0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        cfg[input.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1], 0)
    return lax.pad(input, value, cfg)


# ---------------------------------------------------------------- convolution and pooling
def _batched(input: Tensor, nd: int, op: str):
    if input.ndim == nd + 1:
        return lax.reshape(input, (1,) + input.shape), True
    if input.ndim != nd + 2:
        raise op_error(ShapeError, op, f"expects a {nd + 1}-D or {nd + 2}-D input, got shape {input.shape}")
    return input, False


def _conv(input, weight, bias, stride, padding, dilation, groups, nd, op):
    x, unbatched = _batched(input, nd, op)
    stride, dilation = _pair(stride, nd), _pair(dilation, nd)
    k = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            pads = []
            for kk, d in zip(k, dilation):
                total = d * (kk - 1)
                pads.append((total // 2, total - total // 2))
        else:
            raise ValueError(f"padding must be 'valid', 'same' or ints, got {padding!r}")
    else:
        pads = [(p, p) for p in _pair(padding, nd)]
    out = lax.conv_general(x, weight, stride, pads, (1,) * nd, dilation, groups)
    if bias is not None:
        out = lax.add(out, lax.reshape(bias, (bias.shape[0],) + (1,) * nd))
    return lax.reshape(out, out.shape[1:]) if unbatched else out


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """1-D convolution over (N, C, L)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """2-D convolution over (N, C, H, W) with weight (O, C/groups, kh, kw) (PI-3)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def _pool_geometry(shape, kernel, stride, padding, dilation, ceil_mode):
    pads = []
    for n, k, s, p, d in zip(shape, kernel, stride, padding, dilation):
        if 2 * p > (k - 1) * d + 1:
            raise ValueError(f"pad should be at most half of the effective kernel size, got pad={p}, kernel={k}")
        eff = d * (k - 1) + 1
        if ceil_mode:
            out = -(-(n + 2 * p - eff) // s) + 1
            if (out - 1) * s >= n + p:
                out -= 1
        else:
            out = (n + 2 * p - eff) // s + 1
        hi = (out - 1) * s + eff - n - p
        pads.append((p, max(hi, p) if ceil_mode else hi))
    return pads


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """Max over windows; padding counts as -inf (PI-3). The N-d implementation: functional_resample."""
    if return_indices:  # (values, flat indices into each input plane), as PyTorch
        return max_pool2d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_pool(input, 2, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override=None) -> Tensor:
    """Mean over windows; padding counts as 0 and, if count_include_pad, in the divisor (PI-3)."""
    return _avg_pool(input, 2, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                     "avg_pool2d")


# ---------------------------------------------------------------- losses
def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return E.mean(loss)
    if reduction == "sum":
        return E.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


@autocast_float32("input", "target")
def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error."""
    d = lax.sub(input, target)
    return _reduce(lax.mul(d, d), reduction)


@autocast_float32("input", "target")
def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error."""
    return _reduce(lax.abs(lax.sub(input, target)), reduction)


def _class_loss(z, lse, target, weight, ignore_index, reduction, label_smoothing, op):
    """nll_loss and cross_entropy for class-index targets.

    z is (N, C, ...): log-probabilities when lse is None (nll_loss), else logits shifted by their
    max with lse their log-sum-exp, so that log p = z - lse is never formed. The target's entry is
    picked with a one-hot compare and a sum: elementwise + reduce (fusable, and the backward pass
    needs no scatter)."""
    C = z.shape[1]
    if target.dtype.kind not in "iu":
        raise op_error(ShapeError, op, f"class targets must be integers, got {target.dtype.name}")
    want = z.shape[:1] + z.shape[2:]
    if target.shape != want:
        raise op_error(ShapeError, op, f"target of shape {target.shape} does not match input {z.shape} "
                       f"(expected {want})")
    target = lax.check_classes(target, C, ignore_index, op)  # also inside ember.jit
    valid = lax.ne(target, ignore_index)
    tcol = lax.reshape(target, want[:1] + (1,) + want[1:])
    onehot = lax.eq(lax.iota((1, C) + (1,) * (z.ndim - 2), 1, target.dtype), tcol)
    picked = lax.reduce_sum(lax.select(onehot, z, 0.0), (1,))
    nll = lax.neg(picked) if lse is None else lax.sub(lse, picked)
    if weight is not None:
        wt = lax.gather(weight, lax.select(valid, target, 0), 0)
        nll = lax.mul(nll, wt)
        wsum = lax.select(valid, wt, 0.0)
    else:
        wsum = lax.convert(valid, z.dtype)
    loss = lax.select(valid, nll, 0.0)
    if label_smoothing:
        # -sum_c w_c log p_c = -sum_c w_c z_c + lse * sum_c w_c
        lw = z if weight is None else lax.mul(z, lax.reshape(weight, (C,) + (1,) * (z.ndim - 2)))
        s = lax.neg(lax.reduce_sum(lw, (1,)))
        if lse is not None:
            s = lax.add(s, lax.mul(lse, float(C) if weight is None else lax.reduce_sum(weight, (0,))))
        smooth = lax.select(valid, s, 0.0)
        loss = lax.add(lax.mul(loss, 1.0 - label_smoothing), lax.mul(smooth, label_smoothing / C))
    if reduction == "mean":
        return lax.div(E.sum(loss), E.sum(wsum))
    return _reduce(loss, reduction)


def _channels_first(input: Tensor, op: str) -> Tensor:
    if input.ndim == 1:
        return lax.reshape(input, (1,) + input.shape)
    if input.ndim < 1:
        raise op_error(ShapeError, op, f"input needs a class dim, got shape {input.shape}")
    return input


@autocast_float32("input", "weight")
@accumulate_in_float32("input", "weight")
def nll_loss(input: Tensor, target: Tensor, weight=None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class targets given log-probabilities (N, C, ...)."""
    unb = input.ndim == 1
    logp = _channels_first(input, "nll_loss")
    t = lax.reshape(target, (1,)) if unb else target
    out = _class_loss(logp, None, t, weight, ignore_index, reduction, 0.0, "nll_loss")
    return lax.reshape(out, ()) if unb and reduction == "none" else out


@autocast_float32("input", "weight")
@accumulate_in_float32("input", "weight")
def cross_entropy(input: Tensor, target: Tensor, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy over dim 1, with class-index or class-probability targets."""
    unb = input.ndim == 1
    x = _channels_first(input, "cross_entropy")
    if target.dtype.kind == "f":
        logp = log_softmax(x, 1)
        t = lax.reshape(target, (1,) + target.shape) if unb else target
        if t.shape != logp.shape:
            raise op_error(ShapeError, "cross_entropy", f"probability target of shape {target.shape} does not "
                           f"match input {input.shape}")
        C = logp.shape[1]
        if label_smoothing:
            t = lax.add(lax.mul(t, 1.0 - label_smoothing), label_smoothing / C)
        prod = lax.mul(logp, t)
        if weight is not None:
            prod = lax.mul(prod, lax.reshape(weight, (C,) + (1,) * (logp.ndim - 2)))
        loss = lax.neg(lax.reduce_sum(prod, (1,)))
        if unb:
            loss = lax.reshape(loss, ())
        if reduction == "mean":
            return lax.div(E.sum(loss), max(loss.numel(), 1) if loss.numel() else 0)
        return _reduce(loss, reduction)
    t = lax.reshape(target, (1,)) if unb else target
    z, _ = _activations.shifted_by_max(x, 1, None)
    lse = lax.log(lax.reduce_sum(lax.exp(z), (1,)))
    out = _class_loss(z, lse, t, weight, ignore_index, reduction, label_smoothing, "cross_entropy")
    return lax.reshape(out, ()) if unb and reduction == "none" else out


@autocast_float32("input", "target", "weight", "pos_weight")
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight=None, reduction: str = "mean",
                                     pos_weight=None) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable expression."""
    sp = lax.add(lax.log1p(lax.exp(lax.neg(lax.abs(input)))), lax.max(lax.neg(input), 0.0))
    if pos_weight is not None:
        lw = lax.add(lax.mul(lax.sub(pos_weight, 1.0), target), 1.0)
        loss = lax.add(lax.mul(lax.sub(1.0, target), input), lax.mul(lw, sp))
    else:
        loss = lax.add(lax.mul(lax.sub(1.0, target), input), sp)
    if weight is not None:
        loss = lax.mul(loss, weight)
    return _reduce(loss, reduction)


# ---------------------------------------------------------------- attention
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask=None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale=None) -> Tensor:
    """softmax(q k^T * scale + mask) v over the last two dims; `is_causal` masks the future."""
    L, S = query.shape[-2], key.shape[-2]
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise op_error(ShapeError, "scaled_dot_product_attention",
                       f"query {query.shape}, key {key.shape} and value {value.shape} do not fit")
    sc = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    s = lax.mul(E.matmul(query, E.transpose(key, -2, -1)), sc)
    neg_inf = lax.full((), float("-inf"), s.dtype)
    if is_causal:
        causal = lax.ge(lax.iota((L, S), 0, dt.int64), lax.iota((L, S), 1, dt.int64))
        s = lax.select(causal, s, neg_inf)
    if attn_mask is not None:
        if attn_mask.dtype is dt.bool_:
            s = lax.select(attn_mask, s, neg_inf)
        else:
            s = lax.add(s, attn_mask)
    p = softmax(s, -1)
    if dropout_p:
        p = dropout(p, dropout_p, True)
    return E.matmul(p, value)


from .functional_extra import *  # noqa: E402,F401,F403  (more activations, losses, distances, one_hot)
from .ctc import ctc_loss  # noqa: E402,F401
from .functional_extra import _pad_nonconstant  # noqa: E402
from .functional_spatial import *  # noqa: E402,F401,F403  (conv_transpose, norms, interpolate, fold, pools)
from .functional_resample import _avg_pool, _max_pool, max_pool2d_with_indices  # noqa: E402  (N-d pools)
