"""Gradient compression for DDP's all-reduce (DT-13, LAB-4; PyTorch's fp16/bf16 compress hooks):
the float32 gradients travel as float16, bfloat16 or float8 (e4m3) bytes, summed in float32.

`DistributedDataParallel(model, compression="fp16" | "bf16" | "fp8" | a Codec)` runs each bucket's
all-reduce as ember's ring (reduce-scatter, then all-gather) with every message encoded by the
codec: in the reduce-scatter a rank decodes the partial sum it receives, adds its own float32
chunk and encodes the result for the next hop; in the all-gather the owner of a chunk encodes it
once, keeps the decoded values itself, and the bytes are forwarded as they came, so every rank
ends with the same values. The bytes sent are the float32 ring's times itemsize / 4 (float8 adds
4 bytes of scale per message): half for fp16 and bf16, a quarter for fp8 (`stats["bytes_sent"]`).

float8 e4m3 holds 3 mantissa bits and magnitudes up to 448, so each message is scaled by its
largest |value| / 448 (sent as a float32 first). With error feedback (`FP8(error_feedback=True)`,
the default), each rank adds to its bucket the part of its previous gradient that the encoding
lost before encoding it (EF-SGD, on each rank's own contribution), so the error does not build up
over steps.
"""
from __future__ import annotations

import numpy as np

from .errors import DistributedError

__all__ = ["Codec", "FP16", "BF16", "FP8", "codec"]


class Codec:
    """Encodes float32 arrays as bytes and back; `itemsize` bytes per value plus `header` per message."""

    name = "fp32"
    itemsize = 4
    header = 0
    error_feedback = False

    def nbytes(self, n: int) -> int:
        """Bytes of the encoding of n values."""
        return self.header + n * self.itemsize

    def encode(self, x: np.ndarray, out: np.ndarray) -> None:
        """Write the encoding of float32 `x` into uint8 `out` (`nbytes(x.size)` bytes)."""
        raise NotImplementedError

    def decode(self, buf: np.ndarray, out: np.ndarray) -> None:
        """Write the float32 values of encoding `buf` into `out`."""
        raise NotImplementedError

    def roundtrip(self, x: np.ndarray) -> np.ndarray:
        """decode(encode(x)): what a receiver gets for `x`."""
        buf = np.empty(self.nbytes(x.size), np.uint8)
        self.encode(x, buf)
        y = np.empty_like(x)
        self.decode(buf, y)
        return y


class _Cast(Codec):
    def __init__(self, np_dtype, name: str):
        self.dtype, self.name, self.itemsize = np.dtype(np_dtype), name, np.dtype(np_dtype).itemsize

    def encode(self, x, out):
        out.view(self.dtype)[:] = x  # round to nearest even, as astype

    def decode(self, buf, out):
        out[:] = buf.view(self.dtype)

    def __repr__(self):
        return f"<ember.distributed codec {self.name}>"


def FP16() -> Codec:
    """float16 messages (IEEE half: 10 mantissa bits, up to 65504)."""
    return _Cast(np.float16, "fp16")


def BF16() -> Codec:
    """bfloat16 messages (float32's range, 7 mantissa bits)."""
    import ml_dtypes
    return _Cast(ml_dtypes.bfloat16, "bf16")


class FP8(Codec):
    """float8 e4m3 messages, each scaled by its largest |value| / 448 (a float32 header)."""

    name, itemsize, header = "fp8", 1, 4
    MAX = 448.0

    def __init__(self, error_feedback: bool = True):
        import ml_dtypes
        self.f8 = np.dtype(ml_dtypes.float8_e4m3fn)
        self.error_feedback = error_feedback

    def encode(self, x, out):
        m = float(np.max(np.abs(x))) if x.size else 0.0
        if not np.isfinite(m):
            raise DistributedError("fp8 gradient compression: the gradient holds inf or NaN")
        scale = np.float32(m / self.MAX if m > 0 else 1.0)
        out[:4].view(np.float32)[0] = scale
        out[4:].view(self.f8)[:] = x / scale

    def decode(self, buf, out):
        out[:] = buf[4:].view(self.f8).astype(np.float32) * buf[:4].view(np.float32)[0]

    def __repr__(self):
        return f"<ember.distributed codec fp8 e4m3, error_feedback={self.error_feedback}>"


def codec(spec) -> Codec | None:
    """A Codec from None, "fp16", "bf16", "fp8" or a Codec."""
    if spec is None or isinstance(spec, Codec):
        return spec
    makers = {"fp16": FP16, "float16": FP16, "bf16": BF16, "bfloat16": BF16, "fp8": FP8, "float8": FP8}
    if spec not in makers:
        raise ValueError(f"unknown gradient compression {spec!r}; use one of fp16, bf16, fp8 or a Codec")
    return makers[spec]()


def ring_all_reduce(g, flat: np.ndarray, c: Codec, tag: int, isend, irecv):
    """The ring all-reduce schedule (a generator of request lists) of float32 `flat`, messages
    encoded by `c`; afterwards every rank holds the same sum in `flat`."""
    n, r = g.size, g.rank
    right, left = (r + 1) % n, (r - 1) % n
    chunks = np.array_split(flat, n)
    big = max(ch.size for ch in chunks)
    sbuf, rbuf = np.empty(c.nbytes(big), np.uint8), np.empty(c.nbytes(big), np.uint8)
    tmp = np.empty(big, np.float32)
    for s in range(n - 1):  # reduce-scatter: rank r ends owning the sum of chunk r + 1
        si, ri = (r - s) % n, (r - 1 - s) % n
        sb, rb = sbuf[:c.nbytes(chunks[si].size)], rbuf[:c.nbytes(chunks[ri].size)]
        c.encode(chunks[si], sb)
        yield [isend(g, sb, right, tag), irecv(g, rb, left, tag)]
        c.decode(rb, tmp[:chunks[ri].size])
        chunks[ri] += tmp[:chunks[ri].size]
    own = (r + 1) % n
    if n > 1:
        sb = sbuf[:c.nbytes(chunks[own].size)]
        c.encode(chunks[own], sb)
        c.decode(sb, chunks[own])  # the owner keeps what the others will decode
    for s in range(n - 1):  # all-gather of the encoded sums, forwarded as they came
        si, ri = (r + 1 - s) % n, (r - s) % n
        rb = rbuf[:c.nbytes(chunks[ri].size)]
        yield [isend(g, sb, right, tag), irecv(g, rb, left, tag)]
        c.decode(rb, chunks[ri])
        sbuf, rbuf = rbuf, sbuf
        sb = sbuf[:rb.size]
