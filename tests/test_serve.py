"""ember serve against live servers on 127.0.0.1: the Triton HTTP client (health, metadata, JSON
and binary inference equal to the model run in ember), every error path over plain HTTP, dynamic
batching (320 requests to a 10 ms model), a full queue, queue timeouts, version policy, the
repository API, a fixed-seed fuzz of malformed requests, graceful stop, and no thread left behind."""
import base64
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import ember

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from ember.serve import Server  # noqa: E402

MLP_PY = """
import ember.nn as nn

def build():
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
"""

SLEEP_PY = """
import time
SLEEP = 0.0
CALLS = 0

def initialize(args):
    global SLEEP
    SLEEP = float(args["model_config"]["parameters"].get("sleep_ms", 0)) / 1000

def execute(inputs):
    global CALLS
    CALLS += 1
    time.sleep(SLEEP)
    return {"y": inputs["x"] * 2}
"""

ECHO_PY = """
def execute(inputs):
    return {"out_" + k: v for k, v in inputs.items()}
"""

# a preprocessing step: base64 text in, decoded bytes and their lengths out
B64_PY = """
import base64
import numpy as np

def execute(inputs):
    raw = [base64.b64decode(b) for b in inputs["b64"].reshape(-1)]
    out = np.empty(len(raw), dtype=object)
    out[:] = raw
    lengths = np.array([len(r) for r in raw], np.int32)
    return {"raw": out.reshape(-1, 1), "length": lengths.reshape(-1, 1)}
"""

VERSION_PY = """
import numpy as np
VERSION = {v}

def execute(inputs):
    return {{"y": np.full_like(inputs["x"], VERSION)}}
"""

DTYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16"]


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _config(root, name, **cfg):
    _write(os.path.join(root, name, "config.json"), json.dumps(cfg))


def _io(dims_in, dims_out, dt="FP32", x="x", y="y"):
    return {"inputs": [{"name": x, "datatype": dt, "dims": dims_in}],
            "outputs": [{"name": y, "datatype": dt, "dims": dims_out}]}


def _sleepy(root, name, sleep_ms, **cfg):
    _write(os.path.join(root, name, "1", "model.py"), SLEEP_PY)
    _config(root, name, platform="python", parameters={"sleep_ms": str(sleep_ms)}, **_io([2], [2]), **cfg)


def build_mlp():
    ns = {}
    exec(MLP_PY, ns)
    return ns["build"]()


def make_repository(root):
    """The test repository; returns the eager MLP the ember and ONNX models hold."""
    ember.manual_seed(0)
    mlp = build_mlp().eval()
    _write(os.path.join(root, "mlp", "1", "model.py"), MLP_PY)
    ember.save(mlp.state_dict(), os.path.join(root, "mlp", "1", "model.safetensors"), sidecar=False)
    _config(root, "mlp", platform="ember", max_batch_size=8, **_io([4], [3]),
            dynamic_batching={"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 500})
    import ember.onnx as eo
    os.makedirs(os.path.join(root, "onnx_mlp", "1"))
    eo.export(mlp, (ember.randn(2, 4),), os.path.join(root, "onnx_mlp", "1", "model.onnx"),
              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    _config(root, "onnx_mlp", platform="onnx", max_batch_size=8)  # inputs/outputs read from the graph
    _sleepy(root, "slow", 10, max_batch_size=32, dynamic_batching={"max_queue_delay_microseconds": 5000})
    _sleepy(root, "gate", 300, max_batch_size=4, queue={"max_queue_size": 2})
    _sleepy(root, "timeout", 300, max_batch_size=4,
            queue={"default_queue_policy": {"default_timeout_microseconds": 50_000}})
    _write(os.path.join(root, "echo", "1", "model.py"), ECHO_PY)
    _config(root, "echo", platform="python",
            inputs=[{"name": d, "datatype": d, "dims": [-1]} for d in DTYPES + ["BYTES"]],
            outputs=[{"name": "out_" + d, "datatype": d, "dims": [-1]} for d in DTYPES + ["BYTES"]])
    _write(os.path.join(root, "b64", "1", "model.py"), B64_PY)
    _config(root, "b64", platform="python", max_batch_size=8,
            inputs=[{"name": "b64", "datatype": "BYTES", "dims": [1]}],
            outputs=[{"name": "raw", "datatype": "BYTES", "dims": [1]},
                     {"name": "length", "datatype": "INT32", "dims": [1]}])
    for v in (1, 2, 3):
        _write(os.path.join(root, "versioned", str(v), "model.py"), VERSION_PY.format(v=v))
    _config(root, "versioned", platform="python", max_batch_size=4, **_io([2], [2]),
            version_policy={"latest": {"num_versions": 1}})
    _write(os.path.join(root, "broken", "1", "model.py"), "raise RuntimeError('deliberately broken')\n")
    _config(root, "broken", platform="python", **_io([1], [1]))
    _config(root, "badconfig", platform="tensorflow", **_io([1], [1]))
    return mlp


def _server_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ember-serve")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("model_repository"))
    return root, make_repository(root)


@pytest.fixture(scope="module")
def server(repo):
    srv = Server(repo[0], max_body_bytes=1 << 20).start()
    yield srv
    srv.stop()
    assert _server_threads() == [], "the server left threads behind"


def call(port, method, path, body=None, headers=None, timeout=20):
    """(status, headers, body) of one request on a new connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def infer_json(port, model, x, name="x", version=None):
    body = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]})
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return call(port, "POST", path, body.encode())


def _error(status_body):
    status, _, body = status_body
    return status, json.loads(body)["error"]


# ---------------------------------------------------------------- the Triton client
@pytest.fixture(scope="module")
def client(server):
    httpclient = pytest.importorskip("tritonclient.http")
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=20)
    yield c
    c.close()


def test_triton_client_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("onnx_mlp")
    assert not client.is_model_ready("broken")
    meta = client.get_server_metadata()
    assert meta["name"] == "ember" and "binary_tensor_data" in meta["extensions"]
    md = client.get_model_metadata("mlp")
    assert md["name"] == "mlp" and md["versions"] == ["1"] and md["platform"] == "ember"
    assert md["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert md["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    md = client.get_model_metadata("onnx_mlp")
    assert md["platform"] == "onnx" and md["inputs"][0]["shape"] == [-1, 4]


@pytest.mark.parametrize("model,iname,oname", [("mlp", "x", "y"), ("onnx_mlp", "input", "output")])
@pytest.mark.parametrize("binary", [False, True])
def test_triton_client_infer_equals_ember(client, repo, model, iname, oname, binary):
    from tritonclient.http import InferInput, InferRequestedOutput
    mlp = repo[1]
    for n in (1, 3, 8):
        x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        inp = InferInput(iname, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        res = client.infer(model, [inp], outputs=[InferRequestedOutput(oname, binary_data=binary)],
                           request_id=f"r{n}")
        with ember.no_grad():
            want = mlp(ember.from_numpy(x)).numpy()
        np.testing.assert_allclose(res.as_numpy(oname), want, rtol=1e-5, atol=1e-6)
        r = res.get_response()
        assert r["id"] == f"r{n}" and r["model_name"] == model and r["model_version"] == "1"


@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype_round_trips(client, binary):
    from tritonclient.http import InferInput, InferRequestedOutput
    import ml_dtypes
    rng = np.random.default_rng(0)
    arrays = {"BOOL": rng.random(5) > 0.5, "UINT8": rng.integers(0, 255, 5).astype(np.uint8),
              "INT8": rng.integers(-128, 127, 5).astype(np.int8),
              "INT16": rng.integers(-30000, 30000, 5).astype(np.int16),
              "INT32": rng.integers(-2**31, 2**31 - 1, 5).astype(np.int32),
              "INT64": rng.integers(-2**62, 2**62, 5).astype(np.int64),
              "FP16": rng.standard_normal(5).astype(np.float16), "FP32": rng.standard_normal(5).astype(np.float32),
              "FP64": rng.standard_normal(5), "BF16": rng.standard_normal(5).astype(ml_dtypes.bfloat16),
              "BYTES": np.array([b"a", b"", "é".encode(), b"xyz", b"\x00"], dtype=object)}
    inputs, outputs = [], []
    for d, a in arrays.items():
        inp = InferInput(d, [5], d)
        inp.set_data_from_numpy(a, binary_data=binary or d == "BF16")  # the client sends BF16 only binary
        inputs.append(inp)
        outputs.append(InferRequestedOutput("out_" + d, binary_data=binary or d in ("BF16", "BYTES")))
    res = client.infer("echo", inputs, outputs=outputs)
    for d, a in arrays.items():
        got = res.as_numpy("out_" + d)
        assert got.dtype == a.dtype, d
        np.testing.assert_array_equal(got, a)


def test_bytes_preprocessing_model(client):
    from tritonclient.http import InferInput
    texts = [b"hello", b"\x00\x01\x02 binary", b""]
    x = np.array([[base64.b64encode(t)] for t in texts], dtype=object)
    for binary in (False, True):
        inp = InferInput("b64", [3, 1], "BYTES")
        inp.set_data_from_numpy(x, binary_data=binary)
        res = client.infer("b64", [inp])  # no outputs named: every output, JSON or binary_data_output
        np.testing.assert_array_equal(res.as_numpy("length").reshape(-1), [len(t) for t in texts])
        assert [bytes(b) for b in res.as_numpy("raw").reshape(-1)] == texts if binary else True


def test_json_bf16_nested_data_and_binary_output_parameter(server):
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                   "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}],
                       "parameters": {"binary_data_output": True}}).encode()
    status, headers, data = call(server.port, "POST", "/v2/models/mlp/infer", body)
    assert status == 200
    n = int(headers["Inference-Header-Content-Length"])
    head = json.loads(data[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 2 * 3 * 4 == len(data) - n
    # raw bytes input with Inference-Header-Content-Length, JSON output
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    js = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 32}}]}).encode()
    status, _, data = call(server.port, "POST", "/v2/models/mlp/infer", js + x.tobytes(),
                           {"Inference-Header-Content-Length": str(len(js))})
    assert status == 200 and len(json.loads(data)["outputs"][0]["data"]) == 6
    # BF16 as JSON numbers
    js = {"inputs": [{"name": d, "shape": [1], "datatype": d,
                      "data": [True] if d == "BOOL" else ["s"] if d == "BYTES" else [1.5] if d[0] in "FB" else [3]}
                     for d in DTYPES + ["BYTES"]]}
    status, _, data = call(server.port, "POST", "/v2/models/echo/infer", json.dumps(js).encode())
    outs = {o["name"]: o for o in json.loads(data)["outputs"]}
    assert status == 200 and outs["out_BF16"]["data"] == [1.5] and outs["out_BYTES"]["data"] == ["s"]


# ---------------------------------------------------------------- errors over plain HTTP
def _req(inputs, **extra):
    return json.dumps({"inputs": inputs, **extra}).encode()


def _binary(declared: int, sent: int):
    """(body, headers) of an mlp input of shape [1, 4] declaring `declared` binary bytes, sending `sent`."""
    js = _req([{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": declared}}])
    return js + b"\0" * sent, {"Inference-Header-Content-Length": str(len(js))}


X = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
ERRORS = [
    ("malformed JSON", "mlp", b'{"inputs": [', {}, 400, "not valid JSON"),
    ("not an object", "mlp", b"[1, 2]", {}, 400, "must be a JSON object"),
    ("no inputs", "mlp", b"{}", {}, 400, "'inputs' must be a non-empty list"),
    ("unknown input", "mlp", _req([{**X, "name": "z"}]), {}, 400, "has no input 'z'"),
    ("missing input", "echo", _req([{"name": "FP32", "shape": [1], "datatype": "FP32", "data": [1]}]), {}, 400,
     "needs inputs"),
    ("wrong datatype", "mlp", _req([{**X, "datatype": "FP64"}]), {}, 400, "is FP32, the request sends FP64"),
    ("wrong shape", "mlp", _req([{**X, "shape": [1, 5], "data": [1] * 5}]), {}, 400, "takes [-1, 4]"),
    ("batch over max", "mlp", _req([{**X, "shape": [9, 4], "data": [1] * 36}]), {}, 400, "max_batch_size"),
    ("empty batch", "mlp", _req([{**X, "shape": [0, 4], "data": []}]), {}, 400, "batch size 0"),
    ("count mismatch", "mlp", _req([{**X, "data": [1, 2, 3]}]), {}, 400, "holds 4 elements but 'data' has 3"),
    ("unknown datatype", "mlp", _req([{**X, "datatype": "FP8"}]), {}, 400, "unknown datatype"),
    ("negative dim", "mlp", _req([{**X, "shape": [-1, 4]}]), {}, 400, "non-negative"),
    ("huge shape", "mlp", _req([{**X, "shape": [10**12, 4]}]), {}, 400, "elements but 'data' has 4"),
    ("string in FP32", "mlp", _req([{**X, "data": [1, 2, "x", 4]}]), {}, 400, "FP32 data holds \"x\""),
    ("int out of range", "echo", _req([{"name": "INT8", "shape": [1], "datatype": "INT8", "data": [300]}]), {},
     400, "out of range"),
    ("duplicate input", "mlp", _req([X, X]), {}, 400, "given twice"),
    ("binary size mismatch", "mlp", *_binary(12, 12), 400, "needs 16 bytes"),
    ("header length past body", "mlp", _req([X]), {"Inference-Header-Content-Length": "99999"}, 400,
     "has only"),
    ("header length not a number", "mlp", _req([X]), {"Inference-Header-Content-Length": "-3"}, 400,
     "non-negative integer"),
    ("binary size past body", "mlp", *_binary(16, 8), 400, "runs past the binary data"),
    ("binary bytes left over", "mlp", *_binary(16, 20), 400, "no input's binary_data_size accounts for"),
    ("unknown output", "mlp", _req([X], outputs=[{"name": "nope"}]), {}, 400, "has no output 'nope'"),
    ("unknown model", "nope", _req([X]), {}, 404, "unknown model 'nope'"),
    ("model that failed to load", "broken", _req([X]), {}, 503, "deliberately broken"),
    ("bad config", "badconfig", _req([X]), {}, 503, "platform must be one of"),
    ("body over the cap", "mlp", None, {"Content-Length": str(10 << 20)}, 413, "over the server's limit"),
]


@pytest.mark.parametrize("what,model,body,headers,status,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_paths(server, what, model, body, headers, status, message):
    if body is None:  # announce a huge body and send none: refused from the header alone
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      f"Content-Length: {headers['Content-Length']}\r\n\r\n".encode())
            reply = s.makefile("rb").read()
        head, _, data = reply.partition(b"\r\n\r\n")
        assert head.split()[1] == str(status).encode()
        assert message in json.loads(data)["error"]
        return
    got, err = _error(call(server.port, "POST", f"/v2/models/{model}/infer", body, headers))
    assert (got, message in err) == (status, True), err


def test_error_paths_outside_infer(server):
    p = server.port
    assert _error(call(p, "GET", "/v2/models/nope"))[0] == 404
    assert _error(call(p, "GET", "/v2/models/mlp/versions/7"))[0] == 404
    assert _error(call(p, "GET", "/v2/models/mlp/versions/7/ready"))[0] == 404
    assert _error(call(p, "GET", "/v2/models/mlp/versions/%C2%B2/ready"))[0] == 404  # '²'.isdigit()
    assert _error(call(p, "POST", "/v2/models/mlp/versions/7/infer", _req([X])))[0] == 404
    assert _error(call(p, "GET", "/v2/no/such/route"))[0] == 404
    assert _error(call(p, "GET", "/v2/models/mlp/infer"))[0] == 405
    status, err = _error(call(p, "GET", "/v2/models/broken/ready"))
    assert status == 503 and "deliberately broken" in err
    status, _, body = call(p, "GET", "/v2/models/broken")
    md = json.loads(body)
    assert status == 200 and md["state"] == "UNAVAILABLE" and "deliberately broken" in md["reason"]
    # a chunked body that grows over the cap is cut off while it streams
    with socket.create_connection(("127.0.0.1", p), timeout=10) as s:
        s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 65536
        for _ in range(17):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        s.sendall(b"0\r\n\r\n")
        reply = s.makefile("rb").read()
    assert reply.split()[1] == b"413" and b"over the server's limit" in reply
    # a client that hangs up halfway through its body
    with socket.create_connection(("127.0.0.1", p), timeout=10) as s:
        s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inp")
    assert call(p, "GET", "/v2/health/live")[0] == 200


# ---------------------------------------------------------------- batching, queues
def _metric(port, name, model):
    text = call(port, "GET", "/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}",version="1"}}'):
            return int(line.split()[-1])
    raise AssertionError(f"{name} for {model} not in /metrics")


def test_dynamic_batching_320_requests_from_32_threads(server):
    """The model sleeps 10 ms per call: 320 calls one by one take 3.2 s; batched they cannot."""
    port, errors, n_threads, per_thread = server.port, [], 32, 10
    start = threading.Barrier(n_threads + 1)
    body = _req([{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}])

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            start.wait()
            for _ in range(per_thread):
                c.request("POST", "/v2/models/slow/infer", body)
                r = c.getresponse()
                out = json.loads(r.read())
                if r.status != 200 or out["outputs"][0]["data"] != [2.0, 4.0]:
                    errors.append((r.status, out))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()
    threads = [threading.Thread(target=client) for _ in range(n_threads)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(30)
    elapsed = time.perf_counter() - t0
    assert not errors, errors[:3]
    count, execs = _metric(port, "nv_inference_count", "slow"), _metric(port, "nv_inference_exec_count", "slow")
    print(f"\n320 requests in {elapsed:.2f} s; {count} inferences in {execs} executions "
          f"(average batch {count / execs:.1f})")
    assert count == n_threads * per_thread
    assert count / execs > 4
    assert elapsed < 1.6, f"320 requests took {elapsed:.2f} s"
    assert _metric(port, "nv_inference_request_success", "slow") == 320
    assert _metric(port, "nv_inference_queue_duration_us", "slow") > 0
    assert _metric(port, "nv_inference_compute_infer_duration_us", "slow") >= 320 * 10_000


def _concurrent(port, path, body, n):
    out = [None] * n

    def one(i):
        out[i] = call(port, "POST", path, body)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, out


def test_full_queue_answers_429_and_the_server_stays_live(server):
    body = _req([{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}])
    threads, out = _concurrent(server.port, "/v2/models/gate/infer", body, 8)
    time.sleep(0.1)
    t0 = time.perf_counter()
    assert call(server.port, "GET", "/v2/health/live")[0] == 200
    # answered at once, while the model is busy and its queue full
    assert time.perf_counter() - t0 < 0.5 and any(t.is_alive() for t in threads)
    for t in threads:
        t.join(20)
    codes = sorted(o[0] for o in out)
    assert codes.count(200) >= 2 and codes.count(200) + codes.count(429) == 8 and codes.count(429) >= 5, codes
    err = next(json.loads(o[2])["error"] for o in out if o[0] == 429)
    assert "request queue is full (2 requests)" in err


def test_queue_timeout_rejects(server):
    body = _req([{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}])
    threads, out = _concurrent(server.port, "/v2/models/timeout/infer", body, 3)
    for t in threads:
        t.join(20)
    codes = sorted(o[0] for o in out)
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    err = next(json.loads(o[2])["error"] for o in out if o[0] == 503)
    assert "past its timeout" in err
    assert _metric(server.port, "nv_inference_request_failure", "timeout") == codes.count(503)


# ---------------------------------------------------------------- versions, repository API
def test_version_policy_latest_one_serves_the_highest(server):
    p, x = server.port, np.ones((1, 2), np.float32)
    md = json.loads(call(p, "GET", "/v2/models/versioned")[2])
    assert md["versions"] == ["3"]
    status, _, body = infer_json(p, "versioned", x)
    assert status == 200 and json.loads(body)["model_version"] == "3"
    assert json.loads(body)["outputs"][0]["data"] == [3.0, 3.0]
    assert infer_json(p, "versioned", x, version="3")[0] == 200
    status, err = _error(infer_json(p, "versioned", x, version="1"))
    assert status == 404 and "no version '1'" in err
    assert call(p, "GET", "/v2/models/versioned/versions/3/ready")[0] == 200


def test_repository_unload_and_load(server):
    p, x = server.port, np.ones((2, 4), np.float32)
    index = json.loads(call(p, "POST", "/v2/repository/index", b"")[2])
    states = {(i["name"], i.get("version")): i["state"] for i in index}
    assert states[("mlp", "1")] == "READY" and states[("broken", "1")] == "UNAVAILABLE"
    assert call(p, "POST", "/v2/repository/models/mlp/unload")[0] == 200
    assert call(p, "GET", "/v2/models/mlp/ready")[0] == 503
    status, err = _error(infer_json(p, "mlp", x))
    assert status == 503 and "not loaded" in err
    md = json.loads(call(p, "GET", "/v2/models/mlp/versions/1")[2])
    assert md["state"] == "UNAVAILABLE" and md["reason"] == "model 'mlp' is not loaded"
    ready = json.loads(call(p, "POST", "/v2/repository/index", b'{"ready": true}')[2])
    assert "mlp" not in {i["name"] for i in ready} and "onnx_mlp" in {i["name"] for i in ready}
    assert call(p, "POST", "/v2/repository/models/mlp/load")[0] == 200
    assert call(p, "GET", "/v2/models/mlp/ready")[0] == 200
    assert infer_json(p, "mlp", x)[0] == 200
    status, err = _error(call(p, "POST", "/v2/repository/models/broken/load"))
    assert status == 400 and "deliberately broken" in err
    assert _error(call(p, "POST", "/v2/repository/models/nope/load"))[0] == 404
    assert _error(call(p, "POST", "/v2/repository/models/nope/unload"))[0] == 404


# ---------------------------------------------------------------- fuzz
def _malformed(rng: random.Random):
    """(body, headers) of a request that must be refused."""
    good = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}]}
    raw = json.dumps(good).encode()
    kind = rng.randrange(10)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), {}
    if kind == 1:
        return raw[:rng.randrange(len(raw) - 1)], {}
    if kind == 2:  # a header length that does not match the JSON part
        n = rng.choice([len(raw) - rng.randrange(1, 20), len(raw) + rng.randrange(1, 50)])
        return raw + b"\0" * rng.randrange(0, 40), {"Inference-Header-Content-Length": str(n)}
    t = dict(good["inputs"][0])
    if kind == 3:
        t["shape"] = [rng.choice([10**12, 2**63, 10**30]), 4]
    elif kind == 4:
        t["shape"] = [rng.randrange(-5, 0), 4]
    elif kind == 5:
        t["datatype"] = rng.choice(["FP8", "fp32", "", None, 7, "STRING", "UINT128"])
    elif kind == 6:  # binary sizes that do not fit the shape
        size = rng.choice([0, 4, 31, 33, 64])
        js = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": size}}]}).encode()
        return js + b"\0" * rng.choice([size, 32]), {"Inference-Header-Content-Length": str(len(js))}
    elif kind == 7:  # a field of the wrong type or value
        bad = {"shape": [None, "x", {"a": 1}, 3.5, [2, 4.0], [True, 4], [[2], 4]],
               "data": [None, "x", {"a": 1}, 3.5, [[1, [2]]], True, [None] * 8],
               "name": [None, "", "y", 7, ["x"]], "parameters": ["x", 3, [1], {"binary_data_size": -1}]}
        key = rng.choice(sorted(bad))
        t[key] = rng.choice(bad[key])
    elif kind == 8:
        t["data"] = [rng.choice([float("nan"), "1", None, [1], {}, True, 1e400])] * 8
        if all(isinstance(v, float) for v in t["data"]):
            t["data"] = t["data"][:7]
    else:
        depth = rng.randrange(100, 3000)
        return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}", {}
    return json.dumps({"inputs": [t]}).encode(), {}


def test_fuzz_malformed_requests_leave_the_server_healthy(server, repo):
    rng = random.Random(1234)
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    seen = {}
    try:
        for _ in range(300):
            body, headers = _malformed(rng)
            c.request("POST", "/v2/models/mlp/infer", body, headers)
            r = c.getresponse()
            reply = r.read()
            assert r.status in (400, 413), (r.status, body[:200], reply[:300])
            assert json.loads(reply)["error"]
            seen[r.status] = seen.get(r.status, 0) + 1
            if r.getheader("connection", "").lower() == "close":
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    finally:
        c.close()
    assert call(server.port, "GET", "/v2/health/live")[0] == 200
    x = np.random.default_rng(7).standard_normal((2, 4)).astype(np.float32)
    status, _, body = infer_json(server.port, "mlp", x)
    with ember.no_grad():
        want = repo[1](ember.from_numpy(x)).numpy()
    assert status == 200
    np.testing.assert_allclose(np.array(json.loads(body)["outputs"][0]["data"]).reshape(2, 3), want,
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- lifecycle
def test_graceful_stop_completes_the_in_flight_request(tmp_path):
    before = set(threading.enumerate())
    root = str(tmp_path)
    _sleepy(root, "sleepy", 400, max_batch_size=4)
    srv = Server(root, drain_timeout_s=10).start()
    assert srv.url == f"http://127.0.0.1:{srv.port}" and srv.port > 0
    body = _req([{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}])
    threads, out = _concurrent(srv.port, "/v2/models/sleepy/infer", body, 1)
    module = srv.repository.resolve("sleepy", None).model.module
    deadline = time.monotonic() + 10
    while module.CALLS == 0 and time.monotonic() < deadline:  # until the request runs in the model
        time.sleep(0.01)
    srv.stop()
    threads[0].join(10)
    status, _, data = out[0]
    assert status == 200 and json.loads(data)["outputs"][0]["data"] == [2.0, 4.0]
    with pytest.raises(OSError):
        call(srv.port, "GET", "/v2/health/live", timeout=2)
    assert set(threading.enumerate()) - before == set()


def test_strict_readiness_waits_for_every_model(tmp_path):
    root = str(tmp_path)
    _sleepy(root, "fine", 0, max_batch_size=2)
    _write(os.path.join(root, "broken", "1", "model.py"), "raise ImportError('no such thing')\n")
    _config(root, "broken", platform="python", **_io([1], [1]))
    for strict, want in ((True, 503), (False, 200)):
        with Server(root, strict_readiness=strict) as srv:
            assert call(srv.port, "GET", "/v2/health/ready")[0] == want
            assert call(srv.port, "GET", "/v2/models/fine/ready")[0] == 200


def test_web_stack_is_imported_lazily_and_missing_extra_is_named(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import ember, ember.serve
        assert "starlette" not in sys.modules and "uvicorn" not in sys.modules
        sys.modules["uvicorn"] = None  # as if the extra were not installed
        try:
            ember.serve.Server({str(tmp_path)!r}).start()
        except ember.serve.MissingDependency as e:
            assert isinstance(e, ember.EmberError) and "pip install 'ember[serve]'" in str(e), e
            print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "ok", r.stderr


def test_cli_serve(tmp_path):
    root = str(tmp_path)
    _sleepy(root, "quick", 0, max_batch_size=4)
    proc = subprocess.Popen([sys.executable, "-m", "ember.cli", "serve", "--model-repository", root,
                             "--port", "0", "--log-level", "warning"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ember serve: http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split()[2].rsplit(":", 1)[1])
        assert call(port, "GET", "/v2/health/ready")[0] == 200
        status, _, body = infer_json(port, "quick", np.ones((1, 2), np.float32))
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2.0, 2.0]
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
