"""`ember.serve.Router`: one HTTP front for several ember serve replicas (DMLP-7, DMLP-9).

    with ReplicaSet("models/", replicas=3) as rs, Router(replicas=rs) as router:
        ...                                   # or: ember serve --model-repository models/ --replicas 3

The router forwards every OIP request to one replica picked by its policy (ember/serve/balancing.py),
answers /v2/health/* itself (ready while one replica is), and broadcasts the repository API (load,
unload) to every replica. It polls each replica's /v2/health/ready; a replica that refuses or drops a
connection is marked not ready at once and the request is retried on another (inference is
idempotent), so a killed replica loses no request. A request that finds no ready replica waits up to
`ready_wait_s` for one (Knative's activator: scale-up from idle buffers requests instead of failing).
`rate_limit` caps requests a second (429 with Retry-After past it); `autoscale` (ember/serve/autoscale.py)
grows and shrinks the ReplicaSet on in-flight concurrency.

Threads: "ember-router-http" runs the event loop (the app, the forwarding client, the readiness poller);
"ember-router-autoscaler" the scaler. Backend counters are written on the loop only; the scaler reads
`inflight` (an int) and changes the backend list through `Backends`, under its lock.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from . import protocol
from .autoscale import Autoscaler
from .balancing import Backend, Backends
from .errors import PayloadTooLarge, ServeError, Unavailable, require_web_stack
from .http_thread import Endpoint, HTTPThread
from .ratelimit import RateLimiter

log = logging.getLogger("ember.serve")

HOP_HEADERS = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade",
               "proxy-connection", "te", "trailer"}
HASH_HEADER = "x-ember-route-key"


class Router(Endpoint):
    """Route OIP requests over replicas: `backends` (URLs) and/or a ReplicaSet `replicas`."""

    def __init__(self, backends=(), *, replicas=None, policy: str = "round_robin", hash_header: str = HASH_HEADER,
                 host: str = "127.0.0.1", port: int = 0, poll_interval_s: float = 0.25, ready_wait_s: float = 30.0,
                 timeout_s: float = 120.0, max_body_bytes: int = 64 << 20, rate_limit: float | None = None,
                 burst: int | None = None, autoscale=None, drain_timeout_s: float = 30.0,
                 log_level: str = "warning"):
        self.backends = Backends(policy)
        for url in backends:
            self.add_backend(url)
        self.replicas = replicas
        self.hash_header = hash_header.lower()
        self.host, self._port = host, int(port)
        self.poll_interval_s, self.ready_wait_s, self.timeout_s = poll_interval_s, ready_wait_s, timeout_s
        self.max_body_bytes = int(max_body_bytes)
        self.limiter = None if rate_limit is None else RateLimiter(rate_limit, burst)
        self.autoscaler = None if autoscale is None else Autoscaler(self, replicas, autoscale)
        self.drain_timeout_s, self.log_level = drain_timeout_s, log_level
        self.inflight = 0  # requests inside the router, waiting for a replica or forwarded
        self.retries = 0
        self._http = None
        self._changed: asyncio.Event | None = None

    # ---- backends
    def add_backend(self, url: str, name: str = "") -> Backend:
        """Route to the server at `url` too (from any thread); it takes traffic once it reports ready."""
        return self.backends.add(Backend(url.rstrip("/"), name or url))

    def remove_backend(self, backend: Backend) -> None:
        """Stop routing to `backend` (from any thread); its in-flight requests finish."""
        self.backends.remove(backend)

    def stats(self) -> dict:
        """What the router knows: each backend's state and counts, in flight, retries, replicas wanted."""
        out = {"policy": self.backends.policy, "inflight": self.inflight, "retries": self.retries,
               "rate_limited": self.limiter.rejected if self.limiter else 0,
               "backends": [b.stats() for b in self.backends.all()]}
        if self.autoscaler is not None:
            out["autoscaler"] = self.autoscaler.stats()
        return out

    # ---- lifecycle
    def start(self) -> "Router":
        """Bind, start serving and polling; returns at once (replicas become ready as they report it)."""
        if self._http is not None:
            raise ServeError("this Router was started already")
        require_web_stack()
        try:
            import httpx  # noqa: F401
        except ImportError as e:
            raise ServeError("the router needs httpx: pip install 'ember[serve]'") from e
        if self.replicas is not None:
            for r in self.replicas.replicas:
                self.add_backend(r.url, r.name)
        self._http = HTTPThread(self._app(), self.host, self._port, name="ember-router-http",
                                drain_timeout_s=self.drain_timeout_s, log_level=self.log_level,
                                lifespan="on").start()
        if self.autoscaler is not None:
            self.autoscaler.start()
        return self

    def wait_ready(self, n: int | None = None, timeout: float = 60.0) -> None:
        """Block until `n` backends (default: all) report ready."""
        deadline = time.monotonic() + timeout
        while True:
            bs = self.backends.all()
            want = len(bs) if n is None else n
            if sum(b.ready for b in bs) >= want:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"{sum(b.ready for b in bs)} of {want} replicas ready after {timeout} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop scaling, stop taking connections, let forwarded requests finish. Safe to call twice."""
        if self.autoscaler is not None:
            self.autoscaler.stop()
        if self._http is not None:
            self._http.stop()

    def alive(self) -> bool:
        return self._http is not None and self._http.alive()

    def __enter__(self) -> "Router":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- the app
    def _app(self):
        import httpx
        from starlette.applications import Starlette
        from starlette.requests import ClientDisconnect
        from starlette.responses import Response
        from starlette.routing import Route

        from .app import error_response

        router = self
        state = {}

        def json_response(obj, status=200):
            return Response(protocol.dumps(obj), status, media_type="application/json")

        async def poll_forever(client):
            while True:
                bs = router.backends.all()
                await asyncio.gather(*(poll(client, b) for b in bs))
                await asyncio.sleep(router.poll_interval_s)

        async def poll(client, b):
            try:
                r = await client.get(b.url + "/v2/health/ready", timeout=max(router.poll_interval_s * 4, 1.0))
                ready = r.status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready and not b.ready:
                log.info("replica %s is ready", b.name)
                router._changed.set()
            b.ready = ready

        @contextlib.asynccontextmanager
        async def lifespan(app):
            router._changed = asyncio.Event()
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
            async with httpx.AsyncClient(limits=limits, timeout=router.timeout_s) as client:
                state["client"] = client
                task = asyncio.create_task(poll_forever(client))
                try:
                    yield
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

        async def choose(key, tried):
            """A usable backend, waiting up to ready_wait_s for one when none is ready yet."""
            deadline = time.monotonic() + router.ready_wait_s
            while True:
                b = router.backends.pick(key, tried)
                if b is not None:
                    return b
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                router._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(router._changed.wait(), min(left, router.poll_interval_s))

        async def read_body(request):
            chunks, n = [], 0
            async for c in request.stream():
                n += len(c)
                if n > router.max_body_bytes:
                    raise PayloadTooLarge(f"the request body is over the router's limit of {router.max_body_bytes} "
                                          f"bytes")
                chunks.append(c)
            return b"".join(chunks)

        def reply(r):
            headers = {k: v for k, v in r.headers.items() if k.lower() not in HOP_HEADERS | {"content-encoding"}}
            return Response(r.content, r.status_code, headers=headers)

        async def forward(request, body, path):
            client = state["client"]
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
            key, tried, why = request.headers.get(router.hash_header), set(), "no replica is ready"
            for _ in range(max(len(router.backends.all()), 1) + 2):
                b = await choose(key, tried)
                if b is None:
                    break
                b.inflight += 1
                try:
                    r = await client.request(request.method, b.url + path, content=body, headers=headers)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError,
                        httpx.RemoteProtocolError) as e:
                    # the replica is gone or going: never ready again until its poll says so
                    b.ready, why = False, f"replica {b.name} failed: {type(e).__name__}"
                    b.failures += 1
                    router.retries += 1
                    tried.add(b)
                    log.warning("%s; retrying on another replica", why)
                    continue
                except httpx.TimeoutException:
                    return error_response(ServeError(f"replica {b.name} did not answer within "
                                                     f"{router.timeout_s} s"))
                finally:
                    b.inflight -= 1
                if r.status_code == 503 and request.url.path.endswith("/infer") and \
                        r.headers.get("retry-after") is None:
                    b.ready, why = False, f"replica {b.name} is not ready"  # stopping: try another
                    tried.add(b)
                    router.retries += 1
                    continue
                b.requests += 1
                out = reply(r)
                out.headers["x-ember-replica"] = b.name
                return out
            return error_response(Unavailable(f"no replica could answer: {why}"))

        async def broadcast(request, body, path):
            client = state["client"]
            bs = [b for b in router.backends.all() if b.ready]
            if not bs:
                return error_response(Unavailable("no replica is ready"))
            rs = await asyncio.gather(*(client.post(b.url + path, content=body) for b in bs), return_exceptions=True)
            for b, r in zip(bs, rs):
                if isinstance(r, BaseException):
                    return error_response(Unavailable(f"replica {b.name} failed: {type(r).__name__}"))
                if r.status_code != 200:
                    return reply(r)
            return reply(rs[0])

        async def handle(request):
            path = request.url.path
            if path == "/v2/health/live":
                return json_response({"live": True})
            if path == "/v2/health/ready":
                ok = any(b.usable() for b in router.backends.all())
                return json_response({"ready": ok}, 200 if ok else 503)
            if path == "/metrics":
                return Response(router.render_metrics(), 200, media_type="text/plain; version=0.0.4")
            if path == "/router/stats":
                return json_response(router.stats())
            router.inflight += 1
            try:
                if router.limiter is not None:
                    router.limiter.admit()
                body = await read_body(request)
                full = path + (f"?{request.url.query}" if request.url.query else "")
                if path.startswith("/v2/repository/models/") and request.method == "POST":
                    return await broadcast(request, body, full)
                return await forward(request, body, full)
            except ServeError as e:
                return error_response(e)
            except ClientDisconnect:
                return error_response(Unavailable("the client disconnected"))
            finally:
                router.inflight -= 1

        methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]
        return Starlette(routes=[Route("/{path:path}", handle, methods=methods)], lifespan=lifespan)

    def render_metrics(self) -> str:
        """The router's counters in Prometheus' text format."""
        bs = self.backends.all()
        lines = ["# HELP ember_router_requests_total Requests answered, per replica",
                 "# TYPE ember_router_requests_total counter"]
        lines += [f'ember_router_requests_total{{replica="{b.name}"}} {b.requests}' for b in bs]
        lines += ["# HELP ember_router_inflight Requests inside the router now",
                  "# TYPE ember_router_inflight gauge", f"ember_router_inflight {self.inflight}",
                  "# HELP ember_router_retries_total Requests retried on another replica after a failure",
                  "# TYPE ember_router_retries_total counter", f"ember_router_retries_total {self.retries}",
                  "# HELP ember_router_rate_limited_total Requests refused with 429 by the rate limit",
                  "# TYPE ember_router_rate_limited_total counter",
                  f"ember_router_rate_limited_total {self.limiter.rejected if self.limiter else 0}",
                  "# HELP ember_router_replicas Replicas behind the router, by state",
                  "# TYPE ember_router_replicas gauge",
                  f'ember_router_replicas{{state="ready"}} {sum(b.usable() for b in bs)}',
                  f'ember_router_replicas{{state="total"}} {len(bs)}']
        if self.autoscaler is not None:
            lines += self.autoscaler.metrics_lines()
        return "\n".join(lines) + "\n"


def main(args, server_args: list) -> int:
    """`ember serve --replicas N`: N replica processes behind a router on --host:--port."""
    import signal
    import sys
    import threading

    from .autoscale import Autoscale
    from .replicas import ReplicaSet
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    scale = None
    if args.autoscale:
        scale = Autoscale(target=args.target_concurrency, min_replicas=args.min_replicas,
                          max_replicas=max(args.max_replicas, args.replicas))
    rs = ReplicaSet(args.model_repository, args.replicas, server_args=server_args)
    router = Router(replicas=rs, policy=args.routing, hash_header=args.hash_header, host=args.host,
                    port=args.port, rate_limit=args.rate_limit, burst=args.burst, autoscale=scale,
                    max_body_bytes=int(args.max_body_mb * (1 << 20)), log_level=args.log_level)
    stop = threading.Event()
    prev = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        try:
            rs.start()
            router.start()
            router.wait_ready(timeout=rs.start_timeout_s)
        except ServeError as e:
            print(f"ember serve: {e}", file=sys.stderr)
            return 1
        print(f"ember serve: {router.url} (OIP v2 REST) routing {args.routing} over "
              f"{[b.url for b in router.backends.all()]}", flush=True)
        while not stop.wait(0.5) and router.alive():
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, prev)
        router.stop()
        rs.stop()
    return 0
