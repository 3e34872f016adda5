"""The C emitter the CPU lowerings write into, and the C helpers they share.

An `Emitter` collects one kernel after another: (label, C lines, flops, bytes, argument Refs).
Every address a kernel reads is an argument (`ptr`), so kernels that differ only in where their
values live (the layers of a model) share one C function. Lowerings (`register_lowering(prim,
"cpu", fn)`, in the files of this package named by what they lower) are `fn(emitter, eqn)`.

Each kernel runs inside the step's one OpenMP parallel region: `tid` and `nt` are the thread and
the team size, work is shared with a static schedule and ends with a barrier, so results are
identical run to run at a fixed thread count.
"""
from __future__ import annotations

import numpy as np

from ...ops import P
from ...runtime.fusion import Group
from ...runtime.layout import Ref, aligned_strides, collapse, contiguous, merge, prod
from ...runtime.memory import nbytes
from ..contract import Unsupported
from . import loopnest as L
from .c_expr import CTYPE, c_convert, c_literal, compute_of, itemsize, render_eqn

PAR_MIN = 1 << 14     # loops over fewer elements run on one thread
GEMM_PAR_MIN = 1 << 16  # GEMMs with fewer multiply-adds run on one thread
LANES = 16            # partial sums of a row reduction (vectorised; no reassociation needed)
REDUCE = {P.reduce_sum: "add", P.reduce_max: "max", P.reduce_min: "min", P.reduce_prod: "mul",
          P.reduce_and: "and", P.reduce_or: "or"}  # the combiner of each reduction


def c_index(loop_vars, strides) -> str:
    """C for the element index of loop variables `loop_vars` with `strides`."""
    terms = [f"{v} * {s}" if s != 1 else v for v, s in zip(loop_vars, strides) if s != 0]
    return " + ".join(terms) if terms else "0"


def c_offset(av, cv, od, cd, k) -> str:
    """Operand `k`'s offset from the loop variables over `around`'s dims (its axis term aside)."""
    return f"{c_index(av, [d[1][k] for d in od])} + {c_index(cv, [d[1][k] for d in cd])}"


def identity(op: str, dt: str) -> str:
    """C for the identity of reduction `op` ("add", "mul", "and", "or", "max", "min") in `dt`."""
    if op in ("add", "mul", "and", "or"):
        return c_literal(int(op in ("mul", "and")), dt)
    if dt in ("float32", "float64"):
        return ("-" if op == "max" else "") + ("INFINITY" if dt == "float32" else "(double)INFINITY")
    info = np.iinfo(np.dtype(dt)) if dt != "bool" else None
    return c_literal((info.min if op == "max" else info.max) if info else int(op == "min"), dt)


def round64(n: int) -> int:
    """`n` rounded up to a multiple of 64 (bytes: a cache line)."""
    return (n + 63) // 64 * 64


def loop_nest(names, extents, body) -> list:
    """`body` inside one loop per (name, extent), the first outermost."""
    for v, n in reversed(list(zip(names, extents))):
        body = [L.Loop(v, n, body)]
    return body


def blas_matrix(ref: Ref, rows, cols) -> tuple:
    """('N' or 'T', leading dimension) reading `ref` as a rows x cols matrix, or Unsupported."""
    r = merge([ref.shape[i] for i in rows], [ref.strides[i] for i in rows])
    c = merge([ref.shape[i] for i in cols], [ref.strides[i] for i in cols])
    if r is not None and c is not None:
        (nr, rs), (nc, cs) = r, c
        if cs in (1, None):
            ld = rs if rs is not None else max(nc, 1)
            if ld >= max(nc, 1):
                return "N", ld
        if rs in (1, None):
            ld = cs if cs is not None else max(nr, 1)
            if ld >= max(nr, 1):
                return "T", ld
    raise Unsupported("a GEMM operand whose layout BLAS cannot read (it would need a copy)")


class Emitter:
    """Writes one kernel after another; `refs` maps every Var to where it lives."""

    def __init__(self, refs, bits: dict):
        self.refs = refs
        self.bits = bits  # CBLAS kind ("s", "d") -> integer width of its arguments
        self.units = []   # (label, C lines, flops, bytes, [C pointer per argument])
        self.args = []    # the pointers the unit being written reads as P[0], P[1], ...
        self.n_tmp = 0

    def ptr(self, ref: Ref) -> str:
        """`ref`'s address inside a unit: an argument, so units differing only in where their
        values live (the layers of a model) share one function."""
        self.args.append(ref)
        return f"(({CTYPE[ref.dtype]}*)P[{len(self.args) - 1}])"

    def emit(self, unit: tuple) -> None:
        self.units.append(unit + (self.args,))
        self.args, self.n_tmp = [], 0

    def loops(self, shape, outs, ins, body) -> list:
        """A parallel loop nest over `shape` writing `outs` (Refs) from `ins` (Refs, broadcast).

        `body(loads)` returns (statements, [C value per output]) given the input loads' names."""
        strides = [aligned_strides(r, shape) for r in outs + ins]
        dims = collapse(shape, strides)
        n_out = len(outs)
        pre = [L.Stmt(f"{CTYPE[r.dtype]}* o{k} = {self.ptr(r)};") for k, r in enumerate(outs)]
        pre += [L.Stmt(f"const {CTYPE[r.dtype]}* in{k} = {self.ptr(r)};") for k, r in enumerate(ins)]
        names = [f"i{d}" for d in range(len(dims))]
        loads = [f"x{k}" for k in range(len(ins))]
        stmts = [L.Stmt(f"const {CTYPE[r.dtype]} x{k} = in{k}[{c_index(names, [d[1][n_out + k] for d in dims])}];")
                 for k, r in enumerate(ins)]
        code, values = body(loads)
        stmts += [L.Stmt(c) for c in code]
        stmts += [L.Stmt(f"o{k}[{c_index(names, [d[1][k] for d in dims])}] = {v};")
                  for k, v in enumerate(values)]
        nest = stmts
        for d in reversed(range(len(dims))):
            nest = [L.Loop(names[d], dims[d][0], nest, vectorize=d == len(dims) - 1)]
        total = prod(shape)
        if dims and total >= PAR_MIN:
            nest[0].parallel = True
            return pre + nest
        return pre + [L.Stmt("#pragma omp single\n{")] + nest + [L.Stmt("}")]

    def body(self, g: Group, loads: list) -> tuple:
        """C statements computing `g`'s equations from its inputs' loads, and its outputs' names."""
        names = {v: (x, v.aval.dtype.name) for v, x in zip(g.inputs, loads)}
        code = []
        for e in g.eqns:
            c, t = render_eqn(e, names)
            name = f"t{self.n_tmp}"
            self.n_tmp += 1
            code.append(f"const {CTYPE[t]} {name} = {c};")
            names[e.out] = (name, t)
        return code, [names[v][0] for v in g.outputs]

    def fill(self, e, value, label: str) -> None:
        """Every element of `e.out` set to `value`."""
        val = c_literal(value, e.out.aval.dtype.name)
        nest = self.loops(e.out.aval.shape, [self.refs[e.out]], [], lambda ld: ([], [val]))
        self.emit((label, L.render([L.Stmt("{")] + nest + [L.Stmt("}")]), 0, nbytes(e.out.aval)))

    def copy_values(self, src: Ref, dst: Ref, label: str) -> None:
        """dst = src elementwise (same shape; dtype converted as numpy's astype)."""
        conv = lambda ld: ([], [c_convert(ld[0], src.dtype, dst.dtype)])  # noqa: E731
        lines = L.render([L.Stmt("{")] + self.loops(list(src.shape), [dst], [src], conv) + [L.Stmt("}")])
        self.emit((label, lines, 0, prod(src.shape) * (itemsize(src.dtype) + itemsize(dst.dtype))))

    def worksharing(self, pre, nest, parallel: bool) -> list:
        """C lines running `nest` with its outermost loop shared among the threads, or on one."""
        if parallel:
            nest[0].parallel = True
            return L.render([L.Stmt("{")] + pre + nest + [L.Stmt("}")])
        return L.render([L.Stmt("#pragma omp single\n{")] + pre + nest + [L.Stmt("}")])

    def convert_to_scratch(self, ref: Ref, at: int) -> list:
        """C lines converting `ref` (a half-precision value) to float32 at byte `at` of the
        workspace, contiguous in `ref`'s shape (reserved by the caller)."""
        return self._scratch_copy(ref, at, True)

    def round_scratch(self, o: Ref, at: int) -> list:
        """C lines rounding the float32 results at byte `at` of the workspace (contiguous in `o`'s
        shape) into the half-precision value `o` (the numpy kernel's astype after float32 work)."""
        return self._scratch_copy(o, at, False)

    def _scratch_copy(self, ref: Ref, at: int, into: bool) -> list:
        """`ref` converted into float32 scratch at byte `at` (`into`), or back from it."""
        dims = collapse(list(ref.shape), [list(ref.strides), list(contiguous(ref.shape))])
        names = [f"w{d}" for d in range(len(dims))]
        mine, theirs = (c_index(names, [d[1][k] for d in dims]) for k in (0, 1))
        ht, ft = CTYPE[ref.dtype], CTYPE[compute_of(ref.dtype)]
        if into:
            body = f"ws[{theirs}] = {c_convert(f'v[{mine}]', ref.dtype, compute_of(ref.dtype))};"
            pre = f"const {ht}* v = {self.ptr(ref)};\n{ft}* ws = ({ft}*)(C->ws + {at});"
        else:
            body = f"v[{mine}] = {c_convert(f'ws[{theirs}]', compute_of(ref.dtype), ref.dtype)};"
            pre = f"{ht}* v = {self.ptr(ref)};\nconst {ft}* ws = (const {ft}*)(C->ws + {at});"
        nest = loop_nest(names, [d[0] for d in dims], [L.Stmt(body)])
        return self.worksharing([L.Stmt(pre)], nest, bool(dims) and prod(ref.shape) >= PAR_MIN)

    def reserve_shared(self, n: int) -> list:
        """Statements making the workspace hold `n` bytes shared by the team (run by every thread,
        outside any `omp single`)."""
        return [L.Stmt(f"#pragma omp single\nws_reserve(C, (size_t){n});\nif (!C->ws) return;")]

    def reserve(self, per_thread: int) -> list:
        """Statements making the workspace hold `per_thread` bytes for every thread."""
        return [L.Stmt(f"#pragma omp single\nws_reserve(C, (size_t){per_thread} * nt);\nif (!C->ws) return;")]

    def pack(self, ref: Ref, src: str, dst: str, ct: str) -> list:
        """Loops copying the strided `ref` (read through pointer `src`) into contiguous `dst`."""
        dims = collapse(list(ref.shape), [list(ref.strides), list(contiguous(ref.shape))])
        names = [f"w{d}" for d in range(len(dims))]
        stmt = [L.Stmt(f"{dst}[{c_index(names, [d[1][1] for d in dims])}] = {src}[{c_index(names, [d[1][0] for d in dims])}];")]
        return loop_nest(names, [d[0] for d in dims], stmt)

    def index_value(self, idx_code: str, n: int) -> list:
        """Statements loading index `ix` from `idx_code`, counted from the end when negative;
        an index out of [-n, n) is reported (`ember_status`) and its element skipped."""
        return [L.Stmt(f"int64_t ix = (int64_t)({idx_code});\nif (ix < 0) ix += {n};\n"
                       f"if (ix < 0 || ix >= {n}) {{ oob(C, (int64_t)({idx_code}), {n}); continue; }}")]

    def ordered_nest(self, pre, od, jd, cd, body, total, reverse=False, head=None) -> list:
        """C lines for loops over the dims `od`, then `jd`, then `cd` (each [(size, strides)], as
        `_collapse` gives) around `body(av, jv, cv)`, the innermost statements given the loop
        variables; `head(av, jv)` gives statements run before the `cd` loops. Threads own whole `od` positions, or (when there are none) ranges of the first
        `cd` dim, so the `jd` steps of each position run in order on one thread: a scatter adds an
        element's updates in index order, a scan reads its predecessor. `reverse` runs the one `jd`
        dim backwards."""
        av, jv, cv = ([f"{c}{d}" for d in range(len(dims))] for c, dims in (("a", od), ("j", jd), ("c", cd)))
        parallel = total >= PAR_MIN
        cstart = "lo" if parallel and cd and not od else 0
        nest = body(av, jv, cv)
        for d in reversed(range(len(cd))):
            nest = [L.Loop(cv[d], "hi" if d == 0 and cstart else cd[d][0], nest,
                           vectorize=d == len(cd) - 1, start=cstart if d == 0 else 0)]
        if head is not None:
            nest = head(av, jv) + nest
        if reverse:
            nest = [L.Stmt(f"const int64_t j0 = {jd[0][0] - 1} - j0r;")] + nest
            steps = [("j0r", jd[0][0])]
        else:  # `continue` (a skipped index) needs a loop: a scalar index gets a one-trip loop
            steps = [(v, d[0]) for v, d in zip(jv, jd)] or [("j_", 1)]
        for v, ext in reversed([(v, d[0]) for v, d in zip(av, od)] + steps):
            nest = [L.Loop(v, ext, nest)]
        if parallel and od:
            return self.worksharing(pre, nest, True)
        if cstart:
            rng = (f"const int64_t lo = (int64_t){cd[0][0]} * tid / nt, "
                   f"hi = (int64_t){cd[0][0]} * (tid + 1) / nt;")
            return L.render([L.Stmt("{")] + pre + [L.Stmt(rng)] + nest + [L.Stmt("}"), L.Stmt("#pragma omp barrier")])
        return self.worksharing(pre, nest, False)

    def blas_kind(self, e) -> tuple:
        """(dtype, CBLAS kind "s" or "d") of a GEMM-based equation, or Unsupported; float16 and
        bfloat16 values are multiplied in float32 (their lowerings convert them)."""
        dt = compute_of(e.out.aval.dtype.name)
        if dt not in ("float32", "float64") or any(compute_of(a.aval.dtype.name) != dt for a in e.inputs):
            raise Unsupported(f"{e.prim.name} on {e.out.aval.dtype.name}")
        kind = "s" if dt == "float32" else "d"
        if kind not in self.bits:
            raise Unsupported("no CBLAS library found")
        return dt, kind


def dot_dims(r, e) -> tuple:
    """dot_general `e`'s refs and GEMM sizes: (x, y, out refs, x's and y's free dims, m, k, n, batch shape)."""
    x, y = e.inputs
    (xc, yc), (xb, yb) = e.params["contract"], e.params["batch"]
    xr, yr, o = r.refs[x], r.refs[y], r.refs.get(e.out)  # (no out: a fused epilogue's GEMM)
    xf = [i for i in range(len(xr.shape)) if i not in xc and i not in xb]
    yf = [i for i in range(len(yr.shape)) if i not in yc and i not in yb]
    m, k, n = prod([xr.shape[i] for i in xf]), prod([xr.shape[i] for i in xc]), prod([yr.shape[i] for i in yf])
    return xr, yr, o, xf, yf, m, k, n, [xr.shape[i] for i in xb]
