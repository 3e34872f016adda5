"""A graph as units: the runtime's schedule, the same for every target.

A unit is a fused elementwise `Group`, a `RowGroup` (a softmax or a layer norm as one loop over
rows), a `MultiGroup` (the same arithmetic on many tensors: an optimizer's per-parameter updates
as one kernel), an `Epilogue` (a GEMM whose result only an elementwise group reads, the group
computed as the GEMM stores each tile: an int8 layer's requantization), or a single equation.
`units_of` forms them; which ones fuse depends on the target's `fusible` and `epilogue` rules.
Targets lower units; the memory planner lays their values out.
"""
from __future__ import annotations

from ..ir.core import Literal, Var, literal_key, params_key
from .fusion import Group, elementwise_groups, row_groups, schedule
from .layout import prod


class MultiGroup:
    """Groups doing the same arithmetic on different tensors (an optimizer's update of each
    parameter) as one multi-tensor kernel: one flat index space over all of their elements."""

    prim = None

    def __init__(self, groups: list):
        self.groups = groups
        self.eqns = [e for g in groups for e in g.eqns]
        self.inputs = list(dict.fromkeys(v for g in groups for v in g.inputs))
        self.outputs = [v for g in groups for v in g.outputs]
        self._member = {v: i for i, g in enumerate(groups) for v in g.outputs + g.inputs}

    def same_tensor(self, out, x) -> bool:
        """Whether `out` may overwrite `x` (both belong to one member)."""
        return self._member.get(out) == self._member.get(x)

    def __repr__(self) -> str:
        return f"MultiGroup({len(self.groups)} x {self.groups[0]!r})"


class Epilogue:
    """Equation `op` (a GEMM) and the elementwise `group` that is the only reader of its result,
    as one unit: the result never reaches memory; the group runs on each tile of it."""

    prim = None

    def __init__(self, op, group: Group):
        self.op, self.group = op, group
        self.eqns = [op] + list(group.eqns)
        self.inputs = list(dict.fromkeys([a for a in op.inputs if isinstance(a, Var)] +
                                         [v for v in group.inputs if v is not op.out]))
        self.outputs = list(group.outputs)

    def __repr__(self) -> str:
        return f"Epilogue({self.op.prim.name} -> {self.group!r})"


def _epilogues(graph, units: list, accepts) -> list:
    """Units with each GEMM the target `accepts` merged with the one Group reading its result
    (at the group's place: everything the group reads is ready by then)."""
    readers: dict = {}
    for i, u in enumerate(units):
        for a in u.inputs:
            if isinstance(a, Var):
                readers.setdefault(a, set()).add(i)
    outs = {v for v in graph.outvars if isinstance(v, Var)}
    merged, drop = {}, set()
    for i, u in enumerate(units):
        if u.prim is None or u.out in outs or not accepts(u):
            continue
        rd = readers.get(u.out, set())
        if len(rd) != 1:
            continue
        j = next(iter(rd))
        g = units[j]
        if type(g) is Group and j not in merged and tuple(g.shape) == tuple(u.out.aval.shape) \
                and u.out not in g.outputs:
            merged[j] = Epilogue(u, g)
            drop.add(i)
    return [merged.get(i, u) for i, u in enumerate(units) if i not in drop]


def _arith_key(g: Group, size: int):
    """What a group computes, independent of which tensors and of their size (None: not batchable)."""
    pos = {}
    ins = []
    for k, v in enumerate(g.inputs):
        n = prod(v.aval.shape)
        if n not in (1, size):
            return None  # a broadcast that is neither full nor one element
        pos[v] = ("in", k)
        ins.append((v.aval.dtype.name, n == 1))
    body = []
    for n, e in enumerate(g.eqns):
        args = tuple(literal_key(a) if isinstance(a, Literal) else pos[a] for a in e.inputs)
        try:
            params = params_key(e.params)
        except TypeError:
            return None
        body.append((e.prim.name, params, args, e.out.aval.dtype.name))
        pos[e.out] = ("t", n)
    return tuple(ins), tuple(body), tuple(pos[v] for v in g.outputs)


def _multi_tensor(graph, units: list) -> list:
    """Batch groups that compute the same thing on different tensors and whose results only leave
    the graph (optimizer updates) into one MultiGroup each, placed where the last of them was."""
    readers = {}
    for e in graph.eqns:
        for a in e.inputs:
            if isinstance(a, Var):
                readers.setdefault(a, set()).add(id(e))
    by_key = {}
    for u in units:
        if not isinstance(u, Group):
            continue
        own = {id(e) for e in u.eqns}
        if any(readers.get(v, set()) - own for v in u.outputs):
            continue
        size = prod(u.shape)
        if size < 2:
            continue
        key = _arith_key(u, size)
        if key is not None:
            by_key.setdefault(key, []).append(u)
    out = list(units)
    for (ins, _, _), members in by_key.items():
        full = [g.inputs[k] for g in members for k, (_, scalar) in enumerate(ins) if not scalar]
        if len(members) < 2 or len(full) != len(set(full)):
            continue
        m = MultiGroup(members)
        ids = {id(g) for g in members}
        last = max(i for i, u in enumerate(out) if id(u) in ids)
        out[last] = m
        out = [u for u in out if id(u) not in ids]
    return out


def units_of(graph, fusible, multi_tensor: bool = True, epilogue=None) -> list:
    """The graph as units in execution order: fused Groups, RowGroups, Epilogues, MultiGroups and
    equations (`epilogue(eqn)`: whether the target runs an elementwise group in eqn's stores)."""
    units = row_groups(graph, schedule(graph, elementwise_groups(graph, fusible)))
    if epilogue is not None:
        units = _epilogues(graph, units, epilogue)
    return _multi_tensor(graph, units) if multi_tensor else units
