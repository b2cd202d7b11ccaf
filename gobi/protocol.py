"""Wire models shared by the client (gobi.fs) and the server (gobi.server).

This module is the contract between the two sides and the only code both import. It holds
the JSON shapes of requests, responses, nodes, manifests and events, the validation rules
for names, and the stable machine-readable error codes. Nothing here does I/O.

Conventions:
- node ids and vault ids are opaque strings; the root directory of every vault has the id
  ``ROOT_ID``.
- ``rev`` of a node is the ``seq`` of the event that last changed it, so revisions are
  unique and increasing within a vault and ``base_rev`` checks compare integers.
- times are integer nanoseconds since the epoch (``mtime_ns``), as FUSE and ``os.stat``
  use them; ``ts`` of an event is float seconds (server clock, informational).
- ``mode`` carries permission bits only (``0o7777``); the kind says what the node is.
- FIFOs, unix sockets and device nodes (``SPECIAL_KINDS``) are metadata only: kind, mode,
  mtime and, for devices, ``rdev``; never content (size 0, no versions).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

API_PREFIX = "/api/v1"
ROOT_ID = "root"

#: Largest chunk the server accepts. The client's chunker (gobi.chunking) never produces
#: more than its max size, which is well below this.
MAX_CHUNK_SIZE = 8 * 1024 * 1024
#: Largest hole one manifest entry may describe (1 PiB): far above any file we expect, low
#: enough that offsets and sums stay exact everywhere (also in a JavaScript number).
MAX_HOLE_SIZE = 2**50
#: Largest JSON body the server accepts (a manifest of ~100k chunks, a ~100 GiB file).
MAX_JSON_BODY = 8 * 1024 * 1024
#: Upper bound of ``limit`` on paged listings.
MAX_PAGE = 5000
MAX_NAME_BYTES = 255
MAX_SYMLINK_TARGET = 4095

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ErrorCode(str, enum.Enum):
    """Stable error codes carried in every JSON error body (``{"error": {"code": …}}``).

    Clients branch on these, never on messages or on the HTTP status alone.
    """

    BAD_REQUEST = "bad_request"              # malformed body, schema violation
    METHOD_NOT_ALLOWED = "method_not_allowed"  # the route has no such method (see Allow)
    INVALID_NAME = "invalid_name"            # a path component breaks the name rules
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAUTHENTICATED = "unauthenticated"      # missing, malformed, expired or revoked token
    INVALID_CREDENTIALS = "invalid_credentials"
    FORBIDDEN = "forbidden"                  # member, but the role does not allow it
    REGISTRATION_CLOSED = "registration_closed"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"                  # also: vault exists but caller is no member
    USERNAME_TAKEN = "username_taken"
    CONFLICT = "conflict"                    # base_rev is not the head: body has the head
    NAME_EXISTS = "name_exists"              # target name is taken (details.node = it)
    NOT_A_DIRECTORY = "not_a_directory"
    IS_A_DIRECTORY = "is_a_directory"
    DIRECTORY_NOT_EMPTY = "directory_not_empty"
    INVALID_MOVE = "invalid_move"            # moving a directory into itself, moving root
    MISSING_CHUNKS = "missing_chunks"        # commit names chunks the server lacks
    HASH_MISMATCH = "hash_mismatch"          # uploaded bytes do not hash to the URL's hash
    CURSOR_EXPIRED = "cursor_expired"        # events before the cursor were dropped: re-list
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    UNAVAILABLE = "unavailable"              # draining or a dependency is down: retry
    DELETE_HELD = "delete_held"              # mass delete held for the owner (details.hold)
    NOT_A_FILE = "not_a_file"                # content/versions of a symlink, FIFO, socket, device
    INTERNAL = "internal"


class NodeKind(str, enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    FIFO = "fifo"           # named pipe (mkfifo)
    SOCKET = "socket"       # unix socket (bind)
    CHARDEV = "chardev"     # character device node (rdev: its device number)
    BLOCKDEV = "blockdev"   # block device node (rdev: its device number)


#: Special files: the vault keeps what makes them (kind, mode, mtime, rdev) and nothing
#: else; what they do happens in the kernel of the machine that opens them.
SPECIAL_KINDS = frozenset({NodeKind.FIFO, NodeKind.SOCKET, NodeKind.CHARDEV, NodeKind.BLOCKDEV})
#: The special files that carry a device number.
DEVICE_KINDS = frozenset({NodeKind.CHARDEV, NodeKind.BLOCKDEV})
#: Largest ``rdev``: FUSE (``fuse_attr.rdev``) and the kernel's ``dev_t`` on disk are 32 bits.
MAX_RDEV = 2**32 - 1


class EventType(str, enum.Enum):
    CREATE = "create"      # node appeared (mkdir, create, symlink, restore from trash)
    CONTENT = "content"    # a file's content was committed (a new version)
    MOVE = "move"          # parent and/or name changed (``old_parent``/``old_name`` set)
    ATTR = "attr"          # mode or mtime changed
    DELETE = "delete"      # node became a tombstone
    VAULT_DELETED = "vault_deleted"
    CONFLICT = "conflict"  # a conflict was settled by a strategy or recorded (``conflict``);
    #                        ``node`` is the node's current state (its rev may be older)
    HOLD = "hold"          # a mass delete was held, confirmed, rejected or expired (``hold``)
    SETTINGS = "settings"  # the vault's settings changed (conflict strategy): GET /settings


#: Control characters: C0 (U+0000-U+001F), DEL (U+007F) and C1 (U+0080-U+009F). They
#: are refused in every name: a name with ESC or CR in it can rewrite a terminal or a log
#: line, and no person types them into a file name.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NAME_RULE = ("a name is 1-255 bytes of UTF-8, not '.' or '..', without '/' and without "
             "control characters (U+0000-U+001F, U+007F-U+009F)")


def has_control(text: str) -> bool:
    return _CONTROL_RE.search(text) is not None


def validate_name(name: str) -> str:
    """A single path component: what POSIX and every common filesystem accept, minus
    control characters.

    Rejects ``/``, control characters (C0, DEL, C1; NUL among them), ``.``, ``..``, the
    empty name, names over 255 bytes of UTF-8 and strings that are not valid Unicode
    (lone surrogates cannot be encoded as UTF-8). Each message states ``NAME_RULE``.
    """
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    if name in ("", ".", ".."):
        raise ValueError(f"name {name!r} is reserved: {NAME_RULE}")
    if "/" in name:
        raise ValueError(f"name contains '/': {NAME_RULE}")
    if (m := _CONTROL_RE.search(name)) is not None:
        raise ValueError(f"name contains the control character U+{ord(m.group()):04X}: {NAME_RULE}")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"name is not valid UTF-8: {NAME_RULE}") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise ValueError(f"name is longer than {MAX_NAME_BYTES} bytes: {NAME_RULE}")
    return name


VAULT_NAME_RULE = "a vault name is 1-255 characters without control characters (U+0000-U+001F, U+007F-U+009F)"


def validate_vault_name(name: str) -> str:
    if (m := _CONTROL_RE.search(name)) is not None:
        raise ValueError(f"vault name contains the control character U+{ord(m.group()):04X}: {VAULT_NAME_RULE}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"vault name is not valid UTF-8: {VAULT_NAME_RULE}") from None
    return name


def validate_sha256(value: str) -> str:
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise ValueError("expected a lowercase hex SHA-256 (64 characters)")
    return value


def validate_username(value: str) -> str:
    if not isinstance(value, str) or not _USERNAME_RE.match(value):
        raise ValueError(
            "username must be 1-64 characters of a-z, 0-9, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return value


#: The password rule, said the same way by the API, the CLI and the docs.
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
PASSWORD_RULE = f"a password needs {PASSWORD_MIN} to {PASSWORD_MAX} characters"


def validate_password(value: str) -> str:
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise ValueError(f"{PASSWORD_RULE} (this one has {len(value)})")
    return value


def validate_id(value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError("malformed id")
    return value


def _validate_target(value: str) -> str:
    if "\x00" in value:
        raise ValueError("symlink target must not contain NUL")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("symlink target is not valid UTF-8") from None
    if not 0 < size <= MAX_SYMLINK_TARGET:
        raise ValueError(f"symlink target must be 1-{MAX_SYMLINK_TARGET} bytes")
    return value


# The schema repeats the rules a JSON Schema can say (clients generated from the API
# description see them); the validators check them all and their messages state them.
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
Name = Annotated[str, AfterValidator(validate_name),
                 Field(json_schema_extra={"minLength": 1, "maxLength": MAX_NAME_BYTES,
                                          "pattern": r"^[^/\x00-\x1f\x7f-\x9f]+$",
                                          "description": NAME_RULE})]
VaultName = Annotated[str, AfterValidator(validate_vault_name),
                      Field(min_length=1, max_length=255,
                            json_schema_extra={"pattern": _NO_CONTROL, "description": VAULT_NAME_RULE})]
Sha256 = Annotated[str, AfterValidator(validate_sha256), Field(json_schema_extra={"pattern": _SHA256_RE.pattern})]
Username = Annotated[str, AfterValidator(validate_username),
                     Field(json_schema_extra={"pattern": _USERNAME_RE.pattern})]
Id = Annotated[str, AfterValidator(validate_id), Field(json_schema_extra={"pattern": _ID_RE.pattern})]
SymlinkTarget = Annotated[str, AfterValidator(_validate_target)]
# Request bodies are JSON: numbers must be JSON integers and flags JSON booleans (strict),
# so `"replace_rev": false` or `"dry_run": 0` is refused rather than read as 0 / False.
Mode = Annotated[int, Field(ge=0, le=0o7777, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
Rdev = Annotated[int, Field(ge=0, le=MAX_RDEV, strict=True)]
Flag = Annotated[bool, Field(strict=True)]
# Signed 64-bit nanoseconds: a few centuries either side of 1970.
TimeNs = Annotated[int, Field(ge=-(2**63), le=2**63 - 1, strict=True)]
# Query strings are text: their numbers and flags are parsed from it (lax).
QueryInt = Annotated[int, Field(ge=0, le=2**62)]
QueryTimeNs = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
# The length rule is checked by validate_password, whose message states it; the schema
# keeps minLength/maxLength for clients generated from the API description.
Password = Annotated[str, AfterValidator(validate_password),
                     Field(json_schema_extra={"minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX})]

#: What a write does when it meets a change it did not know about (a stale ``base_rev``,
#: a taken name, a deleted parent): ``fail`` answers 409 with the head (the client
#: decides); ``strategy`` lets the server apply the vault's conflict strategy for that path
#: and answer a ``WriteOutcome`` saying what it did. See docs/conflicts.md.
OnConflict = Literal["fail", "strategy"]
StrategyName = Literal["keep-both", "last-writer-wins", "server-wins", "client-wins", "manual"]
STRATEGY_NAMES: tuple[str, ...] = ("keep-both", "last-writer-wins", "server-wins", "client-wins", "manual")


class Model(BaseModel):
    """Base of all wire models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- accounts


class RegisterRequest(Model):
    username: Username
    password: Password
    #: Needed when the server requires invites (``gobi user invite NAME`` prints one).
    invite: str | None = Field(default=None, max_length=128)


class LoginRequest(Model):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class User(Model):
    id: str
    username: str
    is_admin: bool = False
    created_at: float


class SessionCreated(Model):
    token: str
    user: User


# --------------------------------------------------------------------------- vaults

Role = Literal["read", "write", "owner"]
ROLE_RANK = {"read": 1, "write": 2, "owner": 3}


class CreateVaultRequest(Model):
    name: VaultName


class Vault(Model):
    id: str
    name: str
    owner: str            # username of the owner
    role: Role            # the caller's role
    head_seq: int
    created_at: float


class StorageSpace(Model):
    """What the server's storage can hold, as its backend reports it (``df`` on the mount
    shows it). None: the backend cannot tell (an object store such as S3)."""

    total_bytes: NonNegInt | None = None
    free_bytes: NonNegInt | None = None


class Member(Model):
    username: str
    role: Role


class SetMemberRequest(Model):
    role: Role


# --------------------------------------------------------------------------- content


class ChunkRef(Model):
    """One entry of a manifest: a stored chunk, or a hole.

    A chunk is ``{"hash": SHA256, "size": N}`` with ``1 <= N <= MAX_CHUNK_SIZE``. A hole is
    ``{"hole": true, "size": N}`` with ``1 <= N <= MAX_HOLE_SIZE``: N zero bytes that are
    neither stored nor transferred, so a sparse file costs its data, not its apparent size
    (a 1 TiB file of zeros is one entry, where zero chunks would need 500,000 refs, more than
    a manifest may hold).

    Why an explicit flag rather than a reserved hash (e.g. 64 zeros): a hash always means
    "the SHA-256 of these bytes", so code that looks a ref up in a store or a cache can
    never mistake a hole for a chunk; and a client older than holes (``hash`` required,
    unknown fields refused) rejects a manifest with a hole as a validation error instead of
    asking the server for a chunk that does not exist. The JSON of a chunk ref is unchanged:
    ``hole`` is only written when true and ``hash`` only when there is one.
    """

    # exclude_if: a chunk ref's JSON stays {"hash", "size"}, a hole's {"size", "hole"}.
    hash: Sha256 | None = Field(default=None, exclude_if=lambda v: v is None)
    size: int = Field(ge=1, le=MAX_HOLE_SIZE, strict=True)
    hole: Flag = Field(default=False, exclude_if=lambda v: not v)

    @model_validator(mode="after")
    def _chunk_or_hole(self) -> "ChunkRef":
        if self.hole:
            if self.hash is not None:
                raise ValueError("a hole has no hash")
        elif self.hash is None:
            raise ValueError("a chunk ref needs a hash (or hole: true)")
        elif self.size > MAX_CHUNK_SIZE:
            raise ValueError(f"a chunk is at most {MAX_CHUNK_SIZE} bytes")
        return self

    @classmethod
    def zeros(cls, size: int) -> "ChunkRef":
        return cls(size=size, hole=True)


def chunk_hashes(chunks: Iterable[ChunkRef]) -> list[str]:
    """The hashes of the stored chunks of a manifest, in order (holes have none)."""
    return [c.hash for c in chunks if c.hash is not None]


class Manifest(Model):
    """A file's content: its chunks and holes in order. ``size`` equals the sum of their
    sizes."""

    chunks: list[ChunkRef] = Field(default_factory=list, max_length=200_000)
    size: NonNegInt = 0


class MissingChunksRequest(Model):
    hashes: list[Sha256] = Field(max_length=10_000)


class MissingChunksResponse(Model):
    missing: list[str]


# --------------------------------------------------------------------------- nodes


class Node(Model):
    """The state of one node after a change. Events carry it whole."""

    id: str
    parent: str | None    # None only for the root
    name: str             # "" for the root
    kind: NodeKind
    rev: int              # seq of the last change to this node
    size: int = 0         # files: content size; symlinks: target length; others: 0
    mtime_ns: int = 0
    mode: int = 0o644
    target: str | None = None      # symlinks only
    rdev: int = 0                  # chardev/blockdev: device number (st_rdev); 0 otherwise
    content_rev: int | None = None  # files: rev of the current content version
    deleted: bool = False
    # Hard links: the names of one file share an ``inode`` (the id of the node that was
    # linked first). Each name is a node of its own (its parent, name, rev and trash entry),
    # and the server keeps what belongs to the file the same on all of them: content (every
    # commit is applied to every name, one event each), mode and mtime. Absent (None) on a
    # node that never had a second name, so a vault without links reads as before.
    inode: str | None = Field(default=None, exclude_if=lambda v: v is None)


class CreateNodeRequest(Model):
    """Create a file, directory, symlink or special file (FIFO, socket, device node).

    ``id``: optional client-chosen node id. A client that creates nodes while offline
    picks ids up front; a retried create with the same id, parent and name returns the
    node it already created instead of failing.
    """

    id: Id | None = None
    parent: Id
    name: Name
    kind: NodeKind
    mode: Mode = 0o644
    mtime_ns: TimeNs | None = None
    target: SymlinkTarget | None = None     # required for symlinks, refused otherwise
    rdev: Rdev = 0                           # chardev/blockdev only (400 otherwise unless 0)
    content: Manifest | None = None          # files only; default: empty file
    on_conflict: OnConflict = "fail"          # name taken / parent deleted: see OnConflict


class LinkRequest(Model):
    """``link(2)``: give the file ``node`` one more name, ``name`` in ``parent``.

    Any node but a directory can be linked (a symlink, a FIFO, a device node too, as
    Linux allows). The new name is a node of its own sharing the file's ``inode`` (the
    linked node gains one when it had none); it starts with the file's content, mode and
    mtime. ``id``: optional client-chosen id of the new name, as for creates (a retry with
    the same id, parent and name returns it). A name that is taken is ``name_exists``; a
    directory is ``is_a_directory``; a deleted node ``conflict`` (its tombstone as head).
    """

    id: Id | None = None
    parent: Id
    name: Name


class CommitContentRequest(Model):
    base_rev: NonNegInt
    chunks: list[ChunkRef] = Field(default_factory=list, max_length=200_000)
    size: NonNegInt
    mtime_ns: TimeNs | None = None
    mode: Mode | None = None
    on_conflict: OnConflict = "fail"


class UpdateNodeRequest(Model):
    """Rename/move and/or setattr, checked against ``base_rev``.

    ``replace``: when the target name is taken, replace that node (rename(2) semantics; a
    directory can only replace an empty directory, a file only a non-directory).
    ``replace_rev``: if given, the replaced node must still be at this rev.
    """

    base_rev: NonNegInt
    parent: Id | None = None
    name: Name | None = None
    mode: Mode | None = None
    mtime_ns: TimeNs | None = None
    replace: Flag = False
    replace_rev: NonNegInt | None = None
    on_conflict: OnConflict = "fail"


class DeleteNodeRequest(Model):
    """``seen_seq``: the vault seq whose effects the deleter had seen; in a recursive delete
    (or with ``on_conflict="strategy"``) nodes changed after it are new to the deleter and
    the vault's strategy decides whether they survive. ``at_ns``: when the delete happened
    on the client (last-writer-wins compares it; default: now)."""

    base_rev: NonNegInt
    recursive: Flag = False
    on_conflict: OnConflict = "fail"
    seen_seq: NonNegInt | None = None
    at_ns: TimeNs | None = None


class NodeList(Model):
    nodes: list[Node]
    next_cursor: str | None = None


class TreePage(Model):
    """One page of a consistent listing of the whole vault at ``at``."""

    at: int
    nodes: list[Node]
    next_cursor: str | None = None


# --------------------------------------------------------------------------- history
# Versions, trash, mass-delete holds, conflicts, garbage collection (docs/conflicts.md).

ConflictCase = Literal[
    "modify_modify",    # both changed the content
    "modify_delete",    # the request changes content the server has deleted
    "delete_modify",    # the request deletes content the server has changed
    "delete_delete",    # deleted on both sides
    "rename_rename",    # both moved/renamed the same node
    "attr_attr",        # both changed mode or mtime
    "name_clash",       # create/create or a move onto a name taken meanwhile (any kinds)
    "parent_deleted",   # created or moved into a directory deleted meanwhile
    "dir_changed",      # a directory deleted while nodes inside it changed or appeared
]
Keep = Literal["mine", "theirs", "both"]


class ConflictInfo(Model):
    """A conflict and what happened to it. ``mine`` is the side of the request that met
    the conflict, ``theirs`` the server's state it did not know about. ``result``: which
    side the tree shows (``mine``, ``theirs``, ``both``), ``merged`` (two directories of
    one name: ``theirs.node`` is the one to use), ``already`` (delete/delete) or
    ``recorded`` (manual: waits for ``resolve``; the tree shows theirs)."""

    id: str
    case: ConflictCase
    strategy: StrategyName
    result: Literal["mine", "theirs", "both", "merged", "already", "recorded"]
    state: Literal["open", "resolved"] = "resolved"
    resolution: Keep | None = None   # manual conflicts, once decided
    node: str                         # the node the request addressed
    path: str                         # its path when the conflict happened
    ts: float
    device: str | None = None         # mine's device and user
    user: str | None = None
    mine: dict = Field(default_factory=dict)    # e.g. {"rev": R} (kept version), {"parent", "name"}
    theirs: dict = Field(default_factory=dict)  # e.g. {"rev": R}, {"node": ID}
    conflicted_copy: Node | None = None   # keep-both: the conflicted copy
    message: str = ""


class WriteOutcome(Model):
    """Answer of a write sent with ``on_conflict="strategy"``: the node the request
    addressed as it is now, and the conflict if there was one."""

    node: Node
    conflict: ConflictInfo | None = None


class ConflictRule(Model):
    """``pattern``: a glob on the vault path; without ``/`` it matches the file name at any
    depth (``*.docx``), with ``/`` the whole path (``docs/**``, ``*`` stays inside one
    component, ``**`` crosses them)."""

    pattern: str = Field(min_length=1, max_length=1024)
    strategy: StrategyName


class VaultSettings(Model):
    """Per-vault settings: the conflict strategy and per-path overrides (first match wins)."""

    conflict_strategy: StrategyName = "keep-both"
    conflict_rules: list[ConflictRule] = Field(default_factory=list, max_length=200)


class ResolveConflictRequest(Model):
    keep: Keep


class VersionInfo(Model):
    node: str
    rev: int
    size: int
    mtime_ns: int
    ts: float
    device: str | None = None
    user: str | None = None
    origin: str | None = None   # "restore:R", "conflict" (a losing commit kept in history)
    head: bool = False          # the file's current content
    chunks: list[ChunkRef] | None = None


class RestoreVersionRequest(Model):
    """Make version ``rev`` the file's content again, as a new version. ``base_rev``
    (optional) guards it like a commit's."""

    rev: NonNegInt
    base_rev: NonNegInt | None = None


class TrashEntry(Model):
    """One delete: a file, or a directory with the subtree it had (``files``, ``bytes``)."""

    id: str
    node: str
    parent: str | None
    name: str
    kind: NodeKind
    path: str
    files: int
    dirs: int
    bytes: int
    deleted_at: float
    device: str | None = None
    user: str | None = None
    reason: Literal["delete", "replace", "conflict"] = "delete"
    hold: str | None = None     # the mass-delete hold it went through, if any


class RestoreTrashRequest(Model):
    """Restore to the old place (default), or into ``parent`` and/or under ``name``."""

    parent: Id | None = None
    name: Name | None = None


class TrashRestored(Model):
    node: Node          # the restored top node
    restored: int       # nodes brought back
    renamed: bool       # the old name was taken: ``node.name`` is a new one
    revived_parents: int = 0   # deleted ancestor directories brought back to hold it


class HoldInfo(Model):
    """A mass delete held for the vault owner (see ``delete_held``)."""

    id: str
    state: Literal["pending", "confirmed", "rejected", "expired"]
    device: str | None = None     # who asked for the deletes
    user: str | None = None
    created: float
    expires: float
    files: int                    # files the held deletes would remove
    items: int                    # delete requests held
    resolved_by: str | None = None
    resolved_at: float | None = None
    applied: int | None = None    # after confirm: deletes applied / skipped (changed meanwhile)
    skipped: int | None = None


class GcRequest(Model):
    #: Required: a collection deletes data, so it is never what an empty request means.
    dry_run: Flag


class GcReport(Model):
    """Chunks as ``{"chunks": N, "bytes": B}`` (plaintext bytes)."""

    dry_run: bool
    grace_seconds: float
    referenced: dict
    collectable: dict      # unreferenced and past the grace period: what a run frees
    in_grace: dict         # unreferenced but recent (uploads not committed yet): kept
    freed: dict            # what this run deleted (zero for a dry run)
    seconds: float


# --------------------------------------------------------------------------- events


class Event(Model):
    seq: int
    ts: float
    type: EventType
    node: Node | None = None         # None only for vault-level events
    old_parent: str | None = None    # MOVE only
    old_name: str | None = None      # MOVE only
    device: str | None = None        # X-Gobi-Device of the request that caused it
    user: str | None = None          # username that caused it
    conflict: ConflictInfo | None = None   # CONFLICT only
    hold: HoldInfo | None = None           # HOLD; on a node event: pulled back into this hold


class EventPage(Model):
    events: list[Event]
    head_seq: int
    has_more: bool


class ErrorDetail(Model):
    code: ErrorCode
    message: str
    details: dict = Field(default_factory=dict)


class ErrorBody(Model):
    error: ErrorDetail


# --------------------------------------------------------------------------- listings
# The JSON envelopes of list answers and other small answers, so the API description
# states them exactly.


class VaultList(Model):
    vaults: list[Vault]


class MemberList(Model):
    members: list[Member]


class ChunkStored(Model):
    hash: str
    size: int
    created: bool      # False: the vault already had it


class ChunkBatchResult(Model):
    chunks: list[ChunkStored]


class OpsBatchResult(Model):
    """One ``ack``, ``nack`` or ``skipped`` frame per operation, in order."""

    results: list[dict]


class VersionList(Model):
    versions: list[VersionInfo]


class TrashList(Model):
    entries: list[TrashEntry]


class TrashPurged(Model):
    versions_dropped: int


class HoldList(Model):
    holds: list[HoldInfo]


class HoldDetail(Model):
    hold: HoldInfo
    items: list[dict]      # the held delete requests, in order


class ConflictList(Model):
    conflicts: list[ConflictInfo]


class SeqAt(Model):
    seq: int
    ts: float | None
    head_seq: int
    history_floor: int


class Health(Model):
    status: str
    version: str | None = None


# --------------------------------------------------------------------------- query parameters
# Each route's query string is validated with one of these (empty values count as
# absent), and the API description lists their fields as the route's parameters.


class Query(BaseModel):
    """Base of query models: unknown parameters are ignored (caches and proxies add some)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


Limit = Annotated[int, Field(ge=1, le=MAX_PAGE)]
# 4096: PATH_MAX; it also keeps the request line within the header limit (16 KiB).
PathText = Annotated[str, Field(max_length=4096)]


class ChildrenQuery(Query):
    after: str | None = Field(default=None, max_length=1024)   # the last name of the previous page
    limit: Limit = 1000


class RevQuery(Query):
    rev: QueryInt | None = None      # a version; default: the head


class LookupQuery(Query):
    path: PathText = ""                   # a/b/c from the root; empty: the root


class TreeQuery(Query):
    at: QueryInt | None = None       # the seq to list at; default: the head
    cursor: Id | None = None          # next_cursor of the previous page
    limit: Limit = 1000


class DeleteQuery(Query):
    base_rev: QueryInt
    recursive: bool = False
    on_conflict: OnConflict = "fail"
    seen_seq: QueryInt | None = None
    at_ns: QueryTimeNs | None = None


class TrashQuery(Query):
    path: PathText | None = None          # entries at or under this path
    limit: Limit = 1000


class HoldsQuery(Query):
    state: Literal["pending", "confirmed", "rejected", "expired", "all"] = "pending"


class LimitQuery(Query):
    limit: Limit = 1000


class ConflictsQuery(Query):
    state: Literal["open", "resolved", "all"] = "open"
    limit: Limit = 1000


class EventsQuery(Query):
    after: QueryInt = 0
    limit: Limit = 1000


class SeqQuery(Query):
    # ISO-8601 (no offset: UTC) or Unix seconds
    at: str = Field(min_length=1, max_length=64, pattern=r"^[0-9][0-9T:.+\-Z ]*$")


class StreamQuery(Query):
    after: QueryInt | None = None    # default: the head (only live events)


# --------------------------------------------------------------------------- websocket
# Client → server frames:
#   {"type": "ping", "id": X}
#   {"type": "op", "id": REQ, "op": "create", "args": CreateNodeRequest}
#   {"type": "op", "id": REQ, "op": "update", "node": NODE, "args": UpdateNodeRequest}
#   {"type": "op", "id": REQ, "op": "delete", "node": NODE, "args": DeleteNodeRequest}
#   {"type": "op", "id": REQ, "op": "commit", "node": NODE, "args": CommitContentRequest}
# answered, in the order sent, by
#   {"type": "ack", "id": REQ, "node": Node[, "conflict": ConflictInfo]}   (on_conflict="strategy")
#   {"type": "nack", "id": REQ, "error": ErrorDetail}   details.head = state to catch up to
# The events the operations cause arrive on the same socket like any other event (with
# this connection's device), so a client recognises its own echoes.
#
# Server → client frames:
#   {"type": "hello", "vault": ID, "head_seq": N, "after": N}
#   {"type": "event", "event": Event}
#   {"type": "caught_up", "seq": N}        replay finished; live events follow
#   {"type": "error", "error": ErrorDetail} e.g. cursor_expired (then the server closes 4410)
# Close codes: 1001 going away (drain), 4401 unauthenticated, 4404 vault not found,
# 4410 cursor expired.
RequestId = Annotated[str, Field(min_length=1, max_length=64)]


class WsCreate(Model):
    type: Literal["op"] = "op"
    id: RequestId
    op: Literal["create"]
    args: CreateNodeRequest


class WsUpdate(Model):
    type: Literal["op"] = "op"
    id: RequestId
    op: Literal["update"]
    node: Id
    args: UpdateNodeRequest


class WsLink(Model):
    type: Literal["op"] = "op"
    id: RequestId
    op: Literal["link"]
    node: Id
    args: LinkRequest


class WsDelete(Model):
    type: Literal["op"] = "op"
    id: RequestId
    op: Literal["delete"]
    node: Id
    args: DeleteNodeRequest


class WsCommit(Model):
    type: Literal["op"] = "op"
    id: RequestId
    op: Literal["commit"]
    node: Id
    args: CommitContentRequest


WsOp = Annotated[WsCreate | WsUpdate | WsDelete | WsCommit | WsLink, Field(discriminator="op")]

MAX_BATCH_OPS = 1000


class OpsBatchRequest(Model):
    """``POST /vaults/{v}/ops``: the WebSocket operations over REST, many per request.

    Each element is an ``op`` frame (``{"id", "op", "node"?, "args"}``; ``type`` may be
    left out). They run in order, each in its own transaction; the answer lists one
    ``ack``/``nack`` per operation. With ``stop_on_error`` the operations after the first
    ``nack`` are not run and are answered ``skipped``.
    """

    ops: list[dict] = Field(min_length=1, max_length=MAX_BATCH_OPS)
    stop_on_error: Flag = False

WS_CLOSE_GOING_AWAY = 1001
WS_CLOSE_UNAUTHENTICATED = 4401
WS_CLOSE_NOT_FOUND = 4404
WS_CLOSE_CURSOR_EXPIRED = 4410

DEVICE_HEADER = "X-Gobi-Device"
