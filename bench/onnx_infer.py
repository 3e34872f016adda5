"""Inference latency: ember eager (ember.onnx.load) against onnxruntime on the same ONNX models.

Models: the `light_*` models shipped in the onnx wheel (224x224 CNNs) and a small helper-built
CNN. Both runtimes get the same input; runs are interleaved over rounds and the medians and the
ember/onnxruntime ratio are printed. Usage: python bench/onnx_infer.py [--rounds 5] [--threads N]
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time

import numpy as np


def _small_cnn():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from test_onnx_import import _cnn_model
    return _cnn_model()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    ap.add_argument("--only", default="", help="substring filter on model names")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import ember
    import ember.onnx as eo

    light = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))
    models = [(os.path.basename(p)[:-5], onnx.load(p)) for p in light] + [("small_cnn(2x3x8x8)", _small_cnn())]
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} cpus, {args.rounds} rounds, median of per-round time")
    print(f"{'model':28s} {'ember ms':>10s} {'ort ms':>10s} {'ember/ort':>10s} {'max|diff|':>10s}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if args.threads:
        so.intra_op_num_threads = args.threads
    for name, model in models:
        if args.only and args.only not in name:
            continue
        inits = {i.name for i in model.graph.initializer}
        inp = [i for i in model.graph.input if i.name not in inits][0]
        shape = tuple(d.dim_value or 2 for d in inp.type.tensor_type.shape.dim)
        x = np.random.default_rng(0).random(shape, np.float32)
        m = eo.load(model)
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        xt = ember.from_numpy(x)
        with ember.no_grad():
            ours = m(xt).numpy()  # warm-up
        ref = sess.run(None, {inp.name: x})[0]
        te, to = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            with ember.no_grad():
                m(xt)
            te.append(time.perf_counter() - t)
            t = time.perf_counter()
            sess.run(None, {inp.name: x})
            to.append(time.perf_counter() - t)
        me, mo = statistics.median(te) * 1e3, statistics.median(to) * 1e3
        print(f"{name:28s} {me:10.2f} {mo:10.2f} {me / mo:10.1f} {np.abs(ours - ref).max():10.2e}")


if __name__ == "__main__":
    main()
