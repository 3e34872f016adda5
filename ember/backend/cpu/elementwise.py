"""CPU lowerings of elementwise work: a fused group as one loop nest, many same-arithmetic groups
as one multi-tensor kernel, and the elementwise primitives whose C is not their scalar expression.
"""
from __future__ import annotations

import numpy as np

from ...ir.core import Literal
from ...ops import P
from ...runtime.fusion import Group
from ...runtime.layout import contiguous, prod
from ...runtime.memory import nbytes
from ...runtime.units import MultiGroup
from ..contract import Unsupported
from ..lowering import register_lowering
from . import c_vec
from . import loopnest as L
from .c_expr import CTYPE, INEXACT_PRIMS, c_convert, c_literal, operands
from .cmath import FUNCTIONS
from .emitter import PAR_MIN


def group(r, g: Group) -> None:
    """One loop nest over the group's shape computing all of its outputs."""
    refs = r.refs
    traffic = sum(nbytes(v.aval) for v in g.inputs + g.outputs)
    label = " ".join(e.prim.name for e in g.eqns)
    lines = _vector_group(r, g)
    if lines is None:
        nest = r.loops(g.shape, [refs[v] for v in g.outputs], [refs[v] for v in g.inputs],
                       lambda loads: r.body(g, loads))
        lines = L.render([L.Stmt("{")] + nest + [L.Stmt("}")])
    r.emit((label, lines, prod(g.shape) * len(g.eqns), traffic))


def _vector_group(r, g: Group) -> list | None:
    """The group as one flat loop, 8 elements at a time in vector C (c_vec.py), the rest scalar;
    None unless every value is contiguous in the group's shape or a single element and every
    equation has a vector form."""
    refs, n = r.refs, prod(g.shape)
    flat = lambda v: prod(refs[v].shape) == 1 or (  # noqa: E731
        tuple(refs[v].shape) == tuple(g.shape) and refs[v].strides == contiguous(refs[v].shape))
    if n < c_vec.LANES or not all(flat(v) for v in g.inputs + g.outputs):
        return None
    names, vec = {}, []
    try:
        for k, v in enumerate(g.inputs):
            t = refs[v].dtype
            if t not in c_vec.VTYPE:
                return None
            one = prod(refs[v].shape) == 1
            vec.append(f"const {c_vec.VTYPE[t]} v_x{k} = " +
                       (c_vec.splat(f"in{k}[0]", t) if one else c_vec.load(f"in{k} + e", t)) + ";")
            names[v] = (f"v_x{k}", t)
        for q in g.eqns:
            code, t = c_vec.render_eqn(q, names)
            vec.append(f"const {c_vec.VTYPE[t]} v_{len(names)} = {code};")
            names[q.out] = (f"v_{len(names)}", t)
        vec += [c_vec.store(f"o{k} + e", names[v][0], refs[v].dtype) for k, v in enumerate(g.outputs)]
    except Unsupported:
        return None
    loads = [f"x{k}" for k in range(len(g.inputs))]
    code, values = r.body(g, loads)
    pre = [f"{CTYPE[refs[v].dtype]}* o{k} = {r.ptr(refs[v])};" for k, v in enumerate(g.outputs)]
    pre += [f"const {CTYPE[refs[v].dtype]}* in{k} = {r.ptr(refs[v])};" for k, v in enumerate(g.inputs)]
    scalar = [f"const {CTYPE[refs[v].dtype]} x{k} = in{k}[{'0' if prod(refs[v].shape) == 1 else 'e'}];"
              for k, v in enumerate(g.inputs)] + code + [f"o{k}[e] = {val};" for k, val in enumerate(values)]
    share = (f"const int64_t lo = (int64_t){n} * tid / nt, hi = (int64_t){n} * (tid + 1) / nt;" if n >= PAR_MIN
             else f"const int64_t lo = 0, hi = tid == 0 ? {n} : 0;")
    return ["{", *("    " + x for x in pre), "    " + share, "    int64_t e0 = lo;  /* where the vector loop stops */",
            "#if defined(__AVX2__) && defined(__GNUC__)", *c_vec.TYPES.split("\n"),
            f"    for (; e0 + {c_vec.LANES} <= hi; e0 += {c_vec.LANES}) {{", "        const int64_t e = e0;",
            *("        " + x for x in vec), "    }", "#endif",
            "    for (int64_t e = e0; e < hi; e++) {", *("        " + x for x in scalar), "    }", "}",
            "#pragma omp barrier"]

def multi(r, m: MultiGroup) -> None:
    """The members of `m` as one kernel over their concatenated elements (flat members only)."""
    refs = r.refs
    # the kernel walks each tensor by one flat index: members reading or writing a strided
    # view (a weight gradient that is a transposed GEMM or conv result) run as their own loops
    flat = [g for g in m.groups if all(prod(refs[v].shape) == 1 or refs[v].strides == contiguous(refs[v].shape)
                                       for v in g.inputs + g.outputs)]
    ids = {id(g) for g in flat}
    for g in m.groups:
        if id(g) not in ids or len(flat) < 2:
            group(r, g)
    if len(flat) < 2:
        return
    m = MultiGroup(flat)
    g0 = m.groups[0]
    T = len(m.groups)
    sizes = [prod(g.shape) for g in m.groups]
    starts = np.cumsum([0] + sizes[:-1]).tolist()
    total = sum(sizes)
    scalar = [prod(v.aval.shape) == 1 for v in g0.inputs]
    pre = [f"static const int64_t sizes[{T}] = {{{', '.join(map(str, sizes))}}};",
           f"static const int64_t starts[{T}] = {{{', '.join(map(str, starts))}}};"]
    for k, v in enumerate(g0.inputs):
        ct = CTYPE[v.aval.dtype.name]
        pre.append(f"const {ct}* in{k}[{T}] = {{{', '.join(r.ptr(refs[g.inputs[k]]) for g in m.groups)}}};")
    for k, v in enumerate(g0.outputs):
        ct = CTYPE[v.aval.dtype.name]
        pre.append(f"{ct}* o{k}[{T}] = {{{', '.join(r.ptr(refs[g.outputs[k]]) for g in m.groups)}}};")
    if total >= PAR_MIN:  # each thread owns a fixed slice of the concatenated elements
        pre.append(f"const int64_t lo = (int64_t){total} * tid / nt, hi = (int64_t){total} * (tid + 1) / nt;")
    else:
        pre.append(f"const int64_t lo = 0, hi = tid == 0 ? {total} : 0;")
    body = [L.Stmt(f"const {CTYPE[v.aval.dtype.name]} x{k} = p{k}[{'0' if scalar[k] else 'j'}];")
            for k, v in enumerate(g0.inputs)]
    code, values = r.body(g0, [f"x{k}" for k in range(len(g0.inputs))])
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
    r.emit((label, L.render(nest), total * len(g0.eqns), traffic))


def logistic(eqn, names) -> tuple:
    """1 / (1 + exp(-x)) through ember's sigmoid, which keeps the negative tail."""
    (x,), compute = operands(eqn, names)
    if compute not in ("float32", "float64"):
        raise Unsupported("logistic on ints")
    out = eqn.out.aval.dtype.name
    return c_convert(f"{FUNCTIONS['sigmoid'][0 if compute == 'float32' else 1]}({x[0]})", compute, out), out


def bitcast(eqn, names) -> tuple:
    """The same bytes read as another type of the same size."""
    (a,), out = eqn.inputs, eqn.out.aval.dtype.name
    src = a.aval.dtype.name
    code = c_literal(a.value, src) if isinstance(a, Literal) else c_convert(*names[a], src)
    return (f"({{ {CTYPE[src]} bs_ = ({code}); {CTYPE[out]} bd_; "
            f"__builtin_memcpy(&bd_, &bs_, sizeof bd_); bd_; }})"), out


register_lowering(Group, "cpu", group)
register_lowering(MultiGroup, "cpu", multi)
register_lowering(P.logistic, "cpu", logistic)
INEXACT_PRIMS.add(P.logistic)  # a half sigmoid reads the numpy executor's table
register_lowering(P.bitcast, "cpu", bitcast)
