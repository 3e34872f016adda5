"""An ASGI app served by uvicorn on a background thread with its own event loop: the part the model
server and the router share. The socket is bound before the thread starts, so port 0 picks a free
port and `port` says which."""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

from .errors import ServeError

log = logging.getLogger("ember.serve")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: a free port), or ServeError saying why not."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ServeError(f"cannot bind {host}:{port}: {e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot bind {host}:{port}: {e}") from None
    return sock


class Endpoint:
    """`port` and `url` of a server object holding `host`, `_port` and `_http` (an HTTPThread once started)."""

    @property
    def port(self) -> int:
        """The bound port (the chosen one when constructed with port=0)."""
        return self._http.port if self._http is not None else self._port

    @property
    def url(self) -> str:
        """http://host:port of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class HTTPThread:
    """uvicorn serving `app` on the thread `name`; `stop` lets in-flight requests finish first."""

    def __init__(self, app, host: str, port: int, *, name: str, drain_timeout_s: float = 30.0,
                 log_level: str = "warning", lifespan: str = "off"):
        import uvicorn
        self.host, self.drain_timeout_s = host, float(drain_timeout_s)
        self.error: BaseException | None = None
        self.sock = bind(host, port)
        config = uvicorn.Config(app, log_config=None, log_level=log_level, access_log=False,
                                lifespan=lifespan, loop="asyncio",
                                timeout_graceful_shutdown=max(int(self.drain_timeout_s), 1))
        self._uv = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> "HTTPThread":
        """Start serving; returns once uvicorn accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uv.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop(5)
                raise ServeError(f"the HTTP server did not start: {self.error!r}")
            time.sleep(0.005)
        return self

    def _serve(self) -> None:
        try:  # uvloop (uvicorn[standard]) when installed: a faster loop; httptools likewise for parsing
            import uvloop
            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._uv.serve(sockets=[self.sock]))
        except BaseException as e:  # noqa: BLE001 - reported by start/stop
            self.error = e
            log.error("the HTTP server stopped: %r", e)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking connections and join the thread (forcing exit past the drain timeout)."""
        if self._thread.is_alive():
            self._uv.should_exit = True
            self._thread.join(self.drain_timeout_s + 5 if timeout is None else timeout)
            if self._thread.is_alive():
                self._uv.force_exit = True
                self._thread.join(5)
        self.sock.close()

    def join(self) -> None:
        self._thread.join()
