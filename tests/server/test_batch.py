"""Batch endpoints for many small files: several chunks per request, many ops per request."""

from __future__ import annotations

import hashlib

from .util import read


def frames(*chunks: bytes) -> bytes:
    return b"".join(hashlib.sha256(c).digest() + len(c).to_bytes(4, "big") + c for c in chunks)


def test_chunk_batch_and_ops_batch_create_many_files(alice, vault):
    bodies = [f"file number {i}\n".encode() * (i + 1) for i in range(50)]
    r = alice.post(f"/vaults/{vault}/chunks", content=frames(*bodies, bodies[0]))
    assert r.status_code == 200, r.text
    created = [c["created"] for c in r.json()["chunks"]]
    assert created == [True] * 50 + [False]  # the duplicate is stored once
    r = alice.post(f"/vaults/{vault}/chunks", content=frames(bodies[1]))
    assert r.json()["chunks"][0]["created"] is False
    ops = [{"id": "mk", "op": "create", "args": {"id": "dir-1", "parent": "root", "name": "many", "kind": "dir"}}]
    for i, body in enumerate(bodies):
        ops.append({"id": f"f{i}", "op": "create", "args": {
            "id": f"file-{i}", "parent": "dir-1", "name": f"f{i}.txt", "kind": "file",
            "content": {"chunks": [{"hash": hashlib.sha256(body).hexdigest(), "size": len(body)}],
                        "size": len(body)}}})
    r = alice.post(f"/vaults/{vault}/ops", json={"ops": ops})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["type"] for x in results] == ["ack"] * 51
    assert [x["id"] for x in results] == [o["id"] for o in ops]
    for i in (0, 17, 49):
        assert read(alice, vault, f"file-{i}") == bodies[i]
    # replaying the same batch is idempotent (client-chosen ids)
    again = alice.post(f"/vaults/{vault}/ops", json={"ops": ops}).json()["results"]
    assert [x["type"] for x in again] == ["ack"] * 51
    events = alice.get(f"/vaults/{vault}/events", params={"limit": 1000}).json()["events"]
    assert len(events) == 51


def test_ops_batch_reports_each_failure_and_can_stop(alice, vault):
    ops = [
        {"id": "a", "op": "create", "args": {"parent": "root", "name": "x", "kind": "dir"}},
        {"id": "b", "op": "create", "args": {"parent": "root", "name": "x", "kind": "dir"}},
        {"id": "c", "op": "create", "args": {"parent": "root", "name": "y", "kind": "dir"}},
    ]
    res = alice.post(f"/vaults/{vault}/ops", json={"ops": ops}).json()["results"]
    assert [r["type"] for r in res] == ["ack", "nack", "ack"]
    assert res[1]["error"]["code"] == "name_exists"
    ops2 = [dict(o, args=dict(o["args"], name=o["args"]["name"] + "2")) for o in ops]
    ops2[1]["args"]["name"] = "x"
    res = alice.post(f"/vaults/{vault}/ops", json={"ops": ops2, "stop_on_error": True}).json()["results"]
    assert [r["type"] for r in res] == ["ack", "nack", "skipped"]
    bad = alice.post(f"/vaults/{vault}/ops", json={"ops": [{"id": "z", "op": "create", "args": {
        "parent": "root", "name": "..", "kind": "dir"}}]}).json()["results"]
    assert bad[0]["error"]["code"] == "invalid_name"
    assert alice.post(f"/vaults/{vault}/ops", json={"ops": []}).status_code == 400
    assert alice.post(f"/vaults/{vault}/ops", json={"ops": [{}] * 1001}).status_code == 400


def test_chunk_batch_rejects_bad_frames_and_stores_nothing(alice, vault):
    good, evil = b"good bytes", b"evil bytes"
    body = frames(good) + hashlib.sha256(b"claimed").digest() + len(evil).to_bytes(4, "big") + evil
    r = alice.post(f"/vaults/{vault}/chunks", content=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "hash_mismatch"
    miss = alice.post(f"/vaults/{vault}/chunks/missing", json={"hashes": [hashlib.sha256(good).hexdigest()]})
    assert miss.json()["missing"] == [hashlib.sha256(good).hexdigest()]
    for broken in (b"short", frames(good)[:-1], hashlib.sha256(b"").digest() + (0).to_bytes(4, "big"), b""):
        r = alice.post(f"/vaults/{vault}/chunks", content=broken)
        assert r.status_code == 400, broken
