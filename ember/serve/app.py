"""The Starlette application: the OIP v2 REST routes, the repository API and /metrics.

Handlers run on the event loop and do only quick work there: look the model up, read the body
(capped), decode and check the request, queue it and await its future. Models run on the batcher
threads; decoding or encoding a large body, and loading or unloading a model, run on the server's
small I/O pool, so the loop never blocks on them.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import math
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import protocol
from .canary import parse_canary
from . import inference
from .errors import ConfigError, InvalidRequest, PayloadTooLarge, ServeError
from .repository import Repository

log = logging.getLogger("ember.serve")

OFFLOAD_BYTES = 256 << 10  # bodies (and outputs) larger than this are decoded (encoded) on the I/O pool
DRAIN_BYTES = 4 << 20  # how much of a body past the cap is read and dropped before answering 413


def _json(obj, status: int = 200) -> Response:
    return Response(protocol.dumps(obj), status, media_type="application/json")


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return Response(protocol.error_body(message), status, media_type="application/json", headers=headers)


def error_response(e: ServeError) -> Response:
    """A ServeError as its status and {"error": ...}; a rate limit adds Retry-After."""
    after = getattr(e, "retry_after", None)
    return _error(e.status, str(e), None if after is None else {"Retry-After": str(max(math.ceil(after), 1))})


def _endpoint(fn):
    """Turn ServeErrors into their status and {"error": ...}; anything else into a 500, logged."""
    @functools.wraps(fn)
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except ServeError as e:
            return error_response(e)
        except Exception as e:  # noqa: BLE001 - a bug answers 500; the server goes on
            log.exception("internal error serving %s %s", request.method, request.url.path)
            return _error(500, f"internal error: {type(e).__name__}: {e}")
    return wrapped


async def _read_body(request: Request, cap: int) -> bytes:
    cl = request.headers.get("content-length")
    if cl is not None:
        if not protocol.is_uint(cl.strip()):
            raise InvalidRequest(f"bad Content-Length {cl[:40]!r}")
        if int(cl) > cap:
            raise PayloadTooLarge(f"the request body has {int(cl)} bytes, over the server's limit of {cap}")
    chunks, n = [], 0
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > cap + DRAIN_BYTES:
                break
            if n <= cap:
                chunks.append(chunk)
            # past the cap, read on and drop a bounded overshoot: closing with unread bytes resets
            # the connection, and the client would never see the 413
    except ClientDisconnect:
        raise InvalidRequest("the client disconnected before sending the whole body") from None
    if n > cap:
        raise PayloadTooLarge(f"the request body is over the server's limit of {cap} bytes")
    return b"".join(chunks)


def build_app(repo: Repository, metrics, pool, *, max_body_bytes: int, is_ready, version: str,
              limiter=None) -> Starlette:
    """The ASGI app serving `repo`; `is_ready()` says whether the server takes traffic; `limiter`
    (a RateLimiter) caps the inference request rate."""

    async def offload(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @_endpoint
    async def server_metadata(request):
        return _json({"name": "ember", "version": version, "extensions": protocol.EXTENSIONS})

    @_endpoint
    async def live(request):
        return _json({"live": True})

    @_endpoint
    async def ready(request):
        ok = is_ready()
        return _json({"ready": ok}, 200 if ok else 503)

    @_endpoint
    async def model_metadata(request):
        return _json(inference.model_metadata(repo, request.path_params["model"], request.path_params.get("version")))

    @_endpoint
    async def model_ready(request):
        name, version = request.path_params["model"], request.path_params.get("version")
        ve = repo.resolve(name, version)
        return _json({"name": name, "version": str(ve.version), "ready": True})

    @_endpoint
    async def model_config(request):
        name, version = request.path_params["model"], request.path_params.get("version")
        e, cfg, _ = inference.config_of(repo, name, version)
        if cfg is None:
            return _error(503, f"model {name!r} has no valid config: {e.why_not_ready()}")
        return _json(cfg.to_json())

    @_endpoint
    async def infer(request):
        t0 = time.monotonic_ns()
        if limiter is not None:
            limiter.admit()
        name, version = request.path_params["model"], request.path_params.get("version")
        ve = repo.resolve(name, version, route=False)  # unknown or unready: answered before the body is read
        labels = (name, str(ve.version))
        try:
            body = await _read_body(request, max_body_bytes)
            header = request.headers.get(protocol.HEADER_LENGTH)
            if len(body) > OFFLOAD_BYTES:
                req = await offload(protocol.decode_infer_request, body, header)
            else:
                req = protocol.decode_infer_request(body, header)
            # resolved again after the awaits: a poll-mode reload may have swapped the version meanwhile
            labels, ve, fut = inference.submit(repo, name, version, req)
            wanted = inference.select_outputs(ve.config, req)
            outs = await asyncio.wrap_future(fut)
            items = [(n, dt, outs[n], binary) for n, dt, binary in wanted]
            if sum(a.nbytes for _, _, a, _ in items) > OFFLOAD_BYTES:
                data, hlen = await offload(protocol.encode_infer_response, name, labels[1], req.id, items)
            else:
                data, hlen = protocol.encode_infer_response(name, labels[1], req.id, items)
        except BaseException:
            metrics.request(*labels, False, time.monotonic_ns() - t0)
            raise
        metrics.request(*labels, True, time.monotonic_ns() - t0)
        if hlen is None:
            return Response(data, 200, media_type="application/json")
        return Response(data, 200, media_type="application/octet-stream",
                        headers={protocol.HEADER_LENGTH: str(hlen)})

    @_endpoint
    async def repository_index(request):
        body = await _read_body(request, 1 << 16)
        params = protocol.parse_json(body) if body.strip() else {}
        ready_only = params.get("ready", False)
        if not isinstance(ready_only, bool):
            raise InvalidRequest("'ready' must be true or false")
        return _json(repo.index(ready_only))

    @_endpoint
    async def repository_load(request):
        name = request.path_params["model"]
        entry = await offload(repo.load, name)
        if not entry.ready_versions():
            return _error(400, f"failed to load model {name!r}: {entry.why_not_ready()}")
        return _json({})

    @_endpoint
    async def repository_unload(request):
        await offload(repo.unload, request.path_params["model"])
        return _json({})

    @_endpoint
    async def canary(request):
        name = request.path_params["model"]
        if request.method == "GET":
            e = repo.entry(name)
            return _json(e.canary.to_json() if e.canary else {"state": "none"})
        params = protocol.parse_json(await _read_body(request, 1 << 16))
        try:
            if isinstance(params, dict) and set(params) == {"action"}:
                c = repo.canary_action(name, params["action"])
            else:
                c = repo.start_canary(name, parse_canary(params))
        except ConfigError as e:
            raise InvalidRequest(str(e)) from None
        return _json(c.to_json())

    async def prometheus(request):
        return Response(metrics.render(), 200, media_type="text/plain; version=0.0.4")

    async def http_error(request, exc: HTTPException):
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    m, mv = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{model}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", repository_unload, methods=["POST"]),
        Route("/v2/repository/models/{model}/canary", canary, methods=["GET", "POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    for base in (m, mv):
        routes += [Route(base, model_metadata, methods=["GET"]),
                   Route(base + "/ready", model_ready, methods=["GET"]),
                   Route(base + "/config", model_config, methods=["GET"]),
                   Route(base + "/infer", infer, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
