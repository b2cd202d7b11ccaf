"""Helpers for the HTTP boundary: authentication, body and query validation, responses.

Blueprints stay thin: they parse with these helpers, call one service method and
serialise its result. Validation failures become ``ServiceError``s, which the app's error
handler renders as JSON.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sanic import Request
from sanic.response import HTTPResponse, json as json_response

from gobi.protocol import DEVICE_HEADER, MAX_JSON_BODY, ErrorCode

from .access import Actor, require_role
from .errors import ServiceError
from .gate import set_policy

M = TypeVar("M", bound=BaseModel)
_DEVICE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def services(request: Request) -> Any:
    return request.app.ctx.services


def device_of(request: Request) -> str | None:
    device = request.headers.get(DEVICE_HEADER)
    if device is None:
        return None
    if not _DEVICE_RE.match(device):
        raise ServiceError(
            ErrorCode.BAD_REQUEST, f"{DEVICE_HEADER} must be 1-64 of A-Z a-z 0-9 _ . : -"
        )
    return device


def client_address(request: Request) -> str:
    """The client's address: the TCP peer, or X-Forwarded-For behind ``proxies_count``
    trusted proxies (Sanic's ``remote_addr`` honours it only then)."""
    return request.remote_addr or request.ip or "?"


def authed(handler: Callable[..., Awaitable[HTTPResponse]] | None = None, *, role: str = "read",
           max_body: int = MAX_JSON_BODY) -> Any:
    """Require a valid bearer token; puts ``request.ctx.actor`` in place.

    The check runs in the request gate (``gate.py``) on the headers, before any of the
    body is read. On routes under a vault, membership (and ``role``, for routes whose
    body is only worth reading from a writer) is checked before anything else is looked
    at, so a non-member gets the same 404 whatever the rest of the request says.
    ``max_body``: the largest body the route takes.
    """

    def decorate(handler: Callable[..., Awaitable[HTTPResponse]]) -> Callable[..., Awaitable[HTTPResponse]]:
        async def check(request: Request, kwargs: dict[str, Any]) -> None:
            actor = await authenticate(request)
            if "vault_id" in kwargs:
                await require_role(services(request).store, actor, kwargs["vault_id"], role)

        @functools.wraps(handler)
        async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            if not getattr(request.ctx, "gated", False):   # the gate did not run (no app)
                await check(request, kwargs)
            return await handler(request, *args, **kwargs)

        set_policy(wrapper, check, max_body)
        return wrapper

    return decorate(handler) if handler is not None else decorate


async def authenticate(request: Request) -> Actor:
    user, digest = await services(request).accounts.authenticate(
        request.headers.get("authorization")
    )
    request.ctx.actor = Actor(user, device_of(request))
    request.ctx.token_hash = digest
    return request.ctx.actor


def _error_code(exc: ValidationError) -> ErrorCode:
    for err in exc.errors():
        if err.get("loc") and err["loc"][-1] == "name" and err.get("type") == "value_error":
            return ErrorCode.INVALID_NAME
    return ErrorCode.BAD_REQUEST


def _describe(exc: ValidationError) -> list[dict[str, Any]]:
    # Our validators' messages state the rule; pydantic prefixes them with "Value error, ".
    return [
        {"loc": ".".join(str(p) for p in err.get("loc", ())),
         "msg": err.get("msg", "").removeprefix("Value error, ")}
        for err in exc.errors(include_url=False, include_input=False)
    ][:20]


def parse_body(request: Request, model: type[M]) -> M:
    body = request.body or b""
    if len(body) > MAX_JSON_BODY:
        raise ServiceError(ErrorCode.PAYLOAD_TOO_LARGE, f"JSON bodies are limited to {MAX_JSON_BODY} bytes")
    if not body.strip():
        # A missing body is a client bug, not "all defaults": PUT /settings would reset the
        # vault's rules and POST /gc would run a real collection.
        raise ServiceError(ErrorCode.BAD_REQUEST, "this request needs a JSON body")
    # The Content-Type is not checked: `curl -d '{…}'` sends form-urlencoded, and a body
    # that parses as the expected JSON is what matters.
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = _describe(exc)
        message = "; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in errors[:3])
        raise ServiceError(_error_code(exc), f"invalid request body: {message}", errors=errors) from None


Q = TypeVar("Q", bound=BaseModel)


def parse_query(request: Request, model: type[Q]) -> Q:
    """The query string validated with ``model`` (first value of each parameter; an empty
    value counts as absent). The API description lists the model's fields."""
    raw = {k: v[0] for k, v in request.args.items() if v and v[0] != ""}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = _describe(exc)
        message = "; ".join(f"query parameter {e['loc']!r}: {e['msg']}" for e in errors[:3])
        raise ServiceError(ErrorCode.BAD_REQUEST, message, errors=errors) from None


def int_arg(request: Request, name: str, default: int | None, lo: int = 0, hi: int = 2**62) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"query parameter {name!r} must be an integer") from None
    if not lo <= value <= hi:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"query parameter {name!r} must be in [{lo}, {hi}]")
    return value


def str_arg(request: Request, name: str, max_len: int = 4096) -> str | None:
    raw = request.args.get(name)
    if raw is not None and len(raw) > max_len:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"query parameter {name!r} is too long")
    return raw


def model_response(model: BaseModel | dict[str, Any], status: int = 200, **headers: str) -> HTTPResponse:
    body = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    return json_response(body, status=status, headers=headers or None)
