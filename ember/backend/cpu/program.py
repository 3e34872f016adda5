"""The CPU step program: its C source assembled from the emitted kernels, compiled, loaded, launched.

Each kernel is a C function of its own (GCC's time grows faster than linearly with a function's
size: the GPT step compiled in 14 s as one function, 1.6 s this way); kernels with the same text
are one function. The step walks a table of (function, argument addresses):

    void ember_step(char *arena, void **io, int nthreads, double *prof, ember_ctx *ctx, int u0, int u1)

runs table entries [u0, u1) inside one OpenMP parallel region, so the runtime can launch the
kernels between two host units as one call (with no host unit, the whole step is one call).
"""
from __future__ import annotations

import ctypes
import re

import numpy as np

from ..contract import Program
from . import blas, compiler
from .c_expr import half_table, itemsize
from .emitter import GEMM_PAR_MIN, PAR_MIN
from .cmath import HALF_NAMES, HALF_PRELUDE, PRELUDE

FLAGS = compiler.FLAGS + ("-fopenmp",)
ENTRY, INIT = "ember_step", "ember_init"

_STATUS = """/* one call's context (a call on each thread has its own): what went wrong, read and
   cleared by ember_status (0 nothing, 1 an index out of range (value, size), 2 no memory for a
   unit's scratch), and the units' scratch memory, kept for the context's next call */
typedef struct { int status; int64_t args[2]; char* ws; size_t ws_size; } ember_ctx;
static void fail(ember_ctx* C, int code, int64_t a, int64_t b)
{
    #pragma omp critical(ember_status)
    if (!C->status) { C->status = code; C->args[0] = a; C->args[1] = b; }
}
static void oob(ember_ctx* C, int64_t value, int64_t size) { fail(C, 1, value, size); }
int ember_status(ember_ctx* C, int64_t* args)
{
    const int status = C->status;
    args[0] = C->args[0]; args[1] = C->args[1]; C->status = 0;
    return status;
}
size_t ember_ctx_size(void) { return sizeof(ember_ctx); }
void ember_ctx_free(ember_ctx* C) { free(C->ws); C->ws = 0; C->ws_size = 0; }"""


_WORKSPACE = """/* the units' scratch (im2col columns, per-thread partial sums): grown by one thread inside
   `omp single`, kept in the context for its next call */
static void ws_reserve(ember_ctx* C, size_t n)
{
    if (n <= C->ws_size) return;
    free(C->ws);
    n = (n + 63) & ~(size_t)63;
    C->ws = (char*)aligned_alloc(64, n);
    C->ws_size = C->ws ? n : 0;
    if (!C->ws) fail(C, 2, (int64_t)n, 0);  /* the unit skips its work; the call raises MemoryError */
}
/* dst[p] = src[(p*s + off) * xs] where 0 <= p*s + off < n, else 0 (one im2col row) */
#define ROW(T) static inline __attribute__((always_inline)) void row_##T(T* restrict dst, const T* restrict src, int64_t np, int64_t s, \\
                                         int64_t off, int64_t n, int64_t xs, int64_t ld) \\
{ \\
    if (ld == 1) { \\
        int64_t a = off >= 0 ? 0 : (-off + s - 1) / s, e = n - off <= 0 ? 0 : (n - off + s - 1) / s; \\
        if (a > np) a = np; \\
        if (e > np) e = np; \\
        if (e < a) e = a; \\
        for (int64_t p = 0; p < a; p++) dst[p] = 0; \\
        if (xs == 1 && s == 1) for (int64_t p = a; p < e; p++) dst[p] = src[p + off]; \\
        else for (int64_t p = a; p < e; p++) dst[p] = src[(p * s + off) * xs]; \\
        for (int64_t p = e; p < np; p++) dst[p] = 0; \\
    } else { \\
        for (int64_t p = 0; p < np; p++) { \\
            const int64_t q = p * s + off; \\
            dst[p] = (q >= 0 && q % ld == 0 && q / ld < n) ? src[(q / ld) * xs] : 0; \\
        } \\
    } \\
}
ROW(float)
ROW(double)
/* Philox4x32-10 of the counter (x0, x1, 0, 0) under key (k0, k1) (Salmon et al., SC'11) */
static inline void philox4x32_10(uint32_t x0, uint32_t x1, uint32_t k0, uint32_t k1, uint32_t w[4])
{
    uint32_t x2 = 0, x3 = 0;
    for (int r = 0; r < 10; r++) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        const uint64_t p0 = (uint64_t)0xD2511F53u * x0, p1 = (uint64_t)0xCD9E8D57u * x2;
        const uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0, y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        x1 = (uint32_t)p1; x3 = (uint32_t)p0; x0 = y0; x2 = y2;
    }
    w[0] = x0; w[1] = x1; w[2] = x2; w[3] = x3;
}"""


def prelude(bits: dict, tables=None) -> str:
    """The C every step starts with: math, OpenMP, the GEMM pointers, status and scratch; with
    `tables` (the step holds half-precision values), the half helpers and those tables' pointers
    (set when the library is loaded)."""
    lines = [PRELUDE]
    if tables is not None:
        lines.append(HALF_PRELUDE)
        lines += [f"const uint16_t* {name};" for name in tables]
    lines.append("#ifdef _OPENMP\n#include <omp.h>\n#endif")
    for kind, ct in (("s", "float"), ("d", "double")):
        if kind in bits:
            bi = "int64_t" if bits[kind] == 64 else "int"
            lines.append(f"typedef void (*{kind}gemm_t)(int, int, int, {bi}, {bi}, {bi}, {ct}, const {ct}*, {bi}, "
                         f"const {ct}*, {bi}, {ct}, {ct}*, {bi});\nstatic {kind}gemm_t {kind.upper()}GEMM;")
    lines.append("static int (*BLAS_LOCAL)(int);")
    lines.append("#include <stdlib.h>")
    lines.append(_STATUS)
    lines.append(_WORKSPACE)
    init = ["void ember_init(void* s, void* d, void* local)", "{"]
    for kind in bits:
        init.append(f"    {kind.upper()}GEMM = ({kind}gemm_t)({kind});")
    init += ["    BLAS_LOCAL = (int (*)(int))local;", "    (void)s; (void)d;  /* unused when a graph has no GEMM of that type */", "}"]
    return "\n".join(lines + init)



def source(kernels: list, bits: dict) -> tuple:
    """(C source, first table entry of each kernel) of the step running `kernels`
    [(label, C lines, flops, bytes, argument Refs)] in order."""
    funcs, known, table, arg0, args = [], {}, [], [0], []
    first = []
    for u, (label, lines, _, _, refs_u) in enumerate(kernels):
        first.append(len(table))
        if not lines:
            continue
        text = "\n".join(lines)
        if text not in known:
            known[text] = f = f"unit{u}"
            funcs += [f"/* {label} */",
                      f"static __attribute__((noinline)) void {f}(void* const* P, const int tid, const int nt, ember_ctx* C)",
                      "{", "    (void)P; (void)tid; (void)nt; (void)C;", *lines, "}"]
        table.append((known[text], u))
        for ref in refs_u:
            item = itemsize(ref.dtype)
            args.append(f"{{{int(ref.where == 'io')}, {ref.at}, {ref.offset * item}}}")
        arg0.append(len(args))
    first.append(len(table))
    n_args = max([b - a for a, b in zip(arg0, arg0[1:])] + [1])
    body = "\n".join(funcs)
    tables = sorted(set(re.findall(r"em_lut_[0-9a-f]+", body))) if any(n in body for n in HALF_NAMES) else None
    text = "\n".join([
        prelude(bits, tables),
        *funcs,
        "typedef void (*unit_t)(void* const*, int, int, ember_ctx*);",
        f"static const unit_t UNITS[] = {{{', '.join(f for f, _ in table) or '0'}}};",
        f"static const int UNIT_ID[] = {{{', '.join(str(u) for _, u in table) or '0'}}};",
        f"static const int ARG0[] = {{{', '.join(map(str, arg0))}}};",
        f"static const int64_t ARGS[][3] = {{{', '.join(args) or '{0, 0, 0}'}}};  /* in io?, arena byte or io slot, byte offset */",
        f"void {ENTRY}(char* A, void** io, int nthreads, double* prof, ember_ctx* C, int u0, int u1)",
        "{",
        "    #pragma omp parallel num_threads(nthreads)",
        "    {",
        "        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();",
        "        if (BLAS_LOCAL) BLAS_LOCAL(1);",
        "        double t = prof ? omp_get_wtime() : 0;",
        "        for (int u = u0; u < u1; u++) {",
        f"            void* P[{n_args}];",
        "            for (int a = ARG0[u]; a < ARG0[u + 1]; a++)",
        "                P[a - ARG0[u]] = (ARGS[a][0] ? (char*)io[ARGS[a][1]] : A + ARGS[a][1]) + ARGS[a][2];",
        "            UNITS[u](P, tid, nt, C);",
        "            if (prof && tid == 0) { double now = omp_get_wtime(); prof[UNIT_ID[u]] += now - t; t = now; }",
        "        }",
        "        if (BLAS_LOCAL) BLAS_LOCAL(0);",
        "    }",
        "}", ""])
    return text, first, tables or []


class CProgram(Program):
    """A compiled step: `launch` runs kernels [start, stop) of its table."""

    def __init__(self, kernels: list, native: list, kernel_of: list, why: dict, bits: dict):
        self.rows, self.native, self.kernel_of, self.why = kernels, native, kernel_of, why
        self.source, self._first, self.tables = source(kernels, bits)
        # kernels [a, b) with none big enough to share its work run on one thread: a team would
        # only wait at their barriers, for milliseconds when another process holds a core
        self._big = np.cumsum([0] + [bool(k[1]) and (k[2] >= 2 * GEMM_PAR_MIN or k[3] >= PAR_MIN)
                                     for k in kernels]).tolist()
        self.lib = None
        if not any(lines for _, lines, *_ in kernels):  # nothing to run natively: nothing to build
            return
        lib = compiler.load_library(self.source, FLAGS)
        if lib is None:
            from ..contract import Unsupported
            raise Unsupported("no working C compiler")
        self.lib = lib
        for name in self.tables:  # the half tables live for the process (`half_table`)
            ctypes.c_void_p.in_dll(lib, name).value = half_table(name).ctypes.data
        init = getattr(lib, INIT)
        init.argtypes = [ctypes.c_void_p] * 3
        init.restype = None
        init(*(blas.gemm(k)[0] if k in bits else None for k in "sd"), blas.set_threads_local_address())
        self._status = lib.ember_status
        self._status.argtypes, self._status.restype = [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int
        size_fn = lib.ember_ctx_size
        size_fn.argtypes, size_fn.restype = [], ctypes.c_size_t
        self._ctx_size = size_fn()
        self._ctx_free = lib.ember_ctx_free
        self._ctx_free.argtypes, self._ctx_free.restype = [ctypes.c_void_p], None
        self.fn = getattr(lib, ENTRY)
        self.fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_void_p,
                            ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self.fn.restype = None

    def new_context(self):
        """The C `ember_ctx` (status word, scratch) and room for the status arguments."""
        if self.lib is None:
            return None
        ctx, args = np.zeros(-(-self._ctx_size // 8), np.int64), np.zeros(2, np.int64)
        return ctx, args, ctx.ctypes.data, args.ctypes.data  # the arrays and their addresses

    def free_context(self, ctx) -> None:
        """Free the context's scratch memory."""
        if ctx is not None:
            self._ctx_free(ctx[2])

    def launch(self, ctx, arena_ptr, io, nthreads, prof, start, stop) -> None:
        """Run kernels [start, stop) in one OpenMP region."""
        if self.lib is None:
            return
        if self._big[stop] == self._big[start]:
            nthreads = 1
        self.fn(arena_ptr, io, nthreads, None if prof is None else prof.ctypes.data, ctx[2],
                self._first[start], self._first[stop])

    def status(self, ctx) -> tuple:
        """(code, a, b) set by the last launch's kernels, cleared by reading it."""
        if self.lib is None:
            return 0, 0, 0
        status = self._status(ctx[2], ctx[3])
        if not status:
            return 0, 0, 0
        a, b = ctx[1].tolist()
        return status, a, b
