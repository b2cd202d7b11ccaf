"""Time travel: a read-only view of the vault as it was at a seq or a time, in the mount.

``MOUNT/.gobi/at/<when>/…`` is the whole vault as it was at ``<when>``:

- ``@1234`` or ``1234``: at vault seq 1234 (what ``gobi sync`` prints, an event's seq);
- an ISO-8601 time: ``2026-11-26``, ``2026-11-26T10:00``, ``2026-11-26T10:00:00``, with
  ``Z`` or an offset (``+01:00``); without one it is the **local time** of the mount's
  machine. The server maps it to the last seq committed at or before it
  (``GET /vaults/{v}/seq?at=``).

The layer is virtual: nothing here is in the mirror (``gobi.fs.tree``) or the journal.
``.gobi`` is found by lookup at the vault root but never listed (``ls -a``, ``find``,
``rsync``, ``git``, ``du`` of the mount do not see it; a real node called ``.gobi`` in the
vault wins over it). ``.gobi/at`` lists nothing; any name that parses looks up a view.

A view's listing (``GET /tree?at=SEQ``) is fetched once, when first looked up, and kept
in memory: the last ``CACHED_SNAPSHOTS`` seqs. Inode numbers live above
``VIRTUAL_BASE`` (the mirror's are SQLite row ids, far below): ``VIRTUAL_BASE +
(slot << 32) + i`` where ``slot`` numbers each looked-up name (never reused) and ``i``
is the node's position in the listing sorted by id. A listing at a seq never changes,
so an evicted view is fetched again on the next request for one of its inodes and gives
the same numbers; the kernel's lookup counts need no bookkeeping here (``forget`` of a
virtual inode is a no-op). Each name has its own slot, so ``@5`` and ``5`` are two
directories with the same content (a directory inode must have one name only).

File content is read lazily like any clean file: the version's chunk list
(``GET /nodes/{id}/content?rev=``) at open, then the chunks through ``Vfs.read_chunks``
(block cache, fetch, SHA-256 verification, read-ahead). FIFOs, sockets and device nodes
show with their type bits and ``st_rdev``; the kernel opens those itself, never through
this layer.

Errors (``FsError``; the FUSE adapter converts them): every change under ``.gobi`` is
``EROFS``; a name that does not parse, a seq ahead of the head, a time in the future or
before the vault existed, and a seq or time older than the vault's kept history
(retention) are ``ENOENT`` (the last four with a log line saying why). A file version that
retention has thinned away fails at open with ``EIO`` (logged). Offline, lookups and
opens that need the server fail at once with ``ENETUNREACH``; an unanswered request
gives up after ``LIST_TIMEOUT``/``CALL_TIMEOUT`` with ``ETIMEDOUT``, never hangs.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections import OrderedDict
from datetime import datetime

import trio

from gobi.protocol import ROOT_ID, SPECIAL_KINDS, Node

from .logs import oplog
from .remote import ApiError
from .tree import FsError
from .vfs import Handle, Vfs

log = logging.getLogger(__name__)

#: The name at the vault root, and the one directory in it.
NAME = ".gobi"
AT = "at"
#: Virtual inodes (and file handles) start here; the mirror's inodes are row ids.
VIRTUAL_BASE = 1 << 60
GOBI_INO = VIRTUAL_BASE + 1
AT_INO = VIRTUAL_BASE + 2
SLOT_BITS = 32
#: Listings kept in memory (by seq).
CACHED_SNAPSHOTS = 4
#: Give up on a listing / a smaller request after this long (seconds).
LIST_TIMEOUT = 60.0
CALL_TIMEOUT = 20.0
#: A time later than now by more than this is "the future" (clock skew allowance).
FUTURE_SLACK = 2.0

#: Rows in ``Tree.LISTING`` order: (ino, name, kind, mode, size, mtime_ns, ctime_ns, uid, gid, rdev).
Row = tuple

_SEQ = re.compile(r"@?([0-9]{1,18})")


def is_virtual(ino: int) -> bool:
    return ino >= VIRTUAL_BASE


def parse_when(name: str) -> tuple[str, float]:
    """``("seq", n)`` or ``("time", unix seconds)``; ValueError when ``name`` is neither.
    A time without an offset is local time."""
    m = _SEQ.fullmatch(name)
    if m:
        return "seq", int(m.group(1))
    if not name[:4].isdigit():
        raise ValueError(name)
    when = datetime.fromisoformat(name)     # ValueError when malformed
    if when.tzinfo is None:
        when = when.astimezone()            # naive: this machine's local time
    return "time", when.timestamp()


class Snapshot:
    """The vault's live nodes at one seq, indexed for lookup and readdir."""

    def __init__(self, seq: int, nodes: list[Node]):
        self.seq = seq
        self.nodes = sorted(nodes, key=lambda n: n.id)
        index = {n.id: i for i, n in enumerate(self.nodes)}
        self.root = index[ROOT_ID]
        self.names: dict[tuple[int, str], int] = {}
        children: dict[int, list[int]] = {}
        for i, n in enumerate(self.nodes):
            p = index.get(n.parent) if n.parent is not None else None
            if p is None:
                continue
            self.names[(p, n.name)] = i
            children.setdefault(p, []).append(i)
        for kids in children.values():
            kids.sort(key=lambda i: self.nodes[i].name)
        self.children = children


class TimeTravel:
    def __init__(self, vfs: Vfs):
        self.vfs = vfs
        self.remote = vfs.remote
        self.started_ns = time.time_ns()
        self.slots: dict[int, int] = {}                 # slot -> seq
        self.slot_names: dict[str, int] = {}            # looked-up name -> slot
        self.snapshots: OrderedDict[int, Snapshot] = OrderedDict()   # seq -> listing (LRU)
        self._loading: dict[int, trio.Event] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = VIRTUAL_BASE
        self.listings = 0                               # listings fetched (metrics, tests)

    # -- server requests -----------------------------------------------------------------

    async def _server(self, what: str, timeout: float, fn, *args, gone: int = errno.ENOENT):
        """A server read for the view: ``ENETUNREACH`` at once while offline, ``ETIMEDOUT``
        after ``timeout``; a refusal is logged and becomes ``gone``."""
        def refused(exc: ApiError) -> FsError:
            why = {"cursor_expired": "older than the vault's kept history (retention)",
                   "bad_request": "refused",
                   "not_found": "not found"}.get(exc.code, exc.code)
            log.warning("time travel: %s: %s (server: %s)", what, why, exc.message)
            return FsError(gone if exc.code in ("cursor_expired", "bad_request", "not_found")
                           else errno.EIO)

        try:
            with trio.fail_after(timeout):
                return await self.vfs.server_read(fn, *args, refused=refused)
        except trio.TooSlowError:
            log.warning("time travel: %s: no answer within %.0f s", what, timeout)
            raise FsError(errno.ETIMEDOUT) from None

    async def snapshot(self, seq: int) -> Snapshot:
        """The listing at ``seq``: from memory, or fetched once (concurrent callers wait
        for the same fetch)."""
        while True:
            snap = self.snapshots.get(seq)
            if snap is not None:
                self.snapshots.move_to_end(seq)
                return snap
            pending = self._loading.get(seq)
            if pending is None:
                break
            await pending.wait()
            if seq not in self.snapshots:
                break
        done = self._loading[seq] = trio.Event()
        try:
            t0 = time.perf_counter()
            at, nodes = await self._server(f"the vault at seq {seq}", LIST_TIMEOUT,
                                           self.remote.tree, seq)
            snap = Snapshot(at, nodes)
            self.listings += 1
            oplog("timetravel", seq=seq, nodes=len(nodes), ms=round((time.perf_counter() - t0) * 1000, 1))
            self.snapshots[seq] = snap
            while len(self.snapshots) > CACHED_SNAPSHOTS:
                self.snapshots.popitem(last=False)
            return snap
        finally:
            del self._loading[seq]
            done.set()

    async def _resolve(self, name: str) -> int:
        """The slot of a name under ``.gobi/at`` (resolving a time to a seq once)."""
        slot = self.slot_names.get(name)
        if slot is not None:
            return slot
        try:
            kind, value = parse_when(name)
        except ValueError:
            raise FsError(errno.ENOENT) from None
        if kind == "seq":
            seq = int(value)
        else:
            if value > time.time() + FUTURE_SLACK:
                log.warning("time travel: %s is in the future", name)
                raise FsError(errno.ENOENT)
            seq, _ = await self._server(f"the seq at {name}", CALL_TIMEOUT, self.remote.seq_at, value)
        await self.snapshot(seq)        # ENOENT (logged) when ahead of the head or too old
        slot = self.slot_names[name] = len(self.slots) + 1
        self.slots[slot] = seq
        return slot

    # -- inodes --------------------------------------------------------------------------

    async def _node(self, ino: int) -> tuple[int, Snapshot, int]:
        slot, i = (ino - VIRTUAL_BASE) >> SLOT_BITS, (ino - VIRTUAL_BASE) & ((1 << SLOT_BITS) - 1)
        seq = self.slots.get(slot)
        if seq is None:
            raise FsError(errno.ENOENT)
        snap = await self.snapshot(seq)
        if i >= len(snap.nodes):
            raise FsError(errno.ENOENT)
        return slot, snap, i

    def _row(self, slot: int, snap: Snapshot, i: int, name: str | None = None) -> Row:
        n = snap.nodes[i]
        ino = VIRTUAL_BASE + (slot << SLOT_BITS) + i
        return (ino, n.name if name is None else name, n.kind.value, n.mode, n.size,
                n.mtime_ns, n.mtime_ns, None, None, n.rdev)

    def _dir_row(self, ino: int, name: str) -> Row:
        return (ino, name, "dir", 0o555, 0, self.started_ns, self.started_ns, None, None, 0)

    def root_entry(self) -> Row:
        """``.gobi`` itself (the adapter asks only when the mirror has no such name)."""
        return self._dir_row(GOBI_INO, NAME)

    async def lookup(self, parent: int, name: bytes) -> Row | None:
        """The entry, or None for a name that is not there and never will be (the kernel
        may cache that); ``FsError(ENOENT)`` when it might be there later."""
        text = name.decode("utf-8", "replace")
        if parent == GOBI_INO:
            if text == AT:
                return self._dir_row(AT_INO, AT)
            return None
        if parent == AT_INO:
            slot = await self._resolve(text)
            snap = await self.snapshot(self.slots[slot])
            return self._row(slot, snap, snap.root, text)
        slot, snap, i = await self._node(parent)
        child = snap.names.get((i, text))
        return None if child is None else self._row(slot, snap, child)

    async def getattr(self, ino: int) -> Row:
        if ino == GOBI_INO:
            return self._dir_row(GOBI_INO, NAME)
        if ino == AT_INO:
            return self._dir_row(AT_INO, AT)
        return self._row(*await self._node(ino))

    async def opendir(self, ino: int) -> int:
        if (await self.getattr(ino))[2] != "dir":
            raise FsError(errno.ENOTDIR)
        return ino

    async def listing(self, ino: int, offset: int, limit: int) -> list[tuple[int, Row]]:
        """Up to ``limit`` entries after readdir offset ``offset``, each with its offset."""
        if ino == GOBI_INO:
            rows = [self._dir_row(AT_INO, AT)]
            return [(k + 1, r) for k, r in enumerate(rows)][offset:offset + limit]
        if ino == AT_INO:
            return []
        slot, snap, i = await self._node(ino)
        kids = snap.children.get(i, [])[offset:offset + limit]
        return [(offset + k + 1, self._row(slot, snap, c)) for k, c in enumerate(kids)]

    async def readlink(self, ino: int) -> str:
        if ino in (GOBI_INO, AT_INO):
            raise FsError(errno.EINVAL)
        _, snap, i = await self._node(ino)
        n = snap.nodes[i]
        if n.kind.value != "symlink":
            raise FsError(errno.EINVAL)
        return n.target or ""

    # -- content -------------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> int:
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            raise FsError(errno.EROFS)
        if ino in (GOBI_INO, AT_INO):
            raise FsError(errno.EISDIR)
        _, snap, i = await self._node(ino)
        n = snap.nodes[i]
        if n.kind.value == "dir":
            raise FsError(errno.EISDIR)
        if n.kind in SPECIAL_KINDS:
            raise FsError(errno.ENXIO)      # no content; the kernel never asks for one
        manifest: list[tuple[int, int, str]] = []
        if n.size:
            _, chunks = await self._server(
                f"{n.name!r} (node {n.id}) content version {n.content_rev} at seq {snap.seq}",
                CALL_TIMEOUT, self.remote.manifest, n.id, n.content_rev, gone=errno.EIO)
            manifest = self.vfs.layout(chunks)
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(ino, False, manifest=manifest, offsets=[m[0] for m in manifest])
        return fh

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.vfs.read_chunks(self.handles[fh], off, size)

    def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is not None and h.fetched:
            oplog("fetch", path=".gobi", chunks=h.fetched, bytes=h.fetched_bytes,
                  ms=round(h.fetch_s * 1000, 1))

    def status(self) -> dict:
        return {"timetravel_views": len(self.slot_names), "timetravel_listings": self.listings}


__all__ = ["AT_INO", "GOBI_INO", "NAME", "VIRTUAL_BASE", "Snapshot", "TimeTravel", "is_virtual",
           "parse_when"]
