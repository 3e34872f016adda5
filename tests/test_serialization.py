"""ember.save / ember.load and the safetensors reader/writer (no pickle, clear errors, interop)."""
import io
import json
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st

import ember
from ember import serialization as S
from ember.serialization import CheckpointError

safetensors = pytest.importorskip("safetensors")
from safetensors.numpy import load_file as st_load_file, save as st_save, save_file as st_save_file  # noqa: E402

NP_DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_]


def _arr(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _same(a, b):
    """Bit-identical: same dtype, shape and bytes (NaNs included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _np(t):
    return t.detach().numpy() if isinstance(t, ember.Tensor) else t


# ---------------------------------------------------------------- flat safetensors
def test_flat_roundtrip_every_dtype(tmp_path):
    tensors = {f"t_{np.dtype(d).name}": ember.from_numpy(_arr(d, (3, 5), i)) for i, d in enumerate(NP_DTYPES)}
    tensors["bf16"] = ember.from_numpy(_arr(np.float32, (4,)).astype(ml_dtypes.bfloat16))
    tensors["scalar"] = ember.tensor(2.5)
    tensors["empty"] = ember.from_numpy(np.zeros((0, 7), np.float32))
    tensors["transposed"] = ember.from_numpy(_arr(np.float32, (4, 6)).T)  # non-contiguous input
    tensors["nan"] = ember.from_numpy(np.array([np.nan, -0.0, np.inf], np.float32))
    p = tmp_path / "flat.safetensors"
    ember.serialization.save_safetensors(tensors, p, metadata={"who": "ember"})
    back = S.load_safetensors(p)
    assert set(back) == set(tensors)
    for k, t in tensors.items():
        assert back[k].dtype is t.dtype and _same(back[k].numpy(), np.array(t.numpy(), order="C")), k
    assert S.read_safetensors_metadata(p) == {"who": "ember"}
    for k, t in S.load_safetensors(p, mmap=True).items():
        assert _same(t.numpy(), np.array(tensors[k].numpy(), order="C")), k


def test_ember_file_loads_with_safetensors_package(tmp_path):
    arrays = {f"a{i}": _arr(d, (2, 3), i) for i, d in enumerate(NP_DTYPES)}
    arrays["s"] = np.array(1.5, np.float32)
    p = tmp_path / "e.safetensors"
    S.save_safetensors({k: ember.from_numpy(v) for k, v in arrays.items()}, p, {"k": "v"})
    ref = st_load_file(str(p))
    assert set(ref) == set(arrays)
    for k, v in arrays.items():
        assert _same(ref[k], v), k
    with safetensors.safe_open(str(p), "numpy") as f:
        assert f.metadata() == {"k": "v"}


def test_safetensors_package_file_loads_with_ember(tmp_path):
    arrays = {f"layer{i}.weight": _arr(d, (4, 2), i) for i, d in enumerate(NP_DTYPES)}
    arrays["zero_d"] = np.array(7, np.int64)
    p = tmp_path / "ref.safetensors"
    st_save_file(arrays, str(p), metadata={"format": "pt"})
    got = S.load_safetensors(p)
    for k, v in arrays.items():
        assert _same(got[k].numpy(), v), k
    # ember.load on a plain safetensors file gives the flat dict too
    got2 = ember.load(p)
    assert set(got2) == set(arrays)


def test_bytes_identical_to_safetensors_package():
    arrays = {"b": np.arange(3), "a": np.ones(2, np.float32), "s": np.array(3.5, np.float32),
              "w": np.arange(12, dtype=np.float32).reshape(3, 4), "h": np.ones(3, np.float16),
              "e": np.zeros((0, 3), np.int8), "m": np.array([True, False])}
    buf = io.BytesIO()
    S.save_safetensors(arrays, buf, {"x": "y"})
    assert buf.getvalue() == st_save(arrays, metadata={"x": "y"})
    # big-endian input is written little-endian, as the format requires
    be = np.arange(5, dtype=">i4")
    buf = io.BytesIO()
    S.save_safetensors({"be": be}, buf)
    assert buf.getvalue() == st_save({"be": be.astype("<i4")})
    assert S.loads(buf.getvalue())["be"].tolist() == [0, 1, 2, 3, 4]


def test_bfloat16_interop(tmp_path):
    bf = _arr(np.float32, (2, 3)).astype(ml_dtypes.bfloat16)
    p = tmp_path / "bf.safetensors"
    S.save_safetensors({"bf": bf}, p)
    # the package's low-level serializer writes the same bytes, and its reader sees BF16
    ref = safetensors.serialize({"bf": safetensors.TensorSpec(dtype="bfloat16", shape=bf.shape,
                                                               data_ptr=bf.ctypes.data, data_len=bf.nbytes)})
    assert bytes(ref) == p.read_bytes()
    [(name, info)] = safetensors.deserialize(p.read_bytes())
    assert name == "bf" and info["dtype"] == "BF16" and bytes(info["data"]) == bf.tobytes()
    back = S.load_safetensors(io.BytesIO(bytes(ref)))["bf"]
    assert back.dtype is ember.bfloat16 and _same(back.numpy(), bf)


@given(st.dictionaries(st.text("abcdefgh._/", min_size=1, max_size=6).filter(lambda s: s != "__metadata__"),
                       st.tuples(st.sampled_from(NP_DTYPES), st.lists(st.integers(0, 4), max_size=3)),
                       max_size=5))
def test_flat_roundtrip_property(spec):
    arrays = {k: _arr(d, tuple(shape), i) for i, (k, (d, shape)) in enumerate(spec.items())}
    buf = io.BytesIO()
    S.save_safetensors(arrays, buf)
    data = buf.getvalue()
    assert data == st_save(arrays)  # byte-identical to the reference implementation
    back = S.load_safetensors(io.BytesIO(data))
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        assert _same(back[k].numpy(), v)


# ---------------------------------------------------------------- nested checkpoints
def _training_state():
    w = ember.randn(4, 3, requires_grad=True)
    opt = {"state": {0: {"step": ember.tensor(3.0), "exp_avg": ember.randn(4, 3), "exp_avg_sq": ember.rand(4, 3)},
                     1: {"step": ember.tensor(3.0), "exp_avg": ember.randn(3)}},
           "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "params": [0, 1],
                             "foreach": None, "name": "main", "max_norm": float("inf")}]}
    return {"model": {"fc.weight": w, "fc.bias": ember.zeros(3), "emb.weight": ember.randn(5, 2, dtype=ember.bfloat16)},
            "optimizer": opt, "epoch": 7, "rng": ember.get_rng_state(), "history": [0.5, 0.25, float("nan")],
            "np_array": np.arange(6, dtype=np.int16).reshape(2, 3), "np_scalar": np.float32(0.1),
            "tied": w, ("a", 1): "tuple key", 2.5: None, "flag": True, "big": 2 ** 70}


def _assert_equal_state(a, b):
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (type(a), type(b))
    if isinstance(a, ember.Tensor):
        assert a.dtype is b.dtype and a.requires_grad == b.requires_grad and _same(_np(a), _np(b))
    elif isinstance(a, np.ndarray):
        assert _same(a, b)
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        for k in a:
            _assert_equal_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal_state(x, y)
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b and type(a) is type(b)


def test_nested_roundtrip(tmp_path):
    state = _training_state()
    p = tmp_path / "ckpt.safetensors"
    ember.save(state, p)
    back = ember.load(p)
    _assert_equal_state(state, back)
    assert back["tied"] is back["model"]["fc.weight"]  # stored once, one tensor on load
    assert isinstance(back["np_scalar"], np.float32)
    assert back["optimizer"]["state"][0]["step"].item() == 3.0
    # flattened names are readable by other tools; a flat state dict keeps its own keys
    names = set(st_load_file(str(p)))
    assert {"model.fc.weight", "optimizer.state.0.exp_avg", "rng", "np_array"} <= names
    flat = {"w": ember.randn(2), "layer.0.bias": ember.zeros(3)}
    ember.save(flat, tmp_path / "flat.safetensors")
    assert set(st_load_file(str(tmp_path / "flat.safetensors"))) == set(flat)
    # mmap and map_location
    _assert_equal_state(state, ember.load(p, map_location="cpu", mmap=True))
    with pytest.raises(ember.EmberError):
        ember.load(p, map_location="cuda:0")


def test_loaded_tensors_are_writable_and_independent(tmp_path):
    p = tmp_path / "c.safetensors"
    ember.save({"a": ember.ones(3), "b": ember.zeros(3)}, p)
    for mmap in (False, True):
        d = ember.load(p, mmap=mmap)
        d["a"].add_(1.0)
        assert d["a"].tolist() == [2.0, 2.0, 2.0] and d["b"].tolist() == [0.0, 0.0, 0.0]
    assert ember.load(p)["a"].tolist() == [1.0, 1.0, 1.0]  # the file is untouched


def test_sidecar_written_after_and_not_trusted(tmp_path):
    p = tmp_path / "m.safetensors"
    ember.save({"w": ember.arange(4), "epoch": 1}, p)
    side = json.loads((tmp_path / "m.safetensors.json").read_text())
    assert side["format_version"] == S.FORMAT_VERSION and side["tensors"]["w"]["shape"] == [4]
    assert S.verify(p)["sidecar"] == "ok"
    # a sidecar from another save: load ignores it, verify reports the mismatch
    stale = (tmp_path / "m.safetensors.json").read_text()
    ember.save({"w": ember.arange(5), "epoch": 2}, p)
    (tmp_path / "m.safetensors.json").write_text(stale)
    assert ember.load(p)["epoch"] == 2
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        S.verify(p)
    ember.save({"x": 1}, tmp_path / "n.safetensors", sidecar=False)
    assert not (tmp_path / "n.safetensors.json").exists()


def test_no_pickle_fallback_for_other_objects(tmp_path):
    class Thing:
        pass

    with pytest.raises(TypeError, match=r"obj\['a'\]\[0\].*no pickle"):
        ember.save({"a": [Thing()]}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError):
        ember.save({"s": {1, 2}}, tmp_path / "x.safetensors")
    assert not any(tmp_path.iterdir())  # nothing, not even a temp file, is left behind


def test_save_failure_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "c.safetensors"
    ember.save({"v": ember.tensor([1.0])}, p)
    before = p.read_bytes()

    def boom(f, hb, items):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(S, "_write_st", boom)
    with pytest.raises(OSError, match="disk full"):
        ember.save({"v": ember.tensor([2.0])}, p)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.safetensors", "c.safetensors.json"]


def test_save_load_bytes_and_file_objects():
    state = {"a": ember.arange(3), "n": {"k": [1, 2]}}
    data = S.dumps(state)
    assert S.loads(data)["n"] == {"k": [1, 2]}
    buf = io.BytesIO()
    ember.save(state, buf)
    buf.seek(0)
    assert ember.load(buf)["a"].tolist() == [0, 1, 2]


def test_lazy_export_keeps_import_cheap():
    import subprocess
    import sys
    code = ("import sys, ember; assert 'ember.serialization' not in sys.modules; "
            "assert callable(ember.save) and 'ember.serialization' in sys.modules; "
            "assert ember.load is ember.serialization.load and ember.data.DataLoader")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- damaged and foreign files
def _expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as ei:
        ember.load(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_foreign_and_broken_files(tmp_path):
    cases = {
        "empty.safetensors": (b"", ["empty"]),
        "tiny.safetensors": (b"\x01\x02\x03", ["too short"]),
        "image.png": (b"\x89PNG\r\n\x1a\n" + bytes(200), ["PNG"]),
        # bytes of a pickle (written out literally: ember neither imports nor runs pickle)
        "model.pkl": (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.", ["pickle"]),
        "model.pt": (b"PK\x03\x04" + bytes(100), ["zip", "PyTorch"]),
        "past_eof.safetensors": ((10 ** 6).to_bytes(8, "little") + b'{"a":1}', ["truncated"]),
        "huge_header.safetensors": ((2 ** 62).to_bytes(8, "little") + bytes(64), ["limit"]),
        "not_json.safetensors": ((8).to_bytes(8, "little") + b"\xff\xfe{bad}!", ["JSON"]),
        "list_header.safetensors": ((8).to_bytes(8, "little") + b"[1,2]   ", ["not an object"]),
        "bad_dtype.safetensors": (None, ["dtype 'Q7'"]),
        "gap.safetensors": (None, ["gaps"]),
        "beyond.safetensors": (None, ["truncated"]),
        "sidecar.json": (b'{"format": "ember.checkpoint"}', ["JSON file"]),
    }
    for name, (data, frags) in cases.items():
        p = tmp_path / name
        if data is None:
            entry = {"bad_dtype.safetensors": {"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}},
                     "gap.safetensors": {"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                     "beyond.safetensors": {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}}[name]
            h = json.dumps(entry).encode()
            data = len(h).to_bytes(8, "little") + h + bytes(8)
        p.write_bytes(data)
        _expect_error(p, *frags)
    with pytest.raises(CheckpointError, match="directory"):
        ember.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        ember.load(tmp_path / "missing.safetensors")


def test_every_truncation_and_byte_flip_is_caught(tmp_path):
    """No damaged checkpoint loads silently or raises anything but CheckpointError."""
    state = {"model": {"w": ember.randn(3, 2), "b": ember.zeros(2)}, "epoch": 3,
             "opt": {"state": {0: {"step": ember.tensor(1.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}}
    data = S.dumps(state)
    for n in range(len(data)):
        with pytest.raises(CheckpointError):
            S.loads(data[:n])
    for i in range(len(data)):
        for x in (0x01, 0x80):
            d = bytearray(data)
            d[i] ^= x
            with pytest.raises(CheckpointError):
                S.loads(bytes(d))
    # on disk: a corrupted tensor byte is named as a checksum problem with the file's name
    p = tmp_path / "c.safetensors"
    ember.save(state, p)
    d = bytearray(p.read_bytes())
    d[-3] ^= 0x10
    p.write_bytes(bytes(d))
    _expect_error(p, "checksum mismatch", "corrupted")
    assert ember.load(p, verify=False)["epoch"] == 3  # opt-out reads it anyway


def test_newer_format_version_is_refused(tmp_path):
    p = tmp_path / "v.safetensors"
    ember.save({"a": 1}, p)
    raw = S._read(p, mmap=False)
    header = raw.header
    header["__metadata__"]["ember.format_version"] = "99"
    header["__metadata__"].pop("ember.sha256")
    header["__metadata__"]["ember.sha256"] = S._checksum(header, [])
    hb = S._encode_header(header)
    p.write_bytes(len(hb).to_bytes(8, "little") + hb)
    _expect_error(p, "newer ember", "version 99")


def test_atomic_write_uses_fsync_and_replace(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (calls.append(("replace", os.path.basename(b))), real_replace(a, b))[1])
    ember.save({"a": ember.ones(2)}, tmp_path / "x.safetensors")
    # data: fsync file, rename, fsync dir; then the sidecar the same way, after the data file
    assert calls == ["fsync", ("replace", "x.safetensors"), "fsync",
                     "fsync", ("replace", "x.safetensors.json"), "fsync"]


def test_stale_temp_cleanup(tmp_path):
    dead = tmp_path / ".ckpt-00000001.safetensors.tmp-999999999-0123abcd"
    mine = tmp_path / f".ckpt-00000002.safetensors.tmp-{os.getpid()}-0123abcd"
    live = tmp_path / f".ckpt-00000003.safetensors.tmp-{os.getppid()}-0123abcd"
    other = tmp_path / "unrelated.tmp"
    for f in (dead, mine, live, other):
        f.write_bytes(b"x")
    removed = S.remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([str(dead), str(mine)])
    assert live.exists() and other.exists()
