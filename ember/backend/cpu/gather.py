"""CPU lowerings of gathers and scatters: gather, scatter_add, take and scatter-add along an axis
(each element adds its updates in index order, so results are numpy's add.at bitwise). Gathers
move half-precision values as their 16 bits; scatter-adds of them sum in float32 scratch."""
from __future__ import annotations

from ...ops import P
from ...runtime.layout import aligned_strides, around, collapse, contiguous, prod
from ...runtime.memory import nbytes
from ..lowering import register_lowering
from . import loopnest as L
from .c_expr import CTYPE, c_call, c_convert, compute_of
from .emitter import PAR_MIN, c_index, c_offset


def gather(r, e) -> None:
    """out[a, j, c] = x[a, idx[j], c] (numpy's take along `axis`)."""
    x, idx, out = r.refs[e.inputs[0]], r.refs[e.inputs[1]], r.refs[e.out]
    axis, k = e.params["axis"], len(idx.shape)
    n = x.shape[axis]
    od = collapse(x.shape[:axis], [list(x.strides[:axis]), list(out.strides[:axis])])
    jd = collapse(idx.shape, [list(idx.strides), list(out.strides[axis:axis + k])])
    cd = collapse(x.shape[axis + 1:], [list(x.strides[axis + 1:]), list(out.strides[axis + k:])])
    total = prod(e.out.aval.shape)
    if total == 0:
        r.emit(("gather", [], 0, 0))
        return
    av, jv, cv = ([f"{c}{d}" for d in range(len(dims))] for c, dims in (("a", od), ("j", jd), ("c", cd)))
    xo = " + ".join([c_index(av, [d[1][0] for d in od]), f"ix * {x.strides[axis]}",
                     c_index(cv, [d[1][0] for d in cd])])
    oo = " + ".join([c_index(av, [d[1][1] for d in od]), c_index(jv, [d[1][1] for d in jd]),
                     c_index(cv, [d[1][1] for d in cd])])
    nest = [L.Stmt(f"o0[{oo}] = in0[{xo}];")]
    for d in reversed(range(len(cd))):
        nest = [L.Loop(cv[d], cd[d][0], nest, vectorize=d == len(cd) - 1)]
    nest = r.index_value(f"ix0[{c_index(jv, [d[1][0] for d in jd])}]", n) + nest
    # `continue` needs a loop around the index load: a scalar index gets a one-trip loop
    loops = [(v, d[0]) for v, d in zip(av, od)] + [(v, d[0]) for v, d in zip(jv, jd)] or [("j_", 1)]
    for v, ext in reversed(loops):
        nest = [L.Loop(v, ext, nest)]
    pre = [L.Stmt(f"{CTYPE[out.dtype]}* o0 = {r.ptr(out)};\nconst {CTYPE[x.dtype]}* in0 = {r.ptr(x)};\n"
                  f"const {CTYPE[idx.dtype]}* ix0 = {r.ptr(idx)};")]
    r.emit(("gather", r.worksharing(pre, nest, total >= PAR_MIN), 0,
                       2 * nbytes(e.out.aval) + nbytes(e.inputs[1].aval)))

def scatter_add(r, e) -> None:
    """out = x, then out[a, idx[j], c] += upd[a, j, c] for j in order (as numpy's add.at).

    Threads own whole `a` slices when there are several, else ranges of the first `c` dim, so
    no two threads touch one element and each element sums its updates in index order."""
    x, idx, upd = (r.refs[a] for a in e.inputs)
    out = r.refs[e.out]
    axis, k = e.params["axis"], len(idx.shape)
    n = out.shape[axis]
    ot, ut = compute_of(e.out.aval.dtype.name), e.inputs[2].aval.dtype.name
    summed = ot != out.dtype and prod(upd.shape) > 0  # half values: the sums in float32 scratch
    if (x.where, x.at, x.offset) != (out.where, out.at, out.offset) and not summed:  # not planned in place
        r.copy_values(x, out, "scatter_add copy")
    if prod(upd.shape) == 0:
        return
    ost = contiguous(out.shape) if summed else out.strides
    od = collapse(out.shape[:axis], [list(upd.strides[:axis]), list(ost[:axis])])
    jd = collapse(idx.shape, [list(idx.strides), list(upd.strides[axis:axis + k])])
    cd = collapse(out.shape[axis + 1:], [list(upd.strides[axis + k:]), list(ost[axis + 1:])])
    o_ptr = f"(({CTYPE[ot]}*)C->ws)" if summed else r.ptr(out)
    pre = [L.Stmt(f"{CTYPE[ot]}* o0 = {o_ptr};\nconst {CTYPE[upd.dtype]}* up = {r.ptr(upd)};\n"
                  f"const {CTYPE[idx.dtype]}* ix0 = {r.ptr(idx)};")]

    def body(av, jv, cv):
        uo = " + ".join([c_index(av, [d[1][0] for d in od]), c_index(jv, [d[1][1] for d in jd]),
                         c_index(cv, [d[1][0] for d in cd])])
        oo = " + ".join([c_index(av, [d[1][1] for d in od]), f"ix * {ost[axis]}",
                         c_index(cv, [d[1][1] for d in cd])])
        acc = c_call("add", [(f"o0[{oo}]", ot), (c_convert(f"up[{uo}]", ut, ot), ot)], ot)[0]
        return [L.Stmt(f"o0[{oo}] = {acc};")]

    def head(av, jv):  # one index per (a, j): loaded once, outside the `c` loops
        return r.index_value(f"ix0[{c_index(jv, [d[1][0] for d in jd])}]", n)
    total = prod(upd.shape)
    lines = r.ordered_nest(pre, od, jd, cd, body, total, head=head)
    if summed:
        lines = _summed(r, x, out, lines)
    r.emit(("scatter_add", lines, total, 2 * nbytes(e.inputs[2].aval) + nbytes(e.inputs[1].aval)))


def _summed(r, x, out, lines: list) -> list:
    """`lines` (adding into float32 scratch laid out contiguously in out's shape) between x
    converted into that scratch and the scratch rounded into the half-precision `out`: the numpy
    kernel's add.at on float32 copies, rounded once at its end."""
    return (L.render(r.reserve_shared(prod(out.shape) * 4)) + r.convert_to_scratch(x, 0) + lines
            + r.round_scratch(out, 0))

def take_along_axis(r, e) -> None:
    """out[.., j, ..] = x[.., idx[.., j, ..], ..] (numpy's take_along_axis; idx broadcasts)."""
    x, idx, out = r.refs[e.inputs[0]], r.refs[e.inputs[1]], r.refs[e.out]
    axis, shape = e.params["axis"], list(e.out.aval.shape)
    total = prod(shape)
    if total == 0:
        r.emit(("take_along_axis", [], 0, 0))
        return
    xs = [0 if d == axis else s for d, s in enumerate(aligned_strides(x, shape))]
    ist = aligned_strides(idx, shape)
    pre = [L.Stmt(f"{CTYPE[out.dtype]}* o0 = {r.ptr(out)};\nconst {CTYPE[x.dtype]}* in0 = {r.ptr(x)};\n"
                  f"const {CTYPE[idx.dtype]}* ix0 = {r.ptr(idx)};")]

    od, cd = around(shape, axis, [xs, ist, out.strides])

    def body(av, jv, cv):
        return r.index_value(f"ix0[{c_offset(av, cv, od, cd, 1)} + j0 * {ist[axis]}]", x.shape[axis]) + [
            L.Stmt(f"o0[{c_offset(av, cv, od, cd, 2)} + j0 * {out.strides[axis]}] = "
                   f"in0[{c_offset(av, cv, od, cd, 0)} + ix * {x.strides[axis]}];")]
    r.emit(("take_along_axis", r.ordered_nest(pre, od, [(shape[axis], [])], cd, body, total), 0,
               2 * nbytes(e.out.aval) + nbytes(e.inputs[1].aval)))

def scatter_add_along_axis(r, e) -> None:
    """out = x, then out[.., idx[.., j, ..], ..] += upd[.., j, ..] with j in order (numpy's
    add.at order, so each element sums its updates as numpy does)."""
    x, idx, upd = (r.refs[a] for a in e.inputs)
    out = r.refs[e.out]
    axis, shape = e.params["axis"], list(upd.shape)
    total = prod(shape)
    ot, ut = compute_of(e.out.aval.dtype.name), e.inputs[2].aval.dtype.name
    summed = ot != out.dtype and total > 0  # half values: the sums in float32 scratch
    if (x.where, x.at, x.offset) != (out.where, out.at, out.offset) and not summed:  # not planned in place
        r.copy_values(x, out, "scatter_add_along_axis copy")
    if total == 0:
        return
    ost = contiguous(out.shape) if summed else out.strides
    os_ = [0 if d == axis else s for d, s in enumerate(ost)]
    ist = aligned_strides(idx, shape)
    o_ptr = f"(({CTYPE[ot]}*)C->ws)" if summed else r.ptr(out)
    pre = [L.Stmt(f"{CTYPE[ot]}* o0 = {o_ptr};\nconst {CTYPE[upd.dtype]}* up = {r.ptr(upd)};\n"
                  f"const {CTYPE[idx.dtype]}* ix0 = {r.ptr(idx)};")]

    od, cd = around(shape, axis, [os_, ist, upd.strides])

    def body(av, jv, cv):
        t = f"{c_offset(av, cv, od, cd, 0)} + ix * {ost[axis]}"
        u = f"up[{c_offset(av, cv, od, cd, 2)} + j0 * {upd.strides[axis]}]"
        acc = c_call("add", [(f"o0[{t}]", ot), (c_convert(u, ut, ot), ot)], ot)[0]
        return r.index_value(f"ix0[{c_offset(av, cv, od, cd, 1)} + j0 * {ist[axis]}]", out.shape[axis]) + [
            L.Stmt(f"o0[{t}] = {acc};")]
    lines = r.ordered_nest(pre, od, [(shape[axis], [])], cd, body, total)
    if summed:
        lines = _summed(r, x, out, lines)
    r.emit(("scatter_add_along_axis", lines, total, 2 * nbytes(e.inputs[2].aval) + nbytes(e.inputs[1].aval)))

register_lowering(P.gather, "cpu", gather)
register_lowering(P.scatter_add, "cpu", scatter_add)
register_lowering(P.take_along_axis, "cpu", take_along_axis)
register_lowering(P.scatter_add_along_axis, "cpu", scatter_add_along_axis)
