"""Autograd: the tape engine, grad transforms, backward semantics, hooks, custom Functions and the
version counter that guards in-place writes (FE-6, FE-9, FE-11, FE-13, PI-9, LAB-2, BE-12)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.testing import GradcheckError, gradcheck, gradgradcheck

f64 = ember.float64


def t64(a, requires_grad=False):
    return ember.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def numeric_grad(fn, arrays, i, eps=1e-6):
    """Central differences of scalar fn(*tensors) w.r.t. arrays[i] (numpy float64)."""
    base = [np.array(a, dtype=np.float64) for a in arrays]
    out = np.zeros_like(base[i])
    flat = out.reshape(-1)
    for j in range(flat.size):
        vals = []
        for s in (1.0, -1.0):
            pert = [b.copy() for b in base]
            pert[i].reshape(-1)[j] += s * eps
            with ember.no_grad():
                r = fn(*[ember.tensor(p) for p in pert])
            vals.append(float((r[0] if isinstance(r, tuple) else r).item()))
        flat[j] = (vals[0] - vals[1]) / (2 * eps)
    return out


# ---------------------------------------------------------------- grad transforms
def test_grad_two_argnums():
    """FE-9: grad(f, argnums=(0, 1)) of ln(x) + x*y - sin(y) at (2, 5) is (5.5, 1.71634)."""
    f = lambda x, y: ember.log(x) + x * y - ember.sin(y)  # noqa: E731
    gx, gy = ember.grad(f, argnums=(0, 1))(2.0, 5.0)
    assert abs(gx.item() - 5.5) < 1e-5
    assert abs(gy.item() - 1.71634) < 1e-5
    assert abs(gy.item() - (2.0 - math.cos(5.0))) < 1e-5
    # a single int argnum returns one gradient, not a tuple
    g0 = ember.grad(f)(2.0, 5.0)
    assert isinstance(g0, ember.Tensor) and abs(g0.item() - 5.5) < 1e-5


def test_grad_of_grad():
    """FE-13: grad(grad(x**3))(2) == 12 (6x); a third grad gives 6."""
    d1 = ember.grad(lambda x: x ** 3)
    d2 = ember.grad(d1)
    d3 = ember.grad(d2)
    assert abs(d1(2.0).item() - 12.0) < 1e-6
    assert abs(d2(2.0).item() - 12.0) < 1e-6
    assert abs(d2(3.0).item() - 18.0) < 1e-6
    assert abs(d3(2.0).item() - 6.0) < 1e-6
    assert abs(ember.grad(ember.grad(ember.sin))(0.5).item() + math.sin(0.5)) < 1e-6


def test_grad_transform_leaves_caller_tensors_alone():
    x = ember.tensor([1.0, 2.0])
    g = ember.grad(lambda v: (v * v).sum())(x)
    assert g.tolist() == [2.0, 4.0]
    assert not x.requires_grad and x.grad is None
    with pytest.raises(TypeError, match="scalar"):
        ember.grad(lambda v: v * 2)(x)
    # an output that does not depend on the input: zero gradient
    assert ember.grad(lambda v: ember.tensor(3.0))(x).tolist() == [0.0, 0.0]


def test_value_and_grad_has_aux_matches_central_differences():
    """PI-9: value_and_grad(fn, argnums, has_aux=True) returns ((loss, aux), grads), and the
    gradients match central differences in float64 to 1e-6."""
    rng = np.random.default_rng(0)
    xs = rng.standard_normal(3)
    ws = rng.standard_normal((4, 3))
    bs = rng.standard_normal(4)

    def fn(x, w, b):
        h = ember.tanh(w @ x + b)
        loss = (h * h).sum() + ember.log1p(x * x).sum()
        return loss, {"h": h, "n": 7}

    (loss, aux), grads = ember.value_and_grad(fn, argnums=(0, 1), has_aux=True)(t64(xs), t64(ws), t64(bs))
    assert isinstance(aux, dict) and aux["n"] == 7 and aux["h"].shape == (4,)
    assert loss.dtype is f64 and not loss.requires_grad
    assert isinstance(grads, tuple) and len(grads) == 2
    assert grads[0].shape == (3,) and grads[1].shape == (4, 3)
    expect_loss = float(np.sum(np.tanh(ws @ xs + bs) ** 2) + np.sum(np.log1p(xs ** 2)))
    assert abs(loss.item() - expect_loss) < 1e-12
    for i, g in zip((0, 1), grads):
        num = numeric_grad(lambda *a: fn(*a)[0], [xs, ws, bs], i)
        np.testing.assert_allclose(g.numpy(), num, atol=1e-6, rtol=1e-6)
    # grad_fn with has_aux returns (grads, aux)
    g, aux2 = ember.grad(fn, argnums=2, has_aux=True)(t64(xs), t64(ws), t64(bs))
    np.testing.assert_allclose(g.numpy(), numeric_grad(lambda *a: fn(*a)[0], [xs, ws, bs], 2), atol=1e-6)
    assert aux2["n"] == 7


# ---------------------------------------------------------------- the tape
def test_adjoint_accumulation():
    """FE-11: x*x has gradient 2x: both uses of x add into one adjoint."""
    x = ember.tensor([3.0, -1.5], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.tolist() == [6.0, -3.0]
    x.grad = None
    y = x * 2
    (y + y * y + ember.exp(x)).sum().backward()  # y used twice, x used twice
    np.testing.assert_allclose(x.grad.numpy(), 2 + 8 * x.numpy(force=True) + np.exp(x.numpy(force=True)),
                               rtol=1e-6)
    # the graph: both edges of mul point at x's one accumulator
    n = (x * x).grad_fn
    e0, e1 = n.next_functions
    assert e0 is e1 and e0.name == "AccumulateGrad"


def test_tape_runs_in_reverse_order():
    """FE-11: backward visits nodes in reverse order of their creation."""
    x = ember.tensor([0.5, 1.0], requires_grad=True)
    order = []
    a = x * 2
    b = a.sin()
    c = b * b
    d = c.sum()
    for name, t in (("a", a), ("b", b), ("c", c)):
        t.register_hook(lambda g, name=name: order.append(name))
    x.register_hook(lambda g: order.append("x"))
    d.backward()
    assert order == ["c", "b", "a", "x"]
    assert d.grad_fn.next_functions[0] is c.grad_fn
    assert c.grad_fn.next_functions == (b.grad_fn, b.grad_fn)
    assert a.grad_fn.next_functions[0].tensor is x


def test_diamond_graph_runs_each_node_once_after_all_consumers():
    x = ember.tensor([0.3, 0.7], requires_grad=True)
    h = x.exp()
    seen = []
    h.register_hook(lambda g: seen.append(g.numpy().copy()))
    out = (h.sin() + h.cos() * 2 + h).sum()
    out.backward()
    assert len(seen) == 1  # one call, with the summed adjoint
    hv = np.exp(x.numpy(force=True))
    np.testing.assert_allclose(seen[0], np.cos(hv) - 2 * np.sin(hv) + 1, rtol=1e-6)


# ---------------------------------------------------------------- backward semantics
def test_grad_accumulates_across_backward_calls():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    g = x.grad
    (x * x).sum().backward()
    assert x.grad.tolist() == [5.0, 7.0]
    assert x.grad is g  # accumulated in place into the same .grad
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_second_backward_without_retain_graph_raises():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(ember.AutogradError, match="second time"):
        y.backward()
    x.grad = None
    z = (x.exp() * x).sum()
    z.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    np.testing.assert_allclose(first, np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0])), rtol=1e-6)
    z.backward()  # retained: runs again and accumulates
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-6)
    with pytest.raises(ember.AutogradError, match="second time"):
        z.backward()  # the second call did not retain


def test_create_graph_higher_order():
    x = t64([0.3, -1.2], requires_grad=True)
    y = (x ** 4).sum()
    (g,) = ember.autograd.grad(y, x, create_graph=True)
    assert g.requires_grad
    np.testing.assert_allclose(g.numpy(force=True), 4 * x.numpy(force=True) ** 3)
    (h,) = ember.autograd.grad(g.sum(), x, create_graph=True)
    np.testing.assert_allclose(h.numpy(force=True), 12 * x.numpy(force=True) ** 2)
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 24 * x.numpy(force=True))
    # backward(create_graph=True) leaves a differentiable .grad
    w = t64([1.5], requires_grad=True)
    (w ** 3).sum().backward(create_graph=True)
    assert w.grad.requires_grad
    (g2,) = ember.autograd.grad(w.grad.sum(), w)
    assert abs(g2.item() - 9.0) < 1e-12
    assert gradgradcheck(lambda a: (a.sin() * a).sum(), [t64([0.4, 1.1], requires_grad=True)])


def test_nonscalar_backward_needs_gradient():
    x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    with pytest.raises(ember.AutogradError, match="scalar"):
        y.backward()
    y.backward(ember.tensor([1.0, 0.0, -1.0]))
    assert x.grad.tolist() == [2.0, 0.0, -2.0]
    with pytest.raises(ember.AutogradError, match="shape"):
        (x * 2).backward(ember.ones(2))
    with pytest.raises(ember.AutogradError, match="does not require grad"):
        ember.ones(2).sum().backward()


def test_autograd_grad_allow_unused_and_no_accumulation():
    a = ember.tensor(1.5, requires_grad=True)
    c = ember.tensor(2.0, requires_grad=True)
    out = a * 2
    with pytest.raises(ember.AutogradError, match="allow_unused"):
        ember.autograd.grad(out, [a, c], retain_graph=True)
    ga, gc = ember.autograd.grad(out, [a, c], allow_unused=True)
    assert ga.item() == 2.0 and gc is None
    assert a.grad is None and c.grad is None  # grad() returns, it does not accumulate
    # with respect to a non-leaf, and with grad_outputs
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    y = h * h
    (gh,) = ember.autograd.grad(y, h, grad_outputs=ember.tensor([1.0, 0.5]))
    assert gh.tolist() == [6.0, 6.0]
    # backward(inputs=...) accumulates only into the listed tensors
    p = ember.tensor(1.0, requires_grad=True)
    q = ember.tensor(2.0, requires_grad=True)
    (p * q).backward(inputs=[p])
    assert p.grad.item() == 2.0 and q.grad is None


def test_grad_mode_switches():
    x = ember.tensor([1.0], requires_grad=True)
    with ember.no_grad():
        assert not ember.is_grad_enabled()
        y = x * 2
        with ember.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None
    with ember.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    with ember.set_grad_enabled(True):
        assert (x * 2).requires_grad
    assert ember.is_grad_enabled()

    @ember.no_grad()
    def f_no():
        return x * 2

    @ember.enable_grad()
    def f_en():
        return x * 2

    @ember.set_grad_enabled(False)
    def f_off():
        return x * 2

    assert not f_no().requires_grad and not f_off().requires_grad
    with ember.no_grad():
        assert f_en().requires_grad
    assert ember.is_grad_enabled()
    # the mode is restored after an exception
    with pytest.raises(ZeroDivisionError):
        with ember.no_grad():
            1 / 0
    assert ember.is_grad_enabled()


def test_detach_shares_storage_and_cuts_graph():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    assert np.shares_memory(d.numpy(), y.numpy(force=True))
    out = (d * y).sum()
    out.backward()
    assert x.grad.tolist() == [4.0, 8.0]  # d is a constant: only the y factor is differentiated
    assert not x.data.requires_grad and np.shares_memory(x.data.numpy(), x.numpy(force=True))
    v = y.detach()
    v.add_(1)  # a write through the detached alias bumps the shared version
    assert y._version == v._version == 1


def test_requires_grad_only_floats_and_propagation():
    with pytest.raises(ember.AutogradError, match="floating"):
        ember.tensor([1, 2], requires_grad=True)
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    assert (x > 1).requires_grad is False  # bool results never require grad
    assert x.argmax().requires_grad is False
    assert (x.long() * 2).requires_grad is False
    y = x * 2
    with pytest.raises(ember.AutogradError, match="leaf"):
        y.requires_grad_(False)
    assert not ember.ones(2).requires_grad and not (ember.ones(2) * 2).requires_grad


# ---------------------------------------------------------------- hooks
def test_tensor_hook_modifies_grad_and_is_removable():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    h = x.register_hook(lambda g: g * 10)
    (x * 3).sum().backward()
    assert x.grad.tolist() == [30.0, 30.0]
    h.remove()
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]
    with pytest.raises(ember.AutogradError):
        ember.ones(2).register_hook(lambda g: g)


def test_hook_on_non_leaf_changes_upstream_gradient_and_retain_grad():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    seen = []
    y.register_hook(lambda g: seen.append(g.tolist()))
    y.register_hook(lambda g: g * 0.5)
    y.retain_grad()
    z = y * 4
    z.sum().backward()
    assert seen == [[4.0, 4.0]]
    assert x.grad.tolist() == [4.0, 8.0]  # 0.5 * 4 * 2x
    assert y.grad.tolist() == [2.0, 2.0]  # retained (after hooks)
    w = x * 1
    (w * 2).sum().backward()
    assert w.grad is None  # not retained by default


def test_post_accumulate_hook_sees_full_sum_once():
    """A leaf used 3 times: its post-accumulate hook runs once, after all three contributions."""
    w = ember.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad.tolist()))
    (w * 1 + w * 2 + (w * 3).sin()).sum().backward()
    expect = (1 + 2 + 3 * np.cos(3 * np.array([1.0, 2.0]))).tolist()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], expect, rtol=1e-5)
    (w * 1 + w * 1 + w * 1).sum().backward()
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], np.array(expect) + 3, rtol=1e-5)  # sees the accumulated .grad
    handle.remove()
    (w * 1).sum().backward()
    assert len(calls) == 2
    with pytest.raises(ember.AutogradError, match="leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_post_accumulate_hook_fires_as_soon_as_the_layer_is_done():
    """DDP needs this: in a chain, the later layer's parameter hook fires during backward before
    the earlier layer is processed, also when the hooks were registered before the forward pass and
    the parameters are reused over several steps."""
    rng = np.random.default_rng(0)
    w2 = ember.tensor(rng.standard_normal((3, 3)), requires_grad=True)  # created (and hooked) first
    w1 = ember.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    b1 = ember.tensor(rng.standard_normal(3), requires_grad=True)
    events = []
    w2.register_post_accumulate_grad_hook(lambda t: events.append("w2"))
    b1.register_post_accumulate_grad_hook(lambda t: events.append("b1"))
    w1.register_post_accumulate_grad_hook(lambda t: events.append("w1"))
    for step in range(3):
        events.clear()
        x = ember.tensor(rng.standard_normal((5, 4)))
        a1 = x @ w1 + b1
        a1.register_hook(lambda g: events.append("layer1"))
        h = a1.tanh()
        out = (h @ w2).sum()
        out.backward()
        assert events.index("w2") < events.index("layer1") < events.index("w1"), (step, events)
        assert events.index("layer1") < events.index("b1")
        assert sorted(events) == ["b1", "layer1", "w1", "w2"]


# ---------------------------------------------------------------- custom Functions (LAB-2, FE-6)
class LinearFn(ember.autograd.Function):
    """LAB-2: y = x @ w.T + b with a hand-written backward."""

    seen_needs = []

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        LinearFn.seen_needs.append(ctx.needs_input_grad)
        gx = g @ w if ctx.needs_input_grad[0] else None
        gw = g.T @ x if ctx.needs_input_grad[1] else None
        gb = g.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


def test_custom_linear_function_gradcheck():
    """LAB-2: the custom Linear passes gradcheck in float64."""
    rng = np.random.default_rng(1)
    x = t64(rng.standard_normal((5, 3)), requires_grad=True)
    w = t64(rng.standard_normal((2, 3)), requires_grad=True)
    b = t64(rng.standard_normal(2), requires_grad=True)
    assert gradcheck(LinearFn.apply, [x, w, b])
    out = LinearFn.apply(x, w, b)
    assert out.grad_fn.name == "LinearFnBackward" and out.requires_grad


def test_custom_linear_matches_functional_linear():
    """LAB-2: values and gradients equal ember.nn.functional.linear's."""
    rng = np.random.default_rng(2)
    xs, ws, bs = rng.standard_normal((6, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    g_out = rng.standard_normal((6, 3))
    res = []
    for fn in (LinearFn.apply, F.linear):
        x, w, b = t64(xs, True), t64(ws, True), t64(bs, True)
        y = fn(x, w, b)
        (y * t64(g_out)).sum().backward()
        res.append((y.detach().numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()))
    for a, b_ in zip(*res):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)


def test_custom_function_needs_input_grad():
    LinearFn.seen_needs.clear()
    x = ember.randn(2, 3)  # no grad
    w = ember.randn(4, 3, requires_grad=True)
    b = ember.randn(4, requires_grad=True)
    LinearFn.apply(x, w, b).sum().backward()
    assert LinearFn.seen_needs == [(False, True, True)]
    assert w.grad.shape == (4, 3) and b.grad.shape == (4,) and x.grad is None
    # no input requires grad: no node at all
    y = LinearFn.apply(x, w.detach(), b.detach())
    assert not y.requires_grad and y.grad_fn is None
    # under no_grad: no node either
    with ember.no_grad():
        assert LinearFn.apply(x, w, b).grad_fn is None


def test_custom_function_saved_tensor_modified_raises():
    x = ember.randn(3, 2, requires_grad=True)
    w = ember.randn(4, 2)
    b = ember.zeros(4)
    y = LinearFn.apply(x, w, b)
    w.mul_(2)
    with pytest.raises(ember.AutogradError, match="in place"):
        y.sum().backward()


class CubeWrong(ember.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 2 * x * x  # should be 3 x^2


class CubeRight(CubeWrong):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x * x


def test_gradcheck_passes_float64_and_flags_wrong_gradient():
    """FE-6: gradcheck passes correct gradients in float64 and reports a wrong custom gradient."""
    x = t64([0.5, -1.3, 2.0], requires_grad=True)
    assert gradcheck(CubeRight.apply, [x])
    assert gradcheck(lambda a: (a.exp() * a.sin()).sum(), [x])
    assert gradcheck(lambda a, b: F.softmax(a[:, None] * b, dim=1),
                     [x, t64([[0.3, -0.2]], requires_grad=True)])
    with pytest.raises(GradcheckError, match="disagrees"):
        gradcheck(CubeWrong.apply, [x])
    assert gradcheck(CubeWrong.apply, [x], raise_exception=False) is False


def test_gradcheck_float32_reports_roundoff():
    """FE-6: float32 central differences are too noisy at eps=1e-6 (why gradcheck wants float64)."""
    x = ember.tensor([0.5, 1.3, 2.0], requires_grad=True)
    assert gradcheck(lambda a: (a.exp() * a.sin()).sum(), [x], raise_exception=False) is False


# ---------------------------------------------------------------- in-place and the version counter (BE-12)
def test_modified_saved_output_through_view_raises():
    """BE-12: exp saves its output; y[0] += 1 (through a view of it) makes backward raise."""
    x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.exp()
    z = (y * 2).sum()
    y[0] += 1
    with pytest.raises(ember.AutogradError, match="in-place"):
        z.backward()


def test_modified_saved_input_through_view_raises():
    """BE-12: z = x * w saves w; w.T.mul_(2) changes it through a view: backward raises."""
    x = ember.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    w = ember.tensor([[1.0, 2.0], [3.0, 4.0]])
    z = x * w
    v = w._version
    w.T.mul_(2)
    assert w._version == v + 1
    with pytest.raises(ember.AutogradError, match="version"):
        z.sum().backward()
    # the same write before the multiplication is fine
    x2 = ember.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    w2 = ember.tensor([[1.0, 2.0], [3.0, 4.0]])
    w2.T.mul_(2)
    (x2 * w2).sum().backward()
    assert x2.grad.tolist() == [[2.0, 4.0], [6.0, 8.0]]


def test_modified_saved_non_leaf_raises():
    x = ember.tensor([0.5, 1.0], requires_grad=True)
    h = x * 1
    s = h.sin()  # saves h
    h.add_(1)
    with pytest.raises(ember.AutogradError, match="modified by an in-place"):
        s.sum().backward()


def test_inplace_on_leaf_requiring_grad_raises():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ember.AutogradError, match="leaf"):
        x.add_(1)
    with pytest.raises(ember.AutogradError, match="leaf"):
        x += 1
    with pytest.raises(ember.AutogradError, match="leaf"):
        x[0] = 5.0
    with pytest.raises(ember.AutogradError, match="leaf"):
        x[:1].mul_(2)
    assert x.tolist() == [1.0, 2.0]
    with ember.no_grad():  # the optimizer's way
        x.sub_(0.5)
        x[1] = 7.0
    assert x.tolist() == [0.5, 7.0] and x.requires_grad and x.is_leaf


def _inplace_chain(x, w):
    y = x * 2
    y[0] *= 3                      # Python: y.__setitem__(0, y[0].__imul__(3))
    y[:, 1].exp_()
    y.T[2].add_(w[:2])             # a column through a transposed view, with a grad-requiring operand
    y[1].mul_(w)
    y.mul_(w * w + 1)              # the whole tensor: mul saves y, which is then overwritten
    return (y * y).sum() + y.sum()


def _out_of_place_chain(x, w):
    y = x * 2
    y = y * ember.tensor([[3.0], [1.0]], dtype=f64)
    col1 = ember.tensor([[0.0, 1.0, 0.0]], dtype=f64)
    y = y * (1 - col1) + y.exp() * col1
    zero = ember.zeros(2, dtype=f64)
    y = y + ember.stack([zero, zero, w[:2]], dim=1)
    y = y * ember.stack([ember.ones(3, dtype=f64), w])
    y = y * (w * w + 1)
    return (y * y).sum() + y.sum()


def test_inplace_on_non_leaf_through_views_gives_correct_gradients():
    """BE-12: in-place writes into a non-leaf, also through views, differentiate like the
    out-of-place formulation."""
    rng = np.random.default_rng(3)
    xs, ws = rng.standard_normal((2, 3)) * 0.5, rng.standard_normal(3)
    grads, vals = [], []
    for fn in (_inplace_chain, _out_of_place_chain):
        x, w = t64(xs, True), t64(ws, True)
        out = fn(x, w)
        out.backward()
        vals.append(out.item())
        grads.append((x.grad.numpy(), w.grad.numpy()))
    assert abs(vals[0] - vals[1]) < 1e-9 * max(1.0, abs(vals[1]))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-9, atol=1e-12)
    assert gradcheck(_inplace_chain, [t64(xs, True), t64(ws, True)])


def test_inplace_on_plain_tensor_with_grad_operand():
    """a.mul_(x) where only x requires grad: a joins the graph."""
    x = t64([1.0, 2.0, 3.0], requires_grad=True)
    a = t64([4.0, 5.0, 6.0])
    a.mul_(x)
    a.add_(x)
    assert a.requires_grad and a.grad_fn is not None
    (a * a).sum().backward()
    xv = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.array([4.0, 5, 6]) * xv + xv) * (np.array([4.0, 5, 6]) + 1))


def test_setitem_value_gradient():
    x = t64(np.zeros((2, 3)), requires_grad=True)
    v = t64([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 1
    y[1] = v * v
    (y * t64([[1.0, 1, 1], [1, 2, 3]])).sum().backward()
    assert v.grad.tolist() == [2.0, 8.0, 18.0]
    assert x.grad.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_inplace_functional_relu_and_dropout_on_non_leaf():
    x = ember.tensor([-1.0, 2.0, -3.0, 4.0], requires_grad=True)
    y = x * 1
    F.relu(y, inplace=True)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 1.0]
    ember.manual_seed(0)
    x2 = ember.ones(64, requires_grad=True)
    y2 = x2 * 1
    F.dropout(y2, 0.5, inplace=True)
    y2.sum().backward()
    np.testing.assert_array_equal(x2.grad.numpy(), y2.detach().numpy())  # 0 or 2 where kept
