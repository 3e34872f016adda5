"""`ember.serve.Server`: uvicorn serving the app on a background thread with its own event loop.

    with Server("models/") as srv:        # binds 127.0.0.1 on a free port, loads every model
        print(srv.url)                    # http://127.0.0.1:PORT
    # leaving the block drains in-flight requests, stops the batchers and joins every thread

With `grpc_port` (0: a free one) the same repository is also served over OIP gRPC
(grpc_service.py; Triton's default port is 8001).

Threads: "ember-serve-http" runs the event loop (uvicorn and the app), "ember-serve-io-N" the I/O
pool (large bodies, repository loads), "ember-serve-<model>-v<version>-<i>" the batchers,
"ember-serve-poll" the repository poll (poll mode), "ember-serve-grpc_N" the gRPC handlers (each
waits on its request's batcher future). `stop` joins all of them.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from .errors import NotFound, ServeError, require_web_stack
from .http_thread import Endpoint, HTTPThread
from .metrics import Metrics
from .ratelimit import RateLimiter
from .repository import Repository

log = logging.getLogger("ember.serve")


class Server(Endpoint):
    """An OIP v2 (KServe / Triton REST) server for a model repository. `rate_limit` (requests a
    second, bursts of `burst`) caps inference requests: past it they get 429 with Retry-After.
    `poll_interval_s` turns on poll mode: the repository is rescanned that often, and models that
    appeared, changed or went away are loaded, reloaded (without dropping requests) or unloaded."""

    def __init__(self, model_repository, host: str = "127.0.0.1", port: int = 0, *, models=None,
                 max_body_bytes: int = 64 << 20, strict_readiness: bool = False,
                 drain_timeout_s: float = 30.0, io_threads: int = 2, log_level: str = "warning",
                 rate_limit: float | None = None, burst: int | None = None,
                 poll_interval_s: float | None = None, grpc_port: int | None = None, grpc_workers: int = 32):
        self.model_repository = model_repository
        self.host, self._port = host, int(port)
        self.models = None if models is None else list(models)
        self.max_body_bytes = int(max_body_bytes)
        self.strict_readiness = strict_readiness
        self.drain_timeout_s = float(drain_timeout_s)
        self.io_threads = int(io_threads)
        self.log_level = log_level
        self.metrics = Metrics()
        self.repository: Repository | None = None
        self.limiter = None if rate_limit is None else RateLimiter(rate_limit, burst)
        self.poll_interval_s = poll_interval_s
        self._grpc_port, self.grpc_workers = grpc_port, int(grpc_workers)
        self._http = self._pool = self._poller = self._grpc = None
        self._poll_stop = threading.Event()
        self._loaded = self._stopping = False

    # ---- state
    def is_ready(self) -> bool:
        """Ready: started, every model asked for loaded (or failed), not stopping; with
        `strict_readiness`, also every loaded model version READY."""
        if not self._loaded or self._stopping or self.repository is None:
            return False
        return self.repository.all_ready() if self.strict_readiness else True

    # ---- start / stop
    def start(self) -> "Server":
        """Bind, start the HTTP thread, load the models; returns once ready."""
        if self._http is not None or self.repository is not None:
            raise ServeError("this Server was started already")
        require_web_stack()
        from .. import __version__
        from .app import build_app
        try:
            self.repository = Repository(self.model_repository, self.metrics)
            self._pool = ThreadPoolExecutor(max(self.io_threads, 1), thread_name_prefix="ember-serve-io")
            app = build_app(self.repository, self.metrics, self._pool, max_body_bytes=self.max_body_bytes,
                            is_ready=self.is_ready, version=__version__, limiter=self.limiter)
            self._http = HTTPThread(app, self.host, self._port, name="ember-serve-http",
                                    drain_timeout_s=self.drain_timeout_s, log_level=self.log_level).start()
            if self._grpc_port is not None:
                from .grpc_service import GrpcServer, Service
                service = Service(self.repository, self.metrics, is_ready=self.is_ready, version=__version__,
                                  limiter=self.limiter)
                self._grpc = GrpcServer(service, self.host, self._grpc_port, max_message_bytes=self.max_body_bytes,
                                        workers=self.grpc_workers)
            names = self.models if self.models is not None else self.repository.model_names()
            for n in names:
                self.repository.load(n)
            self._loaded = True
            if self.poll_interval_s:
                self._poller = threading.Thread(target=self._poll, name="ember-serve-poll", daemon=True)
                self._poller.start()
        except BaseException:
            self.stop()
            raise
        log.info("ember serve: %s serving %s", self.url, self.repository.root)
        return self

    def _poll(self) -> None:
        while not self._poll_stop.wait(self.poll_interval_s):
            try:
                changed = self.repository.poll(self.models)
                if changed:
                    log.info("repository poll: reloaded %s", changed)
            except Exception:  # noqa: BLE001 - a bad poll is logged; serving goes on
                log.exception("repository poll failed")

    @property
    def grpc_port(self) -> int | None:
        """The bound gRPC port (None: no gRPC endpoint)."""
        return self._grpc.port if self._grpc is not None else self._grpc_port

    @property
    def grpc_target(self) -> str | None:
        """host:port of the gRPC endpoint, as gRPC clients take it."""
        return self._grpc.target if self._grpc is not None else None

    def alive(self) -> bool:
        """Whether the HTTP thread is serving."""
        return self._http is not None and self._http.alive()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking connections, let in-flight requests finish (up to `drain_timeout_s`), drain the
        batchers, and join every thread the server started. Safe to call twice."""
        self._stopping = True
        self._poll_stop.set()
        if self._poller is not None:
            self._poller.join(60)
        if self._grpc is not None:
            self._grpc.stop(self.drain_timeout_s)
            self._grpc = None
        if self._http is not None:
            self._http.stop(timeout)
        if self.repository is not None:
            self.repository.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def wait(self) -> None:
        """Block until the HTTP thread ends (after `stop`, or a fatal error)."""
        if self._http is not None:
            self._http.join()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ember.serve.Server {self.url} repository={self.model_repository!r}>"


def main(args) -> int:
    """`ember serve`: serve a model repository until SIGINT or SIGTERM."""
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    srv = Server(args.model_repository, args.host, args.port, models=args.model or None,
                 max_body_bytes=int(args.max_body_mb * (1 << 20)), strict_readiness=args.strict_readiness,
                 log_level=args.log_level, rate_limit=args.rate_limit, burst=args.burst,
                 poll_interval_s=args.repository_poll_secs, grpc_port=getattr(args, "grpc_port", None))
    stop = threading.Event()
    prev = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        try:
            srv.start()
        except (ServeError, NotFound) as e:
            print(f"ember serve: {e}", file=sys.stderr)
            return 1
        grpc_at = f", {srv.grpc_target} (OIP v2 gRPC)" if srv.grpc_target else ""
        print(f"ember serve: {srv.url} (OIP v2 REST){grpc_at}, models "
              f"{[i['name'] for i in srv.repository.index(True)]}", flush=True)
        parent = int(os.environ.get("EMBER_SERVE_PARENT", "0") or 0)  # a replica: exit with the router
        while not stop.wait(0.5):
            if not srv.alive() or parent and os.getppid() != parent:
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, prev)
        srv.stop()
    return 0
