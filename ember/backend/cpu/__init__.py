"""The CPU target: every unit of a step as C, compiled by the system C compiler, run with OpenMP.

- allocator: the contract's anonymous mapping with huge-page advice;
- compiler: each unit through its registered lowering (`register_lowering(prim, "cpu", fn)` in
  the files of this package: elementwise, rows, reductions, gemm, conv, windows, gather, fills)
  into an `Emitter`; the kernels become one C program (`program.py`), built into a content-hash
  cache (`compiler.py`) and loaded with ctypes;
- launcher: `CProgram.launch`, one OpenMP region per range of kernels;
- library calls: CBLAS sgemm/dgemm (`blas.py`: MKL when installed, else numpy's OpenBLAS).

float16 and bfloat16 values (their bits in a uint16_t) are computed in float32 and rounded once
per primitive, bit for bit the numpy executor's (`c_expr.py`); GEMMs and convolutions of them
convert their operands into float32 scratch for SGEMM.

A unit with no lowering, or whose lowering raises `Unsupported` (a dtype C lacks, a GEMM
operand layout BLAS cannot read), is left to the host; the runtime runs it with numpy.
"""
from __future__ import annotations

from ..contract import Target, Unsupported
from ..lowering import get_lowering, unlowered
from . import blas, compiler
from . import conv, elementwise, fills, gather, gemm, qgemm, reductions, rows, windows  # noqa: F401  (registrations)
from .c_expr import SUPPORTED_DTYPES, eqn_supported, why_unsupported
from .emitter import Emitter
from .program import CProgram


def _dtype_lacking(u) -> str | None:
    """The first dtype unit `u` reads or writes that C has no type for, or None."""
    eqns = [u] if u.prim is not None else u.eqns
    for e in eqns:
        for a in (*e.inputs, e.out):
            if a.aval.dtype.name not in SUPPORTED_DTYPES:
                return a.aval.dtype.name
    return None


class CpuTarget(Target):
    """The CPU: C kernels in one OpenMP region per launch."""

    name = "cpu"

    def available(self) -> bool:
        """Whether the system C compiler works."""
        return compiler.available()

    def fusible(self, eqn) -> bool:
        """Whether `eqn` renders to a C scalar expression (so it can join a fused loop)."""
        return eqn_supported(eqn)

    def epilogue(self, eqn) -> bool:
        """Whether `eqn` takes the elementwise group reading its result into its stores (int8 GEMMs)."""
        return qgemm.accepts_epilogue(eqn)

    def compile(self, units, refs, graph) -> CProgram:
        """Each unit through its CPU lowering into one C program; a unit whose lowering is
        missing or raises `Unsupported` is left to the host."""
        bits = {}
        for kind in "sd":
            g = blas.gemm(kind)
            if g is not None:
                bits[kind] = g[1]
        r = Emitter(refs, bits)
        native, kernel_of, why = [], [], {}
        for k, u in enumerate(units):
            start = len(r.units)
            if u is not None:  # (None: a view, no kernel)
                fn = get_lowering(type(u) if u.prim is None else u.prim, "cpu")
                lacking = _dtype_lacking(u)
                if lacking:
                    why[k] = f"values of dtype {lacking}"
                elif fn is None and u.prim is not None and u.prim.kind == "elementwise" and u.prim.lowering:
                    why[k] = why_unsupported(u) or "not fused"  # its scalar expression has no C form here
                elif fn is None:
                    why[k] = unlowered("cpu").get(u.prim, "no CPU lowering")
                else:
                    try:
                        fn(r, u)
                    except Unsupported as ex:  # this unit runs on the host
                        del r.units[start:]
                        r.args, r.n_tmp = [], 0
                        why[k] = str(ex)
            native.append(k not in why)
            kernel_of.append((start, len(r.units)))
        return CProgram(r.units, native, kernel_of, why, bits)
