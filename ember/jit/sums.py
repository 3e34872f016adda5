"""O2 rewrites of sums that autodiff produces (book ch. 4, FE-17 algebraic simplification).

Reverse mode turns reuse into sums: every slice or chunk of a value sends back a `pad` of its
cotangent (the gradient of `gates.chunk(4)`, of `xw[t]` for each step of a recurrence), and every
use of a weight sends back a GEMM (`dW = sum_t g_t^T h_t` over the steps of an RNN). Summed term
by term these cost a full-size buffer per term; both sums have a cheaper exact form:

- `pads_to_concatenate`: a sum of zero pads of equal shape along one axis with disjoint ranges is
  the `concatenate` of the pieces (zero blocks fill the gaps). Values are the same; a `-0.0`
  piece stays `-0.0` where `pad + add` gave `+0.0` (the O2 rule that also folds `x + 0.0`).
- `dots_to_one_dot`: a sum of `dot_general`s with the same dimension numbers and operand shapes,
  no batch dims, is one `dot_general` of the operands concatenated along a contracting dim: one
  large GEMM instead of many small ones and their adds. It reassociates the float sum, as a
  blocked GEMM does anyway.

A sum is a tree of `add`s of one type (no broadcasting) whose inner results have no other use;
a term is rewritten only when nothing else reads it. The dead terms are left to `dce`.
"""
from __future__ import annotations

from ..ir.core import Eqn, Graph, Literal, Var
from ..ops import P


def _uses(g: Graph) -> dict:
    n = {}
    for e in g.eqns:
        for a in e.inputs:
            if isinstance(a, Var):
                n[a] = n.get(a, 0) + 1
    for a in g.outvars:
        if isinstance(a, Var):
            n[a] = n.get(a, 0) + 2  # a graph output is never folded away
    return n


def _terms(v, aval, producer, uses, inner: set) -> list:
    """The terms of the add-tree rooted at `v` (the roots of non-add subtrees), in order."""
    e = producer.get(v)
    if e is None or e.prim is not P.add or v.aval != aval or (inner and uses.get(v, 0) != 1):
        return [v]
    if any(not isinstance(a, Var) or a.aval != aval for a in e.inputs):
        return [v]
    inner.add(e)
    return [t for a in e.inputs for t in _terms(a, aval, producer, uses, inner)]


def _add_chain(terms, out, loc) -> list:
    """Equations computing `out` = sum of `terms` (Vars), left to right."""
    eqns, acc = [], terms[0]
    for k, t in enumerate(terms[1:]):
        dst = out if k == len(terms) - 2 else Var(out.aval)
        eqns.append(Eqn(P.add, [acc, t], dst, {}, loc))
        acc = dst
    return eqns


def _pad_piece(e):
    """(axis, lo, operand) of a zero pad along one axis with no interior padding, else None."""
    if e is None or e.prim is not P.pad or not isinstance(e.inputs[0], Var):
        return None
    value = e.params["value"]
    if isinstance(value, Var) or value != 0:
        return None
    axes = [d for d, (lo, hi, it) in enumerate(e.params["config"]) if (lo, hi, it) != (0, 0, 0)]
    if len(axes) != 1:
        return None
    lo, hi, it = e.params["config"][axes[0]]
    if it or lo < 0 or hi < 0:
        return None
    return axes[0], lo, e.inputs[0]


def _rewrite(g: Graph, combine) -> Graph:
    """Replace each add-tree whose terms `combine(terms, out, loc)` can merge by its result."""
    producer = {e.out: e for e in g.eqns}
    uses = _uses(g)
    out, done = [], set()
    roots = [e for e in g.eqns if e.prim is P.add]
    inner_of = {}
    for e in reversed(roots):  # the outermost adds first: their trees hold the inner ones
        if id(e) in done:
            continue
        inner = set()
        terms = _terms(e.out, e.out.aval, producer, uses, inner)
        if len(terms) >= 2:
            for i in inner:
                done.add(id(i))
            inner_of[id(e)] = terms
    for e in g.eqns:
        terms = inner_of.get(id(e))
        new = combine(terms, e.out, e.loc, producer, uses) if terms else None
        out.extend(new if new is not None else [e])
    return Graph(g.constvars, g.consts, g.invars, out, g.outvars, g.aliases)


def _combine_pads(terms, out, loc, producer, uses):
    pieces, rest = {}, []
    for t in terms:
        p = _pad_piece(producer.get(t)) if uses.get(t, 0) == 1 else None
        if p is None:
            rest.append(t)
        else:
            pieces.setdefault(p[0], []).append((p[1], p[2], t))
    axis, group = max(pieces.items(), key=lambda kv: len(kv[1]), default=(None, []))
    if len(group) < 2:
        return None
    group.sort(key=lambda p: p[0])
    n, parts, at = out.aval.shape[axis], [], 0
    for lo, x, _ in group:
        if lo < at:  # overlapping ranges add up: not a concatenation
            return None
        if lo > at:
            parts.append(lo - at)
        parts.append(x)
        at = lo + x.aval.shape[axis]
    if at < n:
        parts.append(n - at)
    eqns, inputs = [], []
    for part in parts:
        if isinstance(part, Var):
            inputs.append(part)
            continue
        shape = list(out.aval.shape)
        shape[axis] = part
        z = Var(type(out.aval)(tuple(shape), out.aval.dtype))
        eqns.append(Eqn(P.full, [], z, {"shape": tuple(shape), "value": 0, "dtype": out.aval.dtype}, loc))
        inputs.append(z)
    others = rest + [t for a, ps in pieces.items() if a != axis for _, _, t in ps]
    cat = out if not others else Var(out.aval)
    eqns.append(Eqn(P.concatenate, inputs, cat, {"axis": axis}, loc))
    return eqns + (_add_chain([cat] + others, out, loc) if others else [])


def pads_to_concatenate(g: Graph) -> Graph:
    """Sums of zero pads along one axis with disjoint ranges become one concatenate."""
    return _rewrite(g, _combine_pads)


def _dot_term(t, producer, uses, dtype):
    """(dot_general eqn, transpose perm or None) when term `t` is a GEMM (or a transposed one,
    as the VJP of `h @ w` gives) that nothing else reads, else None."""
    e = producer.get(t) if uses.get(t, 0) == 1 else None
    perm = None
    if e is not None and e.prim is P.transpose and uses.get(e.inputs[0], 0) == 1:
        perm, e = tuple(e.params["perm"]), producer.get(e.inputs[0])
    if e is None or e.prim is not P.dot_general or e.params["batch"] != ((), ()) or \
            not e.params["contract"][0] or any(isinstance(a, Literal) for a in e.inputs) or \
            any(a.aval.dtype is not dtype for a in e.inputs):
        return None
    return e, perm


def _combine_dots(terms, out, loc, producer, uses):
    groups, rest = {}, []
    for t in terms:
        d = _dot_term(t, producer, uses, out.aval.dtype)
        if d is None:
            rest.append(t)
            continue
        e, perm = d
        groups.setdefault((e.params["contract"], perm, e.inputs[0].aval, e.inputs[1].aval), []).append((e, t))
    key, group = max(groups.items(), key=lambda kv: len(kv[1]), default=(None, []))
    if len(group) < 2:
        return None
    (ca, cb), perm, xa, ya = key
    eqns, cats = [], []
    for side, axis, aval in ((0, ca[0], xa), (1, cb[0], ya)):
        shape = list(aval.shape)
        shape[axis] *= len(group)
        v = Var(type(aval)(tuple(shape), aval.dtype))
        eqns.append(Eqn(P.concatenate, [e.inputs[side] for e, _ in group], v, {"axis": axis}, loc))
        cats.append(v)
    others = rest + [t for k, ts in groups.items() if k != key for _, t in ts]
    total = out if not others else Var(out.aval)
    first = group[0][0]
    dot = total if perm is None else Var(first.out.aval)
    eqns.append(Eqn(P.dot_general, cats, dot, dict(first.params), loc))
    if perm is not None:
        eqns.append(Eqn(P.transpose, [dot], total, {"perm": perm}, loc))
    return eqns + (_add_chain([total] + others, out, loc) if others else [])


def dots_to_one_dot(g: Graph) -> Graph:
    """Sums of GEMMs of equal shapes become one GEMM over concatenated operands."""
    return _rewrite(g, _combine_dots)
