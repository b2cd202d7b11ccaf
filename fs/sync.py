"""Keeping the mirror and the server in step: the uploader and the puller.

**Uploader.** Replays the journal against the server, oldest entry first. An entry waits
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
from .remote import ApiError, Offline, Remote
from .tree import ROOT_INO, Tree
from .vfs import Link, Vfs

log = logging.getLogger(__name__)

UPLOAD_CONCURRENCY = 4
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


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
        self.current = ""            # what the uploader is doing now (for status)
        self.uploaded_ops = 0
        self.uploaded_chunks = 0
        self.uploaded_bytes = 0
        self.failures: list[str] = []
        self.idle = trio.Event()

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
            "uploading": self.current,
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
        }

    def flush(self) -> None:
        """Send everything now (no settle delay); used by ``gobi sync`` and unmount."""
        self.flushing = True
        self.vfs.changed.set()
        self.link.poke()

    # -- uploader ---------------------------------------------------------------------------

    def _next(self) -> tuple[Entry | None, float]:
        """The next entry to send, or (None, seconds to wait)."""
        now = time.time()
        after = 0
        while True:
            batch = self.journal.entries(after, 500)
            if not batch:
                return None, 3600.0
            for e in batch:
                if e.seq in self.journal.inflight:
                    continue
                if not self.flushing and now - e.ts < self.settle:
                    return None, self.settle - (now - e.ts)
                if e.op == "content":
                    row = self.tree.by_id(e.node)
                    if row is not None and self.vfs.writable_now(row.ino, self.quiet):
                        continue
                return e, 0.0
            after = batch[-1].seq

    async def run_uploader(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = BACKOFF_MIN
        while True:
            self.vfs.changed = trio.Event()
            entry, wait = self._next()
            if entry is None:
                if self.journal.count() == 0:
                    self.flushing = False
                    self.idle.set()
                    self.idle = trio.Event()
                with trio.move_on_after(min(wait, self.quiet if self.vfs.writers else wait)):
                    await self.vfs.changed.wait()
                continue
            if not self.link.should_try():
                with trio.move_on_after(Link.RETRY_AFTER):
                    await self.link.changed.wait()
                continue
            self.journal.inflight.add(entry.seq)
            self.current = f"{entry.op} {entry.node}"
            try:
                await self._send(entry)
            except Offline as exc:
                self.link.down(str(exc))
                delay = backoff * (0.5 + random.random())
                backoff = min(backoff * 2, BACKOFF_MAX)
                log.info("offline (%s); retrying in %.1fs", exc, delay)
                self.journal.inflight.discard(entry.seq)
                self.current = ""
                with trio.move_on_after(delay):
                    await self.link.changed.wait()
                continue
            except _Changed:
                self.journal.inflight.discard(entry.seq)
                self.current = ""
                continue
            except ApiError as exc:
                # The server refused for good: record it, do not block the queue for ever.
                msg = f"{entry.op} {entry.node}: {exc}"
                log.error("upload refused: %s", msg)
                self.failures.append(msg)
            self.link.up()
            backoff = BACKOFF_MIN
            with self.tree.tx():
                self.journal.done(entry.seq)
            self.current = ""
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
        missing = await self.remote.missing(sorted({p[2] for p in pieces}))
        fd = os.open(path, os.O_RDONLY)
        limiter = trio.Semaphore(UPLOAD_CONCURRENCY)
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
