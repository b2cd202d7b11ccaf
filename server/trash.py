"""The trash: every delete can be undone until the trash retention has passed.

A delete tombstones a node and its subtree (``writes.Writer.trash``) and records one trash
entry (``Record`` kind ``trash``, keyed by the top node): its path, size, who deleted it
and the seq range of the tombstones it made. Tombstones keep their parent and name, so the
entry is restorable as it was.

Restore (``restore``) brings the entry back where it was: the top node returns to its old
parent under its old name or, when that name is taken meanwhile, ``NAME (restored).EXT``;
if the parent was deleted since, the deleted ancestors come back first (as directories at
their own old places, holding only what is restored; their own trash entries stay and can
be restored into them later). The caller may pick another ``parent`` and ``name``
instead. Everything the delete tombstoned under the top node comes back with it, with the
same node ids, as ``create`` events parents first, so every client sees the nodes
reappear. A folder's entry also holds the entries of what the same device deleted in it
just before (an ``rm -r`` replayed file by file; ``writes.py``, "absorbed"): they come back
with it, as they were at delete time, in the same request. Nodes deleted earlier,
separately, stay in the trash as their own entries.
``restore_entry`` does this inside a caller's transaction: the owner's restore, and the
mass-delete guard, which pulls a device's deletes of the window back out of the trash
when it opens a hold (``holds.py``; the entries become hold items, so a confirm deletes
them again, as new entries tagged with the hold).

Retention: an entry older than ``trash_retention`` is purged: the versions of its nodes
are dropped (their chunks become garbage for ``gc``) and the entry goes; the tombstone
rows stay (they are small, and a late writer still learns the node was deleted).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from gobi.protocol import ErrorCode, Node, NodeKind, RestoreTrashRequest, TrashEntry, TrashRestored

from .access import Actor, require_role
from .errors import ServiceError
from .store.base import MetadataStore, Record, VaultGone, VaultTx
from .writes import TRASH, Writer, trash_entry

CONFLICT = "conflict"


class Trash:
    def __init__(self, store: MetadataStore, retention: float = 30 * 86400):
        self.store = store
        self.retention = retention

    async def list(self, actor: Actor, vault_id: str, path: str | None = None,
                   limit: int = 1000) -> list[TrashEntry]:
        """Entries, newest first; with ``path``, only entries deleted from that path (also
        those held inside a deleted folder's entry, so one file of an ``rm -r`` can be
        restored alone)."""
        await require_role(self.store, actor, vault_id, "read")
        want = path.strip("/") if path is not None else None
        records = await self.store.find_records(
            vault_id, TRASH, state="trashed", newest_first=True, limit=limit if want is None else 100_000)
        entries = [trash_entry(r) for r in records]
        if want is not None:
            entries = [e for e in entries if e.path == want]
            if not entries:
                inner = await self.store.find_records(
                    vault_id, TRASH, state="absorbed", newest_first=True, limit=100_000)
                entries = [trash_entry(r) for r in inner if r.body.get("path") == want]
            entries = entries[:limit]
        return entries

    async def restore(self, actor: Actor, vault_id: str, entry_id: str, req: RestoreTrashRequest,
                      write: Callable[..., Awaitable[Any]]) -> TrashRestored:
        async def fn(w: Writer) -> TrashRestored:
            record = await w.tx.get_record(TRASH, entry_id)
            if record is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "no such trash entry", entry=entry_id)
            return await restore_entry(w, record, req.parent, req.name)

        return await write(actor, vault_id, fn)

    async def purge(self, actor: Actor, vault_id: str, entry_id: str,
                    write: Callable[..., Awaitable[Any]]) -> int:
        """Empty one entry now (owner only); returns how many versions were dropped."""
        async def fn(w: Writer) -> int:
            record = await w.tx.get_record(TRASH, entry_id)
            if record is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "no such trash entry", entry=entry_id)
            return await purge_entry(w.tx, record.id, record.body)

        return await write(actor, vault_id, fn, role="owner")

    async def purge_due(self, now: float | None = None) -> tuple[int, int]:
        """Entries past retention: (entries purged, versions dropped)."""
        now = time.time() if now is None else now
        entries = versions = 0
        while True:
            due = await self.store.due_records(TRASH, "trashed", now - self.retention, 200)
            if not due:
                return entries, versions
            for vault_id, record in due:
                async def fn(tx: VaultTx, record=record) -> int:
                    current = await tx.get_record(TRASH, record.id)
                    if current is None:
                        return 0
                    return await purge_entry(tx, current.id, current.body)

                try:
                    versions += await self.store.run_write(vault_id, fn)
                except VaultGone:
                    continue
                entries += 1
            if len(due) < 200:
                return entries, versions


async def restore_entry(w: Writer, record: Record, parent_id: str | None = None,
                        name: str | None = None) -> TrashRestored:
    """Bring the trash entry ``record`` back (see the module docstring) and drop it: into
    ``parent_id`` / ``name`` if given, else where it was (deleted ancestors first, a taken
    name becomes ``NAME (restored).EXT``). Shared by ``Trash.restore`` and the mass-delete
    guard, which pulls a device's recent deletes back into a new hold (``holds.py``)."""
    top = await w.tx.node(record.body["node"])
    if top is None:
        raise ServiceError(ErrorCode.NOT_FOUND, "the entry's node is gone", entry=record.id)
    restored_top = await _restore_one(w, record, top, parent_id, name)
    # What was deleted inside it just before (absorbed entries), nested ones included,
    # back into the directories they were in (now live again).
    todo = list(record.body.get("absorbed", []))
    while todo:
        inner = await w.tx.get_record(TRASH, todo.pop(0))
        if inner is None or inner.state != "absorbed":
            continue        # restored (or forgotten) on its own since
        node = await w.tx.node(inner.body["node"])
        if node is None:
            await w.tx.delete_record(TRASH, inner.id)
            continue
        try:
            back = await _restore_one(w, inner, node, None, None)
        except ServiceError:
            continue        # e.g. its parent cannot come back: it stays in the trash
        restored_top = restored_top.model_copy(update={"restored": restored_top.restored + back.restored})
        todo.extend(inner.body.get("absorbed", []))
    return restored_top


async def _restore_one(w: Writer, record: Record, top: Node, parent_id: str | None,
                       name: str | None) -> TrashRestored:
    """One entry (without the entries it absorbed): see ``restore_entry``."""
    seq_from, seq_to = record.body["seq_from"], record.body["seq_to"]
    revived_parents = 0
    renamed = False
    restored = 0
    if top.deleted:
        if parent_id is not None:
            parent = await w.tx.node(parent_id)
            if parent is None or parent.deleted:
                raise ServiceError(ErrorCode.NOT_FOUND, "parent directory not found", node=parent_id)
            if parent.kind is not NodeKind.DIR:
                raise ServiceError(ErrorCode.NOT_A_DIRECTORY, "parent is not a directory", node=parent_id)
        else:
            parent, revived_parents = await w.revive_chain(top.parent or "root")
        want = name or top.name
        top = await w.revive(top, parent.id, want)
        renamed = top.name != want
        restored = 1
    restored += await revive_subtree(w, top, seq_from, seq_to, merge=restored == 0)
    await w.tx.delete_record(TRASH, record.id)
    return TrashRestored(node=top, restored=restored, renamed=renamed, revived_parents=revived_parents)


async def revive_subtree(w: Writer, top: Node, seq_from: int, seq_to: int, merge: bool) -> int:
    """Bring back, parents first, what the same delete tombstoned under ``top``.

    ``merge``: ``top`` was live already (brought back earlier, e.g. as the parent of
    something restored before): its live subdirectories may hold tombstones of this
    delete too, so they are searched as well."""
    if top.kind is not NodeKind.DIR:
        return 0
    restored, todo = 0, [top.id]
    while todo:
        dir_id = todo.pop(0)
        while True:
            # Revived children are no longer tombstones, so this pages by itself.
            children = await w.tx.deleted_children(dir_id, seq_from, seq_to, 500)
            if not children:
                break
            for child in children:
                back = await w.revive(child, dir_id)
                restored += 1
                if back.kind is NodeKind.DIR and not merge:
                    todo.append(back.id)
        if merge:
            todo.extend(c.id for c in await w.tx.live_children(dir_id, 10**7) if c.kind is NodeKind.DIR)
    return restored


async def purge_entry(tx: VaultTx, entry_id: str, body: dict) -> int:
    """Drop the versions of the entry's nodes that are still tombstones (except versions
    an open conflict still needs), then the entry; the same for the entries it absorbed."""
    protected: set[tuple[str, int]] = set()
    for record in await tx.find_records(CONFLICT, state="open", limit=100_000):
        for side in ("mine", "theirs"):
            rev = record.body.get(side, {}).get("rev")
            if rev is not None:
                protected.add((record.body["node"], int(rev)))
    dropped = await _purge_one(tx, entry_id, body, protected)
    todo = list(body.get("absorbed", []))
    while todo:
        inner = await tx.get_record(TRASH, todo.pop(0))
        if inner is None or inner.state != "absorbed":
            continue
        dropped += await _purge_one(tx, inner.id, inner.body, protected)
        todo.extend(inner.body.get("absorbed", []))
    return dropped


async def _purge_one(tx: VaultTx, entry_id: str, body: dict, protected: set[tuple[str, int]]) -> int:
    seq_from, seq_to = body["seq_from"], body["seq_to"]
    dropped = 0
    top = await tx.node(body["node"])
    todo: list[Node] = [top] if top is not None and top.deleted and seq_from <= top.rev <= seq_to else []
    dirs = [body["node"]]
    while dirs:
        dirs_next = []
        for dir_id in dirs:
            for child in await tx.deleted_children(dir_id, seq_from, seq_to, 10**7):
                todo.append(child)
                if child.kind is NodeKind.DIR:
                    dirs_next.append(child.id)
            # Directories of the entry brought back since (as parents of something
            # restored) may still hold its tombstones.
            dirs_next.extend(c.id for c in await tx.live_children(dir_id, 10**7) if c.kind is NodeKind.DIR)
        dirs = dirs_next
    for node in todo:
        if node.kind is NodeKind.FILE:
            revs = [v.rev for v in await tx.versions(node.id) if (node.id, v.rev) not in protected]
            dropped += await tx.drop_versions(node.id, revs)
    await tx.delete_record(TRASH, entry_id)
    return dropped
