"""ONNX export (`ember.onnx.export`, book ch. 8.2): checklist MD-1 (conversion, named failures),
MD-2 (offline constant folding) and MD-3 (Conv+BN folding). Models are checked with onnx's full
checker, run in onnxruntime at a batch size other than the traced one (dynamic batch axis) and
re-imported with `ember.onnx.load`.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import ember  # noqa: E402
import ember.nn.functional as F  # noqa: E402
import ember.onnx as eonnx  # noqa: E402
from ember import nn  # noqa: E402
from ember.recipes.fashion_mnist import FashionCNN  # noqa: E402

TOL = 1e-5


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(20, 32), nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = F.gelu(self.l2(F.relu(self.l1(x))))
        logits = self.l3(h)
        return F.softmax(logits, dim=-1), F.log_softmax(logits, dim=-1)


class GPTBlock(nn.Module):
    """Token + position embedding, pre-LN causal self-attention and a tanh-GELU MLP, LM head."""

    def __init__(self, vocab=50, d=32, heads=4, block=16):
        super().__init__()
        self.heads = heads
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(ember.arange(T))
        C = x.shape[-1]
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=-1)
        q, k, v = (t.reshape(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return self.head(x)


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _eager(model, *xs):
    with ember.no_grad():
        return [o.numpy() for o in _as_tuple(model(*xs))]


def _ort(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)


def _roundtrip(model, make_input, path, n_out=1):
    outs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    axes = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outs}}
    proto = eonnx.export(model, make_input(3), path, dynamic_axes=axes)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert proto.opset_import[0].domain == "" and proto.opset_import[0].version == 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = make_input(5)
    want = _eager(model, x)
    _close(_ort(path, {"input": x.numpy()}), want)
    loaded = eonnx.load(str(path))
    with ember.no_grad():
        _close([o.numpy() for o in _as_tuple(loaded(x))], want)
    return proto


def test_md1_export_flagship_cnn(tmp_path):
    """MD-1: FashionCNN (eval) exports, checks, runs in ORT at another batch size and re-imports."""
    ember.manual_seed(0)
    model = FashionCNN().eval()
    proto = _roundtrip(model, lambda b: ember.randn(b, 1, 28, 28), tmp_path / "cnn.onnx")
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 2 and ops.count("MaxPool") == 2 and "BatchNormalization" not in ops
    assert {"features.0.weight.folded", "features.4.weight.folded"} <= {i.name for i in proto.graph.initializer}
    assert "classifier.1.weight.folded" in {i.name for i in proto.graph.initializer}  # transposed


def test_md1_export_mlp(tmp_path):
    """MD-1: an MLP with ReLU/GELU and two outputs (softmax, log_softmax)."""
    ember.manual_seed(1)
    _roundtrip(MLP().eval(), lambda b: ember.randn(b, 20), tmp_path / "mlp.onnx", n_out=2)


def test_md1_export_gpt_block(tmp_path):
    """MD-1: embeddings, layer norm, causal attention, tanh-GELU: batch 3 traced, batch 5 run."""
    ember.manual_seed(2)
    rng = np.random.default_rng(0)
    proto = _roundtrip(GPTBlock().eval(), lambda b: ember.tensor(rng.integers(0, 50, (b, 16))),
                       tmp_path / "gpt.onnx")
    assert {"Gather", "MatMul", "Where", "Tanh"} <= {n.op_type for n in proto.graph.node}


def test_md1_function_with_merged_batch_reshape(tmp_path):
    """MD-1: a plain function of two inputs; a reshape that merges the batch dim stays dynamic."""
    w = ember.randn(8, 8)

    def fn(x, y):
        b, t, c = x.shape
        h = F.relu(x.reshape(b * t, c) @ w)
        return (h.reshape(b, t, c) * y).sum(dim=1), ember.cat([x, x], dim=2)

    make = lambda b: (ember.randn(b, 4, 8), ember.randn(b, 1, 8))  # noqa: E731
    axes = {"x": {0: "b"}, "y": {0: "b"}}
    eonnx.export(fn, make(3), tmp_path / "fn.onnx", input_names=["x", "y"], dynamic_axes=axes)
    x, y = make(6)
    _close(_ort(tmp_path / "fn.onnx", {"x": x.numpy(), "y": y.numpy()}), _eager(fn, x, y))


def test_md2_constant_subexpression_becomes_initializer(tmp_path):
    """MD-2: ops whose inputs are all constants are evaluated at export time."""
    ember.manual_seed(3)

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(ember.randn(16))

        def forward(self, x):
            return x * ember.exp(self.w * 2 + 1) - ember.arange(16).float().sqrt()

    model, x = Scaled(), ember.randn(4, 16)
    raw = eonnx.export(model, x, tmp_path / "raw.onnx", constant_folding=False)
    folded = eonnx.export(model, x, tmp_path / "folded.onnx")
    assert len(folded.graph.node) < len(raw.graph.node)
    assert [n.op_type for n in folded.graph.node] == ["Mul", "Sub"]
    consts = {i.name for i in folded.graph.initializer}
    assert not any(all(i in consts for i in n.input) for n in folded.graph.node)
    want = _eager(model, x)
    _close(_ort(tmp_path / "folded.onnx", {"input": x.numpy()}), want)
    _close(_ort(tmp_path / "raw.onnx", {"input": x.numpy()}), want)


def _conv_bn():
    ember.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    bn = model[1]
    with ember.no_grad():
        bn.running_mean.copy_(ember.randn(8))
        bn.running_var.copy_(ember.rand(8) + 0.5)
        bn.weight.copy_(ember.randn(8))
        bn.bias.copy_(ember.randn(8))
    return model.eval()


def test_md3_conv_bn_folding(tmp_path):
    """MD-3: eval-mode conv->BN becomes one Conv (0 BN/affine nodes) with equal output (1e-5)."""
    model, x = _conv_bn(), ember.randn(2, 3, 10, 10)
    folded = eonnx.export(model, x, tmp_path / "f.onnx", dynamic_axes={"input": [0]})
    plain = eonnx.export(model, x, tmp_path / "p.onnx", fold_conv_bn=False)
    ops = [n.op_type for n in folded.graph.node]
    assert ops.count("Conv") == 1 and not {"BatchNormalization", "Mul", "Sub", "Add", "Div"} & set(ops)
    assert {"Mul", "Sub"} <= {n.op_type for n in plain.graph.node}
    x5 = ember.randn(5, 3, 10, 10)
    want = _eager(model, x5)
    _close(_ort(tmp_path / "f.onnx", {"input": x5.numpy()}), want)
    with ember.no_grad():
        _close([eonnx.load(str(tmp_path / "f.onnx"))(x5).numpy()], want)


def test_md3_folding_refused_in_training_mode(tmp_path):
    """MD-3: folding is deployment-only: a model in training mode is refused."""
    model = _conv_bn().train()
    with pytest.raises(eonnx.ExportError, match="training mode"):
        eonnx.export(model, ember.randn(2, 3, 10, 10), tmp_path / "t.onnx")
    assert not os.path.exists(tmp_path / "t.onnx")


@pytest.fixture
def unsupported_primitive():
    from ember.ops.core import REGISTRY, Primitive, register
    prim = register(Primitive("md1_not_exportable", impl=lambda x: x.copy(), abstract=lambda x: x))
    yield prim
    REGISTRY.pop("md1_not_exportable", None)  # the registry is global: leave it as found


def test_md1_unsupported_primitive_names_op_and_line(tmp_path, unsupported_primitive):
    """MD-1: an unconvertible primitive raises ExportError naming it and the user's source line."""
    prim = unsupported_primitive

    def fn(x):
        return prim.bind(x) + 1  # the line the error names

    line = fn.__code__.co_firstlineno + 1
    with pytest.raises(eonnx.ExportError) as info:
        eonnx.export(fn, ember.randn(3), tmp_path / "u.onnx")
    msg = str(info.value)
    assert "md1_not_exportable" in msg and f"{os.path.basename(__file__)}:{line}" in msg
    assert isinstance(info.value, ember.EmberError)
    assert not os.path.exists(tmp_path / "u.onnx")


def test_opset_below_17_refused(tmp_path):
    with pytest.raises(eonnx.ExportError, match="opset 13"):
        eonnx.export(MLP(), ember.randn(2, 20), tmp_path / "o.onnx", opset=13)


def test_opset_18_reductions(tmp_path):
    model, x = MLP().eval(), ember.randn(3, 20)
    proto = eonnx.export(model, x, tmp_path / "m18.onnx", opset=18)
    assert proto.opset_import[0].version == 18
    _close(_ort(tmp_path / "m18.onnx", {"input": x.numpy()}), _eager(model, x))


def test_export_writes_atomically_and_load_rejects_truncated_file(tmp_path):
    """The file appears whole (no temp files left); a truncated copy gives a clear OnnxError."""
    path = tmp_path / "mlp.onnx"
    eonnx.export(MLP().eval(), ember.randn(2, 20), path)
    assert os.listdir(tmp_path) == ["mlp.onnx"]
    data = path.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(eonnx.OnnxError, match="truncated.onnx"):
        eonnx.load(str(bad))


def _w(*shape):
    return ember.tensor(np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32))


_W44, _K = _w(4, 4), _w(6, 3, 3, 3)
PRIMITIVE_CASES = {
    "arith": lambda x: (ember.floor_divide(x, 0.7), ember.remainder(x, 0.6), ember.pow(ember.abs(x) + 1, 1.5),
                        ember.maximum(x, 0.1), ember.minimum(x, -0.1), x / 3),
    "unary": lambda x: (ember.trunc(x * 3), ember.log1p(ember.abs(x)), ember.expm1(x), ember.sign(x),
                        ember.round(x * 4), ember.sqrt(ember.abs(x)).sin().cos(), F.silu(x), x.sigmoid()),
    "compare": lambda x: (ember.where(ember.logical_and(x > 0, ember.logical_not(x > 1)), x, -x),
                          ember.ne(x, x).float(), ember.isnan(x), (x >= 0.5).long() + (x < -0.5).int()),
    "reduce": lambda x: (x.sum(dim=1), ember.prod(x, dim=-1), ember.amin(x, dim=1), x.max(dim=-1)[0],
                         ember.argmax(x, dim=1), ember.all(x > -9, dim=1), ember.any(x > 1, dim=-1),
                         ember.cumsum(x, dim=1), x.var(dim=1), x.mean(dim=1)),
    "shape": lambda x: (ember.flip(x, [1]), F.pad(x, (1, 2)), ember.cat([x, x * 2], dim=1), x[:, 1:3],
                        x.reshape(x.shape[0], 2, 2).transpose(1, 2), x @ _W44,
                        x + ember.arange(4).float() + ember.full((4,), 0.5)),
    "index": lambda x: (ember.gather(x, 1, ember.argmax(x, dim=1, keepdim=True)), x[:, ember.tensor([3, 0, 0])],
                        ember.index_select(x, 1, ember.tensor([2, 1]))),
    "batched_dot": lambda x: (ember.matmul(x.reshape(-1, 2, 2), x.reshape(-1, 2, 2)), x @ _W44[0], _W44 @ x.T),
    "conv_pool": lambda x: (F.conv2d(x.reshape(-1, 1, 2, 2).expand(-1, 3, 2, 2), _K[:, :, :2, :2], padding=1),
                            F.avg_pool2d(F.conv2d(x.reshape(-1, 1, 2, 2).repeat(1, 3, 4, 4), _K, padding=1,
                                                  stride=2, dilation=2), 2),
                            F.conv2d(x.reshape(-1, 2, 2, 1).repeat(1, 3, 1, 4), _K[:, :1], groups=6, padding=1)),
}


@pytest.mark.parametrize("case", sorted(PRIMITIVE_CASES))
def test_md1_primitive_coverage(tmp_path, case):
    """MD-1: converters of elementwise, reduction, shape, index, dot and window primitives match eager."""
    fn = PRIMITIVE_CASES[case]
    x3, x5 = _w(3, 4), _w(5, 4)
    outs = [f"out_{i}" for i in range(len(_eager(fn, x3)))]
    axes = {"input": {0: "b"}}
    eonnx.export(fn, x3, tmp_path / "p.onnx", output_names=outs, dynamic_axes=axes)
    onnx.checker.check_model(onnx.load(str(tmp_path / "p.onnx")), full_check=True)
    x = x3 if case == "batched_dot" else x5  # `W @ x.T` contracts the batch: exported for batch 3 only
    got = _ort(tmp_path / "p.onnx", {"input": x.numpy()})
    for g, w in zip(got, _eager(fn, x)):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)
