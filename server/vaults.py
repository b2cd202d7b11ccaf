"""Vault operations: create, list, get, delete, and membership."""

from __future__ import annotations

import secrets
import time

from gobi.drivers.base import StorageDriver
from gobi.protocol import (
    ROOT_ID,
    ErrorCode,
    Event,
    EventType,
    Member,
    Node,
    NodeKind,
    StorageSpace,
    Vault,
)

from .access import Actor, require_role
from .errors import ServiceError
from .fanout import Fanout
from .store.base import MetadataStore, VaultGone, VaultRecord, VaultTx


def new_vault_id() -> str:
    return "v" + secrets.token_hex(8)


class Vaults:
    def __init__(self, store: MetadataStore, fanout: Fanout, driver: StorageDriver | None = None):
        self.store = store
        self.fanout = fanout
        self.driver = driver

    async def space(self, actor: Actor, vault_id: str) -> StorageSpace:
        """The storage's size and free bytes (every vault shares them: there is no
        per-vault quota), for ``df`` on a mount."""
        await require_role(self.store, actor, vault_id, "read")
        sp = await self.driver.space() if self.driver is not None else None
        if sp is None:
            return StorageSpace()
        return StorageSpace(total_bytes=sp.total, free_bytes=sp.free)

    async def _view(self, vault: VaultRecord, role: str) -> Vault:
        owner = await self.store.user_by_id(vault.owner_id)
        return Vault(
            id=vault.id,
            name=vault.name,
            owner=owner.username if owner else "",
            role=role,  # type: ignore[arg-type]
            head_seq=vault.head_seq,
            created_at=vault.created_at,
        )

    async def create(self, actor: Actor, name: str) -> Vault:
        now = time.time()
        vault = VaultRecord(
            id=new_vault_id(), name=name, owner_id=actor.user.id, head_seq=0, created_at=now
        )
        root = Node(
            id=ROOT_ID, parent=None, name="", kind=NodeKind.DIR, rev=0,
            mtime_ns=time.time_ns(), mode=0o755,
        )
        await self.store.create_vault(vault, root)
        return await self._view(vault, "owner")

    async def list(self, actor: Actor) -> list[Vault]:
        return [await self._view(v, role) for v, role in await self.store.vaults_of(actor.user.id)]

    async def get(self, actor: Actor, vault_id: str) -> Vault:
        vault, role = await require_role(self.store, actor, vault_id, "read")
        return await self._view(vault, role)

    async def delete(self, actor: Actor, vault_id: str) -> None:
        await require_role(self.store, actor, vault_id, "owner")

        async def fn(tx: VaultTx) -> int:
            seq = await tx.next_seq()
            await tx.add_event(Event(
                seq=seq, ts=time.time(), type=EventType.VAULT_DELETED,
                device=actor.device, user=actor.user.username,
            ))
            await tx.mark_vault_deleted()
            return seq

        try:
            seq = await self.store.run_write(vault_id, fn)
        except VaultGone:
            raise ServiceError(ErrorCode.NOT_FOUND, "vault not found", vault=vault_id) from None
        await self.fanout.publish(vault_id, seq)

    async def members(self, actor: Actor, vault_id: str) -> list[Member]:
        await require_role(self.store, actor, vault_id, "read")
        return [Member(username=u, role=r) for u, r in await self.store.members(vault_id)]  # type: ignore[arg-type]

    async def set_member(self, actor: Actor, vault_id: str, username: str, role: str) -> Member:
        vault, _ = await require_role(self.store, actor, vault_id, "owner")
        user = await self.store.user_by_name(username)
        if user is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no user {username!r}")
        if user.id == vault.owner_id and role != "owner":
            raise ServiceError(ErrorCode.FORBIDDEN, "the vault's creator stays an owner")
        await self.store.set_member(vault_id, user.id, role)
        return Member(username=username, role=role)  # type: ignore[arg-type]

    async def remove_member(self, actor: Actor, vault_id: str, username: str) -> None:
        vault, _ = await require_role(self.store, actor, vault_id, "owner")
        user = await self.store.user_by_name(username)
        if user is None or await self.store.role(vault_id, user.id) is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"{username!r} is not a member")
        if user.id == vault.owner_id:
            raise ServiceError(ErrorCode.FORBIDDEN, "the vault's creator cannot be removed")
        await self.store.remove_member(vault_id, user.id)
