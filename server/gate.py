"""The request gate: authentication, authorisation and body limits before the body is read.

Sanic reads a request's whole body before route middleware runs, so checks there come
too late: a stranger's 8 MiB upload would already be in memory. The gate runs on Sanic's
``http.routing.after`` signal instead, once the headers are parsed and the route is known
but before a byte of the body is read, and does, per the route's ``Policy``:

1. refuse a declared ``Content-Length`` over the route's limit (413);
2. authenticate (bearer token, or the web page's session cookie) and, on routes under a
   vault, check membership and the route's role — a refusal here leaves the body unread
   (``GuardedProtocol.refuse_body``: a short linger, then the connection closes);
3. cap the body at the route's limit and give it a deadline (``body_timeout +
   size / body_min_rate``), which ``GuardedProtocol`` enforces while it arrives.

Routes whose body *is* the credential (sign-up, login, the web sign-in form) and routes
without a policy get the small limit, ``SMALL_BODY``. The handlers' ``authed`` decorator
finds the actor in place and does not authenticate twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

from gobi.protocol import MAX_JSON_BODY, ErrorCode

from .errors import ServiceError

SMALL_BODY = 64 * 1024

Check = Callable[[Request, dict[str, Any]], Awaitable[None]]


class Refused(Exception):
    """A gate check answered with a ready response (the web page's redirect to sign in)."""

    def __init__(self, response: BaseHTTPResponse):
        super().__init__("refused")
        self.response = response


@dataclass(frozen=True)
class Policy:
    check: Check | None = None      # authentication/authorisation on the headers
    max_body: int = SMALL_BODY


DEFAULT = Policy()
POLICY_ATTR = "gobi_policy"


def set_policy(handler: Any, check: Check | None, max_body: int = MAX_JSON_BODY) -> Any:
    setattr(handler, POLICY_ATTR, Policy(check, max_body))
    return handler


def _protocol(request: Request) -> Any:
    proto = getattr(request.stream, "protocol", None)
    return proto if hasattr(proto, "expect_body") else None


def mark_authenticated(request: Request) -> None:
    proto = _protocol(request)
    if proto is not None:
        proto.authenticated()


async def _gate(request: Request, route: Any, kwargs: dict[str, Any], handler: Any) -> None:
    policy: Policy = getattr(handler, POLICY_ATTR, None) or DEFAULT
    stream = request.stream
    has_body = bool(stream is not None and stream.request_body)
    proto = _protocol(request)
    try:
        length: int | None = None
        if has_body:
            raw = request.headers.get("content-length")
            length = int(raw) if raw and raw.isdigit() and len(raw) < 19 else None
            if length is not None and length > policy.max_body:
                raise ServiceError(ErrorCode.PAYLOAD_TOO_LARGE,
                                   f"this request's body is limited to {policy.max_body} bytes")
        if policy.check is not None:
            await policy.check(request, kwargs)
            request.ctx.gated = True
            mark_authenticated(request)
    except BaseException:
        if has_body and proto is not None:
            proto.refuse_body()
        raise
    if has_body:
        stream.request_max_size = min(stream.request_max_size, policy.max_body)
        if proto is not None:
            proto.expect_body(length if length is not None else policy.max_body)


def install(app: Sanic) -> None:
    app.signal("http.routing.after")(_gate)
