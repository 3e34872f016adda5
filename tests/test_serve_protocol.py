"""ember.serve without a server: config.json validation and version policies, OIP request decoding
and response encoding, the batcher's queue, the metrics text, and model loading failures."""
import json
import os
import struct
import threading
import time

import numpy as np
import pytest

import ember
from ember.serve import ConfigError, InvalidRequest, QueueFull, ServeError, parse_config
from ember.serve.batcher import Batcher
from ember.serve.config import select_versions
from ember.serve.metrics import Metrics
from ember.serve.models import ServedModel
from ember.serve.protocol import decode_infer_request, encode_infer_response
from ember.serve.repository import READY, Repository

IO = {"inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
      "outputs": [{"name": "y", "datatype": "FP32", "dims": [3]}]}


# ---------------------------------------------------------------- config.json
def test_config_defaults_and_round_trip():
    cfg = parse_config({"platform": "ember", "max_batch_size": 8, **IO,
                        "dynamic_batching": {"preferred_batch_size": [4, 2], "max_queue_delay_microseconds": 100,
                                             "max_queue_size": 7,
                                             "default_queue_policy": {"default_timeout_microseconds": 5}}}, "m")
    assert cfg.name == "m" and cfg.version_policy == ("latest", 1) and cfg.instance_count == 1
    assert cfg.dynamic_batching.preferred_batch_size == (2, 4) and cfg.queue.max_queue_size == 7
    assert cfg.buckets() == [2, 4, 8] and [cfg.padded_size(n) for n in (1, 2, 3, 5, 8)] == [2, 2, 4, 8, 8]
    assert parse_config(json.loads(json.dumps(cfg.to_json())), "m") == cfg
    plain = parse_config({"platform": "python", "max_batch_size": 12, **IO}, "m")
    assert plain.buckets() == [1, 2, 4, 8, 12] and plain.queue.max_queue_size == 1024
    assert parse_config(plain.to_json(), "m") == plain


def test_config_reads_triton_spelling():
    cfg = parse_config({"platform": "onnx", "input": [{"name": "a", "data_type": "TYPE_STRING", "dims": [-1]}],
                        "output": [{"name": "b", "data_type": "TYPE_FP16", "dims": [2]}]}, "m")
    assert cfg.inputs[0].datatype == "BYTES" and cfg.outputs[0].datatype == "FP16"
    assert parse_config({"platform": "onnx"}, "m").inputs is None  # read from the graph at load


@pytest.mark.parametrize("raw,message", [
    ({"platform": "tensorflow", **IO}, "platform must be one of"),
    ({"platform": "ember", **IO, "max_batch_sise": 4}, "unknown keys ['max_batch_sise']"),
    ({"platform": "ember", "name": "other", **IO}, "names the model 'other'"),
    ({"platform": "ember"}, "needs 'inputs'"),
    ({"platform": "ember", **IO, "dynamic_batching": {}}, "needs max_batch_size > 0"),
    ({"platform": "ember", **IO, "max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [8]}},
     "over max_batch_size"),
    ({"platform": "ember", "inputs": [{"name": "x", "datatype": "FP8", "dims": [1]}], "outputs": IO["outputs"]},
     "unknown datatype 'FP8'"),
    ({"platform": "ember", "inputs": [{"name": "x", "datatype": "FP32", "dims": [-2]}], "outputs": IO["outputs"]},
     "'dims' must be a list of integers >= -1"),
    ({"platform": "ember", **IO, "version_policy": {"latest": {"num_versions": 0}}}, "num_versions must be"),
    ({"platform": "ember", **IO, "version_policy": {"latest": {}, "all": {}}}, "exactly one of"),
    ({"platform": "ember", **IO, "max_batch_size": 2,
      "dynamic_batching": {"default_queue_policy": {"timeout_action": "DELAY"}}}, "only REJECT"),
    ({"platform": "ember", **IO, "instance_count": 0}, "instance_count must be an integer >= 1"),
])
def test_config_errors_name_the_problem(raw, message):
    with pytest.raises(ConfigError) as e:
        parse_config(raw, "m")
    assert message in str(e.value)


def test_version_policies():
    assert select_versions(("latest", 1), [1, 3, 2]) == [3]
    assert select_versions(("latest", 2), [1, 3, 2]) == [2, 3]
    assert select_versions(("all",), [2, 1]) == [1, 2]
    assert select_versions(("specific", (1, 5)), [1, 2, 3]) == [1]


# ---------------------------------------------------------------- requests and responses
def _js(obj) -> bytes:
    return json.dumps(obj).encode()


def test_decode_json_flat_nested_and_binary():
    flat = decode_infer_request(_js({"id": "q", "inputs": [
        {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]},
        {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3.5, 4]]}],
        "outputs": [{"name": "o", "parameters": {"binary_data": True}}]}))
    assert flat.id == "q" and flat.outputs == [("o", True)]
    np.testing.assert_array_equal(flat.inputs["a"], [[1, 2], [3, 4]])
    assert flat.inputs["a"].dtype == np.int32 and flat.inputs["b"][1, 0] == 3.5
    strings = [b"ab", b"", b"\xff"]
    blob = b"".join(struct.pack("<I", len(s)) + s for s in strings)
    x = np.arange(3, dtype=np.float16)
    head = _js({"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES",
                            "parameters": {"binary_data_size": len(blob)}},
                           {"name": "x", "shape": [3], "datatype": "FP16", "parameters": {"binary_data_size": 6}},
                           {"name": "t", "shape": [1], "datatype": "BOOL", "data": [True]}]})
    req = decode_infer_request(head + blob + x.tobytes(), str(len(head)))
    assert list(req.inputs["s"]) == strings and req.inputs["x"].dtype == np.float16
    np.testing.assert_array_equal(req.inputs["x"], x)
    assert req.inputs["t"].tolist() == [True]


@pytest.mark.parametrize("body,header,message", [
    ({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2, 3], [4]]}]}, None,
     "does not follow shape"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "BOOL", "data": [1]}]}, None, "BOOL data holds 1"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": [1.5]}]}, None, "INT32 data holds 1.5"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [-1]}]}, None, "out of range"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "id": 3}, None, "'id' must be"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1], "extra": 1}]}, None, "unknown fields"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
      "parameters": {"binary_data_output": "yes"}}, None, "must be true or false"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
      "outputs": [{"name": "o", "parameters": {"classification": 2}}]}, None, "classification"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}, "\u00b2", "non-negative integer"),
    ({"inputs": [{"name": "a", "shape": [1] * 40, "datatype": "FP32", "data": [1]}]}, None, "more than 32"),
])
def test_decode_errors(body, header, message):
    with pytest.raises(InvalidRequest) as e:
        decode_infer_request(_js(body), header)
    assert message in str(e.value)


@pytest.mark.parametrize("blob,message", [
    (b"\x05\x00\x00\x00ab\x00\x00\x00", "element 1 has no length prefix"),
    (b"\x01\x00\x00\x00a\x09\x00\x00\x00bc", "says 9 bytes but only 2 are left"),
    (b"\x01\x00", "need at least 8 bytes"),
    (b"\x01\x00\x00\x00a\x01\x00\x00\x00bc", "1 bytes are left"),
])
def test_binary_bytes_errors(blob, message):
    head = _js({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES",
                            "parameters": {"binary_data_size": len(blob)}}]})
    with pytest.raises(InvalidRequest) as e:
        decode_infer_request(head + blob, str(len(head)))
    assert message in str(e.value)


def test_binary_bool_must_be_0_or_1():
    head = _js({"inputs": [{"name": "b", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}]})
    with pytest.raises(InvalidRequest, match="BOOL bytes must be 0 or 1"):
        decode_infer_request(head + b"\x01\x02", str(len(head)))


def test_encode_response_json_and_binary():
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = np.array([b"hi", b"\xe2\x82\xac"], dtype=object)
    body, hlen = encode_infer_response("m", "1", "id7", [("y", "FP32", y, False), ("s", "BYTES", s, False)])
    out = json.loads(body)
    assert hlen is None and out["id"] == "id7" and out["outputs"][0]["data"] == list(range(6))
    assert out["outputs"][1]["data"] == ["hi", "\u20ac"]
    body, hlen = encode_infer_response("m", "1", None, [("y", "FP32", y, True), ("s", "BYTES", s, True)])
    head = json.loads(body[:hlen])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 24 and "id" not in head
    assert np.frombuffer(body[hlen:hlen + 24], "<f4").tolist() == list(range(6))
    assert body[hlen + 24:] == b"\x02\x00\x00\x00hi\x03\x00\x00\x00\xe2\x82\xac"
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        encode_infer_response("m", "1", None, [("s", "BYTES", np.array([b"\xff"], dtype=object), False)])


# ---------------------------------------------------------------- batcher and metrics
class _Doubler(ServedModel):
    kind = "test"

    def __init__(self, config, delay=0.0):
        super().__init__(config, 1)
        self.delay, self.calls = delay, []

    def run(self, inputs, batch):
        self.calls.append(batch)
        time.sleep(self.delay)
        return {"y": inputs["x"] * 2}


def _cfg(**kw):
    return parse_config({"platform": "python", "max_batch_size": 8, "inputs": [{"name": "x", "datatype": "FP32",
                                                                                 "dims": [1]}],
                         "outputs": [{"name": "y", "datatype": "FP32", "dims": [1]}], **kw}, "m")


def test_batcher_batches_and_splits_results():
    model = _Doubler(_cfg(dynamic_batching={"max_queue_delay_microseconds": 500_000,
                                            "preferred_batch_size": [4]}))
    metrics = Metrics()
    b = Batcher(model, metrics).start()
    try:
        t0 = time.monotonic()
        futs = [b.submit({"x": np.full((n, 1), float(i), np.float32)}, n) for i, n in enumerate([1, 2, 1])]
        outs = [f.result(5) for f in futs]
        early = time.monotonic() - t0
        t0 = time.monotonic()
        last = b.submit({"x": np.full((3, 1), 3.0, np.float32)}, 3).result(5)
        late = time.monotonic() - t0
    finally:
        b.stop()
    assert [o["y"].ravel().tolist() for o in outs + [last]] == [[0.0], [2.0, 2.0], [4.0], [6.0, 6.0, 6.0]]
    # 1+2+1 reaches the preferred size: it runs at once; 3 alone waits for the window to close
    assert model.calls == [4, 3] and early < 0.3 and late >= 0.49
    snap = metrics.snapshot("m", "1")
    assert snap["nv_inference_count"] == 7 and snap["nv_inference_exec_count"] == 2


def test_batcher_takes_what_fits_up_to_max_batch_size():
    model = _Doubler(_cfg(dynamic_batching={"max_queue_delay_microseconds": 100_000}), delay=0.1)
    b = Batcher(model, Metrics()).start()
    try:
        first = b.submit({"x": np.ones((8, 1), np.float32)}, 8)  # a full batch: runs at once, for 0.1 s
        rest = [b.submit({"x": np.ones((n, 1), np.float32)}, n) for n in (3, 4, 2, 5)]
        for f in [first] + rest:
            f.result(5)
    finally:
        b.stop()
    assert model.calls == [8, 7, 7]  # 3+4 fit in 8, 2 does not: it starts the next batch with 5


def test_batcher_full_queue_raises_and_stop_drains():
    model = _Doubler(_cfg(queue={"max_queue_size": 2}), delay=0.2)
    b = Batcher(model, Metrics()).start()
    first = b.submit({"x": np.ones((1, 1), np.float32)}, 1)
    deadline = time.monotonic() + 5
    while not model.calls and time.monotonic() < deadline:  # the first one runs: the queue is empty again
        time.sleep(0.005)
    queued = [b.submit({"x": np.ones((1, 1), np.float32)}, 1) for _ in range(2)]
    with pytest.raises(QueueFull, match="queue is full"):
        b.submit({"x": np.ones((1, 1), np.float32)}, 1)
    b.stop()
    assert all(f.result(0)["y"].tolist() == [[2.0]] for f in [first] + queued)
    assert not any(t.name.startswith("ember-serve-m") for t in threading.enumerate())


def test_metrics_text():
    m = Metrics()
    m.register('we"ird', "2")
    m.request('we"ird', "2", True, 1_500_000)
    m.request('we"ird', "2", False, 500_000)
    text = m.render()
    assert '# TYPE nv_inference_request_success counter' in text
    assert 'nv_inference_request_success{model="we\\"ird",version="2"} 1' in text
    assert 'nv_inference_request_failure{model="we\\"ird",version="2"} 1' in text
    assert 'nv_inference_request_duration_us{model="we\\"ird",version="2"} 2000' in text


# ---------------------------------------------------------------- loading failures
def test_a_model_that_fails_its_warmup_is_unavailable_and_others_load(tmp_path):
    root = str(tmp_path)
    for name, out_dtype in (("good", "FP32"), ("wrong_dtype", "FP64")):
        os.makedirs(os.path.join(root, name, "1"))
        with open(os.path.join(root, name, "1", "model.py"), "w") as f:
            f.write("import ember.nn as nn\n\ndef build():\n    return nn.Linear(2, 1)\n")
        ember.manual_seed(0)
        ember.save(ember.nn.Linear(2, 1).state_dict(), os.path.join(root, name, "1", "model.safetensors"))
        with open(os.path.join(root, name, "config.json"), "w") as f:
            json.dump({"platform": "ember", "max_batch_size": 2,
                       "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
                       "outputs": [{"name": "y", "datatype": out_dtype, "dims": [1]}]}, f)
    os.makedirs(os.path.join(root, "no_weights", "1"))
    with open(os.path.join(root, "no_weights", "config.json"), "w") as f:
        json.dump({"platform": "ember", **IO}, f)
    repo = Repository(root, Metrics())
    try:
        entries = {n: repo.load(n) for n in repo.model_names()}
        assert entries["good"].versions[1].state == READY
        bad = entries["wrong_dtype"].versions[1]
        assert bad.state != READY and "is FP32 but config.json declares FP64" in bad.reason
        assert "no model.py" in entries["no_weights"].why_not_ready()
        with pytest.raises(ServeError) as e:
            repo.resolve("wrong_dtype", None)
        assert e.value.status == 503
    finally:
        repo.close()
