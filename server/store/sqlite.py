"""The embedded metadata store: one SQLite database in WAL mode.

Chosen for the single-machine default: no service to run, transactions, and durable
commits (``synchronous=FULL``: a commit is on disk before the request is acknowledged, so
kill -9 or a power cut loses nothing that was answered).

Concurrency and speed: SQLite allows one writer at a time, so all writes go to one
writer thread that owns the write connection. A write job runs start to finish inside
that thread (for ``run_write`` the service's coroutine is driven on the thread's own
event loop; its ``VaultTx`` calls are plain sqlite3 calls that never suspend), so a
transaction costs one thread hand-off instead of one per statement. The writer also
*group-commits*: jobs queued meanwhile run in the same SQLite transaction, each inside
its own SAVEPOINT (a failing job rolls back alone), and one fsync makes the whole batch
durable before any of them is acknowledged. Reads use a small pool of read-only
connections in worker threads; WAL gives each a consistent committed snapshot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gobi.protocol import Event, Node, NodeKind

from .base import (
    ChunkStats,
    MetadataStore,
    Record,
    SessionRecord,
    StoreUnavailable,
    UserRecord,
    UsernameTaken,
    VaultGone,
    VaultRecord,
    VaultTx,
    VersionRecord,
    manifest_from_rows,
    manifest_rows,
)

T = TypeVar("T")

CURRENT = 2**63 - 1  # seq_to of a node's current row
SCHEMA_VERSION = 4
READERS = 4          # read connections (threads) in the pool
MAX_BATCH = 128      # write jobs per group commit

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at);
CREATE TABLE IF NOT EXISTS vaults (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id),
    head_seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    history_floor INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS members (
    vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    PRIMARY KEY (vault_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members(user_id);
CREATE TABLE IF NOT EXISTS nodes (
    vault_id TEXT NOT NULL,
    id TEXT NOT NULL,
    seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL,
    ts_from REAL NOT NULL,
    ts_to REAL,
    parent TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    target TEXT,
    content_rev INTEGER,
    deleted INTEGER NOT NULL,
    rdev INTEGER NOT NULL DEFAULT 0,   -- device nodes' st_rdev (schema version 3)
    inode TEXT,                        -- hard links: the file the name belongs to (version 4)
    PRIMARY KEY (vault_id, id, seq_from)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS nodes_live_name
    ON nodes(vault_id, parent, name) WHERE seq_to = {CURRENT} AND deleted = 0;
CREATE INDEX IF NOT EXISTS nodes_superseded ON nodes(ts_to) WHERE seq_to != {CURRENT};
-- the seq at a time (time travel): the newest row written at or before it
CREATE INDEX IF NOT EXISTS nodes_by_ts ON nodes(vault_id, ts_from, seq_from);
CREATE TABLE IF NOT EXISTS versions (
    vault_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    rev INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    chunks TEXT NOT NULL,
    ts REAL NOT NULL,
    device TEXT,
    username TEXT,
    origin TEXT,
    PRIMARY KEY (vault_id, node_id, rev)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    vault_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    ts REAL NOT NULL,
    refs INTEGER NOT NULL DEFAULT 0,   -- kept versions naming this chunk
    doomed REAL,                       -- set while garbage collection deletes it
    PRIMARY KEY (vault_id, hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    vault_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (vault_id, kind, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_key ON records(vault_id, kind, key, state, ts);
CREATE INDEX IF NOT EXISTS records_by_state ON records(kind, state, ts);
CREATE TABLE IF NOT EXISTS events (
    vault_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (vault_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_ts ON events(ts);
CREATE INDEX IF NOT EXISTS nodes_tombstones
    ON nodes(vault_id, parent, seq_from) WHERE seq_to = {CURRENT} AND deleted = 1;
"""

# Indexes on columns that older schema versions lacked: created after ``_migrate`` added them.
_SCHEMA_2 = f"""
CREATE INDEX IF NOT EXISTS nodes_inode
    ON nodes(vault_id, inode) WHERE seq_to = {CURRENT} AND deleted = 0 AND inode IS NOT NULL;
CREATE INDEX IF NOT EXISTS chunks_unreferenced ON chunks(vault_id, ts) WHERE refs = 0 AND doomed IS NULL;
CREATE INDEX IF NOT EXISTS chunks_doomed ON chunks(vault_id, hash) WHERE doomed IS NOT NULL;
"""

_NODE_COLS = "id, seq_from, parent, name, kind, size, mtime_ns, mode, target, content_rev, deleted, rdev, inode"
_VAULT_COLS = "id, name, owner_id, head_seq, created_at, history_floor"
_VERSION_COLS = "rev, size, mtime_ns, chunks, ts, device, username, origin"
_RECORD_COLS = "kind, id, key, state, ts, body"


def _node(row: Sequence[Any]) -> Node:
    return Node(
        id=row[0], rev=row[1], parent=row[2], name=row[3], kind=NodeKind(row[4]), size=row[5],
        mtime_ns=row[6], mode=row[7], target=row[8], content_rev=row[9], deleted=bool(row[10]),
        rdev=row[11], inode=row[12],
    )


def _version(node_id: str, row: Sequence[Any]) -> VersionRecord:
    rev, size, mtime_ns, chunks, ts, device, username, origin = row
    return VersionRecord(
        node_id=node_id, rev=rev, size=size, mtime_ns=mtime_ns,
        chunks=manifest_from_rows(json.loads(chunks)),
        ts=ts, device=device, user=username, origin=origin,
    )


def _record(row: Sequence[Any]) -> Record:
    return Record(kind=row[0], id=row[1], key=row[2], state=row[3], ts=row[4], body=json.loads(row[5]))


def _batches(items: Sequence[str], size: int = 500):
    # SQLite limits bound parameters (32766 by default); stay far below.
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _add_refs(db: sqlite3.Connection, vault_id: str, hashes: Sequence[str | None], delta: int) -> None:
    # None: a hole's entry, which references no chunk.
    for batch in _batches([h for h in dict.fromkeys(hashes) if h is not None]):
        db.execute(
            f"UPDATE chunks SET refs = refs + ? WHERE vault_id=? AND hash IN ({','.join('?' * len(batch))})",
            (delta, vault_id, *batch),
        )


def _migrate(db: sqlite3.Connection) -> None:
    """Bring an older database to ``SCHEMA_VERSION``. Version 2: chunk reference counts and
    doom marks, version origins (reference counts are computed from the kept versions).
    Version 3: the nodes' ``rdev`` (device nodes); every row older than it is no device
    node, so 0 is right for all of them. Version 4: the nodes' ``inode`` (hard links; NULL,
    a name of its own, for every older row). Each step checks the columns, not the recorded
    version, so a step interrupted before the version was written is simply redone."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
    if "refs" not in cols:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ALTER TABLE chunks ADD COLUMN refs INTEGER NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE chunks ADD COLUMN doomed REAL")
        counts: dict[tuple[str, str], int] = {}
        for vault_id, chunks in db.execute("SELECT vault_id, chunks FROM versions"):
            for h in {c[0] for c in json.loads(chunks)} - {None}:
                counts[(vault_id, h)] = counts.get((vault_id, h), 0) + 1
        db.executemany("UPDATE chunks SET refs=? WHERE vault_id=? AND hash=?",
                       [(n, v, h) for (v, h), n in counts.items()])
        db.execute("COMMIT")
    if "origin" not in {r[1] for r in db.execute("PRAGMA table_info(versions)")}:
        db.execute("ALTER TABLE versions ADD COLUMN origin TEXT")
    node_cols = {r[1] for r in db.execute("PRAGMA table_info(nodes)")}
    if "rdev" not in node_cols:
        db.execute("ALTER TABLE nodes ADD COLUMN rdev INTEGER NOT NULL DEFAULT 0")
    if "inode" not in node_cols:
        db.execute("ALTER TABLE nodes ADD COLUMN inode TEXT")
    db.executescript(_SCHEMA_2)
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
               (str(SCHEMA_VERSION),))


def _vault(row: Sequence[Any]) -> VaultRecord:
    return VaultRecord(
        id=row[0], name=row[1], owner_id=row[2], head_seq=row[3], created_at=row[4],
        history_floor=row[5],
    )


def _user(row: Sequence[Any]) -> UserRecord:
    return UserRecord(row[0], row[1], row[2], bool(row[3]), row[4])


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=10000")
    if readonly:
        db.execute("PRAGMA query_only=ON")
    return db


def _missing_chunks(db: sqlite3.Connection, vault_id: str, hashes: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(hashes))
    present: set[str] = set()
    for batch in _batches(unique):
        marks = ",".join("?" * len(batch))
        rows = db.execute(
            f"SELECT hash FROM chunks WHERE vault_id=? AND hash IN ({marks}) AND doomed IS NULL",
            (vault_id, *batch),
        ).fetchall()
        present.update(r[0] for r in rows)
    return [h for h in unique if h not in present]


def _find_records(
    db: sqlite3.Connection, vault_id: str, kind: str, key: str | None, state: str | None,
    since_ts: float | None, before_ts: float | None, limit: int, newest_first: bool = False,
) -> list[Record]:
    where, args = ["vault_id=?", "kind=?"], [vault_id, kind]
    for cond, value in (("key=?", key), ("state=?", state), ("ts>=?", since_ts), ("ts<?", before_ts)):
        if value is not None:
            where.append(cond)
            args.append(value)
    order = "DESC" if newest_first else "ASC"
    rows = db.execute(
        f"SELECT {_RECORD_COLS} FROM records WHERE {' AND '.join(where)} "
        f"ORDER BY ts {order}, id {order} LIMIT ?", (*args, limit),
    ).fetchall()
    return [_record(r) for r in rows]


def _save_node(db: sqlite3.Connection, vault_id: str, node: Node, ts: float) -> None:
    db.execute(
        f"UPDATE nodes SET seq_to=?, ts_to=? WHERE vault_id=? AND id=? AND seq_to={CURRENT}",
        (node.rev, ts, vault_id, node.id),
    )
    db.execute(
        "INSERT INTO nodes (vault_id, id, seq_from, seq_to, ts_from, ts_to, parent, name, kind, "
        "size, mtime_ns, mode, target, content_rev, deleted, rdev, inode) "
        "VALUES (?,?,?,?,?,NULL,?,?,?,?,?,?,?,?,?,?,?)",
        (
            vault_id, node.id, node.rev, CURRENT, ts, node.parent, node.name, node.kind.value,
            node.size, node.mtime_ns, node.mode, node.target, node.content_rev, int(node.deleted),
            node.rdev, node.inode,
        ),
    )


class _SqliteVaultTx(VaultTx):
    """Runs on the writer thread: every method is a direct sqlite3 call."""

    def __init__(self, db: sqlite3.Connection, vault_id: str):
        self.db = db
        self.vault_id = vault_id

    async def node(self, node_id: str) -> Node | None:
        row = self.db.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND id=? AND seq_to={CURRENT}",
            (self.vault_id, node_id),
        ).fetchone()
        return _node(row) if row else None

    async def child(self, parent_id: str, name: str) -> Node | None:
        row = self.db.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND parent=? AND name=? "
            f"AND seq_to={CURRENT} AND deleted=0",
            (self.vault_id, parent_id, name),
        ).fetchone()
        return _node(row) if row else None

    async def live_children(self, parent_id: str, limit: int) -> list[Node]:
        rows = self.db.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND parent=? "
            f"AND seq_to={CURRENT} AND deleted=0 LIMIT ?",
            (self.vault_id, parent_id, limit),
        ).fetchall()
        return [_node(r) for r in rows]

    async def names_of(self, inode: str) -> list[Node]:
        rows = self.db.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND inode=? "
            f"AND seq_to={CURRENT} AND deleted=0 AND inode IS NOT NULL ORDER BY id",
            (self.vault_id, inode),
        ).fetchall()
        return [_node(r) for r in rows]

    async def next_seq(self) -> int:
        row = self.db.execute(
            "UPDATE vaults SET head_seq = head_seq + 1 WHERE id=? AND deleted=0 RETURNING head_seq",
            (self.vault_id,),
        ).fetchone()
        if row is None:
            raise VaultGone(self.vault_id)
        return row[0]

    async def save_node(self, node: Node, ts: float) -> None:
        _save_node(self.db, self.vault_id, node, ts)

    async def add_event(self, event: Event) -> None:
        self.db.execute(
            "INSERT INTO events (vault_id, seq, ts, body) VALUES (?,?,?,?)",
            (self.vault_id, event.seq, event.ts, event.model_dump_json()),
        )

    async def add_version(self, vault_id: str, version: VersionRecord) -> None:
        v = version
        self.db.execute(
            f"INSERT INTO versions (vault_id, node_id, {_VERSION_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                vault_id, v.node_id, v.rev, v.size, v.mtime_ns,
                json.dumps(manifest_rows(v.chunks), separators=(",", ":")),
                v.ts, v.device, v.user, v.origin,
            ),
        )
        _add_refs(self.db, vault_id, [c.hash for c in v.chunks], 1)

    async def version(self, node_id: str, rev: int) -> VersionRecord | None:
        row = self.db.execute(
            f"SELECT {_VERSION_COLS} FROM versions WHERE vault_id=? AND node_id=? AND rev=?",
            (self.vault_id, node_id, rev),
        ).fetchone()
        return _version(node_id, row) if row else None

    async def versions(self, node_id: str) -> list[VersionRecord]:
        rows = self.db.execute(
            f"SELECT {_VERSION_COLS} FROM versions WHERE vault_id=? AND node_id=? ORDER BY rev DESC",
            (self.vault_id, node_id),
        ).fetchall()
        return [_version(node_id, r) for r in rows]

    async def drop_versions(self, node_id: str, revs: Sequence[int]) -> int:
        dropped = 0
        for rev in revs:
            row = self.db.execute(
                "DELETE FROM versions WHERE vault_id=? AND node_id=? AND rev=? RETURNING chunks",
                (self.vault_id, node_id, rev),
            ).fetchone()
            if row is not None:
                dropped += 1
                _add_refs(self.db, self.vault_id, [c[0] for c in json.loads(row[0])], -1)
        return dropped

    async def missing_chunks(self, hashes: Sequence[str]) -> list[str]:
        return _missing_chunks(self.db, self.vault_id, hashes)

    async def doom_chunks(self, before_ts: float, now: float, limit: int) -> list[tuple[str, int]]:
        rows = self.db.execute(
            "UPDATE chunks SET doomed=? WHERE vault_id=? AND hash IN ("
            "  SELECT hash FROM chunks WHERE vault_id=? AND refs=0 AND doomed IS NULL AND ts<? LIMIT ?"
            ") RETURNING hash, size",
            (now, self.vault_id, self.vault_id, before_ts, limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    async def node_at(self, node_id: str, seq: int) -> Node | None:
        row = self.db.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND id=? AND seq_from<=? AND seq_to>?",
            (self.vault_id, node_id, seq, seq),
        ).fetchone()
        return _node(row) if row else None

    async def deleted_children(self, parent_id: str, seq_from: int, seq_to: int, limit: int,
                               newest_first: bool = False) -> list[Node]:
        order = "DESC" if newest_first else "ASC"
        rows = self.db.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND parent=? AND seq_to={CURRENT} "
            f"AND deleted=1 AND seq_from BETWEEN ? AND ? ORDER BY seq_from {order} LIMIT ?",
            (self.vault_id, parent_id, seq_from, seq_to, limit),
        ).fetchall()
        return [_node(r) for r in rows]

    async def count_live_files(self, limit: int) -> int:
        return self.db.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM nodes WHERE vault_id=? AND seq_to={CURRENT} "
            "AND deleted=0 AND kind!='dir' LIMIT ?)", (self.vault_id, limit),
        ).fetchone()[0]

    async def get_record(self, kind: str, record_id: str) -> Record | None:
        row = self.db.execute(
            f"SELECT {_RECORD_COLS} FROM records WHERE vault_id=? AND kind=? AND id=?",
            (self.vault_id, kind, record_id),
        ).fetchone()
        return _record(row) if row else None

    async def put_record(self, record: Record) -> None:
        r = record
        self.db.execute(
            f"INSERT OR REPLACE INTO records (vault_id, {_RECORD_COLS}) VALUES (?,?,?,?,?,?,?)",
            (self.vault_id, r.kind, r.id, r.key, r.state, r.ts, json.dumps(r.body, separators=(",", ":"))),
        )

    async def delete_record(self, kind: str, record_id: str) -> None:
        self.db.execute("DELETE FROM records WHERE vault_id=? AND kind=? AND id=?",
                        (self.vault_id, kind, record_id))

    async def find_records(
        self, kind: str, *, key: str | None = None, state: str | None = None,
        since_ts: float | None = None, limit: int = 1000,
    ) -> list[Record]:
        return _find_records(self.db, self.vault_id, kind, key, state, since_ts, None, limit)

    async def mark_vault_deleted(self) -> None:
        self.db.execute("UPDATE vaults SET deleted=1 WHERE id=?", (self.vault_id,))


_STOP = object()


class _WriterThread(threading.Thread):
    """Owns the write connection and group-commits queued jobs (see the module docstring)."""

    def __init__(self, path: Path):
        super().__init__(name="gobi-sqlite-writer", daemon=True)
        self.path = path
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    def submit(self, job: Callable[[sqlite3.Connection, asyncio.AbstractEventLoop], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.jobs.put((future, job))
        return future

    def stop(self) -> None:
        self.jobs.put(_STOP)

    def run(self) -> None:
        try:
            db = _connect(self.path)
            db.executescript(_SCHEMA)
            _migrate(db)
        except BaseException as exc:  # reported to open()
            self.ready.set_exception(exc)
            return
        loop = asyncio.new_event_loop()
        self.ready.set_result(None)
        try:
            while True:
                item = self.jobs.get()
                if item is _STOP:
                    return
                batch = [item]
                while len(batch) < MAX_BATCH:
                    try:
                        nxt = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        self.jobs.put(_STOP)  # finish this batch, then stop
                        break
                    batch.append(nxt)
                self._run_batch(db, loop, batch)
        finally:
            loop.close()
            db.close()

    def _run_batch(self, db: sqlite3.Connection, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        # A job cancelled before it started is dropped: its caller is gone and nothing of
        # it was acknowledged. A job that started always finishes.
        batch = [(f, job) for f, job in batch if f.set_running_or_notify_cancel()]
        if not batch:
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for _, job in batch:
                db.execute("SAVEPOINT job")
                try:
                    result = job(db, loop)
                except BaseException as exc:  # the job's own refusal or failure
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    db.execute("RELEASE job")
                    outcomes.append((True, result))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for future, _ in batch:
                future.set_exception(StoreUnavailable(f"database write failed: {exc}"))
            return
        for (future, _), (ok, value) in zip(batch, outcomes):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


class SqliteStore(MetadataStore):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._writer: _WriterThread | None = None
        self._readers: asyncio.Queue[sqlite3.Connection] | None = None
        self._all_readers: list[sqlite3.Connection] = []

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = _WriterThread(self.path)
        writer.start()
        await asyncio.wrap_future(writer.ready)  # schema exists before readers connect
        self._writer = writer
        self._readers = asyncio.Queue()
        for _ in range(READERS):
            conn = await asyncio.to_thread(_connect, self.path, True)
            self._all_readers.append(conn)
            self._readers.put_nowait(conn)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        for conn in self._all_readers:
            conn.close()
        self._all_readers.clear()
        self._readers = None

    async def ping(self) -> None:
        try:
            await self._read(lambda db: db.execute("SELECT 1").fetchone())
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    # -- plumbing ---------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise StoreUnavailable("store is not open")
        conn = await self._readers.get()
        try:
            return await asyncio.to_thread(fn, conn)
        finally:
            self._readers.put_nowait(conn)

    async def _fetchone(self, sql: str, args: Sequence[Any]) -> Any:
        return await self._read(lambda db: db.execute(sql, args).fetchone())

    async def _fetchall(self, sql: str, args: Sequence[Any]) -> list[Any]:
        return await self._read(lambda db: db.execute(sql, args).fetchall())

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a synchronous job on the writer thread, in a group-committed transaction."""
        if self._writer is None:
            raise StoreUnavailable("store is not open")
        return await asyncio.wrap_future(self._writer.submit(lambda db, _loop: fn(db)))

    # -- users and sessions ------------------------------------------------------------

    async def create_user(self, user: UserRecord) -> None:
        def fn(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO users (id, username, password_hash, is_admin, created_at) "
                    "VALUES (?,?,?,?,?)",
                    (user.id, user.username, user.password_hash, int(user.is_admin), user.created_at),
                )
            except sqlite3.IntegrityError:
                raise UsernameTaken(user.username) from None

        await self._write(fn)

    async def user_by_name(self, username: str) -> UserRecord | None:
        row = await self._fetchone(
            "SELECT id, username, password_hash, is_admin, created_at FROM users WHERE username=?",
            (username,),
        )
        return _user(row) if row else None

    async def user_by_id(self, user_id: str) -> UserRecord | None:
        row = await self._fetchone(
            "SELECT id, username, password_hash, is_admin, created_at FROM users WHERE id=?", (user_id,)
        )
        return _user(row) if row else None

    async def set_password(self, user_id: str, password_hash: str) -> None:
        def fn(db: sqlite3.Connection) -> None:
            db.execute("UPDATE users SET password_hash=? WHERE id=?", (password_hash, user_id))
            # A password change ends every session of the user.
            db.execute("DELETE FROM sessions WHERE user_id=?", (user_id,))

        await self._write(fn)

    async def create_session(self, session: SessionRecord) -> None:
        await self._write(lambda db: db.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?,?,?,?)",
            (session.token_hash, session.user_id, session.created_at, session.expires_at),
        ))

    async def session(self, token_hash: str) -> SessionRecord | None:
        row = await self._fetchone(
            "SELECT token_hash, user_id, created_at, expires_at FROM sessions WHERE token_hash=?",
            (token_hash,),
        )
        return SessionRecord(*row) if row else None

    async def session_user(self, token_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        row = await self._fetchone(
            "SELECT s.token_hash, s.user_id, s.created_at, s.expires_at, "
            "u.id, u.username, u.password_hash, u.is_admin, u.created_at "
            "FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash=?",
            (token_hash,),
        )
        return (SessionRecord(*row[:4]), _user(row[4:])) if row else None

    async def delete_session(self, token_hash: str) -> None:
        await self._write(lambda db: db.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,)))

    # -- vaults and members -------------------------------------------------------------

    async def create_vault(self, vault: VaultRecord, root: Node) -> None:
        def fn(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO vaults (id, name, owner_id, head_seq, created_at) VALUES (?,?,?,?,?)",
                (vault.id, vault.name, vault.owner_id, vault.head_seq, vault.created_at),
            )
            db.execute(
                "INSERT INTO members (vault_id, user_id, role) VALUES (?,?,'owner')",
                (vault.id, vault.owner_id),
            )
            _save_node(db, vault.id, root, vault.created_at)

        await self._write(fn)

    async def vault(self, vault_id: str) -> VaultRecord | None:
        row = await self._fetchone(f"SELECT {_VAULT_COLS} FROM vaults WHERE id=? AND deleted=0", (vault_id,))
        return _vault(row) if row else None

    async def access(self, vault_id: str, user_id: str) -> tuple[VaultRecord, str] | None:
        row = await self._fetchone(
            "SELECT v.id, v.name, v.owner_id, v.head_seq, v.created_at, v.history_floor, m.role "
            "FROM members m JOIN vaults v ON v.id = m.vault_id "
            "WHERE m.vault_id=? AND m.user_id=? AND v.deleted=0",
            (vault_id, user_id),
        )
        return (_vault(row[:6]), row[6]) if row else None

    async def vaults_of(self, user_id: str) -> list[tuple[VaultRecord, str]]:
        rows = await self._fetchall(
            "SELECT v.id, v.name, v.owner_id, v.head_seq, v.created_at, v.history_floor, m.role "
            "FROM members m JOIN vaults v ON v.id = m.vault_id "
            "WHERE m.user_id=? AND v.deleted=0 ORDER BY v.created_at, v.id",
            (user_id,),
        )
        return [(_vault(r[:6]), r[6]) for r in rows]

    async def role(self, vault_id: str, user_id: str) -> str | None:
        found = await self.access(vault_id, user_id)
        return found[1] if found else None

    async def set_member(self, vault_id: str, user_id: str, role: str) -> None:
        await self._write(lambda db: db.execute(
            "INSERT INTO members (vault_id, user_id, role) VALUES (?,?,?) "
            "ON CONFLICT (vault_id, user_id) DO UPDATE SET role=excluded.role",
            (vault_id, user_id, role),
        ))

    async def remove_member(self, vault_id: str, user_id: str) -> None:
        await self._write(lambda db: db.execute(
            "DELETE FROM members WHERE vault_id=? AND user_id=?", (vault_id, user_id)
        ))

    async def members(self, vault_id: str) -> list[tuple[str, str]]:
        rows = await self._fetchall(
            "SELECT u.username, m.role FROM members m JOIN users u ON u.id = m.user_id "
            "WHERE m.vault_id=? ORDER BY u.username",
            (vault_id,),
        )
        return [(r[0], r[1]) for r in rows]

    # -- writes --------------------------------------------------------------------------

    async def run_write(self, vault_id: str, fn: Callable[[VaultTx], Awaitable[T]]) -> T:
        if self._writer is None:
            raise StoreUnavailable("store is not open")

        def job(db: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> T:
            if db.execute("SELECT 1 FROM vaults WHERE id=? AND deleted=0", (vault_id,)).fetchone() is None:
                raise VaultGone(vault_id)
            # The coroutine only awaits VaultTx methods, which never suspend here, so
            # driving it on the writer's private loop runs it to completion at once.
            return loop.run_until_complete(fn(_SqliteVaultTx(db, vault_id)))

        return await asyncio.wrap_future(self._writer.submit(job))

    # -- chunks ---------------------------------------------------------------------------

    async def missing_chunks(self, vault_id: str, hashes: Sequence[str]) -> list[str]:
        if not hashes:
            return []
        return await self._read(lambda db: _missing_chunks(db, vault_id, hashes))

    async def add_chunk(self, vault_id: str, hash: str, size: int, ts: float) -> bool:
        def fn(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT OR IGNORE INTO chunks (vault_id, hash, size, ts) VALUES (?,?,?,?)",
                (vault_id, hash, size, ts),
            )
            return cur.rowcount == 1

        return await self._write(fn)

    async def chunk_size(self, vault_id: str, hash: str) -> int | None:
        row = await self._fetchone(
            "SELECT size FROM chunks WHERE vault_id=? AND hash=? AND doomed IS NULL", (vault_id, hash))
        return row[0] if row else None

    async def doomed_chunks(self, vault_id: str, hashes: Sequence[str] | None = None,
                            limit: int = 1000) -> list[str]:
        def fn(db: sqlite3.Connection) -> list[str]:
            if hashes is None:
                return [r[0] for r in db.execute(
                    "SELECT hash FROM chunks WHERE vault_id=? AND doomed IS NOT NULL LIMIT ?",
                    (vault_id, limit))]
            out: set[str] = set()
            for batch in _batches(list(dict.fromkeys(hashes))):
                out.update(r[0] for r in db.execute(
                    f"SELECT hash FROM chunks WHERE vault_id=? AND hash IN ({','.join('?' * len(batch))}) "
                    "AND doomed IS NOT NULL", (vault_id, *batch)))
            return [h for h in dict.fromkeys(hashes) if h in out]

        return await self._read(fn)

    async def forget_chunks(self, vault_id: str, hashes: Sequence[str]) -> int:
        def fn(db: sqlite3.Connection) -> int:
            gone = 0
            for batch in _batches(list(dict.fromkeys(hashes))):
                gone += db.execute(
                    f"DELETE FROM chunks WHERE vault_id=? AND hash IN ({','.join('?' * len(batch))}) "
                    "AND doomed IS NOT NULL", (vault_id, *batch)).rowcount
            return gone

        return await self._write(fn)

    async def chunk_stats(self, vault_id: str, before_ts: float) -> ChunkStats:
        rows = await self._fetchall(
            "SELECT CASE WHEN doomed IS NOT NULL THEN 'doomed' WHEN refs > 0 THEN 'referenced' "
            "WHEN ts < ? THEN 'collectable' ELSE 'in_grace' END AS state, COUNT(*), "
            "COALESCE(SUM(size), 0) FROM chunks WHERE vault_id=? GROUP BY state",
            (before_ts, vault_id),
        )
        got = {r[0]: (r[1], r[2]) for r in rows}
        return ChunkStats(**{k: got.get(k, (0, 0)) for k in ("referenced", "collectable", "in_grace", "doomed")})

    # -- node reads -----------------------------------------------------------------------

    async def node(self, vault_id: str, node_id: str) -> Node | None:
        row = await self._fetchone(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND id=? AND seq_to={CURRENT}",
            (vault_id, node_id),
        )
        return _node(row) if row else None

    async def child(self, vault_id: str, parent_id: str, name: str) -> Node | None:
        row = await self._fetchone(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND parent=? AND name=? "
            f"AND seq_to={CURRENT} AND deleted=0",
            (vault_id, parent_id, name),
        )
        return _node(row) if row else None

    async def children(self, vault_id: str, parent_id: str, after_name: str | None, limit: int) -> list[Node]:
        rows = await self._fetchall(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND parent=? "
            f"AND seq_to={CURRENT} AND deleted=0 AND name > ? ORDER BY name LIMIT ?",
            (vault_id, parent_id, after_name or "", limit),
        )
        return [_node(r) for r in rows]

    async def list_tree(self, vault_id: str, at: int, after_id: str | None, limit: int) -> list[Node]:
        rows = await self._fetchall(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND id > ? "
            "AND seq_from <= ? AND seq_to > ? AND deleted=0 ORDER BY id LIMIT ?",
            (vault_id, after_id or "", at, at, limit),
        )
        return [_node(r) for r in rows]

    async def version(self, vault_id: str, node_id: str, rev: int) -> VersionRecord | None:
        row = await self._fetchone(
            f"SELECT {_VERSION_COLS} FROM versions WHERE vault_id=? AND node_id=? AND rev=?",
            (vault_id, node_id, rev),
        )
        return _version(node_id, row) if row else None

    async def versions(self, vault_id: str, node_id: str) -> list[VersionRecord]:
        rows = await self._fetchall(
            f"SELECT {_VERSION_COLS} FROM versions WHERE vault_id=? AND node_id=? ORDER BY rev DESC",
            (vault_id, node_id),
        )
        return [_version(node_id, r) for r in rows]

    async def version_nodes(
        self, before_ts: float, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        # Walks the primary key from the cursor, so one page costs what it returns.
        rows = await self._fetchall(
            "SELECT vault_id, node_id FROM versions WHERE (vault_id, node_id) > (?, ?) "
            "GROUP BY vault_id, node_id HAVING MIN(ts) < ? ORDER BY vault_id, node_id LIMIT ?",
            (*(after or ("", "")), before_ts, limit),
        )
        return [(r[0], r[1]) for r in rows]

    async def vault_ids(self) -> list[str]:
        return [r[0] for r in await self._fetchall("SELECT id FROM vaults WHERE deleted=0 ORDER BY id", ())]

    # -- records --------------------------------------------------------------------------

    async def get_record(self, vault_id: str, kind: str, record_id: str) -> Record | None:
        row = await self._fetchone(
            f"SELECT {_RECORD_COLS} FROM records WHERE vault_id=? AND kind=? AND id=?",
            (vault_id, kind, record_id),
        )
        return _record(row) if row else None

    async def find_records(
        self, vault_id: str, kind: str, *, key: str | None = None, state: str | None = None,
        since_ts: float | None = None, before_ts: float | None = None, limit: int = 1000,
        newest_first: bool = False,
    ) -> list[Record]:
        return await self._read(lambda db: _find_records(
            db, vault_id, kind, key, state, since_ts, before_ts, limit, newest_first))

    async def due_records(self, kind: str, state: str, before_ts: float, limit: int) -> list[tuple[str, Record]]:
        rows = await self._fetchall(
            f"SELECT vault_id, {_RECORD_COLS} FROM records WHERE kind=? AND state=? AND ts<? "
            "ORDER BY ts LIMIT ?", (kind, state, before_ts, limit),
        )
        return [(r[0], _record(r[1:])) for r in rows]

    # -- events ---------------------------------------------------------------------------

    async def events_after(self, vault_id: str, after: int, limit: int) -> list[Event]:
        rows = await self._fetchall(
            "SELECT body FROM events WHERE vault_id=? AND seq > ? ORDER BY seq LIMIT ?",
            (vault_id, after, limit),
        )
        return [Event.model_validate_json(r[0]) for r in rows]

    async def oldest_event_seq(self, vault_id: str) -> int | None:
        row = await self._fetchone("SELECT MIN(seq) FROM events WHERE vault_id=?", (vault_id,))
        return row[0] if row else None

    async def seq_at(self, vault_id: str, ts: float) -> tuple[int, float] | None:
        row = await self._fetchone(
            "SELECT seq_from, ts_from FROM nodes WHERE vault_id=? AND ts_from <= ? "
            "ORDER BY ts_from DESC, seq_from DESC LIMIT 1", (vault_id, ts))
        return (row[0], row[1]) if row else None

    # -- maintenance ----------------------------------------------------------------------

    async def prune(self, events_before_ts: float, history_before_ts: float) -> int:
        def fn(db: sqlite3.Connection) -> int:
            dropped = db.execute("DELETE FROM events WHERE ts < ?", (events_before_ts,)).rowcount
            # Raise each vault's floor to the newest seq_to we are about to forget, so a
            # listing at an older seq is refused instead of silently missing rows.
            db.execute(
                "UPDATE vaults SET history_floor = MAX(history_floor, ("
                f"  SELECT MAX(seq_to) FROM nodes WHERE nodes.vault_id = vaults.id "
                f"  AND seq_to != {CURRENT} AND ts_to < ?)) "
                f"WHERE EXISTS (SELECT 1 FROM nodes WHERE nodes.vault_id = vaults.id "
                f"  AND seq_to != {CURRENT} AND ts_to < ?)",
                (history_before_ts, history_before_ts),
            )
            db.execute(f"DELETE FROM nodes WHERE seq_to != {CURRENT} AND ts_to < ?", (history_before_ts,))
            db.execute("DELETE FROM sessions WHERE expires_at < strftime('%s','now')")
            return dropped

        return await self._write(fn)
