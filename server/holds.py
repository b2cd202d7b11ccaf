"""The mass-delete guard: a bulk delete from one device is held for the vault owner.

The guard exists so that an accident or a rogue client (a wrong ``rm -rf ~/Vault/*``,
ransomware replacing files by encrypted copies, a client bug) cannot wipe the vault on
every *other* device. It does not argue with the user at the deleting keyboard: the
deleting mount keeps its deletes (``gobi.fs.held``); a hold only stops them from
propagating until the owner decides. The thresholds and why: docs/conflicts.md.

**Counting.** Deletes are counted per *actor* (the ``X-Gobi-Device`` of the request, else
the user) over a sliding window, in files. A file counts unless its current content was
written by that same actor less than ``fresh`` ago: a device undoing its own recent work
(``rm -rf build/``, ``node_modules``, a checkout, ``git gc``, an unpacked archive) is not
a mass delete. Directories and symlinks hold no data and never count. A delete that takes
the actor past the threshold (more than ``files`` counted files, or more than ``fraction``
of the vault's files and at least ``min_files``, within ``window``) is not applied: it
opens a *hold* (``Record`` kind ``hold``, state ``pending``) and the requester gets ``409
delete_held`` with the hold. While a hold is pending, every further delete of that actor
that counts (or that would remove a directory still holding held files) joins it the same
way (``hold_item`` records); deletes of its own fresh files go through.

The hold is of the *whole* burst: the deletes that counted towards the threshold were
applied when they came, so opening the hold pulls them back into it, in the same
transaction (``Holds.pull_back``): each of the actor's counted trash entries since its run
began (inside the window, after its last settled hold; ``reason`` ``delete`` only, never
another actor's: device and user must match) is restored as a trash restore would
(``trash.restore_entry``: same node ids, deleted parents first, ``create`` events, so
every other client sees the files come back) and becomes a hold item (``pulled_back``).
Those events carry the hold (``Event.hold``): the deleting device knows them for its own
held deletes and does not show them again. A name taken meanwhile gives ``NAME
(restored).EXT`` (and that node is what a confirm deletes). Bounded work: at most ``2 ×
files`` entries holding ``4 × files`` nodes are pulled back (the newest), of at most
``PULL_BACK_SCAN`` window entries looked at; older ones stay in the trash.

**The deleting device takes a held name again** (``take_name``): its ``rm f; echo > f``
or ``rm -rf build; mkdir build`` must make a new node, not a conflict with the held one
it no longer sees. A held file or symlink at that name is replaced (to the trash, like a
rename over it, tagged with the hold); a held directory moves aside to ``NAME (held)``
with everything in it, still held.

The owner lists holds and confirms one (the held deletes are applied in order, in one
transaction with the ``hold`` event, so every client gets them as one batch; each is
skipped if the node changed since: the modification survives) or rejects it (everything
held, pulled-back deletes included, stays in place, and the deleting mount shows it
again); the requester may withdraw (reject) its own. A pending hold expires after
``expiry`` (like a reject). Each transition appends a ``hold`` event (``node`` is null,
``hold`` carries the state) and resets the actor's window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gobi.conflicts import held_name
from gobi.protocol import DeleteNodeRequest, ErrorCode, EventType, HoldInfo, Node, NodeKind

from .access import Actor, require_role
from .errors import ServiceError
from .store.base import MetadataStore, Record, VaultGone, VaultTx
from .trash import restore_entry
from .writes import TRASH, Writer, conflict_error, free_name, head, new_id, path_of

#: A delete pulled back into a new hold: the node as restored, the delete request the
#: hold item replays on confirm, the files it counts, extra item fields.
PulledBack = tuple[Node, DeleteNodeRequest, int, dict]

HOLD = "hold"
HOLD_ITEM = "hold_item"
#: One per node a hold holds, ``ACTOR|NODE`` → the hold: "is this name held by me?"
HELD_NODE = "held_node"
DELETE_LOG = "delete_log"
#: Trash entries (of any actor) looked at, at most, when a hold opens (pages of ``_PAGE``).
PULL_BACK_SCAN = 20_000
_PAGE = 1000
#: Held deletes a confirm applies in one transaction (one event batch); a larger hold is
#: applied in transactions of this many.
CONFIRM_BATCH = 50_000


@dataclass(frozen=True)
class HoldPolicy:
    files: int = 1000         # 0 turns the guard off
    fraction: float = 0.25
    min_files: int = 50
    window: float = 3600.0
    fresh: float = 86400.0    # the actor's own files younger than this do not count
    expiry: float = 3 * 86400.0

    @property
    def enabled(self) -> bool:
        return self.files > 0


class HoldNeeded(Exception):
    """Raised inside a delete's transaction (rolling it back): this delete must be held."""

    def __init__(self, files: int):
        super().__init__(f"mass delete: {files} files")
        self.files = files


@dataclass
class Held:
    hold: HoldInfo
    node: Node

    def error(self) -> ServiceError:
        return ServiceError(
            ErrorCode.DELETE_HELD,
            f"mass delete held: {self.hold.files} file(s) in {self.hold.items} delete(s) from this "
            f"device wait for the vault owner (gobi confirm-delete {self.hold.id}); other devices "
            f"keep them until then",
            hold=self.hold.model_dump(mode="json"), head=head(self.node),
        )


def hold_info(record: Record) -> HoldInfo:
    body = {k: v for k, v in record.body.items() if k != "user_id"}
    return HoldInfo.model_validate({"id": record.id, "state": record.state, **body})


def actor_key(actor: Actor) -> str:
    return f"d:{actor.device}" if actor.device else f"u:{actor.user.id}"


class Holds:
    def __init__(self, store: MetadataStore, policy: HoldPolicy | None = None):
        self.store = store
        self.policy = policy or HoldPolicy()

    # -- inside a delete's transaction ----------------------------------------------------------

    async def pending(self, tx: VaultTx, actor: Actor) -> Record | None:
        if not self.policy.enabled:
            return None
        found = await tx.find_records(HOLD, key=actor_key(actor), state="pending", limit=1)
        return found[0] if found else None

    async def tally(self, w: Writer, actor: Actor, node: Node, recursive: bool = True) -> tuple[int, int]:
        """(files a delete of ``node`` would remove, files of them that count towards the
        guard). A non-recursive directory delete removes none: it is skipped on confirm
        while the directory holds anything (what an ``rm -r`` emptied it of is held by items
        of its own, pulled back or joined)."""
        if not self.policy.enabled:
            return 0, 0         # nothing is counted or held: no need to look
        if node.kind is not NodeKind.DIR:
            return 1, int(await self._counts(w, actor, node))
        if not recursive:
            return 0, 0
        files = counted = 0
        todo = [node.id]
        while todo:
            for child in await w.tx.live_children(todo.pop(), 10**7):
                if child.kind is NodeKind.DIR:
                    todo.append(child.id)
                else:
                    files += 1
                    counted += await self._counts(w, actor, child)
        return files, counted

    async def _counts(self, w: Writer, actor: Actor, node: Node) -> bool:
        """Does deleting this file count? Not a symlink (no data), not a file whose content
        the actor itself wrote less than ``fresh`` ago."""
        if not self.policy.enabled or node.kind is not NodeKind.FILE:
            return False
        if self.policy.fresh <= 0:
            return True
        version = await w.tx.version(node.id, node.content_rev or 0)
        mine = version is not None and version.device == actor.device \
            and version.user == actor.user.username
        return not (mine and version.ts >= w.ts - self.policy.fresh)

    async def joins(self, tx: VaultTx, node: Node, counted: int) -> bool:
        """While a hold of the actor is pending: does this delete join it? Yes when it
        counts, or when it would remove a directory that still holds (held) files."""
        if counted:
            return True
        return node.kind is NodeKind.DIR and bool(await tx.live_children(node.id, 1))

    async def add(self, w: Writer, record: Record, node: Node, req: DeleteNodeRequest, files: int) -> Held:
        """Put this delete into the pending hold ``record``."""
        return Held(hold_info(await self._add(w, record, node, req, files)), node)

    async def _add(self, w: Writer, record: Record, node: Node, req: DeleteNodeRequest, files: int,
                   extra: dict | None = None) -> Record:
        body = dict(record.body)
        n = body.get("items", 0)
        await w.tx.put_record(Record(HOLD_ITEM, f"{record.id}.{n:08d}", record.id, "", w.ts, {
            "node": node.id, "base_rev": req.base_rev, "recursive": req.recursive, "files": files,
            "path": await path_of(w.tx, node), **(extra or {}),
        }))
        await w.tx.put_record(Record(HELD_NODE, f"{record.key}|{node.id}", record.id, "held", w.ts, {}))
        body["items"], body["files"] = n + 1, body.get("files", 0) + files
        record = Record(HOLD, record.id, record.key, record.state, record.ts, body)
        await w.tx.put_record(record)
        return record

    async def guard(self, w: Writer, actor: Actor, files: int) -> None:
        """After a delete tombstoned ``files`` counted files: raise ``HoldNeeded`` if that
        takes the actor past the threshold, else count them in its window."""
        p = self.policy
        if not p.enabled or files <= 0:
            return
        key = actor_key(actor)
        # One record per device: files deleted per time bucket (a thirtieth of the window),
        # so a long run of deletes costs one small read and write each, not a window scan.
        log = await w.tx.get_record(DELETE_LOG, key)
        buckets = self._window(log, w.ts)
        # Where this run of counted deletes began (a settled hold deletes the log, so a
        # fresh log starts after it): what a hold opening now pulls back starts there.
        since = log.body.get("since", buckets[0][0]) if log is not None and buckets else w.ts
        total = sum(n for _, n in buckets) + files
        if total > p.files:
            raise HoldNeeded(files)
        if p.fraction > 0 and total >= p.min_files:
            # Counting stops where the absolute threshold would have fired first anyway.
            live = await w.tx.count_live_files(math.ceil(p.files / p.fraction) + 1)
            if total > p.fraction * (live + total):
                raise HoldNeeded(files)
        bucket = self._bucket()
        now_bucket = w.ts - w.ts % bucket
        if buckets and buckets[-1][0] == now_bucket:
            buckets[-1] = [now_bucket, buckets[-1][1] + files]
        else:
            buckets.append([now_bucket, files])
        await w.tx.put_record(Record(DELETE_LOG, key, key, "logged", w.ts,
                                     {"b": buckets, "since": since}))

    def _bucket(self) -> float:
        return self.policy.window / 30 or 1.0

    def _window(self, log: Record | None, now: float) -> list[list[float]]:
        """The log's buckets still inside the window ending at ``now``."""
        bucket, start = self._bucket(), now - self.policy.window
        return [b for b in (log.body.get("b", []) if log else []) if b[0] + bucket > start]

    async def hold(self, w: Writer, actor: Actor, node_id: str, req: DeleteNodeRequest) -> Held:
        """The delete that crossed the threshold: open a hold with it (or join one that
        another request of this actor opened meanwhile). Opening one first pulls the
        actor's deletes counted in the window back into it (``pull_back``), so the whole
        burst is held, not only its tail."""
        node = await w.tx.node(node_id)
        if node is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
        if node.deleted:
            raise conflict_error(node, "the node was deleted")
        files, _ = await self.tally(w, actor, node, req.recursive)
        record = await self.pending(w.tx, actor)
        if record is not None:
            return await self.add(w, record, node, req, files)
        record = Record(HOLD, new_id("h"), actor_key(actor), "pending", w.ts, {
            "device": actor.device, "user": actor.user.username, "user_id": actor.user.id,
            "created": w.ts, "expires": w.ts + self.policy.expiry, "files": 0, "items": 0,
        })
        # The restores' create events carry the hold: the deleting device does not show them.
        w.hold_mark = hold_info(record)
        try:
            pulled = await self.pull_back(w, actor)
        finally:
            w.hold_mark = None
        for back, back_req, back_files, extra in pulled:
            record = await self._add(w, record, back, back_req, back_files, extra)
        record = await self._add(w, record, node, req, files)
        held = Held(hold_info(record), node)
        await w.note(EventType.HOLD, None, hold=held.hold)
        return held

    def _mine(self, record: Record, actor: Actor) -> bool:
        """A trash entry of a plain delete by ``actor`` that the guard counted: its device
        (or no device) *and* its user, so another user's deletes are never touched,
        whatever its device is called; not a replaced or conflict-trashed node, not what a
        confirmed hold deleted, not a delete of the actor's own fresh files."""
        body = record.body
        if body.get("reason", "delete") != "delete" or body.get("hold") or body.get("counted", 1) == 0:
            return False
        return body.get("device") == actor.device and body.get("user") == actor.user.username

    async def pull_back(self, w: Writer, actor: Actor) -> list[PulledBack]:
        """Restore the actor's deletes that the window counted (its trash entries since the
        run of counted deletes began: inside the window and after its last settled hold)
        and return them as hold items, oldest first: ``(node, request, files, extra)``.

        Each entry comes back as a trash restore brings it back (``trash.restore_entry``:
        same node ids, deleted parents first, ``create`` events; a name taken meanwhile
        gives ``NAME (restored).EXT``, which the hold then deletes on confirm). They are
        restored newest first, so a directory that ``rm -r`` emptied and removed returns
        before its files. Bounded: at most ``PULL_BACK_SCAN`` entries of the window are
        looked at, and of the actor's the newest ``2 × files`` entries holding at most
        ``4 × files`` nodes (``files``: the threshold) come back; older ones stay in the
        trash. An entry that cannot be restored stays in the trash too."""
        p = self.policy
        log = await w.tx.get_record(DELETE_LOG, actor_key(actor))
        buckets = self._window(log, w.ts)
        if log is None or not buckets:
            return []
        since = max(float(log.body.get("since", buckets[0][0])), float(buckets[0][0]))
        mine: list[Record] = []
        seen: set[str] = set()
        cursor, scanned = since, 0
        while scanned < PULL_BACK_SCAN:
            page = await w.tx.find_records(TRASH, state="trashed", since_ts=cursor, limit=_PAGE)
            fresh = [r for r in page if r.id not in seen]
            if not fresh:
                break
            for r in fresh:
                seen.add(r.id)
                if self._mine(r, actor):
                    mine.append(r)
            scanned += len(fresh)
            if len(page) < _PAGE:
                break
            cursor = page[-1].ts
        chosen: list[Record] = []
        nodes = 0
        for r in reversed(mine):
            size = int(r.body.get("files", 0)) + int(r.body.get("dirs", 0))
            if len(chosen) >= 2 * p.files or nodes + size > 4 * p.files:
                break
            chosen.append(r)
            nodes += size
        restored: list[tuple[Record, str]] = []
        for r in chosen:
            try:
                back = await restore_entry(w, r)
            except ServiceError:
                continue        # e.g. its node row is gone: it stays in the trash
            restored.append((r, back.node.id))
        out: list[PulledBack] = []
        for r, node_id in reversed(restored):
            node = await w.tx.node(node_id)
            if node is None or node.deleted:
                continue
            files = int(r.body.get("files", 0))
            # A directory deleted with what was in it is one recursive item; one that an
            # rm -r had emptied first (its files are items of their own) is not.
            recursive = node.kind is NodeKind.DIR and files + int(r.body.get("dirs", 0)) > 1
            out.append((node, DeleteNodeRequest(base_rev=node.rev, recursive=recursive), files,
                        {"pulled_back": True, "deleted_at": r.ts}))
        return out

    async def held_by(self, tx: VaultTx, actor: Actor, node: Node) -> Record | None:
        """The pending hold of ``actor`` that holds a delete of ``node``, if any."""
        if not self.policy.enabled:
            return None
        mark = await tx.get_record(HELD_NODE, f"{actor_key(actor)}|{node.id}")
        if mark is None:
            return None
        record = await tx.get_record(HOLD, mark.key)
        return record if record is not None and record.state == "pending" else None

    async def take_name(self, w: Writer, actor: Actor, taken: Node) -> bool:
        """``actor`` creates or moves a node to the name of ``taken``: if that is a node
        the actor's pending hold holds (deleted on its side, still here for everyone
        else), free the name and return True. A file or symlink is replaced (to the trash,
        tagged with the hold: the device rewrote it); a directory moves aside to ``NAME
        (held)`` with what is in it, still held."""
        record = await self.held_by(w.tx, actor, taken)
        if record is None:
            return False
        if taken.kind is NodeKind.DIR:
            name = await free_name(w.tx, taken.parent or "root",
                                   lambda n: held_name(taken.name, True, n))
            await w.save(taken, EventType.MOVE, old=taken, name=name)
        else:
            await w.trash(taken, reason="replace", hold=record.id, device=actor.device,
                          user=actor.user.username)
        return True

    # -- the owner's decision -------------------------------------------------------------------

    async def list(self, actor: Actor, vault_id: str, state: str | None) -> list[HoldInfo]:
        await require_role(self.store, actor, vault_id, "read")
        records = await self.store.find_records(vault_id, HOLD, state=state, newest_first=True, limit=1000)
        return [hold_info(r) for r in records]

    async def get(self, actor: Actor, vault_id: str, hold_id: str, limit: int = 1000) -> tuple[HoldInfo, list[dict]]:
        await require_role(self.store, actor, vault_id, "read")
        record = await self._record(vault_id, hold_id)
        items = await self.store.find_records(vault_id, HOLD_ITEM, key=hold_id, limit=limit)
        return hold_info(record), [r.body for r in items]

    async def _record(self, vault_id: str, hold_id: str) -> Record:
        record = await self.store.get_record(vault_id, HOLD, hold_id)
        if record is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such hold", hold=hold_id)
        return record

    async def confirm(self, actor: Actor, vault_id: str, hold_id: str,
                      write: Callable[..., Awaitable[Any]], batch: int = CONFIRM_BATCH) -> HoldInfo:
        """Apply the held deletes (owner only) and close the hold: in one transaction (so
        every client gets the deletes and the ``hold`` event as one batch) unless the hold
        has more than ``batch`` items."""
        await require_role(self.store, actor, vault_id, "owner")
        record = await self._record(vault_id, hold_id)
        if record.state != "pending":
            raise ServiceError(ErrorCode.BAD_REQUEST, f"the hold is {record.state}", hold=hold_info(record).model_dump(mode="json"))
        items = await self.store.find_records(vault_id, HOLD_ITEM, key=hold_id, limit=10**7)
        counts = [0, 0]

        async def apply(w: Writer, chunk: list[Record]) -> None:
            for item in chunk:
                node = await w.tx.node(item.body["node"])
                if node is None or node.deleted or (
                        node.kind is NodeKind.FILE and (node.content_rev or 0) > item.body["base_rev"]):
                    counts[1] += 1      # gone already, or modified since: the modification survives
                    continue
                if node.kind is NodeKind.DIR and not item.body.get("recursive") and \
                        await w.tx.live_children(node.id, 1):
                    counts[1] += 1
                    continue
                await w.trash(node, hold=hold_id, device=record.body.get("device"),
                              user=record.body.get("user"))
                counts[0] += 1

        chunks = [items[i:i + batch] for i in range(0, len(items), batch)] or [[]]
        for chunk in chunks[:-1]:
            await write(actor, vault_id, lambda w, chunk=chunk: apply(w, chunk), role="owner")

        async def last(w: Writer) -> HoldInfo:
            await apply(w, chunks[-1])
            return await self._close_in(w, hold_id, "confirmed", applied=counts[0], skipped=counts[1])

        return await write(actor, vault_id, last, role="owner")

    async def reject(self, actor: Actor, vault_id: str, hold_id: str,
                     write: Callable[..., Awaitable[Any]]) -> HoldInfo:
        """Drop the held deletes: the owner, or the user whose deletes they were."""
        vault, role = await require_role(self.store, actor, vault_id, "read")
        record = await self._record(vault_id, hold_id)
        if role != "owner" and record.body.get("user_id") != actor.user.id:
            raise ServiceError(ErrorCode.FORBIDDEN, "only the owner or the requester may reject a hold")
        return await self._close(actor, vault_id, hold_id, "rejected", write, role="read")

    async def _close(self, actor: Actor, vault_id: str, hold_id: str, state: str,
                     write: Callable[..., Awaitable[Any]], role: str | None = "owner", **extra: Any) -> HoldInfo:
        return await write(actor, vault_id, lambda w: self._close_in(w, hold_id, state, **extra), role=role)

    async def _close_in(self, w: Writer, hold_id: str, state: str, **extra: Any) -> HoldInfo:
        record = await w.tx.get_record(HOLD, hold_id)
        if record is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such hold", hold=hold_id)
        if record.state != "pending":
            raise ServiceError(ErrorCode.BAD_REQUEST, f"the hold is {record.state}",
                               hold=hold_info(record).model_dump(mode="json"))
        body = {**record.body, "resolved_by": w.actor.user.username, "resolved_at": w.ts, **extra}
        record = Record(HOLD, record.id, record.key, state, record.ts, body)
        await w.tx.put_record(record)
        # A fresh start for the requester: what it deleted before the hold is settled.
        await w.tx.delete_record(DELETE_LOG, record.key)
        info = hold_info(record)
        await w.note(EventType.HOLD, None, hold=info)
        return info

    # -- maintenance --------------------------------------------------------------------------

    async def expire_due(self, actor: Actor, write: Callable[..., Awaitable[Any]], now: float | None = None) -> int:
        now = time.time() if now is None else now
        expired = 0
        for vault_id, record in await self.store.due_records(HOLD, "pending", now - self.policy.expiry, 1000):
            try:
                await self._close(actor, vault_id, record.id, "expired", write, role=None)
                expired += 1
            except ServiceError:
                pass        # closed meanwhile, or the vault is gone
        return expired

    async def prune(self, before_ts: float, window_before_ts: float) -> int:
        """Forget delete counts of devices idle for a window, and settled holds (with their
        items) older than ``before_ts``."""
        gone = 0
        for vault_id, record in await self.store.due_records(DELETE_LOG, "logged", window_before_ts, 10_000):
            gone += await self._drop(vault_id, [(DELETE_LOG, record.id)])
        for state in ("confirmed", "rejected", "expired"):
            for vault_id, record in await self.store.due_records(HOLD, state, before_ts, 1000):
                items = await self.store.find_records(vault_id, HOLD_ITEM, key=record.id, limit=10**7)
                marks = [(HELD_NODE, f"{record.key}|{i.body['node']}") for i in items]
                gone += await self._drop(vault_id, [(HOLD_ITEM, i.id) for i in items] + marks
                                         + [(HOLD, record.id)], hold=record.id)
        return gone

    async def _drop(self, vault_id: str, keys: list[tuple[str, str]], hold: str | None = None) -> int:
        async def fn(tx: VaultTx) -> int:
            for kind, rid in keys:
                if kind == HELD_NODE:
                    mark = await tx.get_record(kind, rid)
                    if mark is None or mark.key != hold:
                        continue        # gone, or a later hold holds that node now
                await tx.delete_record(kind, rid)
            return len(keys)

        try:
            return await self.store.run_write(vault_id, fn)
        except VaultGone:       # its records no longer matter
            return 0
