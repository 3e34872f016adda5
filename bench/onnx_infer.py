"""Inference latency: ember (eager and ember.jit) against onnxruntime on the same ONNX models.

Imported: the `light_*` models shipped in the onnx wheel (224x224 CNNs; ResNet-50 and DenseNet-121
also at the larger batches of --batches, their batch dim made symbolic for onnxruntime), a small
helper-built CNN, and with --minilm PATH the all-MiniLM-L6-v2 export that
tools/make_onnx_bert_fixture.py writes (input_ids/attention_mask, seq 128, at --batches), loaded
with `ember.onnx.load(..., fold_batchnorm=True)` (onnxruntime folds Conv + BatchNormalization
too, in its default graph optimizations). Exported: the flagship CNN, an MLP and a GPT block written by
`ember.onnx.export` and run by onnxruntime, against the ember modules they came from. All runtimes
get the same inputs and, with --threads N, the same thread count (`ember.set_num_threads` and
onnxruntime's intra-op threads); after a warm-up call (the trace and compile), each runtime runs
--rounds calls in a block of its own, and the medians and the ember/onnxruntime ratios are printed.

Usage: python bench/onnx_infer.py [--rounds 5] [--threads N] [--only NAME] [--minilm PATH]
                                  [--batches 1,8] [--no-eager]
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time

import numpy as np

BATCHED = ("light_resnet50", "light_densenet121")  # light models also timed at the larger --batches


def _small_cnn():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from test_onnx_import import _cnn_model
    return _cnn_model()


def _exported(ember, tmp):
    """(name, ember module, feeds, ModelProto of its ONNX export) for the exported models."""
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
        out.append((name, model, {"input": x.numpy()}, onnx.load(path)))
    return out


def _graph_inputs(model):
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _batched(model, batch):
    """A copy of an image model whose input and output batch dim is symbolic, and its input at `batch`.

    At another batch a Reshape target baked at batch 1 (ResNet-50's `[1, 2048]` before its Gemm)
    copies the batch dim instead (`0`), for ember and onnxruntime alike."""
    import onnx
    from onnx import numpy_helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inp = _graph_inputs(m)[0]
    for v in [inp] + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    if batch != 1:
        targets = {n.input[1] for n in m.graph.node if n.op_type == "Reshape" and len(n.input) > 1}
        for i, t in enumerate(m.graph.initializer):
            a = numpy_helper.to_array(t)
            if t.name in targets and a.ndim == 1 and a.size and a[0] == 1:
                a = a.copy()
                a[0] = 0
                m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a, t.name))
    shape = (batch,) + tuple(d.dim_value or 2 for d in inp.type.tensor_type.shape.dim[1:])
    return m, {inp.name: np.random.default_rng(0).random(shape, np.float32)}


def _light(batches):
    import onnx
    out = []
    for p in sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx"))):
        base, model = os.path.basename(p)[:-5], onnx.load(p)
        for b in (batches if base in BATCHED else (1,)):
            m, feeds = _batched(model, b)
            out.append((f"{base[6:]}(b{b})" if base in BATCHED else base, None, feeds, m))
    return out


def _minilm(path, batches, seq=128):
    import onnx
    if not path:
        print("minilm: skipped (export it with tools/make_onnx_bert_fixture.py --minilm PATH, then pass --minilm PATH)")
        return []
    if not os.path.exists(path):
        print(f"minilm: skipped ({path} does not exist; tools/make_onnx_bert_fixture.py --minilm writes it)")
        return []
    model, out = onnx.load(path), []
    rng = np.random.default_rng(0)
    for b in batches:
        mask = np.ones((b, seq), np.int64)
        mask[0, seq - seq // 4:] = 0  # one padded row
        feeds = {"input_ids": rng.integers(0, 30522, (b, seq)).astype(np.int64), "attention_mask": mask}
        out.append((f"minilm(b{b}x{seq})", None, feeds, model))
    return out


def _times(fn, rounds) -> list:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for ember (set_num_threads) and onnxruntime (intra-op); 0 = each its default")
    ap.add_argument("--only", default="", help="comma-separated substrings; rows whose name has one")
    ap.add_argument("--minilm", default="", help="the MiniLM export of tools/make_onnx_bert_fixture.py --minilm")
    ap.add_argument("--batches", default="1,8", help="batches of MiniLM, ResNet-50 and DenseNet-121")
    ap.add_argument("--no-eager", action="store_true", help="time ember.jit and onnxruntime only")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import ember
    import ember.onnx as eo

    import tempfile
    if args.threads:
        ember.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",") if b]
    only = [s for s in args.only.split(",") if s]
    keep = (lambda name: not only or any(s in name for s in only))  # noqa: E731
    models = [r for r in _light(batches) + _minilm(args.minilm, batches) if keep(r[0])]
    if keep("small_cnn"):
        models.append(("small_cnn(2x3x8x8)", None, None, _small_cnn()))
    if any(keep(n) for n in ("export:flagship_cnn", "export:mlp", "export:gpt_block")):
        models += [r for r in _exported(ember, tempfile.mkdtemp(prefix="ember_onnx_bench_")) if keep(r[0])]
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} cpus, threads {args.threads or 'default'}, {args.rounds} rounds, median of per-round time")
    print(f"{'model':28s} {'eager ms':>9s} {'jit ms':>9s} {'ort ms':>9s} {'eager/ort':>10s} {'jit/ort':>8s} {'max|diff|':>10s}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if args.threads:
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
    for name, m, feeds, model in models:
        if feeds is None:
            inp = _graph_inputs(model)[0]
            shape = tuple(d.dim_value or 2 for d in inp.type.tensor_type.shape.dim)
            feeds = {inp.name: np.random.default_rng(0).random(shape, np.float32)}
        if m is None:  # Conv + BatchNormalization folded, as onnxruntime's default optimizations fold them
            m = eo.load(model, fold_batchnorm=True)
        xs = [ember.from_numpy(v) for v in feeds.values()]
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        jm = ember.jit(m)
        with ember.no_grad():
            ours = jm(*xs)  # traces and compiles (not timed)
            ours = (ours[0] if isinstance(ours, tuple) else ours).numpy()
            if not args.no_eager:
                m(*xs)
        ref = sess.run(None, feeds)[0]
        # each runtime in a block of its own: onnxruntime's pool threads spin after a run, and would
        # take a core from an ember call timed right after it
        with ember.no_grad():
            tj = _times(lambda: jm(*xs), args.rounds)
            te = [] if args.no_eager else _times(lambda: m(*xs), args.rounds)
        to = _times(lambda: sess.run(None, feeds), args.rounds)
        mj, mo = (statistics.median(v) * 1e3 for v in (tj, to))
        me = statistics.median(te) * 1e3 if te else None
        eager = f"{me:9.2f}" if te else f"{'-':>9s}"
        ratio = f"{me / mo:10.1f}" if te else f"{'-':>10s}"
        print(f"{name:28s} {eager} {mj:9.2f} {mo:9.2f} {ratio} {mj / mo:8.2f} "
              f"{np.abs(ours - ref).max():10.2e}", flush=True)


if __name__ == "__main__":
    main()
