"""Elementwise fusion: group equations that can run as one loop nest.

A group holds elementwise equations the target can fuse (its `fusible`) whose outputs share one shape (inputs
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
from ..ops import P
from .memory import unit_outputs


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


def elementwise_groups(graph, supported) -> list:
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
    return _toposort(units)


# ---------------------------------------------------------------- row groups
ROW_REDUCTIONS = frozenset({P.reduce_sum, P.reduce_max, P.reduce_min})


def _ins(u) -> list:
    return [a for a in u.inputs if isinstance(a, Var)]


class RowGroup:
    """Units that run row by row in one loop (BE-1: a softmax or a layer norm, forward and
    backward, as one kernel). The key (K, R) splits a shape K + R into rows K and a row R:
    members are row reductions (K + R -> K), elementwise groups of shape K + R (vectors) or
    K (one scalar per row, size-1 dims allowed after K), views between the two, and column
    reductions (K + R -> R), which add each thread's rows into its own partial sums, combined
    in thread order after the loop. Values no other unit reads stay inside a row: scalars in
    locals, vectors in a per-thread scratch row."""

    prim = None

    def __init__(self, key: tuple, members: list, roles: list, inputs: list, outputs: list):
        self.key, self.members, self.roles = key, members, roles  # roles: row_role of each member
        self.inputs, self.outputs = inputs, outputs
        self.eqns = [e for u in members for e in (u.eqns if u.prim is None else [u])]

    def __repr__(self) -> str:
        parts = " | ".join(" ".join(e.prim.name for e in u.eqns) if u.prim is None else u.prim.name
                           for u in self.members)
        return f"RowGroup(rows {self.key[0]} x {self.key[1]}: {parts})"


def row_role(u, key: tuple) -> str | None:
    """What unit `u` is in a row group with `key`: "vec", "scalar", "rowred", "colred", "view" or None."""
    K, R = key
    F = K + R

    def scalar_shape(s):
        return tuple(s) == K or tuple(s) == K + (1,) * len(R)
    if isinstance(u, Group):
        s = tuple(u.shape)
        return "vec" if s == F else "scalar" if scalar_shape(s) else None
    if u.prim is None:
        return None
    prim = u.prim
    if prim in ROW_REDUCTIONS and tuple(u.inputs[0].aval.shape) == F:
        axes = tuple(sorted(u.params["axes"]))
        if axes == tuple(range(len(K), len(F))):
            return "rowred"
        if axes == tuple(range(len(K))):
            return "colred"
        return None
    x = u.inputs[0] if u.inputs else None
    if not isinstance(x, Var):
        return None
    if prim is P.reshape and scalar_shape(x.aval.shape) and scalar_shape(u.out.aval.shape):
        return "view"
    if prim is P.broadcast_in_dim and tuple(u.out.aval.shape) == F and scalar_shape(x.aval.shape) and \
            tuple(u.params["dims"]) == tuple(range(len(x.aval.shape))):
        return "view"
    return None


def _row_key(u) -> tuple | None:
    """(K, R) of a row reduction (reduced axes trailing, K and R not empty, R > 1 element)."""
    if u.prim is None or u.prim not in ROW_REDUCTIONS:
        return None
    s = tuple(u.inputs[0].aval.shape)
    axes = tuple(sorted(u.params["axes"]))
    if not axes or axes[0] == 0 or axes != tuple(range(axes[0], len(s))):
        return None
    K, R = s[:axes[0]], s[axes[0]:]
    n_r = 1
    for d in R:
        n_r *= d
    return (K, R) if n_r > 1 and 0 not in K else None


def _reads_as_column(u, v, F: tuple) -> bool:
    """Whether vector group `u` reads `v` with numpy's broadcasting, which lines v's dims up with
    F's last ones: a value of the rows' shape K read so is a column vector there (K equal to R's
    trailing dims), not one scalar per row."""
    return isinstance(u, Group) and tuple(u.shape) == F and v in u.inputs and len(v.aval.shape) < len(F)


def _column_read(units, c, r, members, role, key) -> bool:
    """Whether unit `c` (role `r`) and the group's members would meet as a per-row value read as a
    column vector (`_reads_as_column`): such a unit stays out of the group."""
    F = key[0] + key[1]
    if r == "vec":
        outs = {v for m in members if role[m] != "vec" for v in unit_outputs(units[m])}
        return any(_reads_as_column(units[c], a, F) for a in _ins(units[c]) if a in outs)
    return any(_reads_as_column(units[m], v, F) for m in members if role[m] == "vec"
               for v in unit_outputs(units[c]))


def row_groups(graph, units: list) -> list:
    """`units` with row-wise neighbourhoods of row reductions merged into RowGroups, reordered."""
    n = len(units)
    producer = {v: i for i, u in enumerate(units) for v in unit_outputs(u)}
    readers: dict = {}
    for i, u in enumerate(units):
        for a in _ins(u):
            readers.setdefault(a, []).append(i)
    succ = [sorted({j for v in unit_outputs(u) for j in readers.get(v, ())}) for u in units]
    parent = list(range(n))
    groups: dict = {}  # root -> member unit indices
    role: dict = {}
    taken = set()
    for seed in range(n):
        key = _row_key(units[seed])
        if key is None or seed in taken:
            continue
        groups[seed] = [seed]
        role[seed] = "rowred"
        taken.add(seed)
        queue = [seed]
        while queue:
            i = queue.pop()
            nbrs = [producer[a] for a in _ins(units[i]) if a in producer]
            if role[i] != "colred":  # nothing inside a row may read a column sum
                nbrs += succ[i]
            for c in nbrs:
                if c in taken:
                    continue
                r = row_role(units[c], key)
                if r is None or (r == "colred" and c not in succ[i]):
                    continue
                root = _find(parent, seed)
                members = groups[root]
                if _column_read(units, c, r, members, role, key):
                    continue
                cols = {v for m in members if role[m] == "colred" for v in unit_outputs(units[m])}
                if any(a in cols for a in _ins(units[c])):
                    continue
                if r == "colred" and any(j in members for j in succ[c]):
                    continue
                groups[c] = [c]
                if _creates_cycle(root, c, parent, succ, groups):
                    del groups[c]
                    continue
                parent[c] = root
                members.extend(groups.pop(c))
                role[c] = r
                taken.add(c)
                queue.append(c)
    graph_outs = {v for v in graph.outvars if isinstance(v, Var)}
    out_units, placed = {}, {}
    for root, idx in groups.items():
        if sum(role[i] != "view" for i in idx) < 2:
            continue
        idx = sorted(idx)
        inside = set(idx)
        # a view read outside also runs as its own (free) unit after the group, and so does
        # any view it reads
        views_out = {i for i in idx if role[i] == "view" and
                     (units[i].out in graph_outs or any(j not in inside for j in readers.get(units[i].out, ())))}
        grow = list(views_out)
        while grow:
            p = producer.get(units[grow.pop()].inputs[0])
            if p in inside and role[p] == "view" and p not in views_out:
                views_out.add(p)
                grow.append(p)
        views_out = sorted(views_out)
        defined = {v for i in idx for v in unit_outputs(units[i])}
        ins = list(dict.fromkeys(a for i in idx for a in _ins(units[i]) if a not in defined))
        used_outside = {a for j, u in enumerate(units) if j not in inside for a in _ins(u)}
        used_outside |= {units[i].inputs[0] for i in views_out}
        outs = [v for i in idx if role[i] != "view" for v in unit_outputs(units[i])
                if v in used_outside or v in graph_outs]
        rg = RowGroup(_row_key(units[root]), [units[i] for i in idx], [role[i] for i in idx], ins, outs)
        for i in idx:
            placed[i] = rg
        out_units[id(rg)] = [units[i] for i in views_out]
    if not out_units:
        return units
    new = []
    emitted = set()
    for i, u in enumerate(units):
        rg = placed.get(i)
        if rg is None:
            new.append(u)
        elif id(rg) not in emitted:
            emitted.add(id(rg))
            new.append(rg)
            new.extend(out_units[id(rg)])
    return _toposort(new)


def _toposort(units: list) -> list:
    """`units` in an order where every value is produced before it is read (stable otherwise)."""
    produced_by = {v: id(u) for u in units for v in unit_outputs(u)}
    needs = {id(u): {produced_by[a] for a in _ins(u) if a in produced_by} - {id(u)} for u in units}
    order, done, pending = [], set(), list(units)
    while pending:
        k = next(k for k, u in enumerate(pending) if needs[id(u)] <= done)
        u = pending.pop(k)
        order.append(u)
        done.add(id(u))
    return order
