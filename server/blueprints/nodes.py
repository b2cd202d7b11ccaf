"""Nodes: create, read, list, commit content, rename/move/setattr, delete; versions and
consistent tree listings; whole-file download for scripts and browsers."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from gobi.protocol import (
    API_PREFIX,
    MAX_PAGE,
    ChunkRef,
    CommitContentRequest,
    CreateNodeRequest,
    DeleteNodeRequest,
    ErrorCode,
    Node,
    NodeList,
    OpsBatchRequest,
    TreePage,
    UpdateNodeRequest,
    WriteOutcome,
    validate_id,
)

from ..errors import ServiceError
from ..http import authed, body_doc, bool_arg, int_arg, model_response, parse_body, services, str_arg
from ..store.base import VersionRecord
from ..writes import Outcome
from ..ws_ops import handle_op
from .vaults import VID

bp = Blueprint("nodes", url_prefix=API_PREFIX)
NID = "<node_id:[A-Za-z0-9_-]{1,64}>"


def _outcome(outcome: Outcome, on_conflict: str, status: int = 200) -> HTTPResponse:
    """A plain Node, or (for requests sent with ``on_conflict="strategy"``) a WriteOutcome."""
    if on_conflict == "strategy":
        return model_response(WriteOutcome(node=outcome.node, conflict=outcome.conflict), status=status)
    return model_response(outcome.node, status=status)


def _version_json(v: VersionRecord, with_chunks: bool) -> dict:
    out = {
        "node": v.node_id, "rev": v.rev, "size": v.size, "mtime_ns": v.mtime_ns,
        "ts": v.ts, "device": v.device, "user": v.user,
    }
    if with_chunks:
        out["chunks"] = [c.model_dump() for c in v.chunks]
    return out


@bp.post(f"/vaults/{VID}/nodes")
@openapi.summary("Create a file, directory or symlink")
@openapi.response(201, {"application/json": Node})
@body_doc(CreateNodeRequest)
@authed
async def create(request: Request, vault_id: str) -> HTTPResponse:
    req = parse_body(request, CreateNodeRequest)
    outcome, created = await services(request).nodes.create_outcome(request.ctx.actor, vault_id, req)
    return _outcome(outcome, req.on_conflict, status=201 if created else 200)


@bp.post(f"/vaults/{VID}/ops")
@openapi.summary("Run many node operations (the WebSocket op frames) in order, one answer each")
@body_doc(OpsBatchRequest)
@authed
async def ops_batch(request: Request, vault_id: str) -> HTTPResponse:
    req = parse_body(request, OpsBatchRequest)
    svc = services(request)
    results: list[dict] = []
    failed = False
    for frame in req.ops:
        if failed and req.stop_on_error:
            results.append({"type": "skipped", "id": frame.get("id")})
            continue
        reply = await handle_op(svc, request.ctx.actor, vault_id, {"type": "op", **frame}, recheck=False)
        failed = failed or reply["type"] == "nack"
        results.append(reply)
    return model_response({"results": results})


@bp.get(f"/vaults/{VID}/nodes/{NID}")
@openapi.summary("A node's current state (tombstones included)")
@openapi.response(200, {"application/json": Node})
@authed
async def get(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    return model_response(await services(request).nodes.get(request.ctx.actor, vault_id, node_id))


@bp.patch(f"/vaults/{VID}/nodes/{NID}")
@openapi.summary("Rename, move and/or set mode and mtime (checked against base_rev)")
@openapi.response(200, {"application/json": Node})
@body_doc(UpdateNodeRequest)
@authed
async def update(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    req = parse_body(request, UpdateNodeRequest)
    outcome = await services(request).nodes.update_outcome(request.ctx.actor, vault_id, node_id, req)
    return _outcome(outcome, req.on_conflict)


@bp.delete(f"/vaults/{VID}/nodes/{NID}")
@openapi.summary("Delete a node into the trash: ?base_rev=N[&recursive=true][&on_conflict=strategy]"
                 "[&seen_seq=S][&at_ns=T]")
@openapi.parameter("base_rev", int, "query", required=True)
@openapi.parameter("recursive", bool, "query")
@openapi.parameter("on_conflict", str, "query")
@openapi.parameter("seen_seq", int, "query")
@openapi.parameter("at_ns", int, "query")
@authed
async def delete(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    base_rev = int_arg(request, "base_rev", None)
    if base_rev is None:
        raise ServiceError(ErrorCode.BAD_REQUEST, "query parameter 'base_rev' is required")
    on_conflict = str_arg(request, "on_conflict", 16) or "fail"
    if on_conflict not in ("fail", "strategy"):
        raise ServiceError(ErrorCode.BAD_REQUEST, "on_conflict must be 'fail' or 'strategy'")
    req = DeleteNodeRequest(
        base_rev=base_rev, recursive=bool_arg(request, "recursive"), on_conflict=on_conflict,
        seen_seq=int_arg(request, "seen_seq", None),
        at_ns=int_arg(request, "at_ns", None, -(2**63), 2**63 - 1),
    )
    outcome = await services(request).nodes.delete_outcome(request.ctx.actor, vault_id, node_id, req)
    return _outcome(outcome, on_conflict)


@bp.get(f"/vaults/{VID}/nodes/{NID}/children")
@openapi.summary("Live children of a directory, by name, paged with ?after=NAME&limit=N")
@openapi.response(200, {"application/json": NodeList})
@authed
async def children(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    limit = int_arg(request, "limit", 1000, 1, MAX_PAGE)
    nodes, nxt = await services(request).nodes.children(
        request.ctx.actor, vault_id, node_id, str_arg(request, "after", 1024), limit
    )
    return model_response(NodeList(nodes=nodes, next_cursor=nxt))


@bp.put(f"/vaults/{VID}/nodes/{NID}/content")
@openapi.summary("Commit a file's content: manifest + size (+ mtime, mode) on base_rev")
@openapi.response(200, {"application/json": Node})
@body_doc(CommitContentRequest)
@authed
async def commit(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    req = parse_body(request, CommitContentRequest)
    outcome = await services(request).nodes.commit_outcome(request.ctx.actor, vault_id, node_id, req)
    return _outcome(outcome, req.on_conflict)


@bp.get(f"/vaults/{VID}/nodes/{NID}/content")
@openapi.summary("A file's manifest: the head version, or ?rev=N")
@authed
async def manifest(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    version = await services(request).nodes.version(
        request.ctx.actor, vault_id, node_id, int_arg(request, "rev", None)
    )
    return model_response(_version_json(version, with_chunks=True))


@bp.get(f"/vaults/{VID}/nodes/{NID}/versions")
@openapi.summary("Every kept version of a file, newest first (head: the current content)")
@authed
async def versions(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    versions = await services(request).history.versions(request.ctx.actor, vault_id, node_id)
    return model_response({"versions": [v.model_dump(mode="json", exclude={"chunks"}) for v in versions]})


@bp.get(f"/vaults/{VID}/nodes/{NID}/data")
@openapi.summary("Download a file's bytes (head version, or ?rev=N)")
@authed
async def data(request: Request, vault_id: str, node_id: str) -> None:
    svc = services(request)
    version = await svc.nodes.version(
        request.ctx.actor, vault_id, node_id, int_arg(request, "rev", None)
    )
    response = await request.respond(
        content_type="application/octet-stream",
        headers={"Content-Length": str(version.size), "ETag": f'"{node_id}-{version.rev}"'},
    )
    chunk: ChunkRef
    for chunk in version.chunks:
        await response.send(await svc.chunks.read(vault_id, chunk.hash, 0, None, chunk.size))
    await response.eof()
    # Streamed: already sent. Returning the response would make Sanic log an error.


@bp.get(f"/vaults/{VID}/lookup")
@openapi.summary("Resolve a path (?path=a/b/c) to its node")
@openapi.response(200, {"application/json": Node})
@authed
async def lookup(request: Request, vault_id: str) -> HTTPResponse:
    path = str_arg(request, "path", 64 * 1024) or ""
    return model_response(await services(request).nodes.lookup(request.ctx.actor, vault_id, path))


@bp.get(f"/vaults/{VID}/tree")
@openapi.summary("The whole vault at one seq, paged: ?at=SEQ&cursor=C&limit=N")
@openapi.response(200, {"application/json": TreePage})
@authed
async def tree(request: Request, vault_id: str) -> HTTPResponse:
    cursor = str_arg(request, "cursor", 64)
    if cursor is not None:
        try:
            validate_id(cursor)
        except ValueError:
            raise ServiceError(ErrorCode.BAD_REQUEST, "malformed cursor") from None
    at, nodes, nxt = await services(request).events.tree(
        request.ctx.actor, vault_id, int_arg(request, "at", None),
        cursor, int_arg(request, "limit", 1000, 1, MAX_PAGE),
    )
    return model_response(TreePage(at=at, nodes=nodes, next_cursor=nxt))
