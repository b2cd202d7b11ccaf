"""Faults: a target that is down, slow, returns corrupted bytes, or dies mid-write, met
by the encrypted and replicated wrappers over real drivers (local, and S3 on moto and
Ceph). The FaultyDriver wrapper injects the faults; nothing is mocked."""

from __future__ import annotations

import os

import anyio
import pytest

from gobi.drivers import ObjectCorrupted, TransientStorageError
from gobi.drivers.encrypted import HEADER_SIZE, EncryptedDriver
from gobi.drivers.replicated import ReplicatedDriver

from .faults import FaultyDriver

pytestmark = pytest.mark.anyio

BACKENDS = ["local", "s3-moto", "s3-ceph"]


def backend(env, kind, name):
    return env.local(name) if kind == "local" else env.s3(kind.removeprefix("s3-"), name)


@pytest.fixture(params=BACKENDS)
async def pair(request, env):
    """Two encrypted targets, the first behind a fault injector, replicated with quorum 1."""
    a = FaultyDriver(backend(env, request.param, "a"), "a")
    b = backend(env, request.param, "b")
    ea, eb = EncryptedDriver(a, env.keys), EncryptedDriver(b, env.keys)
    # a generous grace: on a loaded machine a healthy target may lag the quorum a little,
    # and these tests want both copies written unless they inject a fault
    rep = ReplicatedDriver([ea, eb], quorum=1, grace=30, hedge=0.2)
    yield rep, a, ea, eb
    await rep.close()


async def test_target_down_writes_reach_quorum_reads_fall_back_and_repair_catches_up(pair):
    rep, a, ea, eb = pair
    a.down = True
    data = os.urandom(100_000)
    await rep.put("v1/k", data)
    assert await rep.get("v1/k") == data
    status = await rep.status(scan=True)
    assert not status[0].reachable and status[0].pending == 1 and status[0].lag >= 1
    assert status[1].reachable and status[1].lag == 0
    report = await rep.repair()  # still down: reported, nothing lost, still pending
    assert (report.copied, report.failed) == (0, 1)
    assert rep.health[0].pending == {"v1/k": "put"}
    with pytest.raises(TransientStorageError):
        await rep.repair(scan=True)  # a full comparison needs every target
    a.down = False
    report = await rep.repair()
    assert (report.copied, report.failed) == (1, 0) and rep.health[0].pending == {}
    assert await ea.get("v1/k") == data
    assert [s.lag for s in await rep.status(scan=True)] == [0, 0]


async def test_deletes_while_down_are_replayed(pair):
    rep, a, ea, eb = pair
    await rep.put("v1/k", b"x")
    a.down = True
    await rep.delete("v1/k")
    a.down = False
    assert await ea.exists("v1/k")
    await rep.repair()
    assert not await ea.exists("v1/k") and not await rep.exists("v1/k")


async def test_without_quorum_a_write_fails_and_says_why(env):
    a = FaultyDriver(env.local("a"), "a")
    rep = ReplicatedDriver([a, env.local("b")])  # quorum: all
    a.down = True
    with pytest.raises(TransientStorageError, match="written to 1 of 2 targets, quorum 2"):
        await rep.put("v1/k", b"x")


async def test_slow_target_is_hedged_on_reads_and_left_behind_on_writes(pair):
    rep, a, ea, eb = pair
    data = os.urandom(5000)
    await rep.put("v1/k", data)
    a.delay = 120  # far beyond any guard below: reaching it would mean no hedging
    rep.grace = 0.2
    with anyio.fail_after(60):
        assert await rep.get("v1/k") == data
        await rep.put("v1/k2", data)  # quorum 1 from b; a gets the grace, then is pending
    assert "v1/k2" in rep.health[0].pending
    a.delay = 0
    await rep.repair()
    assert await ea.get("v1/k2") == data


async def test_corrupted_reads_are_detected_never_returned(pair):
    rep, a, ea, eb = pair
    data = os.urandom(3 * 65536)
    await rep.put("v1/k", data)
    a.corrupt_reads = True
    with pytest.raises(ObjectCorrupted):
        await ea.get("v1/k")
    with pytest.raises(ObjectCorrupted):
        await ea.get("v1/k", 70_000, 10)
    assert await rep.get("v1/k") == data           # falls back to b
    assert await rep.get("v1/k", 70_000, 10) == data[70_000:70_010]


async def test_corrupted_copy_at_rest_is_read_from_the_other_and_repaired(pair):
    rep, a, ea, eb = pair
    data = os.urandom(10_000)
    await rep.put("v1/k", data)
    raw = bytearray(await a.inner.get("v1/k"))
    raw[HEADER_SIZE + 100] ^= 0x10
    await a.inner.put("v1/k", bytes(raw))        # bit rot on target a
    assert await rep.get("v1/k") == data          # read from b, written back to a
    assert await ea.get("v1/k") == data
    raw = bytearray(await a.inner.get("v1/k"))
    raw[HEADER_SIZE + 7] ^= 0x10
    await a.inner.put("v1/k", bytes(raw))
    report = await rep.repair(scrub=True)
    assert report.corrupted == 1 and report.copied == 1
    assert await ea.get("v1/k") == data


async def test_a_write_that_dies_midway_is_never_read_as_data(pair):
    rep, a, ea, eb = pair
    data = os.urandom(200_000)
    a.torn_writes = True
    with pytest.raises(TransientStorageError):
        await ea.put("v1/solo", data)
    a.torn_writes = False
    with pytest.raises(ObjectCorrupted):            # half an object stays behind
        await ea.get("v1/solo")
    a.torn_writes = True
    await rep.put("v1/k", data)                     # quorum from b
    a.torn_writes = False
    assert await rep.get("v1/k") == data
    assert await ea.get("v1/k") == data             # read repair rewrote a's torn copy


async def test_every_target_down_is_transient_not_missing(env):
    a, b = FaultyDriver(env.local("a"), "a"), FaultyDriver(env.local("b"), "b")
    rep = ReplicatedDriver([a, b], quorum=1)
    await rep.put("v1/k", b"x")
    a.down = b.down = True
    with pytest.raises(TransientStorageError):
        await rep.get("v1/k")
    with pytest.raises(TransientStorageError):
        await rep.head("v1/k")
    with pytest.raises(TransientStorageError):
        [i async for i in rep.list()]
    a.down = False
    assert [i.key async for i in rep.list()] == ["v1/k"]  # one lister suffices


async def test_reads_prefer_healthy_targets(env):
    a, b = FaultyDriver(env.local("a"), "a"), FaultyDriver(env.local("b"), "b")
    rep = ReplicatedDriver([a, b], quorum=1)
    await rep.put("v1/k", b"x")
    a.down = True
    for _ in range(4):
        assert await rep.get("v1/k") == b"x"
    tries_on_a = a.calls["get"]
    assert not rep.health[0].healthy
    for _ in range(4):
        await rep.get("v1/k")
    assert a.calls["get"] == tries_on_a  # a sick target is read last, so not at all here


async def test_s3_target_really_down(env):
    """An S3 endpoint nobody listens on: connection refused, retried, then transient."""
    from gobi.drivers.s3 import S3Driver

    from .services import free_port

    dead = S3Driver("gobi-tests", "x", endpoint=f"http://127.0.0.1:{free_port()}", access_key="test",
                    secret_key="testtest", max_attempts=2)
    try:
        with pytest.raises(TransientStorageError):
            await dead.put("v1/k", b"x")
        rep = ReplicatedDriver([EncryptedDriver(dead, env.keys), EncryptedDriver(env.local(), env.keys)], quorum=1)
        await rep.put("v1/k", b"still stored")
        assert await rep.get("v1/k") == b"still stored"
        status = await rep.status()
        assert not status[0].reachable and "Transient" in status[0].error
    finally:
        await dead.close()
