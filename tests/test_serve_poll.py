"""Poll mode: a live server picks up a new version, a new model and a removed one while a client keeps
sending requests, and none of those requests fails; a version that fails to load leaves the loaded
one serving."""
import json
import os
import shutil
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from ember.serve import Server  # noqa: E402
from test_serve import VERSION_PY, _config, _io, _write, call  # noqa: E402

BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0, 0]}]}).encode()


def _version(root, model, v, source=None):
    """Write version v in a scratch directory and rename it into place (a whole version at once)."""
    tmp = os.path.join(root, f".{model}-{v}.tmp")
    _write(os.path.join(tmp, "model.py"), source or VERSION_PY.format(v=v))
    os.rename(tmp, os.path.join(root, model, str(v)))


def _until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_poll_mode_reloads_without_dropping_requests(tmp_path):
    root = str(tmp_path)
    _config(root, "m", platform="python", max_batch_size=4, **_io([2], [2]))
    _version(root, "m", 1)
    seen, stop = [], threading.Event()
    with Server(root, poll_interval_s=0.1) as srv:
        def client():
            while not stop.is_set():
                status, _, body = call(srv.port, "POST", "/v2/models/m/infer", BODY)
                seen.append(int(json.loads(body)["outputs"][0]["data"][0]) if status == 200 else -status)
        t = threading.Thread(target=client)
        t.start()
        try:
            assert _until(lambda: seen.count(1) > 5)
            _version(root, "m", 2)  # latest 1: version 2 replaces version 1
            assert _until(lambda: seen and seen[-1] == 2), seen[-5:]
            n = len(seen)
            _version(root, "m", 3, "raise RuntimeError('a broken upload')\n")
            time.sleep(0.6)  # several polls: the reload fails, version 2 goes on serving
            assert set(seen[n:]) == {2}
            assert json.loads(call(srv.port, "GET", "/v2/models/m")[2])["versions"] == ["2"]
            shutil.rmtree(os.path.join(root, "m", "3"))
            _version(root, "m", 3)  # fixed: picked up
            assert _until(lambda: seen[-1] == 3)
        finally:
            stop.set()
            t.join(30)
        assert all(v > 0 for v in seen), [v for v in seen if v <= 0][:5]  # not one request failed
        assert seen == sorted(seen)  # 1s, then 2s, then 3s: never back to an old version

        _config(root, "fresh", platform="python", **_io([2], [2]))
        _version(root, "fresh", 1)
        assert _until(lambda: call(srv.port, "GET", "/v2/models/fresh/ready")[0] == 200)
        shutil.rmtree(os.path.join(root, "fresh"))
        assert _until(lambda: call(srv.port, "GET", "/v2/models/fresh/ready")[0] == 404)
    assert not [t for t in threading.enumerate() if t.name.startswith("ember-serve")]
