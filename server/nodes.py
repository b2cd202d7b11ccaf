"""Node operations: create, commit content, rename/move/setattr, delete, and reads.

Every write runs in one store transaction that checks the caller's base revision,
allocates the event seq(s), saves the new node state(s) and appends the event(s); the
fan-out is rung after the commit. Invariants kept here:

- every live node's parent is a live directory (deleting a directory tombstones its whole
  subtree; nothing can be created or moved under a tombstone);
- names are unique among the live children of a directory;
- a node's ``rev`` is the seq of its last change; a content commit is accepted when no
  other content was committed since its base (``content_rev <= base_rev <= rev``), so a
  rename or chmod made elsewhere does not turn an edit into a conflict; metadata changes
  and deletes need ``base_rev == rev``.

Rejected writes raise ``ServiceError`` whose details carry what the client needs to catch
up (``head``: the node's current state; ``missing``: chunk hashes to upload).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from gobi.protocol import (
    ROOT_ID,
    ChunkRef,
    CommitContentRequest,
    CreateNodeRequest,
    DeleteNodeRequest,
    ErrorCode,
    Event,
    EventType,
    Node,
    NodeKind,
    UpdateNodeRequest,
)

from .access import Actor, require_role
from .errors import ServiceError
from .fanout import Fanout
from .metrics import Metrics
from .store.base import MetadataStore, VaultGone, VaultTx, VersionRecord

#: Directories deeper than this are refused; it also bounds the ancestor walk of a move.
MAX_DEPTH = 4096


def new_node_id() -> str:
    return "n" + secrets.token_hex(10)


def _head(node: Node) -> dict:
    return node.model_dump(mode="json")


def _conflict(node: Node, message: str = "base_rev is not the head revision") -> ServiceError:
    return ServiceError(ErrorCode.CONFLICT, message, head=_head(node))


def _check_chunks_sum(chunks: Sequence[ChunkRef], size: int) -> None:
    total = sum(c.size for c in chunks)
    if total != size:
        raise ServiceError(
            ErrorCode.BAD_REQUEST, f"size {size} does not equal the sum of chunk sizes {total}"
        )


async def _require_chunks(tx: VaultTx, chunks: Sequence[ChunkRef]) -> None:
    missing = await tx.missing_chunks([c.hash for c in chunks])
    if missing:
        raise ServiceError(
            ErrorCode.MISSING_CHUNKS,
            f"{len(missing)} chunk(s) must be uploaded before this commit",
            missing=missing,
        )


async def _live_dir(tx: VaultTx, node_id: str) -> Node:
    parent = await tx.node(node_id)
    if parent is None or parent.deleted:
        raise ServiceError(ErrorCode.NOT_FOUND, "parent directory not found", node=node_id)
    if parent.kind is not NodeKind.DIR:
        raise ServiceError(ErrorCode.NOT_A_DIRECTORY, "parent is not a directory", node=node_id)
    return parent


async def _live_node(tx: VaultTx, node_id: str) -> Node:
    node = await tx.node(node_id)
    if node is None:
        raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
    if node.deleted:
        # Deleted since the caller last looked: a conflict with the tombstone as the head,
        # so a client can decide (e.g. keep its modification by re-creating the file).
        raise _conflict(node, "the node was deleted")
    return node


class _Writer:
    """Builds the events of one transaction."""

    def __init__(self, tx: VaultTx, actor: Actor):
        self.tx = tx
        self.actor = actor
        self.ts = time.time()
        self.last_seq = 0
        self.event_types: list[EventType] = []

    async def save(
        self, node: Node, kind: EventType, old: Node | None = None, **changes
    ) -> Node:
        seq = await self.tx.next_seq()
        self.last_seq = seq
        self.event_types.append(kind)
        if kind is EventType.CONTENT or (kind is EventType.CREATE and node.kind is NodeKind.FILE):
            changes["content_rev"] = seq
        new = node.model_copy(update={**changes, "rev": seq})
        await self.tx.save_node(new, self.ts)
        moved = old is not None and (old.parent != new.parent or old.name != new.name)
        await self.tx.add_event(
            Event(
                seq=seq,
                ts=self.ts,
                type=kind,
                node=new,
                old_parent=old.parent if moved else None,
                old_name=old.name if moved else None,
                device=self.actor.device,
                user=self.actor.user.username,
            )
        )
        return new

    async def tombstone_subtree(self, node: Node) -> None:
        """Delete a node and everything under it, leaves first (one event per node)."""
        if node.kind is NodeKind.DIR:
            while True:
                children = await self.tx.live_children(node.id, 500)
                if not children:
                    break
                for child in children:
                    await self.tombstone_subtree(child)
        await self.save(node, EventType.DELETE, deleted=True)


class Nodes:
    def __init__(self, store: MetadataStore, fanout: Fanout, metrics: Metrics | None = None):
        self.store = store
        self.fanout = fanout
        self.metrics = metrics

    async def _write(self, actor: Actor, vault_id: str, fn):
        """Run ``fn(writer)`` in a transaction, then ring the fan-out."""
        await require_role(self.store, actor, vault_id, "write")
        writers: list[_Writer] = []

        async def body(tx: VaultTx):
            w = _Writer(tx, actor)
            writers[:] = [w]
            return await fn(w)

        try:
            result = await self.store.run_write(vault_id, body)
        except VaultGone:
            raise ServiceError(ErrorCode.NOT_FOUND, "vault not found", vault=vault_id) from None
        if writers and writers[0].last_seq:
            if self.metrics is not None:
                self.metrics.commits.inc()
                for kind in writers[0].event_types:
                    self.metrics.events.labels(kind.value).inc()
            await self.fanout.publish(vault_id, writers[0].last_seq)
        return result

    # -- writes ----------------------------------------------------------------------------

    async def create(self, actor: Actor, vault_id: str, req: CreateNodeRequest) -> tuple[Node, bool]:
        """Create a node. Returns (node, created); ``created`` is False when ``req.id`` names a
        node that this very request already created (a retried request is idempotent)."""
        if req.kind is NodeKind.SYMLINK and req.target is None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "a symlink needs a target")
        if req.kind is not NodeKind.SYMLINK and req.target is not None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "only symlinks have a target")
        if req.kind is not NodeKind.FILE and req.content is not None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "only files have content")
        content = req.content
        if content is not None:
            _check_chunks_sum(content.chunks, content.size)

        async def fn(w: _Writer) -> tuple[Node, bool]:
            if req.id is not None:
                existing = await w.tx.node(req.id)
                if existing is not None:
                    if (not existing.deleted and existing.parent == req.parent
                            and existing.name == req.name and existing.kind is req.kind):
                        return existing, False
                    raise ServiceError(ErrorCode.CONFLICT, "node id is taken", head=_head(existing))
            parent = await _live_dir(w.tx, req.parent)
            await self._check_depth(w.tx, parent)
            taken = await w.tx.child(parent.id, req.name)
            if taken is not None:
                raise ServiceError(
                    ErrorCode.NAME_EXISTS, f"{req.name!r} exists", node=_head(taken)
                )
            if content is not None:
                await _require_chunks(w.tx, content.chunks)
            node = Node(
                id=req.id or new_node_id(),
                parent=parent.id,
                name=req.name,
                kind=req.kind,
                rev=0,
                size=(content.size if content else 0) if req.kind is NodeKind.FILE
                else len(req.target.encode()) if req.target else 0,
                mtime_ns=req.mtime_ns if req.mtime_ns is not None else time.time_ns(),
                mode=req.mode,
                target=req.target,
            )
            node = await w.save(node, EventType.CREATE)
            if node.kind is NodeKind.FILE:
                await self._add_version(w, node, content.chunks if content else ())
            return node, True

        return await self._write(actor, vault_id, fn)

    async def _add_version(self, w: _Writer, node: Node, chunks: Sequence[ChunkRef]) -> None:
        await w.tx.add_version(
            w.tx.vault_id,
            VersionRecord(
                node_id=node.id, rev=node.rev, size=node.size, mtime_ns=node.mtime_ns,
                chunks=tuple(chunks), ts=w.ts, device=w.actor.device, user=w.actor.user.username,
            ),
        )

    async def _check_depth(self, tx: VaultTx, parent: Node) -> None:
        depth = 0
        node = parent
        while node.parent is not None:
            depth += 1
            if depth >= MAX_DEPTH:
                raise ServiceError(ErrorCode.BAD_REQUEST, f"tree deeper than {MAX_DEPTH}")
            nxt = await tx.node(node.parent)
            if nxt is None:
                break
            node = nxt

    async def commit(
        self, actor: Actor, vault_id: str, node_id: str, req: CommitContentRequest
    ) -> Node:
        _check_chunks_sum(req.chunks, req.size)

        async def fn(w: _Writer) -> Node:
            node = await _live_node(w.tx, node_id)
            if node.kind is not NodeKind.FILE:
                raise ServiceError(ErrorCode.IS_A_DIRECTORY if node.kind is NodeKind.DIR
                                   else ErrorCode.BAD_REQUEST, "only files have content")
            if not (node.content_rev or 0) <= req.base_rev <= node.rev:
                raise _conflict(node, "the file's content changed since base_rev")
            await _require_chunks(w.tx, req.chunks)
            changes = {"size": req.size,
                       "mtime_ns": req.mtime_ns if req.mtime_ns is not None else time.time_ns()}
            if req.mode is not None:
                changes["mode"] = req.mode
            new = await w.save(node, EventType.CONTENT, **changes)
            await self._add_version(w, new, req.chunks)
            return new

        return await self._write(actor, vault_id, fn)

    async def update(
        self, actor: Actor, vault_id: str, node_id: str, req: UpdateNodeRequest
    ) -> Node:
        async def fn(w: _Writer) -> Node:
            node = await _live_node(w.tx, node_id)
            if req.base_rev != node.rev:
                raise _conflict(node)
            new_parent = req.parent if req.parent is not None else node.parent
            new_name = req.name if req.name is not None else node.name
            attrs = {}
            if req.mode is not None and req.mode != node.mode:
                attrs["mode"] = req.mode
            if req.mtime_ns is not None and req.mtime_ns != node.mtime_ns:
                attrs["mtime_ns"] = req.mtime_ns
            moving = new_parent != node.parent or new_name != node.name
            if not moving:
                return await w.save(node, EventType.ATTR, **attrs) if attrs else node
            if node.id == ROOT_ID:
                raise ServiceError(ErrorCode.INVALID_MOVE, "the root cannot be moved")
            parent = await _live_dir(w.tx, new_parent)
            if node.kind is NodeKind.DIR:
                await self._refuse_cycle(w.tx, node, parent)
            target = await w.tx.child(parent.id, new_name)
            if target is not None and target.id != node.id:
                await self._replace(w, node, target, req)
            return await w.save(
                node, EventType.MOVE, old=node, parent=parent.id, name=new_name, **attrs
            )

        return await self._write(actor, vault_id, fn)

    async def _refuse_cycle(self, tx: VaultTx, node: Node, new_parent: Node) -> None:
        cur: Node | None = new_parent
        depth = 0
        while cur is not None:
            if cur.id == node.id:
                raise ServiceError(
                    ErrorCode.INVALID_MOVE, "cannot move a directory into itself"
                )
            if cur.parent is None or depth > MAX_DEPTH:
                return
            depth += 1
            cur = await tx.node(cur.parent)

    async def _replace(self, w: _Writer, node: Node, target: Node, req: UpdateNodeRequest) -> None:
        """rename(2) over an existing name: the target becomes a tombstone first."""
        if not req.replace:
            raise ServiceError(
                ErrorCode.NAME_EXISTS, f"{target.name!r} exists", node=_head(target)
            )
        if req.replace_rev is not None and req.replace_rev != target.rev:
            raise _conflict(target, "the replaced node changed since replace_rev")
        if node.kind is NodeKind.DIR:
            if target.kind is not NodeKind.DIR:
                raise ServiceError(ErrorCode.NOT_A_DIRECTORY, "cannot replace a non-directory "
                                   "with a directory", node=_head(target))
            if await w.tx.live_children(target.id, 1):
                raise ServiceError(ErrorCode.DIRECTORY_NOT_EMPTY, "target directory is not "
                                   "empty", node=_head(target))
        elif target.kind is NodeKind.DIR:
            raise ServiceError(ErrorCode.IS_A_DIRECTORY, "cannot replace a directory with a "
                               "non-directory", node=_head(target))
        await w.save(target, EventType.DELETE, deleted=True)

    async def delete(
        self, actor: Actor, vault_id: str, node_id: str, req: DeleteNodeRequest
    ) -> Node:
        if node_id == ROOT_ID:
            raise ServiceError(ErrorCode.INVALID_MOVE, "the root cannot be deleted")

        async def fn(w: _Writer) -> Node:
            node = await _live_node(w.tx, node_id)
            if req.base_rev != node.rev:
                raise _conflict(node)
            if node.kind is NodeKind.DIR and not req.recursive:
                if await w.tx.live_children(node.id, 1):
                    raise ServiceError(ErrorCode.DIRECTORY_NOT_EMPTY, "directory is not empty")
            await w.tombstone_subtree(node)
            return await w.tx.node(node.id)  # type: ignore[return-value]

        return await self._write(actor, vault_id, fn)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, actor: Actor, vault_id: str, node_id: str) -> Node:
        await require_role(self.store, actor, vault_id, "read")
        node = await self.store.node(vault_id, node_id)
        if node is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
        return node

    async def children(
        self, actor: Actor, vault_id: str, node_id: str, after: str | None, limit: int
    ) -> tuple[list[Node], str | None]:
        node = await self.get(actor, vault_id, node_id)
        if node.deleted:
            raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
        if node.kind is not NodeKind.DIR:
            raise ServiceError(ErrorCode.NOT_A_DIRECTORY, "not a directory", node=node_id)
        page = await self.store.children(vault_id, node_id, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return page, (page[-1].name if more else None)

    async def lookup(self, actor: Actor, vault_id: str, path: str) -> Node:
        """Resolve a slash-separated path from the root (no symlink following)."""
        await require_role(self.store, actor, vault_id, "read")
        node = await self.store.node(vault_id, ROOT_ID)
        parts = [p for p in path.split("/") if p]
        for i, part in enumerate(parts):
            if part in (".", ".."):
                raise ServiceError(ErrorCode.INVALID_NAME, "'.' and '..' are not allowed in paths")
            if node is None or node.kind is not NodeKind.DIR:
                raise ServiceError(ErrorCode.NOT_FOUND, "path not found", path="/".join(parts[:i]))
            node = await self.store.child(vault_id, node.id, part)
        if node is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "path not found", path=path)
        return node

    async def version(
        self, actor: Actor, vault_id: str, node_id: str, rev: int | None
    ) -> VersionRecord:
        node = await self.get(actor, vault_id, node_id)
        if node.kind is not NodeKind.FILE:
            raise ServiceError(ErrorCode.IS_A_DIRECTORY, "only files have content")
        want = rev if rev is not None else node.content_rev
        version = await self.store.version(vault_id, node_id, want or 0)
        if version is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such version", node=node_id, rev=want)
        return version

    async def versions(self, actor: Actor, vault_id: str, node_id: str) -> list[VersionRecord]:
        await self.get(actor, vault_id, node_id)
        return await self.store.versions(vault_id, node_id)
