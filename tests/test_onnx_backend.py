"""ONNX backend conformance: the importer's external reference (docs/design.md, "How tests and
measurements are chosen").

Runs `onnx.backend.test.BackendTest` with ember as the backend over the core subset: default-domain
node tests, not `_expanded`, whose inputs and outputs are all float32/float64/int32/int64/bool,
plus the `light_*` models shipped in the onnx wheel (on their logits, against onnxruntime: see
LIGHT_MODELS), plus the quantization ops' node tests
(QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, ConvInteger, QLinearMatMul,
QLinearConv) in int8/uint8/int16, which must all pass (MD-6). Unsupported ops raise `unittest.SkipTest`;
the score printed at the end counts skips as not passed. Needs the `onnx` extra. BAR sits just
below the measured 1018/1025 (99.3%); the 7 left are random ops (Dropout in training mode,
Bernoulli) whose expected outputs come from numpy's RNG.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import time
import unittest
import warnings

import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto  # noqa: E402
from onnx.backend.test import BackendTest  # noqa: E402

from ember.onnx.backend import EmberBackend  # noqa: E402

CORE_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL}
# The light_* models have constant weights, so their 1000 logits (~1e10) are equal in exact arithmetic
# and their expected outputs are uniform softmaxes: float32 rounding differences of ~1e3 between
# channels, which depend on the BLAS kernel a row falls in (and so on the machine and the run), turn
# them one-hot. They are checked on their logits instead, against onnxruntime (test_light_model_logits).
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512")
BAR = 0.99  # just below the measured 99.3% over the core subset
# the quantization ops' node tests in the types ember has (int8, uint8, int16; float16 scales): all
# must pass; the float8, 2-/4-bit and uint16 variants are left out (no such ember dtypes)
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
             "QLinearMatMul", "QLinearConv"}
QUANT_TYPES = CORE_TYPES | {TensorProto.UINT8, TensorProto.INT8, TensorProto.INT16, TensorProto.FLOAT16}

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the case generators warn about overflow in their own casts
    _backend_test = BackendTest(EmberBackend, __name__)


def _is_core(model, types=CORE_TYPES) -> bool:
    g = model.graph
    values = list(g.input) + list(g.output)
    return (all(v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in types for v in values)
            and all(n.domain in ("", "ai.onnx") for n in g.node))


def _node_cases() -> tuple:
    from onnx.backend.test.loader import load_model_tests
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in load_model_tests(kind="node") if "_expanded" not in c.name]
    core = {c.name: c for c in cases if _is_core(c.model)}
    quant = {c.name: c for c in cases if c.model.graph.node[0].op_type in QUANT_OPS and
             _is_core(c.model, QUANT_TYPES) and c.name not in core}
    return core, quant


_CORE, _QUANT = _node_cases()
RESULTS: dict = {}  # test name -> (op_type, "pass" | "skip" | "fail")
_T0 = time.perf_counter()


def _recording(func, name, op):
    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        try:
            out = func(*args, **kwargs)
        except unittest.SkipTest:
            RESULTS[name] = (op, "skip")
            raise
        except BaseException:
            RESULTS[name] = (op, "fail")
            raise
        RESULTS[name] = (op, "pass")
        return out
    return wrapped


# keep only the CPU variants of the core and quantization node tests; record their outcomes
for _category, _items in list(_backend_test._test_items.items()):
    for _name in list(_items):
        base = _name[:-4] if _name.endswith("_cpu") else None
        if base in _CORE:
            op = _CORE[base].model.graph.node[0].op_type
            _items[_name].func = _recording(_items[_name].func, _name, op)
        elif base in _QUANT:
            _items[_name].func = _recording(_items[_name].func, _name, "quant:" + base)
        else:
            del _items[_name]

globals().update(_backend_test.test_cases)


@pytest.fixture(scope="module", autouse=True)
def _conformance_report(request):
    yield
    core = {k: v for k, v in RESULTS.items() if not v[0].startswith("quant:")}
    if len(core) < len(_CORE):
        return  # a partial run (-k): no score
    passed = sum(1 for _, s in core.values() if s == "pass")
    skipped = sum(1 for _, s in core.values() if s == "skip")
    failed = collections.Counter(op for op, s in core.values() if s == "fail")
    missing = collections.Counter(op for op, s in core.values() if s == "skip")
    quant = {k: s for k, (op, s) in RESULTS.items() if op.startswith("quant:")}
    lines = [
        f"\nONNX backend conformance, core subset: {passed}/{len(core)} passed "
        f"({100.0 * passed / len(core):.1f}%), {skipped} skipped (counted as not passed), "
        f"{sum(failed.values())} failed; {time.perf_counter() - _T0:.1f}s",
        "  failing ops: " + (", ".join(f"{op}({n})" for op, n in failed.most_common()) or "none"),
        "  missing/skipped ops: " + ", ".join(f"{op}({n})" for op, n in missing.most_common()),
        f"  quantization ops: {sum(s == 'pass' for s in quant.values())}/{len(quant)} passed",
    ]
    rep = request.config.pluginmanager.get_plugin("terminalreporter")
    cap = request.config.pluginmanager.get_plugin("capturemanager")
    with cap.global_and_fixture_disabled() if cap is not None else contextlib.nullcontext():
        for line in lines:
            if rep is not None:
                rep.write_line(line)
            else:
                print(line)
    assert passed / len(core) >= BAR, lines[0]
    assert len(quant) == len(_QUANT) and all(s == "pass" for s in quant.values()), quant


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_logits(name):
    """Each light_* model up to its softmax (the logits) equals onnxruntime within float32 rounding."""
    ort = pytest.importorskip("onnxruntime")
    import os

    import numpy as np
    from onnx import shape_inference, utils
    import onnx.backend.test as obt
    model = shape_inference.infer_shapes(onnx.load(os.path.join(os.path.dirname(obt.__file__), "data", "light",
                                                                f"light_{name}.onnx")))
    inits = {i.name for i in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    soft = [n for n in model.graph.node if n.op_type == "Softmax"]
    outs = [soft[-1].input[0]] if soft else [o.name for o in model.graph.output]
    sub = utils.Extractor(model).extract_model([inp.name], outs)
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    ours = np.asarray(EmberBackend.prepare(sub).run([x])[0])
    ref = ort.InferenceSession(sub.SerializeToString()).run(None, {inp.name: x})[0]
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
