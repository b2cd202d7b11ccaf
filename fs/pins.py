"""Pins: subtrees kept available offline (``gobi pin PATH``).

A pin names a node (file or directory) by inode, so it follows renames; it is stored in
the mirror (table ``pins``) and survives restarts. Everything under a pinned node is
fetched and its chunks are *pinned* in the block cache (``BlockCache.pin``): eviction
skips them, so pinned files read without the server for as long as the pin stays.

**The cap.** Pinned content and data not yet uploaded (staging) both stay in the cache
whatever happens, so together they must fit under ``--cache-size``: a pin whose subtree
would not fit next to what is pinned and staged already is refused with ``ENOSPC``;
``gobi pin`` then explains with the figures (``info``). A subtree is sized by the bytes of
data the cache must hold for it (``_files``), files counted once where pins overlap: a
clean file by the data chunks of its chunk list (``Tree.data_chunks``, what ``st_blocks``
counts: holes hold nothing, so a 1 TiB sparse file with 1 MiB written is 1 MiB), each
chunk once as the cache keeps it once (two copies of a file cost one); a file being
written by the data its staging copy holds (``BlockCache.staged_data``, also counted in
the staged bytes beside it: the copy and the pinned chunks made from it can both be
there until it is closed); a file whose chunk list this mount does not have yet by its
size. When those sizes stand in the way of a pin, the lists are fetched first, the
largest files first, until it fits or cannot (``_learn_lists``). A pinned subtree that
grows past the cap later (remote changes) keeps what fits and reports the rest.

**The keeper** (``run``) makes pins true: at start it marks the cached chunks of pinned
files (local, before the mount serves), then runs a *pass* whenever a pin is added, an
upload made a file clean, or remote changes arrived (checked every ``CHECK_INTERVAL``):
one SQL query lists the pinned files and their chunk lists, missing manifests and chunks
are fetched (a few at a time, pinned as they arrive), and after a complete pass chunks no
longer under any pin become ordinary cache entries again. Progress per pinned root is kept
for ``gobi pin`` (``info``); offline, a pass stops and is retried when the server is back.
"""

from __future__ import annotations

import errno
import logging
import time

import trio

from .logs import oplog
from .tree import HOLE, ROOT_INO, Entry, FsError, Tree
from .vfs import first_of

log = logging.getLogger(__name__)

CHECK_INTERVAL = 10.0       # seconds between checks for remote changes under pins
MIN_GAP = 5.0               # uploads finishing trigger a pass at most this often
FILE_CONCURRENCY = 4        # files of one pass made local at once (shares the FUSE thread)
CHUNK_CONCURRENCY = 2       # … and chunks of each

class Pins:
    def __init__(self, tree: Tree, vfs, cache, link):
        self.tree = tree
        self.vfs = vfs
        self.cache = cache
        self.link = link
        self.roots: set[int] = set(tree.pins)
        self.progress: dict[int, dict] = {}      # root ino -> state of its latest pass
        self.pinned_bytes = 0                    # data bytes under all pins (sizing, _files)
        self.pinned_files = 0
        self.missing_bytes = 0                   # pinned content not local after the last pass
        self.wake = trio.Event()
        self._seen_seq: str | None = None
        self._refresh_totals()

    # -- questions --------------------------------------------------------------------------

    def covering(self, e: Entry) -> int | None:
        """The pinned node at or above ``e`` (None: not pinned)."""
        if not self.roots:
            return None
        cur: Entry | None = e
        while cur is not None:
            if cur.ino in self.roots:
                return cur.ino
            if cur.parent is None:
                return None
            cur = self.tree.get_opt(cur.parent)
        return None

    def _files(self, roots: list[int]) -> tuple[list[tuple[int, int]], list[Entry]]:
        """(ino, bytes) of each file under ``roots``, each file once: the bytes of data the
        cache must hold for it (see the cap above; a chunk that a file listed earlier has
        too is counted there); and the files counted by their size because this mount does
        not have their chunk list yet."""
        rows: list[tuple[int, int]] = []
        by_size: list[Entry] = []
        seen: set[str] = set()
        for e in self.tree.subtree(roots):
            if not e.is_file:
                continue
            if self.vfs.staged(e.ino):
                n = self.cache.staged_data(e.ino)
            elif (chunks := self.tree.data_chunks(e.ino, e.size)) is not None:
                n = sum(size for h, size in chunks.items() if h not in seen)
                seen.update(chunks)
            else:
                n = e.size
                if n:
                    by_size.append(e)
            rows.append((e.ino, n))
        return rows, by_size

    def _sizing(self, roots: list[int]) -> tuple[int, int]:
        """(files, bytes) under ``roots``, each file and chunk counted once."""
        if not roots:
            return 0, 0
        rows, _ = self._files(roots)
        return len(rows), sum(n for _, n in rows)

    async def _learn_lists(self, roots: list[int]) -> tuple[int, int]:
        """``_sizing`` after fetching the chunk lists of files counted by their size, for
        as long as those sizes decide a pin: the largest files first, enough of them to
        cover the excess, until the pin fits, or what is known already does not fit, or
        every list was asked for. Offline (or a refused fetch) the sizes stand."""
        room = self.cache.cap - self.cache.staged_bytes
        asked: set[int] = set()
        while True:
            rows, by_size = self._files(roots)
            total = sum(n for _, n in rows)
            guessed = [e for e in by_size if e.ino not in asked]
            if total <= room or not guessed or total - sum(e.size for e in by_size) > room:
                return len(rows), total
            batch, cover = [], 0
            for e in sorted(guessed, key=lambda e: e.size, reverse=True):
                batch.append(e)
                asked.add(e.ino)
                cover += e.size
                if cover >= total - room:
                    break
            if not await self._fetch_lists(batch):
                return self._sizing(roots)

    async def _fetch_lists(self, files: list[Entry]) -> bool:
        """Fetch the chunk lists of ``files``, a few at a time; False when one could not
        be fetched (offline, refused)."""
        limiter = trio.Semaphore(FILE_CONCURRENCY)
        failed: list[FsError] = []

        async def fetch(e: Entry) -> None:
            async with limiter:
                try:
                    await self.vfs.manifest(e)
                except FsError as exc:
                    failed.append(exc)

        async with trio.open_nursery() as nursery:
            for e in files:
                nursery.start_soon(fetch, e)
        return not failed

    def _refresh_totals(self) -> None:
        self.pinned_files, self.pinned_bytes = self._sizing(sorted(self.roots))

    def _path(self, ino: int) -> str | None:
        e = self.tree.get_opt(ino)
        return self.tree.path_of(e) if e is not None else None

    def info(self, e: Entry) -> dict:
        """What ``getfattr -n user.gobi.pin`` and ``gobi pin`` show about a node."""
        root = self.covering(e)
        out: dict = {"path": self.tree.path_of(e), "pinned": root is not None,
                     "root": self._path(root) if root is not None else None,
                     "direct": e.ino in self.roots}
        if root is not None:
            out.update(self.progress.get(root) or {"state": "queued"})
        else:
            files, size = self._sizing([e.ino])
            out.update(files=files, bytes=size)
        out.update(cap=self.cache.cap, pinned_bytes=self.pinned_bytes,
                   staged_bytes=self.cache.staged_bytes, cache_pinned=self.cache.pinned_bytes,
                   online=self.link.online)
        return out

    # -- pin / unpin ------------------------------------------------------------------------

    def _resolve(self, path: str) -> Entry:
        e = self.tree.get(ROOT_INO)
        for part in path.split("/"):
            if part in ("", "."):
                continue
            e = self.tree.lookup(e.ino, part.encode())
        return e

    async def pin_path(self, path: str) -> None:
        e = self._resolve(path)
        if e.ino in self.roots:
            self.kick()
            return
        files, size = await self._learn_lists(sorted(self.roots | {e.ino}))
        if size + self.cache.staged_bytes > self.cache.cap:
            # ENOSPC: "No space left on device". gobi pin reads `info` for the figures.
            oplog("pin", path=self.tree.path_of(e), result="refused", need=size,
                  staged=self.cache.staged_bytes, cap=self.cache.cap)
            raise FsError(errno.ENOSPC)
        self.tree.set_pin(e.ino, time.time())
        self.roots.add(e.ino)
        self.pinned_files, self.pinned_bytes = files, size
        self.progress[e.ino] = {"state": "queued", "queued_at": time.time()}
        oplog("pin", path=self.tree.path_of(e), files=files, bytes=size)
        self.kick()

    def unpin_path(self, path: str) -> None:
        e = self._resolve(path)
        if e.ino not in self.roots:
            # Not pinned itself (maybe through a directory above): nothing to undo here.
            raise FsError(errno.EINVAL)
        self._drop(e.ino)
        oplog("pin", path=self.tree.path_of(e), result="unpinned")
        self._release_unwanted()

    def _drop(self, ino: int) -> None:
        self.tree.set_pin(ino, None)
        self.roots.discard(ino)
        self.progress.pop(ino, None)
        self._refresh_totals()

    def _wanted(self) -> set[str]:
        """Chunks of every pinned file whose chunk list is known."""
        wanted: set[str] = set()
        for e in self.tree.subtree(sorted(self.roots)):
            if e.is_file and e.manifest_rev is not None and e.manifest_rev == e.content_rev:
                wanted.update(h for _, _, h in self.tree.manifest(e.ino) if h != HOLE)
        return wanted

    def _release_unwanted(self) -> None:
        self.cache.unpin_except(self._wanted())

    def kick(self) -> None:
        self.wake.set()

    # -- the keeper -------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # Before the mount serves: what is cached and pinned must not be evicted by the
        # first reads.
        for h in self._wanted():
            self.cache.pin(h)
        task_status.started()
        touched = False             # an upload finished or the link changed since the last pass
        last_pass = -MIN_GAP
        while True:
            kicked = self.wake.is_set()
            self.wake = trio.Event()
            due = kicked or self._changed() or (touched and time.monotonic() - last_pass >= MIN_GAP)
            if self.roots and due:
                touched, last_pass = False, time.monotonic()
                try:
                    await self._pass()
                except Exception:
                    log.exception("pin pass failed")
                    for p in self.progress.values():
                        if p.get("state") in ("queued", "fetching"):
                            p.update(state="error", error="internal error (see the log)")
                continue
            with trio.move_on_after(MIN_GAP if touched else CHECK_INTERVAL):
                await first_of(self.wake, self.vfs.content_clean, self.link.changed)
                touched = touched or not self.wake.is_set()

    def _changed(self) -> bool:
        """Anything to do without a kick? New remote changes, a pin not done yet, or an
        interrupted pass that can go on now."""
        if self.tree.meta("last_seq") != self._seen_seq:
            return True
        for root in self.roots:
            st = (self.progress.get(root) or {}).get("state")
            if st in (None, "queued", "fetching") or (st == "waiting" and self.link.online):
                return True
        return False

    async def _pass(self) -> None:
        self._seen_seq = self.tree.meta("last_seq")
        for root in sorted(self.roots):
            e = self.tree.get_opt(root)
            if e is None or (e.parent is None and e.ino != ROOT_INO):
                self._drop(root)              # the pinned node was removed
        self._refresh_totals()
        complete = True
        missing_total = 0
        for root in sorted(self.roots):
            rows, by_size = self._files([root])
            rows.sort()
            state = {"state": "fetching", "root": self._path(root), "files": len(rows),
                     "bytes": sum(r[1] for r in rows), "files_done": 0, "bytes_done": 0,
                     "started": time.time(), "error": ""}
            self.progress[root] = state
            t0 = time.monotonic()
            try:
                fetched = await self._fetch_all(rows, {e.ino for e in by_size}, state)
            except _Stop as stop:
                complete = False
                state.update(state="waiting" if stop.retry else "error", error=str(stop))
                missing_total += state["bytes"] - state["bytes_done"]
                oplog("pin", path=state["root"], result="incomplete", error=str(stop),
                      files_done=state["files_done"], files=state["files"])
                continue
            if root not in self.roots:
                self.progress.pop(root, None)     # unpinned meanwhile
                continue
            # Files counted by their size at the start are counted by their chunk lists
            # now, and each chunk once, as the cache holds them.
            _, total = self._sizing([root])
            state.update(state="done", finished=time.time(), bytes=total, bytes_done=total)
            if fetched:
                oplog("pin", path=state["root"], result="local", files=state["files"],
                      bytes=state["bytes"], fetched_bytes=fetched,
                      ms=round((time.monotonic() - t0) * 1000, 1))
        self.missing_bytes = missing_total
        self._refresh_totals()                    # chunk lists fetched by the pass count now
        if complete:
            self._release_unwanted()

    async def _fetch_all(self, rows: list[tuple[int, int]], by_size: set[int], state: dict) -> int:
        """Make every listed file local (a few files at a time, a few chunks of each);
        returns the bytes fetched. Raises ``_Stop``. A file of ``by_size`` was counted by
        its size for want of its chunk list: once the list is here, by its data."""
        fetched = 0
        files = trio.Semaphore(FILE_CONCURRENCY)
        failure: list[_Stop] = []

        def fail(stop: _Stop) -> None:
            failure.append(stop)
            nursery.cancel_scope.cancel()       # the first failure ends the pass

        def failed_fetch(exc: FsError) -> _Stop:
            offline = exc.errno == errno.ENETUNREACH
            return _Stop("server unreachable" if offline else f"fetch failed: {exc}", retry=offline)

        async def chunk(h: str, size: int, limiter: trio.Semaphore) -> None:
            nonlocal fetched
            try:
                await self.vfs.chunk(h, size, pin=True)
                if self.cache.is_pinned(h):
                    fetched += size
                else:
                    fail(_Stop("the cache is full: pinned content and changes not yet "
                               "uploaded take the whole --cache-size"))
            except FsError as exc:
                fail(failed_fetch(exc))
            finally:
                limiter.release()

        async def one(ino: int, size: int) -> None:
            try:
                e = self.tree.get_opt(ino)
                if e is not None and not self.vfs.staged(ino):
                    await self.vfs.manifest(e)
                    if ino in by_size:
                        data = self.tree.data_bytes(ino, e.size)
                        state["bytes"] += data - size
                        size = data
                    limiter = trio.Semaphore(CHUNK_CONCURRENCY)
                    async with trio.open_nursery() as chunks:
                        for _, csize, h in self.tree.manifest(ino):
                            if h != HOLE and not self.cache.pin(h):
                                await limiter.acquire()
                                chunks.start_soon(chunk, h, csize, limiter)
                if not failure:
                    state["files_done"] += 1
                    state["bytes_done"] += size
            except FsError as exc:
                fail(failed_fetch(exc))
            finally:
                files.release()

        async with trio.open_nursery() as nursery:
            for ino, size in rows:
                await files.acquire()
                nursery.start_soon(one, ino, size)
        if failure:
            raise failure[0]
        return fetched


class _Stop(Exception):
    """A pass cannot go on (offline: ``retry``; cache full or a refused fetch: not)."""

    def __init__(self, message: str, retry: bool = False):
        super().__init__(message)
        self.retry = retry


__all__ = ["Pins"]
