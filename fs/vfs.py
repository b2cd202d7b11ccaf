"""Filesystem semantics of the mount: inodes, open files, reads and writes.

This is the layer the FUSE adapter (``gobi.fs.operations``) calls. It combines the mirror
(``tree``), the local bytes (``blocks``) and the server (``remote``, only to fetch chunks
and manifests) and keeps the per-process state the kernel protocol needs: lookup counts,
open handles, staging file descriptors.

Content of a file is in exactly one of two places:

- **clean**: the server's chunk list is in the mirror; reads fetch the covering chunks
  (verified against their SHA-256) into the block cache, with read-ahead on sequential
  access. A hole of the manifest (``HOLE``) reads as zeros, with no fetch and no cache
  entry; a staging copy filled from the manifest leaves it unwritten (a hole again).
- **staged**: a full local copy in ``staging/<ino>`` that reads and writes go to at disk
  speed. A file is staged when it is created or opened for writing (its chunks are
  copied in once). The copy is sparse where the file is (``truncate`` up makes a hole)
  and the cache cap counts the blocks it holds (``BlockCache.reserve`` / ``measure``).
  The uploader (``gobi.fs.sync``) commits staged content and, when the file is closed and
  unchanged since, drops the staging copy.

Errors are ``FsError(errno)``.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from gobi.protocol import ChunkRef

from . import atime
from .blocks import BlockCache, CacheFull, held_bytes
from .foreground import Foreground
from .logs import oplog
from .metrics import Histogram
from .remote import ApiError, Offline, Remote
from .tree import HOLE, ROOT_INO, Entry, FsError, Tree, layout

log = logging.getLogger(__name__)

#: How many chunks to fetch ahead of a sequential reader.
READ_AHEAD = 2
#: Spare staging files kept ready for the next inode numbers (``keep_spares``).
SPARES = 256


def _fsync_dir(path: os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _spares(cache: BlockCache, drop: list[tuple[int, int]], make: list[int]) -> list[tuple[int, int]]:
    """(Worker thread.) Remove unused spares, make new ones; returns (ino, fd) made. O_EXCL:
    never touch a file that exists (a copy made meanwhile on the request thread)."""
    for ino, fd in drop:
        os.close(fd)
        try:
            os.unlink(cache.spare_path(ino))
        except FileNotFoundError:
            pass
    made = []
    for ino in make:
        try:
            made.append((ino, os.open(cache.spare_path(ino),
                                      os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)))
        except FileExistsError:
            continue
    return made


async def first_of(*events: trio.Event) -> None:
    """Return as soon as any of the events is set (the uploader's and the pin keeper's
    waits: new work, a flush, the link coming back)."""
    async with trio.open_nursery() as nursery:
        for ev in events:
            async def one(ev=ev) -> None:
                await ev.wait()
                nursery.cancel_scope.cancel()
            nursery.start_soon(one)


class Link:
    """Whether the server is reachable, as last seen. Lets network-bound operations fail
    fast while offline instead of each waiting for its own connection attempt."""

    RETRY_AFTER = 2.0

    def __init__(self) -> None:
        self.online = False
        self.last_error = ""
        self.since = time.time()
        self.changed = trio.Event()

    def up(self) -> None:
        if not self.online:
            oplog("link", state="online", offline_s=round(time.time() - self.since, 1))
            self.online, self.since, self.last_error = True, time.time(), ""
            self._wake()

    def down(self, why: str) -> None:
        self.last_error = why
        if self.online:
            oplog("link", state="offline", error=why)
            self.online, self.since = False, time.time()
            self._wake()

    def poke(self) -> None:
        """Someone wants the server tried again now (``gobi sync``, unmount)."""
        if not self.online:
            self.since = 0.0
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def should_try(self) -> bool:
        return self.online or time.time() - self.since >= self.RETRY_AFTER


@dataclass
class Handle:
    ino: int
    writable: bool
    manifest: list[tuple[int, int, str]] | None = None
    offsets: list[int] = field(default_factory=list)
    last_end: int = -1
    fetched: int = 0           # chunks this handle had to fetch (one log line at release)
    fetched_bytes: int = 0
    fetch_s: float = 0.0



@dataclass
class _Fetch:
    """A chunk fetch in flight: its waiters wake on ``done`` and take ``data`` (None: it
    failed or was cancelled)."""

    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None

class Vfs:
    def __init__(self, tree: Tree, cache: BlockCache, remote: Remote, link: Link,
                 uid: int, gid: int, spawn: Callable[..., None] | None = None):
        self.tree = tree
        self.cache = cache
        self.remote = remote
        self.link = link
        self.uid = uid
        self.gid = gid
        self.spawn = spawn
        self.lookups: dict[int, int] = {}
        self.opens: dict[int, int] = {}
        self.writers: dict[int, int] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self.fds: dict[int, int] = {}          # staging fds of open staged files
        self.gen: dict[int, int] = {}          # bumps on every content change
        self.queued: set[int] = set()          # dirty with a content upload queued
        self.mtimes: dict[int, int] = {}       # mtime of staged files not yet saved
        self.last_write: dict[int, float] = {}
        self._fetching: dict[str, _Fetch] = {}        # chunk hash -> its fetch in flight
        self._filling: dict[int, trio.Event] = {}     # ino -> materialize in progress
        self._orphans: set[int] = set()        # nodes that may be orphans waiting for a purge
        self.uploaded_gen: dict[int, int] = {}  # content generation the server has (sync barriers)
        self.fetched_chunks = 0
        self.fetched_bytes = 0
        self.cache_hits = 0                    # chunk reads served from the block cache
        self.cache_misses = 0                  # … that had to fetch
        self.fetch_seconds = Histogram()       # latency of chunk fetches (metrics)
        self.changed = trio.Event()            # content or journal changed: wake the uploader
        self.content_clean = trio.Event()      # an upload made a file clean (pins re-check)
        self._spare_used = trio.Event()        # spares running low (keep_spares)
        self._spares_until = 0                 # spares made for inode numbers below this
        self.foreground = Foreground()         # how busy the kernel keeps us (the uploader yields)
        self.atime = atime.DEFAULT             # when reads move the atime (``-o``; gobi.fs.atime)

    # -- attributes and lookup counts -------------------------------------------------------

    def size_of(self, e: Entry) -> int:
        if e.ino in self.cache._staged:
            return self.cache.staged_size(e.ino)
        return e.size

    def mtime_of(self, e: Entry) -> int:
        return self.mtimes.get(e.ino, e.mtime_ns)

    def accessed(self, ino: int) -> None:
        """A read of ``ino``'s content (or listing): its atime moves if the mount's rule says
        so. Local: the mirror keeps it, nothing is uploaded. Hot (every read): one lookup and
        a comparison unless it moves."""
        e = self.tree.get_opt(ino)
        if e is None or e.parent is None and ino != ROOT_INO:
            return
        now = time.time_ns()
        if atime.due(self.atime, e.atime_ns, self.mtimes.get(ino, e.mtime_ns), e.ctime_ns, now):
            self.tree.update(ino, atime_ns=now)

    def remember(self, ino: int) -> None:
        if ino != ROOT_INO:
            self.lookups[ino] = self.lookups.get(ino, 0) + 1

    def forget(self, ino: int, n: int) -> None:
        left = self.lookups.get(ino, 0) - n
        if left > 0:
            self.lookups[ino] = left
        else:
            self.lookups.pop(ino, None)
            # Only nodes known to have been removed need the mirror: a `ls -l` after
            # dropping the kernel's caches forgets every entry of the directory at once.
            if ino in self._orphans:
                self._try_purge(ino)

    def in_use(self, ino: int) -> bool:
        return ino in self.lookups or ino in self.opens

    def maybe_purge(self, ino: int) -> None:
        """``ino`` may have become an orphan (unlinked, replaced, removed remotely, its
        journal done): remove it once nobody refers to it any more."""
        self._orphans.add(ino)
        self._try_purge(ino)

    def _try_purge(self, ino: int) -> None:
        if self.in_use(ino):
            return
        e = self.tree.get_opt(ino)
        if e is None or e.parent is not None or e.ino == ROOT_INO:
            self._orphans.discard(ino)      # gone already, or alive again (revived)
            return
        if self.tree.journal.has_entries(e.id):
            return      # the uploader still needs its id and rev; it purges when done
        with self.tree.tx():
            self.tree.remove_row(ino)
        self.drop_staging(ino)
        self._orphans.discard(ino)

    def purge_orphans(self) -> None:
        for ino in self.tree.orphans():
            self.maybe_purge(ino)

    # -- staging ----------------------------------------------------------------------------

    def staged(self, ino: int) -> bool:
        return ino in self.cache._staged

    def _fd(self, ino: int) -> int:
        fd = self.fds.get(ino)
        if fd is None:
            fd = os.open(self.cache.staging_path(ino), os.O_RDWR)
            self.fds[ino] = fd
        return fd

    def drop_staging(self, ino: int, keep_as: str | None = None) -> None:
        """The local copy goes; ``keep_as``: it is exactly that chunk (verified content the
        server has), so it becomes the chunk's cache entry instead of being deleted."""
        fd = self.fds.pop(ino, None)
        if fd is not None:
            os.close(fd)
        if keep_as is None or not self.cache.adopt_staged(ino, keep_as):
            self.cache.drop_staged(ino)
        self.mtimes.pop(ino, None)

    def forget_manifests(self, ino: int) -> None:
        """The file's server content changed: open handles fetch the new chunk list."""
        for h in self.handles.values():
            if h.ino == ino:
                h.manifest = None

    def new_staging(self, ino: int) -> None:
        """An empty staged file (a new file, or one truncated to zero)."""
        fd = None if self.staged(ino) else self.cache.take_spare(ino)
        if fd is None:
            fd = os.open(self.cache.staging_path(ino), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        if self.tree.next_ino + SPARES // 2 > self._spares_until:
            self._spare_used.set()          # running low: make more
        old = self.fds.pop(ino, None)
        if old is not None:
            os.close(old)
        self.fds[ino] = fd
        self.cache.staged_empty(ino)

    async def keep_spares(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Keep empty staging files ready for the next ``SPARES`` inode numbers the mirror
        hands out (``gobi.fs.blocks``), made and removed in a worker thread: a create then
        costs no file creation on the request thread. Spares of numbers handed out without
        taking theirs (directories, symlinks) are removed."""
        cache = self.cache
        task_status.started()
        try:
            while True:
                self._spare_used = trio.Event()
                low = self.tree.next_ino
                stale = [(ino, cache.spares.pop(ino)) for ino in [i for i in cache.spares if i < low]]
                want = [i for i in range(low, low + SPARES) if i not in cache.spares]
                if stale or len(want) > SPARES // 2:
                    made = await trio.to_thread.run_sync(_spares, cache, stale, want)
                    self._spares_until = max(self._spares_until, want[-1] + 1 if want else 0)
                    low = self.tree.next_ino
                    late = []
                    for ino, fd in made:
                        if ino >= low:
                            cache.spares[ino] = fd
                        else:
                            late.append((ino, fd))  # handed out meanwhile: created its own copy
                    if late:
                        await trio.to_thread.run_sync(_spares, cache, late, [])
                    if made:
                        continue
                    # (None made: their names were taken, e.g. by files left in staging/. Wait
                    # for the next call rather than asking the disk again at once.)
                await self._spare_used.wait()
        finally:
            # Their descriptors go with the task (the files stay: empty spares under their
            # ``s<ino>`` names are cleared or used at the next start).
            for fd in cache.spares.values():
                os.close(fd)
            cache.spares.clear()

    async def materialize(self, ino: int) -> None:
        """Copy a clean file's content into staging so it can be changed in place.

        The copy is of the content the mirror shows when it is installed: the fetch awaits
        the network, and meanwhile the applier may apply another device's commit (the file
        is not held yet: no handle, nothing dirty). A copy of the older content under the
        newer ``content_rev`` made the next commit's base claim a version the writer never
        saw, and the server replaced that version without a conflict (a lost write, found
        by three clients overwriting shared files). So the fetch is repeated until the
        mirror did not move under it; a staging copy made meanwhile (``O_TRUNC`` through
        another handle) wins, the fetched one is dropped. One fill per file at a time."""
        while not self.staged(ino):
            pending = self._filling.get(ino)
            if pending is not None:
                await pending.wait()
                continue
            done = self._filling[ino] = trio.Event()
            try:
                await self._fill(ino)
            finally:
                del self._filling[ino]
                done.set()

    async def _fill(self, ino: int) -> None:
        while True:
            e = self.tree.get_opt(ino)
            if e is None:
                raise FsError(errno.ENOENT)
            if e.size == 0:
                self.new_staging(ino)
                return
            manifest = await self.manifest(e)
            path = self.cache.staging_path(ino)
            tmp = path.with_name(path.name + ".fill")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    for off, size, h in manifest:
                        if h == HOLE:
                            continue    # left unwritten: the copy keeps the hole
                        data = await self.chunk(h, size)
                        os.pwrite(fd, data, off)
                    os.ftruncate(fd, e.size)
                    held = held_bytes(os.fstat(fd))
                finally:
                    os.close(fd)
                now = self.tree.get_opt(ino)
                if self.staged(ino) or now is None or (now.content_rev, now.size) != (e.content_rev, e.size):
                    os.unlink(tmp)
                    if self.staged(ino):
                        return          # a new copy was made meanwhile (truncated to zero)
                    continue            # the mirror moved on: fetch what it shows now
                try:
                    self.cache.take_staged(ino, e.size, held)
                except CacheFull:
                    raise FsError(errno.ENOSPC) from None
                os.replace(tmp, path)
                return
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise

    # -- network reads ----------------------------------------------------------------------

    def _offline_error(self) -> FsError:
        return FsError(errno.ENETUNREACH, "server unreachable and the data is not cached")

    async def server_read(self, fn, *args, refused: Callable[[ApiError], FsError] | None = None):
        """A read from the server: fails fast while offline (``ENETUNREACH``), marks the
        link down or up; a refusal is ``EIO`` unless ``refused`` maps it."""
        if not self.link.should_try():
            raise self._offline_error()
        try:
            result = await fn(*args)
        except Offline as exc:
            self.link.down(str(exc))
            raise self._offline_error() from None
        except ApiError as exc:
            if refused is not None:
                raise refused(exc) from None
            log.warning("server refused a read: %s", exc)
            raise FsError(errno.EIO) from None
        self.link.up()
        return result

    layout = staticmethod(layout)

    async def manifest(self, e: Entry) -> list[tuple[int, int, str]]:
        if e.size == 0:
            return []
        if not e.manifest_known:
            rev, chunks = await self.server_read(self.remote.manifest, e.id, e.content_rev)
            e2 = self.tree.get_opt(e.ino)
            if e2 is not None and e2.content_rev == e.content_rev:
                with self.tree.tx():
                    self.tree.set_manifest(e.ino, rev, chunks)
            else:
                return self.layout(chunks)
        return self.tree.manifest(e.ino)

    async def chunk(self, chunk_hash: str, size: int, pin: bool = False,
                    handle: Handle | None = None) -> bytes:
        """A whole chunk: from the cache, or fetched, verified and cached (``pin``: kept
        out of eviction, for pinned files). ``handle`` is charged with the fetch.

        One fetch per chunk at a time; whoever asks meanwhile waits for it and gets its
        bytes from it, not from the cache: with the cache full (its cap taken by staged or
        pinned data) the chunk is not kept, and each waiter fetching it again in turn made
        reads crawl (and two of them racing for the in-flight slot raised ``KeyError``).
        A fetch that failed or was cancelled leaves its waiters to try themselves."""
        while True:
            data = self.cache.read(chunk_hash)
            if data is not None:
                if pin:
                    self.cache.pin(chunk_hash)
                return data
            pending = self._fetching.get(chunk_hash)
            if pending is None:
                break
            await pending.done.wait()
            if pending.data is not None:
                if pin:
                    self.cache.put(chunk_hash, pending.data, pin=True)
                return pending.data
        fetch = _Fetch()
        self._fetching[chunk_hash] = fetch
        try:
            t0 = time.perf_counter()
            data = await self.server_read(self.remote.get_chunk, chunk_hash)
            elapsed = time.perf_counter() - t0
            self.fetch_seconds.observe(elapsed)
            if len(data) != size or hashlib.sha256(data).hexdigest() != chunk_hash:
                log.error("chunk %s failed verification", chunk_hash)
                raise FsError(errno.EIO)
            self.fetched_chunks += 1
            self.fetched_bytes += len(data)
            if handle is not None:
                handle.fetched += 1
                handle.fetched_bytes += len(data)
                handle.fetch_s += elapsed
            # False: the cap is taken by staged and pinned data; serve it anyway.
            self.cache.put(chunk_hash, data, pin=pin)
            fetch.data = data
            return data
        finally:
            del self._fetching[chunk_hash]
            fetch.done.set()

    async def _prefetch(self, chunk_hash: str, size: int, handle: Handle) -> None:
        try:
            await self.chunk(chunk_hash, size, handle=handle)
        except FsError:
            pass

    # -- open files -------------------------------------------------------------------------

    def _new_handle(self, ino: int, writable: bool) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(ino, writable)
        self.opens[ino] = self.opens.get(ino, 0) + 1
        if writable:
            self.writers[ino] = self.writers.get(ino, 0) + 1
        return fh

    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Returns (fh, keep_cache)."""
        e = self.tree.get(ino)
        if e.is_dir:
            raise FsError(errno.EISDIR)
        if e.is_special:
            # The kernel opens FIFOs, sockets and devices itself and never asks; they have
            # no content to stage or fetch, whoever asks.
            raise FsError(errno.ENXIO)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if writable:
            if flags & os.O_TRUNC:
                self.new_staging(ino)
                self._changed(ino)
            else:
                await self.materialize(ino)
        elif not self.staged(ino):
            await self.manifest(e)        # fail at open, not at read, when it cannot be had
        return self._new_handle(ino, writable), not self.staged(ino)

    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> tuple[int, Entry]:
        e = self.tree.make(parent, name, "file", mode, uid, gid)
        self.new_staging(e.ino)
        self.queued.add(e.ino)          # the create uploads the content with it
        self.changed.set()
        return self._new_handle(e.ino, True), e

    def _changed(self, ino: int) -> None:
        self.gen[ino] = self.gen.get(ino, 0) + 1
        self.mtimes[ino] = time.time_ns()
        self.last_write[ino] = time.monotonic()
        if ino not in self.queued:
            self.tree.mark_dirty(ino)
            self.queued.add(ino)
            self.changed.set()

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handles[fh]
        if self.staged(h.ino):
            return os.pread(self._fd(h.ino), size, off)
        if h.manifest is None:
            h.manifest = await self.manifest(self.tree.get(h.ino))
            h.offsets = [m[0] for m in h.manifest]
        return await self.read_chunks(h, off, size)

    async def read_chunks(self, h: Handle, off: int, size: int) -> bytes:
        """Bytes ``off``..``off+size`` of a clean file whose chunk list is ``h.manifest``:
        from the block cache, or fetched and verified (``chunk``), with read-ahead for a
        sequential reader. Also the time-travel view's reads (``gobi.fs.timetravel``)."""
        if not h.manifest:
            return b""
        end_of_file = h.manifest[-1][0] + h.manifest[-1][1]
        end = min(off + size, end_of_file)
        out = []
        i = max(0, bisect.bisect_right(h.offsets, off) - 1)
        pos = off
        while pos < end and i < len(h.manifest):
            c_off, c_size, c_hash = h.manifest[i]
            lo, hi = pos - c_off, min(end, c_off + c_size) - c_off
            # A hole is zeros: no fetch, no cache entry.
            data = bytes(hi - lo) if c_hash == HOLE else self.cache.read(c_hash, lo, hi - lo)
            if data is None:
                self.cache_misses += 1
                data = (await self.chunk(c_hash, c_size, handle=h))[lo:hi]
            else:
                self.cache_hits += 1
            out.append(data)
            pos = c_off + c_size
            i += 1
        if self.spawn is not None and off == h.last_end:
            j = max(0, bisect.bisect_right(h.offsets, end) - 1)
            for c_off, c_size, c_hash in h.manifest[j + 1:j + 1 + READ_AHEAD]:
                if c_hash != HOLE and c_hash not in self.cache and c_hash not in self._fetching:
                    self.spawn(self._prefetch, c_hash, c_size, h)
        h.last_end = end
        return b"".join(out)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.handles[fh]
        if not self.staged(h.ino):
            await self.materialize(h.ino)
        fd = self._fd(h.ino)
        try:
            self.cache.reserve(h.ino, fd, off, len(buf))
        except CacheFull:
            raise FsError(errno.ENOSPC) from None
        n = os.pwrite(fd, buf, off)
        self.cache.measure(h.ino, fd, max(off + n, self.cache.staged_size(h.ino)))
        self._changed(h.ino)
        return n

    async def truncate(self, ino: int, size: int) -> None:
        e = self.tree.get(ino)
        if e.is_dir:
            raise FsError(errno.EISDIR)
        if not e.is_file:
            raise FsError(errno.EINVAL)
        if size == 0:
            if not (self.staged(ino) and self.cache.staged_size(ino) == 0):
                # (Already empty: the kernel truncates every file created with O_TRUNC
                # right after creating it; a second open of the copy would be wasted.)
                self.new_staging(ino)
        else:
            await self.materialize(ino)
            # Growing allocates nothing (the new part is a hole): no cap check. Shrinking
            # frees the blocks past the end: counted again.
            fd = self._fd(ino)
            os.ftruncate(fd, size)
            self.cache.measure(ino, fd, size)
        self._changed(ino)
        self.save_attrs(ino)

    def save_attrs(self, ino: int) -> None:
        """Persist size and mtime of a staged file (done at flush, fsync and release)."""
        if not self.staged(ino):
            return
        e = self.tree.get_opt(ino)
        if e is None:
            return
        size, mtime = self.cache.staged_size(ino), self.mtimes.get(ino, e.mtime_ns)
        if (size, mtime) != (e.size, e.mtime_ns):
            with self.tree.tx():
                self.tree.update(ino, size=size, mtime_ns=mtime)

    async def flush(self, fh: int) -> None:
        h = self.handles[fh]
        if h.writable:
            self.save_attrs(h.ino)

    async def fsync(self, fh: int | None, ino: int | None = None) -> None:
        """Data and metadata durable locally: staging fsynced, mirror + journal on disk."""
        if fh is not None:
            ino = self.handles[fh].ino
        if ino is not None and self.staged(ino):
            # A duplicate: another handle may replace the staging fd while we wait.
            fd = os.dup(self._fd(ino))
            try:
                await trio.to_thread.run_sync(os.fsync, fd)
            finally:
                os.close(fd)
            self.save_attrs(ino)
            await trio.to_thread.run_sync(_fsync_dir, self.cache.staging_dir)
        self.tree.durable()

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh)
        ino = h.ino
        if h.fetched:
            e = self.tree.get_opt(ino)
            oplog("fetch", path=self.tree.path_of(e) if e is not None else None, chunks=h.fetched,
                  bytes=h.fetched_bytes, ms=round(h.fetch_s * 1000, 1))
        self.opens[ino] -= 1
        if h.writable:
            self.writers[ino] -= 1
            if not self.writers[ino]:
                del self.writers[ino]
            self.save_attrs(ino)
            self.changed.set()           # a closed file is ready for upload
        if not self.opens[ino]:
            del self.opens[ino]
            e = self.tree.get_opt(ino)
            fd = self.fds.pop(ino, None)
            if fd is not None:
                os.close(fd)
            if e is not None and self.staged(ino) and not e.dirty and ino not in self.queued:
                self.drop_staging(ino)
            if e is None or e.parent is None or ino in self._orphans:
                self.maybe_purge(ino)

    # -- upload support (used by gobi.fs.sync) ----------------------------------------------

    def writable_now(self, ino: int, quiet: float) -> bool:
        """Is the file busy being written (open for writing and written recently)?"""
        if ino not in self.writers:
            return False
        return time.monotonic() - self.last_write.get(ino, 0) < quiet

    def upload_started(self, ino: int) -> int:
        self.queued.discard(ino)
        return self.gen.get(ino, 0)

    def uploaded(self, ino: int, gen: int, node_rev: int, content_rev: int,
                 chunks: list[ChunkRef], size: int) -> bool:
        """The server has the staged content as of ``gen``. True when it is clean now."""
        clean = self.gen.get(ino, 0) == gen and ino not in self.queued
        self.uploaded_gen[ino] = max(gen, self.uploaded_gen.get(ino, 0))
        with self.tree.tx():
            fields: dict[str, object] = {"rev": node_rev, "content_rev": content_rev}
            if clean:
                fields.update(dirty=0, size=size)
            self.tree.update(ino, **fields)
            if clean:
                self.tree.set_manifest(ino, content_rev, chunks)
        if clean and ino not in self.opens:
            # A one-chunk file's copy is that chunk: kept as its cache entry (reads after
            # the upload, e.g. a build after ``tar x``, stay local).
            one = chunks[0] if len(chunks) == 1 and chunks[0].size == size and not chunks[0].hole else None
            self.drop_staging(ino, keep_as=one.hash if one is not None else None)
        if clean:
            self.content_clean.set()
            self.content_clean = trio.Event()
        return clean
