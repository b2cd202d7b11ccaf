"""Telling the kernel about remote changes: invalidations, and materialising through the mount.

The kernel caches names, attributes and pages of a FUSE filesystem. When the mirror
changes because of a remote change, ``Kernel`` (fed by ``gobi.fs.applier``) tells it:

- a created name: ``invalidate_entry(parent, name)`` drops a cached negative entry;
- a removed name: ``invalidate_entry(parent, name, deleted=ino)`` (FUSE_NOTIFY_DELETE), so
  the kernel drops the dentry and inotify watchers of the directory get ``IN_DELETE``;
- a move: the old and the new name are invalidated;
- content or attributes: ``invalidate_inode`` drops the cached pages and attributes.

That is not enough for files with the kernel's **writeback cache** on (we enable it for
write speed): the kernel then trusts its own idea of a regular file's size and mtime and
ignores the ones ``getattr`` reports (``fuse_get_cache_mask``), so a file that shrank
elsewhere reads NUL-padded to its old size and a remote ``touch`` never shows. Two ways
out, in this order:

1. **Materialise through the mount.** A worker thread of this process calls
   ``truncate(path)`` and ``utime(path)`` on the mount itself. The kernel sends them to us
   as SETATTR requests; ``LiveOperations`` recognises the thread (the request's pid is the
   calling thread's id) and answers with the mirror's attributes without changing anything.
   The kernel takes the size from our answer (and the mtime we asked for), truncates its
   page cache accordingly, and — since these are real syscalls — reports ``IN_MODIFY`` /
   ``IN_ATTRIB`` to inotify watchers. Works for files that are open (``tail -f``).
   A request for another inode than expected (the path changed meanwhile), or for a file
   with local changes (open for writing, dirty), is refused, so this never touches local
   data; the fallback then applies.
2. **Evict**: ``invalidate_entry(parent, name)`` drops the dentry; an inode nobody holds
   open is then evicted at once (FUSE drops unused inodes), and the next lookup reads
   fresh attributes.

Bulk changes (a re-list, a long replay) use eviction only: materialising costs a few
syscalls per file. Every call that may block runs in a worker thread, never inside a
request handler. Nothing here raises: the kernel not knowing an entry is normal.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from .operations import Operations
from .tree import ROOT_INO, Tree

log = logging.getLogger(__name__)


@dataclass
class _Item:
    kind: str                 # entry | delete | inode | attrs
    parent: int = 0
    name: str = ""
    ino: int = 0
    bulk: bool = False


@dataclass
class _Step:
    """One thing the worker thread does (planned on the trio thread, where the mirror is)."""

    kind: str                 # entry | delete | inode | materialise | evict
    parent: int = 0
    name: str = ""
    ino: int = 0
    path: str = ""
    size: int = 0
    mtime_ns: int = 0
    content: bool = False


class Kernel:
    def __init__(self, tree: Tree, mountpoint: Path | None = None, materialise: bool = True,
                 busy: Callable[[int], bool] | None = None):
        self.tree = tree
        self.mountpoint = Path(mountpoint) if mountpoint else None
        self.materialise = materialise and mountpoint is not None
        self.busy = busy or (lambda ino: False)      # local changes: do not materialise
        self._items: list[_Item] = []
        self._wake = trio.Event()
        self._own: set[int] = set()                  # thread ids of our materialising calls
        self._expect: dict[int, int] = {}            # thread id -> inode it may touch
        self.enabled = False                         # set once the FUSE session runs
        self.done = 0
        self.materialised = 0
        self.evicted = 0
        self.failures = 0

    # -- what changed (called by the applier, on the trio thread) --------------------------------

    def _add(self, item: _Item) -> None:
        self._items.append(item)
        self._wake.set()

    def created(self, parent: int, name: str) -> None:
        self._add(_Item("entry", parent, name))

    def removed(self, parent: int, name: str, ino: int) -> None:
        self._add(_Item("delete", parent, name, ino))

    def moved(self, old_parent: int, old_name: str, new_parent: int, new_name: str, ino: int) -> None:
        self._add(_Item("entry", old_parent, old_name, ino))
        self._add(_Item("entry", new_parent, new_name, ino))

    def content(self, ino: int, bulk: bool = False) -> None:
        self._add(_Item("inode", ino=ino, bulk=bulk))

    def attrs(self, ino: int, bulk: bool = False) -> None:
        self._add(_Item("attrs", ino=ino, bulk=bulk))

    def status(self) -> dict:
        return {"kernel_notices": self.done, "kernel_materialised": self.materialised,
                "kernel_evicted": self.evicted}

    # -- the worker -------------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            items, self._items = self._items, []
            if not self.enabled:
                continue            # not mounted (yet, or any more): nothing is cached
            steps = self._plan(items)
            if steps:
                await trio.to_thread.run_sync(self._execute, steps)
            self.done += len(items)

    def _plan(self, items: list[_Item]) -> list[_Step]:
        steps: list[_Step] = []
        seen_inodes: dict[int, _Step] = {}
        for it in items:
            if it.kind == "entry":
                steps.append(_Step("entry", it.parent, it.name))
            elif it.kind == "delete":
                steps.append(_Step("delete", it.parent, it.name, it.ino))
            else:
                content = it.kind == "inode"
                prev = seen_inodes.get(it.ino)
                if prev is not None:
                    prev.content = prev.content or content
                    continue
                step = self._plan_inode(it.ino, content, it.bulk)
                if step is not None:
                    seen_inodes[it.ino] = step
                    steps.append(step)
        return steps

    def _plan_inode(self, ino: int, content: bool, bulk: bool) -> _Step | None:
        e = self.tree.get_opt(ino)
        if e is None:
            return _Step("inode", ino=ino, content=content)
        if not e.is_file or e.parent is None:
            return _Step("inode", ino=ino, content=content)
        if self.materialise and not bulk and not self.busy(ino):
            path = self.tree.path_of(e)
            if path.startswith("/"):
                return _Step("materialise", e.parent, e.name, ino, path=path, size=e.size,
                             mtime_ns=e.mtime_ns, content=content)
        return _Step("evict", e.parent, e.name, ino, content=content)

    def _execute(self, steps: list[_Step]) -> None:
        for s in steps:
            try:
                if s.kind == "entry":
                    _quiet(pyfuse3.invalidate_entry, s.parent, s.name.encode())
                elif s.kind == "delete":
                    if not _quiet(pyfuse3.invalidate_entry, s.parent, s.name.encode(), s.ino):
                        _quiet(pyfuse3.invalidate_entry, s.parent, s.name.encode())
                elif s.kind == "inode":
                    _quiet(pyfuse3.invalidate_inode, s.ino, not s.content)
                elif s.kind == "materialise":
                    _quiet(pyfuse3.invalidate_inode, s.ino, not s.content)
                    if self._materialise(s):
                        self.materialised += 1
                    else:
                        self._evict(s)
                elif s.kind == "evict":
                    _quiet(pyfuse3.invalidate_inode, s.ino, not s.content)
                    self._evict(s)
            except Exception:
                self.failures += 1
                log.exception("kernel notification %s failed", s)

    def _evict(self, s: _Step) -> None:
        if _quiet(pyfuse3.invalidate_entry, s.parent, s.name.encode()):
            self.evicted += 1

    def _materialise(self, s: _Step) -> bool:
        """truncate + utime through the mount from this (worker) thread."""
        assert self.mountpoint is not None
        path = str(self.mountpoint) + s.path
        tid = threading.get_native_id()
        self._own.add(tid)
        self._expect[tid] = s.ino
        try:
            if s.content:
                os.truncate(path, s.size)
            os.utime(path, ns=(s.mtime_ns, s.mtime_ns), follow_symlinks=False)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ENOENT, errno.EACCES, errno.EPERM):
                log.debug("materialising %s failed: %s", path, exc)
            return False
        finally:
            self._own.discard(tid)
            self._expect.pop(tid, None)

    # -- recognising our own requests (called by LiveOperations, on the trio thread) -------------

    def owns(self, pid: int) -> bool:
        return pid in self._own

    def expected(self, pid: int) -> int | None:
        return self._expect.get(pid)


def _quiet(fn, *args) -> bool:
    """Call a kernel notification; False when the kernel did not have the entry."""
    try:
        fn(*args)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENOTEMPTY, errno.EBUSY):
            log.debug("%s%s: %s", getattr(fn, "__name__", fn), args, exc)
        return False


class LiveOperations(Operations):
    """The FUSE adapter, plus the requests our own materialising thread makes: those only
    confirm what the mirror already says and never change local data."""

    def __init__(self, vfs, status, control, kernel: Kernel):
        super().__init__(vfs, status, control)
        self.kernel = kernel

    async def setattr(self, inode, attr, fields, fh, ctx):
        if ctx is not None and self.kernel.owns(ctx.pid):
            return self._confirm(inode, ctx.pid)
        return await super().setattr(inode, attr, fields, fh, ctx)

    def _confirm(self, inode: int, pid: int) -> pyfuse3.EntryAttributes:
        e = self.tree.get_opt(inode)
        busy = (e is None or inode == ROOT_INO or self.kernel.expected(pid) != inode
                or e.dirty or inode in self.vfs.writers or self.kernel.busy(inode))
        if busy:
            # Not the file we meant, or it has local changes now: leave it alone.
            raise pyfuse3.FUSEError(errno.EAGAIN)
        return self._attr(e)
