"""The local metadata mirror: the vault's tree in memory, changed locally first, durable.

Every node the mount knows has a row with a stable inode number (the root is inode 1),
its server node id, its attributes and what the server last acknowledged (``rev``,
``content_rev``). The rows live in memory with the indexes the kernel's requests need
(by inode, by node id, by parent and name, children in inode order), so ``lookup``,
``getattr``, ``readdir`` and ``open`` never touch a database or leave the trio thread,
and never wait for the network.

Durability is ``gobi.fs.mirror_store``'s: each transaction (``tx()``) is applied in
memory as it goes (undone if the block raises) and logged once, as one appended line,
when the outermost block ends (survives a kill -9); ``durable()`` (fsync on the mount)
makes the log survive a power cut; a flusher task group-commits the log into a SQLite
snapshot off the request path. The mirror survives restarts (no cold ``ls``).

Local changes are applied here and appended to the journal (``gobi.fs.journal``) in the
same transaction. New nodes get a client-chosen id, so they exist locally before the
server ever hears of them (offline creates, idempotent retries).

Rules that make ordinary tools behave:

- Unlinked nodes become *orphans* (no parent) while the kernel or an open handle still
  refers to them, so an open file stays readable; ``purge`` removes them later.
- A node created and removed before it was uploaded is dropped from the journal
  (temporary files never reach the server).
- Editors' safe-save (write ``f.tmp``, rename over ``f``): when a not-yet-uploaded file
  is renamed over an existing file, it *adopts* the target's node id, so the server
  sees one new revision of ``f`` instead of a delete and a create.

Special files (FIFOs, sockets, device nodes; ``SPECIAL``) are rows like symlinks: kind,
mode and ``rdev``, never content, never dirty.

Hard links: on the server every name is a node of its own, and the names of one file
share the node's ``inode``. Here a linked file is one kernel inode: its *file row* (the
row of one of its names: content, staging, chunks, opens, pins, xattrs) and an *alias
row* per further name (``link`` = the file row's inode number; its own id, parent, name
and the server state of that name, never shown: ``lookup``, ``readdir`` and ``nlink``
answer the file row). ``link(2)`` adds an alias row and queues a ``link`` entry (sent
after the file's create; the entry names the file as ``of``). Unlinking the name the file
row holds while aliases live *hands the file over*: the row keeps its inode number (open
handles, the kernel's caches) and takes an alias's id, name and server state; the alias
row goes (``_promote``). A further name the server unlinks from the file (a name restored
with other content) becomes a row of its own again (``gobi.fs.states``).

Errors are ``FsError(errno)``; only the FUSE adapter turns them into ``FUSEError``.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import trio

from gobi.protocol import MAX_NAME_BYTES, MAX_SYMLINK_TARGET, ROOT_ID, ChunkRef, has_control

from .journal import Entry as JournalEntry
from .journal import Journal
from .mirror_store import MirrorStore

ROOT_INO = 1

#: ``st_mode`` type bits of each kind (``gobi.protocol.NodeKind`` values).
KIND_BITS = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK,
             "fifo": stat.S_IFIFO, "socket": stat.S_IFSOCK, "chardev": stat.S_IFCHR,
             "blockdev": stat.S_IFBLK}
#: Special files: metadata only; the kernel opens them itself (pipes, sockets, devices).
SPECIAL = frozenset({"fifo", "socket", "chardev", "blockdev"})
#: The special files whose ``rdev`` (device number) means something.
DEVICES = frozenset({"chardev", "blockdev"})
_KIND_OF_TYPE = {stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
                 stat.S_IFBLK: "blockdev"}


#: The hash of a hole's row in a manifest layout: a hole (``ChunkRef.hole``, a run of
#: zeros) has no chunk. A string, not None, because mirror.db's ``chunks.hash`` column is
#: NOT NULL and an empty string is no SHA-256.
HOLE = ""


def layout(chunks: list[ChunkRef]) -> list[tuple[int, int, str]]:
    """``(offset, size, hash)`` of each manifest entry, ``HOLE`` for a hole: the shape the
    mirror keeps and reads walk."""
    off, out = 0, []
    for c in chunks:
        out.append((off, c.size, HOLE if c.hole else c.hash))
        off += c.size
    return out


class FsError(Exception):
    """A filesystem error with the errno a local filesystem would give."""

    def __init__(self, errno_: int, message: str = ""):
        super().__init__(message or errno.errorcode.get(errno_, str(errno_)))
        self.errno = errno_


class Entry(NamedTuple):
    """One node's row (immutable: a change makes a new one). A tuple, so it is cheap to
    make, compare and log."""

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
    #: Device nodes' device number. Last and defaulted: rows logged before it existed load.
    rdev: int = 0
    #: Local access time (``gobi.fs.atime``; 0: never read, shown as the mtime).
    atime_ns: int = 0
    #: Hard links: this row is a further name (an *alias row*) of the file whose row has
    #: this inode number; 0 for a row of its own (module docstring, "Hard links").
    link: int = 0
    #: The server's ``inode`` of a linked file's names (the group key); None: one name.
    inode: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def is_special(self) -> bool:
        return self.kind in SPECIAL

    @property
    def st_mode(self) -> int:
        return KIND_BITS[self.kind] | self.mode

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


class NameTaken(Exception):
    """A live node of that name exists in that directory already (a bug if it escapes)."""


class Tree:
    """The mirror: every node in memory, each transaction logged once (``MirrorStore``)."""

    def __init__(self, path: Path):
        self.store = MirrorStore(path)
        snap = self.store.load()
        self._rows: dict[int, Entry] = {}
        self._ids: dict[str, int] = {}
        self._kids: dict[int, dict[str, int]] = {}        # live children: dir ino -> name -> ino
        self._order: dict[int, list[int] | None] = {}      # readdir order (by ino), built lazily
        self._subdirs: dict[int, int] = {}                  # dir ino -> live child directories
        self._dirty: set[int] = set()
        self._orphans: set[int] = set()
        self._aliases: dict[int, set[int]] = {}            # file row ino -> its alias rows
        self._groups: dict[str, int] = {}                   # server inode -> live file row ino
        for values in snap.nodes.values():
            self._index(Entry(*values))
        self._manifests = snap.chunks
        self._data_memo: dict[int, tuple[list, int]] = {}   # data_bytes: (rows, data)
        self._xattrs = snap.xattrs
        self._meta = snap.meta
        self.pins = snap.pins                   # pinned inodes -> time (``gobi.fs.pins``)
        # Held deletes and their holds (``gobi.fs.held`` keeps its indexes over these).
        self.held = snap.held
        self.holds = snap.holds
        self._next_ino = max(snap.max_ino, ROOT_INO) + 1
        self._depth = 0
        self._undo: list[tuple] = []
        self._redo: list[list] = []
        self.journal = Journal(self, snap.journal, snap.max_seq)
        if ROOT_INO not in self._rows:
            now = time.time_ns()
            with self.tx():
                self._put(Entry(ROOT_INO, ROOT_ID, None, "", "dir", 0o755, 0, now, now, None, None,
                                None, 0, None, None, 0))

    def close(self) -> None:
        self.store.close()

    # -- transactions and durability --------------------------------------------------------

    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """One atomic change of mirror + journal (nested calls join the outer one): applied in
        memory as it goes, undone if the block raises, logged once when the outermost ends."""
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if not self._depth:
                for undo in reversed(self._undo):
                    undo[0](*undo[1:])
                self._undo.clear()
                self._redo.clear()
            raise
        self._depth -= 1
        if not self._depth:
            redo, self._redo = self._redo, []
            self._undo.clear()
            if redo:
                self.store.append(redo)

    def _record(self, redo: list, *undo) -> None:
        if not self._depth:
            raise RuntimeError("mirror change outside a transaction")
        self._redo.append(redo)
        self._undo.append(undo)

    def durable(self) -> None:
        """Make every committed change survive a power cut (fsync of the change log)."""
        self.store.durable()

    async def run_flusher(self, interval: float = 0.5, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Group commits: the logged changes into the SQLite snapshot, off the request path."""
        task_status.started()
        while True:
            await trio.sleep(interval)
            segments, records = self.store.rotate()
            if segments:
                await trio.to_thread.run_sync(self.store.flush, segments, records)

    def meta(self, key: str, default: str | None = None) -> str | None:
        return self._meta.get(key, default)

    def set_meta(self, key: str, value: str) -> None:
        with self.tx():
            old = self._meta.get(key)
            self._meta[key] = value
            self._record(["m", key, value], self._restore_meta, key, old)

    def _restore_meta(self, key: str, old: str | None) -> None:
        if old is None:
            self._meta.pop(key, None)
        else:
            self._meta[key] = old

    # -- the node index ---------------------------------------------------------------------

    def _index(self, e: Entry) -> None:
        self._rows[e.ino] = e
        self._ids[e.id] = e.ino
        if e.parent is not None:
            self._kids.setdefault(e.parent, {})[e.name] = e.ino
            self._order.pop(e.parent, None)
            if e.kind == "dir":
                self._subdirs[e.parent] = self._subdirs.get(e.parent, 0) + 1
        elif e.ino != ROOT_INO:
            self._orphans.add(e.ino)
        if e.dirty:
            self._dirty.add(e.ino)
        if e.link:
            self._aliases.setdefault(e.link, set()).add(e.ino)
        elif e.inode is not None and e.parent is not None:
            self._groups.setdefault(e.inode, e.ino)

    def _unindex(self, e: Entry) -> None:
        del self._rows[e.ino]
        if self._ids.get(e.id) == e.ino:
            del self._ids[e.id]
        if e.parent is not None:
            kids = self._kids.get(e.parent)
            if kids is not None and kids.get(e.name) == e.ino:
                del kids[e.name]
                if e.kind == "dir":
                    left = self._subdirs[e.parent] - 1
                    if left:
                        self._subdirs[e.parent] = left
                    else:
                        del self._subdirs[e.parent]
            self._order.pop(e.parent, None)
        self._orphans.discard(e.ino)
        self._dirty.discard(e.ino)
        if e.link:
            names = self._aliases.get(e.link)
            if names is not None:
                names.discard(e.ino)
                if not names:
                    del self._aliases[e.link]
        elif e.inode is not None and self._groups.get(e.inode) == e.ino:
            del self._groups[e.inode]

    def _put(self, new: Entry | None, ino: int | None = None) -> None:
        """The one way a row changes: indexes, undo and log kept in step."""
        ino = new.ino if new is not None else ino
        old = self._rows.get(ino)
        if new is not None:
            if new.parent is not None:
                holder = self._kids.get(new.parent, {}).get(new.name)
                if holder is not None and holder != ino:
                    raise NameTaken(f"{new.name!r} exists in directory {new.parent}")
            other = self._ids.get(new.id)
            if other is not None and other != ino:
                raise NameTaken(f"node id {new.id} is taken by inode {other}")
        if old is not None:
            self._unindex(old)
        if new is not None:
            self._index(new)
        self._record(["n", ino, None if new is None else list(new)], self._reput, ino, old, new)

    def _reput(self, ino: int, old: Entry | None, new: Entry | None) -> None:
        if new is not None and self._rows.get(ino) is not None:
            self._unindex(self._rows[ino])
        if old is not None:
            self._index(old)

    # -- reads ------------------------------------------------------------------------------

    def get_opt(self, ino: int) -> Entry | None:
        return self._rows.get(ino)

    def get(self, ino: int) -> Entry:
        e = self._rows.get(ino)
        if e is None:
            raise FsError(errno.ENOENT)
        return e

    def by_id(self, node_id: str) -> Entry | None:
        ino = self._ids.get(node_id)
        return None if ino is None else self._rows[ino]

    def child(self, parent: int, name: str) -> Entry | None:
        """The row holding a name (an alias row for a further name of a linked file)."""
        ino = self._kids.get(parent, {}).get(name)
        return None if ino is None else self._rows[ino]

    def file_of(self, e: Entry) -> Entry:
        """The row the kernel knows a name by: the file row of an alias row, else itself."""
        return self._rows[e.link] if e.link else e

    def aliases(self, ino: int) -> list[Entry]:
        """The alias rows (further names) of a file row, oldest first."""
        return [self._rows[a] for a in sorted(self._aliases.get(ino, ()))]

    def group(self, inode: str, kind: str) -> Entry | None:
        """The live file row of the server's linked file ``inode`` (the id of its first
        linked name, which the row may still carry while the event that set its
        ``inode`` waits behind a local change), if the mirror has one of that kind."""
        ino = self._groups.get(inode)
        e = self._rows[ino] if ino is not None else self.by_id(inode)
        if e is None or e.link or e.parent is None or e.kind != kind or e.inode not in (None, inode):
            return None
        return e

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
        return self._rows[e.link] if e.link else e

    def _children_order(self, parent: int) -> list[int]:
        order = self._order.get(parent)
        if order is None:
            order = self._order[parent] = sorted(self._kids.get(parent, {}).values())
        return order

    def children(self, parent: int, after_ino: int, limit: int) -> list[Entry]:
        order = self._children_order(parent)
        i = bisect.bisect_right(order, after_ino)
        return [self._rows[ino] for ino in order[i:i + limit]]

    #: Columns of ``listing`` rows: what a directory entry's attributes need, nothing more.
    LISTING = "ino, name, kind, mode, size, mtime_ns, ctime_ns, uid, gid, rdev, atime_ns"

    def listing(self, parent: int, after_ino: int, limit: int) -> list[tuple]:
        """Children as ``LISTING``-shaped tuples plus the row's own inode number (the
        readdir offset), in that order (stable offsets while the directory changes). A
        further name of a linked file shows the file's inode and attributes."""
        rows = self._rows
        out = []
        for n in self.children(parent, after_ino, limit):
            e = rows[n.link] if n.link else n
            out.append((e.ino, n.name, e.kind, e.mode, e.size, e.mtime_ns, e.ctime_ns, e.uid, e.gid,
                        e.rdev, e.atime_ns, n.ino))
        return out

    def nlink(self, ino: int, kind: str) -> int:
        """Links to a node as POSIX counts them: a directory has its name, its ``.`` and
        each subdirectory's ``..``; any other node its name (none once unlinked: an orphan
        kept for its open handles) and its further names (hard links)."""
        if kind == "dir":
            return 2 + self._subdirs.get(ino, 0)
        names = self._aliases.get(ino)
        return (0 if ino in self._orphans else 1) + (len(names) if names else 0)

    def has_children(self, ino: int) -> bool:
        return bool(self._kids.get(ino))

    def count(self) -> int:
        return len(self._rows) - 1 - len(self._orphans)

    @property
    def next_ino(self) -> int:
        """The inode number the next new node gets (numbers are handed out in order)."""
        return self._next_ino

    def dirty_inodes(self) -> list[int]:
        """Files whose staged content is not on the server yet (live or not)."""
        return list(self._dirty)

    def orphans(self) -> list[int]:
        return list(self._orphans)

    def all_ids(self) -> list[tuple[int, str]]:
        """(ino, id) of every live node (re-lists reconcile against it)."""
        return [(e.ino, e.id) for e in self._rows.values() if e.parent is not None]

    def subtree(self, roots: list[int]) -> list[Entry]:
        """Every live node at or under ``roots``, each once (pins size and fetch them)."""
        seen: set[int] = set()
        out: list[Entry] = []
        todo = [r for r in roots if r in self._rows]
        while todo:
            ino = todo.pop()
            if ino in seen:
                continue
            seen.add(ino)
            e = self._rows[ino]
            if e.link:
                # A further name of a file: the file (once, whatever name it is reached by).
                if e.link in seen:
                    continue
                seen.add(e.link)
                e = self._rows[e.link]
            out.append(e)
            todo.extend(self._kids.get(ino, {}).values())
        return out

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
        with self.tx():
            self._put(self.get(ino)._replace(**fields))

    def insert(self, *, id: str, parent: int, name: str, kind: str, mode: int, size: int = 0,
               mtime_ns: int, target: str | None = None, uid: int | None = None,
               gid: int | None = None, rev: int = 0, content_rev: int | None = None,
               dirty: int = 0, rdev: int = 0, link: int = 0, inode: str | None = None) -> Entry:
        with self.tx():
            ino = self._next_ino
            e = Entry(ino, id, parent, name, kind, mode, size, mtime_ns, time.time_ns(), target, uid,
                      gid, rev, content_rev, None, dirty, rdev, 0, link, inode)
            self._put(e)
            self._next_ino += 1
            self._undo.append((self._unallocate, ino))
            return e

    def _unallocate(self, ino: int) -> None:
        self._next_ino = min(self._next_ino, ino)

    def remove_row(self, ino: int) -> None:
        with self.tx():
            if ino in self._rows:
                self._put(None, ino)
            if ino in self._manifests:
                self._set_chunks(ino, None)
            for name in list(self._xattrs.get(ino, {})):
                self._set_xattr(ino, name, None)
            if ino in self.pins:
                self.set_pin(ino, None)

    # -- manifests --------------------------------------------------------------------------

    def _set_chunks(self, ino: int, chunks: list[tuple[int, int, str]] | None) -> None:
        old = self._manifests.get(ino)
        self._data_memo.pop(ino, None)
        if chunks is None:
            self._manifests.pop(ino, None)
        else:
            self._manifests[ino] = chunks
        self._record(["c", ino, chunks], self._restore_chunks, ino, old)

    def _restore_chunks(self, ino: int, old) -> None:
        if old is None:
            self._manifests.pop(ino, None)
        else:
            self._manifests[ino] = old

    def set_manifest(self, ino: int, content_rev: int, chunks: list[ChunkRef]) -> None:
        with self.tx():
            self._set_chunks(ino, layout(chunks))
            self.update(ino, manifest_rev=content_rev)

    def manifest(self, ino: int) -> list[tuple[int, int, str]]:
        """(offset, size, hash) of the stored chunk list, in order (``HOLE``: zeros)."""
        return list(self._manifests.get(ino, ()))

    def _data_list(self, ino: int, size: int) -> list[tuple[int, int, str]] | None:
        """The stored chunk list if it is the list of the file's current content (of
        ``size`` bytes), else None: not here, or of an older content version (a remote
        commit of the same size leaves the old list until the new one is fetched)."""
        rows = self._manifests.get(ino)
        e = self._rows.get(ino)
        if not rows or e is None or e.manifest_rev != e.content_rev:
            return None
        return rows if rows[-1][0] + rows[-1][1] == size else None

    def data_bytes(self, ino: int, size: int) -> int:
        """How much of a clean file of ``size`` bytes is data, not holes, by its stored
        chunk list (``st_blocks``: ``du`` of a sparse file); ``size`` when the list is not
        here or is of other content. Summed once per list (getattr is hot)."""
        rows = self._data_list(ino, size)
        if rows is None:
            return size
        memo = self._data_memo.get(ino)
        if memo is None or memo[0] is not rows:
            memo = self._data_memo[ino] = (rows, sum(n for _, n, h in rows if h != HOLE))
        return memo[1]

    def data_chunks(self, ino: int, size: int) -> dict[str, int] | None:
        """The data chunks (hash -> size, holes left out) of a clean file of ``size``
        bytes by its stored chunk list, as ``data_bytes`` takes it; None when the list is
        not here or is of other content (pins size a subtree by these, each chunk once)."""
        rows = self._data_list(ino, size)
        return None if rows is None else {h: n for _, n, h in rows if h != HOLE}

    # -- xattrs and pins --------------------------------------------------------------------

    def _set_xattr(self, ino: int, name: bytes, value: bytes | None) -> None:
        attrs = self._xattrs.setdefault(ino, {})
        old = attrs.get(name)
        if value is None:
            attrs.pop(name, None)
        else:
            attrs[name] = value
        self._record(["x", [ino, name.hex()], None if value is None else value.hex()],
                     self._restore_xattr, ino, name, old)

    def _restore_xattr(self, ino: int, name: bytes, old: bytes | None) -> None:
        attrs = self._xattrs.setdefault(ino, {})
        if old is None:
            attrs.pop(name, None)
        else:
            attrs[name] = old

    def xattr(self, ino: int, name: bytes) -> bytes | None:
        return self._xattrs.get(ino, {}).get(name)

    def xattrs(self, ino: int) -> list[bytes]:
        return sorted(self._xattrs.get(ino, {}))

    def set_xattr(self, ino: int, name: bytes, value: bytes | None) -> None:
        with self.tx():
            self._set_xattr(ino, name, value)
            self.update(ino, ctime_ns=time.time_ns())

    def set_pin(self, ino: int, pinned_at: float | None) -> None:
        with self.tx():
            old = self.pins.get(ino)
            if pinned_at is None:
                self.pins.pop(ino, None)
            else:
                self.pins[ino] = pinned_at
            self._record(["p", ino, pinned_at], self._restore_pin, ino, old)

    def _restore_pin(self, ino: int, old: float | None) -> None:
        if old is None:
            self.pins.pop(ino, None)
        else:
            self.pins[ino] = old

    def set_held(self, table: str, key: str, value: tuple | None) -> None:
        """A row of ``held`` (node id -> held delete) or ``holds`` (hold id -> info)."""
        rows = self.held if table == "held" else self.holds
        with self.tx():
            old = rows.get(key)
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value
            self._record(["h" if table == "held" else "H", key, None if value is None else list(value)],
                         self._restore_held, rows, key, old)

    @staticmethod
    def _restore_held(rows: dict, key: str, old: tuple | None) -> None:
        if old is None:
            rows.pop(key, None)
        else:
            rows[key] = old

    # -- local changes (mirror + journal) ---------------------------------------------------

    def _free_name(self, parent: int, name: str) -> None:
        if self.child(parent, name) is not None:
            raise FsError(errno.EEXIST)

    def make(self, parent: int, name: bytes, kind: str, mode: int, uid: int, gid: int,
             target: str | None = None, rdev: int = 0) -> Entry:
        """mkdir / create / symlink / mknod: a new node, created locally, queued for upload."""
        text = check_name(name)
        with self.tx():
            p = self._dir(parent)
            self._free_name(parent, text)
            now = time.time_ns()
            e = self.insert(
                id=new_id(), parent=parent, name=text, kind=kind, mode=mode & 0o7777,
                size=len(target.encode()) if target else 0, mtime_ns=now, target=target,
                uid=uid, gid=gid, dirty=1 if kind == "file" else 0, rdev=rdev,
            )
            args = {"parent": p.id, "name": text, "kind": kind, "mode": e.mode, "mtime_ns": now,
                    "target": target}
            if rdev:
                args["rdev"] = rdev
            self.journal.append("create", e.id, args, ref=p.id)
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

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int) -> Entry:
        """mknod(2) of a special file (FIFO, socket, character or block device): a node
        with no content. Regular files are created by ``Vfs.create`` (they get staging)."""
        kind = _KIND_OF_TYPE.get(stat.S_IFMT(mode))
        if kind is None:
            # The kernel sends regular files to create() and refuses other types itself.
            raise FsError(errno.EINVAL)
        # mknod(2) ignores the device number of a FIFO or socket; so does the vault.
        return self.make(parent, name, kind, mode, uid, gid, rdev=rdev if kind in DEVICES else 0)

    def link(self, ino: int, new_parent: int, name: bytes) -> Entry:
        """link(2): one more name for the file ``ino`` (any node but a directory), an alias
        row queued for upload as a ``link`` of the file's node. Returns the file's row."""
        text = check_name(name)
        with self.tx():
            src = self.get(ino)
            if src.is_dir:
                raise FsError(errno.EPERM)
            if src.parent is None:
                raise FsError(errno.ENOENT)     # unlinked (linkat of an open, deleted file)
            p = self._dir(new_parent)
            self._free_name(new_parent, text)
            now = time.time_ns()
            inode = src.inode or src.id          # the server's too, once the link is made
            if src.inode is None:
                self.update(src.ino, inode=inode)
            a = self.insert(id=new_id(), parent=new_parent, name=text, kind=src.kind, mode=src.mode,
                            size=src.size, mtime_ns=src.mtime_ns, target=src.target, rdev=src.rdev,
                            link=src.ino, inode=inode)
            self.journal.append("link", a.id, {"parent": p.id, "name": text, "of": src.id}, ref=p.id)
            self.update(src.ino, ctime_ns=now)
            self.update(new_parent, mtime_ns=now, ctime_ns=now)
            return self.get(src.ino)

    def _promote(self, f: Entry) -> Entry:
        """The file row's name went while further names live: the row takes over the
        oldest alias's id, place and server state (keeping its inode number, so open
        handles and the kernel's caches stay right), and that alias row goes."""
        a = self.aliases(f.ino)[0]
        self._put(None, a.ino)
        if a.content_rev is None:
            # A name not on the server yet: its link will copy the file's content, whose
            # version (and chunk list) the row keeps until the link is acknowledged.
            content_rev, manifest_rev = f.content_rev, f.manifest_rev
        else:
            content_rev = a.content_rev
            manifest_rev = content_rev if f.manifest_rev == f.content_rev else None
        self._put(f._replace(id=a.id, parent=a.parent, name=a.name, rev=a.rev, content_rev=content_rev,
                             manifest_rev=manifest_rev, inode=a.inode, ctime_ns=time.time_ns()))
        return self._rows[f.ino]

    def _unname(self, e: Entry, replaced: bool = False) -> None:
        """A name goes locally (unlink; or ``replaced`` by a rename: the move deletes it on
        the server). The file row of a linked file hands over to a further name
        (``_promote``); what the journal would still send for the file goes to that name,
        after its ``link``."""
        parent_id = self.get(e.parent).id if e.parent is not None else None
        if e.link or e.ino in self._aliases:
            # This id leaves the mirror with the name (an alias row goes; a file row takes
            # another name's id): its pending renames still go first, in their place (later
            # entries wait for the names they free), without a row to take a base from.
            for m in self.journal.pending(e.id):
                if m.op == "move" and not m.args.get("detached"):
                    self.journal.rewrite(m, {**m.args, "detached": True})
        if e.link or e.ino not in self._aliases:
            if self._retire(e) and not replaced:
                args = {"parent": parent_id}
                if e.link:
                    # After what the file's own name still sends: a commit through it moves
                    # this name's content too, and a delete based before it would meet a
                    # "modified since" and come back (``of``: gobi.fs.sync orders it).
                    args["of"] = self.get(e.link).id
                self.journal.append("delete", e.id, args)
            self.orphan(e)
            return
        if self._create_under_link(e):
            return
        pending = [p for p in self.journal.pending(e.id) if p.op in ("content", "attr")]
        fields: set[str] = set()
        for p in pending:
            if p.op == "attr":
                fields |= set(p.args.get("fields") or ["mode", "mtime"])
        content = e.dirty or any(p.op == "content" for p in pending)
        self.journal.drop(pending)
        # Deleted on its own even when a rename replaces it: the further names' links are
        # made from this node, so it goes after them (gobi.fs.sync orders a delete of a
        # link's ``of`` after it), and the replacing move after the delete.
        self.journal.append("delete", e.id, {"parent": parent_id})
        f = self._promote(e)
        if content:
            # Based on the name's last server content: a commit of ours through the old
            # name may have moved it meanwhile (``rebase``: gobi.fs.sync checks the head).
            # After the old name's delete (``of``), which a commit through a further name
            # would otherwise race (the server moves every name's content).
            self.journal.append("content", f.id, {"rebase": True, "of": e.id})
        else:
            # The row now goes by a name whose server state here may lag behind our own
            # changes through the old name (their events for this name are still on the
            # way): it is read again once those are through, and until then those events
            # wait (a pending entry holds the node) instead of showing older states.
            self.journal.append("refresh", f.id, {"of": e.id})
        if fields:
            self.journal.add_attr(f.id, sorted(fields))

    def _create_under_link(self, f: Entry) -> bool:
        """The hand-over when nothing of it left this machine (maildir's ``link tmp/x
        new/x; unlink tmp/x``, git's object files): the file's create, its one further
        name's link and that name's renames are dropped, and the file is created under that
        name instead — one create with the content, as if it had been made there."""
        aliases = self.aliases(f.ino)
        if len(aliases) != 1:
            return False
        a = aliases[0]
        journal = self.journal
        mine, theirs = journal.pending(f.id), journal.pending(a.id)
        if not (journal.all_pending(f.id) and journal.all_pending(a.id)):
            return False
        if not any(p.op == "create" for p in mine) or any(journal.may_have_reached(p) for p in mine + theirs):
            return False
        links = [p for p in theirs if p.op == "link" and p.args.get("of") == f.id]
        if len(links) != 1 or any(p.op not in ("link", "move") for p in theirs) \
                or journal.references(f.id) != 1 or journal.referenced(a.id):
            return False
        journal.drop(mine + theirs)
        new = self._promote(f)
        self.update(new.ino, inode=None)
        parent = self.get(new.parent)
        args = {"parent": parent.id, "name": new.name, "kind": new.kind, "mode": new.mode,
                "mtime_ns": new.mtime_ns, "target": new.target}
        if new.rdev:
            args["rdev"] = new.rdev
        journal.append("create", new.id, args, ref=parent.id)
        return True

    def _retire(self, e: Entry) -> bool:
        """Drop what the journal would still send about a node that is going away.

        Returns True when the server knows (or will know) the node, so it must be deleted
        there too; False when the node never left this machine.
        """
        pending = self.journal.pending(e.id)
        if self._never_left(e.id, pending):
            self.journal.drop(pending)
            return False
        # A create that may have reached the server (its answer was lost) goes too: the
        # delete that follows removes what it made, and is refused as "not found" when it
        # made nothing. (Unless other entries name the node as their parent: they need it
        # made first.)
        referenced = self.journal.referenced(e.id)
        self.journal.drop([p for p in pending if p.op in ("content", "attr")
                           or (p.op in ("create", "link") and not referenced)])
        return True

    def _never_left(self, node_id: str, pending: list[JournalEntry]) -> bool:
        """Is the node's create still queued, unsent (so the server has never heard of
        it)? Not when an attempt of it may have reached the server: coalescing it away
        then left the node there, and it came back on every mount (found by the long
        partition run, seed 1264219: a create whose answer was lost, then an unlink)."""
        creates = [p for p in pending if p.op in ("create", "link")]
        return bool(creates) and not self.journal.referenced(node_id) and \
            not any(self.journal.may_have_reached(p) for p in creates)

    def orphan(self, e: Entry) -> None:
        """A name goes. A row of its own becomes an orphan: the name column must stay
        unique only among live children, so orphans use their id; its content stays
        readable through open handles (staging or cached chunks); nothing about it is
        uploaded any more. An alias row just goes (the kernel never knew its number); the
        file row of a linked file hands over to a further name (``_promote``)."""
        with self.tx():
            if e.link:
                self._put(None, e.ino)
                if e.link in self._rows:
                    self.update(e.link, ctime_ns=time.time_ns())
            elif e.ino in self._aliases and e.parent is not None:
                self._promote(e)
            else:
                self.update(e.ino, parent=None, name=e.id, dirty=0, ctime_ns=time.time_ns())

    def remove(self, parent: int, name: bytes, want_dir: bool) -> Entry:
        """unlink (want_dir False) or rmdir (True). The node becomes an orphan."""
        text = check_name(name)
        with self.tx():
            self._dir(parent)
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
            self._unname(e)
            now = time.time_ns()
            self.update(parent, mtime_ns=now, ctime_ns=now)
            return self.get(e.link) if e.link else e

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
            if dst is not None and self.file_of(dst).ino == self.file_of(src).ino:
                # The same name, or two names of one file: rename(2) does nothing.
                return self.file_of(src), None
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
            if dst is not None and src.is_file and dst.is_file and self._adoptable(src) \
                    and not (dst.link or dst.ino in self._aliases):
                self._adopt(src, dst, new_parent, new_text)
            else:
                if dst is not None:
                    # The move replaces it on the server, unless the moved node never left
                    # this machine: then its create (or link) and this move may still be
                    # coalesced away together, and the replaced node is deleted on its own.
                    self._unname(dst, replaced=not self._never_left(src.id, self.journal.pending(src.id)))
                self.update(src.ino, parent=new_parent, name=new_text, ctime_ns=now)
                self.journal.append("move", src.id, {
                    "parent": np.id, "name": new_text, "replace": dst is not None, "from": op.id,
                }, ref=np.id)
            for p in {old_parent, new_parent}:
                self.update(p, mtime_ns=now, ctime_ns=now)
            return self.file_of(self.get(src.ino)), (None if dst is None else self.file_of(dst)
                                                     if dst.link and dst.link in self._rows else dst)

    def _adoptable(self, src: Entry) -> bool:
        """Safe-save adoption is for a file of one name (a linked file's names are
        separate nodes on the server: one of them must not take another's id)."""
        if src.link or src.ino in self._aliases:
            return False
        return self._never_left(src.id, self.journal.pending(src.id))

    def _adopt(self, src: Entry, dst: Entry, parent: int, name: str) -> None:
        """Safe-save: ``src`` (never uploaded) takes over ``dst``'s node id."""
        self.journal.drop(self.journal.pending(src.id))
        self.update(dst.ino, id=new_id())           # dst lives on as a local orphan
        self.orphan(self.get(dst.ino))
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
                    except NameTaken:
                        pass        # a name both have: stays under the detached one
                self.orphan(src)
            self.journal.remap(old, new)

    def mark_dirty(self, ino: int) -> None:
        """First change of a file's content since its last upload: queue the upload."""
        with self.tx():
            e = self.get(ino)
            if not e.dirty:
                self.update(ino, dirty=1)
            if e.parent is not None and not self.journal.has_pending(e.id, "content"):
                self.journal.append("content", e.id)
