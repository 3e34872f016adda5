"""ember.deploy quantization math (MD-6), quantization-aware training (MD-7) and bias correction (MD-10).

Fixtures: tools/make_quant_fixtures.py (torch 2.13 in a separate venv) -> tests/fixtures/quant.*:
torch.ao.quantization observers' calculate_qparams, torch.quantize_per_tensor / per_channel's
int_repr and dequantize, torch.fake_quantize_per_tensor_affine / per_channel_affine's values and
gradients (ties at .5, values outside the range, 0-d and empty tensors). Compared bit for bit
without torch installed. Observers and calibration: tests/test_deploy_quant_calib.py.
"""
import copy
import json
import pathlib

import numpy as np
import pytest

import ember
from ember import nn
from ember.deploy import correction, qat
from ember.deploy.quant import (QParams, QuantizationError, choose_qparams, dequantize, fake_quantize_np,
                                pack_int4, quantize, unpack_int4)

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "quant.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "quant.safetensors"))


def _range_of(case: str, meta: dict):
    """The min/max (per channel along ch_axis) the observer saw, as torch's observers accumulate it."""
    xs = [DATA[f"obs.{case}.x{j}"] for j in range(meta["n"])]
    kw = meta["kwargs"]
    if "ch_axis" in kw:
        ax = kw["ch_axis"]
        chans = [np.moveaxis(x, ax, 0).reshape(x.shape[ax], -1) for x in xs]
        return np.min([c.min(1) for c in chans], 0), np.max([c.max(1) for c in chans], 0), ax
    if "averaging_constant" in kw:
        c = np.float32(kw["averaging_constant"])
        lo, hi = xs[0].min(), xs[0].max()
        for x in xs[1:]:
            lo, hi = np.float32(lo + c * (x.min() - lo)), np.float32(hi + c * (x.max() - hi))
        return lo, hi, None
    return min(x.min() for x in xs), max(x.max() for x in xs), None


def _qp_of(case: str) -> QParams:
    meta = META["obs"][case]
    kw = meta["kwargs"]
    lo, hi, axis = _range_of(case, meta)
    return choose_qparams(lo, hi, kw["dtype"], kw["qscheme"].endswith("symmetric"), axis,
                          quant_min=kw.get("quant_min"), quant_max=kw.get("quant_max"),
                          reduce_range=kw.get("reduce_range", False), name=case)


# ---------------------------------------------------------------------------------------------- MD-6

@pytest.mark.parametrize("case", sorted(META["obs"]))
def test_md6_qparams_and_quantize_match_torch(case):
    """MD-6: choose_qparams on the observed range gives torch's scale and zero point exactly (float32),
    and quantize/dequantize give torch.quantize_per_tensor / per_channel's int_repr and values bit for bit."""
    qp = _qp_of(case)
    np.testing.assert_array_equal(qp.scale.reshape(-1), DATA[f"obs.{case}.scale"].reshape(-1))
    np.testing.assert_array_equal(qp.zero_point.reshape(-1), DATA[f"obs.{case}.zp"].reshape(-1))
    # torch.quantize_per_* clamps to the storage dtype's full range, not the observer's quant range
    full = QParams(qp.scale, qp.zero_point, qp.dtype, qp.axis, qp.symmetric)
    q = quantize(DATA[f"obs.{case}.probe"], full)
    assert q.dtype is getattr(ember, qp.dtype)
    np.testing.assert_array_equal(q.numpy(), DATA[f"obs.{case}.q"])
    np.testing.assert_array_equal(dequantize(q, full).numpy(), DATA[f"obs.{case}.dq"])


@pytest.mark.parametrize("case", sorted(META["qpt"]))
def test_md6_quantize_ties_match_torch(case):
    """MD-6: explicit qparams, every value a .5 tie or far outside the range: torch's integers exactly."""
    m = META["qpt"][case]
    if m["axis"] is None:
        qp = QParams(m["scale"], m["zp"], m["dtype"])
    else:
        qp = QParams(DATA[f"qpt.{case}.scale"], DATA[f"qpt.{case}.zp"], m["dtype"], axis=m["axis"])
    q = quantize(DATA[f"qpt.{case}.x"], qp)
    np.testing.assert_array_equal(q.numpy(), DATA[f"qpt.{case}.q"])
    np.testing.assert_array_equal(dequantize(q, qp).numpy(), DATA[f"qpt.{case}.dq"])


@pytest.mark.parametrize("dtype,symmetric", [("int8", False), ("int8", True), ("uint8", False),
                                             ("uint8", True), ("int4", True), ("uint4", False)])
def test_md6_round_trip_error_at_most_half_a_step(dtype, symmetric):
    """MD-6: values inside the range come back within scale / 2, per tensor and per channel."""
    r = np.random.default_rng(0)
    x = (r.uniform(-1, 1, (6, 50)) * np.geomspace(0.5, 5, 6)[:, None] + 0.3).astype(np.float32)
    for axis in (None, 0):
        lo, hi = (x.min(), x.max()) if axis is None else (x.min(1), x.max(1))
        qp = choose_qparams(lo, hi, dtype, symmetric, axis)
        err = np.abs(dequantize(quantize(x, qp), qp).numpy() - x)
        s = qp.broadcast(x.ndim)[0]
        assert (err <= s / 2 * (1 + 1e-5) + 1e-7).all(), (dtype, axis, (err / s).max())


def test_md6_per_channel_beats_per_tensor():
    """MD-6: on a weight whose channel ranges span [0.1, 10], per-channel MSE < per-tensor MSE."""
    r = np.random.default_rng(1)
    w = (r.uniform(-1, 1, (16, 64)) * np.geomspace(0.1, 10, 16)[:, None]).astype(np.float32)
    pt = choose_qparams(w.min(), w.max(), "int8", True)
    pc = choose_qparams(w.min(1), w.max(1), "int8", True, axis=0)
    mse_t = np.mean((dequantize(quantize(w, pt), pt).numpy() - w) ** 2)
    mse_c = np.mean((dequantize(quantize(w, pc), pc).numpy() - w) ** 2)
    assert mse_c < mse_t / 4
    small = slice(0, 4)  # the narrow channels: per tensor rounds them to a handful of levels
    err_t = np.mean((dequantize(quantize(w, pt), pt).numpy() - w)[small] ** 2)
    err_c = np.mean((dequantize(quantize(w, pc), pc).numpy() - w)[small] ** 2)
    assert err_c < err_t / 100


def test_md6_range_rules():
    """MD-6: the range includes 0 (0 is exact), symmetric zero points (0 / 128), eps scale for zero width."""
    qp = choose_qparams(2.0, 5.0, "uint8")
    assert qp.zero_point == 0 and dequantize(quantize(ember.zeros(3), qp), qp).numpy().tolist() == [0, 0, 0]
    qp = choose_qparams(-7.0, -3.0, "int8")
    assert qp.zero_point == 127 and float(qp.scale) == np.float32(7.0) / np.float32(255)
    assert choose_qparams(-1.0, 3.0, "int8", True).zero_point == 0
    assert choose_qparams(-1.0, 3.0, "uint8", True).zero_point == 128
    assert choose_qparams(-1.0, 3.0, "uint8", True, quant_max=127).zero_point == 63
    for lo, hi in ((0.0, 0.0), (-0.0, 0.0)):
        qp = choose_qparams(lo, hi, "int8", True)
        assert float(qp.scale) == np.finfo(np.float32).eps
    qp = choose_qparams(np.zeros(3), np.array([0.0, 1.0, 0.0]), "uint8", axis=0)
    assert (qp.scale > 0).all() and qp.scale[0] == np.finfo(np.float32).eps
    assert choose_qparams(0.0, 1.0, "uint8", reduce_range=True).qmax == 127
    assert choose_qparams(-1.0, 1.0, "int8", reduce_range=True).qmin == -64


def test_md6_bad_input_raises_naming_the_tensor():
    """MD-6: NaN / inf ranges and tensors, zero or negative scales: QuantizationError (a ValueError) naming it."""
    for lo, hi in ((np.nan, 1.0), (0.0, np.inf), (-np.inf, 0.0)):
        with pytest.raises(QuantizationError, match="fc1.weight"):
            choose_qparams(lo, hi, name="fc1.weight")
    assert issubclass(QuantizationError, ValueError) and issubclass(QuantizationError, ember.EmberError)
    with pytest.raises(ValueError, match="min .* > max"):
        choose_qparams(1.0, -1.0)
    qp = choose_qparams(-1.0, 1.0, name="conv3.weight")
    with pytest.raises(QuantizationError, match="conv3.weight holds NaN"):
        quantize(np.array([0.0, np.nan], np.float32), qp)
    for s in (0.0, -0.1, np.nan):
        with pytest.raises(QuantizationError, match="scale must be finite and > 0"):
            QParams(s, 0, "int8", name="layer")
    with pytest.raises(QuantizationError, match="zero_point"):
        QParams(0.1, 300, "uint8")
    with pytest.raises(QuantizationError, match="per-channel"):
        quantize(np.zeros((2, 3), np.float32), QParams(np.ones(3), np.zeros(3), "int8", axis=0))
    with pytest.raises(QuantizationError, match="dtype"):
        choose_qparams(0.0, 1.0, "int16")


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 33])
def test_md6_int4_packing_round_trips(n):
    """MD-6: two int4 values per byte (low nibble first, torch.quint4x2's order), odd lengths kept."""
    r = np.random.default_rng(n)
    s = r.integers(-8, 8, n).astype(np.int8)
    u = r.integers(0, 16, n).astype(np.uint8)
    ps, pu = pack_int4(s), pack_int4(u)
    assert ps.dtype is ember.uint8 and ps.shape == ((n + 1) // 2,)
    np.testing.assert_array_equal(unpack_int4(ps, n).numpy(), s)
    np.testing.assert_array_equal(unpack_int4(pu, n, signed=False).numpy(), u)
    assert pack_int4(np.array([1, -1, 7], np.int8)).numpy().tolist() == [0xF1, 0x07]


def test_md6_int4_weight_only():
    """MD-6: an int4 per-channel weight packs to half the bytes and dequantizes within half a step."""
    r = np.random.default_rng(3)
    w = (r.normal(0, 1, (5, 9)) * np.arange(1, 6)[:, None]).astype(np.float32)
    qp = choose_qparams(w.min(1), w.max(1), "int4", True, axis=0)
    q = quantize(w, qp)
    assert q.numpy().min() >= -8 and q.numpy().max() <= 7
    packed = pack_int4(q)
    assert packed.numel() == 23
    back = dequantize(unpack_int4(packed, shape=w.shape), qp).numpy()
    np.testing.assert_array_equal(back, dequantize(q, qp).numpy())
    inside = np.abs(w) <= (qp.scale * 7)[:, None]
    assert (np.abs(back - w)[inside] <= np.broadcast_to(qp.scale[:, None] / 2 * 1.0001, w.shape)[inside]).all()
    with pytest.raises(QuantizationError, match="-8..7"):
        pack_int4(np.array([16]))
    with pytest.raises(QuantizationError, match="hold"):
        unpack_int4(packed, 50)


# ---------------------------------------------------------------------------------------------- MD-7

@pytest.mark.parametrize("case", sorted(META["fq"]))
def test_md7_fake_quantize_matches_torch(case):
    """MD-7: fake_quantize's values and straight-through gradients equal torch.fake_quantize_per_*_affine's."""
    m = META["fq"][case]
    x = ember.tensor(DATA[f"fq.{case}.x"], requires_grad=True)
    if m["axis"] is None:
        y = qat.fake_quantize(x, m["scale"], m["zp"], m["qmin"], m["qmax"])
    else:
        y = qat.fake_quantize(x, ember.tensor(DATA[f"fq.{case}.scale"]), ember.tensor(DATA[f"fq.{case}.zp"]),
                              m["qmin"], m["qmax"], m["axis"])
    assert y.shape == x.shape and y.dtype is ember.float32
    np.testing.assert_array_equal(y.detach().numpy(), DATA[f"fq.{case}.out"])
    (y * ember.tensor(DATA[f"fq.{case}.w"])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), DATA[f"fq.{case}.grad"])


def test_md7_fake_quantize_in_a_jitted_training_step():
    """MD-7: fake_quantize traces under ember.jit: a jitted step with fake-quantized weights and outputs
    gives eager's losses and parameters."""
    ember.manual_seed(0)
    m1 = nn.Linear(6, 4)
    m2 = copy.deepcopy(m1)
    x, t = ember.randn(10, 6), ember.randn(10, 4)

    def step(m, opt):
        opt.zero_grad()
        w = qat.fake_quantize(m.weight, 0.01, 0, -128, 127)
        y = qat.fake_quantize(nn.functional.linear(x, w, m.bias), 0.02, 128, 0, 255)
        loss = ((y - t) ** 2).mean()
        loss.backward()
        opt.step()
        return loss
    o1, o2 = ember.optim.SGD(m1.parameters(), lr=0.1), ember.optim.SGD(m2.parameters(), lr=0.1)
    jitted = ember.jit(lambda: step(m2, o2))
    for _ in range(4):
        np.testing.assert_allclose(jitted().item(), step(m1, o1).item(), rtol=1e-5)
    np.testing.assert_allclose(m2.weight.detach().numpy(), m1.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert jitted.trace_count == 1


def test_md7_fake_quantize_module_switches():
    """MD-7: FakeQuantize observes only in training mode; observer and fake quant switch off and on."""
    fq = qat.FakeQuantize(qat.MovingAverageMinMaxObserver(dtype="uint8"))
    x = ember.tensor(np.linspace(-1, 3, 17, dtype=np.float32))
    fq.eval()
    fq(x)
    assert fq.observer.count == 0 and fq.scale.item() == 1.0
    fq.train()
    y = fq(x)
    qp = fq.qparams()
    assert fq.observer.count == 1 and float(qp.scale) == np.float32(4) / np.float32(255)
    np.testing.assert_array_equal(y.numpy(), fake_quantize_np(x.numpy(), qp))
    fq.disable_observer()
    fq(x * 10)
    assert fq.observer.count == 1 and fq.observer_enabled.item() == 0
    fq.disable_fake_quant()
    assert fq(x) is x
    fq.enable_fake_quant().enable_observer()
    assert fq.fake_quant_enabled.item() == 1 and fq.observer_enabled.item() == 1


def _small_cnn():
    ember.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def _train(model, x, t, steps: int):
    opt = ember.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - t) ** 2).mean()
        loss.backward()
        opt.step()
    return loss.item()


def test_md7_prepare_qat_and_convert():
    """MD-7: prepare_qat wraps Linear/Conv2d (a copy, torch's default); after QAT steps convert leaves no
    FakeQuantize, int8 weights + qparams, and the QAT model's eval output (within a quantization step)."""
    model = _small_cnn()
    before = model[3].weight.detach().numpy().copy()
    q = qat.prepare_qat(model)
    assert isinstance(q[0], qat.QATConv2d) and isinstance(q[3], qat.QATLinear) and type(model[3]) is nn.Linear
    assert sum(isinstance(m, qat.FakeQuantize) for m in q.modules()) == 4
    x, t = ember.randn(8, 2, 5, 5), ember.randn(8, 3)
    _train(q, x, t, 4)
    np.testing.assert_array_equal(model[3].weight.detach().numpy(), before)  # the float model is untouched
    q.eval()
    with ember.no_grad():
        ref = q(x).numpy()
    c = qat.convert(q)
    assert sum(isinstance(m, qat.FakeQuantize) for m in c.modules()) == 0
    assert isinstance(c[0], qat.QuantizedConv2d) and isinstance(c[3], qat.QuantizedLinear)
    for layer in (c[0], c[3]):
        assert layer.qweight.dtype is ember.int8 and layer.weight_qparams.axis == 0
        assert (layer.weight_zero_point.numpy() == 0).all()
    with ember.no_grad():
        out = c(x).numpy()
    step = float(c[3].act_qparams.scale)
    assert np.abs(out - ref).max() <= step * 1.001
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)
    qi = qat.prepare_qat(_small_cnn(), inplace=True)
    assert isinstance(qi[3], qat.QATLinear)
    jitted = ember.jit(c)  # the converted model traces (its qparams are buffers, read in the graph)
    with ember.no_grad():
        np.testing.assert_array_equal(jitted(x).numpy(), out)


def test_md7_jitted_qat_step_matches_eager():
    """MD-7: with observers frozen (disable_observer), a jitted QAT training step equals the eager one."""
    q1 = qat.prepare_qat(_small_cnn())
    x, t = ember.randn(8, 2, 5, 5), ember.randn(8, 3)
    _train(q1, x, t, 1)  # observers set the qparams eagerly
    q1.apply(qat.disable_observer)
    q2 = copy.deepcopy(q1)
    o1, o2 = ember.optim.SGD(q1.parameters(), lr=0.05), ember.optim.SGD(q2.parameters(), lr=0.05)

    def step(m, opt):
        opt.zero_grad()
        loss = ((m(x) - t) ** 2).mean()
        loss.backward()
        opt.step()
        return loss
    jitted = ember.jit(lambda: step(q2, o2))
    for _ in range(3):
        np.testing.assert_allclose(jitted().item(), step(q1, o1).item(), rtol=1e-5)
    q2[3].activation_post_process.disable_fake_quant()  # a switch replaces its buffer: a retrace
    jitted()
    assert jitted.trace_count == 2


def test_md7_convert_bad_input_names_the_layer():
    """MD-7: convert refuses a NaN weight or never-observed qparams, naming the layer."""
    q = qat.prepare_qat(_small_cnn())
    with pytest.raises(QuantizationError, match="layer '0'.*observer has seen no data"):
        qat.convert(q)
    _train(q, ember.randn(4, 2, 5, 5), ember.randn(4, 3), 1)
    with ember.no_grad():
        q[3].weight[0, 0] = float("nan")
    with pytest.raises(QuantizationError, match="layer '3' weight holds NaN"):
        qat.convert(q)
    with pytest.raises(QuantizationError, match="scale must be > 0"):
        qat.fake_quantize(ember.ones(3), 0.0, 0, 0, 255)


# --------------------------------------------------------------------------------------------- MD-10

def _loader(xs):
    return [(x,) for x in xs]


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_md10_bias_correction_matches_fp32_channel_means(kind):
    """MD-10: after int4 weight quantization the per-channel output means drift; corrected, they match
    the fp32 layer's over the calibration data within 1e-3."""
    ember.manual_seed(5)
    r = np.random.default_rng(5)
    if kind == "linear":
        layer = nn.Linear(32, 16)
        xs = [ember.tensor(np.abs(r.normal(1.0, 1.0, (64, 32))).astype(np.float32)) for _ in range(3)]
        dims = (0,)
    else:
        layer = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        xs = [ember.tensor(np.abs(r.normal(1.0, 1.0, (4, 3, 8, 8))).astype(np.float32)) for _ in range(3)]
        dims = (0, 2, 3)
    ref = copy.deepcopy(layer)
    with ember.no_grad():
        fp = np.concatenate([ref(x).numpy() for x in xs]).mean(dims)
    plain = copy.deepcopy(layer)
    with ember.no_grad():
        plain.weight.copy_(correction.quantize_weight(plain.weight, "int4")[0])
        drift = np.abs(np.concatenate([plain(x).numpy() for x in xs]).mean(dims) - fp).max()
    corr = correction.correct_bias(layer, _loader(xs), dtype="int4")
    with ember.no_grad():
        got = np.concatenate([layer(x).numpy() for x in xs]).mean(dims)
    assert drift > 1e-2
    assert np.abs(got - fp).max() < 1e-3
    assert set(corr) == {""} and layer.bias is not None
    np.testing.assert_array_equal(layer.weight.detach().numpy(), plain.weight.detach().numpy())


def test_md10_bias_correction_in_a_model_and_bad_input():
    """MD-10: every Linear/Conv2d of a model is corrected; an empty loader or a NaN weight raise, naming it."""
    model = _small_cnn()
    xs = [ember.randn(4, 2, 5, 5) for _ in range(2)]
    corr = correction.correct_bias(model, _loader(xs))
    assert set(corr) == {"0", "3"}
    with pytest.raises(QuantizationError, match="calibration loader \\(list\\) yielded no batches"):
        correction.correct_bias(_small_cnn(), [])
    bad = _small_cnn()
    with ember.no_grad():
        bad[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(QuantizationError, match="layer '0' weight holds NaN"):
        correction.correct_bias(bad, _loader(xs))
    with pytest.raises(QuantizationError, match="not an nn.Linear"):
        correction.correct_bias(model, _loader(xs), layers=["1"])
