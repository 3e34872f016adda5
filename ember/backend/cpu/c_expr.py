"""C for one elementwise equation: its registry `lowering` expression rendered to C.

Each equation is typed as ember's numpy executor types it (operands promoted to the compute dtype,
result converted to the output dtype), then its scalar expression (`Primitive.lowering`) becomes a
C expression; a lowering registered for (primitive, "cpu") replaces that (`elementwise.py`).
Integer arithmetic wraps (done in unsigned types, as numpy does); max/min propagate NaN and keep the
first operand on ties; float->int conversion maps NaN/inf to 0 (`convert`'s rule).

Half precision: float16 and bfloat16 values are their bits in a `uint16_t`. Both are computed
in float32 and rounded once at the end of each primitive (`half_in_f32`): every conversion from
or to a half type goes through float (float64 rounds to half directly, as numpy and ml_dtypes
do), rounding to nearest even with NaN kept NaN, float16's as numpy's and bfloat16's as
ml_dtypes' (`cmath.HALF_PRELUDE`). An equation of one half operand whose arithmetic is not
exactly rounded (exp, log, tanh, erf, sigmoid, sin, ...) reads a 65536-entry table of the numpy
executor's own results (`half_table`), so it is the reference's bit for bit; with two half
operands such an equation has no bit-exact C form and stays on the host.
"""
from __future__ import annotations

import hashlib
import math

import re

import numpy as np

from ..._core import dtypes
from ...ir.core import Literal, Var, params_key
from ...ops import expr as E
from ...runtime.executor import compute_key
from ..contract import Unsupported
from ..lowering import get_lowering
from .cmath import FUNCTIONS

CTYPE = {"float32": "float", "float64": "double", "int8": "int8_t", "int16": "int16_t", "int32": "int32_t",
         "int64": "int64_t", "uint8": "uint8_t", "uint32": "uint32_t", "bool": "uint8_t",
         "float16": "uint16_t", "bfloat16": "uint16_t"}  # the half types: their bits
HALF = ("float16", "bfloat16")  # stored in 16 bits, computed in float32
# where integer arithmetic wraps (8- and 16-bit values too: C would promote them to a signed int,
# whose product can overflow)
UTYPE = {"int8": "uint32_t", "int16": "uint32_t", "int32": "uint32_t", "int64": "uint64_t", "uint8": "uint32_t",
         "uint32": "uint32_t"}
BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "uint32": 32}
SUPPORTED_DTYPES = frozenset(CTYPE)


def _floats(dt: str) -> bool:
    return dt in ("float32", "float64")


def compute_of(dt: str) -> str:
    """The dtype arithmetic on values of `dt` runs in: float32 for the half types."""
    return "float32" if dt in HALF else dt


def itemsize(dt: str) -> int:
    """Bytes per element of `dt` (by name; bfloat16's numpy dtype needs ml_dtypes)."""
    return 2 if dt in HALF else np.dtype(dt).itemsize


def c_literal(value, dtype: str) -> str:
    """A C constant of `dtype` with exactly `value` (numpy's conversion)."""
    if dtype in HALF:
        return _half_literal(value, dtype)
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


def _half_np(dtype: str):
    return getattr(dtypes, dtype).np


def _half_literal(value, dtype: str) -> str:
    """The bits of half type `dtype` holding `value` rounded as numpy/ml_dtypes round it."""
    bits = int(np.asarray(value).astype(_half_np(dtype)).reshape(()).view(np.uint16))
    return f"((uint16_t){bits:#06x})"


# bfloat16 -> integer (ml_dtypes' cast): truncated toward zero, 0 where that is outside the type
_INT_RANGE = {"int8": (-2**7, 2**7), "int16": (-2**15, 2**15), "int32": (-2**31, 2**31), "int64": (-2**63, 2**63),
              "uint8": (0, 2**8), "uint32": (0, 2**32)}


def _half_convert(code: str, src: str, dst: str) -> str:
    """C for numpy's (ml_dtypes') `astype` from or to a half type: through float, exactly."""
    if src in HALF:
        f = f"em_bf2f({code})" if src == "bfloat16" else f"em_h2f({code})"
        if dst == "float32":
            return f
        if dst in HALF:
            return _half_convert(f, "float32", dst)
        if dst == "float64":
            return f"((double){f})"
        if dst == "bool":
            return f"((uint8_t)({f} != 0))"
        if src == "float16":  # numpy's float16 -> int goes through float
            return c_convert(f, "float32", dst)
        lo, hi = _INT_RANGE[dst]
        return f"(({CTYPE[dst]})em_bf2i({f}, {float(lo).hex()}, {float(hi).hex()}))"
    h = "h" if dst == "float16" else "bf"
    if src == "float32":
        return f"em_f2{h}({code})"
    return f"em_f2{h}((float)({code}))"  # float64 and ints round through float, as PyTorch


def c_convert(code: str, src: str, dst: str) -> str:
    """C for numpy's `astype` from src to dst (float->int: NaN/inf give 0, ember's convert)."""
    if src == dst:
        return code
    if src in HALF or dst in HALF:
        return _half_convert(code, src, dst)
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


_FINITE_LITERAL = re.compile(r"^\(?-?0x[0-9a-f]\.[0-9a-f]+p[+-][0-9]+f?\)?$")  # c_literal's finite floats


def c_call(op: str, args: list, t: str) -> tuple:
    """C for vocabulary function `op` on rendered (code, dtype) args; returns (code, dtype)."""
    a = args[0][0] if args else None
    b = args[1][0] if len(args) > 1 else None
    if t in HALF and op != "select":  # (callers convert half values to float first)
        raise Unsupported(f"{op} on {t} values not converted to float")
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
        if _floats(t) and _FINITE_LITERAL.match(b):
            # b a number (a clamp's bound): b only where it is strictly beyond a, a NaN a kept;
            # one compare, GCC's vmaxps / vminps with b first (those return their second operand
            # when either is NaN)
            return f"((({b}) {'>' if op == 'max' else '<'} ({a})) ? ({b}) : ({a}))", t
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
    out = eqn.out.aval.dtype.name
    tree = None if custom is not None else prim.lowering(*(E.var(i) for i in range(len(eqn.inputs))), **eqn.params)
    if out in HALF and (prim in INEXACT_PRIMS or (tree is not None and _inexact(tree))):
        return _table_lookup(eqn, names, out)
    if custom is not None:
        return custom(eqn, names)
    if prim.name == "select" and out == "float16" and all(
            isinstance(a, Literal) or a.aval.dtype.name == out for a in eqn.inputs[1:]):
        return _select_bits(eqn, names), out
    ops, compute = operands(eqn, names)
    code, t = _render_expr(tree, ops, compute)
    return c_convert(code, t, out), out


def _select_bits(eqn, names: dict) -> str:
    """select between float16 values as their bits: what the float32 select and its rounding
    give (float16 -> float32 -> float16 is exact, NaN payloads too), with no conversion a branch
    of GCC's could keep from vectorising."""
    c, a, b = eqn.inputs
    cond = c_literal(c.value, "bool") if isinstance(c, Literal) else c_convert(*names[c], "bool")
    a, b = (c_literal(np.float32(x.value), "float16") if isinstance(x, Literal) else names[x][0] for x in (a, b))
    return f"(({cond}) ? ({a}) : ({b}))"


# ---------------------------------------------------------------- half tables
# float32 functions whose numpy result is not the exactly rounded one (numpy's own SIMD exp, log,
# ...; erf and sigmoid are ember's numpy compositions): no C formula reproduces their bits
_INEXACT = frozenset({"exp", "log", "tanh", "erf", "sin", "cos", "log1p", "expm1", "atan2", "pow"})
INEXACT_PRIMS = set()  # primitives with a custom C lowering that is not exactly rounded (elementwise.py)
_TABLES: dict = {}      # C name -> how to compute its table (the numpy executor on all 65536 values)
_TABLE_VALUES: dict = {}  # C name -> the table (uint16 array; kept for the process: programs point at it)


def _inexact(e: E.Expr) -> bool:
    return e.op in _INEXACT or any(_inexact(a) for a in e.args)


def _table_lookup(eqn, names: dict, out: str) -> tuple:
    """C reading the table of `eqn` (one half operand, the others literals) at its operand's bits."""
    var = [i for i, a in enumerate(eqn.inputs) if isinstance(a, Var)]
    src = eqn.inputs[var[0]].aval.dtype.name if len(var) == 1 else None
    if src not in HALF:
        raise Unsupported(f"{eqn.prim.name} of two {out} operands: numpy's float32 result has no bit-exact "
                          "C form (a table of its results needs a single half operand)")
    try:
        params = repr(params_key(eqn.params))
    except TypeError:  # an array-valued param: no name for its table
        raise Unsupported(f"{eqn.prim.name} on {out} with array parameters") from None
    key = (eqn.prim.name, params, src, out,
           tuple((i, type(a.value).__name__, repr(a.value), a.aval.dtype.name, a.aval.weak)
                 for i, a in enumerate(eqn.inputs) if isinstance(a, Literal)))
    name = "em_lut_" + hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    _TABLES.setdefault(name, (eqn.prim, dict(eqn.params), var[0], list(eqn.inputs), out))
    code, _ = names[eqn.inputs[var[0]]]
    return f"{name}[{code}]", out


def half_table(name: str) -> np.ndarray:
    """The uint16 table `name` (`_table_lookup`): the numpy executor's result bits for every value
    of the operand's half type, computed once per process."""
    if name not in _TABLE_VALUES:
        from ...ops.core import Aval
        from ...runtime.executor import apply
        prim, params, at, inputs, out = _TABLES[name]
        x = np.arange(65536, dtype=np.uint16).view(_half_np(inputs[at].aval.dtype.name))
        vals = [x if i == at else a.value for i, a in enumerate(inputs)]
        avals = [Aval(x.shape, a.aval.dtype) if i == at else a.aval for i, a in enumerate(inputs)]
        with np.errstate(all="ignore"):
            res = apply(prim, vals, avals, params, Aval(x.shape, getattr(dtypes, out)))
        _TABLE_VALUES[name] = np.ascontiguousarray(res).view(np.uint16)
    return _TABLE_VALUES[name]


def compute_dtype(eqn) -> tuple:
    """(the dtype `eqn`'s primitive computes in, the indices of the operands promoted to it)."""
    prim = eqn.prim
    keys = [compute_key(a.aval) for a in eqn.inputs]
    idx = range(len(keys)) if prim.promote_args is None else prim.promote_args
    # (no operands promoted, as in convert: the op computes in its input's own dtype)
    return (prim.resolve_dtypes(tuple(keys[i] for i in idx))[0].name if idx else eqn.inputs[0].aval.dtype.name), idx


def operands(eqn, names: dict) -> tuple:
    """([(C code, dtype)] of the operands converted as the primitive computes, compute dtype)."""
    prim = eqn.prim
    compute, idx = compute_dtype(eqn)
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
