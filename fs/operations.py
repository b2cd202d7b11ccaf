"""The pyfuse3 adapter: kernel requests in, mirror/vfs calls, attributes and errnos out.

Thin on purpose: the filesystem's rules live in ``gobi.fs.tree`` (names, renames,
coalescing) and ``gobi.fs.vfs`` (content, handles). This module converts types, keeps the
few FUSE-only rules (what xattr namespaces mean, what is refused), and is the one place
where ``FsError`` becomes ``FUSEError``.

Refused with a clear errno (documented in docs/client.md): hard links (``EPERM``, as on
FAT and most network filesystems), device nodes, FIFOs and sockets (``EPERM``),
``RENAME_EXCHANGE`` (``EINVAL``), xattrs outside ``user.*`` (``EOPNOTSUPP``).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import stat
import time
from collections.abc import Callable

import pyfuse3

from .tree import ROOT_INO, Entry, FsError, Tree
from .vfs import Vfs

log = logging.getLogger(__name__)

#: The kernel may cache names and attributes this long. Every change made through this
#: mount updates its caches itself; remote changes are pushed with invalidations.
TIMEOUT = 300.0
BLKSIZE = 128 * 1024
STATUS_XATTR = b"user.gobi.status"
FLUSH_XATTR = b"user.gobi.flush"


def fuse_errors(fn):
    """Translate FsError → FUSEError; anything unexpected is logged and becomes EIO."""

    @functools.wraps(fn)
    async def wrapper(self, *args, **kwargs):
        self.vfs.last_request = time.monotonic()
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Operations(pyfuse3.Operations):
    enable_writeback_cache = True

    def __init__(self, vfs: Vfs, status: Callable[[], dict], control: Callable[[bytes], None]):
        super().__init__()
        self.vfs = vfs
        self.tree: Tree = vfs.tree
        self.status = status
        self.flush_now = control

    # -- attributes -------------------------------------------------------------------------

    def _attr(self, e: Entry) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = e.ino
        a.generation = 0
        a.entry_timeout = TIMEOUT
        a.attr_timeout = TIMEOUT
        a.st_mode = e.st_mode
        a.st_nlink = 1
        a.st_uid = self.vfs.uid if e.uid is None else e.uid
        a.st_gid = self.vfs.gid if e.gid is None else e.gid
        a.st_rdev = 0
        size = 4096 if e.is_dir else self.vfs.size_of(e)     # dirs: as ext4 shows them
        a.st_size = size
        a.st_blksize = BLKSIZE
        a.st_blocks = (size + 511) // 512
        mtime = self.vfs.mtime_of(e)
        a.st_atime_ns = mtime
        a.st_mtime_ns = mtime
        a.st_ctime_ns = max(e.ctime_ns, mtime)
        return a

    @fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        try:
            e = self.tree.lookup(parent_inode, name)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            # A negative entry the kernel may cache (git, make, shells probe many missing
            # names); remote creates invalidate it.
            a = pyfuse3.EntryAttributes()
            a.st_ino = 0
            a.entry_timeout = TIMEOUT
            return a
        self.vfs.remember(e.ino)
        return self._attr(e)

    async def forget(self, inode_list):
        for ino, n in inode_list:
            try:
                self.vfs.forget(ino, n)
            except Exception:
                log.exception("forget(%s) failed", ino)

    @fuse_errors
    async def getattr(self, inode, ctx=None):
        return self._attr(self.tree.get(inode))

    @fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        e = self.tree.get(inode)
        if fields.update_size:
            await self.vfs.truncate(inode, attr.st_size)
        mode = attr.st_mode if fields.update_mode else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
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
        e = self.tree.get(inode)
        if e.kind != "symlink":
            raise FsError(errno.EINVAL)
        return (e.target or "").encode()

    # -- directories ------------------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode, ctx):
        e = self.tree.get(inode)
        if not e.is_dir:
            raise FsError(errno.ENOTDIR)
        return inode

    @fuse_errors
    async def readdir(self, fh, start_id, token):
        after = start_id
        while True:
            batch = self.tree.children(fh, after, 256)
            if not batch:
                return
            for e in batch:
                if not pyfuse3.readdir_reply(token, e.name.encode(), self._attr(e), e.ino):
                    return
                after = e.ino

    async def releasedir(self, fh):
        pass

    @fuse_errors
    async def fsyncdir(self, fh, datasync):
        await self.vfs.fsync(None)

    @fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        e = self.tree.make(parent_inode, name, "dir", mode, ctx.uid, ctx.gid)
        self.vfs.remember(e.ino)
        self.vfs.changed.set()
        return self._attr(e)

    @fuse_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        if not stat.S_ISREG(mode):
            # The vault holds files, directories and symlinks only.
            raise FsError(errno.EPERM)
        fh, e = self.vfs.create(parent_inode, name, mode, ctx.uid, ctx.gid)
        await self.vfs.release(fh)
        self.vfs.remember(e.ino)
        return self._attr(self.tree.get(e.ino))

    @fuse_errors
    async def symlink(self, parent_inode, name, target, ctx):
        e = self.tree.symlink(parent_inode, name, target, ctx.uid, ctx.gid)
        self.vfs.remember(e.ino)
        self.vfs.changed.set()
        return self._attr(e)

    @fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        e = self.tree.remove(parent_inode, name, want_dir=False)
        self.vfs.changed.set()
        self.vfs.maybe_purge(e.ino)

    @fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        e = self.tree.remove(parent_inode, name, want_dir=True)
        self.vfs.changed.set()
        self.vfs.maybe_purge(e.ino)

    @fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FsError(errno.EINVAL)
        _, replaced = self.tree.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                                       noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE))
        self.vfs.changed.set()
        if replaced is not None:
            self.vfs.maybe_purge(replaced.ino)

    @fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise FsError(errno.EPERM)

    # -- files ------------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode, flags, ctx):
        fh, keep = await self.vfs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        fh, e = self.vfs.create(parent_inode, name, mode, ctx.uid, ctx.gid)
        self.vfs.remember(e.ino)
        return pyfuse3.FileInfo(fh=fh), self._attr(e)

    @fuse_errors
    async def read(self, fh, off, size):
        return await self.vfs.read(fh, off, size)

    @fuse_errors
    async def write(self, fh, off, buf):
        return await self.vfs.write(fh, off, buf)

    @fuse_errors
    async def flush(self, fh):
        await self.vfs.flush(fh)

    @fuse_errors
    async def release(self, fh):
        await self.vfs.release(fh)

    @fuse_errors
    async def fsync(self, fh, datasync):
        await self.vfs.fsync(fh)

    @fuse_errors
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        cache = self.vfs.cache
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        s.f_blocks = cache.cap // 4096
        s.f_bfree = max(0, cache.cap - cache.staged_bytes) // 4096
        s.f_bavail = s.f_bfree
        s.f_files = 1 << 32
        s.f_ffree = (1 << 32) - self.tree.count()
        s.f_favail = s.f_ffree
        s.f_namemax = 255
        return s

    # -- extended attributes ----------------------------------------------------------------

    @staticmethod
    def _user_ns(name: bytes) -> bool:
        return name.startswith(b"user.") and len(name) > 5

    @fuse_errors
    async def getxattr(self, inode, name, ctx):
        if inode == ROOT_INO and name == STATUS_XATTR:
            return json.dumps(self.status()).encode()
        if not self._user_ns(name):
            # security.selinux, system.posix_acl_* (asked by ls -l for every file): none.
            raise FsError(pyfuse3.ENOATTR)
        value = self.tree.xattr(inode, name)
        if value is None:
            raise FsError(pyfuse3.ENOATTR)
        return value

    @fuse_errors
    async def setxattr(self, inode, name, value, ctx):
        if inode == ROOT_INO and name == FLUSH_XATTR:
            self.flush_now(value)
            return
        if not self._user_ns(name):
            raise FsError(errno.EOPNOTSUPP)
        if name.startswith(b"user.gobi."):
            raise FsError(errno.EPERM)
        e = self.tree.get(inode)
        if e.kind == "symlink":
            raise FsError(errno.EPERM)     # Linux: no user xattrs on symlinks
        if len(value) > 65536:
            raise FsError(errno.E2BIG)
        with self.tree.tx():
            self.tree.set_xattr(inode, name, value)

    @fuse_errors
    async def listxattr(self, inode, ctx):
        self.tree.get(inode)
        return self.tree.xattrs(inode)

    @fuse_errors
    async def removexattr(self, inode, name, ctx):
        self.tree.get(inode)
        if not self._user_ns(name) or self.tree.xattr(inode, name) is None:
            raise FsError(pyfuse3.ENOATTR)
        with self.tree.tx():
            self.tree.set_xattr(inode, name, None)


def mount_options(fsname: str, extra: list[str]) -> set[str]:
    opts = set(pyfuse3.default_options)
    opts |= {f"fsname={fsname}", "subtype=gobi"}
    opts |= set(extra)
    return opts


__all__ = ["Operations", "mount_options"]
