"""Reverse-mode autodiff on a tape (book ch. 3.2; checklist FE-9, FE-11, FE-13, CG-6).

Each primitive applied in grad mode to an input that requires grad records a `Node`: the
primitive, its parameters, what its VJP needs (input tensors, or only their shapes), and one edge
per input (the input's own node, or the `LeafAcc` that accumulates into a leaf's `.grad`). Nodes
are numbered as they are created, so running them from the highest number down is a topological
order of the reverse graph: a node runs only after every node that consumes its output.

VJPs are written with primitives (`ember.ops.lax`), so with `create_graph=True` the backward pass
is itself recorded and can be differentiated again. Saved tensors remember their storage version;
a saved tensor changed in place since raises instead of giving a wrong gradient (BE-12).
"""
from __future__ import annotations

import heapq
import itertools
import weakref
from typing import Callable, Sequence

import numpy as np

from ._core import dtypes as dt
from ._core.errors import AutogradError, user_location
from ._core.state import TLS, enable_grad, no_grad, set_grad_enabled
from .ops import lax
from .ops.core import Aval
from .tensor import Tensor, from_array

_seq = itertools.count()


class LeafAcc:
    """The sink for a leaf tensor's gradient: tensor hooks, accumulation, post-accumulate hooks."""

    __slots__ = ("tensor", "seq", "hooks", "post_hooks", "__weakref__")
    name = "AccumulateGrad"

    def __init__(self, tensor: Tensor):
        self.tensor = tensor
        self.seq = next(_seq)
        self.hooks = []
        self.post_hooks = []

    @property
    def dtype(self):
        return self.tensor._dtype

    @property
    def shape(self):
        return self.tensor.shape


class Node:
    """One recorded primitive application (PyTorch's grad_fn)."""

    __slots__ = ("prim", "params", "saved", "versions", "edges", "seq", "out_data", "out_dtype",
                 "out_shape", "out_storage", "versions_out", "hooks", "retain", "custom", "loc", "__weakref__")

    def __init__(self, prim, params, saved, versions, edges, out: Tensor):
        self.prim = prim
        self.params = params
        self.saved = saved
        self.versions = versions
        self.edges = edges
        self.seq = next(_seq)
        self.out_dtype = out._dtype
        self.out_shape = out._data.shape
        self.out_data = out._data if (prim is not None and prim.needs_out) else None
        self.out_storage = out._ensure_storage() if (prim is not None and prim.needs_out) else None
        self.versions_out = self.out_storage.version if self.out_storage is not None else 0
        self.hooks = None
        self.retain = None
        self.custom = None
        self.loc = user_location() if TLS.anomaly else None  # where the forward ran (anomaly mode)

    @property
    def name(self) -> str:
        if self.custom is not None:
            return f"{self.custom[0].__name__}Backward"
        return f"{self.prim.name}_backward"

    @property
    def dtype(self):
        return self.out_dtype

    @property
    def shape(self):
        return self.out_shape

    @property
    def next_functions(self) -> tuple:
        return tuple(self.edges)

    def __repr__(self) -> str:
        return f"<{self.name}>"

    def _output(self) -> Tensor:
        """The primal output, rebuilt with this node as its history (no reference cycle kept)."""
        t = from_array(self.out_data, self.out_dtype)
        t._storage = self.out_storage
        t._node = self
        t._rg = True
        return t

    def apply(self, g: Tensor) -> tuple:
        if self.saved is None:
            raise AutogradError(
                f"trying to backward through the graph a second time ({self.name}): its saved values "
                "were freed; pass retain_graph=True to the first backward() if you need this")
        for i, storage, version in self.versions:
            if storage.version != version:
                t = self.saved[i]
                raise AutogradError(
                    f"one of the tensors needed for the gradient of {self.name} has been modified by an "
                    f"in-place operation: {t.dtype.name}{list(t.shape)} is at version {storage.version}; "
                    f"expected version {version}. Use an out-of-place op or clone() the tensor first.")
        if self.custom is not None:
            cls, ctx = self.custom
            res = cls.backward(ctx, g)
            return res if isinstance(res, tuple) else (res,)
        prim = self.prim
        if prim.vjp is None:
            raise AutogradError(f"the derivative of '{prim.name}' is not implemented")
        out = None
        if prim.needs_out:
            if self.out_storage.version != self.versions_out:
                raise AutogradError(
                    f"the output of {prim.name} needed for its gradient was modified by an in-place "
                    "operation; clone() it before modifying it")
            out = self._output()
        return prim.vjp(g, out, *self.saved, **self.params)

    def release(self) -> None:
        self.saved = None
        self.out_data = None


def _edge(t: Tensor):
    """The graph edge a tensor's gradient flows into: its node, or its leaf accumulator."""
    if t._base is not None:
        _refresh_view(t)
    n = t._node
    if n is not None:
        return n
    ex = t._extra
    if ex is None:
        ex = t._extra = {}
    acc = ex.get("acc")
    if acc is None:
        acc = ex["acc"] = LeafAcc(t)
    return acc


def record(prim, args, params, out: Tensor) -> None:
    """Record `out = prim(*args)` on the tape."""
    edges = []
    saved = []
    versions = []
    uses = prim.vjp_inputs if prim.vjp is not None else ()
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            if a._rg:
                n = a._node
                edges.append(n if n is not None and a._base is None else _edge(a))
            else:
                edges.append(None)
            if uses is None or i in uses:
                st = a._storage or a._ensure_storage()
                saved.append(a)
                versions.append((i, st, st.version))
            else:
                saved.append(Aval(a._data.shape, a._dtype))
        else:
            edges.append(None)
            saved.append(a)
    out._node = Node(prim, params, saved, versions, edges, out)
    out._rg = True


# ---------------------------------------------------------------- views and in-place writes
def _refresh_view(v: Tensor) -> None:
    """Rebuild a view's history from its base after the base was changed in place."""
    ex = v._extra
    base = v._base
    if ex["view_version"] == v._storage.version or not base._rg:
        return
    with enable_grad():
        t = base
        for prim, params in ex["view_fn"]:
            t = prim.bind(t, **params)
    v._node = t._node
    v._rg = True
    ex["view_version"] = v._storage.version


def scatter_into_base(base: Tensor, view_fn, new: Tensor) -> Tensor:
    """base with the positions that `view_fn` selects replaced by `new`, as differentiable ops."""
    avals = [Aval(base.shape, base._dtype)]
    for prim, params in view_fn:
        avals.append(prim.abstract(avals[-1], **params))
    g = new
    with no_grad():
        m = lax.full(new.shape, True, dt.bool_)
    for (prim, params), a_in in zip(reversed(view_fn), reversed(avals[:-1])):
        g = prim.vjp(g, None, a_in, **params)[0]
        with no_grad():
            m = prim.vjp(lax.convert(m, dt.float32), None, Aval(a_in.shape, dt.float32), **params)[0]
    with no_grad():
        mask = lax.ne(m, 0)
    return lax.select(mask, g, base)


def assign_(t: Tensor, new: Tensor) -> Tensor:
    """Write `new` into `t`'s memory (an in-place op): bump the version and rewrite the history.

    While ember.jit traces, the tracer does the write (`TraceInterpreter.assign`): the tensor's
    storage gets a new SSA value instead of new bytes."""
    interp = TLS.interpreters[-1]
    if interp.level:
        return interp.assign(t, new)
    recording = TLS.grad_enabled
    check_inplace(t, new, recording)
    if not t._data.flags.writeable:
        raise RuntimeError(f"cannot write into this tensor of shape {t.shape}: it is a broadcast view in "
                           "which several elements share one memory location; clone() it first")
    np.copyto(t._data, new._data, casting="unsafe")
    st = t._ensure_storage()
    st.version += 1
    rewrite_history(t, new, recording, st)
    return t


def check_inplace(t: Tensor, new: Tensor, recording: bool) -> None:
    """The errors an in-place write raises before touching anything."""
    if recording and t._rg and t._node is None and t._base is None:
        raise AutogradError("a leaf tensor that requires grad is being used in an in-place operation; "
                            "wrap the update in `with ember.no_grad():`")
    base = t._base
    if recording and base is not None and base._rg and base._node is None:
        raise AutogradError("a view of a leaf tensor that requires grad is being used in an in-place "
                            "operation; wrap the update in `with ember.no_grad():`")
    if new._dtype is not t._dtype and not _can_cast(new._dtype, t._dtype):
        raise AutogradError(f"result type {new._dtype.name} can't be cast to the desired output type "
                            f"{t._dtype.name} of an in-place operation")


def rewrite_history(t: Tensor, new: Tensor, recording: bool, st, new_base: Tensor | None = None) -> None:
    """After `t` was overwritten by `new`: `t` (or its base, for a view) takes `new`'s history."""
    base = t._base
    if recording and (new._rg or t._rg):
        if new._dtype is not t._dtype:
            new = lax.convert(new, t._dtype)
        if base is None:
            t._node = new._node
            t._rg = new._rg
        else:
            nb = new_base if new_base is not None else scatter_into_base(base, t._extra["view_fn"], new)
            base._node = nb._node
            base._rg = True
            t._extra["view_version"] = -1  # rebuilt from the base when next used
    elif base is not None and t._extra:
        t._extra["view_version"] = st.version


def _can_cast(src, dst) -> bool:
    return dt.promote_types(src, dst) is dst or (src.kind == dst.kind and src.kind in "fc")


# ---------------------------------------------------------------- hooks
class RemovableHandle:
    """Returned by hook registration; `remove()` unregisters the hook."""

    def __init__(self, lst: list, fn):
        self._lst, self._fn = lst, fn

    def remove(self) -> None:
        if self._fn in self._lst:
            self._lst.remove(self._fn)


def register_tensor_hook(t: Tensor, hook: Callable) -> RemovableHandle:
    if not t._rg:
        raise AutogradError("cannot register a hook on a tensor that doesn't require gradient")
    e = _edge(t)
    if isinstance(e, LeafAcc):
        lst = e.hooks
    else:
        if e.hooks is None:
            e.hooks = []
        lst = e.hooks
    lst.append(hook)
    return RemovableHandle(lst, hook)


def register_post_accumulate_hook(t: Tensor, hook: Callable) -> RemovableHandle:
    if t._node is not None or not t._rg:
        raise AutogradError("post-accumulate-grad hooks can only be registered on leaf tensors that "
                            "require grad")
    acc = _edge(t)
    acc.post_hooks.append(hook)
    return RemovableHandle(acc.post_hooks, hook)


def retain_grad(t: Tensor) -> None:
    if not t._rg:
        raise AutogradError("can't retain_grad on a tensor that doesn't require grad")
    if t._node is not None:
        t._node.retain = weakref.ref(t)


# ---------------------------------------------------------------- the engine
def _needed(roots, targets) -> set:
    """Nodes from which one of `targets` can be reached (so the pass can skip the rest)."""
    order, seen, stack = [], set(), list(roots)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        order.append(n)
        if isinstance(n, Node):
            stack.extend(e for e in n.edges if e is not None)
    need = set(targets)
    for n in sorted(order, key=lambda n: n.seq):  # inputs before consumers
        if isinstance(n, Node) and any(e in need for e in n.edges if e is not None):
            need.add(n)
    return need


def _fit(ct: Tensor, e) -> Tensor:
    dtype = e.out_dtype if e.__class__ is Node else e.tensor._dtype
    if ct._dtype is not dtype:
        ct = lax.convert(ct, dtype)
    if ct._data.shape != e.shape:
        raise AutogradError(f"internal: gradient of shape {ct.shape} for a value of shape {tuple(e.shape)} "
                            f"(from {e.name})")
    return ct


def _leaf_deps(roots, need) -> dict:
    """How many gradient contributions each leaf accumulator will get from the nodes that run."""
    deps, seen, stack = {}, set(), [e for e, _ in roots]
    while stack:
        n = stack.pop()
        if n in seen or not isinstance(n, Node):
            continue
        seen.add(n)
        if need is not None and n not in need:
            continue
        for e in n.edges:
            if e is None or (need is not None and e not in need):
                continue
            if isinstance(e, LeafAcc):
                deps[e] = deps.get(e, 0) + 1
            else:
                stack.append(e)
    return deps


_NOW = float("-inf")  # heap priority of a leaf accumulator whose gradient is complete


def _run(roots, retain_graph: bool, create_graph: bool, capture=None, accumulate=True):
    grads = {}
    heap = []
    need = _needed([e for e, _ in roots], capture) if capture is not None else None
    # A leaf's accumulator runs as soon as its last contribution arrived (PyTorch's AccumulateGrad
    # readiness), not in creation order: a leaf created long ago (a parameter reused every step)
    # would otherwise wait for the whole pass, and post-accumulate hooks (DDP) could not overlap.
    deps = _leaf_deps(roots, need)
    for e, g in roots:
        if e in grads:
            grads[e] = lax.add(grads[e], g)
        else:
            grads[e] = g
            if not deps.get(e):
                heapq.heappush(heap, (_NOW if isinstance(e, LeafAcc) else -e.seq, id(e), e))
    captured = {}
    owned = {}  # leaf gradients that may become `.grad` without a copy (held: ids stay unique)
    with set_grad_enabled(create_graph):
        while True:
            while heap:
                _, _, n = heapq.heappop(heap)
                g = grads.pop(n)
                if isinstance(n, LeafAcc):
                    for h in n.hooks:
                        r = h(g)
                        if r is not None:
                            g = r
                    if capture is not None and n in capture:
                        captured[n] = g
                    if accumulate:
                        _accumulate(n, g, create_graph, owned.get(id(g)) is g and not n.hooks)
                    continue
                if n.hooks:
                    for h in n.hooks:
                        r = h(g)
                        if r is not None:
                            g = r
                if n.retain is not None:
                    t = n.retain()
                    if t is not None:
                        t.grad = g if create_graph else g.detach()
                if capture is not None:
                    if n in capture:
                        captured[n] = g
                    if n not in need:
                        continue
                if TLS.anomaly:
                    TLS.anomaly_node = n
                    try:
                        cts = n.apply(g)
                    finally:
                        TLS.anomaly_node = None
                else:
                    cts = n.apply(g)
                if len(cts) != len(n.edges):
                    raise AutogradError(f"{n.name} returned {len(cts)} gradients for {len(n.edges)} inputs")
                for e, ct in zip(n.edges, cts):
                    if e is None:
                        continue
                    if need is not None and e not in need:
                        continue
                    leaf = e.__class__ is LeafAcc
                    if leaf:
                        left = deps[e] = deps.get(e, 1) - 1
                    if ct is not None:
                        ct = _fit(ct, e)
                        if e in grads:
                            grads[e] = lax.add(grads[e], ct)
                            owned[id(grads[e])] = grads[e]
                        else:
                            grads[e] = ct
                            if leaf and ct is not g and ct._data.flags.owndata and \
                                    sum(c is ct for c in cts) == 1:
                                owned[id(ct)] = ct  # a fresh array nobody else holds: no copy
                            if not leaf:
                                heapq.heappush(heap, (-e.seq, id(e), e))
                    if leaf and left == 0 and e in grads:
                        heapq.heappush(heap, (_NOW, id(e), e))
                if not retain_graph:
                    n.release()
            # leaves still waiting for a contribution that never came (a branch gave no gradient)
            rest = [e for e in grads if isinstance(e, LeafAcc)]
            if not rest:
                break
            for e in rest:
                deps[e] = 0
                heapq.heappush(heap, (-e.seq, id(e), e))
    return captured


def _accumulate(acc: LeafAcc, g: Tensor, create_graph: bool, owned: bool = False) -> None:
    t = acc.tensor
    if TLS.interpreters[-1].level:
        # ember.jit is tracing: gradients are SSA values, accumulated out of place
        t.grad = g if t.grad is None else lax.add(t.grad, g)
        if not create_graph:
            t.grad = from_array(t.grad._data, t.grad._dtype)
        for h in acc.post_hooks:
            h(t)
        return
    if t.grad is None:
        if create_graph:
            t.grad = g
        else:
            t.grad = from_array(g._data if owned else np.array(g._data, copy=True), g._dtype)
    elif create_graph:
        t.grad = lax.add(t.grad, g)
    else:
        gd = t.grad._data
        if not gd.flags.writeable:
            t.grad = from_array(gd + g._data, t.grad._dtype)
        else:
            np.add(gd, g._data, out=gd, casting="unsafe")
            t.grad._ensure_storage().version += 1
    for h in acc.post_hooks:
        h(t)


def _root_grads(tensors, grad_tensors):
    roots = []
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        if not isinstance(t, Tensor) or not t._rg:
            raise AutogradError(f"element {i} of tensors does not require grad and has no grad_fn")
        if g is None:
            if t._data.size != 1:
                raise AutogradError(f"grad can be implicitly created only for scalar outputs; got shape "
                                    f"{t.shape}: pass gradient=")
            if t._dtype.kind == "c":
                raise AutogradError("grad can be implicitly created only for real scalar outputs; the "
                                    f"output is {t._dtype.name}: take .real or .abs() first, or pass gradient=")
            g = from_array(np.ones(t.shape, t._dtype.np), t._dtype)
        elif not isinstance(g, Tensor):
            g = from_array(np.asarray(g, t._dtype.np), t._dtype)
        if g.shape != t.shape:
            raise AutogradError(f"gradient of shape {g.shape} does not match the output shape {t.shape}")
        roots.append((_edge(t), g))
    return roots


def backward(tensors: Sequence[Tensor], grad_tensors=None, retain_graph: bool | None = None,
             create_graph: bool = False, inputs=None) -> None:
    """Accumulate gradients of `tensors` into the `.grad` of the leaves (or of `inputs` only)."""
    tensors = list(tensors)
    grad_tensors = list(grad_tensors) if grad_tensors is not None else [None] * len(tensors)
    if retain_graph is None:
        retain_graph = create_graph
    roots = _root_grads(tensors, grad_tensors)
    if inputs is None:
        _run(roots, retain_graph, create_graph)
        return
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    accs = [_edge(t) for t in inputs]
    got = _run(roots, retain_graph, create_graph, capture=set(accs), accumulate=False)
    for t, e in zip(inputs, accs):
        if e in got:
            acc = e if isinstance(e, LeafAcc) else LeafAcc(t)
            _accumulate(acc, got[e], create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool = False) -> tuple:
    """Gradients of `outputs` with respect to `inputs`, returned (not accumulated into `.grad`)."""
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    if retain_graph is None:
        retain_graph = create_graph
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t._rg:
            raise AutogradError(f"input {i} does not require grad")
    roots = _root_grads(outputs, grad_outputs)
    edges = [_edge(t) for t in inputs]
    got = _run(roots, retain_graph, create_graph, capture=set(edges), accumulate=False)
    res = []
    for i, e in enumerate(edges):
        g = got.get(e)
        if g is None:
            if not allow_unused:
                raise AutogradError(f"input {i} was not used in computing the outputs; pass "
                                    "allow_unused=True to get None for it")
        elif not create_graph:
            g = g.detach()
        res.append(g)
    return tuple(res)


# ---------------------------------------------------------------- custom functions
class FunctionCtx:
    """The `ctx` of a custom Function: saves tensors for backward."""

    def __init__(self):
        self._saved = ()
        self._versions = ()
        self.needs_input_grad = ()

    def save_for_backward(self, *tensors) -> None:
        self._saved = tensors
        self._versions = tuple((t._ensure_storage(), t._ensure_storage().version) if isinstance(t, Tensor)
                               else None for t in tensors)

    @property
    def saved_tensors(self) -> tuple:
        for t, v in zip(self._saved, self._versions):
            if v is not None and v[0].version != v[1]:
                raise AutogradError("a tensor saved with save_for_backward was modified in place since")
        return self._saved


class Function:
    """A user-defined op with its own forward and backward (PyTorch's autograd.Function).

    Subclasses define `forward(ctx, *args)` returning one Tensor and `backward(ctx, grad)` returning
    one gradient (or None) per forward argument; call it with `MyFn.apply(*args)`. A subclass with
    `always_records = True` gets its backward called whenever grad mode is on, even when no
    argument requires a gradient (a forward that reads parameters of its own, as checkpoint's).
    """

    always_records = False

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError("a Function subclass must define forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("a Function subclass must define backward(ctx, *grads)")

    @classmethod
    def apply(cls, *args):
        ctx = FunctionCtx()
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a._rg for a in args)
        with no_grad():
            out = cls.forward(ctx, *args)
        if not isinstance(out, Tensor):
            raise TypeError(f"{cls.__name__}.forward must return one Tensor, got {type(out).__name__}")
        if TLS.grad_enabled and (any(ctx.needs_input_grad) or cls.always_records) and out._dtype.kind in "fc":
            if out._node is not None or out._storage is not None:
                out = from_array(out._data, out._dtype)
            edges = [_edge(a) if isinstance(a, Tensor) and a._rg else None for a in args]
            node = Node(None, {}, (), (), edges, out)
            node.saved = ()
            node.custom = (cls, ctx)
            out._node = node
            out._rg = True
        return out


# ---------------------------------------------------------------- functional transforms (PI-9)
def _prepare(args, argnums):
    from .tensor import tensor as _tensor
    args = list(args)
    tracked = []
    for i in argnums:
        a = args[i]
        if isinstance(a, Tensor):
            if not (a._rg and TLS.grad_enabled):
                a = a.detach().requires_grad_(True)
        else:
            a = _tensor(a, dtype=None).requires_grad_(True) if isinstance(a, float) else \
                _tensor(float(a)).requires_grad_(True)
        args[i] = a
        tracked.append(a)
    return args, tracked


def value_and_grad(fn: Callable, argnums=0, has_aux: bool = False) -> Callable:
    """`fn` -> a function returning (fn(*args), d fn / d args[argnums]) (JAX's value_and_grad)."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)

    def wrapped(*args, **kwargs):
        outer = TLS.grad_enabled and any(isinstance(args[i], Tensor) and args[i]._rg for i in nums)
        xs, tracked = _prepare(args, nums)
        with enable_grad():
            res = fn(*xs, **kwargs)
        out, aux = res if has_aux else (res, None)
        if not isinstance(out, Tensor) or out._data.size != 1:
            raise TypeError("value_and_grad needs a function returning a scalar tensor"
                            + (" as the first element of (out, aux)" if has_aux else ""))
        if out._rg:
            gs = grad(out, tracked, create_graph=outer, allow_unused=True)
        else:
            gs = (None,) * len(tracked)
        gs = tuple(g if g is not None else from_array(np.zeros(t.shape, t._dtype.np), t._dtype)
                   for g, t in zip(gs, tracked))
        g = gs[0] if isinstance(argnums, int) else gs
        value = out if outer else out.detach()
        return ((value, aux), g) if has_aux else (value, g)

    return wrapped


def grad_fn(fn: Callable, argnums=0, has_aux: bool = False) -> Callable:
    """`fn` -> a function returning d fn / d args[argnums] (JAX's grad); composes for higher order."""
    vg = value_and_grad(fn, argnums, has_aux)

    def wrapped(*args, **kwargs):
        res = vg(*args, **kwargs)
        return (res[1], res[0][1]) if has_aux else res[1]

    return wrapped


from .anomaly import AnomalyError, detect_anomaly, is_anomaly_enabled, set_detect_anomaly  # noqa: E402,F401
