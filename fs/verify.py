"""Does the mount agree with the server? ``gobi verify`` and the mount's own self-check.

A sync tool that silently shows two machines different files is the failure users never
forgive, so the mount can prove it agrees: ``Verifier.verify`` compares the mirror with the
server's tree at the seq the mirror has reached — names, parents, kinds, modes, sizes,
content versions, mtimes of files and special files, symlink targets, device numbers
(``rdev``), revisions — and the local bytes a read would
be served from (a staging copy of a file that has nothing to upload must hold the server's
content). With ``repair`` it puts every difference right from the server's state.

**What is compared.** First the uploader is paused (uploads in flight finish, no new one
starts) and the applier catches up with our own acknowledged writes; then, holding the
applier's lock so no remote change moves the mirror, the tree is listed at the mirror's
seq ``S`` and compared. Nodes with local changes that have not reached the server
(journal entries, dirty content, open for writing, or a remote state deferred behind
them) are *pending*: counted, never compared, never repaired, so a repair can never
discard a local change. A node whose mirror row is newer than ``S`` (acknowledged after
it) is skipped too.

**Repairs.** A node the mirror lacks or shows differently is applied from the server's
state (``ServerStates.apply_node(force=True)``, which also tells the kernel); a node the
server does not have at ``S`` is removed locally; a stale staging copy is dropped so reads
go to the server's chunks. Every repair is logged and counted.

**Self-check.** ``SelfCheck`` runs a verify with repair after every (re)connection of the
live stream (the first one at mount start included) and after every re-list, once the
uploader is idle, at most once per ``SELF_CHECK_INTERVAL`` (``gobi mount --self-check
SECONDS``; 0 turns it off: each check lists the whole vault, which a very large vault may not
want after every reconnect), so a divergence cannot persist unnoticed; its figures are in
``gobi status`` and the metrics.

Errors: ``VerifyError`` (the server cannot be reached, uploads do not settle); the mount's
state is never changed by a failed verify.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass

import trio

from gobi.chunking import pieces_of_sparse_file
from gobi.protocol import ROOT_ID, Node

from .applier import Applier
from .events import Live
from .logs import oplog
from .remote import ApiError, Remote, RemoteError
from .states import ServerStates
from .sync import Sync
from .tree import ROOT_INO, Entry, Tree
from .vfs import Vfs

log = logging.getLogger(__name__)

SETTLE_WAIT = 60.0             # uploads in flight / own acknowledgements to settle
SELF_CHECK_INTERVAL = 300.0    # at most one self-check per this many seconds
SELF_CHECK_IDLE_WAIT = 600.0   # a self-check waits this long for the uploader to go idle
MAX_REPORTED = 100             # differences listed in a report (it travels in an xattr)
KEPT_REPORTS = 20


class VerifyError(Exception):
    """The check could not be made (offline, uploads that do not settle, …)."""


@dataclass
class Difference:
    what: str                  # missing | extra | differs | stale-copy
    path: str
    node: str
    detail: str
    repaired: bool = False


class Verifier:
    def __init__(self, tree: Tree, vfs: Vfs, applier: Applier, states: ServerStates, sync: Sync,
                 remote: Remote):
        self.tree = tree
        self.vfs = vfs
        self.applier = applier
        self.states = states
        self.sync = sync
        self.remote = remote
        self.runs = 0
        self.repaired = 0               # repairs made in all (metric)
        self.found = 0                  # differences found in all (metric)
        self.last: dict | None = None   # the last report (status)
        self.reports: dict[str, dict] = {}  # token -> report of a `gobi verify` (xattrs)

    def start(self, token: str, repair: bool, spawn) -> None:
        """Run a verify in the background (``spawn``: a nursery's start_soon); its report
        is ``result(token)``: ``{"state": "running"}`` until done."""
        self.reports[token] = {"state": "running"}
        while len(self.reports) > KEPT_REPORTS:
            del self.reports[next(iter(self.reports))]

        async def go() -> None:
            try:
                report = await self.verify(repair)
            except VerifyError as exc:
                report = {"state": "error", "error": str(exc)}
            except Exception as exc:        # a bug: say so, never take the mount down
                log.exception("verify failed")
                report = {"state": "error", "error": f"{type(exc).__name__}: {exc}"}
            self.reports[token] = report

        spawn(go)

    def result(self, token: str) -> dict | None:
        return self.reports.get(token)

    async def verify(self, repair: bool = False) -> dict:
        """Compare (and with ``repair`` fix) the mirror against the server; the report."""
        t0 = time.monotonic()
        try:
            async with self.sync.paused(SETTLE_WAIT):
                await self._own_writes_applied()
                async with self.applier.lock:
                    report = await self._compare(repair)
        except trio.TooSlowError:
            raise VerifyError(f"uploads did not settle within {SETTLE_WAIT:.0f}s; try again") from None
        except RemoteError as exc:
            raise VerifyError(f"cannot list the server's tree: {exc}") from None
        report["seconds"] = round(time.monotonic() - t0, 3)
        self.runs += 1
        self.found += len(report["differences"])
        self.last = {k: v for k, v in report.items() if k != "differences"} | {"at": time.time()}
        return report

    async def _own_writes_applied(self) -> None:
        """Our acknowledged writes carry revs the mirror shows already; their events must be
        applied too, or the listing at the mirror's seq would predate them."""
        with trio.move_on_after(SETTLE_WAIT):
            while self.states.last_seq < self.states.max_acked_rev:
                with trio.move_on_after(1):
                    await self.applier.applied.wait()
            return
        raise VerifyError(f"the mirror is at seq {self.states.last_seq}, behind our own writes "
                          f"(seq {self.states.max_acked_rev}): is the server reachable?")

    # -- the comparison ---------------------------------------------------------------------

    def _pending(self, node_id: str, row: Entry | None) -> bool:
        # A held delete of this mount (gobi.fs.held) is a local change too: not shown here
        # until the owner decides.
        return self.states.pending(node_id, row)

    async def _compare(self, repair: bool) -> dict:
        seq = self.states.last_seq
        at, nodes = await self.remote.tree(at=seq)
        server = {n.id: n for n in nodes if n.id != ROOT_ID}
        ids = {ROOT_INO: ROOT_ID}
        rows: dict[str, Entry] = {}
        for row in self._live_rows():
            rows[row.id] = row
            ids[row.ino] = row.id
        diffs: list[tuple[Difference, Node | None, Entry | None]] = []
        pending = 0
        compared = 0
        for node_id, n in server.items():
            row = rows.get(node_id) or self.tree.by_id(node_id)
            if self._pending(node_id, row):
                pending += 1
                continue
            if row is not None and row.rev > seq:
                continue            # changed here after the listing's seq (our own write)
            compared += 1
            if row is None or row.parent is None:
                diffs.append((Difference("missing", self._server_path(n, server), node_id,
                                         f"the server has this {n.kind.value} (rev {n.rev})"), n, None))
                continue
            detail = self._differs(n, row, ids)
            if detail:
                diffs.append((Difference("differs", self.tree.path_of(row), node_id, detail), n, row))
        for node_id, row in rows.items():
            if node_id in server:
                continue
            if self._pending(node_id, row) or self.tree.journal.referenced(node_id):
                pending += 1
                continue
            if row.rev > seq:
                continue
            compared += 1
            diffs.append((Difference("extra", self.tree.path_of(row), node_id,
                                     f"the server has no such node at seq {seq}"), None, row))
        for node_id, row in rows.items():
            if row.is_file and self.vfs.staged(row.ino) and not self._pending(node_id, row) \
                    and node_id in server and row.rev <= seq:
                detail = await self._stale_copy(row, server[node_id])
                if detail:
                    diffs.append((Difference("stale-copy", self.tree.path_of(row), node_id, detail),
                                  server[node_id], row))
        if repair:
            self._repair(diffs, server)
        differences = [d for d, _, _ in diffs]
        return {"state": "done", "seq": seq, "compared": compared, "pending": pending,
                "differences": [asdict(d) for d in differences[:MAX_REPORTED]],
                "difference_count": len(differences),
                "repaired": sum(d.repaired for d in differences)}

    def _live_rows(self) -> list[Entry]:
        """Every node the mirror shows (attached to the root), by walking from it."""
        out: list[Entry] = []
        todo = [ROOT_INO]
        while todo:
            cur = todo.pop()
            for child in self.tree.children(cur, 0, 1_000_000_000):
                out.append(child)
                if child.is_dir:
                    todo.append(child.ino)
        return out

    @staticmethod
    def _server_path(n: Node, server: dict[str, Node]) -> str:
        parts = [n.name]
        seen = 0
        while n.parent not in (None, ROOT_ID) and n.parent in server and seen < 10_000:
            n = server[n.parent]
            parts.append(n.name)
            seen += 1
        return "/" + "/".join(reversed(parts))

    def _differs(self, n: Node, row: Entry, ids: dict[int, str]) -> str:
        """What of the node differs between the server (n) and the mirror (row)."""
        out = []

        def cmp(what: str, server_value, mirror_value) -> None:
            if server_value != mirror_value:
                out.append(f"{what}: server {server_value!r}, here {mirror_value!r}")

        cmp("parent", n.parent or ROOT_ID, ids.get(row.parent, f"ino {row.parent}"))
        cmp("name", n.name, row.name)
        cmp("kind", n.kind.value, row.kind)
        cmp("mode", oct(n.mode & 0o7777), oct(row.mode & 0o7777))
        cmp("rev", n.rev, row.rev)
        if row.is_file:
            cmp("size", n.size, row.size)
            cmp("content version", n.content_rev, row.content_rev)
        if row.is_file or row.is_special:
            cmp("mtime_ns", n.mtime_ns, row.mtime_ns)
        if row.kind == "symlink":
            cmp("target", n.target, row.target)
        cmp("rdev", n.rdev, row.rdev)
        if row.link or self.tree.aliases(row.ino):
            # Names this mirror shows as one file must be one file on the server. (A row of
            # one name may keep an ``inode`` its link left behind before it was uploaded.)
            cmp("linked file (inode)", n.inode, row.inode)
        return "; ".join(out)

    async def _stale_copy(self, row: Entry, n: Node) -> str:
        """A staging copy of a file with nothing to upload: reads are served from it, so it
        must hold the server's content (it does right after an upload, while the file is
        still open); anything else is a stale local copy."""
        if row.ino not in self.vfs.opens:
            return "a local copy of a file with nothing to upload, not open: reads show it, not the server's"
        try:
            _, chunks = await self.remote.manifest(row.id, n.content_rev)
        except ApiError as exc:
            return f"cannot read the server's chunk list ({exc})"
        path = self.vfs.cache.staging_path(row.ino)

        def local_pieces() -> list[tuple[str | None, int]]:
            # Cut as the uploader cuts it (holes included), so an uploaded copy compares equal.
            fd = os.open(path, os.O_RDONLY)
            try:
                return [(p.hash, p.size) for p, _ in pieces_of_sparse_file(fd)]
            finally:
                os.close(fd)

        try:
            mine = await trio.to_thread.run_sync(local_pieces)
        except OSError:
            return ""           # dropped meanwhile: reads go to the server's chunks
        if mine != [(c.hash, c.size) for c in chunks]:
            return "the local copy reads are served from differs from the server's content"
        return ""

    # -- repairs ----------------------------------------------------------------------------

    def _repair(self, diffs: list[tuple[Difference, Node | None, Entry | None]],
                server: dict[str, Node]) -> None:
        depth = {}

        def level(n: Node) -> int:
            if n.id not in depth:
                parent = server.get(n.parent or "")
                depth[n.id] = 0 if parent is None else level(parent) + 1
            return depth[n.id]

        # Parents before children; removals last (children first, by path length).
        order = sorted((t for t in diffs if t[1] is not None and t[0].what in ("missing", "differs")),
                       key=lambda t: level(t[1]))
        for d, n, _ in order:
            try:
                d.repaired = self.states.apply_node(n, force=True) == "applied"
            except Exception:
                log.exception("repairing %s failed", d.path)
        for d, n, row in diffs:
            if d.what == "stale-copy" and row is not None:
                self.states.content_replaced(row.ino, even_if_open=True)
                d.repaired = True
        for d, _, row in sorted((t for t in diffs if t[0].what == "extra"),
                                key=lambda t: -t[0].path.count("/")):
            if row is None:
                continue
            if row.is_dir and self.states.subtree_held(row.ino):
                continue        # something inside waits for upload: its upload decides
            with self.tree.tx():
                d.repaired = self.states.remove_local(row.ino)
        for d, _, _ in diffs:
            level_ = logging.WARNING if d.repaired else logging.ERROR
            log.log(level_, "verify: %s %s (%s): %s%s", d.what, d.path, d.node, d.detail,
                    " — repaired" if d.repaired else "")
            if d.repaired:
                self.repaired += 1
                oplog("repair", what=d.what, path=d.path, node=d.node)


class SelfCheck:
    """Verify with repair after the live stream (re)connects and after a re-list."""

    def __init__(self, verifier: Verifier, live: Live, applier: Applier, sync: Sync,
                 interval: float = SELF_CHECK_INTERVAL):
        self.verifier = verifier
        self.live = live
        self.applier = applier
        self.sync = sync
        self.interval = interval
        self.runs = 0
        self.failures = 0
        self.last_error = ""

    def _trigger(self) -> tuple[int, int]:
        return self.live.connects, self.applier.relists

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.interval <= 0:
            return          # turned off (``gobi mount --self-check 0``)
        seen = (0, 0)
        last_run = -self.interval
        while True:
            await trio.sleep(1.0)
            now = self._trigger()
            if now == seen or self.live.state != "live":
                continue
            wait = last_run + self.interval - time.monotonic()
            if wait > 0:
                await trio.sleep(wait)
            # After a reconnect the journal drains first: the user's uploads go before a check.
            with trio.move_on_after(SELF_CHECK_IDLE_WAIT):
                while self.sync.journal.count():
                    await self.sync.idle.wait()
            seen = self._trigger()
            last_run = time.monotonic()
            self.runs += 1
            try:
                report = await self.verifier.verify(repair=True)
            except VerifyError as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.warning("self-check could not run: %s", exc)
                seen = (0, 0)       # try again after the interval
                continue
            n = report["difference_count"]
            if n:
                log.error("self-check at seq %s found %d difference(s), repaired %d",
                          report["seq"], n, report["repaired"])
            else:
                log.info("self-check at seq %s: the mirror agrees with the server (%d nodes, %.2fs)",
                         report["seq"], report["compared"], report["seconds"])

    def status(self) -> dict:
        v = self.verifier
        return {"self_checks": self.runs, "self_check_failures": self.failures,
                "verify_runs": v.runs, "verify_found": v.found, "verify_repaired": v.repaired,
                "verify_last": v.last}


__all__ = ["Verifier", "SelfCheck", "VerifyError", "Difference"]
