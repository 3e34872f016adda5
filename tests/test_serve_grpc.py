"""ember serve's gRPC endpoint (KServe OIP `inference.GRPCInferenceService`) against the Triton gRPC
client on 127.0.0.1: health, server and model metadata, inference with raw and with typed contents
equal to the model run in ember, every datatype through an echo model, BYTES, requested outputs,
versions, dynamic batching across concurrent calls, the errors as status codes, a fixed-seed fuzz
of malformed messages, and no thread left behind."""
import random
import threading

import numpy as np
import pytest

import ember

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
grpcclient = pytest.importorskip("tritonclient.grpc")
grpc = pytest.importorskip("grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ember.serve import Server  # noqa: E402
from test_serve import DTYPES, _server_threads, _sleepy, repo  # noqa: E402, F401  (the REST tests' repository)


@pytest.fixture(scope="module")
def server(repo):
    srv = Server(repo[0], max_body_bytes=1 << 20, grpc_port=0).start()
    yield srv
    srv.stop()
    assert _server_threads() == [], "the server left threads behind"


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(url=server.grpc_target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server):
    ch = grpc.insecure_channel(server.grpc_target)
    yield service_pb2_grpc.GRPCInferenceServiceStub(ch)
    ch.close()


def _infer(client, model, arrays, outputs=None, version="", datatype=None):
    inputs = []
    for name, a in arrays.items():
        i = grpcclient.InferInput(name, list(a.shape), datatype or _dt(a))
        i.set_data_from_numpy(a)
        inputs.append(i)
    outs = None if outputs is None else [grpcclient.InferRequestedOutput(n) for n in outputs]
    return client.infer(model, inputs, model_version=version, outputs=outs, client_timeout=20)


def _dt(a):
    from tritonclient.utils import np_to_triton_dtype
    return np_to_triton_dtype(a.dtype)


def test_grpc_health_and_metadata(client, server):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("broken")
    md = client.get_server_metadata()
    assert md.name == "ember" and "binary_tensor_data" in md.extensions
    m = client.get_model_metadata("mlp")
    assert m.name == "mlp" and list(m.versions) == ["1"] and m.platform == "ember"
    assert [(t.name, t.datatype, list(t.shape)) for t in m.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in m.outputs] == [("y", "FP32", [-1, 3])]
    with pytest.raises(InferenceServerException, match="no_such_model"):
        client.get_model_metadata("no_such_model")


def test_grpc_infer_equals_the_model_in_ember(client, repo):
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with ember.no_grad():
        want = repo[1](ember.tensor(x)).numpy()
    for model in ("mlp", "onnx_mlp"):
        r = _infer(client, model, {"x" if model == "mlp" else "input": x})
        got = r.as_numpy("y" if model == "mlp" else "output")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert r.get_response().model_name == model and r.get_response().model_version == "1"


def test_grpc_typed_contents_and_raw_give_the_same_answer(stub):
    """A request with values in InferTensorContents (no raw_input_contents), as other clients send."""
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    req = service_pb2.ModelInferRequest(model_name="mlp", id="req-7")
    t = req.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    t.contents.fp32_contents.extend(x.reshape(-1).tolist())
    typed = stub.ModelInfer(req, timeout=20)
    raw = service_pb2.ModelInferRequest(model_name="mlp")
    raw.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    raw.raw_input_contents.append(x.tobytes())
    rawr = stub.ModelInfer(raw, timeout=20)
    assert typed.id == "req-7" and [o.name for o in typed.outputs] == ["y"]
    assert list(typed.outputs[0].shape) == [2, 3] and typed.raw_output_contents == rawr.raw_output_contents


def test_grpc_every_datatype_round_trips_through_echo(client):
    import ml_dtypes
    rng = np.random.default_rng(1)
    arrays = {}
    for d in DTYPES:
        np_dt = {"BOOL": np.bool_, "BF16": ml_dtypes.bfloat16}.get(d) or np.dtype(d.lower().replace("fp", "float"))
        arrays[d] = (rng.integers(0, 2, 5) if d == "BOOL" else rng.integers(-100, 100, 5)).astype(np_dt)
    arrays["BYTES"] = np.array([b"a", b"", b"\x00\xff", "h\u00e9".encode()], dtype=object)
    inputs = []
    for name, a in arrays.items():
        i = grpcclient.InferInput(name, list(a.shape), name)
        i.set_data_from_numpy(a)
        inputs.append(i)
    r = client.infer("echo", inputs, client_timeout=20)
    for name, a in arrays.items():
        got = r.as_numpy("out_" + name)
        if name == "BF16":
            got = got.astype(np.float32)
            a = a.astype(np.float32)
        np.testing.assert_array_equal(got, a)


def test_grpc_requested_outputs_and_versions(client):
    b64 = np.array([[b"aGVsbG8="], [b""]], dtype=object)
    r = _infer(client, "b64", {"b64": b64}, outputs=["length"])
    assert [o.name for o in r.get_response().outputs] == ["length"]
    np.testing.assert_array_equal(r.as_numpy("length"), [[5], [0]])
    x = np.zeros((1, 2), np.float32)
    assert _infer(client, "versioned", {"x": x}).as_numpy("y")[0, 0] == 3  # latest
    with pytest.raises(InferenceServerException, match="version"):
        _infer(client, "versioned", {"x": x}, version="1")  # not served by the policy


def test_grpc_concurrent_calls_are_batched(client, server):
    """32 threads at once on a 10 ms model with a 5 ms window: far fewer executions than calls."""
    before = server.metrics.snapshot("slow", "1")
    x = np.ones((1, 2), np.float32)
    errors, results = [], []

    def one(k):
        try:
            results.append(_infer(client, "slow", {"x": x * k}).as_numpy("y")[0, 0] == 2 * k)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=one, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 32 and all(results)
    after = server.metrics.snapshot("slow", "1")
    count = after["nv_inference_count"] - before["nv_inference_count"]
    execs = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert count == 32 and execs < 16, (count, execs)
    assert after["nv_inference_request_success"] - before["nv_inference_request_success"] == 32


def test_grpc_errors_are_status_codes(stub):
    def code(req):
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, timeout=20)
        return e.value.code(), e.value.details()
    req = service_pb2.ModelInferRequest(model_name="nope")
    assert code(req)[0] == grpc.StatusCode.NOT_FOUND
    req = service_pb2.ModelInferRequest(model_name="mlp")
    req.inputs.add(name="x", datatype="FP32", shape=[2, 5]).contents.fp32_contents.extend([0.0] * 10)
    c, msg = code(req)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "[2, 5]" in msg
    req = service_pb2.ModelInferRequest(model_name="mlp")
    req.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    req.raw_input_contents.append(b"\0" * 7)
    c, msg = code(req)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "32 bytes" in msg
    req = service_pb2.ModelInferRequest(model_name="broken")
    assert code(req)[0] == grpc.StatusCode.UNAVAILABLE
    req = service_pb2.ModelInferRequest(model_name="mlp")
    req.inputs.add(name="x", datatype="FP32", shape=[1 << 20, 4])
    req.raw_input_contents.append(b"\0" * (16 << 20))  # over max_body_bytes (1 MiB)
    assert code(req)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_fuzz_malformed_messages_never_crash_the_server(server, stub, client):
    """Random bytes, truncated and bit-flipped valid messages (seed 0): each gets a status, the server
    stays up and answers correctly afterwards."""
    rnd = random.Random(0)
    ch = grpc.insecure_channel(server.grpc_target)
    raw_call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
    good = service_pb2.ModelInferRequest(model_name="mlp")
    good.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    good.raw_input_contents.append(np.ones(4, np.float32).tobytes())
    blob = good.SerializeToString()
    codes = set()
    for k in range(150):
        kind = k % 3
        if kind == 0:
            b = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 80)))
        elif kind == 1:
            b = blob[:rnd.randrange(1, len(blob))]
        else:
            b = bytearray(blob)
            for _ in range(rnd.randrange(1, 4)):
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
            b = bytes(b)
        try:
            raw_call(b, timeout=20)
            codes.add("OK")
        except grpc.RpcError as e:
            assert e.code() != grpc.StatusCode.UNKNOWN, e.details()
            codes.add(e.code())
    ch.close()
    assert grpc.StatusCode.INTERNAL not in codes, codes
    assert client.is_server_live() and server.alive()
    assert _infer(client, "mlp", {"x": np.ones((1, 4), np.float32)}).as_numpy("y").shape == (1, 3)


def test_grpc_port_taken_is_a_clear_error(server, repo):
    from ember.serve.errors import ServeError
    with pytest.raises(ServeError, match="gRPC could not bind"):
        Server(repo[0], grpc_port=server.grpc_port, models=["mlp"]).start()


def test_cli_serve_grpc_port(tmp_path):
    """`ember serve --grpc-port 0` prints both endpoints; the gRPC one infers; SIGTERM stops it."""
    import subprocess
    import sys
    root = str(tmp_path)
    _sleepy(root, "quick", 0, max_batch_size=4)
    cmd = [sys.executable, "-m", "ember.cli", "serve", "--model-repository", root, "--port", "0",
           "--grpc-port", "0", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "(OIP v2 gRPC)" in line, (line, proc.stderr.read() if proc.poll() else "")
        target = line.split("(OIP v2 REST), ", 1)[1].split()[0]
        c = grpcclient.InferenceServerClient(url=target)
        try:
            assert _infer(c, "quick", {"x": np.ones((1, 2), np.float32)}).as_numpy("y").tolist() == [[2.0, 2.0]]
        finally:
            c.close()
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    r = subprocess.run(cmd[:-2] + ["--replicas", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--grpc-port is for one server" in r.stderr
