"""Chunk storage: content-addressed, verified, keyed by an HMAC.

A chunk is addressed by the SHA-256 of its plaintext. Its storage key is
``<vault>/<HMAC-SHA256(naming_secret, vault ":" hash)>``, so the storage provider sees
neither content hashes (it cannot confirm that a vault holds some known file) nor which
vaults share content. The metadata store records which chunks a vault holds only after the
driver has durably stored the bytes, so a commit can never refer to a chunk that is not
really there, whatever crashes in between.

A manifest's holes (runs of zeros, ``ChunkRef.hole``) are no chunks: ``stream`` answers
them with zeros made on the fly, piece by piece, so a 1 TiB hole never sits in memory and
never touches storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Sequence

from gobi.drivers import ObjectCorrupted, ObjectNotFound, StorageDriver, StorageError
from gobi.protocol import ChunkRef, ErrorCode

from .access import Actor, require_role
from .errors import ServiceError
from .store.base import MetadataStore


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: A hole is sent in pieces of this many zeros (one shared buffer, sliced).
ZERO_PIECE = 1024 * 1024
_ZEROS = bytes(ZERO_PIECE)


class Chunks:
    def __init__(self, store: MetadataStore, driver: StorageDriver, naming_secret: bytes):
        self.store = store
        self.driver = driver
        self._secret = naming_secret

    def storage_key(self, vault_id: str, chunk_hash: str) -> str:
        mac = hmac.new(self._secret, f"{vault_id}:{chunk_hash}".encode(), hashlib.sha256)
        return f"{vault_id}/{mac.hexdigest()}"

    async def missing(self, actor: Actor, vault_id: str, hashes: list[str]) -> list[str]:
        await require_role(self.store, actor, vault_id, "write")
        return await self.store.missing_chunks(vault_id, hashes)

    async def put(self, actor: Actor, vault_id: str, chunk_hash: str, data: bytes) -> bool:
        """Store a chunk; True when new, False when the vault already had it."""
        await require_role(self.store, actor, vault_id, "write")
        if not data:
            raise ServiceError(ErrorCode.BAD_REQUEST, "a chunk is at least one byte")
        # hashlib releases the GIL on large inputs, so a thread keeps the loop responsive.
        actual = await asyncio.to_thread(_sha256, data)
        if actual != chunk_hash:
            raise ServiceError(
                ErrorCode.HASH_MISMATCH,
                "the body does not hash to the chunk's SHA-256",
                expected=chunk_hash,
                actual=actual,
            )
        if await self.store.chunk_size(vault_id, chunk_hash) is not None:
            return False
        await self._refuse_doomed(vault_id, [chunk_hash])
        try:
            await self.driver.put(self.storage_key(vault_id, chunk_hash), data)
        except StorageError as exc:
            raise ServiceError(ErrorCode.UNAVAILABLE, f"storage refused the chunk: {type(exc).__name__}") from exc
        return await self.store.add_chunk(vault_id, chunk_hash, len(data), time.time())

    async def put_many(self, actor: Actor, vault_id: str, items: list[tuple[str, bytes]]) -> list[bool]:
        """Store several chunks in one request (small files: one round trip, not one each).

        Every hash is verified before anything is stored, so a bad batch stores nothing;
        the objects are written concurrently and their records share a group commit.
        Returns, per item, True when new.
        """
        await require_role(self.store, actor, vault_id, "write")
        if any(not data for _, data in items):
            raise ServiceError(ErrorCode.BAD_REQUEST, "a chunk is at least one byte")
        actual = await asyncio.to_thread(lambda: [_sha256(data) for _, data in items])
        for (expected, _), got in zip(items, actual):
            if got != expected:
                raise ServiceError(ErrorCode.HASH_MISMATCH, "a chunk does not hash to its SHA-256",
                                   expected=expected, actual=got)
        missing = set(await self.store.missing_chunks(vault_id, [h for h, _ in items]))
        todo = {h: data for h, data in items if h in missing}
        await self._refuse_doomed(vault_id, list(todo))
        gate = asyncio.Semaphore(8)

        async def store_one(chunk_hash: str, data: bytes) -> bool:
            async with gate:
                await self.driver.put(self.storage_key(vault_id, chunk_hash), data)
            return await self.store.add_chunk(vault_id, chunk_hash, len(data), time.time())

        try:
            created = dict(zip(todo, await asyncio.gather(*(store_one(h, d) for h, d in todo.items()))))
        except StorageError as exc:
            raise ServiceError(ErrorCode.UNAVAILABLE, f"storage refused a chunk: {type(exc).__name__}") from exc
        seen: set[str] = set()
        out = []
        for h, _ in items:
            out.append(created.get(h, False) and h not in seen)
            seen.add(h)
        return out

    async def _refuse_doomed(self, vault_id: str, hashes: list[str]) -> None:
        """Garbage collection is deleting these objects (see ``gc.py``): writing one now
        could be undone by that delete, so the upload waits until the collector is done."""
        if hashes and (doomed := await self.store.doomed_chunks(vault_id, hashes)):
            err = ServiceError(ErrorCode.UNAVAILABLE, "chunk is being garbage-collected; retry in a moment",
                               doomed=doomed[:100])
            err.headers["Retry-After"] = "2"
            raise err

    async def size(self, actor: Actor, vault_id: str, chunk_hash: str) -> int:
        await require_role(self.store, actor, vault_id, "read")
        size = await self.store.chunk_size(vault_id, chunk_hash)
        if size is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "chunk not found", hash=chunk_hash)
        return size

    async def read(
        self, vault_id: str, chunk_hash: str, offset: int, length: int | None, size: int
    ) -> bytes:
        """Bytes of a chunk; a whole-chunk read is verified against its hash.

        Call ``size`` first: it checks access and existence.
        """
        key = self.storage_key(vault_id, chunk_hash)
        try:
            data = await self.driver.get(key, offset, length)
        except ObjectNotFound:
            raise ServiceError(ErrorCode.INTERNAL, "chunk is recorded but missing from storage",
                               hash=chunk_hash) from None
        except ObjectCorrupted:
            raise ServiceError(ErrorCode.INTERNAL, "chunk failed verification in storage",
                               hash=chunk_hash) from None
        except StorageError as exc:
            raise ServiceError(ErrorCode.UNAVAILABLE, f"storage failed: {type(exc).__name__}") from exc
        if offset == 0 and len(data) == size:
            if await asyncio.to_thread(_sha256, data) != chunk_hash:
                raise ServiceError(ErrorCode.INTERNAL, "chunk failed verification in storage",
                                   hash=chunk_hash)
        return data

    async def stream(self, vault_id: str, chunks: Sequence[ChunkRef], offset: int = 0,
                     length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``offset``..``offset+length`` of a manifest (a version, checked for
        access by whoever found it), in pieces: data chunks read from storage (whole
        chunks verified), holes as zeros at most ``ZERO_PIECE`` at a time."""
        end = None if length is None else offset + length
        pos = 0
        for c in chunks:
            c_start, pos = pos, pos + c.size
            if pos <= offset:
                continue
            if end is not None and c_start >= end:
                break
            lo = max(offset, c_start) - c_start
            hi = (c.size if end is None else min(end, pos) - c_start)
            if c.hole:
                n = hi - lo
                while n > 0:
                    piece = min(n, ZERO_PIECE)
                    yield _ZEROS if piece == ZERO_PIECE else _ZEROS[:piece]
                    n -= piece
            elif lo == 0 and hi == c.size:
                yield await self.read(vault_id, c.hash, 0, None, c.size)
            else:
                yield await self.read(vault_id, c.hash, lo, hi - lo, c.size)
