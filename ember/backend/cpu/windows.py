"""CPU lowerings of pooling windows: reduce_window (max, sum) and select_and_scatter_add."""
from __future__ import annotations

import numpy as np

from ...ops import P
from ...runtime.layout import Ref, contiguous, prod
from ...runtime.memory import nbytes
from ..contract import Unsupported
from ..lowering import register_lowering
from . import loopnest as L
from .c_expr import CTYPE, c_call, c_convert, c_literal, compute_of, itemsize
from .emitter import PAR_MIN


def _window_taps(r, x: Ref, out_shape, win, strides, pads, bdil, wdil, inner: list) -> list:
    """Loops over the window taps of output position (p0, p1, ...): `inner` runs per tap
    with `ok` (the tap lies inside x) and `xi` (its element index in x)."""
    body = inner
    nd = len(win)
    for d in reversed(range(nd)):
        q = f"p{d} * {strides[d]} + k{d} * {wdil[d]} - {pads[d][0]}"
        if bdil[d] == 1 and pads[d][0] <= 0 and \
                (out_shape[d] - 1) * strides[d] + (win[d] - 1) * wdil[d] - pads[d][0] < x.shape[d]:
            ok, at = "1", f"q{d}"  # every tap of this dim lies inside x
        elif bdil[d] == 1:
            ok, at = f"(q{d} >= 0 && q{d} < {x.shape[d]})", f"q{d}"
        else:
            ok, at = f"(q{d} >= 0 && q{d} % {bdil[d]} == 0 && q{d} / {bdil[d]} < {x.shape[d]})", f"(q{d} / {bdil[d]})"
        prev_ok = f"ok{d - 1}" if d else "1"
        prev_xi = f"xi{d - 1}" if d else "0"
        body = [L.Loop(f"k{d}", win[d], [L.Stmt(
            f"const int64_t q{d} = {q};\nconst int ok{d} = {prev_ok} && {ok};\n"
            f"const int64_t xi{d} = ok{d} ? {prev_xi} + {at} * {x.strides[d]} : 0;")] + body)]
    return body

def _window_rows(r, pre, out_shape, body, total, share="rows") -> list:
    """Lines running `body` for every output position (p0, ...). Threads share the rows
    (all dims but the last) with `share="rows"`, only dim 0 with "dim0", nothing with None."""
    nd = len(out_shape)
    first = 1 if share == "dim0" else 0
    R = prod(out_shape[first:-1])
    dec = ["int64_t rem = r;"]
    for d in reversed(range(first, nd - 1)):
        dec.append(f"const int64_t p{d} = rem % {out_shape[d]}; rem /= {out_shape[d]};")
    loop = L.Loop("r", R, [L.Stmt("\n".join(dec)), L.Loop(f"p{nd - 1}", out_shape[-1], body)])
    if first:
        loop = L.Loop("p0", out_shape[0], [loop])
    shared = prod(out_shape[:1] if first else out_shape[:-1])
    return r.worksharing(pre, [loop], bool(share) and total >= PAR_MIN and shared > 1)

def reduce_window(r, e) -> None:
    """out[p] = max (or sum) over the window taps of x; taps in the padding are skipped."""
    x, out = r.refs[e.inputs[0]], r.refs[e.out]
    t = compute_of(e.out.aval.dtype.name)  # half values: taps combined in float32, rounded at the store
    op = "max" if e.prim is P.reduce_window_max else "add"
    prm = e.params
    if not x.shape:
        raise Unsupported(f"{e.prim.name} of a scalar")
    if not prod(out.shape):
        r.emit((e.prim.name, [], 0, 0))
        return
    if op == "add":
        ident = c_literal(0, t)
    elif t in ("float32", "float64"):
        ident = "-INFINITY" if t == "float32" else "-(double)INFINITY"
    else:
        ident = c_literal(np.iinfo(np.dtype(t)).min, t)
    if out.dtype == t and prm["base_dilation"][-1] == 1 and out.shape[-1] > 1:
        return _reduce_window_rows(r, e, x, out, op, t, ident)
    comb = c_call(op, [("acc", t), (c_convert("in0[xi]", x.dtype, t), t)], t)[0]
    taps = _window_taps(r, x, out.shape, prm["window"], prm["strides"], prm["padding"], prm["base_dilation"],
                             prm["window_dilation"], [L.Stmt(f"if (ok{len(x.shape) - 1}) {{ const int64_t xi = xi{len(x.shape) - 1}; acc = {comb}; }}")])
    oidx = " + ".join(f"p{d} * {s_}" for d, s_ in enumerate(out.strides))
    body = [L.Stmt(f"{CTYPE[t]} acc = {ident};")] + taps + [L.Stmt(f"o0[{oidx}] = {c_convert('acc', t, out.dtype)};")]
    pre = [L.Stmt(f"{CTYPE[out.dtype]}* o0 = {r.ptr(out)};\nconst {CTYPE[x.dtype]}* in0 = {r.ptr(x)};")]
    total = prod(out.shape) * prod(prm["window"])
    r.emit((e.prim.name, _window_rows(r, pre, out.shape, body, total), total,
               nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

def _reduce_window_rows(r, e, x: Ref, out: Ref, op: str, t: str, ident: str) -> None:
    """reduce_window with the output row as the accumulator: per row, the taps in order (those of
    the leading dims, then of the last), each combined into the whole row in one vectorizable
    loop over the output positions whose tap lies inside x. Each output sees its taps in the
    same order as one position at a time would, so the results are the same bits."""
    prm = e.params
    win, strides, pads, wdil = prm["window"], prm["strides"], prm["padding"], prm["window_dilation"]
    nd = len(x.shape)
    ow, os_, n, xs = out.shape[-1], out.strides[-1], x.shape[-1], x.strides[-1]
    s, wd, pad = strides[-1], wdil[-1], pads[-1][0]
    comb = c_call(op, [("o0[ob + p * " + str(os_) + "]", t),
                       (c_convert(f"in0[xb + (p * {s} + ks) * {xs}]", x.dtype, t), t)], t)[0]
    ok, xb = (f"ok{nd - 2}", f"xi{nd - 2}") if nd > 1 else ("1", "0")
    inner = L.Stmt(
        f"const int64_t ks = k * {wd} - {pad}, xb = {xb};\n"
        f"int64_t a = ks >= 0 ? 0 : (-ks + {s} - 1) / {s}, b = {n} - ks <= 0 ? 0 : ({n} - ks + {s} - 1) / {s};\n"
        f"if (a > {ow}) a = {ow};\nif (b > {ow}) b = {ow};\n"
        f"if ({ok}) {{\n    #pragma omp simd\n    for (int64_t p = a; p < b; p++) o0[ob + p * {os_}] = {comb};\n}}")
    taps = _window_taps(r, x, out.shape, win[:-1], strides, pads, prm["base_dilation"], wdil,
                        [L.Loop("k", win[-1], [inner])])
    ob = " + ".join([f"p{d} * {s_}" for d, s_ in enumerate(out.strides[:-1])] or ["0"])
    body = [L.Stmt(f"const int64_t ob = {ob};\nfor (int64_t p = 0; p < {ow}; p++) o0[ob + p * {os_}] = {ident};")]
    body += taps
    pre = [L.Stmt(f"{CTYPE[out.dtype]}* o0 = {r.ptr(out)};\nconst {CTYPE[x.dtype]}* in0 = {r.ptr(x)};")]
    total = prod(out.shape) * prod(win)
    r.emit((e.prim.name, _window_rows(r, pre, tuple(out.shape[:-1]) + (1,), body, total), total,
            nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))


def select_and_scatter_add(r, e) -> None:
    """Each source element added at the first maximum of its window of the operand (the
    first NaN wins); taps in the padding compete with the value -inf and are dropped."""
    src, x, out = r.refs[e.inputs[0]], r.refs[e.inputs[1]], r.refs[e.out]
    xs_, half = e.inputs[1].aval.dtype.name, e.out.aval.dtype.name
    xt, ot = compute_of(xs_), compute_of(half)  # half values compared and added in float32
    prm = e.params
    nd = len(x.shape)
    if not nd:
        raise Unsupported("select_and_scatter_add of a scalar")
    win, st, pads = prm["window"], prm["strides"], prm["padding"]
    # windows that tile the operand (stride = window, no low padding) never overlap: each tap
    # is written once, the chosen one with the source, the others with 0
    tiles = all(w == s_ and lo == 0 for w, s_, (lo, _) in zip(win, st, pads)) and nd > 0
    covers = tiles and all(n_ * s_ >= m for n_, s_, m in zip(src.shape, st, x.shape))
    # overlapping windows add into one element more than once: a half result sums in float32
    # scratch (contiguous, x's shape), rounded into `out` at the end
    summed = not tiles and half != ot
    if not covers and not summed:
        r.fill(e, 0, "select_and_scatter_add zero")
    if not prod(src.shape) or not prod(win):
        if summed:
            r.fill(e, 0, "select_and_scatter_add zero")
        return
    floats = xt in ("float32", "float64")
    ident = ("-INFINITY" if xt == "float32" else "-(double)INFINITY") if floats else \
        c_literal(np.iinfo(np.dtype(xt)).min, xt)
    take = "first || (bv == bv && (v > bv || v != v))" if floats else "first || v > bv"
    # out has x's shape, contiguous: the chosen tap's element index in out (or the scratch)
    ost = contiguous(x.shape) if summed else out.strides
    oi = " + ".join(f"(p{d} * {st[d]} + k{d} - {pads[d][0]}) * {ost[d]}" for d in range(nd))
    ones = (1,) * nd
    taps = _window_taps(r, x, src.shape, win, st, pads, ones, ones, [L.Stmt(
        f"const {CTYPE[xt]} v = ok{nd - 1} ? {c_convert(f'in0[xi{nd - 1}]', xs_, xt)} : {ident};\n"
        f"if ({take}) {{ bv = v; best = ok{nd - 1} ? {oi} : -1; first = 0; }}")])
    sidx = " + ".join(f"p{d} * {s_}" for d, s_ in enumerate(src.strides))
    source = c_convert(f"s0[{sidx}]", src.dtype, ot)
    body = [L.Stmt(f"{CTYPE[xt]} bv = 0;\nint64_t best = -1;\nint first = 1;")] + taps
    if tiles:
        zero = c_literal(0, ot)
        val = c_convert(c_call('add', [(zero, ot), (source, ot)], ot)[0], ot, half)
        body.append(L.Stmt(f"const {CTYPE[out.dtype]} val = {val};"))
        body += _window_taps(r, x, src.shape, win, st, pads, ones, ones, [L.Stmt(
            f"if (ok{nd - 1}) {{ const int64_t oi = {oi}; o0[oi] = oi == best ? val : {c_literal(0, half)}; }}")])
    else:
        add = c_call("add", [("o0[best]", ot), (source, ot)], ot)[0]
        body.append(L.Stmt(f"if (best >= 0) o0[best] = {add};"))
    o_ptr = f"(({CTYPE[ot]}*)C->ws)" if summed else r.ptr(out)
    pre = [L.Stmt(f"{CTYPE[ot if summed else out.dtype]}* o0 = {o_ptr};\nconst {CTYPE[x.dtype]}* in0 = {r.ptr(x)};\n"
                  f"const {CTYPE[src.dtype]}* s0 = {r.ptr(src)};")]
    # threads own whole rows of dim 0 when its windows cannot overlap, else one thread adds
    rows_apart = win[0] == 1 and st[0] == 1 and nd > 1
    total = prod(src.shape) * prod(win)
    share = "rows" if tiles else "dim0" if rows_apart else None
    lines = _window_rows(r, pre, src.shape, body, total, share)
    if summed:
        n = prod(x.shape)
        zero = [L.Stmt(f"{CTYPE[ot]}* z = ({CTYPE[ot]}*)C->ws;"), L.Loop("i", n, [L.Stmt("z[i] = 0;")], vectorize=True)]
        lines = (L.render(r.reserve_shared(n * itemsize(ot))) + r.worksharing(zero[:1], zero[1:], n >= PAR_MIN)
                 + lines + r.round_scratch(out, 0))
    r.emit(("select_and_scatter_add", lines,
               total, nbytes(e.inputs[0].aval) + nbytes(e.inputs[1].aval) + nbytes(e.out.aval)))

register_lowering(P.reduce_window_max, "cpu", reduce_window)
register_lowering(P.reduce_window_sum, "cpu", reduce_window)
register_lowering(P.select_and_scatter_add, "cpu", select_and_scatter_add)
