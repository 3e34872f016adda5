"""Run a Graph with each primitive's numpy kernel, with eager mode's dtype casting rules."""
from __future__ import annotations

import numpy as np

from .._core.dtypes import DType
from ..ir.core import Literal


def compute_key(aval):
    """The dtype key `Primitive.resolve_dtypes` takes for a value of type `aval`."""
    if aval.weak:
        k = aval.dtype.kind
        return "b" if k == "b" else "i" if k in "ui" else "f"
    return aval.dtype


def compute_dtypes(e):
    """(compute, result) dtypes of equation `e`, or None when it promotes nothing."""
    prim = e.prim
    keys = [compute_key(a.aval) for a in e.inputs]
    pa = prim.promote_args
    if pa == ():
        return None
    key = tuple(keys) if pa is None else tuple(keys[i] for i in pa)
    return prim.resolve_dtypes(key) if key else None  # creation primitives have no operands


def apply(prim, vals, avals, params, out_aval):
    """One primitive on numpy values, cast as the eager interpreter casts."""
    datas = list(vals)
    keys = [compute_key(a) for a in avals]
    pa = prim.promote_args
    if pa or (pa is None and datas):
        idx = range(len(datas)) if pa is None else pa
        key = tuple(keys) if pa is None else tuple(keys[i] for i in pa)
        compute, _ = prim.resolve_dtypes(key)
        cnp = compute.np
        if key.count(compute) != len(key):
            for i in idx:
                d = datas[i]
                if isinstance(keys[i], DType):
                    if d.dtype != cnp:
                        datas[i] = d.astype(cnp)
                else:
                    datas[i] = cnp.type(d)
    res = prim.impl(*datas, **params)
    if res.__class__ is not np.ndarray:
        res = np.asarray(res)
    onp = out_aval.dtype.np
    if res.dtype != onp:
        res = res.astype(onp)
    return res


class Executable:
    """A graph prepared for repeated runs: `run(input arrays) -> output arrays`."""

    def __init__(self, graph):
        self.graph = graph
        slot = {}
        for v in graph.constvars + graph.invars:
            slot[v] = len(slot)
        steps = []
        for e in graph.eqns:
            refs = [(True, a.value) if isinstance(a, Literal) else (False, slot[a]) for a in e.inputs]
            steps.append((e.prim, refs, [a.aval for a in e.inputs], e.params, e.out.aval))
            slot[e.out] = len(slot)
        self.steps = steps
        self.nslots = len(slot)
        n_in = len(graph.constvars) + len(graph.invars)
        # literals and inputs are returned as copies: an output never aliases an input's buffer
        self.outs = [(True, np.asarray(a.value, a.aval.dtype.np)) if isinstance(a, Literal) else
                     (True, slot[a]) if slot[a] < n_in else (False, slot[a]) for a in graph.outvars]
        self.n_in = n_in
        self.consts = list(graph.consts)
        if any(c is None for c in self.consts):
            raise ValueError("this graph has constants without values (parsed from text?)")

    def run(self, inputs, check=None):
        """The outputs for these inputs; `check(eqn, values, result)` sees every step's result."""
        env = self.consts + list(inputs)
        for e, (prim, refs, avals, params, out_aval) in zip(self.graph.eqns, self.steps):
            vals = [r if lit else env[r] for lit, r in refs]
            env.append(apply(prim, vals, avals, params, out_aval))
            if check is not None:
                check(e, vals, env[-1])
        return [env[r] if not copy else (r if r.__class__ is not int else env[r]).copy()
                for copy, r in self.outs]


def run_graph(graph, inputs):
    """Evaluate a graph once on numpy input arrays."""
    return Executable(graph).run(inputs)
