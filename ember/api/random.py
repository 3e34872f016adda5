"""Counter-based random numbers: Philox4x32-10 keyed by (seed, offset), state held in a tensor.

A Generator's state is a uint32[4] tensor: two key words (the seed) and two counter words (the
offset, counted in blocks of four 32-bit outputs). Each draw reads `random_bits(state, shape)` and
advances the offset in place, through the same mutation path as any in-place op, so a traced
step carries the state as data and every replay draws new numbers. Distributions are composites:

- uniform [0, 1): the top 24 (float32), 11 (float16), 8 (bfloat16) or 53 (float64, from two
  words) bits scaled by a power of two, so every value is exact and 1.0 never appears;
- normal: Box-Muller on two uniforms; randint: bits modulo the range.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from .._core import dtypes as dt
from .._core import state as _state
from .._core.errors import ShapeError, op_error
from .._core.state import default_dtype, no_grad
from ..autograd import assign_
from ..backend import as_device
from ..ops import lax
from ..tensor import Tensor, from_array
from .sorting import searchsorted, topk


class Generator:
    """A Philox random generator; `manual_seed` resets it, `get_state`/`set_state` save it.

    Draws from several threads are serialized by the generator's lock (as PyTorch's CPU
    generator does), so no two draws see the same counter."""

    def __init__(self, device="cpu"):
        as_device(device)
        self._lock = threading.RLock()
        self.state = from_array(np.zeros(4, np.uint32), dt.uint32)
        self.manual_seed(0x853C49E6748FEA9B & 0xFFFFFFFFFFFFFFFF)

    def manual_seed(self, seed: int) -> "Generator":
        seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.state._data[...] = [seed & 0xFFFFFFFF, seed >> 32, 0, 0]
        self.state._ensure_storage().version += 1
        self._seed = seed
        return self

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> Tensor:
        return self.state.clone() if hasattr(self.state, "clone") else self.state

    def set_state(self, new_state: Tensor) -> None:
        with no_grad():
            assign_(self.state, new_state)

    def bits(self, shape) -> Tensor:
        """Draw uint32 bits of `shape` and advance the counter."""
        shape = tuple(shape)
        n = math.prod(shape)
        with self._lock, no_grad():
            bits = lax.random_bits(self.state, shape)
            blocks = -(-n // 4)
            if blocks:
                lo = lax.slice(self.state, (2,), (3,), (1,))
                hi = lax.slice(self.state, (3,), (4,), (1,))
                new_lo = lax.add(lo, lax.full((1,), blocks & 0xFFFFFFFF, dt.uint32))
                carry = lax.convert(lax.lt(new_lo, lo), dt.uint32)
                new_hi = lax.add(lax.add(hi, carry), lax.full((1,), blocks >> 32, dt.uint32))
                key = lax.slice(self.state, (0,), (2,), (1,))
                assign_(self.state, lax.concatenate([key, new_lo, new_hi], 0))
        return bits


_CREATE = threading.Lock()


def default_generator() -> Generator:
    """The process-wide generator (created on first use)."""
    if _state.default_generator is None:
        with _CREATE:
            if _state.default_generator is None:
                _state.default_generator = Generator()
    return _state.default_generator


def manual_seed(seed: int) -> Generator:
    """Seed the default generator."""
    return default_generator().manual_seed(seed)


def seed() -> int:
    import os
    s = int.from_bytes(os.urandom(8), "little")
    manual_seed(s)
    return s


def initial_seed() -> int:
    return default_generator().initial_seed()


def get_rng_state() -> Tensor:
    return default_generator().state.detach().clone()


def set_rng_state(state: Tensor) -> None:
    default_generator().set_state(state)


def _gen(generator):
    return generator if generator is not None else default_generator()


def _uniform01(shape, d: dt.DType, generator) -> Tensor:
    g = _gen(generator)
    if d is dt.float64:
        b = g.bits(tuple(shape) + (2,))
        hi = lax.convert(lax.shift_right(lax.slice(b, (0,) * len(shape) + (0,), tuple(shape) + (1,), (1,) * (len(shape) + 1)), 5), dt.float64)
        lo = lax.convert(lax.shift_right(lax.slice(b, (0,) * len(shape) + (1,), tuple(shape) + (2,), (1,) * (len(shape) + 1)), 6), dt.float64)
        u = lax.mul(lax.add(lax.mul(hi, 67108864.0), lo), 2.0 ** -53)
        return lax.reshape(u, tuple(shape))
    keep = {dt.float32: 24, dt.float16: 11, dt.bfloat16: 8}[d]
    b = g.bits(shape)
    u = lax.mul(lax.convert(lax.shift_right(b, 32 - keep), dt.float32), 2.0 ** -keep)
    return lax.convert(u, d)


def _float_dtype(dtype) -> dt.DType:
    d = dt.as_dtype(dtype) if dtype is not None else default_dtype()
    if d.kind != "f":
        raise TypeError(f"expected a floating dtype, got {d.name}")
    return d


def _size(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def _check_device(device) -> None:
    if device is not None:
        as_device(device)  # before drawing: a refused call leaves the generator as it was


def _done(t: Tensor, requires_grad: bool) -> Tensor:
    return t.requires_grad_(True) if requires_grad else t


def rand(*size, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Uniform samples from [0, 1)."""
    _check_device(device)
    with no_grad():
        return _done(_uniform01(_size(size), _float_dtype(dtype), generator), requires_grad)


def randn(*size, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples (Box-Muller)."""
    _check_device(device)
    d = _float_dtype(dtype)
    shape = _size(size)
    with no_grad():
        c = dt.float64 if d is dt.float64 else dt.float32
        u1 = _uniform01(shape, c, generator)
        u2 = _uniform01(shape, c, generator)
        r = lax.sqrt(lax.mul(lax.log(lax.sub(1.0, u1)), -2.0))
        z = lax.mul(r, lax.cos(lax.mul(u2, 2 * math.pi)))
        return _done(lax.convert(z, d), requires_grad)


def randint(low, high=None, size=(), *, generator=None, dtype=None, device=None) -> Tensor:
    """Integers uniform in [low, high)."""
    _check_device(device)
    if high is None:
        low, high = 0, low
    elif isinstance(high, (tuple, list)):  # randint(high, size) as in PyTorch
        low, high, size = 0, low, high
    span = int(high) - int(low)
    if span <= 0 or span > 2 ** 32:
        raise ValueError(f"randint needs 0 < high - low <= 2**32, got [{low}, {high})")
    d = dt.as_dtype(dtype) if dtype is not None else dt.int64
    with no_grad():
        b = lax.convert(_gen(generator).bits(tuple(size)), dt.int64)
        return lax.convert(lax.add(lax.rem(b, span), int(low)), d)


def randperm(n: int, *, generator=None, dtype=None, device=None) -> Tensor:
    """A random permutation of 0..n-1 (eager: sorts random keys)."""
    _check_device(device)
    with no_grad():
        keys = _gen(generator).bits((n,))
    perm = np.argsort(keys._data, kind="stable").astype(dt.as_dtype(dtype or dt.int64).np)
    return from_array(perm, dt.as_dtype(dtype or dt.int64))


def bernoulli(input: Tensor, p=None, *, generator=None) -> Tensor:
    """1 with probability `input` (or `p`), else 0, in input's dtype."""
    probs = input if p is None else lax.full(input.shape, p, input.dtype)
    with no_grad():
        u = _uniform01(input.shape, input.dtype if input.dtype.kind == "f" else default_dtype(), generator)
        return lax.convert(lax.lt(u, probs), input.dtype)


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *, generator=None) -> Tensor:
    """Indices drawn from the categories weighted by each row of `input` (1-D or 2-D), int64.

    With replacement: inverse-CDF sampling (`searchsorted` of uniforms into the cumulative
    weights); without: the Gumbel-top-k trick (the k largest of log w + Gumbel noise are a sample
    without replacement). Both are fixed-shape, so they also run under ember.jit."""
    if input.ndim not in (1, 2):
        raise op_error(ShapeError, "multinomial", f"input must be 1-D or 2-D, got shape {input.shape}")
    n = input.shape[-1]
    rows = input.shape[:-1]
    w = lax.convert(input, dt.float64 if input.dtype is dt.float64 else dt.float32)
    if w._data.__class__.__name__ != "Var":  # eager: the checks PyTorch makes on the weights
        a = np.asarray(w._data)
        if a.size and (not np.isfinite(a).all() or (a < 0).any()):
            raise op_error(ValueError, "multinomial", "weights must be finite and non-negative")
        pos = (a > 0).sum(-1)
        if a.size == 0 or (pos == 0).any():
            raise op_error(ValueError, "multinomial", "every row needs a positive total weight")
        if not replacement and (pos < num_samples).any():
            raise op_error(ValueError, "multinomial", f"cannot draw {num_samples} samples without replacement "
                           f"from a row with only {int(pos.min())} categories of non-zero weight")
    if not replacement and num_samples > n:
        raise op_error(ValueError, "multinomial", f"cannot draw {num_samples} > {n} samples without replacement")
    with no_grad():
        if replacement:
            cdf = lax.cumsum(w, w.ndim - 1)
            total = lax.slice(cdf, (0,) * len(rows) + (n - 1,), rows + (n,), (1,) * w.ndim)
            u = lax.mul(_uniform01(rows + (num_samples,), w.dtype, generator), total)
            idx = searchsorted(cdf, u, right=True)
            return lax.min(idx, lax.full((), n - 1, dt.int64))
        u = _uniform01(rows + (n,), w.dtype, generator)
        tiny = float(dt.finfo(w.dtype).tiny)
        gumbel = lax.neg(lax.log(lax.neg(lax.log(lax.max(u, tiny)))))
        return topk(lax.add(lax.log(w), gumbel), num_samples, -1).indices


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None) -> Tensor:
    """Normal samples with the given mean and std (scalars with `size`, or tensors)."""
    if size is None:
        shape = np.broadcast_shapes(*(t.shape for t in (mean, std) if isinstance(t, Tensor)))
    else:
        shape = tuple(size)
    z = randn(shape, generator=generator, dtype=dtype)
    with no_grad():
        return lax.add(lax.mul(z, std), mean)


def uniform(low=0.0, high=1.0, size=(), *, generator=None, dtype=None) -> Tensor:
    u = rand(tuple(size), generator=generator, dtype=dtype)
    with no_grad():
        return lax.add(lax.mul(u, high - low), low)


# ---- in-place fills used by nn.init
def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0, *, generator=None) -> Tensor:
    with no_grad():
        return assign_(t, lax.add(lax.mul(_uniform01(t.shape, t.dtype, generator), b - a), a))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, *, generator=None) -> Tensor:
    with no_grad():
        return assign_(t, lax.add(lax.mul(randn(t.shape, generator=generator, dtype=t.dtype), std), mean))


def bernoulli_(t: Tensor, p: float = 0.5, *, generator=None) -> Tensor:
    with no_grad():
        return assign_(t, bernoulli(t, p, generator=generator))


__all__ = [_n for _n, _v in list(globals().items())
           if not _n.startswith("_") and getattr(_v, "__module__", None) == __name__]
