"""Integer inference (ember/deploy/int8.py): `to_int8` turns each QuantizedLinear whose input is
quantized into an Int8Linear (uint8 x int8 -> int32 GEMM), whose outputs equal the QuantizedLinear
model's within one output quantization step, eagerly and under ember.jit, where the native step
holds ember's int8 GEMM kernel; every layer kept in float is named in the report with its reason."""
import numpy as np
import pytest

import ember
from ember import nn
from ember.backend.cpu import compiler
from ember.deploy import qdq
from ember.deploy.int8 import Int8Conv2d, Int8Linear, to_int8
from ember.deploy.qat import QuantizedConv2d, QuantizedLinear
from ember.recipes.fashion_mnist import FashionCNN

native = pytest.mark.skipif(not compiler.available(), reason="needs a C compiler")


def _data(shape, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [ember.tensor(rng.standard_normal(shape).astype(np.float32)) for _ in range(n)]


def _mlp(seed=0):
    ember.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(32, 10)).eval()


def _run(model, x):
    with ember.no_grad():
        return model(x).numpy()


def _close(ref, out, step):
    """Within one output step everywhere, and exactly equal almost everywhere."""
    assert np.abs(ref - out).max() <= step * 1.001
    assert (ref == out).mean() >= 0.98


def _gemms(j):
    (ent,) = j.cache.values()
    assert not ent.exe.host_units  # the whole program runs native
    return ent.exe.source.count("int8 GEMM (qgemm.py)")


def _names(rep):
    return [n for n, _ in rep.converted], dict(rep.kept)


@native
@pytest.mark.parametrize("kw", [dict(reduce_range=True), dict(reduce_range=False, per_channel=False),
                                dict(reduce_range=True, weight_symmetric=False)],
                         ids=["reduce_range", "full_range_per_tensor", "asymmetric"])
def test_mlp_int8_equals_the_quantized_linear_model_eager_and_jitted(kw):
    q = qdq.quantize_static(_mlp(), _data((16, 64)), **kw)
    i8 = to_int8(q)
    conv, kept = _names(i8.int8_report)
    assert conv == ["module.0", "module.2", "module.5"] and not kept
    assert all(isinstance(i8.module[i], Int8Linear) for i in (0, 2, 5))
    assert isinstance(q.module[0], QuantizedLinear)  # a copy: the model given is unchanged
    if kw.get("weight_symmetric") is False:
        assert i8.module[0].weight_zero_point.numpy().any()  # the weight zero-point term is exercised
    if kw == dict(reduce_range=True):
        assert "kernel vpmaddubsw" in i8.int8_report.converted[0][1]
    x = _data((40, 64), n=1, seed=1)[0] * 1.5  # some values outside the calibrated range: clamped alike
    ref, step = _run(q, x), float(q.module[5].act_qparams.scale)
    _close(ref, _run(i8, x), step)
    j = ember.jit(i8)
    _close(ref, _run(j, x), step)
    assert _gemms(j) == 3


def test_int8_linear_takes_leading_dims():
    q = qdq.quantize_static(_mlp(1), _data((16, 64)), reduce_range=True)
    i8 = to_int8(q)
    x = _data((2, 5, 64), n=1, seed=2)[0]
    out = _run(i8, x)
    assert out.shape == (2, 5, 10)
    _close(_run(q, x), out, float(q.module[5].act_qparams.scale))


def _seq_cnn():
    ember.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


@native
def test_md6_cnn_convs_and_linears_go_int8_eager_and_jitted():
    q = qdq.quantize_static(_seq_cnn(), _data((8, 2, 8, 8)), reduce_range=True)
    i8 = to_int8(q)
    conv, kept = _names(i8.int8_report)
    assert conv == ["module.0", "module.5", "module.7"] and not kept
    assert isinstance(i8.module[0], Int8Conv2d) and "conv 2->4 3x3 (K=18)" in i8.int8_report.converted[0][1]
    x = _data((6, 2, 8, 8), n=1, seed=3)[0]
    ref, step = _run(q, x), float(q.module[7].act_qparams.scale)
    _close(ref, _run(i8, x), step)
    j = ember.jit(i8)
    _close(ref, _run(j, x), step)
    assert _gemms(j) >= 2
    (ent,) = j.cache.values()
    labels = [lab for lab, *_ in ent.exe.kernels]
    assert sum(lab.startswith(("packed_matmul | ", "dot_general | ")) for lab in labels) == 3  # requantization fused


@native
@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding=2, stride=2, dilation=2), dict(padding="same"),
                                dict(padding=1, padding_mode="reflect"), dict(padding=0, stride=(2, 1))],
                         ids=["pad1", "stride_dilation", "same", "reflect", "valid_stride21"])
def test_int8_conv2d_geometry_equals_the_quantized_conv(kw):
    ember.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(3, 5, 3, **kw), nn.ReLU(), nn.Conv2d(5, 4, (2, 3), padding=1)).eval()
    q = qdq.quantize_static(m, _data((4, 3, 9, 9)), reduce_range=False)  # full-range weights: vpmaddwd
    i8 = to_int8(q)
    assert [n for n, _ in i8.int8_report.converted] == ["module.0", "module.2"]
    assert q.module[0].act_qparams.zero_point != 0  # the input grid's zero point pads the second conv
    for shape in ((2, 3, 9, 9), (3, 9, 9)):  # batched and unbatched
        x = _data(shape, n=1, seed=5)[0]
        ref, step = _run(q, x), float(q.module[2].act_qparams.scale)
        out = _run(i8, x)
        assert out.shape == ref.shape
        _close(ref, out, step)
        _close(ref, _run(ember.jit(i8), x), step)


def test_grouped_convs_stay_float_with_the_reason():
    ember.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    q = qdq.quantize_static(m, _data((4, 4, 6, 6)))
    conv, kept = _names(to_int8(q).int8_report)
    assert conv == ["module.3"] and "groups=2" in kept["module.0"]


def test_a_forward_of_its_own_is_opaque_to_the_walk_and_traced_with_example_input():
    q = qdq.quantize_static(FashionCNN(4, 8, 16).eval(), _data((4, 1, 28, 28), n=2), reduce_range=True)
    static = to_int8(q).int8_report
    conv, kept = _names(static)
    assert conv == ["module.features.4", "module.classifier.4"]  # each after a quantized layer in its Sequential
    assert "FashionCNN" in kept["module.classifier.1"] and "example_input" in kept["module.classifier.1"]
    assert "FashionCNN" in kept["module.features.0"]
    x = _data((4, 1, 28, 28), n=1, seed=4)[0]
    i8 = to_int8(q, example_input=x)
    conv, kept = _names(i8.int8_report)
    assert conv == ["module.features.0", "module.features.4", "module.classifier.1", "module.classifier.4"]
    assert not kept and "traced" in str(i8.int8_report)
    _close(_run(q, x), _run(i8, x), float(q.module.classifier[4].act_qparams.scale))


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.b(self.a(x) * 0.5)  # arithmetic between module calls: off the grid


def test_layers_whose_input_is_not_on_a_known_grid_stay_float_with_the_reason():
    ember.manual_seed(0)
    sig = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 4)).eval()
    rep = to_int8(qdq.quantize_static(sig, _data((8, 8)))).int8_report
    conv, kept = _names(rep)
    assert conv == ["module.0"] and "Sigmoid" in kept["module.2"]
    rep = to_int8(qdq.quantize_static(sig, _data((8, 8)), quantize_input=False)).int8_report
    conv, kept = _names(rep)
    assert not conv and "float model input" in kept["0"] and "Sigmoid" in kept["2"]
    x = _data((8, 8), n=1)[0]
    q = qdq.quantize_static(_Scaled().eval(), _data((8, 8)))
    conv, kept = _names(to_int8(q, example_input=x).int8_report)
    assert conv == ["module.a"] and "between module calls" in kept["module.b"]
    wo = qdq.quantize_weight_only(_mlp())
    conv, kept = _names(to_int8(wo).int8_report)
    assert not conv and "float model input" in kept["0"] and "not quantized (weight-only)" in kept["2"]


def test_a_model_with_no_quantized_layer_is_reported_not_an_error():
    m = _mlp()
    out = to_int8(m)
    rep = out.int8_report
    assert rep.converted == [] and "nothing was converted" in str(rep)
    assert set(dict(rep.kept)) == {"0", "2", "5"} and "not quantized" in dict(rep.kept)["0"]
    x = _data((4, 64), n=1)[0]
    np.testing.assert_array_equal(_run(out, x), _run(m, x))
    assert to_int8(nn.ReLU()).int8_report.converted == []
    again = to_int8(to_int8(qdq.quantize_static(m, _data((16, 64))))).int8_report  # idempotent
    assert not again.converted and set(dict(again.kept).values()) == {"already Int8Linear"}


def _no_hand_offs(monkeypatch):
    import ember.deploy.int8 as i8mod
    monkeypatch.setattr(i8mod, "_hand_offs", lambda model, report: None)


@native
def test_md9_integer_hand_offs_give_the_same_outputs_and_are_reported(monkeypatch):
    q = qdq.quantize_static(_seq_cnn(), _data((8, 2, 8, 8)), reduce_range=True)
    x = _data((5, 2, 8, 8), n=1, seed=7)[0]
    i8 = to_int8(q)
    hand = i8.int8_report.hand_offs
    assert any("QuantStub" in h and "dropped" in h for h in hand)
    assert "module.0 -> module.5 in integers (module.2: ReLU as max(q," in " ".join(hand)
    assert isinstance(i8.quant, nn.Identity) and i8.module[0].emits_codes and i8.module[5].takes_codes
    assert "hand-off" in str(i8.int8_report)
    with monkeypatch.context() as mp:
        _no_hand_offs(mp)
        plain = to_int8(q)
    assert not plain.int8_report.hand_offs and not plain.module[0].emits_codes
    want = _run(plain, x)
    np.testing.assert_array_equal(_run(i8, x), want)  # the same integers: the same outputs, exactly
    np.testing.assert_array_equal(_run(ember.jit(i8), x), want)
    np.testing.assert_array_equal(_run(ember.jit(plain), x), want)


def test_no_hand_off_through_a_forward_of_its_own_or_into_a_shared_module(monkeypatch):
    x = _data((8, 8), n=1)[0]
    q = qdq.quantize_static(_Scaled().eval(), _data((8, 8)))
    i8 = to_int8(q, example_input=x)
    assert not any(m.emits_codes for m in i8.modules() if hasattr(m, "emits_codes"))
    import ember.deploy.int8 as i8mod
    ember.manual_seed(3)
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)).eval()
    q = qdq.quantize_static(m, _data((8, 8)))
    with monkeypatch.context() as mp:
        _no_hand_offs(mp)
        i8 = to_int8(q)
    seq = i8.module
    seq[4] = seq[2]  # one Int8Linear at two places
    rep = i8mod.Int8Report()
    i8mod._hand_offs(i8, rep)
    assert not seq[2].emits_codes and not seq[2].takes_codes and not seq[0].emits_codes
    assert not [h for h in rep.hand_offs if "in integers" in h]
