"""`packed_matmul`: an 8-bit GEMM against a weight packed once, ahead of time (PyTorch's
`linear_prepack`, MKL's `cblas_gemm_s8u8s32_pack`): the weight is constant across calls, so the
int8 GEMM kernel's per-call packing of it (a quarter of the time at 64 x 784 x 512) is done once.

``packed_matmul(x, packed, k=, n=)``: x (..., k) int8 or uint8, `packed` the 1-D int8 array that
`pack_weight(w)` makes of an int8 weight w (k, n); the result is (..., n) int32, the exact sums
sum_k x[..., k] * w[k, n] (as ``dot_general(x, w, preferred=int32)``).

The packed layout, which the CPU kernel (backend/cpu/qgemm.py) reads as it is:

    bytes [0, 64)           int32 header: MAGIC, k, n, max |w| (the kernel's choice of
                            microkernel), then zeros
    bytes [64, 64 + 4 NQ)   int32 column sums of w, zero past n   (NQ = NP * NR)
    then NP panels of NR = 16 columns: panel p, quad q (k zero-padded to KQ * 4), column c,
        byte h = w[4q + h][16p + c]   (zero past k and n)

so a 32-bit word of the activations (4 k of one row) broadcast against 32 bytes of a panel meets
8 columns times 4 k, as in the per-call packing.
"""
from __future__ import annotations

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from .core import CUSTOM, Aval, Primitive, register

NR = 16                 # columns per panel
HEADER = 64             # bytes
MAGIC = 0x38514D45      # "EMQ8" read as a little-endian int32
INT8 = (dt.int8, dt.uint8)


def packed_size(k: int, n: int) -> int:
    """Bytes of the packed form of a (k, n) weight."""
    np_, kq = -(-n // NR), -(-k // 4)
    return HEADER + 4 * np_ * NR + np_ * kq * NR * 4


def pack_weight(w) -> np.ndarray:
    """The packed form (1-D int8) of int8 weight `w` (k, n): see the module doc."""
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 2:
        raise op_error(DTypeError, "pack_weight", f"needs a 2-D int8 weight (k, n), got {w.dtype} of shape {w.shape}")
    k, n = w.shape
    np_, kq = -(-n // NR), -(-k // 4)
    pad = np.zeros((kq * 4, np_ * NR), np.int8)
    pad[:k, :n] = w
    out = np.zeros(packed_size(k, n), np.int8)
    head = out[:HEADER].view(np.int32)
    head[:4] = (MAGIC, k, n, int(np.abs(w.astype(np.int32)).max()) if w.size else 0)
    out[HEADER:HEADER + 4 * np_ * NR].view(np.int32)[:] = pad.astype(np.int32).sum(0)
    # [q, 4, panel, 16] -> [panel, q, 16, 4]
    panels = pad.reshape(kq, 4, np_, NR).transpose(2, 0, 3, 1)
    out[HEADER + 4 * np_ * NR:] = panels.reshape(-1)
    return out


def unpack_weight(packed, k: int, n: int) -> np.ndarray:
    """The int8 weight (k, n) that `packed` holds (`pack_weight`'s inverse)."""
    p = np.asarray(packed)
    _check_blob(p.dtype, p.shape, k, n, "unpack_weight")
    head = p[:HEADER].view(np.int32)
    if int(head[0]) != MAGIC or (int(head[1]), int(head[2])) != (k, n):
        raise op_error(ShapeError, "packed_matmul", f"the packed weight's header says {tuple(head[1:3])} "
                       f"(magic {int(head[0]):#x}), not a weight packed by pack_weight for k={k}, n={n}")
    np_, kq = -(-n // NR), -(-k // 4)
    panels = p[HEADER + 4 * np_ * NR:].reshape(np_, kq, NR, 4).transpose(1, 3, 0, 2)
    return np.ascontiguousarray(panels.reshape(kq * 4, np_ * NR)[:k, :n])


def _check_blob(dtype, shape, k, n, op):
    want = packed_size(k, n)
    if np.dtype(dtype) != np.int8 or tuple(shape) != (want,):
        raise op_error(ShapeError, op, f"the packed weight must be the int8 array of {want} bytes pack_weight "
                       f"makes of a ({k}, {n}) weight, got {np.dtype(dtype)} of shape {tuple(shape)}")


def _abstract(x: Aval, packed: Aval, *, k: int, n: int) -> Aval:
    if x.dtype not in INT8:
        raise op_error(DTypeError, "packed_matmul", f"needs int8 or uint8 activations, got {x.dtype.name}")
    if not x.shape or x.shape[-1] != k:
        raise op_error(ShapeError, "packed_matmul", f"activations of shape {x.shape} do not end in k={k} "
                       f"(the packed weight is ({k}, {n}))")
    _check_blob(packed.dtype.np, packed.shape, k, n, "packed_matmul")
    return Aval(tuple(x.shape[:-1]) + (n,), dt.int32)


def _impl(x, packed, *, k: int, n: int):
    w = unpack_weight(packed, k, n)
    lead = x.shape[:-1]
    out = np.matmul(x.reshape(-1, k).astype(np.int32), w.astype(np.int32))
    return out.reshape(lead + (n,))


register(Primitive("packed_matmul", impl=_impl, abstract=_abstract, kind="linalg", promote_args=(0,),
                   dtypes=INT8, dtype_rule=CUSTOM, lowering=None,
                   doc="8-bit activations x a pre-packed int8 weight -> int32 (backend/cpu/qgemm.py)"))
