"""CPU lowering of the int8 GEMM: `dot_general` of int8/uint8 operands with an int32 result
(`preferred=int32`), exact for full-range operands, as generated C (no BLAS has it).

The operands are packed per call, each thread packing what it multiplies, in one layout for both
kernels: the x operand ("A", m x k) in panels of MR rows, the y operand ("B", k x n) in panels of
NR columns, k in quads (k zero-padded to a multiple of 4, rows and columns to whole panels):

    A[panel][q][r][0..3] = a[row][4q .. 4q+3]      B[panel][q][c][0..3] = b[4q .. 4q+3][col]

so a 32-bit word of A broadcast against 32 bytes of B meets 8 columns times 4 k. The products are
always those of an unsigned byte with a signed one: for u8 x s8 (s8 x u8) the operands as they
are; for s8 x s8, A + 128 (A ^ 0x80, unsigned) and the sums less 128 times B's column sums; for
u8 x u8, A - 128 (signed) and the sums plus 128 times B's column sums (exact: int32 arithmetic
wraps, and these identities hold modulo 2**32).

Two AVX2 microkernels (MR x NR = 4 x 16 int32 accumulators), chosen per thread and call from the
operands' ranges, seen while packing (so the choice costs nothing; both are exact):

- vpmaddubsw, u8 x s8 pairs summed to int16, then vpmaddwd by ones to int32: 32 multiply-adds
  per two multiply-pipe instructions. The int16 pair sum saturates unless it fits: with U the
  largest unsigned byte and S the largest |signed byte| taking part, |a0 b0 + a1 b1| <= 2 U S, so
  it is used only when 2 U S <= 32767 (e.g. activations in [0, 127] with any int8 weights, or
  weights in [-64, 64] with any uint8 activations): then no sum saturates and it is exact;
- vpmaddwd on the bytes widened to int16: |a0 b0 + a1 b1| <= 2 * 255 * 128 fits int32, exact for
  any values: 16 multiply-adds per multiply-pipe instruction.

A `packed_matmul` (ops/packed.py) brings its B packed already, in this layout, with its column
sums and max |b| in a header: the kernel packs only A. An `Epilogue` (runtime/units.py: the
elementwise group that is the only reader of an unbatched int8 GEMM's result, which the CPU
target accepts) is computed where the tile is stored: per tile row, a loop over its columns
loads the group's other inputs at (i, j), computes the group's equations from the int32 sum and
stores the group's outputs, so the int32 result never reaches memory; 8 columns at a time in
vector C (c_vec.py) where every operation has a vector form and every operand is contiguous or
constant along the columns, the rest in scalar C.

Without AVX2 (`#ifdef __AVX2__`) a portable C kernel reads the same packed operands; integer sums
are exact, so every path gives the same int32 results, at any thread count. The threads split
the panels of the larger dimension (n: columns, else rows), or the batch items, as gemm.py's
SGEMMs do; each packs its share of one operand and all of the other (the 8-bit operands are small
next to the multiply: m*k + k*n bytes against m*n*k multiply-adds).
"""
from __future__ import annotations

from ...ops import P
from ...ops.packed import HEADER
from ...runtime.layout import aligned_strides, prod
from ...runtime.memory import nbytes
from ...runtime.units import Epilogue
from ..contract import Unsupported
from ..lowering import register_lowering
from . import c_vec
from . import loopnest as L
from .c_expr import CTYPE
from .emitter import GEMM_PAR_MIN, c_index, dot_dims

MR, NR = 4, 16   # rows x columns of one tile of int32 accumulators
PB = 8           # column panels computed before their epilogue runs (a row of 128 sums per loop)
INT8 = ("int8", "uint8")
C8 = {"int8": "int8_t", "uint8": "uint8_t"}


def handles(e) -> bool:
    """Whether dot_general `e` is an int8 GEMM: 8-bit operands, an int32 result."""
    x, y = e.inputs
    return (x.aval.dtype.name in INT8 and y.aval.dtype.name in INT8 and e.out.aval.dtype.name == "int32")


def _flat(var: str, sizes, strides) -> str:
    """C for the element offset of flat (row-major) index `var` over dims `sizes` x `strides`."""
    dims = []
    for n, s in zip(sizes, strides):
        if n == 1:
            continue
        if dims and dims[-1][1] == s * n:  # merges with the dim before it
            dims[-1] = (dims[-1][0] * n, s)
        else:
            dims.append((n, s))
    terms, inner = [], 1
    for d in reversed(range(len(dims))):
        n, s = dims[d]
        t = var if inner == 1 else f"({var} / {inner})"
        if d > 0:
            t = f"({t} % {n})"
        if s != 0:
            terms.append(t if s == 1 else f"{t} * {s}")
        inner *= n
    return "(" + " + ".join(reversed(terms)) + ")" if terms else "0"


_TYPES = """typedef char qg_v32qi __attribute__((vector_size(32), may_alias));
typedef char qg_v32ql __attribute__((vector_size(32), may_alias, aligned(1)));  /* loads of B: a packed
   weight (ops/packed.py) lies wherever its array does */
typedef signed char qg_v16qs __attribute__((vector_size(16), may_alias, aligned(1)));
typedef unsigned char qg_v16qu __attribute__((vector_size(16), may_alias, aligned(1)));
typedef short qg_v16hi __attribute__((vector_size(32)));
typedef int qg_v8si __attribute__((vector_size(32)));
typedef int qg_v4si __attribute__((vector_size(16)));
typedef unsigned int qg_v8su __attribute__((vector_size(32)));
typedef unsigned int qg_v8sl __attribute__((vector_size(32), may_alias, aligned(4)));
typedef long long qg_v4di __attribute__((vector_size(32)));
typedef int32_t qg_i32 __attribute__((may_alias));
typedef int64_t qg_i64 __attribute__((may_alias));
typedef char qg_v16qi __attribute__((vector_size(16), may_alias, aligned(1)));
#if defined(__clang__)  /* 16 bytes at p sign- (SX) or zero-extended (ZX) to 16 int16 */
#define QG_SX(p) __builtin_convertvector(*(const qg_v16qs*)(p), qg_v16hi)
#define QG_ZX(p) __builtin_convertvector(*(const qg_v16qu*)(p), qg_v16hi)
#else  /* GCC's builtins: its __builtin_convertvector widens in 128-bit halves */
#define QG_SX(p) ((qg_v16hi)__builtin_ia32_pmovsxbw256(*(const qg_v16qi*)(p)))
#define QG_ZX(p) ((qg_v16hi)__builtin_ia32_pmovzxbw256(*(const qg_v16qi*)(p)))
#endif"""


def _fast_kernel(ua: bool) -> list:
    """C (AVX2) for one MR x NR tile by vpmaddubsw + vpmaddwd: `t` (uint32[MR*NR]) from `ap`, `bp`."""
    nv = NR // 8
    out = ["const qg_v16hi ones = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};"]
    out += [" ".join(f"qg_v8su c{r}_{v} = {{0}};" for v in range(nv)) for r in range(MR)]
    out.append("for (int64_t q = 0; q < KQ; q++) {")
    out.append("    " + " ".join(f"const qg_v32qi b{v} = *(const qg_v32ql*)(bp + q * {NR * 4} + {v * 32});"
                                 for v in range(nv)))
    for r in range(MR):  # a 32-bit word of A (4 k of row r) broadcast against 8 columns x 4 k of B
        out.append(f"    {{ const int32_t s = *(const qg_i32*)(ap + q * {MR * 4} + {r * 4}); "
                   f"const qg_v8si x = {{s, s, s, s, s, s, s, s}};")
        for v in range(nv):  # vpmaddubsw takes the unsigned bytes first
            u, sg = ("(qg_v32qi)x", f"b{v}") if ua else (f"b{v}", "(qg_v32qi)x")
            out.append(f"      c{r}_{v} += (qg_v8su)__builtin_ia32_pmaddwd256("
                       f"__builtin_ia32_pmaddubsw256({u}, {sg}), ones);")
        out.append("    }")
    out.append("}")
    out += [f"*(qg_v8sl*)(tt + {r} * tld + {v * 8}) = c{r}_{v};" for r in range(MR) for v in range(nv)]
    return out


def _wide_kernel(ua: bool) -> list:
    """C (AVX2) for one MR x NR tile by vpmaddwd on the bytes widened to int16 (exact for any
    values), 8 columns at a time, A read widened (`aw`: 4 int16 per row and quad): each int32
    lane sums half the k of a column; the halves are added at the end."""
    wx = "QG_SX" if ua else "QG_ZX"  # B is the signed operand when A is the unsigned one
    out = [f"for (int v = 0; v < {NR // 8}; v++) {{"]
    out += ["    " + " ".join(f"qg_v8su c{r}_{h} = {{0}};" for h in range(2)) for r in range(MR)]
    out.append("    for (int64_t q = 0; q < KQ; q++) {")
    out.append(f"        const unsigned char* bq = (const unsigned char*)bp + q * {NR * 4} + v * 32;")
    out.append(f"        const qg_v16hi b0 = {wx}(bq), b1 = {wx}(bq + 16);")
    for r in range(MR):
        out.append(f"        {{ const int64_t s = *(const qg_i64*)(aw + (q * {MR} + {r}) * 4); "
                   "const qg_v4di x = {s, s, s, s}; const qg_v16hi a = (qg_v16hi)x;")
        out.append(f"          c{r}_0 += (qg_v8su)__builtin_ia32_pmaddwd256(a, b0); "
                   f"c{r}_1 += (qg_v8su)__builtin_ia32_pmaddwd256(a, b1); }}")
    out.append("    }")
    for r in range(MR):
        out.append(f"    for (int c = 0; c < 4; c++) {{ tt[{r} * tld + v * 8 + c] = c{r}_0[2 * c] + c{r}_0[2 * c + 1]; "
                   f"tt[{r} * tld + v * 8 + 4 + c] = c{r}_1[2 * c] + c{r}_1[2 * c + 1]; }}")
    out.append("}")
    return out


def _scalar_kernel(at: str, bt: str) -> list:
    """Portable C for one MR x NR tile from the same packed operands (no SIMD assumed)."""
    return [f"for (int e = 0; e < {MR * NR}; e++) tt[e / {NR} * tld + e % {NR}] = 0;",
            "for (int64_t q = 0; q < KQ; q++)",
            f"    for (int r = 0; r < {MR}; r++) {{",
            f"        const {at}* a = (const {at}*)ap + (q * {MR} + r) * 4;",
            f"        for (int c = 0; c < {NR}; c++) {{",
            f"            const {bt}* b = (const {bt}*)bp + (q * {NR} + c) * 4;",
            f"            tt[r * tld + c] += (uint32_t)((int32_t)a[0] * b[0] + (int32_t)a[1] * b[1] + "
            "(int32_t)a[2] * b[2] + (int32_t)a[3] * b[3]);",
            "        }",
            "    }"]


def lower(r, e) -> None:
    """The int8 GEMM `e` (see `handles`, or a `packed_matmul`, whose B comes packed) as one kernel."""
    _lower(r, e)


def lower_epilogue(r, u) -> None:
    """An `Epilogue` of an int8 GEMM: its elementwise group computed on each tile as it is stored."""
    if not (u.op.prim is P.packed_matmul or handles(u.op)) or u.op.params.get("batch", ((), ()))[0]:
        raise Unsupported("an epilogue on a GEMM other than an unbatched int8 one")
    _lower(r, u.op, u.group)


def _packed_dims(r, e) -> tuple:
    """`packed_matmul` `e`'s sizes as `dot_dims` gives a dot_general's (y: the packed weight)."""
    x, w = e.inputs
    xr, o = r.refs[x], r.refs.get(e.out)
    xf = list(range(len(xr.shape) - 1))
    return xr, r.refs[w], o, xf, [], prod(xr.shape[:-1]), e.params["k"], e.params["n"], []


def _pack_b(k: int, n: int, b_k: str, b_j: str, bt: str, ua: bool, corr: str) -> list:
    """C packing this thread's column panels [p0, p1) of B into `Bp`, B's column sums into `Cs`
    (when `corr`) and B's range into umax / smax (of the unsigned / signed operand)."""
    body = [
        "{ /* pack B: Bp[((jp - p0) * KQ + q) * NR + c) * 4 + h] = b[4q + h][jp * NR + c]; column sums */",
        f"    {bt} lo[{NR}], hi[{NR}];",
        f"    for (int c = 0; c < {NR}; c++) {{ lo[c] = 0; hi[c] = 0; }}",
    ]
    if corr:
        body.append(f"    for (int64_t c = 0; c < (p1 - p0) * {NR}; c++) Cs[c] = 0;")
    colsum = lambda vs: (f" Cs[(jp - p0) * {NR} + c] += (uint32_t)((int32_t){vs});" if corr else "")  # noqa: E731

    def quad(guard: bool) -> list:
        """Column j's 4 bytes of quad q into the panel at `d`, with the column's range and sum."""
        load = [f"B[{b_k.replace('kk', f'(4 * q + {h})')} + {b_j}]" for h in range(4)]
        if guard:  # columns past n (the last panel's) are zeros
            load = [f"(j < {n} ? {v} : 0)" for v in load]
        return [
            f"                const int64_t j = jp * {NR} + c;",
            "                " + " ".join(f"const {bt} v{h} = {v};" for h, v in enumerate(load)),
            "                d[4 * c] = v0; d[4 * c + 1] = v1; d[4 * c + 2] = v2; d[4 * c + 3] = v3;",
            f"                {{ {bt} a = v0 < v1 ? v0 : v1, b = v2 < v3 ? v2 : v3; a = a < b ? a : b; "
            "lo[c] = a < lo[c] ? a : lo[c]; }",
            f"                {{ {bt} a = v0 > v1 ? v0 : v1, b = v2 > v3 ? v2 : v3; a = a > b ? a : b; "
            "hi[c] = a > hi[c] ? a : hi[c]; }",
            "               " + colsum("v0 + v1 + v2 + v3")]
    body += [
        f"    const int64_t pf = p1 < {n // NR} ? p1 : {n // NR};  /* panels of whole columns */",
        f"    for (int64_t q = 0; q < {k // 4}; q++)  /* whole quads of whole panels */",
        "        for (int64_t jp = p0; jp < pf; jp++) {",
        f"            {bt}* restrict d = Bp + ((jp - p0) * KQ + q) * {NR * 4};",
        f"            for (int c = 0; c < {NR}; c++) {{",
        *quad(False),
        "            }",
        "        }",
        "    for (int64_t jp = pf; jp < p1; jp++)  /* whole quads of the last, partial panel */",
        f"        for (int64_t q = 0; q < {k // 4}; q++) {{",
        f"            {bt}* restrict d = Bp + ((jp - p0) * KQ + q) * {NR * 4};",
        f"            for (int c = 0; c < {NR}; c++) {{",
        *quad(True),
        "            }",
        "        }",
    ]
    if k % 4:
        body += [
            "    for (int64_t jp = p0; jp < p1; jp++) {  /* the last, partial quad */",
            f"        const int64_t q = {k // 4};",
            f"        for (int c = 0; c < {NR}; c++) {{",
            f"            const int64_t j = jp * {NR} + c;",
            "            for (int h = 0; h < 4; h++) {",
            "                const int64_t kk = 4 * q + h;",
            f"                const {bt} v = (kk < {k} && j < {n}) ? B[{b_k} + {b_j}] : 0;",
            f"                Bp[(((jp - p0) * KQ + q) * {NR} + c) * 4 + h] = v;",
            "                lo[c] = v < lo[c] ? v : lo[c]; hi[c] = v > hi[c] ? v : hi[c];" + colsum("v"),
            "            }",
            "        }",
            "    }"]
    body += [
        f"    for (int c = 0; c < {NR}; c++) {{",
        "        const int s = hi[c] > -lo[c] ? hi[c] : -lo[c]; if (s > smax) smax = s;" if ua else
        "        if (hi[c] > umax) umax = hi[c];",
        "    }",
        "}",
    ]
    return body


def _offsets(ref, g, isizes, jsizes) -> tuple:
    """C for the (row, column) parts of `ref`'s element offset at an epilogue's (i, j)."""
    st, ni = aligned_strides(ref, list(g.shape)), len(isizes)
    return _flat("i", isizes, st[:ni]), _flat("j", jsizes, st[ni:])


def _epilogue(r, g, acc_var, isizes, jsizes) -> tuple:
    """(declarations, per-element statements) computing group `g` at output element (i, j) from
    `acc` (the GEMM's int32 sum, standing for `acc_var`) and its other inputs, storing its outputs."""
    def at(ref) -> str:
        return " + ".join(_offsets(ref, g, isizes, jsizes))
    pre, loads, stmts = [], [], []
    for k, v in enumerate(g.inputs):
        if v is acc_var:
            loads.append("acc")
            continue
        ref = r.refs[v]
        pre.append(f"const {CTYPE[ref.dtype]}* restrict E{k} = {r.ptr(ref)};")
        stmts.append(f"const {CTYPE[ref.dtype]} e_x{k} = E{k}[{at(ref)}];")
        loads.append(f"e_x{k}")
    code, values = r.body(g, loads)
    stmts += code
    for k, (v, val) in enumerate(zip(g.outputs, values)):
        ref = r.refs[v]
        pre.append(f"{CTYPE[ref.dtype]}* restrict Q{k} = {r.ptr(ref)};")
        stmts.append(f"Q{k}[{at(ref)}] = {val};")
    return pre, stmts


def _epilogue_vec(r, g, acc_var, isizes, jsizes) -> list | None:
    """Per-8-columns statements computing group `g` as `_epilogue`'s do, in vector C (c_vec.py):
    `acc` the lanes of 8 sums at (i, j .. j + 7); None where an op, dtype or layout has no vector
    form (every operand must be contiguous or constant along the columns)."""
    names, stmts = {}, []
    try:
        for k, v in enumerate(g.inputs):
            if v is acc_var:
                names[v] = ("acc", "int32")
                continue
            ref = r.refs[v]
            ii, jj = _offsets(ref, g, isizes, jsizes)
            t = ref.dtype
            if t not in c_vec.VTYPE:
                return None
            if jj == "(j)":
                stmts.append(f"const {c_vec.VTYPE[t]} v_x{k} = {c_vec.load(f'E{k} + {ii} + j', t)};")
            elif jj == "0":
                stmts.append(f"const {c_vec.VTYPE[t]} v_x{k} = {c_vec.splat(f'E{k}[{ii}]', t)};")
            else:
                return None
            names[v] = (f"v_x{k}", t)
        for n, q in enumerate(g.eqns):
            code, t = c_vec.render_eqn(q, names)
            stmts.append(f"const {c_vec.VTYPE[t]} v_t{n} = {code};")
            names[q.out] = (f"v_t{n}", t)
        for k, v in enumerate(g.outputs):
            ref = r.refs[v]
            ii, jj = _offsets(ref, g, isizes, jsizes)
            if jj != "(j)":
                return None
            stmts.append(c_vec.store(f"Q{k} + {ii} + j", names[v][0], ref.dtype))
    except Unsupported:
        return None
    return stmts


def _lower(r, e, epi=None) -> None:
    """The int8 GEMM `e` (a dot_general or a packed_matmul) as one kernel; with `epi` (a Group
    reading e's result), the group computed on each stored tile instead of the result."""
    packed = e.prim is P.packed_matmul
    if packed:
        xr, yr, o, xf, yf, m, k, n, bshape = _packed_dims(r, e)
        xc, xb, yc = (len(xr.shape) - 1,), (), ()
    else:
        x, y = e.inputs
        (xc, yc), (xb, yb) = e.params["contract"], e.params["batch"]
        xr, yr, o, xf, yf, m, k, n, bshape = dot_dims(r, e)
    nb = len(xb)
    nbatch = prod(bshape)
    if epi is not None and (m == 0 or n == 0 or k == 0):
        raise Unsupported("an empty GEMM's epilogue")  # the host runs it
    if m == 0 or n == 0 or nbatch == 0:
        r.emit(("dot_general", [], 0, 0))
        return
    if k == 0:
        r.fill(e, 0, "dot_general")
        return
    ax, by = xr.dtype, yr.dtype
    if ax not in INT8 or by not in INT8 or e.out.aval.dtype.name != "int32":
        raise Unsupported("an int8 GEMM needs 8-bit operands and an int32 result")
    ua = by == "int8"            # the packed A is the unsigned operand (B the signed one)
    flip = ax == by              # A is stored ^ 0x80: both operands had one signedness
    at, bt = ("uint8_t", "int8_t") if ua else ("int8_t", "uint8_t")  # packed A, packed B
    corr = "" if not flip else ("-" if ax == "int8" else "+")  # 128 x B's column sums, subtracted/added
    KQ = (k + 3) // 4
    MP, NP = -(-m // MR), -(-n // NR)
    # element offsets: A's row i and depth kk; B's depth kk and column j; the output's i and j
    xs, ys = xr.strides, yr.strides
    os_ = o.strides if o is not None else [0] * (nb + len(xf) + len(yf) + packed)
    a_i = _flat("i", [xr.shape[d] for d in xf], [xs[d] for d in xf])
    a_k = _flat("kk", [xr.shape[d] for d in xc], [xs[d] for d in xc])
    if packed:
        b_k = b_j = ""
        o_i = _flat("i", [xr.shape[d] for d in xf], list(os_[:len(xf)]))
        o_j = _flat("j", [n], [os_[-1]])
    else:
        b_k = _flat("kk", [yr.shape[d] for d in yc], [ys[d] for d in yc])
        b_j = _flat("j", [yr.shape[d] for d in yf], [ys[d] for d in yf])
        o_i = _flat("i", [xr.shape[d] for d in xf], list(os_[nb:nb + len(xf)]))
        o_j = _flat("j", [yr.shape[d] for d in yf], list(os_[nb + len(xf):]))
    isizes = [xr.shape[d] for d in xf]
    jsizes = [n] if packed else [yr.shape[d] for d in yf]
    work = nbatch * m * n * k
    cols = NP >= MP              # threads share the column panels (each packs all of A), else rows
    batched = nbatch > 1
    parallel = work >= GEMM_PAR_MIN
    # per-thread scratch: packed A (its row panels), packed B (its column panels), B's column sums
    if batched or not parallel:
        mp, np_ = str(MP), str(NP)
    elif cols:
        mp, np_ = str(MP), f"(({NP} + nt - 1) / nt)"
    else:
        mp, np_ = f"(({MP} + nt - 1) / nt)", str(NP)
    a_bytes = f"(((size_t){mp} * {MR * KQ * 4} + 63) & ~(size_t)63)"
    b_bytes = "(size_t)0" if packed else f"(((size_t){np_} * {NR * KQ * 4} + 63) & ~(size_t)63)"
    s_bytes = "(size_t)0" if packed else f"(((size_t){np_} * {NR * 4} + 63) & ~(size_t)63)"
    w_bytes = f"(((size_t){mp} * {MR * KQ * 8} + 63) & ~(size_t)63)"  # A widened to int16 (wide kernel)

    epi_pre, epi_store = ([], []) if epi is None else _epilogue(r, epi, e.out, isizes, jsizes)
    epi_vec = None if epi is None else _epilogue_vec(r, epi, e.out, isizes, jsizes)
    xt, yt = C8[ax], C8[by]
    X = " ^ 0x80" if flip else ""
    slow_a = [  # any layout: byte by byte
        f"                for (int64_t q = 0; q < {k // 4}; q++)",
        "                    for (int h = 0; h < 4; h++) {",
        "                        const int64_t kk = 4 * q + h;",
        f"                        const {at} v = ({at})(src[{a_k}]{X});",
        f"                        d[q * {MR * 4} + h] = v; lo = v < lo ? v : lo; hi = v > hi ? v : hi;",
        "                    }"]
    fast_a = [  # a row of contiguous bytes: its range, then 4 bytes at a time
        f"                for (int64_t kk = 0; kk < {k // 4 * 4}; kk++) {{ const {at} v = ({at})(src[kk]{X}); "
        "lo = v < lo ? v : lo; hi = v > hi ? v : hi; }",
        f"                for (int64_t q = 0; q < {k // 4}; q++) {{ uint32_t w; __builtin_memcpy(&w, src + 4 * q, 4); "
        f"{'w ^= 0x80808080u; ' if flip else ''}__builtin_memcpy(d + q * {MR * 4}, &w, 4); }}"]
    body = [
        "/* int8 GEMM (qgemm.py): rows [i0, i1) of A, column panels [p0, p1) of B */",
        "#if defined(__AVX2__) && defined(__GNUC__)", *_TYPES.split("\n"), *c_vec.TYPES.split("\n"), "#endif",
        f"{at}* restrict Ap = ({at}*)ws;",
        *([f"const {bt}* restrict Bp = (const {bt}*)B + {HEADER + 4 * NP * NR} + p0 * {KQ * NR * 4};",
           f"const uint32_t* restrict Cs = (const uint32_t*)((const char*)B + {HEADER}) + p0 * {NR};"] if packed else
          [f"{bt}* restrict Bp = ({bt}*)(ws + {a_bytes});",
           f"uint32_t* restrict Cs = (uint32_t*)(ws + {a_bytes} + {b_bytes});"]),
        f"int16_t* restrict Aw = (int16_t*)(ws + {a_bytes} + {b_bytes} + {s_bytes}); (void)Aw;",
        "const int64_t ip1 = (i1 - i0 + " + str(MR - 1) + f") / {MR};",
        "int umax = 0, smax = 0;  /* the largest unsigned byte, the largest |signed byte| */",
        "{ /* pack A: Ap[((ip * KQ + q) * MR + r) * 4 + h] = a[i0 + ip * MR + r][4q + h] */",
        f"    {at} lo = 0, hi = 0;",
        "    for (int64_t ip = 0; ip < ip1; ip++)",
        f"        for (int r = 0; r < {MR}; r++) {{",
        f"            const int64_t i = i0 + ip * {MR} + r;",
        f"            {at}* d = Ap + (ip * KQ * {MR} + r) * 4;",
        "            if (i < i1) {",
        f"                const {xt}* src = A + {a_i};",
        *(fast_a if a_k == "(kk)" else slow_a),
        f"                for (int64_t kk = {k // 4 * 4}; kk < {KQ * 4}; kk++) {{",
        f"                    const {at} v = kk < {k} ? ({at})(src[{a_k}]{X}) : 0;",
        f"                    d[(kk / 4) * {MR * 4} + kk % 4] = v; lo = v < lo ? v : lo; hi = v > hi ? v : hi;",
        "                }",
        "            } else {",
        f"                for (int64_t q = 0; q < KQ; q++) for (int h = 0; h < 4; h++) d[q * {MR * 4} + h] = 0;",
        "            }",
        "        }",
        "    umax = hi; (void)lo;" if ua else "    smax = hi > -lo ? hi : -lo;",
        "}",
    ]
    if packed:  # B's largest |byte| from the header (ua: B is the signed operand)
        body.append("{ int32_t h[4]; __builtin_memcpy(h, B, sizeof h); smax = h[3]; }")
    else:
        body += _pack_b(k, n, b_k, b_j, bt, ua, corr)
    body += [
        "(void)umax; (void)smax;",
        f"uint32_t t[{MR * NR}] __attribute__((aligned(32)));",
        "#if defined(__AVX2__) && defined(__GNUC__)",
        "const int fast = 2 * umax * smax <= 32767;  /* no int16 pair sum of vpmaddubsw saturates */",
        f"if (!fast) for (int64_t e = 0; e < ip1 * KQ * {MR * 4}; e++) Aw[e] = Ap[e];  /* A widened */",
        "#endif",
        *([] if epi is None else [  # the column panel's sums, for the epilogue after its tiles
            f"uint32_t* restrict Tp = (uint32_t*)(ws + {a_bytes} + {b_bytes} + {s_bytes} + {w_bytes});"]),
        *(["for (int64_t jp = p0; jp < p1; jp++) {"] if epi is None else [
            f"for (int64_t jb = p0; jb < p1; jb += {PB}) {{  /* blocks of {PB} column panels, then their epilogue */",
            f"const int64_t je = jb + {PB} < p1 ? jb + {PB} : p1;",
            "for (int64_t jp = jb; jp < je; jp++) {"]),
        "    for (int64_t ip = 0; ip < ip1; ip++) {",
        f"        const {at}* ap = Ap + ip * KQ * {MR * 4};",
        f"        const {bt}* bp = Bp + (jp - p0) * KQ * {NR * 4};",
        f"        const int16_t* aw = Aw + ip * KQ * {MR * 4}; (void)aw;",
        f"        const int64_t rn = i1 - i0 - ip * {MR} < {MR} ? i1 - i0 - ip * {MR} : {MR};",
        f"        const int64_t cn = {n} - jp * {NR} < {NR} ? {n} - jp * {NR} : {NR};",
        *(["        uint32_t* tt = t; int64_t tld = " + str(NR) + ";"] if epi is None or corr else [
            "        /* a whole tile goes straight into the block's sums */",
            f"        const int whole = rn == {MR} && cn == {NR};",
            f"        uint32_t* tt = whole ? Tp + (ip * {MR}) * {PB * NR} + (jp - jb) * {NR} : t;",
            f"        const int64_t tld = whole ? {PB * NR} : {NR};"]),
        "#if defined(__AVX2__) && defined(__GNUC__)",
        "        if (fast) {",
        *("            " + s for s in _fast_kernel(ua)),
        "        } else {",
        *("            " + s for s in _wide_kernel(ua)),
        "        }",
        "#else",
        *("        " + s for s in _scalar_kernel(at, bt)),
        "#endif",
        "        if (tt == t) for (int64_t r = 0; r < rn; r++) {",
        f"            const int64_t i = i0 + ip * {MR} + r;",
        *(["            int32_t* orow = O + " + o_i + ";"] if epi is None else []),
        "            for (int64_t c = 0; c < cn; c++) {",
        f"                const int32_t acc = (int32_t)(t[r * {NR} + c]" +
        (f" {corr} 128u * Cs[(jp - p0) * {NR} + c]" if corr else "") + ");",
        *([f"                const int64_t j = jp * {NR} + c;", "                orow[" + o_j + "] = acc;"]
          if epi is None else [f"                Tp[(ip * {MR} + r) * {PB * NR} + (jp - jb) * {NR} + c] = (uint32_t)acc;"]),
        "            }",
        "        }",
        "    }",
    ]
    if epi is not None:  # the block's epilogue: its rows, each a vectorized loop over the block's columns
        body += [
            "}",
            f"const int64_t cols = (je * {NR} < {n} ? je * {NR} : {n}) - jb * {NR};",
            "for (int64_t ii = 0; ii < i1 - i0; ii++) {",
            "    const int64_t i = i0 + ii;",
            "    int64_t c0 = 0;  /* the columns the vector loop leaves */",
            *([] if epi_vec is None else [
                "#if defined(__AVX2__) && defined(__GNUC__)",
                "    for (; c0 + 8 <= cols; c0 += 8) {",
                f"        const int64_t j = jb * {NR} + c0;",
                f"        const em_vi acc = *(const em_vil*)(Tp + ii * {PB * NR} + c0);",
                *("        " + s for s in epi_vec),
                "    }",
                "#endif"]),
            "    #pragma omp simd",
            "    for (int64_t c = c0; c < cols; c++) {",
            f"        const int64_t j = jb * {NR} + c;",
            f"        const int32_t acc = (int32_t)Tp[ii * {PB * NR} + c];",
            *("        " + s for s in epi_store),
            "    }",
            "}"]
    body.append("}")
    # the threads' shares, around the body
    pre = [f"const {xt}* A0 = {r.ptr(xr)};", f"const {yt}* B0 = {r.ptr(yr)};",
           "int32_t* O0 = " + (r.ptr(o) if epi is None else "0") + ";", f"const int64_t KQ = {KQ};"]
    pre += epi_pre
    t_bytes = "(size_t)0" if epi is None else f"(((size_t){mp} * {MR * PB * NR * 4} + 63) & ~(size_t)63)"
    per = f"const size_t per = {a_bytes} + {b_bytes} + {s_bytes} + {w_bytes} + {t_bytes};"
    reserve = [per, "#pragma omp single", "ws_reserve(C, per * nt);", "if (!C->ws) return;"]
    core = ["{"] + ["    " + s for s in body] + ["}"]
    if batched:
        bat = []
        for d in range(nb):  # batch dims: size, and strides in x, y, out
            bat.append((bshape[d], xs[xb[d]], ys[yb[d]], os_[d]))
        bvars = [f"bat{d}" for d in range(nb)]
        idx = ["int64_t rem = bi;"]
        for d in reversed(range(nb)):
            idx.append(f"const int64_t {bvars[d]} = rem % {bat[d][0]}; rem /= {bat[d][0]};")
        offs = [c_index(bvars, [b[j + 1] for b in bat]) for j in range(3)]
        item = ["char* ws = C->ws + (size_t)tid * per;", *idx,
                f"const {xt}* A = A0 + {offs[0]};", f"const {yt}* B = B0 + {offs[1]};",
                f"int32_t* O = O0 + {offs[2]};", f"const int64_t i0 = 0, i1 = {m}, p0 = 0, p1 = {NP};"] + core
        loop = L.Loop("bi", nbatch, [L.Stmt("\n".join(item))], parallel=parallel)
        nest = [loop] if parallel else [L.Stmt("#pragma omp single\n{"), loop, L.Stmt("}")]
        lines = L.render([L.Stmt("{"), L.Stmt("\n".join(pre + reserve))] + nest + [L.Stmt("}")])
    else:
        common = ["char* ws = C->ws + (size_t)tid * per;",
                  f"const {xt}* A = A0; const {yt}* B = B0; int32_t* O = O0;"]
        if not parallel:
            share = [f"const int64_t i0 = 0, i1 = {m}, p0 = 0, p1 = {NP};"]
        elif cols:
            share = [f"const int64_t i0 = 0, i1 = {m}, p0 = (int64_t){NP} * tid / nt, "
                     f"p1 = (int64_t){NP} * (tid + 1) / nt;"]
        else:
            share = [f"const int64_t ia = (int64_t){MP} * tid / nt, ib = (int64_t){MP} * (tid + 1) / nt;",
                     f"const int64_t i0 = ia * {MR}, i1 = ib * {MR} < {m} ? ib * {MR} : {m}, p0 = 0, p1 = {NP};"]
        guard = ["if (i1 > i0 && p1 > p0)"]
        single = ([], []) if parallel else (["#pragma omp single", "{"], ["}"])
        text = "\n".join(pre + reserve + single[0] + common + share + guard + core + single[1])
        lines = L.render([L.Stmt("{"), L.Stmt(text), L.Stmt("}")] +
                         ([L.Stmt("#pragma omp barrier")] if parallel else []))
    label = e.prim.name if epi is None else f"{e.prim.name} | " + " ".join(q.prim.name for q in epi.eqns)
    out_bytes = 4 * m * n if epi is None else sum(nbytes(v.aval) for v in epi.inputs + epi.outputs if v is not e.out)
    r.emit((label, lines, 2 * work, nbatch * (m * k + k * n) + out_bytes))


def accepts_epilogue(e) -> bool:
    """Whether the CPU fuses an elementwise group into `e`'s stores: an unbatched int8 GEMM."""
    if e.prim is P.packed_matmul:
        return True
    return e.prim is P.dot_general and handles(e) and not e.params["batch"][0]


register_lowering(P.packed_matmul, "cpu", lower)
register_lowering(Epilogue, "cpu", lower_epilogue)
