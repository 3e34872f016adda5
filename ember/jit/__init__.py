"""ember.jit: trace a function to the IR, optimize it, and run it as one step on a target.

The executor is the CPU target's native step (`ember.runtime.step` over `ember.backend.cpu`)
when a C compiler works, else the numpy arena executor (`ember.runtime.arena`); `backend=`
chooses ("native", "numpy", "sim").

    f = ember.jit(fn)            # or @ember.jit, or ember.jit(fn, opt_level=1)
    f(x, w)                      # traces on the first call, reuses the graph for the same signature
    f.explain                    # ["traced: first call", "retraced: arg 0 shape (4,) != (3,)", ...]
    ember.make_ir(fn)(x, w)      # the traced Graph (print it)

A whole training step traces: forward, `loss.backward()`, `opt.step()`, `zero_grad()`. Tensors
(also inside tuples/lists/dicts) are traced arguments; every other argument is static (part of the
cache key). Tensors the function reaches from outside (a model's parameters and buffers, optimizer
state, learning rates, RNG state) are *state*: inputs read at every call, and, when the function
writes them in place, outputs written back into the same buffers. Gradients that `backward()`
leaves in `.grad` are set after each call as they would be eagerly. Tensors created inside the
function are constants of the trace.

A cached graph is reused while the arguments' shapes, dtypes and requires_grad, the grad mode,
the training mode and tensors of the modules the function called, and the presence of each
`.grad` the function reads before writing stay as they were at trace time; any change retraces
and `explain` says why. Python control flow on a tensor's value raises at trace time, naming the
user's line. Outputs are plain tensors that do not require grad.
"""
from __future__ import annotations

import functools
import sys
import threading
import types

import numpy as np

from .._core.errors import located
from .._core.state import TLS, TRACE_LOCK, debug_level, jit_backend, module_epoch
from ..tensor import Tensor, from_array  # noqa: F401
from ..runtime.arena import ArenaExecutable
from ..runtime.executor import Executable, run_graph  # noqa: F401
from .passes import PassManager, optimize  # noqa: F401
from .trace import Traced, TraceError, flatten, make_ir, trace, unflatten  # noqa: F401
from .report import inspect  # noqa: F401


@functools.lru_cache(maxsize=64)
def _positional(n: int) -> tuple:
    """(treedef, paths) that `flatten` gives for n Tensor positional arguments and no keywords."""
    _, td, ps = flatten((tuple(from_array(np.zeros(())) for _ in range(n)), {}))
    return td, tuple(ps)


def _signature(args, kwargs):
    if not kwargs and all(type(a) is Tensor for a in args):  # the common call: flatten's result, cached
        leaves, (treedef, paths) = list(args), _positional(len(args))
    else:
        leaves, treedef, paths = flatten((tuple(args), dict(kwargs)))
        paths = tuple(paths)
    sig = tuple((tuple(t.shape), t._dtype, bool(t._rg)) for t in leaves)
    sts = [t._storage for t in leaves if t._storage is not None]
    if len(sts) != len(set(map(id, sts))):  # arguments sharing memory: the pattern is part of the key
        first = {}
        sig += tuple(first.setdefault(id(t._storage), i) if t._storage is not None else i
                     for i, t in enumerate(leaves))
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


def _module_state(modules) -> tuple:
    """What a trace assumed about the modules it called: their mode and their tensors' identity."""
    return tuple((m.training, tuple(map(id, m._parameters.values())), tuple(map(id, m._buffers.values())))
                 for m in modules)


def _target(src, leaves) -> Tensor:
    kind, x = src
    return leaves[x] if kind == "arg" else x


def _buffer(src, leaves) -> Tensor:
    """The tensor holding a graph input's buffer now."""
    kind, x = src
    if kind == "grad":
        return _target(x, leaves)._grad
    return leaves[x] if kind == "arg" else x


def _describe(target) -> str:
    kind, x = target
    return f"arg {x}" if kind == "arg" else f"a captured {x._dtype.name}{list(x.shape)} tensor"


def _device_target(backend: str):
    """The device target of a jit backend name."""
    if backend == "sim":
        from ..backend.sim import SimTarget
        return SimTarget()
    from ..backend.cpu import CpuTarget
    return CpuTarget()


class _Entry:
    """One cached trace: its executable and what must hold for a call to reuse it."""

    def __init__(self, traced: Traced, opt_level: int, verify, backend: str = "numpy"):
        self.traced = traced
        self.opt_level = opt_level
        g = optimize(traced.graph, opt_level, verify)
        self.remat_log = []
        if traced.remat:  # recompute checkpointed activations in the backward (remat.py)
            from .remat import rematerialize
            g, self.remat_log = rematerialize(g, traced.remat)
        persistent = {v for target, action, v in traced.grads if action == "new" and target[0] == "obj"}
        self.exe = None
        self.fallback = None  # why a native step was not built, or which units run on the host
        if backend in ("native", "sim"):
            from ..backend.contract import Unsupported
            from ..runtime.step import StepExecutable
            try:
                self.exe = StepExecutable(g, _device_target(backend), persistent)
            except Unsupported as ex:
                self.fallback = f"numpy executor: {ex}"
            else:
                if self.exe.host_units and backend == "native":
                    reasons = self.exe.host_reasons()
                    if any(item[0] == "launch" for item in self.exe.schedule):
                        self.fallback = "on the host, with numpy: " + reasons
                    else:  # nothing native: the numpy arena executor runs it better
                        self.exe, self.fallback = None, "numpy executor: " + reasons
        if self.exe is None:
            self.exe = ArenaExecutable(g, persistent)
        self.graph = g
        self.grad_tensors = {}  # output position -> the Tensor over its persistent buffer
        self.epoch = module_epoch()
        self.mod_state = _module_state(traced.modules)
        self.writes = [(o, traced.sources[i]) for o, i in g.aliases.items()]
        self.out_dtypes = [a.aval.dtype for a in g.outvars]
        self.seen = [None] * len(traced.sources)  # the arrays last checked, per input
        self.captured = [(i, s[1]) for i, s in enumerate(traced.sources) if s[0] == "obj"]
        self.grad_inputs = any(s[0] == "grad" for s in traced.sources)
        self.arg_leaves = [s[1] for s in traced.sources if s[0] == "arg"]
        # a step that writes state or gradients runs one call at a time (two calls at once would
        # race on the same buffers); a pure function's calls run in parallel, each on its own arena
        self.lock = threading.Lock() if g.aliases or traced.grads else None
        self.checker = None  # the reference executor anomaly mode runs the graph on

    def check(self, leaves) -> str | None:
        """None when this trace may run for these arguments, else why not."""
        t = self.traced
        if self.epoch != module_epoch():
            now = _module_state(t.modules)
            if now != self.mod_state:
                for m, a, b in zip(t.modules, self.mod_state, now):
                    if a[0] != b[0]:
                        return (f"retraced: {type(m).__name__} is in "
                                f"{'training' if b[0] else 'eval'} mode (traced in "
                                f"{'training' if a[0] else 'eval'} mode)")
                return "retraced: a parameter or buffer of a module was replaced"
            self.epoch = module_epoch()
        for target, entry in t.grad_guards:
            cur = _target(target, leaves)._grad
            if (cur is None) != (entry is None):
                return (f"retraced: .grad of {_describe(target)} is {'None' if cur is None else 'set'}, "
                        f"it was {'None' if entry is None else 'set'} when traced")
        seen = self.seen
        for i, x in self.captured:  # the common case: the same arrays as at the last call
            if x._data is not seen[i]:
                break
        else:
            if not self.grad_inputs:
                return None
        for i, (src, aval) in enumerate(zip(t.sources, t.avals)):
            if src[0] != "arg":
                d = _buffer(src, leaves)._data
                if d is seen[i]:
                    continue
                seen[i] = d
                if d.shape != aval.shape or d.dtype != aval.dtype.np:
                    seen[i] = None
                    what = "a captured tensor" if src[0] == "obj" else f".grad of {_describe(src[1])}"
                    return (f"retraced: {what} changed from {aval.dtype.name}{list(aval.shape)} "
                            f"to {d.dtype}{list(d.shape)}")
        return None

    def inputs(self, leaves) -> list:
        """The arrays the graph reads, in the order of its inputs."""
        if self.grad_inputs:
            return [_buffer(s, leaves)._data for s in self.traced.sources]
        # arguments first, then captured tensors (the order the tracer adopted them in)
        return [leaves[i]._data for i in self.arg_leaves] + [x._data for _, x in self.captured]

    def run(self, leaves):
        if self.lock is None:
            return self._run(leaves)
        with self.lock:
            return self._run(leaves)

    def _checked(self, inputs) -> list:
        """The outputs computed equation by equation, each result checked for new NaN/inf
        (anomaly mode); the state is written only when no anomaly was found."""
        from ..anomaly import check
        if self.checker is None:
            self.checker = Executable(self.graph)
        outs = self.checker.run(inputs, lambda e, vals, res: check(e.prim.name, vals, res, e.loc))
        for o, i in self.graph.aliases.items():
            np.copyto(inputs[i], outs[o], casting="unsafe")
        return outs

    def _run(self, leaves):
        t = self.traced
        try:
            inputs = self.inputs(leaves)
            outs = self._checked(inputs) if TLS.anomaly else self.exe.run(inputs)
        except IndexError as e:  # an index or class target out of range: name the call's line
            raise located(e) from None
        for _, src in self.writes:  # the executor wrote them in place
            _buffer(src, leaves)._ensure_storage().version += 1
        for target, action, v in t.grads:
            dst = _target(target, leaves)
            if action == "none":
                dst._grad = None
            elif action == "keep":
                dst._grad = v
            elif target[0] == "obj":  # a persistent buffer: the same tensor after every call
                g = self.grad_tensors.get(v)
                if g is None or g._data is not outs[v]:
                    g = self.grad_tensors[v] = from_array(outs[v], self.out_dtypes[v])
                dst._grad = g
            else:
                dst._grad = from_array(outs[v], self.out_dtypes[v])
        dts = self.out_dtypes
        return [from_array(outs[i], dts[i]) for i in range(t.n_user)]


class Jitted:
    """A jitted function: a cache of optimized graphs keyed by input signature, with guards."""

    def __init__(self, fn, opt_level: int = 2, verify: bool | None = None, backend: str | None = None):
        if backend not in (None, "native", "numpy", "sim", "auto"):
            raise ValueError(f"backend must be 'native', 'numpy', 'sim' or 'auto', got {backend!r}")
        self.fn = fn
        self.opt_level = opt_level
        self.verify = verify
        self.backend = backend
        self.cache = {}
        self.explain = []
        self.trace_count = 0
        self._last = None
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def _reasons(self, treedef, paths, sig, modes):
        if self._last is None:
            return ["traced: first call"]
        ltree, lpaths, lsig, lgrad = self._last
        out = []
        ls, ns = _static_leaves(ltree, "", {}), _static_leaves(treedef, "", {})
        if lpaths != paths or set(ls) != set(ns):
            return ["retraced: the structure of the arguments changed"]
        if modes[0] != lgrad[0]:
            out.append(f"retraced: grad mode is {'on' if modes[0] else 'off'} (traced with it "
                       f"{'on' if lgrad[0] else 'off'})")
        if modes[1] is not lgrad[1]:
            name = lambda d: f"on ({d.name})" if d is not None else "off"  # noqa: E731
            out.append(f"retraced: autocast is {name(modes[1])} (traced with it {name(lgrad[1])})")
        for p, (shape, dtype, rg), (oshape, odtype, org) in zip(paths, sig, lsig):
            n = _path_name(p)
            if shape != oshape:
                out.append(f"retraced: {n} shape {shape} != {oshape}")
            if dtype is not odtype:
                out.append(f"retraced: {n} dtype {dtype.name} != {odtype.name}")
            if rg != org:
                out.append(f"retraced: {n} requires_grad {rg} != {org}")
        if len(sig) != len(lsig) or sig[len(paths):] != lsig[len(paths):]:
            out.append("retraced: which arguments share memory changed")
        for p in ns:
            if ns[p] != ls[p]:
                out.append(f"retraced: static {_path_name(p)} {ns[p]!r} != {ls[p]!r}")
        return out or ["retraced: signature seen before but evicted"]

    def lower(self, *args, **kwargs):
        """The optimized Graph for these arguments (traced if not cached)."""
        leaves, treedef, paths, sig = _signature(args, kwargs)
        with TRACE_LOCK.exclusive():
            return self._entry(leaves, treedef, paths, sig, args, kwargs).graph

    def _hit(self, leaves, treedef, paths, sig):
        """(the cached entry for this call or None, why it cannot be used)."""
        modes = (TLS.grad_enabled, TLS.autocast)  # the thread modes a trace depends on
        ent = self.cache.get((treedef, sig, modes))
        if ent is None:
            return None, None
        why = ent.check(leaves)
        if why is not None:
            return None, why
        self._last = (treedef, paths, sig, modes)
        return ent, None

    def _entry(self, leaves, treedef, paths, sig, args, kwargs):
        """The entry for this call, traced if needed (the caller holds TRACE_LOCK exclusively)."""
        ent, why = self._hit(leaves, treedef, paths, sig)
        if ent is not None:
            return ent
        modes = (TLS.grad_enabled, TLS.autocast)
        key = (treedef, sig, modes)
        self.explain.extend([why] if why else self._reasons(treedef, paths, sig, modes))
        backend = self.backend or jit_backend()
        if backend == "auto":
            from ..backend.cpu import compiler
            backend = "native" if compiler.available() else "numpy"
        ent = self.cache[key] = _Entry(trace(self.fn, args, kwargs), self.opt_level, self.verify, backend)
        self.trace_count += 1
        if ent.fallback:
            self.explain[-1] += f" ({ent.fallback})"
        level = debug_level()
        if level >= 1:
            from .report import dump, report, summary
            print(summary(self.__name__, ent, self.explain[-1]), file=sys.stderr, flush=True)
            if level >= 2:
                dump(report(self.__name__, ent.traced, ent, self.explain[-1:], leaves if level >= 4 else None),
                     level)
        self._last = (treedef, paths, sig, modes)
        return ent

    def __call__(self, *args, **kwargs):
        if TLS.interpreters[-1].level:
            return self.fn(*args, **kwargs)  # called inside another trace: inline it
        leaves, treedef, paths, sig = _signature(args, kwargs)
        with TRACE_LOCK.shared():  # no trace swaps the arrays of captured tensors meanwhile
            ent = self._hit(leaves, treedef, paths, sig)[0]
            if ent is not None:
                return unflatten(ent.traced.out_def, ent.run(leaves))
        with TRACE_LOCK.exclusive():  # a trace: every other jitted call waits until it ends
            ent = self._entry(leaves, treedef, paths, sig, args, kwargs)
            return unflatten(ent.traced.out_def, ent.run(leaves))

    def __repr__(self):
        return f"<ember.jit of {self.fn!r}: {len(self.cache)} cached graph(s)>"


def jit(fn=None, *, opt_level: int = 2, verify: bool | None = None, backend: str | None = None):
    """Compile `fn` (usable as `@jit` or `@jit(opt_level=1)`).

    `backend`: "native" (the whole step as one generated C program), "numpy" (the arena
    executor), "sim" (the native step's units run by numpy: the runtime without a compiler) or
    "auto" (native when a C compiler works); None follows `ember.jit_backend()`.
    A graph with an equation that has no native form runs on the numpy executor (`explain`
    says which)."""
    if fn is None:
        return lambda f: Jitted(f, opt_level, verify, backend)
    return Jitted(fn, opt_level, verify, backend)


def explain(f) -> list:
    """The trace/retrace log of a jitted function (one line per trace, with its reasons)."""
    return list(f.explain)


class _CallableModule(types.ModuleType):
    """`ember.jit(fn)` works although `ember.jit` is this module."""

    def __call__(self, *args, **kwargs):
        return jit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
