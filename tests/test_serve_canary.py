"""Canary releases (TB-4) on a live server: an exact traffic split, automatic rollback on error rate
and on latency, promotion of a healthy canary, the repository API, each decision in /metrics."""
import collections
import json
import os

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from ember.serve import Server, parse_config  # noqa: E402
from ember.serve.errors import ConfigError  # noqa: E402
from test_serve import VERSION_PY, _config, _io, _write, call  # noqa: E402

FAILING_PY = """
def execute(inputs):
    raise RuntimeError("version 2 is broken")
"""

SLOW_PY = """
import time
import numpy as np

def execute(inputs):
    time.sleep(0.03)
    return {"y": np.full_like(inputs["x"], 2)}
"""

BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0, 0]}]}).encode()


def _model(root, name, v2_source, **canary):
    _write(os.path.join(root, name, "1", "model.py"), VERSION_PY.format(v=1))
    _write(os.path.join(root, name, "2", "model.py"), v2_source)
    extra = {"canary": canary} if canary else {}
    _config(root, name, platform="python", max_batch_size=4, **_io([2], [2]), version_policy={"all": {}}, **extra)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("canary_repository"))
    _model(root, "broken_canary", FAILING_PY, version=2, percent=20, min_requests=10)
    _model(root, "good_canary", VERSION_PY.format(v=2), version=2, percent=20, min_requests=10)
    _model(root, "slow_canary", SLOW_PY, version=2, percent=20, min_requests=10, metric="latency",
           max_latency_ratio=1.5)
    _model(root, "split", VERSION_PY.format(v=2), version=2, percent=25, auto=False)
    _model(root, "manual", VERSION_PY.format(v=2))
    _model(root, "lonely", VERSION_PY.format(v=2), version=3, percent=10)  # no version 3: no canary
    with Server(root) as srv:
        yield srv


def send(srv, model, n, version=None):
    """The version that answered each of n requests (0 for a failure)."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    out = []
    for _ in range(n):
        status, _, body = call(srv.port, "POST", path, BODY)
        out.append(int(json.loads(body)["outputs"][0]["data"][0]) if status == 200 else 0)
    return out


def metric(srv, prefix):
    text = call(srv.port, "GET", "/metrics")[2].decode()
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_tb4_error_rate_rolls_back(server):
    got = send(server, "broken_canary", 100)
    first = got.index(0)
    assert got[:first] == [1] * first  # 20%: one in five goes to the canary, spread evenly
    assert collections.Counter(got) == {1: 90, 0: 10}, got  # ten failures, then rolled back
    assert got[-40:] == [1] * 40
    state = json.loads(call(server.port, "GET", "/v2/repository/models/broken_canary/canary")[2])
    assert state["state"] == "rolled_back" and state["traffic_percent"] == 0 and "error rate 1.000" in state["reason"]
    assert 'ember_canary_decisions_total{model="broken_canary",version="2",decision="rolled_back"} 1' in \
        metric(server, "ember_canary_decisions_total")
    assert 'ember_canary_state{model="broken_canary",version="2",state="rolled_back"} 1' in \
        metric(server, "ember_canary_state")


def test_tb4_healthy_canary_is_promoted(server):
    got = send(server, "good_canary", 80)
    assert got[:50].count(2) == 10 and got[51:] == [2] * 29, got  # after its 10th request: everything
    assert send(server, "good_canary", 3, version=1) == [1, 1, 1]  # a named version is never redirected
    assert 'ember_canary_traffic_percent{model="good_canary",version="2"} 100' in \
        metric(server, "ember_canary_traffic_percent")


def test_tb4_latency_rolls_back(server):
    got = send(server, "slow_canary", 70)
    assert got.count(2) == 10 and got[-20:] == [1] * 20
    state = json.loads(call(server.port, "GET", "/v2/repository/models/slow_canary/canary")[2])
    assert state["state"] == "rolled_back" and "mean latency" in state["reason"]


def test_tb4_exact_split_and_manual_decisions(server):
    got = send(server, "split", 200)
    assert collections.Counter(got) == {1: 150, 2: 50}
    assert all(got[i:i + 4].count(2) == 1 for i in range(0, 200, 4))  # evenly spread
    url = "/v2/repository/models/split/canary"
    assert json.loads(call(server.port, "POST", url, b'{"action": "rollback"}')[2])["state"] == "rolled_back"
    status, _, body = call(server.port, "POST", url, b'{"action": "promote"}')
    assert status == 400 and "rolled back already" in json.loads(body)["error"]
    assert send(server, "split", 8) == [1] * 8


def test_tb4_repository_api_starts_a_canary(server):
    url = "/v2/repository/models/manual/canary"
    assert json.loads(call(server.port, "GET", url)[2]) == {"state": "none"}
    assert send(server, "manual", 4) == [2] * 4  # no canary: the highest version
    status, _, body = call(server.port, "POST", url, json.dumps({"version": 2, "percent": 50, "auto": False}).encode())
    assert status == 200 and json.loads(body)["stable_version"] == 1
    assert collections.Counter(send(server, "manual", 10)) == {1: 5, 2: 5}
    assert json.loads(call(server.port, "POST", url, b'{"action": "promote"}')[2])["state"] == "promoted"
    assert send(server, "manual", 4) == [2] * 4
    for bad, msg in ((b'{"version": 2, "percent": 150}', "percent"), (b'{"version": 2, "percent": 5, "x": 1}', "unknown"),
                     (b'{"action": "maybe"}', "promote"), (b'{"version": 9, "percent": 5}', "not ready"),
                     (b'[1]', "JSON object"), (b'{"version": 2', "JSON")):
        status, _, body = call(server.port, "POST", url, bad)
        assert status == 400 and msg in json.loads(body)["error"], (bad, body)
    status, _, body = call(server.port, "POST", "/v2/repository/models/nope/canary", b'{"action": "promote"}')
    assert status == 404


def test_tb4_canary_of_a_version_not_served_is_skipped(server):
    assert json.loads(call(server.port, "GET", "/v2/repository/models/lonely/canary")[2]) == {"state": "none"}
    assert send(server, "lonely", 3) == [2] * 3


@pytest.mark.parametrize("canary, msg", [
    ({"percent": 5}, "canary.version"), ({"version": 2, "percent": -1}, "canary.percent"),
    ({"version": 2, "percent": 5, "metric": "p99"}, "canary.metric"),
    ({"version": 2, "percent": 5, "min_requests": 0}, "min_requests"), ("10%", "JSON object")])
def test_tb4_bad_canary_config(canary, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_config({"platform": "python", **_io([2], [2]), "canary": canary}, "m")
