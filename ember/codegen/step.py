"""Sink mode (BE-16): a whole jitted graph as one native function over one arena.

The graph's equations are grouped into units: fused elementwise groups and row groups (a
softmax or layer norm as one loop over rows; `fusion`), GEMMs, reductions, fills and copies;
views cost nothing (a value's place is a `Ref`: base pointer, element offset and strides, all
fixed when the step is compiled). The memory planner lays the
units' values out in one arena; the renderer writes every unit as a loop nest (`loopnest`) or a
BLAS call into one C function

    void ember_step(char *arena, void **io, int nthreads, double *prof, ember_ctx *ctx)

that runs the whole step inside one OpenMP parallel region: each unit is worksharing with a
static schedule followed by a barrier, so results are identical run to run at a fixed thread
count. GEMMs call cblas_sgemm/dgemm through a pointer resolved at load (`_core/blas.py`: MKL
when installed, else numpy's OpenBLAS), with every transpose a BLAS flag; each thread multiplies
its own block of columns (or rows, or batch items) with the BLAS held at one thread for that
thread, so BLAS and ember never run two pools.
`io` holds the graph's inputs, its constants and the caller-owned outputs (gradients); state
updates are written straight into their inputs. Python makes one call per step.

`NativeExecutable(graph)` raises `Unsupported` when some equation has no native form; ember.jit
then keeps the numpy arena executor.
"""
from __future__ import annotations

import ctypes
import functools
import mmap
import sys
import weakref

import numpy as np

from .._core import blas
from .._core.state import get_num_threads
from ..ir.core import Literal, Var
from ..jit.contexts import ContextPool
from ..jit.memory import ACCUMULATE_PRIMS, VIEW_PRIMS, nbytes, plan
from ..jit.passes import literal_key, params_key
from ..ops.indexing import check_bounds
from . import build
from . import loopnest as L
from .c_renderer import CTYPE, Unsupported, _call, c_convert, c_literal, render_eqn
from .cmath import PRELUDE
from .fusion import Group, RowGroup, elementwise_groups, row_groups, schedule

PAR_MIN = 1 << 14     # loops over fewer elements run on one thread
GEMM_PAR_MIN = 1 << 16  # GEMMs with fewer multiply-adds run on one thread
LANES = 16            # partial sums of a row reduction (vectorised; no reassociation needed)
POOL_MIN = 1 << 20    # results at least this large are recycled once the caller drops them
FLAGS = build.FLAGS + ("-fopenmp",)
ENTRY, INIT = "ember_step", "ember_init"

_REDUCE = {"reduce_sum": "add", "reduce_max": "max", "reduce_min": "min", "reduce_prod": "mul",
           "reduce_and": "and", "reduce_or": "or"}
# the _Renderer method writing each primitive with a native form (views cost nothing; a reshape
# the planner could not make a view is a copy)
_UNITS = {**{name: "reduce" for name in _REDUCE}, "reshape": "copy", "full": "full", "dot_general": "dot",
          "conv_general": "conv", "gather": "gather", "scatter_add": "scatter_add", "pad": "pad",
          "concatenate": "concatenate", "reduce_window_max": "reduce_window",
          "reduce_window_sum": "reduce_window", "select_and_scatter_add": "select_and_scatter_add",
          "random_bits": "random_bits", "argmax": "arg_reduce", "argmin": "arg_reduce", "cumsum": "cumsum",
          "iota": "iota", "check_classes": "check_classes", "take_along_axis": "take_along_axis",
          "scatter_add_along_axis": "scatter_add_along_axis"}


def _prod(xs) -> int:
    return int(np.prod(xs, dtype=np.int64))


def _contig(shape) -> tuple:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= n
    return tuple(reversed(out))


class Ref:
    """Where a value lives: a base (`where` "arena" at byte `at`, or "io" slot `at`), an element
    offset and element strides."""

    __slots__ = ("where", "at", "offset", "shape", "strides", "dtype")

    def __init__(self, where, at, offset, shape, strides, dtype):
        self.where, self.at, self.offset = where, at, offset
        self.shape, self.strides, self.dtype = tuple(shape), tuple(strides), dtype

    @classmethod
    def whole(cls, where, at, aval) -> "Ref":
        """A contiguous value of type `aval` at the start of its base."""
        return cls(where, at, 0, aval.shape, _contig(aval.shape), aval.dtype.name)

    def moved(self, offset, shape, strides) -> "Ref":
        return Ref(self.where, self.at, offset, shape, strides, self.dtype)

    @property
    def ctype(self) -> str:
        return CTYPE[self.dtype]

    def ptr(self) -> str:
        base = f"(A + {self.at})" if self.where == "arena" else f"io[{self.at}]"
        return f"(({self.ctype}*){base} + {self.offset})"

    def view(self, prim: str, params: dict, out_shape) -> "Ref":
        sh, st, off = self.shape, self.strides, self.offset
        if prim == "reshape":  # only of a contiguous value: the planner copies otherwise
            return self.moved(off, out_shape, _contig(out_shape))
        if prim == "transpose":
            return self.moved(off, out_shape, [st[i] for i in params["perm"]])
        if prim == "slice":
            off += sum(a * s for a, s in zip(params["start"], st))
            return self.moved(off, out_shape, [s * k for s, k in zip(st, params["step"])])
        if prim == "broadcast_in_dim":
            strides = [0] * len(out_shape)
            for i, d in enumerate(params["dims"]):
                strides[d] = st[i] if sh[i] == out_shape[d] else 0
            return self.moved(off, out_shape, strides)
        if prim == "rev":
            strides = list(st)
            for a in params["axes"]:
                if sh[a]:
                    off += (sh[a] - 1) * st[a]
                strides[a] = -st[a]
            return self.moved(off, out_shape, strides)
        raise Unsupported(prim)


def _aligned_strides(ref: Ref, shape) -> list:
    """`ref`'s strides seen with `shape` (numpy broadcasting: missing or size-1 dims stride 0)."""
    k = len(shape) - len(ref.shape)
    out = [0] * k
    for n, s, m in zip(ref.shape, ref.strides, shape[k:]):
        out.append(s if n == m and n != 1 else 0)
    return out


def _collapse(shape, stride_lists) -> list:
    """[(size, [stride per operand])] with size-1 dims dropped and mergeable neighbours merged."""
    dims = []
    for d, n in enumerate(shape):
        if n == 1:
            continue
        ss = [s[d] for s in stride_lists]
        if dims and all(ps == s * n for ps, s in zip(dims[-1][1], ss)):
            dims[-1] = (dims[-1][0] * n, ss)
        else:
            dims.append((n, ss))
    return dims


def _index(loop_vars, strides) -> str:
    terms = [f"{v} * {s}" if s != 1 else v for v, s in zip(loop_vars, strides) if s != 0]
    return " + ".join(terms) if terms else "0"


def _around(shape, axis, strides) -> tuple:
    """(dims before `axis`, dims after it), collapsed, for operands with `strides` over `shape`."""
    return (_collapse(shape[:axis], [list(st[:axis]) for st in strides]),
            _collapse(shape[axis + 1:], [list(st[axis + 1:]) for st in strides]))


def _offset(av, cv, od, cd, k) -> str:
    """Operand `k`'s offset from the loop variables over `_around`'s dims (its axis term aside)."""
    return f"{_index(av, [d[1][k] for d in od])} + {_index(cv, [d[1][k] for d in cd])}"


class _Renderer:
    """Writes one unit after another; `refs` maps every Var to where it lives."""

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
        return f"(({ref.ctype}*)P[{len(self.args) - 1}])"

    def emit(self, unit: tuple) -> None:
        self.units.append(unit + (self.args,))
        self.args, self.n_tmp = [], 0

    # ---- elementwise loop nests
    def loops(self, shape, outs, ins, body) -> list:
        """A parallel loop nest over `shape` writing `outs` (Refs) from `ins` (Refs, broadcast).

        `body(loads)` returns (statements, [C value per output]) given the input loads' names."""
        strides = [_aligned_strides(r, shape) for r in outs + ins]
        dims = _collapse(shape, strides)
        n_out = len(outs)
        pre = [L.Stmt(f"{r.ctype}* o{k} = {self.ptr(r)};") for k, r in enumerate(outs)]
        pre += [L.Stmt(f"const {r.ctype}* in{k} = {self.ptr(r)};") for k, r in enumerate(ins)]
        names = [f"i{d}" for d in range(len(dims))]
        loads = [f"x{k}" for k in range(len(ins))]
        stmts = [L.Stmt(f"const {r.ctype} x{k} = in{k}[{_index(names, [d[1][n_out + k] for d in dims])}];")
                 for k, r in enumerate(ins)]
        code, values = body(loads)
        stmts += [L.Stmt(c) for c in code]
        stmts += [L.Stmt(f"o{k}[{_index(names, [d[1][k] for d in dims])}] = {v};")
                  for k, v in enumerate(values)]
        nest = stmts
        for d in reversed(range(len(dims))):
            nest = [L.Loop(names[d], dims[d][0], nest, vectorize=d == len(dims) - 1)]
        total = _prod(shape)
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

    def group(self, g: Group) -> None:
        refs = self.refs
        nest = self.loops(g.shape, [refs[v] for v in g.outputs], [refs[v] for v in g.inputs],
                          lambda loads: self.body(g, loads))
        traffic = sum(nbytes(v.aval) for v in g.inputs + g.outputs)
        self.emit((" ".join(e.prim.name for e in g.eqns), L.render([L.Stmt("{")] + nest + [L.Stmt("}")]),
                           _prod(g.shape) * len(g.eqns), traffic))

    def multi(self, m: MultiGroup) -> None:
        refs = self.refs
        # the kernel walks each tensor by one flat index: members reading or writing a strided
        # view (a weight gradient that is a transposed GEMM or conv result) run as their own loops
        flat = [g for g in m.groups if all(_prod(refs[v].shape) == 1 or refs[v].strides == _contig(refs[v].shape)
                                           for v in g.inputs + g.outputs)]
        ids = {id(g) for g in flat}
        for g in m.groups:
            if id(g) not in ids or len(flat) < 2:
                self.group(g)
        if len(flat) < 2:
            return
        m = MultiGroup(flat)
        g0 = m.groups[0]
        T = len(m.groups)
        sizes = [_prod(g.shape) for g in m.groups]
        starts = np.cumsum([0] + sizes[:-1]).tolist()
        total = sum(sizes)
        scalar = [_prod(v.aval.shape) == 1 for v in g0.inputs]
        pre = [f"static const int64_t sizes[{T}] = {{{', '.join(map(str, sizes))}}};",
               f"static const int64_t starts[{T}] = {{{', '.join(map(str, starts))}}};"]
        for k, v in enumerate(g0.inputs):
            ct = CTYPE[v.aval.dtype.name]
            pre.append(f"const {ct}* in{k}[{T}] = {{{', '.join(self.ptr(refs[g.inputs[k]]) for g in m.groups)}}};")
        for k, v in enumerate(g0.outputs):
            ct = CTYPE[v.aval.dtype.name]
            pre.append(f"{ct}* o{k}[{T}] = {{{', '.join(self.ptr(refs[g.outputs[k]]) for g in m.groups)}}};")
        if total >= PAR_MIN:  # each thread owns a fixed slice of the concatenated elements
            pre.append(f"const int64_t lo = (int64_t){total} * tid / nt, hi = (int64_t){total} * (tid + 1) / nt;")
        else:
            pre.append(f"const int64_t lo = 0, hi = tid == 0 ? {total} : 0;")
        body = [L.Stmt(f"const {CTYPE[v.aval.dtype.name]} x{k} = p{k}[{'0' if scalar[k] else 'j'}];")
                for k, v in enumerate(g0.inputs)]
        code, values = self.body(g0, [f"x{k}" for k in range(len(g0.inputs))])
        body += [L.Stmt(c) for c in code]
        body += [L.Stmt(f"q{k}[j] = {v};") for k, v in enumerate(values)]
        per = [L.Stmt("const int64_t a = (lo > starts[t] ? lo : starts[t]) - starts[t];\n"
                      "const int64_t b = (hi < starts[t] + sizes[t] ? hi : starts[t] + sizes[t]) - starts[t];")]
        per += [L.Stmt(f"const {CTYPE[v.aval.dtype.name]}* p{k} = in{k}[t];") for k, v in enumerate(g0.inputs)]
        per += [L.Stmt(f"{CTYPE[v.aval.dtype.name]}* q{k} = o{k}[t];") for k, v in enumerate(g0.outputs)]
        per.append(L.Loop("j", "b", body, vectorize=True, start="a"))
        nest = [L.Stmt("{")] + [L.Stmt(x) for x in pre] + [L.Loop("t", T, per), L.Stmt("}"),
                                                            L.Stmt("#pragma omp barrier")]
        traffic = sum(nbytes(v.aval) for v in m.inputs + m.outputs)
        label = f"{T} tensors: " + " ".join(e.prim.name for e in g0.eqns)
        self.emit((label, L.render(nest), total * len(g0.eqns), traffic))

    # ---- row groups (a softmax or a layer norm as one loop over rows)
    def rows(self, rg: RowGroup) -> None:
        """One loop over the rows of `rg`: per row its members in order, scalars in locals,
        vectors other units do not read in a per-thread scratch row, column sums in per-thread
        partial rows added in thread order after the loop (bitwise reproducible at a fixed
        thread count)."""
        K, R = rg.key
        nK, nR, F = _prod(K), _prod(R), K + R
        refs, outs = self.refs, set(rg.outputs)
        form = {}  # Var -> ("s", C scalar) | ("v", C pointer to a contiguous row) inside the row
        pre, row, init, post = [], [], [], []
        per_thread = 0
        ext = {}
        kq = [f"kq{d}" for d in range(len(K))]
        for d in range(len(K)):
            inner = _prod(K[d + 1:])
            q = f"k / {inner}" if inner > 1 else "k"
            row.append(L.Stmt(f"const int64_t kq{d} = {q}{f' % {K[d]}' if d else ''};"))

        def slot(dt):
            nonlocal per_thread
            at = per_thread
            per_thread += _round64(nR * np.dtype(dt).itemsize)
            return at

        def base(ref, const=True):
            name = f"e{len(pre)}"
            pre.append(L.Stmt(f"{'const ' if const else ''}{ref.ctype}* {name} = {self.ptr(ref)};"))
            return name

        def external(v, space):
            """(row pointer, R strides) of input `v` seen in `space` (F, or a scalar member's shape)."""
            key = (v, tuple(space))
            if key not in ext:
                ref = refs[v]
                a = _aligned_strides(ref, space)
                b = base(ref)
                name = f"x{len(ext)}"
                ext[key] = (name, a[len(K):] if tuple(space) == F else [0] * len(R))
                row.append(L.Stmt(f"const {ref.ctype}* {name} = {b} + {_index(kq, a[:len(K)])};"))
            return ext[key]

        def operand(v, space):
            """('s', scalar) or ('a', pointer, R strides) for reading `v` inside the row."""
            if v in form:
                f = form[v]
                return f if f[0] == "s" else ("a", f[1], list(_contig(R)))
            ptr, st = external(v, space)
            return ("a", ptr, st)

        def row_loop(arrays: list, stmts_of) -> list:
            """A loop nest over R reading `arrays` [(pointer, strides)]; `stmts_of(index per array)`."""
            dims = _collapse(R, [st for _, st in arrays])
            rv = [f"r{d}" for d in range(len(dims))]
            idx = [_index(rv, [d[1][j] for d in dims]) for j in range(len(arrays))]
            nest = [L.Stmt(c) for c in stmts_of(idx)]
            for d in reversed(range(len(dims))):
                nest = [L.Loop(rv[d], dims[d][0], nest, vectorize=d == len(dims) - 1)]
            return nest

        def new_vec(v):
            """Where vector `v` lives in the row: its output row, or a scratch row."""
            name = f"v{len(form)}"
            ct = CTYPE[v.aval.dtype.name]
            if v in outs:
                row.append(L.Stmt(f"{ct}* {name} = {base(refs[v], const=False)} + k * {nR};"))
            else:
                row.append(L.Stmt(f"{ct}* {name} = ({ct}*)(wsrow + {slot(v.aval.dtype.name)});"))
            form[v] = ("v", name)
            return name

        flops = 0
        for u, role in zip(rg.members, rg.roles):
            if role == "view":
                x = u.inputs[0]
                if x in form:
                    form[u.out] = form[x]
                elif u.prim.name == "broadcast_in_dim":
                    refs[u.out] = refs[x].view("broadcast_in_dim", u.params, u.out.aval.shape)
                else:  # a reshape adding or dropping the size-1 dims after K
                    xr = refs[x]
                    shape = u.out.aval.shape
                    refs[u.out] = xr.moved(xr.offset, shape, list(xr.strides[:len(K)]) + [0] * (len(shape) - len(K)))
                continue
            if role == "scalar":
                loads = []
                for v in u.inputs:
                    op = operand(v, u.shape)
                    loads.append(op[1] if op[0] == "s" else f"{op[1]}[0]")
                code, values = self.body(u, loads)
                row.extend(L.Stmt(c) for c in code)
                for v, val in zip(u.outputs, values):
                    form[v] = ("s", val)
                    if v in outs:
                        row.append(L.Stmt(f"{base(refs[v], const=False)}[k] = {val};"))
                flops += nK * len(u.eqns)
                continue
            if role == "vec":
                ops = [operand(v, F) for v in u.inputs]
                arrays = [(op[1], op[2]) for op in ops if op[0] == "a"]
                dst = [new_vec(v) for v in u.outputs]
                arrays += [(d, list(_contig(R))) for d in dst]

                def stmts(idx, u=u, ops=ops, dst=dst):
                    loads, code, j = [], [], 0
                    for k, op in enumerate(ops):
                        if op[0] == "s":
                            loads.append(op[1])
                        else:
                            ct = CTYPE[u.inputs[k].aval.dtype.name]
                            code.append(f"const {ct} y{k} = {op[1]}[{idx[j]}];")
                            loads.append(f"y{k}")
                            j += 1
                    c, values = self.body(u, loads)
                    code += c
                    code += [f"{d}[{idx[j + n]}] = {val};" for n, (d, val) in enumerate(zip(dst, values))]
                    return code
                row.extend([L.Stmt("{")] + row_loop(arrays, stmts) + [L.Stmt("}")])
                flops += nK * nR * len(u.eqns)
                continue
            # a reduction over R (a scalar per row) or over K (into this thread's partial row)
            op = _REDUCE[u.prim.name]
            x = u.inputs[0]
            xt, ot = x.aval.dtype.name, u.out.aval.dtype.name
            ct = CTYPE[ot]
            src = operand(x, F)
            ident = _identity(op, ot)

            def comb(a, b, op=op, ot=ot):
                return _call(op, [(a, ot), (b, ot)], ot)[0]
            flops += nK * nR
            if role == "rowred":
                name = f"s{len(form)}"
                if src[0] == "s":
                    body = [L.Stmt(f"{ct} {name} = {ident};\nfor (int64_t r = 0; r < {nR}; r++) "
                                   f"{name} = {comb(name, c_convert(src[1], xt, ot))};")]
                else:
                    body = self._row_reduce(name, src[1], src[2], R, op, xt, ot)
                row.extend(body)
                form[u.out] = ("s", name)
                if u.out in outs:
                    row.append(L.Stmt(f"{base(refs[u.out], const=False)}[k] = {name};"))
                continue
            at = slot(ot)
            part = f"c{len(form)}"
            form[u.out] = ("c", part)
            pre.append(L.Stmt(f"{ct}* {part};"))
            init.append(L.Stmt(f"{part} = ({ct}*)(wsrow + {at});\n"
                               f"for (int64_t r = 0; r < {nR}; r++) {part}[r] = {ident};"))
            if src[0] == "s":
                row.append(L.Stmt(f"for (int64_t r = 0; r < {nR}; r++) {part}[r] = "
                                  f"{comb(f'{part}[r]', c_convert(src[1], xt, ot))};"))
            else:
                row.extend(row_loop([(src[1], src[2]), (part, list(_contig(R)))],
                                    lambda idx, part=part, src=src, xt=xt: [
                                        f"{part}[{idx[1]}] = {comb(f'{part}[{idx[1]}]', c_convert(f'{src[1]}[{idx[0]}]', xt, ot))};"]))
            dst = base(refs[u.out], const=False)
            post.append(L.Loop("r", nR, [L.Stmt(
                f"{ct} a = (({ct}*)(C->ws + {at}))[r];\n"
                f"for (int t = 1; t < nt; t++) a = {comb('a', f'(({ct}*)(C->ws + (size_t)t * pt + {at}))[r]')};\n"
                f"{dst}[r] = a;")], parallel=True))
        pre_ws = []
        if per_thread:
            pre_ws = self._reserve(per_thread) + [L.Stmt(f"const size_t pt = {per_thread};  /* scratch bytes per thread */\n"
                                                         "char* wsrow = C->ws + (size_t)tid * pt;")]
        body_lines = L.render(pre + pre_ws + init)
        loop = L.Loop("k", nK, row)
        if nK > 1 and nK * nR >= PAR_MIN:
            loop.parallel = True
            main = [loop]
        else:
            main = [L.Stmt("#pragma omp single\n{"), loop, L.Stmt("}")]
        text = "\n".join(["{"] + body_lines + L.render(main + post) + ["}"])
        traffic = sum(nbytes(v.aval) for v in rg.inputs + rg.outputs)
        label = "rows: " + " | ".join(" ".join(e.prim.name for e in m.eqns) if m.prim is None else m.prim.name
                                      for m, r in zip(rg.members, rg.roles) if r != "view")
        self.emit((label, text.split("\n"), flops, traffic))

    def _row_reduce(self, name, ptr, strides, R, op, xt, ot) -> list:
        """Statements setting scalar `name` to the reduction of row `ptr` (R strides `strides`):
        float sums over a contiguous row in LANES partial sums (vectorised, fixed order)."""
        ct = CTYPE[ot]
        dims = _collapse(R, [strides])
        ident = _identity(op, ot)

        def load(i):
            return c_convert(f"{ptr}[{i}]", xt, ot)
        if ot in ("float32", "float64") and len(dims) == 1 and dims[0][1][0] == 1 and dims[0][0] >= 2 * LANES:
            # LANES partial results, combined in lane order (a max or min picks the same value as
            # a sequential loop, up to which of -0.0 and 0.0 a tie keeps)
            n = dims[0][0]

            def comb(a, b):
                return _call(op, [(a, ot), (b, ot)], ot)[0]
            tail = f"\nfor (; j < {n}; j++) tail = {comb('tail', load('j'))};" if n % LANES else ""
            return [L.Stmt(f"{ct} {name};\n{{\n{ct} lane[{LANES}];\n"
                           f"for (int l = 0; l < {LANES}; l++) lane[l] = {ident};\n{ct} tail = {ident};\n"
                           f"int64_t j = 0;\nfor (; j + {LANES} <= {n}; j += {LANES}) {{"),
                    L.Loop("l", LANES, [L.Stmt(f"lane[l] = {comb('lane[l]', load('j + l'))};")], vectorize=True),
                    L.Stmt(f"}}{tail}\n{ct} acc = {ident};\nfor (int l = 0; l < {LANES}; l++) acc = {comb('acc', 'lane[l]')};\n"
                           f"{name} = {comb('acc', 'tail')};\n}}")]
        rv = [f"r{d}" for d in range(len(dims))]
        nest = [L.Stmt(f"{name} = {_call(op, [(name, ot), (load(_index(rv, [d[1][0] for d in dims])), ot)], ot)[0]};")]
        for d in reversed(range(len(dims))):
            nest = [L.Loop(rv[d], dims[d][0], nest)]
        return [L.Stmt(f"{ct} {name} = {ident};")] + nest

    def copy(self, e) -> None:
        x, out = self.refs[e.inputs[0]], self.refs[e.out]
        # a reshape copy reads the input in its own row-major order: walk the input's shape
        dst = out.moved(out.offset, x.shape, _contig(x.shape))
        lines = L.render([L.Stmt("{")] + self.loops(x.shape, [dst], [x], lambda ld: ([], ld)) + [L.Stmt("}")])
        self.emit(("copy", lines, 0, 2 * nbytes(e.out.aval)))

    def full(self, e) -> None:
        self.fill(e, e.params["value"], "full")

    def fill(self, e, value, label: str) -> None:
        """Every element of `e.out` set to `value`."""
        val = c_literal(value, e.out.aval.dtype.name)
        nest = self.loops(e.out.aval.shape, [self.refs[e.out]], [], lambda ld: ([], [val]))
        self.emit((label, L.render([L.Stmt("{")] + nest + [L.Stmt("}")]), 0, nbytes(e.out.aval)))

    def random_bits(self, e) -> None:
        """Philox4x32-10 (`ember.ops.creation`): block b of four words encrypts the counter
        (offset + b) under the key, so threads draw fixed ranges of blocks."""
        key, out = self.refs[e.inputs[0]], self.refs[e.out]
        n = _prod(e.out.aval.shape)
        if n == 0:
            self.emit(("random_bits", [], 0, 0))
            return
        blocks = -(-n // 4)
        pre = [L.Stmt(f"uint32_t* o0 = {self.ptr(out)};\nconst uint32_t* key = {self.ptr(key)};\n"
                      f"const uint32_t k0 = key[0 * {key.strides[0]}], k1 = key[1 * {key.strides[0]}], "
                      f"c0 = key[2 * {key.strides[0]}], c1 = key[3 * {key.strides[0]}];")]
        block = L.Stmt(
            "const uint64_t lo = (uint64_t)c0 + (uint64_t)b;\n"
            "uint32_t w[4];\n"
            "philox4x32_10((uint32_t)lo, (uint32_t)(c1 + (lo >> 32)), k0, k1, w);\n"
            f"if (4 * b + 4 <= {n}) {{ o0[4 * b] = w[0]; o0[4 * b + 1] = w[1]; o0[4 * b + 2] = w[2]; o0[4 * b + 3] = w[3]; }}\n"
            f"else for (int64_t j = 0; 4 * b + j < {n}; j++) o0[4 * b + j] = w[j];")
        nest = [L.Loop("b", blocks, [block])]
        self.emit(("random_bits", self._worksharing(pre, nest, n >= PAR_MIN // 4), 0, 4 * n))

    # ---- reductions
    def reduce(self, e) -> None:
        op = _REDUCE.get(e.prim.name)
        x, out = self.refs[e.inputs[0]], self.refs[e.out]
        xt, ot = e.inputs[0].aval.dtype.name, e.out.aval.dtype.name
        if op is None or xt not in CTYPE or ot not in CTYPE:
            raise Unsupported(e.prim.name)
        axes = e.params["axes"]
        kept = [d for d in range(len(x.shape)) if d not in axes]
        red = list(axes)
        kdims = _collapse([x.shape[d] for d in kept], [[x.strides[d] for d in kept],
                                                       list(_contig([x.shape[d] for d in kept]))])
        rdims = _collapse([x.shape[d] for d in red], [[x.strides[d] for d in red]])
        ct = CTYPE[ot]
        floats = ot in ("float32", "float64")
        ident = _identity(op, ot)

        def comb(a, b):
            return _call(op, [(a, ot), (b, ot)], ot)[0]

        def load(idx):
            return c_convert(f"in0[{idx}]", xt, ot)
        pre = [L.Stmt(f"{ct}* o0 = {self.ptr(out)};"), L.Stmt(f"const {CTYPE[xt]}* in0 = {self.ptr(x)};")]
        kv = [f"k{d}" for d in range(len(kdims))]
        rv = [f"r{d}" for d in range(len(rdims))]
        oidx = _index(kv, [d[1][1] for d in kdims])
        total = _prod(x.shape)
        column = kdims and kdims[-1][1][0] == 1 and (not rdims or min(abs(d[1][0]) for d in rdims) > 1)
        if column:
            # out[k] starts at the identity; each reduced index adds one row, the kept inner dim
            # vectorised (per element the order is sequential, as numpy's axis-0 reduction)
            inner = len(kdims) - 1
            xidx = " + ".join([_index(kv, [d[1][0] for d in kdims]), _index(rv, [d[1][0] for d in rdims])])
            init = L.Loop(kv[inner], "hi", [L.Stmt(f"o0[{oidx}] = {ident};")], vectorize=True, start="lo")
            acc = L.Loop(kv[inner], "hi", [L.Stmt(f"o0[{oidx}] = {comb(f'o0[{oidx}]', load(xidx))};")],
                         vectorize=True, start="lo")
            for d in reversed(range(len(rdims))):
                acc = L.Loop(rv[d], rdims[d][0], [acc])
            nest = [init, acc]
            for d in reversed(range(inner)):
                nest = [L.Loop(kv[d], kdims[d][0], nest)]
            n_in = kdims[inner][0]
            if total >= PAR_MIN:  # each thread owns a fixed range of the kept inner dim
                rng = (f"const int64_t lo = (int64_t){n_in} * tid / nt, "
                       f"hi = (int64_t){n_in} * (tid + 1) / nt;")
                body = pre + [L.Stmt(rng)] + nest
                lines = L.render([L.Stmt("{")] + body + [L.Stmt("}"), L.Stmt("#pragma omp barrier")])
            else:
                body = pre + [L.Stmt(f"const int64_t lo = 0, hi = {n_in};")] + nest
                lines = L.render([L.Stmt("#pragma omp single\n{")] + body + [L.Stmt("}")])
        else:
            xr = _index(rv, [d[1][0] for d in rdims])
            xk = _index(kv, [d[1][0] for d in kdims])
            lanes = op == "add" and floats and rdims and rdims[-1][1][0] == 1 and rdims[-1][0] >= 2 * LANES
            if lanes:
                n = rdims[-1][0]
                outer_r = rdims[:-1]
                ro = _index(rv[:-1], [d[1][0] for d in outer_r])
                base = f"{xk} + {ro}"
                lane_loop = L.Loop("l", LANES, [L.Stmt(f"lane[l] += {load(f'{base} + j + l')};")], vectorize=True)
                body = [L.Stmt(f"int64_t j = 0;\nfor (; j + {LANES} <= {n}; j += {LANES}) {{")] + [lane_loop] + \
                       [L.Stmt("}")]
                if n % LANES:
                    body.append(L.Stmt(f"for (; j < {n}; j++) tail += {load(f'{base} + j')};"))
                for d in reversed(range(len(outer_r))):
                    body = [L.Loop(rv[d], outer_r[d][0], body)]
                red_code = [L.Stmt(f"{ct} lane[{LANES}] = {{0}};\n{ct} tail = 0;")] + body + [
                    L.Stmt(f"{ct} acc = 0;\nfor (int l = 0; l < {LANES}; l++) acc += lane[l];\n"
                           f"o0[{oidx}] = acc + tail;")]
            else:
                body = [L.Stmt(f"acc = {comb('acc', load(f'{xk} + {xr}'))};")]
                for d in reversed(range(len(rdims))):
                    body = [L.Loop(rv[d], rdims[d][0], body)]
                red_code = [L.Stmt(f"{ct} acc = {ident};")] + body + [L.Stmt(f"o0[{oidx}] = acc;")]
            nest = red_code
            for d in reversed(range(len(kdims))):
                nest = [L.Loop(kv[d], kdims[d][0], nest)]
            lines = self._worksharing(pre, nest, bool(kdims) and total >= PAR_MIN)
        self.emit((e.prim.name, lines, total, nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

    # ---- convolution (im2col into per-thread scratch, then GEMM)
    def conv(self, e) -> None:
        """conv_general as GEMMs over im2col columns: per batch item (columns = output positions)
        when the output is larger than the kernel, else per input channel (columns = kernel taps)
        into per-thread partial sums added in thread order (a weight gradient)."""
        lhs, rhs = e.inputs
        dt, kind = self._blas_kind(e)
        x, w, o = self.refs[lhs], self.refs[rhs], self.refs[e.out]
        prm = e.params
        st, pads, ldil, rdil, G = (prm["window_strides"], prm["padding"], prm["lhs_dilation"],
                                   prm["rhs_dilation"], prm["groups"])
        nd = len(x.shape) - 2
        B, O, Cg = x.shape[0], w.shape[0], w.shape[1]
        Og, S, Kd, Pd = O // G, x.shape[2:], w.shape[2:], o.shape[2:]
        Kn, Pn = _prod(Kd), _prod(Pd)
        if B * O * Pn == 0:
            self.emit(("conv_general", [], 0, 0))
            return
        if Cg * Kn == 0:
            self.fill(e, 0, "conv_general")
            return
        ct, item = CTYPE[dt], np.dtype(dt).itemsize
        gemm, one = ("SGEMM" if kind == "s" else "DGEMM"), c_literal(1, dt)
        xs, ws = x.strides, w.strides
        pre = [L.Stmt(f"{ct}* out = {self.ptr(o)};\nconst {ct}* xin = {self.ptr(x)};\n"
                      f"const {ct}* win = {self.ptr(w)};")]

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
            return " + ".join(f"{v} * {_prod(sizes[i + 1:])}" for i, v in enumerate(vs)) or "0"

        pv, kv = [f"p{d}" for d in range(nd)], [f"k{d}" for d in range(nd)]
        last = nd - 1

        def row(dst, src, along_k):
            # one im2col row along the last spatial dim: over output positions (along_k False)
            # or over kernel taps (True)
            if along_k:
                n, step, off = Kd[last], rdil[last], f"p{last} * {st[last]} - {pads[last][0]}"
            else:
                n, step, off = Pd[last], st[last], f"k{last} * {rdil[last]} - {pads[last][0]}"
            return f"row_{ct}({dst}, {src}, {n}, {step}, {off}, {S[last]}, {xs[last + 2]}, {ldil[last]});"

        w_mat = None
        try:
            w_mat = _blas_matrix(w, [0], list(range(1, nd + 2))) if Pn >= Kn else \
                _blas_matrix(w, list(range(2, nd + 2)), [0])
        except Unsupported:
            pass
        wpack = _prod(w.shape) if Pn >= Kn else Kn * Og
        if Pn >= Kn:
            col = _round64(Cg * Kn * Pn * item)
            per_thread = col + (0 if w_mat else _round64(wpack * item))
            fill = [L.Stmt(f"{ct}* dst = col + ({flat(['c'] + kv, [Cg] + list(Kd))}) * {Pn};\n"
                           f"const {ct}* src = xin + b * {xs[0]} + (g * {Cg} + c) * {xs[1]};")]
            code, ok, off = qs(range(last), pv, kv)
            body = [L.Stmt("\n".join(code) + f"\n{ct}* r = dst + ({flat(pv[:last], list(Pd[:last]))}) * {Pd[last]};\n"
                           f"if ({ok}) {row('r', f'src + {off}', False)}\n"
                           f"else for (int64_t j = 0; j < {Pd[last]}; j++) r[j] = 0;")]
            for d in reversed(range(last)):
                body = [L.Loop(pv[d], Pd[d], body)]
            fill = [L.Loop("c", Cg, _nest(kv, Kd, fill + body))]
            if w_mat:
                ta, lda = w_mat
                wsrc = "win"
            else:
                ta, lda = "N", Cg * Kn
                wsrc = "wp"
            gem = (f"{gemm}(101, {111 if ta == 'N' else 112}, 111, {Og}, {Pn}, {Cg * Kn}, {one}, "
                   f"{wsrc} + g * {Og} * {ws[0] if w_mat else Cg * Kn}, {lda}, col, {Pn}, 0, "
                   f"out + (b * {O} + g * {Og}) * {Pn}, {Pn});")
            loop = L.Loop("b", B, [L.Loop("g", G, fill + [L.Stmt(gem)])], parallel=True)
            body = pre + self._reserve(per_thread) + [L.Stmt(f"{ct}* col = ({ct}*)(C->ws + (size_t)tid * {per_thread});")]
            if not w_mat:
                body += [L.Stmt(f"{ct}* wp = ({ct}*)(C->ws + (size_t)tid * {per_thread} + {col});")]
                body += self._pack(w, "win", "wp", ct)
            lines = L.render([L.Stmt("{")] + body + [loop, L.Stmt("}")])
        else:
            col, acc = _round64(B * Pn * Kn * item), _round64(B * Pn * O * item)
            per_thread = col + acc + (0 if w_mat else _round64(wpack * item))
            code, ok, off = qs(range(last), pv, kv)
            fill = [L.Stmt("\n".join(code) + f"\n{ct}* r = col + ((b * {Pn} + {flat(pv, list(Pd))}) * {Kn} + "
                           f"({flat(kv[:last], list(Kd[:last]))}) * {Kd[last]});\n"
                           f"if ({ok}) {row('r', f'src + {off}', True)}\n"
                           f"else for (int64_t j = 0; j < {Kd[last]}; j++) r[j] = 0;")]
            fill = _nest(pv, Pd, _nest(kv[:last], Kd[:last], fill))
            fill = [L.Loop("b", B, [L.Stmt(f"const {ct}* src = xin + b * {xs[0]} + (g * {Cg} + c) * {xs[1]};")] + fill)]
            if w_mat:
                tb, ldb = w_mat
                wc = f"win + g * {Og} * {ws[0]} + c * {ws[1]}"
                pack = []
            else:
                tb, ldb, wc = "N", Og, "wp"
                wsub = w.moved(0, list(Kd) + [Og], list(ws[2:]) + [ws[0]])
                pack = self._pack(wsub, f"(win + g * {Og} * {ws[0]} + c * {ws[1]})", "wp", ct)
            gem = (f"{gemm}(101, 111, {111 if tb == 'N' else 112}, {B * Pn}, {Og}, {Kn}, {one}, col, {Kn}, "
                   f"{wc}, {ldb}, {one}, acc + g * {Og}, {O});")
            rng = (f"const int64_t lo = (int64_t){Cg} * tid / nt, hi = (int64_t){Cg} * (tid + 1) / nt;\n"
                   f"for (int64_t j = 0; j < {B * Pn * O}; j++) acc[j] = 0;")
            loop = L.Loop("g", G, [L.Loop("c", "hi", fill + pack + [L.Stmt(gem)], start="lo")])
            red = L.Loop("bo", B * O, [L.Stmt(
                f"const int64_t b = bo / {O}, oo = bo % {O};\n"
                f"for (int64_t p = 0; p < {Pn}; p++) {{\n"
                f"    {ct} sum = 0;\n"
                f"    for (int t = 0; t < nt; t++) sum += (({ct}*)(C->ws + (size_t)t * {per_thread} + {col}))"
                f"[(b * {Pn} + p) * {O} + oo];\n"
                f"    out[bo * {Pn} + p] = sum;\n}}")], parallel=True)
            body = pre + self._reserve(per_thread) + [L.Stmt(
                f"{ct}* col = ({ct}*)(C->ws + (size_t)tid * {per_thread});\n"
                f"{ct}* acc = ({ct}*)(C->ws + (size_t)tid * {per_thread} + {col});\n"
                f"{ct}* wp = ({ct}*)(C->ws + (size_t)tid * {per_thread} + {col + acc});\n(void)wp;"), L.Stmt(rng)]
            lines = L.render([L.Stmt("{")] + body + [loop, L.Stmt("#pragma omp barrier"), red, L.Stmt("}")])
        flops = 2 * B * O * Pn * Cg * Kn
        self.emit(("conv_general", lines, flops, nbytes(lhs.aval) + nbytes(rhs.aval) + nbytes(e.out.aval)))

    def _reserve(self, per_thread: int) -> list:
        """Statements making the workspace hold `per_thread` bytes for every thread."""
        return [L.Stmt(f"#pragma omp single\nws_reserve(C, (size_t){per_thread} * nt);\nif (!C->ws) return;")]

    def _pack(self, ref: Ref, src: str, dst: str, ct: str) -> list:
        """Loops copying the strided `ref` (read through pointer `src`) into contiguous `dst`."""
        dims = _collapse(list(ref.shape), [list(ref.strides), list(_contig(ref.shape))])
        names = [f"w{d}" for d in range(len(dims))]
        stmt = [L.Stmt(f"{dst}[{_index(names, [d[1][1] for d in dims])}] = {src}[{_index(names, [d[1][0] for d in dims])}];")]
        return _nest(names, [d[0] for d in dims], stmt)

    # ---- windows (pooling)
    def _window_taps(self, x: Ref, out_shape, win, strides, pads, bdil, wdil, inner: list) -> list:
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

    def _window_rows(self, pre, out_shape, body, total, share="rows") -> list:
        """Lines running `body` for every output position (p0, ...). Threads share the rows
        (all dims but the last) with `share="rows"`, only dim 0 with "dim0", nothing with None."""
        nd = len(out_shape)
        first = 1 if share == "dim0" else 0
        R = _prod(out_shape[first:-1])
        dec = ["int64_t rem = r;"]
        for d in reversed(range(first, nd - 1)):
            dec.append(f"const int64_t p{d} = rem % {out_shape[d]}; rem /= {out_shape[d]};")
        loop = L.Loop("r", R, [L.Stmt("\n".join(dec)), L.Loop(f"p{nd - 1}", out_shape[-1], body)])
        if first:
            loop = L.Loop("p0", out_shape[0], [loop])
        shared = _prod(out_shape[:1] if first else out_shape[:-1])
        return self._worksharing(pre, [loop], bool(share) and total >= PAR_MIN and shared > 1)

    def reduce_window(self, e) -> None:
        """out[p] = max (or sum) over the window taps of x; taps in the padding are skipped."""
        x, out = self.refs[e.inputs[0]], self.refs[e.out]
        t = e.out.aval.dtype.name
        op = "max" if e.prim.name == "reduce_window_max" else "add"
        prm = e.params
        if not x.shape:
            raise Unsupported(f"{e.prim.name} of a scalar")
        if not _prod(out.shape):
            self.emit((e.prim.name, [], 0, 0))
            return
        if op == "add":
            ident = c_literal(0, t)
        elif t in ("float32", "float64"):
            ident = "-INFINITY" if t == "float32" else "-(double)INFINITY"
        else:
            ident = c_literal(np.iinfo(np.dtype(t)).min, t)
        comb = _call(op, [("acc", t), ("in0[xi]", t)], t)[0]
        taps = self._window_taps(x, out.shape, prm["window"], prm["strides"], prm["padding"], prm["base_dilation"],
                                 prm["window_dilation"], [L.Stmt(f"if (ok{len(x.shape) - 1}) {{ const int64_t xi = xi{len(x.shape) - 1}; acc = {comb}; }}")])
        oidx = " + ".join(f"p{d} * {s_}" for d, s_ in enumerate(out.strides))
        body = [L.Stmt(f"{out.ctype} acc = {ident};")] + taps + [L.Stmt(f"o0[{oidx}] = acc;")]
        pre = [L.Stmt(f"{out.ctype}* o0 = {self.ptr(out)};\nconst {x.ctype}* in0 = {self.ptr(x)};")]
        total = _prod(out.shape) * _prod(prm["window"])
        self.emit((e.prim.name, self._window_rows(pre, out.shape, body, total), total,
                   nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

    def select_and_scatter_add(self, e) -> None:
        """Each source element added at the first maximum of its window of the operand (the
        first NaN wins); taps in the padding compete with the value -inf and are dropped."""
        src, x, out = self.refs[e.inputs[0]], self.refs[e.inputs[1]], self.refs[e.out]
        xt, ot = e.inputs[1].aval.dtype.name, e.out.aval.dtype.name
        prm = e.params
        nd = len(x.shape)
        if not nd:
            raise Unsupported("select_and_scatter_add of a scalar")
        win, st, pads = prm["window"], prm["strides"], prm["padding"]
        # windows that tile the operand (stride = window, no low padding) never overlap: each tap
        # is written once, the chosen one with the source, the others with 0
        tiles = all(w == s_ and lo == 0 for w, s_, (lo, _) in zip(win, st, pads)) and nd > 0
        covers = tiles and all(n_ * s_ >= m for n_, s_, m in zip(src.shape, st, x.shape))
        if not covers:
            self.fill(e, 0, "select_and_scatter_add zero")
        if not _prod(src.shape) or not _prod(win):
            return
        floats = xt in ("float32", "float64")
        ident = ("-INFINITY" if xt == "float32" else "-(double)INFINITY") if floats else \
            c_literal(np.iinfo(np.dtype(xt)).min, xt)
        take = "first || (bv == bv && (v > bv || v != v))" if floats else "first || v > bv"
        # out has x's shape, contiguous: the chosen tap's element index in out
        oi = " + ".join(f"(p{d} * {st[d]} + k{d} - {pads[d][0]}) * {out.strides[d]}" for d in range(nd))
        ones = (1,) * nd
        taps = self._window_taps(x, src.shape, win, st, pads, ones, ones, [L.Stmt(
            f"const {CTYPE[xt]} v = ok{nd - 1} ? in0[xi{nd - 1}] : {ident};\n"
            f"if ({take}) {{ bv = v; best = ok{nd - 1} ? {oi} : -1; first = 0; }}")])
        sidx = " + ".join(f"p{d} * {s_}" for d, s_ in enumerate(src.strides))
        source = c_convert(f"s0[{sidx}]", src.dtype, ot)
        body = [L.Stmt(f"{CTYPE[xt]} bv = 0;\nint64_t best = -1;\nint first = 1;")] + taps
        if tiles:
            zero = c_literal(0, ot)
            body.append(L.Stmt(f"const {out.ctype} val = {_call('add', [(zero, ot), (source, ot)], ot)[0]};"))
            body += self._window_taps(x, src.shape, win, st, pads, ones, ones, [L.Stmt(
                f"if (ok{nd - 1}) {{ const int64_t oi = {oi}; o0[oi] = oi == best ? val : {zero}; }}")])
        else:
            add = _call("add", [("o0[best]", ot), (source, ot)], ot)[0]
            body.append(L.Stmt(f"if (best >= 0) o0[best] = {add};"))
        pre = [L.Stmt(f"{out.ctype}* o0 = {self.ptr(out)};\nconst {x.ctype}* in0 = {self.ptr(x)};\n"
                      f"const {src.ctype}* s0 = {self.ptr(src)};")]
        # threads own whole rows of dim 0 when its windows cannot overlap, else one thread adds
        rows_apart = win[0] == 1 and st[0] == 1 and nd > 1
        total = _prod(src.shape) * _prod(win)
        share = "rows" if tiles else "dim0" if rows_apart else None
        self.emit(("select_and_scatter_add", self._window_rows(pre, src.shape, body, total, share),
                   total, nbytes(e.inputs[0].aval) + nbytes(e.inputs[1].aval) + nbytes(e.out.aval)))

    # ---- indexing and padding
    def _index_value(self, idx_code: str, n: int) -> list:
        """Statements loading index `ix` from `idx_code`, counted from the end when negative;
        an index out of [-n, n) is reported (`ember_status`) and its element skipped."""
        return [L.Stmt(f"int64_t ix = (int64_t)({idx_code});\nif (ix < 0) ix += {n};\n"
                       f"if (ix < 0 || ix >= {n}) {{ oob(C, (int64_t)({idx_code}), {n}); continue; }}")]

    def gather(self, e) -> None:
        """out[a, j, c] = x[a, idx[j], c] (numpy's take along `axis`)."""
        x, idx, out = self.refs[e.inputs[0]], self.refs[e.inputs[1]], self.refs[e.out]
        axis, k = e.params["axis"], len(idx.shape)
        n = x.shape[axis]
        od = _collapse(x.shape[:axis], [list(x.strides[:axis]), list(out.strides[:axis])])
        jd = _collapse(idx.shape, [list(idx.strides), list(out.strides[axis:axis + k])])
        cd = _collapse(x.shape[axis + 1:], [list(x.strides[axis + 1:]), list(out.strides[axis + k:])])
        total = _prod(e.out.aval.shape)
        if total == 0:
            self.emit(("gather", [], 0, 0))
            return
        av, jv, cv = ([f"{c}{d}" for d in range(len(dims))] for c, dims in (("a", od), ("j", jd), ("c", cd)))
        xo = " + ".join([_index(av, [d[1][0] for d in od]), f"ix * {x.strides[axis]}",
                         _index(cv, [d[1][0] for d in cd])])
        oo = " + ".join([_index(av, [d[1][1] for d in od]), _index(jv, [d[1][1] for d in jd]),
                         _index(cv, [d[1][1] for d in cd])])
        nest = [L.Stmt(f"o0[{oo}] = in0[{xo}];")]
        for d in reversed(range(len(cd))):
            nest = [L.Loop(cv[d], cd[d][0], nest, vectorize=d == len(cd) - 1)]
        nest = self._index_value(f"ix0[{_index(jv, [d[1][0] for d in jd])}]", n) + nest
        # `continue` needs a loop around the index load: a scalar index gets a one-trip loop
        loops = [(v, d[0]) for v, d in zip(av, od)] + [(v, d[0]) for v, d in zip(jv, jd)] or [("j_", 1)]
        for v, ext in reversed(loops):
            nest = [L.Loop(v, ext, nest)]
        pre = [L.Stmt(f"{out.ctype}* o0 = {self.ptr(out)};\nconst {x.ctype}* in0 = {self.ptr(x)};\n"
                      f"const {idx.ctype}* ix0 = {self.ptr(idx)};")]
        self.emit(("gather", self._worksharing(pre, nest, total >= PAR_MIN), 0,
                           2 * nbytes(e.out.aval) + nbytes(e.inputs[1].aval)))

    def scatter_add(self, e) -> None:
        """out = x, then out[a, idx[j], c] += upd[a, j, c] for j in order (as numpy's add.at).

        Threads own whole `a` slices when there are several, else ranges of the first `c` dim, so
        no two threads touch one element and each element sums its updates in index order."""
        x, idx, upd = (self.refs[a] for a in e.inputs)
        out = self.refs[e.out]
        axis, k = e.params["axis"], len(idx.shape)
        n = out.shape[axis]
        if (x.where, x.at, x.offset) != (out.where, out.at, out.offset):  # not planned in place
            self.copy_values(x, out, "scatter_add copy")
        ot, ut = e.out.aval.dtype.name, e.inputs[2].aval.dtype.name
        if _prod(upd.shape) == 0:
            return
        od = _collapse(out.shape[:axis], [list(upd.strides[:axis]), list(out.strides[:axis])])
        jd = _collapse(idx.shape, [list(idx.strides), list(upd.strides[axis:axis + k])])
        cd = _collapse(out.shape[axis + 1:], [list(upd.strides[axis + k:]), list(out.strides[axis + 1:])])
        pre = [L.Stmt(f"{out.ctype}* o0 = {self.ptr(out)};\nconst {upd.ctype}* up = {self.ptr(upd)};\n"
                      f"const {idx.ctype}* ix0 = {self.ptr(idx)};")]

        def body(av, jv, cv):
            uo = " + ".join([_index(av, [d[1][0] for d in od]), _index(jv, [d[1][1] for d in jd]),
                             _index(cv, [d[1][0] for d in cd])])
            oo = " + ".join([_index(av, [d[1][1] for d in od]), f"ix * {out.strides[axis]}",
                             _index(cv, [d[1][1] for d in cd])])
            acc = _call("add", [(f"o0[{oo}]", ot), (c_convert(f"up[{uo}]", ut, ot), ot)], ot)[0]
            return [L.Stmt(f"o0[{oo}] = {acc};")]

        def head(av, jv):  # one index per (a, j): loaded once, outside the `c` loops
            return self._index_value(f"ix0[{_index(jv, [d[1][0] for d in jd])}]", n)
        total = _prod(upd.shape)
        lines = self._ordered_nest(pre, od, jd, cd, body, total, head=head)
        self.emit(("scatter_add", lines, total, 2 * nbytes(e.inputs[2].aval) + nbytes(e.inputs[1].aval)))

    # ---- ordered loops: scatters, cumsum, take along an axis
    def _ordered_nest(self, pre, od, jd, cd, body, total, reverse=False, head=None) -> list:
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
            return self._worksharing(pre, nest, True)
        if cstart:
            rng = (f"const int64_t lo = (int64_t){cd[0][0]} * tid / nt, "
                   f"hi = (int64_t){cd[0][0]} * (tid + 1) / nt;")
            return L.render([L.Stmt("{")] + pre + [L.Stmt(rng)] + nest + [L.Stmt("}"), L.Stmt("#pragma omp barrier")])
        return self._worksharing(pre, nest, False)

    def cumsum(self, e) -> None:
        """out[.., j, ..] = out[.., j -+ 1, ..] + x[.., j, ..] in order along the axis (numpy's
        sequential cumsum, so the sums are bitwise numpy's)."""
        x, out = self.refs[e.inputs[0]], self.refs[e.out]
        xt, ot = e.inputs[0].aval.dtype.name, e.out.aval.dtype.name
        if _prod(x.shape) == 0:
            self.emit(("cumsum", [], 0, 0))
            return
        if not x.shape:
            self.copy_values(x, out, "cumsum")
            return
        axis, rev = e.params["axis"], e.params["reverse"]
        prev = f"{'+' if rev else '-'} {out.strides[axis]}"  # the element before along the scan
        pre = [L.Stmt(f"{out.ctype}* o0 = {self.ptr(out)};\nconst {x.ctype}* in0 = {self.ptr(x)};")]
        first = "j0 == 0" if not rev else f"j0 == {x.shape[axis] - 1}"
        od, cd = _around(x.shape, axis, [x.strides, out.strides])

        def body(av, jv, cv):
            xo = f"{_offset(av, cv, od, cd, 0)} + j0 * {x.strides[axis]}"
            oo = f"{_offset(av, cv, od, cd, 1)} + j0 * {out.strides[axis]}"
            val = c_convert(f"in0[{xo}]", xt, ot)
            acc = _call("add", [(f"o0[{oo} {prev}]", ot), (val, ot)], ot)[0]
            return [L.Stmt(f"o0[{oo}] = {first} ? {val} : {acc};")]
        total = _prod(x.shape)
        self.emit(("cumsum", self._ordered_nest(pre, od, [(x.shape[axis], [])], cd, body, total, rev), total,
                   nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

    def arg_reduce(self, e) -> None:
        """The first index of the largest (argmax) or smallest (argmin) value along the axis; the
        first NaN wins, as numpy's."""
        x, out = self.refs[e.inputs[0]], self.refs[e.out]
        xt = e.inputs[0].aval.dtype.name
        if xt not in CTYPE:
            raise Unsupported(f"{e.prim.name} on {xt}")
        if not x.shape or _prod(x.shape) == 0:
            self.fill(e, 0, e.prim.name)
            return
        axis = e.params["axis"]
        n = x.shape[axis]
        kept = [d for d in range(len(x.shape)) if d != axis]
        kd = _collapse([x.shape[d] for d in kept], [[x.strides[d] for d in kept], list(out.strides)])
        kv = [f"k{d}" for d in range(len(kd))]
        xk, ok = _index(kv, [d[1][0] for d in kd]), _index(kv, [d[1][1] for d in kd])
        better = "<" if e.prim.name == "argmin" else ">"
        nan = " || (v != v && best == best)" if xt in ("float32", "float64") else ""
        scan = L.Stmt(f"{x.ctype} best = in0[{xk}];\nint64_t bi = 0;\n"
                      f"for (int64_t j = 1; j < {n}; j++) {{\n"
                      f"    const {x.ctype} v = in0[{xk} + j * {x.strides[axis]}];\n"
                      f"    if (v {better} best{nan}) {{ best = v; bi = j; }}\n}}\no0[{ok}] = bi;")
        nest = [scan]
        for d in reversed(range(len(kd))):
            nest = [L.Loop(kv[d], kd[d][0], nest)]
        pre = [L.Stmt(f"int64_t* o0 = {self.ptr(out)};\nconst {x.ctype}* in0 = {self.ptr(x)};")]
        total = _prod(x.shape)
        self.emit((e.prim.name, self._worksharing(pre, nest, bool(kd) and total >= PAR_MIN), total,
                   nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

    def check_classes(self, e) -> None:
        """out = the targets; one outside [0, n) that is not `ignore` is reported (`ember_status`)."""
        x, out = self.refs[e.inputs[0]], self.refs[e.out]
        n, ignore = e.params["n"], e.params["ignore"]
        if _prod(x.shape) == 0:
            self.emit(("check_classes", [], 0, 0))
            return

        def body(ld):
            bad = f"({ld[0]} < 0 || {ld[0]} >= {n})" + (f" && {ld[0]} != {int(ignore)}" if ignore is not None else "")
            return [f"if ({bad}) oob(C, (int64_t){ld[0]}, {n});"], [ld[0]]
        lines = L.render([L.Stmt("{")] + self.loops(list(x.shape), [out], [x], body) + [L.Stmt("}")])
        self.emit(("check_classes", lines, 0, 2 * nbytes(e.out.aval)))

    def iota(self, e) -> None:
        """out = the index along `dim`, converted to the dtype."""
        out, dim, dt = self.refs[e.out], e.params["dim"], e.out.aval.dtype.name
        shape = list(e.out.aval.shape)
        if _prod(shape) == 0:
            self.emit(("iota", [], 0, 0))
            return
        vs = [f"i{d}" for d in range(len(shape))]
        nest = [L.Stmt(f"o0[{_index(vs, out.strides)}] = {c_convert(f'(int64_t){vs[dim]}', 'int64', dt)};")]
        for d in reversed(range(len(shape))):
            nest = [L.Loop(vs[d], shape[d], nest, vectorize=d == len(shape) - 1)]
        pre = [L.Stmt(f"{out.ctype}* o0 = {self.ptr(out)};")]
        self.emit(("iota", self._worksharing(pre, nest, _prod(shape) >= PAR_MIN and shape[0] > 1), 0,
                   nbytes(e.out.aval)))

    def take_along_axis(self, e) -> None:
        """out[.., j, ..] = x[.., idx[.., j, ..], ..] (numpy's take_along_axis; idx broadcasts)."""
        x, idx, out = self.refs[e.inputs[0]], self.refs[e.inputs[1]], self.refs[e.out]
        axis, shape = e.params["axis"], list(e.out.aval.shape)
        total = _prod(shape)
        if total == 0:
            self.emit(("take_along_axis", [], 0, 0))
            return
        xs = [0 if d == axis else s for d, s in enumerate(_aligned_strides(x, shape))]
        ist = _aligned_strides(idx, shape)
        pre = [L.Stmt(f"{out.ctype}* o0 = {self.ptr(out)};\nconst {x.ctype}* in0 = {self.ptr(x)};\n"
                      f"const {idx.ctype}* ix0 = {self.ptr(idx)};")]

        od, cd = _around(shape, axis, [xs, ist, out.strides])

        def body(av, jv, cv):
            return self._index_value(f"ix0[{_offset(av, cv, od, cd, 1)} + j0 * {ist[axis]}]", x.shape[axis]) + [
                L.Stmt(f"o0[{_offset(av, cv, od, cd, 2)} + j0 * {out.strides[axis]}] = "
                       f"in0[{_offset(av, cv, od, cd, 0)} + ix * {x.strides[axis]}];")]
        self.emit(("take_along_axis", self._ordered_nest(pre, od, [(shape[axis], [])], cd, body, total), 0,
                   2 * nbytes(e.out.aval) + nbytes(e.inputs[1].aval)))

    def scatter_add_along_axis(self, e) -> None:
        """out = x, then out[.., idx[.., j, ..], ..] += upd[.., j, ..] with j in order (numpy's
        add.at order, so each element sums its updates as numpy does)."""
        x, idx, upd = (self.refs[a] for a in e.inputs)
        out = self.refs[e.out]
        axis, shape = e.params["axis"], list(upd.shape)
        if (x.where, x.at, x.offset) != (out.where, out.at, out.offset):  # not planned in place
            self.copy_values(x, out, "scatter_add_along_axis copy")
        total = _prod(shape)
        if total == 0:
            return
        ot, ut = e.out.aval.dtype.name, e.inputs[2].aval.dtype.name
        os_ = [0 if d == axis else s for d, s in enumerate(out.strides)]
        ist = _aligned_strides(idx, shape)
        pre = [L.Stmt(f"{out.ctype}* o0 = {self.ptr(out)};\nconst {upd.ctype}* up = {self.ptr(upd)};\n"
                      f"const {idx.ctype}* ix0 = {self.ptr(idx)};")]

        od, cd = _around(shape, axis, [os_, ist, upd.strides])

        def body(av, jv, cv):
            t = f"{_offset(av, cv, od, cd, 0)} + ix * {out.strides[axis]}"
            u = f"up[{_offset(av, cv, od, cd, 2)} + j0 * {upd.strides[axis]}]"
            acc = _call("add", [(f"o0[{t}]", ot), (c_convert(u, ut, ot), ot)], ot)[0]
            return self._index_value(f"ix0[{_offset(av, cv, od, cd, 1)} + j0 * {ist[axis]}]", out.shape[axis]) + [
                L.Stmt(f"o0[{t}] = {acc};")]
        self.emit(("scatter_add_along_axis", self._ordered_nest(pre, od, [(shape[axis], [])], cd, body, total),
                   total, 2 * nbytes(e.inputs[2].aval) + nbytes(e.inputs[1].aval)))

    def pad(self, e) -> None:
        """The padding value everywhere, then x into its strided place (crops are slices of x)."""
        x, out = self.refs[e.inputs[0]], self.refs[e.out]
        self.fill(e, e.params["value"], "pad fill")
        xoff, ooff, shape, xs, os_ = x.offset, out.offset, [], [], []
        for (lo, _, it), n, m, sx, so in zip(e.params["config"], x.shape, out.shape, x.strides, out.strides):
            step = it + 1
            a = 0 if lo >= 0 else -lo // step + (-lo % step > 0)
            b = min(n, (m - lo + step - 1) // step) if m > lo else 0
            shape.append(max(0, b - a))
            xoff += a * sx
            ooff += (lo + a * step) * so
            xs.append(sx)
            os_.append(so * step)
        if _prod(shape):
            self.copy_values(x.moved(xoff, shape, xs), out.moved(ooff, shape, os_), "pad copy")

    def concatenate(self, e) -> None:
        """Each operand copied into its slice of the output along `axis`."""
        out, axis, at = self.refs[e.out], e.params["axis"], 0
        for a in e.inputs:
            src = self.refs[a]
            if _prod(src.shape):
                self.copy_values(src, out.moved(out.offset + at * out.strides[axis], src.shape, out.strides),
                                 "concatenate")
            at += src.shape[axis]

    def copy_values(self, src: Ref, dst: Ref, label: str) -> None:
        """dst = src elementwise (same shape; dtype converted as numpy's astype)."""
        conv = lambda ld: ([], [c_convert(ld[0], src.dtype, dst.dtype)])  # noqa: E731
        lines = L.render([L.Stmt("{")] + self.loops(list(src.shape), [dst], [src], conv) + [L.Stmt("}")])
        self.emit((label, lines, 0, _prod(src.shape) * (np.dtype(src.dtype).itemsize + np.dtype(dst.dtype).itemsize)))

    def _worksharing(self, pre, nest, parallel: bool) -> list:
        """C lines running `nest` with its outermost loop shared among the threads, or on one."""
        if parallel:
            nest[0].parallel = True
            return L.render([L.Stmt("{")] + pre + nest + [L.Stmt("}")])
        return L.render([L.Stmt("#pragma omp single\n{")] + pre + nest + [L.Stmt("}")])

    # ---- GEMM
    def _blas_kind(self, e) -> tuple:
        """(dtype, CBLAS kind "s" or "d") of a GEMM-based equation, or Unsupported."""
        dt = e.out.aval.dtype.name
        if dt not in ("float32", "float64") or any(a.aval.dtype.name != dt for a in e.inputs):
            raise Unsupported(f"{e.prim.name} on {dt}")
        kind = "s" if dt == "float32" else "d"
        if kind not in self.bits:
            raise Unsupported("no CBLAS library found")
        return dt, kind

    def dot(self, e) -> None:
        x, y = e.inputs
        dt, kind = self._blas_kind(e)
        (xc, yc), (xb, yb) = e.params["contract"], e.params["batch"]
        xr, yr, o = self.refs[x], self.refs[y], self.refs[e.out]
        xf = [i for i in range(len(xr.shape)) if i not in xc and i not in xb]
        yf = [i for i in range(len(yr.shape)) if i not in yc and i not in yb]
        m, k, n = _prod([xr.shape[i] for i in xf]), _prod([xr.shape[i] for i in xc]), _prod([yr.shape[i] for i in yf])
        nb = len(xb)
        bshape = [xr.shape[i] for i in xb]
        if m == 0 or n == 0 or _prod(bshape) == 0:
            self.emit(("dot_general", [], 0, 0))
            return
        if k == 0:
            self.fill(e, 0, "dot_general")
            return
        ta, lda = _blas_matrix(xr, xf, xc)
        tb, ldb = _blas_matrix(yr, yc, yf)
        bat = _collapse(bshape, [[xr.strides[i] for i in xb], [yr.strides[i] for i in yb], list(o.strides[:nb])])
        ct = CTYPE[dt]
        one, zero = c_literal(1, dt), c_literal(0, dt)
        pre = [L.Stmt(f"{ct}* o0 = {self.ptr(o)};\nconst {ct}* a0 = {self.ptr(xr)};\nconst {ct}* b0 = {self.ptr(yr)};")]
        gemm = "SGEMM" if kind == "s" else "DGEMM"
        flag = {"N": 111, "T": 112}
        nbatch = _prod(bshape)
        work = nbatch * m * n * k

        def call(a, b, c, mm, nn):
            return (f"{gemm}(101, {flag[ta]}, {flag[tb]}, {mm}, {nn}, {k}, {one}, {a}, {lda}, {b}, {ldb}, "
                    f"{zero}, {c}, {n});")
        if nbatch > 1:
            bvars = [f"bat{d}" for d in range(len(bat))]
            idx = [L.Stmt(f"int64_t rem = bi;")]
            for d in reversed(range(len(bat))):
                idx.append(L.Stmt(f"const int64_t {bvars[d]} = rem % {bat[d][0]}; rem /= {bat[d][0]};"))
            offs = [_index(bvars, [d[1][j] for d in bat]) for j in range(3)]
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
        itemsize = e.out.aval.dtype.itemsize
        self.emit(("dot_general", lines, 2 * work, itemsize * nbatch * (m * k + k * n + m * n)))


def _identity(op: str, dt: str) -> str:
    """C for the identity of reduction `op` ("add", "mul", "and", "or", "max", "min") in `dt`."""
    if op in ("add", "mul", "and", "or"):
        return c_literal(int(op in ("mul", "and")), dt)
    if dt in ("float32", "float64"):
        return ("-" if op == "max" else "") + ("INFINITY" if dt == "float32" else "(double)INFINITY")
    info = np.iinfo(np.dtype(dt)) if dt != "bool" else None
    return c_literal((info.min if op == "max" else info.max) if info else int(op == "min"), dt)


def _round64(n: int) -> int:
    return (n + 63) // 64 * 64


def _nest(names, extents, body) -> list:
    """`body` inside one loop per (name, extent), the first outermost."""
    for v, n in reversed(list(zip(names, extents))):
        body = [L.Loop(v, n, body)]
    return body


def _merge(sizes, strides):
    """(size, stride) of dims read as one (stride None when size <= 1), or None if they do not merge."""
    dims = [(n, s) for n, s in zip(sizes, strides) if n != 1]
    if not dims:
        return _prod(sizes), None
    for (n0, s0), (n1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * n1:
            return None
    return _prod(sizes), dims[-1][1]


def _blas_matrix(ref: Ref, rows, cols) -> tuple:
    """('N' or 'T', leading dimension) reading `ref` as a rows x cols matrix, or Unsupported."""
    r = _merge([ref.shape[i] for i in rows], [ref.strides[i] for i in rows])
    c = _merge([ref.shape[i] for i in cols], [ref.strides[i] for i in cols])
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


class MultiGroup:
    """Groups doing the same arithmetic on different tensors (an optimizer's update of each
    parameter) as one multi-tensor kernel: one flat index space over all of their elements."""

    prim = None

    def __init__(self, groups: list):
        self.groups = groups
        self.eqns = [e for g in groups for e in g.eqns]
        self.inputs = list(dict.fromkeys(v for g in groups for v in g.inputs))
        self.outputs = [v for g in groups for v in g.outputs]
        self._member = {v: i for i, g in enumerate(groups) for v in g.outputs + g.inputs}

    def same_tensor(self, out, x) -> bool:
        """Whether `out` may overwrite `x` (both belong to one member)."""
        return self._member.get(out) == self._member.get(x)

    def __repr__(self) -> str:
        return f"MultiGroup({len(self.groups)} x {self.groups[0]!r})"


def _arith_key(g: Group, size: int):
    """What a group computes, independent of which tensors and of their size (None: not batchable)."""
    pos = {}
    ins = []
    for k, v in enumerate(g.inputs):
        n = _prod(v.aval.shape)
        if n not in (1, size):
            return None  # a broadcast that is neither full nor one element
        pos[v] = ("in", k)
        ins.append((v.aval.dtype.name, n == 1))
    body = []
    for n, e in enumerate(g.eqns):
        args = tuple(literal_key(a) if isinstance(a, Literal) else pos[a] for a in e.inputs)
        try:
            params = params_key(e.params)
        except TypeError:
            return None
        body.append((e.prim.name, params, args, e.out.aval.dtype.name))
        pos[e.out] = ("t", n)
    return tuple(ins), tuple(body), tuple(pos[v] for v in g.outputs)


def _multi_tensor(graph, units: list) -> list:
    """Batch groups that compute the same thing on different tensors and whose results only leave
    the graph (optimizer updates) into one MultiGroup each, placed where the last of them was."""
    readers = {}
    for e in graph.eqns:
        for a in e.inputs:
            if isinstance(a, Var):
                readers.setdefault(a, set()).add(id(e))
    by_key = {}
    for u in units:
        if not isinstance(u, Group):
            continue
        own = {id(e) for e in u.eqns}
        if any(readers.get(v, set()) - own for v in u.outputs):
            continue
        size = _prod(u.shape)
        if size < 2:
            continue
        key = _arith_key(u, size)
        if key is not None:
            by_key.setdefault(key, []).append(u)
    out = list(units)
    for (ins, _, _), members in by_key.items():
        full = [g.inputs[k] for g in members for k, (_, scalar) in enumerate(ins) if not scalar]
        if len(members) < 2 or len(full) != len(set(full)):
            continue
        m = MultiGroup(members)
        ids = {id(g) for g in members}
        last = max(i for i, u in enumerate(out) if id(u) in ids)
        out[last] = m
        out = [u for u in out if id(u) not in ids]
    return out


def units_of(graph, multi_tensor: bool = True) -> list:
    """The graph as units in execution order: fused Groups, MultiGroups and single equations."""
    units = row_groups(graph, schedule(graph, elementwise_groups(graph)))
    return _multi_tensor(graph, units) if multi_tensor else units


_STATUS = """/* one call's context (a call on each thread has its own): what went wrong, read and
   cleared by ember_status (0 nothing, 1 an index out of range (value, size), 2 no memory for a
   unit's scratch), and the units' scratch memory, kept for the context's next call */
typedef struct { int status; int64_t args[2]; char* ws; size_t ws_size; } ember_ctx;
static void fail(ember_ctx* C, int code, int64_t a, int64_t b)
{
    #pragma omp critical(ember_status)
    if (!C->status) { C->status = code; C->args[0] = a; C->args[1] = b; }
}
static void oob(ember_ctx* C, int64_t value, int64_t size) { fail(C, 1, value, size); }
int ember_status(ember_ctx* C, int64_t* args)
{
    const int status = C->status;
    args[0] = C->args[0]; args[1] = C->args[1]; C->status = 0;
    return status;
}
size_t ember_ctx_size(void) { return sizeof(ember_ctx); }
void ember_ctx_free(ember_ctx* C) { free(C->ws); C->ws = 0; C->ws_size = 0; }"""


_WORKSPACE = """/* the units' scratch (im2col columns, per-thread partial sums): grown by one thread inside
   `omp single`, kept in the context for its next call */
static void ws_reserve(ember_ctx* C, size_t n)
{
    if (n <= C->ws_size) return;
    free(C->ws);
    n = (n + 63) & ~(size_t)63;
    C->ws = (char*)aligned_alloc(64, n);
    C->ws_size = C->ws ? n : 0;
    if (!C->ws) fail(C, 2, (int64_t)n, 0);  /* the unit skips its work; the call raises MemoryError */
}
/* dst[p] = src[(p*s + off) * xs] where 0 <= p*s + off < n, else 0 (one im2col row) */
#define ROW(T) static inline __attribute__((always_inline)) void row_##T(T* restrict dst, const T* restrict src, int64_t np, int64_t s, \\
                                         int64_t off, int64_t n, int64_t xs, int64_t ld) \\
{ \\
    if (ld == 1) { \\
        int64_t a = off >= 0 ? 0 : (-off + s - 1) / s, e = n - off <= 0 ? 0 : (n - off + s - 1) / s; \\
        if (a > np) a = np; \\
        if (e > np) e = np; \\
        if (e < a) e = a; \\
        for (int64_t p = 0; p < a; p++) dst[p] = 0; \\
        if (xs == 1 && s == 1) for (int64_t p = a; p < e; p++) dst[p] = src[p + off]; \\
        else for (int64_t p = a; p < e; p++) dst[p] = src[(p * s + off) * xs]; \\
        for (int64_t p = e; p < np; p++) dst[p] = 0; \\
    } else { \\
        for (int64_t p = 0; p < np; p++) { \\
            const int64_t q = p * s + off; \\
            dst[p] = (q >= 0 && q % ld == 0 && q / ld < n) ? src[(q / ld) * xs] : 0; \\
        } \\
    } \\
}
ROW(float)
ROW(double)
/* Philox4x32-10 of the counter (x0, x1, 0, 0) under key (k0, k1) (Salmon et al., SC'11) */
static inline void philox4x32_10(uint32_t x0, uint32_t x1, uint32_t k0, uint32_t k1, uint32_t w[4])
{
    uint32_t x2 = 0, x3 = 0;
    for (int r = 0; r < 10; r++) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        const uint64_t p0 = (uint64_t)0xD2511F53u * x0, p1 = (uint64_t)0xCD9E8D57u * x2;
        const uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0, y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        x1 = (uint32_t)p1; x3 = (uint32_t)p0; x0 = y0; x2 = y2;
    }
    w[0] = x0; w[1] = x1; w[2] = x2; w[3] = x3;
}"""


def _prelude(bits: dict) -> str:
    lines = [PRELUDE, "#ifdef _OPENMP\n#include <omp.h>\n#endif"]
    for kind, ct in (("s", "float"), ("d", "double")):
        if kind in bits:
            bi = "int64_t" if bits[kind] == 64 else "int"
            lines.append(f"typedef void (*{kind}gemm_t)(int, int, int, {bi}, {bi}, {bi}, {ct}, const {ct}*, {bi}, "
                         f"const {ct}*, {bi}, {ct}, {ct}*, {bi});\nstatic {kind}gemm_t {kind.upper()}GEMM;")
    lines.append("static int (*BLAS_LOCAL)(int);")
    lines.append("#include <stdlib.h>")
    lines.append(_STATUS)
    lines.append(_WORKSPACE)
    init = ["void ember_init(void* s, void* d, void* local)", "{"]
    for kind in bits:
        init.append(f"    {kind.upper()}GEMM = ({kind}gemm_t)({kind});")
    init += ["    BLAS_LOCAL = (int (*)(int))local;", "    (void)s; (void)d;  /* unused when a graph has no GEMM of that type */", "}"]
    return "\n".join(lines + init)


def _in_place_ok(u) -> bool:
    """Units that may write over an operand whose buffer dies with them: fused groups,
    elementwise equations, and scatter_add over its base (`plan` offers it operand 0 only)."""
    if isinstance(u, RowGroup):  # a later member of a row may still read the operand's row
        return False
    return u.prim is None or u.prim.kind == "elementwise" or u.prim.name in ACCUMULATE_PRIMS


class _Context:
    """One call's working memory (see `ember.jit.contexts`)."""

    __slots__ = ("map", "arena", "arena_ptr", "io", "ctx", "status_args", "pool", "__weakref__")


class NativeExecutable:
    """`run(inputs) -> outputs` with one native call; the same contract as ArenaExecutable."""

    def __init__(self, graph, persistent_outputs=()):
        self.graph = graph
        for a in graph.constvars + graph.invars + [e.out for e in graph.eqns]:  # first: the real cause
            if a.aval.dtype.name not in CTYPE:
                raise Unsupported(f"values of dtype {a.aval.dtype.name}")
        units = units_of(graph)
        for u in units:
            if u.prim is None:
                continue
            name = u.prim.name
            if not (name in VIEW_PRIMS or name in _UNITS):
                raise Unsupported(name)
        self.units = units
        # results the caller gets (not state, not gradients) are written straight into a new
        # array at each call, as the caller would otherwise copy them out of the arena
        fresh = {o for o, a in enumerate(graph.outvars) if isinstance(a, Var) and o not in graph.aliases
                 and o not in persistent_outputs}
        self.plan = p = plan(graph, set(persistent_outputs) | fresh, steps=units, contiguous_inputs=True,
                             elementwise=_in_place_ok)
        n_in, n_const = len(graph.invars), len(graph.constvars)
        persistent = sorted(o for o in p.pinned if o not in graph.aliases)
        self.io_index = {o: n_in + n_const + j for j, o in enumerate(persistent)}
        refs = {}

        def base_ref(v):
            b = p.buffer_of[v]
            if b.kind == "arena":
                return Ref.whole("arena", b.offset, v.aval)
            if b.kind == "input":
                return Ref.whole("io", b.index, v.aval)
            if b.kind == "const":
                return Ref.whole("io", n_in + b.index, v.aval)
            o = b.index  # an output written at its destination
            return Ref.whole("io", graph.aliases[o] if o in graph.aliases else self.io_index[o], v.aval)
        for v in graph.constvars + graph.invars:
            refs[v] = base_ref(v)
        bits = {}
        for kind in "sd":
            g = blas.gemm(kind)
            if g is not None:
                bits[kind] = g[1]
        self.bits = bits
        r = _Renderer(refs, bits)
        for u in units:
            if u.prim is None:
                for v in u.outputs:
                    refs[v] = base_ref(v)
                r.multi(u) if isinstance(u, MultiGroup) else r.rows(u) if isinstance(u, RowGroup) else r.group(u)
                continue
            e = u
            name = e.prim.name
            x = e.inputs[0] if e.inputs else None
            if name in VIEW_PRIMS and p.buffer_of[e.out] is p.buffer_of[x]:
                refs[e.out] = refs[x].view(name, e.params, e.out.aval.shape)
                continue
            refs[e.out] = base_ref(e.out)
            if name not in _UNITS:  # a view the planner had to materialise
                raise Unsupported(name)
            getattr(r, _UNITS[name])(e)
        self.refs = refs
        self.kernels = r.units
        # indices read straight from a graph input are checked before the step changes any state
        check_as = {"gather": "index", "scatter_add": "index_add", "take_along_axis": "take_along_axis",
                    "scatter_add_along_axis": "scatter_add_along_axis"}
        indexing = [e for e in graph.eqns if e.prim.name in check_as]
        self._index_checks = [(e.inputs[1], functools.partial(check_bounds, n=e.inputs[0].aval.shape[e.params["axis"]],
                                                               op=check_as[e.prim.name]))
                              for e in indexing if isinstance(e.inputs[1], Var)
                              and refs[e.inputs[1]].where == "io" and refs[e.inputs[1]].at < n_in]
        self._index_checks += [(e.inputs[0], functools.partial(e.prim.impl, **e.params)) for e in graph.eqns
                               if e.prim.name == "check_classes" and isinstance(e.inputs[0], Var)
                               and refs[e.inputs[0]].where == "io" and refs[e.inputs[0]].at < n_in]
        # each unit is its own function (GCC's time grows faster than linearly with a function's
        # size); its worksharing constructs bind to the step's one parallel region
        # the step walks a table: per unit its function and the addresses of its arguments
        # (base: arena or io slot, byte offset), so ember_step stays a small loop
        funcs, known, table, arg0, args = [], {}, [], [0], []
        for u, (label, lines, _, _, refs_u) in enumerate(r.units):
            if not lines:
                continue
            text = "\n".join(lines)
            if text not in known:
                known[text] = f = f"unit{u}"
                funcs += [f"/* {label} */",
                          f"static __attribute__((noinline)) void {f}(void* const* P, const int tid, const int nt, ember_ctx* C)",
                          "{", "    (void)P; (void)tid; (void)nt; (void)C;", *lines, "}"]
            table.append((known[text], u))
            for ref in refs_u:
                item = np.dtype(ref.dtype).itemsize
                args.append(f"{{{int(ref.where == 'io')}, {ref.at}, {ref.offset * item}}}")
            arg0.append(len(args))
        n_args = max([b - a for a, b in zip(arg0, arg0[1:])] + [1])
        self.source = "\n".join([
            _prelude(bits),
            *funcs,
            "typedef void (*unit_t)(void* const*, int, int, ember_ctx*);",
            f"static const unit_t UNITS[] = {{{', '.join(f for f, _ in table) or '0'}}};",
            f"static const int UNIT_ID[] = {{{', '.join(str(u) for _, u in table) or '0'}}};",
            f"static const int ARG0[] = {{{', '.join(map(str, arg0))}}};",
            f"static const int64_t ARGS[][3] = {{{', '.join(args) or '{0, 0, 0}'}}};  /* in io?, arena byte or io slot, byte offset */",
            f"void {ENTRY}(char* A, void** io, int nthreads, double* prof, ember_ctx* C)",
            "{",
            "    #pragma omp parallel num_threads(nthreads)",
            "    {",
            "        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();",
            "        if (BLAS_LOCAL) BLAS_LOCAL(1);",
            "        double t = prof ? omp_get_wtime() : 0;",
            f"        for (int u = 0; u < {len(table)}; u++) {{",
            f"            void* P[{n_args}];",
            "            for (int a = ARG0[u]; a < ARG0[u + 1]; a++)",
            "                P[a - ARG0[u]] = (ARGS[a][0] ? (char*)io[ARGS[a][1]] : A + ARGS[a][1]) + ARGS[a][2];",
            "            UNITS[u](P, tid, nt, C);",
            "            if (prof && tid == 0) { double now = omp_get_wtime(); prof[UNIT_ID[u]] += now - t; t = now; }",
            "        }",
            "        if (BLAS_LOCAL) BLAS_LOCAL(0);",
            "    }",
            "}", ""])
        lib = build.load_library(self.source, FLAGS)
        if lib is None:
            raise Unsupported("no working C compiler")
        self.lib = lib
        init = getattr(lib, INIT)
        init.argtypes = [ctypes.c_void_p] * 3
        init.restype = None
        init(*(blas.gemm(k)[0] if k in bits else None for k in "sd"), blas.set_threads_local_address())
        self._status = lib.ember_status
        self._status.argtypes, self._status.restype = [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int
        size_fn = lib.ember_ctx_size
        size_fn.argtypes, size_fn.restype = [], ctypes.c_size_t
        self._ctx_size = size_fn()
        self._ctx_free = lib.ember_ctx_free
        self._ctx_free.argtypes, self._ctx_free.restype = [ctypes.c_void_p], None
        self.fn = getattr(lib, ENTRY)
        self.fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_void_p,
                            ctypes.c_void_p]
        self.fn.restype = None
        self.n_io = n_in + n_const + len(persistent)
        self.consts = [np.ascontiguousarray(c, v.aval.dtype.np) for v, c in zip(graph.constvars, graph.consts)]
        self.persistent = {}
        for o in persistent:
            if o in fresh:
                continue
            a = graph.outvars[o]
            self.persistent[o] = np.empty(a.aval.shape, a.aval.dtype.np)
        self._fresh = [(o, self.io_index[o], graph.outvars[o].aval.shape, graph.outvars[o].aval.dtype.np)
                       for o in persistent if o in fresh]
        self._slot_output = {slot: o for o, slot in self.io_index.items()}
        self.n_in = n_in
        self.calls = 0
        self.outs = []  # what `run` returns per output, decided once
        for o, a in enumerate(graph.outvars):
            if isinstance(a, Literal):
                self.outs.append(("literal", np.asarray(a.value, a.aval.dtype.np)))
            elif o in fresh and o in p.pinned:
                self.outs.append(("fresh", o))
            elif o in self.persistent:
                self.outs.append(("persistent", self.persistent[o]))
            elif o in graph.aliases:
                self.outs.append(("donated", None) if o in p.pinned else ("write", (a, graph.aliases[o])))
            else:
                self.outs.append(("copy", a))
        self._state_inputs = set(graph.aliases.values())
        self._contexts = ContextPool(self._context)

    def _context(self) -> "_Context":
        """A call's own arena, `io` table (constants and persistent outputs filled in), C context
        (status word, scratch) and recycled results."""
        c = _Context()
        size = max(self.plan.peak, 1)  # one anonymous mapping, advised for transparent huge pages
        c.map = mmap.mmap(-1, (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        if hasattr(c.map, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                c.map.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass
        c.arena = np.frombuffer(c.map, np.uint8)[:self.plan.peak]
        c.arena_ptr = c.arena.ctypes.data
        c.io = (ctypes.c_void_p * self.n_io)()
        for j, a in enumerate(self.consts):
            c.io[self.n_in + j] = a.ctypes.data
        for o, a in self.persistent.items():
            c.io[self.io_index[o]] = a.ctypes.data
        c.ctx = np.zeros(-(-self._ctx_size // 8), np.int64)
        c.status_args = np.zeros(2, np.int64)
        c.pool = {}
        weakref.finalize(c, self._ctx_free, c.ctx.ctypes.data)  # its scratch memory
        return c

    @property
    def arena(self) -> np.ndarray:
        """The first context's arena (the only one unless calls overlapped)."""
        return self._contexts.first.arena

    def _array(self, v, inputs, new, ctx) -> np.ndarray:
        """A numpy view of value `v` after a call: in the arena, an input, a constant or an output
        (`new`: this call's fresh output arrays)."""
        ref = self.refs[v]
        dt = v.aval.dtype.np
        k = ref.at
        if ref.where == "arena":
            flat = np.frombuffer(ctx.map, np.uint8)[k:]
        else:
            if k < self.n_in:
                src = inputs[k]
            elif k < self.n_in + len(self.consts):
                src = self.consts[k - self.n_in]
            else:
                o = self._slot_output[k]
                src = new[o] if o in new else self.persistent[o]
            flat = src.reshape(-1).view(np.uint8)
        item = dt.itemsize
        start = ref.offset * item
        return np.lib.stride_tricks.as_strided(flat[start:].view(dt), ref.shape, [s * item for s in ref.strides])

    def _output(self, ctx, o, shape, dtype) -> np.ndarray:
        """An array for result `o`: one returned earlier that nothing references any more, else a
        new one. Large fresh arrays cost a page fault per page at every call; recycling the
        previous results (at most two per output and context) keeps that out of the step."""
        pool = ctx.pool.setdefault(o, [])
        for arr in pool:
            if sys.getrefcount(arr) <= 3:  # the pool's list, this loop and getrefcount's argument
                return arr
        arr = np.empty(shape, dtype)
        if arr.nbytes >= POOL_MIN:
            pool.append(arr)
            if len(pool) > 2:
                pool.pop(0)
        return arr

    def run(self, inputs, prof=None):
        """Run one call. Calls from several threads at once each use a context of their own;
        calls writing the same state must be serialized by the caller (ember.jit does)."""
        ctx = self._contexts.take()
        try:
            return self._run(ctx, inputs, prof)
        finally:
            for k in range(len(inputs)):
                ctx.io[k] = None
            self._contexts.give(ctx)

    def _run(self, ctx, inputs, prof):
        io = ctx.io
        fixed = []
        for k, x in enumerate(inputs):
            if not x.flags.c_contiguous:
                c = np.ascontiguousarray(x)
                fixed.append((k, x, c))
                x = c
            io[k] = x.ctypes.data
        if fixed:
            inputs = list(inputs)
            for k, _, c in fixed:
                inputs[k] = c
        for v, check in self._index_checks:
            check(self._array(v, inputs, {}, ctx))
        new = {}
        for o, slot, shape, dtype in self._fresh:
            arr = new[o] = self._output(ctx, o, shape, dtype)
            io[slot] = arr.ctypes.data
        self.fn(ctx.arena_ptr, io, get_num_threads(), None if prof is None else prof.ctypes.data, ctx.ctx.ctypes.data)
        self.calls += 1
        status = self._status(ctx.ctx.ctypes.data, ctx.status_args.ctypes.data)
        if status:
            a, b = ctx.status_args.tolist()
            if status == 1:
                raise IndexError(f"index {a} is out of bounds for a dimension of size {b} "
                                 "(computed inside the jitted step)")
            raise MemoryError(f"the native step could not allocate {a} bytes of scratch memory")
        res = []
        for kind, x in self.outs:
            if kind == "fresh":
                res.append(new[x])
            elif kind == "persistent":
                res.append(x)
            elif kind == "donated":
                res.append(None)
            elif kind == "literal":
                res.append(x.copy())
            elif kind == "write":
                np.copyto(inputs[x[1]], self._array(x[0], inputs, new, ctx), casting="unsafe")
                res.append(None)
            else:
                res.append(np.array(self._array(x, inputs, new, ctx)))
        for k, x, c in fixed:  # a non-contiguous state input: its update goes back into the caller's view
            if k in self._state_inputs:
                np.copyto(x, c)
        return res

    def profile(self, inputs, repeats: int = 10) -> list:
        """[(label, seconds per call, flops, bytes)] per unit, over `repeats` calls."""
        prof = np.zeros(len(self.kernels), np.float64)
        for _ in range(repeats):
            self.run(inputs, prof)
        return [(label, t / repeats, fl, nb) for (label, _, fl, nb, _), t in zip(self.kernels, prof)]


def kernel_table(rows: list) -> str:
    """The per-kernel table of `NativeExecutable.profile`: time, GFLOP/s and GB/s."""
    total = sum(r[1] for r in rows) or 1.0
    out = [f"{'unit':>4} {'ms':>9} {'share':>6} {'GFLOP/s':>8} {'GB/s':>7}  kernel"]
    for u, (label, t, flops, nbytes) in enumerate(rows):
        gf = flops / t / 1e9 if t > 0 else 0.0
        gb = nbytes / t / 1e9 if t > 0 else 0.0
        out.append(f"{u:>4} {t * 1e3:>9.4f} {t / total:>6.1%} {gf:>8.2f} {gb:>7.2f}  {label[:90]}")
    out.append(f"{'':>4} {total * 1e3:>9.4f}  total")
    return "\n".join(out)
