"""FE-17 (algebraic simplification) at O2: the sums reverse mode makes out of slices (zero pads)
become one concatenate, and sums of GEMMs of one shape (a weight used at every step of a
recurrence) become one GEMM over concatenated operands; both keep eager's values."""
from __future__ import annotations

import numpy as np

import ember
from ember.jit import optimize
from ember.jit.sums import dots_to_one_dot, pads_to_concatenate
from ember.ops import P


def _prims(g):
    return [e.prim for e in g.eqns]


def _grad_graph(f, *xs):
    def step(*args):
        (g,) = ember.autograd.grad(f(*args), [args[0]])
        return g
    ts = [ember.tensor(x, requires_grad=(i == 0)) for i, x in enumerate(xs)]
    return ember.make_ir(step)(*ts), step, ts


def test_fe17_gradient_of_chunks_is_one_concatenate():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 8)), rng.standard_normal(4)

    def f(x, w):
        parts = ember.chunk(x, 4, -1)
        return sum((ember.tanh(p) * w[i]).sum() for i, p in enumerate(parts))
    g, step, ts = _grad_graph(f, x, w)
    assert _prims(g).count(P.pad) == 4
    o = optimize(g)
    assert P.pad not in _prims(o) and _prims(o).count(P.concatenate) == 1
    np.testing.assert_allclose(ember.jit(step)(*ts).numpy(), step(*ts).numpy(), rtol=1e-12)


def test_fe17_gaps_are_zero_blocks_and_overlaps_stay_pads():
    x = np.arange(10.0)
    g, step, ts = _grad_graph(lambda x: (x[1:3] * 2).sum() + (x[5:7] * 3).sum(), x)
    o = pads_to_concatenate(g)
    assert P.concatenate in _prims(o) and P.full in _prims(o)
    np.testing.assert_array_equal(ember.jit(step)(*ts).numpy(), [0, 2, 2, 0, 0, 3, 3, 0, 0, 0])
    g2, step2, ts2 = _grad_graph(lambda x: (x[0:4] * 2).sum() + (x[2:6] * 3).sum(), x)
    assert P.concatenate not in _prims(pads_to_concatenate(g2))
    np.testing.assert_array_equal(ember.jit(step2)(*ts2).numpy(), [2, 2, 5, 5, 3, 3, 0, 0, 0, 0])


def test_fe17_a_weight_used_at_every_step_gets_one_gemm():
    rng = np.random.default_rng(1)
    w, h0 = rng.standard_normal((5, 5)) * 0.3, rng.standard_normal((2, 5))

    def f(w, h):
        for _ in range(6):
            h = ember.tanh(h @ w)
        return (h * h).sum()
    g, step, ts = _grad_graph(f, w, h0)
    o = optimize(g)
    n_dots = _prims(o).count(P.dot_general)
    assert n_dots < _prims(g).count(P.dot_general) - 4  # the six dW terms became one
    assert any(e.prim is P.dot_general and e.inputs[0].aval.shape[0] == 12 for e in o.eqns)
    np.testing.assert_allclose(ember.jit(step)(*ts).numpy(), step(*ts).numpy(), rtol=1e-12, atol=1e-14)


def test_fe17_terms_read_elsewhere_are_left_alone():
    from ember.ops import lax
    x = np.arange(6.0)

    def step(x):
        a, b = lax.pad(x[:3], 0.0, [(0, 3, 0)]), lax.pad(x[3:], 0.0, [(3, 0, 0)])
        return a + b, a  # `a` is an output too: not folded
    t = ember.tensor(x)
    g = ember.make_ir(step)(t)
    o = dots_to_one_dot(pads_to_concatenate(g))
    assert _prims(o).count(P.pad) == 2 and P.concatenate not in _prims(o)
    s, a = ember.jit(step)(t)
    np.testing.assert_array_equal(s.numpy(), x)
