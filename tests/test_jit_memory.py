"""The memory planner and the arena executor (BE-9, BE-10)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ember
import ember.nn.functional as F
from ember.jit import run_graph, _buffer
from ember.runtime.arena import ArenaExecutable
from ember.runtime.memory import check_no_overlap, nbytes, plan
from _bench_models import build


def _entry(j):
    (ent,) = j.cache.values()
    return ent


def _program(ops, n_inputs):
    """A straight-line program over 3-D float tensors: elementwise, broadcasts, reductions, views."""
    def f(*xs):
        vals = list(xs)
        for kind, i, j in ops:
            a, b = vals[i % len(vals)], vals[j % len(vals)]
            if kind == "add":
                r = a + b
            elif kind == "mul":
                r = a * b.sum(0, keepdim=True)
            elif kind == "tanh":
                r = ember.tanh(a)
            elif kind == "view":
                r = a.transpose(0, 2).reshape(a.shape[2], -1).T.reshape(a.shape) * 2
            elif kind == "slice":
                r = ember.concatenate([a[:1], b[1:]], 0) if a.shape[0] > 1 else a - b
            else:
                r = F.softmax(a, dim=-1) + b.mean(-1, keepdim=True)
            vals.append(r)
        return vals[n_inputs:][-3:]
    return f


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "mul", "tanh", "view", "slice", "softmax"]),
                          st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=14),
       st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)))
def test_be10_no_two_live_buffers_overlap_and_arena_matches(ops, shape):
    rng = np.random.default_rng(0)
    xs = [ember.tensor(rng.standard_normal(shape).astype(np.float32)) for _ in range(2)]
    f = _program(ops, 2)
    g = ember.jit.optimize(ember.make_ir(f)(*xs), 2)
    p = plan(g)
    check_no_overlap(p)
    assert p.peak <= 1.15 * p.lower_bound + 64 * len(p.arena_buffers())
    ins = [x.numpy() for x in xs]
    for a, b in zip(ArenaExecutable(g).run(ins), run_graph(g, ins)):
        np.testing.assert_array_equal(a, b)


def test_be10_ten_layer_mlp_peak_well_below_all_activations():
    ws = [ember.randn(64, 64) * 0.1 for _ in range(10)]

    def f(x):
        for w in ws:
            x = F.relu(x @ w)
        return x.sum()
    g = ember.jit.optimize(ember.make_ir(f)(ember.randn(32, 64)), 2)
    p = plan(g)
    check_no_overlap(p)
    total = sum(nbytes(e.out.aval) for e in g.eqns)
    assert p.peak <= total / 4, (p.peak, total)


@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt"])
def test_planned_peak_within_115_percent_of_lower_bound(model):
    P, opt, data, step = build(model, ember)
    j = ember.jit(step)
    j(*data[0])
    p = _entry(j).exe.plan
    check_no_overlap(p)
    assert p.peak <= 1.15 * p.lower_bound, str(p).splitlines()[0]


def test_be9_one_arena_reused_and_parameters_updated_in_place():
    P, opt, data, step = build("mlp", ember, "sgd")
    j = ember.jit(step, backend="numpy")
    ptrs = {k: p.data_ptr() for k, p in P.items()}
    j(*data[0])
    ent = _entry(j)
    assert isinstance(ent.exe, ArenaExecutable)
    arena = ent.exe.arena
    for i in range(1, 4):
        j(*data[i])
    assert _entry(j).exe.arena is arena and arena.ctypes.data == ent.exe.arena.ctypes.data
    assert {k: p.data_ptr() for k, p in P.items()} == ptrs
    # every parameter update is written by its producing step straight into the parameter
    assert not [k for k, _ in ent.exe.outs if k == "write"]
    assert len(ent.exe.plan.pinned) >= len(P)
    grads = [p.grad for p in P.values()]
    j(*data[0])
    assert all(p.grad is g for p, g in zip(P.values(), grads))  # persistent gradient buffers


def test_gpt_step_replay_allocates_little_and_names_what_it_allocates():
    import tracemalloc
    P, opt, data, step = build("gpt", ember)
    j = ember.jit(step, backend="numpy")  # the arena executor's own allocations
    x, y = data[0]
    for _ in range(2):
        j(x, y)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        j(x, y)
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 64 * 1024 and cur - base < 16 * 1024, (peak - base, cur - base)
    ent = _entry(j)
    allocs = ent.exe.allocations([_buffer(s, [x, y])._data for s in ent.traced.sources])
    # what still allocates is named by step and primitive, and is a kernel that allocates by design:
    # the primitive's own numpy kernel (no out= form here), a matmul over views taken per call, or a
    # ufunc broadcasting an operand (numpy's iterator buffer)
    assert allocs and max(n for _, _, n in allocs) < 64 * 1024
    exe = ent.exe
    for i, name, n in allocs:
        step, e = exe.steps[i], exe.step_eqns[i]
        assert e.prim.name == name
        if n >= 4096:
            broadcast = len({a.aval.shape for a in e.inputs}) > 1
            assert step.__name__ in ("generic", "dot") or broadcast, (name, n, step.__name__)


def test_creation_primitives_and_literals_run_in_the_arena():
    from ember.ops import lax
    f = ember.jit(lambda x: x * lax.full((3,), 2.0, ember.float32) + lax.iota((3,), 0, ember.float32), opt_level=0)
    np.testing.assert_array_equal(f(ember.ones(3)).numpy(), [2.0, 3.0, 4.0])
