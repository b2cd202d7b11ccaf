"""Garbage collection of chunks no kept version references.

A chunk's record carries a reference count (kept versions naming it, trash included,
since trashed files keep their versions until the trash retention purges them). A chunk
with no references is garbage once it is older than the grace period (``gc_grace``):
younger ones may belong to an upload whose commit has not arrived yet.

Collection never races an upload or a commit:

1. ``doom_chunks`` marks garbage as doomed inside a vault transaction. Commits reference
   chunks in their own transactions, so a commit either came first (the chunk is
   referenced and not doomed) or sees it doomed and answers ``missing_chunks``.
2. The objects are deleted from storage. While doomed, a chunk counts as missing
   (``chunks/missing``) and an upload of it is refused with ``unavailable`` (retry in a
   moment), so no upload can write the object while it is being deleted.
3. The records are dropped; the chunk is then simply absent and uploads work again.

A crash between the steps leaves doomed records, which the next run finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gobi.drivers import StorageDriver, StorageError
from gobi.protocol import ErrorCode, GcReport

from .access import Actor, require_role
from .chunks import Chunks
from .errors import ServiceError
from .store.base import MetadataStore, VaultGone, VaultTx

log = logging.getLogger("gobi.server.gc")
BATCH = 1000
PARALLEL = 8


def _count(pair: tuple[int, int]) -> dict:
    return {"chunks": pair[0], "bytes": pair[1]}


class Collector:
    def __init__(self, store: MetadataStore, chunks: Chunks, driver: StorageDriver, grace: float = 3600.0):
        self.store = store
        self.chunks = chunks
        self.driver = driver
        self.grace = grace

    async def run(self, actor: Actor, vault_id: str, dry_run: bool) -> GcReport:
        await require_role(self.store, actor, vault_id, "owner")
        return await self.collect(vault_id, dry_run)

    async def collect(self, vault_id: str, dry_run: bool = False, now: float | None = None) -> GcReport:
        started = time.monotonic()
        now = time.time() if now is None else now
        before = now - self.grace
        stats = await self.store.chunk_stats(vault_id, before)
        # Doomed leftovers of an interrupted run are freed by the next run too.
        collectable = (stats.collectable[0] + stats.doomed[0], stats.collectable[1] + stats.doomed[1])
        freed = (0, 0)
        if not dry_run:
            freed = await self._collect(vault_id, before, now, stats.doomed[1])
            stats = await self.store.chunk_stats(vault_id, before)
            collectable = stats.collectable    # what became garbage while this ran
        return GcReport(
            dry_run=dry_run, grace_seconds=self.grace, referenced=_count(stats.referenced),
            collectable=_count(collectable), in_grace=_count(stats.in_grace), freed=_count(freed),
            seconds=round(time.monotonic() - started, 3),
        )

    async def _collect(self, vault_id: str, before: float, now: float, leftover_bytes: int) -> tuple[int, int]:
        chunks = bytes_ = 0
        # Leftovers of an interrupted run first: they are doomed already.
        while leftovers := await self.store.doomed_chunks(vault_id, limit=BATCH):
            await self._delete(vault_id, leftovers)
            chunks += await self.store.forget_chunks(vault_id, leftovers)
            bytes_ = leftover_bytes
        while True:
            async def doom(tx: VaultTx) -> list[tuple[str, int]]:
                return await tx.doom_chunks(before, now, BATCH)

            try:
                doomed = await self.store.run_write(vault_id, doom)
            except VaultGone:
                raise ServiceError(ErrorCode.NOT_FOUND, "vault not found", vault=vault_id) from None
            if not doomed:
                return chunks, bytes_
            hashes = [h for h, _ in doomed]
            await self._delete(vault_id, hashes)
            chunks += await self.store.forget_chunks(vault_id, hashes)
            bytes_ += sum(size for _, size in doomed)

    async def _delete(self, vault_id: str, hashes: list[str]) -> None:
        gate = asyncio.Semaphore(PARALLEL)

        async def one(h: str) -> None:
            async with gate:
                await self.driver.delete(self.chunks.storage_key(vault_id, h))

        try:
            await asyncio.gather(*(one(h) for h in hashes))
        except StorageError as exc:
            # The records stay doomed: the next run retries. Nothing referenced is touched.
            raise ServiceError(ErrorCode.UNAVAILABLE, f"storage refused a delete: {type(exc).__name__}") from exc

    async def collect_all(self) -> tuple[int, int]:
        """Every live vault (the maintenance job); returns (chunks, bytes) freed."""
        chunks = bytes_ = 0
        for vault_id in await self.store.vault_ids():
            try:
                report = await self.collect(vault_id)
            except ServiceError as exc:
                log.warning("gc of vault %s: %s", vault_id, exc.message)
                continue
            chunks += report.freed["chunks"]
            bytes_ += report.freed["bytes"]
        return chunks, bytes_
