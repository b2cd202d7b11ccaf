"""Remote changes into the mirror: the catch-up queue, applied in seq order.

The live stream (``gobi.fs.events``) and REST catch-ups put events into one queue; the
``Applier`` drains it in order (several queued events in one SQLite transaction), so a
long replay and the live events behind it are applied exactly once each, in seq order.
A ``CaughtUp`` marker that reaches the front marks the initial sync complete (``gobi
status``); a ``Relist`` marker (cursor expired) re-lists the tree at one seq and reconciles.
A gap in seqs (never expected from one socket) is filled over REST before going on.

What applying one node's state means — local changes win locally, our deletes are not
undone by older states, held deletes stay hidden, the kernel is told — is
``gobi.fs.states``, shared with the uploader; this module adds the queue's rules:

- **Own echoes** (events caused by this mount's commits) are recognised by revision: a
  node whose mirror row is already at that rev (the acknowledgement came first) or that
  is still held by the upload that caused it (the event came first) is skipped, so our
  own writes never cause refetches or kernel invalidations. Events of this device with a
  newer rev than the mirror (the server's strategy renamed, revived or copied something
  on our behalf) are applied like any other.
- **Live structural changes are made through the mount** (``Kernel.materialise``) so
  inotify watchers hear of them; bulk batches and everything else are applied directly.
- **Held deletes** (``gobi.fs.held``): the ``create`` events of our own deletes that the
  server pulled back into a hold (they carry the hold) are recorded, not shown. When a
  hold is settled, what the server kept comes back (``settle``): after a reject or expiry
  all of it, after a confirm what was changed meanwhile; ``gobi status`` and the log say so.

Errors: ``RemoteError`` from REST fills and re-lists propagate to the caller; a bug in
applying one event is logged and that event skipped, never taking the mount down.
"""

from __future__ import annotations

import logging
import time

import trio

from gobi.protocol import (
    ROOT_ID,
    ConflictInfo,
    ErrorCode,
    Event,
    EventType,
    HoldInfo,
    Node,
)

from .events import CaughtUp, Relist
from .logs import oplog
from .notify import Change
from .remote import ApiError, Offline, Remote, RemoteError
from .states import ServerStates
from .tree import KIND_BITS, ROOT_INO, Tree
from .vfs import Link

log = logging.getLogger(__name__)

APPLY_BATCH = 500          # queued events applied in one transaction
BULK = 50                  # a batch this large is "bulk": no per-event materialisation


class Applier:
    def __init__(self, tree: Tree, states: ServerStates, remote: Remote, link: Link, device: str):
        self.tree = tree
        self.journal = tree.journal
        self.states = states
        self.kernel = states.kernel
        self.remote = remote
        self.link = link
        self.device = device
        self.echoes = 0
        self.applied_events = 0
        self.initial_sync = "complete" if tree.meta("initial_sync_at") else "pending"
        self.initial_sync_at = float(tree.meta("initial_sync_at") or 0) or None
        self.caught_up_seq = 0
        self.open_conflicts: dict[str, ConflictInfo] = {}
        self.settings_changed = 0
        self.relists = 0
        self.vault_deleted = False
        self.applied = trio.Event()     # set after every applied batch (tests, status)
        # Held while a batch is applied; ``gobi verify`` holds it to compare the mirror with
        # the server's tree at one seq while no remote change moves the mirror.
        self.lock = trio.Lock()
        self._check_holds = True        # ask the server about our holds (start, re-list)

    # -- state ------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self.states.last_seq

    def status(self) -> dict:
        states = self.states
        return {
            "initial_sync": self.initial_sync,
            "initial_sync_at": self.initial_sync_at,
            "applied_events": self.applied_events,
            "echoes_skipped": self.echoes,
            "relists": self.relists,
            "deferred": len(states.deferred),
            "open_conflicts": [{"id": c.id, "path": c.path, "case": c.case, "message": c.message}
                               for c in list(self.open_conflicts.values())[-10:]],
            "open_conflict_count": len(self.open_conflicts),
            "pending_holds": [{"id": h.id, "files": h.files, "device": h.device}
                              for h in states.holds.values() if h.state == "pending"],
            "vault_deleted": self.vault_deleted,
            **states.hidden.status(),
        }

    # -- the queue --------------------------------------------------------------------------

    async def run(self, receive: trio.MemoryReceiveChannel, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self.settle()
        async for first in receive:
            batch = [first]
            while len(batch) < APPLY_BATCH:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                async with self.lock:
                    await self._apply_batch(batch)
            except Exception:
                # Never lose the stream over a bug: log it; the reconciliation and the next
                # re-list put things right.
                log.exception("applying remote changes failed")
            if self.states.to_settle or self._check_holds:
                await self.settle()
            self.applied.set()
            self.applied = trio.Event()

    async def _apply_batch(self, items: list) -> None:
        events = sum(isinstance(i, Event) for i in items)
        bulk = events >= BULK
        if events:
            before = self.applied_events
            try:
                await self._apply_items(items, bulk)
            finally:
                oplog("pull", events=self.applied_events - before, seq=self.last_seq,
                      bulk=bulk or None)
        else:
            await self._apply_items(items, bulk)

    async def _apply_items(self, items: list, bulk: bool) -> None:
        run: list[Event] = []
        for item in items:
            if isinstance(item, Event):
                run.append(item)
                continue
            await self._apply_events(run, bulk)
            run = []
            if isinstance(item, CaughtUp):
                self._caught_up(item.seq)
            elif isinstance(item, Relist):
                try:
                    item.at = await self.relist()
                finally:
                    item.done.set()
        await self._apply_events(run, bulk)

    def _caught_up(self, seq: int) -> None:
        self.caught_up_seq = seq
        if self.initial_sync != "complete" and self.last_seq >= seq:
            self.initial_sync = "complete"
            self.initial_sync_at = time.time()
            with self.tree.tx():
                self.tree.set_meta("initial_sync_at", str(self.initial_sync_at))
            log.info("initial sync complete at seq %s", seq)

    async def _apply_events(self, events: list[Event], bulk: bool) -> None:
        i = 0
        while i < len(events):
            last = self.last_seq
            ev = events[i]
            if ev.seq <= last:
                i += 1
                continue
            if ev.seq > last + 1:
                # A hole: fetch what is missing before applying anything past it.
                await self.fill_gap(last, ev.seq)
                if self.last_seq == last:
                    log.error("events %d..%d cannot be had; going on without them", last + 1, ev.seq - 1)
                    with self.tree.tx():
                        self.tree.set_meta("last_seq", str(ev.seq - 1))
                continue
            change = None if bulk else self._materialisable(ev)
            if change is not None:
                # Live structural change: made through the mount so watchers hear of it.
                if not await self.kernel.materialise(change):
                    with self.tree.tx():
                        self.apply_event(ev)
                with self.tree.tx():
                    self.tree.set_meta("last_seq", str(ev.seq))
                self.applied_events += 1
                i += 1
                continue
            j = i
            with self.tree.tx():
                while j < len(events) and events[j].seq == self.last_seq + 1:
                    if j > i and not bulk and self._materialisable(events[j]) is not None:
                        break
                    self.apply_event(events[j], bulk)
                    self.tree.set_meta("last_seq", str(events[j].seq))
                    j += 1
            self.applied_events += j - i
            i = j
        if events and self.initial_sync != "complete" and self.caught_up_seq and self.last_seq >= self.caught_up_seq:
            self._caught_up(self.caught_up_seq)
        if events:
            self.states.passed(self.last_seq)

    def _materialisable(self, ev: Event) -> Change | None:
        """The change an event makes, when it is a simple create, move or delete that can
        be made through the mount (``Kernel.materialise``); None otherwise (applied
        directly: echoes, held nodes, unknown parents, clashes, non-empty directories,
        held deletes)."""
        node = ev.node
        if node is None or node.id == ROOT_ID or not self.kernel.can_materialise():
            return None
        states = self.states
        if ev.hold is not None or states.hidden.covers(node):
            return None
        if ev.type not in (EventType.CREATE, EventType.MOVE, EventType.DELETE):
            return None
        e = self.tree.by_id(node.id)
        if e is not None and node.rev <= e.rev:
            return None
        if states.held(node.id, e):
            return None
        if node.inode is not None or (e is not None and (e.link or self.tree.aliases(e.ino))):
            # A name of a hard-linked file: the thread cannot link(2) through the mount
            # what it has no path for, nor does the kernel need a new inode for it.
            return None

        def apply() -> bool:
            return states.apply_node(node) == "applied"

        if node.deleted:
            if e is None or e.parent is None or (e.is_dir and self.tree.has_children(e.ino)):
                return None
            path = self.tree.path_of(e)
            if not path.startswith("/"):
                return None
            return Change("rmdir" if e.is_dir else "unlink", path, e.parent, e.name, apply)
        parent = self.tree.by_id(node.parent or ROOT_ID)
        if parent is None or not parent.is_dir or (parent.parent is None and parent.ino != ROOT_INO):
            return None
        if self.tree.child(parent.ino, node.name) is not None:
            return None
        parent_path = self.tree.path_of(parent) if parent.ino != ROOT_INO else ""
        if parent.ino != ROOT_INO and not parent_path.startswith("/"):
            return None
        new_path = f"{parent_path}/{node.name}"
        if e is None:
            kind = {"file": "create", "dir": "mkdir", "symlink": "symlink"}.get(node.kind.value, "mknod")
            mode = node.mode | KIND_BITS[node.kind.value] if kind == "mknod" else node.mode
            return Change(kind, new_path, parent.ino, node.name, apply, target=node.target or "",
                          mode=mode, rdev=node.rdev)
        if e.parent is None or (e.parent == parent.ino and e.name == node.name):
            return None
        old_path = self.tree.path_of(e)
        if not old_path.startswith("/"):
            return None
        return Change("rename", old_path, e.parent, e.name, apply, new_path=new_path,
                      new_parent=parent.ino, new_name=node.name)

    async def fill_gap(self, after: int, until: int) -> None:
        log.warning("events %d..%d missing from the stream: fetching them", after + 1, until - 1)
        try:
            async for page in self.remote.events(after):
                with self.tree.tx():
                    for ev in page.events:
                        if ev.seq == self.last_seq + 1:
                            self.apply_event(ev, True)
                            self.tree.set_meta("last_seq", str(ev.seq))
                if self.last_seq >= until - 1:
                    return
        except ApiError as exc:
            if exc.code == ErrorCode.CURSOR_EXPIRED:
                await self.relist()
                return
            raise

    async def catch_up_rest(self) -> int:
        """Apply every event after the mirror's seq fetched over REST (start-up, tests)."""
        if self.tree.meta("listed") is None:
            await self.relist()
            return 0
        n = 0
        try:
            async for page in self.remote.events(self.last_seq):
                await self._apply_events(page.events, len(page.events) >= BULK)
                n += len(page.events)
        except ApiError as exc:
            if exc.code == ErrorCode.CURSOR_EXPIRED:
                await self.relist()
                return n
            raise
        self.link.up()
        return n

    # -- one event --------------------------------------------------------------------------

    def apply_event(self, ev: Event, bulk: bool = False) -> None:
        try:
            if ev.type is EventType.HOLD and ev.hold is not None:
                self.states.note_hold(ev.hold)
                return
            if ev.hold is not None and ev.node is not None and ev.hold.device == self.device \
                    and not ev.node.deleted:
                # One of our deletes, applied before the guard fired and pulled back into
                # the hold: still deleted here (unless the mirror shows it: not ours then).
                e = self.tree.by_id(ev.node.id)
                if e is None or e.parent is None:
                    self.states.hide(ev.node, ev.hold, "pulled")
                    return
            if ev.type is EventType.SETTINGS:
                self.settings_changed += 1
                return
            if ev.type is EventType.VAULT_DELETED:
                self.vault_deleted = True
                return
            if ev.type is EventType.CONFLICT and ev.conflict is not None:
                if ev.conflict.state == "open":
                    self.open_conflicts[ev.conflict.id] = ev.conflict
                else:
                    self.open_conflicts.pop(ev.conflict.id, None)
            if ev.node is None:
                return
            result = self.states.apply_node(ev.node, bulk=bulk)
            if ev.device == self.device and result in ("stale", "deferred"):
                self.echoes += 1
        except Exception:
            log.exception("applying event %s failed", ev.seq)

    # -- whole-tree reconciliation -------------------------------------------------------------

    async def relist(self) -> int:
        """The whole tree at one seq into the mirror (first mount, cursor expired); local
        unsynced changes are kept. Returns the seq listed at."""
        at, nodes = await self.remote.tree()
        self.relists += 1
        by_parent: dict[str | None, list[Node]] = {}
        for n in nodes:
            by_parent.setdefault(n.parent, []).append(n)
        seen = {ROOT_ID}
        order: list[Node] = []
        todo = [ROOT_ID]
        while todo:
            pid = todo.pop()
            for child in by_parent.get(pid, []):
                order.append(child)
                seen.add(child.id)
                todo.append(child.id)
        states = self.states
        states.deferred.clear()
        with self.tree.tx():
            for n in order:
                states.apply_node(n, bulk=True)
            # Nodes the server no longer has (and that have nothing to upload) go away.
            for ino, node_id in self.tree.all_ids():
                if node_id not in seen and not self.journal.has_entries(node_id) \
                        and not self.journal.referenced(node_id):
                    row = self.tree.get_opt(ino)
                    if row is not None and not states.held(node_id, row) and not (
                            row.is_dir and states.subtree_held(ino)):
                        states.remove_local(ino, True)
            self.tree.set_meta("last_seq", str(at))
            self.tree.set_meta("listed", "1")
        self._check_holds = True        # a hold's end may be among the events we skipped
        self.link.up()
        log.info("re-listed the vault at seq %s (%d nodes)", at, len(order))
        return at

    # -- held deletes (gobi.fs.held) ----------------------------------------------------------

    async def settle(self) -> None:
        """Bring back what settled holds kept (``gobi.fs.held``); first, after a start or
        a re-list, ask the server about holds we missed the end of."""
        if self._check_holds:
            self._check_holds = False
            for hold_id in self.states.hidden.hold_ids():
                try:
                    info = await self.remote.hold(hold_id)
                except ApiError as exc:
                    if exc.code != ErrorCode.NOT_FOUND:
                        continue
                    # Forgotten by the server (long settled): what it kept comes back.
                    info = HoldInfo(id=hold_id, state="expired", created=0, expires=0, files=0, items=0)
                except RemoteError:
                    self._check_holds = True
                    return
                with self.tree.tx():
                    self.states.note_hold(info)
        for hold_id in sorted(self.states.to_settle):
            try:
                async with self.lock:
                    await self._bring_back(hold_id)
            except (Offline, RemoteError) as exc:
                log.warning("hold %s settled; bringing back what it kept waits for the server: %s",
                            hold_id, exc)
                return
            self.states.to_settle.discard(hold_id)

    async def _bring_back(self, hold_id: str) -> None:
        states = self.states
        info = states.hidden.hold(hold_id) or states.holds.get(hold_id)
        rows = states.hidden.rows_of(hold_id)
        if info is None or not rows:
            return
        ids = {r.node for r in rows}
        tops: list[Node] = []
        for r in rows:
            if r.parent in ids:
                continue            # comes back with its directory
            try:
                node = await self.remote.node(r.node)
            except ApiError as exc:
                if exc.code == ErrorCode.NOT_FOUND:
                    continue
                raise
            if not node.deleted:
                tops.append(node)
        with self.tree.tx():
            rows = states.hidden.take(hold_id)
        shown = 0
        for node in tops:
            if states.apply_node(node, ack=True) == "applied":
                shown += 1
            if node.kind.value == "dir":
                shown += await states.restore_subtree(node.id)
        with self.tree.tx():
            entry = states.hidden.returned_back(info, rows, shown)
        if shown:
            log.warning("hold %s %s: %d held delete(s) of this mount came back from the server "
                        "(%s)", hold_id, info.state, shown, ", ".join(entry["paths"]))
        oplog("held", hold=hold_id, state=info.state, returned=shown)


__all__ = ["Applier", "APPLY_BATCH"]
