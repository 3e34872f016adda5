"""ember.deploy.protect: ONNX obfuscation (MD-20) and AES-256-GCM encrypted model files (MD-21).

Both the original and the obfuscated model run on ember's own ONNX importer; onnxruntime, when
installed, checks the obfuscated file too."""
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("cryptography")

import ember  # noqa: E402
import ember.nn as nn  # noqa: E402
import ember.nn.functional as F  # noqa: E402
import ember.onnx as eo  # noqa: E402
from ember._core.errors import EmberError  # noqa: E402
from ember.deploy import protect as PR  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

KEY = bytes(range(32))
FAST = (10, 8, 1)  # small scrypt cost for the tests


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_conv = nn.Conv2d(3, 4, 3)
        self.encoder_norm = nn.BatchNorm2d(4)
        self.classifier_head = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.classifier_head(ember.flatten(F.relu(self.encoder_norm(self.encoder_conv(x))), 1))


def _x(shape=(2, 3, 8, 8), seed=0):
    return ember.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _run(model, x):
    return eo.load(model)(x).detach().numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    ember.manual_seed(0)
    net = Net().eval()
    path = tmp_path_factory.mktemp("onnx") / "net.onnx"
    proto = eo.export(net, _x(), path)
    return net, proto, path


# ---------------------------------------------------------------- MD-20
def test_md20_obfuscated_module_runs_the_same_without_its_names(exported):
    """MD-20: no parameter or layer name survives; weights are noise-mixed; outputs equal within 1e-5."""
    net, proto, _ = exported
    x = _x()
    ob = PR.obfuscate(net, x, seed=1)
    onnx.checker.check_model(ob)
    data = ob.SerializeToString()
    names = list(net.state_dict()) + ["encoder_conv", "encoder_norm", "classifier_head", "encoder", "classifier"]
    names += [i.name for i in proto.graph.initializer] + [n.name for n in proto.graph.node]
    for name in names:
        assert name.encode() not in data, name
    assert ob.graph.name == "g"
    assert all(n.name == f"n{i}" for i, n in enumerate(ob.graph.node))
    values = {v for n in ob.graph.node for v in list(n.input) + list(n.output)}
    assert all(v.startswith("v") and v[1:].isdigit() for v in values)
    assert sum(n.op_type == "Sub" for n in ob.graph.node) >= 3  # conv weight and bias, matmul weight...
    originals = [numpy_helper.to_array(t) for t in proto.graph.initializer if numpy_helper.to_array(t).size > 1
                 and numpy_helper.to_array(t).dtype == np.float32]
    stored = [numpy_helper.to_array(t) for t in ob.graph.initializer]
    for w in originals:  # no original weight tensor is stored as it was
        assert not any(s.shape == w.shape and np.array_equal(s, w) for s in stored)
    want = net(x).detach().numpy()
    np.testing.assert_allclose(_run(proto, x), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_run(ob, x), want, rtol=0, atol=1e-5)


def test_md20_obfuscate_an_onnx_model_proto_bytes_or_path(exported, tmp_path):
    """MD-20: a ModelProto, its bytes or its path obfuscate alike; the input model is not modified."""
    net, proto, path = exported
    before = proto.SerializeToString()
    x = _x(seed=3)
    want = _run(proto, x)
    outs = []
    for src in (proto, before, path):
        ob = PR.obfuscate(src, seed=2, path=tmp_path / "ob.onnx")
        outs.append(ob.SerializeToString())
        np.testing.assert_allclose(_run(tmp_path / "ob.onnx", x), want, rtol=0, atol=1e-5)
    assert outs[0] == outs[1] == outs[2]  # same seed, same result
    assert proto.SerializeToString() == before
    kept = PR.obfuscate(proto, seed=0, keep_io_names=True)
    assert [i.name for i in kept.graph.input] == ["input"] and [o.name for o in kept.graph.output] == ["output"]
    plain = PR.obfuscate(proto, seed=0, noise=0)
    assert not any(n.op_type == "Sub" for n in plain.graph.node)
    np.testing.assert_array_equal(_run(plain, x), want)
    with pytest.raises(PR.ProtectError, match="example_inputs"):
        PR.obfuscate(net)


def test_md20_subgraphs_share_the_outer_names():
    """MD-20: an If branch reading an outer value keeps reading it after renaming."""
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    then_g = helper.make_graph([helper.make_node("MatMul", ["x_in", "secret_weight"], ["then_out"])], "secret_then",
                               [], [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [4, 3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x_in"], ["neg_x"]),
                                helper.make_node("MatMul", ["neg_x", "secret_weight"], ["else_out"])], "secret_else",
                               [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [4, 3])])
    g = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=then_g, else_branch=else_g, name="my_if")],
        "secret_graph",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        initializer=[numpy_helper.from_array(w, "secret_weight")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    ob = PR.obfuscate(m, seed=0)
    assert ob.graph.node[0].op_type == "Sub"  # the weight the branches read is mixed too
    data = ob.SerializeToString()
    for s in (b"secret", b"then_out", b"neg_x", b"my_if", b"x_in"):
        assert s not in data
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    a, b = eo.load(m), eo.load(ob)
    for flag in (True, False):
        f = np.array(flag)
        np.testing.assert_allclose(b(f, x).detach().numpy(), a(f, x).detach().numpy(), rtol=0, atol=1e-5)


def test_md20_onnxruntime_agrees(exported):
    """MD-20: onnxruntime runs the obfuscated model to the original's outputs (skipped without it)."""
    ort = pytest.importorskip("onnxruntime")
    net, proto, _ = exported
    x = _x(seed=4).numpy()
    ob = PR.obfuscate(proto, seed=5)
    outs = []
    for model in (proto, ob):
        s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {s.get_inputs()[0].name: x})[0])
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- MD-21
def _checkpoint(tmp_path):
    ember.manual_seed(0)
    net = Net().eval()
    p = tmp_path / "ckpt.safetensors"
    ember.save({"model": net.state_dict(), "epoch": 3}, p, sidecar=False)
    return net, p


def test_md21_round_trip_checkpoint_and_onnx(tmp_path, exported):
    """MD-21: an ember.save checkpoint and an ONNX file round-trip through AES-256-GCM files."""
    net, p = _checkpoint(tmp_path)
    enc, dec = tmp_path / "ckpt.enc", tmp_path / "ckpt.dec"
    PR.encrypt_file(p, enc, KEY)
    blob = enc.read_bytes()
    assert blob[:8] == PR.MAGIC and blob[8] == PR.VERSION and p.read_bytes() not in blob
    assert len(blob) == len(p.read_bytes()) + 8 + 2 + 12 + 16
    PR.decrypt_file(enc, dec, KEY)
    assert dec.read_bytes() == p.read_bytes()
    obj = PR.load_encrypted(enc, KEY)
    assert obj["epoch"] == 3
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(obj["model"][k].numpy(), v.detach().numpy())
    _, proto, onnx_path = exported
    PR.encrypt_file(onnx_path, tmp_path / "net.enc", KEY)
    mod = PR.load_encrypted(tmp_path / "net.enc", KEY)
    assert isinstance(mod, eo.OnnxModule)
    x = _x(seed=5)
    np.testing.assert_array_equal(mod(x).detach().numpy(), _run(proto, x))
    assert PR.encrypt_bytes(b"same", KEY) != PR.encrypt_bytes(b"same", KEY)  # fresh nonce each time


def test_md21_passphrase(tmp_path):
    """MD-21: a str key is a passphrase stretched with scrypt (salt and cost in the header)."""
    _, p = _checkpoint(tmp_path)
    enc = tmp_path / "ckpt.enc"
    PR.encrypt_file(p, enc, "correct horse battery staple", scrypt=FAST)
    assert enc.read_bytes()[9] == 1
    assert PR.decrypt_bytes(enc.read_bytes(), "correct horse battery staple") == p.read_bytes()
    with pytest.raises(PR.ProtectError, match="wrong key or corrupted file"):
        PR.load_encrypted(enc, "Tr0ub4dor&3")
    with pytest.raises(PR.ProtectError, match="passphrase"):
        PR.load_encrypted(enc, KEY)
    assert len(PR.derive_key("pw", b"s" * 16, *FAST)) == 32


def _only(tmp_path, *names):
    assert sorted(os.listdir(tmp_path)) == sorted(names)


def test_md21_wrong_key_flipped_byte_truncated_write_nothing(tmp_path):
    """MD-21: a wrong key, a flipped byte anywhere or a truncated file fail cleanly, writing nothing."""
    _, p = _checkpoint(tmp_path)
    enc, dst = tmp_path / "ckpt.enc", tmp_path / "out"
    PR.encrypt_file(p, enc, KEY)
    blob = enc.read_bytes()
    bad = tmp_path / "bad.enc"
    cases = [("key", blob, bytes(32)), ("key", blob, KEY[:-1] + b"\0")]
    for i in (9, 10, 15, 22, 30, len(blob) // 2, len(blob) - 17, len(blob) - 1):  # kdf, nonce, body, tag
        b = bytearray(blob)
        b[i] ^= 0x01
        cases.append((f"flip {i}", bytes(b), KEY))
    for n in (len(blob) - 1, len(blob) - 16, 30, 12, 9):
        cases.append((f"truncate {n}", blob[:n], KEY))
    for what, data, key in cases:
        bad.write_bytes(data)
        with pytest.raises(PR.ProtectError, match="wrong key or corrupted file"):
            PR.decrypt_file(bad, dst, key)
        with pytest.raises(PR.ProtectError, match="wrong key or corrupted file"):
            PR.load_encrypted(bad, key)
        assert not dst.exists(), what
        _only(tmp_path, "ckpt.safetensors", "ckpt.enc", "bad.enc")
    b = bytearray(blob)
    b[0] ^= 0xFF
    bad.write_bytes(bytes(b))
    with pytest.raises(PR.ProtectError, match="not an ember encrypted file"):
        PR.decrypt_file(bad, dst, KEY)
    b = bytearray(blob)
    b[8] = 9
    bad.write_bytes(bytes(b))
    with pytest.raises(PR.ProtectError, match="version 9"):
        PR.decrypt_file(bad, dst, KEY)
    assert not dst.exists()


def test_md21_failed_encrypt_leaves_nothing(tmp_path, monkeypatch):
    """MD-21: a bad key, a missing source or a failing fsync leave no destination and no temporary."""
    _, p = _checkpoint(tmp_path)
    dst = tmp_path / "ckpt.enc"
    with pytest.raises(PR.ProtectError, match="32 bytes"):
        PR.encrypt_file(p, dst, b"short")
    with pytest.raises(PR.ProtectError, match="cannot read"):
        PR.encrypt_file(tmp_path / "missing", dst, KEY)

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="No space"):
        PR.encrypt_file(p, dst, KEY)
    monkeypatch.undo()
    _only(tmp_path, "ckpt.safetensors")
    PR.encrypt_file(p, dst, KEY)
    dst.write_bytes(dst.read_bytes())  # an existing destination is replaced whole, or kept on failure
    old = dst.read_bytes()
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        PR.decrypt_file(dst, dst, KEY)
    monkeypatch.undo()
    assert dst.read_bytes() == old
    _only(tmp_path, "ckpt.safetensors", "ckpt.enc")


def test_md21_without_cryptography_names_the_extra(tmp_path, monkeypatch):
    """MD-21: without the cryptography package the error names pip install 'ember[protect]'."""
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(PR.MissingExtraError, match=r"ember\[protect\]"):
        PR.encrypt_bytes(b"x", KEY)
    assert issubclass(PR.MissingExtraError, EmberError) and issubclass(PR.MissingExtraError, ImportError)
    assert issubclass(PR.ProtectError, EmberError) and issubclass(PR.ProtectError, ValueError)
