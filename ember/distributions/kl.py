"""KL(p || q) between two distributions of a kind, registered per pair of types (PyTorch's
`register_kl` / `kl_divergence`)."""
from __future__ import annotations

from .. import api as E
from ..api import linalg
from ..nn import functional as F
from .distribution import Distribution
from .multivariate_normal import MultivariateNormal
from .univariate import Bernoulli, Categorical, Normal, Uniform

_KL: dict = {}


def register_kl(type_p: type, type_q: type):
    """Decorator: file fn(p, q) as KL(p || q) for p of type_p and q of type_q."""
    def deco(fn):
        _KL[(type_p, type_q)] = fn
        return fn
    return deco


def kl_divergence(p: Distribution, q: Distribution):
    """KL(p || q), batched; the most specific registered pair of types wins."""
    for tp in type(p).__mro__:
        for tq in type(q).__mro__:
            if (tp, tq) in _KL:
                return _KL[(tp, tq)](p, q)
    raise NotImplementedError(f"no KL divergence is registered for {type(p).__name__} || {type(q).__name__} "
                              "(add one with ember.distributions.register_kl)")


@register_kl(Normal, Normal)
def _normal_normal(p, q):
    var_ratio = (p.scale / q.scale) ** 2
    t1 = ((p.loc - q.loc) / q.scale) ** 2
    return 0.5 * (var_ratio + t1 - 1 - E.log(var_ratio))


@register_kl(Uniform, Uniform)
def _uniform_uniform(p, q):
    res = E.log((q.high - q.low) / (p.high - p.low))
    outside = E.logical_or(E.gt(q.low, p.low), E.lt(q.high, p.high))
    return E.where(outside, float("inf"), res)


@register_kl(Bernoulli, Bernoulli)
def _bernoulli_bernoulli(p, q):
    t1 = p.probs * (F.softplus(-q.logits) - F.softplus(-p.logits))
    t1 = E.where(E.eq(q.probs, 0), float("inf"), t1)
    t1 = E.where(E.eq(p.probs, 0), 0.0, t1)
    t2 = (1 - p.probs) * (F.softplus(q.logits) - F.softplus(p.logits))
    t2 = E.where(E.eq(q.probs, 1), float("inf"), t2)
    t2 = E.where(E.eq(p.probs, 1), 0.0, t2)
    return t1 + t2


@register_kl(Categorical, Categorical)
def _categorical_categorical(p, q):
    t = p.probs * (p.logits - q.logits)
    t = E.where(E.eq(q.probs, 0).expand_as(t), float("inf"), t)
    t = E.where(E.eq(p.probs, 0).expand_as(t), 0.0, t)
    return t.sum(-1)


@register_kl(MultivariateNormal, MultivariateNormal)
def _mvn_mvn(p, q):
    d = p.event_shape[0]
    half_logdet = q._half_log_det() - p._half_log_det()
    # tr(Sq^-1 Sp) = ||Lq^-1 Lp||_F^2 and the Mahalanobis term ||Lq^-1 (mu_q - mu_p)||^2
    shape = E.broadcast_tensors(p._L, q._L)[0].shape
    Lq, Lp = E.broadcast_to(q._L, shape), E.broadcast_to(p._L, shape)
    tr = (linalg.solve_triangular(Lq, Lp, upper=False) ** 2).sum((-2, -1))
    diff = (q.loc - p.loc)
    m = (linalg.solve_triangular(Lq, diff.unsqueeze(-1), upper=False).squeeze(-1) ** 2).sum(-1)
    return half_logdet + 0.5 * (tr + m - d)


