"""ONNX recurrent op handlers: RNN, GRU and LSTM (registered into `ops.OPS` when `ops` is imported).

Written with ember ops as a loop over time steps in ONNX's own weight layouts (gates `iofc` for
LSTM, `zrh` for GRU), so no ember.nn module's parameter layout is involved. The input projection
of every step is one matmul up front; `sequence_lens` masks steps past each sequence's end (the
state is held and Y is 0 there), and the reverse direction starts at each sequence's last step.
"""
from __future__ import annotations

import numpy as np

from .. import api as E
from ..nn import functional as F
from ..ops import lax
from .ops import const, register, static

# activation name -> (fn(x, alpha, beta), default alpha, default beta); None: takes no alpha/beta
_ACTS = {
    "sigmoid": (lambda x, a, b: lax.logistic(x), None, None),
    "tanh": (lambda x, a, b: lax.tanh(x), None, None),
    "relu": (lambda x, a, b: F.relu(x), None, None),
    "softsign": (lambda x, a, b: lax.div(x, lax.add(lax.abs(x), 1)), None, None),
    "softplus": (lambda x, a, b: F.softplus(x), None, None),
    "leakyrelu": (lambda x, a, b: lax.select(lax.lt(x, 0), lax.mul(x, a), x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: lax.select(lax.gt(x, a), x, 0), 1.0, None),
    "elu": (lambda x, a, b: lax.select(lax.gt(x, 0), x, lax.mul(lax.expm1(x), a)), 1.0, None),
    "hardsigmoid": (lambda x, a, b: lax.min(lax.max(lax.add(lax.mul(x, a), b), 0), 1), 0.2, 0.5),
    "scaledtanh": (lambda x, a, b: lax.mul(lax.tanh(lax.mul(x, b)), a), 1.0, 1.0),
    "affine": (lambda x, a, b: lax.add(lax.mul(x, a), b), 1.0, 0.0),
}


def _activations(ctx, defaults, n_dirs):
    """One list of activation callables per direction, from `activations`/`activation_alpha/beta`."""
    names = ctx.attr("activations") or defaults * n_dirs
    if len(names) != len(defaults) * n_dirs:
        raise ctx.unsupported(f"activations={names} for {n_dirs} direction(s)")
    alphas, betas = list(ctx.attr("activation_alpha") or []), list(ctx.attr("activation_beta") or [])
    fns = []
    for name in names:
        spec = _ACTS.get(name.lower())
        if spec is None:
            raise ctx.unsupported(f"activation {name!r}")
        fn, da, db = spec
        a = alphas.pop(0) if da is not None and alphas else da
        b = betas.pop(0) if db is not None and betas else db
        fns.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    k = len(defaults)
    return [fns[i * k:(i + 1) * k] for i in range(n_dirs)]


def _rows(t, lo, hi):
    """t[..., lo:hi] along the last axis."""
    start, stop = [0] * t.ndim, list(t.shape)
    start[-1], stop[-1] = lo, hi
    return lax.slice(t, start, stop, [1] * t.ndim)


def _dir(t, d):
    """t[d] of a (num_directions, ...) tensor."""
    return lax.reshape(lax.slice(t, (d,) + (0,) * (t.ndim - 1), (d + 1,) + tuple(t.shape[1:]), (1,) * t.ndim),
                       tuple(t.shape[1:]))


def _setup(ctx, x, w, r, b, seq_lens, init, n_gates, extra=()):
    """Shared checks and layout handling; returns the pieces each cell loop needs."""
    direction = ctx.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ctx.unsupported(f"direction={direction!r}")
    n_dirs = 2 if direction == "bidirectional" else 1
    if w.shape[0] != n_dirs:
        raise ctx.unsupported(f"direction={direction!r} with W for {w.shape[0]} direction(s)")
    layout = ctx.attr("layout", 0)
    if layout not in (0, 1):
        raise ctx.unsupported(f"layout={layout}")
    if layout:
        x = lax.transpose(x, (1, 0, 2))
        init = [lax.transpose(s, (1, 0, 2)) if s is not None else None for s in init]
    T, B = x.shape[0], x.shape[1]
    H = r.shape[-1]
    if ctx.has("hidden_size") and ctx.attr("hidden_size") != H:
        raise ctx.unsupported(f"hidden_size={ctx.attr('hidden_size')} with R of width {H}")
    lens = None
    if seq_lens is not None:
        lens = static(seq_lens).astype(np.int64).reshape(-1)
        if (lens >= T).all():
            lens = None
    if b is None:
        b = lax.full((n_dirs, 2 * n_gates * H), 0, x.dtype)
    init = [s if s is not None else lax.full((n_dirs, B, H), 0, x.dtype) for s in init]
    clip = ctx.attr("clip")
    return direction, n_dirs, layout, x, T, B, H, lens, b, init, clip


def _order(direction, d, T):
    return list(range(T - 1, -1, -1)) if direction == "reverse" or d == 1 else list(range(T))


def _mask(lens, t, B):
    return None if lens is None else const((t < lens).reshape(B, 1))


def _clip(g, clip):
    return g if clip is None else lax.min(lax.max(g, -clip), clip)


def _finish(ctx, ys, finals, layout):
    """Stack per-direction outputs into ONNX's Y (T, D, B, H) and Y_h/Y_c (D, B, H), per layout."""
    y = lax.concatenate([lax.reshape(v, (v.shape[0], 1) + tuple(v.shape[1:])) for v in ys], 1)
    outs = [lax.concatenate([lax.reshape(f[i], (1,) + tuple(f[i].shape)) for f in finals], 0)
            for i in range(len(finals[0]))]
    if layout:
        y = lax.transpose(y, (2, 0, 1, 3))
        outs = [lax.transpose(o, (1, 0, 2)) for o in outs]
    return (y, *outs)


def _run(ctx, x, w, r, b, lens, direction, n_dirs, T, B, states, step):
    """Loop each direction over time; `step(d, xw_t, states) -> (y_t, new_states)`."""
    ys, finals = [], []
    zero = lax.full((), 0, x.dtype)
    for d in range(n_dirs):
        wd, bd = _dir(w, d), _dir(b, d)
        xw = lax.add(E.matmul(x, lax.transpose(wd, (1, 0))), _rows(bd, 0, wd.shape[0]))
        st = [_dir(s, d) for s in states]
        out = [None] * T
        for t in _order(direction, d, T):
            xt = lax.reshape(lax.slice(xw, (t, 0, 0), (t + 1, B, xw.shape[2]), (1, 1, 1)), (B, xw.shape[2]))
            y_t, new = step(d, xt, st)
            m = _mask(lens, t, B)
            if m is not None:
                new = [lax.select(m, n, s) for n, s in zip(new, st)]
                y_t = lax.select(m, y_t, zero)
            st = new
            out[t] = lax.reshape(y_t, (1, B, y_t.shape[1]))
        ys.append(lax.concatenate(out, 0) if T else lax.full((0, B, r.shape[-1]), 0, x.dtype))
        finals.append(st)
    return ys, finals


def _mm(h, m):
    """h (B, H) @ m.T for m (G*H, H)."""
    return E.matmul(h, lax.transpose(m, (1, 0)))


@register("RNN", since=7)
def rnn(ctx, x, w, r, b=None, seq_lens=None, initial_h=None):
    """Elman RNN: H = f(X W^T + H R^T + Wb + Rb)."""
    direction, n_dirs, layout, x, T, B, H, lens, b, (h0,), clip = _setup(ctx, x, w, r, b, seq_lens, [initial_h], 1)
    acts = _activations(ctx, ["Tanh"], n_dirs)

    def step(d, xt, st):
        (h,) = st
        g = lax.add(lax.add(xt, _mm(h, _dir(r, d))), _rows(_dir(b, d), H, 2 * H))
        h = acts[d][0](_clip(g, clip))
        return h, [h]
    ys, finals = _run(ctx, x, w, r, b, lens, direction, n_dirs, T, B, [h0], step)
    return _finish(ctx, ys, finals, layout)


@register("GRU", since=7)
def gru(ctx, x, w, r, b=None, seq_lens=None, initial_h=None):
    """GRU, gates zrh, with or without linear_before_reset."""
    direction, n_dirs, layout, x, T, B, H, lens, b, (h0,), clip = _setup(ctx, x, w, r, b, seq_lens, [initial_h], 3)
    acts = _activations(ctx, ["Sigmoid", "Tanh"], n_dirs)
    lbr = ctx.attr("linear_before_reset", 0)

    def step(d, xt, st):
        (h,) = st
        rd, bd = _dir(r, d), _dir(b, d)
        rb = _rows(bd, 3 * H, 6 * H)
        hr = lax.add(_mm(h, lax.slice(rd, (0, 0), (2 * H, H), (1, 1))), _rows(rb, 0, 2 * H))
        zr = lax.add(_rows(xt, 0, 2 * H), hr)
        z = acts[d][0](_clip(_rows(zr, 0, H), clip))
        rr = acts[d][0](_clip(_rows(zr, H, 2 * H), clip))
        rh, rbh = lax.slice(rd, (2 * H, 0), (3 * H, H), (1, 1)), _rows(rb, 2 * H, 3 * H)
        if lbr:
            pre = lax.add(_rows(xt, 2 * H, 3 * H), lax.mul(rr, lax.add(_mm(h, rh), rbh)))
        else:
            pre = lax.add(lax.add(_rows(xt, 2 * H, 3 * H), _mm(lax.mul(rr, h), rh)), rbh)
        hh = acts[d][1](_clip(pre, clip))
        h = lax.add(lax.mul(lax.sub(1, z), hh), lax.mul(z, h))
        return h, [h]
    ys, finals = _run(ctx, x, w, r, b, lens, direction, n_dirs, T, B, [h0], step)
    return _finish(ctx, ys, finals, layout)


@register("LSTM", since=7)
def lstm(ctx, x, w, r, b=None, seq_lens=None, initial_h=None, initial_c=None, p=None):
    """LSTM, gates iofc, peepholes (i, o, f), input_forget coupling."""
    direction, n_dirs, layout, x, T, B, H, lens, b, (h0, c0), clip = _setup(
        ctx, x, w, r, b, seq_lens, [initial_h, initial_c], 4)
    acts = _activations(ctx, ["Sigmoid", "Tanh", "Tanh"], n_dirs)
    coupled = ctx.attr("input_forget", 0)

    def step(d, xt, st):
        h, c = st
        f_, g_, h_ = acts[d]
        g = lax.add(lax.add(xt, _mm(h, _dir(r, d))), _rows(_dir(b, d), 4 * H, 8 * H))
        gi, go, gf, gc = (_rows(g, k * H, (k + 1) * H) for k in range(4))
        pd = _dir(p, d) if p is not None else None

        def peep(gate, k, cell):  # the peephole term, then the clip: both before the activation
            return _clip(gate if pd is None else lax.add(gate, lax.mul(_rows(pd, k * H, (k + 1) * H), cell)), clip)
        i = f_(peep(gi, 0, c))
        f = lax.sub(1, i) if coupled else f_(peep(gf, 2, c))
        c = lax.add(lax.mul(f, c), lax.mul(i, g_(_clip(gc, clip))))
        o = f_(peep(go, 1, c))
        h = lax.mul(o, h_(c))
        return h, [h, c]
    ys, finals = _run(ctx, x, w, r, b, lens, direction, n_dirs, T, B, [h0, c0], step)
    return _finish(ctx, ys, finals, layout)
