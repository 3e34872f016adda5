"""Render a fused elementwise group as one C function over the output's elements.

Each equation is typed as ember's numpy executor types it (operands promoted to the compute dtype,
result converted to the output dtype), then its registry `lowering` expression is rendered to C.
Integer arithmetic wraps (done in unsigned types, as numpy does); max/min propagate NaN and keep the
first operand on ties; float->int conversion maps NaN/inf to 0 (`convert`'s rule).

Loop shapes: when every input is either full-size or a single element, one flat loop
`for i < n`; otherwise the output is collapsed to the fewest dims over which each input is uniformly
full or broadcast, outer dims are loops with runtime strides and the innermost loop is contiguous
(stride 1) or broadcast (stride 0) per input, fixed in the source, so GCC vectorises it.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.core import Literal, Var
from ..jit.executor import _key
from ..ops import expr as E
from .cmath import FUNCTIONS, PRELUDE

CTYPE = {"float32": "float", "float64": "double", "int8": "int8_t", "int16": "int16_t", "int32": "int32_t",
         "int64": "int64_t", "uint8": "uint8_t", "uint32": "uint32_t", "bool": "uint8_t"}
# where integer arithmetic wraps (8- and 16-bit values too: C would promote them to a signed int,
# whose product can overflow)
UTYPE = {"int8": "uint32_t", "int16": "uint32_t", "int32": "uint32_t", "int64": "uint64_t", "uint8": "uint32_t",
         "uint32": "uint32_t"}
BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "uint32": 32}
SUPPORTED_DTYPES = frozenset(CTYPE)
ENTRY = "ember_kernel"


class Unsupported(Exception):
    """The renderer cannot lower this equation (it stays a numpy call)."""


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


def _call(op: str, args: list, t: str) -> tuple:
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
    return _call(e.op, args, t)


def render_eqn(eqn, names: dict) -> tuple:
    """C expression (and its dtype) for one equation; `names` maps Vars to (code, dtype)."""
    prim = eqn.prim
    if prim.kind != "elementwise" or (prim.lowering is None and prim.name != "bitcast"):
        raise Unsupported(prim.name)
    for a in (*eqn.inputs, eqn.out):
        if a.aval.dtype.name not in SUPPORTED_DTYPES:
            raise Unsupported(f"{prim.name} on {a.aval.dtype.name}")
    if prim.name == "bitcast":  # the same bytes read as another type of the same size
        (a,), out = eqn.inputs, eqn.out.aval.dtype.name
        src = a.aval.dtype.name
        code = c_literal(a.value, src) if isinstance(a, Literal) else c_convert(*names[a], src)
        return (f"({{ {CTYPE[src]} bs_ = ({code}); {CTYPE[out]} bd_; "
                f"__builtin_memcpy(&bd_, &bs_, sizeof bd_); bd_; }})"), out
    keys = [_key(a.aval) for a in eqn.inputs]
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
    if prim.name == "logistic":  # the lowering's 1/(1+exp(-x)) loses the negative tail
        if not _floats(compute):
            raise Unsupported("logistic on ints")
        code, t = f"{FUNCTIONS['sigmoid'][0 if compute == 'float32' else 1]}({ops[0][0]})", compute
    else:
        tree = prim.lowering(*(E.var(i) for i in range(len(ops))), **eqn.params)
        code, t = _render_expr(tree, ops, compute)
    out = eqn.out.aval.dtype.name
    return c_convert(code, t, out), out


def eqn_supported(eqn) -> bool:
    """Whether the renderer can lower `eqn` (its operands typed by their avals)."""
    names = {a: (f"v{i}", a.aval.dtype.name) for i, a in enumerate(eqn.inputs) if isinstance(a, Var)}
    try:
        render_eqn(eqn, names)
    except Unsupported:
        return False
    return True


# ---------------------------------------------------------------- loop layout
def layout(in_shapes: list, out_shape: tuple) -> list | None:
    """Collapsed (size, per-input full flags) dims for broadcast inputs; None for the flat loop."""
    nd = len(out_shape)
    dims = []
    for d in range(nd):
        if out_shape[d] == 1:
            continue
        full = tuple(((1,) * (nd - len(s)) + tuple(s))[d] == out_shape[d] for s in in_shapes)
        if dims and dims[-1][1] == full:
            dims[-1] = (dims[-1][0] * out_shape[d], full)
        else:
            dims.append((out_shape[d], full))
    uniform = all(len({dm[1][k] for dm in dims}) <= 1 for k in range(len(in_shapes)))
    return None if uniform else dims


def input_strides(dims: list, k: int) -> list:
    """Element strides of input k over the collapsed dims (0 where it broadcasts)."""
    sizes = [size if full[k] else 1 for size, full in dims]
    strides, acc = [], 1
    for s in reversed(sizes):
        strides.append(acc if s != 1 else 0)
        acc *= s
    return strides[::-1]


def render_group(group) -> str:
    """C source of one function computing every output of `group` in one loop nest."""
    ins, outs = group.inputs, group.outputs
    dims = layout([v.aval.shape for v in ins], group.shape)
    size = int(np.prod(group.shape, dtype=np.int64))
    full_inner = ([int(np.prod(v.aval.shape, dtype=np.int64)) == size for v in ins] if dims is None
                  else list(dims[-1][1]))
    params = [f"const {CTYPE[v.aval.dtype.name]}* restrict in{k}" for k, v in enumerate(ins)]
    params += [f"{CTYPE[v.aval.dtype.name]}* restrict out{k}" for k, v in enumerate(outs)]
    names = {}
    body = []
    for k, v in enumerate(ins):
        names[v] = (f"x{k}", v.aval.dtype.name)
        body.append(f"const {CTYPE[v.aval.dtype.name]} x{k} = p{k}[{'j' if full_inner[k] else '0'}];")
    for n, e in enumerate(group.eqns):
        code, t = render_eqn(e, names)
        names[e.out] = (f"t{n}", t)
        body.append(f"const {CTYPE[t]} t{n} = {code};")
    for k, v in enumerate(outs):
        body.append(f"out{k}[o + j] = {names[v][0]};")
    inner = "\n".join("            " + s for s in body)
    if dims is None:
        params.append("int64_t n")
        ptrs = "\n".join(f"    const {CTYPE[v.aval.dtype.name]}* p{k} = in{k};" for k, v in enumerate(ins))
        loop = (f"{ptrs}\n    const int64_t o = 0;\n    for (int64_t j = 0; j < n; j++) {{\n{inner}\n    }}")
    else:
        params += ["const int64_t* restrict dims", "const int64_t* restrict strides"]
        nd = len(dims)
        lines, ind = ["    int64_t o = 0;"], "    "
        for d in range(nd - 1):
            lines.append(f"{ind}for (int64_t i{d} = 0; i{d} < dims[{d}]; i{d}++) {{")
            ind += "    "
        for k, v in enumerate(ins):
            off = " + ".join(f"i{d} * strides[{k * nd + d}]" for d in range(nd - 1)) or "0"
            lines.append(f"{ind}const {CTYPE[v.aval.dtype.name]}* p{k} = in{k} + {off};")
        lines.append(f"{ind}for (int64_t j = 0; j < dims[{nd - 1}]; j++) {{")
        lines.append(inner)
        lines.append(f"{ind}}}")
        lines.append(f"{ind}o += dims[{nd - 1}];")
        for d in range(nd - 2, -1, -1):
            ind = ind[:-4]
            lines.append(f"{ind}}}")
        loop = "\n".join(lines)
    sig = ",\n    ".join(params)
    return f"{PRELUDE}\nvoid {ENTRY}(\n    {sig})\n{{\n{loop}\n}}\n"
