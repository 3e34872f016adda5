"""PI-3 (layer library): ember's 1-, 2- and 3-D pooling layers against PyTorch, and
Module.register_full_backward_pre_hook.

- fixtures from tools/make_pool_fixtures.py (run with torch in a separate environment; torch is
  never imported here): MaxPool1d/3d (and the dilated MaxPool2d), AvgPool1d/3d,
  AdaptiveAvgPool1d/3d, AdaptiveMaxPool1d/3d, MaxUnpool1d/3d, LPPool1d/2d/3d and their functional
  forms — outputs, indices and input gradients, float32 and float64, over ceil_mode, padding,
  dilation, stride != kernel, size-1 dims, unbatched and non-contiguous inputs, ties, inf and NaN;
- float64 gradcheck of every new differentiable functional;
- every new module under ember.jit, forward and gradients equal to eager;
- indices that round-trip through max_unpool; the 2-D entry points keep their primitives;
- the backward pre hook; clear ember errors, naming the shapes, for bad geometry.
"""
from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.testing import gradcheck

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "pool.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "pool.safetensors"))
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _view(t, spec):
    return t.permute(*spec["perm"]) if "perm" in spec else t[..., ::spec["step"]]


def _close(got, want, tol, what):
    got = got.detach().numpy() if isinstance(got, ember.Tensor) else got
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert str(got.dtype) == str(want.dtype), f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, err_msg=what, **tol)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the loss of inf / NaN outputs
@pytest.mark.parametrize("case", META["cases"], ids=[c["name"] for c in META["cases"]])
def test_pool_matches_pytorch(case):
    """Forward values, indices (exactly) and input gradients match PyTorch."""
    name, tol = case["name"], TOL[case["dtype"]]
    leaves, call = {}, {}
    for k in case["inputs"]:
        leaves[k] = ember.tensor(DATA[f"{name}.in.{k}"], requires_grad=k in case["grads_in"])
        call[k] = _view(leaves[k], case["views"][k]) if k in case["views"] else leaves[k]
        if k in case["views"]:
            assert not call[k].is_contiguous()
    kwargs = {k: _tuples(v) for k, v in case["kwargs"].items()}
    if case["kind"] == "module":
        out = getattr(nn, case["target"])(**kwargs)(*call.values(), **_tuples(case["forward_kwargs"]))
    else:
        out = getattr(F, case["target"])(**call, **kwargs)
    outs = list(out) if isinstance(out, tuple) else [out]
    assert len(outs) == len(case["outputs"])
    loss = None
    for i, o in enumerate(outs):
        _close(o, DATA[f"{name}.out.{i}"], tol, f"output {i}")
        if case["outputs"][i] == "float":
            term = (o * ember.tensor(DATA[f"{name}.gout.{i}"])).sum()
            loss = term if loss is None else loss + term
    grads = ember.autograd.grad(loss, [leaves[k] for k in case["grads_in"]])
    for k, g in zip(case["grads_in"], grads):
        _close(g, DATA[f"{name}.grad.in.{k}"], tol, f"grad of input {k}")


def test_fixtures_cover_every_new_layer():
    targets = {c["target"] for c in META["cases"]}
    for name in ("MaxPool1d", "MaxPool3d", "AvgPool1d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool3d",
                 "AdaptiveMaxPool1d", "AdaptiveMaxPool3d", "MaxUnpool1d", "MaxUnpool3d", "LPPool1d", "LPPool2d",
                 "LPPool3d", "max_pool1d", "max_pool3d", "avg_pool1d", "avg_pool3d", "adaptive_avg_pool3d",
                 "adaptive_max_pool1d", "adaptive_max_pool3d", "max_unpool1d", "max_unpool3d", "lp_pool1d",
                 "lp_pool2d"):
        assert name in targets, name


# ---------------------------------------------------------------- float64 gradcheck of each functional
def _r(*shape, seed=0, positive=False):
    rng = np.random.default_rng(seed + sum(shape))
    v = rng.standard_normal(shape)
    return ember.tensor(np.abs(v) + 0.5 if positive else v, dtype=ember.float64, requires_grad=True)


def _distinct(*shape, seed=0):
    """Well-separated values (no near-ties), so max pooling's choice is stable under the perturbation."""
    rng = np.random.default_rng(seed)
    v = rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1
    return ember.tensor(v, dtype=ember.float64, requires_grad=True)


def _idx(*shape, fn, **kw):
    """The indices of a max pool over distinct values (constant for gradcheck)."""
    return fn(_distinct(*shape, seed=5), return_indices=True, **kw)[1]


GRADCHECKS = {
    "max_pool1d": (lambda x: F.max_pool1d(x, 3, 2, 1, ceil_mode=True), lambda: [_distinct(2, 2, 8)]),
    "max_pool1d_dilation": (lambda x: F.max_pool1d(x, 2, 1, 1, dilation=3), lambda: [_distinct(1, 2, 8)]),
    "max_pool1d_indices": (lambda x: F.max_pool1d(x, 2, 1, dilation=2, return_indices=True)[0],
                           lambda: [_distinct(2, 7)]),
    "max_pool3d": (lambda x: F.max_pool3d(x, 2, (1, 2, 2), padding=(1, 0, 1)), lambda: [_distinct(1, 2, 3, 4, 4)]),
    "max_pool3d_dilation": (lambda x: F.max_pool3d(x, 2, dilation=(2, 1, 2), ceil_mode=True),
                            lambda: [_distinct(1, 1, 4, 3, 5)]),
    "max_pool3d_indices": (lambda x: F.max_pool3d_with_indices(x, (2, 2, 3), 2, (1, 0, 1))[0],
                           lambda: [_distinct(1, 2, 3, 4, 5)]),
    "avg_pool1d": (lambda x: F.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                   lambda: [_r(2, 2, 8)]),
    "avg_pool3d": (lambda x: F.avg_pool3d(x, 3, 2, 1, ceil_mode=True), lambda: [_r(1, 2, 4, 5, 4)]),
    "avg_pool3d_divisor": (lambda x: F.avg_pool3d(x, (1, 2, 2), divisor_override=3), lambda: [_r(2, 3, 4, 4)]),
    "adaptive_avg_pool3d": (lambda x: F.adaptive_avg_pool3d(x, (2, 3, 2)), lambda: [_r(1, 2, 3, 5, 4)]),
    "adaptive_max_pool1d": (lambda x: F.adaptive_max_pool1d(x, 3), lambda: [_distinct(2, 2, 7)]),
    "adaptive_max_pool3d": (lambda x: F.adaptive_max_pool3d(x, (2, 2, 3), return_indices=True)[0],
                            lambda: [_distinct(1, 2, 3, 5, 4)]),
    "max_unpool1d": (lambda x: F.max_unpool1d(x, _idx(1, 2, 8, fn=F.max_pool1d, kernel_size=2), 2),
                     lambda: [_r(1, 2, 4)]),
    "max_unpool3d": (lambda x: F.max_unpool3d(x, _idx(1, 1, 4, 4, 4, fn=F.max_pool3d, kernel_size=2), 2,
                                              output_size=(5, 4, 5)),
                     lambda: [_r(1, 1, 2, 2, 2)]),
    "lp_pool1d": (lambda x: F.lp_pool1d(x, 3, 3, 2, ceil_mode=True), lambda: [_r(2, 2, 8, positive=True)]),
    "lp_pool2d": (lambda x: F.lp_pool2d(x, 2, (2, 3), 1), lambda: [_r(1, 2, 4, 5)]),
    "lp_pool3d": (lambda x: F.lp_pool3d(x, 1.5, 2), lambda: [_r(1, 1, 4, 4, 4, positive=True)]),
}


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_pool_gradcheck_float64(name):
    """Every new functional's gradient agrees with central differences in float64."""
    fn, make = GRADCHECKS[name]
    assert gradcheck(fn, make(), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- every new module under ember.jit
def _x(*shape):
    return lambda: [ember.tensor(np.random.default_rng(len(shape)).standard_normal(shape), dtype=ember.float32)]


def _unpool_input(fn, shape, k):
    def make():
        x = ember.tensor(np.random.default_rng(3).standard_normal(shape), dtype=ember.float32)
        v, i = fn(x, k, return_indices=True)
        return [v.detach(), i]
    return make


JIT = {
    "MaxPool1d": (lambda: nn.MaxPool1d(3, 2, 1, ceil_mode=True), _x(2, 3, 9)),
    "MaxPool1d_indices": (lambda: nn.MaxPool1d(2, return_indices=True), _x(2, 3, 8)),
    "MaxPool1d_dilation": (lambda: nn.MaxPool1d(2, 1, dilation=2), _x(2, 3, 8)),
    "MaxPool3d": (lambda: nn.MaxPool3d(2, (1, 2, 2), padding=(0, 1, 1)), _x(1, 2, 3, 5, 6)),
    "MaxPool3d_indices": (lambda: nn.MaxPool3d(2, return_indices=True), _x(1, 2, 4, 4, 4)),
    "MaxPool3d_dilation": (lambda: nn.MaxPool3d(2, dilation=(1, 2, 1)), _x(1, 2, 4, 5, 4)),
    "AvgPool1d": (lambda: nn.AvgPool1d(3, 2, 1, count_include_pad=False), _x(2, 3, 9)),
    "AvgPool3d": (lambda: nn.AvgPool3d(3, 2, 1, ceil_mode=True), _x(1, 2, 5, 4, 6)),
    "AdaptiveAvgPool1d": (lambda: nn.AdaptiveAvgPool1d(4), _x(2, 3, 9)),
    "AdaptiveAvgPool3d": (lambda: nn.AdaptiveAvgPool3d((2, 3, 2)), _x(1, 2, 5, 7, 4)),
    "AdaptiveMaxPool1d": (lambda: nn.AdaptiveMaxPool1d(3, return_indices=True), _x(2, 3, 8)),
    "AdaptiveMaxPool3d": (lambda: nn.AdaptiveMaxPool3d((2, 2, 3), return_indices=True), _x(1, 2, 5, 4, 7)),
    "MaxUnpool1d": (lambda: nn.MaxUnpool1d(2), _unpool_input(F.max_pool1d, (2, 3, 8), 2)),
    "MaxUnpool3d": (lambda: nn.MaxUnpool3d(2), _unpool_input(F.max_pool3d, (1, 2, 4, 4, 4), 2)),
    "LPPool1d": (lambda: nn.LPPool1d(2, 3, 2), _x(2, 3, 9)),
    "LPPool2d": (lambda: nn.LPPool2d(2, 2), _x(1, 2, 4, 6)),
    "LPPool3d": (lambda: nn.LPPool3d(2, 2, 1), _x(1, 2, 3, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(JIT))
def test_pool_module_under_jit_matches_eager(name):
    """Each new module traced by ember.jit (forward, then backward() filling the .grad of its float
    inputs) gives eager mode's values, natively lowered (but for unpooling's scatter)."""
    make_module, make_inputs = JIT[name]
    results = []
    for mode in ("eager", "jit"):
        m = make_module()
        ins = [x.detach().requires_grad_(True) if x.dtype.kind == "f" else x for x in make_inputs()]
        leaves = [x for x in ins if x.dtype.kind == "f"]

        def step(*xs):
            out = m(*xs)
            outs = list(out) if isinstance(out, tuple) else [out]
            loss = sum((o * (1.0 + 0.1 * k)).sum() for k, o in enumerate(outs) if o.dtype.kind == "f")
            loss.backward()
            return outs
        f = step if mode == "eager" else ember.jit(step)
        outs = f(*ins)
        assert all(t.grad is not None for t in leaves)
        results.append([o.detach().numpy() for o in outs] + [t.grad.numpy() for t in leaves])
        if mode == "jit" and not name.startswith("MaxUnpool"):  # scatter_along_axis has no CPU lowering yet
            (ent,) = f.cache.values()
            assert not getattr(ent.exe, "host_units", []), f.explain
    for a, b in zip(*results[::-1]):
        if a.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- indices and the 2-D entry points
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_pool_indices_round_trip_through_unpool(nd):
    """max_pool{nd}d(return_indices=True) + max_unpool{nd}d keep each window's maximum in place, zeros
    elsewhere; the reduce_window form gives the same values."""
    shape = (2, 3) + (6, 4, 8)[:nd]
    x = ember.tensor(np.random.default_rng(nd).permutation(int(np.prod(shape))).reshape(shape).astype(np.float32))
    pool, unpool = getattr(F, f"max_pool{nd}d"), getattr(F, f"max_unpool{nd}d")
    out, idx = pool(x, 2, return_indices=True)
    back = unpool(out, idx, 2).numpy()
    xn = x.numpy()
    blocks = xn.reshape(shape[:2] + sum(((n // 2, 2) for n in shape[2:]), ()))
    axes = tuple(range(3, 2 + 2 * nd, 2))
    top = np.expand_dims(blocks.max(axis=axes), axes)
    want = np.where(blocks == top, blocks, 0).reshape(shape)
    np.testing.assert_array_equal(back, want)
    np.testing.assert_array_equal(pool(x, 2).numpy(), out.numpy())
    # the indices are flat per-channel spatial positions: the value there is the output
    flat = xn.reshape(shape[:2] + (-1,))
    got = np.take_along_axis(flat, idx.numpy().reshape(shape[:2] + (-1,)), 2).reshape(out.shape)
    np.testing.assert_array_equal(got, out.numpy())


def _prims(fn, x):
    from ember.jit.trace import trace

    def step(x):
        y = fn(x)
        return y, ember.autograd.grad(y.sum(), [x])[0]
    return [e.prim.name for e in trace(step, (x,)).graph.eqns]


def test_entry_points_keep_their_primitives():
    """max/avg pools without dilation are one reduce_window (their VJPs select_and_scatter_add and a
    windowed sum) in every rank; dilated max pools are a scan of strided slices."""
    for nd in (1, 2, 3):
        x = ember.randn(*(1, 2) + (6,) * nd, requires_grad=True)
        mp = _prims(lambda t: getattr(F, f"max_pool{nd}d")(t, 3, 2, 1), x)
        assert mp.count("reduce_window_max") == 1 and "select_and_scatter_add" in mp and "gather" not in mp
        ap = _prims(lambda t: getattr(F, f"avg_pool{nd}d")(t, 2), x)
        assert ap.count("reduce_window_sum") == 2 and "gather" not in ap
        dil = _prims(lambda t: getattr(F, f"max_pool{nd}d")(t, 2, dilation=2), x)
        assert "reduce_window_max" not in dil and dil.count("slice") >= 2 ** nd


# ---------------------------------------------------------------- backward pre hook
def test_backward_pre_hook_replaces_grad_output_before_backward_hooks():
    """register_full_backward_pre_hook(hook(module, grad_output)): runs first, its returned tuple is
    the grad_output the module's backward and its full backward hooks see; remove() unregisters."""
    m = nn.Linear(3, 2)
    x = ember.randn(4, 3, requires_grad=True)
    calls = []

    def pre(mod, grad_output):
        assert mod is m and isinstance(grad_output, tuple) and len(grad_output) == 1
        calls.append(("pre", grad_output[0].numpy().copy()))
        return (grad_output[0] * 3.0,)

    def pre_observe(mod, grad_output):
        calls.append(("pre2", grad_output[0].numpy().copy()))

    def full(mod, grad_input, grad_output):
        calls.append(("full", grad_output[0].numpy().copy(), grad_input[0].numpy().copy()))

    h_full = m.register_full_backward_hook(full)
    h_pre = m.register_full_backward_pre_hook(pre)
    h_pre2 = m.register_full_backward_pre_hook(pre_observe)
    m(x).sum().backward()
    assert [c[0] for c in calls] == ["pre", "pre2", "full"]
    np.testing.assert_array_equal(calls[0][1], np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(calls[1][1], np.full((4, 2), 3.0, np.float32))  # later pre hooks see it
    np.testing.assert_array_equal(calls[2][1], np.full((4, 2), 3.0, np.float32))
    w = m.weight.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), np.full((4, 2), 3.0) @ w, rtol=1e-6)
    np.testing.assert_allclose(calls[2][2], x.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(m.weight.grad.numpy(), np.full((2, 4), 3.0) @ x.detach().numpy(), rtol=1e-6)

    # prepend runs a pre hook first; None leaves grad_output as it is
    order = []
    h_first = m.register_full_backward_pre_hook(lambda mod, g: order.append("first"), prepend=True)
    calls.clear()
    x.grad = None
    m(x).sum().backward()
    assert order == ["first"] and [c[0] for c in calls] == ["pre", "pre2", "full"]

    for h in (h_pre, h_pre2, h_first):
        h.remove()
    calls.clear()
    x.grad = None
    m(x).sum().backward()
    assert [c[0] for c in calls] == ["full"]
    np.testing.assert_allclose(x.grad.numpy(), np.ones((4, 2)) @ w, rtol=1e-6)
    h_full.remove()
    x.grad = None
    m(x).sum().backward()
    assert len(calls) == 1
    np.testing.assert_allclose(x.grad.numpy(), np.ones((4, 2)) @ w, rtol=1e-6)


def test_backward_pre_hook_multiple_outputs_and_no_input_grad():
    """One entry per output (None for an output no gradient reached; a returned None is zeros); with no
    input requiring grad the pre hook still replaces the gradient reaching the parameters."""
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            y = self.lin(x)
            return y * 2.0, y + 1.0

    m = Two()
    x = ember.randn(3, 2)
    seen = []

    def pre(mod, grad_output):
        seen.append(tuple(g is None for g in grad_output))
        return (None, ember.full((3, 2), 5.0))
    m.register_full_backward_pre_hook(pre)
    a, b = m(x)
    b.sum().backward()  # only the second output is used
    assert seen == [(True, False)]
    np.testing.assert_allclose(m.lin.bias.grad.numpy(), [15.0, 15.0], rtol=1e-6)

    bad = nn.Linear(2, 2)
    bad.register_full_backward_pre_hook(lambda mod, g: (g[0], g[0]))
    with pytest.raises(RuntimeError, match="invalid number of grad_output, got 2, but expected 1"):
        bad(ember.randn(3, 2, requires_grad=True)).sum().backward()
    wrong = nn.Linear(2, 2)
    wrong.register_full_backward_pre_hook(lambda mod, g: (ember.ones(2, 2),))
    with pytest.raises(RuntimeError, match=r"grad_output of shape \(2, 2\) for an output of shape \(3, 2\)"):
        wrong(ember.randn(3, 2, requires_grad=True)).sum().backward()


def test_backward_pre_hook_under_jit():
    """Under ember.jit the pre hook runs while the step is traced; the compiled step keeps its effect."""
    def run(mode):
        ember.manual_seed(0)
        m = nn.MaxPool3d(2)
        conv = nn.Conv3d(1, 2, 1)
        m.register_full_backward_pre_hook(lambda mod, g: (g[0] * 0.5,))
        x = ember.tensor(np.random.default_rng(0).standard_normal((1, 1, 4, 4, 4)), dtype=ember.float32,
                         requires_grad=True)

        def step(x):
            y = m(conv(x))
            y.sum().backward()
            return y
        f = step if mode == "eager" else ember.jit(step)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = f(x)
        return y.detach().numpy(), x.grad.numpy(), conv.weight.grad.numpy()
    for a, b in zip(run("eager"), run("jit")):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    ember.manual_seed(0)
    conv = nn.Conv3d(1, 2, 1)
    x = ember.tensor(np.random.default_rng(0).standard_normal((1, 1, 4, 4, 4)), dtype=ember.float32,
                     requires_grad=True)
    nn.MaxPool3d(2)(conv(x)).sum().backward()
    np.testing.assert_allclose(run("eager")[1], 0.5 * x.grad.numpy(), rtol=1e-6)


# ---------------------------------------------------------------- errors
def test_pool_errors_name_the_shapes():
    """Bad kernel / stride / padding / input raise an ember error (a ValueError) naming the shapes."""
    with pytest.raises(ValueError, match=r"max_pool3d: input of shape \(1, 1, 2, 9, 9\) is too small for "
                                         r"kernel_size \(3, 3, 3\).*output size \(0, 3, 3\)"):
        nn.MaxPool3d(3)(ember.randn(1, 1, 2, 9, 9))
    with pytest.raises(ValueError, match=r"avg_pool1d: input of shape \(2, 4\) is too small for kernel_size \(5,\)"):
        F.avg_pool1d(ember.randn(2, 4), 5)
    with pytest.raises(ValueError, match=r"max_pool1d: padding \(2,\) should be at most half of kernel_size \(3,\) "
                                         r"\(input shape \(1, 1, 9\)\)"):
        nn.MaxPool1d(3, padding=2)(ember.randn(1, 1, 9))
    with pytest.raises(ValueError, match=r"avg_pool3d: padding \(1, 2, 1\) should be at most half of kernel_size "
                                         r"\(3, 3, 3\) \(input shape \(1, 1, 5, 5, 5\)\)"):
        F.avg_pool3d(ember.randn(1, 1, 5, 5, 5), 3, padding=(1, 2, 1))
    with pytest.raises(ValueError, match=r"max_pool3d: kernel_size must be a single int or a tuple of 3 ints, "
                                         r"got \(3, 3\)"):
        F.max_pool3d(ember.randn(1, 1, 4, 9, 9), (3, 3))
    with pytest.raises(ValueError, match=r"avg_pool1d: stride must be positive, got \(0,\)"):
        F.avg_pool1d(ember.randn(1, 1, 9), 3, stride=0)
    with pytest.raises(ValueError, match=r"max_pool1d: kernel_size must be positive, got \(0,\)"):
        F.max_pool1d(ember.randn(1, 1, 9), 0)
    with pytest.raises(ValueError, match=r"avg_pool1d: padding must be non-negative, got \(-1,\)"):
        F.avg_pool1d(ember.randn(1, 1, 9), 3, padding=-1)
    with pytest.raises(ValueError, match=r"max_pool3d: dilation must be positive, got \(1, 0, 1\)"):
        F.max_pool3d(ember.randn(1, 1, 4, 4, 4), 2, dilation=(1, 0, 1))
    with pytest.raises(ValueError, match=r"max_pool1d: expects a 2-D or 3-D input, got shape \(1, 1, 4, 4\)"):
        nn.MaxPool1d(2)(ember.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"avg_pool3d: expects a 4-D or 5-D input, got shape \(1, 4, 4\)"):
        nn.AvgPool3d(2)(ember.randn(1, 4, 4))
    with pytest.raises(ValueError, match=r"adaptive_max_pool3d: output_size \(2, 2\) must have 3 entries"):
        nn.AdaptiveMaxPool3d((2, 2))(ember.randn(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"adaptive_avg_pool3d: expects a 4-D or 5-D input, got shape \(4, 4\)"):
        nn.AdaptiveAvgPool3d(2)(ember.randn(4, 4))
    with pytest.raises(ValueError, match=r"max_unpool3d: indices of shape \(1, 1, 2, 2, 3\) must match input of "
                                         r"shape \(1, 1, 2, 2, 2\)"):
        F.max_unpool3d(ember.randn(1, 1, 2, 2, 2), ember.zeros(1, 1, 2, 2, 3, dtype=ember.int64), 2)
    with pytest.raises(ValueError, match=r'invalid output_size "\(7,\)" \(dim 0 must be between 2 and 6\)'):
        nn.MaxUnpool1d(2)(ember.randn(1, 1, 2), ember.zeros(1, 1, 2, dtype=ember.int64), output_size=(7,))
    with pytest.raises(ValueError, match=r"max_unpool1d: output_size should be of length 1, 2 or 3"):
        F.max_unpool1d(ember.randn(1, 1, 2), ember.zeros(1, 1, 2, dtype=ember.int64), 2, output_size=(1, 1, 1, 4))
    with pytest.raises(ValueError, match=r"lp_pool2d: kernel_size must be a single int or a tuple of 2 ints"):
        F.lp_pool2d(ember.randn(1, 1, 4, 4), 2, (2, 2, 2))
    with pytest.raises(ValueError, match=r"divisor_override must be non-zero"):
        F.avg_pool3d(ember.randn(1, 1, 4, 4, 4), 2, divisor_override=0)


def test_pool_repr_and_stored_arguments():
    """PyTorch's reprs and stored arguments (AvgPool1d / MaxUnpool store tuples, as there)."""
    assert repr(nn.MaxPool3d(2)) == "MaxPool3d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.AvgPool1d(3, 2)) == "AvgPool1d(kernel_size=(3,), stride=(2,), padding=(0,))"
    assert repr(nn.AvgPool3d(2)) == "AvgPool3d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.AdaptiveMaxPool1d(3)) == "AdaptiveMaxPool1d(output_size=3)"
    assert repr(nn.MaxUnpool3d(2)) == "MaxUnpool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0))"
    assert repr(nn.LPPool2d(2, 3)) == "LPPool2d(norm_type=2, kernel_size=3, stride=None, ceil_mode=False)"
    assert list(nn.MaxPool1d(2).state_dict()) == []


# ---------------------------------------------------------------- ONNX export of the new layers
EXPORT = {
    "MaxPool1d": (lambda: nn.MaxPool1d(3, 2, 1), (2, 3, 9)),
    "MaxPool3d_ceil": (lambda: nn.MaxPool3d(2, ceil_mode=True), (1, 2, 5, 4, 5)),
    "MaxPool3d_dilation": (lambda: nn.MaxPool3d(2, dilation=2), (1, 2, 5, 5, 5)),
    "MaxPool3d_indices": (lambda: nn.MaxPool3d(2, return_indices=True), (1, 2, 4, 4, 4)),
    "AvgPool1d": (lambda: nn.AvgPool1d(3, 2, 1, count_include_pad=False), (2, 3, 9)),
    "AvgPool3d": (lambda: nn.AvgPool3d(2), (1, 2, 4, 4, 4)),
    "AdaptiveAvgPool3d": (lambda: nn.AdaptiveAvgPool3d((2, 3, 1)), (1, 2, 5, 7, 4)),
    "AdaptiveMaxPool1d": (lambda: nn.AdaptiveMaxPool1d(3, return_indices=True), (2, 3, 8)),
    "LPPool2d": (lambda: nn.LPPool2d(2, 2), (1, 2, 4, 6)),
}


@pytest.mark.parametrize("name", sorted(EXPORT))
def test_new_pool_layers_export_to_onnx(tmp_path, name):
    """The new layers export (plain pools as one MaxPool / AveragePool) and onnxruntime reproduces them."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import ember.onnx as eonnx
    make, shape = EXPORT[name]
    model = make().eval()
    x = ember.tensor(np.random.default_rng(0).standard_normal(shape), dtype=ember.float32)
    with ember.no_grad():
        out = model(x)
    want = [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
    path = tmp_path / f"{name}.onnx"
    proto = eonnx.export(model, (x,), path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x.numpy())})
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    ops = [n.op_type for n in proto.graph.node]
    if name in ("MaxPool1d", "MaxPool3d_ceil"):
        assert ops == ["MaxPool"]
    if name.startswith("AvgPool"):
        assert "AveragePool" in ops and "Gather" not in ops
