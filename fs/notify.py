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

**Inotify for remote changes.** FUSE's own notifications produce no directory events
(FUSE_NOTIFY_DELETE only tells watchers of the deleted inode itself). So live remote
creates, deletes and renames are materialised the same way, before the mirror changes:
the worker thread calls ``open(O_CREAT|O_EXCL)``/``mkdir``/``symlink``, ``unlink``/
``rmdir`` or ``rename`` on the mount, and the matching ``LiveOperations`` handler applies
the remote state to the mirror (``apply()`` of the expected change) instead of making a
local change. The kernel then reports ``IN_CREATE``, ``IN_DELETE``, ``IN_MOVED_FROM``/
``IN_MOVED_TO`` to directory watchers, exactly as for a local change; content changes go
through ``open(O_WRONLY)`` + ``ftruncate`` + ``close`` (``IN_MODIFY``, ``IN_CLOSE_WRITE``)
and a ``utime`` (``IN_ATTRIB``). A request that does not match what the thread was asked
to do (the tree changed meanwhile), or whose ``apply()`` finds local changes, is refused
with ``EAGAIN`` and nothing changes; the applier then applies the change directly with
invalidations. Handles opened this way are private to the thread and never touch staging.

The notices reach the kernel through a ``KernelPort`` (pyfuse3's calls, plugged in by the
composition root from ``gobi.fs.operations``), and the requests the worker thread makes
through the mount are recognised by the FUSE adapter (``LiveOperations``, there too), so
this module imports no FUSE binding and is testable without a mount.

Bulk changes (a re-list, a long replay) use invalidations and eviction only:
materialising costs a few syscalls per change. Every call that may block runs in a worker
thread, never inside a request handler. Nothing here raises: the kernel not knowing an
entry is normal.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from .tree import Tree

log = logging.getLogger(__name__)


class KernelPort(Protocol):
    """What the notifier needs of the kernel (pyfuse3's notification calls). Both may
    block; both raise ``OSError`` (ENOENT and the like) when the kernel has nothing to drop."""

    def invalidate_inode(self, ino: int, attr_only: bool) -> None: ...

    def invalidate_entry(self, parent: int, name: bytes, deleted: int = 0) -> None: ...


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


@dataclass
class Change:
    """A remote structural change to make through the mount (``Kernel.materialise``).

    ``kind``: ``create`` | ``mkdir`` | ``symlink`` | ``mknod`` | ``unlink`` | ``rmdir`` |
    ``rename``. For ``mknod`` (a special file) ``mode`` carries the type bits and ``rdev``
    the device number.
    ``parent``/``name`` (and ``new_parent``/``new_name`` for a rename) are what the
    handler must see; ``apply()`` makes the mirror show the change and returns True, or
    False when it cannot (then the handler refuses and nothing changed)."""

    kind: str
    path: str
    parent: int
    name: str
    apply: Callable[[], bool]
    new_path: str = ""
    new_parent: int = 0
    new_name: str = ""
    target: str = ""
    mode: int = 0o644
    rdev: int = 0
    applied: bool = False


@dataclass
class Expected:
    ino: int = 0                      # content/attrs: the inode the thread may touch
    change: Change | None = None      # structural change
    fhs: set[int] = field(default_factory=set)


class Kernel:
    def __init__(self, tree: Tree, mountpoint: Path | None = None, materialise: bool = True,
                 busy: Callable[[int], bool] | None = None, delay: float = 0.0,
                 port: KernelPort | None = None, held_open: Callable[[int], bool] | None = None):
        self.tree = tree
        # How notices reach the kernel: the FUSE adapter's (``gobi.fs.operations``), plugged
        # in by the composition root; none means not mounted (tests of the layers below).
        self.port = port
        self.mountpoint = Path(mountpoint) if mountpoint else None
        self.materialising = materialise and mountpoint is not None
        self.busy = busy or (lambda ino: False)      # local changes: do not materialise
        # Files open here: an eviction cannot drop an inode in use, and the kernel keeps
        # its own size of it, so a change of one is materialised even in bulk.
        self.held_open = held_open or (lambda ino: False)
        # Files being opened to be changed in place (``LiveOperations._copy_settled``):
        # the open holds the inode, so a change of one is materialised, never evicted.
        self.opening: dict[int, int] = {}
        # Files whose last notice was an eviction: if the kernel held the inode then, it
        # kept its own (old) size; an open for writing has the size materialised first.
        self.evicted_files: set[int] = set()
        self._items: list[_Item] = []
        self._wake = trio.Event()
        self._expect: dict[int, Expected] = {}        # thread id of a materialising call -> what
        self._fhs = itertools.count(1 << 60)         # handles our thread opens (never staged)
        self.own_fhs: set[int] = set()
        self.enabled = False                         # set once the FUSE session runs
        self.quiet_entries = False                   # inside a materialised change
        self.done = 0
        self.materialised = 0
        self.evicted = 0
        self.failures = 0
        # Files whose new size/mtime could not be materialised because they were open for
        # writing here: eviction cannot drop an open inode, so the kernel keeps its own
        # size until told again once the writers closed (``retry_refused``).
        self.refused: set[int] = set()
        # Inodes whose content or attributes changed in the mirror and whose notice has not
        # been carried out yet: until it is, the kernel still has the old size (with the
        # writeback cache it trusts its own), so an open of such a file waits for it
        # (``settled``), or an append would land at the old end of file.
        self._unsettled: dict[int, trio.Event] = {}
        self.delay = delay            # tests: hold notices this long, to widen that window
        self._telling = 0             # notices being carried out right now
        self._drained = trio.Event()  # set (and replaced) each time no notice is left

    @property
    def pending(self) -> int:
        """Notices queued or being carried out (the kernel may still show the old state)."""
        return len(self._items) + self._telling

    # -- what changed (called by the applier, on the trio thread) --------------------------------

    def _add(self, item: _Item) -> None:
        if self.quiet_entries and item.kind in ("entry", "delete"):
            return      # a change made through the mount: the kernel knows it already
        if item.kind in ("inode", "attrs") and self.enabled:
            self._unsettled.setdefault(item.ino, trio.Event())
        self._items.append(item)
        self._wake.set()

    async def settled(self, ino: int, limit: float = 2.0) -> None:
        """Wait until the kernel has been told of every change of ``ino`` made so far
        (bounded: a notice that hangs must not hang the caller)."""
        event = self._unsettled.get(ino)
        if event is not None:
            with trio.move_on_after(limit):
                await event.wait()

    def unsettled(self, ino: int) -> bool:
        """Is a notice of a change of ``ino`` still to be carried out?"""
        return ino in self._unsettled

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

    def retry_refused(self, writing: Callable[[int], bool]) -> int:
        """Tell the kernel again about refused files nobody writes any more (on the trio
        thread, after files were closed). Returns how many were queued again."""
        ready = [ino for ino in self.refused if not writing(ino)]
        for ino in ready:
            self.refused.discard(ino)
            self.content(ino)
        return len(ready)

    def status(self) -> dict:
        return {"kernel_notices": self.done, "kernel_notices_pending": self.pending,
                "kernel_materialised": self.materialised,
                "kernel_evicted": self.evicted, "kernel_fallbacks": self.failures}

    # -- the worker -------------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self.delay:
                await trio.sleep(self.delay)
            items, self._items = self._items, []
            self._telling = len(items)
            if self.enabled and self.port is not None:
                log.debug("kernel notices: %s", items)
                steps = self._plan(items)
                if steps:
                    await trio.to_thread.run_sync(self._execute, steps)
                self.done += len(items)
            self._telling = 0
            if not self._items:
                self._drained.set()
                self._drained = trio.Event()
            # (Not mounted, yet or any more: nothing is cached, nothing to wait for.)
            for it in items:
                event = self._unsettled.get(it.ino)
                if event is not None and it.kind in ("inode", "attrs") and \
                        not any(later.ino == it.ino for later in self._items):
                    del self._unsettled[it.ino]
                    event.set()

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
        in_use = self.held_open(ino) or ino in self.opening
        if self.materialising and (not bulk or in_use) and not self.busy(ino):
            path = self.tree.path_of(e)
            if path.startswith("/"):
                return _Step("materialise", e.parent, e.name, ino, path=path, size=e.size,
                             mtime_ns=e.mtime_ns, content=content)
        return _Step("evict", e.parent, e.name, ino, content=content)

    def _execute(self, steps: list[_Step]) -> None:
        for s in steps:
            try:
                if s.kind == "entry":
                    _quiet(self.port.invalidate_entry, s.parent, s.name.encode())
                elif s.kind == "delete":
                    if not _quiet(self.port.invalidate_entry, s.parent, s.name.encode(), s.ino):
                        _quiet(self.port.invalidate_entry, s.parent, s.name.encode())
                elif s.kind == "inode":
                    _quiet(self.port.invalidate_inode, s.ino, not s.content)
                elif s.kind == "materialise":
                    _quiet(self.port.invalidate_inode, s.ino, not s.content)
                    if self._materialise(s):
                        self.materialised += 1
                        self.evicted_files.discard(s.ino)
                    else:
                        self.refused.add(s.ino)
                        self._evict(s)
                elif s.kind == "evict":
                    _quiet(self.port.invalidate_inode, s.ino, not s.content)
                    self._evict(s)
            except Exception:
                self.failures += 1
                log.exception("kernel notification %s failed", s)

    def _evict(self, s: _Step) -> None:
        if s.content:
            self.evicted_files.add(s.ino)
        if _quiet(self.port.invalidate_entry, s.parent, s.name.encode()):
            self.evicted += 1

    def _materialise(self, s: _Step) -> bool:
        """open + ftruncate + close (content) and utime, through the mount, from this
        (worker) thread: the kernel takes size and mtime from our answers and tells
        inotify watchers (IN_MODIFY, IN_CLOSE_WRITE, IN_ATTRIB)."""
        assert self.mountpoint is not None
        path = str(self.mountpoint) + s.path
        with self._owning(Expected(ino=s.ino)):
            try:
                if s.content:
                    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    try:
                        os.ftruncate(fd, s.size)
                    finally:
                        os.close(fd)
                os.utime(path, ns=(s.mtime_ns, s.mtime_ns), follow_symlinks=False)
                return True
            except OSError as exc:
                self.failures += 1
                log.debug("materialising %s failed: %s", path, exc)
                return False

    def _owning(self, expect: Expected):
        kernel = self

        class _Scope:
            def __enter__(self_) -> Expected:
                self_.tid = threading.get_native_id()
                kernel._expect[self_.tid] = expect
                return expect

            def __exit__(self_, *exc) -> None:
                # Our handles stay known until their RELEASE, which the kernel sends
                # after close() returned.
                kernel._expect.pop(self_.tid, None)

        return _Scope()

    # -- structural changes (awaited by the applier, one at a time) ------------------------------

    def can_materialise(self) -> bool:
        return self.enabled and self.materialising

    async def materialise(self, change: Change) -> bool:
        """Make ``change`` through the mount from a worker thread; True when the handler
        applied it (the mirror shows it and watchers were told), False otherwise (nothing
        changed: the caller applies it directly)."""
        if not self.can_materialise():
            return False
        await self._notices_out()
        ok = await trio.to_thread.run_sync(self._structural, change)
        if ok and change.applied:
            self.materialised += 1
            return True
        self.failures += 1
        return False

    async def _notices_out(self, limit: float = 2.0) -> None:
        """Wait (bounded) until the notices queued so far are carried out. They name
        entries by the parent and name the mirror showed when they were planned; a rename or
        delete made through the mount before them moves the kernel's entry away from under
        an eviction, and a file evicted to show a new size (the kernel trusts its own size
        of a cached file) kept its old one for good (found by the long partition run: a
        bulk catch-up's append, then the file's rename)."""
        with trio.move_on_after(limit):
            while self.pending:
                await self._drained.wait()

    def _structural(self, c: Change) -> bool:
        assert self.mountpoint is not None
        root = str(self.mountpoint)
        with self._owning(Expected(change=c)):
            try:
                if c.kind == "create":
                    fd = os.open(root + c.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                                 c.mode & 0o7777)
                    os.close(fd)
                elif c.kind == "mkdir":
                    os.mkdir(root + c.path, c.mode & 0o7777)
                elif c.kind == "symlink":
                    os.symlink(c.target, root + c.path)
                elif c.kind == "mknod":
                    # A device node needs CAP_MKNOD: without it this fails and the change
                    # is applied directly, with invalidations (no inotify event).
                    os.mknod(root + c.path, c.mode, c.rdev)
                elif c.kind == "unlink":
                    os.unlink(root + c.path)
                elif c.kind == "rmdir":
                    os.rmdir(root + c.path)
                elif c.kind == "rename":
                    os.rename(root + c.path, root + c.new_path)
                else:
                    return False
                return True
            except OSError as exc:
                log.debug("materialising %s %s failed: %s", c.kind, c.path, exc)
                return False

    # -- recognising our own requests (called by LiveOperations, on the trio thread) -------------

    def expected(self, pid: int) -> Expected | None:
        return self._expect.get(pid)

    def new_fh(self, expect: Expected) -> int:
        fh = next(self._fhs)
        expect.fhs.add(fh)
        self.own_fhs.add(fh)
        return fh


def _quiet(fn, *args) -> bool:
    """Call a kernel notification; False when the kernel did not have the entry."""
    try:
        fn(*args)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENOTEMPTY, errno.EBUSY):
            log.debug("%s%s: %s", getattr(fn, "__name__", fn), args, exc)
        return False
