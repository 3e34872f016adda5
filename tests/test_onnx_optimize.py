"""`ember.onnx.load(..., fold_batchnorm=True)` (ember/onnx/optimize.py; MD-3 on imported models):
each inference BatchNormalization right after a Conv is folded into the Conv's weight and bias,
the folded model computing what the file does (ember unfolded, and onnxruntime on the folded
model) within float32 rounding; pairs that must not fold (a Conv output read twice, training
mode, a weight computed at run time) stay, and the folded model passes onnx's checker."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx as eo  # noqa: E402
from ember.onnx.optimize import fold_batchnorm  # noqa: E402


def _bn_params(rng, c, prefix):
    return [numpy_helper.from_array(a.astype(np.float32), f"{prefix}_{k}") for k, a in
            (("s", rng.uniform(0.5, 2, c)), ("b", rng.standard_normal(c)), ("m", rng.standard_normal(c)),
             ("v", rng.uniform(0.1, 3, c)))]


def _model(ir_version=8, weights_as_constant_of_shape=False):
    """x -> Conv(w1, b1) -> BN -> Relu -> Conv(w2, groups 2) -> BN -> y, and a Conv read twice (its
    BN must stay) whose output also goes to the graph output z."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((6, 4, 1, 1)).astype(np.float32), "w3")]
    inits += _bn_params(rng, 8, "bn1") + _bn_params(rng, 6, "bn2") + _bn_params(rng, 6, "bn3")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["n1"], epsilon=1e-3),
             helper.make_node("Relu", ["n1"], ["r1"])]
    if weights_as_constant_of_shape:
        inits.append(numpy_helper.from_array(np.array([6, 4, 3, 3], np.int64), "w2_shape"))
        nodes.append(helper.make_node("ConstantOfShape", ["w2_shape"], ["w2"],
                                      value=numpy_helper.from_array(np.array([0.05], np.float32))))
    else:
        inits.append(numpy_helper.from_array(rng.standard_normal((6, 4, 3, 3)).astype(np.float32), "w2"))
    nodes += [helper.make_node("Conv", ["r1", "w2"], ["c2"], group=2),
              helper.make_node("BatchNormalization", ["c2", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["y"]),
              helper.make_node("Conv", ["r1", "w3"], ["c3"], group=2),  # c3 is read twice: no fold
              helper.make_node("BatchNormalization", ["c3", "bn3_s", "bn3_b", "bn3_m", "bn3_v"], ["n3"]),
              helper.make_node("Add", ["c3", "n3"], ["z"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 9])]
    if ir_version < 4:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 7, 7]),
               helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 6, 9, 9])]
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 9 if ir_version < 4 else 15)],
                             ir_version=ir_version)


@pytest.mark.parametrize("ir_version,const_w", [(8, False), (3, False), (8, True)])
def test_md3_fold_batchnorm_computes_what_the_file_does(ir_version, const_w):
    m = _model(ir_version, const_w)
    folded, n = fold_batchnorm(m)
    onnx.checker.check_model(folded)
    assert n == 2
    ops = [nd.op_type for nd in folded.graph.node]
    assert ops.count("BatchNormalization") == 1 and "ConstantOfShape" not in ops
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32)
    with ember.no_grad():
        want = [t.numpy() for t in eo.load(m)(ember.tensor(x))]
        got = [t.numpy() for t in eo.load(m, fold_batchnorm=True)(ember.tensor(x))]
        jitted = [t.numpy() for t in ember.jit(eo.load(m, fold_batchnorm=True))(ember.tensor(x))]
    for g, j, w in zip(got, jitted, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(j, g, rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    ref = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    assert eo.load(m, fold_batchnorm=True).input_names == ["x"]
    assert fold_batchnorm(m)[0].graph.node[0].input[1] != "w1" and m.graph.node[0].input[1] == "w1"  # a copy


def test_md3_training_mode_and_computed_weights_do_not_fold():
    m = _model()
    for n in m.graph.node:
        if n.op_type == "BatchNormalization" and n.output[0] == "n1":
            n.attribute.append(helper.make_attribute("training_mode", 1))
    m.graph.node[0].input[1] = "w1r"  # the first conv's weight now computed at run time
    m.graph.node.insert(0, helper.make_node("Relu", ["w1"], ["w1r"]))
    folded, n = fold_batchnorm(m)
    assert n == 1  # only the second pair
    assert sum(nd.op_type == "BatchNormalization" for nd in folded.graph.node) == 2
