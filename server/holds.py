"""The mass-delete guard: a bulk delete from one client is held for the vault owner.

A buggy or compromised client must not be able to wipe everyone's vault. Deletes are
counted per *actor* (the ``X-Gobi-Device`` of the request, else the user) over a sliding
window; a delete that would take the actor past the threshold (more than ``files`` files,
or more than ``fraction`` of the vault's files and at least ``min_files``, within
``window``) is not applied: it opens a *hold* (``Record`` kind ``hold``, state
``pending``) and the requester gets ``409 delete_held`` with the hold. While a hold is
pending, every further delete of that actor joins it the same way (``hold_item``
records).

The hold is of the *whole* burst: the deletes that counted towards the threshold were
applied when they came, so opening the hold pulls them back into it, in the same
transaction (``Holds.pull_back``): each of the actor's trash entries since its counted run
began (inside the window, after its last settled hold; ``reason`` ``delete`` only, never
another actor's: device and user must match) is restored as a trash restore would
(``trash.restore_entry``: same node ids, deleted parents first, ``create`` events, so
every client sees the files come back) and becomes a hold item (``pulled_back``), counted
in the hold's ``files`` and ``items``. A name taken meanwhile gives
``NAME (restored).EXT`` (and that node is what a confirm deletes). Per-file deletes (a mount
replays ``rm -r`` as one delete per file) are thus held whole like one recursive delete:
other clients keep every file. Bounded work: at most ``2 × files`` entries holding ``4 ×
files`` nodes are pulled back (the newest), of at most ``PULL_BACK_SCAN`` window entries
looked at; older ones stay in the trash.

The owner lists holds and confirms one (the held deletes are applied then, in order, each
skipped if the node changed since: the modification survives) or rejects it (everything
held, pulled-back deletes included, stays in place); the requester may withdraw (reject)
its own. A pending hold expires after ``expiry`` (like a reject). Each transition appends
a ``hold`` event (``node`` is null, ``hold`` carries the state) and resets the actor's
window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gobi.protocol import DeleteNodeRequest, ErrorCode, EventType, HoldInfo, Node, NodeKind

from .access import Actor, require_role
from .errors import ServiceError
from .store.base import MetadataStore, Record, VaultGone, VaultTx
from .trash import restore_entry
from .writes import TRASH, Writer, conflict_error, head, new_id, path_of

#: A delete pulled back into a new hold: the node as restored, the delete request the
#: hold item replays on confirm, the files it counts, extra item fields.
PulledBack = tuple[Node, DeleteNodeRequest, int, dict]

HOLD = "hold"
HOLD_ITEM = "hold_item"
DELETE_LOG = "delete_log"
#: Trash entries (of any actor) looked at, at most, when a hold opens (pages of ``_PAGE``).
PULL_BACK_SCAN = 20_000
_PAGE = 1000


@dataclass(frozen=True)
class HoldPolicy:
    files: int = 500          # 0 turns the guard off
    fraction: float = 0.25
    min_files: int = 50
    window: float = 300.0
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
            f"device wait for the vault owner (gobi confirm-delete {self.hold.id}); nothing was deleted",
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

    async def count_files(self, tx: VaultTx, node: Node, recursive: bool = True) -> int:
        """Files a delete of ``node`` would remove. A non-recursive directory delete
        removes none: it is skipped on confirm while the directory holds anything (what an
        ``rm -r`` emptied it of is held by items of its own, pulled back or joined)."""
        if node.kind is not NodeKind.DIR:
            return 1
        if not recursive:
            return 0
        files, todo = 0, [node.id]
        while todo:
            for child in await tx.live_children(todo.pop(), 10**7):
                if child.kind is NodeKind.DIR:
                    todo.append(child.id)
                else:
                    files += 1
        return files

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
        body["items"], body["files"] = n + 1, body.get("files", 0) + files
        record = Record(HOLD, record.id, record.key, record.state, record.ts, body)
        await w.tx.put_record(record)
        return record

    async def guard(self, w: Writer, actor: Actor, files: int) -> None:
        """After a delete tombstoned ``files`` files: raise ``HoldNeeded`` if that takes the
        actor past the threshold, else count them in its window."""
        p = self.policy
        if not p.enabled:
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

    async def hold(self, w: Writer, actor: Actor, node_id: str, req: DeleteNodeRequest, files: int) -> Held:
        """The delete that crossed the threshold: open a hold with it (or join one that
        another request of this actor opened meanwhile). Opening one first pulls the
        actor's deletes counted in the window back into it (``pull_back``), so the whole
        burst is held, not only its tail."""
        node = await w.tx.node(node_id)
        if node is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
        if node.deleted:
            raise conflict_error(node, "the node was deleted")
        record = await self.pending(w.tx, actor)
        if record is not None:
            return await self.add(w, record, node, req, files)
        record = Record(HOLD, new_id("h"), actor_key(actor), "pending", w.ts, {
            "device": actor.device, "user": actor.user.username, "user_id": actor.user.id,
            "created": w.ts, "expires": w.ts + self.policy.expiry, "files": 0, "items": 0,
        })
        for back, back_req, back_files, extra in await self.pull_back(w, actor):
            record = await self._add(w, record, back, back_req, back_files, extra)
        record = await self._add(w, record, node, req, files)
        held = Held(hold_info(record), node)
        await w.note(EventType.HOLD, None, hold=held.hold)
        return held

    def _mine(self, record: Record, actor: Actor) -> bool:
        """A trash entry of a plain delete by ``actor``: its device (or no device) *and*
        its user, so another user's deletes are never touched, whatever its device is
        called; not a replaced or conflict-trashed node, not what a confirmed hold deleted."""
        body = record.body
        if body.get("reason", "delete") != "delete" or body.get("hold"):
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
                      write: Callable[..., Awaitable[Any]], batch: int = 200) -> HoldInfo:
        """Apply the held deletes (owner only), then close the hold."""
        await require_role(self.store, actor, vault_id, "owner")
        record = await self._record(vault_id, hold_id)
        if record.state != "pending":
            raise ServiceError(ErrorCode.BAD_REQUEST, f"the hold is {record.state}", hold=hold_info(record).model_dump(mode="json"))
        items = await self.store.find_records(vault_id, HOLD_ITEM, key=hold_id, limit=10**7)
        applied = skipped = 0

        async def apply(w: Writer, chunk: list[Record]) -> tuple[int, int]:
            done = skip = 0
            for item in chunk:
                node = await w.tx.node(item.body["node"])
                if node is None or node.deleted or (
                        node.kind is NodeKind.FILE and (node.content_rev or 0) > item.body["base_rev"]):
                    skip += 1       # gone already, or modified since: the modification survives
                    continue
                if node.kind is NodeKind.DIR and not item.body.get("recursive") and \
                        await w.tx.live_children(node.id, 1):
                    skip += 1
                    continue
                await w.trash(node, hold=hold_id, device=record.body.get("device"),
                              user=record.body.get("user"))
                done += 1
            return done, skip

        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            done, skip = await write(actor, vault_id, lambda w, chunk=chunk: apply(w, chunk), role="owner")
            applied += done
            skipped += skip
        return await self._close(actor, vault_id, hold_id, "confirmed", write,
                                 applied=applied, skipped=skipped)

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
        async def fn(w: Writer) -> HoldInfo:
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

        return await write(actor, vault_id, fn, role=role)

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
                gone += await self._drop(vault_id, [(HOLD_ITEM, i.id) for i in items] + [(HOLD, record.id)])
        return gone

    async def _drop(self, vault_id: str, keys: list[tuple[str, str]]) -> int:
        async def fn(tx: VaultTx) -> int:
            for kind, rid in keys:
                await tx.delete_record(kind, rid)
            return len(keys)

        try:
            return await self.store.run_write(vault_id, fn)
        except VaultGone:       # its records no longer matter
            return 0
