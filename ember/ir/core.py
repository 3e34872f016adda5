"""ember's IR: typed SSA values with value semantics.

- `Var`: one SSA value, typed by an `Aval` (shape, dtype, weak flag). While tracing, a Var is also
  the `_data` of an ember Tensor, so it offers the read-only facts an ndarray would (`shape`, `ndim`,
  `size`, `dtype`); anything that needs the *value* raises `ConcretizationError` naming the user's line.
- `Literal`: a scalar constant written inline (weak Python scalars, or folded constants).
- `Eqn`: `out = prim[params](*inputs)`, with the source location ("file:line") of the user code.
- `Graph`: `{ lambda constvars ; invars. let eqns in (outvars) }`; `consts` holds the constvars'
  arrays (None after parsing text). `aliases` maps an output position to the input position whose
  buffer it overwrites (state updated in place: parameters, optimizer state, RNG state).
"""
from __future__ import annotations

import itertools

import numpy as np

from .._core import dtypes as dt
from .._core.errors import ConcretizationError, user_location  # noqa: F401
from ..ops.core import Aval

_ids = itertools.count()


class _Flags:
    owndata = False
    writeable = False
    c_contiguous = True
    f_contiguous = False


class Var:
    """One SSA value of a graph."""

    __slots__ = ("aval", "id", "trace", "__weakref__")
    flags = _Flags()

    def __init__(self, aval: Aval, trace=None):
        self.aval = aval
        self.id = next(_ids)
        self.trace = trace

    # ndarray-like facts, so that Tensor.shape/ndim/numel work on traced tensors
    @property
    def shape(self) -> tuple:
        return self.aval.shape

    @property
    def ndim(self) -> int:
        return len(self.aval.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.aval.shape, dtype=np.int64))

    @property
    def dtype(self):
        return self.aval.dtype.np

    def __repr__(self) -> str:
        return f"Var#{self.id}:{type_str(self.aval)}"

    # value-dependent operations: refused while tracing
    def _concrete(self, what: str):
        raise ConcretizationError(
            f"{what} needs the value of a traced tensor {type_str(self.aval)}, but ember.jit traces "
            f"with abstract values (value-dependent Python control flow is not supported; use "
            f"ember.where/select, or mark the argument static) (at {user_location()})")

    def __bool__(self):
        self._concrete("bool()")

    def __array__(self, dtype=None, copy=None):
        self._concrete("converting to a numpy array (.numpy()/np.asarray)")

    def item(self, *a):
        self._concrete("item()/float()/int()")

    def reshape(self, *a, **k):
        self._concrete("item()/float()/int()")

    def tolist(self):
        self._concrete("tolist()")

    def astype(self, *a, **k):
        self._concrete("a host-side dtype conversion")

    def __float__(self):
        self._concrete("float()")

    def __int__(self):
        self._concrete("int()")

    def __index__(self):
        self._concrete("using a traced tensor as an index")

    def __iter__(self):
        self._concrete("iterating")

    def _host(name):
        def f(self, *a, **k):
            self._concrete(f"{name}() on the host")
        f.__name__ = name
        return f

    for _n in ("min", "max", "sum", "mean", "any", "all", "copy", "ravel", "__getitem__", "__lt__",
               "__le__", "__gt__", "__ge__", "__add__", "__sub__", "__mul__", "__truediv__"):
        locals()[_n] = _host(_n)
    del _n, _host

    def __len__(self):
        return self.aval.shape[0] if self.aval.shape else 0


class Literal:
    """An inline scalar constant: a weak Python scalar, or a strongly typed numpy scalar."""

    __slots__ = ("value", "aval")

    def __init__(self, value, aval: Aval):
        self.value = value
        self.aval = aval

    def __repr__(self) -> str:
        return f"Literal({self.value!r}:{type_str(self.aval)})"


def literal(value) -> Literal:
    """A weak literal for a Python bool/int/float."""
    k = "b" if isinstance(value, (bool, np.bool_)) else "i" if isinstance(value, int) else "f"
    return Literal(value, Aval((), dt.weak_scalar_dtype(k, dt.float32), True))


class Eqn:
    """`out = prim[params](*inputs)`."""

    __slots__ = ("prim", "inputs", "out", "params", "loc")

    def __init__(self, prim, inputs, out: Var, params: dict, loc: str = ""):
        self.prim = prim
        self.inputs = list(inputs)
        self.out = out
        self.params = dict(params)
        self.loc = loc

    def __repr__(self) -> str:
        return f"Eqn({self.prim.name}, {self.inputs}, {self.out})"


class Graph:
    """A function in SSA form."""

    def __init__(self, constvars, consts, invars, eqns, outvars, aliases=None):
        self.constvars = list(constvars)
        self.consts = list(consts) if consts is not None else [None] * len(self.constvars)
        self.invars = list(invars)
        self.eqns = list(eqns)
        self.outvars = list(outvars)
        self.aliases = dict(aliases or {})

    def __str__(self) -> str:
        from .printer import print_graph
        return print_graph(self)

    def pretty(self, locations: bool = True) -> str:
        from .printer import print_graph
        return print_graph(self, locations=locations)

    __repr__ = __str__


# ---------------------------------------------------------------- type names
_SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16", "int8": "i8",
          "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8", "uint32": "u32", "bool": "bool",
          "complex64": "c64", "complex128": "c128"}
_BY_SHORT = {v: k for k, v in _SHORT.items()}


def dtype_str(d) -> str:
    return _SHORT[d.name]


def dtype_from_str(s: str):
    return dt.as_dtype(_BY_SHORT[s])


def type_str(aval: Aval) -> str:
    return f"{dtype_str(aval.dtype)}{'~' if aval.weak else ''}[{','.join(map(str, aval.shape))}]"


def params_key(x):
    """A hashable key of an equation's params (TypeError for array-valued params)."""
    if isinstance(x, dict):
        return tuple(sorted((k, params_key(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(params_key(v) for v in x)
    if isinstance(x, np.ndarray):
        raise TypeError
    hash(x)
    return x


def literal_key(a: Literal):
    """A hashable key of a literal operand: its value and its type."""
    v = a.value
    return ("lit", type(v).__name__, repr(v), a.aval)
