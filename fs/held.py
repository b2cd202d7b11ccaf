"""Held deletes: what this mount deleted that the server holds for the vault owner.

When one device deletes many files (``rm -rf``, a checkout, a client bug), the server's
mass-delete guard (docs/conflicts.md, "Held mass deletes") holds the deletes: other
devices keep the files until the vault owner confirms. On the mount that deleted them
they stay deleted: ``rm -rf`` must finish and the tree must stay gone, also after an
unmount, a restart or a re-list, and while offline. So held deletes are state of this
mount, kept in the mirror next to the journal (``Tree.held``, persisted with the mirror's
transactions): node id → the hold, the node's last known server state, the path it had,
and why it is hidden:

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

import time
from collections.abc import Callable
from dataclasses import dataclass

from gobi.protocol import HoldInfo, Node

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


def _row(node_id: str, r: tuple) -> HeldRow:
    # r: (hold, parent, name, kind, path, origin, state JSON, ts) as the mirror keeps it
    return HeldRow(node_id, r[0], r[1], r[2], r[3], r[4], r[5], Node.model_validate_json(r[6]))


class HeldDeletes:
    """``visible_path(node_id)``: the mount-relative path of a directory the mirror shows
    (None when it does not), to name held nodes by where they were."""

    def __init__(self, tree, device: str,
                 visible_path: Callable[[str], str | None] = lambda node_id: None):
        self.tree = tree
        self.rows: dict[str, tuple] = tree.held          # node id -> row (the mirror's)
        self.infos: dict[str, tuple] = tree.holds        # hold id -> (info JSON, ts)
        self.device = device
        self.visible_path = visible_path
        self.returned: list[dict] = []      # recent returns, newest last (status)
        # Indexes over the mirror's rows, kept in step by _set (rebuilt at start).
        self._by_parent: dict[str, set[str]] = {}
        self._by_hold: dict[str, set[str]] = {}
        self._count = 0
        for node_id, r in self.rows.items():
            self._index(node_id, r)

    def _index(self, node_id: str, r: tuple) -> None:
        if r[1] is not None:
            self._by_parent.setdefault(r[1], set()).add(node_id)
        self._by_hold.setdefault(r[0], set()).add(node_id)
        if r[5] != "inside":
            self._count += 1

    def _unindex(self, node_id: str, r: tuple) -> None:
        if r[1] is not None:
            self._by_parent.get(r[1], set()).discard(node_id)
        self._by_hold.get(r[0], set()).discard(node_id)
        if r[5] != "inside":
            self._count -= 1

    def _set(self, node_id: str, r: tuple | None) -> None:
        with self.tree.tx():
            old = self.rows.get(node_id)
            self.tree.set_held("held", node_id, r)
            self._reindex(node_id, r, old)
            self.tree._undo.append((self._reindex, node_id, old, r))   # rolled back with the rows

    def _reindex(self, node_id: str, new: tuple | None, old: tuple | None) -> None:
        if old is not None:
            self._unindex(node_id, old)
        if new is not None:
            self._index(node_id, new)

    # -- reads --------------------------------------------------------------------------------

    def has(self, node_id: str | None) -> bool:
        return node_id is not None and node_id in self.rows

    def get(self, node_id: str) -> HeldRow | None:
        r = self.rows.get(node_id)
        return _row(node_id, r) if r else None

    def covers(self, node: Node) -> bool:
        """Would this server state be hidden here (the node, or its parent, is held)?"""
        return self.has(node.id) or self.has(node.parent)

    def count(self) -> int:
        """Deletes of this mount held (``inside`` rows not counted: they are not ours)."""
        return self._count

    def in_dir(self, parent_id: str) -> list[HeldRow]:
        rows = [_row(n, self.rows[n]) for n in self._by_parent.get(parent_id, ())]
        return sorted((r for r in rows if r.origin != "inside"), key=lambda r: r.name)

    def hold_ids(self) -> list[str]:
        return sorted(h for h, nodes in self._by_hold.items() if nodes)

    def hold(self, hold_id: str) -> HoldInfo | None:
        r = self.infos.get(hold_id)
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
        self._set(node.id, (hold_id, node.parent, node.name, node.kind.value, path, origin,
                            node.model_dump_json(), time.time()))

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
        if node_id in self.rows:
            self._set(node_id, None)

    def note_hold(self, info: HoldInfo) -> bool:
        """A hold's newest state. Kept when it is this device's or holds rows here.
        Returns True when it is settled and rows of it are waiting to come back."""
        mine = info.device == self.device
        rows = bool(self._by_hold.get(info.id))
        if info.state != "pending" and not rows:
            if info.id in self.infos:
                self.tree.set_held("holds", info.id, None)
            return False
        if mine or rows:
            self.tree.set_held("holds", info.id, (info.model_dump_json(), time.time()))
        return info.state != "pending" and rows

    def rows_of(self, hold_id: str) -> list[HeldRow]:
        """Every row of a hold, parents before children."""
        rows = [_row(n, self.rows[n]) for n in self._by_hold.get(hold_id, ())]
        paths = {r.node: self.path(r) for r in rows}
        rows = [HeldRow(r.node, r.hold, r.parent, r.name, r.kind, paths[r.node], r.origin, r.state)
                for r in rows]
        rows.sort(key=lambda r: r.path.count("/"))
        return rows

    def take(self, hold_id: str) -> list[HeldRow]:
        """Every row of a settled hold, removed, parents before children."""
        rows = self.rows_of(hold_id)
        with self.tree.tx():
            for r in rows:
                self._set(r.node, None)
        return rows

    def returned_back(self, info: HoldInfo, rows: list[HeldRow], shown: int) -> dict:
        """Remember for ``gobi status`` that a settled hold's files came back here."""
        ids = {r.node for r in rows}
        tops = sorted(r.path for r in rows if r.parent not in ids)
        entry = {"hold": info.id, "state": info.state, "files": sum(r.kind != "dir" for r in rows),
                 "nodes": shown, "paths": tops[:SAMPLE], "at": time.time()}
        self.returned.append(entry)
        del self.returned[:-RETURNED_KEPT]
        if info.id in self.infos:
            self.tree.set_held("holds", info.id, None)
        return entry

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict:
        """``held_deletes``: this mount's deletes the server holds; ``holds``: per hold, its
        state, files, when it expires and some of its paths; ``returned``: holds rejected
        or expired (or confirmed with changed files) whose files came back here."""
        holds = []
        for hold_id in self.hold_ids():
            ours = [_row(n, self.rows[n]) for n in self._by_hold[hold_id]]
            ours = [r for r in ours if r.origin != "inside"]
            if not ours:
                continue
            info = self.hold(hold_id)
            tops = sorted(self.path(r) for r in ours if r.parent not in self.rows)[:SAMPLE]
            holds.append({"id": hold_id, "state": info.state if info else "pending",
                          "deletes": len(ours), "files": info.files if info else None,
                          "expires": info.expires if info else None, "paths": tops})
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
