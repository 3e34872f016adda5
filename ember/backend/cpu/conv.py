"""CPU lowering of conv_general: im2col into per-thread scratch, then CBLAS GEMMs."""
from __future__ import annotations

from ...ops import P
from ...runtime.layout import prod
from ...runtime.memory import nbytes
from ..contract import Unsupported
from ..lowering import register_lowering
from . import loopnest as L
from ...runtime.layout import Ref, contiguous
from .c_expr import CTYPE, HALF, c_literal, itemsize
from .emitter import blas_matrix, loop_nest, round64


def conv(r, e) -> None:
    """conv_general as GEMMs over im2col columns: per batch item (columns = output positions,
    a 1x1 convolution's x itself; each item split among the threads when they outnumber the
    items) when the output is larger than the kernel, else per input channel (columns = kernel
    taps) into per-thread partial sums added in thread order (a weight gradient)."""
    # one function on purpose (over 100 lines): both GEMM layouts share the im2col row and tap
    # helpers below and the operand strides they close over
    lhs, rhs = e.inputs
    dt, kind = r.blas_kind(e)
    x, w, o = r.refs[lhs], r.refs[rhs], r.refs[e.out]
    prm = e.params
    st, pads, ldil, rdil, G = (prm["window_strides"], prm["padding"], prm["lhs_dilation"],
                               prm["rhs_dilation"], prm["groups"])
    nd = len(x.shape) - 2
    B, O, Cg = x.shape[0], w.shape[0], w.shape[1]
    Og, S, Kd, Pd = O // G, x.shape[2:], w.shape[2:], o.shape[2:]
    Kn, Pn = prod(Kd), prod(Pd)
    if B * O * Pn == 0:
        r.emit(("conv_general", [], 0, 0))
        return
    if Cg * Kn == 0:
        r.fill(e, 0, "conv_general")
        return
    ct, item = CTYPE[dt], itemsize(dt)
    gemm, one = ("SGEMM" if kind == "s" else "DGEMM"), c_literal(1, dt)
    # half-precision values: x and w converted into float32 scratch ahead of the threads' own
    # (contiguous there), the float32 result into scratch, then rounded into o (the numpy
    # kernel's float32 copies and final astype)
    convert, at, scratch = [], 0, {}
    for name, ref in (("xin", x), ("win", w), ("out", o)):
        if ref.dtype in HALF:
            scratch[name] = (ref, at)
            at += round64(prod(ref.shape) * item)
    if scratch:
        for name, (ref, a) in scratch.items():
            if name != "out":
                convert += r.convert_to_scratch(ref, a)
        x, w, o = (Ref(ref.where, ref.at, 0, ref.shape, contiguous(ref.shape), dt) if ref.dtype in HALF else ref
                   for ref in (x, w, o))
    base = f"C->ws + {at} + " if scratch else "C->ws + "  # the threads' own scratch follows

    def where(name, ref, const):
        if name in scratch:
            return f"(({'const ' if const else ''}{ct}*)(C->ws + {scratch[name][1]}))"
        return r.ptr(ref)
    xs, ws = x.strides, w.strides
    pre = [L.Stmt(f"{ct}* out = {where('out', o, False)};\nconst {ct}* xin = {where('xin', x, True)};\n"
                  f"const {ct}* win = {where('win', w, True)};")]

    def qs(dims, pv, kv):
        """C: padded positions q_d, whether all are inside x, and the offset they add."""
        code, ok, off = [], [], []
        for d in dims:
            code.append(f"const int64_t q{d} = {pv[d]} * {st[d]} + {kv[d]} * {rdil[d]} - {pads[d][0]};")
            if ldil[d] == 1:
                ok.append(f"q{d} >= 0 && q{d} < {S[d]}")
                off.append(f"q{d} * {xs[d + 2]}")
            else:
                ok.append(f"q{d} >= 0 && q{d} % {ldil[d]} == 0 && q{d} / {ldil[d]} < {S[d]}")
                off.append(f"(q{d} / {ldil[d]}) * {xs[d + 2]}")
        return code, " && ".join(ok) or "1", " + ".join(off) or "0"

    def flat(vs, sizes):
        return " + ".join(f"{v} * {prod(sizes[i + 1:])}" for i, v in enumerate(vs)) or "0"

    pv, kv = [f"p{d}" for d in range(nd)], [f"k{d}" for d in range(nd)]
    last = nd - 1

    def row(dst, src, along_k, part=False):
        # one im2col row along the last spatial dim: over output positions (along_k False; only
        # j0..j1 of them with `part`) or over kernel taps (True)
        if along_k:
            n, step, off = Kd[last], rdil[last], f"p{last} * {st[last]} - {pads[last][0]}"
        else:
            n, step, off = Pd[last], st[last], f"k{last} * {rdil[last]} - {pads[last][0]}"
            if part:
                n, off = "j1 - j0", f"j0 * {st[last]} + {off}"
        return f"row_{ct}({dst}, {src}, {n}, {step}, {off}, {S[last]}, {xs[last + 2]}, {ldil[last]});"

    w_mat = None
    try:
        w_mat = blas_matrix(w, [0], list(range(1, nd + 2))) if Pn >= Kn else \
            blas_matrix(w, list(range(2, nd + 2)), [0])
    except Unsupported:
        pass
    wpack = prod(w.shape) if Pn >= Kn else Kn * Og
    if Pn >= Kn:
        # threads share the (b, g) items; with fewer items than threads (batch 1) every item is
        # split instead, so no thread idles: by output positions (each thread's GEMM columns
        # [lo, hi), im2col'ed into its own scratch) or, with more output channels than positions,
        # by channels (GEMM rows [mlo, mhi) of one im2col matrix the threads fill together)
        direct = False  # a 1x1 convolution whose GEMM reads x itself (no im2col copy)
        if Kn == 1 and set(st) | set(ldil) == {1} and all(tuple(p) == (0, 0) for p in pads):
            try:
                direct = blas_matrix(x, [1], list(range(2, nd + 2))) == ("N", xs[1])
            except Unsupported:
                pass
        col = 0 if direct else round64(Cg * Kn * Pn * item)
        per_thread = col + (0 if w_mat else round64(wpack * item))
        PL, BG = Pd[last], B * G

        def share(n, v, on, align=8):  # the thread's share [vlo, vhi) of n when `on`
            def cut(t):
                return f"((int64_t){n} * {t} / nt) & ~(int64_t){align - 1}"
            return (f"const int64_t {v}lo = !{on} || !tid ? 0 : {cut('tid')};\n"
                    f"const int64_t {v}hi = !{on} || tid == nt - 1 ? {n} : {cut('(tid + 1)')};\n")
        rng = (f"const int split = {BG} < nt, rows = split && {int(Og > Pn)}, cols = split && !rows;\n" +
               share(Pn, "", "cols") + share(Og, "m", "rows") + share(Cg, "c", "rows", 1) +
               f"const int64_t n = hi - lo;\n"
               f"{ct}* mine = rows ? ({ct}*)({base}0) : col;  /* the im2col matrix, column j at mine[j - lo] */\n"
               f"const int64_t bg0 = split ? 0 : (int64_t){BG} * tid / nt, "
               f"bg1 = split ? {BG} : (int64_t){BG} * (tid + 1) / nt;")
        # im2col columns [lo, hi): rows rr of the last spatial dim, each cut to its part j0..j1
        fill = [L.Stmt(f"{ct}* dst = mine + ({flat(['c'] + kv, [Cg] + list(Kd))}) * n;\n"
                       f"const {ct}* src = xin + b * {xs[0]} + (g * {Cg} + c) * {xs[1]};")]
        code, ok, off = qs(range(last), pv, kv)
        body = [L.Stmt(f"const int64_t j0 = rr * {PL} < lo ? lo - rr * {PL} : 0, "
                       f"j1 = rr * {PL} + {PL} > hi ? hi - rr * {PL} : {PL};\n" +
                       "".join(f"const int64_t {pv[d]} = rr / {prod(Pd[d + 1:last])}{f' % {Pd[d]}' if d else ''};\n"
                               for d in range(last)) +
                       "\n".join(code) + f"\n{ct}* r = dst + rr * {PL} + j0 - lo;\n"
                       f"if ({ok} && j1 - j0 == {PL}) {row('r', f'src + {off}', False)}\n"
                       f"else if ({ok}) {row('r', f'src + {off}', False, True)}\n"
                       f"else for (int64_t j = 0; j < j1 - j0; j++) r[j] = 0;")]
        fill = loop_nest(kv, Kd, fill + [L.Loop("rr", f"(hi + {PL - 1}) / {PL}", body, start=f"lo / {PL}")])
        fill = [L.Loop("c", "chi", fill, start="clo")]
        if w_mat:
            (ta, lda), wsrc, rs = w_mat, "win", ws[0]
        else:
            (ta, lda), wsrc, rs = ("N", Cg * Kn), "wp", Cg * Kn
        bmat = f"xin + b * {xs[0]} + g * {Cg * xs[1]} + lo, {xs[1]}" if direct else "mine, n"
        gem = (f"if (n > 0 && mhi > mlo) {gemm}(101, {111 if ta == 'N' else 112}, 111, mhi - mlo, n, {Cg * Kn}, "
               f"{one}, {wsrc} + (g * {Og} + mlo) * {rs}, {lda}, {bmat}, 0, "
               f"out + (b * {O} + g * {Og} + mlo) * {Pn} + lo, {Pn});")
        sync = [] if direct else [L.Stmt("if (rows) {\n#pragma omp barrier\n}")]
        work = [] if direct else fill + sync
        loop = L.Loop("bg", "bg1", [L.Stmt(f"const int64_t b = bg / {G}, g = bg % {G};"), *work, L.Stmt(gem), *sync],
                      start="bg0")
        body = pre + (r.reserve(per_thread) if per_thread else [])
        body += [L.Stmt(f"{ct}* col = ({ct}*)({base}(size_t)tid * {per_thread});")]
        if not w_mat:
            body += [L.Stmt(f"{ct}* wp = ({ct}*)({base}(size_t)tid * {per_thread} + {col});")]
            body += r.pack(w, "win", "wp", ct)
        lines = L.render([L.Stmt("{")] + body + [L.Stmt(rng), loop, L.Stmt("}"), L.Stmt("#pragma omp barrier")])
    else:
        col, acc = round64(B * Pn * Kn * item), round64(B * Pn * O * item)
        per_thread = col + acc + (0 if w_mat else round64(wpack * item))
        code, ok, off = qs(range(last), pv, kv)
        fill = [L.Stmt("\n".join(code) + f"\n{ct}* r = col + ((b * {Pn} + {flat(pv, list(Pd))}) * {Kn} + "
                       f"({flat(kv[:last], list(Kd[:last]))}) * {Kd[last]});\n"
                       f"if ({ok}) {row('r', f'src + {off}', True)}\n"
                       f"else for (int64_t j = 0; j < {Kd[last]}; j++) r[j] = 0;")]
        fill = loop_nest(pv, Pd, loop_nest(kv[:last], Kd[:last], fill))
        fill = [L.Loop("b", B, [L.Stmt(f"const {ct}* src = xin + b * {xs[0]} + (g * {Cg} + c) * {xs[1]};")] + fill)]
        if w_mat:
            tb, ldb = w_mat
            wc = f"win + g * {Og} * {ws[0]} + c * {ws[1]}"
            pack = []
        else:
            tb, ldb, wc = "N", Og, "wp"
            wsub = w.moved(0, list(Kd) + [Og], list(ws[2:]) + [ws[0]])
            pack = r.pack(wsub, f"(win + g * {Og} * {ws[0]} + c * {ws[1]})", "wp", ct)
        gem = (f"{gemm}(101, 111, {111 if tb == 'N' else 112}, {B * Pn}, {Og}, {Kn}, {one}, col, {Kn}, "
               f"{wc}, {ldb}, {one}, acc + g * {Og}, {O});")
        rng = (f"const int64_t lo = (int64_t){Cg} * tid / nt, hi = (int64_t){Cg} * (tid + 1) / nt;\n"
               f"for (int64_t j = 0; j < {B * Pn * O}; j++) acc[j] = 0;")
        loop = L.Loop("g", G, [L.Loop("c", "hi", fill + pack + [L.Stmt(gem)], start="lo")])
        red = L.Loop("bo", B * O, [L.Stmt(
            f"const int64_t b = bo / {O}, oo = bo % {O};\n"
            f"for (int64_t p = 0; p < {Pn}; p++) {{\n"
            f"    {ct} sum = 0;\n"
            f"    for (int t = 0; t < nt; t++) sum += (({ct}*)({base}(size_t)t * {per_thread} + {col}))"
            f"[(b * {Pn} + p) * {O} + oo];\n"
            f"    out[bo * {Pn} + p] = sum;\n}}")], parallel=True)
        body = pre + r.reserve(per_thread) + [L.Stmt(
            f"{ct}* col = ({ct}*)({base}(size_t)tid * {per_thread});\n"
            f"{ct}* acc = ({ct}*)({base}(size_t)tid * {per_thread} + {col});\n"
            f"{ct}* wp = ({ct}*)({base}(size_t)tid * {per_thread} + {col + acc});\n(void)wp;"), L.Stmt(rng)]
        lines = L.render([L.Stmt("{")] + body + [loop, L.Stmt("#pragma omp barrier"), red, L.Stmt("}")])
    if scratch:
        reserve = f"#pragma omp single\nws_reserve(C, (size_t){at} + (size_t){per_thread} * nt);\nif (!C->ws) return;"
        lines = L.render([L.Stmt(reserve)]) + convert + lines
        if "out" in scratch:
            lines += r.round_scratch(*scratch["out"])
    flops = 2 * B * O * Pn * Cg * Kn
    r.emit(("conv_general", lines, flops, nbytes(lhs.aval) + nbytes(rhs.aval) + nbytes(e.out.aval)))

register_lowering(P.conv_general, "cpu", conv)
