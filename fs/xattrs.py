"""Extended attributes of the mount: what each namespace means, and gobi's own attributes.

- ``user.*``: the user's attributes, kept in the mirror (local to this machine for now).
- ``user.gobi.*``: reserved for gobi and **virtual**: computed when read, never stored and
  never listed by ``listxattr``. Not listing them is deliberate (CephFS hides its virtual
  ``ceph.*`` attributes for the same reason): ``cp -a``, ``rsync -X``, ``tar --xattrs`` and
  backup tools copy every *listed* attribute, so listed state attributes would be copied
  out as stale data and copied back in as "user data". Scripts and file managers read
  them by name (``getfattr -n user.gobi.state FILE``). Setting or removing one is refused
  with ``EPERM`` ("Operation not permitted").
- ``security.*``, ``system.*`` (POSIX ACLs), ``trusted.*``: not supported, ``EOPNOTSUPP``.
  ``ls -l`` asks ``security.selinux`` and ``system.posix_acl_access`` for every file;
  "not supported" (unlike "no such attribute") lets it stop asking for the rest of the
  directory, and the answer never touches SQLite.

Per file or directory (read-only):

``user.gobi.state``  ``synced`` (on the server, content here) · ``online-only`` (on the
                     server, content fetched when read) · ``pinned`` (kept offline,
                     content here) · ``pending`` (a local change waits for upload) ·
                     ``uploading`` (being sent now) · ``conflict`` (an open conflict waits
                     for ``gobi resolve``) · ``deleted`` (removed, still open) ·
                     ``held`` (a directory holding deletes of this mount that the server
                     holds for the vault owner). The root directory summarises the whole
                     mount.
``user.gobi.held``   directories: JSON list of the entries this mount deleted in it that
                     the server holds as a mass delete (``name``, ``kind``, ``hold``,
                     ``state``, ``expires``): gone here, kept on every other device until
                     the owner decides (``gobi confirm-delete``; ``gobi.fs.held``).
``user.gobi.rev``    the server revision (vault seq) of the node as last acknowledged;
                     absent while the server has never seen the node.
``user.gobi.pin``    JSON: whether the node is pinned (and through which directory), its
                     files and bytes, how much is local, the pass in progress.

Controls on the mount's root directory (used by ``gobi status|sync|verify|pin|unpin``;
the mountpoint is the address, no socket needed):

``user.gobi.status``        read: the status JSON.
``user.gobi.flush``         write: upload now (``nodrain``: no drain after unmount).
``user.gobi.sync``          write TOKEN: a barrier on every change made so far;
``user.gobi.sync.TOKEN``    read: the barrier's progress, and the seq once it is done.
``user.gobi.pin`` / ``user.gobi.unpin``   write a path relative to the root.
``user.gobi.verify``        write ``{"token": T, "repair": bool}``: compare the mirror with
                            the server in the background (``gobi.fs.verify``);
``user.gobi.verify.TOKEN``  read: ``{"state": "running"}``, then the report.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Collection

from .tree import HOLE, ROOT_INO, Entry, FsError, Tree

USER = b"user."
RESERVED = b"user.gobi."
STATE = b"user.gobi.state"
REV = b"user.gobi.rev"
PIN = b"user.gobi.pin"
HELD = b"user.gobi.held"
UNPIN = b"user.gobi.unpin"
STATUS = b"user.gobi.status"
FLUSH = b"user.gobi.flush"
SYNC = b"user.gobi.sync"
SYNC_PREFIX = b"user.gobi.sync."
VERIFY = b"user.gobi.verify"
VERIFY_PREFIX = b"user.gobi.verify."
MAX_VALUE = 65536

ENOATTR = errno.ENODATA       # Linux spells ENOATTR so (pyfuse3.ENOATTR is this)


class Xattrs:
    """The xattr requests of the FUSE adapter. ``pins``, ``progress`` and ``conflicts`` are
    optional services (``gobi.fs.pins``, ``gobi.fs.progress``, the applier's open conflicts
    as a callable returning node ids, ``gobi.fs.verify``'s ``Verifier``, the held deletes
    of ``gobi.fs.held``)."""

    def __init__(self, tree: Tree, vfs, status: Callable[[], dict],
                 control: Callable[[bytes], None], pins=None, progress=None,
                 conflicts: Callable[[], Collection[str]] | None = None, verifier=None,
                 held=None):
        self.tree = tree
        self.vfs = vfs
        self.status = status
        self.control = control
        self.pins = pins
        self.progress = progress
        self.conflicts = conflicts
        self.verifier = verifier
        self.held = held

    # -- state ------------------------------------------------------------------------------

    def state(self, e: Entry) -> str:
        if e.ino == ROOT_INO:
            return self._mount_state()
        if self.conflicts is not None and e.id in self.conflicts():
            return "conflict"
        if self.progress is not None and e.id in self.progress.uploading_nodes():
            return "uploading"
        if e.dirty or self.tree.journal.has_entries(e.id):
            return "pending"
        if e.parent is None:
            return "deleted"        # unlinked but still open; nothing left to upload
        if e.is_dir and self.held is not None and self.held.in_dir(e.id):
            return "held"
        pinned = self.pins is not None and self.pins.covering(e) is not None
        if e.is_file and not self.content_local(e):
            return "online-only"
        return "pinned" if pinned else "synced"

    def _mount_state(self) -> str:
        if self.conflicts is not None and self.conflicts():
            return "conflict"
        if self.progress is not None and self.progress.uploading_nodes():
            return "uploading"
        if self.tree.journal.count():
            return "pending"
        if self.held is not None and self.held.count():
            return "held"
        return "synced"

    def content_local(self, e: Entry) -> bool:
        """Can the file be read without the server?"""
        if self.vfs.staged(e.ino) or e.size == 0:
            return True
        if not e.manifest_known:
            return False
        cache = self.vfs.cache
        return all(h == HOLE or h in cache for _, _, h in self.tree.manifest(e.ino))

    # -- requests ---------------------------------------------------------------------------

    async def get(self, ino: int, name: bytes) -> bytes:
        if not name.startswith(USER):
            raise FsError(errno.EOPNOTSUPP)
        if name.startswith(RESERVED):
            return await self._get_gobi(ino, name)
        value = self.tree.xattr(ino, name)
        if value is None:
            raise FsError(ENOATTR)
        return value

    async def _get_gobi(self, ino: int, name: bytes) -> bytes:
        e = self.tree.get(ino)
        if name == STATE:
            return self.state(e).encode()
        if name == REV:
            if e.rev <= 0 or e.ino == ROOT_INO:
                raise FsError(ENOATTR)
            return str(e.rev).encode()
        if name == PIN and self.pins is not None:
            return _json(self.pins.info(e))
        if name == HELD and self.held is not None and e.is_dir:
            out = []
            for row in self.held.in_dir(e.id):
                info = self.held.hold(row.hold)
                out.append({"name": row.name, "kind": row.kind, "hold": row.hold,
                            "state": info.state if info else "pending",
                            "expires": info.expires if info else None})
            return _json(out)
        if ino == ROOT_INO:
            if name == STATUS:
                return _json(self.status())
            if name.startswith(SYNC_PREFIX) and self.progress is not None:
                token = name[len(SYNC_PREFIX):].decode("ascii", "replace")
                answer = await self.progress.barrier_state(token)
                if answer is None:
                    raise FsError(ENOATTR)
                return _json(answer)
            if name.startswith(VERIFY_PREFIX) and self.verifier is not None:
                report = self.verifier.result(name[len(VERIFY_PREFIX):].decode("ascii", "replace"))
                if report is None:
                    raise FsError(ENOATTR)
                return _json(report)
        raise FsError(ENOATTR)

    async def set(self, ino: int, name: bytes, value: bytes) -> None:
        if not name.startswith(USER) or len(name) <= len(USER):
            raise FsError(errno.EOPNOTSUPP)
        if name.startswith(RESERVED):
            await self._set_gobi(ino, name, value)
            return
        e = self.tree.get(ino)
        if e.kind == "symlink":
            raise FsError(errno.EPERM)     # Linux: no user xattrs on symlinks
        if len(value) > MAX_VALUE:
            raise FsError(errno.E2BIG)
        with self.tree.tx():
            self.tree.set_xattr(ino, name, value)

    async def _set_gobi(self, ino: int, name: bytes, value: bytes) -> None:
        if ino == ROOT_INO:
            if name == FLUSH:
                self.control(value)
                return
            if name in (PIN, UNPIN) and self.pins is not None:
                path = _text(value)
                if name == PIN:
                    await self.pins.pin_path(path)
                else:
                    self.pins.unpin_path(path)
                return
            if name == SYNC and self.progress is not None:
                self.progress.register_barrier(_text(value))
                return
            if name == VERIFY and self.verifier is not None and self.vfs.spawn is not None:
                try:
                    ask = json.loads(_text(value))
                    token, repair = str(ask["token"]), bool(ask.get("repair"))
                except (ValueError, KeyError, TypeError):
                    raise FsError(errno.EINVAL) from None
                self.verifier.start(token, repair, self.vfs.spawn)
                return
        # State and revision are the mount's to say: never stored, never copied back in.
        raise FsError(errno.EPERM)

    def list(self, ino: int) -> list[bytes]:
        self.tree.get(ino)
        return self.tree.xattrs(ino)

    def remove(self, ino: int, name: bytes) -> None:
        if not name.startswith(USER):
            raise FsError(errno.EOPNOTSUPP)
        self.tree.get(ino)
        if name.startswith(RESERVED):
            raise FsError(errno.EPERM)
        if self.tree.xattr(ino, name) is None:
            raise FsError(ENOATTR)
        with self.tree.tx():
            self.tree.set_xattr(ino, name, None)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL) from None


__all__ = ["Xattrs"]
