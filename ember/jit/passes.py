"""Graph passes and a tiny pass manager.

Every pass takes a Graph and returns a new Graph (the input is left as it was). Levels:
O0: nothing; O1: dead-code elimination; O2: constant folding, common-subexpression elimination,
dead-code elimination, repeated until nothing changes. With `verify=True` (or EMBER_DEBUG >= 1) the
verifier runs after every pass and names the pass that broke an invariant.
"""
from __future__ import annotations

import numpy as np

from .._core.state import debug_level
from ..ir.core import Eqn, Graph, Literal, Var
from ..ir.verify import verify as _verify
from .executor import apply


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


def _freeze(x):
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    if isinstance(x, np.ndarray):
        raise TypeError
    hash(x)
    return x


def _lit_key(a: Literal):
    v = a.value
    return ("lit", type(v).__name__, repr(v), a.aval)


def cse(g: Graph) -> Graph:
    """Replace an equation by an earlier one with the same primitive, operands and params."""
    env, seen, out = {}, {}, []
    for e in g.eqns:
        ins = [_sub(a, env) for a in e.inputs]
        try:
            key = (e.prim.name, tuple(_lit_key(a) if isinstance(a, Literal) else a for a in ins),
                   _freeze(e.params), e.out.aval)
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


def const_fold(g: Graph) -> Graph:
    """Evaluate equations whose operands are all literals and whose result is a scalar."""
    env, out = {}, []
    for e in g.eqns:
        ins = [_sub(a, env) for a in e.inputs]
        if all(isinstance(a, Literal) for a in ins) and e.out.aval.shape == ():
            try:
                val = apply(e.prim, [a.value for a in ins], [a.aval for a in ins], e.params, e.out.aval)
            except Exception:  # noqa: BLE001 - leave it to run time
                val = None
            if val is not None:
                val = val[()]
                if e.out.aval.weak:
                    val = val.item()
                env[e.out] = Literal(val, e.out.aval)
                continue
        out.append(Eqn(e.prim, ins, e.out, e.params, e.loc))
    return _rebuild(g, out, env)


PASSES = {"dce": dce, "cse": cse, "const_fold": const_fold}
LEVELS = {0: [], 1: ["dce"], 2: ["const_fold", "cse", "dce"]}


class PassManager:
    """Run named passes in order; verify after each one when asked."""

    def __init__(self, passes, verify: bool | None = None, max_rounds: int = 4):
        self.passes = [PASSES[p] if isinstance(p, str) else p for p in passes]
        self.verify = debug_level() >= 1 if verify is None else verify
        self.max_rounds = max_rounds
        self.log = []

    def run(self, g: Graph) -> Graph:
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
            if len(g.eqns) == n0:
                break
        return g


def optimize(g: Graph, level: int = 2, verify: bool | None = None) -> Graph:
    """Optimize a graph at level 0, 1 or 2."""
    return PassManager(LEVELS[level], verify=verify).run(g)
