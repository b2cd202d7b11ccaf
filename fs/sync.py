"""Keeping the mirror and the server in step: the uploader and the puller.

**Uploader.** Replays the journal against the server in order, several entries at once
when they cannot depend on each other (see ``_runnable``), and only one at a time while
the kernel is busy with requests (foreground first). An entry waits
``settle`` seconds before it is sent (unless a flush was asked for), so short-lived files
are dropped by coalescing before they cost a request. ``content`` entries of a file that
is open for writing and was written in the last ``quiet`` seconds are deferred (later
entries go first), so a file is not uploaded half-written. Content upload = chunk the
staged copy (FastCDC, ``gobi.chunking``), ask which chunks the server lacks, upload only
those (verified against their hash first, so a concurrent write cannot smuggle in wrong
bytes), commit the manifest with its base revision.

Every op is safe to replay after a crash (the entry is deleted only once the server
acknowledged it): creates carry client-chosen ids, and a ``409`` whose ``head`` already
shows the intended state counts as success. Unreachable server → ``Offline`` → retry with
exponential backoff and jitter; the mount keeps working from the mirror meanwhile.

**Puller.** Brings the mirror up to the server: the whole tree at one seq on first use (or
when the event cursor expired), otherwise the events after the last applied seq. Nodes
with journal entries keep their local state (the upload decides; a content conflict
keeps both versions). Kernel caches are told through ``notify``.

Live push over the WebSocket (the next issue) feeds the same ``apply_node``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from datetime import datetime

import trio

from gobi.chunking import pieces_of_stream
from gobi.protocol import ROOT_ID, ChunkRef, ErrorCode, Node

from .blocks import BlockCache
from .journal import Entry
from .remote import ApiError, Offline, Remote, RemoteError
from .tree import ROOT_INO, Tree
from .vfs import Link, Vfs

log = logging.getLogger(__name__)

UPLOAD_CONCURRENCY = 8       # entries in flight at once (and chunk PUTs per file)
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
FOREGROUND_GRACE = 0.05     # seconds after a kernel request during which uploads are throttled
BUSY_MAX_DELAY = 10.0       # …but changes older than this upload anyway, one at a time
SMALL_FILE = 256 * 1024      # files up to this size skip the 'which chunks are missing' round trip


async def _first(*events: trio.Event) -> None:
    """Return as soon as any of the events is set."""
    async with trio.open_nursery() as nursery:
        for ev in events:
            async def one(ev=ev) -> None:
                await ev.wait()
                nursery.cancel_scope.cancel()
            nursery.start_soon(one)


class _Changed(Exception):
    """The staged file changed while it was being uploaded: try again later."""


def _conflict_name(name: str, device: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    stamp = datetime.now().strftime("%Y-%m-%d %H%M%S")
    return f"{stem} (conflicted copy {device} {stamp}){dot}{ext}"[:250]


class Sync:
    def __init__(self, tree: Tree, vfs: Vfs, cache: BlockCache, remote: Remote, link: Link,
                 device: str, settle: float = 1.0, quiet: float = 2.0,
                 notify: Callable[..., None] | None = None):
        self.tree = tree
        self.journal = tree.journal
        self.vfs = vfs
        self.cache = cache
        self.remote = remote
        self.link = link
        self.device = device
        self.settle = settle
        self.quiet = quiet
        self.notify = notify or (lambda *a: None)
        self.flushing = False
        self.skip_drain = False      # `gobi umount` already waited: exit right after unmount
        self.active: dict[int, str] = {}   # journal seq → what is being sent (for status)
        self.kick = trio.Event()           # set by flush(): stop waiting, send now
        self._backoff = BACKOFF_MIN
        self._resume_at = 0.0              # offline backoff: no new uploads before this
        self.uploaded_ops = 0
        self.uploaded_chunks = 0
        self.uploaded_bytes = 0
        self.failures: list[str] = []
        self.held_deletes = 0              # deletes the server held for the owner (mass delete)
        self.held_ids: set[str] = set()
        self.idle = trio.Event()
        self.pull_wanted = trio.Event()    # set when our uploads finished: catch the seq up
        self._ops_at_idle = 0

    # -- status -----------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return int(self.tree.meta("last_seq", "0") or 0)

    def queued_bytes(self) -> int:
        rows = self.tree.db.execute("SELECT ino FROM nodes WHERE dirty = 1").fetchall()
        return sum(self.cache.staged_size(r[0]) for r in rows)

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
            "fetched_chunks": self.vfs.fetched_chunks,
            "fetched_bytes": self.vfs.fetched_bytes,
            "cache_used": self.cache.used,
            "cache_staged": self.cache.staged_bytes,
            "cache_cap": self.cache.cap,
            "last_seq": self.last_seq,
            "nodes": self.tree.count(),
            "failures": self.failures[-10:],
            "held_deletes": self.held_deletes,
            "holds": sorted(self.held_ids)[-5:],
        }

    def flush(self) -> None:
        """Send everything now (no settle delay); used by ``gobi sync`` and unmount."""
        self.flushing = True
        self._resume_at = 0.0
        self.kick.set()
        self.kick = trio.Event()
        self.link.poke()

    # -- uploader ---------------------------------------------------------------------------

    @staticmethod
    def _take_free(e: Entry) -> tuple[set[str], set[str]]:
        """Directories where an entry takes a name, and where it frees one."""
        a = e.args
        if e.op == "create":
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
        ``tar x``, ``cp -r`` and ``rm -r`` upload in parallel.
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
        while len(picks) < room and scanned < 2000:
            # Small first batch: usually the next runnable entry is among the first few.
            batch = self.journal.entries(after, 32 if scanned == 0 else 256)
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
                blocked = (e.node in nodes or e.node in used or bool(take & nodes)
                           or bool(take & freeing) or bool(replace and take & taking))
                nodes.add(e.node)
                used |= take | free
                taking |= take
                freeing |= free
                if e.seq in self.journal.inflight or blocked:
                    continue
                if not self.flushing and now - e.ts < self.settle:
                    # Younger entries follow in order: nothing later is settled either.
                    return picks, min(wait, self.settle - (now - e.ts))
                picks.append(e)
                if len(picks) >= room:
                    break
        return picks, wait

    async def run_uploader(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                changed = self.vfs.changed = trio.Event()
                kick = self.kick
                inflight = len(self.journal.inflight)
                if time.monotonic() < self._resume_at:
                    with trio.move_on_after(self._resume_at - time.monotonic()):
                        await _first(self.link.changed, kick)
                    self._resume_at = 0.0
                    continue
                if not self.link.should_try():
                    with trio.move_on_after(Link.RETRY_AFTER):
                        await _first(self.link.changed, kick)
                    continue
                # Foreground first: while the kernel keeps sending requests, uploads (which
                # share this thread) go one at a time so ls, git or tar do not wait on them.
                busy = time.monotonic() - self.vfs.last_request < FOREGROUND_GRACE
                if busy and not self.flushing:
                    # Nothing starts while the kernel is busy, unless changes have waited
                    # BUSY_MAX_DELAY already: then one at a time, so a long copy still
                    # becomes durable on the server as it goes.
                    oldest = self.journal.oldest_ts()
                    late = oldest is not None and time.time() - oldest > BUSY_MAX_DELAY
                    room = (1 if late else 0) - inflight
                else:
                    room = (1 if busy else UPLOAD_CONCURRENCY) - inflight
                if room <= 0:
                    with trio.move_on_after(FOREGROUND_GRACE):
                        await self._finished_event().wait()
                    continue
                picks, wait = self._runnable(room)
                for e in picks:
                    self.journal.inflight.add(e.seq)
                    nursery.start_soon(self._run_one, e)
                if picks:
                    await trio.sleep(0)
                    continue
                if inflight == 0 and self.journal.count() == 0:
                    self.flushing = False
                    self.idle.set()
                    self.idle = trio.Event()
                    if self.uploaded_ops != self._ops_at_idle:
                        self._ops_at_idle = self.uploaded_ops
                        self.pull_wanted.set()
                # Wake on: a finished upload, a flush, new work (unless only the settle
                # delay holds the queue: then new work cannot be earlier than it).
                settling = wait < 3600.0 and not self.flushing and self.journal.count() > 0
                with trio.move_on_after(wait):
                    if settling:
                        await _first(kick, self._finished_event())
                    else:
                        await _first(changed, kick, self._finished_event())

    def _finished_event(self) -> trio.Event:
        if not hasattr(self, "_finished") or self._finished.is_set():
            self._finished = trio.Event()
        return self._finished

    async def _run_one(self, entry: Entry) -> None:
        try:
            self.active[entry.seq] = f"{entry.op} {entry.node}"
            await self._send(entry)
        except Offline as exc:
            self.link.down(str(exc))
            delay = self._backoff * (0.5 + random.random())
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._resume_at = max(self._resume_at, time.monotonic() + delay)
            log.info("offline (%s); retrying in %.1fs", exc, delay)
            self.journal.inflight.discard(entry.seq)
            return
        except _Changed:
            self.journal.inflight.discard(entry.seq)
            return
        except ApiError as exc:
            # The server refused for good: record it, do not block the queue for ever.
            msg = f"{entry.op} {entry.node}: {exc}"
            log.error("upload refused: %s", msg)
            self.failures.append(msg)
        except Exception as exc:
            # A bug must not take the mount down or drop the change: keep the entry,
            # say so, retry later.
            log.exception("upload of %s %s failed", entry.op, entry.node)
            self.failures.append(f"{entry.op} {entry.node}: {type(exc).__name__}: {exc}")
            self._resume_at = max(self._resume_at, time.monotonic() + BACKOFF_MAX)
            self.journal.inflight.discard(entry.seq)
            return
        finally:
            self.active.pop(entry.seq, None)
            self._finished_event().set()
        self.link.up()
        self._backoff = BACKOFF_MIN
        with self.tree.tx():
            self.journal.done(entry.seq)
        self.uploaded_ops += 1
        row = self.tree.by_id(entry.node)
        if row is not None and row.parent is None:
            self.vfs.maybe_purge(row.ino)

    async def _send(self, e: Entry) -> None:
        handler = getattr(self, f"_op_{e.op}")
        await handler(e)

    def _acked(self, node_id: str, node: Node) -> None:
        row = self.tree.by_id(node_id)
        if row is not None:
            with self.tree.tx():
                self.tree.update(row.ino, rev=node.rev, content_rev=node.content_rev)

    async def _op_create(self, e: Entry) -> None:
        row = self.tree.by_id(e.node)
        body = {"id": e.node, **{k: v for k, v in e.args.items() if v is not None}}
        pushed = None
        if row is not None and row.is_file and row.dirty and self.vfs.staged(row.ino):
            if self.vfs.writable_now(row.ino, self.quiet):
                # Still being written: create it empty now, the content follows.
                with self.tree.tx():
                    if not self.journal.has_pending(e.node, "content"):
                        self.journal.append("content", e.node)
                self.vfs.queued.add(row.ino)
            else:
                pushed = await self._push(row.ino)
                chunks, size, gen = pushed
                body["content"] = {"chunks": [c.model_dump() for c in chunks], "size": size}
                body["mtime_ns"] = self.vfs.mtime_of(row)
        while True:
            try:
                node = await self.remote.create(body)
                break
            except ApiError as exc:
                if exc.code == ErrorCode.NAME_EXISTS and row is not None:
                    # Someone else created this name meanwhile: keep both, ours renamed.
                    body["name"] = self._rename_local(row, body["name"])
                    continue
                if exc.code == ErrorCode.MISSING_CHUNKS:
                    raise _Changed() from exc
                raise
        self._acked(e.node, node)
        if pushed is not None and row is not None:
            chunks, size, gen = pushed
            self.vfs.uploaded(row.ino, gen, node.rev, node.content_rev or node.rev, chunks, size)

    def _rename_local(self, row, name: str) -> str:
        new = _conflict_name(name, self.device)
        cur = self.tree.get_opt(row.ino)
        with self.tree.tx():
            if cur is not None and cur.parent is not None and cur.name == name:
                if self.tree.child(cur.parent, new) is None:
                    self.tree.update(row.ino, name=new)
                    self.notify("entry", cur.parent, name, None)
                    self.notify("entry", cur.parent, new, None)
        return new

    async def _update(self, e: Entry, body: dict, done: Callable[[Node], bool]) -> None:
        row = self.tree.by_id(e.node)
        if row is None:
            return
        base = row.rev
        for _ in range(3):
            try:
                node = await self.remote.update(e.node, {"base_rev": base, **body})
                self._acked(e.node, node)
                return
            except ApiError as exc:
                head = exc.head if exc.code == ErrorCode.CONFLICT else None
                if head is None:
                    raise
                if head.deleted:
                    log.warning("%s: node was deleted on the server; change dropped", e.node)
                    return
                if done(head):
                    self._acked(e.node, head)
                    return
                base = head.rev        # metadata: the later change wins
        raise ApiError(409, "conflict", "gave up after repeated conflicts")

    async def _op_move(self, e: Entry) -> None:
        args = e.args
        await self._update(
            e, {"parent": args["parent"], "name": args["name"], "replace": args.get("replace", False)},
            lambda head: head.parent == args["parent"] and head.name == args["name"],
        )

    async def _op_attr(self, e: Entry) -> None:
        row = self.tree.by_id(e.node)
        if row is None or row.parent is None:
            return
        mtime = self.vfs.mtime_of(row)
        await self._update(e, {"mode": row.mode, "mtime_ns": mtime},
                           lambda head: head.mode == row.mode and head.mtime_ns == mtime)

    async def _op_delete(self, e: Entry) -> None:
        row = self.tree.by_id(e.node)
        base = row.rev if row is not None else 0
        known_content = row.content_rev if row is not None else None
        for _ in range(3):
            try:
                await self.remote.delete(e.node, base)
                return
            except ApiError as exc:
                if exc.code == ErrorCode.NOT_FOUND:
                    return
                if exc.code == ErrorCode.DELETE_HELD:
                    # A mass delete: the server keeps it for the vault owner to confirm or
                    # reject. Our part is done; the outcome arrives as events.
                    hold = exc.details.get("hold") or {}
                    self.held_deletes += 1
                    self.held_ids.add(hold.get("id", "?"))
                    return
                if exc.code == ErrorCode.DIRECTORY_NOT_EMPTY:
                    log.warning("%s: not deleted, it has children on the server", e.node)
                    return
                head = exc.head if exc.code == ErrorCode.CONFLICT else None
                if head is None:
                    raise
                if head.deleted:
                    return
                if head.kind.value == "file" and head.content_rev != known_content:
                    # Delete vs. modify: the modification survives.
                    log.warning("%s: modified elsewhere, delete dropped", e.node)
                    return
                base = head.rev
        raise ApiError(409, "conflict", "gave up after repeated conflicts")

    async def _op_content(self, e: Entry) -> None:
        row = self.tree.by_id(e.node)
        if row is None or row.parent is None or not row.dirty or not self.vfs.staged(row.ino):
            return
        chunks, size, gen = await self._push(row.ino)
        body = {"base_rev": row.rev, "chunks": [c.model_dump() for c in chunks], "size": size,
                "mtime_ns": self.vfs.mtime_of(row), "mode": row.mode}
        try:
            node = await self.remote.commit(e.node, body)
        except ApiError as exc:
            if exc.code == ErrorCode.MISSING_CHUNKS:
                raise _Changed() from exc
            head = exc.head if exc.code == ErrorCode.CONFLICT else None
            if head is None:
                raise
            if not head.deleted:
                _, theirs = await self.remote.manifest(e.node)
                if [c.hash for c in theirs] == [c.hash for c in chunks]:
                    node = head          # our own commit, replayed after a crash
                    self._acked(e.node, node)
                    self.vfs.uploaded(row.ino, gen, node.rev, node.content_rev or node.rev, chunks, size)
                    return
            node = await self._keep_both(row, head, chunks, size)
            return
        self._acked(e.node, node)
        self.vfs.uploaded(row.ino, gen, node.rev, node.content_rev or node.rev, chunks, size)

    async def _keep_both(self, row, head: Node, chunks: list[ChunkRef], size: int) -> Node:
        """Content conflict: our version is saved next to theirs as a conflicted copy."""
        parent = self.tree.get_opt(row.parent) if row.parent else None
        parent_id = head.parent if head.deleted is False and head.parent else (parent.id if parent else ROOT_ID)
        name = _conflict_name(row.name, self.device)
        node = await self.remote.create({
            "parent": parent_id, "name": name, "kind": "file", "mode": row.mode,
            "content": {"chunks": [c.model_dump() for c in chunks], "size": size},
        })
        log.warning("conflict on %s: local version saved as %r", row.name, name)
        self.failures.append(f"conflict: {row.name!r} kept as {name!r}")
        # The local file now shows the server's version; ours lives on as the copy.
        with self.tree.tx():
            if head.deleted:
                self.tree.update(row.ino, dirty=0)
            else:
                self.tree.update(row.ino, dirty=0, rev=head.rev, content_rev=head.content_rev,
                                 size=head.size, mtime_ns=head.mtime_ns)
        if row.ino not in self.vfs.opens:
            self.vfs._drop_staging(row.ino)
        self.notify("inode", row.ino)
        self.apply_node(node)
        return node

    async def _push(self, ino: int) -> tuple[list[ChunkRef], int, int]:
        """Upload the chunks of a staged file the server lacks; (chunks, size, gen)."""
        gen = self.vfs.upload_started(ino)
        path = self.cache.staging_path(ino)

        def cut() -> list[tuple[int, int, str]]:
            with open(path, "rb") as f:
                return [(p.offset, p.size, p.hash) for p, _ in pieces_of_stream(f)]

        pieces = await trio.to_thread.run_sync(cut)
        size = sum(p[1] for p in pieces)
        if size <= SMALL_FILE:
            # One small chunk: uploading it is cheaper than asking whether to.
            missing = {p[2] for p in pieces}
        else:
            missing = await self.remote.missing(sorted({p[2] for p in pieces}))
        fd = os.open(path, os.O_RDONLY)
        limiter = trio.Semaphore(UPLOAD_CONCURRENCY)
        errors: list[Exception] = []
        try:
            async def one(off: int, n: int, h: str) -> None:
                try:
                    data = os.pread(fd, n, off)
                    if await trio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest()) != h:
                        raise _Changed()
                    self.cache.put(h, data)
                    if h in missing:
                        await self.remote.put_chunk(h, data)
                        self.uploaded_chunks += 1
                        self.uploaded_bytes += n
                except (RemoteError, _Changed) as exc:
                    # First failure wins; the rest of this upload is pointless.
                    errors.append(exc)
                    nursery.cancel_scope.cancel()
                finally:
                    limiter.release()

            seen: set[str] = set()
            async with trio.open_nursery() as nursery:
                for off, n, h in pieces:
                    if h in seen or (h not in missing and h in self.cache):
                        continue
                    seen.add(h)
                    await limiter.acquire()
                    nursery.start_soon(one, off, n, h)
        finally:
            os.close(fd)
        if errors:
            raise errors[0]
        return [ChunkRef(hash=h, size=n) for _, n, h in pieces], size, gen

    # -- puller -----------------------------------------------------------------------------

    async def pull(self) -> int:
        """Catch the mirror up with the server; returns the number of changes applied."""
        if self.tree.meta("listed") is None:
            return await self.relist()
        applied = 0
        try:
            async for page in self.remote.events(self.last_seq):
                for ev in page.events:
                    # Our own changes are in the mirror already (and maybe newer there).
                    if ev.node is not None and ev.device != self.device:
                        self.apply_node(ev.node)
                    applied += 1
                    with self.tree.tx():
                        self.tree.set_meta("last_seq", str(ev.seq))
        except ApiError as exc:
            if exc.code == ErrorCode.CURSOR_EXPIRED:
                return await self.relist()
            raise
        self.link.up()
        return applied

    async def relist(self) -> int:
        at, nodes = await self.remote.tree()
        by_parent: dict[str | None, list[Node]] = {}
        for n in nodes:
            by_parent.setdefault(n.parent, []).append(n)
        seen = {ROOT_ID}
        order: list[Node] = []
        todo = [ROOT_ID]
        while todo:
            pid = todo.pop()
            for child in by_parent.get(pid, []):
                order.append(child)
                seen.add(child.id)
                todo.append(child.id)
        with self.tree.tx():
            for n in order:
                self.apply_node(n)
            # Nodes the server no longer has (and that have nothing to upload) go away.
            for ino, node_id in self.tree.db.execute(
                    "SELECT ino, id FROM nodes WHERE parent IS NOT NULL").fetchall():
                if node_id not in seen and not self.journal.has_entries(node_id):
                    self._remove_local(ino)
            self.tree.set_meta("last_seq", str(at))
            self.tree.set_meta("listed", "1")
        self.link.up()
        return len(order)

    def _remove_local(self, ino: int) -> None:
        e = self.tree.get_opt(ino)
        if e is None or e.parent is None:
            return
        for child in self.tree.children(ino, 0, 1_000_000):
            self._remove_local(child.ino)
        self.tree._orphan(e)
        self.notify("entry", e.parent, e.name, ino)
        self.vfs.maybe_purge(ino)

    def apply_node(self, node: Node) -> None:
        """Make the mirror show a node's server state (unless local changes are pending)."""
        if node.id == ROOT_ID:
            return
        with self.tree.tx():
            e = self.tree.by_id(node.id)
            if self.journal.has_entries(node.id):
                return
            if e is not None and node.rev <= e.rev:
                return          # stale: the mirror already has this state or a later one
            if node.deleted:
                if e is not None:
                    self._remove_local(e.ino)
                return
            parent = self.tree.by_id(node.parent or ROOT_ID)
            if parent is None or not parent.is_dir or (parent.parent is None and parent.ino != ROOT_INO):
                log.warning("event for %s under unknown parent %s", node.id, node.parent)
                return
            clash = self.tree.child(parent.ino, node.name)
            if clash is not None and (e is None or clash.ino != e.ino):
                if self.journal.has_entries(clash.id):
                    return      # a local change of this name is pending; its upload decides
                self._remove_local(clash.ino)
            fields = dict(
                parent=parent.ino, name=node.name, kind=node.kind.value, mode=node.mode,
                size=node.size, mtime_ns=node.mtime_ns, target=node.target, rev=node.rev,
                content_rev=node.content_rev,
            )
            if e is None:
                self.tree.insert(id=node.id, **fields)
                self.notify("entry", parent.ino, node.name, None)
                return
            content_changed = e.is_file and e.content_rev != node.content_rev
            moved = e.parent != parent.ino or e.name != node.name
            self.tree.update(e.ino, **fields)
            if moved and e.parent is not None:
                self.notify("entry", e.parent, e.name, None)
                self.notify("entry", parent.ino, node.name, None)
            if content_changed and not e.dirty and self.vfs.staged(e.ino) and e.ino not in self.vfs.opens:
                self.vfs._drop_staging(e.ino)
            if content_changed or e.mode != node.mode or e.mtime_ns != node.mtime_ns:
                self.notify("inode", e.ino)
