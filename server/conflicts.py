"""Conflicts on the server: the vault's strategy settings and what each decision does.

A write sent with ``on_conflict="strategy"`` that meets a change it did not know about
comes here. ``gobi.conflicts`` (shared with the client) says which side the tree should
show; this module carries the decision out without losing a byte of either side:

- content (modify/modify): the loser becomes a *conflict version* of the file (a version in
  its history that never was the head, ``origin="conflict"``), or a conflicted copy
  (keep-both), or, for ``manual``, a conflict version plus an open conflict record;
- deletes: a deleted side is a trash entry; an edit of a deleted file brings it back (with
  its deleted parents) or is kept as a version of the tombstone;
- names: a clash gives one side a ``(conflicted copy …)`` name; two directories of one name
  are merged (the request is told which directory to use);
- every conflict handled is recorded (``Record`` kind ``conflict``) and announced with a
  ``conflict`` event; ``manual`` ones stay ``open`` until ``resolve``.

The full table, per case and strategy, is in docs/conflicts.md.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from gobi.conflicts import (
    Case,
    ConflictStrategy,
    Decision,
    Side,
    conflicted_name,
    strategy_for,
)
from gobi.protocol import (
    CommitContentRequest,
    ConflictInfo,
    DeleteNodeRequest,
    ErrorCode,
    EventType,
    Keep,
    Node,
    NodeKind,
    UpdateNodeRequest,
    VaultSettings,
)

from .access import Actor, require_role
from .errors import ServiceError
from .store.base import MetadataStore, Record, VaultTx
from .writes import (
    TRASH,
    Outcome,
    Writer,
    apply_commit,
    device_label,
    free_name,
    new_id,
    path_of,
    require_chunks,
)

CONFLICT = "conflict"
SETTINGS = "settings"

_RESULT = {Decision.MINE: "mine", Decision.THEIRS: "theirs", Decision.BOTH: "both",
           Decision.MANUAL: "recorded"}


def _join(parent_path: str, name: str) -> str:
    return f"{parent_path}/{name}" if parent_path else name


async def read_settings(tx: VaultTx) -> VaultSettings:
    record = await tx.get_record(SETTINGS, "vault")
    return VaultSettings.model_validate(record.body) if record else VaultSettings()


async def copy_file(w: Writer, like: Node, parent_id: str | None, name: str, chunks, size: int,
                    mtime_ns: int | None, mode: int | None, device: str, when: float) -> Node:
    """A new file ``NAME (conflicted copy DEVICE DATE).EXT`` next to ``name`` with this content."""
    free = await free_name(w.tx, parent_id or "root",
                           lambda n: conflicted_name(name, device, when, False, n))
    copy = Node(id=new_id("n"), parent=parent_id, name=free, kind=NodeKind.FILE, rev=0, size=size,
                mtime_ns=mtime_ns if mtime_ns is not None else time.time_ns(),
                mode=mode if mode is not None else like.mode)
    copy = await w.save(copy, EventType.CREATE)
    await w.add_version(copy, chunks)
    return copy


async def bring_back(w: Writer, node: Node, chunks=None, **changes: Any) -> Node:
    """A deleted node comes back at its old place (deleted parents too) with ``changes``;
    with ``size`` in the changes it gets a new content rev (the caller adds the version of
    ``chunks``, the content it comes back with: a hard link rejoins its file only when
    that is the file's content, ``Writer.rejoin``)."""
    parent, _ = await w.revive_chain(node.parent or "root")
    name = await free_name(w.tx, parent.id, lambda n: node.name if n == 1 else conflicted_name(
        node.name, device_label(w.actor), w.ts, node.kind is NodeKind.DIR, n - 1))
    await w.forget_trash_of(node.id)
    joined = await w.rejoin(node, chunks)
    back = await w.save(node, EventType.CREATE, keep_content_rev="size" not in changes,
                        deleted=False, parent=parent.id, name=name, **{**joined, **changes})
    if back.inode is not None:
        # Still a name of its file: a mode or mtime it came back with is the file's.
        await w.save_file_attrs(back, **{k: v for k, v in changes.items() if k in ("mode", "mtime_ns")})
    return back


class Conflicts:
    def __init__(self, store: MetadataStore):
        self.store = store

    # -- settings ----------------------------------------------------------------------------

    async def get_settings(self, actor: Actor, vault_id: str) -> VaultSettings:
        await require_role(self.store, actor, vault_id, "read")
        record = await self.store.get_record(vault_id, SETTINGS, "vault")
        return VaultSettings.model_validate(record.body) if record else VaultSettings()

    async def set_settings(self, actor: Actor, vault_id: str, settings: VaultSettings,
                           write: Callable[..., Awaitable[Any]]) -> VaultSettings:
        async def fn(w: Writer) -> VaultSettings:
            await w.tx.put_record(Record(SETTINGS, "vault", "", "", w.ts, settings.model_dump(mode="json")))
            await w.note(EventType.SETTINGS)     # clients that apply strategies re-read them
            return settings

        return await write(actor, vault_id, fn, role="owner")

    async def strategy(self, w: Writer, path: str) -> ConflictStrategy:
        return strategy_for(await read_settings(w.tx), path)

    # -- records -----------------------------------------------------------------------------

    def info(self, w: Writer, case: Case, strategy: ConflictStrategy, decision: Decision | str,
             node_id: str, path: str, **fields: Any) -> ConflictInfo:
        result = _RESULT[decision] if isinstance(decision, Decision) else decision
        return ConflictInfo(
            id=new_id("c"), case=case.value, strategy=strategy.name, result=result,  # type: ignore[arg-type]
            state="open" if result == "recorded" else "resolved", node=node_id, path=path,
            ts=w.ts, device=w.actor.device, user=w.actor.user.username, **fields,
        )

    async def record(self, w: Writer, info: ConflictInfo, node: Node | None, seq: int | None = None) -> ConflictInfo:
        """Keep the conflict (``open`` ones until resolved) and announce it with an event."""
        await w.tx.put_record(Record(CONFLICT, info.id, info.node, info.state, info.ts,
                                     info.model_dump(mode="json", exclude={"id"})))
        await w.note(EventType.CONFLICT, node, conflict=info, seq=seq)
        return info

    async def _park(self, w: Writer, node: Node, req: CommitContentRequest, info: ConflictInfo) -> Outcome:
        """Keep mine as a version of ``node`` that is not its head (its rev is the seq of
        the conflict event), then record the conflict."""
        seq = await w.tx.next_seq()
        info = info.model_copy(update={"mine": {**info.mine, "rev": seq}})
        await w.add_version(node, req.chunks, rev=seq, size=req.size,
                            mtime_ns=req.mtime_ns if req.mtime_ns is not None else time.time_ns(),
                            origin="conflict")
        return Outcome(node, await self.record(w, info, node, seq=seq))

    # -- content -----------------------------------------------------------------------------

    async def modify_modify(self, w: Writer, node: Node, req: CommitContentRequest) -> Outcome:
        await require_chunks(w.tx, req.chunks)
        path = await path_of(w.tx, node)
        strategy = await self.strategy(w, path)
        theirs_version = await w.tx.version(node.id, node.content_rev or 0)
        mine = Side(w.actor.device, req.mtime_ns if req.mtime_ns is not None else time.time_ns())
        theirs = Side(theirs_version.device if theirs_version else None, node.mtime_ns)
        decision = strategy.decide(Case.MODIFY_MODIFY, mine, theirs)
        info = self.info(w, Case.MODIFY_MODIFY, strategy, decision, node.id, path,
                         theirs={"rev": node.content_rev, "device": theirs.device},
                         mine={"base_rev": req.base_rev})
        if decision is Decision.MINE:
            new = await apply_commit(w, node, req)
            info = info.model_copy(update={"mine": {**info.mine, "rev": new.content_rev},
                                           "message": "mine is the content now; theirs is in the history"})
            return Outcome(new, await self.record(w, info, new))
        if decision is Decision.BOTH:
            copy = await copy_file(w, node, node.parent, node.name, req.chunks, req.size,
                                    req.mtime_ns, req.mode, device_label(w.actor), w.ts)
            info = info.model_copy(update={"conflicted_copy": copy, "mine": {**info.mine, "node": copy.id},
                                           "message": f"mine was saved as {copy.name!r}"})
            return Outcome(node, await self.record(w, info, node))
        message = ("mine is kept as a conflict version and waits for a decision" if decision is Decision.MANUAL
                   else "theirs stays; mine is kept as a conflict version in the history")
        return await self._park(w, node, req, info.model_copy(update={"message": message}))

    async def _deleted_at(self, tx: VaultTx, node: Node) -> float:
        """When a tombstone was deleted: from the trash entry covering it (0 if unknown)."""
        cur: Node | None = node
        while cur is not None and cur.deleted:
            for record in await tx.find_records(TRASH, key=cur.id, state="trashed"):
                if record.body.get("seq_from", 0) <= node.rev <= record.body.get("seq_to", 0):
                    return record.ts
            cur = await tx.node(cur.parent) if cur.parent else None
        return 0.0

    async def modify_deleted(self, w: Writer, node: Node, req: CommitContentRequest) -> Outcome:
        """A commit to a file deleted meanwhile (modify/delete)."""
        await require_chunks(w.tx, req.chunks)
        path = await path_of(w.tx, node)
        strategy = await self.strategy(w, path)
        mine = Side(w.actor.device, req.mtime_ns if req.mtime_ns is not None else time.time_ns())
        theirs = Side(None, int(await self._deleted_at(w.tx, node) * 1e9))
        decision = strategy.decide(Case.MODIFY_DELETE, mine, theirs)
        info = self.info(w, Case.MODIFY_DELETE, strategy, decision, node.id, path,
                         theirs={"rev": node.rev, "deleted": True}, mine={"base_rev": req.base_rev})
        if decision in (Decision.MINE, Decision.BOTH):
            back = await bring_back(w, node, req.chunks, size=req.size,
                                    mode=req.mode if req.mode is not None else node.mode,
                                    mtime_ns=mine.time_ns)
            await w.add_version(back, req.chunks)
            info = info.model_copy(update={"result": "mine", "mine": {**info.mine, "rev": back.content_rev},
                                           "message": "the modification survives: the file is back"})
            return Outcome(back, await self.record(w, info, back))
        message = ("the file stays deleted; mine is kept as a version of it (restore it from the trash)"
                   if decision is Decision.THEIRS else
                   "the file stays deleted until a decision; mine is kept as a version of it")
        return await self._park(w, node, req, info.model_copy(update={"message": message}))

    async def delete_modified(self, w: Writer, node: Node, req: DeleteNodeRequest) -> tuple[bool, ConflictInfo]:
        """A delete of a file whose content changed since the deleter's base (delete/modify).
        Returns (apply the delete?, the conflict)."""
        path = await path_of(w.tx, node)
        strategy = await self.strategy(w, path)
        mine = Side(w.actor.device, req.at_ns if req.at_ns is not None else time.time_ns())
        decision = strategy.decide(Case.DELETE_MODIFY, mine, Side(None, node.mtime_ns))
        applied = decision is Decision.MINE
        info = self.info(w, Case.DELETE_MODIFY, strategy, decision, node.id, path,
                         theirs={"rev": node.content_rev}, mine={"base_rev": req.base_rev, "delete": True},
                         message="the delete was applied; the modified file is in the trash" if applied
                         else "the modification survives: the delete was not applied")
        return applied, info

    def already_deleted(self, node: Node) -> ConflictInfo:
        """delete/delete: nothing to do, nothing recorded."""
        return ConflictInfo(id="", case="delete_delete", strategy="keep-both", result="already",
                            node=node.id, path="", ts=time.time(), message="already deleted")

    async def survivors(self, w: Writer, node: Node, seen: int, at_ns: int | None) -> Callable[[Node], bool]:
        """For a directory delete: which nodes inside it, changed after ``seen``, survive."""
        strategy = await self.strategy(w, await path_of(w.tx, node))
        mine = Side(w.actor.device, at_ns if at_ns is not None else time.time_ns())

        def survives(n: Node) -> bool:
            return n.rev > seen and strategy.decide(
                Case.DIR_CHANGED, mine, Side(None, n.mtime_ns)) is not Decision.MINE

        return survives

    async def dir_changed(self, w: Writer, node: Node, survivors: int, deleted: int) -> ConflictInfo:
        path = await path_of(w.tx, node)
        strategy = await self.strategy(w, path)
        return self.info(w, Case.DIR_CHANGED, strategy, Decision.BOTH, node.id, path,
                         theirs={"survivors": survivors}, mine={"deleted": deleted},
                         message=f"{survivors} node(s) changed or added inside since you looked were kept")

    # -- names -------------------------------------------------------------------------------

    async def parent_deleted(self, w: Writer, node_id: str, parent: Node, name: str) -> ConflictInfo:
        path = _join(await path_of(w.tx, parent), name)
        strategy = await self.strategy(w, path)
        return self.info(w, Case.PARENT_DELETED, strategy, Decision.BOTH, node_id, path,
                         theirs={"dir": parent.id},
                         message="the directory was deleted meanwhile and is back to hold this")

    async def name_clash(self, w: Writer, parent: Node, taken: Node, node_id: str, kind: NodeKind,
                         mtime_ns: int | None) -> tuple[str, Node | None, ConflictInfo]:
        """A create whose name was taken meanwhile. Returns (the name to create under, the
        directory to merge into, the conflict)."""
        path = _join(await path_of(w.tx, parent), taken.name)
        strategy = await self.strategy(w, path)
        if kind is NodeKind.DIR and taken.kind is NodeKind.DIR:
            return taken.name, taken, self.info(
                w, Case.NAME_CLASH, strategy, "merged", node_id, path, theirs={"node": taken.id},
                message=f"a directory of this name exists: use {taken.id}")
        mine = Side(w.actor.device, mtime_ns if mtime_ns is not None else time.time_ns())
        theirs = Side(await self._device_of(w.tx, taken), taken.mtime_ns)
        decision = strategy.decide(Case.NAME_CLASH, mine, theirs)
        info = self.info(w, Case.NAME_CLASH, strategy, decision, node_id, path,
                         theirs={"node": taken.id}, mine={"name": taken.name})
        if decision is Decision.MINE:
            moved = await self._rename_away(w, taken, theirs.device or "elsewhere")
            return taken.name, None, info.model_copy(update={
                "theirs": {"node": taken.id, "name": moved.name},
                "message": f"theirs was renamed to {moved.name!r}"})
        name = await free_name(w.tx, parent.id, lambda n: conflicted_name(
            taken.name, device_label(w.actor), w.ts, kind is NodeKind.DIR, n))
        return name, None, info.model_copy(update={
            "mine": {"name": taken.name, "as": name}, "message": f"mine was created as {name!r}"})

    async def move_clash(self, w: Writer, node: Node, parent: Node, name: str) -> tuple[str, ConflictInfo]:
        """A move onto a name taken meanwhile (without ``replace``): mine gets a conflicted name."""
        path = _join(await path_of(w.tx, parent), name)
        strategy = await self.strategy(w, path)
        free = await free_name(w.tx, parent.id, lambda n: conflicted_name(
            name, device_label(w.actor), w.ts, node.kind is NodeKind.DIR, n))
        return free, self.info(w, Case.NAME_CLASH, strategy, Decision.BOTH, node.id, path,
                               mine={"name": name, "as": free}, message=f"{name!r} was taken: moved as {free!r}")

    async def _device_of(self, tx: VaultTx, node: Node) -> str | None:
        if node.kind is not NodeKind.FILE:
            return None
        version = await tx.version(node.id, node.content_rev or 0)
        return version.device if version else None

    async def _rename_away(self, w: Writer, node: Node, device: str) -> Node:
        free = await free_name(w.tx, node.parent or "root", lambda n: conflicted_name(
            node.name, device, w.ts, node.kind is NodeKind.DIR, n))
        return await w.save(node, EventType.MOVE, old=node, name=free)

    async def stale_update(self, w: Writer, node: Node, req: UpdateNodeRequest
                           ) -> tuple[tuple[str | None, str, int | None, int | None], ConflictInfo | None]:
        """A rename/setattr on a stale base: what changed on each side since it? Fields only
        mine changed apply; fields both changed are decided by the strategy. Returns the
        effective (parent, name, mode, mtime_ns) and the conflict, if any."""
        base = await w.tx.node_at(node.id, req.base_rev)   # None: history pruned, assume all changed
        here = (node.parent, node.name)
        was = (base.parent, base.name) if base else None
        want = (req.parent if req.parent is not None else node.parent,
                req.name if req.name is not None else node.name)
        mode, mtime = req.mode, req.mtime_ns
        path = await path_of(w.tx, node)
        strategy = await self.strategy(w, path)
        mine = Side(w.actor.device, time.time_ns())
        theirs = Side(None, 0)   # arrival order: theirs was first
        info = None
        mine_moves = (req.parent is not None or req.name is not None) and want != (was or here)
        if mine_moves and was != here and want != here:
            decision = strategy.decide(Case.RENAME_RENAME, mine, theirs)
            info = self.info(w, Case.RENAME_RENAME, strategy, decision, node.id, path,
                             mine={"parent": want[0], "name": want[1]},
                             theirs={"parent": node.parent, "name": node.name})
            if decision not in (Decision.MINE, Decision.BOTH):
                want = here
                info = info.model_copy(update={"message": "theirs keeps its name; mine was not applied"
                                               + (" (waits for a decision)" if decision is Decision.MANUAL else "")})
            else:
                info = info.model_copy(update={"result": "mine", "message": "the later rename wins"})
        for field_name, value in (("mode", mode), ("mtime_ns", mtime)):
            if value is None or value == getattr(node, field_name):
                continue
            if base is not None and getattr(base, field_name) == getattr(node, field_name):
                continue     # only mine changed it
            if strategy.decide(Case.ATTR_ATTR, mine, theirs) not in (Decision.MINE, Decision.BOTH):
                if field_name == "mode":
                    mode = None
                else:
                    mtime = None
        return (want[0], want[1], mode, mtime), info

    async def changed_deleted(self, w: Writer, node: Node, req: UpdateNodeRequest) -> Outcome:
        """A rename/setattr of a node deleted meanwhile: it comes back (with the change) when
        the strategy favours mine, else the delete stands (metadata is not kept)."""
        path = await path_of(w.tx, node)
        strategy = await self.strategy(w, path)
        mine = Side(w.actor.device, time.time_ns())
        theirs = Side(None, int(await self._deleted_at(w.tx, node) * 1e9))
        decision = strategy.decide(Case.MODIFY_DELETE, mine, theirs)
        info = self.info(w, Case.MODIFY_DELETE, strategy, decision, node.id, path,
                         theirs={"rev": node.rev, "deleted": True})
        if decision not in (Decision.MINE, Decision.BOTH):
            info = info.model_copy(update={"result": "theirs", "state": "resolved",
                                           "message": "the node stays deleted; the change was not applied"})
            return Outcome(node, await self.record(w, info, node))
        changes: dict[str, Any] = {}
        if req.mode is not None:
            changes["mode"] = req.mode
        if req.mtime_ns is not None:
            changes["mtime_ns"] = req.mtime_ns
        back = await bring_back(w, node, **changes)
        if req.parent is not None or req.name is not None:
            parent_id = req.parent or back.parent
            parent, _ = await w.revive_chain(parent_id or "root")
            name = req.name or back.name
            taken = await w.tx.child(parent.id, name)
            if taken is not None and taken.id != back.id:
                name = await free_name(w.tx, parent.id, lambda n: conflicted_name(
                    req.name or back.name, device_label(w.actor), w.ts, back.kind is NodeKind.DIR, n))
            if (parent.id, name) != (back.parent, back.name):
                back = await w.save(back, EventType.MOVE, old=back, parent=parent.id, name=name)
        info = info.model_copy(update={"result": "mine", "message": "the change survives: the node is back"})
        return Outcome(back, await self.record(w, info, back))

    # -- the API: list and resolve -----------------------------------------------------------

    async def list(self, actor: Actor, vault_id: str, state: str | None, limit: int = 1000) -> list[ConflictInfo]:
        await require_role(self.store, actor, vault_id, "read")
        records = await self.store.find_records(vault_id, CONFLICT, state=state, limit=limit, newest_first=True)
        out = []
        for record in records:
            info = ConflictInfo.model_validate({"id": record.id, **record.body})
            if info.state == "open" and info.case != "name_clash":
                # Where the file is now (a name clash keeps the name both sides wanted).
                node = await self.store.node(vault_id, info.node)
                if node is not None and not node.deleted:
                    info = info.model_copy(update={"path": await self._store_path(vault_id, node)})
            out.append(info)
        return out

    async def _store_path(self, vault_id: str, node: Node) -> str:
        parts: list[str] = []
        cur: Node | None = node
        while cur is not None and cur.parent is not None and len(parts) < 4096:
            parts.append(cur.name)
            cur = await self.store.node(vault_id, cur.parent)
        return "/".join(reversed(parts))

    async def resolve(self, actor: Actor, vault_id: str, conflict_id: str, keep: Keep,
                      write: Callable[..., Awaitable[Any]]) -> ConflictInfo:
        async def fn(w: Writer) -> ConflictInfo:
            record = await w.tx.get_record(CONFLICT, conflict_id)
            if record is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "no such conflict", conflict=conflict_id)
            info = ConflictInfo.model_validate({"id": record.id, **record.body})
            if info.state != "open":
                raise ServiceError(ErrorCode.BAD_REQUEST, f"conflict is already resolved ({info.resolution})",
                                   conflict=info.model_dump(mode="json"))
            node = await w.tx.node(info.node)
            if node is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "the conflict's node is gone", node=info.node)
            node = await _Resolver(w, info).run(node, keep)
            info = info.model_copy(update={"state": "resolved", "resolution": keep,
                                           "message": f"resolved: kept {keep}"})
            await w.tx.put_record(Record(CONFLICT, info.id, info.node, "resolved", record.ts,
                                         info.model_dump(mode="json", exclude={"id"})))
            await w.note(EventType.CONFLICT, node, conflict=info)
            return info

        return await write(actor, vault_id, fn)


class _Resolver:
    """Carries out ``keep`` for one open (manual) conflict."""

    def __init__(self, w: Writer, info: ConflictInfo):
        self.w = w
        self.info = info

    async def _mine_version(self, node: Node):
        version = await self.w.tx.version(node.id, int(self.info.mine.get("rev", -1)))
        if version is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "mine's version is no longer kept", node=node.id)
        return version

    async def run(self, node: Node, keep: Keep) -> Node:
        w, case = self.w, self.info.case
        if keep == "theirs" or (keep == "both" and case in ("delete_modify", "name_clash")):
            if keep == "theirs" and case == "name_clash":
                # Mine was created under a conflicted name: it goes to the trash.
                if not node.deleted:
                    await w.trash(node, reason="conflict")
                    node = await w.tx.node(node.id) or node
            return node
        if case in ("modify_modify", "modify_delete"):
            version = await self._mine_version(node)
            req = CommitContentRequest(base_rev=node.rev, chunks=list(version.chunks), size=version.size,
                                       mtime_ns=version.mtime_ns)
            if node.deleted:
                back = await bring_back(w, node, version.chunks, size=version.size,
                                        mtime_ns=version.mtime_ns)
                await w.add_version(back, version.chunks, origin=f"restore:{version.rev}")
                return back
            if keep == "mine" or case == "modify_delete":
                return await apply_commit(w, node, req, origin=f"restore:{version.rev}")
            await copy_file(w, node, node.parent, node.name, version.chunks, version.size,
                            version.mtime_ns, None, self.info.device or "unknown", self.info.ts)
            return node
        if case == "delete_modify":     # keep mine: the delete
            if not node.deleted:
                await w.trash(node, reason="conflict")
            return await w.tx.node(node.id) or node
        if case == "rename_rename":
            parent, _ = await w.revive_chain(self.info.mine.get("parent") or "root")
            name = self.info.mine.get("name") or node.name
            if keep == "both":
                if node.kind is not NodeKind.FILE:
                    raise ServiceError(ErrorCode.BAD_REQUEST, "a directory cannot keep both names: "
                                       "choose mine or theirs")
                version = await w.tx.version(node.id, node.content_rev or 0)
                await copy_file(w, node, parent.id, name, version.chunks if version else (), node.size,
                                node.mtime_ns, node.mode, self.info.device or "unknown", self.info.ts)
                return node
            taken = await w.tx.child(parent.id, name)
            if taken is not None and taken.id != node.id:
                name = await free_name(w.tx, parent.id, lambda n: conflicted_name(
                    name, self.info.device or "unknown", self.info.ts, node.kind is NodeKind.DIR, n))
            return await w.save(node, EventType.MOVE, old=node, parent=parent.id, name=name)
        if case == "name_clash":        # keep mine: it takes the name, theirs goes to the trash
            theirs = await w.tx.node(str(self.info.theirs.get("node")))
            wanted = self.info.mine.get("name") or node.name
            if theirs is not None and not theirs.deleted and theirs.name == wanted and theirs.parent == node.parent:
                await w.trash(theirs, reason="conflict")
            if node.deleted:
                return await w.revive(node, name=wanted)
            if await w.tx.child(node.parent or "root", wanted) is None:
                return await w.save(node, EventType.MOVE, old=node, name=wanted)
            return node
        raise ServiceError(ErrorCode.BAD_REQUEST, f"conflicts of case {case!r} are not resolved by hand")

