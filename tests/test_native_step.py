"""Sink mode (BE-16): a jitted step as one generated C function; the multi-tensor optimizer kernel;
BE-1 kernels (reductions, GEMMs, fused elementwise) against eager and the numpy executor; the one
thread runtime (MD-16); an AddressSanitizer run."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.backend.cpu import compiler
from ember.ir.core import Var
from ember.backend.cpu import CpuTarget
from ember.runtime.fusion import Group, RowGroup
from ember.runtime.step import StepExecutable
from ember.runtime.units import MultiGroup, units_of
from _bench_models import build as build_model

pytestmark = pytest.mark.skipif(not compiler.available(), reason="needs a C compiler")


def _entry(j):
    (ent,) = j.cache.values()
    return ent


def _native(j) -> StepExecutable:
    exe = _entry(j).exe
    assert isinstance(exe, StepExecutable) and exe.target.name == "cpu" and not exe.host_units, j.explain
    return exe


def _run(model, opt, backend, steps=4):
    P, o, data, step = build_model(model, ember, opt)
    f = step if backend == "eager" else ember.jit(step, backend=backend)
    losses = [float(f(*data[i % len(data)]).item()) for i in range(steps)]
    return losses, {k: p.detach().numpy().copy() for k, p in P.items()}, f


@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd"])
def test_be16_mlp_step_native_matches_eager_and_numpy_executor(opt):
    le, pe, _ = _run("mlp", opt, "eager")
    ln, pn, _ = _run("mlp", opt, "numpy")
    lc, pc, f = _run("mlp", opt, "native")
    _native(f)
    np.testing.assert_allclose(lc, le, rtol=1e-5)
    np.testing.assert_allclose(lc, ln, rtol=1e-5)
    for k in pe:
        np.testing.assert_allclose(pc[k], pe[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_be16_gpt_step_native_matches_eager_and_numpy_executor():
    """The GPT step (embedding gather and its scatter_add, the q/k/v split's concatenate, layer norms,
    softmax, GELU, AdamW) runs as one native call."""
    le, pe, _ = _run("gpt", None, "eager")
    ln, pn, _ = _run("gpt", None, "numpy")
    lc, pc, f = _run("gpt", None, "native")
    exe = _native(f)
    # (the q/k/v split's gradient: one concatenate of the three pieces at O2, FE-17)
    assert {"gather", "scatter_add", "concatenate"} <= {e.prim.name for e in exe.graph.eqns}
    assert sum(isinstance(u, MultiGroup) for u in exe.units) == 1  # AdamW: one kernel, one dtype
    # every softmax and layer norm, forward and backward, runs inside a row group
    loose = [u.prim.name for u in exe.units if u.prim is not None and u.prim.name in ("reduce_max", "rsqrt")]
    assert not loose and not [u for u in exe.units if isinstance(u, Group) and
                              any(e.prim.name in ("exp", "rsqrt") for e in u.eqns)]
    n_layers = sum(1 for e in exe.graph.eqns if e.prim.name == "reduce_max")  # softmax forwards
    assert sum(isinstance(u, RowGroup) for u in exe.units) >= 3 * n_layers
    np.testing.assert_allclose(lc, le, rtol=1e-5)
    np.testing.assert_allclose(lc, ln, rtol=1e-5)
    for k in pe:
        np.testing.assert_allclose(pc[k], pe[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_be16_cnn_step_native_matches_eager_and_numpy_executor():
    """conv_general (forward, data and weight gradients), max-pool and its select_and_scatter_add,
    SGD; the weight gradient is a transposed view, so its update runs outside the multi-tensor
    kernel."""
    le, pe, _ = _run("cnn", None, "eager")
    ln, pn, _ = _run("cnn", None, "numpy")
    lc, pc, f = _run("cnn", None, "native")
    exe = _native(f)
    assert {"conv_general", "reduce_window_max", "select_and_scatter_add"} <= {e.prim.name for e in exe.graph.eqns}
    np.testing.assert_allclose(lc, le, rtol=1e-5)
    np.testing.assert_allclose(lc, ln, rtol=1e-5)
    for k in pe:
        np.testing.assert_allclose(pc[k], pe[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_be16_units_without_a_native_form_fall_back_and_say_why():
    """CMU-4: the units the CPU does not lower (a sort: argsort) run on the host between native
    kernels; the rest of the step stays native, and `explain` names what fell back and why."""
    f = ember.jit(lambda x: ember.sort(x * 2).values + 1, backend="native")
    x = ember.tensor(np.array([3.0, 1.0, 2.0, 0.0, 4.0], np.float32))
    np.testing.assert_array_equal(f(x).numpy(), np.sort(x.numpy() * 2) + 1)
    assert f.explain == ["traced: first call (on the host, with numpy: argsort (a sort or a binary search per "
                         "row, numpy's))"]
    exe = _entry(f).exe
    assert exe.host_units == ["host: argsort"]
    assert "host: argsort" in [k[0] for k in exe.kernels] and len(exe.kernels) >= 3


def test_be16_layers_share_their_kernels():
    """Units that differ only in where their values live (the layers of the GPT) are one C
    function, called with different addresses."""
    P, opt, data, step = build_model("gpt", ember)
    j = ember.jit(step, backend="native")
    j(*data[0])
    exe = _native(j)
    n_funcs = exe.source.count("static __attribute__((noinline)) void unit")
    assert n_funcs < 0.6 * sum(1 for k in exe.kernels if k[1])


def test_be16_structure_of_the_mlp_step():
    """AdamW is one kernel for all parameters (one dtype group); no transpose or reshape is
    copied before a GEMM; no parameter is copied back; one native call per step; the arena is
    exactly the planned peak."""
    P, opt, data, step = build_model("mlp", ember, "adamw")
    j = ember.jit(step, backend="native")
    j(*data[0])
    exe = _native(j)
    g = exe.graph
    multi = [u for u in exe.units if isinstance(u, MultiGroup)]
    assert len(multi) == 1 and len(multi[0].groups) == len(P)
    assert sum("tensors:" in label for label, *_ in exe.kernels) == 1
    assert not [label for label, *_ in exe.kernels if label == "copy"]
    producer = {e.out: e for e in g.eqns}
    for e in g.eqns:
        if e.prim.name == "dot_general":
            assert not [a for a in e.inputs if a in producer and producer[a].prim.name == "transpose"]
    assert set(g.aliases) <= set(exe.plan.pinned)  # every state update written at its destination
    ptrs = {k: p.data_ptr() for k, p in P.items()}
    calls = exe.calls
    for i in range(1, 4):
        j(*data[i])
    assert exe.calls == calls + 3 and j.trace_count == 1
    assert {k: p.data_ptr() for k, p in P.items()} == ptrs
    assert exe.arena.nbytes == exe.plan.peak


def test_be16_no_transpose_materialised_before_a_gemm_in_the_gpt_graph():
    P, opt, data, step = build_model("gpt", ember)
    g = ember.jit(step).lower(*data[0])
    producer = {e.out: e for e in g.eqns}
    dots = [e for e in g.eqns if e.prim.name == "dot_general"]
    assert dots
    for e in dots:
        assert not [a for a in e.inputs if a in producer and producer[a].prim.name == "transpose"]


# ---------------------------------------------------------------- kernels against eager
def _check(fn, *arrays, rtol=1e-6, atol=0.0, equal_nan=True):
    xs = [ember.tensor(a) for a in arrays]
    want = fn(*xs)
    j = ember.jit(fn, backend="native")
    got = j(*xs)
    _native(j)
    want = want if isinstance(want, (tuple, list)) else [want]
    got = got if isinstance(got, (tuple, list)) else [got]
    for w, g_ in zip(want, got):
        assert g_.shape == w.shape and g_.dtype == w.dtype
        np.testing.assert_allclose(g_.numpy(), w.numpy(), rtol=rtol, atol=atol, equal_nan=equal_nan)


def _special(a):
    a = a.copy()
    flat = a.reshape(-1)
    for i, v in enumerate([np.nan, np.inf, -np.inf, -0.0, 1e-40]):
        if flat.size > 3 * i + 1:
            flat[3 * i + 1] = v
    return a


SHAPES = [(0,), (1,), (7,), (5, 1), (3, 0, 4), (13, 31), (2, 3, 17)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["sum", "amax", "amin"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_be1_reductions_match_eager(shape, op, dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) * 10).astype(dtype)
    if dtype != np.int32:
        a = _special(a)
    for axis in range(len(shape)):
        if op != "sum" and shape[axis] == 0:
            continue
        _check(lambda x: getattr(x, op)(axis), a, rtol=2e-6)
        _check(lambda x: getattr(x.transpose(0, -1), op)(axis), a, rtol=2e-6)  # a strided view
    if op == "sum" or 0 not in shape:
        _check(lambda x: getattr(x, op)(), a, rtol=2e-6)


def test_be1_bool_sum_and_mean_of_large_rows():
    rng = np.random.default_rng(1)
    _check(lambda x: x.sum(1), rng.random((3, 1031)) < 0.5)
    _check(lambda x: (x.mean(1), x.mean(0)), rng.standard_normal((37, 1031)).astype(np.float32), rtol=1e-5,
           atol=1e-7)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 1, 13), (1, 31, 1), (67, 31, 7), (4, 0, 3), (0, 5, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_be1_gemm_every_transpose_is_a_flag(m, k, n, dtype):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    _check(lambda x, y: x @ y, a, b, **tol)
    _check(lambda x, y: (x.T.contiguous().T @ y.T.contiguous().T), a, b, **tol)
    _check(lambda x, y: y.T @ x.T, a, b, **tol)
    _check(lambda x, y: x[:, :k] @ (y * 2), a, b, **tol)


def test_be1_batched_and_sliced_gemm_operands():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 5, 3, 12)).astype(np.float32)
    _check(lambda t: t[..., :4].transpose(1, 2) @ t[..., 4:8].transpose(1, 2).transpose(-1, -2), q,
           rtol=1e-5, atol=1e-6)
    w = rng.standard_normal((12, 6)).astype(np.float32)
    _check(lambda t, w: t @ w, q, w, rtol=1e-5, atol=1e-6)


def test_be1_fused_elementwise_with_broadcasts_views_and_integers():
    rng = np.random.default_rng(4)
    x = _special(rng.standard_normal((13, 31)).astype(np.float32))
    r = rng.standard_normal((31,)).astype(np.float32)
    _check(lambda x, r: ember.tanh(x.T.T * r + 1) * ember.sigmoid(x), x, r, rtol=4e-7)
    _check(lambda x, r: ember.flip(x, (0, 1)) * 2 + ember.flip(r, 0), x, r)  # negative strides (rev)
    _check(lambda x, r: ember.exp(x[::2, 1:] - r[1:]) / (1 + x[::2, :-1].abs()), x, r, rtol=4e-7)
    i = rng.integers(-2**31, 2**31 - 1, (7, 5), dtype=np.int64).astype(np.int32)
    _check(lambda a: (a * 3 + 2147483647, a - a.T.T * 2), i)
    _check(lambda a: ember.where(a > 0, a, 0.5 * a), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_be1_gather_and_scatter_add_match_eager(dtype):
    from ember.ops import lax
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 7, 3)).astype(dtype) if dtype != np.int32 else \
        rng.integers(-9, 9, (5, 7, 3)).astype(dtype)
    for axis, idx in ((0, np.array([[4, -1, 0], [2, 2, 2]])), (1, np.array([6, 0, -7, 3, 3])),
                      (2, np.array(1)), (1, np.zeros((0,), np.int64)), (0, np.arange(5, dtype=np.int32))):
        upd_shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
        upd = rng.standard_normal(upd_shape).astype(dtype) if dtype != np.int32 else \
            rng.integers(-9, 9, upd_shape).astype(dtype)
        _check(lambda t, i: lax.gather(t, i, axis), x, idx)
        _check(lambda t, i: lax.gather((t.transpose(0, 2) * 2).transpose(0, 2)[::-1], i, axis), x, idx)  # strided
        _check(lambda t, i, u: lax.scatter_add(t * 2, i, u, axis), x, idx, upd, rtol=1e-6)
        _check(lambda t, i, u: lax.scatter_add(t, i, u, axis), x, idx, upd, rtol=1e-6)
    # large enough to run threaded: rows shared out (axis 1) and columns shared out (axis 0)
    big = rng.standard_normal((300, 64)).astype(np.float32)
    ids = rng.integers(-300, 300, (1000,))
    _check(lambda t, i, u: lax.scatter_add(t, i, u, 0), big, ids, rng.standard_normal((1000, 64)).astype(np.float32))
    _check(lambda t, i, u: lax.scatter_add(t, i, u, 1), big.T.copy(), ids,
           rng.standard_normal((64, 1000)).astype(np.float32))
    _check(lambda t, i: lax.gather(t, i, 0), big, ids)


def _data(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-3, 4, shape).astype(dtype)  # few values: ties
    return _special((rng.standard_normal(shape) * 3).astype(dtype))


SCAN_SHAPES = SHAPES + [(300, 257)]  # the last runs threaded, along either axis


@pytest.mark.parametrize("shape", SCAN_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.bool_])
def test_be1_cumsum_matches_numpy_bitwise(shape, dtype):
    """cumsum is numpy's sequential scan, so every partial sum is numpy's bit for bit; ints and
    bools accumulate in int64."""
    from ember.ops import lax
    a = _data(np.random.default_rng(11), shape, dtype)
    # one step holding every variant: one compile per case
    _check(lambda x: tuple(lax.cumsum(v, axis, rev) for v in (x, x.transpose(0, -1))  # and a strided view
                           for axis in range(len(shape)) for rev in (False, True)), a, rtol=0)
    _check(lambda x: lax.cumsum(x, 0, True), np.array(2, dtype), rtol=0)  # a scalar


@pytest.mark.parametrize("shape", SCAN_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_be1_argmax_argmin_first_extreme_and_first_nan(shape, dtype):
    rng = np.random.default_rng(12)
    a = _data(rng, shape, dtype)
    if dtype == np.float32 and a.size > 40:
        a.reshape(-1)[20:40] = 0.0
        a.reshape(-1)[25] = -0.0  # a signed-zero tie: the first one wins
    axes = [d for d in range(len(shape)) if shape[d]]
    _check(lambda x: tuple(f(v, axis) for v in (x, x.transpose(0, -1)) for axis in axes
                           for f in (ember.argmax, ember.argmin)) + ((x.argmax(), x.argmin()) if a.size else ()),
           a, rtol=0)


@pytest.mark.parametrize("shape", SCAN_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.bool_])
def test_be1_prod_all_any_match_eager(shape, dtype):
    """Products (ints in int64, wrapping like numpy), and all/any where NaN counts as true."""
    rng = np.random.default_rng(13)
    a = _data(rng, shape, dtype)
    if dtype in (np.float32, np.float64):
        a = np.where(np.isfinite(a), rng.uniform(0.9, 1.1, shape), a).astype(dtype)
    _check(lambda x: tuple(r for axis in range(len(shape)) for r in (
        x.prod(axis), x.all(axis), x.any(axis), x.transpose(0, -1).prod(axis), x.transpose(0, -1).any(axis))) + (
        x.prod(), x.all(), x.any(), (x == 1).all()), a, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_be1_take_and_scatter_add_along_axis_match_eager(dtype):
    """torch.gather / scatter_add: negative indices, indices broadcast over size-1 dims, strided
    operands, empty index sets, and sizes that run threaded both ways (owning whole outer
    positions, or ranges of the dims after the axis)."""
    from ember.ops import lax
    rng = np.random.default_rng(14)
    x = _data(rng, (6, 7, 5), dtype)
    cases = [(1, rng.integers(-7, 7, (6, 3, 5))), (0, rng.integers(-6, 6, (9, 7, 5))),
             (2, rng.integers(-5, 5, (6, 7, 1))), (1, rng.integers(-7, 7, (6, 4, 1))),
             (1, np.zeros((6, 0, 5), np.int64)), (2, rng.integers(0, 5, (6, 7, 8)).astype(np.int32))]
    for axis, idx in cases:
        _check(lambda t, i: lax.take_along_axis(t, i, axis), x, idx, rtol=0)
        _check(lambda t, i: lax.take_along_axis(t.transpose(0, 2).transpose(0, 2)[::-1], i, axis), x, idx, rtol=0)
        if idx.shape[1 - (axis == 1)] == x.shape[1 - (axis == 1)] and idx.shape[2] == x.shape[2] or axis == 2:
            upd = _data(rng, np.broadcast_shapes(idx.shape, tuple(1 if d == axis else n for d, n in enumerate(x.shape))),
                        dtype)
            _check(lambda t, i, u: lax.scatter_add_along_axis(t * 2, i, u, axis), x, idx, upd, rtol=1e-6)
    big = rng.standard_normal((300, 64)).astype(np.float32)
    for axis, idx in ((0, rng.integers(-300, 300, (700, 64))), (1, rng.integers(-64, 64, (300, 90)))):
        upd = rng.standard_normal(idx.shape).astype(np.float32)
        _check(lambda t, i: lax.take_along_axis(t, i, axis), big, idx, rtol=0)
        _check(lambda t, i, u: lax.scatter_add_along_axis(t, i, u, axis), big, idx, upd, rtol=1e-6)


def test_be1_gather_step_and_its_gradient_run_native():
    """torch.gather's backward is a scatter along the axis: the whole step is one native call and
    matches eager; an index from an input is checked before the step changes any state."""
    w = ember.tensor(np.random.default_rng(15).standard_normal((8, 5)).astype(np.float32), requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.5)

    def step(i):
        opt.zero_grad()
        loss = (w.gather(1, i) ** 2).sum()
        loss.backward()
        opt.step()
        return loss
    idx = np.array([[0, 4, 4], [1, 1, -1]] * 4)
    w0 = w.detach().numpy().copy()
    j = ember.jit(step, backend="native")
    j(ember.tensor(idx))
    _native(j)
    want = w0.copy()
    np.add.at(want, (np.arange(8)[:, None], idx), -0.5 * 2 * np.take_along_axis(w0, idx, 1))
    np.testing.assert_allclose(w.detach().numpy(), want, rtol=1e-6)
    before = w.detach().numpy().copy()
    with pytest.raises(IndexError, match="take_along_axis: index 5 is out of bounds for a dimension of size 5"):
        j(ember.tensor(np.array([[0, 5, 1]] * 8)))
    np.testing.assert_array_equal(w.detach().numpy(), before)


def test_be16_a_step_fed_uint8_images_runs_native():
    """Images arrive as uint8 and are scaled inside the step: 8-bit values have a native form."""
    rng = np.random.default_rng(16)
    w = ember.tensor((rng.standard_normal((784, 10)) * 0.05).astype(np.float32), requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.1)

    def step(x, y):
        opt.zero_grad()
        loss = ember.nn.functional.cross_entropy((x.float() / 255) @ w, y)
        loss.backward()
        opt.step()
        return loss
    x = rng.integers(0, 256, (32, 784)).astype(np.uint8)
    y = rng.integers(0, 10, 32)
    w0 = w.detach().numpy().copy()
    j = ember.jit(step, backend="native")
    losses = [float(j(ember.tensor(x), ember.tensor(y))) for _ in range(3)]
    _native(j)
    w_native = w.detach().numpy().copy()
    w.detach().numpy()[...] = w0
    want = [float(step(ember.tensor(x), ember.tensor(y))) for _ in range(3)]
    np.testing.assert_allclose(losses, want, rtol=1e-5)
    np.testing.assert_allclose(w_native, w.detach().numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [ember.float32, ember.int32, ember.bool])
def test_be1_iota_is_native_where_it_is_not_folded(dtype):
    from ember.ops import lax
    f = ember.jit(lambda x: lax.convert(lax.iota((5, 7), 1, dtype), ember.float32) + x, opt_level=0, backend="native")
    x = np.zeros((5, 7), np.float32)
    got = f(ember.tensor(x)).numpy()
    _native(f)
    assert "iota" in [e.prim.name for e in _entry(f).graph.eqns]
    np.testing.assert_array_equal(got, np.broadcast_to(np.arange(7).astype(dtype.np).astype(np.float32), (5, 7)))


def test_be1_index_out_of_range_raises_before_any_state_changes():
    """An index read from an input is checked before the step runs: the parameter is untouched."""
    w = ember.tensor(np.ones((4, 3), np.float32), requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.1)

    def step(i):
        opt.zero_grad()
        loss = ember.nn.functional.embedding(i, w).sum()
        loss.backward()
        opt.step()
        return loss
    j = ember.jit(step, backend="native")
    j(ember.tensor(np.array([0, 3])))
    _native(j)
    before = w.detach().numpy().copy()
    with pytest.raises(IndexError, match="index 4 is out of bounds for a dimension of size 4"):
        j(ember.tensor(np.array([1, 4])))
    np.testing.assert_array_equal(w.detach().numpy(), before)
    # an index computed inside the step is checked by the kernel and reported after the call
    f = ember.jit(lambda t, i: ember.ops.lax.gather(t, i * 2, 0), backend="native")
    f(w.detach(), ember.tensor(np.array([1])))
    with pytest.raises(IndexError, match="index 6 is out of bounds"):
        f(w.detach(), ember.tensor(np.array([3])))


@pytest.mark.parametrize("config", [[(1, 2, 0), (0, 0, 0)], [(-1, 2, 1), (2, -3, 0)], [(0, 0, 2), (-2, -2, 1)],
                                    [(3, -4, 0), (0, 1, 0)]])
def test_be1_pad_matches_eager(config):
    from ember.ops import lax
    rng = np.random.default_rng(9)
    x = _special(rng.standard_normal((4, 5)).astype(np.float32))
    _check(lambda t: lax.pad(t, -0.0, config), x)
    _check(lambda t: lax.pad(t.T.T[::-1], 2.5, config) * 3, x)
    _check(lambda t: lax.pad(t, 7, config), x.astype(np.int32))


CONVS = [dict(), dict(stride=2), dict(padding=1), dict(padding=(2, 0), stride=(1, 2), dilation=2),
         dict(groups=2), dict(groups=2, stride=2, padding=1)]


@pytest.mark.parametrize("kw", CONVS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_be1_conv_and_its_gradients_match_eager(kw, dtype):
    """Forward (per batch item GEMMs), input gradient (a convolution with the flipped kernel, a
    strided view packed per thread) and weight gradient (per channel GEMMs, per-thread sums)."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 6, 11, 9)).astype(dtype)
    w = rng.standard_normal((8, 6 // kw.get("groups", 1), 3, 2)).astype(dtype)

    def grads(x, w):
        y = F.conv2d(x, w, **kw)
        return (y,) + tuple(ember.autograd.grad((y * y).sum(), [x, w]))
    xs = [ember.tensor(a, requires_grad=True) for a in (x, w)]
    want = grads(*xs)
    j = ember.jit(grads, backend="native")
    got = j(*xs)
    _native(j)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(want, got):
        a, b = a.detach().numpy(), b.detach().numpy()
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * np.abs(a).max())
    _check(lambda x, w: F.conv1d(x[:, :, 0], w[:, :, 0], padding=1, groups=kw.get("groups", 1)), x, w,
           rtol=1e-5, atol=1e-5)  # 1-d


BATCH1 = [(F.conv2d, (6, 11, 9), (8, 6, 3, 3), dict(stride=2, padding=1)),
          (F.conv2d, (4, 13, 12), (5, 4, 3, 2), dict(padding=(2, 0), dilation=2)),
          (F.conv2d, (4, 10, 10), (4, 1, 3, 3), dict(padding=1, groups=4)),  # depthwise
          (F.conv2d, (5, 6, 6), (50, 5, 3, 3), dict()),  # more output channels than positions
          (F.conv2d, (6, 9, 7), (8, 3, 1, 1), dict(groups=2)),  # 1x1: the GEMM reads x itself
          (F.conv2d, (16, 3, 3), (40, 16, 1, 1), dict()),
          (F.conv1d, (5, 37), (7, 5, 3), dict(padding=1, stride=2)),
          (F.conv3d, (3, 7, 8, 9), (4, 3, 3, 2, 3), dict(padding=1, stride=(2, 1, 2), dilation=(1, 2, 1)))]


@pytest.mark.parametrize("fn,xs,wsh,kw", BATCH1)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_be1_conv_batch1_threads(fn, xs, wsh, kw, dtype):
    """A batch-1 convolution on 2 (and 3) threads: each item's output positions or channels are
    split among the threads; the same bits run to run, eager's values within rounding."""
    rng = np.random.default_rng(12)
    x, w = (ember.tensor(rng.standard_normal(s).astype(dtype)) for s in ((1,) + xs, wsh))
    want = fn(x, w, **kw).numpy()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for n in (2, 3):
        with ember.num_threads(n):
            j = ember.jit(lambda a, b: fn(a, b, **kw), backend="native")
            got, again = (j(x, w).numpy().copy() for _ in range(2))
            _native(j)
        assert np.array_equal(got, again)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_be1_conv_edge_sizes():
    rng = np.random.default_rng(11)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    _check(lambda x, w: F.conv2d(x, w), np.zeros((0, 3, 5, 5), np.float32), w)
    _check(lambda x, w: F.conv2d(x, w), rng.standard_normal((1, 3, 3, 3)).astype(np.float32), w, rtol=1e-5)
    _check(lambda x, w: F.conv2d(x, w, padding=2), _special(rng.standard_normal((2, 3, 1, 1)).astype(np.float32)),
           w, rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=1),
                                dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(1, 2), stride=(2, 1))])
def test_be1_pooling_and_its_gradient_match_eager(kw):
    """reduce_window max and sum; select_and_scatter_add with overlapping windows, padding,
    ties (first maximum wins) and NaN (the first NaN wins)."""
    rng = np.random.default_rng(12)
    x = _special(rng.standard_normal((3, 4, 11, 9)).astype(np.float32))
    x[0, 0, :4, :4] = 1.0  # ties
    x[1, 2, 3, 3] = x[1, 2, 3, 4] = np.nan

    def pool_grad(x):
        y = F.max_pool2d(x, **kw)
        return y, ember.autograd.grad((y * 3).sum(), [x])[0]
    xs = [ember.tensor(x, requires_grad=True)]
    want = pool_grad(*xs)
    j = ember.jit(pool_grad, backend="native")
    got = j(*xs)
    _native(j)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(b.detach().numpy(), a.detach().numpy())
    _check(lambda x: F.avg_pool2d(x, **kw), np.nan_to_num(x), rtol=1e-6)
    empty = [ember.tensor(np.zeros((0, 4, 11, 9), np.float32), requires_grad=True)]
    for a, b in zip(pool_grad(*empty), ember.jit(pool_grad, backend="native")(*empty)):
        assert a.shape == b.shape
    big = rng.standard_normal((64, 16, 24, 24)).astype(np.float32)  # threaded
    _check(lambda x: F.max_pool2d(x, 2), big)
    xs = [ember.tensor(big, requires_grad=True)]
    j = ember.jit(pool_grad, backend="native")
    for a, b in zip(pool_grad(*xs), j(*xs)):
        np.testing.assert_array_equal(b.detach().numpy(), a.detach().numpy())


@pytest.mark.parametrize("case", [
    ("2d", dict(kernel_size=3, stride=2, padding=1, dilation=2)), ("2d", dict(kernel_size=2, ceil_mode=True)),
    ("2d", dict(kernel_size=(3, 1), stride=(1, 3), padding=(1, 0))), ("1d", dict(kernel_size=4, stride=3, padding=2)),
    ("3d", dict(kernel_size=2, stride=(1, 2, 2), padding=(0, 1, 0))), ("1d", dict(kernel_size=1, stride=5))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int32])
def test_be1_max_pool_row_kernel_is_bitwise_the_numpy_executor(case, dtype):
    """The row-at-a-time max-pool kernel (windows.py: a vectorized pass over each output row per
    tap) gives the numpy executor's bits: signed zeros at ties, the NaN, integer extremes."""
    nd, kw = case
    rng = np.random.default_rng(21)
    shape = {"1d": (3, 5, 23), "2d": (2, 3, 13, 11), "3d": (2, 2, 5, 9, 8)}[nd]
    if np.dtype(dtype).kind == "f":
        x = rng.choice(np.array([-0.0, 0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 2.5], dtype), size=shape)
    else:
        info = np.iinfo(dtype)
        x = rng.choice(np.array([info.min, info.max, 0, 1, 7], dtype), size=shape)
    pool = {"1d": F.max_pool1d, "2d": F.max_pool2d, "3d": F.max_pool3d}[nd]
    xt = ember.tensor(x)
    want = pool(xt, **kw).numpy()
    j = ember.jit(lambda t: pool(t, **kw), backend="native")
    got = j(xt).numpy()
    _native(j)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


def test_be1_concatenate_matches_eager():
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)
    _check(lambda a, b: ember.cat([a * 2, b, a[:, :0], b.flip(1)], 1), a, b)
    _check(lambda a, b: ember.cat([a.T, b.T], 0) + 1, a, b)


def test_be1_groups_with_an_outside_path_through_other_groups_still_schedule():
    """A group must not absorb a value whose inputs come, through other groups, from itself."""
    def f(x, y):
        m = x.amax(1, keepdim=True)
        s = x - m
        e = ember.exp(s)
        z = e.sum(1)
        lse = ember.log(z)
        mask = (y >= 0)
        w = ember.where(mask, lse, 0.0)
        c = w.sum() / mask.float().sum()
        g = ember.where(mask, c / z, 0.0)
        return ember.where(y.reshape(-1, 1) == 0, -g.reshape(-1, 1), 0.0) + g.reshape(-1, 1) * e
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    y = rng.integers(-1, 3, (6,))
    g = ember.jit(f).lower(ember.tensor(x), ember.tensor(y))
    order = units_of(g, CpuTarget().fusible)
    done = set(g.invars) | set(g.constvars)
    for u in order:
        assert all(a in done for a in u.inputs if isinstance(a, Var))
        done.update(u.outputs if u.prim is None else [u.out])
    _check(f, x, y, rtol=1e-6)


@pytest.mark.parametrize("sizes", [[2, 7], [1031, 2, 5, 3]])
def test_be16_multi_tensor_update_matches_eager(sizes):
    rng = np.random.default_rng(6)
    init = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    res = []
    for backend in ("eager", "native"):
        ps = [ember.tensor(a.copy(), requires_grad=True) for a in init]
        opt = ember.optim.AdamW(ps, lr=1e-2, weight_decay=0.1)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = sum((p @ p for p in ps), ember.tensor(0.0))
            loss.backward()
            opt.step()
            return loss
        f = step if backend == "eager" else ember.jit(step, backend="native")
        for _ in range(3):
            f()
        if backend == "native":
            assert sum(isinstance(u, MultiGroup) for u in _native(f).units) == 1
        res.append([p.detach().numpy().copy() for p in ps])
    for a, b in zip(*res):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_be16_the_default_backend_is_one_setting():
    P, opt, data, step = build_model("mlp", ember, "sgd")
    prev = ember.jit_backend()
    try:
        ember.set_jit_backend("numpy")
        j = ember.jit(step)
        j(*data[0])
        assert not isinstance(_entry(j).exe, StepExecutable)
        ember.set_jit_backend("native")
        j = ember.jit(step)
        j(*data[0])
        _native(j)
    finally:
        ember.set_jit_backend(prev)
    with pytest.raises(ValueError, match="native"):
        ember.set_jit_backend("cuda")
    with pytest.raises(ValueError, match="backend"):
        ember.jit(step, backend="fast")


# ---------------------------------------------------------------- the thread runtime
def test_md16_one_knob_and_bitwise_reproducible_at_a_fixed_count():
    from ember._core import blas
    prev = ember.get_num_threads()
    rng = np.random.default_rng(7)
    x = rng.standard_normal((96, 300)).astype(np.float32)
    w = rng.standard_normal((300, 200)).astype(np.float32)

    def f(x, w):
        h = ember.tanh(x @ w)
        return h.sum(0), h.sum(1), (h * 2 + 1)
    try:
        with ember.num_threads(2):
            assert ember.get_num_threads() == 2
            if blas.get_num_threads() is not None:
                assert blas.get_num_threads() == 2
            j = ember.jit(f, backend="native")
            a = [t.numpy().copy() for t in j(ember.tensor(x), ember.tensor(w))]
            b = [t.numpy().copy() for t in j(ember.tensor(x), ember.tensor(w))]
            _native(j)
        assert ember.get_num_threads() == prev
        for u, v in zip(a, b):
            assert np.array_equal(u, v)
        with ember.num_threads(1):
            c = [t.numpy() for t in j(ember.tensor(x), ember.tensor(w))]
        for u, v in zip(a, c):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)
        ref = f(ember.tensor(x), ember.tensor(w))
        for u, v in zip(a, ref):
            np.testing.assert_allclose(u, v.numpy(), rtol=1e-4, atol=1e-4)
    finally:
        ember.set_num_threads(prev)
    with pytest.raises(ValueError, match="positive"):
        ember.set_num_threads(0)


# ---------------------------------------------------------------- inspection
def test_be16_inspect_shows_units_source_and_kernel_table():
    P, opt, data, step = build_model("mlp", ember, "adam")
    j = ember.jit(step, backend="native")
    j(*data[0])
    before = {k: p.detach().numpy().copy() for k, p in P.items()}
    grads = {k: p.grad.numpy().copy() for k, p in P.items()}
    text = str(ember.inspect(j, *data[1]))
    for part in ("--- native step:", "GEMMs by ", "tensors: ", "--- generated C", "ember_step", "GFLOP/s", "GB/s"):
        assert part in text
    for k, p in P.items():  # the kernel table ran on copies: the user's state did not move
        assert np.array_equal(p.detach().numpy(), before[k])
        assert np.array_equal(p.grad.numpy(), grads[k])


# ---------------------------------------------------------------- AddressSanitizer
def _libasan():
    try:
        r = subprocess.run([compiler.compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True,
                           timeout=60)
    except OSError:
        return None
    path = r.stdout.strip()
    return path if r.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.skipif(_libasan() is None, reason="no libasan for the C compiler")
def test_be1_native_step_under_address_sanitizer(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, ember
        from _bench_models import build
        for model, opt in (("mlp", "adamw"), ("mlp", "sgd"), ("cnn", None), ("gpt", None)):
            P, o, data, step = build(model, ember, opt)
            j = ember.jit(step, backend="native")
            for i in range(3):
                j(*data[i])
            assert "numpy executor" not in " ".join(j.explain), j.explain
        x = ember.tensor(np.random.default_rng(0).standard_normal((37, 1031)).astype(np.float32))
        f = ember.jit(lambda x: (x.sum(0), x.amax(1), (x.T @ x).sum(), ember.tanh(x[::2] * 2)), backend="native")
        for t, r in zip(f(x), (x.sum(0), x.amax(1), (x.T @ x).sum(), ember.tanh(x[::2] * 2))):
            np.testing.assert_allclose(t.numpy(), r.numpy(), rtol=1e-4, atol=1e-3)
        from ember.ops import lax
        i = ember.tensor(np.random.default_rng(1).integers(-1031, 1031, (37, 300)))
        g = lambda x, i: (lax.cumsum(x, 0, True), lax.cumsum(x, 1, False), x.argmax(0), x.argmin(1),
                          x.gather(1, i), lax.scatter_add_along_axis(x, i, x[:, :300], 1), (x > 0).all(1), x.prod(0))
        jg = ember.jit(g, backend="native")
        res = jg(x, i)
        assert "numpy executor" not in " ".join(jg.explain), jg.explain
        for t, r in zip(res, g(x, i)):
            np.testing.assert_allclose(t.numpy(), r.numpy(), rtol=1e-4, atol=1e-3)
        print("ok")
    """)
    env = dict(os.environ, LD_PRELOAD=_libasan(), ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               EMBER_CFLAGS="-fsanitize=address -fno-omit-frame-pointer", EMBER_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-3000:] + r.stderr[-6000:]
    assert "AddressSanitizer" not in r.stderr


def test_be1_scratch_allocation_failure_raises_memory_error():
    """A convolution whose im2col scratch cannot be allocated skips its work and the call raises
    MemoryError (the address space is limited in a subprocess after the step is compiled)."""
    script = textwrap.dedent("""
        import os, resource, ember, ember.nn.functional as F
        from ember.backend.cpu import CpuTarget
        from ember.runtime.step import StepExecutable
        x, w = ember.zeros(1, 1, 3000, 3000), ember.zeros(1, 1, 3, 3)
        exe = StepExecutable(ember.jit(lambda x, w: F.conv2d(x, w)).lower(x, w), CpuTarget())
        used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (used + 200 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            exe.run([x.numpy(), w.numpy()])
        except MemoryError as err:
            print("MemoryError:", err)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "MemoryError: the native step could not allocate" in r.stdout, r.stdout + r.stderr[-3000:]


def test_be16_results_are_freed_without_the_garbage_collector_and_recycled():
    """A jitted call's results hold no reference cycle, so a dropped result's buffer is reused by
    the next call instead of a fresh array paying a page fault per page."""
    import gc
    x = ember.tensor(np.ones((512, 1024), np.float32))
    j = ember.jit(lambda x: x * 2 + 1, backend="native")
    gc.disable()
    try:
        first = j(x)._data
        ptr = first.ctypes.data
        del first
        for _ in range(3):
            y = j(x)
            assert y._data.ctypes.data == ptr
            del y
    finally:
        gc.enable()
    kept = j(x)
    other = j(x)  # the first is still referenced: a second buffer, never the same memory
    assert not np.shares_memory(kept.numpy(), other.numpy())
    np.testing.assert_array_equal(kept.numpy(), 3.0)


# ---------------------------------------------------------------- random bits (dropout)
@pytest.mark.parametrize("shape", [(0,), (1,), (3,), (5, 7), (3, 4099)])
def test_be1_random_bits_match_the_numpy_philox(shape):
    """Philox4x32-10 in C gives numpy's words, including a clipped last block, a counter whose low
    word carries into the high one, and the threaded draw of a large shape."""
    from ember.ops import lax
    for key in ([1, 2, 3, 4], [0xDEADBEEF, 0x12345678, 0xFFFFFFFE, 7], [0, 0, 0, 0xFFFFFFFF]):
        k = np.array(key, np.uint32)
        _check(lambda k: lax.random_bits(k, shape), k)
        _check(lambda k: lax.random_bits(k[::-1] + 1, shape), k)  # a computed, reversed key


def test_be1_uint32_and_shift_arithmetic_match_numpy():
    """uint32 wraps; shifts by the width or more (or by a negative amount) give numpy's 0 or -1;
    float -> uint32 wraps negative values as numpy does."""
    from ember.ops import lax
    u = np.array([0, 1, 7, 0x80000000, 0xFFFFFFFF, 12345], np.uint32)
    s = np.array([0, 1, 31, 32, 33, 5], np.uint32)
    _check(lambda u, s: (lax.shift_right(u, s), lax.shift_left(u, s), u * u + u, lax.shift_right(u, 8)), u, s)
    i = np.array([-7, 1, -2**31, 2**31 - 1, -1, 9], np.int32)
    si = np.array([0, 1, 31, 32, 40, -1], np.int32)
    _check(lambda i, s: (lax.shift_right(i, s), lax.shift_left(i, s)), i, si)
    f = np.array([0.0, 1.5, -1.0, -3.7, np.nan, 4e9], np.float32)
    from ember._core import dtypes
    _check(lambda f: lax.convert(f, dtypes.uint32), f)


def test_be16_dropout_step_runs_native_and_draws_eagers_numbers():
    """The flagship's Fashion-MNIST CNN (dropout, batch norm) runs as one native call; the
    generator's state advances inside the step, so native, numpy-executor and eager runs draw the
    same masks step after step."""
    from ember.recipes.fashion_mnist import FashionCNN
    rng = np.random.default_rng(14)
    x = ember.tensor(rng.standard_normal((6, 1, 28, 28)).astype(np.float32))
    y = ember.tensor(rng.integers(0, 10, 6))
    results = {}
    for backend in ("eager", "numpy", "native"):
        ember.manual_seed(3)
        model = FashionCNN(4, 8, hidden=16, dropout=0.5)
        # SGD: Adam would turn the rounding noise of the conv biases' gradients (zero in exact
        # arithmetic before a batch norm) into full-size steps
        opt = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def step(x, y):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
        f = step if backend == "eager" else ember.jit(step, backend=backend)
        losses = [float(f(x, y).item()) for _ in range(3)]
        results[backend] = losses, [p.detach().numpy().copy() for p in model.parameters()], f
    _native(results["native"][2])
    for other in ("eager", "numpy"):
        np.testing.assert_allclose(results["native"][0], results[other][0], rtol=1e-5)
        for a, b in zip(results["native"][1], results[other][1]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- row groups (BE-1)
def _kernels(f, *arrays):
    j = ember.jit(f, backend="native")
    j(*[ember.tensor(a) for a in arrays])
    return [k for k in _native(j).kernels if k[1]]


def _softmax_grad(x):
    x = x.detach().requires_grad_()
    y = F.softmax(x, -1)
    (y * y).sum().backward()
    return y.detach(), x.grad


def _layer_norm_grad(x, g, b):
    x, g, b = (t.detach().requires_grad_() for t in (x, g, b))
    y = F.layer_norm(x, g.shape, g, b)
    (y * y.tanh()).sum().backward()
    return y.detach(), x.grad, g.grad, b.grad


@pytest.mark.parametrize("shape", [(2, 3), (64, 256), (3, 5, 67), (130, 129), (1, 2), (4, 1, 33)])
def test_be1_softmax_and_layer_norm_are_one_row_kernel_each(shape):
    """softmax and layer_norm, forward and backward, are one kernel each: the row reductions run
    with their elementwise producers and consumers inside one loop over rows; the gradients of the
    layer norm's gain and bias (sums over rows) are per-thread partial rows combined in the same
    kernel. Results match eager, with special values, and a strided (transposed) input."""
    rng = np.random.default_rng(20)
    x = rng.standard_normal(shape).astype(np.float32) * 3
    g = rng.standard_normal(shape[-1:]).astype(np.float32)
    b = rng.standard_normal(shape[-1:]).astype(np.float32)
    sm = lambda x: F.softmax(x, -1)
    ln = lambda x, g, b: F.layer_norm(x, g.shape, g, b)
    for f, args in ((sm, (x,)), (_softmax_grad, (x,)), (ln, (x, g, b)), (_layer_norm_grad, (x, g, b))):
        assert len(_kernels(f, *args)) == 1, [k[0] for k in _kernels(f, *args)]
        _check(f, *args, rtol=2e-5, atol=2e-6)
    _check(lambda x: F.softmax(x.transpose(0, -1), -1), x, rtol=2e-5, atol=1e-7)  # rows strided
    _check(sm, _special(x), rtol=2e-5, atol=1e-7)
    _check(ln, _special(x), g, b, rtol=2e-5, atol=1e-6)


def test_be1_row_groups_over_several_row_dims_float64_and_int_rows():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((6, 4, 5, 7))
    g = rng.standard_normal((5, 7))
    _check(_layer_norm_grad, x, g, g * 0.5, rtol=1e-11, atol=1e-12)  # normalised over the last two dims
    _check(lambda x: F.log_softmax(x, -1) * 2, x, rtol=1e-12, atol=1e-13)
    i = rng.integers(-50, 50, (9, 40)).astype(np.int32)
    _check(lambda i: i - i.amax(1, keepdim=True) + i.sum(1, keepdim=True) * 3, i)
    _check(lambda i: (i * 2).amin(1) + (i - 1).sum(1), i)


@pytest.mark.parametrize("shape", [(3, 5, 4), (40, 64, 48)])
def test_be16_gemm_operand_blas_cannot_read_is_packed_not_sent_to_the_host(shape):
    """A time-major view of a batch-first sequence (rows T, B do not merge into one stride) and a
    weight gradient over it are packed into scratch and multiplied natively, small and threaded."""
    B, T, Fi = shape
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, Fi)).astype(np.float32)
    w = rng.standard_normal((7, Fi)).astype(np.float32)
    g = rng.standard_normal((T, B, 7)).astype(np.float32)

    def f(x, w, g):
        xt = x.transpose(0, 1)                       # (T, B, F), not contiguous
        return F.linear(xt, w), ember.matmul(g.reshape(T * B, 7).T, xt.reshape(T * B, Fi))
    j = ember.jit(f, backend="native")
    with ember.num_threads(2):
        y, dw = j(ember.tensor(x), ember.tensor(w), ember.tensor(g))
    xt = x.transpose(1, 0, 2)
    np.testing.assert_allclose(y.numpy(), xt @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw.numpy(), g.reshape(T * B, 7).T @ xt.reshape(T * B, Fi), rtol=1e-4, atol=1e-4)
    exe = _native(j)
    assert sum(label == "dot_general" for label, *_ in exe.kernels) >= 1


def test_inputs_seen_again_reuse_their_address_and_new_or_changed_ones_are_read():
    """The step remembers each input's address by a weak reference to its array (a weight is the
    same array at every call): the same array updated in place, another array, a strided view and
    a freed one all give the right results."""
    f = ember.jit(lambda x, w: x * w + 1.0, backend="native")
    x, w = np.arange(6, dtype=np.float32), np.full(6, 2.0, np.float32)
    xt, wt = ember.tensor(x), ember.tensor(w)
    np.testing.assert_array_equal(f(xt, wt).numpy(), x * 2 + 1)
    wt.numpy()[...] = 3.0  # the same array, new values
    np.testing.assert_array_equal(f(xt, wt).numpy(), x * 3 + 1)
    for _ in range(3):  # new arrays each time (the old ones freed)
        w2 = ember.tensor(np.full(6, 5.0, np.float32))
        np.testing.assert_array_equal(f(xt, w2).numpy(), x * 5 + 1)
        del w2
    big = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(f(ember.tensor(big)[::2], wt).numpy(), big[::2] * 3 + 1)
    _native(f)


def test_a_step_with_no_kernel_worth_sharing_runs_on_one_thread():
    """A launch whose kernels are all below the sizes that split work runs one thread: a team would
    only meet at barriers (for milliseconds when another process holds a core)."""
    for n, want in ((8, 1), (1 << 16, 2)):
        j = ember.jit(lambda x: ember.exp(x) + 1.0, backend="native")
        x = ember.tensor(np.ones(n, np.float32))
        with ember.num_threads(2):
            j(x)
            prog = _entry(j).exe.program
            fn, seen = prog.fn, []
            prog.fn = lambda *a: (seen.append(a[2]), fn(*a))  # the launch's thread count
            try:
                np.testing.assert_allclose(j(x).numpy(), np.exp(1.0) + 1.0, rtol=1e-6)
            finally:
                prog.fn = fn
        assert seen == [want]
