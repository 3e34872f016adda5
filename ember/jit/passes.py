"""Graph passes and a tiny pass manager.

Every pass takes a Graph and returns a new Graph (the input is left as it was). Levels:
O0: nothing; O1: dead-code elimination; O2: constant folding, algebraic simplification, transposes
folded into `dot_general`, common-subexpression elimination, dead-code elimination, repeated until
nothing changes. With `verify=True` (or EMBER_DEBUG >= 2) the verifier runs after every pass and
names the pass that broke an invariant.

Every rewrite keeps each value's type exactly (shape, dtype, weak flag): a rule whose replacement
would differ in any of them is skipped. Rewrites are bit-exact with one documented exception,
signed zeros (see `simplify`): like XLA's algebraic simplifier (`A + 0 => A`) and LLVM under
`nsz`, O2 folds `x + 0.0` to `x` although IEEE gives `-0.0 + 0.0 = +0.0`, so a result may be -0.0
where the unoptimized graph gives +0.0 (they compare equal). `simplify(g, signed_zeros=True)` keeps
those additions. `schedule(g)` orders equations topologically (Kahn's algorithm, stable).
"""
from __future__ import annotations

import numpy as np

from .._core.state import debug_level
from ..ir.core import Eqn, Graph, Literal, Var, literal_key, params_key
from ..ir.verify import verify as _verify
from ..ops import P
from ..runtime.executor import apply
from .sums import dots_to_one_dot, pads_to_concatenate


def _sub(a, env):
    if isinstance(a, Var):
        return env.get(a, a)
    return a


def _rebuild(g, eqns, env, constvars=None, consts=None):
    return Graph(g.constvars if constvars is None else constvars, g.consts if consts is None else consts,
                 g.invars, eqns, [_sub(a, env) for a in g.outvars], g.aliases)


def dce(g: Graph) -> Graph:
    """Drop equations (and constants) whose results no output needs. All primitives are pure."""
    live = {a for a in g.outvars if isinstance(a, Var)}
    keep = []
    for e in reversed(g.eqns):
        if e.out in live:
            keep.append(e)
            live.update(a for a in e.inputs if isinstance(a, Var))
    keep.reverse()
    cv, cs = [], []
    for v, c in zip(g.constvars, g.consts):
        if v in live:
            cv.append(v)
            cs.append(c)
    return Graph(cv, cs, g.invars, keep, g.outvars, g.aliases)


def cse(g: Graph) -> Graph:
    """Replace an equation by an earlier one with the same primitive, operands and params."""
    env, seen, out = {}, {}, []
    for e in g.eqns:
        ins = [_sub(a, env) for a in e.inputs]
        try:
            key = (e.prim, tuple(literal_key(a) if isinstance(a, Literal) else a for a in ins),
                   params_key(e.params), e.out.aval)
        except TypeError:
            key = None
        if key is not None and key in seen:
            env[e.out] = seen[key]
            continue
        ne = Eqn(e.prim, ins, e.out, e.params, e.loc)
        if key is not None:
            seen[key] = e.out
        out.append(ne)
    return _rebuild(g, out, env)


MAX_FOLD_ELEMENTS = 1 << 20  # a folded tensor constant larger than this stays an equation


def const_fold(g: Graph) -> Graph:
    """Evaluate equations whose operands are all known: literals, or constants with values (tensors
    created inside the traced function). A scalar result becomes a literal; a tensor result of at most
    `MAX_FOLD_ELEMENTS` elements becomes a new constant (the equation's own variable turns into a
    constvar). Values are computed with the executor's kernels and casting, so folding is exact.
    Graphs parsed from text have constants without values: those are left alone."""
    known = {v: c for v, c in zip(g.constvars, g.consts) if c is not None}
    cv, cs = list(g.constvars), list(g.consts)
    env, out = {}, []
    for e in g.eqns:
        ins = [_sub(a, env) for a in e.inputs]
        aval = e.out.aval
        size = int(np.prod(aval.shape, dtype=np.int64))
        if all(isinstance(a, Literal) or a in known for a in ins) and size <= MAX_FOLD_ELEMENTS:
            try:
                val = apply(e.prim, [a.value if isinstance(a, Literal) else known[a] for a in ins],
                            [a.aval for a in ins], e.params, aval)
                ok = val.shape == aval.shape and val.dtype == aval.dtype.np
            except Exception:  # noqa: BLE001 - leave it to run time
                ok = False
            if ok and aval.shape == ():
                val = val[()]
                if aval.weak:
                    val = val.item()
                env[e.out] = Literal(val, aval)
                continue
            if ok:
                if not val.flags.owndata or any(np.shares_memory(val, c) for c in known.values()):
                    val = val.copy()
                known[e.out] = val
                cv.append(e.out)
                cs.append(val)
                continue
        out.append(Eqn(e.prim, ins, e.out, e.params, e.loc))
    return _rebuild(g, out, env, cv, cs)


# ---------------------------------------------------------------- algebraic simplification
def _is_lit(a, value) -> bool:
    return isinstance(a, Literal) and not isinstance(a.value, (bool, np.bool_)) and a.value == value


def _signbit(a: Literal) -> bool:
    return bool(np.signbit(np.asarray(a.value, dtype=np.float64)))


def simplify(g: Graph, signed_zeros: bool = False) -> Graph:
    """Algebraic identities, each applied only when the replacement has exactly the equation's type
    (shape, dtype, weak flag), so no rule changes a dtype or a broadcast shape:

    - `x * 1`, `1 * x`, `x / 1`, `x - 0` (with +0), `x + (-0.0)`: exact;
    - `x + 0` with +0 (and `x - (-0.0)`): exact for integers; for floats IEEE gives `-0.0 + 0.0 =
      +0.0`, so this is folded only when `signed_zeros` is False (the O2 default, as XLA's
      `A + 0 => A`): a -0.0 may then stay -0.0. With `signed_zeros=True` float additions of +0 stay;
    - `neg(neg(x))`, `convert` to x's own dtype, `reshape` to x's own shape, `transpose` by the
      identity, `broadcast_in_dim` to x's own shape, a `slice` that takes everything, `rev` of no
      axes: all become `x`; `transpose(transpose(x, p), q)` becomes one transpose (or `x`).

    Never rewritten: `x * 0` (NaN and inf times 0 is NaN), `x - x`, `x / x`.
    """
    env, out, prod = {}, [], {}
    for e in g.eqns:
        ins = [_sub(a, env) for a in e.inputs]
        prim, p = e.prim, e.params
        rep = None
        if prim in (P.mul, P.add, P.sub, P.div) and len(ins) == 2:
            a, b = ins
            fl = e.out.aval.dtype.kind in "fc"  # signed zeros
            if prim is P.mul:
                rep = a if _is_lit(b, 1) else b if _is_lit(a, 1) else None
            elif prim is P.div:
                rep = a if _is_lit(b, 1) else None
            elif prim is P.add:
                for x, z in ((a, b), (b, a)):
                    if _is_lit(z, 0) and (not fl or _signbit(z) or not signed_zeros):
                        rep = x
                        break
            elif _is_lit(b, 0) and (not fl or not _signbit(b) or not signed_zeros):
                rep = a
        elif prim is P.neg:
            src = prod.get(ins[0])
            if src is not None and src.prim is P.neg:
                rep = src.inputs[0]
        elif prim is P.convert:
            rep = ins[0] if ins[0].aval.dtype is p["dtype"] else None
        elif prim is P.reshape:
            rep = ins[0] if tuple(p["shape"]) == ins[0].aval.shape else None
        elif prim is P.broadcast_in_dim:
            x = ins[0]
            if tuple(p["shape"]) == x.aval.shape and tuple(p["dims"]) == tuple(range(x.aval.ndim)):
                rep = x
        elif prim is P.slice:
            x = ins[0]
            if (tuple(p["start"]) == (0,) * x.aval.ndim and tuple(p["stop"]) == x.aval.shape
                    and all(s == 1 for s in p["step"])):
                rep = x
        elif prim is P.rev:
            rep = ins[0] if not tuple(p["axes"]) else None
        elif prim is P.transpose:
            perm = tuple(p["perm"])
            src = prod.get(ins[0])
            if src is not None and src.prim is P.transpose:
                p1 = tuple(src.params["perm"])
                perm = tuple(p1[j] for j in perm)
                ins = [src.inputs[0]]
            if perm == tuple(range(len(perm))):
                rep = ins[0]
            elif src is not None and src.prim is P.transpose:
                ne = Eqn(e.prim, ins, e.out, {**p, "perm": perm}, e.loc)
                out.append(ne)
                prod[e.out] = ne
                continue
        if rep is not None and isinstance(rep, (Var, Literal)) and rep.aval == e.out.aval:
            env[e.out] = rep
            continue
        ne = Eqn(e.prim, ins, e.out, p, e.loc)
        out.append(ne)
        prod[e.out] = ne
    return _rebuild(g, out, env)


def simplify_strict(g: Graph) -> Graph:
    """`simplify` keeping IEEE signed zeros (`x + 0.0` is not folded for floats)."""
    return simplify(g, signed_zeros=True)


# ---------------------------------------------------------------- transposes into dot_general
def _fold_side(perm, contract, batch):
    """Dimension numbers of `dot_general` on x for the same contraction on transpose(x, perm), or
    None when the free dims of x would come out in another order (the output layout must stay)."""
    free = [i for i in range(len(perm)) if i not in contract and i not in batch]
    mapped = [perm[i] for i in free]
    if mapped != sorted(mapped):
        return None
    return tuple(perm[i] for i in contract), tuple(perm[i] for i in batch)


def fold_dot_transpose(g: Graph) -> Graph:
    """`dot_general(transpose(a, p), b)` -> `dot_general(a, b)` with the contracting and batch dims
    renumbered (and likewise for the right operand). The output is batch dims, then the free dims of
    each operand in increasing order (ember/ops/linalg.py), so a transpose folds only when it keeps
    its operand's free dims in order (it may permute contracting and batch dims freely). The
    transpose itself stays for other users; dead-code elimination drops it when none is left."""
    prod, out = {}, []
    for e in g.eqns:
        if e.prim is P.dot_general and len(e.inputs) == 2:
            ins = list(e.inputs)
            (xc, yc), (xb, yb) = e.params["contract"], e.params["batch"]
            tx = prod.get(ins[0])
            if tx is not None and tx.prim is P.transpose:
                r = _fold_side(tuple(tx.params["perm"]), tuple(xc), tuple(xb))
                if r is not None:
                    ins[0], (xc, xb) = tx.inputs[0], r
            ty = prod.get(ins[1])
            if ty is not None and ty.prim is P.transpose:
                r = _fold_side(tuple(ty.params["perm"]), tuple(yc), tuple(yb))
                if r is not None:
                    ins[1], (yc, yb) = ty.inputs[0], r
            params = {**e.params, "contract": (tuple(xc), tuple(yc)), "batch": (tuple(xb), tuple(yb))}
            try:
                ok = e.prim.abstract(*[a.aval for a in ins], **params) == e.out.aval
            except Exception:  # noqa: BLE001
                ok = False
            if ok:
                e = Eqn(e.prim, ins, e.out, params, e.loc)
        out.append(e)
        prod[e.out] = e
    return _rebuild(g, out, {})


# ---------------------------------------------------------------- scheduling
def schedule(g) -> list:
    """A topological order of `g`'s equations (a Graph or a list of Eqns, in any order): Kahn's
    algorithm on in-degrees, stable (among ready equations the earliest listed goes first), so a
    graph already in order comes back unchanged. Raises ValueError on a cycle."""
    import heapq
    eqns = list(g.eqns if isinstance(g, Graph) else g)
    maker = {e.out: i for i, e in enumerate(eqns)}
    users = [[] for _ in eqns]
    indeg = [0] * len(eqns)
    for i, e in enumerate(eqns):
        deps = {maker[a] for a in e.inputs if isinstance(a, Var) and a in maker}
        indeg[i] = len(deps)
        for d in deps:
            users[d].append(i)
    ready = [i for i, n in enumerate(indeg) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(eqns[i])
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(eqns):
        raise ValueError("the equations have a cycle")
    return order


PASSES = {"dce": dce, "cse": cse, "const_fold": const_fold, "simplify": simplify,
          "simplify_strict": simplify_strict, "fold_dot_transpose": fold_dot_transpose,
          "pads_to_concatenate": pads_to_concatenate, "dots_to_one_dot": dots_to_one_dot}
LEVELS = {0: [], 1: ["dce"], 2: ["const_fold", "simplify", "fold_dot_transpose", "pads_to_concatenate",
                                 "dots_to_one_dot", "cse", "dce"]}


class PassManager:
    """Run named passes in order; verify after each one when asked."""

    def __init__(self, passes, verify: bool | None = None, max_rounds: int = 4):
        self.passes = [PASSES[p] if isinstance(p, str) else p for p in passes]
        self.verify = debug_level() >= 2 if verify is None else verify
        self.max_rounds = max_rounds
        self.log = []

    def run(self, g: Graph, after_pass=None) -> Graph:
        """The optimized graph; `after_pass(name, graph)` sees every intermediate one."""
        if self.verify:
            _verify(g, "tracing")
        for _ in range(self.max_rounds):
            n0 = len(g.eqns)
            for p in self.passes:
                before = len(g.eqns)
                g = p(g)
                self.log.append(f"{p.__name__}: {before} -> {len(g.eqns)} equations")
                if self.verify:
                    _verify(g, p.__name__)
                if after_pass is not None:
                    after_pass(p.__name__, g)
            if len(g.eqns) == n0:
                break
        return g


def optimize(g: Graph, level: int = 2, verify: bool | None = None) -> Graph:
    """Optimize a graph at level 0, 1 or 2."""
    return PassManager(LEVELS[level], verify=verify).run(g)
