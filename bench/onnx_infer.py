"""Inference latency: ember (eager and ember.jit) against onnxruntime on the same ONNX models.

Imported: the `light_*` models shipped in the onnx wheel (224x224 CNNs) and a small helper-built
CNN, loaded with `ember.onnx.load`. Exported: the flagship CNN, an MLP and a GPT block written by
`ember.onnx.export` and run by onnxruntime, against the ember modules they came from. All runtimes
get the same input; runs are interleaved over rounds and the medians and the ember/onnxruntime
ratios are printed. Usage: python bench/onnx_infer.py [--rounds 5] [--threads N] [--only NAME]
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


def _exported(ember, tmp):
    """(name, ember module, example input, path of its ONNX export) for the exported models."""
    import onnx
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from test_onnx_export import MLP, GPTBlock
    from ember.recipes.fashion_mnist import FashionCNN
    out = []
    for name, model, x in (("export:flagship_cnn(64)", FashionCNN(), ember.randn(64, 1, 28, 28)),
                           ("export:mlp(256x20)", MLP(), ember.randn(256, 20)),
                           ("export:gpt_block(8x16)", GPTBlock(), ember.randint(0, 50, (8, 16)))):
        model.eval()
        path = os.path.join(tmp, name.split(":")[1].split("(")[0] + ".onnx")
        ember.onnx.export(model, x, path, dynamic_axes={"input": {0: "batch"}})
        out.append((name, model, x, onnx.load(path)))
    return out


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

    import tempfile
    light = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))
    models = [(os.path.basename(p)[:-5], None, None, onnx.load(p)) for p in light]
    models.append(("small_cnn(2x3x8x8)", None, None, _small_cnn()))
    tmp = tempfile.mkdtemp(prefix="ember_onnx_bench_")
    models += _exported(ember, tmp)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} cpus, {args.rounds} rounds, median of per-round time")
    print(f"{'model':28s} {'eager ms':>9s} {'jit ms':>9s} {'ort ms':>9s} {'eager/ort':>10s} {'jit/ort':>8s} {'max|diff|':>10s}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if args.threads:
        so.intra_op_num_threads = args.threads
    for name, m, xt, model in models:
        if args.only and args.only not in name:
            continue
        inits = {i.name for i in model.graph.initializer}
        inp = [i for i in model.graph.input if i.name not in inits][0]
        if xt is None:
            shape = tuple(d.dim_value or 2 for d in inp.type.tensor_type.shape.dim)
            xt = ember.from_numpy(np.random.default_rng(0).random(shape, np.float32))
            m = eo.load(model)
        x = xt.numpy()
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        jm = ember.jit(m)
        with ember.no_grad():
            ours = m(xt)
            ours = (ours[0] if isinstance(ours, tuple) else ours).numpy()  # warm-up
            jm(xt)
        ref = sess.run(None, {inp.name: x})[0]
        te, tj, to = [], [], []
        for _ in range(args.rounds):
            with ember.no_grad():
                t = time.perf_counter()
                m(xt)
                te.append(time.perf_counter() - t)
                t = time.perf_counter()
                jm(xt)
                tj.append(time.perf_counter() - t)
            t = time.perf_counter()
            sess.run(None, {inp.name: x})
            to.append(time.perf_counter() - t)
        me, mj, mo = (statistics.median(v) * 1e3 for v in (te, tj, to))
        print(f"{name:28s} {me:9.2f} {mj:9.2f} {mo:9.2f} {me / mo:10.1f} {mj / mo:8.1f} "
              f"{np.abs(ours - ref).max():10.2e}")


if __name__ == "__main__":
    main()
