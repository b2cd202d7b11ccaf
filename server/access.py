"""Who may do what: actors and the vault membership check.

A caller who is not a member of a vault gets ``not_found`` for the vault and everything in
it, exactly as if it did not exist, so vault ids cannot be probed. A member whose role is
too low gets ``forbidden``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gobi.protocol import ROLE_RANK, ErrorCode

from .errors import ServiceError
from .store.base import MetadataStore, UserRecord, VaultRecord


@dataclass(frozen=True)
class Actor:
    user: UserRecord
    device: str | None = None


async def require_role(
    store: MetadataStore, actor: Actor, vault_id: str, need: str
) -> tuple[VaultRecord, str]:
    """The vault and the actor's role in it, if that role is at least ``need``."""
    role = await store.role(vault_id, actor.user.id)
    vault = await store.vault(vault_id) if role else None
    if role is None or vault is None:
        raise ServiceError(ErrorCode.NOT_FOUND, "vault not found", vault=vault_id)
    if ROLE_RANK[role] < ROLE_RANK[need]:
        raise ServiceError(
            ErrorCode.FORBIDDEN, f"this needs the {need!r} role; you have {role!r}", role=role
        )
    return vault, role
