"""ember.distributions: PyTorch's probability distributions (Normal, Uniform, Bernoulli,
Categorical, MultivariateNormal) with sample/rsample, log_prob, entropy, moments and the KL
divergences between two of a kind. `rsample` is reparameterised (loc + scale * eps), so
gradients flow to the parameters; `sample` is the same draw without them."""
from .distribution import Distribution  # noqa: F401
from .kl import kl_divergence, register_kl  # noqa: F401
from .multivariate_normal import MultivariateNormal  # noqa: F401
from .univariate import Bernoulli, Categorical, Normal, Uniform  # noqa: F401

__all__ = ["Distribution", "Normal", "Uniform", "Bernoulli", "Categorical", "MultivariateNormal",
           "kl_divergence", "register_kl"]
