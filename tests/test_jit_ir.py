"""ember.ir and ember.jit: printer/parser/verifier, passes, tracing and the jit executor."""
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ember
import ember.nn.functional as F
from ember.ir import (ConcretizationError, Eqn, Graph, ParseError, Var, VerifyError, parse,
                      print_graph, verify)
from ember.jit import optimize, run_graph
from ember.jit.passes import PassManager, const_fold, cse, dce
from ember.ops import lax
from ember.ops.core import P, Aval

HERE = os.path.abspath(__file__)


def _fe2(x, y):
    return (x + ember.sin(y) * 3.0).sum()


def _mlp_step(x, yt, params):
    w1, b1, w2 = params
    h = ember.tanh(x @ w1 + b1)
    loss = F.mse_loss(h @ w2, yt)
    loss.backward()
    return loss, [p.grad for p in params]


def _mlp_args(seed=0, n=16):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    x = ember.tensor(rng.standard_normal((n, 5)).astype(f32))
    yt = ember.tensor(rng.standard_normal((n, 3)).astype(f32))
    ps = [ember.tensor(rng.standard_normal((5, 8)).astype(f32) * 0.5, requires_grad=True),
          ember.tensor(rng.standard_normal(8).astype(f32) * 0.1, requires_grad=True),
          ember.tensor(rng.standard_normal((8, 3)).astype(f32) * 0.5, requires_grad=True)]
    return x, yt, ps


def _roundtrip(g):
    text = print_graph(g)
    g2 = parse(text)
    assert print_graph(g2) == text
    verify(g2)
    return g2


# ---------------------------------------------------------------- FE-2: tracing and printing
def test_fe2_print():
    g = ember.make_ir(_fe2)(ember.zeros(8), ember.ones(8))
    assert str(g) == (
        "{ lambda ; a:f32[8] b:f32[8]. let\n"
        "    c:f32[8] = sin b\n"
        "    d:f32[8] = mul c 3.0\n"
        "    e:f32[8] = add a d\n"
        "    f:f32[] = reduce_sum[axes=(0,)] e\n"
        "  in (f) }")
    verify(g)
    outs = [e.out for e in g.eqns]
    assert len(set(outs)) == len(outs)  # no variable assigned twice
    assert all(e.loc.startswith(HERE + ":") for e in g.eqns)  # source locations name this file
    assert f"# {HERE}:" in g.pretty()


def test_roundtrip_several_graphs():
    _roundtrip(ember.make_ir(_fe2)(ember.zeros(8), ember.ones(8)))
    x, yt, ps = _mlp_args()
    _roundtrip(ember.make_ir(_mlp_step)(x, yt, ps))
    _roundtrip(ember.make_ir(_mlp_step, opt_level=2)(x, yt, ps))  # strong literals from folding

    def shapes(a, b):
        c = a.reshape(2, 6).transpose(0, 1).to(ember.float64)
        d = ember.where(b > 0, b, -b * 2) ** 2
        return c.sum(dim=1, keepdim=True), d.max(), (b == 1).to(ember.int32) - 7, lax.add(True, 2)
    g = ember.make_ir(shapes)(ember.ones(12), ember.arange(5.0))
    _roundtrip(g)
    text = print_graph(g)
    assert "float64" in text and "convert" in text


def test_parse_errors():
    with pytest.raises(ParseError, match="defined twice"):
        parse("{ lambda ; a:f32[3]. let\n    a:f32[3] = sin a\n  in (a) }")
    with pytest.raises(ParseError, match="unknown primitive"):
        parse("{ lambda ; a:f32[3]. let\n    b:f32[3] = frobnicate a\n  in (b) }")


# ---------------------------------------------------------------- verifier
def test_verifier_catches_double_definition_and_wrong_type():
    g = ember.make_ir(_fe2)(ember.zeros(8), ember.ones(8))
    verify(g)
    e0, e1 = g.eqns[0], g.eqns[1]
    bad = Graph(g.constvars, g.consts, g.invars,
                [e0, Eqn(e1.prim, e1.inputs, e0.out, e1.params)] + g.eqns[2:], g.outvars)
    with pytest.raises(VerifyError, match="defined more than once"):
        verify(bad)
    wrong = Var(Aval((8,), ember.float64))
    bad2 = Graph(g.constvars, g.consts, g.invars,
                 [e0, Eqn(e1.prim, e1.inputs, wrong, e1.params)], [wrong])
    with pytest.raises(VerifyError, match="f64\\[8\\] but mul gives f32\\[8\\]"):
        verify(bad2)
    use_before = Graph([], [], g.invars, [g.eqns[1], g.eqns[0]], [g.eqns[1].out])
    with pytest.raises(VerifyError, match="used before it is defined"):
        verify(use_before)
    with pytest.raises(VerifyError, match="after broken"):
        PassManager([_named(lambda gr: bad2, "broken")], verify=True).run(g)


def _named(fn, name):
    fn.__name__ = name
    return fn


# ---------------------------------------------------------------- passes
def test_fe16_dce():
    def f(x):
        dead = ember.exp(x) * 2.0  # noqa: F841
        return ember.sin(x)
    g = ember.make_ir(f)(ember.ones(4))
    assert [e.prim.name for e in g.eqns] == ["exp", "mul", "sin"]
    g2 = dce(g)
    assert [e.prim.name for e in g2.eqns] == ["sin"]
    assert len(g.eqns) == 3  # passes do not mutate their input
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(run_graph(g, [x])[0], run_graph(g2, [x])[0])


def test_fe17_const_fold():
    def f(x):
        return x * ember.mul(ember.add(2.0, 3.0), 4.0)  # (lax folds Python scalars itself)
    g = ember.make_ir(f)(ember.ones(4))
    assert [e.prim.name for e in g.eqns] == ["add", "mul", "mul"]
    g2 = const_fold(g)
    verify(g2)
    assert [e.prim.name for e in g2.eqns] == ["mul"]
    assert "20.0:f32[]" in str(g2)
    _roundtrip(g2)
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(run_graph(g, [x])[0], run_graph(g2, [x])[0])


def test_fe18_cse():
    def f(a, b):
        return a * 5 + a * 5 * b
    g = ember.make_ir(f)(ember.ones(4), ember.ones(4))
    assert sum(e.prim.name == "mul" for e in g.eqns) == 3
    g2 = optimize(g, 2, verify=True)
    muls = [e for e in g2.eqns if e.prim.name == "mul"]
    assert len(muls) == 2
    assert sum(1 for e in muls if e.inputs[0] is g.invars[0]) == 1  # one mul(a, 5)
    a = np.arange(4, dtype=np.float32)
    b = np.ones(4, np.float32) * 3
    np.testing.assert_array_equal(run_graph(g, [a, b])[0], run_graph(g2, [a, b])[0])


_UN = ["sin", "cos", "tanh", "neg", "exp"]
_BIN = ["add", "sub", "mul", "max"]
_op = st.one_of(
    st.tuples(st.just("u"), st.sampled_from(_UN), st.integers(0, 50)),
    st.tuples(st.just("b"), st.sampled_from(_BIN), st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.just("l"), st.sampled_from(_BIN), st.integers(0, 50), st.sampled_from([0.5, 2.0, 3])),
    st.tuples(st.just("ll"), st.sampled_from(_BIN), st.sampled_from([1.5, 2.0, -1.0]),
              st.sampled_from([0.5, 2, True])),
    st.tuples(st.just("dup"), st.integers(0, 50)),
)


def _program(ops, nout):
    def f(x, y):
        vals = [x, y]
        done = []
        for op in ops:
            kind = op[0]
            if kind == "u":
                done.append(op)
                vals.append(getattr(lax, op[1])(vals[op[2] % len(vals)]))
            elif kind == "b":
                done.append(op)
                vals.append(getattr(lax, op[1])(vals[op[2] % len(vals)], vals[op[3] % len(vals)]))
            elif kind == "l":
                done.append(op)
                vals.append(getattr(lax, op[1])(vals[op[2] % len(vals)], op[3]))
            elif kind == "ll":
                c = getattr(lax, op[1])(op[2], op[3])
                vals.append(lax.add(vals[-1], c))
            elif done:  # repeat an earlier op: a common subexpression
                prev = done[op[1] % len(done)]
                vals.append(getattr(lax, prev[1])(*[vals[i % len(vals)] if isinstance(i, int) and
                                                     prev[0] != "l" or j == 0 else i
                                                     for j, i in enumerate(prev[2:])]))
        return tuple(vals[-nout:]) + (vals[len(vals) // 2],)
    return f


@given(st.lists(_op, min_size=1, max_size=14), st.integers(1, 3))
def test_passes_preserve_outputs_on_random_graphs(ops, nout):
    f = _program(ops, nout)
    x = ember.tensor(np.linspace(-1, 1, 6, dtype=np.float32))
    y = ember.tensor(np.linspace(0.5, 2, 6, dtype=np.float32))
    g = ember.make_ir(f)(x, y)
    verify(g)
    _roundtrip(g)
    inputs = [x.numpy(), y.numpy()]
    ref = run_graph(g, inputs)
    eager = f(x, y)
    for level in (0, 1, 2):
        g2 = optimize(g, level, verify=True)
        assert len(g2.eqns) <= len(g.eqns)
        _roundtrip(g2)
        for a, b, e in zip(ref, run_graph(g2, inputs), eager):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(b, e.numpy(), rtol=1e-6, atol=1e-6)
            assert b.dtype == e.numpy().dtype


# ---------------------------------------------------------------- jit
def test_jit_matches_eager_small_functions():
    rng = np.random.default_rng(1)
    x = ember.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    y = ember.tensor(rng.standard_normal(4).astype(np.float32))
    i = ember.tensor(np.arange(12).reshape(3, 4))
    fns = [
        _fe2,
        lambda a, b: (F.softmax(a * 2, dim=-1) * b).mean(0),
        lambda a, b: (a.T @ a + 1, a.reshape(12)[::2], ember.where(a > b, a, b)),
        lambda a, b: {"m": a.max(dim=1).values, "n": F.relu(a - b).sum() / 3},
        lambda a, b: F.layer_norm(a, (4,)) + F.gelu(b),
        lambda a, b: ember.logsumexp(a, dim=-1) * 2,  # a detached view of a traced value
    ]
    for fn in fns:
        je, ee = ember.jit(fn)(x, y), fn(x, y)
        for a, b in zip(ember.jit.flatten(je)[0], ember.jit.flatten(ee)[0]):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-6)
    for half in (ember.float16, ember.bfloat16):  # half precision computes in f32, rounds per op
        h = x.to(half)
        fn = fns[1]
        np.testing.assert_array_equal(ember.jit(fn)(h, y).to(ember.float32).numpy(),
                                      fn(h, y).to(ember.float32).numpy())
    tg = ember.tensor(np.array([0, 3, 1]))
    ce = ember.jit(lambda a, t: F.cross_entropy(a, t))
    np.testing.assert_allclose(ce(x, tg).numpy(), F.cross_entropy(x, tg).numpy(), rtol=1e-6)
    ji = ember.jit(lambda a, k: (a * 2 + k) // 3)(i, 5)
    np.testing.assert_array_equal(ji.numpy(), ((i * 2 + 5) // 3).numpy())
    assert ji.dtype == ember.int64


def test_jit_mlp_loss_and_grads_match_eager():
    x, yt, ps = _mlp_args()
    step = ember.jit(_mlp_step)
    loss, grads = step(x, yt, ps)
    jit_grads = [p.grad for p in ps]  # backward() inside the jitted step sets .grad, as eagerly
    for p in ps:
        p.grad = None
    eloss, egrads = _mlp_step(x, yt, ps)
    for g, e in zip(jit_grads, egrads):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-6, atol=1e-6)
    assert abs(loss.item() - eloss.item()) <= 1e-6
    for g, e in zip(grads, egrads):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-6, atol=1e-6)
    # a second signature-equal call reuses the graph, with new data
    x2, yt2, ps2 = _mlp_args(seed=3)
    loss2, grads2 = step(x2, yt2, ps2)
    for p in ps2:
        p.grad = None
    eloss2, egrads2 = _mlp_step(x2, yt2, ps2)
    assert step.trace_count == 1
    assert abs(loss2.item() - eloss2.item()) <= 1e-6
    for g, e in zip(grads2, egrads2):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-6, atol=1e-6)


def test_jit_cache_and_retrace_reasons():
    f = ember.jit(lambda x, s: x * s)
    f(ember.ones(3), 2.0)
    f(ember.ones(3) * 5, 2.0)
    assert f.trace_count == 1 and len(f.cache) == 1
    assert ember.jit.explain(f) == ["traced: first call"]
    f(ember.ones(4), 2.0)
    assert f.trace_count == 2
    assert f.explain[-1] == "retraced: arg 0 shape (4,) != (3,)"
    f(ember.ones(4, dtype=ember.float64), 2.0)
    assert f.explain[-1] == "retraced: arg 0 dtype float64 != float32"
    f(ember.ones(4, dtype=ember.float64), 3.0)
    assert f.explain[-1] == "retraced: static arg 1 3.0 != 2.0"
    f(ember.ones(3), 2.0)  # back to the first signature: a cache hit
    assert f.trace_count == 4


def _line_of(text):
    with open(HERE) as fh:
        for n, line in enumerate(fh, 1):
            if line.rstrip().endswith(text):
                return n
    raise AssertionError(text)


def test_value_dependent_control_flow_names_user_line():
    def branchy(x):
        if x.sum() > 0:  # BRANCH-LINE
            return x
        return -x
    with pytest.raises(ConcretizationError, match=f"{HERE}:{_line_of('# BRANCH-LINE')}"):
        ember.jit(branchy)(ember.ones(3))
    with pytest.raises(ConcretizationError, match=f":{_line_of('# ITEM-LINE')}\\)"):
        ember.make_ir(lambda x: x.sum().item())(ember.ones(3))  # ITEM-LINE
    with pytest.raises(ConcretizationError, match=f":{_line_of('# FLOAT-LINE')}\\)"):
        ember.make_ir(lambda x: float(x.sum()))(ember.ones(3))  # FLOAT-LINE
    with pytest.raises(ConcretizationError, match=f":{_line_of('# NUMPY-LINE')}\\)"):
        ember.make_ir(lambda x: x.numpy())(ember.ones(3))  # NUMPY-LINE


def test_inplace_and_captured_tensors_under_jit():
    x = ember.ones(3)
    f = ember.jit(lambda x: x.add_(1) * 2)
    np.testing.assert_array_equal(f(x).numpy(), [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(x.numpy(), [2.0, 2.0, 2.0])  # written back, as eagerly
    w = ember.ones(3, requires_grad=True)  # captured: a state input whose gradient is traced

    def g(x):
        loss = (x * w).sum()
        loss.backward()
        return loss
    jg = ember.jit(g)
    assert jg(ember.ones(3) * 2).item() == 6.0
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0, 2.0])
    jg(ember.ones(3))  # the graph read w.grad before writing it (accumulation): guarded
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0, 3.0])
    assert jg.explain[-1] == "retraced: .grad of a captured float32[3] tensor is set, it was None when traced"
    jg(ember.ones(3))  # .grad is read wherever it is at the call: no retrace
    np.testing.assert_array_equal(w.grad.numpy(), [4.0, 4.0, 4.0])
    assert jg.trace_count == 2


def test_be20_data_dependent_shape_names_op_and_line():
    with pytest.raises(ConcretizationError, match=f"nonzero: .*data-dependent shape.*{HERE}:{_line_of('# NONZERO-LINE')}"):
        ember.jit(lambda x: ember.nonzero(x))(ember.ones(3))  # NONZERO-LINE
    with pytest.raises(ConcretizationError, match=f"boolean mask.*{HERE}:{_line_of('# MASK-LINE')}"):
        ember.jit(lambda x: x[x > 0])(ember.ones(3))  # MASK-LINE


def test_ember_jit_is_callable_and_decorates():
    @ember.jit
    def f(x):
        return x + 1
    assert callable(ember.jit) and f(ember.zeros(2)).tolist() == [1.0, 1.0]

    @ember.jit(opt_level=0)
    def g(x):
        return x * 2
    assert g(ember.ones(2)).tolist() == [2.0, 2.0]
