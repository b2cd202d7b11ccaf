"""The ``local`` driver: objects as files under a directory.

Durability: a put writes a temp file in the destination directory, fsyncs it, renames it
over the final name and fsyncs the directory, so after ``put`` returns the object
survives a power cut and readers never see a partial object.

Layout: the last component of a key is fanned out into two directory levels taken from
its first four characters (``v1/abcdef…`` → ``v1/ab/cd/abcdef…``) so millions of
objects do not share one directory. Keys are HMAC hex digests in practice, so the fan-out
is uniform.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread

from .base import (
    ObjectInfo,
    ObjectNotFound,
    StorageDriver,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
    check_key,
)

_TMP_SUFFIX = ".tmp"


def _translate(exc: OSError, key: str) -> StorageError:
    if exc.errno == errno.ENOENT:
        return ObjectNotFound(key)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoragePermissionError(f"{key}: {exc.strerror}")
    if exc.errno in (errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.EIO, errno.ETIMEDOUT):
        return TransientStorageError(f"{key}: {exc.strerror}")
    return StorageError(f"{key}: {exc.strerror}")


class LocalDriver(StorageDriver):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- key <-> path --------------------------------------------------------------

    def _path(self, key: str) -> Path:
        check_key(key)
        head, _, last = key.rpartition("/")
        padded = (last + "____")[:4]
        rel = Path(head) / padded[:2] / padded[2:4] / last if head else Path(padded[:2]) / padded[2:4] / last
        return self.root / rel

    def _key(self, path: Path) -> str:
        rel = path.relative_to(self.root).parts
        # drop the two fan-out levels that precede the last component
        return "/".join(rel[:-3] + rel[-1:])

    # -- sync helpers, run in a worker thread ---------------------------------------

    def _put_sync(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _get_sync(self, key: str, offset: int, length: int | None) -> bytes:
        with open(self._path(key), "rb") as f:
            if offset:
                f.seek(offset)
            return f.read() if length is None else f.read(length)

    def _list_sync(self, prefix: str) -> list[ObjectInfo]:
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(_TMP_SUFFIX) and name.startswith("."):
                    continue
                path = Path(dirpath) / name
                try:
                    key = self._key(path)
                except ValueError:
                    continue
                if key.startswith(prefix):
                    st = path.stat()
                    out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        out.sort(key=lambda info: info.key)
        return out

    # -- interface -----------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        try:
            await anyio.to_thread.run_sync(self._put_sync, key, bytes(data))
        except OSError as exc:
            raise _translate(exc, key) from None

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must be >= 0")
        try:
            return await anyio.to_thread.run_sync(self._get_sync, key, offset, length)
        except OSError as exc:
            raise _translate(exc, key) from None

    async def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = await anyio.to_thread.run_sync(path.stat)
        except OSError as exc:
            raise _translate(exc, key) from None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
        except OSError as exc:
            raise _translate(exc, key) from None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        infos = await anyio.to_thread.run_sync(self._list_sync, prefix)
        for info in infos:
            yield info
