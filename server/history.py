"""Versions: listing, restoring, and the retention that thins them.

Every accepted content commit is a version (``versions`` rows). Restoring version R makes
its manifest the file's content again as a *new* commit (``origin="restore:R"``): history
is never rewritten, and other clients see an ordinary ``content`` event.

Retention (``thin``), run by the maintenance job: a version is kept while it is the
file's head (also for a deleted file: the trash restores it), while an open conflict needs
it, or while it is younger than ``keep_all`` (default 30 days); older ones are thinned to
the newest version of each UTC day until ``keep_daily`` (default 365 days), and dropped
after that. Dropping a version releases its chunks; ``gc`` frees what nobody references.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gobi.protocol import ErrorCode, Node, NodeKind, RestoreVersionRequest, VersionInfo

from .access import Actor, require_role
from .errors import ServiceError
from .store.base import MetadataStore, VaultGone, VaultTx, VersionRecord
from .writes import Writer, conflict_error, require_chunks

CONFLICT = "conflict"
DAY = 86400.0


def version_info(v: VersionRecord, head_rev: int | None, with_chunks: bool = False) -> VersionInfo:
    return VersionInfo(
        node=v.node_id, rev=v.rev, size=v.size, mtime_ns=v.mtime_ns, ts=v.ts, device=v.device,
        user=v.user, origin=v.origin, head=v.rev == head_rev,
        chunks=list(v.chunks) if with_chunks else None,
    )


def plan_thinning(versions: Iterable[VersionRecord], keep: set[int], now: float,
                  keep_all: float, keep_daily: float) -> list[int]:
    """Revs to drop: see the module docstring. ``keep``: revs kept whatever their age."""
    drop: list[int] = []
    days: set[int] = set()
    for v in sorted(versions, key=lambda v: v.rev, reverse=True):     # newest first
        age = now - v.ts
        day = int(v.ts // DAY)
        if v.rev in keep or age < keep_all:
            days.add(day)           # a kept version stands for its day
            continue
        if age < keep_daily and day not in days:
            days.add(day)           # the newest version of its day
            continue
        drop.append(v.rev)
    return drop


class History:
    def __init__(self, store: MetadataStore, keep_all: float = 30 * DAY, keep_daily: float = 365 * DAY):
        self.store = store
        self.keep_all = keep_all
        self.keep_daily = keep_daily

    async def versions(self, actor: Actor, vault_id: str, node_id: str) -> list[VersionInfo]:
        await require_role(self.store, actor, vault_id, "read")
        node = await self.store.node(vault_id, node_id)
        if node is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
        return [version_info(v, node.content_rev) for v in await self.store.versions(vault_id, node_id)]

    async def restore(self, actor: Actor, vault_id: str, node_id: str, req: RestoreVersionRequest,
                      write: Callable[..., Awaitable[Any]]) -> Node:
        async def fn(w: Writer) -> Node:
            node = await w.tx.node(node_id)
            if node is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "node not found", node=node_id)
            if node.kind is not NodeKind.FILE:
                raise ServiceError(ErrorCode.IS_A_DIRECTORY if node.kind is NodeKind.DIR
                                   else ErrorCode.NOT_A_FILE, "only files have versions", node=node_id)
            if node.deleted:
                raise conflict_error(node, "the file is deleted: restore it from the trash first")
            if req.base_rev is not None and not (node.content_rev or 0) <= req.base_rev <= node.rev:
                raise conflict_error(node, "the file's content changed since base_rev")
            version = await w.tx.version(node_id, req.rev)
            if version is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "no such version", node=node_id, rev=req.rev)
            await require_chunks(w.tx, version.chunks)
            # mtime: now. The restored content is a change like any other for make, rsync
            # and editors watching the file.
            return await w.save_content(node, version.chunks, origin=f"restore:{version.rev}",
                                        size=version.size, mtime_ns=time.time_ns())

        return await write(actor, vault_id, fn)

    async def thin(self, now: float | None = None, page: int = 500) -> int:
        """Apply version retention to every vault; returns how many versions went."""
        now = time.time() if now is None else now
        dropped = 0
        after: tuple[str, str] | None = None
        protected: dict[str, set[tuple[str, int]]] = {}
        while True:
            pairs = await self.store.version_nodes(now - self.keep_all, after, page)
            if not pairs:
                return dropped
            by_vault: dict[str, list[str]] = {}
            for vault_id, node_id in pairs:
                by_vault.setdefault(vault_id, []).append(node_id)
            for vault_id, node_ids in by_vault.items():
                if vault_id not in protected:
                    protected[vault_id] = await self._protected(vault_id)
                keep_extra = protected[vault_id]

                async def fn(tx: VaultTx, node_ids=node_ids, keep_extra=keep_extra) -> int:
                    n = 0
                    for node_id in node_ids:
                        node = await tx.node(node_id)
                        keep = {rev for nid, rev in keep_extra if nid == node_id}
                        if node is not None and node.content_rev is not None:
                            keep.add(node.content_rev)
                        drop = plan_thinning(await tx.versions(node_id), keep, now,
                                             self.keep_all, self.keep_daily)
                        if drop:
                            n += await tx.drop_versions(node_id, drop)
                    return n

                try:
                    dropped += await self.store.run_write(vault_id, fn)
                except VaultGone:
                    pass
            after = pairs[-1]
            if len(pairs) < page:
                return dropped

    async def _protected(self, vault_id: str) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for record in await self.store.find_records(vault_id, CONFLICT, state="open", limit=100_000):
            for side in ("mine", "theirs"):
                rev = record.body.get(side, {}).get("rev")
                if rev is not None:
                    out.add((record.body["node"], int(rev)))
        return out
