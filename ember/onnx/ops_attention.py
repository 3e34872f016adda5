"""ONNX attention-family op handlers: Attention (opset 23-25), RotaryEmbedding, SwiGLU,
LinearAttention and CausalConvWithState (registered into `ops.OPS` when `ops` is imported).

Masks that depend only on sizes and attributes (causal frontier, sliding window, padding from
`nonpad_kv_seqlen`) are built in numpy as additive 0 / -inf biases; Q, K, V and a float
`attn_mask` stay on the ember data path, so autograd flows through them.
"""
from __future__ import annotations

import math

import numpy as np

from .. import api as E
from .._core import dtypes as dt
from ..ops import lax
from .ops import const, onnx_dtype, register, static

_NEG_INF = -math.inf


# ------------------------------------------------------------------ helpers
def _split_heads(x, heads):
    """(B, S, H*D) -> (B, H, S, D)."""
    b, s, hd = x.shape
    return lax.transpose(lax.reshape(x, (b, s, heads, hd // heads)), (0, 2, 1, 3))


def _repeat_heads(x, reps):
    """Interleave-repeat each head `reps` times along axis 1: [h0, h0, h1, h1, ...]."""
    if reps == 1:
        return x
    b, h, s, d = x.shape
    y = lax.broadcast_in_dim(x, (b, h, reps, s, d), (0, 1, 3, 4))
    return lax.reshape(y, (b, h * reps, s, d))


def _bool_bias(mask, dtype):
    """A boolean keep-mask as an additive bias: True -> 0, False -> -inf."""
    return lax.select(mask, lax.full((), 0, dtype), lax.full((), _NEG_INF, dtype))


def _frontier(sq, skv, offset, allowed_fn):
    """A (q, kv) or (B, 1, q, kv) 0/-inf bias from `allowed_fn(diff)` with diff = i + offset - j."""
    i = np.arange(sq).reshape(sq, 1)
    j = np.arange(skv).reshape(1, skv)
    off = np.asarray(offset)
    if off.ndim:
        diff = i + off.reshape(-1, 1, 1) - j
        return np.where(allowed_fn(diff), 0.0, -np.inf).reshape(off.size, 1, sq, skv)
    return np.where(allowed_fn(i + int(off) - j), 0.0, -np.inf)


def safe_softmax(x, axis=-1):
    """Softmax along `axis` whose all -inf rows give 0, not NaN."""
    axis = axis % x.ndim
    m = lax.keepdims(lax.reduce_max(x, (axis,)), (axis,)).detach()
    m = lax.select(lax.eq(m, _NEG_INF), lax.full((), 0, x.dtype), m)
    e = lax.exp(lax.sub(x, m))
    s = lax.keepdims(lax.reduce_sum(e, (axis,)), (axis,))
    s = lax.select(lax.eq(s, 0), lax.full((), 1, x.dtype), s)
    return lax.div(e, s)


# ------------------------------------------------------------------ Attention
def _attention_bias(ctx, mask, dtype, sq, skv, past_len, nonpad):
    """The additive bias over (..., q, kv): attn_mask composed with causal, window and padding."""
    npd = dtype.np
    if mask is not None and mask.shape[-1] < skv:
        pad = [(0, 0, 0)] * (mask.ndim - 1) + [(0, skv - mask.shape[-1], 0)]
        mask = lax.pad(mask, False if mask.dtype is dt.bool_ else _NEG_INF, pad)
    if mask is not None and mask.dtype is dt.bool_:
        mask = _bool_bias(mask, dtype)
    offset = (nonpad.reshape(-1) - sq) if (nonpad is not None and past_len is None) else (past_len or 0)
    extra = np.zeros((sq, skv), npd)
    if ctx.attr("is_causal", 0):
        extra = extra + _frontier(sq, skv, offset, lambda d: d >= 0).astype(npd)
    left, right = ctx.attr("left_window_size", -1), ctx.attr("right_window_size", -1)
    if left < -1 or right < -1:
        raise ctx.unsupported(f"left_window_size={left}, right_window_size={right}")
    if left >= 0 or right >= 0:
        def win(d):
            ok = np.ones(d.shape, bool)
            if left >= 0:
                ok &= d <= left
            if right >= 0:
                ok &= -d <= right
            return ok
        extra = extra + _frontier(sq, skv, offset, win).astype(npd)
    if nonpad is not None:
        keep = np.arange(skv)[None, :] < nonpad.reshape(-1, 1)
        extra = extra + np.where(keep, 0.0, -np.inf).astype(npd).reshape(-1, 1, 1, skv)
    bias = const(extra)
    return bias if mask is None else lax.add(E.convert(mask, dtype), bias)


@register("Attention", since=23)
def attention(ctx, q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
    """Scaled dot-product attention with GQA, masks, KV cache, softcap and the qk output modes."""
    if (past_key is None) != (past_value is None):
        raise ctx.unsupported("past_key without past_value (or the reverse)")
    three_d = q.ndim == 3
    if three_d:
        qh, kvh = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
        if not qh or not kvh:
            raise ctx.unsupported("3-D Q/K/V without q_num_heads and kv_num_heads")
        q, k, v = _split_heads(q, qh), _split_heads(k, kvh), _split_heads(v, kvh)
    elif q.ndim != 4:
        raise ctx.unsupported(f"rank-{q.ndim} Q")
    scale = ctx.attr("scale")
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    s = float(q.dtype.np.type(math.sqrt(scale))) if q.dtype.kind == "f" else math.sqrt(scale)
    if past_key is not None:
        k = lax.concatenate([past_key, k], 2)
        v = lax.concatenate([past_value, v], 2)
    present_k, present_v = k, v
    sq, skv = q.shape[2], k.shape[2]
    nonpad = static(nonpad_kv_seqlen).astype(np.int64) if nonpad_kv_seqlen is not None else None
    bias = _attention_bias(ctx, attn_mask, q.dtype, sq, skv,
                           past_key.shape[2] if past_key is not None else None, nonpad)
    hq, hk = q.shape[1], k.shape[1]
    if hq != hk:
        if hq % hk:
            raise ctx.unsupported(f"{hq} query heads over {hk} key/value heads")
        k, v = _repeat_heads(k, hq // hk), _repeat_heads(v, hq // hk)
    qk = E.matmul(lax.mul(q, s), lax.transpose(lax.mul(k, s), (0, 1, 3, 2)))
    cap = ctx.attr("softcap", 0.0)
    if cap and cap > 0:
        qk = lax.mul(lax.tanh(lax.div(qk, cap)), cap)
    mode = ctx.attr("qk_matmul_output_mode", 0)
    if mode not in (0, 1, 2, 3):
        raise ctx.unsupported(f"qk_matmul_output_mode={mode}")
    logits = lax.add(qk, bias)
    qk_out = logits if mode == 2 else qk
    prec = ctx.attr("softmax_precision")
    x = E.convert(logits, onnx_dtype(prec)) if prec is not None else logits
    p = safe_softmax(x, -1)
    dead = lax.eq(lax.keepdims(lax.reduce_max(bias, (bias.ndim - 1,)), (bias.ndim - 1,)), _NEG_INF)
    p = E.convert(lax.select(dead, lax.full((), 0, p.dtype), p), q.dtype)
    if mode == 3:
        qk_out = p
    y = E.matmul(p, v)
    if three_d:
        b, h, sq_, dv = y.shape
        y = lax.reshape(lax.transpose(y, (0, 2, 1, 3)), (b, sq_, h * dv))
    return y, present_k, present_v, qk_out


# ------------------------------------------------------------------ RotaryEmbedding
def _last(x, start, stop, step=1):
    lo, hi, st = [0] * x.ndim, list(x.shape), [1] * x.ndim
    lo[-1], hi[-1], st[-1] = start, stop, step
    return lax.slice(x, lo, hi, st)


@register("RotaryEmbedding", since=23)
def rotary_embedding(ctx, x, cos, sin, position_ids=None):
    """Rotate the (first rotary_embedding_dim of the) head dimension by cos/sin caches."""
    shape = x.shape
    if x.ndim == 4:  # (B, H, S, D) -> (B, S, H, D)
        x = lax.transpose(x, (0, 2, 1, 3))
    elif x.ndim == 3:
        nh = ctx.attr("num_heads", 0)
        if not nh:
            raise ctx.unsupported("3-D input without num_heads")
        x = lax.reshape(x, (shape[0], shape[1], nh, shape[2] // nh))
    else:
        raise ctx.unsupported(f"rank-{x.ndim} input")
    d = x.shape[3]
    rd = ctx.attr("rotary_embedding_dim", 0) or d
    if position_ids is not None:
        pid = E.convert(position_ids, dt.int64)
        cos, sin = lax.gather(cos, pid, 0), lax.gather(sin, pid, 0)
    if cos.shape[-1] != rd // 2 or sin.shape[-1] != rd // 2:
        raise ctx.unsupported(f"cos/sin caches of width {cos.shape[-1]} for rotary_embedding_dim {rd}")
    cs = lax.reshape(cos, cos.shape[:-1] + (1, rd // 2))
    sn = lax.reshape(sin, sin.shape[:-1] + (1, rd // 2))
    rot, keep = _last(x, 0, rd), _last(x, rd, d)
    inter = ctx.attr("interleaved", 0)
    if inter:
        x1, x2 = _last(rot, 0, rd, 2), _last(rot, 1, rd, 2)
    else:
        x1, x2 = _last(rot, 0, rd // 2), _last(rot, rd // 2, rd)
    re = lax.sub(lax.mul(cs, x1), lax.mul(sn, x2))
    im = lax.add(lax.mul(sn, x1), lax.mul(cs, x2))
    if inter:
        pair = [lax.reshape(re, re.shape + (1,)), lax.reshape(im, im.shape + (1,))]
        rot = lax.reshape(lax.concatenate(pair, re.ndim), rot.shape)
    else:
        rot = lax.concatenate([re, im], 3)
    out = lax.concatenate([rot, keep], 3) if rd < d else rot
    return lax.reshape(out, shape) if len(shape) == 3 else lax.transpose(out, (0, 2, 1, 3))


# ------------------------------------------------------------------ SwiGLU
@register("SwiGLU", since=28)
def swiglu(ctx, a, b):
    """a * sigmoid(alpha * a) * b."""
    if tuple(a.shape) != tuple(b.shape):
        raise ctx.unsupported(f"inputs of shapes {a.shape} and {b.shape} (no broadcasting)")
    return lax.mul(lax.mul(a, lax.logistic(lax.mul(a, ctx.attr("alpha", 1.0)))), b)


# ------------------------------------------------------------------ LinearAttention
def _time(x, i):
    """(B, H, T, D)[:, :, i, :] -> (B, H, D)."""
    b, h, _, d = x.shape
    return lax.reshape(lax.slice(x, (0, 0, i, 0), (b, h, i + 1, d), (1, 1, 1, 1)), (b, h, d))


@register("LinearAttention", since=27)
def linear_attention(ctx, query, key, value, past_state=None, decay=None, beta=None):
    """Recurrent linear attention (linear, gated, delta, gated_delta update rules), step by step."""
    rule = ctx.attr("update_rule", "gated_delta")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ctx.unsupported(f"update_rule={rule!r}")
    qh, kvh = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
    if not qh or not kvh or qh % kvh:
        raise ctx.unsupported(f"q_num_heads={qh}, kv_num_heads={kvh}")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gating != (decay is not None) or delta != (beta is not None):
        raise ctx.unsupported(f"update_rule={rule!r} with decay={decay is not None}, beta={beta is not None}")
    if query.ndim != 3 or key.ndim != 3 or value.ndim != 3:
        raise ctx.unsupported("query/key/value not of rank 3")
    f32 = dt.float32
    b, t, _ = query.shape
    dk, dv, grp = query.shape[-1] // qh, value.shape[-1] // kvh, qh // kvh
    q4 = _split_heads(E.convert(query, f32), qh)
    k4 = _split_heads(E.convert(key, f32), kvh)
    v4 = _split_heads(E.convert(value, f32), kvh)
    if decay is not None:
        if decay.shape[-1] == kvh:
            g4 = lax.transpose(lax.reshape(E.convert(decay, f32), (b, t, kvh, 1)), (0, 2, 1, 3))
        elif decay.shape[-1] == kvh * dk:
            g4 = _split_heads(E.convert(decay, f32), kvh)
        else:
            raise ctx.unsupported(f"decay of last dim {decay.shape[-1]}")
    if beta is not None:
        nb = beta.shape[-1]
        if nb not in (kvh, 1):
            raise ctx.unsupported(f"beta of last dim {nb}")
        b4 = lax.transpose(lax.reshape(E.convert(beta, f32), (b, t, nb, 1)), (0, 2, 1, 3))
    if past_state is not None:
        state, state_dtype = E.convert(past_state, f32), past_state.dtype
    else:
        state, state_dtype = lax.full((b, kvh, dk, dv), 0, f32), query.dtype
    sc = ctx.attr("scale", 0.0)
    sc = 1.0 / math.sqrt(dk) if not sc else float(sc)
    outs = []
    for i in range(t):
        q_t, k_t, v_t = _time(q4, i), _time(k4, i), _time(v4, i)
        if gating:
            state = lax.mul(state, lax.reshape(lax.exp(_time(g4, i)), (b, kvh, g4.shape[3], 1)))
        if delta:
            got = lax.reduce_sum(lax.mul(state, lax.reshape(k_t, (b, kvh, dk, 1))), (2,))
            v_t = lax.mul(_time(b4, i), lax.sub(v_t, got))
        state = lax.add(state, lax.mul(lax.reshape(k_t, (b, kvh, dk, 1)), lax.reshape(v_t, (b, kvh, 1, dv))))
        read = _repeat_heads(state, grp)
        o = lax.reduce_sum(lax.mul(lax.reshape(q_t, (b, qh, dk, 1)), read), (2,))
        outs.append(lax.reshape(lax.mul(o, sc), (b, 1, qh * dv)))
    out = lax.concatenate(outs, 1) if outs else lax.full((b, 0, qh * dv), 0, f32)
    return E.convert(out, query.dtype), E.convert(state, state_dtype)


# ------------------------------------------------------------------ CausalConvWithState
@register("CausalConvWithState", since=27)
def causal_conv_with_state(ctx, x, w, bias=None, past_state=None):
    """Depthwise causal 1-D convolution over [past_state, x]; returns (y, the last k-1 steps)."""
    act = ctx.attr("activation", "none")
    if act not in ("none", "silu", "swish"):
        raise ctx.unsupported(f"activation={act!r}")
    if x.ndim != 3 or w.ndim != 3:
        raise ctx.unsupported("input or weight not of rank 3")
    n, c, _ = x.shape
    k = w.shape[2]
    pad = past_state if past_state is not None else lax.full((n, c, k - 1), 0, x.dtype)
    xp = lax.concatenate([pad, x], 2) if k > 1 else x
    y = lax.conv_general(xp, w, [1], [(0, 0)], [1], [1], c)
    if bias is not None:
        y = lax.add(y, lax.reshape(bias, (c, 1)))
    if act != "none":
        y = lax.mul(y, lax.logistic(y))
    L = xp.shape[2]
    return y, lax.slice(xp, (0, 0, L - (k - 1)), (n, c, L), (1, 1, 1))
