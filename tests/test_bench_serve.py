"""bench/serve.py at smoke-test size: the two ember rows (with and without dynamic batching) for
half a second at concurrency 1 and 4 through the script's own functions, no peers. The table has
numbers, the batched server batches, and no server process or thread is left behind."""
import importlib.util
import os
import socket
import sys
import threading

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench", "serve.py")


def _bench():
    """bench/serve.py as a module (it puts bench/ on sys.path for serve_peers: taken off again)."""
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH)
    mod = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    sys.modules["bench_serve"] = mod  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = path
        del sys.modules["bench_serve"]
    return mod


def _children() -> set:
    """The pids whose parent is this process (from /proc)."""
    me, out = os.getpid(), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                    out.add(int(pid))
        except (OSError, IndexError, ValueError):
            pass
    return out


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ember_rows_batch_and_leave_nothing_behind(tmp_path):
    bench = _bench()
    threads, children = set(threading.enumerate()), _children()
    setup = bench.prepare(str(tmp_path), checkpoint=None, onnx=False, max_batch=4, preferred=(4,))
    assert "random init" in setup.weights and setup.expected.shape == (1, 10)
    specs = [bench.ember_spec(setup, batching=True), bench.ember_spec(setup, batching=False)]
    lines, rows = [], []
    # the batched row on the Python client, the other on wrk when it is installed (else Python too;
    # wrk runs whole seconds, so that row has no warm-up)
    for spec, tool, warmup in zip(specs, ("python", "auto"), (0.2, 0)):
        rows += bench.bench_server(spec, setup, [1, 4], seconds=0.5, warmup=warmup, tool=tool, report=lines.append)
    table = bench.format_table(rows)
    assert not [r for r in rows if r.note], table + "\n" + "\n".join(lines)
    assert len(rows) == 4 and all(r.rps > 0 and 0 < r.p50_ms <= r.p99_ms and r.errors == 0 for r in rows), table
    assert all(any(ch.isdigit() for ch in line) for line in table.splitlines()[1:])
    batched = {r.concurrency: r for r in rows if r.server == specs[0].name}
    unbatched = {r.concurrency: r for r in rows if r.server == specs[1].name}
    assert batched[4].avg_batch > 1, table
    assert unbatched[4].avg_batch == 1, table
    assert "ember-batched / best peer" in bench.summary(rows, 4)
    # nothing left: the servers' processes are reaped and their ports closed; no thread was started here
    assert _children() <= children
    assert not any(_listening(s.port) for s in specs)
    assert set(threading.enumerate()) <= threads
