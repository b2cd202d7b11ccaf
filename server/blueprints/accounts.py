"""Users and sessions: register, log in, log out, who am I."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty
from sanic_ext import openapi

from gobi.protocol import API_PREFIX, LoginRequest, RegisterRequest, SessionCreated, User

from ..accounts import user_view
from ..http import authed, body_doc, client_address, model_response, parse_body, services

bp = Blueprint("accounts", url_prefix=API_PREFIX)


@bp.post("/users/", strict_slashes=False)
@openapi.summary("Register a user")
@openapi.response(201, {"application/json": User})
@body_doc(RegisterRequest)
async def register(request: Request) -> HTTPResponse:
    req = parse_body(request, RegisterRequest)
    user = await services(request).accounts.sign_up(req.username, req.password, req.invite,
                                                    client_address(request))
    return model_response(user_view(user), status=201)


@bp.get("/users/me")
@openapi.summary("The authenticated user")
@openapi.response(200, {"application/json": User})
@authed
async def me(request: Request) -> HTTPResponse:
    return model_response(user_view(request.ctx.actor.user))


@bp.post("/sessions")
@openapi.summary("Log in: exchange username and password for a bearer token")
@openapi.response(201, {"application/json": SessionCreated})
@body_doc(LoginRequest)
async def login(request: Request) -> HTTPResponse:
    req = parse_body(request, LoginRequest)
    token, user = await services(request).accounts.login(req.username, req.password,
                                                         client_address(request))
    return model_response(SessionCreated(token=token, user=user_view(user)), status=201)


@bp.delete("/sessions/current")
@openapi.summary("Log out: revoke the token used for this request")
@authed
async def logout(request: Request) -> HTTPResponse:
    await services(request).accounts.logout(request.ctx.token_hash)
    return empty()
