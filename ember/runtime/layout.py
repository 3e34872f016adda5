"""Where a value lives in a planned step, and the stride algebra of views.

A `Ref` is a base ("arena" at a byte offset, or an "io" slot: a graph input, constant or
caller-owned output), an element offset and element strides, all fixed when the step is built.
A view primitive (transpose, slice, broadcast, reverse, a reshape of a contiguous value) is a new
`Ref` over its operand's memory: views cost nothing on any target. `collapse` and friends turn a
loop over a shape into the fewest loops with the strides of each operand, for every target.
"""
from __future__ import annotations

import numpy as np

from ..backend.contract import Unsupported
from ..ops import P


def prod(xs) -> int:
    """The number of elements of shape `xs` (an int64 product: 1 for `()`)."""
    return int(np.prod(xs, dtype=np.int64))


def contiguous(shape) -> tuple:
    """Row-major element strides of `shape`."""
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= n
    return tuple(reversed(out))


def _reshape(ref, params, out_shape):  # only of a contiguous value: the planner copies otherwise
    return ref.offset, contiguous(out_shape)


def _transpose(ref, params, out_shape):
    return ref.offset, [ref.strides[i] for i in params["perm"]]


def _slice(ref, params, out_shape):
    off = ref.offset + sum(a * s for a, s in zip(params["start"], ref.strides))
    return off, [s * k for s, k in zip(ref.strides, params["step"])]


def _broadcast(ref, params, out_shape):
    strides = [0] * len(out_shape)
    for i, d in enumerate(params["dims"]):
        strides[d] = ref.strides[i] if ref.shape[i] == out_shape[d] else 0
    return ref.offset, strides


def _rev(ref, params, out_shape):
    off, strides = ref.offset, list(ref.strides)
    for a in params["axes"]:
        if ref.shape[a]:
            off += (ref.shape[a] - 1) * ref.strides[a]
        strides[a] = -ref.strides[a]
    return off, strides


# the view primitives: (offset, strides) of the result from the operand's Ref
VIEWS = {P.reshape: _reshape, P.transpose: _transpose, P.slice: _slice, P.broadcast_in_dim: _broadcast,
         P.rev: _rev}


class Ref:
    """Where a value lives: a base (`where` "arena" at byte `at`, or "io" slot `at`), an element
    offset and element strides."""

    __slots__ = ("where", "at", "offset", "shape", "strides", "dtype")

    def __init__(self, where, at, offset, shape, strides, dtype):
        self.where, self.at, self.offset = where, at, offset
        self.shape, self.strides, self.dtype = tuple(shape), tuple(strides), dtype

    @classmethod
    def whole(cls, where, at, aval) -> "Ref":
        """A contiguous value of type `aval` at the start of its base."""
        return cls(where, at, 0, aval.shape, contiguous(aval.shape), aval.dtype.name)

    def moved(self, offset, shape, strides) -> "Ref":
        return Ref(self.where, self.at, offset, shape, strides, self.dtype)

    def view(self, prim, params: dict, out_shape) -> "Ref":
        """The Ref of view primitive `prim`'s result."""
        rule = VIEWS.get(prim)
        if rule is None:
            raise Unsupported(prim.name)
        off, strides = rule(self, params, out_shape)
        return self.moved(off, out_shape, strides)

    def __repr__(self) -> str:
        return f"Ref({self.where}[{self.at}]+{self.offset}, {self.dtype}{list(self.shape)}, strides {list(self.strides)})"


def aligned_strides(ref: Ref, shape) -> list:
    """`ref`'s strides seen with `shape` (numpy broadcasting: missing or size-1 dims stride 0)."""
    k = len(shape) - len(ref.shape)
    out = [0] * k
    for n, s, m in zip(ref.shape, ref.strides, shape[k:]):
        out.append(s if n == m and n != 1 else 0)
    return out


def collapse(shape, stride_lists) -> list:
    """[(size, [stride per operand])] with size-1 dims dropped and mergeable neighbours merged."""
    dims = []
    for d, n in enumerate(shape):
        if n == 1:
            continue
        ss = [s[d] for s in stride_lists]
        if dims and all(ps == s * n for ps, s in zip(dims[-1][1], ss)):
            dims[-1] = (dims[-1][0] * n, ss)
        else:
            dims.append((n, ss))
    return dims


def around(shape, axis, strides) -> tuple:
    """(dims before `axis`, dims after it), collapsed, for operands with `strides` over `shape`."""
    return (collapse(shape[:axis], [list(st[:axis]) for st in strides]),
            collapse(shape[axis + 1:], [list(st[axis + 1:]) for st in strides]))


def merge(sizes, strides):
    """(size, stride) of dims read as one (stride None when size <= 1), or None if they do not merge."""
    dims = [(n, s) for n, s in zip(sizes, strides) if n != 1]
    if not dims:
        return prod(sizes), None
    for (n0, s0), (n1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * n1:
            return None
    return prod(sizes), dims[-1][1]
