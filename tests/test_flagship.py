"""The flagship job through README's entry point (`ember train`): one epoch reaches >= 85%."""
import pathlib

import pytest

from ember import cli
from ember.recipes import fashion_mnist
from _data import find, missing

DATA = find("fashion-mnist", "t10k-images-idx3-ubyte.gz")


@pytest.mark.skipif(DATA is None, reason=missing("fashion-mnist"))
def test_ember_train_one_epoch(tmp_path, monkeypatch, capsys):
    results = []
    monkeypatch.setattr(fashion_mnist, "train", lambda cfg, _t=fashion_mnist.train: results.append(_t(cfg)) or results[-1])
    assert cli.main(["train", "--epochs", "1", "--data", str(DATA), "--out", str(tmp_path), "--no-progress"]) == 0
    res = results[0]
    assert res["test_accuracy"] >= 0.85, res
    assert pathlib.Path(res["checkpoint"]).exists()
    assert "test accuracy" in capsys.readouterr().out
