"""Errors a user meets name the user's line and the real cause; 0-d tensors format like numbers;
printing inside ember.jit says values are not known; bounds checks hold on every path."""
import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.backend.cpu import compiler

BACKENDS = ["numpy"] + (["native"] if compiler.available() else [])
HERE = __file__


def test_index_out_of_range_names_the_line():
    x = ember.ones(3)
    with pytest.raises(IndexError, match=r"index 10 is out of bounds for dimension 0 with size 3 \(at .*test_user_errors"):
        x[10]
    with pytest.raises(IndexError, match=r"index 5 is out of bounds.*\(at .*test_user_errors"):
        x[ember.tensor([0, 5])]


def test_embedding_float_indices_is_a_dtype_error_at_the_line():
    emb = nn.Embedding(10, 3)
    with pytest.raises(ember.DTypeError, match=r"indices must be an integer tensor, got float32 \(at .*test_user_errors"):
        emb(ember.tensor([1.0, 2.0]))


def test_batchnorm_channel_mismatch_names_num_features():
    with pytest.raises(ember.ShapeError, match=r"has 8 channels.*num_features=16 \(at .*test_user_errors"):
        nn.BatchNorm2d(16)(ember.randn(2, 8, 4, 4))


def test_zero_d_tensor_formats_like_its_value():
    assert f"{ember.tensor(3.14159):.3f}" == "3.142"
    assert f"{ember.tensor(7):4d}" == "   7"
    assert f"{ember.tensor(2.5, dtype=ember.bfloat16):.1f}" == "2.5"
    assert f"{ember.tensor([1.0, 2.0])}" == str(ember.tensor([1.0, 2.0]))
    with pytest.raises(TypeError):
        f"{ember.tensor([1.0, 2.0]):.2f}"  # as PyTorch: only one-element 0-d tensors take a spec
    opt = ember.optim.SGD([ember.zeros(1, requires_grad=True)], lr=0.25)
    assert f"{opt.param_groups[0]['lr']:.2f}" == "0.25"


def test_print_inside_jit_says_values_are_not_known(capsys):
    f = ember.jit(lambda x: print(x * 2) or x.sum())
    assert f(ember.ones(3)).item() == 3.0
    out = capsys.readouterr().out
    assert "traced float32[3]" in out and "not known while ember.jit traces" in out
    g = ember.jit(lambda x: f"{x.sum():.3f}" and x)
    with pytest.raises(ember._core.errors.ConcretizationError, match=r"test_user_errors"):
        g(ember.ones(3))


def test_float16_step_traces_once_and_runs_natively():
    m = nn.Linear(4, 3).to(ember.float16)
    opt = ember.optim.SGD(m.parameters(), lr=0.1)

    @ember.jit
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss
    step(ember.randn(8, 4).to(ember.float16), ember.randint(0, 3, (8,)))
    (why,) = step.explain
    assert why == "traced: first call"  # float16 runs natively (no unit on the host to name)
    step(ember.randn(8, 4).to(ember.float16), ember.randint(0, 3, (8,)))
    assert step.explain == ["traced: first call"]  # and the cached step is reused


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [10, -1, 1_000_000])
def test_cross_entropy_target_out_of_range_raises_under_jit(backend, bad):
    """The same IndexError eagerly and in a compiled step, with the state untouched."""
    model = nn.Linear(4, 10)
    opt = ember.optim.SGD(model.parameters(), lr=0.1)

    @ember.jit(backend=backend)
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    x, good = ember.randn(4, 4), ember.tensor([1, 2, 0, 3])
    step(x, good)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    y = ember.tensor([1, 2, bad, 3])
    with pytest.raises(IndexError, match=f"cross_entropy: target {bad} is out of bounds for 10 classes"):
        F.cross_entropy(model(x), y)
    with pytest.raises(IndexError, match=f"target {bad} is out of bounds for 10 classes"):
        step(x, y)
    for a, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, p.detach().numpy())
    ignore = ember.tensor([1, -100, 0, 3])  # ignore_index stays allowed
    np.testing.assert_allclose(ember.jit(lambda a, t: F.cross_entropy(a, t), backend=backend)(x, ignore).item(),
                               F.cross_entropy(x, ignore).item(), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_computed_class_targets_are_checked_inside_the_step(backend):
    f = ember.jit(lambda x, y: F.nll_loss(x, y + 8), backend=backend)
    with pytest.raises(IndexError, match="out of bounds"):
        f(ember.randn(3, 10), ember.tensor([0, 2, 1]))


@pytest.mark.skipif(not compiler.available(), reason="no C compiler")
def test_native_tanh_saturates_exactly():
    x = ember.tensor([np.inf, 100.0, 89.0, 9.011, 9.5, -9.5, -89.0, -np.inf, np.nan, 0.5, -0.0])
    got = ember.jit(lambda x: ember.tanh(x), backend="native")(x).numpy()
    np.testing.assert_array_equal(got[:8], [1, 1, 1, 1, 1, -1, -1, -1])
    assert np.isnan(got[8]) and np.signbit(got[10]) and abs(got[9] - np.tanh(np.float32(0.5))) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_logsumexp_of_a_tensor_made_inside_jit(backend):
    f = ember.jit(lambda: ember.logsumexp(ember.ones(3, dtype=ember.float16), 0), backend=backend)
    np.testing.assert_allclose(f().item(), np.log(3 * np.e), rtol=1e-3)


def test_weak_scalars_keep_float64_precision():
    assert ember.convert(0.1, ember.float64).item() == 0.1
    x = ember.tensor([1.0, 2.5, -0.7], dtype=ember.float64)
    np.testing.assert_array_equal(ember.fmod(x, 0.3).numpy(), np.fmod(x.numpy(), 0.3))
    for backend in BACKENDS:
        f = ember.jit(lambda x: (ember.fmod(x, 0.3), 1 / 3 - x), backend=backend)
        a, b = f(x)
        np.testing.assert_array_equal(a.numpy(), np.fmod(x.numpy(), 0.3))
        np.testing.assert_array_equal(b.numpy(), 1 / 3 - x.numpy())
