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
    ├── TransientStorageError   worth retrying: timeouts, throttling, 5xx, stale handles
    └── StoragePermissionError  credentials or file permissions refuse the operation

No method takes a timeout: callers bound waits with ``anyio.fail_after`` /
``trio.move_on_after`` around the call.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

# Keys are relative, slash-separated, and made of characters every backend accepts
# unescaped. Callers build keys from ids and hex digests, so this only fences off bugs
# and hostile input (no "..", no absolute paths).
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


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


def check_key(key: str) -> str:
    """Raise ``ValueError`` unless ``key`` is a well-formed relative object key."""
    if not isinstance(key, str) or len(key) > 1024 or not _KEY_RE.match(key):
        raise ValueError(f"invalid storage key {key!r}")
    if any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int          # size of the stored object as the caller sees it (plaintext size)
    mtime: float | None = None


class StorageDriver(abc.ABC):
    """Async key → bytes store. See the module docstring for the contract."""

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

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ObjectNotFound:
            return False
        return True

    async def close(self) -> None:
        """Release connections and threads. The driver is unusable afterwards."""
