"""Int8 inference latency, side by side in one run: ember.jit fp32 and int8 against onnxruntime
fp32 and int8, batch 64, at 2 threads and 1 thread.

Models (random weights, ember's default init; inputs uniform in [0, 1) like image pixels):
  (a) an MLP 784-512-512-10 (ReLU);
  (b) the flagship CNN (ember/recipes/fashion_mnist.py's FashionCNN: two conv-BN-ReLU-pool
      blocks, Linear 1568->128, Linear 128->10), eval mode.

Runtimes:
  ember fp32     ember.jit(model);
  ember int8     quantize_static(model, calib, reduce_range=True) -> to_int8 (ember/deploy/int8.py)
                 -> ember.jit: linear layers and convs on ember's int8 GEMM against pre-packed
                 weights, requantized in its epilogue (the CNN's flow is traced with example_input);
  ort fp32       onnxruntime on ember.onnx.export(model);
  ort int8 (ember QDQ)  onnxruntime on ember.onnx.export of the quantize_static model (QDQ);
  ort int8 (ort quant)  onnxruntime.quantization.quantize_static on the fp32 export: QDQ, QInt8
                 per-channel weights, QUInt8 activations, reduce_range=True, MinMax calibration
                 over the same calibration batches (a CalibrationDataReader).

Each runtime runs in a block of its own (onnxruntime's pool threads spin after a run); ember's
thread count is `ember.num_threads(n)` and onnxruntime's intra_op_num_threads = n. Printed: the
median of --repeats calls (after warm-ups), ember int8 vs ember fp32 and vs the faster onnxruntime
int8, and the max |difference| of the outputs in output quantization steps (the step is ember's
last layer's output scale).

usage: python bench/quantize.py [--repeats 50] [--threads 2 1] [--calib 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import benchutil  # noqa: E402

BATCH = 64


def _models(ember, nn):
    from ember.recipes.fashion_mnist import FashionCNN
    ember.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    return [("mlp 784-512-512-10", mlp.eval(), (784,)), ("flagship cnn", FashionCNN().eval(), (1, 28, 28))]


def _ort_quantized(fp32_path, out_path, calib, in_name):
    """onnxruntime's own static quantization of ember's fp32 export."""
    import logging
    from onnxruntime import quantization as oq
    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice, once per model

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{in_name: c} for c in calib])

        def get_next(self):
            return next(self.it, None)

    oq.quantize_static(fp32_path, out_path, Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True,
                       weight_type=oq.QuantType.QInt8, activation_type=oq.QuantType.QUInt8, reduce_range=True,
                       calibrate_method=oq.CalibrationMethod.MinMax)
    return out_path


def _step(q):
    """ember's last quantized layer's output scale (one output quantization step)."""
    from ember.deploy.int8 import Int8Linear
    from ember.deploy.qat import QuantizedLinear
    last = [m for m in q.modules() if isinstance(m, (QuantizedLinear, Int8Linear))][-1]
    return float(last.act_qparams.scale)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--calib", type=int, default=8, help="calibration batches of 64")
    a = ap.parse_args()

    import onnxruntime as ort
    import ember
    from ember import nn
    from ember.deploy import qdq
    from ember.deploy.int8 import to_int8

    tmp = tempfile.mkdtemp(prefix="ember_quant_bench_")
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, {os.cpu_count()} cpus, batch {BATCH}, "
          f"median of {a.repeats} calls after {a.warmup} warm-ups, load avg {os.getloadavg()[0]:.2f}; "
          "random weights, inputs uniform in [0, 1)")
    rows = []
    for name, model, shape in _models(ember, nn):
        calib = [rng.random((BATCH,) + shape, np.float32) for _ in range(a.calib)]
        xn = rng.random((BATCH,) + shape, np.float32)
        x = ember.tensor(xn)
        q = qdq.quantize_static(model, [ember.tensor(c) for c in calib], reduce_range=True)
        i8 = to_int8(q, example_input=x)
        rep = i8.int8_report
        print(f"\n== {name}: {len(rep.converted)} layers int8, {len(rep.kept)} float "
              f"({'; '.join(n + ': ' + why.split(':')[0] for n, why in rep.kept) or '-'})")
        base = name.split()[0]
        paths = {"fp32": os.path.join(tmp, base + "_fp32.onnx"), "qdq": os.path.join(tmp, base + "_ember_qdq.onnx")}
        ember.onnx.export(model, x, paths["fp32"])
        ember.onnx.export(q, x, paths["qdq"])
        sess0 = ort.InferenceSession(paths["fp32"], providers=["CPUExecutionProvider"])
        in_name = sess0.get_inputs()[0].name
        paths["ortq"] = _ort_quantized(paths["fp32"], os.path.join(tmp, base + "_ort_qdq.onnx"), calib, in_name)
        step = _step(q)
        for nt in a.threads:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.intra_op_num_threads, so.inter_op_num_threads = nt, 1
            sess = {k: ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
            feeds = {in_name: xn}
            res, outs = {}, {}
            with ember.no_grad(), ember.num_threads(nt):
                for key, m in (("ember fp32", model), ("ember int8", i8)):
                    j = ember.jit(m)
                    outs[key] = j(x).numpy()  # traces and compiles (not timed)
                    res[key] = np.median(benchutil.timed(lambda: j(x), a.warmup, a.repeats)) * 1e3
            for key, k in (("ort fp32", "fp32"), ("ort int8 (ember QDQ)", "qdq"), ("ort int8 (ort quant)", "ortq")):
                outs[key] = sess[k].run(None, feeds)[0]
                res[key] = np.median(benchutil.timed(lambda: sess[k].run(None, feeds), a.warmup, a.repeats)) * 1e3
            ref_q = _run(q, x, ember)
            print(f"  threads {nt}:")
            for key, ms in res.items():
                d = np.abs(outs[key] - outs["ember int8"]).max() / step
                print(f"    {key:22s} {ms:8.3f} ms   max|out - ember int8| {d:7.2f} steps")
            best = min(("ort int8 (ember QDQ)", "ort int8 (ort quant)"), key=res.get)
            sp, vs = res["ember fp32"] / res["ember int8"], res["ember int8"] / res[best]
            exact = np.abs(outs["ember int8"] - ref_q).max() / step
            print(f"    ember int8 vs ember fp32: {sp:.2f}x faster (target >= 2x on the MLP); "
                  f"ember int8 / {best}: {vs:.2f}x latency (target <= 1.0x); "
                  f"ember int8 vs its QuantizedLinear model: {exact:.2f} steps")
            rows.append((name, nt, sp, vs))
    print("\nsummary: model, threads, ember int8 speedup over ember fp32, ember int8 / best ort int8 latency")
    for name, nt, sp, vs in rows:
        print(f"  {name:20s} {nt}  {sp:5.2f}x  {vs:5.2f}x")


def _run(m, x, ember):
    with ember.no_grad():
        return m(x).numpy()


if __name__ == "__main__":
    main()
