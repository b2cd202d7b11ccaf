"""Event fan-out: waking the WebSockets that wait for a vault's next event.

The fan-out is a doorbell, never the source of truth. After a commit the service
publishes ``(vault, seq)``; every WebSocket of that vault that waits in
``wait_beyond(vault, after)`` wakes up and reads the events from the metadata store.
A lost doorbell delays a socket by at most its poll interval (the caller bounds every
wait with ``asyncio.timeout``), it never loses an event.

``InProcessFanout`` serves one process (the embedded default). ``RedisFanout`` (scale-out,
``redis.py``) publishes to Redis and rings the same local bells from one
subscription per instance.
"""

from __future__ import annotations

import abc
import asyncio


class _Bell:
    __slots__ = ("seq", "event")

    def __init__(self) -> None:
        self.seq = 0
        self.event = asyncio.Event()


class LocalBells:
    """Per-vault bells inside one process.

    A bell remembers the highest seq announced, so a socket that read the store and then
    starts waiting cannot miss a doorbell rung in between. Bells are a few bytes per vault
    and are kept for the life of the process.
    """

    def __init__(self) -> None:
        self._bells: dict[str, _Bell] = {}

    def _bell(self, vault_id: str) -> _Bell:
        bell = self._bells.get(vault_id)
        if bell is None:
            bell = self._bells[vault_id] = _Bell()
        return bell

    def ring(self, vault_id: str, seq: int) -> None:
        bell = self._bell(vault_id)
        if seq <= bell.seq:
            return
        bell.seq = seq
        event, bell.event = bell.event, asyncio.Event()
        event.set()

    def wake_all(self) -> None:
        """Wake every waiter (e.g. after a reconnect to Redis: messages may be lost)."""
        for bell in self._bells.values():
            event, bell.event = bell.event, asyncio.Event()
            event.set()

    async def wait_beyond(self, vault_id: str, after: int) -> None:
        bell = self._bell(vault_id)
        if bell.seq <= after:
            await bell.event.wait()


class Fanout(abc.ABC):
    async def start(self) -> None:
        """Connect; called once before serving."""

    async def close(self) -> None:
        """Disconnect; wakes nobody."""

    @abc.abstractmethod
    async def publish(self, vault_id: str, seq: int) -> None:
        """Announce that the vault's events up to ``seq`` are committed."""

    @abc.abstractmethod
    async def wait_beyond(self, vault_id: str, after: int) -> None:
        """Return once a seq greater than ``after`` may have been committed in the vault.

        Wake-ups may be spurious: the caller re-reads the store either way, and bounds
        the wait with ``asyncio.timeout`` so that a lost doorbell costs one poll interval.
        """


class InProcessFanout(Fanout):
    def __init__(self) -> None:
        self.bells = LocalBells()

    async def publish(self, vault_id: str, seq: int) -> None:
        self.bells.ring(vault_id, seq)

    async def wait_beyond(self, vault_id: str, after: int) -> None:
        await self.bells.wait_beyond(vault_id, after)
