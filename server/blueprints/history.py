"""History routes: version restore, trash, mass-delete holds, conflicts, vault settings and
garbage collection (docs/conflicts.md)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from gobi.protocol import (
    API_PREFIX,
    MAX_PAGE,
    ConflictInfo,
    ErrorCode,
    GcReport,
    GcRequest,
    HoldInfo,
    Node,
    ResolveConflictRequest,
    RestoreTrashRequest,
    RestoreVersionRequest,
    TrashRestored,
    VaultSettings,
)

from ..errors import ServiceError
from ..http import authed, body_doc, int_arg, model_response, parse_body, services, str_arg
from .nodes import NID
from .vaults import VID

bp = Blueprint("history", url_prefix=API_PREFIX)
RID = "<record_id:[A-Za-z0-9_-]{1,64}>"


def _state(request: Request, allowed: tuple[str, ...], default: str | None) -> str | None:
    state = str_arg(request, "state", 32) or default
    if state == "all":
        return None
    if state is not None and state not in allowed:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"state must be one of {', '.join(allowed + ('all',))}")
    return state


# -- versions ---------------------------------------------------------------------------------

@bp.post(f"/vaults/{VID}/nodes/{NID}/restore")
@openapi.summary("Make an old version the file's content again (as a new version)")
@openapi.response(200, {"application/json": Node})
@body_doc(RestoreVersionRequest)
@authed
async def restore_version(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    req = parse_body(request, RestoreVersionRequest)
    svc = services(request)
    node = await svc.history.restore(request.ctx.actor, vault_id, node_id, req, svc.nodes.write)
    return model_response(node)


# -- trash --------------------------------------------------------------------------------------

@bp.get(f"/vaults/{VID}/trash")
@openapi.summary("Deleted files and directories, newest first (?path=a/b to find one, ?limit=N)")
@authed
async def trash(request: Request, vault_id: str) -> HTTPResponse:
    entries = await services(request).trash.list(
        request.ctx.actor, vault_id, str_arg(request, "path", 64 * 1024),
        int_arg(request, "limit", 1000, 1, MAX_PAGE))
    return model_response({"entries": [e.model_dump(mode="json") for e in entries]})


@bp.post(f"/vaults/{VID}/trash/{RID}/restore")
@openapi.summary("Restore a trash entry to its old place (or into parent / under name)")
@openapi.response(200, {"application/json": TrashRestored})
@body_doc(RestoreTrashRequest)
@authed
async def restore_trash(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    req = parse_body(request, RestoreTrashRequest)
    svc = services(request)
    restored = await svc.trash.restore(request.ctx.actor, vault_id, record_id, req, svc.nodes.write)
    return model_response(restored)


@bp.delete(f"/vaults/{VID}/trash/{RID}")
@openapi.summary("Empty one trash entry now (owner): its versions are dropped")
@authed
async def purge_trash(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    dropped = await svc.trash.purge(request.ctx.actor, vault_id, record_id, svc.nodes.write)
    return model_response({"versions_dropped": dropped})


# -- mass-delete holds ----------------------------------------------------------------------------

@bp.get(f"/vaults/{VID}/holds")
@openapi.summary("Mass deletes held for the owner (?state=pending|confirmed|rejected|expired|all)")
@authed
async def holds(request: Request, vault_id: str) -> HTTPResponse:
    state = _state(request, ("pending", "confirmed", "rejected", "expired"), "pending")
    found = await services(request).holds.list(request.ctx.actor, vault_id, state)
    return model_response({"holds": [h.model_dump(mode="json") for h in found]})


@bp.get(f"/vaults/{VID}/holds/{RID}")
@openapi.summary("One hold and the deletes it holds (first ?limit=N)")
@authed
async def hold(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    info, items = await services(request).holds.get(
        request.ctx.actor, vault_id, record_id, int_arg(request, "limit", 1000, 1, MAX_PAGE))
    return model_response({"hold": info.model_dump(mode="json"), "items": items})


@bp.post(f"/vaults/{VID}/holds/{RID}/confirm")
@openapi.summary("Apply the held deletes (owner)")
@openapi.response(200, {"application/json": HoldInfo})
@authed
async def confirm_hold(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    return model_response(await svc.holds.confirm(request.ctx.actor, vault_id, record_id, svc.nodes.write))


@bp.post(f"/vaults/{VID}/holds/{RID}/reject")
@openapi.summary("Drop the held deletes (owner, or the user who asked for them)")
@openapi.response(200, {"application/json": HoldInfo})
@authed
async def reject_hold(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    return model_response(await svc.holds.reject(request.ctx.actor, vault_id, record_id, svc.nodes.write))


# -- conflicts --------------------------------------------------------------------------------------

@bp.get(f"/vaults/{VID}/conflicts")
@openapi.summary("Conflicts (?state=open (default)|resolved|all), newest first")
@authed
async def conflicts(request: Request, vault_id: str) -> HTTPResponse:
    state = _state(request, ("open", "resolved"), "open")
    found = await services(request).conflicts.list(
        request.ctx.actor, vault_id, state, int_arg(request, "limit", 1000, 1, MAX_PAGE))
    return model_response({"conflicts": [c.model_dump(mode="json") for c in found]})


@bp.post(f"/vaults/{VID}/conflicts/{RID}/resolve")
@openapi.summary("Decide an open conflict: keep mine, theirs or both")
@openapi.response(200, {"application/json": ConflictInfo})
@body_doc(ResolveConflictRequest)
@authed
async def resolve(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    req = parse_body(request, ResolveConflictRequest)
    svc = services(request)
    info = await svc.conflicts.resolve(request.ctx.actor, vault_id, record_id, req.keep, svc.nodes.write)
    return model_response(info)


# -- settings and garbage collection ---------------------------------------------------------------

@bp.get(f"/vaults/{VID}/settings")
@openapi.summary("The vault's settings (conflict strategy and per-path rules)")
@openapi.response(200, {"application/json": VaultSettings})
@authed
async def get_settings(request: Request, vault_id: str) -> HTTPResponse:
    return model_response(await services(request).conflicts.get_settings(request.ctx.actor, vault_id))


@bp.put(f"/vaults/{VID}/settings")
@openapi.summary("Replace the vault's settings (owner)")
@openapi.response(200, {"application/json": VaultSettings})
@body_doc(VaultSettings)
@authed
async def put_settings(request: Request, vault_id: str) -> HTTPResponse:
    req = parse_body(request, VaultSettings)
    svc = services(request)
    return model_response(await svc.conflicts.set_settings(request.ctx.actor, vault_id, req, svc.nodes.write))


@bp.post(f"/vaults/{VID}/gc")
@openapi.summary("Free chunks no kept version references (owner); dry_run reports only")
@openapi.response(200, {"application/json": GcReport})
@body_doc(GcRequest)
@authed
async def gc(request: Request, vault_id: str) -> HTTPResponse:
    req = parse_body(request, GcRequest)
    return model_response(await services(request).gc.run(request.ctx.actor, vault_id, req.dry_run))

