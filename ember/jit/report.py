"""Every stage of a jitted function, for reading: `ember.inspect(f, *args)`.

With `EMBER_DEBUG=2` (or `ember.debug(2)`), ember.jit prints the same report to stderr whenever
it traces; with `EMBER_DEBUG=1` it runs the IR verifier after every pass.
"""
from __future__ import annotations

import sys

from ..ir.printer import print_graph
from .passes import LEVELS, PassManager


class Report:
    """The stages of one trace: traced IR, IR after each pass, the memory plan, the retrace log."""

    def __init__(self, name, traced, stages, plan, explain):
        self.name, self.traced, self.stages, self.plan, self.explain = name, traced, stages, plan, explain

    def __str__(self) -> str:
        out = [f"=== ember.jit: {self.name}", "--- traced IR", self.traced]
        prev = None
        for pname, text in self.stages:
            out += [f"--- after {pname}", text if text != prev else "(unchanged)"]
            prev = text
        out += ["--- memory plan", str(self.plan)]
        if self.explain:
            out += ["--- trace log", *self.explain]
        return "\n".join(out)

    __repr__ = __str__


def stages(graph, level: int) -> list:
    """[(pass name, graph text)] after each pass the level runs."""
    out = []
    PassManager(LEVELS[level]).run(graph, lambda name, g: out.append((name, print_graph(g))))
    return out


def report(name, traced, entry, explain=()) -> Report:
    """The report of a cached trace (`entry` is the jit cache entry built from `traced`)."""
    return Report(name, print_graph(traced.graph, locations=True),
                  stages(traced.graph, entry.opt_level), entry.exe.plan, list(explain))


def inspect(f, *args, **kwargs) -> Report:
    """Trace `f` (a function or an `ember.jit` of one) at these arguments and show every stage."""
    from . import Jitted, _signature
    j = f if isinstance(f, Jitted) else Jitted(f)
    leaves, treedef, paths, sig = _signature(args, kwargs)
    ent = j._entry(leaves, treedef, paths, sig, args, kwargs)
    return report(j.__name__, ent.traced, ent, j.explain)


def dump(rep: Report) -> None:
    print(rep, file=sys.stderr, flush=True)
