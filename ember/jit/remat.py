"""Rematerialization (CMU-1, TB-2): recompute checkpointed activations in the backward pass
instead of keeping them in the arena.

A training step traced by ember.jit holds its forward and its backward in one graph, the
backward reading forward values (a layer's input, its pre-activation) long after they were made:
the memory plan must keep every one of them alive across the whole forward. Inside the trace,
`ember.utils.checkpoint(fn, *args)` marks the equations `fn` made and the values it returned
(TraceInterpreter.remat_region). This pass, run after the optimizer and before the memory plan,
takes each marked region in turn:

- its *internal* values are those its equations made, less what it returned and the graph's
  outputs; the region's inputs and outputs stay live as before;
- B is the first equation after the region that reads an internal value: the start of the
  region's backward (the VJP of its last op);
- the region's equations that those reads need, transitively, are copied in order right before
  B, with fresh values, and every read from B on is pointed at the copies.

So an internal value now dies at its last use inside the forward, and its copy lives only from B
to its last backward use: the peak holds one region's activations at a time plus the regions'
outputs, at the cost of one more forward of each region. Random equations (dropout's bits) are
not copied: their value is kept, so a rerun draws nothing new. Values are bit for bit those of
the plain step: the copies are the same equations on the same inputs.
"""
from __future__ import annotations

from ..ir.core import Eqn, Graph, Var

__all__ = ["rematerialize"]


def _one(eqns: list, made: frozenset, keep: set):
    """Rematerialize one region of `eqns`; (new eqns, number of equations copied)."""
    where = [i for i, e in enumerate(eqns) if e.out in made]
    if not where:
        return eqns, 0
    end = where[-1]
    internal = {eqns[i].out for i in where if eqns[i].prim.kind != "random"} - keep
    first = None
    for j in range(end + 1, len(eqns)):
        if any(isinstance(a, Var) and a in internal for a in eqns[j].inputs):
            first = j
            break
    if first is None:
        return eqns, 0
    read = {a for e in eqns[first:] for a in e.inputs if isinstance(a, Var) and a in internal}
    need = set(read)
    for i in reversed(where):  # what the copies read in turn (a region's order is topological)
        e = eqns[i]
        if e.out in need:
            need.update(a for a in e.inputs if isinstance(a, Var) and a in internal)
    copy, copies = {}, []
    for i in where:
        e = eqns[i]
        if e.out in need:
            v = Var(e.out.aval)
            copies.append(Eqn(e.prim, [copy.get(a, a) if isinstance(a, Var) else a for a in e.inputs], v,
                              e.params, e.loc))
            copy[e.out] = v
    tail = [Eqn(e.prim, [copy.get(a, a) if isinstance(a, Var) else a for a in e.inputs], e.out, e.params, e.loc)
            if any(isinstance(a, Var) and a in copy for a in e.inputs) else e for e in eqns[first:]]
    return eqns[:first] + copies + tail, len(copies)


def rematerialize(g: Graph, regions) -> tuple:
    """(`g` with each checkpointed region's internal values recomputed before their backward
    reads, a log line per region)."""
    eqns, log = list(g.eqns), []
    outs = {v for v in g.outvars if isinstance(v, Var)}
    for k, (made, returned) in enumerate(regions):
        eqns, n = _one(eqns, made, set(returned) | outs)
        log.append(f"rematerialize: region {k}: {n} of {len(made)} equations recomputed")
    if not any(True for _ in regions):
        return g, log
    return Graph(g.constvars, g.consts, g.invars, eqns, g.outvars, g.aliases), log
