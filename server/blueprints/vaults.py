"""Vaults and their members."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty

from gobi.protocol import (
    API_PREFIX,
    CreateVaultRequest,
    ErrorCode,
    Member,
    SetMemberRequest,
    StorageSpace,
    Vault,
    VaultList,
    MemberList,
    validate_username,
)

from ..errors import ServiceError
from ..http import authed, model_response, parse_body, services
from ..openapi import doc

bp = Blueprint("vaults", url_prefix=API_PREFIX)
VID = "<vault_id:[A-Za-z0-9_-]{1,64}>"
USERNAME_PATTERN = "[a-z0-9][a-z0-9_.-]{0,63}"


def _username(raw: str) -> str:
    try:
        return validate_username(raw)
    except ValueError as exc:
        raise ServiceError(ErrorCode.BAD_REQUEST, str(exc)) from None


@bp.post("/vaults", strict_slashes=False)
@doc("Create a vault (the caller becomes its owner)", body=CreateVaultRequest, ok={201: Vault})
@authed
async def create(request: Request) -> HTTPResponse:
    req = parse_body(request, CreateVaultRequest)
    vault = await services(request).vaults.create(request.ctx.actor, req.name)
    return model_response(vault, status=201)


@bp.get("/vaults", strict_slashes=False)
@doc("Vaults the caller is a member of", ok={200: VaultList})
@authed
async def list_vaults(request: Request) -> HTTPResponse:
    vaults = await services(request).vaults.list(request.ctx.actor)
    return model_response(VaultList(vaults=vaults))


@bp.get(f"/vaults/{VID}")
@doc("One vault", ok={200: Vault})
@authed
async def get(request: Request, vault_id: str) -> HTTPResponse:
    return model_response(await services(request).vaults.get(request.ctx.actor, vault_id))


@bp.delete(f"/vaults/{VID}")
@doc("Delete a vault (owner only)", ok={204: None})
@authed
async def delete(request: Request, vault_id: str) -> HTTPResponse:
    await services(request).vaults.delete(request.ctx.actor, vault_id)
    return empty()


@bp.get(f"/vaults/{VID}/space")
@doc("The server storage's size and free bytes (null: the backend cannot tell)",
     ok={200: StorageSpace})
@authed
async def space(request: Request, vault_id: str) -> HTTPResponse:
    return model_response(await services(request).vaults.space(request.ctx.actor, vault_id))


@bp.get(f"/vaults/{VID}/members")
@doc("Members and their roles", ok={200: MemberList})
@authed
async def members(request: Request, vault_id: str) -> HTTPResponse:
    members = await services(request).vaults.members(request.ctx.actor, vault_id)
    return model_response(MemberList(members=members))


@bp.put(f"/vaults/{VID}/members/<username:str>")
@doc("Add a member or change a member's role (owner only)", body=SetMemberRequest, ok={200: Member},
     path={"username": USERNAME_PATTERN})
@authed
async def set_member(request: Request, vault_id: str, username: str) -> HTTPResponse:
    req = parse_body(request, SetMemberRequest)
    member = await services(request).vaults.set_member(
        request.ctx.actor, vault_id, _username(username), req.role
    )
    return model_response(member)


@bp.delete(f"/vaults/{VID}/members/<username:str>")
@doc("Remove a member (owner only)", ok={204: None}, path={"username": USERNAME_PATTERN})
@authed
async def remove_member(request: Request, vault_id: str, username: str) -> HTTPResponse:
    await services(request).vaults.remove_member(request.ctx.actor, vault_id, _username(username))
    return empty()
