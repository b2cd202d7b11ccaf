"""Redis fan-out against a real redis-server: doorbells cross instances, and a Redis that is
down, restarted or sending garbage delays sockets at worst, never breaks a commit.

Two ``RedisFanout`` objects in one process stand for two API instances (each has its own
connection and subscription, exactly as in two processes). The waits below are hang guards,
not performance thresholds.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from gobi.server.fanout import InProcessFanout, open_fanout
from gobi.server.fanout.redis import DEFAULT_CHANNEL, RedisFanout
from tests.backing import RedisServer

pytestmark = pytest.mark.asyncio
GUARD = 10  # seconds: only to turn a hang into a failure


async def started(url: str) -> RedisFanout:
    fanout = open_fanout(url)
    assert isinstance(fanout, RedisFanout)
    await fanout.start()
    return fanout


async def until_subscribed(*fanouts: RedisFanout) -> None:
    async with asyncio.timeout(GUARD):
        for f in fanouts:
            await f.subscribed.wait()


@pytest_asyncio.fixture
async def pair(redis_server):
    a, b = await started(redis_server.url), await started(redis_server.url)
    await until_subscribed(a, b)
    yield a, b
    await a.close()
    await b.close()


async def test_open_fanout_urls():
    assert isinstance(open_fanout("memory"), InProcessFanout)
    f = open_fanout("redis://127.0.0.1:1/3?channel=team-a")
    assert isinstance(f, RedisFanout)
    assert (f.url, f.channel) == ("redis://127.0.0.1:1/3", "team-a")
    assert open_fanout("redis://h:1/0").channel == DEFAULT_CHANNEL
    with pytest.raises(ValueError):
        open_fanout("kafka://x")


async def test_doorbell_crosses_instances(pair):
    a, b = pair
    waiter = asyncio.create_task(b.wait_beyond("v1", 0))
    other_vault = asyncio.create_task(b.wait_beyond("v2", 0))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await a.publish("v1", 1)
    async with asyncio.timeout(GUARD):
        await waiter
    # The publishing instance rang its own bell without a round trip.
    async with asyncio.timeout(GUARD):
        await a.wait_beyond("v1", 0)
    await asyncio.sleep(0.1)
    assert not other_vault.done()  # a doorbell wakes only its vault
    other_vault.cancel()
    # A bell remembers the highest seq: a waiter that read up to 1 and starts waiting
    # after the doorbell for 2 arrived is not left waiting.
    await a.publish("v1", 2)
    async with asyncio.timeout(GUARD):
        while b.bells._bell("v1").seq < 2:
            await asyncio.sleep(0.01)
        await b.wait_beyond("v1", 1)


async def test_garbage_on_the_channel_is_ignored(pair, redis_server):
    a, b = pair
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        for junk in (b"not json", b'{"v": 1, "s": "x"}', b"[]", b'{"v": "v9"}'):
            await client.publish(DEFAULT_CHANNEL, junk)
    finally:
        await client.aclose()
    waiter = asyncio.create_task(b.wait_beyond("v9", 0))
    await a.publish("v9", 5)
    async with asyncio.timeout(GUARD):
        await waiter
    assert b.subscribed.is_set()


async def test_channels_separate_deployments(redis_server):
    a = await started(redis_server.url + "?channel=one")
    b = await started(redis_server.url + "?channel=two")
    try:
        await until_subscribed(a, b)
        waiter = asyncio.create_task(b.wait_beyond("v1", 0))
        await a.publish("v1", 1)
        await asyncio.sleep(0.3)
        assert not waiter.done()
        waiter.cancel()
    finally:
        await a.close()
        await b.close()


async def test_redis_outage_loses_nothing_and_recovers():
    redis = RedisServer().start()
    a = await started(redis.url)
    b = await started(redis.url)
    try:
        await until_subscribed(a, b)
        redis.stop()
        async with asyncio.timeout(GUARD):
            while b.subscribed.is_set():
                await asyncio.sleep(0.02)
        # Commits go on: publishing neither raises nor blocks while Redis is down, and the
        # local bells still ring.
        async with asyncio.timeout(GUARD):
            await a.publish("v1", 1)
            await a.wait_beyond("v1", 0)
            while a.dropped == 0:
                await asyncio.sleep(0.02)
        # B missed that doorbell (its sockets poll the store meanwhile). When Redis comes
        # back, B resubscribes and wakes every waiter so they re-read the store.
        waiter = asyncio.create_task(b.wait_beyond("v1", 0))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        redis.start()
        async with asyncio.timeout(GUARD):
            await waiter
            await until_subscribed(a, b)
        # And doorbells flow again.
        waiter = asyncio.create_task(b.wait_beyond("v1", 1))
        async with asyncio.timeout(GUARD):
            while not waiter.done():
                await a.publish("v1", 2)  # the publisher reconnects on its next batch
                await asyncio.sleep(0.1)
    finally:
        await a.close()
        await b.close()
        redis.stop()


async def test_instance_starts_while_redis_is_down():
    redis = RedisServer()  # port chosen, nothing listening yet
    f = await started(redis.url)
    try:
        await f.publish("v1", 1)  # no error
        await asyncio.sleep(0.3)
        assert not f.subscribed.is_set()
        redis.start()
        await until_subscribed(f)
    finally:
        await f.close()
        redis.stop()
