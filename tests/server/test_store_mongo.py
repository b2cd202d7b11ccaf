"""What only the MongoDB store does: the retention TTL index, the translation of a lost
database into ``StoreUnavailable``, and URL handling. The shared behaviour is in
``test_store_contract.py``."""

from __future__ import annotations

import time

import pytest
from pymongo import AsyncMongoClient

from gobi.protocol import ROOT_ID, Event, EventType, Node, NodeKind
from gobi.server.store import open_store
from gobi.server.store.base import StoreUnavailable, UserRecord, VaultRecord
from gobi.server.store.mongo import MongoStore
from tests.backing import free_port

pytestmark = pytest.mark.asyncio


async def test_open_store_picks_mongo_and_database_from_url(mongo_url):
    store = open_store(mongo_url, event_retention=3600)
    assert isinstance(store, MongoStore)
    await store.open()
    try:
        await store.ping()
        db_name = mongo_url.split("/")[3].split("?")[0]
        assert store._db.name == db_name
    finally:
        await store.close()


async def test_retention_ttl_index_follows_configuration(mongo_url, mongo_server):
    if mongo_server.kind.startswith("nx-27017"):
        pytest.xfail("nx-27017 does not keep index names")
    store = MongoStore(mongo_url, event_retention=86400)
    await store.open()
    await store.close()
    client = AsyncMongoClient(mongo_url)
    try:
        info = await client.get_default_database().events.index_information()
        assert info["retention"]["expireAfterSeconds"] == 86400
        assert info["retention"]["key"] == [("at", 1)]
        # A new retention on restart replaces the old one.
        store = MongoStore(mongo_url, event_retention=7 * 86400)
        await store.open()
        info = await client.get_default_database().events.index_information()
        assert info["retention"]["expireAfterSeconds"] == 7 * 86400
        # The TTL index really drops events past retention (MongoDB within a minute,
        # mongoeco at once), and keeps recent ones.
        user = UserRecord("u1", "alice", "h", False, time.time())
        await store.create_user(user)
        root = Node(id=ROOT_ID, parent=None, name="", kind=NodeKind.DIR, rev=0)
        await store.create_vault(VaultRecord("v1", "v", "u1", 0, time.time()), root)

        async def fn(tx):
            for ts in (1000.0, time.time()):
                seq = await tx.next_seq()
                await tx.add_event(Event(seq=seq, ts=ts, type=EventType.ATTR))

        await store.run_write("v1", fn)
        events = client.get_default_database().events
        assert await events.count_documents({"vault_id": "v1", "ts": {"$gt": 2000}}) == 1
        remaining = await events.count_documents({"vault_id": "v1"})
        assert remaining in (1, 2)  # the old one goes when the TTL monitor runs
        await store.close()
    finally:
        await client.close()


async def test_unreachable_database_is_store_unavailable():
    port = free_port()  # nothing listens there
    store = MongoStore(
        f"mongodb://127.0.0.1:{port}/gobi?directConnection=true&serverSelectionTimeoutMS=300"
    )
    with pytest.raises(StoreUnavailable):
        await store.open()
    assert store._client is None


async def test_lost_database_after_open_is_store_unavailable(mongo_url):
    store = MongoStore(mongo_url + "&serverSelectionTimeoutMS=300")
    await store.open()
    try:
        await store._client.close()  # as if the database went away
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        store._client = None


async def test_conflict_gate_lets_a_retrying_transaction_run_alone():
    import asyncio

    from gobi.server.store.mongo import _ConflictGate

    gate = _ConflictGate()
    log: list[str] = []
    release_first = asyncio.Event()

    async def shared(name: str, hold: asyncio.Event | None = None) -> None:
        async with gate.shared():
            log.append(f"{name}+")
            if hold:
                await hold.wait()
            log.append(f"{name}-")

    async def exclusive() -> None:
        async with gate.exclusive():
            log.append("X+")
            await asyncio.sleep(0.01)
            log.append("X-")

    first = asyncio.create_task(shared("a", release_first))
    await asyncio.sleep(0.01)
    retry = asyncio.create_task(exclusive())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(shared("b"))  # arrives while the retry waits: goes after it
    await asyncio.sleep(0.01)
    assert log == ["a+"]
    release_first.set()
    await asyncio.gather(first, retry, late)
    assert log == ["a+", "a-", "X+", "X-", "b+", "b-"]
