"""The local metadata mirror: the vault's tree in SQLite, changed locally first.

Every node the mount knows has a row with a stable inode number (the row id; the root is
inode 1), its server node id, its attributes and what the server last acknowledged
(``rev``, ``content_rev``). ``lookup``/``getattr``/``readdir`` read only this database, so
they never wait for the network, and the mirror survives restarts (no cold ``ls``).

Local changes are applied here and appended to the journal (``gobi.fs.journal``) in the
same SQLite transaction. New nodes get a client-chosen id, so they exist locally before
the server ever hears of them (offline creates, idempotent retries).

Rules that make ordinary tools behave:

- Unlinked nodes become *orphans* (no parent) while the kernel or an open handle still
  refers to them, so an open file stays readable; ``purge`` removes them later.
- A node created and removed before it was uploaded is dropped from the journal
  (temporary files never reach the server).
- Editors' safe-save (write ``f.tmp``, rename over ``f``): when a not-yet-uploaded file
  is renamed over an existing file, it *adopts* the target's node id, so the server
  sees one new revision of ``f`` instead of a delete and a create.

Errors are ``FsError(errno)``; only the FUSE adapter turns them into ``FUSEError``.
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gobi.protocol import MAX_NAME_BYTES, MAX_SYMLINK_TARGET, ROOT_ID, ChunkRef, has_control

from .journal import Journal

ROOT_INO = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS nodes(
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    parent INTEGER,                 -- parent inode; NULL for the root and for orphans
    name TEXT NOT NULL,
    kind TEXT NOT NULL,             -- file | dir | symlink
    mode INTEGER NOT NULL,          -- permission bits
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    target TEXT,
    uid INTEGER,                    -- local only (NULL: the mounting user)
    gid INTEGER,
    rev INTEGER NOT NULL DEFAULT 0,          -- last rev the server acknowledged (0: not yet)
    content_rev INTEGER,                     -- server content version of files
    manifest_rev INTEGER,                    -- content version whose chunk list is stored
    dirty INTEGER NOT NULL DEFAULT 0         -- staged content not yet committed
);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_name ON nodes(parent, name) WHERE parent IS NOT NULL;
-- readdir pages through a directory by inode (stable offsets while it changes)
CREATE INDEX IF NOT EXISTS nodes_children ON nodes(parent, ino);
CREATE INDEX IF NOT EXISTS nodes_dirty ON nodes(dirty) WHERE dirty = 1;
CREATE TABLE IF NOT EXISTS chunks(
    ino INTEGER NOT NULL, idx INTEGER NOT NULL, off INTEGER NOT NULL,
    size INTEGER NOT NULL, hash TEXT NOT NULL, PRIMARY KEY(ino, idx)
);
CREATE TABLE IF NOT EXISTS xattrs(
    ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY(ino, name)
);
"""

COLUMNS = ("ino, id, parent, name, kind, mode, size, mtime_ns, ctime_ns, target, uid, gid, "
           "rev, content_rev, manifest_rev, dirty")


class FsError(Exception):
    """A filesystem error with the errno a local filesystem would give."""

    def __init__(self, errno_: int, message: str = ""):
        super().__init__(message or errno.errorcode.get(errno_, str(errno_)))
        self.errno = errno_


@dataclass(frozen=True)
class Entry:
    ino: int
    id: str
    parent: int | None
    name: str
    kind: str
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    target: str | None
    uid: int | None
    gid: int | None
    rev: int
    content_rev: int | None
    manifest_rev: int | None
    dirty: int

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def st_mode(self) -> int:
        kind = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK}[self.kind]
        return kind | self.mode

    @property
    def manifest_known(self) -> bool:
        return self.size == 0 or (self.manifest_rev is not None and self.manifest_rev == self.content_rev)


def new_id() -> str:
    return "c" + secrets.token_hex(10)


def check_name(name: bytes) -> str:
    if len(name) > MAX_NAME_BYTES:
        raise FsError(errno.ENAMETOOLONG)
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        # The vault stores UTF-8 names (every platform must be able to show them).
        raise FsError(errno.EILSEQ, "names must be valid UTF-8") from None
    if text in ("", ".", "..") or "/" in text:
        raise FsError(errno.EINVAL)
    if has_control(text):
        # The vault refuses control characters in names (gobi.protocol.NAME_RULE): refused
        # here at once, instead of a file that could never reach the server.
        raise FsError(errno.EINVAL, "names must not contain control characters")
    return text


class Tree:
    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a crash of this process (kill -9); ``durable()`` makes
        # everything committed so far survive a power cut too (what fsync(2) promises).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.journal = Journal(self.db)
        self._depth = 0
        if self.get_opt(ROOT_INO) is None:
            now = time.time_ns()
            self.db.execute(
                "INSERT INTO nodes(ino, id, parent, name, kind, mode, mtime_ns, ctime_ns) "
                "VALUES (?, ?, NULL, '', 'dir', 493, ?, ?)", (ROOT_INO, ROOT_ID, now, now))

    def close(self) -> None:
        self.db.close()

    # -- transactions and meta --------------------------------------------------------------

    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """One atomic change of mirror + journal (nested calls join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            self.journal._count = self.db.execute("SELECT count(*) FROM journal").fetchone()[0]
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    def durable(self) -> None:
        """Make every committed change survive a power cut (fsync of the WAL)."""
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            with self.tx():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('synced_at', ?)", (str(time.time()),))
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- reads ------------------------------------------------------------------------------

    def _one(self, where: str, args: tuple) -> Entry | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM nodes WHERE {where}", args).fetchone()
        return Entry(*row) if row else None

    def get_opt(self, ino: int) -> Entry | None:
        return self._one("ino = ?", (ino,))

    def get(self, ino: int) -> Entry:
        e = self.get_opt(ino)
        if e is None:
            raise FsError(errno.ENOENT)
        return e

    def by_id(self, node_id: str) -> Entry | None:
        return self._one("id = ?", (node_id,))

    def child(self, parent: int, name: str) -> Entry | None:
        return self._one("parent = ? AND name = ?", (parent, name))

    def _dir(self, ino: int) -> Entry:
        e = self.get(ino)
        if not e.is_dir:
            raise FsError(errno.ENOTDIR)
        if e.parent is None and e.ino != ROOT_INO:
            raise FsError(errno.ENOENT)     # a removed directory: nothing can be added
        return e

    def lookup(self, parent: int, name: bytes) -> Entry:
        self._dir(parent)
        if name == b".":
            return self.get(parent)
        if name == b"..":
            p = self.get(parent)
            return self.get(p.parent or ROOT_INO)
        try:
            text = check_name(name)
        except FsError as exc:
            if exc.errno in (errno.EILSEQ, errno.EINVAL):
                raise FsError(errno.ENOENT) from None   # a name that cannot exist here
            raise
        e = self.child(parent, text)
        if e is None:
            raise FsError(errno.ENOENT)
        return e

    def children(self, parent: int, after_ino: int, limit: int) -> list[Entry]:
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM nodes WHERE parent = ? AND ino > ? ORDER BY ino LIMIT ?",
            (parent, after_ino, limit),
        ).fetchall()
        return [Entry(*r) for r in rows]

    #: Columns of ``listing`` rows: what a directory entry's attributes need, nothing more.
    LISTING = "ino, name, kind, mode, size, mtime_ns, ctime_ns, uid, gid"

    def listing(self, parent: int, after_ino: int, limit: int) -> list[tuple]:
        """Children as raw ``LISTING`` rows, for readdir (no Entry objects: a directory of
        10,000 files is listed on every ``ls``, and this halves the cost per entry)."""
        return self.db.execute(
            f"SELECT {self.LISTING} FROM nodes WHERE parent = ? AND ino > ? ORDER BY ino LIMIT ?",
            (parent, after_ino, limit),
        ).fetchall()

    def has_children(self, ino: int) -> bool:
        return self.db.execute("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (ino,)).fetchone() is not None

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM nodes WHERE parent IS NOT NULL").fetchone()[0]

    def path_of(self, e: Entry) -> str:
        parts = []
        while e.parent is not None:
            parts.append(e.name)
            e = self.get(e.parent)
        return "/" + "/".join(reversed(parts)) if e.ino == ROOT_INO else "?/" + "/".join(reversed(parts))

    # -- writes: low level ------------------------------------------------------------------

    def update(self, ino: int, **fields: object) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE nodes SET {cols} WHERE ino = ?", (*fields.values(), ino))

    def insert(self, *, id: str, parent: int, name: str, kind: str, mode: int, size: int = 0,
               mtime_ns: int, target: str | None = None, uid: int | None = None,
               gid: int | None = None, rev: int = 0, content_rev: int | None = None,
               dirty: int = 0) -> Entry:
        cur = self.db.execute(
            "INSERT INTO nodes(id, parent, name, kind, mode, size, mtime_ns, ctime_ns, target, uid, "
            "gid, rev, content_rev, dirty) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (id, parent, name, kind, mode, size, mtime_ns, time.time_ns(), target, uid, gid, rev,
             content_rev, dirty),
        )
        return self.get(cur.lastrowid)

    def remove_row(self, ino: int) -> None:
        self.db.execute("DELETE FROM nodes WHERE ino = ?", (ino,))
        self.db.execute("DELETE FROM chunks WHERE ino = ?", (ino,))
        self.db.execute("DELETE FROM xattrs WHERE ino = ?", (ino,))

    def orphans(self) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT ino FROM nodes WHERE parent IS NULL AND ino != ?", (ROOT_INO,))]

    # -- manifests --------------------------------------------------------------------------

    def set_manifest(self, ino: int, content_rev: int, chunks: list[ChunkRef]) -> None:
        self.db.execute("DELETE FROM chunks WHERE ino = ?", (ino,))
        off = 0
        rows = []
        for i, c in enumerate(chunks):
            rows.append((ino, i, off, c.size, c.hash))
            off += c.size
        self.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", rows)
        self.update(ino, manifest_rev=content_rev)

    def manifest(self, ino: int) -> list[tuple[int, int, str]]:
        """(offset, size, hash) of the stored chunk list, in order."""
        return self.db.execute(
            "SELECT off, size, hash FROM chunks WHERE ino = ? ORDER BY idx", (ino,)).fetchall()

    # -- xattrs -----------------------------------------------------------------------------

    def xattr(self, ino: int, name: bytes) -> bytes | None:
        row = self.db.execute("SELECT value FROM xattrs WHERE ino = ? AND name = ?", (ino, name)).fetchone()
        return bytes(row[0]) if row else None

    def xattrs(self, ino: int) -> list[bytes]:
        return [bytes(r[0]) for r in self.db.execute("SELECT name FROM xattrs WHERE ino = ? ORDER BY name", (ino,))]

    def set_xattr(self, ino: int, name: bytes, value: bytes | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM xattrs WHERE ino = ? AND name = ?", (ino, name))
        else:
            self.db.execute("INSERT OR REPLACE INTO xattrs VALUES (?, ?, ?)", (ino, name, value))
        self.update(ino, ctime_ns=time.time_ns())

    # -- local changes (mirror + journal) ---------------------------------------------------

    def _free_name(self, parent: int, name: str) -> None:
        if self.child(parent, name) is not None:
            raise FsError(errno.EEXIST)

    def make(self, parent: int, name: bytes, kind: str, mode: int, uid: int, gid: int,
             target: str | None = None) -> Entry:
        """mkdir / create / symlink: a new node, created locally, queued for upload."""
        text = check_name(name)
        with self.tx():
            p = self._dir(parent)
            self._free_name(parent, text)
            now = time.time_ns()
            e = self.insert(
                id=new_id(), parent=parent, name=text, kind=kind, mode=mode & 0o7777,
                size=len(target.encode()) if target else 0, mtime_ns=now, target=target,
                uid=uid, gid=gid, dirty=1 if kind == "file" else 0,
            )
            self.journal.append("create", e.id, {
                "parent": p.id, "name": text, "kind": kind, "mode": e.mode, "mtime_ns": now,
                "target": target,
            }, ref=p.id)
            self.update(parent, mtime_ns=now, ctime_ns=now)
            return e

    def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int) -> Entry:
        if len(target) > MAX_SYMLINK_TARGET:
            raise FsError(errno.ENAMETOOLONG)
        try:
            text = target.decode("utf-8")
        except UnicodeDecodeError:
            raise FsError(errno.EILSEQ) from None
        if not text:
            raise FsError(errno.ENOENT)
        return self.make(parent, name, "symlink", 0o777, uid, gid, target=text)

    def _retire(self, e: Entry) -> bool:
        """Drop what the journal would still send about a node that is going away.

        Returns True when the server knows (or will know) the node, so it must be deleted
        there too; False when the node never left this machine.
        """
        pending = self.journal.pending(e.id)
        if any(p.op == "create" for p in pending) and not self.journal.referenced(e.id):
            self.journal.drop(pending)
            return False
        self.journal.drop([p for p in pending if p.op in ("content", "attr")])
        return True

    def _orphan(self, e: Entry) -> None:
        # The name column must stay unique only among live children; orphans use their id.
        # Its content stays readable through open handles (staging or cached chunks);
        # nothing about it is uploaded any more.
        self.update(e.ino, parent=None, name=e.id, dirty=0, ctime_ns=time.time_ns())

    def remove(self, parent: int, name: bytes, want_dir: bool) -> Entry:
        """unlink (want_dir False) or rmdir (True). The node becomes an orphan."""
        text = check_name(name)
        with self.tx():
            p = self._dir(parent)
            e = self.child(parent, text)
            if e is None:
                raise FsError(errno.ENOENT)
            if want_dir:
                if not e.is_dir:
                    raise FsError(errno.ENOTDIR)
                if self.has_children(e.ino):
                    raise FsError(errno.ENOTEMPTY)
            elif e.is_dir:
                raise FsError(errno.EISDIR)
            if self._retire(e):
                self.journal.append("delete", e.id, {"parent": p.id})
            self._orphan(e)
            now = time.time_ns()
            self.update(parent, mtime_ns=now, ctime_ns=now)
            return e

    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes,
               noreplace: bool) -> tuple[Entry, Entry | None]:
        """rename(2). Returns (moved node, replaced node or None)."""
        old_text, new_text = check_name(old_name), check_name(new_name)
        with self.tx():
            op = self._dir(old_parent)
            np = self._dir(new_parent)
            src = self.child(old_parent, old_text)
            if src is None:
                raise FsError(errno.ENOENT)
            dst = self.child(new_parent, new_text)
            if dst is not None and dst.ino == src.ino:
                return src, None
            if dst is not None and noreplace:
                raise FsError(errno.EEXIST)
            if src.is_dir:
                # Moving a directory into itself or below it.
                cur: Entry | None = np
                while cur is not None:
                    if cur.ino == src.ino:
                        raise FsError(errno.EINVAL)
                    cur = self.get(cur.parent) if cur.parent is not None else None
            if dst is not None:
                if src.is_dir and not dst.is_dir:
                    raise FsError(errno.ENOTDIR)
                if not src.is_dir and dst.is_dir:
                    raise FsError(errno.EISDIR)
                if dst.is_dir and self.has_children(dst.ino):
                    raise FsError(errno.ENOTEMPTY)
            now = time.time_ns()
            if dst is not None and src.is_file and dst.is_file and self._adoptable(src):
                self._adopt(src, dst, new_parent, new_text)
            else:
                if dst is not None:
                    self._retire(dst)      # the move replaces it on the server
                    self._orphan(dst)
                self.update(src.ino, parent=new_parent, name=new_text, ctime_ns=now)
                self.journal.append("move", src.id, {
                    "parent": np.id, "name": new_text, "replace": dst is not None, "from": op.id,
                }, ref=np.id)
            for p in {old_parent, new_parent}:
                self.update(p, mtime_ns=now, ctime_ns=now)
            return self.get(src.ino), dst

    def _adoptable(self, src: Entry) -> bool:
        pending = self.journal.pending(src.id)
        return any(p.op == "create" for p in pending) and not self.journal.referenced(src.id)

    def _adopt(self, src: Entry, dst: Entry, parent: int, name: str) -> None:
        """Safe-save: ``src`` (never uploaded) takes over ``dst``'s node id."""
        self.journal.drop(self.journal.pending(src.id))
        self.update(dst.ino, id=new_id())           # dst lives on as a local orphan
        self._orphan(self.get(dst.ino))
        self.update(src.ino, id=dst.id, rev=dst.rev, content_rev=dst.content_rev,
                    parent=parent, name=name, ctime_ns=time.time_ns())
        if not self.journal.has_pending(dst.id, "content"):
            self.journal.append("content", dst.id)
        if not self.journal.has_pending(dst.id, "attr"):
            self.journal.append("attr", dst.id)

    def setattr(self, ino: int, mode: int | None = None, mtime_ns: int | None = None,
                uid: int | None = None, gid: int | None = None) -> Entry:
        with self.tx():
            e = self.get(ino)
            fields: dict[str, object] = {"ctime_ns": time.time_ns()}
            synced: list[str] = []
            if mode is not None and (mode & 0o7777) != e.mode:
                fields["mode"] = mode & 0o7777
                synced.append("mode")
            if mtime_ns is not None and mtime_ns != e.mtime_ns:
                fields["mtime_ns"] = mtime_ns
                if e.kind != "symlink":          # symlink times are not synced
                    synced.append("mtime")
            if uid is not None:
                fields["uid"] = uid
            if gid is not None:
                fields["gid"] = gid
            self.update(ino, **fields)
            if synced and e.parent is not None:
                synced = self._not_carried(e, synced)
            if synced and e.parent is not None:
                # Only what changed is sent, so a remote change of the other attribute
                # made meanwhile is not overwritten with our old value.
                self.journal.add_attr(e.id, synced)
            return self.get(ino)

    def _not_carried(self, e: Entry, fields: list[str]) -> list[str]:
        """The attribute changes that need an upload of their own: a pending (not yet
        sent) content commit carries mode and mtime, a pending create of a file with
        content carries its mtime. Every ``cp`` or ``tar x`` of a file ends with a utime
        (or the kernel's mtime writeback): without this, one more operation per file."""
        if e.kind != "file" or not e.dirty:
            return fields
        ops = {p.op for p in self.journal.pending(e.id)}
        if "content" in ops:
            return []
        if "create" in ops:
            return [f for f in fields if f != "mtime"]
        return fields

    def remap(self, old: str, new: str) -> None:
        """The server merged our directory ``old`` into its ``new`` (mkdir/mkdir of one
        name): the row and every pending journal entry take the server's id."""
        with self.tx():
            src = self.by_id(old)
            if src is None:
                self.journal.remap(old, new)
                return
            dst = self.by_id(new)
            if dst is None:
                self.update(src.ino, id=new)
            else:
                for child in self.children(src.ino, 0, 1_000_000):
                    try:
                        self.update(child.ino, parent=dst.ino)
                    except sqlite3.IntegrityError:
                        pass        # a name both have: stays under the detached one
                self._orphan(src)
            self.journal.remap(old, new)

    def mark_dirty(self, ino: int) -> None:
        """First change of a file's content since its last upload: queue the upload."""
        with self.tx():
            e = self.get(ino)
            if not e.dirty:
                self.update(ino, dirty=1)
            if e.parent is not None and not self.journal.has_pending(e.id, "content"):
                self.journal.append("content", e.id)
