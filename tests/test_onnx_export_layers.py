"""ONNX export of every `ember.nn` layer (book ch. 8.2, checklist MD-1): each layer is built with a fixed
seed, put in eval mode, run eagerly under `ember.no_grad()` on a fixed random input, exported, checked
with onnx's full checker and run in onnxruntime, whose outputs must match ember's.

Transposed convolutions (MD-1) export as ONNX ConvTranspose with PyTorch's attributes and weight layout,
and their bias and a following BatchNorm fold into it (MD-3).

Not exported, and why:
- the losses (`loss.py`, `CTCLoss`): training objectives, not inference layers;
- `Dropout` (and a Transformer's dropout) in training mode: it draws random bits (eval mode is covered);
- BatchNorm in training mode: refused by design (`tests/test_onnx_export.py`, MD-3);
- `ModuleList`, `ModuleDict`, `ParameterList`, `ParameterDict`: containers with no forward;
- `Embedding(max_norm=...)`, `Embedding(sparse=True)`: not supported by ember itself.

float64 convolutions are checked by re-import and onnx's reference evaluator rather than onnxruntime,
whose CPU Conv, ConvTranspose and Erf (exact GELU) kernels are float32-only.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import ember  # noqa: E402
import ember.onnx as eonnx  # noqa: E402
from ember import nn  # noqa: E402
from ember.ops import lax  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def _x(*shape, seed=0, dtype=np.float32, scale=1.0):
    return ember.tensor((np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype))


def _ints(high, *shape, seed=0):
    return ember.tensor(np.random.default_rng(seed).integers(0, high, shape))


def _noncontig(*shape, seed=0):
    """A transposed view of shape `shape` (its last two dims swapped in memory)."""
    return _x(*shape[:-2], shape[-1], shape[-2], seed=seed).transpose(-1, -2)


def _flat(out) -> list:
    if isinstance(out, (tuple, list)):
        return [o for item in out for o in _flat(item)]
    return [out]


def _feeds(sess, inputs):
    names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    given = {n: np.ascontiguousarray(x.numpy()) for n, x in zip(names, inputs)}
    return {i.name: given[i.name] for i in sess.get_inputs()}


def export_and_compare(model, inputs, path, rtol=RTOL, atol=ATOL, **kw):
    """Export `model` at `inputs` (a Tensor or tuple), check it, and compare onnxruntime with eager ember."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    with ember.no_grad():
        want = [o.numpy() for o in _flat(model(*inputs))]
    proto = eonnx.export(model, inputs, path, **kw)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, _feeds(sess, inputs))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return proto


class Call(nn.Module):
    """`module(*inputs, **kwargs)`: fixed keyword arguments (masks, flags) for an exported layer."""

    def __init__(self, module, **kwargs):
        super().__init__()
        self.module, self.kwargs = module, kwargs

    def forward(self, *inputs):
        return self.module(*inputs, **self.kwargs)


class LSTMWithState(nn.Module):
    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm

    def forward(self, x, h0, c0):
        return self.lstm(x, (h0, c0))


class PoolUnpool(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool, self.unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)

    def forward(self, x):
        y, idx = self.pool(x)
        return self.unpool(y, idx), idx


def _causal(n):
    return ember.tensor(np.triu(np.full((n, n), -np.inf, np.float32), 1))


def _bn(c):
    bn = nn.BatchNorm2d(c)
    with ember.no_grad():
        bn.running_mean.copy_(_x(c, seed=11))
        bn.running_var.copy_(ember.tensor(np.random.default_rng(12).uniform(0.5, 2, c).astype(np.float32)))
        bn.weight.copy_(_x(c, seed=13))
        bn.bias.copy_(_x(c, seed=14))
    return bn


# id: (layer factory, input factory[, tolerance]); the factory runs under ember.manual_seed(0)
LAYERS = {
    # ---- recurrent
    "rnn_tanh": (lambda: nn.RNN(4, 6), lambda: _x(5, 3, 4)),
    "rnn_relu_2layer": (lambda: nn.RNN(4, 6, 2, nonlinearity="relu"), lambda: _x(5, 3, 4)),
    "lstm_2layer_batch_first": (lambda: nn.LSTM(4, 6, 2, batch_first=True), lambda: _x(3, 5, 4)),
    "lstm_batch1": (lambda: nn.LSTM(4, 6, 2, batch_first=True), lambda: _x(1, 5, 4)),
    "lstm_noncontig": (lambda: nn.LSTM(4, 6, 2, batch_first=True), lambda: _noncontig(3, 5, 4)),
    "lstm_proj_bidir": (lambda: nn.LSTM(4, 6, bidirectional=True, proj_size=3), lambda: _x(5, 2, 4)),
    "lstm_initial_state": (lambda: LSTMWithState(nn.LSTM(4, 6, 2)),
                           lambda: (_x(5, 3, 4), _x(2, 3, 6, seed=1), _x(2, 3, 6, seed=2))),
    "gru_bidir": (lambda: nn.GRU(4, 6, bidirectional=True), lambda: _x(5, 3, 4)),
    "gru_bidir_batch_first_2layer": (lambda: nn.GRU(4, 6, 2, batch_first=True, bidirectional=True),
                                     lambda: _x(3, 5, 4)),
    "rnn_cell": (lambda: nn.RNNCell(4, 6), lambda: _x(3, 4)),
    "rnn_cell_hidden": (lambda: nn.RNNCell(4, 6, nonlinearity="relu"), lambda: (_x(3, 4), _x(3, 6, seed=1))),
    "lstm_cell": (lambda: nn.LSTMCell(4, 6), lambda: _x(3, 4)),
    "gru_cell": (lambda: nn.GRUCell(4, 6), lambda: _x(3, 4)),
    "gru_cell_unbatched": (lambda: nn.GRUCell(4, 6), lambda: _x(4)),
    # ---- convolution
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), lambda: _x(2, 4, 9)),
    "conv2d_groups_dilation": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), lambda: _x(2, 4, 7, 7)),
    "conv2d_same": (lambda: nn.Conv2d(3, 4, (3, 4), padding="same"), lambda: _x(2, 3, 6, 7)),
    "conv2d_reflect": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), lambda: _x(2, 3, 6, 6)),
    "conv2d_replicate": (lambda: nn.Conv2d(3, 4, 3, padding=2, padding_mode="replicate"), lambda: _x(2, 3, 6, 6)),
    "conv2d_circular": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), lambda: _x(2, 3, 6, 6)),
    "conv2d_batch1": (lambda: nn.Conv2d(3, 4, 3), lambda: _x(1, 3, 6, 6)),
    "conv2d_noncontig": (lambda: nn.Conv2d(3, 4, 3, stride=2), lambda: _noncontig(2, 3, 7, 6)),
    "conv3d": (lambda: nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=1), lambda: _x(2, 2, 4, 6, 6)),
    "conv3d_groups": (lambda: nn.Conv3d(4, 4, 2, groups=4, bias=False), lambda: _x(1, 4, 3, 4, 4)),
    "convT1d_s1": (lambda: nn.ConvTranspose1d(4, 6, 3), lambda: _x(2, 4, 7)),
    "convT1d_s2_pad_outpad": (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1),
                              lambda: _x(2, 4, 7)),
    "convT1d_s3_dilation_groups": (lambda: nn.ConvTranspose1d(4, 6, 3, stride=3, padding=2, output_padding=2,
                                                              groups=2, dilation=2), lambda: _x(2, 4, 5)),
    "convT1d_nobias": (lambda: nn.ConvTranspose1d(3, 2, 4, stride=2, bias=False), lambda: _x(2, 3, 6)),
    "convT1d_outpad_below_dilation": (lambda: nn.ConvTranspose1d(2, 3, 3, output_padding=1, dilation=2),
                                      lambda: _x(2, 2, 6)),
    "convT2d_s2": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
                   lambda: _x(2, 4, 5, 5)),
    "convT2d_s3_groups": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=3, padding=1, groups=2),
                          lambda: _x(2, 4, 4, 5)),
    "convT2d_rect": (lambda: nn.ConvTranspose2d(3, 4, (2, 3), stride=(2, 1), padding=(0, 1),
                                                output_padding=(1, 0), dilation=(1, 2)), lambda: _x(2, 3, 4, 5)),
    "convT2d_depthwise": (lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, groups=4, bias=False),
                          lambda: _x(2, 4, 3, 3)),
    "convT2d_batch1": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1), lambda: _x(1, 4, 5, 5)),
    "convT2d_noncontig": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
                          lambda: _noncontig(2, 4, 5, 6)),
    "convT3d": (lambda: nn.ConvTranspose3d(2, 4, 3, stride=2, padding=1, output_padding=1),
                lambda: _x(2, 2, 3, 3, 4)),
    "convT2d_unbatched": (lambda: nn.ConvTranspose2d(3, 2, 3, stride=2), lambda: _x(3, 4, 4)),
    "conv_bn_convT_bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _bn(4), nn.ReLU(),
                                               nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), _bn(6), nn.Tanh()),
                         lambda: _x(2, 3, 5, 5)),
    # ---- normalisation
    "batchnorm1d": (lambda: nn.BatchNorm1d(5), lambda: _x(4, 5)),
    "batchnorm2d": (lambda: _bn(3), lambda: _x(2, 3, 4, 4)),
    "groupnorm": (lambda: nn.GroupNorm(2, 6), lambda: _x(2, 6, 4, 5)),
    "groupnorm_noaffine_1d": (lambda: nn.GroupNorm(3, 6, affine=False), lambda: _x(2, 6, 7)),
    "instancenorm1d_affine": (lambda: nn.InstanceNorm1d(3, affine=True), lambda: _x(2, 3, 7)),
    "instancenorm2d": (lambda: nn.InstanceNorm2d(3), lambda: _x(2, 3, 5, 6)),
    "instancenorm2d_running": (lambda: nn.InstanceNorm2d(3, track_running_stats=True), lambda: _x(2, 3, 5, 6)),
    "instancenorm3d": (lambda: nn.InstanceNorm3d(2, affine=True), lambda: _x(2, 2, 3, 4, 4)),
    "layernorm": (lambda: nn.LayerNorm(8), lambda: _x(2, 3, 8)),
    "layernorm_2d_nobias": (lambda: nn.LayerNorm([3, 8], bias=False), lambda: _x(2, 3, 8)),
    "rmsnorm": (lambda: nn.RMSNorm(8), lambda: _x(2, 3, 8)),
    "rmsnorm_eps_2d": (lambda: nn.RMSNorm([3, 8], eps=1e-3), lambda: _x(2, 3, 8)),
    # ---- attention and transformers
    "multihead_attention": (lambda: nn.MultiheadAttention(8, 2, batch_first=True),
                            lambda: (_x(2, 5, 8), _x(2, 6, 8, seed=1), _x(2, 6, 8, seed=2))),
    "mha_causal_kdim": (lambda: Call(nn.MultiheadAttention(8, 2, kdim=4, vdim=6), attn_mask=_causal(5)),
                        lambda: (_x(5, 2, 8), _x(5, 2, 4, seed=1), _x(5, 2, 6, seed=2))),
    "encoder_layer": (lambda: nn.TransformerEncoderLayer(16, 2, 32), lambda: _x(5, 2, 16)),
    "encoder_layer_norm_first_gelu": (lambda: nn.TransformerEncoderLayer(16, 4, 32, activation="gelu",
                                                                         batch_first=True, norm_first=True),
                                      lambda: _x(2, 5, 16)),
    "encoder_layer_masked": (lambda: Call(nn.TransformerEncoderLayer(16, 2, 32), src_mask=_causal(5)),
                             lambda: _x(5, 2, 16)),
    "decoder_layer": (lambda: nn.TransformerDecoderLayer(16, 2, 32), lambda: (_x(4, 2, 16), _x(5, 2, 16, seed=1))),
    "decoder_layer_causal_batch_first": (
        lambda: Call(nn.TransformerDecoderLayer(16, 2, 32, batch_first=True, norm_first=True), tgt_mask=_causal(4)),
        lambda: (_x(2, 4, 16), _x(2, 5, 16, seed=1))),
    "encoder": (lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32), 2, nn.LayerNorm(16)),
                lambda: _x(5, 2, 16)),
    "decoder": (lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32), 2),
                lambda: (_x(4, 2, 16), _x(5, 2, 16, seed=1))),
    "transformer": (lambda: nn.Transformer(16, 2, 2, 2, 32), lambda: (_x(5, 2, 16), _x(4, 2, 16, seed=1))),
    # ---- resampling and pooling
    "upsample_nearest": (lambda: nn.Upsample(scale_factor=2), lambda: _x(2, 3, 4, 5)),
    "upsample_nearest_size": (lambda: nn.Upsample(size=(7, 3)), lambda: _x(2, 3, 4, 5)),
    "upsample_nearest_exact": (lambda: nn.Upsample(scale_factor=1.5, mode="nearest-exact"), lambda: _x(2, 3, 4, 5)),
    "upsample_bilinear": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), lambda: _x(2, 3, 4, 5)),
    "upsample_bilinear_align": (lambda: nn.Upsample(size=(7, 9), mode="bilinear", align_corners=True),
                                lambda: _x(2, 3, 4, 5)),
    "upsample_bicubic": (lambda: nn.Upsample(scale_factor=2, mode="bicubic"), lambda: _x(1, 2, 4, 5)),
    "upsample_linear_1d": (lambda: nn.Upsample(scale_factor=3, mode="linear", align_corners=True),
                           lambda: _x(2, 3, 5)),
    "upsample_trilinear": (lambda: nn.Upsample(scale_factor=2, mode="trilinear"), lambda: _x(1, 2, 2, 3, 3)),
    "upsample_area": (lambda: nn.Upsample(size=(3, 2), mode="area"), lambda: _x(2, 3, 7, 5)),
    "upsampling_nearest2d": (lambda: nn.UpsamplingNearest2d(scale_factor=2), lambda: _x(1, 2, 3, 3)),
    "upsampling_bilinear2d": (lambda: nn.UpsamplingBilinear2d(scale_factor=2), lambda: _x(1, 2, 3, 3)),
    "pixel_shuffle": (lambda: nn.PixelShuffle(2), lambda: _x(2, 8, 3, 4)),
    "pixel_unshuffle": (lambda: nn.PixelUnshuffle(2), lambda: _x(2, 2, 4, 6)),
    "fold": (lambda: nn.Fold((4, 5), 2, padding=1), lambda: _x(2, 12, 30)),
    "unfold": (lambda: nn.Unfold(3, dilation=1, padding=1, stride=2), lambda: _x(2, 3, 5, 6)),
    "maxpool2d": (lambda: nn.MaxPool2d(3, stride=2, padding=1), lambda: _x(2, 3, 7, 8)),
    "maxpool2d_ceil_dilation": (lambda: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True), lambda: _x(2, 3, 7, 8)),
    "maxpool2d_unpool": (PoolUnpool, lambda: _x(2, 3, 6, 8)),
    "avgpool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), lambda: _x(2, 3, 7, 8)),
    "avgpool2d_ceil": (lambda: nn.AvgPool2d(2, ceil_mode=True), lambda: _x(2, 3, 5, 5)),
    "adaptive_avgpool2d": (lambda: nn.AdaptiveAvgPool2d((3, 2)), lambda: _x(2, 3, 7, 5)),
    "adaptive_avgpool2d_global": (lambda: nn.AdaptiveAvgPool2d(1), lambda: _x(2, 3, 7, 5)),
    "adaptive_maxpool2d": (lambda: nn.AdaptiveMaxPool2d((3, 4)), lambda: _x(2, 3, 7, 9)),
    "adaptive_maxpool2d_indices": (lambda: nn.AdaptiveMaxPool2d(2, return_indices=True), lambda: _x(2, 3, 5, 5)),
    # ---- activations
    "relu": (nn.ReLU, lambda: _x(2, 3, 4)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), lambda: _x(2, 3, 4)),
    "elu": (lambda: nn.ELU(0.7), lambda: _x(2, 3, 4)),
    "celu": (lambda: nn.CELU(1.3), lambda: _x(2, 3, 4)),
    "selu": (nn.SELU, lambda: _x(2, 3, 4)),
    "gelu": (nn.GELU, lambda: _x(2, 3, 4)),
    "gelu_tanh": (lambda: nn.GELU("tanh"), lambda: _x(2, 3, 4)),
    "silu": (nn.SiLU, lambda: _x(2, 3, 4)),
    "mish": (nn.Mish, lambda: _x(2, 3, 4, scale=4)),
    "hardswish": (nn.Hardswish, lambda: _x(2, 3, 4, scale=4)),
    "hardsigmoid": (nn.Hardsigmoid, lambda: _x(2, 3, 4, scale=4)),
    "hardtanh": (lambda: nn.Hardtanh(-0.5, 1.5), lambda: _x(2, 3, 4)),
    "relu6": (nn.ReLU6, lambda: _x(2, 3, 4, scale=5)),
    "prelu": (nn.PReLU, lambda: _x(2, 3, 4)),
    "prelu_channels": (lambda: nn.PReLU(3, init=0.1), lambda: _x(2, 3, 4, 4)),
    "softplus": (nn.Softplus, lambda: _x(2, 3, 4, scale=10)),
    "softplus_beta": (lambda: nn.Softplus(beta=2, threshold=5), lambda: _x(2, 3, 4, scale=5)),
    "sigmoid": (nn.Sigmoid, lambda: _x(2, 3, 4)),
    "tanh": (nn.Tanh, lambda: _x(2, 3, 4)),
    "softmax": (lambda: nn.Softmax(dim=1), lambda: _x(2, 3, 4)),
    "log_softmax": (lambda: nn.LogSoftmax(dim=-1), lambda: _x(2, 3, 4)),
    "log_sigmoid": (nn.LogSigmoid, lambda: _x(2, 3, 4, scale=10)),
    "softsign": (nn.Softsign, lambda: _x(2, 3, 4)),
    "tanhshrink": (nn.Tanhshrink, lambda: _x(2, 3, 4)),
    # ---- linear, embedding, shape
    "linear": (lambda: nn.Linear(4, 3), lambda: _x(2, 5, 4)),
    "linear_nobias": (lambda: nn.Linear(4, 3, bias=False), lambda: _x(2, 4)),
    "identity": (nn.Identity, lambda: _x(2, 4)),
    "flatten": (nn.Flatten, lambda: _x(2, 3, 4)),
    "unflatten": (lambda: nn.Unflatten(1, (2, 3)), lambda: _x(2, 6)),
    "dropout_eval": (lambda: nn.Dropout(0.5), lambda: _x(2, 4)),
    "embedding": (lambda: nn.Embedding(10, 4), lambda: _ints(10, 2, 5)),
    "embedding_padding_idx": (lambda: nn.Embedding(10, 4, padding_idx=0), lambda: _ints(10, 3, 4)),
    "sequential_mlp": (lambda: nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Dropout(), nn.Linear(8, 2)),
                       lambda: _x(3, 4)),
}


@pytest.mark.parametrize("case", list(LAYERS))
def test_md1_layer_exports_and_matches_onnxruntime(tmp_path, case):
    """MD-1: the layer exports, passes onnx's full checker and onnxruntime reproduces eager ember."""
    make_layer, make_input = LAYERS[case]
    ember.manual_seed(0)
    model = make_layer().eval()
    export_and_compare(model, make_input(), tmp_path / f"{case}.onnx")


def _ops(proto):
    return [n.op_type for n in proto.graph.node]


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("cfg", [dict(stride=1), dict(stride=2, padding=1, output_padding=1),
                                 dict(stride=3, padding=2, output_padding=2, dilation=2, groups=2)])
def test_md1_conv_transpose_maps_to_onnx_attributes(tmp_path, nd, cfg):
    """MD-1: ConvTranspose{1,2,3}d -> one ConvTranspose with PyTorch's attributes and the layer's own weight."""
    ember.manual_seed(0)
    layer = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[nd - 1](4, 6, 3, **cfg).eval()
    proto = export_and_compare(layer, _x(2, 4, *(4,) * nd), tmp_path / "ct.onnx")
    assert _ops(proto) == ["ConvTranspose"]
    a = _attrs(proto.graph.node[0])
    assert a["strides"] == [cfg["stride"]] * nd and a["pads"] == [cfg.get("padding", 0)] * (2 * nd)
    assert a["output_padding"] == [cfg.get("output_padding", 0)] * nd
    assert a["dilations"] == [cfg.get("dilation", 1)] * nd and a["group"] == cfg.get("groups", 1)
    assert a["kernel_shape"] == [3] * nd
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    np.testing.assert_array_equal(inits[proto.graph.node[0].input[1]], layer.weight.detach().numpy())
    np.testing.assert_array_equal(inits[proto.graph.node[0].input[2]], layer.bias.detach().numpy())


def test_md3_conv_transpose_bn_folds(tmp_path):
    """MD-3: eval-mode ConvTranspose (groups=2) -> BN folds into the ConvTranspose's weight and bias."""
    ember.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), _bn(6)).eval()
    proto = export_and_compare(model, _x(2, 4, 5, 5), tmp_path / "f.onnx")
    assert _ops(proto) == ["ConvTranspose"]
    assert {"0.weight.folded", "0.bias.folded"} <= {i.name for i in proto.graph.initializer}


def test_md1_conv_transpose_dynamic_batch(tmp_path):
    """MD-1: a ConvTranspose model traced at batch 3 runs at batches 1 and 5 (dynamic batch axis)."""
    ember.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), nn.ReLU()).eval()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}}
    eonnx.export(model, _x(3, 3, 4, 4), tmp_path / "d.onnx", dynamic_axes=axes)
    sess = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    for b in (1, 5):
        x = _x(b, 3, 4, 4, seed=b)
        with ember.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("nd", [1, 2])
def test_md1_conv_transpose_float64(tmp_path, nd):
    """MD-1: float64 ConvTranspose exports in float64; checked by re-import and onnx's reference evaluator
    (onnxruntime has no float64 ConvTranspose kernel, and the reference one mishandles groups > 1)."""
    from onnx.reference import ReferenceEvaluator
    ember.manual_seed(0)
    cls = (nn.ConvTranspose1d, nn.ConvTranspose2d)[nd - 1]
    for groups in (1, 2):
        layer = cls(4, 6, 3, stride=2, padding=1, output_padding=1, groups=groups, dtype=ember.float64).eval()
        x = _x(2, 4, *(5,) * nd, dtype=np.float64)
        with ember.no_grad():
            want = layer(x).numpy()
            proto = eonnx.export(layer, x, tmp_path / "f64.onnx")
            onnx.checker.check_model(proto, full_check=True)
            assert _ops(proto) == ["ConvTranspose"]
            assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
            np.testing.assert_allclose(eonnx.load(str(tmp_path / "f64.onnx"))(x).numpy(), want, rtol=1e-12, atol=1e-12)
        if groups == 1:
            got = ReferenceEvaluator(proto).run(None, {"input": x.numpy()})[0]
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


_F64 = dict(dtype=ember.float64)
F64_LAYERS = {
    "lstm": (lambda: nn.LSTM(4, 6, 2, batch_first=True, **_F64), (3, 5, 4)),
    "gru": (lambda: nn.GRU(4, 6, bidirectional=True, **_F64), (5, 3, 4)),
    "layernorm_gelu_tanh": (lambda: nn.Sequential(nn.LayerNorm(8, **_F64), nn.GELU("tanh")), (2, 8)),
    "transformer_layer": (lambda: nn.TransformerEncoderLayer(8, 2, 16, **_F64), (4, 2, 8)),
}


@pytest.mark.parametrize("case", list(F64_LAYERS))
def test_md1_float64_layers(tmp_path, case):
    """MD-1: float64 recurrent, normalisation and attention layers export in float64 and match onnxruntime."""
    make_layer, shape = F64_LAYERS[case]
    ember.manual_seed(0)
    export_and_compare(make_layer().eval(), _x(*shape, dtype=np.float64), tmp_path / "f64.onnx", rtol=1e-12,
                       atol=1e-12)


# conv_general with input (lhs) dilation that no nn layer produces: window strides, padding beyond the
# kernel's reach at either end, cropping, rhs dilation and groups
RAW_CONVS = [
    dict(s=(2,), ws=(1,), d=(1,), g=1, pads=[(1, 2)], x=(2, 2, 5), k=(3,)),
    dict(s=(3,), ws=(2,), d=(2,), g=2, pads=[(-2, 3)], x=(2, 4, 4), k=(2,)),
    dict(s=(2,), ws=(1,), d=(1,), g=2, pads=[(4, 4)], x=(2, 2, 3), k=(2,)),
    dict(s=(2, 3), ws=(1, 2), d=(1, 2), g=1, pads=[(4, 3), (-2, -2)], x=(2, 1, 3, 4), k=(1, 2)),
    dict(s=(2, 1), ws=(2, 2), d=(2, 2), g=2, pads=[(4, 2), (3, 4)], x=(2, 4, 3, 3), k=(2, 2)),
]


@pytest.mark.parametrize("cfg", RAW_CONVS, ids=[f"raw{i}" for i in range(len(RAW_CONVS))])
def test_md1_lhs_dilated_conv_general(tmp_path, cfg):
    """MD-1: any conv_general with lhs dilation exports as ConvTranspose (+ Pad / strided Slice), from a
    constant weight (regrouped and flipped with numpy at export) or a graph-input weight (as nodes)."""
    x = _x(*cfg["x"])
    w = _x(3 * cfg["g"], cfg["x"][1] // cfg["g"], *cfg["k"], seed=1)

    def fn(x, w):
        return lax.conv_general(x, w, cfg["ws"], cfg["pads"], cfg["s"], cfg["d"], cfg["g"])

    proto = export_and_compare(fn, (x, w), tmp_path / "in.onnx")
    assert "ConvTranspose" in _ops(proto) and {"Transpose", "Slice"} <= set(_ops(proto))
    proto = export_and_compare(lambda x: fn(x, w), x, tmp_path / "const.onnx")
    assert "ConvTranspose" in _ops(proto) and "Transpose" not in _ops(proto)


def test_md1_conv_transpose_weight_computed_in_graph(tmp_path):
    """MD-1: a ConvTranspose weight computed in the graph feeds ConvTranspose as is (no regroup/flip nodes)."""
    ember.manual_seed(0)
    b = _x(6)

    def fn(x, w):
        return nn.functional.conv_transpose2d(x, ember.tanh(w), b, stride=2, padding=1, groups=2)

    proto = export_and_compare(fn, (_x(2, 4, 5, 5), _x(4, 3, 3, 3, seed=1)), tmp_path / "c.onnx")
    ops = _ops(proto)
    assert ops.count("ConvTranspose") == 1 and "Conv" not in ops and "Transpose" not in ops  # weight used as is
