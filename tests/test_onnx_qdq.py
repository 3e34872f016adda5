"""MD-8 / MD-9 (export part): quantized ember models exported to ONNX in QDQ form
(`ember/onnx/export_quant.py`, `ember/deploy/qdq.py`).

Int8 weights stay int8 initializers read by DequantizeLinear (per tensor, or per channel with an
axis), activations get QuantizeLinear -> DequantizeLinear where the ember model quantizes them, and
ember's importer runs the file to the ember model's output. onnxruntime's answers (outputs, and the
op types of its optimized graph: QGemm / QLinearConv int8 kernels) are fixtures written by
tools/make_qdq_fixtures.py in a venv with onnxruntime; when onnxruntime is importable the test
also runs it live. The model builders here are shared with that tool (CASES, build).
"""
from __future__ import annotations

import collections
import copy
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import ember  # noqa: E402
import ember.onnx as eonnx  # noqa: E402
from ember import nn  # noqa: E402
from ember.deploy import qat, qdq  # noqa: E402
from ember.deploy.observers import MinMaxObserver, MovingAverageMinMaxObserver as PT  # noqa: E402
from ember.deploy.observers import MovingAveragePerChannelMinMaxObserver as PC  # noqa: E402
from ember.deploy.quant import QuantizationError  # noqa: E402
from ember.recipes.fashion_mnist import FashionCNN  # noqa: E402

FIX = Path(__file__).parent / "fixtures"
INT8_KERNELS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "MatMulIntegerToFloat",
                "MatMulNBits")
SHAPES = {"mlp": (8, 16), "cnn": (8, 1, 12, 12), "mixed": (8, 16), "fashion": (4, 1, 28, 28)}
# name: (model, how it is quantized, per-channel weights)
CASES = {"mlp_static_pc": ("mlp", "static", True), "mlp_static_pt": ("mlp", "static", False),
         "cnn_static_pc": ("cnn", "static", True), "cnn_static_pt": ("cnn", "static", False),
         "mlp_qat_pc": ("mlp", "qat", True), "cnn_qat_pt": ("cnn", "qat", False),
         "mixed_static_pc": ("mixed", "static", True), "mlp_weightonly_pc": ("mlp", "weightonly", True),
         "fashion_static_pc": ("fashion", "static", True)}


def _float_model(kind: str) -> nn.Module:
    ember.manual_seed(0)
    if kind == "fashion":  # the flagship (Conv-BN-ReLU-Pool x2, Linear-ReLU-Dropout-Linear), narrower
        m = FashionCNN(c1=4, c2=8, hidden=16).train()
        with ember.no_grad():
            for b in batches(kind, 7, 2):  # BatchNorm running statistics
                m(b)
        return m.eval()
    if kind == "mlp":
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    if kind == "mixed":  # LayerNorm has no quantized form: it stays float between quantized layers
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.LayerNorm(32), nn.Linear(32, 10)).eval()
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 10)).eval()


def batches(kind: str, seed: int, n: int = 4) -> list:
    """n float32 batches of the model's input shape from a fixed seed."""
    r = np.random.default_rng(seed)
    return [ember.tensor(r.standard_normal(SHAPES[kind]).astype(np.float32)) for _ in range(n)]


def _qat(model: nn.Module, per_channel: bool, calib: list) -> nn.Module:
    weight = (lambda: PC(dtype="int8", symmetric=True, reduce_range=True)) if per_channel else \
        (lambda: PT(dtype="int8", symmetric=True, reduce_range=True))
    qc = qat.QConfig(activation=lambda: qat.FakeQuantize(PT(dtype="uint8")), weight=lambda: qat.FakeQuantize(weight()))
    p = qat.prepare_qat(model.train(), qc)
    opt = ember.optim.SGD(p.parameters(), lr=0.01)
    for b in calib:
        opt.zero_grad()
        (p(b) ** 2).mean().backward()
        opt.step()
    return qat.convert(p.eval())


def build(case: str) -> tuple:
    """(quantized model, input) of a case; 7-bit weights (reduce_range) so onnxruntime's x86 kernels do not saturate."""
    kind, how, per_channel = CASES[case]
    model, calib, x = _float_model(kind), batches(kind, 1), batches(kind, 2, 1)[0]
    if how == "static":
        q = qdq.quantize_static(model, calib, per_channel=per_channel, reduce_range=True)
    elif how == "weightonly":
        q = qdq.quantize_weight_only(model, per_channel=per_channel, reduce_range=True)
    else:
        q = _qat(model, per_channel, calib)
    return q, x


def step(model: nn.Module) -> float:
    """The output's quantization step (the last quantized layer's activation scale; 0 without one)."""
    acts = [m.act_qparams for m in model.modules() if isinstance(m, qat._Quantized) and m.act_qparams is not None]
    return float(acts[-1].scale) if acts else 0.0


def op_counts(model) -> dict:
    """{op type (with its domain): count} of an ONNX model's graph."""
    return dict(collections.Counter((n.domain + "." if n.domain else "") + n.op_type for n in model.graph.node))


def _run(model, x) -> np.ndarray:
    with ember.no_grad():
        return model(x).numpy()


def _export(case: str, path: Path, **kw) -> tuple:
    q, x = build(case)
    return q, x, eonnx.export(q, x, path, **kw)


def _inits(model) -> dict:
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


# ---------------------------------------------------------------------------------------------- graph form
@pytest.mark.parametrize("case", ["mlp_static_pc", "mlp_static_pt", "cnn_static_pc", "cnn_static_pt"])
def test_md8_qdq_graph_int8_weights_and_activation_pairs(case, tmp_path):
    """MD-8: checker-valid QDQ graph; each quantized layer's weight is an int8 initializer behind a
    DequantizeLinear (axis 0/1 scales per channel, scalars per tensor), no float copy of it; every
    activation quantization is a QuantizeLinear -> DequantizeLinear pair; ember's importer gives the
    quantized model's output exactly."""
    q, x, m = _export(case, tmp_path / "q.onnx")
    onnx.checker.check_model(m, full_check=True)
    inits, ops = _inits(m), op_counts(m)
    layers = [mod for mod in q.modules() if isinstance(mod, qat._Quantized)]
    wdq = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(wdq) == len(layers)
    for n in wdq:
        w, s = inits[n.input[0]], inits[n.input[1]]
        assert w.dtype == np.int8 and w.min() >= -64 and w.max() <= 63 and inits[n.input[2]].dtype == np.int8
        if CASES[case][2]:
            assert s.shape == (w.shape[n.attribute[0].i],) and len(n.attribute) == 1
        else:
            assert s.shape == () and not n.attribute
    scales = {n.input[1] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    floats = [k for k, v in inits.items() if v.dtype == np.float32 and k not in scales and not k.endswith(".bias")]
    assert floats == []  # no folded float weights
    assert ops.get("Cast", 0) == 0 and ops.get("Round", 0) == 0
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    consumers = {i: n for n in m.graph.node for i in n.input}
    assert qs and all(consumers[n.output[0]].op_type == "DequantizeLinear" for n in qs)
    assert len(qs) == ops["DequantizeLinear"] - len(wdq)
    np.testing.assert_array_equal(_run(eonnx.load(m), x), _run(q, x))


def test_md8_round_trip_module_dynamic_batch(tmp_path):
    """MD-8: the exported QDQ model imported back as an ember module gives the quantized model's
    output, also at another batch size (dynamic batch axis), and its int8 weights load as buffers."""
    q, x, _ = _export("cnn_static_pc", tmp_path / "q.onnx", dynamic_axes={"input": {0: "batch"},
                                                                         "output": {0: "batch"}})
    back = eonnx.load(tmp_path / "q.onnx")
    assert isinstance(back, nn.Module)
    assert any(b.dtype is ember.int8 for b in back.buffers())
    np.testing.assert_array_equal(_run(back, x), _run(q, x))
    x3 = batches("cnn", 5, 1)[0][:3]
    np.testing.assert_array_equal(_run(back, x3), _run(q, x3))


@pytest.mark.parametrize("case", ["mlp_qat_pc", "cnn_qat_pt"])
def test_md8_qat_convert_model_exports(case, tmp_path):
    """MD-8: a model from qat.prepare_qat -> training -> qat.convert exports (its layers trace with
    the exportable functions while exporting and are left as they were) and its import equals it."""
    q, x, m = _export(case, tmp_path / "q.onnx")
    layers = [mod for mod in q.modules() if isinstance(mod, qat._Quantized)]
    assert layers and all("_output" not in vars(mod) and "dequantized_weight" not in vars(mod) for mod in layers)
    ops, inits = op_counts(m), _inits(m)
    assert ops["QuantizeLinear"] > len(layers) and ops["DequantizeLinear"] == len(layers) + ops["QuantizeLinear"]
    scales = [inits[n.input[1]] for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    # convert repeats a per-tensor scale per channel: the export gives it back as one scalar
    assert len(scales) == len(layers) and all((s.ndim == 1) == CASES[case][2] for s in scales)
    np.testing.assert_array_equal(_run(eonnx.load(m), x), _run(q, x))


def test_md8_float_layer_stays_float(tmp_path):
    """MD-8: a layer with no quantized form (LayerNorm) stays float between quantized layers."""
    q, x, m = _export("mixed_static_pc", tmp_path / "q.onnx")
    assert isinstance(q.module[2], nn.LayerNorm)
    inits, ops = _inits(m), op_counts(m)
    assert inits["module.2.weight"].dtype == np.float32 and "ReduceSum" in ops and "Sqrt" in ops
    assert ops["QuantizeLinear"] == 4 and ops["DequantizeLinear"] == 6
    out, ref = _run(eonnx.load(m), x), _run(q, x)
    assert np.abs(out - ref).max() <= step(q) * 1.001


def test_md8_weight_only_and_float_export_unchanged(tmp_path):
    """MD-8: weight-only quantization exports DequantizeLinear weights and no QuantizeLinear; a float
    model's export has no Q/DQ node at all (the pass only rewrites the quantized layers' chains)."""
    q, x, m = _export("mlp_weightonly_pc", tmp_path / "q.onnx")
    ops = op_counts(m)
    assert ops["DequantizeLinear"] == 2 and "QuantizeLinear" not in ops
    np.testing.assert_allclose(_run(eonnx.load(m), x), _run(q, x), rtol=1e-6, atol=1e-6)
    f = _float_model("mlp")
    ops = op_counts(eonnx.export(f, x, tmp_path / "f.onnx"))
    assert not {"QuantizeLinear", "DequantizeLinear"} & set(ops)


def test_md8_affine_uint8_weights(tmp_path):
    """MD-8: affine uint8 weights (non-zero zero points) export as uint8 initializers with uint8 zero points."""
    model, calib, x = _float_model("cnn"), batches("cnn", 1), batches("cnn", 2, 1)[0]
    q = qdq.quantize_static(model, calib, weight_dtype="uint8", weight_symmetric=False)
    m = eonnx.export(q, x, tmp_path / "q.onnx")
    inits = _inits(m)
    wdq = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(wdq) == 3 and all(inits[n.input[0]].dtype == np.uint8 for n in wdq)
    assert all(inits[n.input[2]].dtype == np.uint8 and inits[n.input[2]].any() for n in wdq)
    np.testing.assert_array_equal(_run(eonnx.load(m), x), _run(q, x))


def test_md8_narrow_activation_range_clips_integers(tmp_path):
    """MD-8: a reduced activation range (uint8 0..127) exports QuantizeLinear -> Clip -> DequantizeLinear."""
    model, calib, x = _float_model("mlp"), batches("mlp", 1), batches("mlp", 2, 1)[0]
    q = qdq.quantize_static(model, calib, observer=lambda: MinMaxObserver(dtype="uint8", reduce_range=True))
    m = eonnx.export(q, x * 4, tmp_path / "q.onnx")
    assert op_counts(m)["Clip"] == 3  # input, two layer outputs (a requantized Relu stays in range)
    np.testing.assert_array_equal(_run(eonnx.load(m), x * 4), _run(q, x * 4))


def test_md9_quantize_static_builds_quantized_layers():
    """MD-9: quantize_static calibrates and returns QuantWrapper(QuantStub, model with Quantized* layers),
    close to the float model; the float model is untouched; quantize_input=False leaves no stub."""
    model, calib, x = _float_model("cnn"), batches("cnn", 1), batches("cnn", 2, 1)[0]
    w0 = model[0].weight.detach().numpy().copy()
    q = qdq.quantize_static(model, calib)
    assert isinstance(q, qdq.QuantWrapper) and isinstance(q.quant, qdq.QuantStub)
    assert isinstance(q.module[0], qat.QuantizedConv2d) and isinstance(q.module[7], qat.QuantizedLinear)
    assert q.module[0].qweight.dtype is ember.int8 and q.module[0].weight_qparams.axis == 0
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), w0)
    ref, out = _run(model, x), _run(q, x)
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    plain = qdq.quantize_static(model, calib, per_channel=False, quantize_input=False)
    assert isinstance(plain, nn.Sequential) and plain[0].weight_qparams.axis is None
    with pytest.raises(QuantizationError, match="not nn.Linear"):
        qdq.quantize_static(model, calib, layers=["1"])


def test_md9_fuse_conv_bn_then_quantize_the_flagship(tmp_path):
    """MD-9: quantize_static folds eval BatchNorm2d into the Conv2d before it (the float output is kept
    to 1e-5), so FashionCNN exports with every conv and linear layer between Q/DQ and no BN arithmetic."""
    model, x = _float_model("fashion"), batches("fashion", 2, 1)[0]
    fused = qdq.fuse_conv_bn(copy.deepcopy(model))
    assert isinstance(fused.features[1], nn.Identity) and isinstance(fused.features[5], nn.Identity)
    np.testing.assert_allclose(_run(fused, x), _run(model, x), rtol=1e-4, atol=1e-5)
    q, x, m = _export("fashion_static_pc", tmp_path / "q.onnx")
    ops = op_counts(m)
    assert ops["Conv"] == 2 and ops["MatMul"] == 2 and "Sub" not in ops and "Mul" not in ops
    np.testing.assert_array_equal(_run(eonnx.load(m), x), _run(q, x))


# ---------------------------------------------------------------------------------------------- onnxruntime
def _fixtures() -> tuple:
    st = pytest.importorskip("safetensors.numpy")
    return st.load_file(str(FIX / "qdq.safetensors")), json.loads((FIX / "qdq.json").read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_md8_onnxruntime_fixture_fuses_int8_and_matches(case, tmp_path):
    """MD-8: onnxruntime (fixture, tools/make_qdq_fixtures.py) fused the exported graph into int8
    kernels (QGemm / QLinearConv) wherever a layer reads a quantized activation, and its output is
    within one quantization step of ember's; today's export has the fixture's graph and output."""
    data, meta = _fixtures()
    rec = meta["cases"][case]
    q, x, m = _export(case, tmp_path / "q.onnx")
    np.testing.assert_array_equal(x.numpy(), data[f"{case}.x"])
    assert op_counts(m) == rec["export_ops"], "the export changed: rerun tools/make_qdq_fixtures.py"
    ours = _run(q, x)
    np.testing.assert_array_equal(ours, data[f"{case}.ember"])
    kernels = {k: v for k, v in rec["ort_ops"].items() if k.split(".")[-1] in INT8_KERNELS}
    assert kernels == rec["int8_kernels"] and sum(kernels.values()) >= rec["expect_int8"]
    tol = step(q) * 1.001 if step(q) else 1e-2 * np.abs(ours).max()
    for level in ("ort", "ort_all"):
        assert np.abs(data[f"{case}.{level}"] - ours).max() <= tol


def test_md8_onnxruntime_live(tmp_path):
    """MD-8: where onnxruntime is installed, it runs today's exports to ember's output within one step."""
    ort = pytest.importorskip("onnxruntime")
    for case in ("mlp_static_pc", "cnn_static_pt"):
        q, x, _ = _export(case, tmp_path / f"{case}.onnx")
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / f"{case}.opt.onnx")
        sess = ort.InferenceSession(str(tmp_path / f"{case}.onnx"), so, providers=["CPUExecutionProvider"])
        out = sess.run(None, {"input": x.numpy()})[0]
        ops = op_counts(onnx.load(str(tmp_path / f"{case}.opt.onnx")))
        assert any(k.split(".")[-1] in INT8_KERNELS for k in ops)
        assert np.abs(out - _run(q, x)).max() <= step(q) * 1.001
