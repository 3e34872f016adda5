"""The tracing interpreter: records each primitive as an IR equation instead of running it.

Traced values are ordinary ember Tensors whose `_data` is an IR `Var` (no Tensor subclass). Autograd
recording (`record`) happens exactly as in eager mode, so `loss.backward()` inside a traced function
records its backward ops into the same graph.

Mutation becomes data flow (docs/design.md). Every buffer that outlives the trace is a *root*: the
function's tensor arguments, and any tensor that existed before the trace and that the function
touches (parameters, gradients, optimizer state, BatchNorm statistics, RNG state). A root enters the
graph as an input; the tracer keeps, per storage, the SSA value the storage currently holds, so an
in-place op (`assign`) just moves that value on, and a write through a view becomes
`select(mask, scatter(new), base)` on the base. At the end every root whose value moved is a graph
output aliased to its input: the executor writes it back into the same buffer. While tracing, the
roots' tensors hold Vars; they get their arrays back when the trace ends, whatever happens.

`.grad` attributes are Python state, not storage: the tracer observes their reads and writes
(`TLS.observer`) to learn what the function needs at entry (guarded) and leaves at exit.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._core import dtypes as dt
from .._core.errors import EmberError, op_error, user_location
from .._core.state import TLS, interpreter, set_grad_enabled
from ..autograd import check_inplace, record, rewrite_history, scatter_into_base
from ..ops import lax
from ..ops.core import Aval
from ..tensor import Tensor, from_array, make_view
from ..ir.core import Eqn, Graph, Literal, Var, literal


class TraceError(EmberError, TypeError):
    """A function cannot be traced as written."""


class Root:
    """A buffer that outlives the trace: argument `arg` (an index) or captured `tensor`."""

    __slots__ = ("tensor", "invar", "arg", "storage")

    def __init__(self, tensor, invar, arg, storage):
        self.tensor, self.invar, self.arg, self.storage = tensor, invar, arg, storage


class TraceInterpreter:
    """Interpreter that builds a Graph."""

    level = 1

    def __init__(self):
        self.eqns = []
        self.invars = []
        self.constvars = []
        self.consts = []
        self._const_of = {}   # id(array) -> (array, Var)
        self.roots = {}       # Storage -> Root, in order of adoption (= order of the graph inputs)
        self.cur = {}         # Storage -> the Var its root currently holds
        self.views = {}       # view Tensor -> (storage version, Var) its value was computed at
        self.aliases = {}     # Tensor from detach() -> the tensor it was detached from (same memory)
        self.saved = {}       # Tensor -> (data, node, rg): tensors to give back after the trace
        self.grad_first = {}  # Tensor -> (first access is a write, .grad at entry, external)
        self.modules = {}     # id -> Module called while tracing
        self.remat = []       # (out Vars of the equations, output Vars) per checkpointed call

    # ---- values of tensors
    def _save(self, t: Tensor) -> None:
        if t not in self.saved:
            self.saved[t] = (t._data, t._node, t._rg)

    def adopt(self, t: Tensor, arg: int | None = None) -> Root:
        """Make the buffer behind `t` (an argument or a tensor from outside) a graph input."""
        st = t._ensure_storage()
        root_t = t if (arg is not None or t._base is None) else t._base
        arr = root_t._data
        if not isinstance(arr, np.ndarray):
            raise TraceError(f"a tensor of shape {tuple(t.shape)} aliases an argument of the jitted "
                             "function in a way ember.jit cannot follow; pass a copy")
        iv = Var(Aval(arr.shape, root_t._dtype), self)
        self.invars.append(iv)
        r = self.roots[st] = Root(root_t, iv, arg, st)
        self.cur[st] = iv
        self._save(root_t)
        root_t._data = iv
        if arg is not None:
            root_t._node = None  # arguments are leaves of the traced function
        return r

    def alias(self, new: Tensor, old: Tensor) -> None:
        """`new` shares `old`'s memory and value (detach): it reads whatever `old` reads, so a
        detached view is the view, not its base."""
        self.aliases[new] = old

    def remat_region(self, fn, args, kwargs):
        """Trace `fn(*args, **kwargs)` (an `ember.utils.checkpoint` call) and remember which
        equations it made and which values it returned: the rematerialization pass recomputes
        the others for the backward instead of keeping them (remat.py)."""
        start = len(self.eqns)
        out = fn(*args, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        vals = {self.value(t) for t in outs if isinstance(t, Tensor)}
        made = frozenset(e.out for e in self.eqns[start:])
        if made:
            self.remat.append((made, frozenset(v for v in vals if isinstance(v, Var))))
        return out

    def value(self, t: Tensor) -> Var:
        """The SSA value `t` holds now (adopting it if it comes from outside the trace)."""
        src = self.aliases.get(t)
        if src is not None:
            v = self.value(src)
            if t._data is not v:
                if isinstance(t._data, np.ndarray):
                    self._save(t)
                t._data = v
            return v
        st = t._storage
        if st is not None:
            cur = self.cur.get(st)
            # (a tensor sharing the storage without view bookkeeping and with another type, like
            # `view.detach()`, keeps the value it was created with)
            if cur is not None and (t._base is not None or t._data.shape == cur.aval.shape
                                    and t._dtype is cur.aval.dtype):
                if t._base is None or st in self.roots and self.roots[st].tensor is t:
                    if t._data is not cur:
                        if isinstance(t._data, np.ndarray):
                            self._save(t)
                        t._data = cur
                    return cur
                hit = self.views.get(t)
                if hit is not None and hit[0] == st.version:
                    return hit[1]
                v = cur  # a view whose base changed (or a view from outside): rebuild it
                for prim, params in t._extra["view_fn"]:
                    v = self.emit(prim, [v], params)
                if isinstance(t._data, np.ndarray):
                    self._save(t)
                t._data = v
                self.views[t] = (st.version, v)
                return v
        d = t._data
        if d.__class__ is Var:
            if d.trace is not self:
                raise TraceError("a traced tensor from another (finished) trace was used: tensors "
                                 f"created inside a jitted function must not escape it (at {user_location()})")
            return d
        self.adopt(t)
        return self.value(t)

    def const(self, arr: np.ndarray, dtype) -> Var:
        hit = self._const_of.get(id(arr))
        if hit is not None and hit[0] is arr:
            return hit[1]
        v = Var(Aval(arr.shape, dtype), self)
        self.constvars.append(v)
        self.consts.append(arr)
        self._const_of[id(arr)] = (arr, v)
        return v

    def atom(self, prim, a):
        if isinstance(a, Tensor):
            return self.value(a)
        k = dt.scalar_kind(a)
        if k is not None:
            return literal(a)
        if isinstance(a, (np.ndarray, np.generic)):
            arr = np.asarray(a)
            return self.const(arr, dt.from_numpy_dtype(arr.dtype))
        if isinstance(a, numbers.Number):
            return literal(float(a))
        raise op_error(TypeError, prim.name, f"expected a Tensor or a Python number, got {type(a).__name__}")

    def emit(self, prim, ins, params) -> Var:
        """Append `prim(*ins)` (Vars/Literals) to the graph, without autograd."""
        aval = prim.abstract(*[a.aval for a in ins], **params)
        if aval.weak:  # eager results are strongly typed tensors
            aval = Aval(aval.shape, aval.dtype, False)
        v = Var(aval, self)
        self.eqns.append(Eqn(prim, ins, v, params, user_location()))
        return v

    # ---- the interpreter entry points
    def process(self, prim, args, params):
        v = self.emit(prim, [self.atom(prim, a) for a in args], params)
        out = from_array(v, v.aval.dtype)
        if prim.is_view and isinstance(args[0], Tensor):
            src = args[0]
            st = src._ensure_storage()
            if st not in self.cur:
                self.cur[st] = self.value(src)
            make_view(out, src, prim, params)
            self.views[out] = (st.version, v)
        if TLS.grad_enabled and v.aval.dtype.kind in "fc":
            for a in args:
                if isinstance(a, Tensor) and a._rg:
                    record(prim, args, params, out)
                    break
        return out

    def assign(self, t: Tensor, new: Tensor) -> Tensor:
        """An in-place write under tracing: the storage of `t` now holds a new SSA value."""
        recording = TLS.grad_enabled
        check_inplace(t, new, recording)
        with set_grad_enabled(recording):
            if new._dtype is not t._dtype:
                new = lax.convert(new, t._dtype)
            if tuple(new.shape) != tuple(t.shape):
                new = lax.broadcast_in_dim(new, tuple(t.shape), tuple(range(t.ndim - new.ndim, t.ndim)))
        self.value(t)  # adopts `t` if it comes from outside
        nv = self.value(new)
        st = t._ensure_storage()
        nb = None
        if t._base is None or self.roots.get(st) is not None and self.roots[st].tensor is t:
            self.cur[st] = nv
        else:
            base = t._base
            with set_grad_enabled(recording and (new._rg or base._rg)):
                nb = scatter_into_base(base, t._extra["view_fn"], new)
            self.cur[st] = self.value(nb)
            if base._data is not self.cur[st]:
                if isinstance(base._data, np.ndarray):
                    self._save(base)
                base._data = self.cur[st]
        t._data = nv
        st.version += 1
        if t._base is not None:
            self.views[t] = (st.version, nv)
        rewrite_history(t, new, recording, st, nb)
        return t

    # ---- observation of Python-side state
    def grad_access(self, t: Tensor, write: bool) -> None:
        if t not in self.grad_first:
            external = t in self.saved or isinstance(t._data, np.ndarray)
            self.grad_first[t] = (write, t._grad, external)

    def module_called(self, m) -> None:
        self.modules[id(m)] = m

    def out_atom(self, t) -> Var | Literal:
        if isinstance(t, Tensor):
            return self.value(t)
        raise TraceError(f"cannot return {type(t).__name__} from a traced function")

    def restore(self) -> None:
        """Give every tensor from outside its array and its `.grad` back."""
        for t, (data, node, rg) in self.saved.items():
            t._data, t._node, t._rg = data, node, rg
        for t, (_, entry, external) in self.grad_first.items():
            if external:
                t._grad = entry


# ---------------------------------------------------------------- pytrees
def flatten(tree, path="", leaves=None, paths=None):
    """(leaves, treedef, paths): Tensors are leaves; tuples/lists/dicts are containers; anything
    else is a static value kept in the treedef."""
    if leaves is None:
        leaves, paths = [], []
    if isinstance(tree, Tensor):
        leaves.append(tree)
        paths.append(path)
        return leaves, "*", paths
    if isinstance(tree, (tuple, list)):
        defs = tuple(flatten(x, f"{path}[{i}]", leaves, paths)[1] for i, x in enumerate(tree))
        return leaves, (type(tree).__name__, defs), paths
    if isinstance(tree, dict):
        keys = tuple(tree)
        defs = tuple(flatten(tree[k], f"{path}[{k!r}]", leaves, paths)[1] for k in keys)
        return leaves, ("dict", keys, defs), paths
    try:
        hash(tree)
    except TypeError:
        raise TraceError(f"argument {path or '?'} of type {type(tree).__name__} is neither a Tensor, "
                         "a container of them, nor a hashable static value") from None
    return leaves, ("static", tree), paths


def _build(d, it):
    if d == "*":
        return next(it)
    tag = d[0]
    if tag == "static":
        return d[1]
    if tag == "dict":
        return {k: _build(x, it) for k, x in zip(d[1], d[2])}
    items = [_build(x, it) for x in d[1]]
    return tuple(items) if tag == "tuple" else items


def unflatten(treedef, leaves):
    # a module-level helper, not a recursive closure: that would be a reference cycle keeping the
    # leaves (the caller's results) alive until the garbage collector runs
    return _build(treedef, iter(leaves))


class Traced:
    """What a trace produced: the graph, and how its inputs and outputs map to Python state.

    - `sources`: per graph input, where its buffer is at call time: ("arg", leaf index),
      ("obj", tensor) for a tensor from outside, or ("grad", target) for the `.grad` of a target
      (("arg", i) or ("obj", tensor)); `avals` their types;
    - outputs: the user's `n_user` outputs, then one per moved root (`graph.aliases`), then one
      per new gradient (`grads`);
    - `grads`: (target, action, output index): target is ("arg", i) or ("obj", tensor); action is
      "none" (set `.grad` to None), "keep" (set it to the tensor in the output slot) or "new";
    - `grad_guards`: (target, `.grad` at entry) for every `.grad` the function read before writing;
    - `modules`: the modules the function called (their mode and tensors are guarded);
    - `remat`: the `ember.utils.checkpoint` calls traced, for the rematerialization pass.
    """

    def __init__(self, graph, out_def, n_user, sources, avals, grads, grad_guards, modules, remat=()):
        self.graph, self.out_def, self.n_user = graph, out_def, n_user
        self.sources, self.avals, self.grads = sources, avals, grads
        self.grad_guards, self.modules = grad_guards, modules
        self.remat = list(remat)  # checkpointed regions: (equation outputs, region outputs)


def trace(fn, args, kwargs=None) -> Traced:
    """Trace `fn(*args, **kwargs)` with abstract values; the tensors it touches are left as found."""
    kwargs = kwargs or {}
    leaves, treedef, _ = flatten((tuple(args), dict(kwargs)))
    tr = TraceInterpreter()
    prev_obs = TLS.observer
    TLS.observer = tr
    try:
        with interpreter(tr):
            arg_root = {}
            for i, t in enumerate(leaves):
                st = t._storage
                r = tr.roots.get(st) if st is not None else None
                if r is None:
                    tr.adopt(t, arg=i)
                elif r.tensor is not t and (t.shape != r.tensor.shape or t._dtype is not r.tensor._dtype):
                    raise TraceError(f"arguments {r.arg} and {i} of the jitted function share memory with "
                                     "different shapes; pass copies")
                arg_root[i] = tr.roots[t._storage]
            out = fn(*args, **kwargs)
            out_leaves, out_def, _ = flatten(out)
            outs = [tr.out_atom(t) for t in out_leaves]
            n_user = len(outs)
            aliases = {}
            for pos, r in enumerate(tr.roots.values()):
                c = tr.cur[r.storage]
                if c is not r.invar:
                    aliases[len(outs)] = pos
                    outs.append(c)
            arg_of = {id(r.tensor): i for i, r in arg_root.items()}
            grads, guards = [], []
            for t, (first_write, entry, external) in tr.grad_first.items():
                if not external:
                    continue
                target = ("arg", arg_of[id(t)]) if id(t) in arg_of else ("obj", t)
                if not first_write:
                    guards.append((target, entry))
                g = t._grad
                if g is entry:  # unchanged (written in place, if at all, through its storage)
                    continue
                if g is None:
                    grads.append((target, "none", None))
                elif g in tr.saved or not isinstance(g._data, Var):
                    grads.append((target, "keep", g))
                else:
                    grads.append((target, "new", len(outs)))
                    outs.append(tr.value(g))
            grad_of = {id(entry): t for t, (_, entry, ext) in tr.grad_first.items() if ext and entry is not None}
            sources = []  # where each graph input's buffer is found at call time
            for r in tr.roots.values():
                if r.arg is not None:
                    sources.append(("arg", r.arg))
                elif id(r.tensor) in grad_of:  # a `.grad` read at entry: whatever `.grad` is then
                    owner = grad_of[id(r.tensor)]
                    sources.append(("grad", ("arg", arg_of[id(owner)]) if id(owner) in arg_of else ("obj", owner)))
                else:
                    sources.append(("obj", r.tensor))
            avals = [r.invar.aval for r in tr.roots.values()]
            g = Graph(tr.constvars, tr.consts, tr.invars, tr.eqns, outs, aliases)
            return Traced(g, out_def, n_user, sources, avals, grads, guards, list(tr.modules.values()), tr.remat)
    finally:
        TLS.observer = prev_obs
        tr.restore()


def make_ir(fn, opt_level: int = 0):
    """`make_ir(f)(*args)`: the Graph of `f` traced at these arguments (optimized at `opt_level`)."""
    def wrapper(*args, **kwargs):
        g = trace(fn, args, kwargs).graph
        if opt_level:
            from .passes import optimize
            g = optimize(g, opt_level)
        return g
    return wrapper
