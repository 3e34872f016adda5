"""bench/compress_accuracy.py at smoke-test size: a tiny FashionCNN trained on 512 images for one
epoch (eager steps), evaluated on 256 test images. Every row of the table is produced (baseline,
weight-only, static with and without reduce_range and bias correction, QAT, pruning, the student
alone and distilled) with an accuracy in [0, 1]; the pruned model is 90% sparse."""
import importlib.util
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench", "compress_accuracy.py")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_compress_accuracy", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_compress_accuracy"] = mod  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["bench_compress_accuracy"]
    return mod


bench = _bench()


@pytest.mark.skipif(not bench.data_available(), reason="fashion-mnist not found (../shared/data/fashion-mnist, "
                    "$EMBER_DATA, ~/.cache/ember, /usr/share/datasets)")
def test_compress_accuracy_smoke(capsys):
    res = bench.main(["--subset", "512", "--test-subset", "256", "--epochs", "1", "--finetune-epochs", "1",
                      "--channels", "4,8,16", "--retrain", "--no-jit", "--qat-observe-steps", "2",
                      "--kd", "4:0.9", "--kd-teacher-epochs", "1", "--kd-seeds", "1", "--quiet"])
    names = [r.name for r in res.rows]
    expected = ["fp32 baseline", "weight-only int8 (per-channel)", "weight-only int8 + bias correction",
                "static int8, reduce_range=False", "static int8, reduce_range=True",
                "static int8 + bias correction (rr=False)", "QAT int8 (prepare_qat, 1 ep fine-tune, convert)",
                "90% global magnitude pruning + fine-tune", "teacher FashionCNN(4, 8, 16), 1 ep",
                "student FashionCNN(2, 4, 8) alone", "student distilled, KDLoss(T=4, alpha=0.9) + hint features.6"]
    assert names == expected
    for r in res.rows:
        assert 0.0 <= r.accuracy <= 1.0, r
        assert (r.met is None) == (r.target == ""), r
    assert res.row("fp32 baseline").note.startswith("FashionCNN(4, 8, 16), trained")
    assert "global" in res.sparsity and res.sparsity.strip().splitlines()[-1].endswith("%")
    glob = float(res.sparsity.strip().splitlines()[-1].split()[-1].rstrip("%"))
    assert abs(glob - 90.0) < 0.1, res.sparsity
    assert len(res.kd_tried) == 1
    out = capsys.readouterr().out
    for n in expected:
        assert n in out
