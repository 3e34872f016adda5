"""Lowerings, registered per primitive and target (JAX's `mlir.register_lowering` is the model).

A lowering says how one primitive (or one kind of fused unit: `Group`, `RowGroup`, `MultiGroup`)
runs on one target. The key is the object itself, never its name, so a renamed or user-defined
primitive cannot be matched by accident. What the function receives is the target's business:
the C target (`ember.backend.cpu`) passes its emitter and the equation, the numpy arena executor
(`ember.runtime.arena`) passes the equation's operands and its output block.

Elementwise primitives need no registration for C: their scalar expression (`Primitive.lowering`)
is rendered directly; a registration overrides it. A primitive with no lowering for a target runs
that one unit on the host with its numpy kernel (`ember.runtime.host`), and `ember.inspect` names it.
"""
from __future__ import annotations

from typing import Callable

_LOWERINGS: dict = {}      # (primitive or unit class, target) -> function
_UNLOWERED: dict = {}      # target -> {primitive: why it has no lowering there}


def register_lowering(prim, target: str, fn: Callable | None = None):
    """Register `fn` as `prim`'s lowering for `target`; usable as a decorator."""
    if isinstance(prim, str):
        raise TypeError("register_lowering takes the primitive object (P.add), not its name")

    def put(f: Callable) -> Callable:
        _LOWERINGS[(prim, target)] = f
        return f
    return put if fn is None else put(fn)


def unregister_lowering(prim, target: str) -> None:
    """Remove `prim`'s lowering for `target`, if any (the unit then runs on the host)."""
    _LOWERINGS.pop((prim, target), None)


def get_lowering(prim, target: str) -> Callable | None:
    """`prim`'s lowering for `target`, or None."""
    return _LOWERINGS.get((prim, target))


def mark_unlowered(prim, target: str, why: str) -> None:
    """Declare that `prim` intentionally has no lowering for `target` (it runs on the host)."""
    _UNLOWERED.setdefault(target, {})[prim] = why


def unlowered(target: str) -> dict:
    """{primitive: reason} of the primitives declared to run on the host for `target`."""
    return dict(_UNLOWERED.get(target, {}))
