"""Elementwise equations as 8-lane vector C (GCC's vector extensions, AVX2): how a fused group
over contiguous values (elementwise.py) and an int8 GEMM's epilogue (qgemm.py) compute, 8
elements at a time, when every equation has a form here (the rest of the elements, and every
other group, in the scalar C of c_expr.py).

GCC vectorizes the scalar C of `c_expr.py` well except where it matters most after an int8 GEMM:
a clamp against literal bounds followed by a conversion to 8 bits becomes compare/blend/mask
sequences on narrowed masks (the quantization of 64 x 784 floats took 22 us, 10 in the form
below). Here each node of an equation's lowering expression is its vector instruction, with the
scalar form's semantics exactly, so both give the same bits:

- float32 arithmetic is the same IEEE operations in the same order (no contraction);
- integers (int32, and int8 / uint8 held in int32 lanes) wrap as the scalar C does: arithmetic
  in unsigned lanes, 8-bit results truncated to their type;
- max / min of float32 against a finite literal b are vmaxps(b, a) / vminps(b, a), the scalar
  `b > a ? b : a` (a NaN a kept); of integers, the lanes compared;
- round_even / floor / ceil / trunc are vroundps with the mode; int -> float is vcvtdq2ps;
- float -> integer truncates, NaN and inf giving 0 (convert's rule): vcvttps2dq, whose result for
  those (0x80000000) is masked by x - x == 0 for int32 and has a zero low byte for 8 bits;
- 8-bit results are stored by saturating packs (exact: the lanes hold values of the type).

Any other operation, dtype, or a float max / min of two values raises Unsupported, and the caller
keeps its scalar loop.
"""
from __future__ import annotations

from ...ir.core import Literal
from ...ops import expr as E
from ..contract import Unsupported
from ..lowering import get_lowering
from .c_expr import _FINITE_LITERAL, c_literal, compute_dtype

LANES = 8
VTYPE = {"float32": "em_vf", "int32": "em_vi", "uint8": "em_vi", "int8": "em_vi"}
TYPES = """typedef float em_vf __attribute__((vector_size(32)));
typedef int em_vi __attribute__((vector_size(32)));
typedef unsigned int em_vu __attribute__((vector_size(32)));
typedef float em_vfl __attribute__((vector_size(32), may_alias, aligned(4)));
typedef int em_vil __attribute__((vector_size(32), may_alias, aligned(4)));
typedef unsigned char em_vbl __attribute__((vector_size(8), may_alias, aligned(1)));
typedef signed char em_vsbl __attribute__((vector_size(8), may_alias, aligned(1)));
typedef long long em_v4di __attribute__((vector_size(32)));
typedef int em_v4si __attribute__((vector_size(16)));
typedef short em_v8hi __attribute__((vector_size(16)));
typedef long long em_v2di __attribute__((vector_size(16)));
typedef long long em_i64u __attribute__((may_alias, aligned(1)));
/* 8 int32 lanes holding 8-bit values stored as 8 bytes: saturating packs, exact for values in range */
#define EM_STORE8(p, v, ps) do { const em_v4di v_ = (em_v4di)(v); \\
    const em_v8hi w_ = (em_v8hi)__builtin_ia32_pack##ps##dw128((em_v4si)__builtin_ia32_extract128i256(v_, 0), \\
                                                              (em_v4si)__builtin_ia32_extract128i256(v_, 1)); \\
    *(em_i64u*)(p) = ((em_v2di)__builtin_ia32_pack##ps##wb128(w_, w_))[0]; } while (0)"""
_ROUND_MODE = {"round_even": 8, "floor": 9, "ceil": 10, "trunc": 11}  # _MM_FROUND_* | NO_EXC
_ARITH = {"add": "+", "sub": "-", "mul": "*"}


def splat(code: str, t: str) -> str:
    """The vector of 8 lanes equal to scalar C `code` of dtype `t`."""
    return f"(({VTYPE[t]}){{{', '.join([code] * LANES)}}})"


def _wrap(code: str, t: str) -> str:
    """int32 lanes `code` as values of integer dtype `t` (8-bit types truncated, as C's casts)."""
    if t == "uint8":
        return f"(({code}) & 255)"
    if t == "int8":
        return f"((em_vi)((em_vu)({code}) << 24) >> 24)"
    return code


def convert(code: str, src: str, dst: str) -> str:
    """Vector C for `c_expr.c_convert` between the lane dtypes."""
    if src == dst:
        return code
    if src not in VTYPE or dst not in VTYPE:
        raise Unsupported(f"a vector convert {src} -> {dst}")
    if dst == "float32":
        return f"__builtin_convertvector({code}, em_vf)"
    if src == "float32":  # truncation; NaN and inf give 0
        i = f"__builtin_convertvector({code}, em_vi)"
        if dst == "int32":
            return f"({i} & (em_vi)((({code}) - ({code})) == (({code}) - ({code}))))"
        return _wrap(i, dst)  # vcvttps2dq gives 0x80000000 for NaN and inf: its low byte is 0
    return _wrap(code, dst)


def load(ptr: str, t: str) -> str:
    """The 8 consecutive values of dtype `t` at C pointer expression `ptr`, as lanes."""
    if t == "float32":
        return f"(*(const em_vfl*)({ptr}))"
    if t == "int32":
        return f"(*(const em_vil*)({ptr}))"
    if t == "uint8":
        return f"__builtin_convertvector(*(const em_vbl*)({ptr}), em_vi)"
    if t == "int8":
        return f"__builtin_convertvector(*(const em_vsbl*)({ptr}), em_vi)"
    raise Unsupported(f"vector loads of {t}")


def store(ptr: str, code: str, t: str) -> str:
    """C storing lanes `code` (dtype `t`) to the 8 consecutive values at `ptr`."""
    if t == "float32":
        return f"*(em_vfl*)({ptr}) = {code};"
    if t == "int32":
        return f"*(em_vil*)({ptr}) = {code};"
    if t in ("uint8", "int8"):
        return f"EM_STORE8({ptr}, {code}, {'us' if t == 'uint8' else 'ss'});"
    raise Unsupported(f"vector stores of {t}")


def _call(op: str, args: list, t: str) -> tuple:
    a = args[0][0]
    b = args[1][0] if len(args) > 1 else None
    if op in _ARITH:
        if t == "float32":
            return f"(({a}) {_ARITH[op]} ({b}))", t
        return _wrap(f"(em_vi)((em_vu)({a}) {_ARITH[op]} (em_vu)({b}))", t), t
    if op in ("max", "min"):
        if t == "float32":
            lit = args[1][2]
            if lit is None or not _FINITE_LITERAL.match(lit):
                raise Unsupported(f"a vector float {op} of two values")
            return f"__builtin_ia32_{op}ps256({b}, {a})", t
        m = f"(({a}) {'>' if op == 'max' else '<'} ({b}))"
        return f"((({a}) & {m}) | (({b}) & ~{m}))", t
    if op in _ROUND_MODE:
        return (f"__builtin_ia32_roundps256({a}, {_ROUND_MODE[op]})" if t == "float32" else a), t
    raise Unsupported(f"a vector {op} on {t}")


def _expr(e: E.Expr, operands: list, compute: str) -> tuple:
    """(vector code, dtype, scalar literal or None) of expression `e`."""
    if e.op == "var":
        return operands[e.value]
    if e.op == "const":
        lit = c_literal(e.value, compute)
        return splat(lit, compute), compute, lit
    if e.op == "cast":
        code, src, _ = _expr(e.args[0], operands, compute)
        return convert(code, src, e.value), e.value, None
    args = [_expr(a, operands, compute) for a in e.args]
    return (*_call(e.op, args, args[0][1]), None)


def render_eqn(eqn, names: dict) -> tuple:
    """(vector C expression, dtype) of one equation; `names` maps Vars to (vector code, dtype)."""
    prim = eqn.prim
    if prim.kind != "elementwise" or prim.lowering is None or get_lowering(prim, "cpu") is not None:
        raise Unsupported(f"a vector {prim.name}")
    for a in (*eqn.inputs, eqn.out):
        if not isinstance(a, Literal) and a.aval.dtype.name not in VTYPE:
            raise Unsupported(f"a vector {prim.name} on {a.aval.dtype.name}")
    compute, idx = compute_dtype(eqn)
    out = eqn.out.aval.dtype.name
    if compute == "int64" and out in ("int32", "int8", "uint8") and prim.name in _ARITH:
        compute = "int32"  # (a Python int's weak int64) the low 32 bits of a sum or product are the
        # low 32 bits' own, and the result keeps at most those
    if compute not in VTYPE:
        raise Unsupported(f"a vector {prim.name} computing in {compute}")
    ops = []
    for i, a in enumerate(eqn.inputs):
        target = compute if i in idx else a.aval.dtype.name
        if isinstance(a, Literal):
            lit = c_literal(a.value, target)
            ops.append((splat(lit, target), target, lit))
        else:
            code, t = names[a]
            ops.append((convert(code, t, target), target, None))
    tree = prim.lowering(*(E.var(i) for i in range(len(eqn.inputs))), **eqn.params)
    code, t, _ = _expr(tree, ops, compute)
    return convert(code, t, out), out
