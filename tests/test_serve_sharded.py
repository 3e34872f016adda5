"""A sharded service (DMLP-8, ember/serve/sharded.py) on 127.0.0.1: a fully convolutional model on a
1x1x256x256 image split 4 ways along H (and, batched, along W) with a halo equals the whole image's
output; sum and mean merges; shards run at once (4 x 50 ms in well under 200 ms); a failing shard
fails the whole request naming the shard; the config is validated; no thread is left behind."""
import http.client
import json
import os
import threading
import time

import numpy as np
import pytest

import ember

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from ember.serve import ConfigError, Server, parse_config  # noqa: E402
from ember.serve.config import Sharding  # noqa: E402
from ember.serve.models import JitModel  # noqa: E402
from ember.serve.sharded import ShardedModel, shard_ranges  # noqa: E402
from test_serve import _config, _write  # noqa: E402  (one copy of the repository helpers)

# three 3x3 "same" convolutions: each output pixel sees 3 pixels on every side, so halo 3 is exact
FCN_PY = """
import ember.nn as nn

def build():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(4, 1, 3, padding=1))
"""
RADIUS = 3

# 50 ms per call; a negative value makes it raise, one over 1000 makes it refuse the input (400)
SLEEPY_PY = """
import time
from ember.serve.errors import InvalidRequest

def execute(inputs):
    x = inputs["x"]
    if (x > 1000).any():
        raise InvalidRequest("values over 1000 are refused")
    time.sleep(0.05)
    if (x < 0).any():
        raise ValueError("a negative value in this shard")
    return {"y": x * 2}
"""

REDUCE_PY = """
def execute(inputs):
    x = inputs["x"]
    return {"total": x.sum(axis=0), "avg": x.mean(axis=0)}
"""


def build_fcn():
    ns = {}
    exec(FCN_PY, ns)
    return ns["build"]()


def _fcn(root, name, model, **cfg):
    _write(os.path.join(root, name, "1", "model.py"), FCN_PY)
    ember.save(model.state_dict(), os.path.join(root, name, "1", "model.safetensors"), sidecar=False)
    _config(root, name, platform="ember", **cfg)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sharded_repository"))
    ember.manual_seed(0)
    fcn = build_fcn().eval()
    image = {"inputs": [{"name": "x", "datatype": "FP32", "dims": [1, 1, 256, 256]}],
             "outputs": [{"name": "y", "datatype": "FP32", "dims": [1, 1, 256, 256]}]}
    _fcn(root, "fcn", fcn, **image)
    _fcn(root, "fcn_sharded", fcn, **image,
         sharding={"input": "x", "axis": 2, "shards": 4, "halo": RADIUS, "merge": "concat"})
    _fcn(root, "fcn_batched", fcn, max_batch_size=2,
         inputs=[{"name": "x", "datatype": "FP32", "dims": [1, 64, 96]}],
         outputs=[{"name": "y", "datatype": "FP32", "dims": [1, 64, 96]}],
         sharding={"input": "x", "axis": -1, "shards": 3, "halo": RADIUS})
    vec = {"inputs": [{"name": "x", "datatype": "FP32", "dims": [8, 2]}],
           "outputs": [{"name": "y", "datatype": "FP32", "dims": [8, 2]}]}
    _write(os.path.join(root, "sleepy", "1", "model.py"), SLEEPY_PY)
    _config(root, "sleepy", platform="python", **vec, sharding={"input": "x", "axis": 0, "shards": 4})
    for merge in ("sum", "mean"):
        _write(os.path.join(root, f"reduce_{merge}", "1", "model.py"), REDUCE_PY)
        _config(root, f"reduce_{merge}", platform="python",
                inputs=[{"name": "x", "datatype": "FP64", "dims": [10, 3]}],
                outputs=[{"name": "total", "datatype": "FP64", "dims": [3]},
                         {"name": "avg", "datatype": "FP64", "dims": [3]}],
                sharding={"input": "x", "axis": 0, "shards": 4, "merge": merge})
    return root, fcn


def _server_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ember-serve")]


@pytest.fixture(scope="module")
def server(repo):
    srv = Server(repo[0]).start()
    yield srv
    srv.stop()
    assert _server_threads() == [], "the server left threads behind (shard pools included)"


def call(port, path, body=None, method="POST", timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=None if body is None else json.dumps(body).encode())
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def infer(port, model, x, datatype="FP32"):
    return call(port, f"/v2/models/{model}/infer", {"inputs": [
        {"name": "x", "shape": list(x.shape), "datatype": datatype, "data": x.reshape(-1).tolist()}]})


def test_every_model_loads(server):
    assert {(m["name"], m["state"]) for m in server.repository.index()} == {
        (n, "READY") for n in ("fcn", "fcn_sharded", "fcn_batched", "sleepy", "reduce_sum", "reduce_mean")}
    status, cfg = call(server.port, "/v2/models/fcn_batched/config", method="GET")
    assert status == 200 and cfg["sharding"] == {"input": "x", "axis": 3, "shards": 3, "halo": 3,
                                                 "merge": "concat"}


def test_sharded_high_resolution_image_equals_the_whole(server, repo):
    httpclient = pytest.importorskip("tritonclient.http")
    x = np.random.default_rng(0).standard_normal((1, 1, 256, 256)).astype(np.float32)
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30)
    try:
        outs = {}
        for model in ("fcn", "fcn_sharded"):
            inp = httpclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            res = c.infer(model, [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])
            outs[model] = res.as_numpy("y")
    finally:
        c.close()
    with ember.no_grad():
        eager = repo[1](ember.from_numpy(x)).numpy()
    assert outs["fcn_sharded"].shape == (1, 1, 256, 256)
    np.testing.assert_allclose(outs["fcn_sharded"], outs["fcn"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs["fcn_sharded"], eager, rtol=1e-5, atol=1e-5)


def test_batched_model_sharded_along_the_last_axis(server, repo):
    x = np.random.default_rng(1).standard_normal((2, 1, 64, 96)).astype(np.float32)
    status, body = infer(server.port, "fcn_batched", x)
    assert status == 200, body
    y = np.array(body["outputs"][0]["data"], np.float32).reshape(2, 1, 64, 96)
    with ember.no_grad():
        np.testing.assert_allclose(y, repo[1](ember.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_halo_decides_exactness_at_the_shard_boundaries(repo):
    """The python-level wrapper around a loaded model: too small a halo is wrong only near cuts."""
    cfg = parse_config({"platform": "ember", "warmup": False,
                        "inputs": [{"name": "x", "datatype": "FP32", "dims": [1, 1, 64, 32]}],
                        "outputs": [{"name": "y", "datatype": "FP32", "dims": [1, 1, 64, 32]}]}, "fcn")
    x = np.random.default_rng(2).standard_normal((1, 1, 64, 32)).astype(np.float32)
    with ember.no_grad():
        whole = repo[1](ember.from_numpy(x)).numpy()
    for halo in (1, RADIUS, 8):
        model = ShardedModel(JitModel(cfg, 1, repo[1], by_name=False), Sharding("x", 2, 4, halo))
        try:
            y = model.run({"x": x}, 0)["y"]
        finally:
            model.close()
        err = np.abs(y - whole).max(axis=(0, 1, 3))  # per row
        if halo >= RADIUS:
            assert err.max() < 1e-5, halo
        else:
            assert err[[15, 16, 31, 32, 47, 48]].min() > 1e-4  # next to the cuts at 16, 32, 48
            assert err[:12].max() < 1e-5 and err[20:28].max() < 1e-5
    assert shard_ranges(10, 4, 1) == [(0, 2, 0, 3), (2, 5, 1, 6), (5, 7, 4, 8), (7, 10, 6, 10)]
    assert shard_ranges(2, 4) == [(0, 1, 0, 1), (1, 2, 1, 2)]


@pytest.mark.parametrize("merge", ["sum", "mean"])
def test_sum_and_mean_merges_equal_the_whole(server, merge):
    x = np.random.default_rng(3).standard_normal((10, 3))  # shards of 2, 3, 2, 3 rows
    status, body = infer(server.port, f"reduce_{merge}", x, "FP64")
    assert status == 200, body
    outs = {o["name"]: np.array(o["data"]) for o in body["outputs"]}
    if merge == "sum":
        np.testing.assert_allclose(outs["total"], x.sum(axis=0), rtol=1e-12)
    else:
        np.testing.assert_allclose(outs["avg"], x.mean(axis=0), rtol=1e-12)


def test_shards_run_concurrently(server):
    x = np.arange(16, dtype=np.float32).reshape(8, 2)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        status, body = infer(server.port, "sleepy", x)
        times.append(time.perf_counter() - t0)
        assert status == 200, body
        np.testing.assert_array_equal(np.array(body["outputs"][0]["data"]).reshape(8, 2), x * 2)
    # one after the other, 4 shards of 50 ms would take 200 ms
    assert 0.05 <= min(times) < 0.15, times


def test_a_failed_shard_fails_the_whole_request(server):
    x = np.ones((8, 2), np.float32)
    x[5, 1] = -1  # rows 4 and 5 are shard 2 of 4
    status, body = infer(server.port, "sleepy", x)
    assert status == 500 and set(body) == {"error"}, body
    msg = body["error"]
    assert "shard 2 of 4 ('x'[4:6] along axis 0" in msg and "a negative value in this shard" in msg, msg
    assert "no partial output" in msg
    x[0, 0], x[5, 1] = 5000, 1  # shard 0 refuses its input: the request answers 400
    status, body = infer(server.port, "sleepy", x)
    assert status == 400 and "shard 0 of 4" in body["error"] and "over 1000" in body["error"], body
    x[:] = -1  # every shard fails
    status, body = infer(server.port, "sleepy", x)
    assert status == 500 and "shard 0 of 4" in body["error"] and "(and 3 more shard(s) failed)" in body["error"]
    status, body = infer(server.port, "sleepy", np.ones((8, 2), np.float32))  # still serving
    assert status == 200


@pytest.mark.parametrize("sharding,message", [
    ({"input": "z", "axis": 0, "shards": 2}, "is not one of the inputs"),
    ({"input": "x", "axis": 3, "shards": 2}, "out of range"),
    ({"input": "x", "axis": 0, "shards": 2, "batch": True}, "is the batch dim"),
    ({"input": "x", "axis": 1, "shards": 1}, "sharding.shards must be an integer >= 2"),
    ({"input": "x", "axis": 1, "shards": 2, "halo": 1, "merge": "sum"}, "halo needs merge 'concat'"),
    ({"input": "x", "axis": 1, "shards": 2, "merge": "max"}, "sharding.merge must be one of"),
    ({"input": "x", "axis": 1, "shards": 2, "overlap": 1}, "unknown keys ['overlap']"),
])
def test_sharding_config_is_validated(sharding, message):
    batch = sharding.pop("batch", False)
    raw = {"platform": "python", "max_batch_size": 4 if batch else 0, "sharding": sharding,
           "inputs": [{"name": "x", "datatype": "FP32", "dims": [8, 2]}],
           "outputs": [{"name": "y", "datatype": "FP32", "dims": [8, 2]}]}
    with pytest.raises(ConfigError) as e:
        parse_config(raw, "m")
    assert message in str(e.value)
