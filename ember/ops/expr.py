"""The scalar-expression vocabulary that elementwise lowerings are written in.

An elementwise primitive's `lowering(*args, **params)` takes one `Expr` per operand and returns the
`Expr` computing one output element. Code generators (layer 4) render these trees to C or CUDA;
`evaluate` runs them with numpy, which the tests use to check that every lowering agrees with its
primitive's kernel. The vocabulary is `FUNCS` (plus `const`, `var`, `cast`): a renderer that
implements these can lower every elementwise primitive.
"""
from __future__ import annotations

import numpy as np


class Expr:
    """A node of a scalar expression tree: `op` applied to `args` (or a leaf)."""

    __slots__ = ("op", "args", "value")

    def __init__(self, op: str, args: tuple = (), value=None):
        self.op = op
        self.args = args
        self.value = value

    def __add__(self, o): return call("add", self, lift(o))
    def __radd__(self, o): return call("add", lift(o), self)
    def __sub__(self, o): return call("sub", self, lift(o))
    def __rsub__(self, o): return call("sub", lift(o), self)
    def __mul__(self, o): return call("mul", self, lift(o))
    def __rmul__(self, o): return call("mul", lift(o), self)
    def __truediv__(self, o): return call("div", self, lift(o))
    def __rtruediv__(self, o): return call("div", lift(o), self)
    def __neg__(self): return call("neg", self)

    def __repr__(self) -> str:
        if self.op == "var":
            return f"x{self.value}"
        if self.op == "const":
            return repr(self.value)
        if self.op == "cast":
            return f"cast<{self.value}>({self.args[0]!r})"
        return f"{self.op}({', '.join(map(repr, self.args))})"


#: every function a renderer must provide, with its numpy meaning
FUNCS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
    "floordiv": np.floor_divide, "mod": np.remainder, "fmod": np.fmod, "pow": np.power,
    "max": np.maximum, "min": np.minimum, "neg": np.negative, "abs": np.abs, "sign": np.sign,
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "sqrt": np.sqrt,
    "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "atan2": np.arctan2,
    "floor": np.floor, "ceil": np.ceil, "round_even": np.rint, "trunc": np.trunc,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
    "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor, "not": np.invert,
    "shl": np.left_shift, "shr": np.right_shift,
    "select": lambda c, a, b: np.where(c, a, b),
    "isnan": np.isnan,
}


def _erf(x):
    from math import erf
    return np.vectorize(erf, otypes=[np.float64])(x).astype(np.result_type(x, np.float32))


def _sign(x):
    # the sign primitive's meaning: bools are their own sign, sign(NaN) is 0 (PyTorch)
    x = np.asarray(x)
    if x.dtype == np.bool_:
        return x.copy()
    s = np.sign(x)
    return np.where(s != s, s.dtype.type(0), s) if s.dtype.kind == "f" else s


FUNCS["erf"] = _erf
FUNCS["sign"] = _sign


def call(op: str, *args: Expr) -> Expr:
    """Apply vocabulary function `op`."""
    if op not in FUNCS:
        raise KeyError(f"{op!r} is not in the scalar-expression vocabulary")
    return Expr(op, tuple(args))


def var(i: int) -> Expr:
    """The i-th operand of the elementwise op."""
    return Expr("var", (), i)


def const(v) -> Expr:
    """A literal (typed like the expression it meets)."""
    return Expr("const", (), v)


def cast(x: Expr, dtype_name: str) -> Expr:
    """Convert to another dtype."""
    return Expr("cast", (x,), dtype_name)


def lift(x) -> Expr:
    return x if isinstance(x, Expr) else const(x)


def evaluate(e: Expr, operands: list, dtype) -> np.ndarray:
    """Evaluate an expression with numpy (constants take `dtype`)."""
    if e.op == "var":
        return operands[e.value]
    if e.op == "const":
        return np.asarray(e.value, dtype=dtype)
    if e.op == "cast":  # the convert primitive's own rules (float -> int, through float, ...)
        from .._core.dtypes import as_dtype
        from .core import REGISTRY
        return REGISTRY["convert"].impl(evaluate(e.args[0], operands, dtype), dtype=as_dtype(e.value))
    return FUNCS[e.op](*(evaluate(a, operands, dtype) for a in e.args))
