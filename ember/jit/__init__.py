"""ember.jit: trace a function to the IR, optimize it, and run the graph with numpy kernels.

    f = ember.jit(fn)            # or @ember.jit, or ember.jit(fn, opt_level=1)
    f(x, w)                      # traces on the first call, reuses the graph for the same signature
    f.explain                    # ["traced: first call", "retraced: arg 0 shape (4,) != (3,)", ...]
    ember.make_ir(fn)(x, w)      # the traced Graph (print it)

Semantics follow JAX: the function must be pure in its tensor arguments; Tensors (also inside
tuples/lists/dicts) are traced, every other argument is static (part of the cache key); tensors
captured from closures are baked in as constants (ones that require grad are refused while grad
mode is on: pass them as arguments). `loss.backward()` inside the function is traced too, so a
function may return gradients (`w.grad` of its traced arguments). In-place updates of traced
tensors (optimizer steps) are not supported yet: that is the next step (mutation as data flow, see
/work/shared/DESIGN.md). Outputs are plain tensors that do not require grad.
"""
from __future__ import annotations

import sys
import types

from ..ir.core import Var
from ..tensor import Tensor, _wrap  # noqa: F401
from .executor import Executable, run_graph  # noqa: F401
from .passes import PassManager, optimize  # noqa: F401
from .trace import TraceError, flatten, make_ir, trace, unflatten  # noqa: F401


def _signature(args, kwargs):
    leaves, treedef, paths = flatten((tuple(args), dict(kwargs)))
    sig = tuple((tuple(t.shape), t._dtype, bool(t._rg)) for t in leaves)
    return leaves, treedef, paths, sig


def _path_name(p: str) -> str:
    # paths look like "[0][2]" (args) or "[1]['lr']" (kwargs)
    if p.startswith("[0]"):
        rest = p[3:]
        i, _, tail = rest[1:].partition("]")
        return f"arg {i}{tail and tail[0] == '[' and tail or ''}"
    if p.startswith("[1]"):
        return f"kwarg {p[3:]}"
    return p


def _static_leaves(d, path, out):
    if d == "*":
        return
    if d[0] == "static":
        out[path] = d[1]
    elif d[0] == "dict":
        for k, x in zip(d[1], d[2]):
            _static_leaves(x, f"{path}[{k!r}]", out)
    else:
        for i, x in enumerate(d[1]):
            _static_leaves(x, f"{path}[{i}]", out)
    return out


class Jitted:
    """A jitted function: a cache of optimized graphs keyed by input signature."""

    def __init__(self, fn, opt_level: int = 2, verify: bool | None = None):
        self.fn = fn
        self.opt_level = opt_level
        self.verify = verify
        self.cache = {}
        self.explain = []
        self.trace_count = 0
        self._last = None
        self.__name__ = getattr(fn, "__name__", "jitted")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def _reasons(self, treedef, paths, sig):
        if self._last is None:
            return ["traced: first call"]
        ltree, lpaths, lsig = self._last
        out = []
        ls, ns = _static_leaves(ltree, "", {}), _static_leaves(treedef, "", {})
        if lpaths != paths or set(ls) != set(ns):
            return ["retraced: the structure of the arguments changed"]
        for p, (shape, dtype, rg), (oshape, odtype, org) in zip(paths, sig, lsig):
            n = _path_name(p)
            if shape != oshape:
                out.append(f"retraced: {n} shape {shape} != {oshape}")
            if dtype is not odtype:
                out.append(f"retraced: {n} dtype {dtype.name} != {odtype.name}")
            if rg != org:
                out.append(f"retraced: {n} requires_grad {rg} != {org}")
        for p in ns:
            if ns[p] != ls[p]:
                out.append(f"retraced: static {_path_name(p)} {ns[p]!r} != {ls[p]!r}")
        return out or ["retraced: signature seen before but evicted"]

    def lower(self, *args, **kwargs):
        """The optimized Graph for these arguments (traced if not cached)."""
        return self._entry(*_signature(args, kwargs)[1:], args, kwargs)[0].graph

    def _entry(self, treedef, paths, sig, args, kwargs):
        key = (treedef, sig)
        ent = self.cache.get(key)
        if ent is None:
            self.explain.extend(self._reasons(treedef, paths, sig))
            g, out_def = trace(self.fn, args, kwargs)
            g = optimize(g, self.opt_level, self.verify)
            ent = self.cache[key] = (Executable(g), out_def)
            self.trace_count += 1
        self._last = (treedef, paths, sig)
        return ent

    def __call__(self, *args, **kwargs):
        leaves, treedef, paths, sig = _signature(args, kwargs)
        if any(isinstance(t._data, Var) for t in leaves):
            return self.fn(*args, **kwargs)  # called inside another trace: inline it
        exe, out_def = self._entry(treedef, paths, sig, args, kwargs)
        outs = exe.run([t._data for t in leaves])
        return unflatten(out_def, [_wrap(o, dt) for o, dt in
                                   zip(outs, [v.aval.dtype for v in exe.graph.outvars])])

    def __repr__(self):
        return f"<ember.jit of {self.fn!r}: {len(self.cache)} cached graph(s)>"


def jit(fn=None, *, opt_level: int = 2, verify: bool | None = None):
    """Compile `fn` (usable as `@jit` or `@jit(opt_level=1)`)."""
    if fn is None:
        return lambda f: Jitted(f, opt_level, verify)
    return Jitted(fn, opt_level, verify)


def explain(f) -> list:
    """The trace/retrace log of a jitted function (one line per trace, with its reasons)."""
    return list(f.explain)


class _CallableModule(types.ModuleType):
    """`ember.jit(fn)` works although `ember.jit` is this module."""

    def __call__(self, *args, **kwargs):
        return jit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
