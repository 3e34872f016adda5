"""Replicas behind a router (DMLP-7), event-driven autoscaling on concurrency (DMLP-9) and rate limits:
real `ember serve` processes (ReplicaSet) or in-process Servers on 127.0.0.1, counted from each
replica's own /metrics; a killed replica loses no request; nothing is left running afterwards."""
import collections
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
from ember.serve import Server  # noqa: E402
from ember.serve.autoscale import Autoscale, desired_replicas  # noqa: E402
from ember.serve.balancing import Backend, Backends  # noqa: E402
from ember.serve.replicas import ReplicaSet  # noqa: E402
from ember.serve.router import Router  # noqa: E402
from test_serve import _malformed, _sleepy, call  # noqa: E402

BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.5, -2]}]}).encode()


def _threads(prefixes=("ember-router", "ember-replica")):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t.name.startswith(prefixes)]
        if not left:
            break
        time.sleep(0.05)
    return left


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert _threads() == [], "the router or a replica left threads behind"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("router_repository"))
    _sleepy(root, "slow", 20, max_batch_size=4)
    _sleepy(root, "fast", 0, max_batch_size=4)
    _sleepy(root, "crawl", 100, max_batch_size=4)
    return root


def infer(port, model="fast", headers=None):
    status, h, body = call(port, "POST", f"/v2/models/{model}/infer", BODY,
                           {"Content-Type": "application/json", **(headers or {})})
    return status, h, body


def run_clients(port, n_threads, per_thread, model="fast", headers_of=None):
    """Send per_thread requests from each of n_threads keep-alive clients; (status, replica) each."""
    out, lock = [], threading.Lock()

    def client(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for j in range(per_thread):
                hdr = {"Content-Type": "application/json", **(headers_of(i, j) if headers_of else {})}
                c.request("POST", f"/v2/models/{model}/infer", BODY, hdr)
                r = c.getresponse()
                data = r.read()
                ok = r.status == 200 and json.loads(data)["outputs"][0]["data"] == [3.0, -4.0]
                with lock:
                    out.append((r.status if ok or r.status != 200 else -1, r.headers.get("x-ember-replica")))
        finally:
            c.close()
    ts = [threading.Thread(target=client, args=(i,)) for i in range(n_threads)]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    return out


def successes(url, model="fast"):
    """nv_inference_request_success of `model` as the replica itself counts it."""
    port = int(url.rsplit(":", 1)[1])
    text = call(port, "GET", "/metrics")[2].decode()
    line = next(x for x in text.splitlines() if x.startswith(f'nv_inference_request_success{{model="{model}"'))
    return int(line.split()[-1])


# ---------------------------------------------------------------- policies, without HTTP
def _backends(policy, n=3):
    bs = Backends(policy)
    for i in range(n):
        bs.add(Backend(f"http://h{i}", f"r{i}", ready=True))
    return bs


def test_dmlp7_round_robin_and_least_connections_picks():
    bs = _backends("round_robin")
    picks = collections.Counter(bs.pick().name for _ in range(300))
    assert picks == {"r0": 100, "r1": 100, "r2": 100}
    bs.all()[1].ready = False
    assert "r1" not in {bs.pick().name for _ in range(30)}
    assert bs.pick(exclude={bs.all()[0], bs.all()[2]}) is None
    lc = _backends("least_connections")
    lc.all()[0].inflight, lc.all()[1].inflight, lc.all()[2].inflight = 3, 0, 1
    assert {lc.pick().name for _ in range(10)} == {"r1"}
    lc.all()[1].inflight = 1
    assert {lc.pick().name for _ in range(10)} == {"r1", "r2"}  # ties taken in turn


def test_dmlp7_consistent_hash_moves_only_the_removed_replicas_keys():
    bs = _backends("consistent_hash", 4)
    keys = [f"user-{i}" for i in range(400)]
    before = {k: bs.pick(k) for k in keys}
    assert all(bs.pick(k) is before[k] for k in keys)  # stable
    counts = collections.Counter(b.name for b in before.values())
    assert len(counts) == 4 and min(counts.values()) >= 50, counts  # spread
    gone = bs.all()[2]
    bs.remove(gone)
    after = {k: bs.pick(k) for k in keys}
    assert all(after[k] is before[k] for k in keys if before[k] is not gone)
    assert all(after[k] is not gone for k in keys)
    bs.all()[0].ready = False  # a not-ready owner: its keys go to the next point clockwise
    assert all(bs.pick(k) is not bs.all()[0] for k in keys)


def test_dmlp9_desired_replicas_rule():
    cfg = Autoscale(target=1, min_replicas=1, max_replicas=6, stable_window_s=4, panic_window_s=1)
    steady = [(t / 10, 5) for t in range(40)]
    assert desired_replicas(steady, 4.0, 5, cfg) == (5, False)
    assert desired_replicas(steady, 4.0, 1, cfg) == (5, True)  # 5 >= 2 x 1: panic, straight to 5
    assert desired_replicas([(t / 10, 0) for t in range(40)], 4.0, 5, cfg) == (1, False)  # idle: the minimum
    assert desired_replicas([(t / 10, 50) for t in range(40)], 4.0, 2, cfg) == (6, True)  # clamped to max
    burst = [(t / 10, 0) for t in range(30)] + [(3 + t / 10, 3) for t in range(10)]
    assert desired_replicas(burst, 4.0, 4, cfg) == (1, False)  # the stable mean is under 1; 3 < 2 x 4: no panic
    assert desired_replicas([], 1.0, 0, Autoscale(min_replicas=0)) == (0, False)
    with pytest.raises(ValueError, match="min_replicas"):
        Autoscale(min_replicas=3, max_replicas=2)


# ---------------------------------------------------------------- processes behind the router
def test_dmlp7_300_requests_over_3_replicas(repo):
    with ReplicaSet(repo, 3) as rs, Router(replicas=rs) as router:
        router.wait_ready(timeout=60)
        out = run_clients(router.port, 10, 30)
        assert collections.Counter(s for s, _ in out) == {200: 300}
        counts = [successes(r.url) for r in rs.replicas]  # the replicas' own counts
        assert sum(counts) == 300 and all(90 <= c <= 110 for c in counts), counts
        assert collections.Counter(name for _, name in out) == {r.name: c for r, c in zip(rs.replicas, counts)}
        text = call(router.port, "GET", "/metrics")[2].decode()
        assert 'ember_router_replicas{state="ready"} 3' in text
        pids = [r.proc.pid for r in rs.replicas]
    assert all(not os.path.exists(f"/proc/{p}") or _zombie(p) for p in pids), "replicas left running"


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except OSError:
        return True


def test_dmlp7_killed_replica_loses_no_request(repo):
    with ReplicaSet(repo, 3) as rs, Router(replicas=rs, poll_interval_s=0.1) as router:
        router.wait_ready(timeout=60)
        victim = rs.replicas[1]
        killer = threading.Timer(0.3, victim.kill)
        killer.start()
        out = run_clients(router.port, 8, 40, model="slow")  # ~1 s of traffic; the kill lands mid-way
        killer.join()
        assert collections.Counter(s for s, _ in out) == {200: 320}
        served = collections.Counter(name for _, name in out)
        assert served[victim.name] < 320 // 3 and sum(served.values()) == 320
        b = next(b for b in router.backends.all() if b.name == victim.name)
        assert not b.ready
        after = run_clients(router.port, 4, 10)
        assert {name for _, name in after} <= {rs.replicas[0].name, rs.replicas[2].name}


# ---------------------------------------------------------------- in-process servers behind the router
@pytest.fixture(scope="module")
def servers(repo, tmp_path_factory):
    """Two ready servers and one that reports not ready (a broken model under strict readiness)."""
    bad = str(tmp_path_factory.mktemp("not_ready_repository"))
    _sleepy(bad, "fast", 0, max_batch_size=4)
    os.makedirs(os.path.join(bad, "broken", "1"))
    with open(os.path.join(bad, "broken", "1", "model.py"), "w") as f:
        f.write("raise RuntimeError('broken')\n")
    with open(os.path.join(bad, "broken", "config.json"), "w") as f:
        json.dump({"platform": "python", "inputs": [{"name": "x", "datatype": "FP32", "dims": [1]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "dims": [1]}]}, f)
    s = [Server(repo, models=["fast", "crawl"]).start(), Server(repo, models=["fast", "crawl"]).start(),
         Server(bad, strict_readiness=True).start()]
    yield s
    for x in s:
        x.stop()
    assert _threads(("ember-serve",)) == [], "a server left threads behind"


def test_dmlp7_not_ready_replica_gets_nothing(servers):
    assert call(servers[2].port, "GET", "/v2/health/ready")[0] == 503
    assert infer(servers[2].port)[0] == 200  # it would answer: readiness alone keeps it out
    with Router([s.url for s in servers]) as router:
        router.wait_ready(2, timeout=20)
        time.sleep(0.3)
        out = run_clients(router.port, 6, 20)
        assert collections.Counter(s for s, _ in out) == {200: 120}
        names = collections.Counter(n for _, n in out)
        assert names[servers[2].url] == 0 and names[servers[0].url] == names[servers[1].url] == 60


def test_dmlp7_least_connections_favours_the_free_replica(repo, tmp_path_factory):
    slow_repo = str(tmp_path_factory.mktemp("slow_twin"))
    _sleepy(slow_repo, "fast", 80, max_batch_size=4)  # same name, 80 ms a call
    with Server(repo, models=["fast"]) as quick, Server(slow_repo) as slow:
        for policy, check in (("least_connections", lambda q, s: q > 3 * s), ("round_robin", lambda q, s: q == s)):
            with Router([quick.url, slow.url], policy=policy) as router:
                router.wait_ready(timeout=20)
                names = collections.Counter(n for _, n in run_clients(router.port, 4, 15))
                assert check(names[quick.url], names[slow.url]), (policy, names)


def test_dmlp7_consistent_hash_over_http(servers):
    with Router([s.url for s in servers[:2]], policy="consistent_hash", hash_header="X-Session") as router:
        router.wait_ready(timeout=20)
        out = run_clients(router.port, 4, 20, headers_of=lambda i, j: {"X-Session": f"user-{j % 10}"})
        assert all(s == 200 for s, _ in out)
        owner = {}  # each session key always lands on one replica
        for j in range(30):  # 30 keys: all on one of two replicas has odds of 2**-29
            names = {infer(router.port, headers={"X-Session": f"user-{j}"})[1]["x-ember-replica"] for _ in range(2)}
            assert len(names) == 1
            owner[j] = names.pop()
        assert len(set(owner.values())) == 2


def test_rate_limit_429_then_recovers(servers):
    with Router([servers[0].url], rate_limit=5, burst=5) as router:
        router.wait_ready(timeout=20)
        got = [infer(router.port) for _ in range(12)]
        assert [s for s, _, _ in got] == [200] * 5 + [429] * 7
        assert int(got[-1][1]["Retry-After"]) >= 1 and "rate limit" in json.loads(got[-1][2])["error"]
        assert call(router.port, "GET", "/v2/health/ready")[0] == 200  # still responsive
        time.sleep(0.45)
        assert infer(router.port)[0] == 200  # 0.45 s refills two tokens
        assert "ember_router_rate_limited_total 7" in call(router.port, "GET", "/metrics")[2].decode()
    with Server(servers[0].model_repository, models=["fast"], rate_limit=3, burst=3) as srv:  # the server alone
        assert [infer(srv.port)[0] for _ in range(5)] == [200, 200, 200, 429, 429]


def test_router_fuzz_keeps_serving(servers):
    rng = random.Random(7)
    with Router([s.url for s in servers[:2]]) as router:
        router.wait_ready(timeout=20)
        for _ in range(300):
            body, headers = _malformed(rng)
            status, _, data = call(router.port, "POST", "/v2/models/fast/infer", body, headers)
            assert 400 <= status < 500 and "error" in json.loads(data), (status, data[:200])
        for path in ("/v2/models/nope/infer", "/v2/models/fast/versions/9/infer"):
            assert call(router.port, "POST", path, BODY)[0] == 404
        assert infer(router.port)[0] == 200
        assert call(router.port, "GET", "/v2/models/fast")[0] == 200


def test_router_with_no_ready_replica_answers_503(servers):
    with Router([servers[2].url], ready_wait_s=0.3) as router:
        t0 = time.monotonic()
        status, _, data = infer(router.port)
        assert status == 503 and "no replica" in json.loads(data)["error"]
        assert time.monotonic() - t0 < 5
        assert call(router.port, "GET", "/v2/health/ready")[0] == 503


# ---------------------------------------------------------------- autoscaling
def test_dmlp9_autoscale_follows_concurrency_then_returns_to_minimum(repo):
    cfg = Autoscale(target=1, min_replicas=1, max_replicas=6, stable_window_s=2.0, panic_window_s=0.5,
                    scale_down_delay_s=1.0)
    with ReplicaSet(repo, 1, server_args=["--model", "crawl"]) as rs, \
            Router(replicas=rs, autoscale=cfg, policy="least_connections") as router:
        router.wait_ready(timeout=60)
        stop = threading.Event()

        def client():
            c = http.client.HTTPConnection("127.0.0.1", router.port, timeout=60)
            while not stop.is_set():
                c.request("POST", "/v2/models/crawl/infer", BODY, {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                assert r.status == 200
            c.close()
        ts = [threading.Thread(target=client) for _ in range(5)]  # concurrency 5, closed loop
        [t.start() for t in ts]
        deadline, peak = time.monotonic() + 30, 0
        while time.monotonic() < deadline and peak < 5:
            peak = max(peak, len(rs.replicas))
            time.sleep(0.1)
        time.sleep(1.0)
        steady = len(rs.replicas)
        stop.set()
        [t.join(30) for t in ts]
        assert peak >= 5 and 4 <= steady <= 6, (peak, steady, router.autoscaler.history)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(rs.replicas) > 1:
            time.sleep(0.1)
        assert len(rs.replicas) == 1 and len(router.backends.all()) == 1
        text = call(router.port, "GET", "/metrics")[2].decode()
        assert 'ember_autoscaler_scale_events_total{direction="up"} ' in text
        ev = router.autoscaler.events
        assert ev["up"] >= 4 and ev["down"] == ev["up"]


def test_cli_replicas_serve_and_leave_nothing(repo):
    proc = subprocess.Popen([sys.executable, "-m", "ember", "serve", "--model-repository", repo, "--replicas", "2",
                             "--port", "0", "--model", "fast", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ember serve: http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split()[2].rsplit(":", 1)[1])
        stats = json.loads(call(port, "GET", "/router/stats")[2])
        assert len(stats["backends"]) == 2
        assert [infer(port)[0] for _ in range(4)] == [200] * 4
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                     text=True).stdout.split()]
        assert len(children) == 2
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
    time.sleep(0.2)
    assert all(not os.path.exists(f"/proc/{p}") or _zombie(p) for p in children)
