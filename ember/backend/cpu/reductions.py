"""CPU lowerings of reductions over axes, argmax/argmin and cumsum/cumprod (ordered scans, bitwise numpy's)."""
from __future__ import annotations

from ...ops import P
from ...runtime.layout import around, collapse, contiguous, prod
from ...runtime.memory import nbytes
from ..contract import Unsupported
from ..lowering import register_lowering
from . import loopnest as L
from .c_expr import CTYPE, c_call, c_convert, compute_of, itemsize
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
    at = compute_of(ot)  # a half result accumulates in float32, rounded once at its store
    ct = CTYPE[at]
    floats = at in ("float32", "float64")
    ident = identity(op, at)

    def comb(a, b):
        return c_call(op, [(a, at), (b, at)], at)[0]

    def load(idx):
        return c_convert(f"in0[{idx}]", xt, at)

    def store(v):
        return c_convert(v, at, ot)
    pre = [L.Stmt(f"{CTYPE[ot]}* o0 = {r.ptr(out)};"), L.Stmt(f"const {CTYPE[xt]}* in0 = {r.ptr(x)};")]
    kv = [f"k{d}" for d in range(len(kdims))]
    rv = [f"r{d}" for d in range(len(rdims))]
    oidx = c_index(kv, [d[1][1] for d in kdims])
    total = prod(x.shape)
    column = kdims and kdims[-1][1][0] == 1 and (not rdims or min(abs(d[1][0]) for d in rdims) > 1)
    if column:
        # out[k] starts at the identity; each reduced index adds one row, the kept inner dim
        # vectorised (per element the order is sequential, as numpy's axis-0 reduction)
        inner = len(kdims) - 1
        n_in = kdims[inner][0]
        xidx = " + ".join([c_index(kv, [d[1][0] for d in kdims]), c_index(rv, [d[1][0] for d in rdims])])
        # the sums build up in the output, or (a half result) in a float32 row of scratch
        into = f"o0[{oidx}]" if at == ot else f"part[{kv[inner]}]"
        init = L.Loop(kv[inner], "hi", [L.Stmt(f"{into} = {ident};")], vectorize=True, start="lo")
        acc = L.Loop(kv[inner], "hi", [L.Stmt(f"{into} = {comb(into, load(xidx))};")],
                     vectorize=True, start="lo")
        for d in reversed(range(len(rdims))):
            acc = L.Loop(rv[d], rdims[d][0], [acc])
        nest = [init, acc]
        scratch = []
        if at != ot:
            nest.append(L.Loop(kv[inner], "hi", [L.Stmt(f"o0[{oidx}] = {store(into)};")], vectorize=True, start="lo"))
            scratch = r.reserve_shared(n_in * itemsize(at))
            pre.append(L.Stmt(f"{ct}* part = ({ct}*)C->ws;"))
        for d in reversed(range(inner)):
            nest = [L.Loop(kv[d], kdims[d][0], nest)]
        if total >= PAR_MIN:  # each thread owns a fixed range of the kept inner dim
            rng = (f"const int64_t lo = (int64_t){n_in} * tid / nt, "
                   f"hi = (int64_t){n_in} * (tid + 1) / nt;")
            body = pre + [L.Stmt(rng)] + nest
            lines = L.render(scratch + [L.Stmt("{")] + body + [L.Stmt("}"), L.Stmt("#pragma omp barrier")])
        else:
            body = pre + [L.Stmt(f"const int64_t lo = 0, hi = {n_in};")] + nest
            lines = L.render(scratch + [L.Stmt("#pragma omp single\n{")] + body + [L.Stmt("}")])
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
                       f"o0[{oidx}] = {store('acc + tail')};")]
        else:
            body = [L.Stmt(f"acc = {comb('acc', load(f'{xk} + {xr}'))};")]
            for d in reversed(range(len(rdims))):
                body = [L.Loop(rv[d], rdims[d][0], body)]
            red_code = [L.Stmt(f"{ct} acc = {ident};")] + body + [L.Stmt(f"o0[{oidx}] = {store('acc')};")]
        nest = red_code
        for d in reversed(range(len(kdims))):
            nest = [L.Loop(kv[d], kdims[d][0], nest)]
        lines = r.worksharing(pre, nest, bool(kdims) and total >= PAR_MIN)
    r.emit((e.prim.name, lines, total, nbytes(e.inputs[0].aval) + nbytes(e.out.aval)))

def scan(r, e) -> None:
    """out[.., j, ..] = out[.., j -+ 1, ..] (+ or *) x[.., j, ..] in order along the axis (numpy's
    sequential cumsum/cumprod, so the results are bitwise numpy's)."""
    x, out = r.refs[e.inputs[0]], r.refs[e.out]
    xt, ot = e.inputs[0].aval.dtype.name, e.out.aval.dtype.name
    if prod(x.shape) == 0:
        r.emit((e.prim.name, [], 0, 0))
        return
    if not x.shape:
        r.copy_values(x, out, e.prim.name)
        return
    axis, rev = e.params["axis"], e.params["reverse"]
    pre = [L.Stmt(f"{CTYPE[out.dtype]}* o0 = {r.ptr(out)};\nconst {CTYPE[x.dtype]}* in0 = {r.ptr(x)};")]
    first = "j0 == 0" if not rev else f"j0 == {x.shape[axis] - 1}"
    at = compute_of(ot)
    total = prod(x.shape)
    scratch = []
    if at == ot:
        od, cd = around(x.shape, axis, [x.strides, out.strides])
        acc_at, acc_strides = "o0", out.strides  # the running values are the outputs
    else:  # a half result: the running values in float32 scratch, each output rounded from them
        acc_strides = contiguous(x.shape)
        od, cd = around(x.shape, axis, [x.strides, out.strides, acc_strides])
        scratch = L.render(r.reserve_shared(total * itemsize(at)))
        pre.append(L.Stmt(f"{CTYPE[at]}* run = ({CTYPE[at]}*)C->ws;"))
        acc_at = "run"
    prev = f"{'+' if rev else '-'} {acc_strides[axis]}"  # the element before along the scan

    def body(av, jv, cv):
        xo = f"{c_offset(av, cv, od, cd, 0)} + j0 * {x.strides[axis]}"
        oo = f"{c_offset(av, cv, od, cd, 1)} + j0 * {out.strides[axis]}"
        ao = oo if at == ot else f"{c_offset(av, cv, od, cd, 2)} + j0 * {acc_strides[axis]}"
        val = c_convert(f"in0[{xo}]", xt, at)
        acc = c_call(e.prim.lowering[0], [(f"{acc_at}[{ao} {prev}]", at), (val, at)], at)[0]
        stmt = f"{acc_at}[{ao}] = {first} ? {val} : {acc};"
        return [L.Stmt(stmt if at == ot else f"{stmt}\no0[{oo}] = {c_convert(f'run[{ao}]', at, ot)};")]
    r.emit((e.prim.name, scratch + r.ordered_nest(pre, od, [(x.shape[axis], [])], cd, body, total, rev), total,
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
    ct = compute_of(xt)  # half values compared as float
    nan = " || (v != v && best == best)" if ct in ("float32", "float64") else ""
    scan = L.Stmt(f"{CTYPE[ct]} best = {c_convert(f'in0[{xk}]', xt, ct)};\nint64_t bi = 0;\n"
                  f"for (int64_t j = 1; j < {n}; j++) {{\n"
                  f"    const {CTYPE[ct]} v = {c_convert(f'in0[{xk} + j * {x.strides[axis]}]', xt, ct)};\n"
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
register_lowering(P.cumsum, "cpu", scan)
register_lowering(P.cumprod, "cpu", scan)
