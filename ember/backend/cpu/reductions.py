"""CPU lowerings of reductions over axes, argmax/argmin and cumsum (ordered scans, bitwise numpy's)."""
from __future__ import annotations

from ...ops import P
from ...runtime.layout import around, collapse, contiguous, prod
from ...runtime.memory import nbytes
from ..contract import Unsupported
from ..lowering import register_lowering
from . import loopnest as L
from .c_expr import CTYPE, c_call, c_convert
from .emitter import LANES, PAR_MIN, c_index, c_offset, identity
from .emitter import REDUCE


def reduce(r, e) -> None:
    """A reduction over `axes`: column-wise (kept inner dim vectorised) or row-wise (LANES partial sums for float sums)."""
    op = REDUCE.get(e.prim)
    x, out = r.refs[e.inputs[0]], r.refs[e.out]
    xt, ot = e.inputs[0].aval.dtype.name, e.out.aval.dtype.name
    if op is None or xt not in CTYPE or ot not in CTYPE:
        raise Unsupported(e.prim.name)
    axes = e.params["axes"]
    kept = [d for d in range(len(x.shape)) if d not in axes]
    red = list(axes)
    kdims = collapse([x.shape[d] for d in kept], [[x.strides[d] for d in kept],
                                                   list(contiguous([x.shape[d] for d in kept]))])
    rdims = collapse([x.shape[d] for d in red], [[x.strides[d] for d in red]])
    ct = CTYPE[ot]
    floats = ot in ("float32", "float64")
    ident = identity(op, ot)

    def comb(a, b):
        return c_call(op, [(a, ot), (b, ot)], ot)[0]

    def load(idx):
        return c_convert(f"in0[{idx}]", xt, ot)
    pre = [L.Stmt(f"{ct}* o0 = {r.ptr(out)};"), L.Stmt(f"const {CTYPE[xt]}* in0 = {r.ptr(x)};")]
    kv = [f"k{d}" for d in range(len(kdims))]
    rv = [f"r{d}" for d in range(len(rdims))]
    oidx = c_index(kv, [d[1][1] for d in kdims])
    total = prod(x.shape)
    column = kdims and kdims[-1][1][0] == 1 and (not rdims or min(abs(d[1][0]) for d in rdims) > 1)
    if column:
        # out[k] starts at the identity; each reduced index adds one row, the kept inner dim
        # vectorised (per element the order is sequential, as numpy's axis-0 reduction)
        inner = len(kdims) - 1
        xidx = " + ".join([c_index(kv, [d[1][0] for d in kdims]), c_index(rv, [d[1][0] for d in rdims])])
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
        xr = c_index(rv, [d[1][0] for d in rdims])
        xk = c_index(kv, [d[1][0] for d in kdims])
        lanes = op == "add" and floats and rdims and rdims[-1][1][0] == 1 and rdims[-1][0] >= 2 * LANES
        if lanes:
            n = rdims[-1][0]
            outer_r = rdims[:-1]
            ro = c_index(rv[:-1], [d[1][0] for d in outer_r])
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
        lines = r.worksharing(pre, nest, bool(kdims) and total >= PAR_MIN)
    r.emit((e.prim.name, lines, total, nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

def cumsum(r, e) -> None:
    """out[.., j, ..] = out[.., j -+ 1, ..] + x[.., j, ..] in order along the axis (numpy's
    sequential cumsum, so the sums are bitwise numpy's)."""
    x, out = r.refs[e.inputs[0]], r.refs[e.out]
    xt, ot = e.inputs[0].aval.dtype.name, e.out.aval.dtype.name
    if prod(x.shape) == 0:
        r.emit(("cumsum", [], 0, 0))
        return
    if not x.shape:
        r.copy_values(x, out, "cumsum")
        return
    axis, rev = e.params["axis"], e.params["reverse"]
    prev = f"{'+' if rev else '-'} {out.strides[axis]}"  # the element before along the scan
    pre = [L.Stmt(f"{CTYPE[out.dtype]}* o0 = {r.ptr(out)};\nconst {CTYPE[x.dtype]}* in0 = {r.ptr(x)};")]
    first = "j0 == 0" if not rev else f"j0 == {x.shape[axis] - 1}"
    od, cd = around(x.shape, axis, [x.strides, out.strides])

    def body(av, jv, cv):
        xo = f"{c_offset(av, cv, od, cd, 0)} + j0 * {x.strides[axis]}"
        oo = f"{c_offset(av, cv, od, cd, 1)} + j0 * {out.strides[axis]}"
        val = c_convert(f"in0[{xo}]", xt, ot)
        acc = c_call("add", [(f"o0[{oo} {prev}]", ot), (val, ot)], ot)[0]
        return [L.Stmt(f"o0[{oo}] = {first} ? {val} : {acc};")]
    total = prod(x.shape)
    r.emit(("cumsum", r.ordered_nest(pre, od, [(x.shape[axis], [])], cd, body, total, rev), total,
               nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

def arg_reduce(r, e) -> None:
    """The first index of the largest (argmax) or smallest (argmin) value along the axis; the
    first NaN wins, as numpy's."""
    x, out = r.refs[e.inputs[0]], r.refs[e.out]
    xt = e.inputs[0].aval.dtype.name
    if xt not in CTYPE:
        raise Unsupported(f"{e.prim.name} on {xt}")
    if not x.shape or prod(x.shape) == 0:
        r.fill(e, 0, e.prim.name)
        return
    axis = e.params["axis"]
    n = x.shape[axis]
    kept = [d for d in range(len(x.shape)) if d != axis]
    kd = collapse([x.shape[d] for d in kept], [[x.strides[d] for d in kept], list(out.strides)])
    kv = [f"k{d}" for d in range(len(kd))]
    xk, ok = c_index(kv, [d[1][0] for d in kd]), c_index(kv, [d[1][1] for d in kd])
    better = "<" if e.prim is P.argmin else ">"
    nan = " || (v != v && best == best)" if xt in ("float32", "float64") else ""
    scan = L.Stmt(f"{CTYPE[x.dtype]} best = in0[{xk}];\nint64_t bi = 0;\n"
                  f"for (int64_t j = 1; j < {n}; j++) {{\n"
                  f"    const {CTYPE[x.dtype]} v = in0[{xk} + j * {x.strides[axis]}];\n"
                  f"    if (v {better} best{nan}) {{ best = v; bi = j; }}\n}}\no0[{ok}] = bi;")
    nest = [scan]
    for d in reversed(range(len(kd))):
        nest = [L.Loop(kv[d], kd[d][0], nest)]
    pre = [L.Stmt(f"int64_t* o0 = {r.ptr(out)};\nconst {CTYPE[x.dtype]}* in0 = {r.ptr(x)};")]
    total = prod(x.shape)
    r.emit((e.prim.name, r.worksharing(pre, nest, bool(kd) and total >= PAR_MIN), total,
               nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

for _p in (P.reduce_sum, P.reduce_max, P.reduce_min, P.reduce_prod, P.reduce_and, P.reduce_or):
    register_lowering(_p, "cpu", reduce)
register_lowering(P.argmax, "cpu", arg_reduce)
register_lowering(P.argmin, "cpu", arg_reduce)
register_lowering(P.cumsum, "cpu", cumsum)
