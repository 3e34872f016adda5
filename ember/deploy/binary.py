"""Binary layers with XNOR + popcount arithmetic (MD-11), as XNOR-Net (Rastegari et al., 2016).

A ±1 vector of length n is packed into ``ceil(n / 64)`` uint64 words, element ``64 k + i`` in bit
i of word k, bit 1 for +1 and 0 for -1 (`binarize` maps 0 to +1, as a sign with ties up); the
padding bits of the last word are 0 in every packed vector. For two packed vectors the ±1 dot
product is ``n - 2 * popcount(a XOR b)``: equal bits contribute +1, different ones -1, and the
zero padding XORs to nothing, so the result is exact.

`BinaryLinear` holds a float (latent) weight W; its forward is ``alpha * (sign(x) . sign(W)^T) + b``
with ``alpha[o] = mean |W[o, :]|`` per output channel. In inference (no grad needed, concrete
input) it runs on packed bits on the host; when autograd or ember.jit needs the graph, it runs the
same computation with ember ops, signs taken with the straight-through estimator (the gradient of
``clamp(x, -1, 1)``), so the layer trains as XNOR-Net's does. Both paths give the same numbers: the
±1 dot products are integers, exact in float32 up to 2^24 terms.
"""
from __future__ import annotations

import numpy as np

from .. import api as E
from .._core.errors import EmberError
from .._core.state import is_grad_enabled, no_grad
from ..nn import functional as F
from ..nn import init
from ..nn.linear import Linear
from ..tensor import Tensor, from_numpy

__all__ = ["BinaryError", "binarize", "pack_bits", "unpack_bits", "popcount", "xnor_popcount_dot",
           "xnor_popcount_matmul", "sign_ste", "BinaryLinear"]

WORD = 64


class BinaryError(EmberError, ValueError):
    """A binarization request that cannot be carried out (NaN input, mismatched lengths...)."""


def _np(x) -> np.ndarray:
    if isinstance(x, Tensor):
        if not isinstance(getattr(x, "_data", None), np.ndarray):
            raise BinaryError("binary packing needs concrete values, but the tensor is being traced by ember.jit")
        return np.asarray(x.detach().numpy())
    return np.asarray(x)


def binarize(w) -> np.ndarray:
    """sign(w) as float32 ±1, with 0 (and -0.0) mapped to +1; NaN raises BinaryError."""
    a = _np(w)
    if a.dtype.kind in "fc" and np.isnan(a).any():
        raise BinaryError(f"cannot binarize: {int(np.isnan(a).sum())} of {a.size} values are NaN")
    return np.where(a >= 0, np.float32(1), np.float32(-1))


def pack_bits(x) -> np.ndarray:
    """Pack the signs of `x` along its last axis into uint64 words: shape (..., ceil(n / 64))."""
    bits = binarize(x) > 0
    n = bits.shape[-1] if bits.ndim else 1
    bits = bits.reshape(bits.shape[:-1] + (n,)) if bits.ndim else bits.reshape(1)
    words = -(-n // WORD)
    pad = words * WORD - n
    if pad:
        bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (pad,), bool)], axis=-1)
    b8 = np.packbits(bits.reshape(bits.shape[:-1] + (words, WORD)), axis=-1, bitorder="little")
    return np.ascontiguousarray(b8).view("<u8").reshape(bits.shape[:-1] + (words,)).astype(np.uint64)


def unpack_bits(words, n: int) -> np.ndarray:
    """The float32 ±1 vectors of length `n` that `pack_bits` packed into `words`."""
    w = np.ascontiguousarray(np.asarray(words, dtype=np.uint64)).astype("<u8")
    if w.shape[-1] * WORD < n or (n and w.shape[-1] != -(-n // WORD)):
        raise BinaryError(f"{w.shape[-1]} words cannot hold {n} bits packed by pack_bits")
    b8 = w.view(np.uint8).reshape(w.shape[:-1] + (w.shape[-1] * 8,))
    bits = np.unpackbits(b8, axis=-1, bitorder="little")[..., :n]
    return np.where(bits.astype(bool), np.float32(1), np.float32(-1))


_BYTE_COUNTS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(words) -> np.ndarray:
    """The number of set bits of each uint64 word (int64)."""
    w = np.asarray(words, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(w).astype(np.int64)
    b = np.ascontiguousarray(w).view(np.uint8).reshape(w.shape + (8,))
    return _BYTE_COUNTS[b].sum(axis=-1, dtype=np.int64)


def xnor_popcount_dot(a_bits, b_bits, n: int):
    """The ±1 dot product of two packed vectors of length n: ``n - 2 * popcount(a XOR b)`` (int, or int64 array)."""
    a, b = np.asarray(a_bits, dtype=np.uint64), np.asarray(b_bits, dtype=np.uint64)
    if a.shape[-1] != b.shape[-1] or a.shape[-1] != -(-int(n) // WORD):
        raise BinaryError(f"packed lengths {a.shape[-1]} and {b.shape[-1]} words do not fit n={n} "
                          f"({-(-int(n) // WORD)} words)")
    r = int(n) - 2 * popcount(np.bitwise_xor(a, b)).sum(axis=-1)
    return int(r) if np.ndim(r) == 0 else r


def xnor_popcount_matmul(a_bits, b_bits, n: int, chunk: int = 1 << 22) -> np.ndarray:
    """(M, N) int64 ±1 dot products of packed rows a (M, W) and b (N, W), in chunks of about `chunk` words."""
    a, b = np.asarray(a_bits, dtype=np.uint64), np.asarray(b_bits, dtype=np.uint64)
    if a.ndim != 2 or b.ndim != 2:
        raise BinaryError(f"xnor_popcount_matmul takes 2-D packed operands, got {a.shape} and {b.shape}")
    out = np.empty((a.shape[0], b.shape[0]), np.int64)
    rows = max(1, chunk // max(1, b.shape[0] * b.shape[1]))
    for i in range(0, a.shape[0], rows):
        out[i:i + rows] = xnor_popcount_dot(a[i:i + rows, None, :], b[None, :, :], n)
    return out


def sign_ste(x: Tensor) -> Tensor:
    """±1 sign of x (0 -> +1) whose gradient is that of clamp(x, -1, 1) (straight-through estimator)."""
    c = E.clamp(x, -1.0, 1.0)
    s = E.where(x >= 0, 1.0, -1.0)
    return c + (s - c).detach()


class BinaryLinear(Linear):
    """XNOR-Net linear layer: ``alpha * (sign(x) . sign(W)^T) + bias``, alpha = per-output mean |W|
    (nn.Linear's parameters and initialization; the latent float weight is what trains)."""

    @classmethod
    def from_linear(cls, linear: Linear) -> "BinaryLinear":
        """A BinaryLinear whose latent weight and bias are copies of `linear`'s."""
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        with no_grad():
            m.weight.copy_(linear.weight.detach())
            if linear.bias is not None:
                m.bias.copy_(linear.bias.detach())
        return m

    def alpha(self) -> Tensor:
        """The per-output-channel scale mean |W| (shape (out_features,))."""
        return E.mean(E.abs(self.weight), 1)

    def packed_weight(self) -> np.ndarray:
        """sign(W) packed row by row: (out_features, ceil(in_features / 64)) uint64."""
        return pack_bits(self.weight)

    def _needs_graph(self, x: Tensor) -> bool:
        traced = not isinstance(getattr(x, "_data", None), np.ndarray) or \
            not isinstance(getattr(self.weight, "_data", None), np.ndarray)
        return traced or (is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                                 or (self.bias is not None and self.bias.requires_grad)))

    def forward(self, input):
        if input.shape[-1] != self.in_features:
            raise ValueError(f"BinaryLinear({self.in_features}, {self.out_features}) got input with last dim "
                             f"{input.shape[-1]}")
        if self._needs_graph(input):
            y = F.linear(sign_ste(input), sign_ste(self.weight)) * self.alpha()
            return y if self.bias is None else y + self.bias
        return from_numpy(self.forward_packed(input))

    def forward_packed(self, input) -> np.ndarray:
        """The forward on packed bits with XNOR + popcount, on the host (numpy in, numpy out)."""
        x = _np(input)
        lead = x.shape[:-1]
        dots = xnor_popcount_matmul(pack_bits(x.reshape(-1, self.in_features)), self.packed_weight(),
                                    self.in_features)
        with no_grad():
            alpha = self.alpha().numpy()
            bias = None if self.bias is None else self.bias.detach().numpy()
        y = dots.astype(alpha.dtype) * alpha
        if bias is not None:
            y = y + bias
        return y.reshape(lead + (self.out_features,))
