"""MultivariateNormal(loc, covariance_matrix | precision_matrix | scale_tril), through the Cholesky
factor L of the covariance (Sigma = L L^T), as PyTorch computes it."""
from __future__ import annotations

import math

from .. import api as E
from ..api import linalg
from ..tensor import Tensor
from .distribution import Distribution, param


def _batched_mv(m: Tensor, v: Tensor) -> Tensor:
    return (m @ v.unsqueeze(-1)).squeeze(-1)


class MultivariateNormal(Distribution):
    """A Gaussian over vectors of size D: loc (..., D) and one of the three (..., D, D) matrices."""

    has_rsample = True

    def __init__(self, loc, covariance_matrix=None, precision_matrix=None, scale_tril=None, validate_args=None):
        given = [m is not None for m in (covariance_matrix, precision_matrix, scale_tril)]
        if sum(given) != 1:
            raise ValueError("MultivariateNormal: give exactly one of covariance_matrix, precision_matrix, scale_tril")
        loc = param(loc)
        if loc.ndim < 1:
            raise ValueError("MultivariateNormal: loc must be at least one-dimensional")
        if scale_tril is not None:
            L = param(scale_tril, loc.dtype)
        elif covariance_matrix is not None:
            L = linalg.cholesky(param(covariance_matrix, loc.dtype))
        else:  # Sigma = P^-1
            L = linalg.cholesky(linalg.inv(param(precision_matrix, loc.dtype)))
        if L.ndim < 2 or L.shape[-1] != L.shape[-2] or L.shape[-1] != loc.shape[-1]:
            raise ValueError(f"MultivariateNormal: loc of shape {tuple(loc.shape)} and a matrix of shape "
                             f"{tuple(L.shape)} do not fit (need (..., D) and (..., D, D))")
        batch = tuple(E.broadcast_tensors(loc[..., 0], L[..., 0, 0])[0].shape)
        d = loc.shape[-1]
        self.loc = E.broadcast_to(loc, batch + (d,))
        self._L = E.broadcast_to(L, batch + (d, d))
        super().__init__(batch, (d,), validate_args)

    scale_tril = property(lambda self: self._L)
    covariance_matrix = property(lambda self: self._L @ self._L.mT)
    precision_matrix = property(lambda self: linalg.inv(self.covariance_matrix))
    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)
    variance = property(lambda self: (self._L ** 2).sum(-1))

    def rsample(self, sample_shape=()) -> Tensor:
        eps = E.randn(self._extended(sample_shape), dtype=self.loc.dtype)
        return self.loc + _batched_mv(self._L, eps)

    def _half_log_det(self) -> Tensor:
        return E.log(E.diagonal(self._L, 0, -2, -1)).sum(-1)

    def log_prob(self, value) -> Tensor:
        diff = param(value, self.loc.dtype) - self.loc
        shape = diff.shape
        L = E.broadcast_to(self._L, tuple(shape) + (shape[-1],))
        z = linalg.solve_triangular(L, diff.unsqueeze(-1), upper=False).squeeze(-1)  # L z = x - mu
        m = (z ** 2).sum(-1)
        d = self.event_shape[0]
        return -0.5 * (d * math.log(2 * math.pi) + m) - self._half_log_det()

    def entropy(self) -> Tensor:
        d = self.event_shape[0]
        return 0.5 * d * (1.0 + math.log(2 * math.pi)) + self._half_log_det()
