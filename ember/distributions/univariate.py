"""Normal, Uniform, Bernoulli and Categorical, with PyTorch's formulas and parameterisations."""
from __future__ import annotations

import math

import numpy as np

from .. import api as E
from .._core import dtypes as dt
from .._core.state import no_grad
from ..nn import functional as F
from ..tensor import Tensor
from .distribution import Distribution, concrete, param

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Normal(Distribution):
    """N(loc, scale**2), elementwise over the broadcast shape of loc and scale."""

    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc = param(loc, loc.dtype if isinstance(loc, Tensor) else None)
        self.scale = param(scale, self.loc.dtype)
        self.loc, self.scale = E.broadcast_tensors(self.loc, self.scale)
        super().__init__(self.loc.shape, (), validate_args)
        self._check("scale", self.scale, lambda v: v > 0, "positive")

    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)
    stddev = property(lambda self: self.scale)
    variance = property(lambda self: self.scale ** 2)

    def rsample(self, sample_shape=()) -> Tensor:
        eps = E.randn(self._extended(sample_shape), dtype=self.loc.dtype)
        return self.loc + eps * self.scale

    def log_prob(self, value) -> Tensor:
        v = param(value, self.loc.dtype)
        return -((v - self.loc) ** 2) / (2 * self.scale ** 2) - E.log(self.scale) - _LOG_SQRT_2PI

    def cdf(self, value) -> Tensor:
        v = param(value, self.loc.dtype)
        return 0.5 * (1 + E.erf((v - self.loc) / (self.scale * math.sqrt(2))))

    def entropy(self) -> Tensor:
        return 0.5 + _LOG_SQRT_2PI + E.log(self.scale)


class Uniform(Distribution):
    """The uniform distribution on [low, high)."""

    has_rsample = True

    def __init__(self, low, high, validate_args=None):
        self.low = param(low, low.dtype if isinstance(low, Tensor) else None)
        self.high = param(high, self.low.dtype)
        self.low, self.high = E.broadcast_tensors(self.low, self.high)
        super().__init__(self.low.shape, (), validate_args)
        lo, hi = concrete(self.low), concrete(self.high)
        if self._validate and lo is not None and hi is not None and not (lo < hi).all():
            raise ValueError(f"Uniform: expected low < high, got low={self.low} and high={self.high}")

    mean = property(lambda self: (self.low + self.high) / 2)
    variance = property(lambda self: (self.high - self.low) ** 2 / 12)

    def rsample(self, sample_shape=()) -> Tensor:
        u = E.rand(self._extended(sample_shape), dtype=self.low.dtype)
        return self.low + u * (self.high - self.low)

    def log_prob(self, value) -> Tensor:
        v = param(value, self.low.dtype)
        lo, hi = concrete(self.low), concrete(self.high)
        self._check_value(v, lambda a: (a >= lo) & (a < hi), "low <= value < high")
        inside = E.logical_and(E.le(self.low, v), E.gt(self.high, v)).to(self.low.dtype)
        return E.log(inside) - E.log(self.high - self.low)

    def cdf(self, value) -> Tensor:
        v = param(value, self.low.dtype)
        return E.clamp((v - self.low) / (self.high - self.low), 0, 1)

    def entropy(self) -> Tensor:
        return E.log(self.high - self.low)


def _clamp_probs(p: Tensor) -> Tensor:
    eps = float(dt.finfo(p.dtype).eps)
    return E.clamp(p, eps, 1 - eps)


class Bernoulli(Distribution):
    """1 with probability `probs` (or sigmoid(`logits`)), else 0."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Bernoulli: give exactly one of probs or logits")
        super().__init__((), (), validate_args)
        if probs is not None:
            self.probs = param(probs)
            self._check("probs", self.probs, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
            p = _clamp_probs(self.probs)
            self.logits = E.log(p) - E.log1p(-p)
        else:
            self.logits = param(logits)
            self.probs = E.sigmoid(self.logits)
        self.batch_shape = tuple(self.probs.shape)

    mean = property(lambda self: self.probs)
    variance = property(lambda self: self.probs * (1 - self.probs))

    def sample(self, sample_shape=()) -> Tensor:
        with no_grad():
            p = E.broadcast_to(self.probs, self._extended(sample_shape))
            return E.bernoulli(p.detach())

    def log_prob(self, value) -> Tensor:
        v = param(value, self.logits.dtype)
        self._check_value(v, lambda a: (a == 0) | (a == 1), "0 or 1")
        logits, v = E.broadcast_tensors(self.logits, v)
        return -F.binary_cross_entropy_with_logits(logits, v, reduction="none")

    def entropy(self) -> Tensor:
        return F.binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none")


class Categorical(Distribution):
    """One of K categories, weighted by `probs` (normalised) or `logits` along the last dim."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Categorical: give exactly one of probs or logits")
        super().__init__((), (), validate_args)
        if probs is not None:
            p = param(probs)
            if p.ndim < 1:
                raise ValueError("Categorical: probs must have at least one dimension")
            self._check("probs", p, lambda v: (v >= 0).all() & (v.sum(-1) > 0).all() & np.isfinite(v).all(),
                        "non-negative and finite with a positive sum")
            self.probs = p / p.sum(-1, keepdim=True)
            self.logits = E.log(_clamp_probs(self.probs))
        else:
            lg = param(logits)
            if lg.ndim < 1:
                raise ValueError("Categorical: logits must have at least one dimension")
            self.logits = lg - E.logsumexp(lg, -1, keepdim=True)
            self.probs = E.softmax(self.logits, -1)
        self.batch_shape = tuple(self.probs.shape[:-1])
        self._num_events = self.probs.shape[-1]

    @property
    def mean(self) -> Tensor:
        return E.full(self.batch_shape, float("nan"), dtype=self.probs.dtype)

    variance = mean

    @property
    def mode(self) -> Tensor:
        return E.argmax(self.probs, -1)

    def sample(self, sample_shape=()) -> Tensor:
        s = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        n = int(np.prod(s)) if s else 1
        with no_grad():
            flat = self.probs.detach().reshape(-1, self._num_events)
            draws = E.multinomial(flat, n, replacement=True)  # (batch, n)
            return draws.t().reshape(s + self.batch_shape)

    def log_prob(self, value) -> Tensor:
        v = value.long() if isinstance(value, Tensor) else E.tensor(value, dtype=dt.int64)
        self._check_value(v, lambda a: (a >= 0) & (a < self._num_events), f"an integer in [0, {self._num_events})")
        shape = tuple(np.broadcast_shapes(tuple(v.shape), self.batch_shape))
        v = E.broadcast_to(v, shape).unsqueeze(-1)
        lg = E.broadcast_to(self.logits, shape + (self._num_events,))
        return E.gather(lg, -1, v).squeeze(-1)

    def entropy(self) -> Tensor:
        logits = E.clamp(self.logits, min=float(dt.finfo(self.logits.dtype).min))
        return -(logits * self.probs).sum(-1)
