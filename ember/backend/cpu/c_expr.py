"""C for one elementwise equation: its registry `lowering` expression rendered to C.

Each equation is typed as ember's numpy executor types it (operands promoted to the compute dtype,
result converted to the output dtype), then its scalar expression (`Primitive.lowering`) becomes a
C expression; a lowering registered for (primitive, "cpu") replaces that (`elementwise.py`).
Integer arithmetic wraps (done in unsigned types, as numpy does); max/min propagate NaN and keep the
first operand on ties; float->int conversion maps NaN/inf to 0 (`convert`'s rule).
"""
from __future__ import annotations

import math

import numpy as np

from ...ir.core import Literal, Var
from ...ops import expr as E
from ...runtime.executor import compute_key
from ..contract import Unsupported
from ..lowering import get_lowering
from .cmath import FUNCTIONS

CTYPE = {"float32": "float", "float64": "double", "int8": "int8_t", "int16": "int16_t", "int32": "int32_t",
         "int64": "int64_t", "uint8": "uint8_t", "uint32": "uint32_t", "bool": "uint8_t"}
# where integer arithmetic wraps (8- and 16-bit values too: C would promote them to a signed int,
# whose product can overflow)
UTYPE = {"int8": "uint32_t", "int16": "uint32_t", "int32": "uint32_t", "int64": "uint64_t", "uint8": "uint32_t",
         "uint32": "uint32_t"}
BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "uint32": 32}
SUPPORTED_DTYPES = frozenset(CTYPE)


def _floats(dt: str) -> bool:
    return dt in ("float32", "float64")


def c_literal(value, dtype: str) -> str:
    """A C constant of `dtype` with exactly `value` (numpy's conversion)."""
    v = np.asarray(value).astype(np.dtype(dtype) if dtype != "bool" else np.bool_)[()]
    if dtype == "bool":
        return "1" if v else "0"
    if _floats(dtype):
        f = float(v)
        suffix = "f" if dtype == "float32" else ""
        if math.isnan(f):
            return "NAN" if suffix else "(double)NAN"
        if math.isinf(f):
            s = "INFINITY" if suffix else "(double)INFINITY"
            return s if f > 0 else "-" + s
        return f"{f.hex()}{suffix}"
    i = int(v)
    if dtype == "uint32":
        return f"((uint32_t){i}u)"
    if dtype == "int64":
        return "INT64_MIN" if i == -2**63 else f"INT64_C({i})"
    if dtype == "int32" and i == -2**31:
        return "INT32_MIN"
    return f"(({CTYPE[dtype]}){i})"


def c_convert(code: str, src: str, dst: str) -> str:
    """C for numpy's `astype` from src to dst (float->int: NaN/inf give 0, ember's convert)."""
    if src == dst:
        return code
    if dst == "bool":
        return f"((uint8_t)(({code}) != 0))"
    if _floats(src) and not _floats(dst):
        via = "(int64_t)" if dst == "uint32" else ""  # numpy's cast of a negative float to uint32 wraps
        return f"(({CTYPE[dst]}){via}(isfinite({code}) ? ({code}) : 0))"
    return f"(({CTYPE[dst]})({code}))"


_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_BIT = {"and": "&", "or": "|", "xor": "^"}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}
_ROUND = {"floor": "floor", "ceil": "ceil", "round_even": "rint", "trunc": "trunc"}
_MATH = {"exp": "exp", "log": "log", "tanh": "tanh", "erf": "erf"}
_LIBM = ("sin", "cos", "log1p", "expm1", "atan2")


def c_call(op: str, args: list, t: str) -> tuple:
    """C for vocabulary function `op` on rendered (code, dtype) args; returns (code, dtype)."""
    a = args[0][0] if args else None
    b = args[1][0] if len(args) > 1 else None
    ct = CTYPE[t]
    if op in _ARITH:
        if t == "bool":
            if op == "sub":
                raise Unsupported("bool subtraction")
            return f"(({a}) {'|' if op == 'add' else '&'} ({b}))", t
        if t in UTYPE:
            return f"(({ct})((({UTYPE[t]})({a})) {_ARITH[op]} (({UTYPE[t]})({b}))))", t
        return f"(({a}) {_ARITH[op]} ({b}))", t
    if op == "div" and _floats(t):
        return f"(({a}) / ({b}))", t
    if op in ("max", "min"):
        cmp = ">=" if op == "max" else "<="
        nan = f" || ({a}) != ({a})" if _floats(t) else ""
        return f"((({a}) {cmp} ({b}){nan}) ? ({a}) : ({b}))", t
    if op == "neg" and t != "bool":
        return (f"(({ct})(0 - ({UTYPE[t]})({a})))" if t in UTYPE else f"(-({a}))"), t
    if op == "abs" and t != "bool":
        if _floats(t):
            return f"{'fabsf' if t == 'float32' else 'fabs'}({a})", t
        return f"(({a}) < 0 ? ({ct})(0 - ({UTYPE[t]})({a})) : ({a}))", t
    if op == "sign":
        if t == "bool":
            return a, t
        return f"(({a}) > 0 ? ({ct})1 : (({a}) < 0 ? ({ct})-1 : ({ct})0))", t
    if op in _MATH and _floats(t):
        return f"{FUNCTIONS[op][0 if t == 'float32' else 1]}({a})", t
    if op in _LIBM and _floats(t):  # scalar libm calls, as numpy's float64 (its float32 may differ by an ulp)
        return f"{op}{'f' if t == 'float32' else ''}({', '.join(x for x, _ in args)})", t
    if op in ("floordiv", "mod") and _floats(t):  # ints raise on a zero divisor: they stay on numpy
        return f"em_{op}{'f' if t == 'float32' else ''}({a}, {b})", t
    if op == "fmod" and _floats(t):
        return f"{'fmodf' if t == 'float32' else 'fmod'}({a}, {b})", t
    if op == "pow" and _floats(t):  # numpy's float power is libm's pow/powf
        return f"{'powf' if t == 'float32' else 'pow'}({a}, {b})", t
    if op == "sqrt" and _floats(t):
        return f"{'sqrtf' if t == 'float32' else 'sqrt'}({a})", t
    if op in _ROUND and t != "bool":
        if not _floats(t):
            return a, t
        return f"{_ROUND[op]}{'f' if t == 'float32' else ''}({a})", t
    if op in _CMP:
        return f"((uint8_t)(({a}) {_CMP[op]} ({b})))", "bool"
    if op in _BIT and not _floats(t):
        return f"(({ct})(({a}) {_BIT[op]} ({b})))", t
    if op in ("shl", "shr") and t in BITS:  # numpy: a shift by the width or more (or < 0) gives 0 or -1
        w, ut = BITS[t], UTYPE[t]
        if op == "shl":
            return f"(((uint64_t)({b}) < {w}) ? ({ct})(({ut})({a}) << ({b})) : ({ct})0)", t
        return f"(((uint64_t)({b}) < {w}) ? ({ct})(({a}) >> ({b})) : ({ct})(({a}) < 0 ? -1 : 0))", t
    if op == "not" and not _floats(t):
        return (f"((uint8_t)!({a}))" if t == "bool" else f"(({ct})~({a}))"), t
    if op == "select":
        return f"(({a}) ? ({b}) : ({args[2][0]}))", args[1][1]
    if op == "isnan":
        return (f"((uint8_t)(({a}) != ({a})))" if _floats(t) else "((uint8_t)0)"), "bool"
    raise Unsupported(f"{op} on {t}")


def _render_expr(e: E.Expr, operands: list, compute: str) -> tuple:
    if e.op == "var":
        return operands[e.value]
    if e.op == "const":
        return c_literal(e.value, compute), compute
    if e.op == "cast":
        code, src = _render_expr(e.args[0], operands, compute)
        dst = e.value
        if dst not in SUPPORTED_DTYPES:
            raise Unsupported(f"cast to {dst}")
        return c_convert(code, src, dst), dst
    args = [_render_expr(a, operands, compute) for a in e.args]
    t = args[1][1] if e.op == "select" else args[0][1]
    return c_call(e.op, args, t)


def render_eqn(eqn, names: dict) -> tuple:
    """C expression (and its dtype) for one equation; `names` maps Vars to (code, dtype)."""
    prim = eqn.prim
    custom = get_lowering(prim, "cpu")
    if prim.kind != "elementwise" or (prim.lowering is None and custom is None):
        raise Unsupported(prim.name)
    for a in (*eqn.inputs, eqn.out):
        if a.aval.dtype.name not in SUPPORTED_DTYPES:
            raise Unsupported(f"{prim.name} on {a.aval.dtype.name}")
    if custom is not None:
        return custom(eqn, names)
    ops, compute = operands(eqn, names)
    tree = prim.lowering(*(E.var(i) for i in range(len(ops))), **eqn.params)
    code, t = _render_expr(tree, ops, compute)
    out = eqn.out.aval.dtype.name
    return c_convert(code, t, out), out


def operands(eqn, names: dict) -> tuple:
    """([(C code, dtype)] of the operands converted as the primitive computes, compute dtype)."""
    prim = eqn.prim
    keys = [compute_key(a.aval) for a in eqn.inputs]
    pa = prim.promote_args
    idx = range(len(keys)) if pa is None else pa
    # (no operands promoted, as in convert: the op computes in its input's own dtype)
    compute = prim.resolve_dtypes(tuple(keys[i] for i in idx))[0].name if idx else eqn.inputs[0].aval.dtype.name
    if compute not in SUPPORTED_DTYPES:
        raise Unsupported(f"{prim.name} computing in {compute}")
    ops = []
    for i, a in enumerate(eqn.inputs):
        target = compute if i in idx else a.aval.dtype.name
        if isinstance(a, Literal):
            ops.append((c_literal(a.value, target), target))
        else:
            code, t = names[a]
            ops.append((c_convert(code, t, target), target))
    return ops, compute


def eqn_supported(eqn) -> bool:
    """Whether `eqn` renders to C (its operands typed by their avals): the CPU's `fusible`."""
    return why_unsupported(eqn) is None


def why_unsupported(eqn) -> str | None:
    """Why `eqn` does not render to C, or None when it does."""
    names = {a: (f"v{i}", a.aval.dtype.name) for i, a in enumerate(eqn.inputs) if isinstance(a, Var)}
    try:
        render_eqn(eqn, names)
    except Unsupported as ex:
        return str(ex)
    return None
