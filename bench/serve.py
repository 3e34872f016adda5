"""Serving benchmark: the flagship CNN behind ember serve and behind three peers, on 127.0.0.1.

Every request is one OIP v2 JSON infer request of a batch-1 FP32 [1, 1, 28, 28] tensor (the same
body for every server); the servers answer the 10 class probabilities. The rows:

1. `ember serve`, dynamic batching (max_batch_size, preferred sizes, a --delay-us window);
2. `ember serve` without dynamic batching (each request runs alone, as the jitted bucket 1);
3. `ember serve` with a `python` model running onnxruntime on ember's ONNX export of the CNN, with
   row 1's batcher config (runs in the peers' venv, with this checkout on PYTHONPATH);
4. MLServer with a custom runtime (`mlserver.MLModel` running onnxruntime) and its adaptive
   batching (max_batch_size, max_batch_time = the window);
5. Triton, from the `nvidia-pytriton` wheel (its own venv: numpy<2), binding a `@batch` python
   function running onnxruntime, with Triton's dynamic batcher (row 1's config).

Each server is a subprocess of its own (only one alive at a time); it is started, its answer is
checked against the ember model run eagerly (within 1e-4), it is warmed up, then measured at each
--concurrency for --seconds, and stopped (its whole process group, also on errors and Ctrl-C).
The load generator is `wrk` (one thread, closed loop, a lua script POSTing the body) when it is on
PATH (it runs whole seconds: --seconds is rounded, to at least 1), else Python client threads with
persistent http.client connections, in a separate process (bench/serve_peers.py load).
The weights are the newest checkpoint under --checkpoint (`ember train` writes runs/fashion_mnist),
else random (seed 0): latency does not depend on their values. The avg batch column is
nv_inference_count / nv_inference_exec_count over the cell, from the server's /metrics (ember's
and Triton's). A peer whose venv is missing is reported as skipped, with the command that builds it.

Usage: python bench/serve.py [--seconds 5] [--concurrency 1,8,32] [--warmup 2] [--only ember,triton]
           [--peers-python /tmp/peers-serve/bin/python] [--pytriton-python /tmp/pytriton/bin/python]
           [--checkpoint runs/fashion_mnist] [--max-batch 32] [--preferred 4,8,16,32] [--delay-us 2000]
           [--load auto|wrk|python]
Build the peers' venvs with:
    python3 -m venv /tmp/peers-serve && /tmp/peers-serve/bin/pip install -q mlserver onnxruntime==1.31.1 \
        onnx starlette uvicorn numpy safetensors ml_dtypes tqdm 'tritonclient[http]'
    python3 -m venv /tmp/pytriton && /tmp/pytriton/bin/pip install -q nvidia-pytriton 'numpy<2' onnxruntime
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_peers import (BENCH_DIR, INPUT, MODEL, OUTPUT, ServerProc, free_port, http_call,  # noqa: E402
                         load_tool, metric_sums, run_load, write_mlserver)

REPO_DIR = os.path.dirname(BENCH_DIR)
PEERS_BUILD = ("python3 -m venv /tmp/peers-serve && /tmp/peers-serve/bin/pip install -q mlserver "
               "onnxruntime==1.31.1 onnx starlette uvicorn numpy safetensors ml_dtypes tqdm 'tritonclient[http]'")
PYTRITON_BUILD = ("python3 -m venv /tmp/pytriton && /tmp/pytriton/bin/pip install -q nvidia-pytriton 'numpy<2' "
                  "onnxruntime")
INFER_PATH = f"/v2/models/{MODEL}/infer"


@dataclass
class Setup:
    """What every server of one run shares: the model's weights, the request and the answer."""

    tmp: str
    weights: str = ""  # where the weights came from, in words
    checkpoint: str = ""  # a checkpoint file holding them
    body_file: str = ""  # the JSON infer request
    expected: np.ndarray | None = None  # the eager model's probabilities for it
    onnx_path: str | None = None  # ember's ONNX export (None: not exported, with the reason in onnx_error)
    onnx_error: str = ""
    max_batch: int = 32
    preferred: tuple = (4, 8, 16, 32)
    delay_us: int = 2000


@dataclass
class Spec:
    """One server to measure: how to start it and on which ports it answers."""

    name: str
    cmd: list
    port: int
    env: dict | None = None
    cwd: str | None = None
    metrics_port: int | None = None  # a Triton-style /metrics (nv_inference_count/exec_count)
    skip: str = ""  # why it is not run
    versions: str = ""


@dataclass
class Row:
    server: str
    concurrency: int
    rps: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    avg_batch: float | None = None
    errors: int = 0
    note: str = ""
    extra: dict = field(default_factory=dict)


def prepare(tmp: str, checkpoint: str | None = "runs/fashion_mnist", *, onnx: bool = True, max_batch: int = 32,
            preferred=(4, 8, 16, 32), delay_us: int = 2000) -> Setup:
    """The weights (the newest checkpoint under `checkpoint`, else random), the request body, the
    eager answer to it and the ONNX export, written under `tmp`."""
    import ember
    rng = ember.get_rng_state()  # the random init and the export's example leave the caller's RNG as it was
    try:
        setup = Setup(tmp, max_batch=max_batch, preferred=tuple(preferred), delay_us=delay_us)
        return _prepare(setup, checkpoint, onnx)
    finally:
        ember.set_rng_state(rng)


def _prepare(setup: Setup, checkpoint: str | None, onnx: bool) -> Setup:
    import ember
    from ember.serve import flagship
    from ember.serve.errors import ServeError
    from ember.serve.protocol import dumps, encode_json_data
    try:
        if not checkpoint:
            raise ServeError("no checkpoint given")
        state, file = flagship.load_model_state(checkpoint)
        weights = f"checkpoint {file}"
    except ServeError as e:
        ember.manual_seed(0)
        state = flagship.FashionClassifier().state_dict()
        file = os.path.join(setup.tmp, "random-init.safetensors")
        ember.save({"model": state}, file, sidecar=False)
        weights = f"random init, seed 0 ({e})"
    model = flagship.build_classifier(state)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    with ember.no_grad():
        expected = model(ember.from_numpy(x)).numpy()
    body_file = os.path.join(setup.tmp, "request.json")
    with open(body_file, "wb") as f:
        f.write(dumps({"inputs": [{"name": INPUT, "shape": list(x.shape), "datatype": "FP32",
                                   "data": encode_json_data(x, "FP32", INPUT)}]}))
    setup.weights, setup.checkpoint, setup.body_file, setup.expected = weights, file, body_file, expected
    if onnx:
        try:
            import ember.onnx as eo
            setup.onnx_path = os.path.join(setup.tmp, "model.onnx")
            eo.export(model, ember.randn(2, 1, 28, 28), setup.onnx_path, input_names=[INPUT], output_names=[OUTPUT],
                      dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
        except Exception as e:  # noqa: BLE001 - the peers are skipped, ember's rows still run
            setup.onnx_path, setup.onnx_error = None, f"{type(e).__name__}: {e}"
    return setup


def _batcher_config(setup: Setup) -> dict:
    return {"max_batch_size": setup.max_batch,
            "dynamic_batching": {"preferred_batch_size": list(setup.preferred),
                                 "max_queue_delay_microseconds": setup.delay_us}}


def _ember_cmd(python: str, repo: str, port: int) -> list:
    return [python, "-m", "ember.cli", "serve", "--model-repository", repo, "--port", str(port), "--model", MODEL,
            "--log-level", "warning"]


def ember_spec(setup: Setup, batching: bool) -> Spec:
    """ember serve on the flagship repository (ember.serve.flagship.make_repository), its CNN
    model's config set to `setup`'s batcher (or to none)."""
    from ember.serve import flagship, parse_config
    repo = os.path.join(setup.tmp, "ember-batched" if batching else "ember-unbatched")
    flagship.make_repository(setup.checkpoint, repo, name=MODEL.removesuffix("_cnn"), max_batch_size=setup.max_batch)
    cfg_path = os.path.join(repo, MODEL, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.pop("dynamic_batching", None)
    if batching:
        cfg.update(_batcher_config(setup))
    parse_config(cfg, MODEL)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    port = free_port()
    name = f"ember, dynamic batching (<= {setup.delay_us} us)" if batching else "ember, no batching"
    return Spec(name, _ember_cmd(sys.executable, repo, port), port, metrics_port=port)


def _versions(python: str, modules: tuple) -> str:
    code = ("import importlib.metadata as m, sys\nfor n in sys.argv[1:]:\n"
            "    try: print(f'{n} {m.version(n)}', end=', ')\n    except Exception: pass")
    r = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, timeout=60)
    return r.stdout.strip(" ,")


def _prepend(path: str, old: str | None) -> str:
    return os.pathsep.join([path] + ([old] if old else []))


def _pytriton_env(python: str) -> dict:
    """The PyTriton server's environment. Triton's python backend stub links libpython3.X.so, which
    the loader finds in the system's lib dir (Debian's 3.11.2 here), while it imports the venv's
    standard library (pyenv's 3.11.7, whose multiprocessing calls `RLock._recursion_count`, missing
    in 3.11.2). The venv interpreter's own LIBDIR first on LD_LIBRARY_PATH makes the two match."""
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"
    libdir = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    env = dict(os.environ)
    if libdir and os.path.isdir(libdir) and any(n.startswith("libpython") for n in os.listdir(libdir)):
        env["LD_LIBRARY_PATH"] = _prepend(libdir, env.get("LD_LIBRARY_PATH"))
    return env


PEER_NAMES = ("onnxruntime in ember serve (batching)", "MLServer + onnxruntime (adaptive batching)",
              "Triton (pytriton) + onnxruntime (batching)")


def ember_ort_spec(setup: Setup, python: str) -> Spec:
    """Row 3: a `python` model of ember serve running onnxruntime, in the peers' venv (this checkout
    on PYTHONPATH), with row 1's batcher config."""
    from serve_peers import EMBER_ORT_MODEL
    repo = os.path.join(setup.tmp, "ember-ort")
    vdir = os.path.join(repo, MODEL, "1")
    os.makedirs(vdir, exist_ok=True)
    shutil.copy(setup.onnx_path, os.path.join(vdir, "model.onnx"))
    with open(os.path.join(vdir, "model.py"), "w") as f:
        f.write(EMBER_ORT_MODEL)
    cfg = {"name": MODEL, "platform": "python", **_batcher_config(setup),
           "inputs": [{"name": INPUT, "datatype": "FP32", "dims": [1, 28, 28]}],
           "outputs": [{"name": OUTPUT, "datatype": "FP32", "dims": [10]}]}
    with open(os.path.join(repo, MODEL, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    env = dict(os.environ, PYTHONPATH=_prepend(REPO_DIR, os.environ.get("PYTHONPATH")))
    port = free_port()
    return Spec(PEER_NAMES[0], _ember_cmd(python, repo, port), port, env, metrics_port=port,
                versions=_versions(python, ("onnxruntime", "starlette", "uvicorn")))


def mlserver_spec(setup: Setup, python: str) -> Spec:
    """Row 4: `mlserver start` on a directory with the custom onnxruntime runtime."""
    ports = {k: free_port() for k in ("http", "grpc", "metrics")}
    mdir = write_mlserver(os.path.join(setup.tmp, "mlserver"), setup.onnx_path, ports, setup.max_batch, setup.delay_us)
    return Spec(PEER_NAMES[1], [os.path.join(os.path.dirname(python), "mlserver"), "start", mdir], ports["http"],
                cwd=mdir, versions=_versions(python, ("mlserver", "onnxruntime")))


def pytriton_spec(setup: Setup, python: str) -> Spec:
    """Row 5: serve_peers.py's PyTriton server, with row 1's batcher config."""
    ports = {k: free_port() for k in ("http", "grpc", "metrics")}
    cmd = [python, os.path.join(BENCH_DIR, "serve_peers.py"), "pytriton", "--onnx", setup.onnx_path,
           "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
           "--metrics-port", str(ports["metrics"]), "--max-batch", str(setup.max_batch),
           "--preferred", ",".join(map(str, setup.preferred)), "--delay-us", str(setup.delay_us)]
    return Spec(PEER_NAMES[2], cmd, ports["http"], _pytriton_env(python), metrics_port=ports["metrics"],
                versions=_versions(python, ("nvidia-pytriton", "onnxruntime", "numpy")))


def peer_specs(setup: Setup, peers_python: str | None, pytriton_python: str | None) -> list:
    """Rows 3 to 5, or a skipped Spec for each whose venv (or the ONNX export) is missing."""
    if setup.onnx_path is None:
        return [Spec(n, [], 0, skip=f"skipped: the ONNX export failed ({setup.onnx_error})") for n in PEER_NAMES]
    specs = []
    for name, make, python, what, build in (
            (PEER_NAMES[0], ember_ort_spec, peers_python, "peers", PEERS_BUILD),
            (PEER_NAMES[1], mlserver_spec, peers_python, "peers", PEERS_BUILD),
            (PEER_NAMES[2], pytriton_spec, pytriton_python, "pytriton", PYTRITON_BUILD)):
        if python and os.path.exists(python):
            specs.append(make(setup, python))
        else:
            specs.append(Spec(name, [], 0, skip=f"skipped: no {what} venv at {python} (build it: {build})"))
    return specs


def check_answer(port: int, setup: Setup, tol: float = 1e-4) -> float:
    """POST the request once; the max |difference| of the answer from the eager model's (raises
    past `tol`)."""
    from ember.serve.protocol import parse_json
    with open(setup.body_file, "rb") as f:
        status, body = http_call(port, "POST", INFER_PATH, f.read())
    if status != 200:
        raise RuntimeError(f"the check request answered {status}: {body[:300]!r}")
    out = next((o for o in parse_json(body, "response")["outputs"] if o["name"] == OUTPUT), None)
    if out is None:
        raise RuntimeError(f"the answer has no output {OUTPUT!r}: {body[:300]!r}")
    got = np.asarray(out["data"], np.float32).reshape(setup.expected.shape)
    diff = float(np.abs(got - setup.expected).max())
    if not diff <= tol:
        raise RuntimeError(f"the answer differs from ember's eager output by {diff:.3g} (> {tol})")
    return diff


def _batches(spec: Spec) -> tuple:
    return metric_sums(spec.metrics_port, ("nv_inference_count", "nv_inference_exec_count"))


def bench_server(spec: Spec, setup: Setup, concurrency: list, seconds: float, warmup: float = 2.0,
                 tool: str = "auto", report=print) -> list:
    """Start one server, check its answer, warm it up, measure each concurrency, stop it: Rows."""
    if spec.skip:
        return [Row(spec.name, c, note=spec.skip) for c in concurrency]
    tool = load_tool(tool)
    log = os.path.join(setup.tmp, spec.name.split()[0].strip(",").lower() + f"-{spec.port}.log")
    rows = []
    try:
        with ServerProc(spec.cmd, log, spec.env, spec.cwd) as proc:
            proc.wait_ready(spec.port)
            diff = check_answer(spec.port, setup)
            report(f"# {spec.name}: ready, answer within {diff:.1e} of eager"
                   + (f" [{spec.versions}]" if spec.versions else ""))
            if warmup > 0:
                run_load(spec.port, INFER_PATH, setup.body_file, max(concurrency), warmup, tool)
            for c in concurrency:
                before = _batches(spec) if spec.metrics_port else None
                r = run_load(spec.port, INFER_PATH, setup.body_file, c, seconds, tool)
                row = Row(spec.name, c, r["rps"], r["p50_ms"], r["p99_ms"], errors=r["errors"], extra=r)
                if before is not None:
                    after = _batches(spec)
                    n, e = after[0] - before[0], after[1] - before[1]
                    row.avg_batch = n / e if e else None
                rows.append(row)
                report(format_row(row))
    except Exception as e:  # noqa: BLE001 - one failing server does not stop the others
        msg = str(e).strip().replace("\n", "\n#   ")
        report(f"# {spec.name}: failed: {type(e).__name__}: {msg}")
        done = {r.concurrency for r in rows}
        rows += [Row(spec.name, c, note=f"failed: {type(e).__name__}") for c in concurrency if c not in done]
    return rows


HEADER = f"{'server':46s} {'conc':>4s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'avg batch':>9s} {'errors':>6s}"


def format_row(r: Row) -> str:
    if r.note:
        return f"{r.server:46s} {r.concurrency:4d} {r.note}"
    batch = f"{r.avg_batch:9.2f}" if r.avg_batch is not None else f"{'-':>9s}"
    return f"{r.server:46s} {r.concurrency:4d} {r.rps:8.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {batch} {r.errors:6d}"


def format_table(rows: list) -> str:
    return "\n".join([HEADER] + [format_row(r) for r in rows])


def summary(rows: list, concurrency: int) -> str:
    """ember-batched throughput over the best peer's at `concurrency`."""
    at = [r for r in rows if r.concurrency == concurrency and not r.note]
    ours = [r for r in at if r.server.startswith("ember, dynamic")]
    peers = [r for r in at if not r.server.startswith("ember,")]
    if not ours or not peers:
        return f"ember-batched / best peer at concurrency {concurrency}: n/a (no {'peer' if ours else 'ember'} row)"
    best = max(peers, key=lambda r: r.rps)
    return (f"ember-batched / best peer at concurrency {concurrency}: {ours[0].rps / best.rps:.2f} "
            f"({ours[0].rps:.0f} vs {best.rps:.0f} req/s, {best.server})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each cell")
    ap.add_argument("--concurrency", default="1,8,32", help="client connections, comma-separated")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of untimed load at the top concurrency")
    ap.add_argument("--only", default="", help="comma-separated substrings of server names (ember, mlserver, triton)")
    ap.add_argument("--checkpoint", default="runs/fashion_mnist",
                    help="checkpoint file or directory (none there: random weights)")
    ap.add_argument("--peers-python", default="/tmp/peers-serve/bin/python")
    ap.add_argument("--pytriton-python", default="/tmp/pytriton/bin/python")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--preferred", default="4,8,16,32", help="preferred batch sizes (ember, Triton)")
    ap.add_argument("--delay-us", type=int, default=2000, help="batch window: max_queue_delay / max_batch_time")
    ap.add_argument("--load", default="auto", choices=["auto", "wrk", "python"], help="load generator")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops its server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    conc = [int(c) for c in args.concurrency.split(",") if c]
    only = [s.lower() for s in args.only.split(",") if s]
    tmp = tempfile.mkdtemp(prefix="ember-bench-serve-")
    try:
        setup = prepare(tmp, args.checkpoint, max_batch=args.max_batch,
                        preferred=[int(p) for p in args.preferred.split(",") if p], delay_us=args.delay_us)
        specs = [ember_spec(setup, True), ember_spec(setup, False)]
        specs += peer_specs(setup, args.peers_python, args.pytriton_python)
        specs = [s for s in specs if not only or any(o in s.name.lower() for o in only)]
        tool = load_tool(args.load)
        print(f"flagship CNN, {setup.weights}; one FP32 [1,1,28,28] OIP JSON request "
              f"({os.path.getsize(setup.body_file)} bytes); {os.cpu_count()} cpus, load {tool}, "
              f"{args.seconds:g} s per cell after {args.warmup:g} s warm-up; batching: max_batch_size "
              f"{setup.max_batch}, preferred {list(setup.preferred)} (ember, Triton), window {setup.delay_us} us",
              flush=True)
        print(HEADER, flush=True)
        rows = []
        for spec in specs:
            rows += bench_server(spec, setup, conc, args.seconds, args.warmup, tool,
                                 report=lambda s: print(s, flush=True))
        print()
        print(format_table(rows))
        print(summary(rows, max(conc)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the servers are stopped already (every `with` block exited)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
