"""Quantization math (MD-6): affine qparams, quantize / dequantize per tensor and per channel, int4 packing.

The rules are PyTorch's (torch.ao.quantization observers and torch.quantize_per_tensor /
quantize_per_channel), computed in float32 as torch does:

- the range always includes 0: ``min' = min(min, 0)``, ``max' = max(max, 0)``;
- affine: ``scale = (max' - min') / float32(qmax - qmin)``, ``scale = max(scale, eps)``,
  ``zero_point = clamp(qmin - round(min' / scale), qmin, qmax)``;
- symmetric: ``scale = max(-min', max') / float32((qmax - qmin) / 2)``, ``scale = max(scale, eps)``,
  zero_point 0 for signed dtypes, 128 for uint8 over 0..255, else ``(qmin + qmax) // 2``;
- `quantize`: ``q = clamp(round_half_even(fma(x, float32(1 / scale), zero_point)), qmin, qmax)``,
  torch.quantize_per_tensor / per_channel's (FBGEMM) kernel: a multiply by the float32 reciprocal,
  not a divide, and the zero point added *before* rounding; the fake-quant kernels
  (`ember.deploy.qat.fake_quantize`, torch.fake_quantize_per_*_affine) add it *after* rounding,
  ``clamp(round(x * inv) + zero_point)``: the two differ by one step at ties with an odd zero point,
  in torch as here. ember clamps to the QParams' [quant_min, quant_max]; torch.quantize_per_*
  clamps to the storage dtype's full range (they differ only for a custom or reduced range);
- ``x' = (q - zero_point) * scale``.

eps defaults to float32's machine epsilon (torch.finfo(torch.float32).eps), so a zero-width range
or an all-zero tensor gets scale eps, never 0. Non-finite ranges, NaN weights and a zero or negative
scale raise `QuantizationError` (an `EmberError` and a `ValueError`) naming the tensor or layer.
Where torch's kernels are undefined (NaN, or |x / scale| beyond int64, which wraps), ember saturates
or refuses instead of copying the wrap.

int4 is weight-only: values in -8..7 (``"int4"``) or 0..15 (``"uint4"``) held in int8/uint8
tensors, packed two per byte by `pack_int4` (element 2k in the low nibble, 2k+1 in the high one,
as torch.quint4x2; an odd count leaves the last high nibble 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ember import api as E
from ember._core import dtypes as dt
from ember._core.errors import EmberError
from ember.tensor import Tensor, tensor as new_tensor

__all__ = ["QuantizationError", "QParams", "DTYPE_RANGES", "F32_EPS", "qrange", "choose_qparams",
           "quantize", "dequantize", "fake_quantize_np", "pack_int4", "unpack_int4", "check_finite",
           "is_traced"]

F32_EPS = float(np.finfo(np.float32).eps)
DTYPE_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15)}
_STORAGE = {"int8": "int8", "uint8": "uint8", "int4": "int8", "uint4": "uint8"}


class QuantizationError(EmberError, ValueError):
    """Quantization cannot proceed: a non-finite tensor, a zero scale, an empty calibration set..."""


def qrange(dtype: str, quant_min: int | None = None, quant_max: int | None = None,
           reduce_range: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of a quantized dtype, optionally custom or reduced by one bit (torch's reduce_range)."""
    if dtype not in DTYPE_RANGES:
        raise QuantizationError(f"quantized dtype must be one of {sorted(DTYPE_RANGES)}, got {dtype!r}")
    lo, hi = DTYPE_RANGES[dtype]
    if quant_min is not None or quant_max is not None:
        qmin = lo if quant_min is None else int(quant_min)
        qmax = hi if quant_max is None else int(quant_max)
        if not lo <= qmin < qmax <= hi:
            raise QuantizationError(f"quant range [{qmin}, {qmax}] must lie inside {dtype}'s [{lo}, {hi}] "
                                    "and hold at least two values")
        return qmin, qmax
    if reduce_range:
        return (lo // 2, hi // 2) if lo < 0 else (0, hi // 2)
    return lo, hi


def is_traced(x) -> bool:
    """True when `x` is a tensor whose value is being traced by ember.jit (no concrete data)."""
    return isinstance(x, Tensor) and not isinstance(getattr(x, "_data", None), np.ndarray)


def _host(x, what: str = "tensor") -> np.ndarray:
    if isinstance(x, Tensor):
        if is_traced(x):
            raise QuantizationError(f"{what}: its value is needed on the host, but it is being traced by "
                                    "ember.jit (observe or calibrate outside the jitted function)")
        return np.asarray(x.detach().numpy())
    return np.asarray(x)


def check_finite(x, name: str = "tensor") -> None:
    """Raise QuantizationError naming `name` if the (concrete) tensor or array holds NaN or inf."""
    if is_traced(x):
        return
    a = _host(x, name)
    if a.dtype.kind in "fc" and a.size and not np.isfinite(a).all():
        bad = "NaN" if np.isnan(a).any() else "inf"
        raise QuantizationError(f"{name} holds {bad} ({int((~np.isfinite(a)).sum())} of {a.size} values): "
                                "it cannot be quantized (a diverged layer or a bad calibration input?)")


@dataclass(frozen=True)
class QParams:
    """Affine quantization parameters: x ~ (q - zero_point) * scale, per tensor or along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str = "int8"
    axis: int | None = None
    symmetric: bool = False
    quant_min: int | None = None
    quant_max: int | None = None
    name: str = "tensor"

    def __post_init__(self) -> None:
        s = np.asarray(_host(self.scale, self.name), dtype=np.float32)
        z = np.asarray(_host(self.zero_point, self.name)).astype(np.int64)
        if self.axis is None:
            if s.size != 1 or z.size != 1:
                raise QuantizationError(f"{self.name}: per-tensor qparams need one scale and one zero point, "
                                        f"got {s.size} and {z.size} (pass axis= for per-channel)")
            s, z = s.reshape(()), z.reshape(())
        else:
            s, z = s.reshape(-1), z.reshape(-1)
            if z.size == 1 and s.size > 1:
                z = np.repeat(z, s.size)
            if s.shape != z.shape:
                raise QuantizationError(f"{self.name}: {s.size} scales but {z.size} zero points")
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise QuantizationError(f"{self.name}: scale must be finite and > 0, got {s.tolist()} "
                                    "(a zero scale maps everything to the zero point)")
        qmin, qmax = qrange(self.dtype, self.quant_min, self.quant_max)
        if ((z < qmin) | (z > qmax)).any():
            raise QuantizationError(f"{self.name}: zero_point {z.tolist()} lies outside [{qmin}, {qmax}]")
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "zero_point", z)
        object.__setattr__(self, "quant_min", qmin)
        object.__setattr__(self, "quant_max", qmax)

    @property
    def qmin(self) -> int:
        """The smallest quantized value."""
        return self.quant_min

    @property
    def qmax(self) -> int:
        """The largest quantized value."""
        return self.quant_max

    @property
    def per_channel(self) -> bool:
        """Whether there is one scale per slice along `axis`."""
        return self.axis is not None

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale float32, zero_point float32) shaped to broadcast against a tensor of `ndim` dims."""
        s, z = self.scale, self.zero_point.astype(np.float32)
        if self.axis is None:
            return s, z
        ax = self.axis % ndim if ndim else 0
        shape = [1] * ndim
        shape[ax] = s.size
        return s.reshape(shape), z.reshape(shape)


def choose_qparams(min_val, max_val, dtype: str = "int8", symmetric: bool = False, axis: int | None = None,
                   eps: float = F32_EPS, *, quant_min: int | None = None, quant_max: int | None = None,
                   reduce_range: bool = False, name: str = "tensor") -> QParams:
    """QParams for the observed range [min_val, max_val] (arrays for per-channel), by torch's observer rules."""
    mn = np.asarray(_host(min_val, name), dtype=np.float32)
    mx = np.asarray(_host(max_val, name), dtype=np.float32)
    if mn.shape != mx.shape:
        raise QuantizationError(f"{name}: min {mn.shape} and max {mx.shape} have different shapes")
    if not (np.isfinite(mn).all() and np.isfinite(mx).all()):
        raise QuantizationError(f"{name}: the observed range [{mn.tolist()}, {mx.tolist()}] is not finite "
                                "(NaN or inf in the tensor): no scale can represent it")
    if (mn > mx).any():
        raise QuantizationError(f"{name}: min {mn.tolist()} > max {mx.tolist()}")
    if axis is None and mn.size != 1:
        raise QuantizationError(f"{name}: per-tensor qparams need a scalar range, got shape {mn.shape}")
    qmin, qmax = qrange(dtype, quant_min, quant_max, reduce_range)
    custom = quant_min is not None or quant_max is not None or reduce_range
    eps32 = np.float32(eps)
    mn = np.minimum(mn, np.float32(0))
    mx = np.maximum(mx, np.float32(0))
    if symmetric:
        amax = np.maximum(-mn, mx)
        scale = np.maximum(amax / np.float32((qmax - qmin) / 2), eps32)
        if qmin < 0:
            zp = np.zeros(scale.shape, np.int64)
        else:
            mid = 128 if (dtype == "uint8" and not custom) else (qmin + qmax) // 2
            zp = np.full(scale.shape, mid, np.int64)
    else:
        scale = np.maximum((mx - mn) / np.float32(qmax - qmin), eps32)
        zp = np.clip(qmin - np.round(mn / scale).astype(np.int64), qmin, qmax)
    return QParams(scale.astype(np.float32), zp, dtype, axis, symmetric, qmin, qmax, name)


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else new_tensor(np.asarray(x, dtype=np.float32))


def _const(a: np.ndarray) -> Tensor:
    return new_tensor(np.array(a, dtype=np.float32, order="C"))


def _check_axis(x: Tensor, qp: QParams) -> None:
    if qp.axis is None:
        return
    if x.ndim == 0 or not -x.ndim <= qp.axis < x.ndim or x.shape[qp.axis] != qp.scale.size:
        raise QuantizationError(f"{qp.name}: per-channel qparams along axis {qp.axis} with {qp.scale.size} "
                                f"channels do not fit a tensor of shape {tuple(x.shape)}")


def quantize(x, qp: QParams) -> Tensor:
    """Quantize a float tensor to qp.dtype (int8/uint8 storage): clamp(round(x / scale + zp)), half to even."""
    x = _tensor(x)
    _check_axis(x, qp)
    check_finite(x, qp.name)
    s, z = qp.broadcast(x.ndim)
    # fma(x, 1/scale, zp) rounded to float32, then half-to-even: FBGEMM's kernel behind quantize_per_*
    # (float64 holds the float32 product exactly, so this is a single rounding of x*inv + zp)
    inv = new_tensor(np.array(np.float32(1) / s, dtype=np.float64))
    xf = E.convert(E.convert(x, dt.float32), dt.float64)
    v = E.convert(xf * inv + new_tensor(np.array(z, dtype=np.float64)), dt.float32)
    v = E.clamp(E.round(v), qp.qmin, qp.qmax)
    return E.convert(v, getattr(dt, _STORAGE[qp.dtype]))


def dequantize(q, qp: QParams) -> Tensor:
    """Float32 values of quantized integers: (q - zero_point) * scale."""
    q = q if isinstance(q, Tensor) else new_tensor(np.asarray(q))
    _check_axis(q, qp)
    s, z = qp.broadcast(q.ndim)
    return (E.convert(q, dt.float32) - _const(z)) * _const(s)


def fake_quantize_np(x: np.ndarray, qp: QParams) -> np.ndarray:
    """Quantize then dequantize on the host in numpy, as the fake-quant kernels: round(x * inv) + zp."""
    x = np.asarray(x, dtype=np.float32)
    s, z = qp.broadcast(x.ndim)
    q = np.clip(np.rint(x * (np.float32(1) / s)) + z, qp.qmin, qp.qmax)
    return ((q - z) * s).astype(np.float32)


def pack_int4(q) -> Tensor:
    """Pack int4/uint4 values (any shape, flattened) two per uint8: element 2k low nibble, 2k+1 high."""
    a = _host(q, "pack_int4").reshape(-1)
    if a.dtype.kind not in "iu":
        raise QuantizationError(f"pack_int4 takes integer values, got {a.dtype}")
    if a.size and (a.min() < -8 or a.max() > 15):
        raise QuantizationError(f"pack_int4: values must lie in -8..7 (int4) or 0..15 (uint4), "
                                f"got [{int(a.min())}, {int(a.max())}]")
    nib = (a.astype(np.int64) & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.concatenate([nib, np.zeros(1, np.uint8)])
    return new_tensor(np.array(nib[0::2] | (nib[1::2] << 4), dtype=np.uint8, order="C"))


def unpack_int4(packed, n: int | None = None, signed: bool = True, shape=None) -> Tensor:
    """Unpack `pack_int4` bytes to `n` values (int8 sign-extended if signed, else uint8), optionally reshaped."""
    p = _host(packed, "unpack_int4").reshape(-1)
    if p.dtype != np.uint8:
        raise QuantizationError(f"unpack_int4 takes uint8 bytes, got {p.dtype}")
    if shape is not None:
        n = int(np.prod(shape, dtype=np.int64))
    n = 2 * p.size if n is None else int(n)
    if not 2 * p.size - 1 <= n <= 2 * p.size and not (n == 0 and p.size == 0):
        raise QuantizationError(f"unpack_int4: {p.size} bytes hold {2 * p.size - 1} or {2 * p.size} values, "
                                f"not {n}")
    out = np.empty(2 * p.size, np.uint8)
    out[0::2], out[1::2] = p & 0xF, p >> 4
    out = out[:n]
    if signed:
        out = np.where(out >= 8, out.astype(np.int16) - 16, out).astype(np.int8)
    out = np.array(out, order="C")
    return new_tensor(out.reshape(shape) if shape is not None else out)
