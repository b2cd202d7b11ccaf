"""Vaults and their members."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty
from sanic_ext import openapi

from gobi.protocol import (
    API_PREFIX,
    CreateVaultRequest,
    ErrorCode,
    Member,
    SetMemberRequest,
    Vault,
    validate_username,
)

from ..errors import ServiceError
from ..http import authed, body_doc, model_response, parse_body, services

bp = Blueprint("vaults", url_prefix=API_PREFIX)
VID = "<vault_id:[A-Za-z0-9_-]{1,64}>"


def _username(raw: str) -> str:
    try:
        return validate_username(raw)
    except ValueError as exc:
        raise ServiceError(ErrorCode.BAD_REQUEST, str(exc)) from None


@bp.post("/vaults", strict_slashes=False)
@openapi.summary("Create a vault (the caller becomes its owner)")
@openapi.response(201, {"application/json": Vault})
@body_doc(CreateVaultRequest)
@authed
async def create(request: Request) -> HTTPResponse:
    req = parse_body(request, CreateVaultRequest)
    vault = await services(request).vaults.create(request.ctx.actor, req.name)
    return model_response(vault, status=201)


@bp.get("/vaults", strict_slashes=False)
@openapi.summary("Vaults the caller is a member of")
@authed
async def list_vaults(request: Request) -> HTTPResponse:
    vaults = await services(request).vaults.list(request.ctx.actor)
    return model_response({"vaults": [v.model_dump(mode="json") for v in vaults]})


@bp.get(f"/vaults/{VID}")
@openapi.summary("One vault")
@openapi.response(200, {"application/json": Vault})
@authed
async def get(request: Request, vault_id: str) -> HTTPResponse:
    return model_response(await services(request).vaults.get(request.ctx.actor, vault_id))


@bp.delete(f"/vaults/{VID}")
@openapi.summary("Delete a vault (owner only)")
@authed
async def delete(request: Request, vault_id: str) -> HTTPResponse:
    await services(request).vaults.delete(request.ctx.actor, vault_id)
    return empty()


@bp.get(f"/vaults/{VID}/members")
@openapi.summary("Members and their roles")
@authed
async def members(request: Request, vault_id: str) -> HTTPResponse:
    members = await services(request).vaults.members(request.ctx.actor, vault_id)
    return model_response({"members": [m.model_dump(mode="json") for m in members]})


@bp.put(f"/vaults/{VID}/members/<username:str>")
@openapi.summary("Add a member or change a member's role (owner only)")
@openapi.response(200, {"application/json": Member})
@body_doc(SetMemberRequest)
@authed
async def set_member(request: Request, vault_id: str, username: str) -> HTTPResponse:
    req = parse_body(request, SetMemberRequest)
    member = await services(request).vaults.set_member(
        request.ctx.actor, vault_id, _username(username), req.role
    )
    return model_response(member)


@bp.delete(f"/vaults/{VID}/members/<username:str>")
@openapi.summary("Remove a member (owner only)")
@authed
async def remove_member(request: Request, vault_id: str, username: str) -> HTTPResponse:
    await services(request).vaults.remove_member(request.ctx.actor, vault_id, _username(username))
    return empty()
