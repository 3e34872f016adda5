"""The memory planner (book ch. 5.4; BE-9, BE-10): every intermediate of a graph in one arena.

Each equation's result is a *value*; a value produced by a view primitive (transpose, slice,
broadcast, reverse, or a reshape of a contiguous value) shares its operand's *buffer*. A buffer
lives from the step that writes it to the last step that reads it or any view of it. Buffers get
offsets in one arena so that no two buffers live at the same time overlap (greedy by size: the
largest buffer first, each at the lowest offset free during its lifetime).

Before offsets are chosen, two rewrites remove buffers altogether:
- *in place*: an elementwise result may take the buffer of an operand of the same shape and dtype
  whose life ends at that step (`y = relu(x)` writes over `x`);
- *pinned*: a graph output written by a compute step goes straight to its destination: a state
  input it overwrites (donation: the update of a parameter is written into the parameter, legal
  when nothing reads the old value afterwards), or a buffer the caller owns (gradients).

`lower_bound` is the most bytes live at any step of the schedule: no arena can be smaller.
"""
from __future__ import annotations

import numpy as np

from ..ir.core import Var
from ..ops import P

ALIGN = 64
VIEW_PRIMS = frozenset({P.reshape, P.transpose, P.slice, P.broadcast_in_dim, P.rev})
# primitives that add into a copy of their first operand: in place, they may write over it only
ACCUMULATE_PRIMS = frozenset({P.scatter_add, P.scatter_add_along_axis})


def nbytes(aval) -> int:
    """The bytes of a value of type `aval`."""
    return int(np.prod(aval.shape, dtype=np.int64)) * aval.dtype.itemsize


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Buffer:
    """One block of memory: in the arena (`offset`), a graph input, or an output destination."""

    __slots__ = ("id", "size", "start", "end", "kind", "index", "offset")

    def __init__(self, id, size, start, kind="arena", index=None):
        self.id, self.size, self.start, self.end = id, size, start, start
        self.kind, self.index, self.offset = kind, index, None  # kind: arena | input | const | output

    def __repr__(self):
        where = f"@{self.offset}" if self.kind == "arena" else f"{self.kind}[{self.index}]"
        return f"Buffer#{self.id}({self.size}B {where} steps {self.start}..{self.end})"


class MemoryPlan:
    """`buffer_of[var]`, the `buffers`, the arena size (`peak`) and the `lower_bound`."""

    def __init__(self, graph, buffer_of, buffers, contiguous, inplace, pinned, n_steps=None):
        self.graph = graph
        self.buffer_of = buffer_of
        self.buffers = buffers
        self.contiguous = contiguous  # var -> whether its layout is C-contiguous in its buffer
        self.inplace = inplace        # eqn index -> the operand whose buffer it writes over
        self.pinned = pinned          # output index -> eqn index writing it at its destination
        arena = [b for b in buffers if b.kind == "arena"]
        self.peak = max((b.offset + b.size for b in arena), default=0)
        n = (len(graph.eqns) if n_steps is None else n_steps) + 1
        live = np.zeros(n + 1, np.int64)
        for b in arena:
            live[b.start] += b.size
            live[b.end + 1] -= b.size
        self.lower_bound = int(np.cumsum(live).max()) if arena else 0

    def arena_buffers(self):
        return [b for b in self.buffers if b.kind == "arena"]

    def __str__(self) -> str:
        arena = sorted(self.arena_buffers(), key=lambda b: b.offset)
        lines = [f"memory plan: arena {self.peak} bytes, lower bound {self.lower_bound} bytes "
                 f"({self.peak / max(self.lower_bound, 1):.3f}x), {len(arena)} buffers, "
                 f"{len(self.inplace)} in-place steps, {len(self.pinned)} outputs written at their destination"]
        for b in arena:
            lines.append(f"  [{b.offset:>10} +{b.size:>9}] steps {b.start:>4}..{b.end:<4}")
        return "\n".join(lines)


def _contiguous_view(prim, params, in_aval, in_contig, out_aval) -> bool | None:
    """Whether a view primitive's result is C-contiguous (None: numpy would have to copy)."""
    if prim is P.reshape:
        return True if in_contig else None
    if prim is P.transpose:
        nontrivial = [p for p, n in zip(params["perm"], in_aval.shape) if n != 1]
        return in_contig and nontrivial == sorted(nontrivial)
    if prim is P.broadcast_in_dim:
        return in_contig and int(np.prod(out_aval.shape)) == int(np.prod(in_aval.shape))
    if prim is P.slice:
        full = all(a == 0 and b == n and s == 1 for a, b, s, n in
                   zip(params["start"], params["stop"], params["step"], in_aval.shape))
        return in_contig and full
    return False  # rev


def unit_outputs(step) -> list:
    """A unit's results: a group's outputs or an equation's out."""
    return step.outputs if step.prim is None else [step.out]


def plan(graph, persistent_outputs=(), elementwise=None, steps=None, contiguous_inputs=False) -> MemoryPlan:
    """Plan the memory of `graph` run in equation order.

    `persistent_outputs`: output positions whose destination the caller owns across calls (they
    may be written directly); `graph.aliases` names outputs that overwrite an input. `steps`
    replaces the equations by another order of units: an equation, or a fused group (`prim` None,
    `inputs`, `outputs`) whose internal values never reach memory. `contiguous_inputs`: the
    executor hands the graph C-contiguous inputs (a reshape of one is then a view)."""
    # one function on purpose (over 100 lines): the passes (views, pinning, in-place reuse,
    # lifetimes, offsets) each read the tables the earlier ones built
    eqns = graph.eqns if steps is None else steps
    n = len(eqns)
    buffers, buffer_of, contig = [], {}, {}
    members = {}  # buffer id -> the values living in it

    def new(size, start, kind="arena", index=None):
        b = Buffer(len(buffers), size, start, kind, index)
        buffers.append(b)
        return b

    def put(v, b):
        buffer_of[v] = b
        members.setdefault(b.id, []).append(v)

    for i, v in enumerate(graph.constvars):
        put(v, new(nbytes(v.aval), -1, "const", i))
        contig[v] = False  # constants are whatever arrays the trace captured
    for i, v in enumerate(graph.invars):
        put(v, new(nbytes(v.aval), -1, "input", i))
        contig[v] = contiguous_inputs  # otherwise inputs may be views with any strides
    view_of = {}
    for i, e in enumerate(eqns):
        x = e.inputs[0] if e.inputs else None
        if e.prim is not None and e.prim in VIEW_PRIMS and isinstance(x, Var):
            c = _contiguous_view(e.prim, e.params, x.aval, contig[x], e.out.aval)
            if c is not None:
                put(e.out, buffer_of[x])
                contig[e.out] = c
                view_of[e.out] = x
                continue
        for v in unit_outputs(e):
            put(v, new(_aligned(nbytes(v.aval)), i))
            contig[v] = True

    # lifetimes: a read of a value (or of a view of it) at step i keeps its buffer to i
    for i, e in enumerate(eqns):
        for a in e.inputs:
            if isinstance(a, Var):
                b = buffer_of[a]
                b.end = max(b.end, i)
    for a in graph.outvars:
        if isinstance(a, Var):
            buffer_of[a].end = n

    producer = {v: i for i, e in enumerate(eqns) for v in unit_outputs(e)}
    elementwise = elementwise or (lambda e: e.prim is None or e.prim.kind == "elementwise")

    # pinned outputs: the producing step writes at the destination
    pinned = {}
    dest_taken = set()
    aliases = graph.aliases
    for o, a in enumerate(graph.outvars):
        if not isinstance(a, Var) or a not in producer or a in view_of or a in dest_taken:
            continue
        i = producer[a]
        b = buffer_of[a]
        if o in aliases:
            src = buffer_of[graph.invars[aliases[o]]]
            e = eqns[i]
            reads_old = [x for x in e.inputs if isinstance(x, Var) and buffer_of[x] is src]
            accumulates = e.prim is not None and e.prim in ACCUMULATE_PRIMS
            legal = src.end < i or (src.end == i and elementwise(e) and
                                    not (accumulates and any(isinstance(x, Var) and buffer_of[x] is src
                                                             for x in e.inputs[1:])) and
                                    all(x is graph.invars[aliases[o]] and x.aval.shape == a.aval.shape
                                        for x in reads_old))
            if not legal:
                continue
        elif o not in persistent_outputs:
            continue
        if len(members[b.id]) > 1:
            continue  # other values view this buffer: keep it in the arena
        b.kind, b.index = "output", o
        pinned[o] = i
        dest_taken.add(a)

    # in place: an elementwise step writes over an operand whose buffer dies at that step
    inplace = {}
    for i, e in enumerate(eqns):
        if not elementwise(e):
            continue
        for out in unit_outputs(e):
            b = buffer_of[out]
            if b.kind != "arena":
                continue
            operands = e.inputs[:1] if e.prim is not None and e.prim in ACCUMULATE_PRIMS else e.inputs
            for x in operands:
                if not isinstance(x, Var):
                    continue
                bx = buffer_of[x]
                same = getattr(e, "same_tensor", None)  # a multi-tensor step: pairs of one tensor only
                if (bx.kind == "arena" and bx.end == i and x not in view_of and bx.size == b.size
                        and x.aval.shape == out.aval.shape and x.aval.dtype is out.aval.dtype
                        and (same is None or same(out, x))
                        and sum(1 for y in e.inputs if isinstance(y, Var) and buffer_of[y] is bx) == 1):
                    bx.end = b.end
                    b.kind = "dead"
                    for v in members.pop(b.id):  # the result and its views
                        put(v, bx)
                    inplace.setdefault(i, x)
                    break
    buffers = [b for b in buffers if b.kind != "dead"]

    # offsets: largest first, lowest offset free during the buffer's lifetime
    placed = []
    for b in sorted((b for b in buffers if b.kind == "arena"), key=lambda b: (-b.size, b.start)):
        clash = sorted((p.offset, p.offset + p.size) for p in placed if p.start <= b.end and b.start <= p.end)
        off = 0
        for lo, hi in clash:
            if off + b.size <= lo:
                break
            off = max(off, hi)
        b.offset = off
        placed.append(b)
    return MemoryPlan(graph, buffer_of, buffers, contig, inplace, pinned, n)


def check_no_overlap(p: MemoryPlan) -> None:
    """Raise AssertionError if two arena buffers live at the same time share a byte (BE-10)."""
    arena = p.arena_buffers()
    for i, a in enumerate(arena):
        for b in arena[i + 1:]:
            if a.start <= b.end and b.start <= a.end:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)

