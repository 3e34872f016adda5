"""The `sim` target: the CPU's unit table, every unit run on the host with numpy.

It lowers nothing, so a step on `sim` exercises exactly what the runtime does for any target —
units, the memory plan, where values live, the per-unit host fallback, contexts for overlapping
calls — with no compiler. Tests use it (`ember.jit(f, backend="sim")`) to check the runtime
against the reference executor, and a device emulator (a SIMT interpreter for the CUDA target)
plugs in here: it would lower units into its own programs and launch them.
"""
from __future__ import annotations

from ..contract import Program, Target


class SimProgram(Program):
    """Nothing lowered: every unit is a host unit."""

    source = "/* sim: every unit runs on the host with numpy */"

    def __init__(self, units: list):
        self.native = [u is None for u in units]
        self.why = {k: "sim lowers nothing" for k, u in enumerate(units) if u is not None}
        self.kernel_of = [(0, 0)] * len(units)
        self.rows = []

    def launch(self, ctx, arena_ptr, io, nthreads, prof, start, stop) -> None:
        """Nothing to launch: the runtime runs every unit on the host."""
        if start != stop:
            raise AssertionError("sim has no kernels to launch")


class SimTarget(Target):
    """Units as on the CPU (the same fusion rule), run by numpy."""

    name = "sim"

    def fusible(self, eqn) -> bool:
        """The CPU's rule, so the unit table is the CPU's."""
        from ..cpu.c_expr import eqn_supported
        return eqn_supported(eqn)

    def compile(self, units, refs, graph) -> SimProgram:
        """Lower nothing."""
        return SimProgram(units)
