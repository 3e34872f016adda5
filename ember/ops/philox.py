"""Philox4x32-10, vectorised over numpy arrays (Salmon, Moraes, Dror, Shaw: SC'11, Random123)."""
from __future__ import annotations

import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def philox4x32_10(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Encrypt uint32 counters of shape (..., 4) under a uint32 key of shape (2,) or (..., 2)."""
    c = np.asarray(counter, np.uint32)
    k = np.asarray(key, np.uint32)
    x0, x1, x2, x3 = (c[..., i].astype(np.uint64) for i in range(4))
    k0 = np.broadcast_to(k[..., 0], x0.shape).astype(np.uint32)
    k1 = np.broadcast_to(k[..., 1], x0.shape).astype(np.uint32)
    with np.errstate(over="ignore"):
        for r in range(10):
            if r:
                k0 = k0 + _W0
                k1 = k1 + _W1
            p0 = _M0 * x0
            p1 = _M1 * x2
            hi0, lo0 = p0 >> _S32, p0 & _MASK
            hi1, lo1 = p1 >> _S32, p1 & _MASK
            x0, x1, x2, x3 = (hi1 ^ x1 ^ k0.astype(np.uint64), lo1, hi0 ^ x3 ^ k1.astype(np.uint64), lo0)
    return np.stack([x0, x1, x2, x3], axis=-1).astype(np.uint32)
