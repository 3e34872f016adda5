"""Elementwise fusion: group equations that can run as one loop nest.

A group holds elementwise equations the C renderer supports whose outputs share one shape (inputs
may broadcast, Literals are inlined). Equations join the group of a producer or of a sibling that
reads the same input, unless that would create a cycle between groups (a path leaving a group and
coming back through outside units, other groups counting as one unit each). Values used outside
the group, or returned by the graph, are the group's outputs. Siblings join only through an input of
their own shape (a shared scalar such as a learning rate would otherwise make one group of every
parameter's update, which the multi-tensor kernel does better). The cycle check walks the graph, so
grouping is O(eqns^2) worst case.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.core import Literal, Var
from .c_renderer import eqn_supported


@dataclass
class Group:
    """One fused loop nest: its equations in order, input Vars and output Vars."""

    eqns: list
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    prim = None  # not an equation: the memory planner treats the group as one step

    @property
    def shape(self) -> tuple:
        return self.eqns[0].out.aval.shape

    def __repr__(self) -> str:
        return (f"Group({' '.join(e.prim.name for e in self.eqns)}; {len(self.inputs)} in, "
                f"{len(self.outputs)} out, shape {self.shape})")


def _find(parent: list, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _creates_cycle(a: int, b: int, parent: list, succ: list, groups: dict) -> bool:
    """Whether merging the groups rooted at a and b closes a path through other units.

    Other groups count as single units: a path entering one may leave from any of its members."""
    members = set(groups[a]) | set(groups[b])
    for src, dst in ((a, b), (b, a)):
        stack = [j for i in groups[src] for j in succ[i] if j not in members]
        seen = set(stack)
        while stack:
            i = stack.pop()
            for k in groups.get(_find(parent, i), (i,)):  # the whole unit i belongs to
                if k not in seen and k not in members:
                    seen.add(k)
                    stack.append(k)
            for j in succ[i]:
                if j in members:
                    if _find(parent, j) == dst:
                        return True
                elif j not in seen:
                    seen.add(j)
                    stack.append(j)
    return False


def elementwise_groups(graph, supported=eqn_supported) -> list:
    """Maximal groups of fusible elementwise equations of `graph`, in program order."""
    eqns = graph.eqns
    n = len(eqns)
    producer = {e.out: i for i, e in enumerate(eqns)}
    succ = [[] for _ in range(n)]
    readers: dict = {}
    for i, e in enumerate(eqns):
        for a in e.inputs:
            if isinstance(a, Var) and a in producer:
                succ[producer[a]].append(i)
    ok = [e.prim.kind == "elementwise" and supported(e) for e in eqns]
    parent = list(range(n))
    groups = {i: [i] for i in range(n) if ok[i]}  # root -> members
    for i, e in enumerate(eqns):
        if not ok[i]:
            continue
        cands = []
        for a in e.inputs:
            if isinstance(a, Literal):
                continue
            p = producer.get(a)
            if p is not None and ok[p]:
                cands.append(p)
            if a.aval.shape == e.out.aval.shape:  # siblings fuse to share a full read, not a broadcast one
                cands.extend(j for j in readers.get(a, ()) if ok[j])
        for a in e.inputs:
            if isinstance(a, Var):
                readers.setdefault(a, []).append(i)
        for j in cands:
            if eqns[j].out.aval.shape != e.out.aval.shape:
                continue
            ra, rb = _find(parent, i), _find(parent, j)
            if ra != rb and not _creates_cycle(ra, rb, parent, succ, groups):
                parent[rb] = ra
                groups[ra].extend(groups.pop(rb))
    members: dict = {}
    for i in range(n):
        if ok[i]:
            members.setdefault(_find(parent, i), []).append(i)
    used_outside = {a for i, e in enumerate(eqns) for a in e.inputs if isinstance(a, Var)}
    graph_outs = {v for v in graph.outvars if isinstance(v, Var)}
    groups = []
    for idx in sorted(members.values()):
        g_eqns = [eqns[i] for i in idx]
        defined = {e.out for e in g_eqns}
        ins = []
        for e in g_eqns:
            for a in e.inputs:
                if isinstance(a, Var) and a not in defined and a not in ins:
                    ins.append(a)
        outside = {a for i, e in enumerate(eqns) if _find(parent, i) != _find(parent, idx[0]) or not ok[i]
                   for a in e.inputs if isinstance(a, Var)} & used_outside
        outs = [e.out for e in g_eqns if e.out in outside or e.out in graph_outs]
        groups.append(Group(g_eqns, ins, outs))
    return groups


def schedule(graph, groups: list) -> list:
    """Graph eqns and groups as a list of units (Eqn or Group) in a valid execution order."""
    owner = {id(e): g for g in groups for e in g.eqns}
    units, seen = [], set()
    for e in graph.eqns:
        u = owner.get(id(e), e)
        if id(u) not in seen:
            seen.add(id(u))
            units.append(u)
    produced_by = {}
    for u in units:
        for v in (u.outputs if isinstance(u, Group) else [u.out]):
            produced_by[v] = u
    needs = {id(u): {id(produced_by[a]) for a in (u.inputs if isinstance(u, Group) else u.inputs)
                     if isinstance(a, Var) and a in produced_by} for u in units}
    order, done = [], set()
    while len(order) < len(units):
        ready = next(u for u in units if id(u) not in done and needs[id(u)] <= done)
        order.append(ready)
        done.add(id(ready))
    return order
