"""ONNX neural-network op handlers: convolution, pooling, normalisation, the softmax family, Dropout
and the losses (registered into `ops.OPS` when `ops` is imported)."""
from __future__ import annotations

import numpy as np

from .. import api as E
from .._core import dtypes as dt
from ..nn import functional as F
from ..ops import lax
from .ops import _ax, _zero, register, static
from .ops_shape import _unsqueeze

# ------------------------------------------------------------------ convolution and pooling
def _same_pads(ins, k, s, d, mode):
    pads = []
    for n, kk, ss, dd in zip(ins, k, s, d):
        out = -(-n // ss)
        total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if mode == "SAME_UPPER" else (big, small))
    return pads


def _geometry(ctx, x, k):
    nd = len(k)
    s = ctx.attr("strides") or [1] * nd
    d = ctx.attr("dilations") or [1] * nd
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(x.shape[2:], k, s, d, auto)
    elif auto == "VALID":
        pads = [(0, 0)] * nd
    else:
        p = ctx.attr("pads") or [0] * (2 * nd)
        pads = [(p[i], p[i + nd]) for i in range(nd)]
    return list(s), list(d), pads


@register("Conv")
def conv(ctx, x, w, b=None):
    k = ctx.attr("kernel_shape") or list(w.shape[2:])
    s, d, pads = _geometry(ctx, x, k)
    y = lax.conv_general(x, w, s, pads, [1] * len(k), d, ctx.attr("group", 1))
    if b is not None:
        y = lax.add(y, lax.reshape(b, (b.shape[0],) + (1,) * len(k)))
    return y


@register("ConvTranspose")
def conv_transpose(ctx, x, w, b=None):
    nd = x.ndim - 2
    g = ctx.attr("group", 1)
    k = ctx.attr("kernel_shape") or list(w.shape[2:])
    s = ctx.attr("strides") or [1] * nd
    d = ctx.attr("dilations") or [1] * nd
    op = ctx.attr("output_padding") or [0] * nd
    auto = ctx.attr("auto_pad", "NOTSET")
    out_shape = ctx.attr("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        ins = x.shape[2:]
        out_shape = list(out_shape)[-nd:] if out_shape is not None else [n * ss for n, ss in zip(ins, s)]
        pads = []
        for i in range(nd):
            total = s[i] * (ins[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 - out_shape[i]  # < 0: extra output
            pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
    elif auto == "VALID":
        pads = [(0, 0)] * nd
    else:
        p = ctx.attr("pads") or [0] * (2 * nd)
        pads = [(p[i], p[i + nd]) for i in range(nd)]
    C, Mg = w.shape[0], w.shape[1]
    wt = lax.reshape(w, (g, C // g, Mg) + tuple(w.shape[2:]))
    wt = lax.transpose(wt, (0, 2, 1) + tuple(range(3, 3 + nd)))
    wt = lax.rev(lax.reshape(wt, (g * Mg, C // g) + tuple(w.shape[2:])), tuple(range(2, 2 + nd)))
    cpads = [((k[i] - 1) * d[i] - pads[i][0], (k[i] - 1) * d[i] - pads[i][1] + op[i]) for i in range(nd)]
    y = lax.conv_general(x, wt, [1] * nd, cpads, s, d, g)
    if b is not None:
        y = lax.add(y, lax.reshape(b, (b.shape[0],) + (1,) * nd))
    return y


def _pool_pads(ctx, x, k, s, d, pads):
    """Add the extra high padding ceil_mode needs (PyTorch's rule: the last window starts inside)."""
    if not ctx.attr("ceil_mode", 0):
        return pads, pads
    out = []
    for n, kk, ss, dd, (lo, hi) in zip(x.shape[2:], k, s, d, pads):
        eff = (kk - 1) * dd + 1
        o = -(-(n + lo + hi - eff) // ss) + 1
        if (o - 1) * ss >= n + lo:
            o -= 1
        out.append((lo, max(hi, (o - 1) * ss + eff - n - lo)))
    return out, pads


@register("MaxPool")
def max_pool(ctx, x):
    k = ctx.attr("kernel_shape")
    s, d, pads = _geometry(ctx, x, k)
    pads, _ = _pool_pads(ctx, x, k, s, d, pads)
    y = lax.reduce_window(x, "max", (1, 1) + tuple(k), (1, 1) + tuple(s), [(0, 0), (0, 0)] + pads,
                          None, (1, 1) + tuple(d))
    if ctx.wants(1):
        from .ops_vision import max_pool_with_indices
        return max_pool_with_indices(ctx, x, y, k, s, d, pads)
    return y


@register("AveragePool")
def avg_pool(ctx, x):
    k = ctx.attr("kernel_shape")
    s, d, pads = _geometry(ctx, x, k)
    full, explicit = _pool_pads(ctx, x, k, s, d, pads)
    win, st, wd = (1, 1) + tuple(k), (1, 1) + tuple(s), (1, 1) + tuple(d)
    total = lax.reduce_window(x, "sum", win, st, [(0, 0), (0, 0)] + full, None, wd)
    ones = lax.full((1, 1) + tuple(x.shape[2:]), 1, x.dtype)
    if ctx.attr("count_include_pad", 0):
        ones = lax.pad(ones, 1, [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in explicit])
        extra = [(0, f[1] - e[1]) for f, e in zip(full, explicit)]
        cnt = lax.reduce_window(ones, "sum", win, st, [(0, 0), (0, 0)] + extra, None, wd)
    else:
        cnt = lax.reduce_window(ones, "sum", win, st, [(0, 0), (0, 0)] + full, None, wd)
    return lax.div(total, cnt.detach())


@register("LpPool")
def lp_pool(ctx, x):
    p = ctx.attr("p", 2)
    k = ctx.attr("kernel_shape")
    s, d, pads = _geometry(ctx, x, k)
    pads, _ = _pool_pads(ctx, x, k, s, d, pads)
    t = lax.reduce_window(lax.pow(lax.abs(x), float(p)), "sum", (1, 1) + tuple(k), (1, 1) + tuple(s),
                          [(0, 0), (0, 0)] + pads, None, (1, 1) + tuple(d))
    return lax.pow(t, 1.0 / p)


@register("GlobalAveragePool")
def global_avg_pool(ctx, x):
    ax = tuple(range(2, x.ndim))
    return lax.keepdims(lax.div(lax.reduce_sum(x, ax), int(np.prod(x.shape[2:]))), ax)


@register("GlobalMaxPool")
def global_max_pool(ctx, x):
    ax = tuple(range(2, x.ndim))
    return lax.keepdims(lax.reduce_max(x, ax), ax)


# ------------------------------------------------------------------ normalisation
def _cshape(x):
    return (x.shape[1],) + (1,) * (x.ndim - 2)


@register("BatchNormalization")
def batch_norm(ctx, x, scale, b, mean, var):
    eps = ctx.attr("epsilon", 1e-5)
    if ctx.attr("training_mode", 0):
        ax = (0,) + tuple(range(2, x.ndim))
        n = int(np.prod([x.shape[a] for a in ax]))
        m = lax.div(lax.reduce_sum(x, ax), n)
        xc = lax.sub(x, lax.reshape(m, _cshape(x)))
        v = lax.div(lax.reduce_sum(lax.mul(xc, xc), ax), n)
        y = lax.mul(xc, lax.reshape(lax.mul(lax.rsqrt(lax.add(v, eps)), scale), _cshape(x)))
        y = lax.add(y, lax.reshape(b, _cshape(x)))
        mom = ctx.attr("momentum", 0.9)
        rm = lax.add(lax.mul(mean, mom), lax.mul(m, 1 - mom))
        rv = lax.add(lax.mul(var, mom), lax.mul(v, 1 - mom))
        return (y, rm, rv)[:ctx.n_out]
    return F.batch_norm(x, mean, var, scale, b, False, 0.0, eps)


@register("InstanceNormalization")
def instance_norm(ctx, x, scale, b):
    ax = tuple(range(2, x.ndim))
    y = _normalize(x, ax, ctx.attr("epsilon", 1e-5))[0]
    return lax.add(lax.mul(y, lax.reshape(scale, _cshape(x))), lax.reshape(b, _cshape(x)))


def _normalize(x, ax, eps):
    n = int(np.prod([x.shape[a] for a in ax]))
    m = lax.div(lax.reduce_sum(x, ax), n)
    xc = lax.sub(x, lax.expand_reduced(m, x.shape, ax))
    v = lax.div(lax.reduce_sum(lax.mul(xc, xc), ax), n)
    inv = lax.rsqrt(lax.add(v, eps))
    return lax.mul(xc, lax.expand_reduced(inv, x.shape, ax)), m, inv


@register("LayerNormalization")
def layer_norm(ctx, x, scale, b=None):
    a = _ax(ctx.attr("axis", -1), x.ndim)
    ax = tuple(range(a, x.ndim))
    xx = E.convert(x, dt.float32) if ctx.attr("stash_type", 1) == 1 and x.dtype.kind == "f" \
        and x.dtype.itemsize < 4 else x
    y, m, inv = _normalize(xx, ax, ctx.attr("epsilon", 1e-5))
    y = lax.mul(E.convert(y, x.dtype), scale)
    if b is not None:
        y = lax.add(y, b)
    return (y, lax.keepdims(m, ax), lax.keepdims(inv, ax))[:ctx.n_out]


@register("RMSNormalization")
def rms_norm(ctx, x, scale):
    a = _ax(ctx.attr("axis", -1), x.ndim)
    ax = tuple(range(a, x.ndim))
    n = int(np.prod([x.shape[i] for i in ax]))
    ms = lax.div(lax.reduce_sum(lax.mul(x, x), ax), n)
    y = lax.mul(x, lax.expand_reduced(lax.rsqrt(lax.add(ms, ctx.attr("epsilon", 1e-5))), x.shape, ax))
    return lax.mul(y, scale)


@register("GroupNormalization", since=18)
def group_norm(ctx, x, scale, b):
    G = ctx.attr("num_groups")
    N, C = x.shape[:2]
    xg = lax.reshape(x, (N, G, -1) if False else (N, G, int(np.prod(x.shape[1:])) // G))
    y = lax.reshape(_normalize(xg, (2,), ctx.attr("epsilon", 1e-5))[0], x.shape)
    if scale.shape[0] != C:  # opset 18: one scale and bias per group
        scale = lax.reshape(lax.broadcast_in_dim(scale, (G, C // G), (0,)), (C,))
        b = lax.reshape(lax.broadcast_in_dim(b, (G, C // G), (0,)), (C,))
    return lax.add(lax.mul(y, lax.reshape(scale, _cshape(x))), lax.reshape(b, _cshape(x)))


@register("LRN")
def lrn(ctx, x):
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    nd = x.ndim
    ss = lax.reduce_window(lax.mul(x, x), "sum", (1, size) + (1,) * (nd - 2), (1,) * nd,
                           [(0, 0), (lo, hi)] + [(0, 0)] * (nd - 2))
    return lax.div(x, lax.pow(lax.add(lax.mul(ss, alpha / size), bias), beta))


@register("MeanVarianceNormalization")
def mvn(ctx, x):
    ax = tuple(sorted(_ax(a, x.ndim) for a in (ctx.attr("axes") or [0, 2, 3])))
    n = int(np.prod([x.shape[a] for a in ax]))
    m = lax.expand_reduced(lax.div(lax.reduce_sum(x, ax), n), x.shape, ax)
    xc = lax.sub(x, m)
    v = lax.expand_reduced(lax.div(lax.reduce_sum(lax.mul(xc, xc), ax), n), x.shape, ax)
    return lax.div(xc, lax.add(lax.sqrt(v), 1e-9))


@register("LpNormalization")
def lp_norm(ctx, x):
    a, p = _ax(ctx.attr("axis", -1), x.ndim), ctx.attr("p", 2)
    nrm = lax.reduce_sum(lax.abs(x), (a,)) if p == 1 else lax.sqrt(lax.reduce_sum(lax.mul(x, x), (a,)))
    nrm = lax.keepdims(nrm, (a,))
    return lax.select(lax.eq(nrm, 0), _zero(x), lax.div(x, nrm))


# ---- softmax family: before opset 13 they flatten to 2-D at `axis`
def _flat2d(fn):
    def old(ctx, x):
        a = _ax(ctx.attr("axis", 1), x.ndim)
        y = fn(lax.reshape(x, (int(np.prod(x.shape[:a])), int(np.prod(x.shape[a:])))), 1)
        return lax.reshape(y, x.shape)

    def new(ctx, x):
        return fn(x, _ax(ctx.attr("axis", -1), x.ndim))
    return old, new


def _hardmax(x, a):
    idx = lax.argmax(x, a)
    return E.convert(lax.eq(lax.keepdims(idx, (a,)), lax.iota(x.shape, a, idx.dtype)), x.dtype)


for _n, _f in {"Softmax": F.softmax, "LogSoftmax": F.log_softmax, "Hardmax": _hardmax}.items():
    _old, _new = _flat2d(_f)
    register(_n)(_old)
    register(_n, since=13)(_new)


@register("Dropout")
def dropout(ctx, x, ratio=None, training=None):
    train = bool(static(training).reshape(-1)[0]) if training is not None else False
    r = float(static(ratio).reshape(-1)[0]) if ratio is not None else ctx.attr("ratio", 0.5)
    if train and r > 0:
        raise ctx.unsupported("training_mode=True with ratio > 0 (random mask)")
    if ctx.n_out > 1:
        return x, lax.full(x.shape, True, dt.bool_)
    return x


# ---- losses
def _nll(ctx, logp, target, weight):
    ii = ctx.attr("ignore_index")
    t = E.convert(target, dt.int64)
    valid = lax.ne(t, ii) if ii is not None else None
    safe = lax.select(valid, t, 0) if valid is not None else t
    picked = lax.reshape(lax.take_along_axis(logp, _unsqueeze(safe, [1]), 1), safe.shape)
    w = lax.gather(weight, safe, 0) if weight is not None else lax.full(safe.shape, 1, logp.dtype)
    if valid is not None:
        w = lax.select(valid, w, 0)
    loss = lax.neg(lax.mul(picked, w))
    red = ctx.attr("reduction", "mean")
    if red == "none":
        return loss
    s = lax.reduce_sum(loss, tuple(range(loss.ndim)))
    if red == "sum":
        return s
    return lax.div(s, lax.reduce_sum(w, tuple(range(w.ndim))))


@register("NegativeLogLikelihoodLoss")
def nll_loss(ctx, x, target, weight=None):
    return _nll(ctx, x, target, weight)


@register("SoftmaxCrossEntropyLoss")
def softmax_ce(ctx, scores, labels, weight=None):
    logp = F.log_softmax(scores, 1)
    loss = _nll(ctx, logp, labels, weight)
    return (loss, logp)[:ctx.n_out]
