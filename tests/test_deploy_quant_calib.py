"""ember.deploy observers (MD-8) and calibration (MD-9).

Fixtures (tools/make_quant_fixtures.py, tests/fixtures/quant.*): torch.ao.quantization's
MinMaxObserver / MovingAverageMinMaxObserver / PerChannelMinMaxObserver calculate_qparams after the
stored batches, and onnxruntime.quantization's HistogramCollector ("entropy", what
EntropyCalibrater uses) histogram and threshold on long-tailed data. Compared without torch or
onnxruntime installed.
"""
import json
import pathlib

import numpy as np
import pytest

import ember
from ember import nn
from ember.data import DataLoader, TensorDataset
from ember.deploy import observers as O
from ember.deploy.quant import QuantizationError, fake_quantize_np

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "quant.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "quant.safetensors"))


def _observer(meta: dict) -> O.Observer:
    kw = dict(meta["kwargs"])
    dtype, scheme = kw.pop("dtype"), kw.pop("qscheme")
    cls = {"MinMaxObserver": O.MinMaxObserver, "MovingAverageMinMaxObserver": O.MovingAverageMinMaxObserver,
           "PerChannelMinMaxObserver": O.PerChannelMinMaxObserver}[meta["cls"]]
    return cls(dtype=dtype, symmetric=scheme.endswith("symmetric"), **kw)


@pytest.mark.parametrize("case", sorted(META["obs"]))
def test_md8_observers_match_torch(case):
    """MD-8: after the same batches, each observer's qparams equal torch's calculate_qparams exactly."""
    meta = META["obs"][case]
    ob = _observer(meta)
    for j in range(meta["n"]):
        x = DATA[f"obs.{case}.x{j}"]
        assert ob.observe(ember.tensor(x) if j % 2 else x) is not None
    qp = ob.calculate_qparams()
    np.testing.assert_array_equal(qp.scale.reshape(-1), DATA[f"obs.{case}.scale"].reshape(-1))
    np.testing.assert_array_equal(qp.zero_point.reshape(-1), DATA[f"obs.{case}.zp"].reshape(-1))


@pytest.mark.parametrize("symmetric", [False, True])
def test_md8_percentile_observer_equals_numpy(symmetric):
    """MD-8: PercentileObserver's range is numpy.percentile of everything observed ((100-p)/2 off each
    tail, or p of |x| when symmetric)."""
    r = np.random.default_rng(0)
    xs = [r.standard_t(3, 1000).astype(np.float32) + 0.5 for _ in range(3)]
    ob = O.PercentileObserver(99.0, dtype="int8", symmetric=symmetric)
    for x in xs:
        ob.observe(ember.tensor(x))
    v = np.concatenate(xs)
    lo, hi = ob.min_max()
    if symmetric:
        t = np.float32(np.percentile(np.abs(v), 99.0))
        assert (lo, hi) == (-t, t)
    else:
        assert (lo, hi) == (np.float32(np.percentile(v, 0.5)), np.float32(np.percentile(v, 99.5)))
    assert ob.calculate_qparams().symmetric == symmetric


def test_md8_observer_edge_cases():
    """MD-8: empty tensors are skipped; no data, NaN data, or a changed channel count raise naming the layer."""
    ob = O.MinMaxObserver(name="block.fc")
    ob.observe(np.zeros((0, 4), np.float32))
    with pytest.raises(QuantizationError, match="block.fc: MinMaxObserver has observed no data"):
        ob.calculate_qparams()
    with pytest.raises(QuantizationError, match="block.fc .*holds NaN"):
        ob.observe(np.array([1.0, np.nan], np.float32))
    pc = O.PerChannelMinMaxObserver(name="conv")
    pc.observe(np.ones((3, 4), np.float32))
    with pytest.raises(QuantizationError, match="conv: 2 channels"):
        pc.observe(np.ones((2, 4), np.float32))
    with pytest.raises(QuantizationError, match="method"):
        O.HistogramObserver("entropy")
    zeros = O.HistogramObserver("kl", dtype="int8")
    zeros.observe(np.zeros(10, np.float32))
    assert float(zeros.calculate_qparams().scale) == np.finfo(np.float32).eps


@pytest.mark.parametrize("case", sorted(META["ort"]))
def test_md9_kl_threshold_matches_onnxruntime(case):
    """MD-9: HistogramObserver("kl") builds onnxruntime's histogram (same bins and counts, merged over the
    batches) and picks its entropy threshold, within one histogram bin (here: exactly)."""
    meta = META["ort"][case]
    ob = O.HistogramObserver("kl", bins=meta["num_bins"], num_quantized_bins=meta["num_quantized_bins"])
    for j in range(meta["n"]):
        ob.observe(DATA[f"ort.{case}.x{j}"])
    edges = DATA[f"ort.{case}.edges"]
    np.testing.assert_array_equal(ob.hist, DATA[f"ort.{case}.hist"])
    np.testing.assert_array_equal(ob.edges, edges)
    lo, hi = ob.min_max()
    width = edges[1] - edges[0]
    assert abs(lo - DATA[f"ort.{case}.lo"]) <= width and abs(hi - DATA[f"ort.{case}.hi"]) <= width
    assert (lo, hi) == (DATA[f"ort.{case}.lo"], DATA[f"ort.{case}.hi"])


@pytest.fixture(scope="module")
def longtail():
    """1M draws of N(0, 1) and four 50-sigma outliers."""
    r = np.random.default_rng(0)
    x = r.normal(0, 1, 1_000_000).astype(np.float32)
    x[r.choice(x.size, 4, replace=False)] = np.float32([50, -50, 50, -50])
    return x


@pytest.mark.parametrize("method", ["kl", "js", "mse"])
def test_md9_histogram_clips_long_tail_and_beats_minmax(longtail, method):
    """MD-9: on long-tailed activations the histogram methods clip below max|x| and the fake-quantized
    MSE is lower than min-max's."""
    mm = O.MinMaxObserver(dtype="int8")
    ob = O.HistogramObserver(method, dtype="int8")
    mm.observe(longtail)
    ob.observe(ember.tensor(longtail))
    lo, hi = ob.min_max()
    assert -50 < lo < 0 < hi < 50
    mse = {k: np.mean((fake_quantize_np(longtail, o.calculate_qparams()) - longtail) ** 2) for k, o in
           (("minmax", mm), (method, ob))}
    assert mse[method] < mse["minmax"]


def test_md9_symmetric_kl_and_growing_histograms():
    """MD-9: TensorRT's |x| search gives a symmetric range inside max|x|; later batches past the range grow
    the histogram (merged past max_bins) without losing counts."""
    r = np.random.default_rng(1)
    x = r.laplace(0, 1, 300_000).astype(np.float32)
    ob = O.HistogramObserver("symmetric_kl", dtype="int8", symmetric=True)
    ob.observe(x)
    kl = O.HistogramObserver("kl", dtype="int8", symmetric=True)
    kl.observe(x)
    lo, hi = ob.min_max()
    assert lo == -hi and 5 < hi < 0.9 * np.abs(x).max()
    assert abs(hi - kl.min_max()[1]) < 0.2 * hi  # the two entropy searches agree roughly
    assert ob.calculate_qparams().zero_point == 0
    grow = O.HistogramObserver("kl", bins=64)
    grow.observe(x[:1000])
    grow.observe(x[1000:2000] * 100)
    assert grow.hist.sum() == 2000 and grow.hist.size <= grow.max_bins and grow.hist.size % 2 == 0
    assert grow.edges[-1] >= np.abs(x[1000:2000] * 100).max()


def _mlp():
    ember.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_md9_calibrate_observes_each_layer():
    """MD-9: calibrate runs a DataLoader through the model with forward hooks: one observer per leaf layer,
    holding the range of that layer's outputs; eval mode and no grad during, the mode restored after."""
    model = _mlp()
    x = ember.randn(20, 4)
    loader = DataLoader(TensorDataset(x), batch_size=6)
    obs = O.calibrate(model, loader, observe_input=True)
    assert set(obs) == {"0", "1", "2", "<input>"} and model.training
    assert all(o.count == 4 for o in obs.values())
    with ember.no_grad():
        h = model[0](x).numpy()
    assert (obs["0"].min_val, obs["0"].max_val) == (h.min(), h.max())
    assert obs["1"].min_val == 0 and obs["<input>"].max_val == x.numpy().max()
    assert obs["0"].name == "0"
    by_type = O.calibrate(model, loader, lambda: O.HistogramObserver("mse"), layers=nn.Linear)
    assert set(by_type) == {"0", "2"} and isinstance(by_type["2"], O.HistogramObserver)
    qps = O.qparams_of(O.calibrate(model, [x], {"2": O.PercentileObserver(99.0)}))
    assert set(qps) == {"2"} and qps["2"].dtype == "uint8"


def test_md9_calibrate_bad_input_names_it():
    """MD-9: an empty loader, an unknown layer, or NaN activations raise QuantizationError naming them."""
    model = _mlp()
    empty = DataLoader(TensorDataset(ember.zeros(0, 4)), batch_size=4)
    with pytest.raises(QuantizationError, match="calibration loader \\(DataLoader.*yielded no batches"):
        O.calibrate(model, empty)
    with pytest.raises(QuantizationError, match="calib-set-7"):
        O.calibrate(model, [], name="calib-set-7")
    with pytest.raises(QuantizationError, match="no layer 'fc9'"):
        O.calibrate(model, [ember.ones(1, 4)], layers=["fc9"])
    with pytest.raises(QuantizationError, match="^0 .*holds NaN"):
        O.calibrate(model, [ember.tensor(np.full((2, 4), np.nan, np.float32))])
    assert model.training
