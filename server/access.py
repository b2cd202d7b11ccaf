"""Who may do what: actors and the vault membership check.

A caller who is not a member of a vault gets ``not_found`` for the vault and everything in
it, exactly as if it did not exist, so vault ids cannot be probed. A member whose role is
too low gets ``forbidden``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gobi.protocol import ROLE_RANK, ErrorCode

from .errors import ServiceError
from .store.base import MetadataStore, UserRecord, VaultRecord


@dataclass(frozen=True)
class Actor:
    """Who is asking. An actor lives for one request (or one WebSocket handshake), so it
    also memoises membership lookups: the HTTP layer checks membership first and the
    service checks the role again without a second database read."""

    user: UserRecord
    device: str | None = None
    _access: dict[str, tuple[VaultRecord, str]] = field(default_factory=dict, compare=False, repr=False)


async def require_role(
    store: MetadataStore, actor: Actor, vault_id: str, need: str
) -> tuple[VaultRecord, str]:
    """The vault and the actor's role in it, if that role is at least ``need``."""
    found = actor._access.get(vault_id)
    if found is None:
        found = await store.access(vault_id, actor.user.id)
        if found is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "vault not found", vault=vault_id)
        actor._access[vault_id] = found
    vault, role = found
    if ROLE_RANK[role] < ROLE_RANK[need]:
        raise ServiceError(
            ErrorCode.FORBIDDEN, f"this needs the {need!r} role; you have {role!r}", role=role
        )
    return vault, role
