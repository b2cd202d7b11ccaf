"""Held deletes: what this mount deleted that the server holds for the vault owner.

When one device deletes many files (``rm -rf``, a checkout, a client bug), the server's
mass-delete guard (docs/conflicts.md, "Held mass deletes") holds the deletes: other
devices keep the files until the vault owner confirms. On the mount that deleted them
they stay deleted: ``rm -rf`` must finish and the tree must stay gone, also after an
unmount, a restart or a re-list, and while offline. So held deletes are state of this
mount, kept in the mirror's database next to the journal (table ``held``): node id →
the hold, the node's last known server state, the path it had, and why it is hidden:

``deleted``  our delete, answered ``delete_held`` (the journal entry is done);
``pulled``   our delete that the server had applied before the hold opened and pulled
             back into it: its ``create`` event carries the hold of this device;
``inside``   a node another device created or moved into a hidden directory: not ours
             to hide, but its directory is gone here (it shows again if it moves out).

The applier asks ``absorb(node)`` before it shows any server state: a hidden node's new
state is recorded here instead (a rename, an edit by another device), a delete forgets
it. A name under a hidden node is free on this mount: a new file there is a new node
(the server moves the held one aside, ``server/holds.py``).

When the hold is settled (a ``hold`` event, or ``check`` finding it settled after a
restart): *confirmed*: the deletes arrive as ``delete`` events first and forget their
rows; what is left was skipped (changed meanwhile) and comes back. *Rejected* or
*expired*: everything comes back. Returning is the applier's job (``Applier.settle``,
it needs the server); this module hands out the rows (``take``) and remembers what came
back for ``gobi status`` (``returned``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from gobi.protocol import HoldInfo, Node

SCHEMA = """
CREATE TABLE IF NOT EXISTS held(
    node TEXT PRIMARY KEY,
    hold TEXT NOT NULL,
    parent TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    origin TEXT NOT NULL,          -- deleted | pulled | inside
    state TEXT NOT NULL,           -- the node's last known server state (JSON)
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS held_parent ON held(parent);
CREATE INDEX IF NOT EXISTS held_hold ON held(hold);
CREATE TABLE IF NOT EXISTS holds(
    id TEXT PRIMARY KEY,
    info TEXT NOT NULL,            -- the newest HoldInfo seen (JSON)
    ts REAL NOT NULL
);
"""

#: Settled holds whose return is listed in ``gobi status``.
RETURNED_KEPT = 5
#: Paths shown per hold in ``gobi status`` and the xattr.
SAMPLE = 5


@dataclass(frozen=True)
class HeldRow:
    node: str
    hold: str
    parent: str | None
    name: str
    kind: str
    path: str
    origin: str
    state: Node


def _row(r: tuple) -> HeldRow:
    return HeldRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], Node.model_validate_json(r[7]))


_COLS = "node, hold, parent, name, kind, path, origin, state"


class HeldDeletes:
    """``visible_path(node_id)``: the mount-relative path of a directory the mirror shows
    (None when it does not), to name held nodes by where they were."""

    def __init__(self, db: sqlite3.Connection, device: str,
                 visible_path: Callable[[str], str | None] = lambda node_id: None):
        self.db = db
        self.device = device
        self.visible_path = visible_path
        db.executescript(SCHEMA)
        self.returned: list[dict] = []      # recent returns, newest last (status)
        self._count = db.execute("SELECT count(*) FROM held WHERE origin != 'inside'").fetchone()[0]

    # -- reads --------------------------------------------------------------------------------

    def has(self, node_id: str | None) -> bool:
        if node_id is None:
            return False
        return self.db.execute("SELECT 1 FROM held WHERE node = ?", (node_id,)).fetchone() is not None

    def get(self, node_id: str) -> HeldRow | None:
        r = self.db.execute(f"SELECT {_COLS} FROM held WHERE node = ?", (node_id,)).fetchone()
        return _row(r) if r else None

    def covers(self, node: Node) -> bool:
        """Would this server state be hidden here (the node, or its parent, is held)?"""
        return self.has(node.id) or self.has(node.parent)

    def count(self) -> int:
        """Deletes of this mount held (``inside`` rows not counted: they are not ours)."""
        return self._count

    def in_dir(self, parent_id: str) -> list[HeldRow]:
        rows = self.db.execute(
            f"SELECT {_COLS} FROM held WHERE parent = ? AND origin != 'inside' ORDER BY name",
            (parent_id,)).fetchall()
        return [_row(r) for r in rows]

    def hold_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT hold FROM held")]

    def hold(self, hold_id: str) -> HoldInfo | None:
        r = self.db.execute("SELECT info FROM holds WHERE id = ?", (hold_id,)).fetchone()
        return HoldInfo.model_validate_json(r[0]) if r else None

    def path_of(self, node_id: str | None) -> str | None:
        row = self.get(node_id) if node_id else None
        return self.path(row) if row else None

    def path(self, row: HeldRow) -> str:
        """Where a held node was: its hidden parents' names, then the directory the mirror
        shows (the path noted when it was hidden if neither is known any more)."""
        parts = [row.name]
        cur = row
        for _ in range(4096):
            parent = self.get(cur.parent) if cur.parent else None
            if parent is None:
                break
            parts.append(parent.name)
            cur = parent
        if cur.parent is None or cur.parent == "root":
            return "/".join(reversed(parts))
        base = self.visible_path(cur.parent)
        if base is None:
            return row.path
        return "/".join([base, *reversed(parts)]) if base else "/".join(reversed(parts))

    # -- changes (inside the caller's mirror transaction) ----------------------------------------

    def hide(self, node: Node, hold_id: str, origin: str, path: str) -> None:
        """Keep ``node`` out of the mirror: held by ``hold_id`` (``path``: where it is now,
        as far as the mount knows)."""
        known = self.get(node.id)
        self.db.execute(
            f"INSERT OR REPLACE INTO held({_COLS}, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (node.id, hold_id, node.parent, node.name, node.kind.value, path, origin,
             node.model_dump_json(), time.time()))
        if (known is None or known.origin == "inside") and origin != "inside":
            self._count += 1

    def absorb(self, node: Node) -> bool:
        """A server state of ``node`` arrived. If the node is hidden here (or lies in a
        hidden directory), record it and return True: the caller must not show it. A
        delete forgets the row (and returns False: nothing to show either way)."""
        row = self.get(node.id)
        if row is not None and node.rev < row.state.rev:
            return True         # older than what we hold (e.g. our own delete's late echo)
        if node.deleted:
            if row is not None:
                self.forget(node.id)
            return False
        parent = self.get(node.parent) if node.parent else None
        if row is not None:
            if row.origin == "inside" and parent is None:
                self.forget(node.id)        # moved out of the hidden directory: show it
                return False
            path = f"{parent.path}/{node.name}" if parent else row.path
            self.hide(node, row.hold, row.origin, path)
            return True
        if parent is not None:
            self.hide(node, parent.hold, "inside", f"{parent.path}/{node.name}")
            return True
        return False

    def forget(self, node_id: str) -> None:
        row = self.get(node_id)
        if row is None:
            return
        self.db.execute("DELETE FROM held WHERE node = ?", (node_id,))
        if row.origin != "inside":
            self._count -= 1

    def note_hold(self, info: HoldInfo) -> bool:
        """A hold's newest state. Kept when it is this device's or holds rows here.
        Returns True when it is settled and rows of it are waiting to come back."""
        mine = info.device == self.device
        rows = self.db.execute("SELECT 1 FROM held WHERE hold = ? LIMIT 1", (info.id,)).fetchone()
        if info.state != "pending" and rows is None:
            self.db.execute("DELETE FROM holds WHERE id = ?", (info.id,))
            return False
        if mine or rows:
            self.db.execute("INSERT OR REPLACE INTO holds VALUES (?, ?, ?)",
                            (info.id, info.model_dump_json(), time.time()))
        return info.state != "pending" and rows is not None

    def rows_of(self, hold_id: str) -> list[HeldRow]:
        """Every row of a hold, parents before children."""
        rows = [_row(r) for r in self.db.execute(
            f"SELECT {_COLS} FROM held WHERE hold = ?", (hold_id,)).fetchall()]
        paths = {r.node: self.path(r) for r in rows}
        rows = [HeldRow(r.node, r.hold, r.parent, r.name, r.kind, paths[r.node], r.origin, r.state)
                for r in rows]
        rows.sort(key=lambda r: r.path.count("/"))
        return rows

    def take(self, hold_id: str) -> list[HeldRow]:
        """Every row of a settled hold, removed, parents before children."""
        rows = self.rows_of(hold_id)
        self.db.execute("DELETE FROM held WHERE hold = ?", (hold_id,))
        self._count -= sum(r.origin != "inside" for r in rows)
        return rows

    def returned_back(self, info: HoldInfo, rows: list[HeldRow], shown: int) -> dict:
        """Remember for ``gobi status`` that a settled hold's files came back here."""
        ids = {r.node for r in rows}
        tops = sorted(r.path for r in rows if r.parent not in ids)
        entry = {"hold": info.id, "state": info.state, "files": sum(r.kind != "dir" for r in rows),
                 "nodes": shown, "paths": tops[:SAMPLE], "at": time.time()}
        self.returned.append(entry)
        del self.returned[:-RETURNED_KEPT]
        self.db.execute("DELETE FROM holds WHERE id = ?", (info.id,))
        return entry

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict:
        """``held_deletes``: this mount's deletes the server holds; ``holds``: per hold, its
        state, files, when it expires and some of its paths; ``returned``: holds rejected
        or expired (or confirmed with changed files) whose files came back here."""
        holds = []
        for hold_id, n in self.db.execute(
                "SELECT hold, count(*) FROM held WHERE origin != 'inside' GROUP BY hold ORDER BY hold"):
            info = self.hold(hold_id)
            paths = sorted(self.path(_row(r)) for r in self.db.execute(
                f"SELECT {_COLS} FROM held h WHERE h.hold = ? AND h.origin != 'inside' AND NOT "
                "EXISTS (SELECT 1 FROM held p WHERE p.node = h.parent) LIMIT ?", (hold_id, SAMPLE)))
            holds.append({"id": hold_id, "state": info.state if info else "pending",
                          "deletes": n, "files": info.files if info else None,
                          "expires": info.expires if info else None, "paths": paths})
        return {"held_deletes": self._count, "holds": holds, "returned": list(self.returned)}


def hold_of(details: dict) -> HoldInfo | None:
    raw = details.get("hold")
    if not isinstance(raw, dict):
        return None
    try:
        return HoldInfo.model_validate(raw)
    except ValueError:
        return None


__all__ = ["HeldDeletes", "HeldRow", "hold_of"]
