"""CPU lowering of dot_general: CBLAS GEMMs with transposes as flags, split over the threads.

float16/bfloat16 operands are converted into float32 scratch and multiplied by SGEMM; a half
result is rounded from the float32 product once (the numpy kernel: np.matmul on float32 copies,
then astype)."""
from __future__ import annotations

from ...ops import P
from ...runtime.layout import Ref, collapse, contiguous, prod
from ..contract import Unsupported
from ..lowering import register_lowering
from . import loopnest as L
from . import qgemm
from .c_expr import CTYPE, HALF, c_convert, c_literal, compute_of, itemsize
from .emitter import GEMM_PAR_MIN, blas_matrix, c_index, dot_dims, loop_nest, round64


def _operand(r, ref: Ref, batch, rows, cols, ct: str, at: int) -> tuple:
    """(ref to index with, (flag, ld), C pointer, packing statements, scratch bytes) of one GEMM
    operand. An operand BLAS cannot read as a matrix (its rows or columns do not merge into one
    stride, e.g. (T, B) of a batch-first sequence seen time-major), or of a half type (no BLAS
    multiplies those: converted to float32, as the numpy kernel's float32 copies), is first copied
    into scratch in (batch, rows, cols) order, at byte `at` of the call's workspace."""
    order = list(batch) + list(rows) + list(cols)
    try:
        flag = blas_matrix(ref, rows, cols)
        if ref.dtype not in HALF:
            return ref, flag, r.ptr(ref), [], 0
        # a half operand BLAS could read: converted in its own memory order (a sequential copy)
        order = sorted(range(len(ref.shape)), key=lambda i: (-abs(ref.strides[i]), i))
    except Unsupported:
        pass
    cs = contiguous([ref.shape[i] for i in order])
    strides = [0] * len(ref.shape)
    for k, i in enumerate(order):
        strides[i] = cs[k]
    packed = Ref(ref.where, ref.at, 0, ref.shape, strides, compute_of(ref.dtype))
    dims = collapse(list(ref.shape), [list(ref.strides), strides])
    names = [f"w{d}" for d in range(len(dims))]
    src, dst = f"src{at}", f"(({ct}*)(C->ws + {at}))"
    value = c_convert(f"{src}[{c_index(names, [d[1][0] for d in dims])}]", ref.dtype, compute_of(ref.dtype))
    copy = [L.Stmt(f"{dst}[{c_index(names, [d[1][1] for d in dims])}] = {value};")]
    stmts = [L.Stmt(f"#pragma omp single\n{{\nconst {CTYPE[ref.dtype]}* {src} = {r.ptr(ref)};")] + \
        loop_nest(names, [d[0] for d in dims], copy) + [L.Stmt("}")]
    nbytes = round64(prod(ref.shape) * itemsize(compute_of(ref.dtype)))
    return packed, blas_matrix(packed, rows, cols), f"((const {ct}*)(C->ws + {at}))", stmts, nbytes


def dot(r, e) -> None:
    """dot_general as CBLAS GEMMs: one per batch item, or one block of columns (rows) per thread;
    int8/uint8 operands with an int32 result (`preferred=int32`) as ember's own int8 GEMM."""
    if qgemm.handles(e):
        return qgemm.lower(r, e)
    x, y = e.inputs
    dt, kind = r.blas_kind(e)
    (xc, yc), (xb, yb) = e.params["contract"], e.params["batch"]
    xr, yr, o, xf, yf, m, k, n, bshape = dot_dims(r, e)
    nb = len(xb)
    if m == 0 or n == 0 or prod(bshape) == 0:
        r.emit(("dot_general", [], 0, 0))
        return
    if k == 0:
        r.fill(e, 0, "dot_general")
        return
    ct = CTYPE[dt]
    half_out = o.dtype in HALF
    o_ptr = r.ptr(o) if not half_out else None
    xr, (ta, lda), a_ptr, x_pack, x_bytes = _operand(r, xr, xb, xf, xc, ct, 0)
    yr, (tb, ldb), b_ptr, y_pack, y_bytes = _operand(r, yr, yb, yc, yf, ct, x_bytes)
    o_at, o_bytes = x_bytes + y_bytes, 0
    if half_out:  # the float32 product into scratch (contiguous), then rounded into `o`
        o_bytes = round64(prod(o.shape) * 4)
        o_ptr = f"((float*)(C->ws + {o_at}))"
        o_half, o = o, Ref(o.where, o.at, 0, o.shape, contiguous(o.shape), dt)
    packing = []
    if x_bytes or y_bytes or o_bytes:
        packing = [L.Stmt(f"#pragma omp single\nws_reserve(C, (size_t){x_bytes + y_bytes + o_bytes});\nif (!C->ws) return;")]
        packing += x_pack + y_pack
    bat = collapse(bshape, [[xr.strides[i] for i in xb], [yr.strides[i] for i in yb], list(o.strides[:nb])])
    one, zero = c_literal(1, dt), c_literal(0, dt)
    pre = [L.Stmt(f"{ct}* o0 = {o_ptr};\nconst {ct}* a0 = {a_ptr};\nconst {ct}* b0 = {b_ptr};")]
    gemm = "SGEMM" if kind == "s" else "DGEMM"
    flag = {"N": 111, "T": 112}
    nbatch = prod(bshape)
    work = nbatch * m * n * k

    def call(a, b, c, mm, nn):
        return (f"{gemm}(101, {flag[ta]}, {flag[tb]}, {mm}, {nn}, {k}, {one}, {a}, {lda}, {b}, {ldb}, "
                f"{zero}, {c}, {n});")
    if nbatch > 1:
        bvars = [f"bat{d}" for d in range(len(bat))]
        idx = [L.Stmt("int64_t rem = bi;")]
        for d in reversed(range(len(bat))):
            idx.append(L.Stmt(f"const int64_t {bvars[d]} = rem % {bat[d][0]}; rem /= {bat[d][0]};"))
        offs = [c_index(bvars, [d[1][j] for d in bat]) for j in range(3)]
        body = idx + [L.Stmt(call(f"a0 + {offs[0]}", f"b0 + {offs[1]}", f"o0 + {offs[2]}", m, n))]
        loop = L.Loop("bi", nbatch, body, parallel=work >= GEMM_PAR_MIN)
        nest = pre + [loop] if loop.parallel else pre + [L.Stmt("#pragma omp single\n{"), loop, L.Stmt("}")]
        lines = L.render([L.Stmt("{")] + nest + [L.Stmt("}")])
    elif work < GEMM_PAR_MIN:
        lines = L.render([L.Stmt("#pragma omp single\n{")] + pre + [L.Stmt(call("a0", "b0", "o0", m, n)), L.Stmt("}")])
    else:
        # each thread multiplies a fixed block of the larger of m and n (multiples of 8)
        if n >= m:
            b_off = "lo" if tb == "N" else f"lo * {ldb}"
            size, c = n, call("a0", f"b0 + {b_off}", "o0 + lo", m, "hi - lo")
        else:
            a_off = f"lo * {lda}" if ta == "N" else "lo"
            size, c = m, call(f"a0 + {a_off}", "b0", f"o0 + lo * {n}", "hi - lo", n)
        rng = (f"const int64_t lo = tid ? ((int64_t){size} * tid / nt) & ~(int64_t)7 : 0;\n"
               f"const int64_t hi = tid == nt - 1 ? {size} : ((int64_t){size} * (tid + 1) / nt) & ~(int64_t)7;\n"
               f"if (hi > lo) {c}")
        lines = L.render([L.Stmt("{")] + pre + [L.Stmt(rng), L.Stmt("}"), L.Stmt("#pragma omp barrier")])
    lines = L.render(packing) + lines if packing else lines
    if half_out:
        lines += r.round_scratch(o_half, o_at)
    item = e.out.aval.dtype.itemsize
    r.emit(("dot_general", lines, 2 * work, item * nbatch * (m * k + k * n + m * n)))

register_lowering(P.dot_general, "cpu", dot)
