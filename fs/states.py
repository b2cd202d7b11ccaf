"""Server node states into the mirror: the one place that applies them.

Both directions end here. The applier (``gobi.fs.applier``) applies the states that
server events carry; the uploader (``gobi.fs.sync``) applies the states that the
answers to our own writes carry (and re-reads after a refusal). Neither knows the other:
each holds this object and the mirror (``gobi.fs.tree``), nothing more.

Applying a node's server state (``apply_node``):

- **Local changes win locally.** A node with pending journal entries, dirty content or
  open for writing is *held*: the remote state is kept aside (``deferred``) instead of
  overwriting local data, and looked at again when the hold ends (its upload finished or
  the file was closed: ``retry``). The upload carries ``on_conflict: "strategy"``, so the
  server's vault strategy decides what happens to the two sides. A directory that still
  holds pending local creations is not deleted locally either.
- **Our deletes are not undone by older states.** A node this mount deleted, whose
  delete the server acknowledged at rev R (``gone``), is not brought back by a state older
  than R that arrives later: the stream may still be catching up on our own creates (a big
  ``tar x`` or ``git add``) while ``rm -rf`` of the same tree runs, and re-inserting one of
  them under a directory ``rm`` is about to remove made it fail ("Directory not empty").
  The entry goes once the mirror has passed R (``passed``).
- **Held deletes stay hidden** (``gobi.fs.held``): a server state of a node this mount
  deleted and the server holds for the owner is recorded instead of shown (``hide``).
- **The kernel is told** through ``Kernel`` (``gobi.fs.notify``): created / moved /
  removed entries and changed content or attributes. A content change also drops a clean
  local copy and the chunk lists of open readers (``content_replaced``), so nobody reads
  the old version.

- **Hard links** (``gobi.fs.tree``, "Hard links"): a new name whose ``inode`` is a file
  the mirror has becomes an alias row of it (the kernel sees one more name of that inode);
  an alias row takes its name's server state but tells the kernel nothing about content or
  attributes (the file row's own name has the same change at the same time: the server
  applies a file's changes to all its names); a name the server takes out of its file (a
  name restored with other content) becomes a row of its own; a delete of the name the
  file row holds hands the file to a further name.

Errors: ``apply_node`` raises nothing of its own; ``restore_subtree`` lets
``RemoteError`` through to its caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from gobi.protocol import ROOT_ID, ErrorCode, HoldInfo, Node

from .held import HeldDeletes
from .notify import Kernel
from .remote import ApiError, Remote
from .tree import ROOT_INO, Tree
from .vfs import Vfs

log = logging.getLogger(__name__)


class ServerStates:
    def __init__(self, tree: Tree, vfs: Vfs, remote: Remote, device: str, kernel: Kernel):
        self.tree = tree
        self.journal = tree.journal
        self.vfs = vfs
        self.remote = remote
        self.device = device
        self.kernel = kernel
        self.deferred: dict[str, Node] = {}
        self.max_acked_rev = 0          # highest rev of our own acknowledged writes
        # node id → rev of our own delete the server acknowledged, until the mirror passes it
        self.gone: dict[str, int] = {}
        # This mount's deletes that the server holds for the owner (hidden here), the
        # holds we know of, and the settled ones whose kept files must come back.
        self.hidden = HeldDeletes(tree, device, self._visible_path)
        self.holds: dict[str, HoldInfo] = {}
        self.to_settle: set[str] = set()

    # -- where the mirror stands ------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return int(self.tree.meta("last_seq", "0") or 0)

    def seen_seq(self) -> int:
        """What a delete sent now has seen (docs/conflicts.md: ``seen_seq``)."""
        return max(self.last_seq, self.max_acked_rev)

    def acked(self, rev: int) -> None:
        """One of our writes was acknowledged at ``rev``."""
        if rev > self.max_acked_rev:
            self.max_acked_rev = rev

    def deleted_here(self, node_id: str, rev: int) -> None:
        """The server acknowledged our delete of ``node_id`` at ``rev`` (see ``gone``)."""
        self.acked(rev)
        if rev > self.last_seq:
            self.gone[node_id] = max(rev, self.gone.get(node_id, 0))

    def passed(self, seq: int) -> None:
        """The mirror reached ``seq``: our deletes acknowledged up to it are in it."""
        if self.gone:
            self.gone = {k: v for k, v in self.gone.items() if v > seq}

    # -- local changes that hold a node -------------------------------------------------------

    def held(self, node_id: str, row=None) -> bool:
        """Does a local change of this node wait to be uploaded (or is it being written)?"""
        if self.journal.has_entries(node_id):
            return True
        if row is None:
            row = self.tree.by_id(node_id)
        if row is None:
            return False
        return bool(row.dirty) or row.ino in self.vfs.writers

    def writing(self, ino: int) -> bool:
        """Open for writing or with unsent changes: the kernel's idea of it is the local one."""
        e = self.tree.get_opt(ino)
        return ino in self.vfs.writers or (e is not None and bool(e.dirty))

    def subtree_held(self, ino: int) -> bool:
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

    def pending(self, node_id: str, row=None) -> bool:
        """Anything of this node not settled with the server: a local change, a deferred
        server state, or a held delete (``gobi verify`` leaves those alone)."""
        return self.held(node_id, row) or node_id in self.deferred or self.hidden.has(node_id)

    def _defer(self, node: Node) -> None:
        old = self.deferred.get(node.id)
        if old is None or node.rev >= old.rev:
            self.deferred[node.id] = node

    # -- applying -------------------------------------------------------------------------------

    def apply_node(self, node: Node, *, bulk: bool = False, ack: bool = False,
                   force: bool = False) -> str:
        """Make the mirror show a node's server state unless a local change holds it.

        Returns ``applied``, ``stale`` (the mirror has this rev or a later one),
        ``deferred`` (held by a local change, or its parent is not known yet), ``hidden``
        (a held delete of ours) or ``skipped``. ``ack``: the state comes from the answer
        to our own write, whose rev the mirror may already carry; apply whatever differs.
        ``force``: the state is the server's truth at a seq the mirror has reached (``gobi
        verify --repair``): apply it whatever revision the mirror claims. ``bulk``: many
        states at once; the kernel is told in bulk.
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
            if e is not None and e.link and not node.deleted and node.inode != e.inode:
                # The server took this name out of its file (restored with other content):
                # a file of its own from now on; the kernel sees the name go and come back.
                if self.held(node.id, e):
                    self._defer(node)
                    return "deferred"
                self.tree.orphan(e)
                self.kernel.removed(e.parent, e.name, e.link)
                self.kernel.attrs(e.link, bulk)
                e = None
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
                if e.is_dir and self.subtree_held(e.ino):
                    self._defer(node)
                    return "deferred"
                # Descendants at a later rev than the delete changed after it (e.g. our own
                # create in it, acknowledged before this older event arrived): the server
                # kept them (and their directories, revived by later events); they stay.
                old_parent = e.parent
                if self.remove_local(e.ino, bulk, keep_after=node.rev):
                    self._dir_changed(old_parent, bulk)
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
                self.tree.orphan(clash)
                self.kernel.removed(parent.ino, clash.name, clash.link or clash.ino)
            self.deferred.pop(node.id, None)
            fields = dict(
                parent=parent.ino, name=node.name, kind=node.kind.value, mode=node.mode,
                size=node.size, mtime_ns=node.mtime_ns, target=node.target, rev=node.rev,
                content_rev=node.content_rev, rdev=node.rdev, inode=node.inode,
            )
            if e is None:
                f = None if node.inode is None else self.tree.group(node.inode, node.kind.value)
                self.tree.insert(id=node.id, **fields, link=f.ino if f is not None else 0)
                self.kernel.created(parent.ino, node.name)
                self._dir_changed(parent.ino, bulk)         # and its nlink (``find`` trusts it)
                if f is not None:
                    self.kernel.attrs(f.ino, bulk)          # its nlink
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
                    self.kernel.moved(e.parent, e.name, parent.ino, node.name, e.link or e.ino)
                else:
                    self.kernel.created(parent.ino, node.name)
                for p in {e.parent, parent.ino} - {None}:
                    self._dir_changed(p, bulk)              # times, and nlink for a directory
            if e.link:
                # A further name's content and attributes are its file's: the change comes
                # with the file row's own name too (the server changes all names at once).
                return "applied"
            if content_changed:
                self.content_replaced(e.ino, bulk)
            elif attrs_changed:
                self.kernel.attrs(e.ino, bulk)
            return "applied"

    def _dir_changed(self, ino: int, bulk: bool) -> None:
        """A name came into or left directory ``ino`` from the server: its mtime and ctime
        move here too, as they did on the device that made the change (``ls -lt``, ``make``
        and ``find -newer`` see a directory change the same way on every mount), and the
        kernel drops its cached attributes (times, and nlink for a subdirectory). Not for a
        bulk re-list or long replay: those set up the tree as the server has it."""
        if not bulk:
            now = time.time_ns()
            self.tree.update(ino, mtime_ns=now, ctime_ns=now)
        self.kernel.attrs(ino, bulk)

    def content_replaced(self, ino: int, bulk: bool = False, *, even_if_open: bool = False) -> None:
        """The mirror shows other content for ``ino`` than the local copy: a clean staging
        copy (kept after an upload while the file was open) holds the old content and reads
        prefer it, so it goes (``even_if_open``: also under writers, when the copy is our
        losing version); open readers fetch the new chunk list; the kernel drops its pages."""
        if even_if_open or (self.vfs.staged(ino) and ino not in self.vfs.writers):
            self.vfs.drop_staging(ino)
        self.vfs.forget_manifests(ino)
        self.kernel.content(ino, bulk)

    def remove_local(self, ino: int, bulk: bool = False, keep_after: int | None = None) -> bool:
        """Remove a node and its subtree from the mirror; with ``keep_after``, nodes at a
        later rev and the directories holding them stay. Returns whether it went."""
        e = self.tree.get_opt(ino)
        if e is None or e.parent is None:
            return True
        kept = False
        # Further names of linked files first: a file row whose other names all go with
        # this subtree then goes too, instead of handing over to one of them.
        children = sorted(self.tree.children(ino, 0, 1_000_000), key=lambda c: not c.link)
        for child in children:
            if keep_after is not None and child.rev > keep_after:
                kept = True
            elif not self.remove_local(child.ino, bulk, keep_after):
                kept = True
        if kept:
            return False
        self.tree.orphan(e)
        file_ino = e.link or ino
        self.kernel.removed(e.parent, e.name, file_ino)
        if e.is_dir:
            self.kernel.attrs(e.parent, bulk)               # its nlink
        elif e.link or self.tree.get(ino).parent is not None:
            self.kernel.attrs(file_ino, bulk)               # a linked file: its nlink
        if not e.link:
            self.vfs.maybe_purge(ino)
        return True

    def retry(self, ids: Iterable[str] | None = None) -> int:
        """Apply deferred server states whose hold has ended, and tell the kernel what it
        refused to hear while files were busy; returns how many states applied."""
        if self.kernel.refused:
            self.kernel.retry_refused(self.writing)
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

    def note_hold(self, info: HoldInfo) -> None:
        """What the server says of a hold: a settled one's kept files come back (the
        applier's ``settle``)."""
        self.holds[info.id] = info
        if self.hidden.note_hold(info):
            self.to_settle.add(info.id)

    def hide(self, node: Node, hold: HoldInfo, origin: str) -> None:
        """Keep one of our held deletes out of the mirror (``gobi.fs.held``)."""
        with self.tree.tx():
            self.hidden.hide(node, hold.id, origin, self.held_path(node))
            known = self.holds.get(hold.id)
            if self.hidden.note_hold(known if known is not None and known.state != "pending" else hold):
                self.to_settle.add(hold.id)     # settled before we heard of this delete


__all__ = ["ServerStates"]
