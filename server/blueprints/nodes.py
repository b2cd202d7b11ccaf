"""Nodes: create, read, list, commit content, rename/move/setattr, delete, hard links; versions and
consistent tree listings; whole-file download for scripts and browsers."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from gobi.protocol import (
    API_PREFIX,
    ChildrenQuery,
    CommitContentRequest,
    CreateNodeRequest,
    DeleteNodeRequest,
    DeleteQuery,
    LinkRequest,
    LookupQuery,
    Node,
    NodeList,
    OpsBatchRequest,
    OpsBatchResult,
    RevQuery,
    TreePage,
    TreeQuery,
    UpdateNodeRequest,
    VersionInfo,
    VersionList,
    WriteOutcome,
)

from ..http import authed, model_response, parse_body, parse_query, services
from ..openapi import BINARY, doc
from ..store.base import VersionRecord
from ..writes import Outcome
from ..ws_ops import handle_op
from .content import parse_range
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
@doc("Create a file, directory or symlink (with on_conflict=strategy: a WriteOutcome)",
     body=CreateNodeRequest, ok={201: Node | WriteOutcome, 200: Node | WriteOutcome}, errors=(409,))
@authed
async def create(request: Request, vault_id: str) -> HTTPResponse:
    req = parse_body(request, CreateNodeRequest)
    outcome, created = await services(request).nodes.create_outcome(request.ctx.actor, vault_id, req)
    return _outcome(outcome, req.on_conflict, status=201 if created else 200)


@bp.post(f"/vaults/{VID}/ops")
@doc("Run many node operations (the WebSocket op frames) in order, one answer each",
     body=OpsBatchRequest, ok={200: OpsBatchResult})
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
    return model_response(OpsBatchResult(results=results))


@bp.get(f"/vaults/{VID}/nodes/{NID}")
@doc("A node's current state (tombstones included)", ok={200: Node})
@authed
async def get(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    return model_response(await services(request).nodes.get(request.ctx.actor, vault_id, node_id))


@bp.patch(f"/vaults/{VID}/nodes/{NID}")
@doc("Rename, move and/or set mode and mtime (checked against base_rev)", body=UpdateNodeRequest,
     ok={200: Node | WriteOutcome}, errors=(409,))
@authed
async def update(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    req = parse_body(request, UpdateNodeRequest)
    outcome = await services(request).nodes.update_outcome(request.ctx.actor, vault_id, node_id, req)
    return _outcome(outcome, req.on_conflict)


@bp.delete(f"/vaults/{VID}/nodes/{NID}")
@doc("Delete a node into the trash (checked against base_rev)", query=DeleteQuery,
     ok={200: Node | WriteOutcome}, errors=(409,))
@authed
async def delete(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    q = parse_query(request, DeleteQuery)
    req = DeleteNodeRequest(base_rev=q.base_rev, recursive=q.recursive, on_conflict=q.on_conflict,
                            seen_seq=q.seen_seq, at_ns=q.at_ns)
    outcome = await services(request).nodes.delete_outcome(request.ctx.actor, vault_id, node_id, req)
    return _outcome(outcome, q.on_conflict)


@bp.post(f"/vaults/{VID}/nodes/{NID}/links")
@doc("link(2): one more name for a file (any node but a directory); the new name's node",
     body=LinkRequest, ok={201: Node, 200: Node}, errors=(409,))
@authed
async def link(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    req = parse_body(request, LinkRequest)
    node, created = await services(request).nodes.link(request.ctx.actor, vault_id, node_id, req)
    return model_response(node, status=201 if created else 200)


@bp.get(f"/vaults/{VID}/nodes/{NID}/children")
@doc("Live children of a directory, by name, paged", query=ChildrenQuery, ok={200: NodeList},
     errors=(409,))
@authed
async def children(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    q = parse_query(request, ChildrenQuery)
    nodes, nxt = await services(request).nodes.children(request.ctx.actor, vault_id, node_id, q.after, q.limit)
    return model_response(NodeList(nodes=nodes, next_cursor=nxt))


@bp.put(f"/vaults/{VID}/nodes/{NID}/content")
@doc("Commit a file's content: manifest + size (+ mtime, mode) on base_rev", body=CommitContentRequest,
     ok={200: Node | WriteOutcome}, errors=(409,))
@authed
async def commit(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    req = parse_body(request, CommitContentRequest)
    outcome = await services(request).nodes.commit_outcome(request.ctx.actor, vault_id, node_id, req)
    return _outcome(outcome, req.on_conflict)


@bp.get(f"/vaults/{VID}/nodes/{NID}/content")
@doc("A file's manifest: the head version, or ?rev=N", query=RevQuery, ok={200: VersionInfo},
     errors=(409,))
@authed
async def manifest(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    version = await services(request).nodes.version(
        request.ctx.actor, vault_id, node_id, parse_query(request, RevQuery).rev
    )
    return model_response(_version_json(version, with_chunks=True))


@bp.get(f"/vaults/{VID}/nodes/{NID}/versions")
@doc("Every kept version of a file, newest first (head: the current content)", ok={200: VersionList},
     errors=(409,))
@authed
async def versions(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    versions = await services(request).history.versions(request.ctx.actor, vault_id, node_id)
    return model_response({"versions": [v.model_dump(mode="json", exclude={"chunks"}) for v in versions]})


@bp.get(f"/vaults/{VID}/nodes/{NID}/data")
@doc("Download a file's bytes (head version, or ?rev=N; supports one Range)", query=RevQuery,
     ok={200: BINARY, 206: BINARY}, errors=(409, 416),
     headers={"Range": "one range: bytes=FIRST-[LAST] or bytes=-SUFFIX"})
@authed
async def data(request: Request, vault_id: str, node_id: str) -> None:
    svc = services(request)
    version = await svc.nodes.version(request.ctx.actor, vault_id, node_id, parse_query(request, RevQuery).rev)
    headers = {"ETag": f'"{node_id}-{version.rev}"', "Accept-Ranges": "bytes"}
    # An empty file has no range to satisfy: a Range on it is answered with the (empty) whole.
    rng = parse_range(request.headers.get("range"), version.size) if version.size else None
    if rng is None:
        offset, length, status = 0, version.size, 200
    else:
        (offset, length), status = rng, 206
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{version.size}"
    # Checked before the first byte goes: a broken chunk then fails the request with a
    # JSON error instead of cutting a 200 short (later failures can only cut it short).
    pieces = svc.chunks.stream(vault_id, version.chunks, offset, length)
    first = await anext(pieces, b"")
    response = await request.respond(
        status=status, content_type="application/octet-stream",
        headers={**headers, "Content-Length": str(length)},
    )
    if first:
        await response.send(first)
    async for piece in pieces:
        await response.send(piece)
    await response.eof()
    # Streamed: already sent. Returning the response would make Sanic log an error.


@bp.get(f"/vaults/{VID}/lookup")
@doc("Resolve a path (?path=a/b/c) to its node", query=LookupQuery, ok={200: Node}, errors=(409,))
@authed
async def lookup(request: Request, vault_id: str) -> HTTPResponse:
    path = parse_query(request, LookupQuery).path
    return model_response(await services(request).nodes.lookup(request.ctx.actor, vault_id, path))


@bp.get(f"/vaults/{VID}/tree")
@doc("The whole vault at one seq, paged", query=TreeQuery, ok={200: TreePage}, errors=(410,))
@authed
async def tree(request: Request, vault_id: str) -> HTTPResponse:
    q = parse_query(request, TreeQuery)
    at, nodes, nxt = await services(request).events.tree(request.ctx.actor, vault_id, q.at, q.cursor, q.limit)
    return model_response(TreePage(at=at, nodes=nodes, next_cursor=nxt))
