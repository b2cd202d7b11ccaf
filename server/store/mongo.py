"""The scale-out metadata store: MongoDB through pymongo's ``AsyncMongoClient``.

Why pymongo's own async client: Motor, the former async driver, reached end of life in
May 2026; ``AsyncMongoClient`` is its replacement and speaks asyncio natively.

Production runs a replica set (see ``docker-compose.yml``): every vault write is one
multi-document transaction with write concern ``majority`` + journal, so an acknowledged
write survives the loss of the primary and a kill -9 of the API instance.

Layout (one database, named by the URL's path, default ``gobi``):

- ``vaults``    ``_id`` = vault id; ``head_seq`` is the seq counter. ``next_seq`` is a
  ``$inc`` on it inside the write's transaction, so two writers of one vault conflict on
  that document and one of them is retried: seqs are contiguous and commit in order.
- ``nodes``     temporal rows (``seq_from``, ``seq_to``; ``seq_to`` = ``CURRENT`` for the
  live row), with a partial unique index on ``(vault_id, parent, name)`` over current,
  not deleted rows: live names stay unique whatever the service layer does.
- ``events``    ``(vault_id, seq)`` unique; optionally a TTL index on ``at`` implementing
  the retention even when no instance runs ``prune``.
- ``users`` (unique ``username``), ``sessions``, ``members`` (unique ``(vault_id,
  user_id)``), ``versions``, ``chunks`` (``_id`` = ``vault:hash``; ``refs`` = kept
  versions naming it, ``doomed`` set while garbage collection deletes it), ``records``
  (``_id`` = ``vault:kind:id``: trash entries, holds, conflicts, settings), ``meta``.

Transactions and conflicts: ``run_write`` retries the whole ``fn`` when the database says
the transaction hit a transient error (label ``TransientTransactionError``, code 112
``WriteConflict``, or mongoeco's unlabelled "Write conflict"), with jittered exponential
back-off, the way pymongo's ``with_transaction`` does; a commit whose outcome is unknown
is re-committed. Writers of one vault inside one process queue on a per-vault lock first,
so with MongoDB conflicts only arise between instances. A transaction that conflicted
retries alone in its instance (and for a second after, all of them do), so it cannot be
starved; that matters on servers whose conflicts are coarser than MongoDB's per-document
ones (mongoeco: any two concurrent transactions). A lost connection surfaces as
``StoreUnavailable`` (HTTP 503).

Reads of the event log are coalesced (see ``events_after``): a doorbell that wakes 1,000
sockets of a vault costs one query per instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)
from pymongo.write_concern import WriteConcern

from gobi.protocol import Event, Node, NodeKind

from .base import (
    ChunkStats,
    MetadataStore,
    Record,
    SessionRecord,
    StoreUnavailable,
    UserRecord,
    UsernameTaken,
    VaultGone,
    VaultRecord,
    VaultTx,
    VersionRecord,
    manifest_from_rows,
    manifest_rows,
)

T = TypeVar("T")
log = logging.getLogger("gobi.server.store.mongo")

CURRENT = 2**63 - 1  # seq_to of a node's current row (same sentinel as SQLite)
SCHEMA_VERSION = 2
WRITE_CONCERN = WriteConcern("majority", j=True)
#: How long ``run_write`` keeps retrying a conflicting transaction before giving up.
CONTENTION_TIMEOUT = 30.0
#: After a write conflict, how long this instance runs its transactions one at a time.
CONTENDED_FOR = 1.0
_WRITE_CONFLICT = 112
_INDEX_OPTIONS_CONFLICT = (85, 86)
_BATCH = 1000

# Defaults that suit a server; any of them given in the URL wins.
_CLIENT_DEFAULTS = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "retryWrites": True,
    "retryReads": True,
    "appname": "gobi",
}


def _is_transient(exc: PyMongoError) -> bool:
    if exc.has_error_label("TransientTransactionError"):
        return True
    if isinstance(exc, OperationFailure):
        if exc.code == _WRITE_CONFLICT:
            return True
        # mongoeco reports conflicts at commit as an unlabelled OperationFailure.
        return exc.code is None and "write conflict" in str(exc).lower()
    return False


def _discard_server_session(s: AsyncClientSession) -> None:
    """Do not reuse this session's server-side id after a failed transaction.

    pymongo pools server sessions (lsids). mongoeco keeps the state of a transaction whose
    commit failed with a write conflict attached to the lsid, so every later transaction
    on a reused lsid fails too; a fresh lsid avoids that. pymongo does the same itself
    after network errors, and real MongoDB does not mind.
    """
    server_session = getattr(s, "_server_session", None)
    mark_dirty = getattr(server_session, "mark_dirty", None)
    if mark_dirty is not None:
        mark_dirty()


def _translate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn a lost database connection into ``StoreUnavailable``."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except ConnectionFailure as exc:
            raise StoreUnavailable(f"MongoDB unreachable: {exc}") from exc

    return wrapper


# -- documents <-> records ------------------------------------------------------------------

def _node_doc(vault_id: str, node: Node, ts: float) -> dict[str, Any]:
    return {
        "vault_id": vault_id,
        "node_id": node.id,
        "seq_from": node.rev,
        "seq_to": CURRENT,
        "ts_from": ts,
        "ts_to": None,
        "parent": node.parent,
        "name": node.name,
        "kind": node.kind.value,
        "size": node.size,
        "mtime_ns": node.mtime_ns,
        "mode": node.mode,
        "target": node.target,
        "content_rev": node.content_rev,
        "deleted": bool(node.deleted),
        "rdev": node.rdev,
        "inode": node.inode,
    }


def _node(doc: dict[str, Any]) -> Node:
    return Node(
        id=doc["node_id"],
        rev=doc["seq_from"],
        parent=doc["parent"],
        name=doc["name"],
        kind=NodeKind(doc["kind"]),
        size=doc["size"],
        mtime_ns=doc["mtime_ns"],
        mode=doc["mode"],
        target=doc["target"],
        content_rev=doc["content_rev"],
        deleted=bool(doc["deleted"]),
        # Documents written before device nodes existed have no rdev: none was a device.
        rdev=doc.get("rdev", 0),
        # Documents written before hard links have no inode: every name was a file of its own.
        inode=doc.get("inode"),
    )


def _version_doc(vault_id: str, v: VersionRecord) -> dict[str, Any]:
    return {
        "vault_id": vault_id,
        "node_id": v.node_id,
        "rev": v.rev,
        "size": v.size,
        "mtime_ns": v.mtime_ns,
        "chunks": manifest_rows(v.chunks),
        "ts": v.ts,
        "device": v.device,
        "user": v.user,
        "origin": v.origin,
    }


def _version(doc: dict[str, Any]) -> VersionRecord:
    return VersionRecord(
        node_id=doc["node_id"],
        rev=doc["rev"],
        size=doc["size"],
        mtime_ns=doc["mtime_ns"],
        chunks=manifest_from_rows(doc["chunks"]),
        ts=doc["ts"],
        device=doc["device"],
        user=doc["user"],
        origin=doc.get("origin"),
    )


def _record_doc(vault_id: str, r: Record) -> dict[str, Any]:
    return {"_id": f"{vault_id}:{r.kind}:{r.id}", "vault_id": vault_id, "kind": r.kind,
            "rid": r.id, "key": r.key, "state": r.state, "ts": r.ts, "body": r.body}


def _record(doc: dict[str, Any]) -> Record:
    return Record(kind=doc["kind"], id=doc["rid"], key=doc["key"], state=doc["state"],
                  ts=doc["ts"], body=doc["body"])


def _record_query(vault_id: str, kind: str, key: str | None, state: str | None,
                  since_ts: float | None, before_ts: float | None) -> dict[str, Any]:
    q: dict[str, Any] = {"vault_id": vault_id, "kind": kind}
    if key is not None:
        q["key"] = key
    if state is not None:
        q["state"] = state
    ts: dict[str, float] = {}
    if since_ts is not None:
        ts["$gte"] = since_ts
    if before_ts is not None:
        ts["$lt"] = before_ts
    if ts:
        q["ts"] = ts
    return q


async def _add_refs(db: Any, s: AsyncClientSession | None, vault_id: str, hashes: Sequence[str | None],
                    delta: int) -> None:
    # None: a hole's entry, which references no chunk.
    ids = [_chunk_id(vault_id, h) for h in dict.fromkeys(hashes) if h is not None]
    for i in range(0, len(ids), _BATCH):
        await db.chunks.update_many({"_id": {"$in": ids[i : i + _BATCH]}}, {"$inc": {"refs": delta}}, session=s)


def _vault(doc: dict[str, Any]) -> VaultRecord:
    return VaultRecord(
        id=doc["_id"],
        name=doc["name"],
        owner_id=doc["owner_id"],
        head_seq=doc["head_seq"],
        created_at=doc["created_at"],
        history_floor=doc.get("history_floor", 0),
    )


def _user(doc: dict[str, Any]) -> UserRecord:
    return UserRecord(
        id=doc["_id"],
        username=doc["username"],
        password_hash=doc["password_hash"],
        is_admin=bool(doc["is_admin"]),
        created_at=doc["created_at"],
    )


def _chunk_id(vault_id: str, hash: str) -> str:
    return f"{vault_id}:{hash}"


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


_CURRENT_LIVE = {"seq_to": CURRENT, "deleted": False}


class _MongoVaultTx(VaultTx):
    def __init__(self, store: "MongoStore", session: AsyncClientSession, vault_id: str):
        self.db = store._db
        self.s = session
        self.vault_id = vault_id

    async def node(self, node_id: str) -> Node | None:
        doc = await self.db.nodes.find_one(
            {"vault_id": self.vault_id, "node_id": node_id, "seq_to": CURRENT}, session=self.s
        )
        return _node(doc) if doc else None

    async def child(self, parent_id: str, name: str) -> Node | None:
        doc = await self.db.nodes.find_one(
            {"vault_id": self.vault_id, "parent": parent_id, "name": name, **_CURRENT_LIVE},
            session=self.s,
        )
        return _node(doc) if doc else None

    async def live_children(self, parent_id: str, limit: int) -> list[Node]:
        cursor = self.db.nodes.find(
            {"vault_id": self.vault_id, "parent": parent_id, **_CURRENT_LIVE}, session=self.s
        ).limit(limit)
        return [_node(d) async for d in cursor]

    async def names_of(self, inode: str) -> list[Node]:
        cursor = self.db.nodes.find(
            {"vault_id": self.vault_id, "inode": inode, **_CURRENT_LIVE}, session=self.s
        ).sort("node_id", ASCENDING)
        return [_node(d) async for d in cursor]

    async def next_seq(self) -> int:
        doc = await self.db.vaults.find_one_and_update(
            {"_id": self.vault_id, "deleted": False},
            {"$inc": {"head_seq": 1}},
            projection={"head_seq": 1},
            return_document=ReturnDocument.AFTER,
            session=self.s,
        )
        if doc is None:
            raise VaultGone(self.vault_id)
        return doc["head_seq"]

    async def save_node(self, node: Node, ts: float) -> None:
        await _save_node(self.db, self.s, self.vault_id, node, ts)

    async def add_event(self, event: Event) -> None:
        await self.db.events.insert_one(
            {
                "vault_id": self.vault_id,
                "seq": event.seq,
                "ts": event.ts,
                "at": _utc(event.ts),
                "body": event.model_dump(mode="json"),
            },
            session=self.s,
        )

    async def add_version(self, vault_id: str, version: VersionRecord) -> None:
        await self.db.versions.insert_one(_version_doc(vault_id, version), session=self.s)
        await _add_refs(self.db, self.s, vault_id, [c.hash for c in version.chunks], 1)

    async def version(self, node_id: str, rev: int) -> VersionRecord | None:
        doc = await self.db.versions.find_one(
            {"vault_id": self.vault_id, "node_id": node_id, "rev": rev}, session=self.s)
        return _version(doc) if doc else None

    async def versions(self, node_id: str) -> list[VersionRecord]:
        cursor = self.db.versions.find(
            {"vault_id": self.vault_id, "node_id": node_id}, session=self.s).sort("rev", DESCENDING)
        return [_version(d) async for d in cursor]

    async def drop_versions(self, node_id: str, revs: Sequence[int]) -> int:
        dropped = 0
        for rev in revs:
            doc = await self.db.versions.find_one_and_delete(
                {"vault_id": self.vault_id, "node_id": node_id, "rev": rev},
                projection={"chunks": 1}, session=self.s)
            if doc is not None:
                dropped += 1
                await _add_refs(self.db, self.s, self.vault_id, [c[0] for c in doc["chunks"]], -1)
        return dropped

    async def missing_chunks(self, hashes: Sequence[str]) -> list[str]:
        return await _missing_chunks(self.db, self.vault_id, hashes, self.s)

    async def doom_chunks(self, before_ts: float, now: float, limit: int) -> list[tuple[str, int]]:
        # Touch the vault document: a commit that references one of these chunks in a
        # concurrent transaction conflicts with this one (it increments the seq there),
        # so one of the two is retried and sees the other's outcome.
        await self.db.vaults.update_one({"_id": self.vault_id}, {"$inc": {"gc_epoch": 1}}, session=self.s)
        query = {"vault_id": self.vault_id, "refs": {"$lte": 0}, "doomed": None, "ts": {"$lt": before_ts}}
        found = [d async for d in self.db.chunks.find(
            query, projection={"hash": 1, "size": 1}, session=self.s).limit(limit)]
        if found:
            await self.db.chunks.update_many(
                {**query, "_id": {"$in": [d["_id"] for d in found]}}, {"$set": {"doomed": now}}, session=self.s)
        return [(d["hash"], d["size"]) for d in found]

    async def node_at(self, node_id: str, seq: int) -> Node | None:
        doc = await self.db.nodes.find_one(
            {"vault_id": self.vault_id, "node_id": node_id, "seq_from": {"$lte": seq}, "seq_to": {"$gt": seq}},
            session=self.s)
        return _node(doc) if doc else None

    async def deleted_children(self, parent_id: str, seq_from: int, seq_to: int, limit: int,
                               newest_first: bool = False) -> list[Node]:
        cursor = self.db.nodes.find(
            {"vault_id": self.vault_id, "parent": parent_id, "seq_to": CURRENT, "deleted": True,
             "seq_from": {"$gte": seq_from, "$lte": seq_to}}, session=self.s,
        ).sort("seq_from", DESCENDING if newest_first else ASCENDING).limit(limit)
        return [_node(d) async for d in cursor]

    async def count_live_files(self, limit: int) -> int:
        return await self.db.nodes.count_documents(
            {"vault_id": self.vault_id, **_CURRENT_LIVE, "kind": {"$ne": "dir"}}, limit=limit, session=self.s)

    async def get_record(self, kind: str, record_id: str) -> Record | None:
        doc = await self.db.records.find_one({"_id": f"{self.vault_id}:{kind}:{record_id}"}, session=self.s)
        return _record(doc) if doc else None

    async def put_record(self, record: Record) -> None:
        doc = _record_doc(self.vault_id, record)
        await self.db.records.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=self.s)

    async def delete_record(self, kind: str, record_id: str) -> None:
        await self.db.records.delete_one({"_id": f"{self.vault_id}:{kind}:{record_id}"}, session=self.s)

    async def find_records(
        self, kind: str, *, key: str | None = None, state: str | None = None,
        since_ts: float | None = None, limit: int = 1000,
    ) -> list[Record]:
        cursor = self.db.records.find(
            _record_query(self.vault_id, kind, key, state, since_ts, None), session=self.s,
        ).sort([("ts", ASCENDING), ("rid", ASCENDING)]).limit(limit)
        return [_record(d) async for d in cursor]

    async def mark_vault_deleted(self) -> None:
        await self.db.vaults.update_one(
            {"_id": self.vault_id}, {"$set": {"deleted": True}}, session=self.s
        )


async def _save_node(db: Any, s: AsyncClientSession, vault_id: str, node: Node, ts: float) -> None:
    # Close the current row first: the partial unique index on live names must not see
    # the old and the new row of the same node as two live nodes.
    await db.nodes.update_one(
        {"vault_id": vault_id, "node_id": node.id, "seq_to": CURRENT},
        {"$set": {"seq_to": node.rev, "ts_to": ts}},
        session=s,
    )
    await db.nodes.insert_one(_node_doc(vault_id, node, ts), session=s)


async def _missing_chunks(
    db: Any, vault_id: str, hashes: Sequence[str], session: AsyncClientSession | None = None
) -> list[str]:
    if not hashes:
        return []
    unique = list(dict.fromkeys(hashes))
    present: set[str] = set()
    for i in range(0, len(unique), _BATCH):
        batch = [_chunk_id(vault_id, h) for h in unique[i : i + _BATCH]]
        cursor = db.chunks.find({"_id": {"$in": batch}, "doomed": None}, projection={"hash": 1},
                                session=session)
        present.update([d["hash"] async for d in cursor])
    return [h for h in unique if h not in present]


def _client_url(url: str) -> tuple[str, dict[str, Any]]:
    given = {k.lower() for k, _ in parse_qsl(urlsplit(url).query)}
    return url, {k: v for k, v in _CLIENT_DEFAULTS.items() if k.lower() not in given}


class _ConflictGate:
    """Transactions share the gate; one that must run alone (after a conflict) takes it
    exclusively: it waits for the running ones to finish and new ones wait for it."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._wanted = 0  # exclusive waiters: they go before new shared holders

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive and not self._wanted)
            self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            self._wanted += 1
            try:
                await self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._wanted -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class MongoStore(MetadataStore):
    """``mongodb://host[,host…]/DBNAME?replicaSet=rs0…``; see the module docstring.

    ``event_retention`` (seconds), when given, adds a TTL index on events: MongoDB itself
    drops events past retention, even if no gobi instance runs ``prune``.
    """

    def __init__(self, url: str, event_retention: float | None = None):
        self.url = url
        self.event_retention = event_retention
        self._client: AsyncMongoClient | None = None
        self._db: Any = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._gate = _ConflictGate()
        self._contended_until = 0.0
        self._reads: dict[tuple[str, int, int], asyncio.Future[list[Event]]] = {}

    # -- lifecycle -------------------------------------------------------------------

    @_translate
    async def open(self) -> None:
        if self._client is not None:
            return
        url, defaults = _client_url(self.url)
        client: AsyncMongoClient = AsyncMongoClient(url, tz_aware=True, **defaults)
        try:
            self._db = client.get_default_database("gobi")
            self._client = client
            await self._create_indexes()
        except BaseException:
            self._client = None
            await client.close()
            raise

    async def _create_indexes(self) -> None:
        db = self._db
        await db.users.create_index("username", unique=True, name="username")
        await db.sessions.create_index("user_id", name="by_user")
        await db.sessions.create_index("expires_at", name="by_expiry")
        await db.members.create_index(
            [("vault_id", ASCENDING), ("user_id", ASCENDING)], unique=True, name="member"
        )
        await db.members.create_index("user_id", name="by_user")
        await db.nodes.create_index(
            [("vault_id", ASCENDING), ("node_id", ASCENDING), ("seq_from", ASCENDING)],
            unique=True, name="row",
        )
        await db.nodes.create_index(
            [("vault_id", ASCENDING), ("node_id", ASCENDING), ("seq_to", ASCENDING)],
            name="current",
        )
        await db.nodes.create_index(
            [("vault_id", ASCENDING), ("parent", ASCENDING), ("name", ASCENDING)],
            unique=True, name="live_name", partialFilterExpression=dict(_CURRENT_LIVE),
        )
        await db.nodes.create_index("ts_to", name="superseded")
        # Hard links: the live names of a file (only documents that have an inode).
        await db.nodes.create_index(
            [("vault_id", ASCENDING), ("inode", ASCENDING)], name="inode",
            partialFilterExpression={**_CURRENT_LIVE, "inode": {"$type": "string"}})
        await db.nodes.create_index(
            [("vault_id", ASCENDING), ("ts_from", ASCENDING), ("seq_from", ASCENDING)], name="by_ts")
        await db.versions.create_index(
            [("vault_id", ASCENDING), ("node_id", ASCENDING), ("rev", ASCENDING)],
            unique=True, name="version",
        )
        await db.events.create_index(
            [("vault_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="seq"
        )
        await db.events.create_index("ts", name="by_ts")
        await db.versions.create_index("ts", name="by_ts")
        await db.chunks.create_index(
            [("vault_id", ASCENDING), ("refs", ASCENDING), ("ts", ASCENDING)], name="unreferenced")
        await db.records.create_index(
            [("vault_id", ASCENDING), ("kind", ASCENDING), ("key", ASCENDING), ("state", ASCENDING),
             ("ts", ASCENDING)], name="by_key")
        await db.records.create_index(
            [("kind", ASCENDING), ("state", ASCENDING), ("ts", ASCENDING)], name="by_state")
        await self._ensure_retention_index()
        meta = await db.meta.find_one({"_id": "schema_version"})
        if meta is not None and meta.get("value", 1) < 2:
            await self._migrate_refs()
        await db.meta.update_one(
            {"_id": "schema_version"}, {"$set": {"value": SCHEMA_VERSION}}, upsert=True
        )

    async def _migrate_refs(self) -> None:
        """Version 1 → 2: chunk reference counts, computed from the kept versions."""
        counts: dict[str, int] = {}
        async for v in self._db.versions.find({}, projection={"vault_id": 1, "chunks": 1}):
            for h in {c[0] for c in v["chunks"]} - {None}:
                cid = _chunk_id(v["vault_id"], h)
                counts[cid] = counts.get(cid, 0) + 1
        await self._db.chunks.update_many({"refs": None}, {"$set": {"refs": 0}})
        for cid, n in counts.items():
            await self._db.chunks.update_one({"_id": cid}, {"$set": {"refs": n}})

    async def _ensure_retention_index(self) -> None:
        events = self._db.events
        existing = (await events.index_information()).get("retention")
        if self.event_retention is None:
            return  # retention by ``prune`` only; an existing TTL index is left as it is
        seconds = max(1, int(self.event_retention))
        if existing is not None and existing.get("expireAfterSeconds") == seconds:
            return
        if existing is not None:
            try:
                await self._db.command(
                    "collMod", "events",
                    index={"name": "retention", "expireAfterSeconds": seconds},
                )
                return
            except OperationFailure:
                await events.drop_index("retention")  # servers without collMod
        await events.create_index("at", expireAfterSeconds=seconds, name="retention")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def ping(self) -> None:
        if self._client is None:
            raise StoreUnavailable("store is not open")
        try:
            await self._client.admin.command("ping")
        except PyMongoError as exc:
            raise StoreUnavailable(f"MongoDB unreachable: {exc}") from exc

    # -- transactions -------------------------------------------------------------------

    def _vault_lock(self, vault_id: str) -> asyncio.Lock:
        lock = self._locks.get(vault_id)
        if lock is None:
            lock = self._locks[vault_id] = asyncio.Lock()
        return lock

    async def _transaction(self, fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Run ``fn(session)`` in a transaction; retry it on transient conflicts.

        Shielded from the caller's cancellation like the SQLite store: a write that started
        finishes, so a client hanging up never leaves its outcome to chance.
        """
        if self._client is None:
            raise StoreUnavailable("store is not open")
        return await asyncio.shield(asyncio.ensure_future(self._retrying(fn)))

    async def _retrying(self, fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        assert self._client is not None
        deadline = time.monotonic() + CONTENTION_TIMEOUT
        delay = 0.002
        retry = False
        while True:
            try:
                # Transactions run side by side; one that conflicted retries alone in this
                # instance, so a stream of fresh ones cannot starve it, and for a moment
                # after a conflict every transaction here runs alone. MongoDB conflicts
                # per document (two instances writing one vault) and rarely gets here;
                # servers with coarser conflict detection, like mongoeco, where any two
                # concurrent transactions conflict, need this to make progress.
                alone = retry or time.monotonic() < self._contended_until
                async with self._gate.exclusive() if alone else self._gate.shared():
                    return await self._attempt_in_session(fn)
            except ConnectionFailure as exc:
                if not exc.has_error_label("TransientTransactionError") or time.monotonic() > deadline:
                    raise StoreUnavailable(f"MongoDB unreachable: {exc}") from exc
            except PyMongoError as exc:
                if not _is_transient(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreUnavailable("too much write contention; retry later") from exc
            retry = True
            self._contended_until = time.monotonic() + CONTENDED_FOR
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)

    async def _attempt_in_session(self, fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        assert self._client is not None
        async with self._client.start_session() as s:
            try:
                return await self._attempt(s, fn)
            except PyMongoError as exc:
                if isinstance(exc, ConnectionFailure) or _is_transient(exc):
                    _discard_server_session(s)
                raise

    async def _attempt(self, s: AsyncClientSession, fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        await s.start_transaction(write_concern=WRITE_CONCERN)
        try:
            result = await fn(s)
        except BaseException:
            if s.in_transaction:
                try:
                    await s.abort_transaction()
                except PyMongoError:
                    pass  # the server aborts it anyway when the session ends
            raise
        while True:
            try:
                await s.commit_transaction()
                return result
            except PyMongoError as exc:
                # Commit is idempotent: on an unknown outcome, commit again (as pymongo's
                # with_transaction does); anything else goes back to the retry loop.
                if not exc.has_error_label("UnknownTransactionCommitResult"):
                    raise
                await asyncio.sleep(0.01)

    # -- users and sessions ------------------------------------------------------------

    @_translate
    async def create_user(self, user: UserRecord) -> None:
        try:
            await self._db.users.insert_one({
                "_id": user.id, "username": user.username, "password_hash": user.password_hash,
                "is_admin": bool(user.is_admin), "created_at": user.created_at,
            })
        except DuplicateKeyError:
            raise UsernameTaken(user.username) from None

    @_translate
    async def user_by_name(self, username: str) -> UserRecord | None:
        doc = await self._db.users.find_one({"username": username})
        return _user(doc) if doc else None

    @_translate
    async def user_by_id(self, user_id: str) -> UserRecord | None:
        doc = await self._db.users.find_one({"_id": user_id})
        return _user(doc) if doc else None

    @_translate
    async def set_password(self, user_id: str, password_hash: str) -> None:
        async def fn(s: AsyncClientSession) -> None:
            await self._db.users.update_one(
                {"_id": user_id}, {"$set": {"password_hash": password_hash}}, session=s
            )
            # A password change ends every session of the user.
            await self._db.sessions.delete_many({"user_id": user_id}, session=s)

        await self._transaction(fn)

    @_translate
    async def create_session(self, session: SessionRecord) -> None:
        await self._db.sessions.insert_one({
            "_id": session.token_hash, "user_id": session.user_id,
            "created_at": session.created_at, "expires_at": session.expires_at,
        })

    @_translate
    async def session(self, token_hash: str) -> SessionRecord | None:
        doc = await self._db.sessions.find_one({"_id": token_hash})
        if doc is None:
            return None
        return SessionRecord(doc["_id"], doc["user_id"], doc["created_at"], doc["expires_at"])

    @_translate
    async def delete_session(self, token_hash: str) -> None:
        await self._db.sessions.delete_one({"_id": token_hash})

    # -- vaults and members -------------------------------------------------------------

    @_translate
    async def create_vault(self, vault: VaultRecord, root: Node) -> None:
        async def fn(s: AsyncClientSession) -> None:
            await self._db.vaults.insert_one({
                "_id": vault.id, "name": vault.name, "owner_id": vault.owner_id,
                "head_seq": vault.head_seq, "created_at": vault.created_at,
                "deleted": False, "history_floor": 0,
            }, session=s)
            await self._db.members.insert_one(
                {"vault_id": vault.id, "user_id": vault.owner_id, "role": "owner"}, session=s
            )
            await _save_node(self._db, s, vault.id, root, vault.created_at)

        await self._transaction(fn)

    @_translate
    async def vault(self, vault_id: str) -> VaultRecord | None:
        doc = await self._db.vaults.find_one({"_id": vault_id, "deleted": False})
        return _vault(doc) if doc else None

    @_translate
    async def vaults_of(self, user_id: str) -> list[tuple[VaultRecord, str]]:
        roles = {d["vault_id"]: d["role"] async for d in self._db.members.find({"user_id": user_id})}
        if not roles:
            return []
        cursor = self._db.vaults.find({"_id": {"$in": list(roles)}, "deleted": False})
        vaults = [_vault(d) async for d in cursor]
        vaults.sort(key=lambda v: (v.created_at, v.id))
        return [(v, roles[v.id]) for v in vaults]

    @_translate
    async def role(self, vault_id: str, user_id: str) -> str | None:
        doc = await self._db.members.find_one({"vault_id": vault_id, "user_id": user_id})
        if doc is None or await self.vault(vault_id) is None:
            return None
        return doc["role"]

    @_translate
    async def access(self, vault_id: str, user_id: str) -> tuple[VaultRecord, str] | None:
        # Both reads at once: this runs before nearly every request.
        member, vault = await asyncio.gather(
            self._db.members.find_one({"vault_id": vault_id, "user_id": user_id}),
            self._db.vaults.find_one({"_id": vault_id, "deleted": False}),
        )
        return (_vault(vault), member["role"]) if member and vault else None

    @_translate
    async def set_member(self, vault_id: str, user_id: str, role: str) -> None:
        await self._db.members.update_one(
            {"vault_id": vault_id, "user_id": user_id}, {"$set": {"role": role}}, upsert=True
        )

    @_translate
    async def remove_member(self, vault_id: str, user_id: str) -> None:
        await self._db.members.delete_one({"vault_id": vault_id, "user_id": user_id})

    @_translate
    async def members(self, vault_id: str) -> list[tuple[str, str]]:
        roles = {d["user_id"]: d["role"] async for d in self._db.members.find({"vault_id": vault_id})}
        if not roles:
            return []
        users = self._db.users.find({"_id": {"$in": list(roles)}}, projection={"username": 1})
        out = [(d["username"], roles[d["_id"]]) async for d in users]
        return sorted(out)

    # -- writes --------------------------------------------------------------------------

    @_translate
    async def run_write(self, vault_id: str, fn: Callable[[VaultTx], Awaitable[T]]) -> T:
        async def body(s: AsyncClientSession) -> T:
            vault = await self._db.vaults.find_one(
                {"_id": vault_id, "deleted": False}, projection={"_id": 1}, session=s
            )
            if vault is None:
                raise VaultGone(vault_id)
            return await fn(_MongoVaultTx(self, s, vault_id))

        # Writers of one vault in this process take turns: they would only conflict on
        # the vault's seq counter and be retried.
        async with self._vault_lock(vault_id):
            return await self._transaction(body)

    # -- chunks ---------------------------------------------------------------------------

    @_translate
    async def missing_chunks(self, vault_id: str, hashes: Sequence[str]) -> list[str]:
        return await _missing_chunks(self._db, vault_id, hashes)

    @_translate
    async def add_chunk(self, vault_id: str, hash: str, size: int, ts: float) -> bool:
        try:
            await self._db.chunks.insert_one(
                {"_id": _chunk_id(vault_id, hash), "vault_id": vault_id, "hash": hash,
                 "size": size, "ts": ts, "refs": 0, "doomed": None}
            )
        except DuplicateKeyError:
            return False
        return True

    @_translate
    async def chunk_size(self, vault_id: str, hash: str) -> int | None:
        doc = await self._db.chunks.find_one(
            {"_id": _chunk_id(vault_id, hash), "doomed": None}, projection={"size": 1})
        return doc["size"] if doc else None

    @_translate
    async def doomed_chunks(self, vault_id: str, hashes: Sequence[str] | None = None,
                            limit: int = 1000) -> list[str]:
        if hashes is None:
            cursor = self._db.chunks.find(
                {"vault_id": vault_id, "doomed": {"$ne": None}}, projection={"hash": 1}).limit(limit)
            return [d["hash"] async for d in cursor]
        unique = list(dict.fromkeys(hashes))
        found: set[str] = set()
        for i in range(0, len(unique), _BATCH):
            ids = [_chunk_id(vault_id, h) for h in unique[i : i + _BATCH]]
            cursor = self._db.chunks.find({"_id": {"$in": ids}, "doomed": {"$ne": None}}, projection={"hash": 1})
            found.update([d["hash"] async for d in cursor])
        return [h for h in unique if h in found]

    @_translate
    async def forget_chunks(self, vault_id: str, hashes: Sequence[str]) -> int:
        ids = [_chunk_id(vault_id, h) for h in dict.fromkeys(hashes)]
        gone = 0
        for i in range(0, len(ids), _BATCH):
            res = await self._db.chunks.delete_many({"_id": {"$in": ids[i : i + _BATCH]}, "doomed": {"$ne": None}})
            gone += res.deleted_count
        return gone

    @_translate
    async def chunk_stats(self, vault_id: str, before_ts: float) -> ChunkStats:
        got = {k: [0, 0] for k in ("referenced", "collectable", "in_grace", "doomed")}
        async for d in self._db.chunks.find({"vault_id": vault_id},
                                            projection={"size": 1, "refs": 1, "ts": 1, "doomed": 1}):
            state = ("doomed" if d.get("doomed") is not None else "referenced" if d.get("refs", 0) > 0
                     else "collectable" if d["ts"] < before_ts else "in_grace")
            got[state][0] += 1
            got[state][1] += d["size"]
        return ChunkStats(**{k: (v[0], v[1]) for k, v in got.items()})

    # -- node reads -----------------------------------------------------------------------

    @_translate
    async def node(self, vault_id: str, node_id: str) -> Node | None:
        doc = await self._db.nodes.find_one(
            {"vault_id": vault_id, "node_id": node_id, "seq_to": CURRENT}
        )
        return _node(doc) if doc else None

    @_translate
    async def child(self, vault_id: str, parent_id: str, name: str) -> Node | None:
        doc = await self._db.nodes.find_one(
            {"vault_id": vault_id, "parent": parent_id, "name": name, **_CURRENT_LIVE}
        )
        return _node(doc) if doc else None

    @_translate
    async def children(
        self, vault_id: str, parent_id: str, after_name: str | None, limit: int
    ) -> list[Node]:
        cursor = self._db.nodes.find(
            {"vault_id": vault_id, "parent": parent_id, "name": {"$gt": after_name or ""},
             **_CURRENT_LIVE}
        ).sort("name", ASCENDING).limit(limit)
        return [_node(d) async for d in cursor]

    @_translate
    async def list_tree(
        self, vault_id: str, at: int, after_id: str | None, limit: int
    ) -> list[Node]:
        cursor = self._db.nodes.find({
            "vault_id": vault_id,
            "node_id": {"$gt": after_id or ""},
            "seq_from": {"$lte": at},
            "seq_to": {"$gt": at},
            "deleted": False,
        }).sort("node_id", ASCENDING).limit(limit)
        return [_node(d) async for d in cursor]

    @_translate
    async def version(self, vault_id: str, node_id: str, rev: int) -> VersionRecord | None:
        doc = await self._db.versions.find_one({"vault_id": vault_id, "node_id": node_id, "rev": rev})
        return _version(doc) if doc else None

    @_translate
    async def versions(self, vault_id: str, node_id: str) -> list[VersionRecord]:
        cursor = self._db.versions.find({"vault_id": vault_id, "node_id": node_id}).sort(
            "rev", DESCENDING
        )
        return [_version(d) async for d in cursor]

    @_translate
    async def version_nodes(
        self, before_ts: float, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        # Walk the (vault_id, node_id, rev) index from the cursor and stop after ``limit``
        # distinct nodes, so one page costs what it returns (an aggregation would group
        # every old version each time).
        query: dict[str, Any] = {"ts": {"$lt": before_ts}}
        if after is not None:
            query["$or"] = [{"vault_id": {"$gt": after[0]}},
                            {"vault_id": after[0], "node_id": {"$gt": after[1]}}]
        out: list[tuple[str, str]] = []
        cursor = self._db.versions.find(query, projection={"vault_id": 1, "node_id": 1, "_id": 0}).sort(
            [("vault_id", ASCENDING), ("node_id", ASCENDING)])
        try:
            async for d in cursor:
                pair = (d["vault_id"], d["node_id"])
                if not out or out[-1] != pair:
                    if len(out) == limit:
                        break
                    out.append(pair)
        finally:
            await cursor.close()
        return out

    @_translate
    async def vault_ids(self) -> list[str]:
        return [d["_id"] async for d in self._db.vaults.find({"deleted": False}, projection={"_id": 1}).sort("_id", ASCENDING)]

    # -- records --------------------------------------------------------------------------

    @_translate
    async def get_record(self, vault_id: str, kind: str, record_id: str) -> Record | None:
        doc = await self._db.records.find_one({"_id": f"{vault_id}:{kind}:{record_id}"})
        return _record(doc) if doc else None

    @_translate
    async def find_records(
        self, vault_id: str, kind: str, *, key: str | None = None, state: str | None = None,
        since_ts: float | None = None, before_ts: float | None = None, limit: int = 1000,
        newest_first: bool = False,
    ) -> list[Record]:
        order = DESCENDING if newest_first else ASCENDING
        cursor = self._db.records.find(
            _record_query(vault_id, kind, key, state, since_ts, before_ts)
        ).sort([("ts", order), ("rid", order)]).limit(limit)
        return [_record(d) async for d in cursor]

    @_translate
    async def due_records(self, kind: str, state: str, before_ts: float, limit: int) -> list[tuple[str, Record]]:
        cursor = self._db.records.find(
            {"kind": kind, "state": state, "ts": {"$lt": before_ts}}
        ).sort("ts", ASCENDING).limit(limit)
        return [(d["vault_id"], _record(d)) async for d in cursor]

    # -- events ---------------------------------------------------------------------------

    async def events_after(self, vault_id: str, after: int, limit: int) -> list[Event]:
        """Coalesced: callers asking for the same page at the same time share one query.

        After a doorbell every socket of the vault on this instance asks for the events
        after the same seq; one round trip serves them all instead of one per socket. A
        caller that joins a query already under way may get a page that ends just before
        the commit it was woken for; its bell still holds that seq, so it reads again at
        once (``LocalBells.wait_beyond`` does not wait for a seq it has already seen).
        """
        key = (vault_id, after, limit)
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._events_after(vault_id, after, limit))
            self._reads[key] = shared
            shared.add_done_callback(lambda f: self._reads.pop(key, None) if self._reads.get(key) is f else None)
        # Shielded: one caller giving up (a socket closing) must not cancel the others' read.
        return list(await asyncio.shield(shared))

    @_translate
    async def _events_after(self, vault_id: str, after: int, limit: int) -> list[Event]:
        cursor = self._db.events.find(
            {"vault_id": vault_id, "seq": {"$gt": after}}, projection={"body": 1}
        ).sort("seq", ASCENDING).limit(limit)
        return [Event.model_validate(d["body"]) async for d in cursor]

    @_translate
    async def oldest_event_seq(self, vault_id: str) -> int | None:
        doc = await self._db.events.find_one(
            {"vault_id": vault_id}, projection={"seq": 1}, sort=[("seq", ASCENDING)]
        )
        return doc["seq"] if doc else None

    @_translate
    async def seq_at(self, vault_id: str, ts: float) -> tuple[int, float] | None:
        doc = await self._db.nodes.find_one(
            {"vault_id": vault_id, "ts_from": {"$lte": ts}}, projection={"seq_from": 1, "ts_from": 1},
            sort=[("ts_from", DESCENDING), ("seq_from", DESCENDING)],
        )
        return (doc["seq_from"], doc["ts_from"]) if doc else None

    # -- maintenance ----------------------------------------------------------------------

    @_translate
    async def prune(self, events_before_ts: float, history_before_ts: float) -> int:
        db = self._db
        dropped = (await db.events.delete_many({"ts": {"$lt": events_before_ts}})).deleted_count
        # Per vault: raise the floor to the newest seq_to about to be forgotten, then drop
        # exactly the rows at or below it. A crash in between leaves rows that are no
        # longer listable, never a listing with holes; the next prune finishes the job.
        old = {"seq_to": {"$ne": CURRENT}, "ts_to": {"$lt": history_before_ts}}
        floors = await (await db.nodes.aggregate([
            {"$match": old},
            {"$group": {"_id": "$vault_id", "floor": {"$max": "$seq_to"}}},
        ])).to_list()
        for row in floors:
            await db.vaults.update_one({"_id": row["_id"]}, {"$max": {"history_floor": row["floor"]}})
            await db.nodes.delete_many({
                "vault_id": row["_id"],
                "seq_to": {"$ne": CURRENT, "$lte": row["floor"]},
                "ts_to": {"$lt": history_before_ts},
            })
        await db.sessions.delete_many({"expires_at": {"$lt": time.time()}})
        return dropped
