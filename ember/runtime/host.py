"""Units run on the host with numpy: what a target did not lower, and everything on `sim`.

A host unit reads its operands as numpy views of where the plan put them and writes its
results there, so it can sit between a target's kernels in one step. Every result is computed
into a temporary before it is written, so a result planned over one of its operands (in place)
is still right.
"""
from __future__ import annotations

import numpy as np

from ..ir.core import Literal
from .executor import apply
from .fusion import Group, RowGroup
from .units import Epilogue, MultiGroup


def _eqns(u) -> list:
    """The equations of unit `u` in order (a row group's members flattened)."""
    if isinstance(u, RowGroup):
        return [e for m in u.members for e in _eqns(m)]
    if isinstance(u, (Group, MultiGroup, Epilogue)):
        return list(u.eqns)
    return [u]


def label(u) -> str:
    """What the kernel table calls a host unit."""
    return "host: " + " ".join(e.prim.name for e in _eqns(u))


def run(u, value) -> None:
    """Run unit `u`: `value(v)` is the numpy view where value `v` lives (read or written)."""
    eqns = _eqns(u)
    env = {}

    def read(a):
        if isinstance(a, Literal):
            return np.asarray(a.value, a.aval.dtype.np)
        if a in env:
            return env[a]
        return value(a)
    for e in eqns:
        env[e.out] = apply(e.prim, [read(a) for a in e.inputs], [a.aval for a in e.inputs], e.params, e.out.aval)
    outs = u.outputs if u.prim is None else [u.out]
    for v in outs:
        np.copyto(value(v), env[v], casting="unsafe")
