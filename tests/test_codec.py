"""ember.codec: nested state with arrays by reference (no pickle), the one codec behind ember.save,
DataLoader worker results and pipeline caches. Round trips through each of them, the header format,
and a checkpoint file written before the codec was shared still loading the same."""
import collections
import json
import math
import os

import ml_dtypes
import numpy as np
import pytest

import ember
from ember import codec, serialization as S
from ember.data import Pipeline, shm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
Point = collections.namedtuple("Point", "x y")


def _arrays():
    return [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -0.0, np.inf, np.nan]),
            np.arange(-3, 3, dtype=np.int8), np.arange(5, dtype=np.uint8), np.array([True, False]),
            np.arange(4, dtype=np.int64).reshape(2, 2)[:, ::-1],  # not contiguous
            np.ones(3, np.float16), np.ones(2, ml_dtypes.bfloat16), np.array(7, np.int32),  # 0-d
            np.zeros((0, 4), np.float32), np.zeros((2, 0, 3), np.int16)]


def _obj():
    t = ember.tensor([[1.0, 2.0], [3.0, 4.0]])
    return {"none": None, "bools": [True, False], "int": 7, "neg": -2 ** 63, "big": 2 ** 80,
            "floats": [0.1, -0.0, 1e308, float("inf"), -float("inf"), float("nan")], "str": "grüße ✓",
            "tuple": (1, (2.5, "x"), ()), "list": [[], [[1]]], "empty": {},
            "int_keys": {0: "a", -1: "b"}, "mixed_keys": {1.5: 1, (1, "a"): 2, None: 3, True: 4, float("inf"): 5},
            "arrays": _arrays(), "np_scalars": [np.float32(1.25), np.int64(-4), np.bool_(True), np.uint8(200)],
            "tensors": {"t": t, "same": t, "rg": ember.tensor([0.5], requires_grad=True),
                        "bf16": ember.ones(2, dtype=ember.bfloat16), "i64": ember.arange(3),
                        "zero_d": ember.tensor(2.0), "empty": ember.zeros(0, 3)}}


def _canon(x):
    """A comparable form: tensors and arrays by type, dtype, shape and bytes; NaN by repr."""
    if isinstance(x, ember.Tensor):
        a = x.detach().numpy()
        return ("T", x.dtype.name, a.shape, np.ascontiguousarray(a).tobytes(), x.requires_grad)
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.asarray(x)
        return ("A", type(x).__name__, str(a.dtype), a.shape, np.ascontiguousarray(a).tobytes())
    if isinstance(x, float):
        return ("f", repr(x))  # -0.0 and nan kept apart
    if isinstance(x, dict):
        return ("d", [(_canon(k), _canon(v)) for k, v in x.items()])
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_canon(v) for v in x])
    return (type(x).__name__, repr(x))


def _same(a, b):
    assert _canon(a) == _canon(b)


@pytest.mark.parametrize("named", [False, True])
def test_round_trip_through_the_codec(named):
    obj = _obj()
    header, arrays = codec.encode(obj, named=named)
    header = json.loads(json.dumps(header, allow_nan=False))  # the header is plain JSON
    back = codec.decode(header, arrays)
    _same(back, obj)
    assert back["tensors"]["t"] is back["tensors"]["same"]  # one tensor under two keys stays one
    assert isinstance(back["np_scalars"][0], np.float32) and isinstance(back["int"], int)
    assert isinstance(back["tuple"], tuple) and type(back["bools"][0]) is bool
    if named:
        assert sorted(arrays)[:3] == ["arrays.0", "arrays.1", "arrays.10"] and "tensors.t" in arrays


def test_round_trip_through_ember_save(tmp_path):
    obj = _obj()
    back = S.loads(S.dumps(obj))
    _same(back, obj)
    ember.save(obj, tmp_path / "o.safetensors")
    _same(ember.load(tmp_path / "o.safetensors"), obj)
    _same(ember.load(tmp_path / "o.safetensors", mmap=True), obj)
    for root in (None, 3, 2.5, float("nan"), "s", [], (), {}, ember.ones(2), np.zeros(3), np.float64(1)):
        _same(S.loads(S.dumps(root)), root)


def test_round_trip_through_dataloader_worker_messages():
    obj = _obj()
    obj["point"] = Point(ember.tensor([1.0]), np.zeros(2))  # named tuples travel between processes
    msg = shm.write_result(obj, f"ember_dl_test_codec_{os.getpid()}")
    msg = json.loads(json.dumps(msg))  # what the pipe carries
    back = shm.read_result(msg)
    _same(back, obj)
    assert type(back["point"]) is Point
    assert shm.read_result(shm.write_result({"a": [1, "x", None]}, "unused")) == {"a": [1, "x", None]}


def test_round_trip_through_a_pipeline_file_cache(tmp_path):
    elems = [{"x": np.full(3, i, np.float32), "y": i, "w": i / 4, "t": ember.tensor([i]), "s": "k", "f": True}
             for i in range(5)]
    p = Pipeline.from_iterable(elems).cache(tmp_path / "c")
    first, second = list(p), list(p)
    again = list(Pipeline.from_iterable(elems).cache(tmp_path / "c"))  # read from the files
    for got in (first, second, again):
        _same(got, elems)
    d = os.path.join(tmp_path, "c", os.listdir(tmp_path / "c")[0])
    meta = json.load(open(os.path.join(d, "meta.json")))
    assert meta["format"] == "ember.pipeline.cache/2" and meta["same"]  # numbers are arrays: one header
    assert np.load(os.path.join(d, "leaf1.npy")).tolist() == [0, 1, 2, 3, 4]  # "y", stacked
    # heterogeneous elements: one file per element array
    mixed = [{"a": 1}, [np.zeros(2), (3, "x")], None, float("inf")]
    assert _canon(list(Pipeline.from_iterable(mixed).cache(tmp_path / "m"))) == _canon(mixed)
    _same(list(Pipeline.from_iterable(mixed).cache(tmp_path / "m")), mixed)


_CALLS = []


def _counted(x):
    _CALLS.append(x)
    return np.full(2, x)


def test_an_old_pipeline_cache_is_rebuilt_not_misread(tmp_path):
    f, calls = _counted, _CALLS
    calls.clear()
    list(Pipeline.range(3).map(f).cache(tmp_path / "c"))
    d = os.path.join(tmp_path, "c", os.listdir(tmp_path / "c")[0])
    meta = json.load(open(os.path.join(d, "meta.json")))
    meta["format"] = "ember.pipeline.cache/1"
    json.dump(meta, open(os.path.join(d, "meta.json"), "w"))
    assert [a.tolist() for a in Pipeline.range(3).map(f).cache(tmp_path / "c")] == [[0, 0], [1, 1], [2, 2]]
    assert len(calls) == 6  # recomputed once
    list(Pipeline.range(3).map(f).cache(tmp_path / "c"))
    assert len(calls) == 6


def test_header_format():
    t = ember.tensor([1.0], requires_grad=True)
    header, arrays = codec.encode({"w": t, "a": np.zeros(2), "s": np.float32(1), "k": {1: (None, math.inf)}})
    assert header == {"$dict": {"w": {"$tensor": 0, "requires_grad": True}, "a": {"$ndarray": 1},
                                "s": {"$npscalar": 2}, "k": {"$items": [[1, {"$tuple": [None, {"$float": "inf"}]}]]}}}
    assert [a.shape for a in arrays] == [(1,), (2,), ()]
    header, arrays = codec.encode([1, 2.5, True, 2 ** 64], numbers_as_arrays=True)
    assert header == [{"$number": 0, "type": "int"}, {"$number": 1, "type": "float"}, True, 2 ** 64]
    assert codec.decode(header, arrays) == [1, 2.5, True, 2 ** 64]
    header, _ = codec.encode(Point(1, 2))
    assert header == {"$tuple": [1, 2]}  # without namedtuples=True a named tuple is a tuple
    header, _ = codec.encode(Point(1, 2), namedtuples=True)
    assert header == {"$namedtuple": [1, 2], "type": f"{__name__}:Point"}


def test_what_cannot_be_stored_is_named_with_its_place():
    for bad, where in (({"a": [object()]}, r"obj\['a'\]\[0\]"), ({"a": {1j: 2}}, r"obj\['a'\]"),
                       ([np.array(["x"])], r"obj\[0\]"), ({"a": b"bytes"}, r"obj\['a'\]")):
        with pytest.raises(TypeError, match=where + ".*no pickle|" + where + ".*keys must"):
            codec.encode(bad)
    deep = 0
    for _ in range(250):
        deep = [deep]
    with pytest.raises(codec.CodecError, match="nesting deeper than 200"):
        codec.encode(deep)
    assert codec.decode(*codec.encode(deep, max_depth=300)) == deep


@pytest.mark.parametrize("header", [{"$bogus": 1}, {}, {"$dict": []}, {"$tuple": 5}, {"$items": [[1]]},
                                    {"$items": [[[1], 2]]}, {"$float": "abc"}, {"$float": 1.0}, {"$tensor": 5},
                                    {"$tensor": "0"}, {"$tensor": True}, {"$tensor": 0, "requires_grad": 1},
                                    {"$ndarray": 0, "extra": 1}, {"$npscalar": 0}, {"$number": 0, "type": "int"},
                                    {"$namedtuple": [1, 2], "type": "os:system"}, {"$dict": {"a": {"$x": 0}}}])
def test_malformed_headers_are_codec_errors(header):
    with pytest.raises(codec.CodecError):
        codec.decode(header, [np.zeros(3)])


def test_named_tuples_are_rebuilt_only_when_allowed_and_only_named_tuples():
    h, a = codec.encode(Point(1, [2]), namedtuples=True)
    assert codec.decode(h, a, namedtuples=True) == Point(1, [2])
    with pytest.raises(codec.CodecError, match="not allowed"):
        codec.decode(h, a)
    with pytest.raises(codec.CodecError, match="not a named tuple"):
        codec.decode({"$namedtuple": ["echo hi"], "type": "os:system"}, [], namedtuples=True)


def test_a_checkpoint_written_before_the_shared_codec_loads_the_same():
    """tests/fixtures/checkpoint_v1.safetensors was written by ember.save before ember.codec existed
    (format version 1); it loads to this object, and saving that object gives the same bytes."""
    rng = np.random.default_rng(0)
    w = ember.from_numpy(rng.standard_normal((3, 4)).astype(np.float32))
    want = {"model": {"w": w, "w_again": w,
                      "mask": ember.from_numpy(np.array([True, False, True, True])),
                      "empty": ember.from_numpy(np.zeros((0, 5), np.float32)),
                      "half": ember.from_numpy(np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16)),
                      "idx": np.arange(6, dtype=np.int64).reshape(2, 3),
                      "p": ember.tensor([1.0, -2.0], requires_grad=True)},
            "opt": {"state": {0: {"step": ember.tensor(3.0), "u8": np.arange(5, dtype=np.uint8)}},
                    "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
            "epoch": 7, "name": "run é", "inf": float("inf"), "ninf": -float("inf"), "nan": float("nan"),
            "none": None, "flag": True, "big": 2 ** 70, "neg0": -0.0,
            "scalar": np.float64(2.5), "i32": np.int32(-3), "b": np.bool_(True), "zero_d": np.array(4.0, np.float32),
            "nested": [[1, (2, 3)], {"k": {1.5: "x", (1, "a"): None, float("inf"): 1, None: 2, True: 3}}]}
    path = os.path.join(FIXTURES, "checkpoint_v1.safetensors")
    got = ember.load(path)
    _same(got, want)
    assert got["model"]["w"] is got["model"]["w_again"]
    with open(path, "rb") as f:
        assert S.dumps(want) == f.read()  # the format did not change
