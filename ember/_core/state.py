"""All of ember's global state, in one place.

- grad mode (thread-local): whether ops record the autograd tape. `no_grad`/`enable_grad`/
  `set_grad_enabled` change it for a block.
- the interpreter stack (thread-local): the bottom entry evaluates eagerly; a tracer pushes
  itself while it traces a function (`interpreter`).
- autocast (thread-local): inside `ember.autocast`, `TLS.autocast` is the lower-precision dtype
  that matmuls and convolutions run in (`ember.api.precision`); None outside.
- inference mode (thread-local): `inference_mode` turns grad mode off for a block, as no_grad.
- the print options (process-wide): `set_printoptions` (precision, threshold, edge items, line
  width, scientific notation) for every tensor's repr (`print_options`).
- the default floating dtype (process-wide): `set_default_dtype`/`default_dtype`.
- the default random generator (process-wide): created on first use, see `ember.random`.
- the debug level: `EMBER_DEBUG` from the environment, or `debug_level(n)` for a block.
- anomaly detection (thread-local): `ember.autograd.detect_anomaly` checks every op's result
  for new NaN/inf (`TLS.anomaly`; `ember/anomaly.py`).
- the trace observer (thread-local): while ember.jit traces, it learns which tensors' `.grad`
  the function reads or rebinds and which modules it calls (`TLS.observer`, None otherwise).
- the module epoch (process-wide): a counter bumped whenever a Module's attributes or training
  mode change; ember.jit re-checks its guards on modules only when it moved (`module_epoch`).
- the thread count (process-wide, MD-16): `set_num_threads(n)` is the one knob for BLAS and
  ember's native kernels, so the two never run as separate pools; `num_threads(n)` for a block.
  Unset, it is `OMP_NUM_THREADS` or the number of CPUs this process may run on.
- the jit backend (process-wide): "native" or "numpy", from `set_jit_backend` or
  `EMBER_JIT_BACKEND`; unset ("auto"), native when a C compiler works.
- the trace lock (process-wide): a jitted call runs holding it shared; a trace holds it alone,
  because tracing swaps the captured tensors' arrays for tracer values until it ends
  (`TRACE_LOCK`). Eager ops do not take it: see docs/threads.md for what may be shared.
- the step's BLAS (process-wide, read once): `EMBER_BLAS` names the CBLAS whose GEMMs the native
  step calls: "auto" (unset: Intel MKL when installed, else numpy's OpenBLAS), "mkl", "numpy",
  or a path or soname of any CBLAS library (`blas_choice`).

Importing this module reads no files, starts no threads and compiles nothing.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

from . import dtypes


_base_interpreter = None  # the eager interpreter, installed once by ember.tensor


class _Local(threading.local):
    """Per-thread state; every thread starts with grad mode on and the eager interpreter."""

    def __init__(self):
        self.grad_enabled = True
        self.interpreters = [] if _base_interpreter is None else [_base_interpreter]
        self.observer = None  # the tracer observing `.grad` reads and writes, while tracing
        self.anomaly = False  # detect_anomaly: name the first op that produced a non-finite value
        self.anomaly_node = None  # the node whose backward runs, while anomaly detection is on
        self.autocast = None  # the lower-precision dtype inside an `ember.autocast` block, else None
        self.spmd = False  # tracing for ember.distributed.spmd: shard() annotations become equations


TLS = _Local()

_default_float = dtypes.float32
default_generator = None  # set lazily by ember.random
_debug = None
_module_epoch = 0
_num_threads = None
_jit_backend = None


class SharedLock:
    """A readers-writer lock: many `shared()` holders at once, or one `exclusive()` holder.
    A waiting exclusive holder stops new shared ones from entering, so it cannot starve; a thread
    already holding it exclusively may take it again either way."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = None  # the thread holding it exclusively
        self._depth = 0
        self._waiting = 0

    def shared(self) -> "_SharedHold":
        """A context manager holding the lock shared (a plain object: every jitted call takes it)."""
        return _SharedHold(self)

    @contextlib.contextmanager
    def exclusive(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                self._waiting += 1
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._waiting -= 1
                self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


class _SharedHold:
    __slots__ = ("lock", "nested")

    def __init__(self, lock: SharedLock):
        self.lock, self.nested = lock, False

    def __enter__(self):
        lk = self.lock
        if lk._writer == threading.get_ident():  # held exclusively by this thread already
            self.nested = True
            return self
        with lk._cond:
            while lk._writer is not None or lk._waiting:
                lk._cond.wait()
            lk._readers += 1
        return self

    def __exit__(self, *exc):
        if self.nested:
            return False
        lk = self.lock
        with lk._cond:
            lk._readers -= 1
            if not lk._readers:
                lk._cond.notify_all()
        return False


TRACE_LOCK = SharedLock()


def module_epoch() -> int:
    """A counter that moves whenever some Module's attributes or training mode change."""
    return _module_epoch


def bump_module_epoch() -> None:
    global _module_epoch
    _module_epoch += 1


def is_grad_enabled() -> bool:
    """True when ops record the autograd tape in this thread."""
    return TLS.grad_enabled


@contextlib.contextmanager
def set_grad_enabled(mode: bool):
    """Turn tape recording on or off for a block (usable as a context manager)."""
    prev = TLS.grad_enabled
    TLS.grad_enabled = bool(mode)
    try:
        yield
    finally:
        TLS.grad_enabled = prev


class _GradMode(contextlib.ContextDecorator):
    """Sets grad mode for a block. As a decorator, each call gets its own instance, so one
    decorated function may run in many threads at once (the saved mode is per call)."""

    mode = False

    def _recreate_cm(self):
        return type(self)()

    def __enter__(self):
        self._prev = TLS.grad_enabled
        TLS.grad_enabled = self.mode

    def __exit__(self, *exc):
        TLS.grad_enabled = self._prev


class no_grad(_GradMode):
    """Context manager and decorator: ops inside record no tape."""


class enable_grad(_GradMode):
    """Context manager and decorator: ops inside record the tape even under no_grad."""

    mode = True


class inference_mode(_GradMode):
    """PyTorch's inference_mode: no tape inside (mode=False: leaves grad mode as it is)."""

    def __init__(self, mode: bool = True):
        self._on = bool(mode)

    def _recreate_cm(self):
        return type(self)(self._on)

    def __enter__(self):
        self._prev = TLS.grad_enabled
        if self._on:
            TLS.grad_enabled = False


def is_inference_mode_enabled() -> bool:
    """True inside an active `inference_mode` block of this thread (ember: grad mode is off)."""
    return not TLS.grad_enabled


# ---- how tensors print (process-wide): set_printoptions
PRINT_DEFAULTS = {"precision": 8, "threshold": 200, "edgeitems": 3, "linewidth": 75, "sci_mode": None}
PRINT_PROFILES = {"default": PRINT_DEFAULTS, "short": {"precision": 2, "threshold": 1000, "edgeitems": 2},
                  "full": {"threshold": sys.maxsize}}
print_options = dict(PRINT_DEFAULTS)


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None, profile=None,
                     sci_mode=None) -> None:
    """How tensors print (PyTorch's arguments): digits, summarising threshold, edge items, width,
    scientific notation (True/False/None = automatic); `profile` "default", "short" or "full"."""
    if profile is not None:
        if profile not in PRINT_PROFILES:
            raise ValueError(f"profile must be one of {sorted(PRINT_PROFILES)}, got {profile!r}")
        print_options.clear()
        print_options.update(PRINT_DEFAULTS, **PRINT_PROFILES[profile])
    for k, v in (("precision", precision), ("threshold", threshold), ("edgeitems", edgeitems),
                 ("linewidth", linewidth)):
        if v is not None:
            print_options[k] = sys.maxsize if k == "threshold" and v == float("inf") else int(v)
    print_options["sci_mode"] = sci_mode


def default_dtype() -> dtypes.DType:
    """The floating dtype used for Python floats and int/int true division."""
    return _default_float


def set_default_dtype(dtype) -> None:
    """Set the default floating dtype (float32 unless changed)."""
    global _default_float
    d = dtypes.as_dtype(dtype)
    if d.kind != "f":
        raise TypeError(f"default dtype must be floating, got {d.name}")
    _default_float = d


@contextlib.contextmanager
def default_dtype_as(dtype):
    """Use another default floating dtype for a block."""
    prev = _default_float
    set_default_dtype(dtype)
    try:
        yield
    finally:
        set_default_dtype(prev)


def install_base_interpreter(interp) -> None:
    """Make `interp` the bottom of every thread's interpreter stack (the eager interpreter)."""
    global _base_interpreter
    _base_interpreter = interp
    if not TLS.interpreters:
        TLS.interpreters.append(interp)


@contextlib.contextmanager
def interpreter(interp):
    """Push an interpreter (a tracer, say) on this thread's stack for a block."""
    TLS.interpreters.append(interp)
    try:
        yield interp
    finally:
        TLS.interpreters.pop()


def debug_level() -> int:
    """The EMBER_DEBUG level (0 = silent)."""
    global _debug
    if _debug is None:
        try:
            _debug = int(os.environ.get("EMBER_DEBUG", "0") or 0)
        except ValueError:
            _debug = 0
    return _debug


@contextlib.contextmanager
def debug(level: int):
    """Set the debug level for a block."""
    global _debug
    prev = debug_level()
    _debug = int(level)
    try:
        yield
    finally:
        _debug = prev


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """The number of threads BLAS and ember's native kernels use (read at every jitted call)."""
    global _num_threads
    if _num_threads is None:  # decided once, on first use: no system call per step
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Use `n` threads in BLAS and in ember's native kernels (one pool, one knob)."""
    global _num_threads
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads needs a positive count, got {n}")
    from . import blas
    blas.set_num_threads(n)
    _num_threads = n


@contextlib.contextmanager
def num_threads(n: int):
    """Use `n` threads for a block."""
    prev = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(prev)


def blas_choice() -> str:
    """Which CBLAS the native step calls: "auto", "mkl", "numpy" or a library path (`EMBER_BLAS`)."""
    env = os.environ.get("EMBER_BLAS", "").strip()
    return env.lower() if env.lower() in ("auto", "mkl", "numpy") else env or "auto"


def jit_backend() -> str:
    """The executor ember.jit builds by default: "native", "numpy", "sim" or "auto" (native when a C
    compiler works)."""
    if _jit_backend is not None:
        return _jit_backend
    env = os.environ.get("EMBER_JIT_BACKEND", "").strip().lower()
    return env if env in ("native", "numpy", "sim") else "auto"


def set_jit_backend(name: str) -> None:
    """Make ember.jit build "native", "numpy", "sim" or "auto" executors by default."""
    global _jit_backend
    if name not in ("native", "numpy", "sim", "auto"):
        raise ValueError(f"jit backend must be 'native', 'numpy', 'sim' or 'auto', got {name!r}")
    _jit_backend = name
