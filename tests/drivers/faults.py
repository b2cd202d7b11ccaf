"""Fault-injecting wrapper drivers for the contract suite (tests only).

``FaultyDriver`` wraps a real driver and, when told, behaves like a target that is down,
slow, returns corrupted bytes, or dies in the middle of a write (leaving a torn object
behind, as a non-atomic backend would). The faults act on the real inner driver, so the
layers above (encrypted, replicated) meet them exactly as they would meet a failing disk
or network.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import anyio

from gobi.drivers.base import ObjectInfo, StorageDriver, TransientStorageError


class FaultyDriver(StorageDriver):
    kind = "faulty"

    def __init__(self, inner: StorageDriver, name: str = "faulty"):
        self.inner = inner
        self.name = name
        self.down = False            # every operation fails as a network outage would
        self.delay = 0.0             # seconds added before every operation
        self.corrupt_reads = False   # flip one bit in every byte string read
        self.torn_writes = False     # write the first half of the object, then fail
        self.calls: Counter[str] = Counter()

    def children(self) -> tuple[StorageDriver, ...]:
        return (self.inner,)

    def describe(self) -> str:
        return f"{self.name}({self.inner.describe()})"

    async def _enter(self, op: str) -> None:
        self.calls[op] += 1
        if self.delay:
            await anyio.sleep(self.delay)
        if self.down:
            raise TransientStorageError(f"{self.name}: injected outage")

    async def put(self, key: str, data: bytes) -> None:
        await self._enter("put")
        if self.torn_writes:
            await self.inner.put(key, bytes(data[: len(data) // 2]))
            raise TransientStorageError(f"{self.name}: injected death mid-write")
        await self.inner.put(key, data)

    async def create(self, key: str, data: bytes) -> bool:
        await self._enter("create")
        return await self.inner.create(key, data)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        await self._enter("get")
        data = await self.inner.get(key, offset, length)
        if self.corrupt_reads and data:
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x01
            data = bytes(flipped)
        return data

    async def head(self, key: str) -> ObjectInfo:
        await self._enter("head")
        return await self.inner.head(key)

    async def delete(self, key: str) -> None:
        await self._enter("delete")
        await self.inner.delete(key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        await self._enter("list")
        async for info in self.inner.list(prefix):
            yield info
