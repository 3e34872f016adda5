"""The device contract (book ch. 5.4–6, CMU-4): lowerings registered per primitive and target,
the `sim` target running the CPU's unit table on numpy, and per-unit fallback to the host."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.backend import lowering
from ember.backend.cpu import CpuTarget, compiler
from ember.ops import REGISTRY, P
from ember.ops.core import Aval
from ember.runtime.memory import VIEW_PRIMS
from ember.runtime.step import StepExecutable
from _bench_models import build as build_model

needs_cc = pytest.mark.skipif(not compiler.available(), reason="needs a C compiler")


def _entry(j):
    (ent,) = j.cache.values()
    return ent


def test_cmu4_every_primitive_has_a_cpu_lowering_or_says_why_not():
    """Every registered primitive is lowered for the CPU (an elementwise scalar expression, a
    registration, or a view), or is declared unlowered with a reason."""
    declared = lowering.unlowered("cpu")
    missing = []
    for name, prim in sorted(REGISTRY.items()):
        if prim in VIEW_PRIMS or lowering.get_lowering(prim, "cpu") is not None:
            continue
        if prim.kind == "elementwise" and prim.lowering is not None:
            continue
        if prim in declared:
            assert declared[prim], f"{name} is declared unlowered without a reason"
            continue
        missing.append(name)
    assert not missing, f"primitives with no CPU lowering (register one, or mark_unlowered with why): {missing}"


def test_cmu4_lowerings_are_keyed_by_the_primitive_object():
    with pytest.raises(TypeError, match="primitive object"):
        lowering.register_lowering("add", "cpu", lambda r, e: None)
    assert lowering.get_lowering(P.dot_general, "cpu") is not None
    assert lowering.get_lowering(P.dot_general, "no-such-target") is None


def _run(model, opt, backend, steps=3):
    params, _, data, step = build_model(model, ember, opt)
    f = ember.jit(step, backend=backend)
    losses = [float(f(*data[i % len(data)]).item()) for i in range(steps)]
    return losses, {k: p.detach().numpy().copy() for k, p in params.items()}, f


@pytest.mark.parametrize("model,opt", [("mlp", "adamw"), ("cnn", "sgd"), ("gpt", None)])
def test_cmu4_sim_runs_the_native_unit_table_on_numpy(model, opt):
    """`sim` lowers nothing: every unit of the CPU's table runs on the host, through the same plan
    and layout, and gives the numpy executor's results."""
    ls, ps, f = _run(model, opt, "sim")
    ln, pn, _ = _run(model, opt, "numpy")
    exe = _entry(f).exe
    assert isinstance(exe, StepExecutable) and exe.target.name == "sim"
    assert exe.kernels and all(label.startswith("host: ") for label, *_ in exe.kernels)
    assert exe.program.rows == []
    np.testing.assert_allclose(ls, ln, rtol=1e-5)
    for k in pn:
        np.testing.assert_allclose(ps[k], pn[k], rtol=1e-4, atol=1e-6, err_msg=k)
    if compiler.available():  # the same unit table as the CPU's
        cpu = StepExecutable(exe.graph, CpuTarget(), exe.plan.pinned.keys() - exe.graph.aliases.keys())
        assert [type(u).__name__ for u in cpu.units] == [type(u).__name__ for u in exe.units]


def test_cmu4_sim_calls_from_threads_each_get_a_context():
    w = ember.randn(16, 16)
    f = ember.jit(lambda x: F.relu(x @ w).sum(1), backend="sim")
    xs = [ember.randn(8, 16) for _ in range(6)]
    want = [np.maximum(x.numpy() @ w.numpy(), 0).sum(1) for x in xs]
    f(xs[0])
    got = [None] * len(xs)

    def call(i):
        for _ in range(20):
            got[i] = f(xs[i]).numpy()
    ts = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=1e-5)


@pytest.fixture
def user_prim():
    """A user primitive with a numpy kernel and no lowering for any target."""
    def abstract(x):
        return Aval(x.shape, x.dtype)
    prim = ember.register_primitive(ember.Primitive("user_cube_no_lowering", impl=lambda x: x * x * x,
                                                    abstract=abstract, vjp=lambda g, out, x: (g * 3 * x * x,)))
    yield prim
    REGISTRY.pop(prim.name, None)
    P.__dict__.pop(prim.name, None)


@needs_cc
def test_cmu4_a_primitive_without_a_lowering_runs_on_the_host_and_the_rest_stays_native(user_prim):
    """CMU-4: only the unit the CPU cannot lower falls back (with a warning in `explain`); the
    GEMM and the fused loops around it stay C kernels, in two launches around the host unit."""
    w = ember.randn(8, 8)

    def f(x):
        h = F.relu(x @ w)
        return ember.tanh(user_prim.bind(h) + 1) @ w
    j = ember.jit(f, backend="native")
    x = ember.randn(4, 8)
    h = np.maximum(x.numpy() @ w.numpy(), 0)
    want = np.tanh(h ** 3 + 1) @ w.numpy()
    np.testing.assert_allclose(j(x).numpy(), want, rtol=1e-5, atol=1e-6)
    assert j.explain == ["traced: first call (on the host, with numpy: user_cube_no_lowering (no CPU lowering))"]
    exe = _entry(j).exe
    assert exe.host_units == ["host: user_cube_no_lowering"]
    assert [item[0] for item in exe.schedule] == ["launch", "host", "launch"]
    labels = [k[0] for k in exe.kernels]
    assert labels.count("dot_general") == 2 and "host: user_cube_no_lowering" in labels
    table = ember.inspect(j, x).native[2]  # the per-kernel profile names the host unit too
    assert "host: user_cube_no_lowering" in table and table.count("dot_general") == 2


@needs_cc
def test_cmu4_a_layout_blas_cannot_read_falls_back_for_that_unit_only():
    """A GEMM on int64 (no CBLAS kind) is a host unit; the elementwise work around it is native."""
    def f(a, b):
        return (a * 2) @ (b + 1)
    j = ember.jit(f, backend="native")
    a = ember.tensor(np.arange(12).reshape(3, 4))
    b = ember.tensor(np.arange(8).reshape(4, 2))
    np.testing.assert_array_equal(j(a, b).numpy(), (a.numpy() * 2) @ (b.numpy() + 1))
    exe = _entry(j).exe
    assert j.explain == ["traced: first call (on the host, with numpy: dot_general (dot_general on int64))"]
    assert exe.host_units == ["host: dot_general"]
    assert sum(1 for k in exe.kernels if k[1]) == 2


# ---------------------------------------------------------------- the worked example of docs/architecture.md
def test_adding_a_primitive_end_to_end_logaddexp():
    """docs/architecture.md "Adding a primitive": `logaddexp` is one registry entry (shape rule,
    numpy kernel, VJP, scalar expression) and one public function; eager, autograd, gradcheck
    and the fused native kernel all follow from it."""
    from ember.testing import gradcheck
    x = np.array([0, 1, -np.inf, np.inf, np.nan, 1000, -1000, 3, 1e-30, -0.0], np.float32)
    y = np.array([0, 2, -np.inf, np.inf, 1, 1000, 5, -np.inf, -1e-30, 0.0], np.float32)
    with np.errstate(invalid="ignore"):
        want = np.logaddexp(x, y)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(ember.logaddexp(ember.tensor(x), ember.tensor(y)).numpy(), want)
    assert ember.logaddexp(ember.tensor(2), 3.0).dtype is ember.float32  # ints promote to float
    assert ember.tensor(np.zeros((0, 3))).logaddexp(ember.tensor(np.zeros(3))).shape == (0, 3)
    a = ember.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    b = ember.tensor(np.random.default_rng(1).standard_normal((4,)), requires_grad=True)
    assert gradcheck(ember.logaddexp, (a, b))
    if not compiler.available():
        return
    j = ember.jit(lambda p, q: ember.logaddexp(p * 1.0, q) * 2.0, backend="native")
    with np.errstate(invalid="ignore"):
        got = j(ember.tensor(x), ember.tensor(y)).numpy()
    exe = _entry(j).exe
    assert not exe.host_units and len(exe.kernels) == 1 and "logaddexp" in exe.kernels[0][0]
    np.testing.assert_allclose(got, 2 * want, rtol=4e-7, equal_nan=True)


@needs_cc
def test_a_lowering_registered_for_a_new_primitive_runs_native():
    """The docs' `my_op` lowering: a non-elementwise primitive with a CPU lowering is a native
    kernel (and without one it would be a host unit)."""
    from ember.backend.cpu import loopnest as L
    from ember.backend.lowering import register_lowering
    prim = ember.register_primitive(ember.Primitive("user_my_op", impl=lambda x: 2 * x, kind="custom",
                                                    abstract=lambda x: Aval(x.shape, x.dtype)))
    try:
        @register_lowering(prim, "cpu")
        def my_op(r, e):
            x, out = r.refs[e.inputs[0]], r.refs[e.out]
            nest = r.loops(list(out.shape), [out], [x], lambda ld: ([], [f"2 * {ld[0]}"]))
            r.emit(("my_op", L.render([L.Stmt("{")] + nest + [L.Stmt("}")]), 0, 0))
        j = ember.jit(lambda x: prim.bind(x + 1), backend="native")
        x = ember.randn(3, 5)
        np.testing.assert_array_equal(j(x).numpy(), 2 * (x.numpy() + 1))
        exe = _entry(j).exe
        assert not exe.host_units and [k[0] for k in exe.kernels][-1] == "my_op"
    finally:
        lowering.unregister_lowering(prim, "cpu")
        REGISTRY.pop(prim.name, None)
        P.__dict__.pop(prim.name, None)


def test_cmu4_sim_on_random_programs_of_every_primitive():
    """The runtime (units, plan, layout, host execution) on the 100 random programs the passes
    are tested on: `sim` gives eager's results and leaves the arguments as eager does."""
    import _random_graphs as R
    names = R.all_step_names()
    for k in range(100):
        forced = [names[k % len(names)]] + (["inplace"] if k % 3 == 0 else [])
        prog = R.make_program(1000 + k, prims=forced)
        with np.errstate(all="ignore"):
            ts = prog.tensors()
            want = [o.detach().numpy().copy() for o in prog.fn(*ts)]
            after = [t.numpy().copy() for t in ts]
            ts = prog.tensors()
            got = ember.jit(prog.fn, backend="sim")(*ts)
        for a, b in zip(list(got) + ts, want + after):
            a = np.asarray(a.numpy())
            assert a.dtype == b.dtype and a.shape == b.shape, (k, prog.prims)
            if a.dtype.kind in "fV":  # V: bfloat16; half precision is eager's own kernel, exact
                tol = 1e-6 if a.dtype.itemsize >= 4 else 0
                np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol,
                                           equal_nan=True, err_msg=str(prog.prims))
            else:
                np.testing.assert_array_equal(a, b, err_msg=str(prog.prims))
