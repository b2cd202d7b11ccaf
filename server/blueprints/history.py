"""History routes: version restore, trash, mass-delete holds, conflicts, vault settings and
garbage collection (docs/conflicts.md)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from gobi.protocol import (
    API_PREFIX,
    ConflictInfo,
    ConflictList,
    ConflictsQuery,
    GcReport,
    GcRequest,
    HoldDetail,
    HoldInfo,
    HoldList,
    HoldsQuery,
    LimitQuery,
    Node,
    ResolveConflictRequest,
    RestoreTrashRequest,
    RestoreVersionRequest,
    TrashList,
    TrashPurged,
    TrashQuery,
    TrashRestored,
    VaultSettings,
)

from ..http import authed, model_response, parse_body, parse_query, services
from ..openapi import doc
from .nodes import NID
from .vaults import VID

bp = Blueprint("history", url_prefix=API_PREFIX)
RID = "<record_id:[A-Za-z0-9_-]{1,64}>"


def _state(state: str) -> str | None:
    return None if state == "all" else state


# -- versions ---------------------------------------------------------------------------------

@bp.post(f"/vaults/{VID}/nodes/{NID}/restore")
@doc("Make an old version the file's content again (as a new version)", body=RestoreVersionRequest,
     ok={200: Node}, errors=(409,))
@authed
async def restore_version(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    req = parse_body(request, RestoreVersionRequest)
    svc = services(request)
    node = await svc.history.restore(request.ctx.actor, vault_id, node_id, req, svc.nodes.write)
    return model_response(node)


# -- trash --------------------------------------------------------------------------------------

@bp.get(f"/vaults/{VID}/trash")
@doc("Deleted files and directories, newest first", query=TrashQuery, ok={200: TrashList})
@authed
async def trash(request: Request, vault_id: str) -> HTTPResponse:
    q = parse_query(request, TrashQuery)
    entries = await services(request).trash.list(request.ctx.actor, vault_id, q.path, q.limit)
    return model_response(TrashList(entries=entries))


@bp.post(f"/vaults/{VID}/trash/{RID}/restore")
@doc("Restore a trash entry to its old place (or into parent / under name)", body=RestoreTrashRequest,
     ok={200: TrashRestored}, errors=(409,))
@authed
async def restore_trash(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    req = parse_body(request, RestoreTrashRequest)
    svc = services(request)
    restored = await svc.trash.restore(request.ctx.actor, vault_id, record_id, req, svc.nodes.write)
    return model_response(restored)


@bp.delete(f"/vaults/{VID}/trash/{RID}")
@doc("Empty one trash entry now (owner): its versions are dropped", ok={200: TrashPurged}, errors=(409,))
@authed
async def purge_trash(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    dropped = await svc.trash.purge(request.ctx.actor, vault_id, record_id, svc.nodes.write)
    return model_response(TrashPurged(versions_dropped=dropped))


# -- mass-delete holds ----------------------------------------------------------------------------

@bp.get(f"/vaults/{VID}/holds")
@doc("Mass deletes held for the owner", query=HoldsQuery, ok={200: HoldList})
@authed
async def holds(request: Request, vault_id: str) -> HTTPResponse:
    state = _state(parse_query(request, HoldsQuery).state)
    found = await services(request).holds.list(request.ctx.actor, vault_id, state)
    return model_response(HoldList(holds=found))


@bp.get(f"/vaults/{VID}/holds/{RID}")
@doc("One hold and the deletes it holds (the first ?limit=N)", query=LimitQuery, ok={200: HoldDetail})
@authed
async def hold(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    info, items = await services(request).holds.get(
        request.ctx.actor, vault_id, record_id, parse_query(request, LimitQuery).limit)
    return model_response(HoldDetail(hold=info, items=items))


@bp.post(f"/vaults/{VID}/holds/{RID}/confirm")
@doc("Apply the held deletes (owner)", ok={200: HoldInfo}, errors=(409,))
@authed
async def confirm_hold(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    return model_response(await svc.holds.confirm(request.ctx.actor, vault_id, record_id, svc.nodes.write))


@bp.post(f"/vaults/{VID}/holds/{RID}/reject")
@doc("Drop the held deletes (owner, or the user who asked for them)", ok={200: HoldInfo}, errors=(409,))
@authed
async def reject_hold(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    return model_response(await svc.holds.reject(request.ctx.actor, vault_id, record_id, svc.nodes.write))


# -- conflicts --------------------------------------------------------------------------------------

@bp.get(f"/vaults/{VID}/conflicts")
@doc("Conflicts, newest first", query=ConflictsQuery, ok={200: ConflictList})
@authed
async def conflicts(request: Request, vault_id: str) -> HTTPResponse:
    q = parse_query(request, ConflictsQuery)
    found = await services(request).conflicts.list(request.ctx.actor, vault_id, _state(q.state), q.limit)
    return model_response(ConflictList(conflicts=found))


@bp.post(f"/vaults/{VID}/conflicts/{RID}/resolve")
@doc("Decide an open conflict: keep mine, theirs or both", body=ResolveConflictRequest,
     ok={200: ConflictInfo}, errors=(409,))
@authed
async def resolve(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    req = parse_body(request, ResolveConflictRequest)
    svc = services(request)
    info = await svc.conflicts.resolve(request.ctx.actor, vault_id, record_id, req.keep, svc.nodes.write)
    return model_response(info)


# -- settings and garbage collection ---------------------------------------------------------------

@bp.get(f"/vaults/{VID}/settings")
@doc("The vault's settings (conflict strategy and per-path rules)", ok={200: VaultSettings})
@authed
async def get_settings(request: Request, vault_id: str) -> HTTPResponse:
    return model_response(await services(request).conflicts.get_settings(request.ctx.actor, vault_id))


@bp.put(f"/vaults/{VID}/settings")
@doc("Replace the vault's settings (owner)", body=VaultSettings, ok={200: VaultSettings})
@authed
async def put_settings(request: Request, vault_id: str) -> HTTPResponse:
    req = parse_body(request, VaultSettings)
    svc = services(request)
    return model_response(await svc.conflicts.set_settings(request.ctx.actor, vault_id, req, svc.nodes.write))


@bp.post(f"/vaults/{VID}/gc")
@doc("Free chunks no kept version references (owner); dry_run reports only", body=GcRequest,
     ok={200: GcReport}, errors=(409,))
@authed
async def gc(request: Request, vault_id: str) -> HTTPResponse:
    req = parse_body(request, GcRequest)
    return model_response(await services(request).gc.run(request.ctx.actor, vault_id, req.dry_run))

