"""PI-5 robustness: fuzzed checkpoint and safetensors files, paths that are not files, killed writers.

Every damaged file must raise `CheckpointError` naming the file (never another exception type,
never a hang); a mutation that happens to be harmless must load into something that survives a
save/load round trip unchanged. The fuzzer is deterministic (fixed seed, fixed counts).
"""
import contextlib
import hashlib
import json
import os
import random
import signal
import stat
import threading
import time

import ml_dtypes
import numpy as np
import pytest

import ember
from ember import serialization as S
from ember.serialization import CheckpointError

SEED = 20240605
N_CHECKPOINTS = 300
N_SAFETENSORS = 100
PER_FILE_S = 5.0  # guard against a load that hangs


# ---------------------------------------------------------------- file surgery
def _split(data: bytes):
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def _resign(header: dict, data: bytes) -> None:
    """Recompute ember.sha256 (when the header still allows it) so a mutation reaches the validation
    behind the checksum."""
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or "ember.sha256" not in meta:
        return
    h = {k: v for k, v in header.items() if k != "__metadata__"}
    h["__metadata__"] = {k: v for k, v in meta.items() if k != "ember.sha256"}
    try:
        canon = json.dumps(h, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):
        return
    meta["ember.sha256"] = hashlib.sha256(canon + b"\0" + data).hexdigest()


def _join(header, data: bytes, resign=True) -> bytes:
    if resign and isinstance(header, dict):
        _resign(header, data)
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    hb += b" " * (-(8 + len(hb)) % 8)
    return len(hb).to_bytes(8, "little") + hb + data


def _file(entries: dict, data: bytes, metadata=None) -> bytes:
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    return _join(header, data, resign=False)


def _with_structure(structure_text: str, tensors=None, data=b"") -> bytes:
    """A correctly checksummed ember checkpoint whose structure JSON is `structure_text`."""
    meta = {"ember.format": "checkpoint", "ember.format_version": "1", "ember.structure": structure_text,
            "ember.sha256": ""}
    return _join({"__metadata__": meta, **(tensors or {})}, data)


def _nested(depth: int, inner="1", open_="[", close="]") -> str:
    return open_ * depth + inner + close * depth


# ---------------------------------------------------------------- the fuzzer
def _base_state():
    rng = np.random.default_rng(0)
    return {"model": {"w": ember.from_numpy(rng.standard_normal((3, 4)).astype(np.float32)),
                      "mask": ember.from_numpy(np.array([True, False, True, True])),
                      "empty": ember.from_numpy(np.zeros((0, 5), np.float32)),
                      "half": ember.from_numpy(np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16)),
                      "idx": np.arange(6, dtype=np.int64).reshape(2, 3)},
            "opt": {"state": {0: {"step": ember.tensor(3.0), "u8": np.arange(5, dtype=np.uint8)}},
                    "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
            "epoch": 7, "name": "run", "inf": float("inf"), "none": None, "flag": True,
            "scalar": np.float64(2.5), "nested": [[1, (2, 3)], {"k": {1.5: "x", (1, "a"): None}}]}


_JUNK = [None, True, 0, -1, 1.5, "", "F32", "x" * 300, [], [1], [[1]], {}, {"a": 1}, 2 ** 64, -2 ** 63]
_DTYPES = ["F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "U32", "U16", "U64",
           "F8_E4M3", "f32", "Q7", 7, None, ["F32"], {"F32": 1}]
_NODES = [None, 0, "s", 1.5, [], {}, {"$dict": []}, {"$dict": 5}, {"$dict": {"a": {"$bogus": 1}}},
          {"$items": 5}, {"$items": [[1]]}, {"$items": [[[1], 2]]},
          {"$items": [[{"$tensor": "model.w"}, 1]]}, {"$items": [[{"$dict": {}}, 1]]}, {"$tuple": 5},
          {"$tuple": [1, {"$x": 0}]}, {"$float": "nan"}, {"$float": "abc"}, {"$float": [1]},
          {"$float": None}, {"$tensor": "missing"}, {"$tensor": ["model.w"]}, {"$tensor": {"a": 1}},
          {"$tensor": None}, {"$tensor": "opt.state.0.u8", "requires_grad": True},
          {"$tensor": "model.idx", "requires_grad": True}, {"$ndarray": "model.mask"},
          {"$npscalar": "model.w"}, {"$npscalar": "model.empty"},
          {"$tensor": "model.w", "requires_grad": True}, {"$unknown": 1}]


def _walk(x):
    """Every container in a JSON value with its parent-setter (iterative)."""
    out, stack = [], [x]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                out.append((node, k))
                stack.append(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                out.append((node, i))
                stack.append(v)
    return out


def _mutate(rng: random.Random, data: bytes, checkpoint: bool):
    """One mutated copy of `data` and the name of the mutation."""
    header, body = _split(data)
    names = [k for k in header if k != "__metadata__"]
    kinds = ["flip", "truncate", "extend", "length", "text", "entry", "entry_keys", "metadata", "bool",
             "tensor_bytes"] + ["structure", "structure_text"] * 2 * checkpoint
    kind = rng.choice(kinds)
    if kind == "flip":
        d = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        return bytes(d), kind
    if kind == "truncate":
        return data[:rng.randrange(len(data))], kind
    if kind == "extend":
        return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))), kind
    if kind == "length":
        n = int.from_bytes(data[:8], "little")
        new = rng.choice([0, 1, 7, n - 8, n - 1, n + 1, n + 8, len(data), 2 ** 63, 2 ** 64 - 1,
                          100 * 2 ** 20 + 1, rng.randrange(2 ** 32)])
        return new.to_bytes(8, "little") + data[8:], kind
    if kind == "text":  # edit the JSON text in place (same length: the data section stays put)
        n = int.from_bytes(data[:8], "little")
        d = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            d[8 + rng.randrange(n)] = rng.choice(b'{}[]",:0123456789-eE. \\tfnu\x00\xff')
        return bytes(d), kind
    if kind == "entry":  # a header field of one tensor gets a wrong type or value
        e = header[rng.choice(names)]
        field = rng.choice(["dtype", "shape", "data_offsets"])
        b, end = e["data_offsets"]
        choices = {"dtype": _DTYPES,
                   "shape": [[], [1] * 65, [1] * 64, [0, 2 ** 62], [2 ** 63, 0], [0, 2 ** 64], [-1], [1.5],
                             [True], "3", None, [[3]], e["shape"] + [1], e["shape"][:-1], [end - b],
                             [2 ** 70]],
                   "data_offsets": [[0], [b, end, end], [end, b], [-1, end], [str(b), str(end)], None,
                                    [b, 2 ** 64], [b + 1, end + 1], [b, b], [b, end + 8], [True, end]]}[field]
        e[field] = rng.choice(choices + _JUNK[:4])
        return _join(header, body), kind
    if kind == "entry_keys":  # entries removed, duplicated, renamed or given extra fields
        k = rng.choice(names)
        op = rng.randrange(5)
        if op == 0:
            del header[k]
        elif op == 1:
            header[k + "_copy"] = dict(header[k])
        elif op == 2:
            header["renamed"] = header.pop(k)
        elif op == 3:
            header[k]["extra"] = rng.choice([1, "x", [[[]]], json.loads(_nested(200))])
        else:
            header[k] = rng.choice(_JUNK)
        return _join(header, body), kind
    if kind == "metadata":
        meta = header.get("__metadata__")
        op = rng.randrange(4)
        if op == 0 or not isinstance(meta, dict) or not meta:
            header["__metadata__"] = rng.choice([None, 0, [], "x", {"a": 1}, {"a": None}, {"a": ["b"]}])
        elif op == 1:
            meta[rng.choice(sorted(meta))] = rng.choice(_JUNK)
        elif op == 2:
            del meta[rng.choice(sorted(meta))]
        else:
            meta[rng.choice(["ember.format", "ember.format_version", "ember.x", "user"])] = rng.choice(
                ["", "checkpoint", "0", "1", "2", "99", "x", " 1", "1e3"])
        return _join(header, body), kind
    if kind in ("bool", "tensor_bytes"):  # the data changes, the checksum is recomputed
        bools = [n for n in names if isinstance(header[n], dict) and header[n].get("dtype") == "BOOL"]
        k = bools[0] if kind == "bool" and bools else rng.choice(names)
        b, end = header[k]["data_offsets"]
        d = bytearray(body)
        if end > b:
            d[rng.randrange(b, end)] = rng.randrange(2, 256) if kind == "bool" else rng.randrange(256)
        return _join(header, bytes(d)), kind
    meta = header["__metadata__"]
    if kind == "structure":  # one node of the nested structure replaced by junk (checksum recomputed)
        structure = json.loads(meta["ember.structure"])
        spots = _walk(structure)
        parent, key = rng.choice(spots)
        op = rng.randrange(4)
        if op == 0:
            parent[key] = json.loads(_nested(rng.choice([50, 150, 400, 900])))
        elif op == 1:
            parent[key] = json.loads(_nested(rng.choice([30, 120, 300]), "1", '{"$dict":{"a":', "}}"))
        else:
            parent[key] = rng.choice(_NODES)
        meta["ember.structure"] = json.dumps(structure)
        return _join(header, body), kind
    # structure_text: the structure JSON text itself is replaced or damaged
    text = meta["ember.structure"]
    op = rng.randrange(4)
    if op == 0:
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice('{}[]",:0-1\\') + text[i + 1:]
    elif op == 1:
        text = rng.choice(["", "null", "5", "[]", '"x"', '{"root": 1}', '{"format": "x"}', "{" * 100_000,
                           _nested(5000), '{"root": NaN}', '{"root": "\\ud800"}', '{"root": [1, 2] ',
                           '{"root": {"$items": [[1, 2], [1, 3]]}}', "1" * 5000])
    elif op == 2:
        text = '{"root": ' + _nested(rng.choice([100, 199, 201, 600, 990]), '{"$tensor": "model.w"}') + "}"
    else:
        text = text.replace('"$dict"', '"$items"', 1)
    meta["ember.structure"] = text
    return _join(header, body), kind


def _canon(x):
    """A comparable form of a loaded object (tensors by dtype, shape and bytes); BOOL bytes are 0/1."""
    if isinstance(x, ember.Tensor):
        a = x.detach().numpy()
        assert a.dtype != np.bool_ or a.view(np.uint8).max(initial=0) <= 1
        return ("T", str(a.dtype), a.shape, a.tobytes(), x.requires_grad)
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.asarray(x)
        assert a.dtype != np.bool_ or a.view(np.uint8).max(initial=0) <= 1
        return ("A", type(x).__name__, str(a.dtype), a.shape, a.tobytes())
    if isinstance(x, dict):
        return ("d", [(_canon(k), _canon(v)) for k, v in x.items()])
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_canon(v) for v in x])
    return (type(x).__name__, repr(x))


@contextlib.contextmanager
def _deadline(seconds):
    """Raise TimeoutError in the main thread if the block takes longer than `seconds`."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _outcome(fn, path):
    """("loaded", result) | ("error", message) | ("other", repr) | ("hang", repr)."""
    try:
        with _deadline(PER_FILE_S):
            return "loaded", fn()
    except CheckpointError as e:
        return "error", str(e)
    except TimeoutError as e:
        return "hang", f"{path}: {e!r}"
    except BaseException as e:  # noqa: BLE001 -- the point is to catch everything else
        return "other", f"{type(e).__name__}: {str(e)[:200]}"


def _fuzz(tmp_path, base: bytes, count: int, checkpoint: bool, loader):
    rng = random.Random(SEED + checkpoint)
    path = tmp_path / ("fuzz.safetensors" if checkpoint else "fuzz_flat.safetensors")
    tally = {"tried": 0, "error": 0, "loaded": 0, "other": 0, "hang": 0}
    problems, kinds = [], {}
    for i in range(count):
        data, kind = _mutate(rng, base, checkpoint)
        path.write_bytes(data)
        how, result = _outcome(lambda: loader(path, mmap=bool(i % 3 == 0)), path)
        tally["tried"] += 1
        tally[how] += 1
        kinds.setdefault(kind, {}).setdefault(how, 0)
        kinds[kind][how] += 1
        if checkpoint:  # the same bytes through ember.serialization.loads
            how2, result2 = _outcome(lambda: S.loads(data), "<bytes>")
            if how2 != how:
                problems.append((i, kind, f"load gave {how}, loads gave {how2}: {str(result2)[:200]}"))
        if how == "error":
            if str(path) not in result:
                problems.append((i, kind, f"message does not name the file: {result}"))
        elif how == "loaded":
            try:  # re-validation: a harmless mutation gives something that round-trips unchanged
                assert isinstance(result, dict) or checkpoint
                again = S.loads(S.dumps(result))
                assert _canon(again) == _canon(result)
            except Exception as e:  # noqa: BLE001
                problems.append((i, kind, f"loaded but does not round-trip: {type(e).__name__}: {e}"))
        else:
            problems.append((i, kind, result))
    print(f"\nfuzz {'ember.load' if checkpoint else 'load_safetensors'}: {tally['tried']} tried, "
          f"{tally['error']} CheckpointError, {tally['loaded']} loaded harmlessly, {tally['other']} other "
          f"exception types, {tally['hang']} hangs; by mutation: {kinds}")
    return tally, problems


def test_pi5_fuzz_300_mutated_checkpoints(tmp_path):
    """PI-5: 300 mutated checkpoints (fixed seed): each loads harmlessly or raises CheckpointError."""
    base = S.dumps(_base_state())
    tally, problems = _fuzz(tmp_path, base, N_CHECKPOINTS, True, lambda p, mmap: ember.load(p, mmap=mmap))
    assert problems == [], problems[:10]
    assert tally["tried"] == N_CHECKPOINTS and tally["other"] == 0 and tally["hang"] == 0
    assert tally["error"] + tally["loaded"] == N_CHECKPOINTS and tally["error"] > N_CHECKPOINTS // 2


def test_pi5_fuzz_100_mutated_safetensors_files(tmp_path):
    """PI-5: 100 mutated plain safetensors files through load_safetensors (no checksum to hide behind)."""
    st = _base_state()["model"]
    p = tmp_path / "base.safetensors"
    S.save_safetensors(st, p, metadata={"who": "fuzz"})
    tally, problems = _fuzz(tmp_path, p.read_bytes(), N_SAFETENSORS, False, S.load_safetensors)
    assert problems == [], problems[:10]
    assert tally["other"] == 0 and tally["hang"] == 0 and tally["error"] > N_SAFETENSORS // 3


# ---------------------------------------------------------------- paths that are not regular files
def _in_thread(fn, timeout=5.0):
    """Run fn() in a daemon thread; return ("ok"|"raised"|"hung", value)."""
    box = {}

    def target():
        try:
            box["ok"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["raised"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return "hung", None
    return ("ok", box["ok"]) if "ok" in box else ("raised", box["raised"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_path_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    calls = [lambda: ember.load(fifo), lambda: ember.load(fifo, mmap=True), lambda: S.load_safetensors(fifo),
             lambda: S.read_safetensors_metadata(fifo), lambda: S.verify(fifo)]
    try:
        for call in calls:
            t0 = time.perf_counter()
            how, value = _in_thread(call)
            assert how == "raised", f"a load of a FIFO {'hung' if how == 'hung' else 'returned'}"
            assert isinstance(value, CheckpointError), repr(value)
            assert str(fifo) in str(value) and "FIFO" in str(value)
            assert time.perf_counter() - t0 < 2.0
    finally:  # release a reader blocked in open(), if any, so the thread can end
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_directory_and_device_paths_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        ember.load(tmp_path)
    if os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode):
        with pytest.raises(CheckpointError, match="device"):
            S.load_safetensors("/dev/null")


def test_header_is_checked_before_the_data_is_read(tmp_path):
    """A bad header in front of 256 MB is refused without allocating or reading those bytes."""
    import tracemalloc
    p = tmp_path / "big.safetensors"
    good = _file({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4))
    bad_header = _file({"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, bytes(4))
    for data, fragment in ((good, "after the last tensor"), (bad_header, "dtype 'Q7'")):
        with open(p, "wb") as f:
            f.write(data)
            f.truncate(256 * 2 ** 20)  # sparse: costs no disk
        tracemalloc.start()
        try:
            for mmap in (False, True):
                with pytest.raises(CheckpointError, match=fragment):
                    ember.load(p, mmap=mmap)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 * 2 ** 20, peak


# ---------------------------------------------------------------- header fields numpy cannot take
def test_more_than_64_dims_is_a_checkpoint_error(tmp_path):
    p = tmp_path / "rank.safetensors"
    p.write_bytes(_file({"x": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, bytes(4)))
    for load in (ember.load, S.load_safetensors):
        with pytest.raises(CheckpointError, match="65 dimensions"):
            load(p)
    p.write_bytes(_file({"x": {"dtype": "F32", "shape": [1] * 64, "data_offsets": [0, 4]}}, bytes(4)))
    assert S.load_safetensors(p)["x"].shape == (1,) * 64  # numpy's (and safetensors') limit is fine


def test_huge_dims_on_an_empty_tensor_are_a_checkpoint_error(tmp_path):
    p = tmp_path / "huge.safetensors"
    for shape in ([0, 2 ** 62], [2 ** 63, 0], [0, 2 ** 40, 2 ** 40], [0, 2 ** 64]):
        p.write_bytes(_file({"x": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}, b""))
        for load in (ember.load, S.load_safetensors):
            with pytest.raises(CheckpointError, match="shape"):
                load(p)
    p.write_bytes(_file({"x": {"dtype": "F32", "shape": [0, 2 ** 20], "data_offsets": [0, 0]}}, b""))
    assert S.load_safetensors(p)["x"].shape == (0, 2 ** 20)


def test_deeply_nested_structure_is_a_checkpoint_error(tmp_path):
    p = tmp_path / "deep.safetensors"
    deep = [_nested(600), _nested(5000), _nested(400, "1", '{"$dict":{"a":', "}}"),
            _nested(300, "1", '{"$tuple":[', "]}"), _nested(300, "1", '{"$items":[[1,', "]]}"),
            _nested(100_000)]
    for inner in deep:
        p.write_bytes(_with_structure('{"root": ' + inner + "}"))
        with pytest.raises(CheckpointError, match="nesting deeper"):
            ember.load(p)
    # in the header itself (the safetensors library refuses more than 128 levels, too)
    extra = json.loads(_nested(200))
    p.write_bytes(_file({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "e": extra}}, bytes(4)))
    with pytest.raises(CheckpointError, match="nesting deeper"):
        S.load_safetensors(p)
    n = 100_000
    p.write_bytes((2 * n).to_bytes(8, "little") + b"[" * n + b"]" * n)
    with pytest.raises(CheckpointError, match="nesting deeper"):
        S.load_safetensors(p)
    # what load would refuse, save refuses to write; what save writes, load reads
    lists, dicts, ok = 0, 0, 0
    for _ in range(300):
        lists = [lists]
    for _ in range(120):
        dicts = {"a": dicts}
    for _ in range(150):
        ok = [ok]
    for obj in (lists, dicts):
        with pytest.raises(ValueError, match="nesting deeper"):
            ember.save(obj, tmp_path / "never.safetensors")
    assert not any("never" in n for n in os.listdir(tmp_path))
    for obj in (ok, {"a": [[[[{"b": (1, [2])}]]]]}):
        assert ember.load(_save(tmp_path, obj)) == obj


def _save(tmp_path, obj):
    p = tmp_path / "obj.safetensors"
    ember.save(obj, p)
    return p


def test_bool_tensor_with_byte_2_is_a_checkpoint_error(tmp_path):
    p = tmp_path / "bool.safetensors"
    p.write_bytes(_file({"m": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}}, bytes([1, 2, 0])))
    for load in (ember.load, S.load_safetensors, lambda q: S.load_safetensors(q, mmap=True)):
        with pytest.raises(CheckpointError, match="BOOL"):
            load(p)
    # inside a checkpoint with a valid checksum
    ember.save({"m": ember.from_numpy(np.array([True, False, True]))}, p)
    header, body = _split(p.read_bytes())
    p.write_bytes(_join(header, bytes([1, 2, 1])))
    with pytest.raises(CheckpointError, match="BOOL"):
        ember.load(p)
    p.write_bytes(_join(header, bytes([1, 0, 1])))
    assert ember.load(p)["m"].tolist() == [True, False, True]


def test_every_bad_header_field_is_a_checkpoint_error(tmp_path):
    p = tmp_path / "fields.safetensors"
    ok = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    bad_entries = [dict(ok, dtype=v) for v in (["F32"], {"F32": 1}, 7, None, "U16", "f32")]
    bad_entries += [dict(ok, shape=v) for v in ("2", None, [[2]], [-2], [2.0], [True, 2], {"0": 2})]
    bad_entries += [dict(ok, data_offsets=v) for v in ([0, 8, 8], [8, 0], ["0", "8"], None, [False, 8], [0])]
    bad_entries += [{"dtype": "F32", "shape": [2]}, [ok], "F32", None]
    files = [_file({"x": e}, bytes(8)) for e in bad_entries]
    files += [_file({"x": ok}, bytes(8), metadata=m) for m in (0, [], "x", {"a": 1}, {"a": None}, {"a": ["b"]})]
    files += [_file({"x": ok, "y": ok}, bytes(8)),  # overlap
              _file({"x": dict(ok, data_offsets=[8, 16])}, bytes(16)),  # gap
              _file({"x": ok}, bytes(12)), _file({"x": ok}, bytes(4))]  # trailing bytes, truncated
    hb = b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"z":NaN}}'
    files.append(len(hb).to_bytes(8, "little") + hb + bytes(8))
    hb = b'{"\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    files.append(len(hb).to_bytes(8, "little") + hb + bytes(8))
    for i, data in enumerate(files):
        p.write_bytes(data)
        for load in (ember.load, S.load_safetensors, S.read_safetensors_metadata):
            with pytest.raises(CheckpointError) as ei:
                load(p)
            assert str(p) in str(ei.value), (i, str(ei.value))


def test_odd_but_valid_files_still_load(tmp_path):
    """What the safetensors library accepts, ember accepts too."""
    p = tmp_path / "ok.safetensors"
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    cases = [({"x": dict(entry, extra=[1, {"a": 2}])}, None),  # unknown fields are ignored
             ({"x": entry}, None),  # "__metadata__": null
             ({"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
               "b": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}, "x": entry}, {})]
    for entries, meta in cases:
        header = dict(entries)
        header["__metadata__"] = meta
        p.write_bytes(_join(header, np.float32([1.5]).tobytes(), resign=False))
        assert S.load_safetensors(p)["x"].tolist() == [1.5]
    p.write_bytes(_file({}, b""))
    assert S.load_safetensors(p) == {}


# ---------------------------------------------------------------- temp files of killed writers
def _temps(d, target):
    return [n for n in os.listdir(d) if n.startswith(f".{target}.tmp-")]


@pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(signal, "SIGKILL"),
                    reason="needs fork and SIGKILL")
def test_save_removes_temp_files_of_killed_writers(tmp_path):
    """5 writers SIGKILLed while `ember.save` of a 20 MB tensor is writing its temp file: the next
    `ember.save` to that path removes every temp file they left."""
    target = tmp_path / "big.safetensors"
    big = ember.from_numpy(np.arange(5 * 2 ** 20, dtype=np.float32))
    left, t0 = 0, time.perf_counter()
    for trial in range(5):
        pid = os.fork()
        if pid == 0:  # the child: save in a loop until killed
            try:
                while True:
                    ember.save({"w": big, "trial": trial}, target, sidecar=trial % 2 == 0)
            finally:
                os._exit(1)
        try:
            deadline = time.perf_counter() + 5.0
            while not _temps(tmp_path, target.name) and time.perf_counter() < deadline:
                time.sleep(0.0005)
            time.sleep(random.Random(trial).uniform(0, 0.004))
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        left = len(_temps(tmp_path, target.name))
    assert left >= 1, "no kill landed while a temp file existed"
    other = tmp_path / f".other.safetensors.tmp-{2 ** 22 + 12345}-0123abcd"  # another target's: kept
    other.write_bytes(b"x")
    ember.save({"w": ember.ones(2)}, target)
    assert _temps(tmp_path, target.name) == [] and _temps(tmp_path, target.name + ".json") == []
    assert other.exists()
    assert ember.load(target)["w"].tolist() == [1.0, 1.0]
    assert time.perf_counter() - t0 < 15


def test_save_keeps_temp_files_of_live_writers(tmp_path):
    target = tmp_path / "t.safetensors"
    live = tmp_path / f".t.safetensors.tmp-{os.getppid()}-0123abcd"  # a live process, fresh file
    dead = tmp_path / ".t.safetensors.tmp-999999999-0123abcd"
    old = tmp_path / f".t.safetensors.tmp-{os.getppid()}-4567abcd"  # live pid, untouched for an hour
    weird = tmp_path / f".t.safetensors.tmp-{10 ** 30}-89abcdef"  # a pid no process can have
    for f in (live, dead, old, weird):
        f.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    ember.save({"a": 1}, target)
    assert live.exists() and not dead.exists() and not old.exists() and not weird.exists()


def test_concurrent_saves_to_one_path_do_not_remove_each_others_temp_files(tmp_path):
    target = tmp_path / "c.safetensors"
    errors = []

    def writer(v):
        try:
            for _ in range(15):
                ember.save({"v": np.full(20_000, v, np.float32)}, target)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=writer, args=(v,)) for v in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert ember.load(target)["v"][0] in (0.0, 1.0, 2.0)
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []
