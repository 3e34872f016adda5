"""Activation checkpointing in eager mode (CMU-1, TB-2): `ember.utils.checkpoint` and
`checkpoint_sequential` give the gradients of the plain run (parameters inside the segments, the
first one included, and the inputs; dropout replays its masks), and a 32-layer MLP in sqrt(32)
segments peaks at well under the memory of the plain backward (measured with tracemalloc, which
sees numpy's allocations)."""
import tracemalloc

import numpy as np
import pytest

import ember
from ember import nn
from ember.utils import checkpoint, checkpoint_sequential


def _mlp(depth, width, dropout=0.0, seed=0):
    ember.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
    return nn.Sequential(*layers)


def _grads(net):
    return [p.grad.numpy().copy() for p in net.parameters()]


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_cmu1_sqrt_n_checkpoints_equal_gradients_and_cut_peak_memory():
    net = _mlp(32, 128)
    x = ember.randn(1024, 128)
    for p in net.parameters():  # the gradients exist before either run: only activations differ
        p.grad = ember.zeros(p.shape)

    def plain():
        net(x).sum().backward()

    def ckpt():
        checkpoint_sequential(net, 6, x).sum().backward()  # 64 modules in 6 pieces (~sqrt(32) layers each)
    plain()
    net.zero_grad(set_to_none=False)
    p_plain = _peak(plain)
    want = _grads(net)
    net.zero_grad(set_to_none=False)
    p_ckpt = _peak(ckpt)
    got = _grads(net)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    print(f"\npeak traced memory: plain {p_plain / 2**20:.1f} MiB, checkpointed {p_ckpt / 2**20:.1f} MiB")
    assert p_ckpt <= 0.6 * p_plain, (p_plain, p_ckpt)


def test_cmu1_dropout_replays_its_masks_and_inputs_get_gradients():
    net = _mlp(4, 16, dropout=0.5)
    x0 = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)

    def run(use_ckpt):
        net.zero_grad()
        x = ember.tensor(x0, requires_grad=True)
        ember.manual_seed(123)
        y = checkpoint(net, x) if use_ckpt else net(x)
        (y * y).sum().backward()
        return _grads(net), x.grad.numpy(), y.detach().numpy()
    (g0, gx0, y0), (g1, gx1, y1) = run(False), run(True)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-6, atol=1e-7)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not any(np.array_equal(a, np.zeros_like(a)) for a in g1)


def test_cmu1_several_outputs_kwargs_and_plain_arguments():
    a0 = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    w = ember.tensor(np.full((4,), 0.5, np.float32), requires_grad=True)

    def f(a, k, *, scale):
        return a * w * scale, (a * a).sum(1) + k
    grads = []
    for use in (False, True):
        w.grad = None
        a = ember.tensor(a0, requires_grad=True)
        o1, o2 = checkpoint(f, a, 2.0, scale=3.0) if use else f(a, 2.0, scale=3.0)
        assert o1.shape == (3, 4) and o2.shape == (3,)
        (o1.sum() * 2 + (o2 * o2).sum()).backward()
        grads.append((a.grad.numpy(), w.grad.numpy()))
    for u, v in zip(*grads):
        np.testing.assert_allclose(u, v, rtol=1e-6)


def test_cmu1_no_grad_and_bad_outputs():
    net = _mlp(2, 8)
    x = ember.randn(2, 8)
    with ember.no_grad():
        np.testing.assert_array_equal(checkpoint(net, x).numpy(), net(x).numpy())
    with pytest.raises(TypeError, match="must return a tensor"):
        checkpoint(lambda t: {"y": t}, x)
    with pytest.raises(ValueError, match="segments must be"):
        checkpoint_sequential(net, 9, x)


def test_cmu1_checkpoint_under_jit_traces_through():
    net = _mlp(3, 8)
    x = ember.randn(4, 8)

    def step(x):
        return checkpoint(net, x).sum()
    with ember.no_grad():
        np.testing.assert_allclose(ember.jit(step)(x).numpy(), net(x).sum().numpy(), rtol=1e-6)
