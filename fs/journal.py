"""The durable outbound queue: every local change the server has not acknowledged yet.

Entries live with the mirror (``gobi.fs.tree``): in memory, indexed by node and by
reference, and persisted in the same transaction as the mirror change they describe
(one logged line, ``gobi.fs.mirror_store``), so the mirror and the queue never disagree,
whatever crashes. A kill -9 loses nothing that was acknowledged; ``fsync(2)`` on the
mount makes it survive a power cut too; the next mount replays the queue.

Ops, each naming a node by its (client-chosen or server) id:

``create``  {parent, name, kind, mode, mtime_ns, target, rdev?}  (ref = parent; rdev: devices only)
``move``    {parent, name, replace}                      (ref = new parent)
``attr``    {fields}  which of mode / mtime changed (default both): their current values are sent
``content`` {}    the node's current staged content is chunked, uploaded, committed
``delete``  {}
``link``    {parent, name, of}  a further name of the file ``of`` (ref = parent; ``of`` is
            referenced too: its create goes first and it is not coalesced away)
``refresh`` {of}  read the node's server state again (a linked file's row took this name)

Any entry's ``of`` names another node whose earlier entries it waits for, and whose later
entries wait for it (``gobi.fs.sync``); only a ``link``'s makes that node referenced.

The uploader (``gobi.fs.sync``) replays them in order (``content`` may wait for a file
to be closed or quiet). Entries can be dropped before they are sent: a node created and
deleted before upload never reaches the server ("coalescing"). An entry being sent is
*in flight* and is never dropped or rewritten. An entry that *may have reached* the server
(its answer was lost, or it is left from before this start) is no longer in flight but is
not coalesced away either: a create of it may have made the node there.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    op: str
    node: str
    ref: str | None
    args: dict
    ts: float


def _refs(e: Entry) -> tuple[str, ...]:
    """The nodes an entry needs to exist on the server: its ``ref``, and the file a
    ``link`` names."""
    of = e.args.get("of") if e.op == "link" else None
    if of is not None:
        return (e.ref, of) if e.ref is not None else (of,)
    return (e.ref,) if e.ref is not None else ()


class Journal:
    """The queue, in memory and persisted through the mirror's transactions (``tree.tx``):
    an entry is appended, rewritten or removed in the same transaction as the mirror change
    it belongs to."""

    def __init__(self, tree, rows: dict[int, tuple], max_seq: int):
        self.tree = tree
        self.inflight: set[int] = set()
        # Called after every append (the uploader wakes: not every change passes through
        # the FUSE handlers that poke it, e.g. chmod and utime).
        self.on_append: Callable[[], None] | None = None
        self._entries: dict[int, Entry] = {}
        self._order: list[int] = []                    # seqs appended, in order (with holes)
        self._by_node: dict[str, list[int]] = {}
        self._by_ref: dict[str, int] = {}              # ref -> how many entries name it
        self._ops: dict[str, int] = {}
        for seq in sorted(rows):
            op, node, ref, args, ts = rows[seq]
            self._index(Entry(seq, op, node, ref, args, ts))
        self._next = max_seq + 1
        # Entries that may have reached the server although they were not acknowledged:
        # every entry left from before this start (a crash or kill between sending and
        # the answer), and those whose answer was lost to the link (``lost_answer``).
        self._replayed_upto = max(rows, default=0)
        self._lost_answers: set[int] = set()

    # -- the index (the only code that changes it) ------------------------------------------

    def _index(self, e: Entry) -> None:
        self._entries[e.seq] = e
        order = self._order
        if not order or e.seq > order[-1]:
            order.append(e.seq)
        else:
            i = bisect.bisect_left(order, e.seq)
            if i == len(order) or order[i] != e.seq:      # (a removed seq stays as a hole)
                order.insert(i, e.seq)
        self._by_node.setdefault(e.node, []).append(e.seq)
        self._by_node[e.node].sort()
        for ref in _refs(e):
            self._by_ref[ref] = self._by_ref.get(ref, 0) + 1
        self._ops[e.op] = self._ops.get(e.op, 0) + 1

    def _unindex(self, e: Entry) -> None:
        del self._entries[e.seq]
        seqs = self._by_node[e.node]
        seqs.remove(e.seq)
        if not seqs:
            del self._by_node[e.node]
        for ref in _refs(e):
            left = self._by_ref[ref] - 1
            if left:
                self._by_ref[ref] = left
            else:
                del self._by_ref[ref]
        left = self._ops[e.op] - 1
        if left:
            self._ops[e.op] = left
        else:
            del self._ops[e.op]
        if len(self._order) > 64 and len(self._order) > 2 * len(self._entries):
            self._order = [s for s in self._order if s in self._entries]

    def _put(self, seq: int, new: Entry | None) -> None:
        old = self._entries.get(seq)
        if old is not None:
            self._unindex(old)
        if new is not None:
            self._index(new)
        value = None if new is None else [new.op, new.node, new.ref, new.args, new.ts]
        self.tree._record(["j", seq, value], self._reput, seq, old)

    def _reput(self, seq: int, old: Entry | None) -> None:
        now = self._entries.get(seq)
        if now is not None:
            self._unindex(now)
        if old is not None:
            self._index(old)

    # -- the queue ----------------------------------------------------------------------------

    def append(self, op: str, node: str, args: dict | None = None, ref: str | None = None) -> int:
        with self.tree.tx():
            seq = self._next
            self._next += 1
            self._put(seq, Entry(seq, op, node, ref, dict(args or {}), time.time()))
            self.tree._undo.append((self._unallocate, seq))
        if self.on_append is not None:
            self.on_append()
        return seq

    def _unallocate(self, seq: int) -> None:
        self._next = min(self._next, seq)

    def lost_answer(self, seq: int) -> None:
        """The entry was sent and its answer was lost: it may have been applied."""
        self._lost_answers.add(seq)

    def may_have_reached(self, e: Entry) -> bool:
        """Could an attempt of this entry have reached the server unacknowledged?"""
        return e.seq in self._lost_answers or e.seq <= self._replayed_upto

    def pending(self, node: str) -> list[Entry]:
        """Entries of a node that are not in flight, oldest first."""
        return [self._entries[s] for s in self._by_node.get(node, ()) if s not in self.inflight]

    def has_entries(self, node: str) -> bool:
        return node in self._by_node

    def has_pending(self, node: str, op: str) -> bool:
        return any(e.op == op for e in self.pending(node))

    def referenced(self, node: str) -> bool:
        return node in self._by_ref

    def references(self, node: str) -> int:
        """How many entries need ``node`` on the server (as their ``ref`` or a link's ``of``)."""
        return self._by_ref.get(node, 0)

    def all_pending(self, node: str) -> bool:
        """Is none of the node's entries in flight?"""
        return not any(s in self.inflight for s in self._by_node.get(node, ()))

    def add_attr(self, node: str, fields: list[str]) -> None:
        """Queue a setattr of ``fields`` (``mode``, ``mtime``), merged into a pending one."""
        for e in self.pending(node):
            if e.op == "attr":
                have = e.args.get("fields") or ["mode", "mtime"]
                merged = sorted(set(have) | set(fields))
                if merged != sorted(have):
                    with self.tree.tx():
                        self._put(e.seq, dataclasses.replace(e, args={"fields": merged}))
                return
        self.append("attr", node, {"fields": sorted(fields)})

    def rewrite(self, e: Entry, args: dict) -> None:
        """A pending entry's arguments replaced (it keeps its place in the queue)."""
        with self.tree.tx():
            assert e.seq not in self.inflight
            self._put(e.seq, dataclasses.replace(e, args=args))

    def remap(self, old: str, new: str) -> None:
        """A node id replaced by the server's (two directories of one name merged)."""
        with self.tree.tx():
            for e in list(self._entries.values()):
                args = dict(e.args)
                changed = False
                for key in ("parent", "from", "of"):
                    if args.get(key) == old:
                        args[key] = new
                        changed = True
                if e.node == old or e.ref == old or changed:
                    self._put(e.seq, dataclasses.replace(
                        e, node=new if e.node == old else e.node,
                        ref=new if e.ref == old else e.ref, args=args))

    def last_seq(self) -> int:
        return self._order[-1] if self._entries else 0

    def drop(self, entries: list[Entry]) -> None:
        with self.tree.tx():
            for e in entries:
                assert e.seq not in self.inflight
                if e.seq in self._entries:
                    self._put(e.seq, None)

    def done(self, seq: int) -> None:
        with self.tree.tx():
            if seq in self._entries:
                self._put(seq, None)
        self.inflight.discard(seq)
        self._lost_answers.discard(seq)

    def entries(self, after: int = 0, limit: int = 200) -> list[Entry]:
        out = []
        i = bisect.bisect_right(self._order, after)
        order, entries = self._order, self._entries
        while i < len(order) and len(out) < limit:
            e = entries.get(order[i])
            if e is not None:
                out.append(e)
            i += 1
        return out

    def count(self) -> int:
        return len(self._entries)

    def count_upto(self, seq: int) -> int:
        """Entries at or before ``seq`` (``gobi sync`` barriers): all of them but the few
        appended since (counted from the end of the order, not over the whole queue)."""
        order, entries = self._order, self._entries
        later = sum(1 for s in order[bisect.bisect_right(order, seq):] if s in entries)
        return len(entries) - later

    def counts(self) -> dict[str, int]:
        return dict(self._ops)

    def oldest_ts(self) -> float | None:
        first = self.entries(0, 1)
        return first[0].ts if first else None
