"""Fan-out between API instances through Redis pub/sub: a doorbell, never the source of truth.

After a commit an instance rings its own bells at once (its sockets need no round trip
through Redis) and publishes ``{"v": vault, "s": seq}`` on one channel. Every instance
holds one subscription to that channel and rings its local bells; sockets then read the
events from the metadata store.

Failure handling, because Redis is allowed to be down or lossy:
- Publishing never blocks or fails a request: doorbells go through a small coalescing
  buffer (one pending seq per vault) to a publisher task. While Redis is unreachable they
  are dropped; sockets on other instances then find the events by polling the store every
  ``poll_interval`` (see ``gobi.server.events``).
- The subscriber reconnects with back-off. Messages published while it was away are lost,
  so after every (re)subscription it wakes every local socket, which re-reads the store.
- A silently dead connection is noticed by the client's health check (a PING when idle).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import Fanout, LocalBells

log = logging.getLogger("gobi.server.fanout")

DEFAULT_CHANNEL = "gobi:doorbell"
#: Seconds between PINGs on an idle connection, to notice a dead one.
HEALTH_CHECK_INTERVAL = 5
_MAX_BACKOFF = 5.0


def _split_url(url: str) -> tuple[str, str]:
    """The Redis URL for redis-py and the channel (``?channel=NAME``, ours, removed)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    channel = next((v for k, v in query if k == "channel"), DEFAULT_CHANNEL)
    rest = urlencode([(k, v) for k, v in query if k != "channel"])
    return urlunsplit(parts._replace(query=rest)), channel


class RedisFanout(Fanout):
    """``redis://[:password@]host:port/db[?channel=NAME]`` (``rediss://`` for TLS)."""

    def __init__(self, url: str, reconnect_delay: float = 0.2):
        self.url, self.channel = _split_url(url)
        self.bells = LocalBells()
        self.reconnect_delay = reconnect_delay
        self._redis: aioredis.Redis | None = None
        self._pending: dict[str, int] = {}
        self._wake_publisher = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        #: True while the subscription is live (readable by health checks and tests).
        self.subscribed = asyncio.Event()
        self.published = 0        # doorbells handed to Redis
        self.dropped = 0          # doorbells lost while Redis was unreachable
        self._last_warning = 0.0

    def _client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            socket_connect_timeout=2,
            socket_keepalive=True,
            retry_on_timeout=False,
            decode_responses=False,
        )

    async def start(self) -> None:
        self._redis = self._client()
        self._tasks = [
            asyncio.create_task(self._subscribe_forever(), name="gobi-fanout-subscriber"),
            asyncio.create_task(self._publish_forever(), name="gobi-fanout-publisher"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, vault_id: str, seq: int) -> None:
        self.bells.ring(vault_id, seq)
        if seq > self._pending.get(vault_id, 0):
            self._pending[vault_id] = seq
        self._wake_publisher.set()

    async def _publish_forever(self) -> None:
        while True:
            await self._wake_publisher.wait()
            self._wake_publisher.clear()
            batch, self._pending = self._pending, {}
            if not batch or self._redis is None:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for vault_id, seq in batch.items():
                        pipe.publish(self.channel, json.dumps({"v": vault_id, "s": seq}))
                    await pipe.execute()
                self.published += len(batch)
            except (RedisError, OSError) as exc:
                # Lost doorbells cost other instances' sockets one poll interval; nothing
                # is lost. Not re-queued: a retry storm would not help a dead Redis.
                self.dropped += len(batch)
                self._warn(f"cannot publish to Redis ({exc}); other instances will poll")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            log.warning(message)

    # -- subscription -----------------------------------------------------------------------

    async def _subscribe_forever(self) -> None:
        delay = self.reconnect_delay
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                if self.subscribed.is_set():
                    log.warning("lost the Redis subscription (%s); polling until it is back", exc)
                else:
                    self._warn(f"cannot subscribe to Redis ({exc}); polling until it is back")
            except BaseException:
                self.subscribed.clear()
                raise
            if self.subscribed.is_set():  # it worked for a while: retry quickly
                self.subscribed.clear()
                delay = self.reconnect_delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _listen(self) -> None:
        assert self._redis is not None
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                msg = await pubsub.get_message(timeout=HEALTH_CHECK_INTERVAL)
                if msg is None:
                    continue
                if msg["type"] == "subscribe":
                    if not self.subscribed.is_set():
                        self.subscribed.set()
                        # Whatever was published while we were away is lost: every
                        # socket re-reads the store now.
                        self.bells.wake_all()
                        log.info("subscribed to Redis channel %s", self.channel)
                elif msg["type"] == "message":
                    self._ring(msg["data"])
        finally:
            try:
                await pubsub.aclose()
            except (RedisError, OSError):
                pass

    def _ring(self, data: bytes) -> None:
        try:
            doorbell = json.loads(data)
            vault_id, seq = doorbell["v"], doorbell["s"]
            if not isinstance(vault_id, str) or not isinstance(seq, int):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a malformed doorbell on %s: %.100r", self.channel, data)
            return
        self.bells.ring(vault_id, seq)

    async def wait_beyond(self, vault_id: str, after: int) -> None:
        await self.bells.wait_beyond(vault_id, after)
