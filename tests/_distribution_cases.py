"""Distribution reference cases, shared by tools/make_distribution_fixtures.py (torch.distributions)
and tests/test_distributions.py (ember.distributions): `make(D, *params)` builds the distribution
from either module `D` with the same spelling. Imports numpy only."""
from __future__ import annotations

import numpy as np

R = np.random.default_rng(20261202)


def _spd(n, batch=()):
    a = R.standard_normal(batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


def _tril(n):
    return np.tril(R.standard_normal((n, n))) + 3 * np.eye(n)


# name, make(D, *params), params, value for log_prob/cdf, extra attributes compared
CASES = [
    ("normal", lambda D, m, s: D.Normal(m, s), [R.standard_normal((2, 3)), R.uniform(0.5, 2, (2, 3))],
     R.standard_normal((2, 3)), ["mean", "variance", "stddev", "cdf"]),
    ("normal_broadcast", lambda D, m, s: D.Normal(m, s), [R.standard_normal(3), R.uniform(0.5, 2, (2, 1))],
     R.standard_normal((4, 2, 3)), ["mean", "variance"]),
    ("uniform", lambda D, a, b: D.Uniform(a, b), [np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 5.0])],
     np.array([0.0, 0.3, 2.5]), ["mean", "variance", "cdf"]),
    ("bernoulli_probs", lambda D, p: D.Bernoulli(probs=p), [np.array([0.1, 0.5, 0.9, 0.0])],
     np.array([1.0, 0.0, 1.0, 0.0]), ["mean", "variance"]),
    ("bernoulli_logits", lambda D, lg: D.Bernoulli(logits=lg), [np.array([[-2.0, 0.0], [3.0, 30.0]])],
     np.array([[0.0, 1.0], [1.0, 0.0]]), ["mean", "variance"]),
    ("categorical_probs", lambda D, p: D.Categorical(probs=p), [np.array([[0.2, 0.3, 0.5], [1.0, 1.0, 2.0]])],
     np.array([2, 0]), []),
    ("categorical_logits", lambda D, lg: D.Categorical(logits=lg), [R.standard_normal((2, 3, 4))],
     np.array([[1, 0, 3], [2, 2, 0]]), []),
    ("categorical_zero_prob", lambda D, p: D.Categorical(probs=p), [np.array([0.0, 0.25, 0.75])],
     np.array([1, 2]), []),
    ("mvn_cov", lambda D, m, c: D.MultivariateNormal(m, covariance_matrix=c), [R.standard_normal(3), _spd(3)],
     R.standard_normal((2, 3)), ["mean", "variance", "covariance_matrix", "scale_tril"]),
    ("mvn_tril_batch", lambda D, m, l: D.MultivariateNormal(m, scale_tril=l), [R.standard_normal((2, 3)), _tril(3)],
     R.standard_normal((2, 3)), ["variance", "precision_matrix"]),
    ("mvn_precision", lambda D, m, p: D.MultivariateNormal(m, precision_matrix=p), [R.standard_normal(2), _spd(2)],
     R.standard_normal(2), ["covariance_matrix"]),
]

KL_CASES = [
    ("normal", lambda D, a, b, c, d: (D.Normal(a, b), D.Normal(c, d)),
     [R.standard_normal(3), R.uniform(0.5, 2, 3), R.standard_normal(3), R.uniform(0.5, 2, 3)]),
    ("uniform", lambda D, a, b, c, d: (D.Uniform(a, b), D.Uniform(c, d)),
     [np.array([0.0, 0.0]), np.array([1.0, 1.0]), np.array([-1.0, 0.5]), np.array([2.0, 3.0])]),
    ("bernoulli", lambda D, p, q: (D.Bernoulli(probs=p), D.Bernoulli(probs=q)),
     [np.array([0.2, 0.0, 1.0, 0.7]), np.array([0.5, 0.3, 0.6, 0.7])]),
    ("categorical", lambda D, p, q: (D.Categorical(logits=p), D.Categorical(logits=q)),
     [R.standard_normal((2, 4)), R.standard_normal((2, 4))]),
    ("mvn", lambda D, a, b, c, d: (D.MultivariateNormal(a, covariance_matrix=b),
                                   D.MultivariateNormal(c, scale_tril=d)),
     [R.standard_normal(3), _spd(3), R.standard_normal(3), _tril(3)]),
]
