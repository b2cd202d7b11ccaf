"""Remote changes into the mirror: the catch-up queue, applied in seq order.

The live stream (``gobi.fs.events``) and REST catch-ups put events into one queue; the
``Applier`` drains it in order (several queued events in one SQLite transaction), so a
long replay and the live events behind it are applied exactly once each, in seq order.
A ``CaughtUp`` marker that reaches the front marks the initial sync complete (``gobi
status``); a ``Relist`` marker (cursor expired) re-lists the tree at one seq and reconciles.
A gap in seqs (never expected from one socket) is filled over REST before going on.

Applying a node's server state (``apply_node``):

- **Local changes win locally.** A node with pending journal entries, dirty content or
  open for writing is *held*: the remote state is kept aside (``deferred``) instead of
  overwriting local data, and looked at again when the hold ends (its upload finished or
  the file was closed). The upload carries ``on_conflict: "strategy"``, so the server's
  vault strategy decides what happens to the two sides (``gobi.fs.sync``). A directory
  that still holds pending local creations is not deleted locally either. This is also
  the catch-up queue's rule "if the user keeps the local side, later queued events for that
  file are ignored": the local side is whatever is pending.
- **Own echoes** (events caused by this mount's commits) are recognised by revision: a
  node whose mirror row is already at that rev (the acknowledgement came first) or that
  is still held by the upload that caused it (the event came first) is skipped, so our
  own writes never cause refetches or kernel invalidations. Events of this device with a
  newer rev than the mirror (the server's strategy renamed, revived or copied something
  on our behalf) are applied like any other.
- **Our deletes are not undone by older states.** A node this mount deleted, whose
  delete the server acknowledged at rev R (``gone``), is not brought back by a state older
  than R that arrives later: the stream may still be catching up on our own creates (a big
  ``tar x`` or ``git add``) while ``rm -rf`` of the same tree runs, and re-inserting one of
  them under a directory ``rm`` is about to remove made it fail ("Directory not empty").
  The entry goes once the mirror has passed R.
- **The kernel is told** through ``Kernel`` (``gobi.fs.notify``): created / moved /
  removed entries and changed content or attributes.

**Held deletes** (``gobi.fs.held``): what this mount deleted and the server holds for
the vault owner stays deleted here. A server state of such a node (or of one inside a
hidden directory) is recorded instead of shown, and so are the ``create`` events of our
own deletes that the server pulled back into a hold (they carry the hold). When a hold is
settled, what the server kept comes back (``settle``): after a reject or expiry all of
it, after a confirm what was changed meanwhile; ``gobi status`` and the log say so.

Errors: ``RemoteError`` from REST fills and re-lists propagate to the caller; a bug in
applying one event is logged and that event skipped, never taking the mount down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import trio

from gobi.protocol import ROOT_ID, ConflictInfo, ErrorCode, Event, EventType, HoldInfo, Node

from .events import CaughtUp, Relist
from .held import HeldDeletes
from .logs import oplog
from .notify import Change, Kernel
from .remote import ApiError, Offline, Remote, RemoteError
from .tree import ROOT_INO, Tree
from .vfs import Link, Vfs

log = logging.getLogger(__name__)

APPLY_BATCH = 500          # queued events applied in one transaction
BULK = 50                  # a batch this large is "bulk": no per-event materialisation


class Applier:
    def __init__(self, tree: Tree, vfs: Vfs, remote: Remote, link: Link, device: str, kernel: Kernel):
        self.tree = tree
        self.journal = tree.journal
        self.vfs = vfs
        self.remote = remote
        self.link = link
        self.device = device
        self.kernel = kernel
        self.deferred: dict[str, Node] = {}
        self.echoes = 0
        self.applied_events = 0
        self.initial_sync = "complete" if tree.meta("initial_sync_at") else "pending"
        self.initial_sync_at = float(tree.meta("initial_sync_at") or 0) or None
        self.caught_up_seq = 0
        self.open_conflicts: dict[str, ConflictInfo] = {}
        self.holds: dict[str, HoldInfo] = {}
        self.max_acked_rev = 0          # highest rev of our own acknowledged writes
        self.settings_changed = 0
        self.relists = 0
        self.vault_deleted = False
        self.applied = trio.Event()     # set after every applied batch (tests, status)
        # Held while a batch is applied; ``gobi verify`` holds it to compare the mirror with
        # the server's tree at one seq while no remote change moves the mirror.
        self.lock = trio.Lock()
        # This mount's deletes that the server holds for the owner (hidden here), and the
        # settled holds whose kept files must come back (``settle``).
        self.hidden = HeldDeletes(tree, device, self._visible_path)
        # node id → rev of our own delete the server acknowledged, until the mirror passes it
        self.gone: dict[str, int] = {}
        self.to_settle: set[str] = set()
        self._check_holds = True        # ask the server about our holds (start, re-list)

    # -- state ------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return int(self.tree.meta("last_seq", "0") or 0)

    def seen_seq(self) -> int:
        """What a delete sent now has seen (docs/conflicts.md: ``seen_seq``)."""
        return max(self.last_seq, self.max_acked_rev)

    def status(self) -> dict:
        return {
            "initial_sync": self.initial_sync,
            "initial_sync_at": self.initial_sync_at,
            "applied_events": self.applied_events,
            "echoes_skipped": self.echoes,
            "relists": self.relists,
            "deferred": len(self.deferred),
            "open_conflicts": [{"id": c.id, "path": c.path, "case": c.case, "message": c.message}
                               for c in list(self.open_conflicts.values())[-10:]],
            "open_conflict_count": len(self.open_conflicts),
            "pending_holds": [{"id": h.id, "files": h.files, "device": h.device}
                              for h in self.holds.values() if h.state == "pending"],
            "vault_deleted": self.vault_deleted,
            **self.hidden.status(),
        }

    def held(self, node_id: str, row=None) -> bool:
        """Does a local change of this node wait to be uploaded (or is it being written)?"""
        if self.journal.has_entries(node_id):
            return True
        if row is None:
            row = self.tree.by_id(node_id)
        if row is None:
            return False
        return bool(row.dirty) or row.ino in self.vfs.writers

    def _subtree_held(self, ino: int) -> bool:
        """A directory whose subtree has local changes waiting (creations inside it)."""
        todo = [ino]
        while todo:
            cur = todo.pop()
            for child in self.tree.children(cur, 0, 1_000_000):
                if self.held(child.id, child) or self.journal.referenced(child.id):
                    return True
                if child.is_dir:
                    todo.append(child.ino)
        return False

    def _defer(self, node: Node) -> None:
        old = self.deferred.get(node.id)
        if old is None or node.rev >= old.rev:
            self.deferred[node.id] = node

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
            if self.to_settle or self._check_holds:
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
        if events and self.gone:
            last = self.last_seq
            self.gone = {k: v for k, v in self.gone.items() if v > last}

    def deleted_here(self, node_id: str, rev: int) -> None:
        """The server acknowledged our delete of ``node_id`` at ``rev`` (see ``gone``)."""
        if rev > self.last_seq:
            self.gone[node_id] = max(rev, self.gone.get(node_id, 0))

    def _materialisable(self, ev: Event) -> Change | None:
        """The change an event makes, when it is a simple create, move or delete that can
        be made through the mount (``Kernel.materialise``); None otherwise (applied
        directly: echoes, held nodes, unknown parents, clashes, non-empty directories,
        held deletes)."""
        node = ev.node
        if node is None or node.id == ROOT_ID or not self.kernel.can_materialise():
            return None
        if ev.hold is not None or self.hidden.covers(node):
            return None
        if ev.type not in (EventType.CREATE, EventType.MOVE, EventType.DELETE):
            return None
        e = self.tree.by_id(node.id)
        if e is not None and node.rev <= e.rev:
            return None
        if self.held(node.id, e):
            return None

        def apply() -> bool:
            return self.apply_node(node) == "applied"

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
            kind = {"file": "create", "dir": "mkdir", "symlink": "symlink"}[node.kind.value]
            return Change(kind, new_path, parent.ino, node.name, apply, target=node.target or "",
                          mode=node.mode)
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
                self.holds[ev.hold.id] = ev.hold
                if self.hidden.note_hold(ev.hold):
                    self.to_settle.add(ev.hold.id)
                return
            if ev.hold is not None and ev.node is not None and ev.hold.device == self.device \
                    and not ev.node.deleted:
                # One of our deletes, applied before the guard fired and pulled back into
                # the hold: still deleted here (unless the mirror shows it: not ours then).
                e = self.tree.by_id(ev.node.id)
                if e is None or e.parent is None:
                    self.hide(ev.node, ev.hold, "pulled")
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
            result = self.apply_node(ev.node, bulk=bulk)
            if ev.device == self.device and result in ("stale", "deferred"):
                self.echoes += 1
        except Exception:
            log.exception("applying event %s failed", ev.seq)

    def apply_node(self, node: Node, *, bulk: bool = False, ack: bool = False,
                   force: bool = False) -> str:
        """Make the mirror show a node's server state unless a local change holds it.

        Returns ``applied``, ``stale`` (the mirror has this rev or a later one),
        ``deferred`` (held by a local change, or its parent is not known yet) or
        ``skipped``. ``ack``: the state comes from the answer to our own write, whose rev
        the mirror may already carry; apply whatever differs. ``force``: the state is the
        server's truth at a seq the mirror has reached (``gobi verify --repair``): apply it
        whatever revision the mirror claims.
        """
        if node.id == ROOT_ID:
            return "skipped"
        with self.tree.tx():
            if self.hidden.absorb(node):
                return "hidden"         # deleted here, held on the server: stays hidden
            gone = self.gone.get(node.id)
            if gone is not None:
                if node.rev <= gone:
                    return "stale"      # we deleted it later than this state (module docstring)
                del self.gone[node.id]
            e = self.tree.by_id(node.id)
            if e is not None and not force and (node.rev < e.rev or (node.rev == e.rev and not ack)):
                return "stale"
            if self.held(node.id, e):
                self._defer(node)
                return "deferred"
            newer = self.deferred.get(node.id)
            if newer is not None and newer.rev > node.rev:
                # A later server state arrived while the node was held (e.g. another
                # device's chmod, streamed in while our losing commit was in flight, whose
                # answer is this older head): applying this one and dropping that would
                # leave the mirror behind the server for good.
                node = newer
            if node.deleted:
                self.deferred.pop(node.id, None)
                if e is None or e.parent is None:
                    if e is not None:
                        self.tree.update(e.ino, rev=node.rev)
                    return "applied"
                if e.is_dir and self._subtree_held(e.ino):
                    self._defer(node)
                    return "deferred"
                # Descendants at a later rev than the delete changed after it (e.g. our own
                # create in it, acknowledged before this older event arrived): the server
                # kept them (and their directories, revived by later events); they stay.
                self._remove_local(e.ino, bulk, keep_after=node.rev)
                return "applied"
            parent = self.tree.by_id(node.parent or ROOT_ID)
            if parent is None or not parent.is_dir or (parent.parent is None and parent.ino != ROOT_INO):
                self._defer(node)       # its parent arrives later (or is held locally)
                return "deferred"
            clash = self.tree.child(parent.ino, node.name)
            if clash is not None and (e is None or clash.ino != e.ino):
                if self.held(clash.id, clash) or self.journal.referenced(clash.id):
                    self._defer(node)   # a local change of this name is pending; its upload decides
                    return "deferred"
                if clash.rev > node.rev and not force:
                    # The name's holder is newer than this state (e.g. our create that took
                    # the name under client-wins, acknowledged before this older create of
                    # theirs was applied): this node left the name since; its later event
                    # (a move to a conflicted-copy name) places it.
                    return "stale"
                # The mirror missed a move or delete of the node holding this name: detach
                # it (its own state, if it still exists, re-attaches it).
                self.tree._orphan(clash)
                self.kernel.removed(parent.ino, clash.name, clash.ino)
            self.deferred.pop(node.id, None)
            fields = dict(
                parent=parent.ino, name=node.name, kind=node.kind.value, mode=node.mode,
                size=node.size, mtime_ns=node.mtime_ns, target=node.target, rev=node.rev,
                content_rev=node.content_rev,
            )
            if e is None:
                self.tree.insert(id=node.id, **fields)
                self.kernel.created(parent.ino, node.name)
                return "applied"
            if ack and (e.is_dir or e.kind == "symlink"):
                # A directory's mtime moves here with every local change inside it, and a
                # symlink's is not synced at all (``lutimes`` stays local): the server keeps
                # the one it was given. Our own answer does not reset it.
                fields["mtime_ns"] = e.mtime_ns
            content_changed = e.is_file and e.content_rev != node.content_rev
            moved = e.parent != parent.ino or e.name != node.name
            attrs_changed = (e.mode != node.mode or e.mtime_ns != fields["mtime_ns"]
                             or (e.is_file and e.size != node.size))
            self.tree.update(e.ino, **fields)
            if moved:
                if e.parent is not None:
                    self.kernel.moved(e.parent, e.name, parent.ino, node.name, e.ino)
                else:
                    self.kernel.created(parent.ino, node.name)
            if content_changed:
                # A clean staging copy (kept after an upload while the file was open) holds
                # the old content and reads prefer it: readers must see the new version.
                if self.vfs.staged(e.ino) and e.ino not in self.vfs.writers:
                    self.vfs._drop_staging(e.ino)
                for h in self.vfs.handles.values():
                    if h.ino == e.ino:
                        h.manifest = None       # open readers fetch the new chunk list
                self.kernel.content(e.ino, bulk)
            elif attrs_changed:
                self.kernel.attrs(e.ino, bulk)
            return "applied"

    def _remove_local(self, ino: int, bulk: bool = False, keep_after: int | None = None) -> bool:
        """Remove a node and its subtree from the mirror; with ``keep_after``, nodes at a
        later rev and the directories holding them stay. Returns whether it went."""
        e = self.tree.get_opt(ino)
        if e is None or e.parent is None:
            return True
        kept = False
        for child in self.tree.children(ino, 0, 1_000_000):
            if keep_after is not None and child.rev > keep_after:
                kept = True
            elif not self._remove_local(child.ino, bulk, keep_after):
                kept = True
        if kept:
            return False
        self.tree._orphan(e)
        self.kernel.removed(e.parent, e.name, ino)
        self.vfs.maybe_purge(ino)
        return True

    def retry_deferred(self, ids: Iterable[str] | None = None) -> int:
        """Apply deferred server states whose hold has ended; returns how many applied."""
        if not self.deferred:
            return 0
        n = 0
        for node_id in list(ids if ids is not None else self.deferred):
            node = self.deferred.get(node_id)
            if node is None:
                continue
            if self.held(node_id):
                continue
            del self.deferred[node_id]
            if self.apply_node(node) == "applied":
                n += 1
        return n

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
        self.deferred.clear()
        with self.tree.tx():
            for n in order:
                self.apply_node(n, bulk=True)
            # Nodes the server no longer has (and that have nothing to upload) go away.
            for ino, node_id in self.tree.all_ids():
                if node_id not in seen and not self.journal.has_entries(node_id) \
                        and not self.journal.referenced(node_id):
                    row = self.tree.get_opt(ino)
                    if row is not None and not self.held(node_id, row) and not (
                            row.is_dir and self._subtree_held(ino)):
                        self._remove_local(ino, True)
            self.tree.set_meta("last_seq", str(at))
            self.tree.set_meta("listed", "1")
        self._check_holds = True        # a hold's end may be among the events we skipped
        self.link.up()
        log.info("re-listed the vault at seq %s (%d nodes)", at, len(order))
        return at

    async def restore_subtree(self, dir_id: str) -> int:
        """Bring a directory's subtree back from the server (a delete the server did not
        apply, or held): events for nodes created inside it while it was gone locally were
        deferred or skipped. Returns how many nodes it applied."""
        todo = [dir_id]
        shown = 0
        while todo:
            cur = todo.pop()
            try:
                children = await self.remote.children(cur)
            except ApiError as exc:
                if exc.code in (ErrorCode.NOT_FOUND, ErrorCode.NOT_A_DIRECTORY):
                    continue
                raise
            for child in children:
                if self.apply_node(child, ack=True) == "applied":
                    shown += 1
                if child.kind.value == "dir":
                    todo.append(child.id)
        return shown

    # -- held deletes (gobi.fs.held) ----------------------------------------------------------

    def _visible_path(self, node_id: str) -> str | None:
        row = self.tree.by_id(node_id)
        if row is None or (row.parent is None and row.ino != ROOT_INO):
            return None
        return self.tree.path_of(row).lstrip("/")

    def held_path(self, node: Node) -> str:
        """Where ``node`` is in the vault, as this mount knew it (for status and the log)."""
        parent = self.hidden.path_of(node.parent)
        if parent is None:
            row = self.tree.by_id(node.parent or ROOT_ID)
            parent = self.tree.path_of(row).lstrip("/") if row is not None and \
                (row.parent is not None or row.ino == ROOT_INO) else "?"
        return f"{parent}/{node.name}" if parent else node.name

    def hide(self, node: Node, hold: HoldInfo, origin: str) -> None:
        """Keep one of our held deletes out of the mirror (``gobi.fs.held``)."""
        with self.tree.tx():
            self.hidden.hide(node, hold.id, origin, self.held_path(node))
            known = self.holds.get(hold.id)
            if self.hidden.note_hold(known if known is not None and known.state != "pending" else hold):
                self.to_settle.add(hold.id)     # settled before we heard of this delete

    async def settle(self) -> None:
        """Bring back what settled holds kept (``gobi.fs.held``); first, after a start or
        a re-list, ask the server about holds we missed the end of."""
        if self._check_holds:
            self._check_holds = False
            for hold_id in self.hidden.hold_ids():
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
                    if self.hidden.note_hold(info):
                        self.to_settle.add(hold_id)
        for hold_id in sorted(self.to_settle):
            try:
                async with self.lock:
                    await self._bring_back(hold_id)
            except (Offline, RemoteError) as exc:
                log.warning("hold %s settled; bringing back what it kept waits for the server: %s",
                            hold_id, exc)
                return
            self.to_settle.discard(hold_id)

    async def _bring_back(self, hold_id: str) -> None:
        info = self.hidden.hold(hold_id) or self.holds.get(hold_id)
        rows = self.hidden.rows_of(hold_id)
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
            rows = self.hidden.take(hold_id)
        shown = 0
        for node in tops:
            if self.apply_node(node, ack=True) == "applied":
                shown += 1
            if node.kind.value == "dir":
                shown += await self.restore_subtree(node.id)
        with self.tree.tx():
            entry = self.hidden.returned_back(info, rows, shown)
        if shown:
            log.warning("hold %s %s: %d held delete(s) of this mount came back from the server "
                        "(%s)", hold_id, info.state, shown, ", ".join(entry["paths"]))
        oplog("held", hold=hold_id, state=info.state, returned=shown)


__all__ = ["Applier", "APPLY_BATCH"]
