"""ONNX backend conformance: the importer's external reference (docs/design.md, "How tests and
measurements are chosen").

Runs `onnx.backend.test.BackendTest` with ember as the backend over the core subset: default-domain
node tests, not `_expanded`, whose inputs and outputs are all float32/float64/int32/int64/bool,
plus the `light_*` models shipped in the onnx wheel. Unsupported ops raise `unittest.SkipTest`;
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
LIGHT_MODELS = {"test_bvlc_alexnet", "test_densenet121", "test_inception_v1", "test_inception_v2",
                "test_resnet50", "test_shufflenet", "test_squeezenet", "test_vgg19", "test_zfnet512"}
BAR = 0.99  # just below the measured 99.3% over the core subset

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the case generators warn about overflow in their own casts
    _backend_test = BackendTest(EmberBackend, __name__)


def _is_core(model) -> bool:
    g = model.graph
    values = list(g.input) + list(g.output)
    return (all(v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in CORE_TYPES for v in values)
            and all(n.domain in ("", "ai.onnx") for n in g.node))


def _core_node_cases() -> dict:
    from onnx.backend.test.loader import load_model_tests
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    return {c.name: c for c in cases if "_expanded" not in c.name and _is_core(c.model)}


_CORE = _core_node_cases()
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


# keep only the CPU variants of the core node tests and the light models; record their outcomes
for _category, _items in list(_backend_test._test_items.items()):
    for _name in list(_items):
        base = _name[:-4] if _name.endswith("_cpu") else None
        if base in _CORE:
            op = _CORE[base].model.graph.node[0].op_type
            _items[_name].func = _recording(_items[_name].func, _name, op)
        elif base in LIGHT_MODELS:
            _items[_name].func = _recording(_items[_name].func, _name, "light:" + base[5:])
        else:
            del _items[_name]

globals().update(_backend_test.test_cases)


@pytest.fixture(scope="module", autouse=True)
def _conformance_report(request):
    yield
    core = {k: v for k, v in RESULTS.items() if not v[0].startswith("light:")}
    if len(core) < len(_CORE):
        return  # a partial run (-k): no score
    passed = sum(1 for _, s in core.values() if s == "pass")
    skipped = sum(1 for _, s in core.values() if s == "skip")
    failed = collections.Counter(op for op, s in core.values() if s == "fail")
    missing = collections.Counter(op for op, s in core.values() if s == "skip")
    light = {k: s for k, (op, s) in RESULTS.items() if op.startswith("light:")}
    lines = [
        f"\nONNX backend conformance, core subset: {passed}/{len(core)} passed "
        f"({100.0 * passed / len(core):.1f}%), {skipped} skipped (counted as not passed), "
        f"{sum(failed.values())} failed; {time.perf_counter() - _T0:.1f}s",
        "  failing ops: " + (", ".join(f"{op}({n})" for op, n in failed.most_common()) or "none"),
        "  missing/skipped ops: " + ", ".join(f"{op}({n})" for op, n in missing.most_common()),
        f"  light models: {sum(s == 'pass' for s in light.values())}/{len(light)} passed",
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
    assert all(s == "pass" for s in light.values()), light
