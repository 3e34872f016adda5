"""ONNX handlers added for conformance (Attention, Resize, TopK, Einsum, LSTM) vs onnxruntime; autograd through them."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx as eo  # noqa: E402

F32, F64, I64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64


def _model(nodes, inputs, outputs, inits=(), opset=19):
    """A one-graph model from (name, elem_type, shape) inputs and outputs."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                          [helper.make_tensor_value_info(*o) for o in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def _vs_ort(model, feeds, rtol=1e-5, atol=1e-5):
    """Run `model` in ember and onnxruntime on `feeds` and compare every output."""
    ort = pytest.importorskip("onnxruntime")
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - an onnxruntime build without this op/opset
        pytest.skip(f"onnxruntime cannot run the model: {e}")
    ref = sess.run(None, feeds)
    got = eo.load(model)(feeds)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.detach().numpy().dtype == r.dtype
        np.testing.assert_allclose(g.detach().numpy(), r, rtol=rtol, atol=atol)


def test_attention_causal_gqa_matches_onnxruntime():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 4, 5, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 7, 8)).astype(np.float32)
    v = rng.standard_normal((2, 2, 7, 6)).astype(np.float32)
    mask = rng.standard_normal((5, 7)).astype(np.float32)
    node = helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"], is_causal=1)
    m = _model([node], [("q", F32, q.shape), ("k", F32, k.shape), ("v", F32, v.shape), ("mask", F32, mask.shape)],
               [("y", F32, None)], opset=23)
    _vs_ort(m, {"q": q, "k": k, "v": v, "mask": mask})


def test_attention_3d_heads_past_and_present():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 3, 16)).astype(np.float32)  # 4 query heads of 4
    k = rng.standard_normal((1, 3, 8)).astype(np.float32)   # 2 kv heads of 4
    v = rng.standard_normal((1, 3, 8)).astype(np.float32)
    pk = rng.standard_normal((1, 2, 2, 4)).astype(np.float32)
    pv = rng.standard_normal((1, 2, 2, 4)).astype(np.float32)
    node = helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv"], ["y", "ck", "cv"],
                            q_num_heads=4, kv_num_heads=2, is_causal=1)
    m = _model([node], [("q", F32, q.shape), ("k", F32, k.shape), ("v", F32, v.shape), ("pk", F32, pk.shape),
                        ("pv", F32, pv.shape)], [("y", F32, None), ("ck", F32, None), ("cv", F32, None)], opset=23)
    _vs_ort(m, {"q": q, "k": k, "v": v, "pk": pk, "pv": pv})


def test_resize_linear_align_corners_matches_onnxruntime():
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 5)).astype(np.float32)
    sizes = numpy_helper.from_array(np.array([1, 2, 7, 3], np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode="align_corners")
    m = _model([node], [("x", F32, x.shape)], [("y", F32, None)], [sizes])
    _vs_ort(m, {"x": x})


def test_topk_ties_and_smallest_match_onnxruntime():
    x = np.array([[3, 1, 3, 2, 1, 3], [0, 0, 5, 5, 1, 0]], np.float32)
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    for largest in (1, 0):
        node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=largest)
        m = _model([node], [("x", F32, x.shape)], [("v", F32, None), ("i", I64, None)], [k])
        _vs_ort(m, {"x": x})


def test_einsum_matches_onnxruntime():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    b = rng.standard_normal((2, 4, 5)).astype(np.float32)
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")
    m = _model([node], [("a", F32, a.shape), ("b", F32, b.shape)], [("y", F32, None)])
    _vs_ort(m, {"a": a, "b": b})


def _lstm_model(dtype=F32, npd=np.float32, T=4, B=3, I=5, H=6, seed=4):
    """A bidirectional LSTM with peepholes, initial states and sequence_lens; weights as initializers."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((2, 4 * H, I)) * 0.4).astype(npd), "W")
    r = numpy_helper.from_array((rng.standard_normal((2, 4 * H, H)) * 0.4).astype(npd), "R")
    b = numpy_helper.from_array((rng.standard_normal((2, 8 * H)) * 0.1).astype(npd), "B")
    p = numpy_helper.from_array((rng.standard_normal((2, 3 * H)) * 0.1).astype(npd), "P")
    lens = numpy_helper.from_array(np.array([T, T - 1, 2][:B], np.int32), "lens")
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "lens", "h0", "c0", "P"], ["y", "yh", "yc"],
                            hidden_size=H, direction="bidirectional")
    return _model([node], [("x", dtype, (T, B, I)), ("h0", dtype, (2, B, H)), ("c0", dtype, (2, B, H))],
                  [("y", dtype, None), ("yh", dtype, None), ("yc", dtype, None)], [w, r, b, p, lens], opset=14)


def test_lstm_bidirectional_matches_onnxruntime():
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((4, 3, 5)).astype(np.float32),
             "h0": rng.standard_normal((2, 3, 6)).astype(np.float32) * 0.5,
             "c0": rng.standard_normal((2, 3, 6)).astype(np.float32) * 0.5}
    _vs_ort(_lstm_model(), feeds)


def test_gradients_flow_through_imported_lstm_and_attention():
    """backward() through an imported LSTM -> Attention graph fills every weight's .grad; one checked numerically."""
    H = 4
    lstm = _lstm_model(F64, np.float64, T=3, B=2, I=3, H=H)
    g = lstm.graph
    g.node.append(helper.make_node("Transpose", ["y"], ["yt"], perm=[2, 1, 0, 3]))  # (B, 2, T, H): 2 heads
    g.node.append(helper.make_node("Attention", ["yt", "yt", "yt"], ["a"], is_causal=1))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("a", F64, None))
    lstm.opset_import[0].version = 23
    m = eo.load(lstm)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 3))
    h0, c0 = rng.standard_normal((2, 2, H)) * 0.5, rng.standard_normal((2, 2, H)) * 0.5

    def loss():
        out = m(ember.from_numpy(x), ember.from_numpy(h0), ember.from_numpy(c0))
        return ember.sum(out * out)
    loss().backward()
    params = dict(m.named_parameters())
    assert set(params) == {"W", "R", "B", "P"}
    for name, prm in params.items():
        assert prm.grad is not None and np.isfinite(prm.grad.numpy()).all() and np.abs(prm.grad.numpy()).sum() > 0, name
    w = params["R"]
    base = w.detach().numpy().copy()
    idx, eps = (1, 3, 2), 1e-6
    vals = []
    for s in (1, -1):
        arr = base.copy()
        arr[idx] += s * eps
        with ember.no_grad():
            w.copy_(ember.from_numpy(arr))
            vals.append(float(loss().item()))
    with ember.no_grad():
        w.copy_(ember.from_numpy(base))
    np.testing.assert_allclose(w.grad.numpy()[idx], (vals[0] - vals[1]) / (2 * eps), rtol=1e-5, atol=1e-8)


def test_unsupported_attribute_is_named():
    x = np.zeros((1, 1, 2, 2), np.float32)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", nearest_mode="banker")
    m = eo.load(_model([node], [("x", F32, x.shape)], [("y", F32, None)], [scales]), check_ops=True)
    with pytest.raises(eo.UnsupportedOpError, match="Resize.*nearest_mode"):
        m(x)


def test_export_scatter_and_det_run_in_onnxruntime(tmp_path):
    """ember.scatter exports as ScatterElements and ember.linalg.det as Det; onnxruntime agrees."""
    import ember.nn as nn

    class M(nn.Module):
        def forward(self, x):
            s = ember.scatter(x, 1, ember.tensor([[2], [0]]), x[:, :1] * 10)
            return s + ember.linalg.det(x[:, :2].reshape(1, 2, 2)).sum()
    m, x = M(), ember.randn(2, 3)
    path = str(tmp_path / "m.onnx")
    ember.onnx.export(m, (x,), path)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, m(x).numpy(), rtol=1e-5, atol=1e-6)
