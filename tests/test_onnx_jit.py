"""Imported ONNX models under ember.jit: shape arithmetic folded at trace time (ember/onnx/host.py).

The fixture tests/fixtures/tiny_bert.onnx is a 2-layer BertModel exported by torch.onnx from
transformers (tools/make_onnx_bert_fixture.py): its reshape targets, position ids and attention
mask are computed from `Shape` at run time, which raised ConcretizationError under ember.jit
before the importer folded them. Each case is checked against onnxruntime on the same inputs.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx as eo  # noqa: E402
from ember.backend.cpu import compiler  # noqa: E402
from ember.onnx import host  # noqa: E402
from ember.onnx.ops import static  # noqa: E402

HERE = os.path.dirname(__file__)
TINY_BERT = os.path.join(HERE, "fixtures", "tiny_bert.onnx")
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _bert_inputs(batch, seq, seed=0):
    rng = np.random.default_rng(seed + 17 * batch + seq)
    ids = rng.integers(0, 100, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - 3:] = 0  # a padded row: the extended attention mask matters
    return {"input_ids": ids, "attention_mask": mask}


def _run(fn, feeds):
    with ember.no_grad():
        out = fn(*[ember.from_numpy(v) for v in feeds.values()])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _deps_on_inputs(g) -> list:
    """Equations of graph `g` none of whose operands derives from a graph input (args or captured
    state): arithmetic on constants alone, which shape folding leaves none of."""
    live, bad = set(g.invars), []
    for e in g.eqns:
        if any(a in live for a in e.inputs):
            live.add(e.out)
        else:
            bad.append(e)
    return bad


@pytest.fixture(scope="module")
def bert():
    return eo.load(TINY_BERT), _session(TINY_BERT)


# ------------------------------------------------------------------ the tiny BERT
def test_tiny_bert_eager_and_jit_match_onnxruntime(bert):
    m, sess = bert
    j = ember.jit(m)
    shapes = [(1, 7), (3, 7), (1, 12), (3, 12)]
    for b, s in shapes:
        feeds = _bert_inputs(b, s)
        ref = sess.run(None, feeds)
        for name, fn in (("eager", m), ("jit", j)):
            got = _run(fn, feeds)
            assert [g.shape for g in got] == [(b, s, 32), (b, 32)], name
            for g, r in zip(got, ref):
                np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5, err_msg=f"{name} at {(b, s)}")
    # one trace per input shape (the folded sizes are the traced ones), reused afterwards
    assert j.trace_count == len(shapes), j.explain
    assert any("retraced: arg 0 shape (3, 7) != (1, 7)" in e for e in j.explain), j.explain
    _run(j, _bert_inputs(3, 7, seed=5))
    assert j.trace_count == len(shapes)


@pytest.mark.skipif(not compiler.available(), reason="needs a C compiler")
def test_tiny_bert_jit_runs_native(bert):
    m, _ = bert
    j = ember.jit(m, backend="native")
    feeds = _bert_inputs(2, 9)
    _run(j, feeds)
    (ent,) = j.cache.values()
    exe = ent.exe
    assert hasattr(exe, "units"), ent.fallback  # the native step, not the numpy executor
    assert not exe.host_units, exe.host_units  # every unit lowered to C (at most a small fraction would do)
    assert len(exe.units) >= 20
    assert j.explain == ["traced: first call"]  # no "(on the host ...)" fallback note


def test_tiny_bert_shape_arithmetic_is_folded(bert):
    """The traced IR holds no shape arithmetic: every equation reads a value derived from the model's
    inputs or weights, none computes from constants alone (Shape/Gather/Concat/Range/Where on sizes
    ran on the host), and no integer tensor is built from sizes (no iota, no int concatenate)."""
    m, _ = bert
    feeds = _bert_inputs(2, 9)
    with ember.no_grad():
        g = ember.make_ir(m)(*[ember.from_numpy(v) for v in feeds.values()])
    assert not _deps_on_inputs(g), [f"{e.prim.name} {e.loc}" for e in _deps_on_inputs(g)]
    prims = [e.prim.name for e in g.eqns]
    assert "iota" not in prims
    ints = [e for e in g.eqns if e.out.aval.dtype.kind in "iu"]
    assert not [e for e in ints if e.prim.name in ("concatenate", "gather", "mul", "div", "floordiv")], \
        [e.prim.name for e in ints]
    n_nodes = len(onnx.load(TINY_BERT).graph.node)
    assert len(g.eqns) < 0.7 * n_nodes, (len(g.eqns), n_nodes)  # 271 nodes, ~170 equations


# ------------------------------------------------------------------ a small graph of the same patterns
def _shape_graph():
    """Shape->Gather->Unsqueeze->Concat->Reshape, integer Div, Slice to a computed end, Range over a
    size, the exporter's ConstantOfShape/Mul/Equal/Where -1 fix-up before Expand; Shape as an output."""
    i64 = lambda name, vals: helper.make_tensor(name, TensorProto.INT64, [len(vals)] if isinstance(vals, list)  # noqa: E731
                                                else [], vals if isinstance(vals, list) else [vals])
    c = lambda out, vals: helper.make_node("Constant", [], [out], value=i64(out, vals))  # noqa: E731
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["s"]), c("zero", 0), c("one", 1), c("two", 2), c("ax0", [0]),
        n("Gather", ["s", "zero"], ["b"], axis=0), n("Gather", ["s", "one"], ["t"], axis=0),
        n("Unsqueeze", ["b", "ax0"], ["bu"]), n("Unsqueeze", ["t", "ax0"], ["tu"]), c("tail", [2, 3]),
        n("Concat", ["bu", "tu", "tail"], ["shape"], axis=0), n("Reshape", ["x", "shape"], ["y"]),
        n("Div", ["t", "two"], ["half"]), n("Unsqueeze", ["half", "ax0"], ["hu"]), c("ax1", [1]),
        n("Slice", ["x", "ax0", "hu", "ax1"], ["z"]),
        n("Cast", ["t"], ["tf"], to=TensorProto.FLOAT), helper.make_node(
            "Constant", [], ["f0"], value=helper.make_tensor("f0", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], ["f1"], value=helper.make_tensor("f1", TensorProto.FLOAT, [], [1.0])),
        n("Range", ["f0", "tf", "f1"], ["pos"]), c("ax01", [0, 2]), n("Unsqueeze", ["pos", "ax01"], ["pos3"]),
        n("Add", ["x", "pos3"], ["xp"]),
        c("want", [-1, 1, 6]), n("Shape", ["want"], ["ws"]), n("ConstantOfShape", ["ws"], ["ones"],
                                                            value=i64("v", [1])),
        c("neg", -1), n("Mul", ["ones", "neg"], ["negs"]), n("Equal", ["want", "negs"], ["is_neg"]),
        n("Where", ["is_neg", "ones", "want"], ["target"]), n("Expand", ["xp", "target"], ["e"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 6])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y", "z", "e")]
    outs.append(helper.make_tensor_value_info("s", TensorProto.INT64, [3]))
    g = helper.make_graph(nodes, "shapes", [x], outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_shape_patterns_fold_and_match_onnxruntime():
    model = _shape_graph()
    m, sess, j = eo.load(model), _session(model), ember.jit(eo.load(model))
    for b, t in ((2, 5), (3, 8)):
        feeds = {"x": np.random.default_rng(b).standard_normal((b, t, 6)).astype(np.float32)}
        ref = sess.run(None, feeds)
        for name, fn in (("eager", m), ("jit", j)):
            got = _run(fn, feeds)
            for k, (a, r) in enumerate(zip(got, ref)):
                assert a.dtype == r.dtype and a.shape == r.shape, (name, k, a.shape, r.shape)
                np.testing.assert_allclose(a, r, rtol=1e-6, atol=1e-6, err_msg=f"{name} output {k}")
    with ember.no_grad():
        g = ember.make_ir(m)(ember.randn(2, 5, 6))
    assert sorted({e.prim.name for e in g.eqns}) == ["add", "reshape", "slice"], [e.prim.name for e in g.eqns]
    assert not _deps_on_inputs(g)


def test_host_values_are_not_tensors_until_a_tensor_op_reads_them():
    """Shape gives a Host value; a tensor made from one still tells `static` its value under a trace."""
    h = host.Host(np.array([2, 3], np.int64))
    assert host.value(h) is h.value and h.shape == (2,)

    def f(x):
        t = host.tensor(h)
        assert host.value(t) is h.value and host.tensor(h) is t
        return x + static(t).sum()
    out = ember.jit(f)(ember.zeros(2))
    np.testing.assert_array_equal(out.numpy(), [5.0, 5.0])


def test_a_large_folded_value_stays_a_traced_op(monkeypatch):
    """Under a trace a fold whose result is over FOLD_MAX elements runs as tensor ops instead
    (a `full`), rather than baking a large constant into the graph; eager folds regardless."""
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s"]), n("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor(
        "v", TensorProto.FLOAT, [1], [2.0])), n("Mul", ["x", "c"], ["y"])]
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])])
    m = eo.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    monkeypatch.setattr(host, "FOLD_MAX", 8)
    x = ember.randn(4, 4)
    with ember.no_grad():
        ir = ember.make_ir(m)(x)
        np.testing.assert_allclose(ember.jit(m)(x).numpy(), 2 * x.numpy())
        np.testing.assert_allclose(m(x).numpy(), 2 * x.numpy())
    assert [e.prim.name for e in ir.eqns] == ["full", "mul"]


# ------------------------------------------------------------------ the onnx package's light models
@pytest.mark.parametrize("name", ["shufflenet"])
def test_light_model_under_jit_matches_eager_and_onnxruntime(name):
    """A light model (channel shuffles: Reshape/Transpose with shape inputs) jits, runs native,
    and gives eager's and onnxruntime's logits (read before the Softmax, where they differ)."""
    model = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
    soft = model.graph.node[-1]
    assert soft.op_type == "Softmax"
    model.graph.output[0].name = soft.input[0]
    del model.graph.node[-1]
    m = eo.load(model)
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    feeds = {inp.name: np.random.default_rng(0).random((1, 3, 224, 224), np.float32)}
    ref = _session(model).run(None, feeds)[0]
    j = ember.jit(m)
    got_jit, got_eager = _run(j, feeds)[0], _run(m, feeds)[0]
    scale = np.abs(ref).max()
    np.testing.assert_allclose(got_jit, ref, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(got_eager, ref, rtol=1e-4, atol=1e-5 * scale)
    assert j.explain == ["traced: first call"], j.explain
