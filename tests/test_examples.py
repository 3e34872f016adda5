"""Every example in examples/ runs, at a small size, and prints what it promises (docs/book.md)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "ch02_train_mlp.py": (["--steps", "120"], "restores the same predictions: True"),
    "ch02_lstm_language_model.py": (["--steps", "30", "--hidden", "32", "--seq", "16", "--batch", "8"],
                                    "learning: True"),
    "ch02_unet.py": (["--steps", "12", "--channels", "4", "--batch", "4"], "learning: True"),
    "ch03_autograd.py": ([], "dy/dx1 = 5.50000"),
    "ch04_compiler_passes.py": ([], "after the O2 passes"),
    "ch05_native_step.py": ([], "4 threads x 50 inference calls agree: True"),
    "ch07_data_pipeline.py": ([], "DataLoader with 2 workers: 4 batches"),
    "ch08_onnx_export.py": ([], "ember reloaded it"),
}


def test_every_example_is_covered():
    assert {p.name for p in (ROOT / "examples").glob("*.py")} == set(CASES) | {"ch09_data_parallel.py"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name):
    args, expect = CASES[name]
    if name == "ch08_onnx_export.py":
        pytest.importorskip("onnx")
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert expect in r.stdout, r.stdout[-3000:]


def test_data_parallel_example_on_two_ranks():
    pytest.importorskip("mpi4py")
    from ember.distributed.launch import find_mpiexec
    if find_mpiexec() is None:
        pytest.skip("no mpiexec (pip install 'ember[mpi]')")
    r = subprocess.run([sys.executable, "-m", "ember.cli", "launch", "-n", "2", str(ROOT / "examples" / "ch09_data_parallel.py")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "parameters equal on every rank: True" in r.stdout, r.stdout[-3000:]
