"""Generate tests/fixtures/qdq.{json,safetensors}: onnxruntime's runs of ember's QDQ exports (MD-8).

    python3 -m venv /tmp/ortq && /tmp/ortq/bin/pip install onnxruntime==1.31.1 onnx==1.23.2 numpy safetensors pytest
    /tmp/ortq/bin/python tools/make_qdq_fixtures.py

ember itself runs from this checkout (its dependencies are numpy and onnx's ml_dtypes). The cases
and their builders are tests/test_onnx_qdq.py's (CASES, build). Per case, keys ``{case}.x`` (the
input), ``.ember`` (the quantized ember model's output), ``.ort`` / ``.ort_all`` (onnxruntime's,
ORT_ENABLE_EXTENDED / ORT_ENABLE_ALL). The json holds per case the export's op counts, the op counts
of onnxruntime's optimized graph (`optimized_model_filepath`; extended level, and all), its int8
kernels and the largest difference from ember in quantization steps. "saturation" records what
full-range int8 weights give on this machine (onnxruntime's u8s8 kernels without VNNI).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import ember  # noqa: E402
import ember.onnx as eonnx  # noqa: E402
from ember.deploy import qdq  # noqa: E402
from test_onnx_qdq import CASES, INT8_KERNELS, _float_model, batches, build, op_counts, step  # noqa: E402

LEVELS = {"ort": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "ort_all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def run_ort(path: str, x: np.ndarray, level, opt_path: str) -> tuple:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level
    so.optimized_model_filepath = opt_path
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0], op_counts(onnx.load(opt_path))


def cpu_flags() -> list:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return []
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})


def main() -> None:
    out, meta = {}, {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "cpu": cpu_flags(), "cases": {}}
    tmp = tempfile.mkdtemp()
    for case in sorted(CASES):
        q, x = build(case)
        path = os.path.join(tmp, f"{case}.onnx")
        m = eonnx.export(q, x, path)
        with ember.no_grad():
            ours = q(x).numpy()
        rec = {"export_ops": op_counts(m), "step": step(q)}
        for key, level in LEVELS.items():
            got, ops = run_ort(path, x.numpy(), level, os.path.join(tmp, f"{case}.{key}.onnx"))
            out[f"{case}.{key}"] = np.array(got, order="C")
            rec[f"{key}_ops"] = ops
            rec[f"{key}_max_steps"] = float(np.abs(got - ours).max() / step(q)) if step(q) else None
            rec[f"{key}_max_abs"] = float(np.abs(got - ours).max())
        rec["int8_kernels"] = {k: v for k, v in rec["ort_ops"].items() if k.split(".")[-1] in INT8_KERNELS}
        rec["expect_int8"] = sum(rec["int8_kernels"].values())
        out[f"{case}.x"], out[f"{case}.ember"] = np.array(x.numpy(), order="C"), np.array(ours, order="C")
        meta["cases"][case] = rec
        print(case, rec["int8_kernels"], "max steps", rec["ort_max_steps"], rec["ort_all_max_steps"])
    sat = {}
    for kind in ("mlp", "cnn"):
        q = qdq.quantize_static(_float_model(kind), batches(kind, 1))  # full-range int8 weights
        x = batches(kind, 2, 1)[0]
        path = os.path.join(tmp, f"{kind}_full.onnx")
        eonnx.export(q, x, path)
        with ember.no_grad():
            ours = q(x).numpy()
        got, _ = run_ort(path, x.numpy(), LEVELS["ort"], os.path.join(tmp, f"{kind}_full.opt.onnx"))
        sat[kind] = float(np.abs(got - ours).max() / step(q))
    meta["saturation"] = {"note": "max |ort - ember| in steps with full-range int8 weights (reduce_range=False)",
                          **sat}
    print("saturation", sat)
    save_file(out, os.path.join(ROOT, "tests", "fixtures", "qdq.safetensors"))
    with open(os.path.join(ROOT, "tests", "fixtures", "qdq.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
