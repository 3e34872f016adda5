"""The arena executor: replays a graph with numpy kernels writing into planned memory.

At build time every value that lives in the arena gets its ndarray view once (offsets are fixed),
views of those are taken once, and each equation becomes one step: a closure calling a numpy
kernel with `out=` its planned block. A call then only binds the input arrays, runs the steps and
copies the user's outputs out of the arena. Kernels without an `out=` form (and operands that
need a cast first) run their ordinary numpy kernel and copy the result in: `allocations()` names
them.
"""
from __future__ import annotations

import numpy as np

from ..ir.core import Literal, Var
from .contexts import ContextPool
from .executor import apply, compute_dtypes
from ..backend.lowering import get_lowering
from .memory import VIEW_PRIMS, plan
from . import numpy_kernels  # noqa: F401  (registers the "numpy" lowerings)


def _single_ufunc(e) -> bool:
    """Whether the step is one ufunc call reading each element before writing it (in-place safe)."""
    prim = e.prim
    if not isinstance(prim.impl, np.ufunc) or prim.kind != "elementwise":
        return False
    res = compute_dtypes(e)
    if res is None:
        return False
    compute, out = res
    if out is not e.out.aval.dtype or (compute is not out and out.kind != "b"):
        return False
    for a in e.inputs:
        if isinstance(a, Var) or not a.aval.weak:
            if a.aval.dtype is not compute:
                return False
    return True


class ArenaExecutable:
    """`run(inputs) -> outputs` over one arena; `graph.aliases` outputs are written into inputs.

    The plan, the constants and the persistent outputs are the executable's; the arena and the
    steps bound to it are a context (`_Steps`), one per call running at the same time, so calls
    from several threads do not share memory. Calls writing the same state must be serialized by
    the caller (ember.jit does)."""

    def __init__(self, graph, persistent_outputs=()):
        self.graph = graph
        self.plan = p = plan(graph, set(persistent_outputs), elementwise=_single_ufunc)
        self.persistent = {o: np.empty(graph.outvars[o].aval.shape, graph.outvars[o].aval.dtype.np)
                           for o in p.pinned if o not in graph.aliases}
        self._contexts = ContextPool(lambda: _Steps(self))
        slot = self._contexts.first.slot
        outs = []
        for o, a in enumerate(graph.outvars):
            if isinstance(a, Literal):
                outs.append(("literal", np.asarray(a.value, a.aval.dtype.np)))
            elif o in p.pinned:
                outs.append(("donated" if o in graph.aliases else "persistent", slot[a]))
            elif o in graph.aliases:
                outs.append(("write", slot[a]))
            else:
                outs.append(("copy", slot[a]))
        self.outs = outs

    @property
    def arena(self) -> np.ndarray:
        """The first context's arena (the only one unless calls overlapped)."""
        return self._contexts.first.arena

    @property
    def steps(self) -> list:
        return self._contexts.first.steps

    @property
    def step_eqns(self) -> list:
        return self._contexts.first.step_eqns

    def run(self, inputs):
        ctx = self._contexts.take()
        try:
            return ctx.run(inputs, self.outs)
        finally:
            self._contexts.give(ctx)

    def allocations(self, inputs) -> list:
        """Run the steps once, measuring what each allocates: [(step index, primitive, bytes > 0)].

        Like `run`, this writes the state updates that steps make in place into `inputs`."""
        ctx = self._contexts.take()
        try:
            return ctx.allocations(inputs)
        finally:
            self._contexts.give(ctx)


class _Steps:
    """One context of an ArenaExecutable: its arena, the value slots (`env`) and the steps, each a
    closure calling a numpy kernel that writes into its planned block."""

    def __init__(self, exe: ArenaExecutable):
        graph, p = exe.graph, exe.plan
        self.graph = graph
        raw = np.empty(p.peak + 64, np.uint8)
        start = (-raw.ctypes.data) % 64
        self.arena = raw[start:start + p.peak]
        slot = {}
        for v in graph.constvars + graph.invars:
            slot[v] = len(slot)
        for e in graph.eqns:
            slot[e.out] = len(slot)
        self.slot = slot
        env = self.env = [None] * len(slot)
        for v, c in zip(graph.constvars, graph.consts):
            env[slot[v]] = c
        self.in_slots = [slot[v] for v in graph.invars]
        dynamic = set(graph.invars)
        self.donated = []  # (slot, input position): bound to the input array at each call
        for o, i in p.pinned.items():
            v = graph.outvars[o]
            if o in graph.aliases:
                self.donated.append((slot[v], graph.aliases[o]))
                dynamic.add(v)
            else:
                env[slot[v]] = exe.persistent[o]
        steps, step_eqns = [], []
        for i, e in enumerate(graph.eqns):
            v = e.out
            x = e.inputs[0] if e.inputs else None
            if e.prim in VIEW_PRIMS and isinstance(x, Var) and p.buffer_of[v] is p.buffer_of[x]:
                if x in dynamic:
                    dynamic.add(v)
                    steps.append(self._view_step(e))
                    step_eqns.append(e)
                else:
                    env[slot[v]] = e.prim.impl(env[slot[x]], **e.params)
                continue
            if env[slot[v]] is None and v not in dynamic:
                b = p.buffer_of[v]
                n = int(np.prod(v.aval.shape, dtype=np.int64)) * v.aval.dtype.itemsize
                env[slot[v]] = self.arena[b.offset:b.offset + n].view(v.aval.dtype.np).reshape(v.aval.shape)
            steps.append(self._step(e, i))
            step_eqns.append(e)
        self.steps, self.step_eqns = steps, step_eqns  # the equation each step runs

    # ---- steps
    def _view_step(self, e):
        env, f, params = self.env, e.prim.impl, e.params
        a, o = self.slot[e.inputs[0]], self.slot[e.out]

        def step():
            env[o] = f(env[a], **params)
        return step

    def _step(self, e, i):
        env, slot = self.env, self.slot
        prim = e.prim
        o = slot[e.out]
        ins = e.inputs
        refs = [slot[a] if isinstance(a, Var) else None for a in ins]
        if _single_ufunc(e):
            compute = compute_dtypes(e)[0]
            lits = [None if isinstance(a, Var) else compute.np.type(a.value) for a in ins]
            f = prim.impl
            if len(ins) == 2:
                a, b = refs
                la, lb = lits
                # out passed positionally: a keyword costs a dict per call
                if a is not None and b is not None:
                    return lambda: f(env[a], env[b], env[o])
                if a is not None:
                    return lambda: f(env[a], lb, env[o])
                if b is not None:
                    return lambda: f(la, env[b], env[o])
            if len(ins) == 1 and refs[0] is not None:
                a = refs[0]
                return lambda: f(env[a], env[o])
        fast = get_lowering(prim, "numpy")
        step = fast(self, e, refs, o) if fast is not None else None
        return step if step is not None else self._generic(e, refs, o)

    def _generic(self, e, refs, o):
        """The primitive's own numpy kernel, its result copied into the planned block."""
        env, prim, params = self.env, e.prim, e.params
        avals = [a.aval for a in e.inputs]
        out_aval = e.out.aval
        lits = [None if isinstance(a, Var) else a.value for a in e.inputs]
        cp = np.copyto

        def generic():
            vals = [env[r] if r is not None else lv for r, lv in zip(refs, lits)]
            cp(env[o], apply(prim, vals, avals, params, out_aval), casting="unsafe")
        return generic

    # ---- running
    def _bind(self, inputs):
        env = self.env
        for s, x in zip(self.in_slots, inputs):
            env[s] = x
        for s, i in self.donated:
            env[s] = inputs[i]
        return env

    def run(self, inputs, outs):
        env = self._bind(inputs)
        try:
            for step in self.steps:
                step()
            res = []
            aliases = self.graph.aliases
            for o, (kind, s) in enumerate(outs):
                if kind == "copy":
                    res.append(env[s].copy())
                elif kind == "persistent":
                    res.append(env[s])
                elif kind == "literal":
                    res.append(s.copy())
                elif kind == "write":
                    np.copyto(inputs[aliases[o]], env[s], casting="unsafe")
                    res.append(None)
                else:
                    res.append(None)
            return res
        finally:
            self._unbind()

    def _unbind(self):
        env = self.env
        for s in self.in_slots:
            env[s] = None  # keep no reference to the caller's arrays
        for s, _ in self.donated:
            env[s] = None

    def allocations(self, inputs) -> list:
        """See `ArenaExecutable.allocations`."""
        import tracemalloc
        self._bind(inputs)
        out = []
        tracemalloc.start()
        try:
            for i, (step, e) in enumerate(zip(self.steps, self.step_eqns)):
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                step()
                peak = tracemalloc.get_traced_memory()[1] - before
                if peak > 0:
                    out.append((i, e.prim.name, peak))
        finally:
            tracemalloc.stop()
            self._unbind()
        return out
