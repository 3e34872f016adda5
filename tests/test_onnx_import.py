"""ONNX import (ember.onnx): errors on damaged files, a helper-built CNN against onnxruntime,
gradients through an imported model, and the optional-extra import rules."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx as eo  # noqa: E402


def _cnn_model(seed=0) -> onnx.ModelProto:
    """Conv(3->4, 3x3, pad 1) + Relu + MaxPool(2) + Flatten + Gemm(64->5)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(4).astype(np.float32) * 0.1
    fw = rng.standard_normal((5, 64)).astype(np.float32) * 0.2
    fb = rng.standard_normal(5).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc/weight", "fc:bias"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(w, "conv.weight"), numpy_helper.from_array(b, "conv.bias"),
         numpy_helper.from_array(fw, "fc/weight"), numpy_helper.from_array(fb, "fc:bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_cnn_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model = _cnn_model()
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    m = eo.load(model.SerializeToString())
    got = m(ember.from_numpy(x))
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert m.input_names == ["x"] and m.output_names == ["y"]
    # dict and keyword calls, numpy input
    np.testing.assert_allclose(m({"x": x}).detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m(x=x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_initializers_are_parameters_and_gradients_flow():
    m = eo.load(_cnn_model())
    names = dict(m.named_parameters())
    assert set(m.onnx_names) == {"conv.weight", "conv.bias", "fc/weight", "fc:bias"}
    assert set(names) == set(m.onnx_names.values())
    x = ember.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32))
    loss = (m(x) ** 2).sum()
    loss.backward()
    for name, p in names.items():
        assert p.grad is not None and p.grad.shape == p.shape, name
        assert np.abs(p.grad.numpy()).sum() > 0, name
    # the fc bias gradient is 2*y summed over the batch
    y = m(x).detach().numpy()
    np.testing.assert_allclose(getattr(m, m.onnx_names["fc:bias"]).grad.numpy(), 2 * y.sum(0), rtol=1e-5)


def test_state_dict_roundtrip():
    m = eo.load(_cnn_model())
    sd = m.state_dict()
    assert len(sd) == 4
    m2 = eo.load(_cnn_model(seed=5))
    m2.load_state_dict(sd)
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_array_equal(m(x).detach().numpy(), m2(x).detach().numpy())


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, cut):
    data = _cnn_model().SerializeToString()
    p = tmp_path / "model.onnx"
    p.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(eo.OnnxError) as e:
        eo.load(p)
    assert "model.onnx" in str(e.value)
    assert "truncated" in str(e.value) or "corrupted" in str(e.value)


def test_corrupted_and_foreign_files(tmp_path):
    p = tmp_path / "garbage.onnx"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(eo.OnnxError, match="garbage.onnx"):
        eo.load(p)
    data = bytearray(_cnn_model().SerializeToString())
    for i in range(10, len(data), 7):
        data[i] = (data[i] * 31 + 7) % 256
    p2 = tmp_path / "flipped.onnx"
    p2.write_bytes(bytes(data))
    with pytest.raises(eo.OnnxError, match="flipped.onnx"):
        eo.load(p2)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(eo.OnnxError, match="empty"):
        eo.load(tmp_path / "empty.onnx")
    with pytest.raises(eo.OnnxError, match="no such file"):
        eo.load(tmp_path / "missing.onnx")
    with pytest.raises(eo.OnnxError, match="bytes"):
        eo.load(b"\x08\x07\x12garbage")


def test_unsupported_op_names_op_domain_opset():
    node = helper.make_node("Bernoulli", ["a"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2]),
                                        helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    with pytest.raises(eo.UnsupportedOpError) as e:
        eo.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    msg = str(e.value)
    assert "Bernoulli" in msg and "ai.onnx" in msg and "17" in msg
    custom = helper.make_node("Foo", ["a"], ["y"], domain="com.example")
    g2 = helper.make_graph([custom], "g", g.input[:1], g.output)
    with pytest.raises(eo.UnsupportedOpError, match="com.example"):
        eo.load(helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.example", 1)]))


def test_opset_versions_select_handlers():
    # ReduceSum: axes attribute before opset 13, input since
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for opset, node, extra in [
        (11, helper.make_node("ReduceSum", ["x"], ["y"], axes=[1], keepdims=0), []),
        (13, helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0),
         [numpy_helper.from_array(np.array([1], np.int64), "axes")]),
    ]:
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], extra)
        m = eo.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))
        np.testing.assert_array_equal(m(x).detach().numpy(), x.sum(1))
    assert eo.lookup("", "Softmax", 11) is not eo.lookup("", "Softmax", 13)


def test_import_ember_does_not_import_onnx():
    code = "import sys, ember, ember.nn; assert 'onnx' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_missing_onnx_gives_install_hint():
    code = ("import sys; sys.modules['onnx'] = None\n"
            "try:\n    import ember.onnx\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'ember[onnx]'" in out.stdout, out.stdout + out.stderr


def _tiny(nodes, inits=(), inputs=None, opset=17):
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    g = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_md1_tensor_sizes_checked_against_the_file():
    """MD-1: dims x itemsize must match raw_data and typed-data counts; dims must be non-negative."""
    m = _cnn_model()
    m.graph.initializer[1].raw_data = m.graph.initializer[1].raw_data[:12]
    with pytest.raises(eo.OnnxError, match=r"'conv.bias'.*need 16 bytes of raw_data, the file holds 12"):
        eo.load(m)
    short = TensorProto(name="b", data_type=TensorProto.FLOAT, dims=[4], float_data=[1.0, 2.0, 3.0])
    with pytest.raises(eo.OnnxError, match=r"'b'.*need 4 values in float_data, the file holds 3"):
        eo.load(_tiny([helper.make_node("Add", ["x", "b"], ["y"])], [short]))
    neg = TensorProto(name="b", data_type=TensorProto.FLOAT, dims=[-4], float_data=[1.0])
    with pytest.raises(eo.OnnxError, match="negative"):
        eo.load(_tiny([helper.make_node("Add", ["x", "b"], ["y"])], [neg]))
    huge = TensorProto(name="", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20], raw_data=bytes(16))
    with pytest.raises(eo.OnnxError, match=r"node 0 'k' \(Constant\).*1099511627776 elements, over the"):
        eo.load(_tiny([helper.make_node("Constant", [], ["y"], value=huge, name="k")]))


def test_md1_bad_nodes_raise_onnx_error_naming_the_node():
    """MD-1: arity, attribute types and run-time failures of a node raise OnnxError naming it."""
    with pytest.raises(eo.OnnxError, match=r"node 0 'fc' \(Gemm\).*Gemm takes 2 to 3 inputs, the node has 1"):
        eo.load(_tiny([helper.make_node("Gemm", ["x"], ["y"], name="fc")]))
    with pytest.raises(eo.OnnxError, match=r"node 0 \(Softmax\).*attribute 'axis' is FLOAT, Softmax wants INT"):
        eo.load(_tiny([helper.make_node("Softmax", ["x"], ["y"], axis=1.5)]))
    idx = numpy_helper.from_array(np.array([7], np.int64), "idx")
    m = eo.load(_tiny([helper.make_node("Gather", ["x", "idx"], ["y"], name="pick")], [idx]))
    with pytest.raises(eo.OnnxError, match=r"node 0 'pick' \(Gather\) of graph 'tiny'"):
        m(np.ones((2, 3), np.float32))
    shape = numpy_helper.from_array(np.array([-2, 3], np.int64), "s")
    m = eo.load(_tiny([helper.make_node("Identity", ["s"], ["s2"]), helper.make_node("ConstantOfShape", ["s2"], ["y"])],
                      [shape], inputs=[]))
    with pytest.raises(eo.OnnxError, match=r"node 1 \(ConstantOfShape\).*negative dim"):
        m()


def test_md1_subgraphs_checked_at_load():
    """MD-1: an If branch's ops, names and tensors are checked when the model loads, not when it runs."""
    def model(branch_nodes, inits=()):
        br = helper.make_graph(branch_nodes, "br", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
                               list(inits))
        flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
        return _tiny([helper.make_node("If", ["flag"], ["y"], then_branch=br, else_branch=br, name="br")],
                     inputs=[flag, helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])])
    with pytest.raises(eo.UnsupportedOpError, match="Bernoulli"):
        eo.load(model([helper.make_node("Bernoulli", ["x"], ["o"])]))
    with pytest.raises(eo.OnnxError, match=r"node 0 \(Relu\) of graph 'br' reads 'nowhere'"):
        eo.load(model([helper.make_node("Relu", ["nowhere"], ["o"])]))
    bad = TensorProto(name="t", data_type=TensorProto.FLOAT, dims=[3], raw_data=bytes(8))
    with pytest.raises(eo.OnnxError, match=r"initializer 't'.*need 12 bytes"):
        eo.load(model([helper.make_node("Add", ["x", "t"], ["o"])], [bad]))
