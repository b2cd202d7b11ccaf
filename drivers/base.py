"""The storage driver interface and its exception tree.

A driver is a flat key → bytes store. It is written against anyio so the same code runs
under asyncio (the Sanic server) and trio (tests, tools). Every operation is idempotent:
``put`` of the same key and bytes twice, ``delete`` of an absent key, are not errors.
A ``put`` is atomic: readers see the whole new object or none of it, never a prefix.

Exceptions (callers catch ``StorageError`` or one of its children; drivers translate
their backend's errors into these at their own boundary):

    StorageError
    ├── ObjectNotFound          the key does not exist
    ├── ObjectCorrupted         the bytes exist but fail verification (tamper, truncation)
    ├── TransientStorageError   worth retrying: timeouts, throttling, 5xx, stale handles,
    │                           a target that is down
    ├── StoragePermissionError  credentials or file permissions refuse the operation
    └── KeyUnavailable          the key needed to decrypt is missing (master key file
                                lacks the id, or the vault's data key is gone)

No method takes a timeout: callers bound waits with ``anyio.fail_after`` /
``trio.move_on_after`` around the call.

Wrappers (``encrypted``, ``replicated``, the test-only fault injectors) are drivers that
embed other drivers; ``children()`` exposes them so tools can walk a configured tree
(``gobi keys rotate`` finds every encrypted layer, ``gobi storage status`` every target).
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

# Keys are relative, slash-separated, and made of characters every backend accepts
# unescaped. Callers build keys from ids and hex digests, so this only fences off bugs
# and hostile input (no "..", no absolute paths).
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")

#: Default window for ``iter_get``: large enough to amortise a request, small enough
#: that a reader never holds a whole big object.
STREAM_BLOCK = 1024 * 1024


class StorageError(Exception):
    """Base of every error a storage driver raises."""


class ObjectNotFound(StorageError):
    pass


class ObjectCorrupted(StorageError):
    pass


class TransientStorageError(StorageError):
    pass


class StoragePermissionError(StorageError):
    pass


class KeyUnavailable(StorageError):
    """The key needed to decrypt an object is not available here (never shows key bytes)."""


def check_key(key: str) -> str:
    """Raise ``ValueError`` unless ``key`` is a well-formed relative object key."""
    if not isinstance(key, str) or len(key) > 1024 or not _KEY_RE.match(key):
        raise ValueError(f"invalid storage key {key!r}")
    if any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def check_range(offset: int, length: int | None) -> None:
    if offset < 0 or (length is not None and length < 0):
        raise ValueError("offset and length must be >= 0")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int          # size of the stored object as the caller sees it (plaintext size)
    mtime: float | None = None


@dataclass(frozen=True)
class Space:
    """What a backend can hold: its size and the bytes still free, as it reports them."""

    total: int
    free: int


class StorageDriver(abc.ABC):
    """Async key → bytes store. See the module docstring for the contract."""

    #: Short human name of the implementation ("local", "s3", "encrypted", …).
    kind: str = "driver"

    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically and durably before returning."""

    @abc.abstractmethod
    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return ``length`` bytes from ``offset`` (to the end when ``length`` is None).

        A range past the end is clipped, as HTTP range reads are.
        Raises ``ObjectNotFound``.
        """

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo:
        """Return the object's info. Raises ``ObjectNotFound``."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; absent is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, in key order."""

    async def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` only if ``key`` does not exist yet; True when this call created it.

        Drivers override this with an atomic primitive (``link(2)``, S3's
        ``If-None-Match: *``) so that two writers racing to create the same key agree on
        one winner. This fallback (head, then put) is only as good as the backend's
        consistency and is documented as racy.
        """
        if await self.exists(key):
            return False
        await self.put(key, data)
        return True

    async def iter_get(
        self, key: str, offset: int = 0, length: int | None = None, *, block_size: int = STREAM_BLOCK
    ) -> AsyncIterator[bytes]:
        """Yield the range in blocks, never holding the whole object in memory.

        The default reads window by window with ranged ``get``; drivers with a streaming
        body (S3) override it. Raises ``ObjectNotFound`` before yielding anything.
        """
        check_range(offset, length)
        if block_size <= 0:
            raise ValueError("block_size must be > 0")
        first = True
        while length is None or length > 0:
            want = block_size if length is None else min(block_size, length)
            block = await self.get(key, offset, want)
            if not block:
                break
            first = False
            yield block
            offset += len(block)
            if length is not None:
                length -= len(block)
            if len(block) < want:
                break
        if first and length == 0:
            await self.head(key)  # a zero-length range still reports a missing object

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ObjectNotFound:
            return False
        return True

    async def space(self) -> Space | None:
        """The backend's size and free bytes; None when it cannot tell (an object store).

        A wrapper answers for what it wraps: the least free space among its children (a
        replicated write needs room on every target), None if any of them cannot tell."""
        inner = self.children()
        if not inner:
            return None
        spaces = [await c.space() for c in inner]
        if any(sp is None for sp in spaces):
            return None
        return min(spaces, key=lambda sp: sp.free)   # type: ignore[union-attr]

    def children(self) -> tuple["StorageDriver", ...]:
        """The drivers this one wraps (empty for a real backend)."""
        return ()

    def describe(self) -> str:
        """One line naming the driver and its location, with no secrets in it."""
        return self.kind

    async def maintain(self) -> None:
        """Periodic housekeeping (sweep orphaned temp files, abort stale multipart
        uploads, repair replicas). Safe to call at any time; the default does nothing but
        recurse into wrapped drivers."""
        for child in self.children():
            await child.maintain()

    async def close(self) -> None:
        """Release connections and threads. The driver is unusable afterwards."""
        for child in self.children():
            await child.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def walk(driver: StorageDriver) -> Iterator[StorageDriver]:
    """Every driver in a configured tree, outermost first."""
    yield driver
    for child in driver.children():
        yield from walk(child)
