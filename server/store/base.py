"""The metadata store interface: users, sessions, vaults, nodes, versions, chunks, events.

The service layer (``gobi.server.service``) holds every rule (base-rev checks, rename
semantics, permissions); a store only keeps records and makes a write atomic. There is one
implementation per database (``sqlite`` for the embedded default, ``mongo`` for scale-out)
and one contract suite (``tests/server/test_store_contract.py``) that runs against each.

Writes go through ``run_write(vault_id, fn)``: the store opens a transaction, calls
``await fn(tx)`` with a ``VaultTx`` bound to that vault, and commits. ``fn`` may be called
more than once if the database reports a transient write conflict (MongoDB does), so it
must not have side effects outside ``tx``. Inside one transaction, every ``tx.next_seq()``
allocates the vault's next event sequence number; seqs are contiguous because a rolled
back transaction releases its seqs with everything else.

Nodes are kept as a temporal table: ``save_node`` closes the node's current row and adds a
new one, so ``list_tree(at=S)`` can return the exact state of the vault at seq ``S`` while
writes continue (a consistent, paged initial listing). Rows superseded long enough ago are
dropped by ``prune``; listing before ``history_floor`` is refused.

Chunks carry a reference count: the number of kept versions naming them (``add_version``
adds one per distinct chunk of the version, ``drop_versions`` takes it back). Garbage
collection is two-phased so that it can never race an upload: ``doom_chunks`` marks
unreferenced chunks older than a grace period as *doomed* inside a vault transaction (so it
serialises with commits, which reference chunks in theirs); from then on a doomed chunk
counts as missing for commits and ``missing_chunks`` and uploads of it are refused until
the collector has deleted the object and ``forget_chunks`` the record.

A version's manifest is kept as ``[[hash, size], …]`` (``manifest_rows``); a hole (a run
of zeros, ``ChunkRef.hole``) is ``[null, size]``. Holes are not chunks: they have no chunk
record, no reference count and nothing in storage, so every chunk path skips them.

Small service records that need no schema of their own (trash entries, mass-delete holds,
recorded conflicts, vault settings) are kept as ``Record`` rows: ``(kind, id)`` per vault,
a ``key`` and a ``state`` to look them up by, a timestamp and a JSON body.

Exceptions:

    StoreError
    ├── UsernameTaken
    ├── VaultGone              the vault was deleted (or never existed) during the write
    └── StoreUnavailable       the database cannot be reached: retry later
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gobi.protocol import ChunkRef, Event, Node

T = TypeVar("T")


def manifest_rows(chunks: Sequence[ChunkRef]) -> list[list]:
    """How a store keeps a manifest: ``[hash, size]`` per entry, ``[None, size]`` a hole."""
    return [[c.hash, c.size] for c in chunks]


def manifest_from_rows(rows: Sequence[Sequence]) -> tuple[ChunkRef, ...]:
    return tuple(ChunkRef(hash=h, size=s) if h is not None else ChunkRef.zeros(s) for h, s in rows)


class StoreError(Exception):
    pass


class UsernameTaken(StoreError):
    pass


class VaultGone(StoreError):
    pass


class StoreUnavailable(StoreError):
    pass


@dataclass(frozen=True)
class UserRecord:
    id: str
    username: str
    password_hash: str
    is_admin: bool
    created_at: float


@dataclass(frozen=True)
class SessionRecord:
    token_hash: str
    user_id: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class VaultRecord:
    id: str
    name: str
    owner_id: str
    head_seq: int
    created_at: float
    history_floor: int = 0   # tree listings at a seq below this are no longer possible


@dataclass(frozen=True)
class VersionRecord:
    """One accepted content commit of a file.

    ``origin`` says how a version came to be when it was not a plain commit:
    ``"restore:R"`` (version R made the head again), ``"conflict"`` (a commit that lost a
    conflict, kept in history but never the head).
    """

    node_id: str
    rev: int
    size: int
    mtime_ns: int
    chunks: tuple[ChunkRef, ...]
    ts: float
    device: str | None
    user: str | None
    origin: str | None = None


@dataclass(frozen=True)
class Record:
    """A small service record of one vault (see the module docstring)."""

    kind: str
    id: str
    key: str
    state: str
    ts: float
    body: dict


@dataclass(frozen=True)
class ChunkStats:
    """Chunks of a vault by state: (count, plaintext bytes) each."""

    referenced: tuple[int, int]
    collectable: tuple[int, int]   # unreferenced and older than the grace period
    in_grace: tuple[int, int]      # unreferenced but recent: maybe an upload not committed yet
    doomed: tuple[int, int]        # being collected


class VaultTx(abc.ABC):
    """Reads and writes of one vault inside one transaction."""

    vault_id: str

    @abc.abstractmethod
    async def node(self, node_id: str) -> Node | None:
        """Current state of a node, tombstones included."""

    @abc.abstractmethod
    async def child(self, parent_id: str, name: str) -> Node | None:
        """The live (not deleted) node called ``name`` in ``parent_id``."""

    @abc.abstractmethod
    async def live_children(self, parent_id: str, limit: int) -> list[Node]:
        """Up to ``limit`` live children of a directory (any order)."""

    @abc.abstractmethod
    async def names_of(self, inode: str) -> list[Node]:
        """The live names (nodes) of the hard-linked file ``inode``, by node id."""

    @abc.abstractmethod
    async def next_seq(self) -> int:
        """Allocate the vault's next seq (also the rev of whatever it changes)."""

    @abc.abstractmethod
    async def save_node(self, node: Node, ts: float) -> None:
        """Make ``node`` the current state of ``node.id`` as of ``node.rev``."""

    @abc.abstractmethod
    async def add_event(self, event: Event) -> None: ...

    @abc.abstractmethod
    async def add_version(self, vault_id: str, version: VersionRecord) -> None:
        """Keep a version; each distinct chunk it names gains one reference."""

    @abc.abstractmethod
    async def version(self, node_id: str, rev: int) -> VersionRecord | None: ...

    @abc.abstractmethod
    async def versions(self, node_id: str) -> list[VersionRecord]:
        """Every kept version of a node, newest first."""

    @abc.abstractmethod
    async def drop_versions(self, node_id: str, revs: Sequence[int]) -> int:
        """Forget these versions (their chunks lose one reference each); returns how many."""

    @abc.abstractmethod
    async def missing_chunks(self, hashes: Sequence[str]) -> list[str]:
        """Those of ``hashes`` that the vault does not hold (or that are doomed), in input
        order."""

    @abc.abstractmethod
    async def doom_chunks(self, before_ts: float, now: float, limit: int) -> list[tuple[str, int]]:
        """Mark up to ``limit`` unreferenced chunks recorded before ``before_ts`` as doomed;
        return their (hash, size)."""

    @abc.abstractmethod
    async def node_at(self, node_id: str, seq: int) -> Node | None:
        """The node as it was at ``seq`` (None when unknown then or pruned since)."""

    @abc.abstractmethod
    async def deleted_children(self, parent_id: str, seq_from: int, seq_to: int, limit: int,
                               newest_first: bool = False) -> list[Node]:
        """Tombstones whose parent is ``parent_id`` and whose delete has a seq in
        ``[seq_from, seq_to]``, in the order of their deletes (``newest_first``: the
        latest first)."""

    @abc.abstractmethod
    async def count_live_files(self, limit: int) -> int:
        """Live non-directory nodes of the vault, counting at most ``limit``."""

    # records (see the module docstring)

    @abc.abstractmethod
    async def get_record(self, kind: str, record_id: str) -> Record | None: ...

    @abc.abstractmethod
    async def put_record(self, record: Record) -> None:
        """Insert or replace the record ``(kind, id)``."""

    @abc.abstractmethod
    async def delete_record(self, kind: str, record_id: str) -> None: ...

    @abc.abstractmethod
    async def find_records(
        self, kind: str, *, key: str | None = None, state: str | None = None,
        since_ts: float | None = None, limit: int = 1000,
    ) -> list[Record]:
        """Records of a kind (optionally with this key / state / ts >= since_ts), oldest
        first."""

    @abc.abstractmethod
    async def mark_vault_deleted(self) -> None:
        """The vault disappears for everyone when the transaction commits."""


class MetadataStore(abc.ABC):
    """All metadata of a gobi server. See the module docstring."""

    # -- lifecycle -------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""

    # -- users and sessions ------------------------------------------------------------

    @abc.abstractmethod
    async def create_user(self, user: UserRecord) -> None:
        """Raises ``UsernameTaken``."""

    @abc.abstractmethod
    async def user_by_name(self, username: str) -> UserRecord | None: ...

    @abc.abstractmethod
    async def user_by_id(self, user_id: str) -> UserRecord | None: ...

    @abc.abstractmethod
    async def set_password(self, user_id: str, password_hash: str) -> None: ...

    @abc.abstractmethod
    async def create_session(self, session: SessionRecord) -> None: ...

    @abc.abstractmethod
    async def session(self, token_hash: str) -> SessionRecord | None: ...

    @abc.abstractmethod
    async def delete_session(self, token_hash: str) -> None: ...

    async def session_user(self, token_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        """The session and its user in one read (stores may override with a join)."""
        session = await self.session(token_hash)
        user = await self.user_by_id(session.user_id) if session else None
        return (session, user) if session and user else None

    # -- vaults and members -------------------------------------------------------------

    @abc.abstractmethod
    async def create_vault(self, vault: VaultRecord, root: Node) -> None:
        """Create the vault, its root node and the owner's membership."""

    @abc.abstractmethod
    async def vault(self, vault_id: str) -> VaultRecord | None:
        """A live vault; None when absent or deleted."""

    @abc.abstractmethod
    async def vaults_of(self, user_id: str) -> list[tuple[VaultRecord, str]]:
        """The live vaults ``user_id`` is a member of, with their role."""

    @abc.abstractmethod
    async def role(self, vault_id: str, user_id: str) -> str | None: ...

    async def access(self, vault_id: str, user_id: str) -> tuple[VaultRecord, str] | None:
        """A live vault and the user's role in it, or None (stores may override with a join)."""
        role = await self.role(vault_id, user_id)
        vault = await self.vault(vault_id) if role else None
        return (vault, role) if vault and role else None

    @abc.abstractmethod
    async def set_member(self, vault_id: str, user_id: str, role: str) -> None: ...

    @abc.abstractmethod
    async def remove_member(self, vault_id: str, user_id: str) -> None: ...

    @abc.abstractmethod
    async def members(self, vault_id: str) -> list[tuple[str, str]]:
        """(username, role) pairs."""

    # -- writes --------------------------------------------------------------------------

    @abc.abstractmethod
    async def run_write(self, vault_id: str, fn: Callable[[VaultTx], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction on the vault. Raises ``VaultGone``."""

    # -- chunks ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def missing_chunks(self, vault_id: str, hashes: Sequence[str]) -> list[str]: ...

    @abc.abstractmethod
    async def add_chunk(self, vault_id: str, hash: str, size: int, ts: float) -> bool:
        """Record that the vault holds this chunk; False when it already did."""

    @abc.abstractmethod
    async def chunk_size(self, vault_id: str, hash: str) -> int | None:
        """Size of a chunk the vault holds; None when absent or doomed."""

    @abc.abstractmethod
    async def doomed_chunks(self, vault_id: str, hashes: Sequence[str] | None = None,
                            limit: int = 1000) -> list[str]:
        """Those of ``hashes`` that are doomed; without ``hashes``, up to ``limit`` doomed
        chunks of the vault (a collection that was interrupted)."""

    @abc.abstractmethod
    async def forget_chunks(self, vault_id: str, hashes: Sequence[str]) -> int:
        """Drop the records of these chunks if they are doomed; returns how many went."""

    @abc.abstractmethod
    async def chunk_stats(self, vault_id: str, before_ts: float) -> ChunkStats:
        """Counts and bytes of the vault's chunks by state (``before_ts``: end of grace)."""

    # -- node reads -----------------------------------------------------------------------

    @abc.abstractmethod
    async def node(self, vault_id: str, node_id: str) -> Node | None:
        """Current state, tombstones included."""

    @abc.abstractmethod
    async def child(self, vault_id: str, parent_id: str, name: str) -> Node | None:
        """The live child called ``name``."""

    @abc.abstractmethod
    async def children(
        self, vault_id: str, parent_id: str, after_name: str | None, limit: int
    ) -> list[Node]:
        """Live children ordered by name, starting after ``after_name``."""

    @abc.abstractmethod
    async def list_tree(
        self, vault_id: str, at: int, after_id: str | None, limit: int
    ) -> list[Node]:
        """Live nodes as they were at seq ``at``, ordered by id, starting after ``after_id``."""

    @abc.abstractmethod
    async def version(self, vault_id: str, node_id: str, rev: int) -> VersionRecord | None: ...

    @abc.abstractmethod
    async def versions(self, vault_id: str, node_id: str) -> list[VersionRecord]:
        """Every kept version of a file, newest first."""

    @abc.abstractmethod
    async def version_nodes(
        self, before_ts: float, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        """``(vault_id, node_id)`` pairs, in that order after ``after``, of nodes with a
        version older than ``before_ts`` (the candidates of version retention)."""

    @abc.abstractmethod
    async def vault_ids(self) -> list[str]:
        """Ids of every live vault."""

    # -- records --------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_record(self, vault_id: str, kind: str, record_id: str) -> Record | None: ...

    @abc.abstractmethod
    async def find_records(
        self, vault_id: str, kind: str, *, key: str | None = None, state: str | None = None,
        since_ts: float | None = None, before_ts: float | None = None, limit: int = 1000,
        newest_first: bool = False,
    ) -> list[Record]:
        """Records of a vault by kind (and key, state, ``since_ts <= ts < before_ts``),
        ordered by (ts, id)."""

    @abc.abstractmethod
    async def due_records(self, kind: str, state: str, before_ts: float, limit: int) -> list[tuple[str, Record]]:
        """(vault_id, record) of every vault's records of a kind and state with
        ``ts < before_ts``, oldest first (what retention jobs act on)."""

    # -- events ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def events_after(self, vault_id: str, after: int, limit: int) -> list[Event]:
        """Events with seq > ``after`` in seq order, at most ``limit``."""

    @abc.abstractmethod
    async def oldest_event_seq(self, vault_id: str) -> int | None:
        """Lowest seq still kept, or None when the vault's log is empty."""

    @abc.abstractmethod
    async def seq_at(self, vault_id: str, ts: float) -> tuple[int, float] | None:
        """``(seq, ts)`` of the newest node row written at or before ``ts`` (every change
        to the tree writes one, the vault's root is written at creation), so the tree at
        that seq is the tree as it was at ``ts``. None before the vault existed. Seqs
        whose rows retention dropped may answer an older seq: callers compare it with
        the vault's ``history_floor``."""

    # -- maintenance ----------------------------------------------------------------------

    @abc.abstractmethod
    async def prune(self, events_before_ts: float, history_before_ts: float) -> int:
        """Drop events older than the first and superseded node rows older than the
        second (raising each vault's ``history_floor``). Returns how many events went."""
