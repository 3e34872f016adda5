"""`ember.serve.Server`: uvicorn serving the app on a background thread with its own event loop.

    with Server("models/") as srv:        # binds 127.0.0.1 on a free port, loads every model
        print(srv.url)                    # http://127.0.0.1:PORT
    # leaving the block drains in-flight requests, stops the batchers and joins every thread

Threads: "ember-serve-http" runs the event loop (uvicorn and the app), "ember-serve-io-N" the I/O
pool (large bodies, repository loads), "ember-serve-<model>-v<version>-<i>" the batchers. `stop`
joins all of them.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .errors import NotFound, ServeError, require_web_stack
from .metrics import Metrics
from .repository import Repository

log = logging.getLogger("ember.serve")


class Server:
    """An OIP v2 (KServe / Triton REST) server for a model repository."""

    def __init__(self, model_repository, host: str = "127.0.0.1", port: int = 0, *, models=None,
                 max_body_bytes: int = 64 << 20, strict_readiness: bool = False,
                 drain_timeout_s: float = 30.0, io_threads: int = 2, log_level: str = "warning"):
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
        self._uv = self._thread = self._sock = self._pool = None
        self._loaded = self._stopping = False
        self._error: BaseException | None = None

    # ---- state
    @property
    def port(self) -> int:
        """The bound port (the chosen one when constructed with port=0)."""
        return self._sock.getsockname()[1] if self._sock is not None else self._port

    @property
    def url(self) -> str:
        """http://host:port of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def is_ready(self) -> bool:
        """Ready: started, every model asked for loaded (or failed), not stopping; with
        `strict_readiness`, also every loaded model version READY."""
        if not self._loaded or self._stopping or self.repository is None:
            return False
        return self.repository.all_ready() if self.strict_readiness else True

    # ---- start / stop
    def start(self) -> "Server":
        """Bind, start the HTTP thread, load the models; returns once ready."""
        if self._thread is not None:
            raise ServeError("this Server was started already")
        require_web_stack()
        import uvicorn
        from .. import __version__
        from .app import build_app
        try:
            self.repository = Repository(self.model_repository, self.metrics)
            self._pool = ThreadPoolExecutor(max(self.io_threads, 1), thread_name_prefix="ember-serve-io")
            app = build_app(self.repository, self.metrics, self._pool, max_body_bytes=self.max_body_bytes,
                            is_ready=self.is_ready, version=__version__)
            self._sock = self._bind()
            config = uvicorn.Config(app, log_config=None, log_level=self.log_level, access_log=False,
                                    lifespan="off", loop="asyncio",
                                    timeout_graceful_shutdown=max(int(self.drain_timeout_s), 1))
            self._uv = uvicorn.Server(config)
            self._thread = threading.Thread(target=self._serve, name="ember-serve-http", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + 30
            while not self._uv.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise ServeError(f"the HTTP server did not start: {self._error!r}")
                time.sleep(0.005)
            names = self.models if self.models is not None else self.repository.model_names()
            for n in names:
                self.repository.load(n)
            self._loaded = True
        except BaseException:
            self.stop()
            raise
        log.info("ember serve: %s serving %s", self.url, self.repository.root)
        return self

    def _bind(self) -> socket.socket:
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(self.host, self._port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as e:
            raise ServeError(f"cannot bind {self.host}:{self._port}: {e}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(1024)
        except OSError as e:
            sock.close()
            raise ServeError(f"cannot bind {self.host}:{self._port}: {e}") from None
        return sock

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._uv.serve(sockets=[self._sock]))
        except BaseException as e:  # noqa: BLE001 - reported by start/stop
            self._error = e
            log.error("the HTTP server stopped: %r", e)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking connections, let in-flight requests finish (up to `drain_timeout_s`), drain the
        batchers, and join every thread the server started. Safe to call twice."""
        self._stopping = True
        if self._uv is not None and self._thread is not None:
            self._uv.should_exit = True
            self._thread.join(self.drain_timeout_s + 5 if timeout is None else timeout)
            if self._thread.is_alive():
                self._uv.force_exit = True
                self._thread.join(5)
        if self.repository is not None:
            self.repository.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._sock is not None:
            self._sock.close()

    def wait(self) -> None:
        """Block until the HTTP thread ends (after `stop`, or a fatal error)."""
        if self._thread is not None:
            self._thread.join()

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
                 log_level=args.log_level)
    stop = threading.Event()
    prev = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        try:
            srv.start()
        except (ServeError, NotFound) as e:
            print(f"ember serve: {e}", file=sys.stderr)
            return 1
        print(f"ember serve: {srv.url} (OIP v2 REST), models {[i['name'] for i in srv.repository.index(True)]}",
              flush=True)
        while not stop.wait(0.5):
            if not srv._thread.is_alive():
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, prev)
        srv.stop()
    return 0
