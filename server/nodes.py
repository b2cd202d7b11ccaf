"""Node operations: create, commit content, rename/move/setattr, delete, and reads.

Every write runs in one store transaction that checks the caller's base revision,
allocates the event seq(s), saves the new node state(s) and appends the event(s); the
fan-out is rung after the commit. Invariants kept here (with ``writes.Writer``):

- every live node's parent is a live directory (deleting a directory tombstones its whole
  subtree into one trash entry; nothing can be created or moved under a tombstone);
- names are unique among the live children of a directory;
- the names of a hard-linked file (``Node.inode``) agree on its content, mode and mtime
  (``writes.Writer.save_content``, ``save_file_attrs``);
- a node's ``rev`` is the seq of its last change; a content commit is accepted when no
  other content was committed since its base (``content_rev <= base_rev <= rev``), so a
  rename or chmod made elsewhere does not turn an edit into a conflict; metadata changes
  and deletes need ``base_rev == rev``.

A write that meets a change it did not know about is refused with ``conflict`` (details
``head``: the node's current state) unless it was sent with ``on_conflict="strategy"``:
then the vault's conflict strategy for the path decides (``conflicts.py``) and the answer
is an ``Outcome`` saying what happened. Deletes also pass the mass-delete guard
(``holds.py``), which may hold them for the owner instead (``delete_held``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gobi.protocol import (
    DEVICE_KINDS,
    ROOT_ID,
    CommitContentRequest,
    ConflictInfo,
    CreateNodeRequest,
    DeleteNodeRequest,
    ErrorCode,
    LinkRequest,
    EventType,
    Node,
    NodeKind,
    UpdateNodeRequest,
)

from .access import Actor, require_role
from .conflicts import Conflicts
from .errors import ServiceError
from .fanout import Fanout
from .holds import Held, HoldNeeded, Holds
from .metrics import Metrics
from .store.base import MetadataStore, VaultGone, VaultTx, VersionRecord
from .writes import (
    MAX_DEPTH,
    Outcome,
    Writer,
    apply_commit,
    check_chunks_sum,
    conflict_error,
    head,
    live_dir,
    new_id,
    require_chunks,
)

T = TypeVar("T")


def new_node_id() -> str:
    return new_id("n")


def no_content(node: Node) -> ServiceError:
    """The refusal of content (a commit, a version, the bytes) for a node that is no file:
    a directory is ``is_a_directory``; a symlink or special file ``not_a_file``."""
    if node.kind is NodeKind.DIR:
        return ServiceError(ErrorCode.IS_A_DIRECTORY, "only files have content", node=node.id)
    what = "a symlink" if node.kind is NodeKind.SYMLINK else f"a special file ({node.kind.value})"
    return ServiceError(ErrorCode.NOT_A_FILE, f"{what} has no content: only files have content",
                        node=node.id, kind=node.kind.value)


class Nodes:
    def __init__(self, store: MetadataStore, fanout: Fanout, metrics: Metrics | None = None,
                 holds: Holds | None = None, conflicts: Conflicts | None = None):
        self.store = store
        self.fanout = fanout
        self.metrics = metrics
        self.holds = holds or Holds(store)
        self.conflicts = conflicts or Conflicts(store)

    async def write(self, actor: Actor, vault_id: str, fn: Callable[[Writer], Awaitable[T]],
                    role: str | None = "write") -> T:
        """Run ``fn(writer)`` in a transaction, then ring the fan-out. ``role``: what the
        actor must be in the vault (None: a server job, no check)."""
        if role is not None:
            await require_role(self.store, actor, vault_id, role)
        writers: list[Writer] = []

        async def body(tx: VaultTx) -> T:
            w = Writer(tx, actor)
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

    # -- create ----------------------------------------------------------------------------

    async def create(self, actor: Actor, vault_id: str, req: CreateNodeRequest) -> tuple[Node, bool]:
        """Create a node. Returns (node, created); ``created`` is False when ``req.id`` names a
        node that this very request already created (a retried request is idempotent)."""
        outcome, created = await self.create_outcome(actor, vault_id, req)
        return outcome.node, created

    async def create_outcome(self, actor: Actor, vault_id: str, req: CreateNodeRequest) -> tuple[Outcome, bool]:
        if req.kind is NodeKind.SYMLINK and req.target is None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "a symlink needs a target")
        if req.kind is not NodeKind.SYMLINK and req.target is not None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "only symlinks have a target")
        if req.kind is not NodeKind.FILE and req.content is not None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "only files have content")
        if req.rdev and req.kind not in DEVICE_KINDS:
            raise ServiceError(ErrorCode.BAD_REQUEST, "only device nodes (chardev, blockdev) have an rdev")
        content = req.content
        if content is not None:
            check_chunks_sum(content.chunks, content.size)
        strategy = req.on_conflict == "strategy"
        node_id = req.id or new_node_id()

        async def fn(w: Writer) -> tuple[Outcome, bool]:
            if req.id is not None:
                existing = await w.tx.node(req.id)
                if existing is not None:
                    if (not existing.deleted and existing.parent == req.parent
                            and existing.kind is req.kind and (existing.name == req.name or strategy)):
                        # A retry (with a strategy, the first attempt may have renamed it).
                        return Outcome(existing), False
                    raise ServiceError(ErrorCode.CONFLICT, "node id is taken", head=head(existing))
            info: ConflictInfo | None = None
            parent = await w.tx.node(req.parent)
            if parent is not None and parent.deleted and strategy:
                # Created in a directory deleted meanwhile: new files survive, so the
                # directory (and its deleted ancestors) come back.
                parent, _ = await w.revive_chain(parent.id)
                info = await self.conflicts.parent_deleted(w, node_id, parent, req.name)
            parent = await live_dir(w.tx, req.parent)
            await self._check_depth(w.tx, parent)
            name = req.name
            taken = await w.tx.child(parent.id, name)
            if taken is not None and await self.holds.take_name(w, actor, taken):
                taken = None        # a name this device deleted (held): a new node, no clash
            if taken is not None:
                if not strategy:
                    raise ServiceError(ErrorCode.NAME_EXISTS, f"{req.name!r} exists", node=head(taken))
                name, merged, info = await self.conflicts.name_clash(
                    w, parent, taken, node_id, req.kind, req.mtime_ns)
                if merged is not None:
                    return Outcome(merged, await self.conflicts.record(w, info, merged)), False
            if content is not None:
                await require_chunks(w.tx, content.chunks)
            node = Node(
                id=node_id,
                parent=parent.id,
                name=name,
                kind=req.kind,
                rev=0,
                size=(content.size if content else 0) if req.kind is NodeKind.FILE
                else len(req.target.encode()) if req.target else 0,
                mtime_ns=req.mtime_ns if req.mtime_ns is not None else time.time_ns(),
                mode=req.mode,
                target=req.target,
                rdev=req.rdev,
            )
            node = await w.save(node, EventType.CREATE)
            if node.kind is NodeKind.FILE:
                await w.add_version(node, content.chunks if content else ())
            if info is not None:
                info = await self.conflicts.record(w, info, node)
            return Outcome(node, info), True

        return await self.write(actor, vault_id, fn)

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

    # -- link ------------------------------------------------------------------------------

    async def link(self, actor: Actor, vault_id: str, node_id: str, req: LinkRequest) -> tuple[Node, bool]:
        """Give ``node_id``'s file one more name (``link(2)``). Returns (the new name,
        created); ``created`` is False for a retry of a link that was made (``req.id``)."""

        async def fn(w: Writer) -> tuple[Node, bool]:
            node = await w.tx.node(node_id)
            if node is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
            if req.id is not None:
                existing = await w.tx.node(req.id)
                if existing is not None:
                    if (not existing.deleted and existing.parent == req.parent and existing.name == req.name
                            and existing.inode is not None and existing.inode == node.inode):
                        return existing, False          # a retry
                    raise ServiceError(ErrorCode.CONFLICT, "node id is taken", head=head(existing))
            if node.deleted:
                raise conflict_error(node, "the node was deleted")
            if node.kind is NodeKind.DIR:
                # link(2) answers EPERM for a directory: a second name would make the tree
                # a graph (loops, two parents for '..').
                raise ServiceError(ErrorCode.IS_A_DIRECTORY, "a directory cannot have a second name",
                                   node=node_id)
            parent = await live_dir(w.tx, req.parent)
            await self._check_depth(w.tx, parent)
            taken = await w.tx.child(parent.id, req.name)
            if taken is not None and await self.holds.take_name(w, actor, taken):
                taken = None
            if taken is not None:
                raise ServiceError(ErrorCode.NAME_EXISTS, f"{req.name!r} exists", node=head(taken))
            if node.inode is None:
                # Its first second name: the file is known by the id of the node linked.
                node = await w.save(node, EventType.ATTR, inode=node.id)
            new = Node(id=req.id or new_node_id(), parent=parent.id, name=req.name, kind=node.kind,
                       rev=0, size=node.size, mtime_ns=node.mtime_ns, mode=node.mode,
                       target=node.target, rdev=node.rdev, inode=node.inode)
            new = await w.save(new, EventType.CREATE)
            if new.kind is NodeKind.FILE:
                version = await w.tx.version(node.id, node.content_rev or 0)
                await w.add_version(new, version.chunks if version else ())
            return new, True

        return await self.write(actor, vault_id, fn)

    # -- commit ----------------------------------------------------------------------------

    async def commit(self, actor: Actor, vault_id: str, node_id: str, req: CommitContentRequest) -> Node:
        return (await self.commit_outcome(actor, vault_id, node_id, req)).node

    async def commit_outcome(
        self, actor: Actor, vault_id: str, node_id: str, req: CommitContentRequest
    ) -> Outcome:
        check_chunks_sum(req.chunks, req.size)
        strategy = req.on_conflict == "strategy"

        async def fn(w: Writer) -> Outcome:
            node = await w.tx.node(node_id)
            if node is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
            if node.kind is not NodeKind.FILE:
                raise no_content(node)
            if node.deleted:
                if not strategy:
                    # Deleted since the caller last looked: the tombstone is the head, so a
                    # client can decide (e.g. keep its modification by re-creating the file).
                    raise conflict_error(node, "the node was deleted")
                return await self.conflicts.modify_deleted(w, node, req)
            if req.base_rev > node.rev:
                raise conflict_error(node, "base_rev is ahead of the node's revision")
            if req.base_rev < (node.content_rev or 0):
                if not strategy:
                    raise conflict_error(node, "the file's content changed since base_rev")
                return await self.conflicts.modify_modify(w, node, req)
            await require_chunks(w.tx, req.chunks)
            return Outcome(await apply_commit(w, node, req))

        return await self.write(actor, vault_id, fn)

    # -- update (rename, move, setattr) -------------------------------------------------------

    async def update(self, actor: Actor, vault_id: str, node_id: str, req: UpdateNodeRequest) -> Node:
        return (await self.update_outcome(actor, vault_id, node_id, req)).node

    async def update_outcome(
        self, actor: Actor, vault_id: str, node_id: str, req: UpdateNodeRequest
    ) -> Outcome:
        strategy = req.on_conflict == "strategy"

        async def fn(w: Writer) -> Outcome:
            node = await w.tx.node(node_id)
            if node is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
            if node.deleted:
                if not strategy:
                    raise conflict_error(node, "the node was deleted")
                return await self.conflicts.changed_deleted(w, node, req)
            if req.base_rev > node.rev:
                raise conflict_error(node, "base_rev is ahead of the node's revision")
            info: ConflictInfo | None = None
            want_parent = req.parent if req.parent is not None else node.parent
            want_name = req.name if req.name is not None else node.name
            mode, mtime = req.mode, req.mtime_ns
            if req.base_rev != node.rev:
                if not strategy:
                    raise conflict_error(node)
                (want_parent, want_name, mode, mtime), info = await self.conflicts.stale_update(
                    w, node, req)
            attrs = {}
            if mode is not None and mode != node.mode:
                attrs["mode"] = mode
            if mtime is not None and mtime != node.mtime_ns:
                attrs["mtime_ns"] = mtime
            moving = want_parent != node.parent or want_name != node.name
            if moving and node.inode is not None and not (strategy and not req.replace):
                same = await w.tx.child(want_parent, want_name) if want_parent else None
                # rename(2) of one name of a file over another name of the same file does
                # nothing and succeeds.
                moving = not (same is not None and same.inode == node.inode)
            await w.save_file_attrs(node, **attrs)
            if not moving:
                new = await w.save(node, EventType.ATTR, **attrs) if attrs else node
                return Outcome(new, info and await self.conflicts.record(w, info, new))
            if node.id == ROOT_ID:
                raise ServiceError(ErrorCode.INVALID_MOVE, "the root cannot be moved")
            target_dir = await w.tx.node(want_parent) if want_parent else None
            if target_dir is not None and target_dir.deleted and strategy:
                target_dir, _ = await w.revive_chain(target_dir.id)
                info = info or await self.conflicts.parent_deleted(w, node.id, target_dir, want_name)
            parent = await live_dir(w.tx, want_parent)  # type: ignore[arg-type]
            if node.kind is NodeKind.DIR:
                await self._refuse_cycle(w.tx, node, parent)
            target = await w.tx.child(parent.id, want_name)
            if target is not None and target.id != node.id and await self.holds.take_name(w, actor, target):
                target = None
            if target is not None and target.id != node.id:
                if strategy and not req.replace:
                    want_name, info = await self.conflicts.move_clash(w, node, parent, want_name)
                else:
                    await self._replace(w, node, target, req)
            new = await w.save(node, EventType.MOVE, old=node, parent=parent.id, name=want_name, **attrs)
            return Outcome(new, info and await self.conflicts.record(w, info, new))

        return await self.write(actor, vault_id, fn)

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

    async def _replace(self, w: Writer, node: Node, target: Node, req: UpdateNodeRequest) -> None:
        """rename(2) over an existing name: the target goes to the trash first."""
        if not req.replace:
            raise ServiceError(
                ErrorCode.NAME_EXISTS, f"{target.name!r} exists", node=head(target)
            )
        if req.replace_rev is not None and req.replace_rev != target.rev:
            raise conflict_error(target, "the replaced node changed since replace_rev")
        if node.kind is NodeKind.DIR:
            if target.kind is not NodeKind.DIR:
                raise ServiceError(ErrorCode.NOT_A_DIRECTORY, "cannot replace a non-directory "
                                   "with a directory", node=head(target))
            if await w.tx.live_children(target.id, 1):
                raise ServiceError(ErrorCode.DIRECTORY_NOT_EMPTY, "target directory is not "
                                   "empty", node=head(target))
        elif target.kind is NodeKind.DIR:
            raise ServiceError(ErrorCode.IS_A_DIRECTORY, "cannot replace a directory with a "
                               "non-directory", node=head(target))
        await w.trash(target, reason="replace")

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, actor: Actor, vault_id: str, node_id: str, req: DeleteNodeRequest) -> Node:
        return (await self.delete_outcome(actor, vault_id, node_id, req)).node

    async def delete_outcome(
        self, actor: Actor, vault_id: str, node_id: str, req: DeleteNodeRequest
    ) -> Outcome:
        if node_id == ROOT_ID:
            raise ServiceError(ErrorCode.INVALID_MOVE, "the root cannot be deleted")
        strategy = req.on_conflict == "strategy"

        async def fn(w: Writer) -> Outcome | Held:
            node = await w.tx.node(node_id)
            if node is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
            if node.deleted:
                if not strategy:
                    raise conflict_error(node, "the node was deleted")
                return Outcome(node, self.conflicts.already_deleted(node))
            if req.base_rev > node.rev:
                raise conflict_error(node, "base_rev is ahead of the node's revision")
            info: ConflictInfo | None = None
            if req.base_rev != node.rev:
                if not strategy:
                    raise conflict_error(node)
                if node.kind is NodeKind.FILE and (node.content_rev or 0) > req.base_rev:
                    applied, info = await self.conflicts.delete_modified(w, node, req)
                    if not applied:
                        return Outcome(node, await self.conflicts.record(w, info, node))
                # Otherwise only names or attributes changed: the delete stands.
            survives = None
            if node.kind is NodeKind.DIR:
                unknown_children = not req.recursive and bool(await w.tx.live_children(node.id, 1))
                if unknown_children and not strategy:
                    raise ServiceError(ErrorCode.DIRECTORY_NOT_EMPTY, "directory is not empty")
                if unknown_children or (req.recursive and (strategy or req.seen_seq is not None)):
                    seen = -1 if unknown_children else (
                        req.seen_seq if req.seen_seq is not None else req.base_rev)
                    survives = await self.conflicts.survivors(w, node, seen, req.at_ns)
            files, counted = await self.holds.tally(w, actor, node, req.recursive)
            pending = await self.holds.pending(w.tx, actor)
            if pending is not None and await self.holds.joins(w.tx, node, counted):
                return await self.holds.add(w, pending, node, req, files)
            entry, result = await w.trash(node, survives=survives, counted=counted)
            if counted and result.files:
                await self.holds.guard(w, actor, min(counted, result.files))
            now = await w.tx.node(node.id)
            assert now is not None
            if result.survivors:
                info = await self.conflicts.dir_changed(w, now, result.survivors, len(result.nodes))
            return Outcome(now, info and await self.conflicts.record(w, info, now))

        try:
            result = await self.write(actor, vault_id, fn)
        except HoldNeeded:
            result = await self.write(
                actor, vault_id, lambda w: self.holds.hold(w, actor, node_id, req))
        if isinstance(result, Held):
            raise result.error()
        return result

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
            raise no_content(node)
        want = rev if rev is not None else node.content_rev
        version = await self.store.version(vault_id, node_id, want or 0)
        if version is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such version", node=node_id, rev=want)
        return version

    async def versions(self, actor: Actor, vault_id: str, node_id: str) -> list[VersionRecord]:
        await self.get(actor, vault_id, node_id)
        return await self.store.versions(vault_id, node_id)
