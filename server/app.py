"""The Sanic application: the composition root of the server.

``create_app(config)`` wires blueprints, error handling and lifecycle:
- before serving: open the services (store, driver, fan-out, keys) and start the pruning
  job;
- on SIGTERM/SIGINT (Sanic's graceful shutdown): stop accepting, mark the server as
  draining (``/health`` answers 503), let in-flight requests and uploads finish within
  ``graceful_shutdown_timeout``, close WebSockets with 1001, then close the services.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import MethodNotAllowed, PayloadTooLarge, SanicException
from sanic.response import HTTPResponse, json
from sanic_ext import Extend

from gobi.protocol import MAX_JSON_BODY, WS_CLOSE_GOING_AWAY, ErrorCode

from . import blueprints, gate, openapi, request_log, web
from .config import ServerConfig
from .connections import ConnectionGuard
from .gate import Refused
from .web.session import PAGE_HEADERS
from .errors import ServiceError
from .blueprints.content import MAX_BATCH_BODY
from .metrics import Metrics, metrics_token
from .service import Services
from .store.base import StoreUnavailable

log = logging.getLogger("gobi.server")

_SANIC_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.BAD_REQUEST,
    408: ErrorCode.UNAVAILABLE,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    416: ErrorCode.RANGE_NOT_SATISFIABLE,
    503: ErrorCode.UNAVAILABLE,
}


# Every answer outside the web page (which sets its own, web/session.py) and /docs (whose
# page allows the pinned Swagger UI): JSON and bytes are never rendered, framed or sniffed.
API_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def add_security_headers(request: Request, response: HTTPResponse) -> None:
    page = request.path == "/web" or request.path.startswith("/web/")
    for key, value in (PAGE_HEADERS if page else API_HEADERS).items():
        if key not in response.headers:
            response.headers[key] = value


def _version() -> str:
    try:
        return version("gobi")
    except PackageNotFoundError:
        return "dev"


def _allowed(request: Request) -> list[str]:
    found = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        try:
            request.app.router.get(request.path, method, request.headers.getone("host", None))
        except SanicException:
            continue
        found.append(method)
    return found


def _error_response(request: Request, exc: Exception) -> HTTPResponse:
    if isinstance(exc, Refused):
        return exc.response
    if isinstance(exc, ServiceError):
        if exc.status in (409, 410, 429) or exc.code in (ErrorCode.MISSING_CHUNKS, ErrorCode.HASH_MISMATCH):
            request.app.ctx.metrics.conflicts.labels(exc.code.value).inc()
        if exc.code in (ErrorCode.INVALID_CREDENTIALS, ErrorCode.RATE_LIMITED):
            request.app.ctx.metrics.login_failures.inc()
        return json(exc.body(), status=exc.status, headers=exc.headers or None)
    if isinstance(exc, StoreUnavailable):
        # The database is unreachable or overloaded: nothing was changed, retry later.
        log.warning("metadata store unavailable on %s %s: %s", request.method, request.path, exc)
        return json(
            {"error": {"code": ErrorCode.UNAVAILABLE.value,
                       "message": "metadata store unavailable; retry later", "details": {}}},
            status=503, headers={"Retry-After": "1"},
        )
    if isinstance(exc, PayloadTooLarge) and "header" in str(exc):
        # The request line and headers, not a body: a malformed request (as nginx answers).
        return json({"error": {"code": ErrorCode.BAD_REQUEST.value,
                               "message": "the request line and headers are limited to 16 KiB",
                               "details": {}}}, status=400)
    if isinstance(exc, SanicException):
        status = getattr(exc, "status_code", 500) or 500
        code = _SANIC_CODES.get(status, ErrorCode.INTERNAL if status >= 500 else ErrorCode.BAD_REQUEST)
        message = str(exc) if status < 500 else "internal error"
        headers = {}
        if isinstance(exc, MethodNotAllowed):
            # RFC 9110: a 405 says which methods the resource has (the router knows them only
            # for static paths, so ask it for each method otherwise).
            headers["Allow"] = ", ".join(sorted(exc.allowed_methods or _allowed(request)))
            code = ErrorCode.METHOD_NOT_ALLOWED
        return json({"error": {"code": code.value, "message": message, "details": {}}}, status=status,
                    headers=headers or None)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return json(
        {"error": {"code": ErrorCode.INTERNAL.value, "message": "internal error", "details": {}}},
        status=500,
    )


async def _prune_forever(app: Sanic) -> None:
    services: Services = app.ctx.services
    cfg = services.config
    while True:
        try:
            now = time.time()
            dropped = await services.store.prune(now - cfg.event_retention, now - cfg.listing_window)
            if dropped:
                log.info("pruned %d events past retention", dropped)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the job alive; the next round retries
            log.exception("pruning failed")
        await asyncio.sleep(cfg.prune_interval)


def create_app(config: ServerConfig, name: str = "gobi") -> Sanic:
    app = Sanic(name)
    # The largest body of any route (a chunk batch); the gate lowers it per route.
    app.config.REQUEST_MAX_SIZE = max(MAX_BATCH_BODY, MAX_JSON_BODY)
    app.config.REQUEST_TIMEOUT = config.header_timeout
    # Sanic's largest: a lookup of a 4096-byte path, percent-encoded, fits in the request line.
    app.config.REQUEST_MAX_HEADER_SIZE = 16384
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = config.graceful_shutdown_timeout
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.PROXIES_COUNT = config.proxies_count
    app.config.WEBSOCKET_PING_INTERVAL = 20
    app.config.WEBSOCKET_PING_TIMEOUT = 20
    app.config.WEBSOCKET_MAX_SIZE = 1024 * 1024
    # The API description is ours (openapi.py): sanic-ext's generator stays off.
    app.config.OAS = False
    app.ctx.config = config
    app.ctx.draining = False
    app.ctx.sockets = set()  # open WebSockets, closed with 1001 when draining
    app.ctx.metrics = Metrics()
    app.ctx.guard = ConnectionGuard(
        max_unauthenticated=config.max_unauthenticated_connections,
        header_timeout=config.header_timeout, body_timeout=config.body_timeout,
        body_min_rate=config.body_min_rate)
    app.ctx.version = _version()
    web.configure(app)  # the web page's templates, for sanic-ext's Jinja2 (before Extend)
    Extend(app)

    for bp in blueprints.ALL:
        app.blueprint(bp)
    app.blueprint(web.bp)
    app.blueprint(openapi.bp)
    app.error_handler.add(Exception, _error_response)
    gate.install(app)

    @app.on_request
    async def _start_clock(request: Request) -> None:
        request_log.on_request(request)

    @app.on_response
    async def _security_headers(request: Request, response: HTTPResponse) -> None:
        add_security_headers(request, response)

    @app.on_response
    async def _log(request: Request, response: HTTPResponse) -> None:
        request_log.on_response(request, response, config.log_format == "json", config.access_log)

    @app.before_server_start
    async def _open(app: Sanic) -> None:
        app.ctx.services = await Services.open(config, app.ctx.metrics)
        app.ctx.metrics_token = metrics_token(config) if config.metrics else None
        app.ctx.services.start_jobs()
        app.add_task(_prune_forever(app), name="gobi-prune")

    @app.before_server_stop
    async def _drain(app: Sanic) -> None:
        # Runs before Sanic cancels WebSocket handlers (listeners of this kind run in
        # reverse order), so clients get 1001 "going away" and know to reconnect elsewhere
        # rather than a plain 1000.
        app.ctx.draining = True
        sockets = list(app.ctx.sockets)
        await asyncio.gather(
            *(ws.close(WS_CLOSE_GOING_AWAY, "server going away") for ws in sockets),
            return_exceptions=True,
        )

    @app.after_server_stop
    async def _close(app: Sanic) -> None:
        await app.cancel_task("gobi-prune", raise_exception=False)
        await app.ctx.services.close()

    return app
