"""Helpers of bench/serve.py: server processes, the load generators and the peers' model files.

Only the standard library at module level: this file is imported by bench/serve.py (ember's
environment), by the peers' model files (imported from their own venvs: `ort_session`), and run as
a script for the PyTriton server and the Python load generator:

    python bench/serve_peers.py pytriton --onnx F --http-port P --grpc-port G --metrics-port M
    python bench/serve_peers.py load --port P --path /v2/models/M/infer --body F -c 8 -s 5
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"
MODEL, INPUT, OUTPUT = "fashion_mnist_cnn", "x", "probabilities"


# ---------------------------------------------------------------- onnxruntime (every peer)
def ort_session(path: str):
    """The one onnxruntime session setup every peer uses: CPU, its default thread count unless
    BENCH_ORT_THREADS says otherwise."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    n = int(os.environ.get("BENCH_ORT_THREADS", "0") or 0)
    if n:
        so.intra_op_num_threads, so.inter_op_num_threads = n, 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


EMBER_ORT_MODEL = f'''"""Written by bench/serve.py: an ember `python` model running onnxruntime on the ONNX export."""
import os
import sys

sys.path.insert(0, {BENCH_DIR!r})
from serve_peers import ort_session  # noqa: E402

_sess = None


def initialize(args):
    global _sess
    _sess = ort_session(os.path.join(args["version_dir"], "model.onnx"))


def execute(inputs):
    return {{"{OUTPUT}": _sess.run(None, {{"{INPUT}": inputs["{INPUT}"]}})[0]}}
'''

MLSERVER_RUNTIME = f'''"""Written by bench/serve.py: an MLServer custom runtime running onnxruntime."""
import sys

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

sys.path.insert(0, {BENCH_DIR!r})
from serve_peers import ort_session  # noqa: E402


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        self._sess = ort_session(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = self._sess.run(None, {{"{INPUT}": x}})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("{OUTPUT}", y)])
'''


def write_mlserver(root: str, onnx_path: str, ports: dict, max_batch: int, delay_us: int) -> str:
    """An MLServer directory (settings.json + one model) serving the ONNX file; returns it."""
    mdir = os.path.join(root, MODEL)
    os.makedirs(mdir, exist_ok=True)
    settings = {"host": HOST, "http_port": ports["http"], "grpc_port": ports["grpc"],
                "metrics_port": ports["metrics"], "debug": False, "load_models_at_startup": True,
                # inference in the server process, like the other servers here (MLServer's default of
                # one worker process fails to start with uvloop >= 0.22: asyncio.get_event_loop raises)
                "parallel_workers": 0}
    model = {"name": MODEL, "implementation": "runtime.OnnxRuntime", "max_batch_size": max_batch,
             "max_batch_time": delay_us / 1e6, "parameters": {"uri": os.path.abspath(onnx_path)}}
    for path, text in ((os.path.join(root, "settings.json"), json.dumps(settings, indent=2)),
                       (os.path.join(mdir, "model-settings.json"), json.dumps(model, indent=2)),
                       (os.path.join(mdir, "runtime.py"), MLSERVER_RUNTIME)):
        with open(path, "w") as f:
            f.write(text + "\n")
    return root


def pytriton_main(a) -> None:
    """Triton (PyTriton's bundled server) with a @batch python function running onnxruntime."""
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    sess = ort_session(a.onnx)

    @batch
    def infer(**inputs):
        return {OUTPUT: sess.run(None, {INPUT: inputs[INPUT]})[0]}

    cfg = TritonConfig(http_address=HOST, http_port=a.http_port, grpc_address=HOST, grpc_port=a.grpc_port,
                       metrics_address=HOST, metrics_port=a.metrics_port, log_verbose=0)
    batcher = DynamicBatcher(max_queue_delay_microseconds=a.delay_us,
                             preferred_batch_size=[int(p) for p in a.preferred.split(",") if p])
    with Triton(config=cfg) as triton:
        triton.bind(model_name=MODEL, infer_func=infer,
                    inputs=[Tensor(name=INPUT, dtype=np.float32, shape=(1, 28, 28))],
                    outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(10,))],
                    config=ModelConfig(max_batch_size=a.max_batch, batcher=batcher))
        triton.serve()


# ---------------------------------------------------------------- server processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_call(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30) -> tuple:
    """(status, body bytes) of one request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body is not None else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def metric_sums(port: int, names: tuple, model: str = MODEL) -> tuple:
    """The sum of each Prometheus counter over the lines labelled with `model` (Triton-style
    names), all from one read of /metrics, so that they are of one moment."""
    status, body = http_call(port, "GET", "/metrics", timeout=10)
    totals = dict.fromkeys(names, 0.0)
    for line in body.decode().splitlines():
        name = line.split("{", 1)[0]
        if name in totals and f'model="{model}"' in line:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return tuple(totals[n] for n in names)


class ServerProc:
    """A server subprocess in its own process group, its output in `log`; `stop` (also on exit from
    a `with` block, on errors and Ctrl-C) sends SIGINT to the group, then SIGKILL to what is left."""

    def __init__(self, cmd: list, log: str, env: dict | None = None, cwd: str | None = None):
        self.cmd, self.log, self.env, self.cwd = cmd, log, env, cwd
        self.proc = None

    def __enter__(self) -> "ServerProc":
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.cwd, start_new_session=True)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def tail(self, n: int = 1500) -> str:
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def wait_ready(self, port: int, timeout: float = 180) -> None:
        """Wait until GET /v2/models/MODEL/ready answers 200; raise with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode} before it was ready:\n{self.tail()}")
            try:
                if http_call(port, "GET", f"/v2/models/{MODEL}/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"not ready after {timeout:.0f} s:\n{self.tail()}")

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGINT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # the leader's children (tritonserver, MLServer's workers)
        self.proc.wait()


# ---------------------------------------------------------------- load generators
WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(%r, "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def load_tool(want: str = "auto") -> str:
    """'wrk' when asked for or found on PATH (with 'auto'), else 'python'."""
    if want == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("wrk is not on PATH (apt-get install -y wrk)")
    return "wrk" if want == "wrk" or (want == "auto" and shutil.which("wrk")) else "python"


def run_load(port: int, path: str, body_file: str, concurrency: int, seconds: float, tool: str) -> dict:
    """Closed-loop load: `concurrency` connections each sending the body, reusing its connection,
    for `seconds`. Returns {requests, seconds, rps, p50_ms, p99_ms, errors}."""
    if tool == "wrk":
        lua = body_file + ".lua"
        with open(lua, "w") as f:
            f.write(WRK_LUA % body_file)
        # wrk takes whole seconds only; the result's duration is the one wrk measured
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
               "-s", lua, f"http://{HOST}:{port}{path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{out[-800:]}")
        n, dur_us, p50, p99, errors = (int(v) for v in line.split()[1:])
        res = {"requests": n, "seconds": dur_us / 1e6, "p50_ms": p50 / 1e3, "p99_ms": p99 / 1e3, "errors": errors}
    else:
        cmd = [sys.executable, os.path.join(BENCH_DIR, "serve_peers.py"), "load", "--port", str(port),
               "--path", path, "--body", body_file, "-c", str(concurrency), "-s", str(seconds)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        if out.returncode != 0:
            raise RuntimeError(f"the load generator failed:\n{out.stderr[-800:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
    res["rps"] = (res["requests"] - res["errors"]) / res["seconds"] if res["seconds"] else 0.0
    return res


def _percentile(sorted_values: list, q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else float("nan")


def load_main(a) -> None:
    """The Python load generator: one thread and one persistent connection per client."""
    with open(a.body, "rb") as f:
        body = f.read()
    headers = {"Content-Type": "application/json"}
    lat, errors = [[] for _ in range(a.c)], [0] * a.c
    go, times = threading.Barrier(a.c + 1), {}

    def client(i):
        conn = http.client.HTTPConnection(HOST, a.port, timeout=30)
        go.wait()
        while time.perf_counter() < times["end"]:
            t0 = time.perf_counter()
            try:
                conn.request("POST", a.path, body, headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(HOST, a.port, timeout=30)
            if ok:
                lat[i].append(time.perf_counter() - t0)
            else:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(a.c)]
    for t in threads:
        t.start()
    times["start"] = time.perf_counter()
    times["end"] = times["start"] + a.s
    go.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - times["start"]
    all_lat = sorted(v for per in lat for v in per)
    print(json.dumps({"requests": len(all_lat) + sum(errors), "seconds": elapsed, "errors": sum(errors),
                      "p50_ms": _percentile(all_lat, 0.50) * 1e3, "p99_ms": _percentile(all_lat, 0.99) * 1e3}))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pytriton")
    p.add_argument("--onnx", required=True)
    for k in ("--http-port", "--grpc-port", "--metrics-port"):
        p.add_argument(k, type=int, required=True)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--preferred", default="4,8,16,32")
    p.add_argument("--delay-us", type=int, default=2000)
    ld = sub.add_parser("load")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--path", required=True)
    ld.add_argument("--body", required=True)
    ld.add_argument("-c", type=int, default=1)
    ld.add_argument("-s", type=float, default=5.0)
    a = ap.parse_args()
    pytriton_main(a) if a.cmd == "pytriton" else load_main(a)


if __name__ == "__main__":
    main()
