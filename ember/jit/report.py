"""Every stage of a jitted function, for reading: `ember.inspect(f, *args)`.

`EMBER_DEBUG` (or `ember.debug(n)` for a block) makes ember.jit print to stderr whenever it
traces, more at each level:

- 1: compile events and fallbacks: one line per trace (why it traced, the executor, units,
  kernels, what runs on the host), one per kernel library compiled (not for cache hits);
- 2: also the IR after each pass (the verifier runs after every pass) and the memory plan;
- 3: also the generated source;
- 4: also per-kernel timing (the step run 3 times on copies of the inputs).

`ember.inspect` returns the whole report (level 4) as an object.
"""
from __future__ import annotations

import sys

from ..ir.printer import print_graph
from .passes import LEVELS, PassManager


class Report:
    """The stages of one trace: traced IR, IR after each pass, the memory plan, the native step
    (fused units, generated C, per-kernel times), the retrace log."""

    def __init__(self, name, traced, stages, plan, explain, native=None):
        self.name, self.traced, self.stages, self.plan, self.explain = name, traced, stages, plan, explain
        self.native = native  # (unit labels, C source, kernel table or None), or None

    def __str__(self) -> str:
        return self.render(4)

    def render(self, level: int = 4) -> str:
        """The report as text, with what EMBER_DEBUG=`level` shows (2: IR and plan, 3: + source,
        4: + kernel times)."""
        out = [f"=== ember.jit: {self.name}", "--- traced IR", self.traced]
        prev = None
        for pname, text in self.stages:
            out += [f"--- after {pname}", text if text != prev else "(unchanged)"]
            prev = text
        out += ["--- memory plan", str(self.plan)]
        if self.native is not None:
            labels, source, table = self.native
            from ..backend.cpu import blas
            out += [f"--- native step: {len(labels)} units; GEMMs by {blas.describe()}"]
            out += [f"  unit {u}: {lab}" for u, lab in enumerate(labels)]
            if level >= 3:
                out += ["--- generated C", source]
            if table and level >= 4:
                out += ["--- native kernels (mean of 3 calls on copies of the inputs)", table]
        if self.explain:
            out += ["--- trace log", *self.explain]
        return "\n".join(out)

    __repr__ = __str__


def stages(graph, level: int, remat=()) -> list:
    """[(pass name, graph text)] after each pass the level runs (and rematerialization, for a
    trace with checkpointed regions)."""
    out = []
    g = PassManager(LEVELS[level]).run(graph, lambda name, g: out.append((name, print_graph(g))))
    if remat:
        from .remat import rematerialize
        g, log = rematerialize(g, remat)
        out.append(("rematerialize (" + "; ".join(x.split(": ", 1)[1] for x in log) + ")", print_graph(g)))
    return out


def _native(entry, leaves):
    exe = entry.exe
    if not hasattr(exe, "kernels"):
        return None
    table = None
    if leaves is not None:
        from ..runtime.profile import kernel_table
        # the profile runs steps: on copies of the inputs, and the gradient buffers `.grad` shows
        # are put back afterwards, so the user's state does not move
        ins = [x.copy() for x in entry.inputs(leaves)]
        saved = {o: a.copy() for o, a in exe.persistent.items()}
        table = kernel_table(exe.profile(ins, repeats=3))
        for o, a in saved.items():
            exe.persistent[o][...] = a
    return [k[0] for k in exe.kernels], exe.source, table


def report(name, traced, entry, explain=(), leaves=None) -> Report:
    """The report of a cached trace (`entry` is the jit cache entry built from `traced`); with
    the call's `leaves`, a native step is also timed kernel by kernel."""
    return Report(name, print_graph(traced.graph, locations=True),
                  stages(traced.graph, entry.opt_level, traced.remat), entry.exe.plan, list(explain),
                  _native(entry, leaves))


def inspect(f, *args, **kwargs) -> Report:
    """Trace `f` (a function or an `ember.jit` of one) at these arguments and show every stage;
    an object with an `__ember_inspect__()` method (a parallel plan) shows itself."""
    if hasattr(f, "__ember_inspect__"):
        return f.__ember_inspect__(*args, **kwargs)
    from . import TRACE_LOCK, Jitted, _signature
    j = f if isinstance(f, Jitted) else Jitted(f)
    leaves, treedef, paths, sig = _signature(args, kwargs)
    with TRACE_LOCK.exclusive():
        ent = j._entry(leaves, treedef, paths, sig, args, kwargs)
        return report(j.__name__, ent.traced, ent, j.explain, leaves)


def dump(rep: Report, level: int = 4) -> None:
    """Print `rep` to stderr as EMBER_DEBUG=`level` shows it."""
    print(rep.render(level), file=sys.stderr, flush=True)


def summary(name: str, entry, why: str) -> str:
    """The one line EMBER_DEBUG=1 prints per trace."""
    exe = entry.exe
    kind = getattr(getattr(exe, "target", None), "name", "numpy arena")
    line = f"ember.jit: {name}: {why}; {kind} executor, {len(exe.graph.eqns)} equations"
    if hasattr(exe, "kernels"):
        host = exe.host_units
        line += f", {len(exe.units)} units, {len(exe.kernels) - len(host)} kernels, {len(host)} on the host"
    return line
