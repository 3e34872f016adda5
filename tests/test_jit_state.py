"""ember.jit over whole training steps: mutation as data flow, guards and replay semantics (CG-9)."""
import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn
from ember.recipes.fashion_mnist import FashionCNN
from _bench_models import build

RTOL, ATOL = 1e-5, 1e-6


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_bench_models_eager_and_jit_agree_over_5_steps(model, opt):
    opt_name = opt if opt == "sgd" else ("adamw" if model == "gpt" else "adam")
    P1, o1, data, eager = build(model, ember, opt_name)
    P2, o2, _, step = build(model, ember, opt_name)
    jitted = ember.jit(step)
    for i in range(5):
        x, y = data[i % len(data)]
        le, lj = eager(x, y), jitted(x, y)
        np.testing.assert_allclose(lj.item(), le.item(), rtol=RTOL, atol=ATOL)
        for k in P1:
            np.testing.assert_allclose(P2[k].grad.numpy(), P1[k].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=k)
    lr = o1.param_groups[0]["lr"].item()
    for k in P1:
        if opt == "sgd":
            np.testing.assert_allclose(_np(P2[k]), _np(P1[k]), rtol=0, atol=1e-5, err_msg=k)
        else:
            np.testing.assert_allclose(_np(P2[k]), _np(P1[k]), rtol=0, atol=10 * lr, err_msg=k)
            assert o2.state[P2[k]]["step"].item() == o1.state[P1[k]]["step"].item() == 5.0
    assert jitted.trace_count == 1, jitted.explain


def _flagship(seed=0):
    ember.manual_seed(seed)
    m = FashionCNN(4, 8, 16)
    opt = ember.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = ember.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)

    def step(x, y):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    return m, opt, sched, step


def test_flagship_cnn_eager_and_jit_agree_with_bn_dropout_and_cosine_schedule():
    rng = np.random.default_rng(0)
    batches = [(ember.tensor(rng.standard_normal((6, 1, 28, 28)).astype(np.float32)),
                ember.tensor(rng.integers(0, 10, 6))) for _ in range(5)]
    m1, o1, s1, eager = _flagship()
    m2, o2, s2, step = _flagship()
    jitted = ember.jit(step)
    lrs = []
    for i, (x, y) in enumerate(batches):
        ember.manual_seed(100 + i)
        le = eager(x, y)
        ember.manual_seed(100 + i)
        lj = jitted(x, y)
        s1.step()
        s2.step()
        lrs.append(o2.param_groups[0]["lr"].item())
        np.testing.assert_allclose(lj.item(), le.item(), rtol=RTOL, atol=ATOL)
        for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
            np.testing.assert_allclose(p2.grad.numpy(), p1.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=n)
    # A conv bias before a batch norm has a gradient of rounding noise, which AdamW turns into
    # steps of up to lr in either direction; the running means carry those biases. So parameters
    # and running means agree to 10 x lr, the running variances (blind to the biases) tightly.
    for (n, b1), b2 in zip(m1.named_buffers(), m2.buffers()):  # BatchNorm statistics advanced
        tol = dict(rtol=0, atol=10 * 2e-3) if n.endswith("running_mean") else dict(rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(_np(b2), _np(b1), err_msg=n, **tol)
    assert m2.features[1].num_batches_tracked.item() == 5
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        np.testing.assert_allclose(_np(p2), _np(p1), rtol=0, atol=10 * 2e-3, err_msg=n)
    assert len(set(lrs)) == 5 and jitted.trace_count == 1  # the schedule moved the lr, no retrace
    m2.eval()
    jitted(*batches[0])
    assert jitted.trace_count == 2 and "eval mode" in jitted.explain[-1]


def test_adam_bias_correction_advances_over_replays():
    p = ember.tensor([1.0, -2.0], requires_grad=True)
    opt = ember.optim.Adam([p], lr=0.1)

    @ember.jit
    def step(x):
        opt.zero_grad()
        loss = (p * x).sum()
        loss.backward()
        opt.step()
        return loss

    # Adam's first steps move each coordinate by lr * sign(g) exactly once bias-corrected
    for t in range(1, 6):
        step(ember.tensor([1.0, 1.0]))
        assert opt.state[p]["step"].item() == t
        np.testing.assert_allclose(p.detach().numpy(), [1.0 - 0.1 * t, -2.0 - 0.1 * t], rtol=1e-5)
    assert step.trace_count == 1


def test_dropout_masks_differ_between_replays_and_equal_eager():
    x = ember.ones(64)
    f = ember.jit(lambda x: F.dropout(x, 0.5, training=True))
    ember.manual_seed(7)
    a, b = f(x), f(x)
    assert not np.array_equal(a.numpy(), b.numpy())
    ember.manual_seed(7)
    ea, eb = F.dropout(x, 0.5, training=True), F.dropout(x, 0.5, training=True)
    np.testing.assert_array_equal(a.numpy(), ea.numpy())
    np.testing.assert_array_equal(b.numpy(), eb.numpy())
    g = ember.Generator().manual_seed(3)
    h = ember.jit(lambda x: x * ember.rand(64, generator=g))  # an explicit generator's state
    r1, r2 = h(x), h(x)
    g2 = ember.Generator().manual_seed(3)
    np.testing.assert_array_equal(r1.numpy(), ember.rand(64, generator=g2).numpy())
    np.testing.assert_array_equal(r2.numpy(), ember.rand(64, generator=g2).numpy())


def test_100_calls_with_one_signature_trace_once():
    m = nn.Linear(4, 2)
    opt = ember.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    @ember.jit
    def step(x):
        opt.zero_grad()
        loss = m(x).square().mean()
        loss.backward()
        opt.step()
        return loss
    for i in range(100):
        step(ember.ones(3, 4) * (i % 7))
    assert step.trace_count == 1 and step.explain == ["traced: first call"]


def test_guards_grad_mode_and_replaced_parameter():
    m = nn.Linear(3, 1)
    f = ember.jit(lambda x: m(x).sum())
    x = ember.ones(2, 3)
    f(x)
    with ember.no_grad():
        f(x)
    assert f.explain[-1] == "retraced: grad mode is off (traced with it on)"
    m.weight = nn.Parameter(ember.zeros(1, 3))
    with ember.no_grad():
        assert f(x).item() == pytest.approx(2 * m.bias.item())
    assert f.explain[-1] == "retraced: a parameter or buffer of a module was replaced"
    with ember.no_grad():
        m.weight.fill_(1.0)  # in place: the same tensor, read at every call
        assert f(x).item() == pytest.approx(2 * (3 + m.bias.item()))
    assert f.trace_count == 3


def test_writes_through_views_of_state_and_arguments():
    s = ember.zeros(2, 3)

    @ember.jit
    def f(x):
        s[0].add_(x)        # a view of captured state
        s.T[2].mul_(10)      # a view of a view
        x[1:].zero_()        # a view of an argument
        return s.sum()

    x = ember.tensor([1.0, 2.0, 3.0])
    x2 = x.clone()
    s_e = ember.zeros(2, 3)
    s_e[0].add_(x2)
    s_e.T[2].mul_(10)
    x2[1:].zero_()
    out = f(x)
    np.testing.assert_array_equal(s.numpy(), s_e.numpy())
    np.testing.assert_array_equal(x.numpy(), x2.numpy())
    assert out.item() == s_e.sum().item()


def test_detached_square_views_keep_their_own_value_while_tracing():
    """x.t().detach() of a square x is x's transpose under ember.jit, not x (it shares x's memory
    and shape, and once read the base's traced value)."""
    x = ember.tensor(np.arange(9.0).reshape(3, 3), dtype=ember.float32)

    def f(a):
        return a.t().detach() * 1.0 + ember.flip(a, [0]).detach()
    np.testing.assert_array_equal(ember.jit(f)(x).numpy(), f(x).numpy())
