"""The tracing interpreter: records each primitive as an IR equation instead of running it.

Traced values are ordinary ember Tensors whose `_data` is an IR `Var` (no Tensor subclass). Autograd
recording (`_record`) happens exactly as in eager mode, so `loss.backward()` inside a traced function
records its backward ops into the same graph.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._core import dtypes as dt
from .._core.errors import EmberError, op_error, user_location
from .._core.state import TLS, interpreter
from ..autograd import _record
from ..ops.core import Aval
from ..tensor import Tensor, _scalar_key, _wrap
from ..ir.core import Eqn, Graph, Literal, Var, literal


class TraceError(EmberError, TypeError):
    """A function cannot be traced as written."""


class TraceInterpreter:
    """Interpreter that builds a Graph."""

    level = 1

    def __init__(self):
        self.eqns = []
        self.invars = []
        self.constvars = []
        self.consts = []
        self._const_of = {}  # id(array) -> (array, Var)

    # ---- operands
    def new_input(self, t: Tensor) -> Tensor:
        v = Var(Aval(t.shape, t._dtype), self)
        self.invars.append(v)
        out = _wrap(v, t._dtype)
        out._rg = t._rg
        return out

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
            d = a._data
            if isinstance(d, Var):
                if d.trace is not self:
                    raise op_error(TraceError, prim.name, "a traced tensor from another (finished) trace "
                                   "was used: tensors created inside a jitted function must not escape it")
                return d
            if a._rg and TLS.grad_enabled:
                raise op_error(TraceError, prim.name,
                               f"a tensor of shape {tuple(a.shape)} that requires grad is captured by the "
                               "jitted function (a closure or global); pass it as an argument so that "
                               "its gradient is traced")
            return self.const(d, a._dtype)
        k = _scalar_key(a)
        if k is not None:
            return literal(a)
        if isinstance(a, (np.ndarray, np.generic)):
            arr = np.asarray(a)
            return self.const(arr, dt.from_numpy_dtype(arr.dtype))
        if isinstance(a, numbers.Number):
            return literal(float(a))
        raise op_error(TypeError, prim.name, f"expected a Tensor or a Python number, got {type(a).__name__}")

    # ---- the interpreter entry point
    def process(self, prim, args, params):
        ins = [self.atom(prim, a) for a in args]
        aval = prim.abstract(*[a.aval for a in ins], **params)
        if aval.weak:  # eager results are strongly typed tensors
            aval = Aval(aval.shape, aval.dtype, False)
        v = Var(aval, self)
        self.eqns.append(Eqn(prim, ins, v, params, user_location()))
        out = _wrap(v, aval.dtype)
        if TLS.grad_enabled and aval.dtype.kind == "f":
            for a in args:
                if isinstance(a, Tensor) and a._rg:
                    _record(prim, args, params, out)
                    break
        return out

    def out_atom(self, t) -> Var | Literal:
        if isinstance(t, Tensor):
            d = t._data
            if isinstance(d, Var):
                if d.trace is not self:
                    raise TraceError("a traced tensor from another trace is returned")
                return d
            return self.const(d, t._dtype)
        raise TraceError(f"cannot return {type(t).__name__} from a traced function")

    def graph(self, outs) -> Graph:
        return Graph(self.constvars, self.consts, self.invars, self.eqns, outs)


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


def unflatten(treedef, leaves):
    it = iter(leaves)

    def build(d):
        if d == "*":
            return next(it)
        tag = d[0]
        if tag == "static":
            return d[1]
        if tag == "dict":
            return {k: build(x) for k, x in zip(d[1], d[2])}
        items = [build(x) for x in d[1]]
        return tuple(items) if tag == "tuple" else items
    return build(treedef)


def trace(fn, args, kwargs=None):
    """Trace `fn(*args, **kwargs)`: (graph, output treedef)."""
    kwargs = kwargs or {}
    leaves, treedef, _ = flatten((tuple(args), dict(kwargs)))
    tr = TraceInterpreter()
    with interpreter(tr):
        traced = [tr.new_input(t) for t in leaves]
        a, k = unflatten(treedef, traced)
        out = fn(*a, **k)
        out_leaves, out_def, _ = flatten(out)
        outs = [tr.out_atom(t) for t in out_leaves]
    return tr.graph(outs), out_def


def make_ir(fn, opt_level: int = 0):
    """`make_ir(f)(*args)`: the Graph of `f` traced at these arguments (optimized at `opt_level`)."""
    def wrapper(*args, **kwargs):
        g, _ = trace(fn, args, kwargs)
        if opt_level:
            from .passes import optimize
            g = optimize(g, opt_level)
        return g
    return wrapper
