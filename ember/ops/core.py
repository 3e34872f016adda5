"""The primitive registry and the one dispatch point, `bind`.

A primitive is one registry entry holding everything ember knows about an op:

- `abstract(*avals, **params) -> Aval`: the shape and dtype rule (used by tracers, and by eager
  mode to explain an error);
- `impl(*arrays, **params) -> ndarray`: the numpy kernel (inputs already cast to the compute dtype);
- `vjp(g, out, *inputs, **params) -> tuple`: cotangents for the inputs, written with primitives so
  that higher derivatives and graph-level autodiff come for free;
- `lowering`: a scalar expression (see `expr.py`) for elementwise ops, the combiner for reductions,
  or None for ops a code generator handles as a library call;
- `dtypes`: the input dtypes it supports (the op x dtype table in docs/ is generated from these).

`bind(prim, *args, **params)` hands the op to the innermost interpreter on the thread's stack: the
eager interpreter (installed by `ember.tensor`) runs the numpy kernel; a tracer records IR.
"""
from __future__ import annotations

from typing import Callable, Iterable

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from .._core.state import TLS, default_dtype


class Aval:
    """An abstract value: shape, dtype and whether it is a weakly typed Python scalar."""

    __slots__ = ("shape", "dtype", "weak")

    def __init__(self, shape: tuple, dtype: dt.DType, weak: bool = False):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.weak = weak

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __eq__(self, other):
        return (isinstance(other, Aval) and self.shape == other.shape and self.dtype is other.dtype
                and self.weak == other.weak)

    def __hash__(self):
        return hash((self.shape, self.dtype, self.weak))

    def __repr__(self) -> str:
        return f"{self.dtype.name}[{','.join(map(str, self.shape))}]" + ("{weak}" if self.weak else "")


# dtype rules: how the compute and result dtype follow from the promoted input dtype
SAME = "same"        # result = promoted inputs (add, max, select)
FLOAT = "float"      # ints and bools promote to the default float (sin, exp, true division)
BOOL = "bool"        # compare in the promoted dtype, result bool
INDEX = "index"      # result int64 (argmax)
SUM = "sum"          # ints and bools accumulate and return int64 (sum, prod, cumsum)
CUSTOM = "custom"    # the primitive computes its own result dtype in `abstract`

NUMERIC = tuple(d for d in dt.ALL if d is not dt.bool_)
ALL_DTYPES = dt.ALL
COMPLEX = dt.COMPLEX


class Primitive:
    """One op: its shape/dtype rule, numpy kernel, VJP and lowering."""

    def __init__(self, name: str, *, impl: Callable, abstract: Callable | None = None,
                 vjp: Callable | None = None, lowering=None, dtypes: Iterable = ALL_DTYPES,
                 dtype_rule: str = SAME, kind: str = "elementwise", promote_args: tuple | None = None,
                 needs_out: bool = False, vjp_inputs: tuple | None = None, is_view: bool = False, half_in_f32: bool = True,
                 doc: str = ""):
        self.name = name
        self.impl = impl
        self.abstract = abstract
        self.vjp = vjp
        self.lowering = lowering
        self.dtypes = frozenset(dtypes)
        self.dtype_rule = dtype_rule
        self.kind = kind            # elementwise | reduction | shape | linalg | conv | index | random
        self.promote_args = promote_args  # operands promoted together (None: all of them)
        self.needs_out = needs_out  # the VJP reads the primal output
        self.vjp_inputs = vjp_inputs  # inputs whose values the VJP reads (None: all; others: shapes)
        # eager mode runs the shape rule before the kernel: on for user primitives (their rule may
        # be stricter than numpy), off for built-ins, whose kernels reject what their rules reject
        self.eager_checks = abstract is not None
        self.is_view = is_view      # eager result may alias its first input
        self.half_in_f32 = half_in_f32  # float16/bfloat16 compute in float32, rounded at the end
        self.autocast_low = False   # inside ember.autocast, float32 operands run in the lower precision
        self.doc = doc
        self._dtype_cache: dict = {}

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"

    def bind(self, *args, **params):
        return bind(self, *args, **params)

    # ---- dtype resolution, shared by eager and tracing
    def resolve_dtypes(self, key: tuple) -> tuple:
        """(compute dtype, result dtype) for operand dtype keys (DType, or 'b'/'i'/'f' for scalars)."""
        try:
            return self._dtype_cache[key]
        except KeyError:
            pass
        res = self._resolve(key)
        self._dtype_cache[key] = res
        return res

    def _resolve(self, key: tuple) -> tuple:
        strong = [k for k in key if isinstance(k, dt.DType)]
        weak = [k for k in key if not isinstance(k, dt.DType)]
        if strong:
            p = strong[0]
            for d in strong[1:]:
                p = dt.PROMOTION[(p, d)]
        else:  # only Python scalars: the weakest common kind
            p = dt.weak_scalar_dtype(max(weak, key=dt.SCALAR_ORDER.index), default_dtype())
            weak = []
        for k in weak:
            p = dt.promote_with_scalar(p, k, default_dtype())
        if p not in self.dtypes:
            raise op_error(DTypeError, self.name, f"no kernel for dtype {p.name} (supports "
                           f"{', '.join(d.name for d in dt.ALL + dt.COMPLEX if d in self.dtypes)})")
        rule = self.dtype_rule
        if rule == FLOAT and p.kind not in "fc":
            p = default_dtype()
        if rule == SUM and p.kind not in "fc":
            p = dt.int64
        out = {BOOL: dt.bool_, INDEX: dt.int64}.get(rule, p)
        compute = p
        if self.half_in_f32 and p in (dt.float16, dt.bfloat16):
            compute = dt.float32
        return compute, out


REGISTRY: dict[str, Primitive] = {}


class _Prims:
    """Attribute access to registered primitives: `P.add`."""

    def __getattr__(self, name):
        try:
            return REGISTRY[name]
        except KeyError:
            raise AttributeError(f"no primitive named {name!r}") from None


P = _Prims()


def register(prim: Primitive) -> Primitive:
    """Add a primitive to the registry (also the public way to add a user primitive)."""
    if prim.name in REGISTRY:
        raise ValueError(f"a primitive named {prim.name!r} is already registered")
    REGISTRY[prim.name] = prim
    setattr(P, prim.name, prim)
    return prim


def set_vjp_inputs(names_to_inputs: dict) -> None:
    """Declare which operands' values each primitive's VJP reads (the rest are kept as shapes)."""
    for name, idx in names_to_inputs.items():
        REGISTRY[name].vjp_inputs = tuple(idx)


def primitive(name: str, **kw) -> Primitive:
    """Create and register a primitive."""
    return register(Primitive(name, **kw))


def bind(prim: Primitive, *args, **params):
    """The one dispatch point: evaluate `prim` with the innermost interpreter of this thread."""
    if prim.autocast_low and TLS.autocast is not None:
        args = _autocast(args, TLS.autocast)
    return TLS.interpreters[-1].process(prim, args, params)


def _autocast(args: tuple, low) -> tuple:
    """float32 tensor operands converted to autocast's lower-precision dtype (float64 stays)."""
    return tuple(bind(REGISTRY["convert"], a, dtype=low) if getattr(a, "_dtype", None) is dt.float32 else a
                 for a in args)


# ---------------------------------------------------------------- shape-rule helpers
def broadcast_shapes(op: str, *shapes: tuple) -> tuple:
    """numpy broadcasting of shapes, with an error naming every shape."""
    nd = max(len(s) for s in shapes)
    out = []
    for i in range(nd):
        size = 1
        for s in shapes:
            j = i - (nd - len(s))
            if j < 0:
                continue
            d = s[j]
            if d != 1:
                if size != 1 and size != d:
                    raise op_error(ShapeError, op, "cannot broadcast shapes " +
                                   " and ".join(str(tuple(s)) for s in shapes))
                size = d
        out.append(size)
    return tuple(out)


def elementwise_abstract(prim: Primitive):
    """Shape/dtype rule of an elementwise primitive (implicit numpy broadcasting)."""
    def rule(*avals: Aval, **params) -> Aval:
        key = tuple(("b" if a.dtype.kind == "b" else "i" if a.dtype.kind in "ui" else "f")
                    if a.weak else a.dtype for a in avals)
        _, out = prim.resolve_dtypes(key)
        shape = broadcast_shapes(prim.name, *(a.shape for a in avals))
        weak = all(a.weak for a in avals)
        return Aval(shape, out, weak)
    return rule


def normalize_axes(op: str, axes, ndim: int) -> tuple:
    """Axes as sorted non-negative ints, with an error for out-of-range ones."""
    out = []
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise op_error(ShapeError, op, f"axis {a} is out of range for a tensor of rank {ndim}")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise op_error(ShapeError, op, f"repeated axis in {tuple(axes)}")
    return tuple(sorted(out))
