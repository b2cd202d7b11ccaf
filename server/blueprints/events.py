"""The event log: pages over REST, and the live stream over a WebSocket.

The WebSocket authenticates at the handshake (a request middleware of this blueprint
runs before the upgrade), so a bad token or a foreign vault is an HTTP 401/404 and never
becomes a socket. It then sends ``hello``, replays the events after ``?after=SEQ``, sends
``caught_up`` and streams live events; it also takes metadata operations from the client
(``ws_ops``). When the server drains, Sanic closes sockets with
1001 ("going away") and the client resumes elsewhere from its last seq.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timezone

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic.server.websockets.impl import WebsocketImplProtocol

from gobi.protocol import (
    API_PREFIX,
    WS_CLOSE_CURSOR_EXPIRED,
    ErrorCode,
    Event,
    EventPage,
    EventsQuery,
    SeqAt,
    SeqQuery,
    StreamQuery,
)

from ..access import require_role
from ..errors import ServiceError
from ..gate import mark_authenticated
from ..http import authed, authenticate, model_response, parse_query, services
from ..openapi import doc
from ..ws_ops import handle_op
from .vaults import VID

bp = Blueprint("events", url_prefix=API_PREFIX)
ws_bp = Blueprint("events_ws", url_prefix=API_PREFIX)


@bp.get(f"/vaults/{VID}/events")
@doc("Events after a seq (410 when past retention)", query=EventsQuery, ok={200: EventPage}, errors=(410,))
@authed
async def page(request: Request, vault_id: str) -> HTTPResponse:
    q = parse_query(request, EventsQuery)
    events, head, more = await services(request).events.page(request.ctx.actor, vault_id, q.after, q.limit)
    return model_response(EventPage(events=events, head_seq=head, has_more=more))


def time_arg(request: Request, name: str) -> float:
    """A required point in time: ISO-8601 (``2026-11-26T10:00``, ``…:00Z``, ``…+01:00``;
    no offset means UTC) or Unix seconds. 400 ``bad_request`` otherwise."""
    raw = (request.args.get(name) or "").strip()
    if not raw:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"query parameter {name!r} is required")
    if len(raw) > 64:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"query parameter {name!r} is too long")
    try:
        value = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            raise ServiceError(ErrorCode.BAD_REQUEST,
                               f"query parameter {name!r} must be an ISO-8601 time or Unix seconds") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()
    if not math.isfinite(value) or value < 0:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"query parameter {name!r} must be a time")
    return value


@bp.get(f"/vaults/{VID}/seq")
@doc("The seq of the tree as it was at a time: ?at=ISO-8601|UNIX-SECONDS (404 before the vault, 410 past history)",
     query=SeqQuery, ok={200: SeqAt}, errors=(410,))
@authed
async def seq_at(request: Request, vault_id: str) -> HTTPResponse:
    parse_query(request, SeqQuery)
    return model_response(SeqAt(**await services(request).events.seq_at(
        request.ctx.actor, vault_id, time_arg(request, "at"))))


@ws_bp.on_request
async def ws_handshake(request: Request) -> None:
    """Authenticate, authorise and check the cursor before the upgrade happens."""
    actor = await authenticate(request)
    mark_authenticated(request)
    svc = services(request)
    vault_id = request.match_info.get("vault_id", "")
    vault, _ = await require_role(svc.store, actor, vault_id, "read")
    after = parse_query(request, StreamQuery).after
    after = vault.head_seq if after is None else after
    await svc.events.check_cursor(vault, after)
    request.ctx.vault = vault
    request.ctx.after = after


def _frame(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


@ws_bp.websocket(f"/vaults/{VID}/ws")
async def stream(request: Request, ws: WebsocketImplProtocol, vault_id: str) -> None:
    svc = services(request)
    vault, after = request.ctx.vault, request.ctx.after
    await ws.send(_frame("hello", vault=vault.id, head_seq=vault.head_seq, after=after))

    async def send_events() -> None:
        try:
            async for item in svc.events.stream(vault, after):
                if isinstance(item, Event):
                    await ws.send(svc.events.frame(vault.id, item))
                else:
                    await ws.send(_frame("caught_up", seq=item))
        except ServiceError as exc:
            await ws.send(json.dumps(exc.body() | {"type": "error"}))
            if exc.code is ErrorCode.CURSOR_EXPIRED:
                await ws.close(WS_CLOSE_CURSOR_EXPIRED, "cursor expired")
                return
            raise
        await ws.close(1000, "vault deleted")

    async def receive() -> None:
        while True:
            msg = await ws.recv()
            if msg is None:
                return
            try:
                frame = json.loads(msg)
            except (ValueError, TypeError):
                frame = None
            kind = frame.get("type") if isinstance(frame, dict) else None
            if kind == "ping":
                await ws.send(_frame("pong", id=frame.get("id")))
            elif kind == "op":
                reply = await handle_op(svc, request.ctx.actor, vault.id, frame)
                await ws.send(json.dumps(reply, separators=(",", ":")))
            else:
                await ws.send(_frame("error", error={"code": "bad_request",
                                                     "message": "unknown frame", "details": {}}))

    tasks = [asyncio.ensure_future(send_events()), asyncio.ensure_future(receive())]
    request.app.ctx.sockets.add(ws)
    request.app.ctx.metrics.ws_clients.inc()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        request.app.ctx.sockets.discard(ws)
        request.app.ctx.metrics.ws_clients.dec()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
