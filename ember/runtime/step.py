"""A whole jitted graph as one step over one arena, for any target (BE-16, sink mode).

`StepExecutable(graph, target)` does the target-independent half of compiling a step:

1. forms units (`units_of`: fused elementwise groups, row groups, multi-tensor groups, single
   equations; what may fuse is the target's `fusible` rule);
2. plans their values in one arena (`memory.plan`; a group's internal values never reach
   memory; the caller's results are written straight into arrays of their own);
3. places every value (`layout.Ref`: arena offset or io slot, element offset, strides; views
   are Refs over their operand, free on every target);
4. hands units and places to the target's compiler, which lowers what it can;
5. runs: the target's kernels in ranges (`Program.launch`), with the units it did not lower run
   on the host between them (`host.run`, numpy, CMU-4: "ops it lacks fall back") and named in
   the kernel table and in `ember.inspect`.

`io` holds the graph's inputs, its constants and the caller-owned outputs (gradients); state
updates are written straight into their inputs. With nothing on the host, a call is one launch.
"""
from __future__ import annotations

import ctypes
import functools
import sys
import time
import weakref

import numpy as np

from .._core.state import get_num_threads
from ..ir.core import Literal, Var
from ..ops import P
from ..ops.indexing import check_bounds
from . import host
from .contexts import ContextPool
from .fusion import RowGroup
from .layout import Ref
from .memory import ACCUMULATE_PRIMS, VIEW_PRIMS, nbytes, plan
from .units import Epilogue, units_of

POOL_MIN = 1 << 20    # results at least this large are recycled once the caller drops them
# indices read straight from a graph input are checked before the step changes any state
_CHECK_AS = {P.gather: "index", P.scatter_add: "index_add", P.take_along_axis: "take_along_axis",
             P.scatter_add_along_axis: "scatter_add_along_axis"}


def _in_place_ok(u) -> bool:
    """Units that may write over an operand whose buffer dies with them: fused groups,
    elementwise equations, and scatter_add over its base (`plan` offers it operand 0 only)."""
    if isinstance(u, (RowGroup, Epilogue)):  # a later row (tile) may still read the operand
        return False
    return u.prim is None or u.prim.kind == "elementwise" or u.prim in ACCUMULATE_PRIMS


class _Context:
    """One call's working memory (see `ember.runtime.contexts`)."""

    __slots__ = ("map", "arena", "arena_ptr", "io", "ctx", "pool", "__weakref__")


class StepExecutable:
    """`run(inputs) -> outputs`: the same contract as ArenaExecutable."""

    def __init__(self, graph, target, persistent_outputs=()):
        self.graph, self.target = graph, target
        self.units = units = units_of(graph, target.fusible, epilogue=target.epilogue)
        # results the caller gets (not state, not gradients) are written straight into a new
        # array at each call, as the caller would otherwise copy them out of the arena
        fresh = {o for o, a in enumerate(graph.outvars) if isinstance(a, Var) and o not in graph.aliases
                 and o not in persistent_outputs}
        self.plan = p = plan(graph, set(persistent_outputs) | fresh, steps=units, contiguous_inputs=True,
                             elementwise=_in_place_ok)
        self.n_in, n_const = len(graph.invars), len(graph.constvars)
        persistent = sorted(o for o in p.pinned if o not in graph.aliases)
        self.io_index = {o: self.n_in + n_const + j for j, o in enumerate(persistent)}
        self.refs = self._place(units)
        # a view kept in its operand's memory is no work on any target: the target sees None
        self.program = prog = target.compile([None if self.is_view(u) else u for u in units], self.refs, graph)
        self.source = prog.source
        self.schedule, rows = self._schedule(prog)
        self._kernel_slots = [k for k, _ in rows]
        self.kernels = [row for _, row in rows]
        self._index_checks = self._input_checks()
        self.n_io = self.n_in + n_const + len(persistent)
        self.consts = [np.ascontiguousarray(c, v.aval.dtype.np) for v, c in zip(graph.constvars, graph.consts)]
        self.persistent = {o: np.empty(graph.outvars[o].aval.shape, graph.outvars[o].aval.dtype.np)
                           for o in persistent if o not in fresh}
        self._fresh = [(o, self.io_index[o], graph.outvars[o].aval.shape, graph.outvars[o].aval.dtype.np)
                       for o in persistent if o in fresh]
        self._slot_output = {slot: o for o, slot in self.io_index.items()}
        self.calls = 0
        self._seen = [None] * self.n_in  # per input: (weakref to last call's array, its address)
        self.outs = self._result_kinds(fresh)
        self._state_inputs = set(graph.aliases.values())
        self._contexts = ContextPool(self._context)

    # ---- building
    def _place(self, units) -> dict:
        """Var -> Ref for every value the units read or write outside a group."""
        graph, p = self.graph, self.plan
        n_in = self.n_in

        def base_ref(v):
            b = p.buffer_of[v]
            if b.kind == "arena":
                return Ref.whole("arena", b.offset, v.aval)
            if b.kind == "input":
                return Ref.whole("io", b.index, v.aval)
            if b.kind == "const":
                return Ref.whole("io", n_in + b.index, v.aval)
            o = b.index  # an output written at its destination
            return Ref.whole("io", graph.aliases[o] if o in graph.aliases else self.io_index[o], v.aval)
        refs = {v: base_ref(v) for v in graph.constvars + graph.invars}
        for u in units:
            if u.prim is None:
                for v in u.outputs:
                    refs[v] = base_ref(v)
                continue
            if self.is_view(u):
                refs[u.out] = refs[u.inputs[0]].view(u.prim, u.params, u.out.aval.shape)
            else:
                refs[u.out] = base_ref(u.out)
        return refs

    def is_view(self, u) -> bool:
        """Whether unit `u` is a view sharing its operand's memory (no work on any target)."""
        return u.prim in VIEW_PRIMS and isinstance(u.inputs[0], Var) and \
            self.plan.buffer_of[u.out] is self.plan.buffer_of[u.inputs[0]]

    def _schedule(self, prog) -> tuple:
        """[("launch", a, b) | ("host", unit)] in order, and the kernel rows of both kinds:
        (label, C lines or None, flops, bytes, argument Refs)."""
        sched, rows = [], []
        for u, unit in enumerate(self.units):
            if prog.native[u]:
                a, b = prog.kernel_of[u]
                if a == b:
                    continue
                if sched and sched[-1][0] == "launch" and sched[-1][2] == a:
                    sched[-1] = ("launch", sched[-1][1], b)
                else:
                    sched.append(("launch", a, b))
                rows += [(k, prog.rows[k]) for k in range(a, b)]
            elif not self.is_view(unit):
                outs = unit.outputs if unit.prim is None else [unit.out]
                ins = unit.inputs
                traffic = sum(nbytes(v.aval) for v in list(ins) + list(outs) if isinstance(v, Var))
                sched.append(("host", unit))
                rows.append((None, (host.label(unit), None, 0, traffic, [])))
        return sched, rows

    def _input_checks(self) -> list:
        """(Var, check) for index operands that are graph inputs: checked before the step runs."""
        refs, n_in = self.refs, self.n_in

        def from_input(a):
            return isinstance(a, Var) and refs[a].where == "io" and refs[a].at < n_in
        checks = [(e.inputs[1], functools.partial(check_bounds, n=e.inputs[0].aval.shape[e.params["axis"]],
                                                  op=_CHECK_AS[e.prim]))
                  for e in self.graph.eqns if e.prim in _CHECK_AS and from_input(e.inputs[1])]
        checks += [(e.inputs[0], functools.partial(e.prim.impl, **e.params)) for e in self.graph.eqns
                   if e.prim is P.check_classes and from_input(e.inputs[0])]
        return checks

    def _result_kinds(self, fresh) -> list:
        """What `run` returns per output, decided once."""
        graph, p, outs = self.graph, self.plan, []
        for o, a in enumerate(graph.outvars):
            if isinstance(a, Literal):
                outs.append(("literal", np.asarray(a.value, a.aval.dtype.np)))
            elif o in fresh and o in p.pinned:
                outs.append(("fresh", o))
            elif o in self.persistent:
                outs.append(("persistent", self.persistent[o]))
            elif o in graph.aliases:
                outs.append(("donated", None) if o in p.pinned else ("write", (a, graph.aliases[o])))
            else:
                outs.append(("copy", a))
        return outs

    def _context(self) -> _Context:
        """A call's own arena, `io` table (constants and persistent outputs filled in), launch
        context (status word, scratch) and recycled results."""
        c = _Context()
        c.map, c.arena = self.target.allocate(self.plan.peak)
        c.arena_ptr = c.arena.ctypes.data
        c.io = (ctypes.c_void_p * self.n_io)()
        for j, a in enumerate(self.consts):
            c.io[self.n_in + j] = a.ctypes.data
        for o, a in self.persistent.items():
            c.io[self.io_index[o]] = a.ctypes.data
        c.ctx = self.program.new_context()
        c.pool = {}
        if c.ctx is not None:
            weakref.finalize(c, self.program.free_context, c.ctx)
        return c

    @property
    def arena(self) -> np.ndarray:
        """The first context's arena (the only one unless calls overlapped)."""
        return self._contexts.first.arena

    # ---- running
    def _array(self, v, inputs, new, ctx) -> np.ndarray:
        """A numpy view of value `v` during or after a call: in the arena, an input, a constant or
        an output (`new`: this call's fresh output arrays)."""
        ref = self.refs[v]
        dt = v.aval.dtype.np
        k = ref.at
        if ref.where == "arena":
            flat = np.frombuffer(ctx.map, np.uint8)[k:]
        else:
            if k < self.n_in:
                src = inputs[k]
            elif k < self.n_in + len(self.consts):
                src = self.consts[k - self.n_in]
            else:
                o = self._slot_output[k]
                src = new[o] if o in new else self.persistent[o]
            flat = src.reshape(-1).view(np.uint8)
        item = dt.itemsize
        start = ref.offset * item
        return np.lib.stride_tricks.as_strided(flat[start:].view(dt), ref.shape, [s * item for s in ref.strides])

    def _output(self, ctx, o, shape, dtype) -> np.ndarray:
        """An array for result `o`: one returned earlier that nothing references any more, else a
        new one. Large fresh arrays cost a page fault per page at every call; recycling the
        previous results (at most two per output and context) keeps that out of the step."""
        pool = ctx.pool.setdefault(o, [])
        for arr in pool:
            if sys.getrefcount(arr) <= 3:  # the pool's list, this loop and getrefcount's argument
                return arr
        arr = np.empty(shape, dtype)
        if arr.nbytes >= POOL_MIN:
            pool.append(arr)
            if len(pool) > 2:
                pool.pop(0)
        return arr

    def run(self, inputs, prof=None):
        """Run one call. Calls from several threads at once each use a context of their own;
        calls writing the same state must be serialized by the caller (ember.jit does)."""
        ctx = self._contexts.take()
        try:
            return self._run(ctx, inputs, prof)
        finally:
            for k in range(len(inputs)):
                ctx.io[k] = None
            self._contexts.give(ctx)

    def _launch(self, ctx, a, b, prof) -> None:
        self.program.launch(ctx.ctx, ctx.arena_ptr, ctx.io, get_num_threads(), prof, a, b)
        status, x, y = self.program.status(ctx.ctx)
        if status == 1:
            raise IndexError(f"index {x} is out of bounds for a dimension of size {y} "
                             "(computed inside the jitted step)")
        if status:
            raise MemoryError(f"the native step could not allocate {x} bytes of scratch memory")

    def _run(self, ctx, inputs, prof):
        if len(inputs) != self.n_in:  # the kernels would read past the io table
            raise ValueError(f"the step takes {self.n_in} inputs, got {len(inputs)}")
        io = ctx.io
        fixed = []
        seen = self._seen
        for k, x in enumerate(inputs):
            hit = seen[k]
            # the same array as last call (a weight): its address (an array's data moves only by
            # ndarray.resize, which refuses while a tensor or the caller's list still holds it)
            if hit is not None and hit[0]() is x:
                io[k] = hit[1]
                continue
            if not x.flags.c_contiguous:
                c = np.ascontiguousarray(x)
                fixed.append((k, x, c))
                x = c
            elif x.nbytes:  # (weak: the step keeps no input alive)
                try:
                    seen[k] = (weakref.ref(x), x.ctypes.data)
                except TypeError:
                    pass
            io[k] = x.ctypes.data
        if fixed:
            inputs = list(inputs)
            for k, _, c in fixed:
                inputs[k] = c
        for v, check in self._index_checks:
            check(self._array(v, inputs, {}, ctx))
        new = {}
        for o, slot, shape, dtype in self._fresh:
            arr = new[o] = self._output(ctx, o, shape, dtype)
            io[slot] = arr.ctypes.data
        kprof = None if prof is None else prof[:len(self.program.rows)]
        for item in self.schedule:
            if item[0] == "launch":
                self._launch(ctx, item[1], item[2], kprof)
            else:
                t = time.perf_counter()
                host.run(item[1], lambda v: self._array(v, inputs, new, ctx))
                if prof is not None:
                    prof[self._host_slot[id(item[1])]] += time.perf_counter() - t
        self.calls += 1
        res = []
        for kind, x in self.outs:
            if kind == "fresh":
                res.append(new[x])
            elif kind == "persistent":
                res.append(x)
            elif kind == "donated":
                res.append(None)
            elif kind == "literal":
                res.append(x.copy())
            elif kind == "write":
                np.copyto(inputs[x[1]], self._array(x[0], inputs, new, ctx), casting="unsafe")
                res.append(None)
            else:
                res.append(np.array(self._array(x, inputs, new, ctx)))
        for k, x, c in fixed:  # a non-contiguous state input: its update goes back into the caller's view
            if k in self._state_inputs:
                np.copyto(x, c)
        return res

    @functools.cached_property
    def _host_slot(self) -> dict:
        """id(host unit) -> its slot in a profile array (after the target's kernels)."""
        hosts = [item[1] for item in self.schedule if item[0] == "host"]
        n = len(self.program.rows)
        return {id(u): n + j for j, u in enumerate(hosts)}

    def profile(self, inputs, repeats: int = 10) -> list:
        """[(label, seconds per call, flops, bytes)] per kernel and host unit, over `repeats` calls."""
        n = len(self.program.rows)
        prof = np.zeros(n + len(self._host_slot), np.float64)
        for _ in range(repeats):
            self.run(inputs, prof)
        out, hosts = [], iter(range(n, len(prof)))
        for k, (label, _, fl, nb, _) in zip(self._kernel_slots, self.kernels):
            t = prof[k if k is not None else next(hosts)]
            out.append((label, t / repeats, fl, nb))
        return out

    @property
    def host_units(self) -> list:
        """Labels of the units this step runs on the host (what the target did not lower)."""
        return [host.label(item[1]) for item in self.schedule if item[0] == "host"]

    def host_reasons(self) -> str:
        """What runs on the host and why, grouped by reason: "convert, add (values of dtype float16)"."""
        index = {id(u): k for k, u in enumerate(self.units)}
        by_why: dict = {}
        for item in self.schedule:
            if item[0] == "host":
                why = self.program.why[index[id(item[1])]]
                names = by_why.setdefault(why, {})
                names.update(dict.fromkeys(host.label(item[1])[len("host: "):].split()))
        return "; ".join(f"{', '.join(names)} ({why})" for why, names in by_why.items())
