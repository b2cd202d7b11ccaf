"""Building blocks shared by every tree write: the event writer, tombstoning into the
trash, bringing tombstones back, names and paths.

Node writes (``nodes.py``), trash restores (``trash.py``), conflict handling
(``conflicts.py``), mass-delete holds (``holds.py``) and version restores (``history.py``)
all change the tree through a ``Writer`` inside one store transaction, so they keep the
same invariants: every change allocates the vault's next seq and appends exactly one event;
every live node's parent is a live directory; live names are unique per directory; a
delete tombstones a whole subtree (leaves first) and records one trash entry for it.

**Hard links.** The names of one file are nodes sharing an ``inode`` (``Node.inode``). What
belongs to the file is kept equal on all its live names: a content change
(``Writer.save_content``) or a change of mode or mtime (``Writer.save_file_attrs``) is
saved on every name, one event each, in the same transaction; names, parents, trash
entries and version histories stay per name. A name that comes back from the trash rejoins
its file only when its content is the file's content then (``Writer.revive``); otherwise
it comes back as a file of its own, since one file cannot have two contents.

**A folder's trash entry holds what was deleted with it.** A mount replays ``rm -r`` as
one delete per file and one per directory (the kernel unlinks them one by one), so each
would be a trash entry of its own and restoring the folder would bring back an empty
folder. When a directory is deleted, the trash entries of its children that the same
device and user deleted in the hour before (``ABSORB_WINDOW``; same reason, same hold)
are *absorbed* into the directory's entry: they leave the trash listing (state
``absorbed``), the directory's entry counts their files, directories and bytes, and
restoring or purging it does the same to them (``trash.restore_entry``,
``trash.purge_entry``). Nested directories absorb their own children first, so the top
entry of an ``rm -rf`` holds the whole tree as it was at delete time.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gobi.conflicts import restored_name
from gobi.protocol import (
    ROOT_ID,
    ChunkRef,
    CommitContentRequest,
    ConflictInfo,
    ErrorCode,
    Event,
    EventType,
    HoldInfo,
    Node,
    NodeKind,
    TrashEntry,
    chunk_hashes,
)

from .access import Actor
from .errors import ServiceError
from .store.base import Record, UserRecord, VaultTx, VersionRecord

#: Who background jobs (expiring holds, retention) act as: events carry no device, so
#: every client applies them.
SYSTEM = Actor(UserRecord(id="", username="gobi", password_hash="", is_admin=True, created_at=0.0))

#: Directories deeper than this are refused; it also bounds ancestor walks.
MAX_DEPTH = 4096
TRASH = "trash"
#: Children deleted this long before their directory, by the same device, are part of the
#: directory's delete (an ``rm -r`` replayed file by file): see the module docstring.
ABSORB_WINDOW = 3600.0
#: Tombstoned children looked at, at most, when a directory's delete absorbs them, and
#: how many in a row without a trash entry end the search.
ABSORB_SCAN = 100_000
ABSORB_MISSES = 1000
#: Fields of a trash record's body that are bookkeeping, not ``TrashEntry`` fields.
TRASH_INTERNAL = ("seq_from", "seq_to", "counted", "absorbed", "in")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(10)


def head(node: Node) -> dict:
    return node.model_dump(mode="json")


def conflict_error(node: Node, message: str = "base_rev is not the head revision") -> ServiceError:
    return ServiceError(ErrorCode.CONFLICT, message, head=head(node))


def device_label(actor: Actor) -> str:
    """How a device is named in conflicted-copy names: its id, else the username."""
    return actor.device or actor.user.username


def check_chunks_sum(chunks: Sequence[ChunkRef], size: int) -> None:
    total = sum(c.size for c in chunks)
    if total != size:
        raise ServiceError(
            ErrorCode.BAD_REQUEST, f"size {size} does not equal the sum of chunk sizes {total}"
        )


async def require_chunks(tx: VaultTx, chunks: Sequence[ChunkRef]) -> None:
    # Holes are zeros, not chunks: nothing to have uploaded.
    missing = await tx.missing_chunks(chunk_hashes(chunks))
    if missing:
        raise ServiceError(
            ErrorCode.MISSING_CHUNKS,
            f"{len(missing)} chunk(s) must be uploaded before this commit",
            missing=missing,
        )


async def live_dir(tx: VaultTx, node_id: str) -> Node:
    parent = await tx.node(node_id)
    if parent is None or parent.deleted:
        raise ServiceError(ErrorCode.NOT_FOUND, "parent directory not found", node=node_id)
    if parent.kind is not NodeKind.DIR:
        raise ServiceError(ErrorCode.NOT_A_DIRECTORY, "parent is not a directory", node=node_id)
    return parent


async def path_of(tx: VaultTx, node: Node) -> str:
    """``a/b/c`` from the root (tombstones keep their parent, so this works for them too)."""
    parts: list[str] = []
    cur: Node | None = node
    for _ in range(MAX_DEPTH):
        if cur is None or cur.parent is None:
            break
        parts.append(cur.name)
        cur = await tx.node(cur.parent)
    return "/".join(reversed(parts))


async def free_name(tx: VaultTx, parent_id: str, make: Callable[[int], str]) -> str:
    """The first of ``make(1)``, ``make(2)``… not taken in ``parent_id``."""
    for attempt in range(1, 1000):
        name = make(attempt)
        if await tx.child(parent_id, name) is None:
            return name
    raise ServiceError(ErrorCode.NAME_EXISTS, "no free name found", parent=parent_id)


def trash_entry(record: Record) -> TrashEntry:
    body = {k: v for k, v in record.body.items() if k not in TRASH_INTERNAL}
    return TrashEntry.model_validate({"id": record.id, **body})


@dataclass
class Outcome:
    """What a write did: the addressed node as it is now, and the conflict if one was met."""

    node: Node
    conflict: ConflictInfo | None = None


@dataclass
class Tombstoned:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    survivors: int = 0     # nodes the ``survives`` predicate kept (with their ancestors)
    nodes: list[str] = field(default_factory=list)


class Writer:
    """Builds the events of one transaction (see the module docstring)."""

    def __init__(self, tx: VaultTx, actor: Actor, ts: float | None = None):
        self.tx = tx
        self.actor = actor
        self.ts = time.time() if ts is None else ts
        self.last_seq = 0
        self.event_types: list[EventType] = []
        # Set while a new hold pulls its device's deletes back out of the trash: the node
        # events written meanwhile carry it, so the deleting device knows not to show them.
        self.hold_mark: HoldInfo | None = None

    async def _event(self, seq: int, kind: EventType, node: Node | None, **extra) -> None:
        self.last_seq = seq
        self.event_types.append(kind)
        if node is not None and self.hold_mark is not None and extra.get("hold") is None:
            extra["hold"] = self.hold_mark
        await self.tx.add_event(Event(
            seq=seq, ts=self.ts, type=kind, node=node, device=self.actor.device,
            user=self.actor.user.username, **extra,
        ))

    async def save(
        self, node: Node, kind: EventType, old: Node | None = None, *,
        keep_content_rev: bool = False, **changes,
    ) -> Node:
        """Make ``node`` (with ``changes``) the node's new state: next seq, row, event."""
        seq = await self.tx.next_seq()
        if not keep_content_rev and (
                kind is EventType.CONTENT or (kind is EventType.CREATE and node.kind is NodeKind.FILE)):
            changes["content_rev"] = seq
        new = node.model_copy(update={**changes, "rev": seq})
        await self.tx.save_node(new, self.ts)
        moved = old is not None and (old.parent != new.parent or old.name != new.name)
        await self._event(seq, kind, new, old_parent=old.parent if moved else None,
                          old_name=old.name if moved else None)
        return new

    async def note(self, kind: EventType, node: Node | None = None, *,
                   conflict: ConflictInfo | None = None, hold: HoldInfo | None = None,
                   seq: int | None = None) -> int:
        """An event that changes no node (a conflict settled, a hold): its own seq (or
        ``seq``, allocated by the caller for something that needed it first)."""
        if seq is None:
            seq = await self.tx.next_seq()
        await self._event(seq, kind, node, conflict=conflict, hold=hold)
        return seq

    async def add_version(self, node: Node, chunks: Sequence[ChunkRef], *, rev: int | None = None,
                          size: int | None = None, mtime_ns: int | None = None,
                          origin: str | None = None, device: str | None = None) -> None:
        await self.tx.add_version(self.tx.vault_id, VersionRecord(
            node_id=node.id, rev=node.rev if rev is None else rev,
            size=node.size if size is None else size,
            mtime_ns=node.mtime_ns if mtime_ns is None else mtime_ns,
            chunks=tuple(chunks), ts=self.ts, device=device or self.actor.device,
            user=self.actor.user.username, origin=origin,
        ))

    # -- hard links ----------------------------------------------------------------------------

    async def other_names(self, node: Node) -> list[Node]:
        """The other live names of ``node``'s file (none for a name of its own)."""
        if node.inode is None:
            return []
        return [n for n in await self.tx.names_of(node.inode) if n.id != node.id]

    async def save_content(self, node: Node, chunks: Sequence[ChunkRef], *,
                           origin: str | None = None, **changes) -> Node:
        """A new content (``changes``: size, mtime_ns, maybe mode) and its version, on
        ``node`` and on every other name of its file. Returns ``node``'s new state."""
        new = await self.save(node, EventType.CONTENT, **changes)
        await self.add_version(new, chunks, origin=origin)
        for other in await self.other_names(node):
            linked = await self.save(other, EventType.CONTENT, **changes)
            await self.add_version(linked, chunks, origin=origin)
        return new

    async def save_file_attrs(self, node: Node, **attrs) -> None:
        """Mode or mtime changed on one name: the same change on the file's other names."""
        if attrs:
            for other in await self.other_names(node):
                await self.save(other, EventType.ATTR, **attrs)

    async def rejoin(self, node: Node, chunks: Sequence[ChunkRef] | None = None) -> dict:
        """What a name coming back from the trash takes so that it is a name of its file
        again or a file of its own: with no live name left, nothing (it is the file); when
        its content (``chunks``, default: the content it had) is the file's content now,
        the file's mode and mtime (which may have changed meanwhile through another name);
        otherwise ``inode`` None (one file cannot have two contents)."""
        if node.inode is None:
            return {}
        others = await self.other_names(node)
        if not others:
            return {}
        if node.kind is NodeKind.FILE:
            if chunks is None:
                mine = await self.tx.version(node.id, node.content_rev or 0)
                chunks = mine.chunks if mine else ()
            theirs = await self.tx.version(others[0].id, others[0].content_rev or 0)
            if tuple(chunks) != tuple(theirs.chunks if theirs else ()):
                return {"inode": None}
        return {"mode": others[0].mode, "mtime_ns": others[0].mtime_ns}

    # -- deleting into the trash -------------------------------------------------------------

    async def tombstone_subtree(
        self, node: Node, survives: Callable[[Node], bool] | None = None,
        out: Tombstoned | None = None,
    ) -> Tombstoned:
        """Delete a node and everything under it, leaves first (one event per node).

        ``survives(n)``: nodes it returns True for stay, and so do their ancestors inside
        the subtree (a directory deleted while files were added to it elsewhere)."""
        top = out is None
        out = out if out is not None else Tombstoned()
        # The top node is what the request named (its base_rev was checked); the predicate
        # judges what lies under it.
        stays = not top and survives is not None and survives(node)
        if stays:
            out.survivors += 1
            if node.kind is not NodeKind.DIR:
                return out
        kept: set[str] = set()
        if node.kind is NodeKind.DIR:
            while True:
                # Survivors stay live: skip them (the limit leaves room for 500 others).
                children = [c for c in await self.tx.live_children(node.id, 500 + len(kept))
                            if c.id not in kept]
                if not children:
                    break
                for child in children:
                    before = out.survivors
                    await self.tombstone_subtree(child, survives, out)
                    if out.survivors != before:
                        kept.add(child.id)
        if stays or kept:
            return out
        await self.save(node, EventType.DELETE, deleted=True)
        out.nodes.append(node.id)
        if node.kind is NodeKind.DIR:
            out.dirs += 1
        else:
            out.files += 1
            out.bytes += node.size if node.kind is NodeKind.FILE else 0
        return out

    async def trash(
        self, node: Node, *, reason: str = "delete", survives: Callable[[Node], bool] | None = None,
        hold: str | None = None, device: str | None = None, user: str | None = None,
        counted: int | None = None,
    ) -> tuple[TrashEntry | None, Tombstoned]:
        """Tombstone ``node``'s subtree and record it as one trash entry (None when nothing
        was deleted because everything survived). A directory's entry absorbs the entries
        of its children deleted just before by the same device (module docstring).
        ``counted``: the files the mass-delete guard counted for it (``holds.py``)."""
        path = await path_of(self.tx, node)
        first = self.last_seq
        result = await self.tombstone_subtree(node, survives)
        if not result.nodes:
            return None, result
        seq_from = (first + 1) if first else self.last_seq - len(result.nodes) + 1
        entry = TrashEntry(
            id=new_id("t"), node=node.id, parent=node.parent, name=node.name, kind=node.kind,
            path=path, files=result.files, dirs=result.dirs, bytes=result.bytes,
            deleted_at=self.ts, device=device if device is not None else self.actor.device,
            user=user or self.actor.user.username, reason=reason, hold=hold,  # type: ignore[arg-type]
        )
        body = entry.model_dump(mode="json", exclude={"id"})
        body["seq_from"], body["seq_to"] = seq_from, self.last_seq
        if counted is not None:
            body["counted"] = counted
        if node.kind is NodeKind.DIR and reason == "delete":
            absorbed = await self._absorb(node, entry, seq_from)
            if absorbed:
                body["absorbed"] = [r.id for r in absorbed]
                for key in ("files", "dirs", "bytes"):
                    body[key] += sum(int(r.body.get(key, 0)) for r in absorbed)
                body["counted"] = int(body.get("counted", 0)) + sum(
                    int(r.body.get("counted", r.body.get("files", 0))) for r in absorbed)
                entry = trash_entry(Record(TRASH, entry.id, node.id, "trashed", self.ts, body))
        await self.tx.put_record(Record(TRASH, entry.id, node.id, "trashed", self.ts, body))
        return entry, result

    async def _absorb(self, node: Node, entry: TrashEntry, seq_from: int) -> list[Record]:
        """The trash entries of ``node``'s children that belong to this delete (deleted in
        the ``ABSORB_WINDOW`` before it by the same device and user, same reason and hold):
        marked ``absorbed`` into ``entry``; returned newest first."""
        cutoff = self.ts - ABSORB_WINDOW
        found: list[Record] = []
        hi, scanned, misses = seq_from - 1, 0, 0
        while hi > 0 and scanned < ABSORB_SCAN and misses < ABSORB_MISSES:
            kids = await self.tx.deleted_children(node.id, 0, hi, 500, newest_first=True)
            if not kids:
                break
            for kid in kids:
                scanned += 1
                records = await self.tx.find_records(TRASH, key=kid.id, state="trashed", limit=10)
                # Old tombstones whose entries are gone (purged, restored, inside another
                # entry): a long run of them means the recent deletes are behind us.
                misses = 0 if records else misses + 1
                for r in records:
                    b = r.body
                    if float(b.get("deleted_at", 0)) < cutoff:
                        # Older than the window, and so is every child deleted before it.
                        scanned = ABSORB_SCAN
                        continue
                    if (b.get("parent") == node.id and b.get("reason", "delete") == "delete"
                            and b.get("device") == entry.device and b.get("user") == entry.user
                            and b.get("hold") == entry.hold):
                        found.append(r)
            hi = kids[-1].rev - 1
        for r in found:
            await self.tx.put_record(Record(TRASH, r.id, r.key, "absorbed", r.ts,
                                            {**r.body, "in": entry.id}))
        return found

    # -- bringing tombstones back -------------------------------------------------------------

    async def revive(self, node: Node, parent_id: str | None = None, name: str | None = None) -> Node:
        """A tombstone becomes live again (CREATE event, content unchanged) in ``parent_id``
        (default: its old parent, which must be live) under ``name`` or, when that is taken,
        ``NAME (restored).EXT``."""
        parent_id = parent_id or node.parent or ROOT_ID
        want = name or node.name
        is_dir = node.kind is NodeKind.DIR
        free = await free_name(
            self.tx, parent_id, lambda n: want if n == 1 else restored_name(want, is_dir, n - 1))
        return await self.save(node, EventType.CREATE, keep_content_rev=True, deleted=False,
                               parent=parent_id, name=free, **await self.rejoin(node))

    async def revive_chain(self, dir_id: str) -> tuple[Node, int]:
        """Make ``dir_id`` a live directory again if it was deleted, bringing back its
        deleted ancestors (as empty directories, at their old places) first. Returns the
        directory and how many were revived."""
        chain: list[Node] = []
        cur = await self.tx.node(dir_id)
        while cur is not None and cur.deleted:
            chain.append(cur)
            if len(chain) > MAX_DEPTH:
                raise ServiceError(ErrorCode.BAD_REQUEST, f"tree deeper than {MAX_DEPTH}")
            cur = await self.tx.node(cur.parent) if cur.parent else None
        if cur is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "parent directory not found", node=dir_id)
        if cur.kind is not NodeKind.DIR:
            raise ServiceError(ErrorCode.NOT_A_DIRECTORY, "parent is not a directory", node=cur.id)
        for dead in reversed(chain):
            if dead.kind is not NodeKind.DIR:
                raise ServiceError(ErrorCode.NOT_A_DIRECTORY, "parent is not a directory", node=dead.id)
            cur = await self.revive(dead)
        return cur, len(chain)

    async def forget_trash_of(self, node_id: str) -> None:
        """``node_id`` is live again by other means: its own trash entries are moot."""
        for state in ("trashed", "absorbed"):
            for record in await self.tx.find_records(TRASH, key=node_id, state=state):
                await self.tx.delete_record(TRASH, record.id)


async def apply_commit(w: Writer, node: Node, req: CommitContentRequest, origin: str | None = None) -> Node:
    """Make ``req``'s manifest the file's content: a new version (chunks checked by the
    caller), on every name of the file."""
    changes: dict = {"size": req.size,
                     "mtime_ns": req.mtime_ns if req.mtime_ns is not None else time.time_ns()}
    if req.mode is not None:
        changes["mode"] = req.mode
    return await w.save_content(node, req.chunks, origin=origin, **changes)
