"""The device contract: what a target gives the runtime (DESIGN: "a narrow device contract").

The runtime (`ember.runtime.step`) turns a graph into units, plans their memory in one arena and
decides where every value lives; a target then provides four things, and nothing else:

- an allocator: `allocate(nbytes)` -> (owner, uint8 ndarray) for a step's arena;
- a compiler: `compile(units, refs)` -> a `Program`, lowering each unit it can through the
  lowerings registered for it (`ember.backend.lowering`), reporting the others as host units;
- a launcher: the `Program` runs a range of its lowered units on a context of its own;
- library calls (the CPU's GEMM through CBLAS) used by its lowerings.

`cpu` (`ember.backend.cpu`: C through the system compiler and OpenMP) is the first
implementation; `sim` (`ember.backend.sim`) lowers nothing, so every unit runs on the host with
numpy, which tests the runtime, the planner and the per-unit fallback without a compiler.
"""
from __future__ import annotations

import abc
import mmap

import numpy as np


class Unsupported(Exception):
    """A target cannot lower this unit or graph (the unit runs on the host instead)."""


class Program(abc.ABC):
    """What a target's compiler returns for one step.

    `native[u]`: whether unit u was lowered (else the runtime runs it on the host);
    `rows`: one (label, flops, bytes) per lowered kernel, in launch order, for the profile;
    `kernel_of[u]`: the kernel-table range [a, b) unit u was lowered to;
    `why[u]`: for a unit not lowered, the reason (for `explain` and EMBER_DEBUG)."""

    native: list
    rows: list
    kernel_of: list
    why: dict
    source: str = ""

    def new_context(self):
        """A launch context of its own (status word, scratch) for calls that overlap."""
        return None

    def free_context(self, ctx) -> None:
        """Release what `new_context` allocated (called when the context is collected)."""

    @abc.abstractmethod
    def launch(self, ctx, arena_ptr: int, io, nthreads: int, prof, start: int, stop: int) -> None:
        """Run kernels [start, stop) of the table."""

    def status(self, ctx) -> tuple:
        """(code, a, b) of what went wrong in the last launch: 0 nothing, 1 index a out of range
        for size b, 2 no memory for a bytes of scratch; reading it clears it."""
        return 0, 0, 0


class Target(abc.ABC):
    """A device's implementation of the contract."""

    name = "?"

    def available(self) -> bool:
        """Whether this target can compile here (a working compiler, a device present)."""
        return True

    def fusible(self, eqn) -> bool:
        """Whether `eqn` may join a fused elementwise loop on this target."""
        return False

    def epilogue(self, eqn) -> bool:
        """Whether this target computes an elementwise group reading `eqn`'s result as `eqn`
        stores it (a GEMM's epilogue: `runtime.units.Epilogue`)."""
        return False

    def allocate(self, nbytes: int) -> tuple:
        """(owner, uint8 array of `nbytes`): one anonymous mapping, advised for huge pages."""
        size = max(int(nbytes), 1)
        m = mmap.mmap(-1, (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        if hasattr(m, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                m.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass
        return m, np.frombuffer(m, np.uint8)[:nbytes]

    @abc.abstractmethod
    def compile(self, units: list, refs: dict, graph) -> Program:
        """Lower `units` (values placed by `refs`; None for a view, which needs no work) into a
        Program."""
