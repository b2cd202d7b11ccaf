"""The ``local`` driver: objects as files under a directory.

Durability: a put writes a temp file in the destination directory, fsyncs it, renames it
over the final name and fsyncs the directory, so after ``put`` returns the object
survives a power cut and readers never see a partial object. ``create`` links the temp
file to the final name instead of renaming (``link(2)`` never replaces), which makes it
atomic without ``O_EXCL``.

Layout: the last component of a key is fanned out into two directory levels taken from
its first four characters (``v1/abcdef…`` → ``v1/ab/cd/abcdef…``) so millions of
objects do not share one directory. Keys are HMAC hex digests in practice, so the fan-out
is uniform. Temp files carry ``#`` in their name, a character keys cannot contain, so a
listing never mistakes one for an object, and host + pid + random in the name so no two
writers (even on different hosts sharing the directory over NFS) ever pick the same one.

The file system calls go through ``self._os`` (the ``os`` module by default) so the NFS
tests can inject the errors an NFS client returns (``ESTALE``) at the syscall boundary.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from .base import (
    ObjectInfo,
    ObjectNotFound,
    Space,
    StorageDriver,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
    check_key,
    check_range,
)

T = TypeVar("T")

_TMP_MARK = "#"
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _translate(exc: OSError, key: str) -> StorageError:
    if exc.errno == errno.ENOENT:
        return ObjectNotFound(key)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoragePermissionError(f"{key}: {exc.strerror}")
    if exc.errno in (errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.EIO, errno.ETIMEDOUT):
        return TransientStorageError(f"{key}: {exc.strerror}")
    return StorageError(f"{key}: {exc.strerror}")


class LocalDriver(StorageDriver):
    kind = "local"
    #: Retries of an operation that failed with ESTALE (0: report it as transient at once).
    stale_retries = 0
    #: Temp files older than this are leftovers of a crashed writer; ``maintain`` removes them.
    temp_max_age = 3600.0
    #: How often ``maintain`` walks the tree for leftovers (a walk touches every file).
    sweep_interval = 24 * 3600.0

    def __init__(self, root: str | os.PathLike[str], *, ops: Any = os):
        self.root = Path(root)
        self._os = ops
        self._last_sweep = time.monotonic()
        self._prepare_root()

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"{self.kind}://{self.root}"

    # -- key <-> path --------------------------------------------------------------

    def _path(self, key: str) -> Path:
        check_key(key)
        head, _, last = key.rpartition("/")
        padded = (last + "____")[:4]
        rel = Path(padded[:2]) / padded[2:4] / last
        return self.root / head / rel if head else self.root / rel

    def _key(self, path: Path) -> str:
        rel = path.relative_to(self.root).parts
        if len(rel) < 3:
            raise ValueError("not an object path")
        # drop the two fan-out levels that precede the last component
        return "/".join(rel[:-3] + rel[-1:])

    def _temp_name(self, path: Path) -> Path:
        return path.with_name(f"{path.name}{_TMP_MARK}{_HOST}.{os.getpid()}.{secrets.token_hex(6)}")

    # -- sync helpers, run in a worker thread ---------------------------------------

    def _retry_stale(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; on ESTALE retry with a short backoff (NFS: the handle went stale
        because another host replaced the file or directory; a fresh lookup fixes it)."""
        attempt = 0
        while True:
            try:
                return fn()
            except OSError as exc:
                if exc.errno != errno.ESTALE or attempt >= self.stale_retries:
                    raise
                attempt += 1
                time.sleep(min(0.01 * 2**attempt, 0.5))

    def _write_temp(self, path: Path, data: bytes | memoryview) -> Path:
        """Write ``data`` to a fresh temp file next to ``path`` and fsync it."""
        o = self._os
        try:
            o.makedirs(path.parent, exist_ok=True)
        except FileExistsError:
            pass
        tmp = self._temp_name(path)
        # No O_EXCL: it is not reliable across NFS clients; the unique name is what
        # keeps writers apart.
        fd = o.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[o.write(fd, view):]
            o.fsync(fd)
        except BaseException:
            o.close(fd)
            self._unlink_quiet(tmp)
            raise
        o.close(fd)
        return tmp

    def _unlink_quiet(self, path: Path) -> None:
        try:
            self._os.unlink(path)
        except OSError:
            pass

    def _sync_dir(self, directory: Path) -> None:
        o = self._os
        dfd = o.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            o.fsync(dfd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # some file systems cannot fsync a directory
                raise
        finally:
            o.close(dfd)

    def _put_sync(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def attempt() -> None:
            tmp = self._write_temp(path, data)
            try:
                self._os.replace(tmp, path)
            except BaseException:
                self._unlink_quiet(tmp)
                raise
            self._sync_dir(path.parent)

        self._retry_stale(attempt)

    def _create_sync(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        o = self._os

        def attempt() -> bool:
            tmp = self._write_temp(path, data)
            try:
                try:
                    o.link(tmp, path)
                    created = True
                except FileExistsError:
                    # Over NFS a retransmitted LINK whose first reply was lost answers
                    # EEXIST although the link was made: the temp file's link count
                    # tells the truth (the classic NFS-safe exclusive create).
                    created = o.stat(tmp).st_nlink == 2
            finally:
                self._unlink_quiet(tmp)
            if created:
                self._sync_dir(path.parent)
            return created

        return self._retry_stale(attempt)

    def _get_sync(self, key: str, offset: int, length: int | None) -> bytes:
        path = self._path(key)
        o = self._os

        def attempt() -> bytes:
            fd = o.open(path, os.O_RDONLY)
            try:
                if length is None:
                    size = o.fstat(fd).st_size
                    want = max(size - offset, 0)
                else:
                    want = length
                if want == 0:
                    return b""
                first = o.pread(fd, want, offset)
                if len(first) == want or not first:
                    return first  # the common case: one read, no copy
                parts, got = [first], len(first)
                while got < want:
                    block = o.pread(fd, want - got, offset + got)
                    if not block:
                        break
                    parts.append(block)
                    got += len(block)
                return b"".join(parts)
            finally:
                o.close(fd)

        return self._retry_stale(attempt)

    def _head_sync(self, key: str) -> ObjectInfo:
        path = self._path(key)
        st = self._retry_stale(lambda: self._os.stat(path))
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def _delete_sync(self, key: str) -> None:
        path = self._path(key)

        def attempt() -> None:
            try:
                self._os.unlink(path)
            except FileNotFoundError:
                pass

        self._retry_stale(attempt)

    def _walk_root(self, prefix: str) -> Path:
        # Only the directories a key with this prefix can live under.
        head = prefix.rpartition("/")[0]
        return self.root / head if head else self.root

    def _list_sync(self, prefix: str) -> list[ObjectInfo]:
        out = []
        start = self._walk_root(prefix)
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if _TMP_MARK in name:
                    continue
                path = Path(dirpath) / name
                try:
                    key = self._key(path)
                    check_key(key)
                except ValueError:
                    continue
                if key.startswith(prefix) and self._path(key) == path:
                    try:
                        st = path.stat()
                    except FileNotFoundError:  # deleted while we walked
                        continue
                    out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        out.sort(key=lambda info: info.key)
        return out

    def _sweep_sync(self, max_age: float) -> int:
        """Remove temp files left by writers that died mid-write."""
        removed = 0
        cutoff = time.time() - max_age
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if _TMP_MARK not in name:
                    continue
                path = Path(dirpath) / name
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    # -- interface -----------------------------------------------------------------

    async def _run(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except OSError as exc:
            raise _translate(exc, key) from None

    async def space(self) -> Space:
        usage = await anyio.to_thread.run_sync(shutil.disk_usage, self.root)
        return Space(total=usage.total, free=usage.free)

    async def put(self, key: str, data: bytes) -> None:
        check_key(key)
        await self._run(key, self._put_sync, key, bytes(data))

    async def create(self, key: str, data: bytes) -> bool:
        check_key(key)
        return await self._run(key, self._create_sync, key, bytes(data))

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        check_key(key)
        check_range(offset, length)
        return await self._run(key, self._get_sync, key, offset, length)

    async def head(self, key: str) -> ObjectInfo:
        check_key(key)
        return await self._run(key, self._head_sync, key)

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._run(key, self._delete_sync, key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        infos = await self._run(prefix or "/", self._list_sync, prefix)
        for info in infos:
            yield info

    async def sweep_temp_files(self, max_age: float | None = None) -> int:
        """Remove leftovers of crashed writers older than ``max_age`` seconds."""
        age = self.temp_max_age if max_age is None else max_age
        return await self._run("/", self._sweep_sync, age)

    async def maintain(self) -> None:
        if time.monotonic() - self._last_sweep >= self.sweep_interval:
            self._last_sweep = time.monotonic()
            await self.sweep_temp_files()

    async def close(self) -> None:
        pass
