"""Every stage of a jitted function, for reading: `ember.inspect(f, *args)`.

With `EMBER_DEBUG=2` (or `ember.debug(2)`), ember.jit prints the same report to stderr whenever
it traces; with `EMBER_DEBUG=1` it runs the IR verifier after every pass.
"""
from __future__ import annotations

import sys

from .._core import blas
from ..ir.printer import print_graph
from .passes import LEVELS, PassManager


class Report:
    """The stages of one trace: traced IR, IR after each pass, the memory plan, the native step
    (fused units, generated C, per-kernel times), the retrace log."""

    def __init__(self, name, traced, stages, plan, explain, native=None):
        self.name, self.traced, self.stages, self.plan, self.explain = name, traced, stages, plan, explain
        self.native = native  # (unit labels, C source, kernel table or None), or None

    def __str__(self) -> str:
        out = [f"=== ember.jit: {self.name}", "--- traced IR", self.traced]
        prev = None
        for pname, text in self.stages:
            out += [f"--- after {pname}", text if text != prev else "(unchanged)"]
            prev = text
        out += ["--- memory plan", str(self.plan)]
        if self.native is not None:
            labels, source, table = self.native
            out += [f"--- native step: {len(labels)} units, one call; GEMMs by {blas.describe()}"]
            out += [f"  unit {u}: {lab}" for u, lab in enumerate(labels)]
            out += ["--- generated C", source]
            if table:
                out += ["--- native kernels (mean of 3 calls on copies of the inputs)", table]
        if self.explain:
            out += ["--- trace log", *self.explain]
        return "\n".join(out)

    __repr__ = __str__


def stages(graph, level: int) -> list:
    """[(pass name, graph text)] after each pass the level runs."""
    out = []
    PassManager(LEVELS[level]).run(graph, lambda name, g: out.append((name, print_graph(g))))
    return out


def _native(entry, leaves):
    exe = entry.exe
    if not hasattr(exe, "kernels"):
        return None
    table = None
    if leaves is not None:
        from ..codegen.step import kernel_table
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
                  stages(traced.graph, entry.opt_level), entry.exe.plan, list(explain),
                  _native(entry, leaves))


def inspect(f, *args, **kwargs) -> Report:
    """Trace `f` (a function or an `ember.jit` of one) at these arguments and show every stage."""
    from . import TRACE_LOCK, Jitted, _signature
    j = f if isinstance(f, Jitted) else Jitted(f)
    leaves, treedef, paths, sig = _signature(args, kwargs)
    with TRACE_LOCK.exclusive():
        ent = j._entry(leaves, treedef, paths, sig, args, kwargs)
        return report(j.__name__, ent.traced, ent, j.explain, leaves)


def dump(rep: Report) -> None:
    print(rep, file=sys.stderr, flush=True)
