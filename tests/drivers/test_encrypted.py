"""The encrypted wrapper: what it must detect, how keys are kept and rotated, and that
key material never leaks. Runs over the local driver, whose files the tests tamper with."""

from __future__ import annotations

import base64
import json
import logging
import os

import anyio
import pytest

from gobi.drivers import KeyUnavailable, ObjectCorrupted, ObjectNotFound
from gobi.drivers.encrypted import (
    HEADER_SIZE,
    KEYS_PREFIX,
    SEALED_SEGMENT,
    SEGMENT,
    EncryptedDriver,
    plain_size,
    sealed_size,
)
from gobi.drivers.keys import KeyFile
from gobi.drivers.local import LocalDriver

pytestmark = pytest.mark.anyio


@pytest.fixture
def inner(tmp_path):
    return LocalDriver(tmp_path / "blobs")


@pytest.fixture
def enc(inner, keyfile):
    return EncryptedDriver(inner, keyfile)


async def tamper(inner, key, position, xor=0x40):
    raw = bytearray(await inner.get(key))
    raw[position] ^= xor
    await inner.put(key, bytes(raw))


async def test_stored_bytes_are_ciphertext_of_the_expected_size(enc, inner):
    data = b"attack at dawn " * 10_000
    await enc.put("v1/obj", data)
    raw = await inner.get("v1/obj")
    assert len(raw) == sealed_size(len(data)) and plain_size(len(raw)) == len(data)
    assert b"attack at dawn" not in raw
    assert raw[:4] == b"GBEn" and raw[4] == 1
    # same plaintext twice: different salt, different ciphertext
    await enc.put("v1/obj2", data)
    assert (await inner.get("v1/obj2"))[HEADER_SIZE:HEADER_SIZE + 64] != raw[HEADER_SIZE:HEADER_SIZE + 64]


@pytest.mark.parametrize("where", ["magic", "version", "key id", "salt", "first segment", "tag", "last segment"])
async def test_tampering_anywhere_is_corruption(enc, inner, where):
    data = os.urandom(2 * SEGMENT + 100)
    await enc.put("v1/obj", data)
    position = {"magic": 0, "version": 4, "key id": 8, "salt": 20, "first segment": HEADER_SIZE + 5,
                "tag": HEADER_SIZE + SEALED_SEGMENT - 1, "last segment": HEADER_SIZE + 2 * SEALED_SEGMENT + 3}[where]
    await tamper(inner, "v1/obj", position, xor=0x01 if where != "key id" else 0x00)
    if where == "key id":  # a different (unknown) data key id
        raw = bytearray(await inner.get("v1/obj"))
        raw[8] = 7
        await inner.put("v1/obj", bytes(raw))
        with pytest.raises(KeyUnavailable):
            await enc.get("v1/obj")
        return
    with pytest.raises(ObjectCorrupted):
        await enc.get("v1/obj")


async def test_a_damaged_segment_fails_only_the_ranges_that_touch_it(enc, inner):
    data = os.urandom(3 * SEGMENT)
    await enc.put("v1/obj", data)
    await tamper(inner, "v1/obj", HEADER_SIZE + SEALED_SEGMENT + 10)  # inside segment 1
    assert await enc.get("v1/obj", 0, SEGMENT) == data[:SEGMENT]
    assert await enc.get("v1/obj", 2 * SEGMENT + 5, 100) == data[2 * SEGMENT + 5:2 * SEGMENT + 105]
    with pytest.raises(ObjectCorrupted):
        await enc.get("v1/obj", SEGMENT + 3, 10)
    with pytest.raises(ObjectCorrupted):
        await enc.get("v1/obj", SEGMENT - 3, 10)


@pytest.mark.parametrize("cut", ["segment boundary", "mid segment", "inside header", "to nothing"])
async def test_truncation_is_corruption(enc, inner, cut):
    data = os.urandom(3 * SEGMENT + 50)
    await enc.put("v1/obj", data)
    raw = await inner.get("v1/obj")
    keep = {"segment boundary": HEADER_SIZE + 2 * SEALED_SEGMENT, "mid segment": HEADER_SIZE + SEALED_SEGMENT + 99,
            "inside header": 20, "to nothing": 0}[cut]
    await inner.put("v1/obj", raw[:keep])
    with pytest.raises(ObjectCorrupted):
        await enc.get("v1/obj")
    if cut == "segment boundary":
        # a range beyond the cut must not read as "past the end of a shorter object"
        with pytest.raises(ObjectCorrupted):
            await enc.get("v1/obj", 3 * SEGMENT, 10)
        with pytest.raises(ObjectCorrupted):
            await enc.get("v1/obj", 2 * SEGMENT - 10, 20)


async def test_objects_cannot_be_moved_or_swapped(enc, inner):
    await enc.put("v1/a", b"alpha" * 100)
    await enc.put("v1/b", b"bravo" * 100)
    await enc.put("v2/a", b"other vault")
    raw_a = await inner.get("v1/a")
    await inner.put("v1/b", raw_a)            # swap within a vault
    with pytest.raises(ObjectCorrupted):
        await enc.get("v1/b")
    await inner.put("v2/a", raw_a)            # move into another vault
    with pytest.raises(ObjectCorrupted):
        await enc.get("v2/a")
    assert await enc.get("v1/a") == b"alpha" * 100


async def test_each_vault_has_its_own_wrapped_data_key(enc, inner, keyfile):
    await enc.put("v1/x", b"1")
    await enc.put("v2/x", b"2")
    await enc.put("toplevel", b"3")
    listed = [i.key async for i in inner.list(KEYS_PREFIX)]
    assert listed == [f"{KEYS_PREFIX}_global", f"{KEYS_PREFIX}v1", f"{KEYS_PREFIX}v2"]
    doc = json.loads(await inner.get(f"{KEYS_PREFIX}v1"))
    assert doc["scope"] == "v1" and doc["current"] == 1 and doc["keys"][0]["master"] == keyfile.current
    # the wrapped key is bound to its scope: a keyring copied to another vault is refused
    await inner.put(f"{KEYS_PREFIX}v2", json.dumps({**doc, "scope": "v2"}).encode())
    with pytest.raises(ObjectCorrupted):
        await EncryptedDriver(inner, keyfile).get("v2/x")
    # and the wrapper hides keyrings from listings and refuses to overwrite them
    assert [i.key async for i in enc.list()] == ["toplevel", "v1/x", "v2/x"]
    with pytest.raises(ValueError):
        await enc.put(f"{KEYS_PREFIX}v1", b"x")


async def test_missing_keyring_or_master_key_is_key_unavailable(enc, inner, keyfile, tmp_path):
    await enc.put("v1/x", b"secret")
    await inner.delete(f"{KEYS_PREFIX}v1")
    with pytest.raises(KeyUnavailable, match="v1"):
        await EncryptedDriver(inner, keyfile).get("v1/x")
    with pytest.raises(ObjectNotFound):  # a missing object is still just missing
        await EncryptedDriver(inner, keyfile).get("v1/absent")
    other = KeyFile.load_or_create(tmp_path / "other" / "master.key")
    await enc.put("v3/x", b"secret")
    with pytest.raises(ObjectCorrupted, match="not the key file"):  # same id, other key
        await EncryptedDriver(inner, other).get("v3/x")
    other.master_keys = {"k9": os.urandom(32)}
    other.current = "k9"
    other.save()
    with pytest.raises(KeyUnavailable, match="master key 'k1' is not in the key file"):
        await EncryptedDriver(inner, other).get("v3/x")


async def test_racing_first_writes_agree_on_one_data_key(inner, keyfile):
    a, b = EncryptedDriver(inner, keyfile), EncryptedDriver(inner, keyfile)
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(a.put, f"v9/a{i}", f"a{i}".encode())
            tg.start_soon(b.put, f"v9/b{i}", f"b{i}".encode())
    fresh = EncryptedDriver(inner, keyfile)
    for i in range(5):
        assert await fresh.get(f"v9/a{i}") == f"a{i}".encode()
        assert await fresh.get(f"v9/b{i}") == f"b{i}".encode()


async def test_master_rotation_rewraps_keys_without_rewriting_data(enc, inner, keyfile):
    objects = {f"v{i}/obj": os.urandom(1000 + i) for i in range(3)}
    for key, data in objects.items():
        await enc.put(key, data)
    before = {key: await inner.get(key) for key in objects}

    # `gobi keys rotate` in another process: its own KeyFile, its own driver
    admin_keys = KeyFile.load(keyfile.path)
    new_id = admin_keys.add_master_key()
    admin_keys.save()
    report = await EncryptedDriver(inner, admin_keys).rewrap()
    assert report.scopes == 3 and report.data_keys == 3 and report.masters_in_use == {new_id}
    assert {key: await inner.get(key) for key in objects} == before  # data untouched

    # retire the old master key: everything still decrypts, for a fresh server too
    admin_keys.remove_master_key("k1")
    admin_keys.save()
    for key, data in objects.items():
        assert await enc.get(key) == data  # the running server (cached data keys)
        assert await EncryptedDriver(inner, KeyFile.load(keyfile.path)).get(key) == data
    # the running server picks up the new master key for new vaults
    await enc.put("v7/new", b"after rotation")
    assert json.loads(await inner.get(f"{KEYS_PREFIX}v7"))["keys"][0]["master"] == new_id


async def test_new_data_keys_apply_to_new_writes_only(enc, inner, keyfile):
    await enc.put("v1/old", b"old data")
    report = await EncryptedDriver(inner, keyfile).rewrap(new_data_keys=True)
    assert report.new_data_keys == 1
    writer = EncryptedDriver(inner, keyfile)
    await writer.put("v1/new", b"new data")
    assert (await inner.get("v1/old"))[5:9] == (1).to_bytes(4, "big")
    assert (await inner.get("v1/new"))[5:9] == (2).to_bytes(4, "big")
    # the old driver has data key 1 cached and meets key 2: it reloads the keyring
    assert await enc.get("v1/new") == b"new data"
    assert await enc.get("v1/old") == b"old data"


async def test_key_material_never_appears_in_logs_errors_or_reprs(enc, inner, keyfile, caplog):
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    await enc.put("v1/x", b"payload")
    await tamper(inner, "v1/x", HEADER_SIZE + 2)
    for attempt in (lambda: enc.get("v1/x"), lambda: enc.get("v1/x", 0, 3)):
        try:
            await attempt()
        except Exception as exc:  # noqa: BLE001 - collecting every message
            texts += [str(exc), repr(exc)]
    keyfile.add_master_key()
    keyfile.save()
    await enc.rewrap(new_data_keys=True)
    await inner.delete(f"{KEYS_PREFIX}v1")
    try:
        await EncryptedDriver(inner, keyfile).get("v1/x")
    except Exception as exc:  # noqa: BLE001
        texts += [str(exc), repr(exc)]
    rings = list(enc._rings.values())
    texts += [repr(enc), repr(keyfile), str(keyfile)] + [repr(r) for r in rings]
    texts += [r.getMessage() for r in caplog.records]
    secrets = list(keyfile.master_keys.values()) + [keyfile.naming_secret]
    secrets += [r.key(i) for r in rings for i in r.ids]
    blob = "\n".join(texts)
    assert len(texts) > 8
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret), secret.decode("latin-1")):
            assert form not in blob
