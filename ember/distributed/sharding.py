"""Sharding annotations with automatic redistribution (DT-14; MindSpore's `ops.MatMul().shard(...)`
strategies, GSPMD's sharding propagation).

    @dist.spmd
    def f(x, w1, w2):
        y = dist.matmul(x, w1, ((4, 1), (1, 1)))   # x split by rows over 4 ranks, w1 whole
        return dist.matmul(y, w2, ((1, 1), (1, 4)))  # y whole, w2 split by columns
    local = f(x, w1, w2)           # this rank's shard of the result; f.program shows the plan

A *layout* gives, per dimension, into how many pieces it is split over the ranks of the group: 1
(whole on every rank) or the group's size n (rank r holds piece r); ember's device mesh is one
axis of all n ranks, so at most one dimension is split. `shard(x, layout)` says a value must be
laid out so where it is used; outside `spmd` it is the identity.

`spmd(fn)` traces `fn` once per argument signature (the arguments are global tensors, the same
on every rank; `in_layouts` lays them out, replicated by default) and partitions the graph for
this rank, equation by equation, knowing each value's layout:

- a `shard` annotation redistributes its operand to the layout it names: from whole to split is
  a local slice (no message); from split to whole an all-gather along the split dimension; from
  one split dimension to another an all-gather then a slice; from a partial sum an all-reduce;
- `dot_general`: an operand split on a free dimension, the other whole, gives a result split on
  that dimension's place in the output; both split on the same contracted dimension give partial
  sums, all-reduced at once (a partial value never leaves the equation); split on matching batch
  dimensions gives a result split there; any other combination gathers both operands first;
- elementwise equations take the layout of their first split operand of the output's shape (the
  others are brought to it; an operand broadcast along the split dimension stays whole);
- a sum over the split dimension sums locally and all-reduces; over other dimensions it stays split;
- every other equation runs on whole operands (gathered if split) and gives a whole result.

The result is an ordinary ember IR graph over local shapes, with the collectives as equations
(`all_gather`, `all_reduce`) that call ember's ring algorithms on the group, run by the numpy
executor. `f.program` is that graph and `f.collectives` the list of what it communicates, so the
annotations' cost is visible before anything runs.
"""
from __future__ import annotations

import numpy as np

from .._core.state import TLS
from ..ir.core import Eqn, Graph, Literal, Var
from ..ops.core import Aval, P, Primitive, bind
from ..tensor import Tensor, from_array
from .errors import DistributedError
from .process_group import group as _default_group

__all__ = ["shard", "matmul", "spmd"]


def _identity_vjp(g, out, x, layout):
    return (g,)


_SHARD = Primitive("sharding_constraint", impl=lambda x, layout: x, abstract=lambda a, layout: a,
                   vjp=_identity_vjp, kind="shape", promote_args=(), doc="a layout annotation (spmd)")


def shard(x: Tensor, layout) -> Tensor:
    """`x`, annotated to be laid out as `layout` (pieces per dimension) where it is used."""
    layout = tuple(int(s) for s in layout)
    if len(layout) != x.ndim or any(s < 1 for s in layout):
        raise DistributedError(f"shard: layout {layout} does not fit a tensor of shape {tuple(x.shape)} "
                               "(one positive piece count per dimension)")
    if not TLS.spmd:
        return x
    return bind(_SHARD, x, layout=layout)


def matmul(a: Tensor, b: Tensor, strategy) -> Tensor:
    """`a @ b` with MindSpore's strategy: the layouts of `a` and of `b`."""
    return shard(a, strategy[0]) @ shard(b, strategy[1])


def _split_dim(layout) -> int | None:
    """The split dimension of a layout (None: whole); "partial" has none either."""
    if layout == "partial":
        return None
    dims = [d for d, s in enumerate(layout) if s > 1]
    return dims[0] if dims else None


class _Partitioner:
    """Builds the local graph of one rank from a traced global graph."""

    def __init__(self, g, n, rank):
        self.g, self.n, self.rank = g, n, rank
        self.eqns, self.collectives = [], []
        prims = {}
        for name, fn in (("all_gather", self._gather_impl), ("all_reduce", self._reduce_impl)):
            prims[name] = Primitive(name, impl=fn, abstract=self._abstract(name), kind="collective",
                                    promote_args=(), doc=f"{name} over the spmd group")
        self.prims = prims

    # ---- the collectives' kernels (run by the numpy executor)
    def _gather_impl(self, x, axis):
        from .collectives import all_gather_into_tensor
        x = np.ascontiguousarray(x)
        out = from_array(np.empty((self.n,) + x.shape, x.dtype))
        all_gather_into_tensor(out, from_array(x), group=self.group, algorithm="ring")
        return np.concatenate(list(out._data), axis=axis)

    def _reduce_impl(self, x):
        from .collectives import all_reduce
        t = from_array(np.array(x))
        all_reduce(t, group=self.group, algorithm="ring")
        return t._data

    def _abstract(self, name):
        n = lambda: self.n  # noqa: E731

        def gather(a, axis):
            return Aval(a.shape[:axis] + (a.shape[axis] * n(),) + a.shape[axis + 1:], a.dtype)
        return gather if name == "all_gather" else (lambda a: a)

    # ---- building
    def emit(self, prim, ins, params, loc=""):
        v = Var(prim.abstract(*[a.aval for a in ins], **params))
        self.eqns.append(Eqn(prim, ins, v, params, loc))
        return v

    def local_shape(self, shape, layout, what):
        d = _split_dim(layout)
        if d is None:
            return tuple(shape)
        if shape[d] % self.n:
            raise DistributedError(f"spmd: {what} of shape {tuple(shape)} cannot be split {self.n} ways along "
                                   f"dimension {d} (layout {layout})")
        return tuple(shape[:d]) + (shape[d] // self.n,) + tuple(shape[d + 1:])

    def slice_local(self, v, d):
        size = v.aval.shape[d]
        if size % self.n:
            raise DistributedError(f"spmd: a value of shape {v.aval.shape} cannot be split {self.n} ways along "
                                   f"dimension {d}")
        k = size // self.n
        start = tuple(self.rank * k if i == d else 0 for i in range(v.aval.ndim))
        stop = tuple((self.rank + 1) * k if i == d else s for i, s in enumerate(v.aval.shape))
        return self.emit(P.slice, [v], {"start": start, "stop": stop, "step": (1,) * v.aval.ndim})

    def redistribute(self, v, cur, want, loc):
        """`v` (local, laid out `cur`) laid out `want` (a tuple layout)."""
        if cur == want:
            return v
        if cur == "partial":
            self.collectives.append(("all_reduce", v.aval.shape, loc))
            v, cur = self.emit(self.prims["all_reduce"], [v], {}, loc), (1,) * v.aval.ndim
            if cur == want:
                return v
        d0, d1 = _split_dim(cur), _split_dim(want)
        if d0 is not None:
            self.collectives.append(("all_gather", v.aval.shape, loc))
            v = self.emit(self.prims["all_gather"], [v], {"axis": d0}, loc)
        return v if d1 is None else self.slice_local(v, d1)

    def check(self, layout):
        if layout != "partial" and any(s not in (1, self.n) for s in layout):
            raise DistributedError(f"spmd: layout {layout} on {self.n} ranks: the mesh is one axis of all "
                                   f"{self.n} ranks, so a dimension is in 1 or {self.n} pieces")
        if layout != "partial" and sum(s > 1 for s in layout) > 1:
            raise DistributedError(f"spmd: layout {layout} splits more than one dimension; the mesh has one axis")

    def run(self, in_layouts):
        g = self.g
        env = {}  # global Var -> (local atom, layout)
        ins = []
        for v, lay in zip(g.invars, in_layouts):
            lay = tuple(lay) if lay is not None else (1,) * v.aval.ndim
            self.check(lay)
            lv = Var(Aval(self.local_shape(v.aval.shape, lay, "an argument"), v.aval.dtype))
            env[v] = (lv, lay)
            ins.append(lv)
        consts = []
        for v in g.constvars:
            lv = Var(v.aval)
            env[v] = (lv, (1,) * v.aval.ndim)
            consts.append(lv)

        def get(a):
            if isinstance(a, Literal):
                return a, (1,) * len(a.aval.shape)
            return env[a]

        def whole(a, loc):
            x, lay = get(a)
            return x if isinstance(x, Literal) else self.redistribute(x, lay, (1,) * len(x.aval.shape), loc)
        for e in g.eqns:
            loc = e.loc
            if e.prim is _SHARD:
                want = e.params["layout"]
                self.check(want)
                x, lay = get(e.inputs[0])
                env[e.out] = (self.redistribute(x, lay, want, loc), want)
            elif e.prim is P.dot_general:
                env[e.out] = self.dot(e, get, whole)
            elif e.prim.kind == "elementwise":
                env[e.out] = self.elementwise(e, get, whole)
            elif e.prim is P.reduce_sum and len(e.inputs) == 1:
                env[e.out] = self.reduce_sum(e, get, whole)
            else:
                env[e.out] = (self.emit(e.prim, [whole(a, loc) for a in e.inputs], e.params, loc),
                              (1,) * e.out.aval.ndim)
        outs = [get(v) for v in g.outvars]
        graph = Graph(consts, list(g.consts), ins, self.eqns, [o for o, _ in outs])
        return graph, [lay for _, lay in outs]

    def dot(self, e, get, whole):
        (lc, rc), (lb, rb) = e.params["contract"], e.params["batch"]
        (x, lx), (y, ly) = get(e.inputs[0]), get(e.inputs[1])
        dx = None if isinstance(x, Literal) else _split_dim(lx)
        dy = None if isinstance(y, Literal) else _split_dim(ly)
        nd = e.out.aval.ndim
        lfree = [d for d in range(e.inputs[0].aval.ndim) if d not in lc and d not in lb]
        rfree = [d for d in range(e.inputs[1].aval.ndim) if d not in rc and d not in rb]

        def out_split(pos):
            return tuple(self.n if i == pos else 1 for i in range(nd))
        if dx is None and dy is None:
            return self.emit(e.prim, [x, y], e.params, e.loc), (1,) * nd
        if dx in lfree and dy is None:
            return self.emit(e.prim, [x, y], e.params, e.loc), out_split(len(lb) + lfree.index(dx))
        if dy in rfree and dx is None:
            return self.emit(e.prim, [x, y], e.params, e.loc), out_split(len(lb) + len(lfree) + rfree.index(dy))
        if dx in lc and dy is not None and rc[lc.index(dx)] == dy:  # partial sums: reduced at once
            v = self.emit(e.prim, [x, y], e.params, e.loc)
            return self.redistribute(v, "partial", (1,) * nd, e.loc), (1,) * nd
        if dx in lb and dy is not None and rb[lb.index(dx)] == dy:
            return self.emit(e.prim, [x, y], e.params, e.loc), out_split(lb.index(dx))
        return self.emit(e.prim, [whole(a, e.loc) for a in e.inputs], e.params, e.loc), (1,) * nd

    def elementwise(self, e, get, whole):
        shape = e.out.aval.shape
        lay = next((l for a in e.inputs if not isinstance(a, Literal) and a.aval.shape == shape
                    for l in [get(a)[1]] if _split_dim(l) is not None), None)
        if lay is None:
            return self.emit(e.prim, [whole(a, e.loc) for a in e.inputs], e.params, e.loc), (1,) * len(shape)
        d = _split_dim(lay)
        ins = []
        for a in e.inputs:
            x, la = get(a)
            if isinstance(x, Literal):
                ins.append(x)
                continue
            k = d - (len(shape) - a.aval.ndim)  # numpy broadcasting aligns trailing dimensions
            if k < 0 or a.aval.shape[k] == 1:
                ins.append(whole(a, e.loc))  # broadcast along the split dimension: whole everywhere
            else:
                ins.append(self.redistribute(x, la, tuple(self.n if i == k else 1 for i in range(a.aval.ndim)), e.loc))
        return self.emit(e.prim, ins, e.params, e.loc), lay

    def reduce_sum(self, e, get, whole):
        """A sum over the split dimension: local sums, all-reduced; over others: stays split."""
        x, lay = get(e.inputs[0])
        d, axes = _split_dim(lay), e.params["axes"]
        v = self.emit(e.prim, [x], e.params, e.loc)
        nd = e.out.aval.ndim
        if d is None:
            return v, (1,) * nd
        if d in axes:
            return self.redistribute(v, "partial", (1,) * nd, e.loc), (1,) * nd
        pos = d - sum(1 for a in axes if a < d)
        return v, tuple(self.n if i == pos else 1 for i in range(nd))


class SpmdFunction:
    """`fn` partitioned over the group's ranks for each argument signature (see the module doc)."""

    def __init__(self, fn, in_layouts=None, group=None):
        self.fn, self.in_layouts, self._group = fn, in_layouts, group
        self._cache = {}
        self.program = self.collectives = self.out_layouts = None

    def _compile(self, args):
        from ..jit.trace import trace
        g = self._group or _default_group()
        old = TLS.spmd
        TLS.spmd = True
        try:
            graph = trace(self.fn, args).graph
        finally:
            TLS.spmd = old
        n_user = len(graph.outvars)
        lays = list(self.in_layouts or [None] * len(args))
        if len(lays) != len(args):
            raise DistributedError(f"spmd: {len(lays)} in_layouts for {len(args)} arguments")
        lays += [None] * (len(graph.invars) - len(lays))  # captured tensors: whole
        p = _Partitioner(graph, g.size, g.rank)
        p.group = g
        local, out_layouts = p.run(lays)
        from ..runtime.executor import Executable
        return local, Executable(local), p.collectives, out_layouts[:n_user], lays, graph

    def __call__(self, *args):
        """This rank's shards of `fn(*args)` (global arguments, the same on every rank)."""
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._compile(args)
        local, exe, self.collectives, self.out_layouts, lays, graph = hit
        self.program = local
        g = self._group or _default_group()
        inputs = []
        for a, v, lay in zip(args, graph.invars, lays):
            x = a._data
            d = None if lay is None else _split_dim(tuple(lay))
            if d is not None:
                k = x.shape[d] // g.size
                x = np.take(x, range(g.rank * k, (g.rank + 1) * k), axis=d)
            inputs.append(np.ascontiguousarray(x))
        outs = exe.run(inputs)
        res = [from_array(o, v.aval.dtype) for o, v in zip(outs, local.outvars)]
        return res[0] if len(res) == 1 else tuple(res)

    def gather(self, local: Tensor, index: int = 0) -> Tensor:
        """The whole value of output `index` from every rank's shard (an all-gather)."""
        from .collectives import all_gather_into_tensor
        d = _split_dim(self.out_layouts[index])
        if d is None:
            return local
        g = self._group or _default_group()
        buf = from_array(np.empty((g.size,) + tuple(local.shape), local._data.dtype))
        all_gather_into_tensor(buf, local, group=g)
        return from_array(np.concatenate(list(buf._data), axis=d), local._dtype)


def spmd(fn=None, *, in_layouts=None, group=None):
    """Partition `fn` by its `shard` annotations over the group's ranks (decorator or call)."""
    if fn is None:
        return lambda f: SpmdFunction(f, in_layouts, group)
    return SpmdFunction(fn, in_layouts, group)
