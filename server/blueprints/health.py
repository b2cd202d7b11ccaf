"""Liveness and readiness; Prometheus metrics."""

from __future__ import annotations

import hmac

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, raw
from gobi.protocol import Health

from ..openapi import doc

from ..store.base import StoreError

bp = Blueprint("health")


@bp.get("/health")
@doc("Health: 200 when serving, 503 when draining or the store is down", ok={200: Health, 503: Health})
async def health(request: Request) -> HTTPResponse:
    if request.app.ctx.draining:
        return json({"status": "draining"}, status=503)
    try:
        await request.app.ctx.services.store.ping()
    except StoreError:
        return json({"status": "store unavailable"}, status=503)
    return json({"status": "ok", "version": request.app.ctx.version})


@bp.get("/metrics")
@doc("Prometheus metrics of this instance (bearer: the metrics token)", ok={200: "text"}, errors=(401, 404))
async def metrics(request: Request) -> HTTPResponse:
    from ..metrics import CONTENT_TYPE_LATEST

    cfg = request.app.ctx.config
    if not cfg.metrics:
        return json({"error": {"code": "not_found", "message": "metrics are disabled", "details": {}}},
                    status=404)
    token = request.app.ctx.metrics_token
    if token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return json({"error": {"code": "unauthenticated", "message": "metrics need the metrics token",
                                   "details": {}}}, status=401)
    return raw(request.app.ctx.metrics.render(), content_type=CONTENT_TYPE_LATEST)
