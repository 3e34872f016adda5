"""ember.distributions against torch.distributions fixtures (tools/make_distribution_fixtures.py;
cases in tests/_distribution_cases.py): log_prob, entropy, moments, cdf, KL divergences and their
gradients; sampling statistics, reparameterised gradients, ember.jit, and argument checks."""
import json
import pathlib

import numpy as np
import pytest

import ember
import ember.distributions as D
from ember.testing import gradcheck

from _distribution_cases import CASES, KL_CASES

safetensors_numpy = pytest.importorskip("safetensors.numpy")
FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "distributions.json").read_text())["cases"]
REF = safetensors_numpy.load_file(str(FIX / "distributions.safetensors"))
TOL = dict(rtol=1e-10, atol=1e-12)


def _close(what, got, want):
    np.testing.assert_allclose(np.asarray(got.detach().numpy()), want, err_msg=what, equal_nan=True, **TOL)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_distributions(case):
    name, make, params, _, attrs = case
    ps = [ember.tensor(REF[f"{name}.p{i}"], requires_grad=True) for i in range(len(params))]
    d = make(D, *ps)
    v = ember.tensor(REF[f"{name}.value"])
    assert list(d.batch_shape) == META[name]["batch_shape"] and list(d.event_shape) == META[name]["event_shape"]
    lp, ent = d.log_prob(v), d.entropy()
    _close(f"{name} log_prob", lp, REF[f"{name}.log_prob"])
    _close(f"{name} entropy", ent, REF[f"{name}.entropy"])
    for a in attrs:
        _close(f"{name} {a}", d.cdf(v) if a == "cdf" else getattr(d, a), REF[f"{name}.{a}"])
    (lp.sum() + ent.sum()).backward()
    for i, p in enumerate(ps):
        g = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
        np.testing.assert_allclose(g, REF[f"{name}.grad{i}"], err_msg=f"{name} grad{i}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", KL_CASES, ids=[c[0] for c in KL_CASES])
def test_kl_matches_torch(case):
    name, make, params = case
    ps = [ember.tensor(REF[f"kl.{name}.p{i}"], requires_grad=True) for i in range(len(params))]
    kl = D.kl_divergence(*make(D, *ps))
    _close(f"kl {name}", kl, REF[f"kl.{name}.out"])
    ember.where(ember.isfinite(kl), kl, 0.0).sum().backward()
    for i, p in enumerate(ps):
        g = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
        np.testing.assert_allclose(g, REF[f"kl.{name}.grad{i}"], err_msg=f"kl {name} grad{i}", rtol=1e-9, atol=1e-11)


def test_gradcheck_log_prob_and_kl_float64():
    m = ember.tensor([0.3, -1.0], dtype=ember.float64, requires_grad=True)
    s = ember.tensor([0.7, 1.5], dtype=ember.float64, requires_grad=True)
    x = ember.tensor([0.1, 0.4], dtype=ember.float64)
    gradcheck(lambda a, b: D.Normal(a, b).log_prob(x), [m, s])
    cov = ember.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=ember.float64, requires_grad=True)
    gradcheck(lambda c: D.MultivariateNormal(m.detach(), covariance_matrix=c @ c.mT).log_prob(x), [cov])
    lg = ember.tensor([[0.2, -1.0, 0.5]], dtype=ember.float64, requires_grad=True)
    gradcheck(lambda a: D.kl_divergence(D.Categorical(logits=a), D.Categorical(logits=a * 0.5 + 0.1)), [lg])


def test_samples_have_the_right_shape_and_moments():
    ember.manual_seed(0)
    n = D.Normal(ember.tensor([1.0, -2.0]), ember.tensor([0.5, 2.0]))
    s = n.sample((20000,))
    assert s.shape == (20000, 2) and not s.requires_grad
    np.testing.assert_allclose(s.numpy().mean(0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(s.numpy().std(0), [0.5, 2.0], rtol=0.03)
    c = D.Categorical(probs=ember.tensor([[0.1, 0.0, 0.9], [0.5, 0.5, 0.0]]))
    cs = c.sample((4000,))
    assert cs.shape == (4000, 2) and cs.dtype is ember.int64
    np.testing.assert_allclose((cs.numpy()[:, 0] == 2).mean(), 0.9, atol=0.03)
    assert (cs.numpy()[:, 1] != 2).all()
    b = D.Bernoulli(probs=ember.tensor([0.25]))
    np.testing.assert_allclose(b.sample((8000,)).numpy().mean(), 0.25, atol=0.02)
    cov = np.array([[2.0, 0.8], [0.8, 1.0]])
    mv = D.MultivariateNormal(ember.zeros(2), covariance_matrix=ember.tensor(cov, dtype=ember.float32))
    ms = mv.sample((20000,)).numpy()
    np.testing.assert_allclose(np.cov(ms.T), cov, atol=0.06)
    u = D.Uniform(ember.tensor([0.0]), ember.tensor([4.0])).sample((1000,)).numpy()
    assert (u >= 0).all() and (u < 4).all()


def test_rsample_is_reparameterised():
    """d rsample / d loc = 1 and d rsample / d scale = the standard normal draw (eps)."""
    loc = ember.tensor([0.5], requires_grad=True)
    scale = ember.tensor([2.0], requires_grad=True)
    ember.manual_seed(3)
    x = D.Normal(loc, scale).rsample((5,))
    x.sum().backward()
    eps = (x.detach().numpy() - 0.5) / 2.0
    np.testing.assert_allclose(loc.grad.numpy(), [5.0])
    np.testing.assert_allclose(scale.grad.numpy(), [eps.sum()], rtol=1e-5)
    with pytest.raises(TypeError, match="reparameterised"):
        D.Bernoulli(probs=ember.tensor([0.5])).rsample()


def test_log_prob_under_jit_matches_eager():
    x = ember.randn(4, 3)

    def f(t):
        return (D.Normal(t.mean(0), t.std(0) + 1.0).log_prob(t).sum()
                + D.Categorical(logits=t).log_prob(ember.tensor([0, 1, 2, 0])).sum())
    np.testing.assert_allclose(ember.jit(f)(x).numpy(), f(x).numpy(), rtol=1e-5)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="scale .* positive"):
        D.Normal(0.0, ember.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="low < high"):
        D.Uniform(1.0, 0.0)
    with pytest.raises(ValueError, match="exactly one"):
        D.Bernoulli()
    with pytest.raises(ValueError, match="support"):
        D.Categorical(probs=ember.tensor([0.5, 0.5])).log_prob(ember.tensor([2]))
    with pytest.raises(ValueError, match="support"):
        D.Uniform(0.0, 1.0).log_prob(ember.tensor([1.5]))
    with pytest.raises(ValueError, match="do not fit"):
        D.MultivariateNormal(ember.zeros(3), covariance_matrix=ember.eye(2))
    with pytest.raises(NotImplementedError, match="Normal || Categorical"):
        D.kl_divergence(D.Normal(0.0, 1.0), D.Categorical(logits=ember.zeros(2)))
    D.Normal(0.0, ember.tensor([-1.0]), validate_args=False)  # unchecked when asked
