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
    """One accepted content commit of a file."""

    node_id: str
    rev: int
    size: int
    mtime_ns: int
    chunks: tuple[ChunkRef, ...]
    ts: float
    device: str | None
    user: str | None


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
    async def next_seq(self) -> int:
        """Allocate the vault's next seq (also the rev of whatever it changes)."""

    @abc.abstractmethod
    async def save_node(self, node: Node, ts: float) -> None:
        """Make ``node`` the current state of ``node.id`` as of ``node.rev``."""

    @abc.abstractmethod
    async def add_event(self, event: Event) -> None: ...

    @abc.abstractmethod
    async def add_version(self, vault_id: str, version: VersionRecord) -> None: ...

    @abc.abstractmethod
    async def missing_chunks(self, hashes: Sequence[str]) -> list[str]:
        """Those of ``hashes`` that the vault does not hold, in input order."""

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
    async def chunk_size(self, vault_id: str, hash: str) -> int | None: ...

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

    # -- events ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def events_after(self, vault_id: str, after: int, limit: int) -> list[Event]:
        """Events with seq > ``after`` in seq order, at most ``limit``."""

    @abc.abstractmethod
    async def oldest_event_seq(self, vault_id: str) -> int | None:
        """Lowest seq still kept, or None when the vault's log is empty."""

    # -- maintenance ----------------------------------------------------------------------

    @abc.abstractmethod
    async def prune(self, events_before_ts: float, history_before_ts: float) -> int:
        """Drop events older than the first and superseded node rows older than the
        second (raising each vault's ``history_floor``). Returns how many events went."""
