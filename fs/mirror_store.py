"""The mirror's durable form: an append-only change log in front of a SQLite snapshot.

The mirror (``gobi.fs.tree``) lives in memory and answers every kernel request from there.
Each of its transactions ends here as **one line appended to the change log**
(``mirror.db.log.<n>``) with one ``write(2)``: the change is then in the kernel's page
cache, so it survives a kill -9 of the mount (what the mount promises for every
acknowledged change) without a SQLite transaction per operation. ``durable()`` — what
``fsync(2)`` on the mount calls — makes every logged change survive a power cut too
(``fdatasync`` of the log segments not yet in SQLite).

A **group commit** (``flush``, run by the mirror's flusher off the request path, in a
worker thread) writes the logged changes of closed segments into the SQLite snapshot
(``mirror.db``; older caches are brought up to date when opened, see ``migrate``) in one transaction
with ``synchronous=FULL``, then deletes those segments. At start-up ``load()`` reads the
snapshot and replays the segments left behind (a crash, a kill -9) in order; a torn last
line (the process died in the middle of a write) is ignored: that transaction never
reported success.

Records (one JSON list per transaction, each item ``[kind, key, value]``; ``value`` None
deletes):

``n``  ino → the node's columns (``COLUMNS`` order)      ``c``  ino → manifest [[off, size, hash]…]
``x``  [ino, name hex] → value hex                     ``m``  meta key → value
``j``  seq → [op, node, ref, args, ts]                  ``p``  ino → pinned-at time
``h``  node id → held delete [hold, parent, name, kind, path, origin, state JSON, ts]
``H``  hold id → [info JSON, ts]                        (``gobi.fs.held``)

Only the mirror calls this module, and only this module opens ``mirror.db``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS nodes(
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    parent INTEGER,                 -- parent inode; NULL for the root and for orphans
    name TEXT NOT NULL,
    kind TEXT NOT NULL,             -- file | dir | symlink | fifo | socket | chardev | blockdev
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
    dirty INTEGER NOT NULL DEFAULT 0,        -- staged content not yet committed
    rdev INTEGER NOT NULL DEFAULT 0,         -- device nodes' st_rdev
    atime_ns INTEGER NOT NULL DEFAULT 0,     -- local access time (0: never read; gobi.fs.atime)
    link INTEGER NOT NULL DEFAULT 0,         -- hard links: a further name of this file row (0: none)
    inode TEXT                               -- the server's inode of a linked file's names
);
CREATE TABLE IF NOT EXISTS chunks(
    ino INTEGER NOT NULL, idx INTEGER NOT NULL, off INTEGER NOT NULL,
    size INTEGER NOT NULL, hash TEXT NOT NULL, PRIMARY KEY(ino, idx)
);
CREATE TABLE IF NOT EXISTS xattrs(
    ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY(ino, name)
);
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    node TEXT NOT NULL,
    ref TEXT,
    args TEXT NOT NULL DEFAULT '{}',
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pins(ino INTEGER PRIMARY KEY, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS held(
    node TEXT PRIMARY KEY, hold TEXT NOT NULL, parent TEXT, name TEXT NOT NULL,
    kind TEXT NOT NULL, path TEXT NOT NULL, origin TEXT NOT NULL, state TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS holds(id TEXT PRIMARY KEY, info TEXT NOT NULL, ts REAL NOT NULL);
"""
# Older mirrors had secondary indexes the snapshot no longer needs (lookups are in memory).
DROP_OLD = ["nodes_name", "nodes_children", "nodes_dirty", "journal_node", "journal_ref",
            "held_parent", "held_hold"]

COLUMNS = ("ino", "id", "parent", "name", "kind", "mode", "size", "mtime_ns", "ctime_ns", "target",
           "uid", "gid", "rev", "content_rev", "manifest_rev", "dirty", "rdev", "atime_ns", "link",
           "inode")
#: Columns added to ``nodes`` after the first mirrors were written, with their definition
#: and the value rows older than the column take (no mirror had a device node before
#: ``rdev``, nor a hard link before ``link``).
ADDED_COLUMNS = {"rdev": ("INTEGER NOT NULL DEFAULT 0", 0), "atime_ns": ("INTEGER NOT NULL DEFAULT 0", 0),
                 "link": ("INTEGER NOT NULL DEFAULT 0", 0), "inode": ("TEXT", None)}


def full_row(value: list | tuple) -> list | tuple:
    """A node record logged by an older version (a log left by a crash, replayed after an
    upgrade) lacks the columns added since: they take their default."""
    missing = len(COLUMNS) - len(value)
    if missing <= 0:
        return value
    return [*value, *(ADDED_COLUMNS[c][1] for c in COLUMNS[len(value):])]


def migrate(db: sqlite3.Connection) -> None:
    """Bring a mirror written by an older version up to ``SCHEMA``: ``CREATE TABLE IF NOT
    EXISTS`` leaves an existing table as it is, so added columns are added here, and the
    secondary indexes older mirrors had are dropped. Each step looks at what the database
    has, so running it again (or after a step was interrupted) changes nothing."""
    have = {r[1] for r in db.execute("PRAGMA table_info(nodes)")}
    for column, (definition, _) in ADDED_COLUMNS.items():
        if column not in have:
            db.execute(f"ALTER TABLE nodes ADD COLUMN {column} {definition}")
    for index in DROP_OLD:
        db.execute(f"DROP INDEX IF EXISTS {index}")


class Snapshot:
    """What ``load()`` hands the mirror: every table, with the log replayed over it."""

    def __init__(self) -> None:
        self.nodes: dict[int, tuple] = {}
        self.chunks: dict[int, list[tuple[int, int, str]]] = {}
        self.xattrs: dict[int, dict[bytes, bytes]] = {}
        self.meta: dict[str, str] = {}
        self.journal: dict[int, tuple] = {}         # seq -> (op, node, ref, args dict, ts)
        self.pins: dict[int, float] = {}
        self.held: dict[str, tuple] = {}
        self.holds: dict[str, tuple] = {}
        self.max_ino = 0                            # highest inode ever used
        self.max_seq = 0                            # highest journal seq ever used

    def apply(self, record: list) -> None:
        """One logged transaction over the tables (idempotent: replays are safe)."""
        for kind, key, value in record:
            if kind == "n":
                self.max_ino = max(self.max_ino, key)
                if value is None:
                    self.nodes.pop(key, None)
                    self.chunks.pop(key, None)
                    self.xattrs.pop(key, None)
                else:
                    self.nodes[key] = tuple(full_row(value))
            elif kind == "c":
                if value is None:
                    self.chunks.pop(key, None)
                else:
                    self.chunks[key] = [tuple(c) for c in value]
            elif kind == "x":
                ino, name = key[0], bytes.fromhex(key[1])
                if value is None:
                    self.xattrs.get(ino, {}).pop(name, None)
                else:
                    self.xattrs.setdefault(ino, {})[name] = bytes.fromhex(value)
            elif kind == "m":
                self.meta[key] = value
            elif kind == "j":
                self.max_seq = max(self.max_seq, key)
                if value is None:
                    self.journal.pop(key, None)
                else:
                    self.journal[key] = tuple(value)
            elif kind == "p":
                if value is None:
                    self.pins.pop(key, None)
                else:
                    self.pins[key] = value
            elif kind in ("h", "H"):
                table = self.held if kind == "h" else self.holds
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = tuple(value)


class MirrorStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.dir = self.path.parent
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        migrate(self.db)
        self._fd: int | None = None                 # the segment being appended to
        self._segment = 0
        self._new_file = False
        self._closed: dict[int, int] = {}           # segment number -> fd, not yet in SQLite
        self._lock = threading.Lock()               # fds of closed segments: durable() vs flush()
        self.pending: list[list] = []               # records of the open segment

    # -- start-up -----------------------------------------------------------------------------

    def _segments(self) -> list[tuple[int, Path]]:
        prefix = self.path.name + ".log."
        out = []
        for p in self.dir.iterdir():
            if p.name.startswith(prefix) and p.name[len(prefix):].isdigit():
                out.append((int(p.name[len(prefix):]), p))
        return sorted(out)

    def load(self) -> Snapshot:
        s = Snapshot()
        cols = ", ".join(COLUMNS)
        for row in self.db.execute(f"SELECT {cols} FROM nodes"):
            s.nodes[row[0]] = tuple(row)
        for ino, off, size, h in self.db.execute("SELECT ino, off, size, hash FROM chunks ORDER BY ino, idx"):
            s.chunks.setdefault(ino, []).append((off, size, h))
        for ino, name, value in self.db.execute("SELECT ino, name, value FROM xattrs"):
            s.xattrs.setdefault(ino, {})[bytes(name)] = bytes(value)
        s.meta = dict(self.db.execute("SELECT key, value FROM meta"))
        for seq, op, node, ref, args, ts in self.db.execute(
                "SELECT seq, op, node, ref, args, ts FROM journal ORDER BY seq"):
            s.journal[seq] = (op, node, ref, json.loads(args), ts)
        s.pins = dict(self.db.execute("SELECT ino, since FROM pins"))
        for r in self.db.execute("SELECT node, hold, parent, name, kind, path, origin, state, ts FROM held"):
            s.held[r[0]] = tuple(r[1:])
        for r in self.db.execute("SELECT id, info, ts FROM holds"):
            s.holds[r[0]] = tuple(r[1:])
        seqs = dict(self.db.execute("SELECT name, seq FROM sqlite_sequence"))
        s.max_ino = max([seqs.get("nodes", 0), *s.nodes])
        s.max_seq = max([seqs.get("journal", 0), *s.journal])
        replayed = []
        for number, p in self._segments():
            self._segment = max(self._segment, number)
            with open(p, "rb") as f:
                lines = f.read().split(b"\n")
            for i, line in enumerate(lines):
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    if i < len(lines) - 1 and any(lines[i + 1:]):
                        raise                        # damage inside the log, not a torn end
                    log.warning("mirror log %s: ignoring a torn last line (%d bytes)", p.name, len(line))
                    continue
                s.apply(record)
                replayed.append(record)
        if replayed:
            log.info("mirror: replayed %d logged change(s) left by the last run", len(replayed))
            self._write(replayed)
        for _, p in self._segments():
            p.unlink()
        self._fsync_dir()
        self._open_segment()
        return s

    # -- the log --------------------------------------------------------------------------------

    def _open_segment(self) -> None:
        self._segment += 1
        name = self.dir / f"{self.path.name}.log.{self._segment}"
        self._fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._new_file = True

    def append(self, record: list) -> None:
        """Log one committed transaction (a write(2): survives the process, not a power cut)."""
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        assert self._fd is not None
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.pending.append(record)

    def durable(self) -> None:
        """Every logged change survives a power cut once this returns."""
        with self._lock:
            for fd in self._closed.values():
                os.fdatasync(fd)
        if self._fd is not None:
            os.fdatasync(self._fd)
        if self._new_file:
            self._fsync_dir()
            self._new_file = False

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- group commit ---------------------------------------------------------------------------

    def rotate(self) -> tuple[list[int], list[list]]:
        """Close the open segment and start another (on the mirror's thread); returns the
        closed segments and their records, for ``flush`` (one flush at a time)."""
        if not self.pending:
            return [], []
        assert self._fd is not None
        with self._lock:
            self._closed[self._segment] = self._fd
        batch, self.pending = self.pending, []
        number = self._segment
        self._open_segment()
        return [number], batch

    def flush(self, segments: list[int], records: list[list]) -> None:
        """Write those records into SQLite (one transaction, fsynced), then delete their
        segments. Safe in a worker thread: after ``load`` only this touches the database."""
        if records:
            self._write(records)
        with self._lock:
            for number in segments:
                fd = self._closed.pop(number, None)
                if fd is not None:
                    os.close(fd)
                try:
                    os.unlink(self.dir / f"{self.path.name}.log.{number}")
                except FileNotFoundError:
                    pass

    def _write(self, records: list[list]) -> None:
        """The records' end state into SQLite. A group commit holds many changes of the
        same rows (a file of a ``tar x`` is created, sized, chowned, chmodded, touched and
        acknowledged: five node records), and only the last value of each row matters, so
        each row is written once (``executemany``): this runs in a worker thread, but
        holds the GIL the request handlers need while it builds parameters."""
        last: dict[tuple, object] = {}
        for record in records:
            for kind, key, value in record:
                k = (kind, tuple(key) if isinstance(key, list) else key)
                last.pop(k, None)           # (the last change's place: deletes go last)
                last[k] = value
        nodes, chunks, xattrs, meta, journal, pins, held, holds = ([] for _ in range(8))
        gone: list[int] = []
        for (kind, key), value in last.items():
            if kind == "n":
                if value is None:
                    gone.append(key)
                else:
                    nodes.append(full_row(value))
            else:
                {"c": chunks, "x": xattrs, "m": meta, "j": journal, "p": pins, "h": held,
                 "H": holds}[kind].append((key, value))
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"INSERT OR REPLACE INTO nodes({', '.join(COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(COLUMNS))})", nodes)
            db.executemany("DELETE FROM chunks WHERE ino = ?", [(ino,) for ino, _ in chunks])
            db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)",
                           [(ino, i, off, size, h) for ino, value in chunks if value
                            for i, (off, size, h) in enumerate(value)])
            db.executemany("DELETE FROM xattrs WHERE ino = ? AND name = ?",
                           [(key[0], bytes.fromhex(key[1])) for key, value in xattrs if value is None])
            db.executemany("INSERT OR REPLACE INTO xattrs VALUES (?, ?, ?)",
                           [(key[0], bytes.fromhex(key[1]), bytes.fromhex(value))
                            for key, value in xattrs if value is not None])
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
            db.executemany("DELETE FROM journal WHERE seq = ?",
                           [(seq,) for seq, value in journal if value is None])
            db.executemany("INSERT OR REPLACE INTO journal(seq, op, node, ref, args, ts) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           [(seq, op, node, ref, json.dumps(args), ts)
                            for seq, value in journal if value is not None
                            for op, node, ref, args, ts in (value,)])
            db.executemany("DELETE FROM pins WHERE ino = ?", [(ino,) for ino, value in pins if value is None])
            db.executemany("INSERT OR REPLACE INTO pins VALUES (?, ?)",
                           [(ino, value) for ino, value in pins if value is not None])
            db.executemany("DELETE FROM held WHERE node = ?", [(key,) for key, _ in held])
            db.executemany("INSERT INTO held VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(key, *value) for key, value in held if value is not None])
            db.executemany("DELETE FROM holds WHERE id = ?", [(key,) for key, _ in holds])
            db.executemany("INSERT INTO holds VALUES (?, ?, ?)",
                           [(key, *value) for key, value in holds if value is not None])
            # A node's removal takes its chunk list, xattrs and pin with it: after the rest.
            for table in ("nodes", "chunks", "xattrs", "pins"):
                db.executemany(f"DELETE FROM {table} WHERE ino = ?", [(ino,) for ino in gone])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Everything logged into SQLite, the log removed, the database closed (after the
        last flush has returned)."""
        self.flush(*self.rotate())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            try:        # the open segment is empty now; a failed flush's segments stay for replay
                os.unlink(self.dir / f"{self.path.name}.log.{self._segment}")
            except FileNotFoundError:
                pass
        self.db.close()
