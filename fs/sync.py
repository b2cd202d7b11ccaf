"""Local changes to the server: the uploader.

Replays the journal against the server in order, several entries at once when they cannot
depend on each other (see ``_runnable``), and only one task at a time while the kernel is
busy with a stream of requests (foreground first, ``gobi.fs.foreground``; a single edit
does not make it busy). New nodes wait ``settle`` seconds before they are
sent (unless a flush was asked for), so temporary files are dropped by coalescing before
they cost a request; edits, renames and deletes of existing nodes go at once. ``content``
entries of a file that is open for writing and was written in the last ``quiet`` seconds
are deferred (later entries go first), so a file is not uploaded half-written.

**How each entry travels.** Metadata operations (create, rename/move, setattr, delete,
link) go over the live WebSocket when it is connected (``gobi.fs.events``: an ``op`` frame with
a request id, answered ``ack``/``nack``), else over REST. Content: FastCDC chunks of the
staged copy's data extents (``gobi.chunking.pieces_of_sparse_file``: its holes of 64 KiB
and more become hole entries, never read, hashed or sent), the missing chunks uploaded
(verified against their hash first, so a concurrent write cannot smuggle in wrong bytes),
then the manifest committed with its base revision. When several small entries are ready at once (``tar x``, ``cp
-r``, ``rm -r``), they go as one batch: their chunks in ``POST /chunks`` and the operations
in ``POST /ops`` — two requests for up to ``BATCH_MAX`` files instead of two per file.

**Conflicts are the server's.** Every write carries ``on_conflict: "strategy"``: the
server applies the vault's conflict strategy and answers what it did (a ``WriteOutcome``).
The mount acts on it (``_finish_*``): a conflicted copy appears in the mirror with the
chunks we just uploaded; a file whose local version lost shows the server's; a delete the
server did not apply (the modification survives) puts the node back; a delete the server
holds as part of a mass delete stays deleted here (``gobi.fs.held``: other devices keep
the file until the owner decides); two directories of one name merge (the local id is
replaced by the server's). One
exception: a commit that may have reached the server before (replayed after a crash or a
lost answer) is first sent without a strategy, so a replay of our own commit is
recognised (the head's manifest equals ours) instead of becoming a conflict with
ourselves.

Every op is safe to replay (the entry is deleted only once the server acknowledged it):
creates carry client-chosen ids, and strategies make the rest idempotent. Unreachable
server → ``Offline`` → retry with exponential backoff and jitter; the mount keeps working
from the mirror meanwhile. A ``503`` with ``Retry-After`` on a chunk (the garbage collector
is deleting it) is retried after the delay without calling the server offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from gobi.chunking import pieces_of_sparse_file
from gobi.protocol import ROOT_ID, ChunkRef, ConflictInfo, ErrorCode, Node, WriteOutcome

from .blocks import BlockCache
from .events import Live, NotConnected
from .held import hold_of
from .journal import Entry
from .progress import UploadProgress
from .remote import ApiError, Busy, Offline, Remote, RemoteError, error_from_body
from .states import ServerStates
from .tree import HOLE, Tree
from .vfs import Link, Vfs, first_of

log = logging.getLogger(__name__)

UPLOAD_CONCURRENCY = 8       # tasks in flight at once (and chunk PUTs per file)
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
SLOTS_RECHECK = 0.05        # all slots taken: look again after this at the latest
BUSY_MAX_DELAY = 10.0       # …but changes older than this upload anyway, one task at a time
SMALL_FILE = 256 * 1024      # files up to this size skip the 'which chunks are missing' round trip
BATCH_MIN = 4                # this many small ready entries go as one batch
BATCH_MAX = 500              # entries per batch (POST /ops takes 1000)
BATCH_BYTES = 6 * 1024 * 1024
CHUNK_RETRIES = 5
OWN_REBASES = 5              # an op re-based on our own newer head this often, then the strategy


def _cut(path, with_data: bool) -> list[tuple[int, int, str | None, bytes | None]]:
    """``(offset, size, hash, bytes)`` of a staged copy's pieces; a hole's hash and bytes are
    None. Runs in a worker thread. ``with_data`` False: the bytes are not kept."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(p.offset, p.size, p.hash, data if with_data else None)
                for p, data in pieces_of_sparse_file(fd)]
    finally:
        os.close(fd)


def _refs(pieces) -> list[ChunkRef]:
    return [ChunkRef.zeros(p[1]) if p[2] is None else ChunkRef(hash=p[2], size=p[1]) for p in pieces]


def _identity(chunks: list[dict]) -> list[list]:
    """What a commit's manifest is, comparable with another's: ``[hash, size]`` per entry
    (a hole has no hash, so its size says which hole it is)."""
    return [[c.get("hash"), c["size"]] for c in chunks]


class _Changed(Exception):
    """The staged file changed while it was being uploaded: try again later."""


@dataclass
class _Op:
    """One journal entry made ready to send: the wire operation and what to do with the
    answer."""

    entry: Entry
    op: str                                   # create | update | delete | commit
    node: str | None
    args: dict
    finish: Callable[[WriteOutcome], None]
    refused: Callable[[ApiError], bool] | None = None   # True: handled (entry done)
    chunks: list[tuple[str, bytes]] = field(default_factory=list)   # batch: upload first
    settle: list[Node] = field(default_factory=list)    # states to apply once done
    subtrees: list[str] = field(default_factory=list)   # directories to re-read once done
    refetch: list[str] = field(default_factory=list)    # nodes to re-read once done
    retry_with_strategy: bool = False
    rebased: int = 0        # times ``_own_replay`` based it on a head of ours (bounded)


class Sync:
    def __init__(self, tree: Tree, vfs: Vfs, cache: BlockCache, remote: Remote, link: Link,
                 device: str, states: ServerStates, live: Live | None = None,
                 settle: float = 1.0, quiet: float = 2.0):
        self.tree = tree
        self.journal = tree.journal
        self.vfs = vfs
        self.cache = cache
        self.remote = remote
        self.link = link
        self.device = device
        self.states = states
        self.live = live
        self.settle = settle
        self.quiet = quiet
        self.flushing = False
        self.skip_drain = False      # `gobi umount` already waited: exit right after unmount
        self.active: dict[int, str] = {}   # journal seq → what is being sent (for status)
        self.kick = trio.Event()           # set by flush(): stop waiting, send now
        self._backoff = BACKOFF_MIN
        self._resume_at = 0.0              # offline backoff: no new uploads before this
        self._tasks = 0
        # Entries that may have reached the server already (present when the mount started,
        # or whose answer was lost): their commits are checked against our own first.
        # node id -> the chunk lists of its commits whose answer was lost: a later commit
        # that meets one of them as the head meets our own older content, not a conflict.
        self._unanswered: dict[str, list[list[str]]] = {}
        # Entries a batch's answer refused in a way only a request of their own handles
        # (a conflict to check against our own changes): never batched again.
        self._alone: set[int] = set()
        self.uploaded_ops = 0
        self.uploaded_chunks = 0
        self.uploaded_bytes = 0
        self.batches = 0
        self.foreground_yields = 0   # times uploads held back for a stream of kernel requests
        self.ws_ops = 0
        self.failures: list[str] = []
        self.conflicts: list[dict] = []    # conflicts our uploads met, newest last
        self.idle = trio.Event()
        self._ops_at_idle = 0
        self._finished = trio.Event()
        self._lost_open: dict[int, tuple[int, Node]] = {}   # ino -> losing switch waiting for close
        self._pauses = 0                   # paused(): no new entry starts while > 0
        self._resumed = trio.Event()
        self.journal.on_append = lambda: self.vfs.changed.set()
        # Told of each entry's start, bytes and end (``gobi.fs.progress``: per-file
        # progress, upload log lines and metrics); set by the composition root.
        self.progress: UploadProgress | None = None

    # -- status -----------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self.states.last_seq

    def queued_bytes(self) -> int:
        """Bytes of changed content not on the server yet: the data the staging copies
        hold (a sparse file's holes are not sent, so they do not count)."""
        return sum(self.cache.staged_data(ino) for ino in self.tree.dirty_inodes())

    def status(self) -> dict:
        return {
            "online": self.link.online,
            "last_error": self.link.last_error,
            "pending_ops": self.journal.count(),
            "pending_by_op": self.journal.counts(),
            "queued_bytes": self.queued_bytes(),
            "uploading": ", ".join(list(self.active.values())[:3])
                         + (f" (+{len(self.active) - 3})" if len(self.active) > 3 else ""),
            "uploaded_ops": self.uploaded_ops,
            "uploaded_chunks": self.uploaded_chunks,
            "uploaded_bytes": self.uploaded_bytes,
            "upload_batches": self.batches,
            "foreground_yields": self.foreground_yields,
            "ws_ops": self.ws_ops,
            "fetched_chunks": self.vfs.fetched_chunks,
            "fetched_bytes": self.vfs.fetched_bytes,
            "cache_used": self.cache.used,
            "cache_staged": self.cache.staged_bytes,
            "cache_cap": self.cache.cap,
            "last_seq": self.last_seq,
            "nodes": self.tree.count(),
            "failures": self.failures[-10:],
            "conflicts": self.conflicts[-10:],
        }

    @contextlib.asynccontextmanager
    async def paused(self, wait: float = 60.0):
        """No upload starts inside; entered once the ones in flight have finished (``gobi
        verify`` compares the mirror with the server while no acknowledgement moves it).
        Raises ``trio.TooSlowError`` when uploads in flight do not finish within ``wait``."""
        self._pauses += 1
        try:
            with trio.fail_after(wait):
                while self._tasks:
                    await self._finished_event().wait()
            yield
        finally:
            self._pauses -= 1
            if not self._pauses:
                self._resumed.set()
                self._resumed = trio.Event()

    def flush(self) -> None:
        """Send everything now (no settle delay); used by ``gobi sync`` and unmount."""
        self.flushing = True
        self._resume_at = 0.0
        self.kick.set()
        self.kick = trio.Event()
        self.link.poke()
        if self.live is not None:
            self.live.poke()

    # -- scheduling -------------------------------------------------------------------------

    @staticmethod
    def _take_free(e: Entry) -> tuple[set[str], set[str]]:
        """Directories where an entry takes a name, and where it frees one."""
        a = e.args
        if e.op in ("create", "link"):
            return {a["parent"]}, set()
        if e.op == "move":
            return {a["parent"]}, {a.get("from") or a["parent"]}
        if e.op == "delete":
            return set(), ({a["parent"]} if a.get("parent") else set())
        return set(), set()

    def _runnable(self, room: int) -> tuple[list[Entry], float]:
        """Entries that may start now, in journal order, and how long to wait otherwise.

        An entry waits for every earlier unfinished entry it could depend on on the
        server: the same node; its parent (created or moved first); its children (a
        directory is deleted after them); an earlier entry that frees a name in the
        directory where it takes one; and, for a move that replaces, earlier entries
        taking names there. Creates (and deletes) in one directory are independent, so
        ``tar x``, ``cp -r`` and ``rm -r`` upload in parallel (or in one batch). Only
        creates wait for ``settle``; an unsettled create blocks what depends on it.
        """
        now = time.time()
        picks: list[Entry] = []
        nodes: set[str] = set()         # nodes of earlier unfinished entries
        used: set[str] = set()          # directories those entries take or free names in
        taking: set[str] = set()
        freeing: set[str] = set()
        wait = 3600.0
        after = 0
        scanned = 0
        while len(picks) < room and scanned < 4000:
            # Small first batch: usually the next runnable entry is among the first few.
            batch = self.journal.entries(after, 32 if scanned == 0 else 512)
            if not batch:
                break
            after = batch[-1].seq
            for e in batch:
                scanned += 1
                if e.op == "content" and e.seq not in self.journal.inflight:
                    row = self.tree.by_id(e.node)
                    if row is not None and self.vfs.writable_now(row.ino, self.quiet):
                        wait = min(wait, self.quiet)
                        continue    # deferred: blocks nothing, waits for the writer
                take, free = self._take_free(e)
                replace = e.op == "move" and e.args.get("replace")
                # ``of``: another node the entry waits for (a link: its file's create; a
                # delete of a further name or a commit after a hand-over: the commits and
                # deletes of the file's other name), and that node's later entries wait
                # for it (a delete of the name a link was made from).
                of = e.args.get("of")
                blocked = (e.node in nodes or e.node in used or bool(take & nodes)
                           or bool(take & freeing) or bool(replace and take & taking)
                           or (of is not None and of in nodes))
                nodes.add(e.node)
                if of is not None:
                    nodes.add(of)
                used |= take | free
                taking |= take
                freeing |= free
                if e.seq in self.journal.inflight or blocked:
                    continue
                if e.op == "create" and not self.flushing and now - e.ts < self.settle:
                    wait = min(wait, self.settle - (now - e.ts))
                    continue
                picks.append(e)
                if len(picks) >= room:
                    break
        return picks, wait

    def _batchable(self, e: Entry) -> bool:
        if e.node in self._unanswered or e.seq in self._alone:
            return False        # its conflicts are checked against our lost commits, alone
        row = self.tree.by_id(e.node)
        if e.op == "delete":
            # A delete of a node never acknowledged here (base 0: e.g. the name a linked
            # file was handed over from) fails first and is checked alone (``_own_replay``).
            return row is not None and row.rev > 0 and row.inode is None
        if e.op in ("move", "attr"):
            return not e.args.get("detached")     # (reads the head first: alone)
        if e.op == "create":
            if row is None or not row.is_file or not row.dirty or not self.vfs.staged(row.ino):
                return True
            return (self.cache.staged_size(row.ino) <= SMALL_FILE
                    and not self.vfs.writable_now(row.ino, self.quiet))
        if e.op == "content":
            return (row is not None and row.parent is not None and row.dirty
                    and self.vfs.staged(row.ino) and self.cache.staged_size(row.ino) <= SMALL_FILE
                    and not self._maybe_sent_before(e))
        return False

    async def run_uploader(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                changed = self.vfs.changed = trio.Event()
                kick = self.kick
                finished = self._finished_event()
                if self._lost_open:
                    self._switch_lost()               # files closed: show the server's version
                self.states.retry()                   # files closed, holds ended
                if time.monotonic() < self._resume_at:
                    with trio.move_on_after(self._resume_at - time.monotonic()):
                        await first_of(self.link.changed, kick)
                    self._resume_at = 0.0
                    continue
                if not self.link.should_try():
                    with trio.move_on_after(Link.RETRY_AFTER):
                        await first_of(self.link.changed, kick)
                    continue
                if self._pauses:
                    await self._resumed.wait()
                    continue
                # Foreground first: while the kernel keeps sending a stream of requests
                # (``gobi.fs.foreground``: bulk work, not a single edit), uploads (which
                # share this thread) wait, unless changes have waited BUSY_MAX_DELAY already:
                # then one task at a time (a batch when many small changes are ready), so a
                # long copy still becomes durable on the server as it goes.
                busy = self.vfs.foreground.busy_for()
                if busy and not self.flushing:
                    self.foreground_yields += 1
                    oldest = self.journal.oldest_ts()
                    late = oldest is not None and time.time() - oldest > BUSY_MAX_DELAY
                    slots = (1 if late else 0) - self._tasks
                else:
                    slots = UPLOAD_CONCURRENCY - self._tasks
                if slots <= 0:
                    # Busy: until the stream could have ended (looked at again then), not a
                    # fixed period (that put the change one whole period late when a request
                    # came during it). Either way a finished task wakes us.
                    with trio.move_on_after(busy or SLOTS_RECHECK):
                        await finished.wait()
                    continue
                picks, wait = self._runnable(BATCH_MAX)
                started = self._start(nursery, picks, slots)
                if started:
                    await trio.sleep(0)
                    continue
                if self._tasks == 0 and self.journal.count() == 0:
                    self.flushing = False
                    self.idle.set()
                    self.idle = trio.Event()
                # Wake on: a finished upload, a flush, new work (unless only the settle
                # delay holds the queue: then new work cannot be earlier than it).
                settling = wait < 3600.0 and not self.flushing and self.journal.count() > 0
                with trio.move_on_after(wait):
                    if settling:
                        await first_of(kick, finished, changed)
                    else:
                        await first_of(changed, kick, finished)

    def _start(self, nursery: trio.Nursery, picks: list[Entry], slots: int) -> int:
        started = 0
        batch: list[Entry] = []
        singles: list[Entry] = []
        if len(picks) >= BATCH_MIN:
            for e in picks:
                (batch if self._batchable(e) else singles).append(e)
            if len(batch) < BATCH_MIN:
                singles, batch = picks, []
        else:
            singles = picks
        if batch and slots > 0:
            for e in batch:
                self.journal.inflight.add(e.seq)
            self._tasks += 1
            nursery.start_soon(self._run_batch, batch)
            slots -= 1
            started += 1
        for e in singles[:max(0, slots)]:
            self.journal.inflight.add(e.seq)
            self._tasks += 1
            nursery.start_soon(self._run_one, e)
            started += 1
        return started

    def _finished_event(self) -> trio.Event:
        if self._finished.is_set():
            self._finished = trio.Event()
        return self._finished

    # -- running entries ----------------------------------------------------------------------

    def _offline(self, exc: Offline) -> None:
        self.link.down(str(exc))
        delay = self._backoff * (0.5 + random.random())
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        self._resume_at = max(self._resume_at, time.monotonic() + delay)
        log.info("offline (%s); retrying in %.1fs", exc, delay)

    def _started(self, entry: Entry) -> None:
        if self.progress is not None:
            self.progress.started(entry)

    def _ended(self, entry: Entry, result: str, error: str = "") -> None:
        if self.progress is not None:
            self.progress.finished(entry, result, error)

    async def _run_one(self, entry: Entry) -> None:
        op: _Op | None = None
        try:
            self.active[entry.seq] = f"{entry.op} {entry.node}"
            self._started(entry)
            op = await self._prepare(entry, batch=False)
            if op is not None:
                await self._send(op)
        except Offline as exc:
            self.journal.lost_answer(entry.seq)
            self._unanswered_commit(op)
            self._offline(exc)
            self.journal.inflight.discard(entry.seq)
            self._ended(entry, "offline", str(exc))
            return
        except _Changed:
            self.journal.inflight.discard(entry.seq)
            self._ended(entry, "retry", "changed while uploading")
            return
        except ApiError as exc:
            # The server refused for good: record it, do not block the queue for ever.
            msg = f"{entry.op} {entry.node}: {exc}"
            log.error("upload refused: %s", msg)
            self.failures.append(msg)
            self._ended(entry, "refused", str(exc))
            op = self._resync_op(entry, exc)
        except Exception as exc:
            # A bug must not take the mount down or drop the change: keep the entry,
            # say so, retry later.
            log.exception("upload of %s %s failed", entry.op, entry.node)
            self.failures.append(f"{entry.op} {entry.node}: {type(exc).__name__}: {exc}")
            self._resume_at = max(self._resume_at, time.monotonic() + BACKOFF_MAX)
            self.journal.inflight.discard(entry.seq)
            self._ended(entry, "error", f"{type(exc).__name__}: {exc}")
            return
        else:
            self._ended(entry, "ok")
        finally:
            self.active.pop(entry.seq, None)
            self._tasks -= 1
            self._finished_event().set()
        await self._done(entry, op)

    async def _done(self, entry: Entry, op: _Op | None, retry: bool = True) -> None:
        """The entry reached the server: drop it from the journal, settle the mirror.
        ``retry``: then re-try deferred remote states (a batch does that once at its end:
        its own echoes, deferred while it was in flight, would make it quadratic)."""
        self.link.up()
        self._backoff = BACKOFF_MIN
        with self.tree.tx():
            self.journal.done(entry.seq)
        self._alone.discard(entry.seq)
        self.uploaded_ops += 1
        if op is not None and op.op in ("commit", "delete", "create"):
            # answered: the head is known now
            self._unanswered.pop(op.node or op.args.get("id"), None)
        if op is not None:
            for node in op.settle:
                self.states.apply_node(node, ack=True)
            for node_id in op.refetch:
                try:
                    self.states.apply_node(await self.remote.node(node_id), ack=True)
                except RemoteError as exc:
                    log.warning("could not re-read %s: %s", node_id, exc)
            for dir_id in op.subtrees:
                try:
                    await self.states.restore_subtree(dir_id)
                except RemoteError as exc:
                    log.warning("could not re-read %s: %s", dir_id, exc)
        row = self.tree.by_id(entry.node)
        if row is not None and not self.journal.has_entries(row.id):
            # Nothing of this file waits for upload any more: the next write must queue one
            # (a stale mark made writes skip that, and kept a clean file's staging copy).
            self.vfs.queued.discard(row.ino)
            if row.dirty and row.parent is not None and self.vfs.staged(row.ino) \
                    and row.ino not in self._lost_open:
                # Local content no entry will send (an answer that settled the node without
                # saying the content was taken): queue it, never leave it stranded.
                log.warning("%s: local content without a queued upload; queuing it", row.id)
                with self.tree.tx():
                    self.journal.append("content", row.id)
        if row is not None and row.parent is None:
            self.vfs.maybe_purge(row.ino)
        if retry:
            self.states.retry()

    def _resync_op(self, entry: Entry, exc: ApiError) -> _Op | None:
        """A refused entry is dropped; the node is put back to the server's state (the
        refusal's ``head``) so the mirror does not drift from the server."""
        op = _Op(entry, "", None, {}, lambda o: None)
        if exc.head is not None:
            op.settle.append(exc.head)
        elif entry.op != "create":
            op.refetch.append(entry.node)
        return op

    async def _send(self, op: _Op) -> None:
        """One operation: over the socket if it is up, else REST; then its outcome. (An
        op without a name was done while it was prepared: only its outcome is left.)"""
        while op.op:
            try:
                outcome = await self._call(op.op, op.node, op.args)
            except ApiError as exc:
                if op.retry_with_strategy and exc.code == ErrorCode.CONFLICT:
                    rebased = op.rebased
                    if await self._own_replay(op, exc):
                        return
                    if op.rebased > rebased and op.rebased <= OWN_REBASES:
                        # Based on our own head now: sent again as asked (still failing on
                        # a conflict), since another change of ours may land in between
                        # (a commit through another name of a linked file moves this one).
                        continue
                    op.args["on_conflict"] = "strategy"
                    op.retry_with_strategy = False
                    continue
                if op.refused is not None and op.refused(exc):
                    return
                raise
            op.finish(outcome)
            return

    async def _call(self, op: str, node: str | None, args: dict) -> WriteOutcome:
        # Content commits go over REST (parallel requests share the server's group
        # commit); the small metadata operations over the socket when it is up.
        if self.live is not None and op != "commit":
            try:
                outcome = await self.live.op(op, node, args)
                self.ws_ops += 1
                return outcome
            except NotConnected:
                pass
        return await self.remote.op(op, node, args)

    async def _run_batch(self, entries: list[Entry]) -> None:
        """Many small entries in two requests: their chunks, then their operations."""
        ops: list[_Op | None] = []
        try:
            for e in entries:
                self.active[e.seq] = f"{e.op} {e.node} (batch of {len(entries)})"
                self._started(e)
            size = 0
            for e in entries:
                try:
                    op = await self._prepare(e, batch=True)
                except _Changed:
                    op = None
                    self.journal.inflight.discard(e.seq)
                    ops.append(None)
                    continue
                ops.append(op)
                if op is not None:
                    size += sum(len(d) for _, d in op.chunks)
                if size > BATCH_BYTES:
                    break
            chunks: dict[str, bytes] = {}
            for op in ops:
                if op is not None:
                    for h, d in op.chunks:
                        chunks[h] = d
            if chunks:
                await self.remote.put_chunks(list(chunks.items()))
                self.uploaded_chunks += len(chunks)
                self.uploaded_bytes += sum(len(d) for d in chunks.values())
            frames = []
            sent: list[_Op] = []
            for op in ops:
                if op is not None:
                    frame = {"id": f"b{op.entry.seq}", "op": op.op, "args": op.args}
                    if op.node is not None:
                        frame["node"] = op.node
                    frames.append(frame)
                    sent.append(op)
            results = await self.remote.ops(frames) if frames else []
            self.batches += 1
        except Offline as exc:
            for op in ops:
                self._unanswered_commit(op)
            for e in entries:
                self.journal.lost_answer(e.seq)
                self.journal.inflight.discard(e.seq)
                self._ended(e, "offline", str(exc))
            self._offline(exc)
            self._batch_end(entries)
            return
        except Exception as exc:
            log.exception("batch upload failed")
            self.failures.append(f"batch of {len(entries)}: {type(exc).__name__}: {exc}")
            for e in entries:
                self.journal.inflight.discard(e.seq)
                self._ended(e, "error", f"{type(exc).__name__}: {exc}")
            self._batch_end(entries)
            return
        handled: set[int] = set()
        done: list[tuple[Entry, _Op | None]] = []
        for e, op in zip(entries, ops):
            if op is None and e.seq in self.journal.inflight:
                done.append((e, None))          # nothing to send any more
                handled.add(e.seq)
        for op, reply in zip(sent, results):
            e = op.entry
            handled.add(e.seq)
            try:
                if reply.get("type") == "ack":
                    op.finish(WriteOutcome.model_validate(
                        {"node": reply["node"], "conflict": reply.get("conflict")}))
                    done.append((e, op))
                    continue
                exc = error_from_body(0, {"error": reply.get("error")})
                if isinstance(exc, ApiError) and op.refused is not None and op.refused(exc):
                    done.append((e, op))
                    continue
                # Anything else is retried alone (it may depend on a failed neighbour).
                self._alone.add(e.seq)
                self.journal.inflight.discard(e.seq)
            except Exception:
                log.exception("batch answer for %s %s", e.op, e.node)
                self.journal.inflight.discard(e.seq)
        for e in entries:
            if e.seq not in handled:
                self.journal.inflight.discard(e.seq)     # not sent (size cap): next round
        finished = {e.seq for e, _ in done}
        for e in entries:
            self._ended(e, "ok" if e.seq in finished else "retry")
        self._batch_end(entries)
        for e, op in done:
            await self._done(e, op, retry=False)
        self.states.retry()

    def _batch_end(self, entries: list[Entry]) -> None:
        for e in entries:
            self.active.pop(e.seq, None)
        self._tasks -= 1
        self._finished_event().set()

    # -- preparing entries ----------------------------------------------------------------------

    async def _prepare(self, e: Entry, batch: bool) -> _Op | None:
        return await getattr(self, f"_prepare_{e.op}")(e, batch)

    def _note_conflict(self, info: ConflictInfo | None, path: str) -> None:
        if info is None or info.result == "already":
            return
        self.conflicts.append({"path": info.path or path, "case": info.case, "result": info.result,
                               "strategy": info.strategy, "message": info.message, "id": info.id})
        del self.conflicts[:-50]
        log.warning("conflict on %s (%s, %s): %s", info.path or path, info.case, info.strategy,
                    info.message)

    def _acked(self, node_id: str, node: Node, content: bool = True) -> None:
        """``content``: the write was ours to the content (a create or commit). A rename or
        attribute change must leave ``content_rev`` alone: if the server's content changed
        meanwhile (another device's commit), ``apply_node`` must see it to fetch it."""
        self.states.acked(node.rev)
        row = self.tree.by_id(node_id)
        if row is not None:
            with self.tree.tx():
                if content:
                    self.tree.update(row.ino, rev=max(row.rev, node.rev), content_rev=node.content_rev)
                else:
                    self.tree.update(row.ino, rev=max(row.rev, node.rev))

    async def _prepare_create(self, e: Entry, batch: bool) -> _Op | None:
        row = self.tree.by_id(e.node)
        args = {"id": e.node, **{k: v for k, v in e.args.items() if v is not None},
                "on_conflict": "strategy"}
        pushed = None
        chunks: list[tuple[str, bytes]] = []
        maybe_sent = self._maybe_sent_before(e)
        if row is not None and row.is_file and row.dirty and self.vfs.staged(row.ino):
            if self.vfs.writable_now(row.ino, self.quiet):
                # Still being written: create it empty now, the content follows.
                self._content_follows(row.ino, e.node)
            else:
                pushed, chunks = await self._push(row.ino, upload=not batch)
                refs, size, gen = pushed
                args["content"] = {"chunks": [c.model_dump() for c in refs], "size": size}
                args["mtime_ns"] = self.vfs.mtime_of(row)
        if row is not None:
            args["mode"] = row.mode     # now, not when the create was queued (a chmod since)

        def finish(outcome: WriteOutcome) -> None:
            node, info = outcome.node, outcome.conflict
            self._note_conflict(info, e.args.get("name", ""))
            node_id = e.node
            if info is not None and info.result == "merged" and node.id != e.node:
                # Two directories of one name: the server's takes over ours.
                self.tree.remap(e.node, node.id)
                node_id = node.id
            self._acked(node_id, node)
            if pushed is not None and row is not None:
                refs, size, gen = pushed
                if maybe_sent and (node.size, node.mtime_ns) != (size, args.get("mtime_ns")):
                    # An earlier attempt made the node (the server answers a retried create
                    # with what that attempt made), and the file changed between the two
                    # attempts (every write moves its mtime): the server does not have this
                    # attempt's content. A content upload follows, based on what it has.
                    self._content_follows(row.ino, e.node)
                else:
                    self.vfs.uploaded(row.ino, gen, node.rev, node.content_rev or node.rev, refs, size)
            op.settle.append(node)

        def refused(exc: ApiError) -> bool:
            if exc.code == ErrorCode.MISSING_CHUNKS:
                raise _Changed() from exc
            if exc.code == ErrorCode.CONFLICT and exc.head is not None and exc.head.id == e.node:
                # "node id is taken": our own create reached the server before and the node
                # was changed elsewhere since; its state is the truth.
                self._acked(e.node, exc.head)
                op.settle.append(exc.head)
                return True
            return False

        op = _Op(e, "create", None, args, finish, refused, chunks)
        return op

    def _maybe_sent_before(self, e: Entry) -> bool:
        """Could an earlier attempt of this entry have reached the server (an answer lost
        to a cut link, or an entry from before this start)?"""
        return self.journal.may_have_reached(e)

    def _content_follows(self, ino: int, node_id: str) -> None:
        """The file's content goes in a content upload of its own (queued unless one is)."""
        with self.tree.tx():
            if not self.journal.has_pending(node_id, "content"):
                self.journal.append("content", node_id)
        self.vfs.queued.add(ino)

    async def _prepare_move(self, e: Entry, batch: bool) -> _Op | None:
        a = e.args
        base = None
        if a.get("detached") and self.tree.by_id(e.node) is None:
            # A rename of a name whose id left the mirror (a name of a linked file unlinked
            # after it, ``Tree._unname``): based on the server's head, read now.
            try:
                base = (await self.remote.node(e.node)).rev
            except ApiError as exc:
                if exc.code == ErrorCode.NOT_FOUND:
                    return None
                raise
        return self._update_op(e, {"parent": a["parent"], "name": a["name"],
                                   "replace": a.get("replace", False)}, base)

    async def _prepare_attr(self, e: Entry, batch: bool) -> _Op | None:
        row = self.tree.by_id(e.node)
        if row is None or row.parent is None:
            return None
        wanted = e.args.get("fields") or ["mode", "mtime"]
        body: dict = {}
        if "mode" in wanted:
            body["mode"] = row.mode
        if "mtime" in wanted and row.kind != "symlink":
            body["mtime_ns"] = self.vfs.mtime_of(row)
        if not body:
            return None
        return self._update_op(e, body)

    def _update_op(self, e: Entry, body: dict, base: int | None = None) -> _Op | None:
        row = self.tree.by_id(e.node)
        if row is None and base is None:
            return None
        args = {"base_rev": row.rev if base is None else base, **body, "on_conflict": "strategy"}
        name = e.args.get("name", "") if row is None else row.name

        def finish(outcome: WriteOutcome) -> None:
            self._note_conflict(outcome.conflict, name)
            self._acked(e.node, outcome.node, content=False)
            op.settle.append(outcome.node)

        def refused(exc: ApiError) -> bool:
            if exc.code == ErrorCode.NOT_FOUND:
                log.warning("%s: not on the server; %s dropped", e.node, e.op)
                return True
            head = exc.head or (Node.model_validate(exc.details["node"])
                                if isinstance(exc.details.get("node"), dict) else None)
            if head is not None and exc.code in (ErrorCode.NAME_EXISTS, ErrorCode.DIRECTORY_NOT_EMPTY,
                                                 ErrorCode.IS_A_DIRECTORY, ErrorCode.NOT_A_DIRECTORY):
                # A replacing rename the server cannot do: keep the server's view of both.
                self.failures.append(f"{e.op} {name}: {exc.message}")
                op.settle.append(head)
                op.refetch.append(e.node)
                return True
            return False

        op = _Op(e, "update", e.node, args, finish, refused)
        return op

    async def _prepare_delete(self, e: Entry, batch: bool) -> _Op | None:
        row = self.tree.by_id(e.node)
        # After a commit of ours whose answer was lost, a conflict may be with our own
        # content: asked to fail first, then checked (``_own_replay``). So is a delete of a
        # node never acknowledged here (base 0): its create may have reached the server
        # before the mount stopped.
        base = row.rev if row is not None else 0
        # So is a delete of a name of a linked file: our own commits through its other
        # names moved its rev on the server without an answer to us.
        ours = e.node in self._unanswered or base == 0 or (row is not None and row.inode is not None)
        args = {"base_rev": base, "recursive": False,
                "on_conflict": "fail" if ours else "strategy", "seen_seq": self.states.seen_seq(),
                "at_ns": int(e.ts * 1e9)}
        kind = row.kind if row is not None else None

        def put_back(node: Node) -> None:
            op.settle.append(node)
            if node.kind.value == "dir":
                op.subtrees.append(node.id)

        def finish(outcome: WriteOutcome) -> None:
            node, info = outcome.node, outcome.conflict
            self._note_conflict(info, row.name if row is not None else e.node)
            self.states.acked(node.rev)
            if node.deleted:
                self.states.deleted_here(node.id, node.rev)
            else:
                # The server kept it (the modification survives, or things changed inside
                # the directory since we looked): show it again.
                put_back(node)

        def refused(exc: ApiError) -> bool:
            if exc.code == ErrorCode.NOT_FOUND:
                return True
            if exc.code == ErrorCode.DELETE_HELD:
                # A mass delete: the server keeps the file for every other device until the
                # vault owner confirms or rejects; here it stays deleted (the user's rm -rf
                # must not be undone under it). Held state of this mount: gobi.fs.held.
                hold = hold_of(exc.details)
                if hold is not None and exc.head is not None and not exc.head.deleted:
                    self.states.hide(exc.head, hold, "deleted")
                return True
            if exc.code == ErrorCode.DIRECTORY_NOT_EMPTY and kind == "dir":
                op.subtrees.append(e.node)
                return True
            return False

        op = _Op(e, "delete", e.node, args, finish, refused, retry_with_strategy=ours)
        return op

    async def _prepare_content(self, e: Entry, batch: bool) -> _Op | None:
        row = self.tree.by_id(e.node)
        if row is None or row.parent is None:
            return None
        if not row.dirty or not self.vfs.staged(row.ino):
            # Another upload took the content (a create retried after the link was cut).
            # The mode and mtime changes this entry was to carry (Tree._not_carried) may
            # have come after that upload read the file: send them on their own.
            body = {"mode": row.mode}
            if not self.tree.journal.has_pending(e.node, "create"):
                body["mtime_ns"] = self.vfs.mtime_of(row)
            return self._update_op(e, body)
        pushed, chunks = await self._push(row.ino, upload=not batch)
        refs, size, gen = pushed
        # (``rebase``: the file's name changed to a further name of it, whose last content
        # here may lag behind a commit of ours through the old name: ``Tree._unname``.)
        maybe_sent = self._maybe_sent_before(e) or e.node in self._unanswered or bool(e.args.get("rebase"))
        # The base is the server content our local edit started from (``content_rev``), not
        # the node's rev: an ack of our own chmod or rename moves ``rev`` past another
        # device's content commit that this mount never saw, and that commit would then be
        # silently overwritten instead of meeting the conflict strategy.
        base = row.content_rev if row.content_rev is not None else row.rev
        args = {"base_rev": base, "chunks": [c.model_dump() for c in refs], "size": size,
                "mtime_ns": self.vfs.mtime_of(row), "mode": row.mode,
                "on_conflict": "fail" if maybe_sent else "strategy"}

        def finish(outcome: WriteOutcome) -> None:
            node, info = outcome.node, outcome.conflict
            self._note_conflict(info, row.name)
            self.states.acked(node.rev)
            if info is None or info.result == "mine":
                self._acked(e.node, node)
                self.vfs.uploaded(row.ino, gen, node.rev, node.content_rev or node.rev, refs, size)
                op.settle.append(node)
                return
            # Our version lost the file's name (it is a conflicted copy, a conflict
            # version in the history, or kept for a manual decision): the file shows the
            # server's content again, unless it changed here during the upload.
            self._lost(row.ino, gen, node)
            if info.conflicted_copy is not None:
                self._add_copy(info.conflicted_copy, refs)
            op.settle.append(node)

        def refused(exc: ApiError) -> bool:
            if exc.code == ErrorCode.MISSING_CHUNKS:
                raise _Changed() from exc
            return False

        op = _Op(e, "commit", e.node, args, finish, refused, chunks,
                 retry_with_strategy=maybe_sent)
        return op

    async def _prepare_link(self, e: Entry, batch: bool) -> _Op | None:
        """A further name of a file (``link(2)``), made from the file's node ``of``."""
        args = {"id": e.node, "parent": e.args["parent"], "name": e.args["name"]}

        def finish(outcome: WriteOutcome) -> None:
            self._acked(e.node, outcome.node)
            op.settle.append(outcome.node)

        def refused(exc: ApiError) -> bool:
            if exc.code not in (ErrorCode.NOT_FOUND, ErrorCode.CONFLICT, ErrorCode.NAME_EXISTS,
                                ErrorCode.IS_A_DIRECTORY, ErrorCode.NOT_A_DIRECTORY):
                return False
            self.failures.append(f"link {e.args['name']}: {exc.message}")
            log.warning("link %s (%s) refused: %s", e.args["name"], e.node, exc)
            self._link_refused(e)
            return True

        op = _Op(e, "link", e.args["of"], args, finish, refused)
        return op

    async def _prepare_refresh(self, e: Entry, batch: bool) -> _Op | None:
        """Read a node's server state again (``Tree._unname``); applied as an answer."""
        row = self.tree.by_id(e.node)
        if row is None or row.parent is None:
            return None
        op = _Op(e, "", e.node, {}, lambda o: None)
        op.settle.append(await self.remote.node(e.node))
        return op

    def _link_refused(self, e: Entry) -> None:
        """The server did not make the name (the file was deleted there meanwhile, or the
        name was taken). A further name goes here too; the file keeps its other names. A
        file that has no other name left here (its first name was unlinked after the
        link) must not be lost: it is created under this name instead, with its content."""
        row = self.tree.by_id(e.node)
        if row is None or row.parent is None:
            return
        with self.tree.tx():
            if row.link:
                self.states.remove_local(row.ino)
                return
            parent = self.tree.get(row.parent)
            args = {"parent": parent.id, "name": row.name, "kind": row.kind, "mode": row.mode,
                    "mtime_ns": self.vfs.mtime_of(row), "target": row.target}
            if row.rdev:
                args["rdev"] = row.rdev
            if row.is_file and not row.dirty and row.size:
                listed = self.tree.manifest(row.ino) if row.manifest_known else []
                if listed:
                    args["content"] = {"chunks": [({"size": n, "hole": True} if h == HOLE else
                                                   {"hash": h, "size": n}) for _, n, h in listed],
                                       "size": row.size}
                else:
                    log.error("%s: its content is not here to create it again; the last "
                              "version is in the vault's trash under the file's first name",
                              self.tree.path_of(row))
            self.tree.update(row.ino, rev=0, content_rev=None, inode=None)
            self.journal.append("create", row.id, args, ref=parent.id)

    def _unanswered_commit(self, op: _Op | None) -> None:
        """A commit or a file's create whose answer was lost may have been applied:
        remember the manifest it sent (a later delete or commit meeting that content as the
        head knows it is ours, ``_own_replay``)."""
        if op is None:
            return
        if op.op == "commit" and op.node is not None:
            self._unanswered.setdefault(op.node, []).append(_identity(op.args["chunks"]))
        elif op.op == "create" and op.args.get("kind") == "file":
            content = op.args.get("content") or {"chunks": []}
            self._unanswered.setdefault(op.args["id"], []).append(_identity(content["chunks"]))

    async def _own_replay(self, op: _Op, exc: ApiError) -> bool:
        """A commit or delete that may have been applied before, or that follows a commit
        of ours whose answer was lost, met a conflict: is the head ours?

        The head is this very commit: done. The head is an earlier commit of ours whose
        answer was lost (the file changed, or was deleted, before the retry): that is our
        own older content, not another device's, so the operation is based on it instead
        of meeting the conflict strategy, which kept our older bytes under the name and
        put the newer ones in a conflicted copy, or brought a deleted file back as a
        modification that survives the delete (both found by the long partition run)."""
        head = exc.head
        if head is None or head.deleted or head.kind.value != "file":
            return False
        ours = self._unanswered.get(op.entry.node, [])
        version = await self.remote.head_version(op.entry.node)
        hashes = _identity([c.model_dump() for c in version.chunks or []])
        if op.op != "commit" or _identity(op.args["chunks"]) != hashes:
            # Ours: remembered as sent without an answer, or made by this very device —
            # which covers what was in flight when the mount stopped (a crash, a kill, a
            # power cut): the memory of unanswered sends does not survive a restart, the
            # version's device does. (This device's later changes follow its earlier ones,
            # so its own head is never a change it has not seen, only one it missed the
            # answer to.)
            if hashes in ours or (version.device is not None and version.device == self.remote.device):
                op.args["base_rev"] = (head.content_rev or head.rev) if op.op == "commit" else head.rev
                op.rebased += 1
            return False
        row = self.tree.by_id(op.entry.node)
        if row is not None:
            refs = [ChunkRef.model_validate(c) for c in op.args["chunks"]]
            self._acked(op.entry.node, head)
            self.vfs.uploaded(row.ino, self.vfs.gen.get(row.ino, 0), head.rev,
                              head.content_rev or head.rev, refs, op.args["size"])
        op.settle.append(head)
        return True

    def _lost(self, ino: int, gen: int, node: Node) -> None:
        """Our upload of this file lost: show the server's state (kept dirty only if the
        file changed again meanwhile: that newer local change is sent later, and meets the
        strategy again).

        Not while the file is open for writing: the kernel may hold pages written but not
        yet sent to us (writeback cache) and it trusts its own size, so switching the
        content under a writer mixes the two versions (appends landed past the server's end
        of file, after a hole of NULs). The switch waits for the last writer's close
        (``_switch_lost``); a write meanwhile makes it a newer local change instead (the
        file is held by its writer either way, so no remote state is applied under it)."""
        changed = self.vfs.gen.get(ino, 0) != gen or ino in self.vfs.queued
        if not changed and ino in self.vfs.writers:
            # Nothing of ours is left to upload (our version is on the server, as the
            # conflicted copy or a version): clean, but the writer keeps seeing it.
            self._lost_open[ino] = (gen, node)
            with self.tree.tx():
                self.tree.update(ino, dirty=0)
            return
        with self.tree.tx():
            if changed:
                return
            if node.deleted:
                # Deleted on the server and our edit kept as a version of it: the staging
                # copy must go too, or a later revival of the node (e.g. by our own pending
                # setattr) would show our losing bytes while the server has its head's.
                self.tree.update(ino, dirty=0)
            else:
                # The mode too: a chmod made while the commit was pending travels with it
                # (no separate attr upload since 27aef26), so it went to the losing version.
                self.tree.update(ino, dirty=0, rev=node.rev, content_rev=node.content_rev,
                                 size=node.size, mtime_ns=node.mtime_ns, mode=node.mode)
        # Dropped even while open: the staging copy is our losing version. Kept, open handles
        # went on reading it and the last close wrote its size back over the server's; a
        # later write through an open handle stages the server's content first.
        self.states.content_replaced(ino, even_if_open=True)

    def _switch_lost(self) -> None:
        """Carry out the switches ``_lost`` left for files open for writing, once closed."""
        for ino, (gen, node) in list(self._lost_open.items()):
            if self.vfs.gen.get(ino, 0) != gen or ino in self.vfs.queued:
                del self._lost_open[ino]        # written since: a newer local change to upload
            elif ino not in self.vfs.writers:
                del self._lost_open[ino]
                if self.tree.get_opt(ino) is not None:
                    self._lost(ino, gen, node)

    def _add_copy(self, copy: Node, refs: list[ChunkRef]) -> None:
        """keep-both: our version under its conflicted-copy name, readable from the cache
        (its chunks are the ones just uploaded)."""
        if self.states.apply_node(copy) != "applied":
            return
        row = self.tree.by_id(copy.id)
        if row is not None and copy.content_rev is not None:
            with self.tree.tx():
                self.tree.set_manifest(row.ino, copy.content_rev, refs)

    # -- content ---------------------------------------------------------------------------------

    async def _push(self, ino: int, upload: bool = True
                    ) -> tuple[tuple[list[ChunkRef], int, int], list[tuple[str, bytes]]]:
        """Chunk a staged file; upload the chunks the server lacks (``upload``), or return
        their bytes for a batch. Returns ((chunks, size, gen), chunk data not uploaded)."""
        gen = self.vfs.upload_started(ino)
        path = self.cache.staging_path(ino)
        if self.cache.staged_size(ino) <= SMALL_FILE:
            return await self._push_small(ino, path, gen, upload)

        pieces = [p[:3] for p in await trio.to_thread.run_sync(_cut, path, False)]
        size = sum(p[1] for p in pieces)
        hashes = {p[2] for p in pieces if p[2] is not None}     # holes are no chunks
        if size <= SMALL_FILE or not upload:
            # Small: uploading its chunk is cheaper than asking whether to.
            missing = hashes
        else:
            missing = await self.remote.missing(sorted(hashes))
        if self.progress is not None and upload:
            self.progress.pushing(ino, size, sum(n for _, n, h in {p[2]: p for p in pieces}.values()
                                                 if h in missing))
        fd = os.open(path, os.O_RDONLY)
        limiter = trio.Semaphore(UPLOAD_CONCURRENCY)
        errors: list[Exception] = []
        collected: list[tuple[str, bytes]] = []
        try:
            async def one(off: int, n: int, h: str) -> None:
                try:
                    data = os.pread(fd, n, off)
                    if await trio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest()) != h:
                        raise _Changed()
                    self.cache.put(h, data)
                    if h in missing:
                        if not upload:
                            collected.append((h, data))
                            return
                        await self._put_chunk(h, data)
                        self.uploaded_chunks += 1
                        self.uploaded_bytes += n
                        if self.progress is not None:
                            self.progress.sent(ino, n)
                except (RemoteError, _Changed) as exc:
                    # First failure wins; the rest of this upload is pointless.
                    errors.append(exc)
                    nursery.cancel_scope.cancel()
                finally:
                    limiter.release()

            seen: set[str] = set()
            async with trio.open_nursery() as nursery:
                for off, n, h in pieces:
                    if h is None or h in seen or (h not in missing and h in self.cache):
                        continue
                    seen.add(h)
                    await limiter.acquire()
                    nursery.start_soon(one, off, n, h)
        finally:
            os.close(fd)
        if errors:
            raise errors[0]
        return (_refs(pieces), size, gen), collected

    async def _push_small(self, ino: int, path, gen: int, upload: bool
                          ) -> tuple[tuple[list[ChunkRef], int, int], list[tuple[str, bytes]]]:
        """A small file in one trip off the trio thread: read, cut and hashed at once (the
        bytes sent are the bytes hashed, so no second check is needed; a write meanwhile
        shows as a new generation). Every chunk goes: uploading it is cheaper than asking
        whether the server has it."""
        pieces = await trio.to_thread.run_sync(_cut, path, True)
        size = sum(p[1] for p in pieces)
        collected: dict[str, bytes] = {}
        for _, _, h, data in pieces:
            if h is None:
                continue                # a hole: nothing to send
            if len(pieces) > 1:
                # (A one-chunk file's staging copy becomes its cache entry once the server
                # has it: ``Vfs.uploaded``.)
                self.cache.put(h, data)
            collected.setdefault(h, data)
        if upload:
            if self.progress is not None:
                self.progress.pushing(ino, size, sum(len(d) for d in collected.values()))
            for h, data in collected.items():
                await self._put_chunk(h, data)
                self.uploaded_chunks += 1
                self.uploaded_bytes += len(data)
                if self.progress is not None:
                    self.progress.sent(ino, len(data))
            collected = {}
        return (_refs(pieces), size, gen), list(collected.items())

    async def _put_chunk(self, h: str, data: bytes) -> None:
        for _ in range(CHUNK_RETRIES):
            try:
                await self.remote.put_chunk(h, data)
                return
            except Busy as exc:
                # The garbage collector is deleting this chunk right now: not an outage.
                await trio.sleep(exc.retry_after)
        raise Offline(f"chunk {h[:12]} kept answering 503")


__all__ = ["Sync", "ROOT_ID"]
