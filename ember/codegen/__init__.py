"""ember's native code generator (BE-1, book ch. 5.4): fused elementwise CPU kernels in C.

`elementwise_groups` finds the loop nests, `render_group` writes one C function per group,
`compile_group` builds it (cached on disk by content hash) and returns a `Kernel` that runs on numpy
arrays through ctypes, or None when no C compiler works (callers fall back to numpy). Nothing is
compiled or written at import.
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import build
from .c_renderer import ENTRY, layout, input_strides, render_group
from .fusion import Group, elementwise_groups, schedule

__all__ = ["Group", "Kernel", "elementwise_groups", "render_group", "compile_group",
           "compile_graph_groups", "run_graph", "schedule"]


class Kernel:
    """A compiled group: `kernel(*inputs, out=None) -> list of output arrays`."""

    def __init__(self, group: Group, lib: ctypes.CDLL, source: str):
        self.group = group
        self.source = source
        self.lib = lib  # keeps the library loaded while the kernel lives
        self.fn = getattr(lib, ENTRY)
        self.fn.restype = None
        self.in_avals = [v.aval for v in group.inputs]
        self.out_avals = [v.aval for v in group.outputs]
        self.dims = layout([a.shape for a in self.in_avals], group.shape)
        ptrs = [ctypes.c_void_p] * (len(self.in_avals) + len(self.out_avals))
        if self.dims is None:
            self.fn.argtypes = ptrs + [ctypes.c_int64]
            self.extra = [int(np.prod(group.shape, dtype=np.int64))]
        else:
            self.fn.argtypes = ptrs + [ctypes.c_void_p, ctypes.c_void_p]
            self._dims = np.array([d[0] for d in self.dims], np.int64)
            self._strides = np.array([s for k in range(len(self.in_avals))
                                      for s in input_strides(self.dims, k)], np.int64)
            self.extra = [self._dims.ctypes.data, self._strides.ctypes.data]

    def __call__(self, *inputs, out=None) -> list:
        if len(inputs) != len(self.in_avals):
            raise TypeError(f"kernel takes {len(self.in_avals)} inputs, got {len(inputs)}")
        ins = []
        for k, (x, a) in enumerate(zip(inputs, self.in_avals)):
            x = np.asarray(x)
            if x.shape != a.shape or x.dtype != a.dtype.np:
                raise TypeError(f"input {k}: expected {a.dtype.name}{list(a.shape)}, got "
                                f"{x.dtype}{list(x.shape)}")
            ins.append(np.ascontiguousarray(x))
        outs = [np.empty(a.shape, a.dtype.np) for a in self.out_avals] if out is None else list(out)
        targets = []
        for k, (o, a) in enumerate(zip(outs, self.out_avals)):
            if o.shape != a.shape or o.dtype != a.dtype.np:
                raise TypeError(f"output {k}: expected {a.dtype.name}{list(a.shape)}")
            if not o.flags.c_contiguous or not o.flags.writeable:
                raise ValueError(f"output {k} must be a writeable C-contiguous array")
            # the kernel's pointers are restrict: write an aliased output through a temporary
            alias = any(np.may_share_memory(o, x) for x in ins) or \
                any(np.may_share_memory(o, p) for p in targets)
            targets.append(np.empty_like(o) if alias else o)
        if int(np.prod(self.group.shape, dtype=np.int64)):
            self.fn(*(x.ctypes.data for x in ins), *(t.ctypes.data for t in targets), *self.extra)
        for o, t in zip(outs, targets):
            if t is not o:
                o[...] = t
        return outs


def compile_group(group: Group) -> Kernel | None:
    """Render and compile one group; None (after one warning) when no C compiler works."""
    src = render_group(group)
    lib = build.load_library(src)
    return None if lib is None else Kernel(group, lib, src)


def compile_graph_groups(graph) -> list:
    """(group, Kernel or None) for every elementwise group of `graph`."""
    return [(g, compile_group(g)) for g in elementwise_groups(graph)]


def run_graph(graph, inputs: list, kernels: list | None = None) -> list:
    """Evaluate `graph` with compiled kernels for its groups and numpy for everything else."""
    from ..ir.core import Literal
    from ..jit.executor import apply
    kernels = compile_graph_groups(graph) if kernels is None else kernels
    env = dict(zip(graph.constvars, graph.consts))
    env.update(zip(graph.invars, (np.asarray(x) for x in inputs)))
    by_group = {id(g): k for g, k in kernels}
    for u in schedule(graph, [g for g, _ in kernels]):
        eqns = [u] if not isinstance(u, Group) else u.eqns
        k = by_group.get(id(u)) if isinstance(u, Group) else None
        if k is not None:
            env.update(zip(u.outputs, k(*(env[v] for v in u.inputs))))
            continue
        for e in eqns:
            vals = [a.value if isinstance(a, Literal) else env[a] for a in e.inputs]
            env[e.out] = apply(e.prim, vals, [a.aval for a in e.inputs], e.params, e.out.aval)
    return [np.asarray(v.value, v.aval.dtype.np) if isinstance(v, Literal) else env[v]
            for v in graph.outvars]
