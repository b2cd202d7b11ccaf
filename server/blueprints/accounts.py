"""Users and sessions: register, log in, log out, who am I."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty

from gobi.protocol import API_PREFIX, LoginRequest, RegisterRequest, SessionCreated, User

from ..accounts import user_view
from ..http import authed, client_address, model_response, parse_body, services
from ..openapi import doc

bp = Blueprint("accounts", url_prefix=API_PREFIX)


@bp.post("/users/", strict_slashes=False)
@doc("Register a user (open registration, or with an invite)", body=RegisterRequest, ok={201: User},
     errors=(403, 409, 429))
async def register(request: Request) -> HTTPResponse:
    req = parse_body(request, RegisterRequest)
    user = await services(request).accounts.sign_up(req.username, req.password, req.invite,
                                                    client_address(request))
    return model_response(user_view(user), status=201)


@bp.get("/users/me")
@doc("The authenticated user", ok={200: User})
@authed
async def me(request: Request) -> HTTPResponse:
    return model_response(user_view(request.ctx.actor.user))


@bp.post("/sessions")
@doc("Log in: exchange username and password for a bearer token", body=LoginRequest,
     ok={201: SessionCreated}, errors=(401, 429))
async def login(request: Request) -> HTTPResponse:
    req = parse_body(request, LoginRequest)
    token, user = await services(request).accounts.login(req.username, req.password,
                                                         client_address(request))
    return model_response(SessionCreated(token=token, user=user_view(user)), status=201)


@bp.delete("/sessions/current")
@doc("Log out: revoke the token used for this request", ok={204: None})
@authed
async def logout(request: Request) -> HTTPResponse:
    await services(request).accounts.logout(request.ctx.token_hash)
    return empty()
