"""What the uploader is doing, file by file, and barriers for ``gobi sync --wait``.

``UploadProgress`` is told by the uploader (``gobi.fs.sync``) when a journal entry starts
(``started``), how many bytes of a file's content it is about to send (``pushing``), each
chunk sent (``sent``) and how the entry ended (``finished``). From that it keeps:

- the uploads in flight with per-file progress, for ``gobi status`` (``queue``) and for
  ``user.gobi.state`` (``uploading_nodes``);
- one log line per finished entry (``upload op=… path=… bytes=… ms=… result=…``) and the
  per-operation counts and latency histograms of the metrics.

**Barriers.** ``gobi sync --wait`` registers a barrier (``register_barrier``) that
snapshots every local change made so far: the journal's last entry and the files whose
content was changed but not uploaded yet, with their content generation. The barrier is
done when no journal entry up to that point is left and each of those files has been
uploaded at that generation or later (or is clean, or was deleted). Changes made after the
barrier do not hold it back, so it finishes even while something keeps writing. Its answer
then carries the vault seq at which all of it is on the server (the vault's head seq,
asked once), which another machine can wait for.
"""

from __future__ import annotations

import errno
import heapq
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .logs import oplog
from .metrics import Histogram
from .tree import ROOT_INO, FsError

log = logging.getLogger(__name__)

MAX_BARRIERS = 64
BARRIER_TTL = 3600.0
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESULTS = ("ok", "refused", "offline", "retry", "error")


@dataclass
class Upload:
    seq: int
    op: str
    node: str
    path: str | None
    ino: int | None
    started: float = field(default_factory=time.monotonic)
    size: int = 0          # content uploads: the file's size
    to_send: int = 0       # … bytes of chunks the server lacks
    sent: int = 0          # … of which sent

    def as_dict(self) -> dict:
        return {"seq": self.seq, "op": self.op, "path": self.path, "state": "uploading",
                "size": self.size, "to_send": self.to_send, "sent": self.sent,
                "seconds": round(time.monotonic() - self.started, 1)}


@dataclass
class Barrier:
    token: str
    head: int                              # last journal seq when registered
    dirty: dict[int, int]                  # ino -> content generation when registered
    entries: int                           # journal entries up to ``head`` then
    bytes: int                             # content bytes to upload then (data, no holes)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    seq: int | None = None                 # vault seq that holds everything (once done)
    error: str = ""


class UploadProgress:
    def __init__(self, tree, vfs, cache, server_seq: Callable[[], Awaitable[int]] | None = None):
        self.tree = tree
        self.vfs = vfs
        self.cache = cache
        self.server_seq = server_seq
        self.active: dict[int, Upload] = {}
        self._by_ino: dict[int, list[Upload]] = {}
        self.results: dict[tuple[str, str], int] = {}
        self.durations: dict[str, Histogram] = {}
        self.barriers: dict[str, Barrier] = {}

    # -- hooks for the uploader -------------------------------------------------------------

    def started(self, entry) -> None:
        row = self.tree.by_id(entry.node)
        path = None
        if row is not None:
            path = self.tree.path_of(row) if row.parent is not None or row.ino == ROOT_INO else None
        up = Upload(entry.seq, entry.op, entry.node, path, row.ino if row is not None else None)
        self.active[entry.seq] = up
        if up.ino is not None:
            self._by_ino.setdefault(up.ino, []).append(up)

    def pushing(self, ino: int, size: int, to_send: int) -> None:
        for up in self._by_ino.get(ino, ()):
            up.size, up.to_send, up.sent = size, to_send, 0

    def sent(self, ino: int, nbytes: int) -> None:
        for up in self._by_ino.get(ino, ()):
            up.sent += nbytes

    def finished(self, entry, result: str, error: str = "") -> None:
        """``result``: ok, refused (the server said no for good), offline, retry (the file
        changed during the upload, or a bug: the entry stays queued), error."""
        up = self.active.pop(entry.seq, None)
        if up is None:
            return
        if up.ino is not None:
            ups = self._by_ino.get(up.ino, [])
            if up in ups:
                ups.remove(up)
            if not ups:
                self._by_ino.pop(up.ino, None)
        elapsed = time.monotonic() - up.started
        key = (up.op, result)
        self.results[key] = self.results.get(key, 0) + 1
        self.durations.setdefault(up.op, Histogram()).observe(elapsed)
        oplog("upload", level=logging.INFO if result in ("ok", "retry") else logging.WARNING,
              op=up.op, path=up.path or f"<node {up.node}>", bytes=up.sent if up.to_send else None,
              size=up.size or None, ms=round(elapsed * 1000, 1), result=result, error=error or None)

    # -- questions --------------------------------------------------------------------------

    def uploading_nodes(self) -> set[str]:
        return {u.node for u in self.active.values()}

    def queue(self, limit: int = 20) -> list[dict]:
        """The upload queue for ``gobi status``: uploads in flight, then the next waiting
        entries in journal order, with paths."""
        out = [u.as_dict() for u in heapq.nsmallest(limit, self.active.values(), key=lambda u: u.seq)]
        for e in self.tree.journal.entries(0, limit + len(self.active)):
            if len(out) >= limit:
                break
            if e.seq in self.active:
                continue
            row = self.tree.by_id(e.node)
            size = self.cache.staged_size(row.ino) if row is not None and e.op in ("content", "create") else 0
            path = self.tree.path_of(row) if row is not None and row.parent is not None else None
            out.append({"seq": e.seq, "op": e.op, "path": path, "state": "waiting", "size": size,
                        "waited": round(max(0.0, time.time() - e.ts), 1)})
        return out

    # -- barriers ---------------------------------------------------------------------------

    def register_barrier(self, token: str) -> None:
        if not TOKEN_RE.match(token):
            raise FsError(errno.EINVAL)
        self._expire()
        journal = self.tree.journal
        head = journal.last_seq()
        entries = journal.count()
        dirty = {ino: self.vfs.gen.get(ino, 0) for ino in self.tree.dirty_inodes()
                 if (e := self.tree.get_opt(ino)) is not None and e.parent is not None}
        nbytes = sum(self.cache.staged_data(ino) for ino in dirty)
        self.barriers[token] = Barrier(token, head, dirty, entries, nbytes)

    def _expire(self) -> None:
        now = time.time()
        for token, b in list(self.barriers.items()):
            if now - b.created > BARRIER_TTL:
                del self.barriers[token]
        while len(self.barriers) >= MAX_BARRIERS:
            del self.barriers[next(iter(self.barriers))]

    def _files_left(self, b: Barrier) -> list[int]:
        """The barrier's files whose content (as it was then) is not on the server yet.
        A file found done stays done (its content of then went, or it went away), so it is
        dropped from the barrier: `gobi sync` polls ten times a second, and a poll must cost
        what is left, not what was there (10,000 files after a ``tar x``)."""
        done = []
        for ino, gen in b.dirty.items():
            e = self.tree.get_opt(ino)
            if e is None or e.parent is None or not e.dirty \
                    or self.vfs.uploaded_gen.get(ino, -1) >= gen:
                done.append(ino)
        for ino in done:
            del b.dirty[ino]
        return list(b.dirty)

    async def barrier_state(self, token: str) -> dict | None:
        b = self.barriers.get(token)
        if b is None:
            return None
        entries = self.tree.journal.count_upto(b.head)
        files = self._files_left(b) if b.finished is None else []
        bytes_left = sum(self.cache.staged_data(ino) for ino in files)
        if b.finished is None and entries == 0 and not files:
            b.finished = time.time()
        if b.finished is not None and b.seq is None:
            await self._resolve_seq(b)
        return {"token": b.token, "done": b.finished is not None and b.seq is not None,
                "online": self.vfs.link.online,
                "entries": b.entries, "entries_left": entries, "bytes": b.bytes,
                "bytes_left": bytes_left, "files_left": len(files), "seq": b.seq,
                "error": b.error, "since": b.created,
                # The first few only: `gobi sync` asks ten times a second, and thousands of
                # entries may be in flight (a tar x).
                "uploading": [u.as_dict() for u in heapq.nsmallest(8, self.active.values(),
                                                                   key=lambda u: u.seq)]}

    async def _resolve_seq(self, b: Barrier) -> None:
        """The vault seq that includes everything the barrier waited for."""
        if self.server_seq is None:
            b.seq = int(self.tree.meta("last_seq", "0") or 0)
            return
        try:
            b.seq = await self.server_seq()
            b.error = ""
        except Exception as exc:          # offline right after the last upload: ask again
            b.error = f"cannot ask the server for its seq: {exc}"

    # -- metrics ----------------------------------------------------------------------------

    def metric_families(self, c) -> list:
        active = c.gauge("gobi_mount_uploads_in_flight", "Journal entries being sent now",
                         len(self.active))
        results = c.family("counter", "gobi_mount_upload_results",
                           "Journal entries sent, by operation and result", ("op", "result"))
        for (op, result), n in sorted(self.results.items()):
            results.add_metric([c.mount, op, result], n)
        dur = c.family("histogram", "gobi_mount_upload_duration_seconds",
                       "Time to send one journal entry (content: chunks and commit)", ("op",))
        for op, h in sorted(self.durations.items()):
            c.histogram("", "", h, values=(op,), fam=dur)
        return [active, results, dur]


__all__ = ["UploadProgress"]
