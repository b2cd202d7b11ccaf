"""Liveness and readiness."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from ..store.base import StoreError

bp = Blueprint("health")


@bp.get("/health")
@openapi.summary("Health: 200 when serving, 503 when draining or the store is down")
async def health(request: Request) -> HTTPResponse:
    if request.app.ctx.draining:
        return json({"status": "draining"}, status=503)
    try:
        await request.app.ctx.services.store.ping()
    except StoreError:
        return json({"status": "store unavailable"}, status=503)
    return json({"status": "ok", "version": request.app.ctx.version})
