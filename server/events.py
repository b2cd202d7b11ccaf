"""The event log as clients see it: pages of events after a cursor, consistent tree
listings at a seq, and the live stream behind the WebSocket.

A cursor ``after`` is valid while every event after it is still kept. Seqs are
contiguous, so that holds exactly when the oldest kept event is ``after + 1`` (or the
cursor is already at the head); otherwise the answer is ``cursor_expired`` (410) and the
client must re-list the tree.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator

from gobi.protocol import ErrorCode, Event, EventType, Node

from .access import Actor, require_role
from .errors import ServiceError
from .fanout import Fanout
from .store.base import MetadataStore, VaultRecord


#: Serialised ``event`` frames kept per process: one commit seen by a thousand sockets
#: is serialised once, not a thousand times.
FRAME_CACHE = 4096


class EventLog:
    def __init__(self, store: MetadataStore, fanout: Fanout, poll_interval: float):
        self.store = store
        self.fanout = fanout
        self.poll_interval = poll_interval
        self._frames: OrderedDict[tuple[str, int], str] = OrderedDict()

    def frame(self, vault_id: str, event: Event) -> str:
        """The WebSocket ``event`` frame of an event, serialised once per process."""
        key = (vault_id, event.seq)
        text = self._frames.get(key)
        if text is None:
            text = '{"type":"event","event":' + event.model_dump_json() + "}"
            self._frames[key] = text
            if len(self._frames) > FRAME_CACHE:
                self._frames.popitem(last=False)
        return text

    async def check_cursor(self, vault: VaultRecord, after: int) -> None:
        if after > vault.head_seq:
            raise ServiceError(
                ErrorCode.CURSOR_EXPIRED,
                "cursor is ahead of the vault's head (server restored from backup?); re-list",
                head_seq=vault.head_seq,
            )
        if after == vault.head_seq:
            return
        oldest = await self.store.oldest_event_seq(vault.id)
        if oldest is None or oldest > after + 1:
            raise ServiceError(
                ErrorCode.CURSOR_EXPIRED,
                "events after this cursor are past retention; re-list the tree",
                head_seq=vault.head_seq,
                oldest_seq=oldest,
            )

    async def page(
        self, actor: Actor, vault_id: str, after: int, limit: int
    ) -> tuple[list[Event], int, bool]:
        vault, _ = await require_role(self.store, actor, vault_id, "read")
        await self.check_cursor(vault, after)
        events = await self.store.events_after(vault_id, after, limit + 1)
        more = len(events) > limit
        return events[:limit], vault.head_seq, more

    async def tree(
        self, actor: Actor, vault_id: str, at: int | None, after_id: str | None, limit: int
    ) -> tuple[int, list[Node], str | None]:
        vault, _ = await require_role(self.store, actor, vault_id, "read")
        at = vault.head_seq if at is None else at
        if at > vault.head_seq:
            raise ServiceError(ErrorCode.BAD_REQUEST, "'at' is ahead of the vault's head",
                               head_seq=vault.head_seq)
        nodes = await self.store.list_tree(vault_id, at, after_id, limit + 1)
        # Checked after the read too: a prune between the two would leave holes.
        vault_now = await self.store.vault(vault_id)
        floor = max(vault.history_floor, vault_now.history_floor if vault_now else 0)
        if at < floor:
            raise ServiceError(ErrorCode.CURSOR_EXPIRED, "this listing is too old; start again",
                               head_seq=vault.head_seq)
        more = len(nodes) > limit
        nodes = nodes[:limit]
        return at, nodes, (nodes[-1].id if more else None)

    async def seq_at(self, actor: Actor, vault_id: str, ts: float) -> dict:
        """The vault's seq at a time: the tree at ``seq`` is the tree as it was at ``ts``
        (``seq_ts``: when that seq was committed). 404 before the vault existed, 410 when
        retention has dropped the history that listing it would need."""
        vault, _ = await require_role(self.store, actor, vault_id, "read")
        found = await self.store.seq_at(vault_id, ts)
        if found is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "the vault did not exist yet at that time",
                               created_at=vault.created_at)
        seq, seq_ts = found
        if seq < vault.history_floor:
            raise ServiceError(ErrorCode.CURSOR_EXPIRED,
                               "that time is older than the vault's kept history",
                               history_floor=vault.history_floor, head_seq=vault.head_seq)
        return {"seq": seq, "ts": seq_ts, "head_seq": vault.head_seq,
                "history_floor": vault.history_floor}

    async def stream(self, vault: VaultRecord, after: int, batch: int = 500) -> AsyncIterator[Event | int]:
        """Events after ``after`` forever: first the backlog, then live.

        Yields an ``int`` (the seq reached) once when the backlog is drained. Ends after a
        ``VAULT_DELETED`` event. Raises ``ServiceError(CURSOR_EXPIRED)`` when the cursor or
        (after a long stall) the stream itself falls behind retention.
        """
        await self.check_cursor(vault, after)
        caught_up = False
        while True:
            events = await self.store.events_after(vault.id, after, batch)
            if events and events[0].seq != after + 1:
                # Either retention dropped events we have not sent (then this raises) or
                # a store with concurrent writers shows a later commit first; then wait
                # for the hole to fill rather than skip an event for ever.
                await self.check_cursor(await self.store.vault(vault.id) or vault, after)
                await asyncio.sleep(0.05)
                continue
            for prev, event in zip([after] + [e.seq for e in events], events):
                if event.seq != prev + 1:
                    break
                yield event
                after = event.seq
                if event.type is EventType.VAULT_DELETED:
                    return
            if len(events) == batch or (events and after != events[-1].seq):
                continue
            if not caught_up:
                caught_up = True
                yield after
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self.fanout.wait_beyond(vault.id, after)
            except TimeoutError:
                pass
