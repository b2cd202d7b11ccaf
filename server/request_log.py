"""One log line per HTTP request, the request metrics, and the Date header.

The line names the route pattern, status, duration, user and response size — never the
Authorization header, tokens or query strings (which can hold file names). ``json``
format emits one JSON object per line for log shippers; ``text`` is for people.
"""

from __future__ import annotations

import json
import logging
import time
from email.utils import formatdate

from sanic import Request
from sanic.response import BaseHTTPResponse

log = logging.getLogger("gobi.access")


def route_label(request: Request) -> str:
    route = request.route
    return "/" + route.path.lstrip("/") if route is not None else "unmatched"


def on_request(request: Request) -> None:
    request.ctx.t0 = time.perf_counter()


def on_response(request: Request, response: BaseHTTPResponse, json_format: bool, enabled: bool) -> None:
    # RFC 9110 asks origin servers with a clock for Date; `gobi doctor` uses it to
    # measure clock skew between a client and the server.
    if "date" not in response.headers:
        response.headers["Date"] = formatdate(usegmt=True)
    t0 = getattr(request.ctx, "t0", None)
    if t0 is None:
        return
    elapsed = time.perf_counter() - t0
    route = route_label(request)
    metrics = request.app.ctx.metrics
    metrics.requests.labels(request.method, route, str(response.status)).inc()
    metrics.latency.labels(request.method, route).observe(elapsed)
    if not enabled:
        return
    actor = getattr(request.ctx, "actor", None)
    fields = {
        "method": request.method,
        "route": route,
        "path": request.path,
        "status": response.status,
        "ms": round(elapsed * 1000, 2),
        "bytes": len(response.body) if getattr(response, "body", None) else 0,
        "user": actor.user.username if actor else None,
        "device": actor.device if actor else None,
        "ip": request.remote_addr or request.ip,
    }
    if json_format:
        log.info(json.dumps(fields, separators=(",", ":")))
    else:
        log.info(
            "%s %s %s %.1fms %sB user=%s ip=%s", fields["method"], fields["path"], fields["status"],
            fields["ms"], fields["bytes"], fields["user"] or "-", fields["ip"],
        )
