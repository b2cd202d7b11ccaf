"""The driver contract, run against every backend and wrapper combination (see
conftest.CASES), under asyncio and trio."""

from __future__ import annotations

import os

import anyio
import pytest

from gobi.drivers import ObjectNotFound
from gobi.drivers.base import StorageDriver

from .conftest import driver_params

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
SEG = 64 * 1024


def pytest_generate_tests(metafunc):
    if "driver" in metafunc.fixturenames:
        metafunc.parametrize("anyio_backend, driver", driver_params(), indirect=True)


async def test_roundtrip_sizes(driver: StorageDriver):
    for size in (0, 1, SEG - 1, SEG, SEG + 1, 300_000):
        data = os.urandom(size)
        await driver.put(f"v1/obj{size}", data)
        assert await driver.get(f"v1/obj{size}") == data
        assert (await driver.head(f"v1/obj{size}")).size == size


async def test_every_byte_value_and_overwrite(driver):
    data = bytes(range(256)) * 17
    await driver.put("v1/bytes", data)
    assert await driver.get("v1/bytes") == data
    await driver.put("v1/bytes", b"shorter now")
    assert await driver.get("v1/bytes") == b"shorter now"
    assert (await driver.head("v1/bytes")).size == len(b"shorter now")


async def test_ranges_are_clipped_like_http(driver):
    data = os.urandom(3 * SEG + 1234)
    await driver.put("v1/ranged", data)
    cases = [(0, 10), (5, 0), (SEG - 3, 6), (SEG, SEG), (2 * SEG + 7, None), (len(data) - 1, 5),
             (len(data), 5), (len(data) + SEG * 3, 10), (0, len(data) + 100), (SEG * 3, None),
             (100, 2 * SEG), (len(data) - 5, None)]
    for offset, length in cases:
        expected = data[offset:] if length is None else data[offset:offset + length]
        got = await driver.get("v1/ranged", offset, length)
        assert got == expected, (offset, length)
    with pytest.raises(ValueError):
        await driver.get("v1/ranged", -1, 4)
    with pytest.raises(ValueError):
        await driver.get("v1/ranged", 0, -4)


async def test_missing_objects(driver):
    with pytest.raises(ObjectNotFound):
        await driver.get("v1/nope")
    with pytest.raises(ObjectNotFound):
        await driver.get("v1/nope", 10, 5)
    with pytest.raises(ObjectNotFound):
        await driver.get("v1/nope", 0, 0)
    with pytest.raises(ObjectNotFound):
        await driver.head("v1/nope")
    assert not await driver.exists("v1/nope")
    await driver.delete("v1/nope")  # absent is not an error


async def test_delete_is_idempotent(driver):
    await driver.put("v1/gone", b"x")
    assert await driver.exists("v1/gone")
    await driver.delete("v1/gone")
    await driver.delete("v1/gone")
    assert not await driver.exists("v1/gone")
    assert [i.key async for i in driver.list("v1/")] == []


async def test_list_by_prefix_in_key_order(driver):
    keys = ["va/0003", "va/0001", "va/0002", "vb/0001", "vab/0001", "top"]
    for k in keys:
        await driver.put(k, k.encode())
    assert [i.key async for i in driver.list("va/")] == ["va/0001", "va/0002", "va/0003"]
    assert [i.key async for i in driver.list("va")] == ["va/0001", "va/0002", "va/0003", "vab/0001"]
    listed = [i async for i in driver.list()]
    assert [i.key for i in listed] == sorted(keys)
    assert {i.key: i.size for i in listed} == {k: len(k) for k in keys}
    assert [i.key async for i in driver.list("zz")] == []


async def test_create_is_conditional(driver):
    assert await driver.create("v1/once", b"first") is True
    assert await driver.create("v1/once", b"second") is False
    assert await driver.get("v1/once") == b"first"


async def test_racing_creates_agree_on_one_winner(driver):
    results: dict[int, bool] = {}

    async def attempt(i: int) -> None:
        results[i] = await driver.create("v1/race", f"writer {i}".encode())

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(attempt, i)
    winners = [i for i, won in results.items() if won]
    assert len(winners) == 1
    assert await driver.get("v1/race") == f"writer {winners[0]}".encode()


async def test_concurrent_puts_are_atomic(driver):
    blobs = {i: bytes([i]) * (SEG * 2 + i) for i in range(8)}

    async with anyio.create_task_group() as tg:
        for i, blob in blobs.items():
            tg.start_soon(driver.put, f"v1/k{i}", blob)
            tg.start_soon(driver.put, "v1/same", blob)
    for i, blob in blobs.items():
        assert await driver.get(f"v1/k{i}") == blob
    assert await driver.get("v1/same") in blobs.values()


async def test_invalid_keys_are_refused(driver):
    for bad in ("", "/abs", "a//b", "a/../b", "..", "a/./b", "sp ace", "x" * 2000):
        with pytest.raises(ValueError):
            await driver.put(bad, b"x")
        with pytest.raises(ValueError):
            await driver.get(bad)


async def test_large_object_and_streaming(driver):
    data = os.urandom(11 * MiB + 5)  # s3 cases use 5 MiB parts from 6 MiB: a multipart upload
    await driver.put("v1/large", data)
    assert (await driver.head("v1/large")).size == len(data)
    blocks = [b async for b in driver.iter_get("v1/large", block_size=4 * MiB)]
    assert all(len(b) <= 4 * MiB for b in blocks)
    assert b"".join(blocks) == data
    part = b"".join([b async for b in driver.iter_get("v1/large", 3 * MiB + 7, 2 * MiB, block_size=MiB)])
    assert part == data[3 * MiB + 7: 5 * MiB + 7]
    assert await driver.get("v1/large", 10 * MiB, MiB) == data[10 * MiB: 11 * MiB]


async def test_space_is_the_backends_or_unknown(driver):
    """``space()``: a filesystem backend (and every wrapper over only such backends) says
    its size and free bytes, what ``df`` on its directory says; an object store, or a
    wrapper over one, says it cannot tell (None)."""
    import shutil

    def backends(d):
        inner = d.children()
        return [d] if not inner else [b for c in inner for b in backends(c)]

    roots = [getattr(b, "root", None) for b in backends(driver)]
    sp = await driver.space()
    if any(r is None for r in roots):
        assert sp is None
        return
    assert sp is not None and 0 <= sp.free <= sp.total
    usage = [shutil.disk_usage(r) for r in roots]
    assert sp.total in {u.total for u in usage}
    # Free space moves with other writers on a shared disk: the same order of magnitude.
    assert min(u.free for u in usage) * 0.9 - 64 * MiB <= sp.free <= max(u.free for u in usage) * 1.1 + 64 * MiB
