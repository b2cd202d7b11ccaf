"""The durable outbound queue: every local change the server has not acknowledged yet.

Entries live in the mirror's SQLite database (table ``journal``) and are appended in the
same transaction as the mirror change they describe, so the mirror and the queue never
disagree, whatever crashes. ``durable()`` forces the WAL to disk; ``fsync(2)`` on the
mount calls it, so a kill -9 (or a power cut) after fsync loses nothing: the next mount
replays the queue.

Ops, each naming a node by its (client-chosen or server) id:

``create``  {parent, name, kind, mode, mtime_ns, target}  (ref = parent)
``move``    {parent, name, replace}                      (ref = new parent)
``attr``    {fields}  which of mode / mtime changed (default both): their current values are sent
``content`` {}    the node's current staged content is chunked, uploaded, committed
``delete``  {}

The uploader (``gobi.fs.sync``) replays them in order (``content`` may wait for a file
to be closed or quiet). Entries can be dropped before they are sent: a node created and
deleted before upload never reaches the server ("coalescing"). An entry being sent is
*in flight* and is never dropped or rewritten.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    node TEXT NOT NULL,
    ref TEXT,
    args TEXT NOT NULL DEFAULT '{}',
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_node ON journal(node);
CREATE INDEX IF NOT EXISTS journal_ref ON journal(ref);
"""


@dataclass(frozen=True)
class Entry:
    seq: int
    op: str
    node: str
    ref: str | None
    args: dict
    ts: float


def _entry(row: tuple) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])


class Journal:
    def __init__(self, db: sqlite3.Connection):
        self.db = db
        db.executescript(SCHEMA)
        self.inflight: set[int] = set()
        # Called after every append (the uploader wakes: not every change passes through
        # the FUSE handlers that poke it, e.g. chmod and utime).
        self.on_append: Callable[[], None] | None = None
        # Kept in memory: the uploader and `gobi status` ask often, and count(*) is a scan.
        self._count = db.execute("SELECT count(*) FROM journal").fetchone()[0]

    def append(self, op: str, node: str, args: dict | None = None, ref: str | None = None) -> int:
        cur = self.db.execute(
            "INSERT INTO journal(op, node, ref, args, ts) VALUES (?, ?, ?, ?, ?)",
            (op, node, ref, json.dumps(args or {}), time.time()),
        )
        self._count += 1
        if self.on_append is not None:
            self.on_append()
        return cur.lastrowid

    def pending(self, node: str) -> list[Entry]:
        """Entries of a node that are not in flight, oldest first."""
        rows = self.db.execute(
            "SELECT seq, op, node, ref, args, ts FROM journal WHERE node = ? ORDER BY seq", (node,)
        ).fetchall()
        return [e for e in map(_entry, rows) if e.seq not in self.inflight]

    def has_entries(self, node: str) -> bool:
        return self.db.execute("SELECT 1 FROM journal WHERE node = ? LIMIT 1", (node,)).fetchone() is not None

    def has_pending(self, node: str, op: str) -> bool:
        return any(e.op == op for e in self.pending(node))

    def referenced(self, node: str) -> bool:
        return self.db.execute("SELECT 1 FROM journal WHERE ref = ? LIMIT 1", (node,)).fetchone() is not None

    def add_attr(self, node: str, fields: list[str]) -> None:
        """Queue a setattr of ``fields`` (``mode``, ``mtime``), merged into a pending one."""
        for e in self.pending(node):
            if e.op == "attr":
                have = e.args.get("fields") or ["mode", "mtime"]
                merged = sorted(set(have) | set(fields))
                if merged != sorted(have):
                    self.db.execute("UPDATE journal SET args = ? WHERE seq = ?",
                                    (json.dumps({"fields": merged}), e.seq))
                return
        self.append("attr", node, {"fields": sorted(fields)})

    def remap(self, old: str, new: str) -> None:
        """A node id replaced by the server's (two directories of one name merged)."""
        self.db.execute("UPDATE journal SET node = ? WHERE node = ?", (new, old))
        self.db.execute("UPDATE journal SET ref = ? WHERE ref = ?", (new, old))
        rows = self.db.execute("SELECT seq, args FROM journal WHERE args LIKE ?",
                               (f"%{old}%",)).fetchall()
        for seq, raw in rows:
            args = json.loads(raw)
            changed = False
            for key in ("parent", "from"):
                if args.get(key) == old:
                    args[key] = new
                    changed = True
            if changed:
                self.db.execute("UPDATE journal SET args = ? WHERE seq = ?", (json.dumps(args), seq))

    def last_seq(self) -> int:
        row = self.db.execute("SELECT max(seq) FROM journal").fetchone()
        return row[0] or 0

    def drop(self, entries: list[Entry]) -> None:
        for e in entries:
            assert e.seq not in self.inflight
            self._count -= self.db.execute("DELETE FROM journal WHERE seq = ?", (e.seq,)).rowcount

    def done(self, seq: int) -> None:
        self._count -= self.db.execute("DELETE FROM journal WHERE seq = ?", (seq,)).rowcount
        self.inflight.discard(seq)

    def entries(self, after: int = 0, limit: int = 200) -> list[Entry]:
        rows = self.db.execute(
            "SELECT seq, op, node, ref, args, ts FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [_entry(r) for r in rows]

    def count(self) -> int:
        return self._count

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT op, count(*) FROM journal GROUP BY op").fetchall())

    def oldest_ts(self) -> float | None:
        row = self.db.execute("SELECT ts FROM journal ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row else None
