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


@dataclass
class Change:
    """A remote structural change to make through the mount (``Kernel.materialise``).

    ``kind``: ``create`` | ``mkdir`` | ``symlink`` | ``unlink`` | ``rmdir`` | ``rename``.
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
    applied: bool = False


@dataclass
class _Expect:
    ino: int = 0                      # content/attrs: the inode the thread may touch
    change: Change | None = None      # structural change
    fhs: set[int] = field(default_factory=set)


class Kernel:
    def __init__(self, tree: Tree, mountpoint: Path | None = None, materialise: bool = True,
                 busy: Callable[[int], bool] | None = None, delay: float = 0.0):
        self.tree = tree
        self.mountpoint = Path(mountpoint) if mountpoint else None
        self.materialising = materialise and mountpoint is not None
        self.busy = busy or (lambda ino: False)      # local changes: do not materialise
        self._items: list[_Item] = []
        self._wake = trio.Event()
        self._expect: dict[int, _Expect] = {}        # thread id of a materialising call -> what
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
        return {"kernel_notices": self.done, "kernel_materialised": self.materialised,
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
            if self.enabled:
                log.debug("kernel notices: %s", items)
                steps = self._plan(items)
                if steps:
                    await trio.to_thread.run_sync(self._execute, steps)
                self.done += len(items)
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
        if self.materialising and not bulk and not self.busy(ino):
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
                        self.refused.add(s.ino)
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
        """open + ftruncate + close (content) and utime, through the mount, from this
        (worker) thread: the kernel takes size and mtime from our answers and tells
        inotify watchers (IN_MODIFY, IN_CLOSE_WRITE, IN_ATTRIB)."""
        assert self.mountpoint is not None
        path = str(self.mountpoint) + s.path
        with self._owning(_Expect(ino=s.ino)):
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

    def _owning(self, expect: _Expect):
        kernel = self

        class _Scope:
            def __enter__(self_) -> _Expect:
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
        ok = await trio.to_thread.run_sync(self._structural, change)
        if ok and change.applied:
            self.materialised += 1
            return True
        self.failures += 1
        return False

    def _structural(self, c: Change) -> bool:
        assert self.mountpoint is not None
        root = str(self.mountpoint)
        with self._owning(_Expect(change=c)):
            try:
                if c.kind == "create":
                    fd = os.open(root + c.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                                 c.mode & 0o7777)
                    os.close(fd)
                elif c.kind == "mkdir":
                    os.mkdir(root + c.path, c.mode & 0o7777)
                elif c.kind == "symlink":
                    os.symlink(c.target, root + c.path)
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

    def expected(self, pid: int) -> _Expect | None:
        return self._expect.get(pid)

    def new_fh(self, expect: _Expect) -> int:
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


class LiveOperations(Operations):
    """The FUSE adapter, plus the requests our own materialising thread makes: those apply
    a remote change the thread was asked to make (or only confirm what the mirror already
    says) and never make a local change, queue an upload or touch staging."""

    def __init__(self, vfs, status, control, kernel: Kernel, **kw):
        super().__init__(vfs, status, control, **kw)
        self.kernel = kernel

    def _ours(self, ctx) -> _Expect | None:
        return self.kernel.expected(ctx.pid) if ctx is not None else None

    def _change(self, ctx, kind: str, parent: int, name: bytes, new_parent: int = 0,
                new_name: bytes = b"") -> Change | None:
        """The expected structural change, if this request is our thread's; refused when it
        is ours but not what was asked (the tree changed in between)."""
        exp = self._ours(ctx)
        if exp is None:
            return None
        c = exp.change
        if (c is None or c.kind != kind or c.parent != parent or c.name.encode() != name
                or (kind == "rename" and (c.new_parent != new_parent or c.new_name.encode() != new_name))):
            raise pyfuse3.FUSEError(errno.EAGAIN)
        self.kernel.quiet_entries = True
        try:
            ok = c.apply()
        finally:
            self.kernel.quiet_entries = False
        if not ok:
            raise pyfuse3.FUSEError(errno.EAGAIN)
        c.applied = True
        return c

    def _entry(self, parent: int, name: bytes) -> pyfuse3.EntryAttributes:
        e = self.tree.child(parent, name.decode())
        if e is None:
            raise pyfuse3.FUSEError(errno.EAGAIN)
        self.vfs.remember(e.ino)
        return self._attr(e)

    # -- structural changes ---------------------------------------------------------------------

    async def create(self, parent_inode, name, mode, flags, ctx):
        if self._change(ctx, "create", parent_inode, name) is None:
            return await super().create(parent_inode, name, mode, flags, ctx)
        attrs = self._entry(parent_inode, name)
        exp = self._ours(ctx)
        assert exp is not None
        return pyfuse3.FileInfo(fh=self.kernel.new_fh(exp)), attrs

    async def mkdir(self, parent_inode, name, mode, ctx):
        if self._change(ctx, "mkdir", parent_inode, name) is None:
            return await super().mkdir(parent_inode, name, mode, ctx)
        return self._entry(parent_inode, name)

    async def symlink(self, parent_inode, name, target, ctx):
        if self._change(ctx, "symlink", parent_inode, name) is None:
            return await super().symlink(parent_inode, name, target, ctx)
        return self._entry(parent_inode, name)

    async def unlink(self, parent_inode, name, ctx):
        if self._change(ctx, "unlink", parent_inode, name) is None:
            return await super().unlink(parent_inode, name, ctx)

    async def rmdir(self, parent_inode, name, ctx):
        if self._change(ctx, "rmdir", parent_inode, name) is None:
            return await super().rmdir(parent_inode, name, ctx)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if self._change(ctx, "rename", parent_inode_old, name_old, parent_inode_new, name_new) is None:
            return await super().rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)

    # -- content and attributes -----------------------------------------------------------------

    async def open(self, inode, flags, ctx):
        exp = self._ours(ctx)
        if exp is None:
            # Close-to-open consistency: a file whose content changed remotely opens once
            # the kernel knows its new size (see Kernel.settled).
            await self.kernel.settled(inode)
            return await super().open(inode, flags, ctx)
        self._check_inode(exp, inode)
        return pyfuse3.FileInfo(fh=self.kernel.new_fh(exp), keep_cache=False)

    async def flush(self, fh):
        if fh in self.kernel.own_fhs:
            return
        return await super().flush(fh)

    async def release(self, fh):
        if fh in self.kernel.own_fhs:
            self.kernel.own_fhs.discard(fh)
            return
        return await super().release(fh)

    async def setattr(self, inode, attr, fields, fh, ctx):
        exp = self._ours(ctx)
        if exp is None and fh not in self.kernel.own_fhs:
            return await super().setattr(inode, attr, fields, fh, ctx)
        if exp is not None and exp.change is None:
            self._check_inode(exp, inode)
        # During a structural change (a rename) the request is the kernel writing back the
        # ctime it set on the moved inode (writeback cache): confirm the mirror's attributes.
        # Refusing it made the kernel record a writeback error on the file, and the next
        # close() of that file by anyone failed with EIO.
        e = self.tree.get_opt(inode)
        if e is None:
            raise pyfuse3.FUSEError(errno.EAGAIN)
        return self._attr(e)

    def _check_inode(self, exp: _Expect, inode: int) -> None:
        e = self.tree.get_opt(inode)
        busy = (e is None or inode == ROOT_INO or exp.ino != inode or e.dirty
                or inode in self.vfs.writers or self.kernel.busy(inode))
        if busy:
            # Not the file we meant, or it has local changes now: leave it alone.
            raise pyfuse3.FUSEError(errno.EAGAIN)
