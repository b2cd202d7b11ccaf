"""The pyfuse3 adapter: kernel requests in, mirror/vfs calls, attributes and errnos out.

Thin on purpose: the filesystem's rules live in ``gobi.fs.tree`` (names, renames,
coalescing) and ``gobi.fs.vfs`` (content, handles). This module converts types, keeps the
few FUSE-only rules (what xattr namespaces mean, what is refused), and is the one place
that imports pyfuse3 and where ``FsError`` becomes ``FUSEError``. It also holds what the
layers below need of the kernel: ``LiveOperations`` (requests the notifier's worker thread
makes through the mount to materialise remote changes, ``gobi.fs.notify``), the
``PyfuseKernel`` port for invalidations, and the session calls of the composition root
(``fuse_init``, ``fuse_main``, ``fuse_close``, ``fuse_terminate``).

Time travel (``MOUNT/.gobi/at/<seq or time>/…``, read-only) is ``gobi.fs.timetravel``:
requests for its inodes (above ``VIRTUAL_BASE``) and handles are passed to it, and every
change under ``.gobi`` is ``EROFS``.

Refused with a clear errno (documented in docs/client.md): ``RENAME_EXCHANGE``
(``EINVAL``), hard links to directories (``EPERM``, as everywhere), xattrs outside
``user.*`` (``EOPNOTSUPP``; the xattr namespaces are ``gobi.fs.xattrs``' job). FIFOs,
sockets and device nodes are nodes (``mknod``); their attributes carry the type bits and
``st_rdev``, and the kernel opens them itself (a pipe, a socket, a device driver).

Cheap on purpose where the kernel asks often: ``readdir`` (readdirplus: every entry comes
with its attributes, and counts as a lookup) fetches about as many rows as the kernel's
buffer takes; the attributes may be cached by the kernel for ``TIMEOUT``. Every request
is counted by operation (``FuseStats``, the mount's metrics).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable

import pyfuse3

from .metrics import FuseStats
from .notify import Change, Kernel, Expected
from .space import SpaceWatch
from .timetravel import NAME as TT_NAME
from .timetravel import TimeTravel, is_virtual
from .tree import KIND_BITS, ROOT_INO, Entry, FsError, Tree
from .vfs import Vfs
from .xattrs import Xattrs

log = logging.getLogger(__name__)

#: The kernel may cache names and attributes this long. Every change made through this
#: mount updates its caches itself; remote changes are pushed with invalidations.
TIMEOUT = 300.0
BLKSIZE = 128 * 1024
#: readdir: rows fetched per request at first and at most (the kernel's buffer takes
#: ~25 entries per 4 KiB page; the first request tells how many fit).
READDIR_FIRST, READDIR_MAX = 64, 2048


def _errname(n: int) -> str:
    return errno.errorcode.get(n, str(n))


def fuse_errors(fn):
    """Translate FsError → FUSEError; anything unexpected is logged and becomes EIO.
    Counts the request (and its errno) for the metrics."""
    op = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self, *args, **kwargs):
        t0 = self.vfs.foreground.request()
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError as exc:
            self.stats.error(op, _errname(exc.errno))
            raise
        except FsError as exc:
            self.stats.error(op, _errname(exc.errno))
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            log.exception("%s failed", op)
            self.stats.error(op, _errname(exc.errno or errno.EIO))
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", op)
            self.stats.error(op, "EIO")
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            self.stats.done(op, time.monotonic() - t0)

    return wrapper


class Operations(pyfuse3.Operations):
    enable_writeback_cache = True

    def __init__(self, vfs: Vfs, status: Callable[[], dict], control: Callable[[bytes], None],
                 xattrs: Xattrs | None = None, stats: FuseStats | None = None,
                 space: SpaceWatch | None = None):
        super().__init__()
        self.vfs = vfs
        self.space = space
        self.tree: Tree = vfs.tree
        self.xattrs = xattrs or Xattrs(vfs.tree, vfs, status, control)
        self.stats = stats or FuseStats()
        self._readdir_rows = READDIR_FIRST
        self.tt = TimeTravel(vfs)

    # -- attributes -------------------------------------------------------------------------

    def _attr(self, e: Entry) -> pyfuse3.EntryAttributes:
        return self._attr_of(e.ino, e.kind, e.mode, e.size, e.mtime_ns, e.ctime_ns, e.uid, e.gid,
                             e.rdev, e.atime_ns)

    def _attr_of(self, ino: int, kind: str, mode: int, size: int, mtime: int, ctime: int,
                 uid: int | None, gid: int | None, rdev: int = 0,
                 atime: int = 0) -> pyfuse3.EntryAttributes:
        """Attributes from the mirror's columns (``Tree.LISTING`` order). Hot: readdir
        builds one per entry, so it avoids most method calls; generation keeps
        EntryAttributes' default (0). The type bits and ``st_rdev`` are what make the
        kernel treat a special file as a pipe, socket or device of its own."""
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.entry_timeout = TIMEOUT
        a.attr_timeout = TIMEOUT
        vfs = self.vfs
        held = size
        if kind == "dir":
            size = held = 4096              # as ext4 shows them
        else:
            staged = vfs.cache._staged.get(ino)
            if staged is not None:
                # A sparse copy's holes hold nothing: st_blocks is what it holds (du).
                size, held = staged, vfs.cache._held.get(ino, 0)
            elif kind == "file" and size:
                held = self.tree.data_bytes(ino, size)
        mtime = vfs.mtimes.get(ino, mtime)
        a.st_mode = KIND_BITS[kind] | mode
        a.st_rdev = rdev
        a.st_nlink = self.tree.nlink(ino, kind)
        a.st_uid = vfs.uid if uid is None else uid
        a.st_gid = vfs.gid if gid is None else gid
        a.st_size = size
        a.st_blksize = BLKSIZE
        a.st_blocks = (held + 511) // 512
        a.st_atime_ns = atime or mtime
        a.st_mtime_ns = mtime
        a.st_ctime_ns = ctime if ctime > mtime else mtime
        return a

    def _row_attr(self, row: tuple) -> pyfuse3.EntryAttributes:
        """Attributes of a ``Tree.LISTING``-shaped row (the time-travel view's)."""
        return self._attr_of(row[0], *row[2:])

    def _negative(self) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = 0
        a.entry_timeout = TIMEOUT
        return a

    def _is_tt_name(self, parent: int, name: bytes) -> bool:
        """``.gobi`` at the root, while the vault has no real node of that name."""
        return parent == ROOT_INO and name == TT_NAME.encode() and self.tree.child(ROOT_INO, TT_NAME) is None

    def _writable(self, parent: int, name: bytes | None = None) -> None:
        """Changes under ``.gobi`` (or of ``.gobi`` itself) are refused: a read-only view."""
        if is_virtual(parent) or (name is not None and self._is_tt_name(parent, name)):
            raise FsError(errno.EROFS)

    @fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        if is_virtual(parent_inode):
            row = await self.tt.lookup(parent_inode, name)
            return self._negative() if row is None else self._row_attr(row)
        try:
            e = self.tree.lookup(parent_inode, name)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            if self._is_tt_name(parent_inode, name):
                return self._row_attr(self.tt.root_entry())
            # A negative entry the kernel may cache (git, make, shells probe many missing
            # names); remote creates invalidate it.
            return self._negative()
        self.vfs.remember(e.ino)
        return self._attr(e)

    async def forget(self, inode_list):
        for ino, n in inode_list:
            if is_virtual(ino):
                continue        # the view keeps no lookup counts (gobi.fs.timetravel)
            try:
                self.vfs.forget(ino, n)
            except Exception:
                log.exception("forget(%s) failed", ino)

    @fuse_errors
    async def getattr(self, inode, ctx=None):
        if is_virtual(inode):
            return self._row_attr(await self.tt.getattr(inode))
        return self._attr(self.tree.get(inode))

    @fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        self._writable(inode)
        e = self.tree.get(inode)
        if fields.update_size:
            await self.vfs.truncate(inode, attr.st_size)
        mode = attr.st_mode if fields.update_mode else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        if fields.update_atime:
            self.tree.update(inode, atime_ns=attr.st_atime_ns)     # local only (gobi.fs.atime)
        uid = attr.st_uid if fields.update_uid else None
        gid = attr.st_gid if fields.update_gid else None
        if mode is not None or mtime is not None or uid is not None or gid is not None:
            # The mirror first: it notices the mtime change (and queues it for upload)
            # only while the row still has the old value.
            e = self.tree.setattr(inode, mode=mode, mtime_ns=mtime, uid=uid, gid=gid)
        else:
            e = self.tree.get(inode)
        if mtime is not None and self.vfs.staged(inode):
            self.vfs.mtimes[inode] = mtime
            self.vfs.save_attrs(inode)
            e = self.tree.get(inode)
        return self._attr(e)

    @fuse_errors
    async def readlink(self, inode, ctx):
        if is_virtual(inode):
            return (await self.tt.readlink(inode)).encode()
        e = self.tree.get(inode)
        if e.kind != "symlink":
            raise FsError(errno.EINVAL)
        return (e.target or "").encode()

    # -- directories ------------------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode, ctx):
        if is_virtual(inode):
            return await self.tt.opendir(inode)
        e = self.tree.get(inode)
        if not e.is_dir:
            raise FsError(errno.ENOTDIR)
        return inode

    @fuse_errors
    async def readdir(self, fh, start_id, token):
        # pyfuse3 answers READDIRPLUS: each entry the kernel takes carries its attributes
        # and counts as a lookup (it will be forgotten like one). Fetch about as many rows
        # as fit in the kernel's buffer, not a fixed big batch per request.
        if is_virtual(fh):
            for offset, row in await self.tt.listing(fh, start_id, READDIR_MAX):
                if not pyfuse3.readdir_reply(token, row[1].encode(), self._row_attr(row), offset):
                    return
            return
        # Offsets: 1 after ".", 2 after "..", then a child's inode + 2 (inodes of children
        # are >= 2, so they never collide with the dots). The kernel takes no lookup for
        # the dots from a READDIRPLUS reply, so they are not remembered.
        if start_id == 0:
            self.vfs.accessed(fh)       # getdents(2) reads the directory (gobi.fs.atime)
        if start_id < 2:
            e = self.tree.get(fh)
            dots = [(b".", e, 1), (b"..", self.tree.get(e.parent if e.parent is not None else fh), 2)]
            for name, d, offset in dots[start_id:]:
                if not pyfuse3.readdir_reply(token, name, self._attr(d), offset):
                    return
            start_id = 2
        after, sent, want = start_id - 2, 0, self._readdir_rows
        attr, reply, remember = self._attr_of, pyfuse3.readdir_reply, self.vfs.remember
        while True:
            batch = self.tree.listing(fh, after, want)
            for ino, name, kind, mode, size, mtime, ctime, uid, gid, rdev, atime, pos in batch:
                # (``pos``: the name's own row, which orders the directory; ``ino``: the
                # file's, which differs for a further name of a hard-linked file.)
                if not reply(token, name.encode(),
                             attr(ino, kind, mode, size, mtime, ctime, uid, gid, rdev, atime), pos + 2):
                    self._readdir_rows = max(16, min(READDIR_MAX, sent + 8))
                    return
                remember(ino)
                sent += 1
                after = pos
            if len(batch) < want:
                return
            want = min(READDIR_MAX, want * 2)

    async def releasedir(self, fh):
        pass

    @fuse_errors
    async def fsyncdir(self, fh, datasync):
        if not is_virtual(fh):
            await self.vfs.fsync(None)

    @fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        self._writable(parent_inode, name)
        e = self.tree.make(parent_inode, name, "dir", mode, ctx.uid, ctx.gid)
        self.vfs.remember(e.ino)
        self.vfs.changed.set()
        return self._attr(e)

    @fuse_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        self._writable(parent_inode, name)
        if not stat.S_ISREG(mode):
            # A FIFO, socket (bind) or device node: metadata only, no staging copy.
            e = self.tree.mknod(parent_inode, name, mode, rdev, ctx.uid, ctx.gid)
            self.vfs.remember(e.ino)
            self.vfs.changed.set()
            return self._attr(e)
        fh, e = self.vfs.create(parent_inode, name, mode, ctx.uid, ctx.gid)
        await self.vfs.release(fh)
        self.vfs.remember(e.ino)
        return self._attr(self.tree.get(e.ino))

    @fuse_errors
    async def symlink(self, parent_inode, name, target, ctx):
        self._writable(parent_inode, name)
        e = self.tree.symlink(parent_inode, name, target, ctx.uid, ctx.gid)
        self.vfs.remember(e.ino)
        self.vfs.changed.set()
        return self._attr(e)

    @fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        self._writable(parent_inode, name)
        e = self.tree.remove(parent_inode, name, want_dir=False)
        self.vfs.changed.set()
        self.vfs.maybe_purge(e.ino)

    @fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        self._writable(parent_inode, name)
        e = self.tree.remove(parent_inode, name, want_dir=True)
        self.vfs.changed.set()
        self.vfs.maybe_purge(e.ino)

    @fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        self._writable(parent_inode_old, name_old)
        self._writable(parent_inode_new, name_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FsError(errno.EINVAL)
        _, replaced = self.tree.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                                       noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE))
        self.vfs.changed.set()
        if replaced is not None:
            self.vfs.maybe_purge(replaced.ino)

    @fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        self._writable(inode)
        self._writable(new_parent_inode, new_name)
        e = self.tree.link(inode, new_parent_inode, new_name)
        self.vfs.remember(e.ino)
        self.vfs.changed.set()
        return self._attr(e)

    # -- files ------------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode, flags, ctx):
        if is_virtual(inode):
            # Immutable content under an inode of its own: the page cache may keep it.
            return pyfuse3.FileInfo(fh=await self.tt.open(inode, flags), keep_cache=True)
        fh, keep = await self.vfs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        self._writable(parent_inode, name)
        fh, e = self.vfs.create(parent_inode, name, mode, ctx.uid, ctx.gid)
        self.vfs.remember(e.ino)
        return pyfuse3.FileInfo(fh=fh), self._attr(e)

    @fuse_errors
    async def read(self, fh, off, size):
        if is_virtual(fh):
            return await self.tt.read(fh, off, size)
        data = await self.vfs.read(fh, off, size)
        self.vfs.accessed(self.vfs.handles[fh].ino)
        return data

    @fuse_errors
    async def write(self, fh, off, buf):
        self._writable(fh)
        return await self.vfs.write(fh, off, buf)

    @fuse_errors
    async def flush(self, fh):
        if not is_virtual(fh):
            await self.vfs.flush(fh)

    @fuse_errors
    async def release(self, fh):
        if is_virtual(fh):
            self.tt.release(fh)
            return
        await self.vfs.release(fh)

    @fuse_errors
    async def fsync(self, fh, datasync):
        if not is_virtual(fh):
            await self.vfs.fsync(fh)

    @fuse_errors
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        cache = self.vfs.cache
        if self.space is not None:
            total, free = self.space.figures()       # the server's storage (gobi.fs.space)
        else:
            total, free = cache.cap, max(0, cache.cap - cache.staged_bytes)
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        s.f_blocks = total // 4096
        s.f_bfree = free // 4096
        s.f_bavail = s.f_bfree
        s.f_files = 1 << 32
        s.f_ffree = (1 << 32) - self.tree.count()
        s.f_favail = s.f_ffree
        s.f_namemax = 255
        return s

    # -- extended attributes (gobi.fs.xattrs) ----------------------------------------------

    @fuse_errors
    async def getxattr(self, inode, name, ctx):
        if is_virtual(inode):
            raise FsError(errno.ENODATA)
        return await self.xattrs.get(inode, name)

    @fuse_errors
    async def setxattr(self, inode, name, value, ctx):
        self._writable(inode)
        await self.xattrs.set(inode, name, value)

    @fuse_errors
    async def listxattr(self, inode, ctx):
        if is_virtual(inode):
            return []
        return self.xattrs.list(inode)

    @fuse_errors
    async def removexattr(self, inode, name, ctx):
        self._writable(inode)
        self.xattrs.remove(inode, name)


def _escape(value: str) -> str:
    """libfuse splits options at commas; a backslash escapes one."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def mount_options(fsname: str, extra: list[str]) -> set[str]:
    """The FUSE options of a mount: type ``fuse.gobi``, source ``fsname`` (what mount(8)
    and findmnt show; an ``fsname=`` among ``extra`` wins, so an fstab line's own source
    can be used), default_permissions, and the user's options."""
    opts = set(pyfuse3.default_options) | {"subtype=gobi"}
    if not any(o.startswith("fsname=") for o in extra):
        opts.add(f"fsname={_escape(fsname)}")
    opts |= set(extra)
    return opts


class FuseInitError(Exception):
    """The kernel mount failed; the message is libfuse's (or fusermount3's) own."""


def fuse_init(ops: pyfuse3.Operations, mountpoint: str, options: set[str]) -> None:
    """``pyfuse3.init`` that turns a failure into ``FuseInitError`` with libfuse's message.

    libfuse and fusermount3 explain a failure only on stderr ("fuse: unknown option(s):
    `-o foo'", "fusermount3: option allow_other only allowed if 'user_allow_other' is set
    in /etc/fuse.conf", "fuse: failed to open /dev/fuse: Permission denied") while pyfuse3
    raises a bare RuntimeError; so stderr is captured for the call. On success, whatever
    libfuse printed (warnings) is logged.
    """
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    error: BaseException | None = None
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            pyfuse3.init(ops, mountpoint, options)
        except RuntimeError as exc:
            error = exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace").strip()
    if error is not None:
        raise FuseInitError(text or str(error))
    if text:
        log.warning("libfuse: %s", text)


# --------------------------------------------------------------------------- the mount's own requests


class LiveOperations(Operations):
    """The FUSE adapter, plus the requests our own materialising thread makes: those apply
    a remote change the thread was asked to make (or only confirm what the mirror already
    says) and never make a local change, queue an upload or touch staging."""

    def __init__(self, vfs, status, control, kernel: Kernel, **kw):
        super().__init__(vfs, status, control, **kw)
        self.kernel = kernel

    async def forget(self, inode_list):
        await super().forget(inode_list)
        for ino, _ in inode_list:
            if not self.vfs.in_use(ino):
                # The kernel dropped the inode: it keeps no size of it that a later open
                # would have to correct (``Kernel.evicted_files`` would only grow).
                self.kernel.evicted_files.discard(ino)

    def _ours(self, ctx) -> Expected | None:
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
        e = self.tree.file_of(e)
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

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        if self._change(ctx, "mknod", parent_inode, name) is None:
            return await super().mknod(parent_inode, name, mode, rdev, ctx)
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
            if (not is_virtual(inode) and (flags & os.O_ACCMODE) != os.O_RDONLY
                    and not flags & os.O_TRUNC):
                await self._copy_settled(inode)
            return await super().open(inode, flags, ctx)
        self._check_inode(exp, inode)
        return pyfuse3.FileInfo(fh=self.kernel.new_fh(exp), keep_cache=False)

    async def _copy_settled(self, inode: int) -> None:
        """Before a file is opened to be changed in place: its staging copy made, and the
        kernel told of any remote change applied while the copy was fetched.

        The copy awaits the network, and the file is not held until the handle exists: a
        commit from another device applied meanwhile is copied (the mirror moved, the fill
        fetches again), but its notice is still queued. Once the handle exists the notice
        is refused (the file is open for writing), so the kernel kept the old size (the
        writeback cache trusts its own): the writer read the old content, wrote over it,
        and the upload claimed the new version as its base, replacing another device's
        write without a conflict (three mounts appending to shared files lost appends).
        So the notice is carried out before the handle exists (bounded: a few rounds).

        Carried out as a materialisation (the size set through the mount): an eviction
        (how bulk changes are told) cannot drop the inode this open holds, so the kernel
        kept the old size and the append landed at the old end (the long partition run,
        seed 549945219). A file whose last notice was an eviction has its size
        materialised again first."""
        e = self.tree.get_opt(inode)
        if e is None or not e.is_file:
            return              # the adapter's open answers for these
        kernel = self.kernel
        kernel.opening[inode] = kernel.opening.get(inode, 0) + 1
        try:
            for _ in range(3):
                await self.vfs.materialize(inode)
                if inode in kernel.evicted_files and kernel.can_materialise():
                    kernel.evicted_files.discard(inode)
                    kernel.content(inode)
                if not kernel.unsettled(inode):
                    return
                await kernel.settled(inode)
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        finally:
            kernel.opening[inode] -= 1
            if not kernel.opening[inode]:
                del kernel.opening[inode]

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

    def _check_inode(self, exp: Expected, inode: int) -> None:
        e = self.tree.get_opt(inode)
        busy = (e is None or inode == ROOT_INO or exp.ino != inode or e.dirty
                or inode in self.vfs.writers or self.kernel.busy(inode))
        if busy:
            # Not the file we meant, or it has local changes now: leave it alone.
            raise pyfuse3.FUSEError(errno.EAGAIN)


class PyfuseKernel:
    """``gobi.fs.notify.KernelPort`` over pyfuse3's notifications."""

    @staticmethod
    def invalidate_inode(ino: int, attr_only: bool) -> None:
        pyfuse3.invalidate_inode(ino, attr_only)

    @staticmethod
    def invalidate_entry(parent: int, name: bytes, deleted: int = 0) -> None:
        pyfuse3.invalidate_entry(parent, name, deleted)


async def fuse_main() -> None:
    """Serve the kernel's requests until unmounted or ``fuse_terminate``."""
    await pyfuse3.main()


def fuse_close(unmount: bool = True) -> None:
    pyfuse3.close(unmount=unmount)


def fuse_terminate() -> None:
    pyfuse3.terminate()


__all__ = ["FuseInitError", "LiveOperations", "Operations", "PyfuseKernel", "fuse_close", "fuse_init",
           "fuse_main", "fuse_terminate", "mount_options"]
