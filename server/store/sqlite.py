"""The embedded metadata store: one SQLite database in WAL mode.

Chosen for the single-machine default: no service to run, transactions, and durable
commits (``synchronous=FULL``: a commit is on disk before the request is acknowledged, so
kill -9 or a power cut loses nothing that was answered).

Concurrency: one writer connection serialised by an asyncio lock (SQLite allows one
writer at a time anyway; ``BEGIN IMMEDIATE`` takes the write lock up front so a
transaction never fails half-way on lock upgrade), and one reader connection that sees
committed snapshots thanks to WAL. aiosqlite runs each connection in its own thread, so
the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from gobi.protocol import ChunkRef, Event, Node, NodeKind

from .base import (
    MetadataStore,
    SessionRecord,
    StoreUnavailable,
    UserRecord,
    UsernameTaken,
    VaultGone,
    VaultRecord,
    VaultTx,
    VersionRecord,
)

T = TypeVar("T")

CURRENT = 2**63 - 1  # seq_to of a node's current row
SCHEMA_VERSION = 1

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
    PRIMARY KEY (vault_id, id, seq_from)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS nodes_live_name
    ON nodes(vault_id, parent, name) WHERE seq_to = {CURRENT} AND deleted = 0;
CREATE INDEX IF NOT EXISTS nodes_superseded ON nodes(ts_to) WHERE seq_to != {CURRENT};
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
    PRIMARY KEY (vault_id, node_id, rev)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    vault_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (vault_id, hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    vault_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (vault_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_ts ON events(ts);
"""

_NODE_COLS = "id, seq_from, parent, name, kind, size, mtime_ns, mode, target, content_rev, deleted"


def _node(row: Sequence[Any]) -> Node:
    return Node(
        id=row[0],
        rev=row[1],
        parent=row[2],
        name=row[3],
        kind=NodeKind(row[4]),
        size=row[5],
        mtime_ns=row[6],
        mode=row[7],
        target=row[8],
        content_rev=row[9],
        deleted=bool(row[10]),
    )


def _version(node_id: str, row: Sequence[Any]) -> VersionRecord:
    rev, size, mtime_ns, chunks, ts, device, username = row
    return VersionRecord(
        node_id=node_id,
        rev=rev,
        size=size,
        mtime_ns=mtime_ns,
        chunks=tuple(ChunkRef(hash=h, size=s) for h, s in json.loads(chunks)),
        ts=ts,
        device=device,
        user=username,
    )


def _vault(row: Sequence[Any]) -> VaultRecord:
    return VaultRecord(
        id=row[0], name=row[1], owner_id=row[2], head_seq=row[3], created_at=row[4],
        history_floor=row[5],
    )


_VAULT_COLS = "id, name, owner_id, head_seq, created_at, history_floor"


class _SqliteVaultTx(VaultTx):
    def __init__(self, db: aiosqlite.Connection, vault_id: str):
        self.db = db
        self.vault_id = vault_id

    async def _one(self, sql: str, args: Sequence[Any]) -> Any:
        async with self.db.execute(sql, args) as cur:
            return await cur.fetchone()

    async def node(self, node_id: str) -> Node | None:
        row = await self._one(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND id=? AND seq_to={CURRENT}",
            (self.vault_id, node_id),
        )
        return _node(row) if row else None

    async def child(self, parent_id: str, name: str) -> Node | None:
        row = await self._one(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND parent=? AND name=? "
            f"AND seq_to={CURRENT} AND deleted=0",
            (self.vault_id, parent_id, name),
        )
        return _node(row) if row else None

    async def live_children(self, parent_id: str, limit: int) -> list[Node]:
        async with self.db.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND parent=? "
            f"AND seq_to={CURRENT} AND deleted=0 LIMIT ?",
            (self.vault_id, parent_id, limit),
        ) as cur:
            return [_node(r) for r in await cur.fetchall()]

    async def next_seq(self) -> int:
        row = await self._one(
            "UPDATE vaults SET head_seq = head_seq + 1 WHERE id=? AND deleted=0 "
            "RETURNING head_seq",
            (self.vault_id,),
        )
        if row is None:
            raise VaultGone(self.vault_id)
        return row[0]

    async def save_node(self, node: Node, ts: float) -> None:
        await self.db.execute(
            f"UPDATE nodes SET seq_to=?, ts_to=? WHERE vault_id=? AND id=? AND seq_to={CURRENT}",
            (node.rev, ts, self.vault_id, node.id),
        )
        await self.db.execute(
            "INSERT INTO nodes (vault_id, id, seq_from, seq_to, ts_from, ts_to, parent, name, "
            "kind, size, mtime_ns, mode, target, content_rev, deleted) "
            "VALUES (?,?,?,?,?,NULL,?,?,?,?,?,?,?,?,?)",
            (
                self.vault_id, node.id, node.rev, CURRENT, ts, node.parent, node.name,
                node.kind.value, node.size, node.mtime_ns, node.mode, node.target,
                node.content_rev, int(node.deleted),
            ),
        )

    async def add_event(self, event: Event) -> None:
        await self.db.execute(
            "INSERT INTO events (vault_id, seq, ts, body) VALUES (?,?,?,?)",
            (self.vault_id, event.seq, event.ts, event.model_dump_json()),
        )

    async def add_version(self, vault_id: str, version: VersionRecord) -> None:
        await _insert_version(self.db, vault_id, version)

    async def missing_chunks(self, hashes: Sequence[str]) -> list[str]:
        return await _missing_chunks(self.db, self.vault_id, hashes)

    async def mark_vault_deleted(self) -> None:
        await self.db.execute("UPDATE vaults SET deleted=1 WHERE id=?", (self.vault_id,))


async def _insert_version(db: aiosqlite.Connection, vault_id: str, v: VersionRecord) -> None:
    await db.execute(
        "INSERT INTO versions (vault_id, node_id, rev, size, mtime_ns, chunks, ts, device, "
        "username) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            vault_id, v.node_id, v.rev, v.size, v.mtime_ns,
            json.dumps([[c.hash, c.size] for c in v.chunks], separators=(",", ":")),
            v.ts, v.device, v.user,
        ),
    )


async def _missing_chunks(
    db: aiosqlite.Connection, vault_id: str, hashes: Sequence[str]
) -> list[str]:
    if not hashes:
        return []
    present: set[str] = set()
    unique = list(dict.fromkeys(hashes))
    # SQLite limits bound parameters (32766 by default); stay far below.
    for i in range(0, len(unique), 500):
        batch = unique[i : i + 500]
        marks = ",".join("?" * len(batch))
        async with db.execute(
            f"SELECT hash FROM chunks WHERE vault_id=? AND hash IN ({marks})",
            (vault_id, *batch),
        ) as cur:
            present.update(r[0] for r in await cur.fetchall())
    return [h for h in unique if h not in present]


class SqliteStore(MetadataStore):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=10000")
        return db

    async def open(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._writer.executescript(_SCHEMA)
        await self._writer.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        self._reader = await self._connect()
        await self._reader.execute("PRAGMA query_only=ON")

    async def close(self) -> None:
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._reader = self._writer = None

    async def ping(self) -> None:
        try:
            await self._fetchone("SELECT 1", ())
        except (sqlite3.Error, ValueError, AttributeError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    # -- helpers ----------------------------------------------------------------------

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreUnavailable("store is not open")
        return self._reader

    async def _fetchone(self, sql: str, args: Sequence[Any]) -> Any:
        async with self._r.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _fetchall(self, sql: str, args: Sequence[Any]) -> list[Any]:
        async with self._r.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` in a BEGIN IMMEDIATE … COMMIT transaction on the writer.

        The transaction runs in its own task, shielded from the caller's cancellation: a
        client that hangs up mid-request must not leave the writer connection inside an
        open transaction, and a write that started is allowed to finish.
        """
        if self._writer is None:
            raise StoreUnavailable("store is not open")
        return await asyncio.shield(asyncio.ensure_future(self._transaction(self._writer, fn)))

    async def _transaction(
        self, db: aiosqlite.Connection, fn: Callable[[aiosqlite.Connection], Awaitable[T]]
    ) -> T:
        async with self._write_lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await fn(db)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
            return result

    # -- users and sessions ------------------------------------------------------------

    async def create_user(self, user: UserRecord) -> None:
        async def fn(db: aiosqlite.Connection) -> None:
            try:
                await db.execute(
                    "INSERT INTO users (id, username, password_hash, is_admin, created_at) "
                    "VALUES (?,?,?,?,?)",
                    (user.id, user.username, user.password_hash, int(user.is_admin),
                     user.created_at),
                )
            except sqlite3.IntegrityError:
                raise UsernameTaken(user.username) from None

        await self._write(fn)

    async def _user(self, where: str, value: str) -> UserRecord | None:
        row = await self._fetchone(
            f"SELECT id, username, password_hash, is_admin, created_at FROM users WHERE {where}=?",
            (value,),
        )
        if row is None:
            return None
        return UserRecord(row[0], row[1], row[2], bool(row[3]), row[4])

    async def user_by_name(self, username: str) -> UserRecord | None:
        return await self._user("username", username)

    async def user_by_id(self, user_id: str) -> UserRecord | None:
        return await self._user("id", user_id)

    async def set_password(self, user_id: str, password_hash: str) -> None:
        async def fn(db: aiosqlite.Connection) -> None:
            await db.execute("UPDATE users SET password_hash=? WHERE id=?", (password_hash, user_id))
            # A password change ends every session of the user.
            await db.execute("DELETE FROM sessions WHERE user_id=?", (user_id,))

        await self._write(fn)

    async def create_session(self, session: SessionRecord) -> None:
        async def fn(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?,?,?,?)",
                (session.token_hash, session.user_id, session.created_at, session.expires_at),
            )

        await self._write(fn)

    async def session(self, token_hash: str) -> SessionRecord | None:
        row = await self._fetchone(
            "SELECT token_hash, user_id, created_at, expires_at FROM sessions WHERE token_hash=?",
            (token_hash,),
        )
        return SessionRecord(*row) if row else None

    async def delete_session(self, token_hash: str) -> None:
        async def fn(db: aiosqlite.Connection) -> None:
            await db.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,))

        await self._write(fn)

    # -- vaults and members -------------------------------------------------------------

    async def create_vault(self, vault: VaultRecord, root: Node) -> None:
        async def fn(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO vaults (id, name, owner_id, head_seq, created_at) VALUES (?,?,?,?,?)",
                (vault.id, vault.name, vault.owner_id, vault.head_seq, vault.created_at),
            )
            await db.execute(
                "INSERT INTO members (vault_id, user_id, role) VALUES (?,?,'owner')",
                (vault.id, vault.owner_id),
            )
            await _SqliteVaultTx(db, vault.id).save_node(root, vault.created_at)

        await self._write(fn)

    async def vault(self, vault_id: str) -> VaultRecord | None:
        row = await self._fetchone(
            f"SELECT {_VAULT_COLS} FROM vaults WHERE id=? AND deleted=0", (vault_id,)
        )
        return _vault(row) if row else None

    async def vaults_of(self, user_id: str) -> list[tuple[VaultRecord, str]]:
        rows = await self._fetchall(
            "SELECT v.id, v.name, v.owner_id, v.head_seq, v.created_at, v.history_floor, m.role "
            "FROM members m JOIN vaults v ON v.id = m.vault_id "
            "WHERE m.user_id=? AND v.deleted=0 ORDER BY v.created_at, v.id",
            (user_id,),
        )
        return [(_vault(r[:6]), r[6]) for r in rows]

    async def role(self, vault_id: str, user_id: str) -> str | None:
        row = await self._fetchone(
            "SELECT m.role FROM members m JOIN vaults v ON v.id = m.vault_id "
            "WHERE m.vault_id=? AND m.user_id=? AND v.deleted=0",
            (vault_id, user_id),
        )
        return row[0] if row else None

    async def set_member(self, vault_id: str, user_id: str, role: str) -> None:
        async def fn(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO members (vault_id, user_id, role) VALUES (?,?,?) "
                "ON CONFLICT (vault_id, user_id) DO UPDATE SET role=excluded.role",
                (vault_id, user_id, role),
            )

        await self._write(fn)

    async def remove_member(self, vault_id: str, user_id: str) -> None:
        async def fn(db: aiosqlite.Connection) -> None:
            await db.execute(
                "DELETE FROM members WHERE vault_id=? AND user_id=?", (vault_id, user_id)
            )

        await self._write(fn)

    async def members(self, vault_id: str) -> list[tuple[str, str]]:
        rows = await self._fetchall(
            "SELECT u.username, m.role FROM members m JOIN users u ON u.id = m.user_id "
            "WHERE m.vault_id=? ORDER BY u.username",
            (vault_id,),
        )
        return [(r[0], r[1]) for r in rows]

    # -- writes --------------------------------------------------------------------------

    async def run_write(self, vault_id: str, fn: Callable[[VaultTx], Awaitable[T]]) -> T:
        async def body(db: aiosqlite.Connection) -> T:
            async with db.execute(
                "SELECT 1 FROM vaults WHERE id=? AND deleted=0", (vault_id,)
            ) as cur:
                if await cur.fetchone() is None:
                    raise VaultGone(vault_id)
            return await fn(_SqliteVaultTx(db, vault_id))

        return await self._write(body)

    # -- chunks ---------------------------------------------------------------------------

    async def missing_chunks(self, vault_id: str, hashes: Sequence[str]) -> list[str]:
        return await _missing_chunks(self._r, vault_id, hashes)

    async def add_chunk(self, vault_id: str, hash: str, size: int, ts: float) -> bool:
        async def fn(db: aiosqlite.Connection) -> bool:
            async with db.execute(
                "INSERT OR IGNORE INTO chunks (vault_id, hash, size, ts) VALUES (?,?,?,?)",
                (vault_id, hash, size, ts),
            ) as cur:
                return cur.rowcount == 1

        return await self._write(fn)

    async def chunk_size(self, vault_id: str, hash: str) -> int | None:
        row = await self._fetchone(
            "SELECT size FROM chunks WHERE vault_id=? AND hash=?", (vault_id, hash)
        )
        return row[0] if row else None

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

    async def children(
        self, vault_id: str, parent_id: str, after_name: str | None, limit: int
    ) -> list[Node]:
        rows = await self._fetchall(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND parent=? "
            f"AND seq_to={CURRENT} AND deleted=0 AND name > ? ORDER BY name LIMIT ?",
            (vault_id, parent_id, after_name or "", limit),
        )
        return [_node(r) for r in rows]

    async def list_tree(
        self, vault_id: str, at: int, after_id: str | None, limit: int
    ) -> list[Node]:
        rows = await self._fetchall(
            f"SELECT {_NODE_COLS} FROM nodes WHERE vault_id=? AND id > ? "
            "AND seq_from <= ? AND seq_to > ? AND deleted=0 ORDER BY id LIMIT ?",
            (vault_id, after_id or "", at, at, limit),
        )
        return [_node(r) for r in rows]

    async def version(self, vault_id: str, node_id: str, rev: int) -> VersionRecord | None:
        row = await self._fetchone(
            "SELECT rev, size, mtime_ns, chunks, ts, device, username FROM versions "
            "WHERE vault_id=? AND node_id=? AND rev=?",
            (vault_id, node_id, rev),
        )
        return _version(node_id, row) if row else None

    async def versions(self, vault_id: str, node_id: str) -> list[VersionRecord]:
        rows = await self._fetchall(
            "SELECT rev, size, mtime_ns, chunks, ts, device, username FROM versions "
            "WHERE vault_id=? AND node_id=? ORDER BY rev DESC",
            (vault_id, node_id),
        )
        return [_version(node_id, r) for r in rows]

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

    # -- maintenance ----------------------------------------------------------------------

    async def prune(self, events_before_ts: float, history_before_ts: float) -> int:
        async def fn(db: aiosqlite.Connection) -> int:
            async with db.execute("DELETE FROM events WHERE ts < ?", (events_before_ts,)) as cur:
                dropped = cur.rowcount
            # Raise each vault's floor to the newest seq_to we are about to forget, so a
            # listing at an older seq is refused instead of silently missing rows.
            await db.execute(
                "UPDATE vaults SET history_floor = MAX(history_floor, ("
                f"  SELECT MAX(seq_to) FROM nodes WHERE nodes.vault_id = vaults.id "
                f"  AND seq_to != {CURRENT} AND ts_to < ?)) "
                f"WHERE EXISTS (SELECT 1 FROM nodes WHERE nodes.vault_id = vaults.id "
                f"  AND seq_to != {CURRENT} AND ts_to < ?)",
                (history_before_ts, history_before_ts),
            )
            await db.execute(
                f"DELETE FROM nodes WHERE seq_to != {CURRENT} AND ts_to < ?",
                (history_before_ts,),
            )
            await db.execute("DELETE FROM sessions WHERE expires_at < strftime('%s','now')")
            return dropped

        return await self._write(fn)
