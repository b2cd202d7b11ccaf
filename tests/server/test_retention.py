"""The history jobs in-process: version thinning, trash purge, hold expiry, garbage
collection's grace period and its two phases against concurrent uploads and commits.

These run the real services (SQLite store, encrypted local storage) without HTTP, so the
jobs can be run "40 days later" by passing ``now``; objects are counted in storage with
the storage driver.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time

import pytest
import pytest_asyncio

from gobi.chunking import chunker, pieces_of_bytes
from gobi.drivers.local import LocalDriver
from gobi.protocol import ChunkRef, CommitContentRequest, CreateNodeRequest, DeleteNodeRequest, ErrorCode, Manifest
from gobi.server.access import Actor
from gobi.server.config import ServerConfig
from gobi.server.errors import ServiceError
from gobi.server.history import plan_thinning
from gobi.server.maintenance import history_round
from gobi.server.service import Services
from gobi.server.store.base import VersionRecord
from gobi.server.store.sqlite import SCHEMA_VERSION, SqliteStore
from gobi.server.writes import SYSTEM

pytestmark = pytest.mark.asyncio
DAY = 86400.0
SMALL = chunker(avg=1024, min_size=256, max_size=4096)


@pytest_asyncio.fixture
async def svc(tmp_path):
    cfg = ServerConfig(data_dir=tmp_path, history_interval=0, gc_interval=0,
                       storage_maintenance_interval=0, gc_grace="1h", mass_delete_files=3,
                       mass_delete_min_files=100, mass_delete_fresh=0)
    services = await Services.open(cfg)
    yield services
    await services.close()


@pytest_asyncio.fixture
async def who(svc):
    user = await svc.accounts.register("alice", "correct horse battery")
    actor = Actor(user, "laptop")
    vault = await svc.vaults.create(actor, "v")
    return actor, vault.id


async def upload(svc, actor, vault, data: bytes) -> list[ChunkRef]:
    refs = []
    for p in pieces_of_bytes(data, SMALL) if data else []:
        await svc.chunks.put(actor, vault, p.hash, data[p.offset:p.offset + p.size])
        refs.append(ChunkRef(hash=p.hash, size=p.size))
    return refs


async def create(svc, actor, vault, name, data, parent="root"):
    refs = await upload(svc, actor, vault, data)
    node, _ = await svc.nodes.create(actor, vault, CreateNodeRequest(
        parent=parent, name=name, kind="file", content=Manifest(chunks=refs, size=len(data))))
    return node


async def commit(svc, actor, vault, node, data):
    refs = await upload(svc, actor, vault, data)
    return await svc.nodes.commit(actor, vault, node.id, CommitContentRequest(
        base_rev=node.rev, chunks=refs, size=len(data)))


async def read(svc, actor, vault, node_id, rev=None) -> bytes:
    version = await svc.nodes.version(actor, vault, node_id, rev)
    out = b""
    for c in version.chunks:
        out += await svc.chunks.read(vault, c.hash, 0, None, c.size)
    return out


async def objects(svc, vault) -> int:
    driver = LocalDriver(svc.config.data_dir / "blobs")
    return len([o async for o in driver.list(f"{vault}/")])


async def test_plan_thinning_keeps_recent_daily_and_protected_versions():
    now = 1000 * DAY + DAY / 2
    v = lambda rev, age: VersionRecord("n", rev, 0, 0, (), now - age, None, None)  # noqa: E731
    versions = [
        v(1, 400 * DAY),                      # past a year: dropped
        v(2, 400 * DAY + 10),                 # ... unless protected (head, open conflict)
        v(3, 40 * DAY + 100), v(4, 40 * DAY + 50), v(5, 40 * DAY),   # one day: newest kept
        v(6, 41.5 * DAY),                     # alone on its day: kept
        v(7, 29 * DAY), v(8, 1), v(9, 0),     # under 30 days: all kept
    ]
    assert sorted(plan_thinning(versions, {2}, now, 30 * DAY, 365 * DAY)) == [1, 3, 4]
    # a kept version stands for its day when it is the day's newest (the head always is)
    assert sorted(plan_thinning(versions, {2, 6}, now, 30 * DAY, 365 * DAY)) == [1, 3, 4]
    assert sorted(plan_thinning(versions, {2, 3}, now, 30 * DAY, 365 * DAY)) == [1, 4]
    assert plan_thinning(versions, set(range(10)), now, 30 * DAY, 365 * DAY) == []


async def test_retention_thins_versions_and_gc_frees_their_chunks(svc, who):
    actor, vault = who
    f = await create(svc, actor, vault, "log.txt", os.urandom(5000))
    revs = [f]
    for _ in range(4):
        revs.append(await commit(svc, actor, vault, revs[-1], os.urandom(5000)))
    head = revs[-1]
    total = await objects(svc, vault)
    now = time.time()
    assert (await history_round(svc, now))["versions_dropped"] == 0
    done = await history_round(svc, now + 40 * DAY)
    assert done["versions_dropped"] == 4          # all from one day: the newest (the head) stays
    assert [v.rev for v in await svc.store.versions(vault, f.id)] == [head.content_rev]
    # their chunks are garbage now, once the grace period is over
    report = await svc.gc.collect(vault, now=now + 40 * DAY)
    assert report.freed["chunks"] == total - report.referenced["chunks"] > 0
    assert await objects(svc, vault) == report.referenced["chunks"]
    assert await read(svc, actor, vault, f.id) == await read(svc, actor, vault, f.id, head.content_rev)


async def test_trash_is_purged_after_its_retention(svc, who):
    actor, vault = who
    d, _ = await svc.nodes.create(actor, vault, CreateNodeRequest(parent="root", name="d", kind="dir"))
    kept = await create(svc, actor, vault, "kept.bin", os.urandom(3000))
    for i in range(2):
        await create(svc, actor, vault, f"{i}.bin", os.urandom(3000), parent=d.id)
    await svc.nodes.delete(actor, vault, d.id, DeleteNodeRequest(base_rev=d.rev, recursive=True))
    now = time.time()
    assert (await history_round(svc, now + 29 * DAY))["trash_purged"] == 0
    assert len(await svc.trash.list(actor, vault)) == 1
    done = await history_round(svc, now + 31 * DAY)
    assert (done["trash_purged"], done["trash_versions_dropped"]) == (1, 2)
    assert await svc.trash.list(actor, vault) == []
    before = await objects(svc, vault)
    report = await svc.gc.collect(vault, now=now + 31 * DAY)
    assert report.freed["chunks"] > 0 and await objects(svc, vault) == before - report.freed["chunks"]
    assert len(await read(svc, actor, vault, kept.id)) == 3000


async def test_gc_keeps_uploads_in_their_grace_period(svc, who):
    actor, vault = who
    await upload(svc, actor, vault, b"uploaded, commit not sent yet" * 5)     # one chunk
    stats = await svc.gc.collect(vault, dry_run=True)
    assert (stats.in_grace["chunks"], stats.collectable["chunks"]) == (1, 0)
    assert (await svc.gc.collect(vault)).freed["chunks"] == 0
    assert await objects(svc, vault) == 1
    later = await svc.gc.collect(vault, now=time.time() + 2 * 3600)
    assert later.freed["chunks"] == 1 and await objects(svc, vault) == 0


async def test_gc_never_races_an_upload_or_a_commit(svc, who):
    actor, vault = who
    data = b"a chunk that is garbage when the collector starts" * 4     # one chunk
    refs = await upload(svc, actor, vault, data)
    f = await create(svc, actor, vault, "f", b"")
    now = time.time() + 2 * 3600

    # Phase 1 of a collection: the chunk is doomed (as if the collector were mid-run).
    doomed = await svc.store.run_write(vault, lambda tx: tx.doom_chunks(now, now, 100))
    assert [h for h, _ in doomed] == [r.hash for r in refs]
    # A commit naming it now is told to upload it again...
    req = CommitContentRequest(base_rev=f.rev, chunks=refs, size=len(data))
    with pytest.raises(ServiceError) as exc:
        await svc.nodes.commit(actor, vault, f.id, req)
    assert exc.value.code is ErrorCode.MISSING_CHUNKS
    assert await svc.chunks.missing(actor, vault, [refs[0].hash]) == [refs[0].hash]
    # ...and the upload waits until the collector has deleted the object.
    with pytest.raises(ServiceError) as exc:
        await upload(svc, actor, vault, data)
    assert exc.value.code is ErrorCode.UNAVAILABLE and exc.value.headers["Retry-After"]
    report = await svc.gc.collect(vault, now=now)
    assert report.freed["chunks"] == 1 and await objects(svc, vault) == 0
    # Now the upload and the commit go through, and the bytes are there.
    await upload(svc, actor, vault, data)
    node = await svc.nodes.commit(actor, vault, f.id, req)
    assert await read(svc, actor, vault, node.id) == data
    assert (await svc.gc.collect(vault, now=now + 3600)).freed["chunks"] == 0
    # A referenced chunk is never doomed, however old.
    assert await svc.store.run_write(vault, lambda tx: tx.doom_chunks(now + 10 * DAY, now, 100)) == []


async def test_pending_holds_expire(svc, who):
    actor, vault = who
    files = [await create(svc, actor, vault, f"f{i}", b"x") for i in range(6)]
    for f in files[:3]:
        await svc.nodes.delete(actor, vault, f.id, DeleteNodeRequest(base_rev=f.rev))
    with pytest.raises(ServiceError) as exc:
        await svc.nodes.delete(actor, vault, files[3].id, DeleteNodeRequest(base_rev=files[3].rev))
    assert exc.value.code is ErrorCode.DELETE_HELD
    assert (await history_round(svc, time.time() + 2 * DAY))["holds_expired"] == 0
    assert (await history_round(svc, time.time() + 4 * DAY))["holds_expired"] == 1
    [hold] = await svc.holds.list(actor, vault, None)
    assert (hold.state, hold.resolved_by) == ("expired", SYSTEM.user.username)
    # the held delete and the three before it (pulled back into the hold) stay undone
    assert hold.files == 4
    for f in files[:4]:
        assert not (await svc.store.node(vault, f.id)).deleted
    # a fresh window: the device may delete again
    await svc.nodes.delete(actor, vault, files[4].id, DeleteNodeRequest(base_rev=files[4].rev))


async def test_sqlite_schema_1_is_migrated(tmp_path):
    path = tmp_path / "meta.db"
    store = SqliteStore(path)
    await store.open()
    from tests.server.test_store_contract import create, file, new_user, new_vault

    user = await new_user(store)
    vid = await new_vault(store, user)
    f = await create(store, vid, file("f"))
    h1, h2 = "1" * 64, "2" * 64
    for h in (h1, h2):
        await store.add_chunk(vid, h, 5, 1.0)

    async def add(tx):
        await tx.add_version(vid, VersionRecord(f.id, 1, 10, 0, (ChunkRef(hash=h1, size=5),) * 2, 1.0, None, None))
        await tx.add_version(vid, VersionRecord(f.id, 2, 5, 0, (ChunkRef(hash=h1, size=5),), 2.0, None, None))

    await store.run_write(vid, add)
    await store.close()
    # Make it look like a version 1 database.
    db = sqlite3.connect(path)
    db.executescript("""
        DROP INDEX chunks_unreferenced; DROP INDEX chunks_doomed;
        ALTER TABLE chunks DROP COLUMN refs; ALTER TABLE chunks DROP COLUMN doomed;
        ALTER TABLE versions DROP COLUMN origin;
        UPDATE meta SET value='1' WHERE key='schema_version';
    """)
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        stats = await store.chunk_stats(vid, before_ts=10.0)
        assert (stats.referenced, stats.collectable) == ((1, 5), (1, 5))
        assert (await store.version(vid, f.id, 2)).origin is None
        assert await store.run_write(vid, lambda tx: tx.doom_chunks(10.0, 11.0, 10)) == [(h2, 5)]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert json.loads(db.execute("SELECT chunks FROM versions WHERE rev=1").fetchone()[0])[0][0] == h1
    db.close()
    await asyncio.sleep(0)
