"""Sparse files on the server: holes in manifests (``{"hole": true, "size": N}``).

A hole is N zero bytes with no chunk behind it. These tests commit manifests with holes
through the REST API of a real server (once on SQLite, once on MongoDB), read them back
whole and by ``Range`` across hole/data boundaries, restore a version with holes, check
that garbage collection counts only data chunks (objects counted with the storage driver)
and that a malformed hole is a 400 JSON error that changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid

import httpx
import pytest

from gobi.chunking import pieces_of_bytes
from gobi.drivers.local import LocalDriver
from gobi.protocol import MAX_CHUNK_SIZE, MAX_HOLE_SIZE
from tests.servers import Api, ServerProcess, register

from .util import SMALL, create_file, read, upload

ENV = {"GOBI_POLL_INTERVAL": "1h", "GOBI_GC_GRACE": "0s", "GOBI_GC_INTERVAL": "0",
       "GOBI_HISTORY_INTERVAL": "0"}
PASSWORD = "correct horse battery"
TIB = 1 << 40


@pytest.fixture(scope="module", params=["sqlite", "mongo"])
def sserver(request, tmp_path_factory):
    env = dict(ENV)
    db_url = None
    if request.param == "mongo":
        mongo = request.getfixturevalue("mongo_server")
        db_url = mongo.url(f"gobi_sparse{uuid.uuid4().hex[:10]}")
        env["GOBI_METADATA"] = db_url
    srv = ServerProcess(tmp_path_factory.mktemp(f"sparse-{request.param}"), env=env).start()
    yield srv
    srv.stop()
    if db_url is not None:
        from pymongo import MongoClient

        with MongoClient(db_url, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(db_url.split("/")[3].split("?")[0])


@pytest.fixture
def owner(sserver):
    name, token = register(sserver, PASSWORD)
    api = Api(sserver.api, token, device="sparse-laptop")
    api.username = name
    yield api
    api.close()


@pytest.fixture
def vault(owner):
    return owner.post("/vaults", json={"name": "sparse"}).json()["id"]


def hole(n: int) -> dict:
    return {"hole": True, "size": n}


def sparse(owner, vault, layout: list[int | bytes]) -> tuple[list[dict], bytes | None]:
    """A manifest from ``layout`` (an int: a hole of that size; bytes: data, uploaded and
    chunked) and, when it is small enough to hold, the bytes it stands for."""
    refs: list[dict] = []
    expected = bytearray()
    for part in layout:
        if isinstance(part, int):
            refs.append(hole(part))
            if expected is not None and part <= 64 << 20:
                expected += bytes(part)
            else:
                expected = None
        else:
            refs += upload(owner, vault, part)
            if expected is not None:
                expected += part
    return refs, None if expected is None else bytes(expected)


def objects(srv, vault) -> int:
    async def count() -> int:
        driver = LocalDriver(srv.data_dir / "blobs")
        return len([o async for o in driver.list(f"{vault}/")])

    return asyncio.run(count())


def get_range(owner, vault, node_id, spec: str) -> httpx.Response:
    return owner.get(f"/vaults/{vault}/nodes/{node_id}/data", headers={"Range": spec})


def test_commit_and_read_a_file_with_holes(owner, vault):
    a, b = os.urandom(9000), os.urandom(5000)
    refs, expected = sparse(owner, vault, [1_048_579, a, 5 << 20, b, 10])
    size = len(expected)
    r = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "sparse.img", "kind": "file", "content": {"chunks": refs, "size": size}})
    assert r.status_code == 201, r.text
    node = r.json()
    assert node["size"] == size
    assert read(owner, vault, node["id"]) == expected
    # The manifest comes back as sent: holes as {"size", "hole"}, chunks as {"hash", "size"}.
    manifest = owner.get(f"/vaults/{vault}/nodes/{node['id']}/content").json()["chunks"]
    assert manifest == refs
    assert [set(c) for c in manifest if "hole" in c] == [{"size", "hole"}] * 3
    # Ranges across every kind of boundary: inside a hole, hole→data, data→hole, over a
    # whole data run, the tail hole, a suffix, and one byte.
    a_at, b_at = 1_048_579, 1_048_579 + len(a) + (5 << 20)
    for first, last in [(10, 5000), (a_at - 7, a_at + 100), (a_at + len(a) - 3, a_at + len(a) + 4096),
                        (a_at - 1, b_at + len(b)), (b_at + len(b) - 1, size - 1), (0, size - 1),
                        (b_at, b_at)]:
        r = get_range(owner, vault, node["id"], f"bytes={first}-{last}")
        assert r.status_code == 206, r.text
        assert r.content == expected[first:last + 1], (first, last)
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert int(r.headers["content-length"]) == last - first + 1
    r = get_range(owner, vault, node["id"], "bytes=-20")
    assert r.status_code == 206 and r.content == expected[-20:]
    r = get_range(owner, vault, node["id"], f"bytes={size}-")
    assert r.status_code == 416 and r.json()["error"]["code"] == "range_not_satisfiable"
    # A commit with holes (not only a create) and the version list.
    refs2, expected2 = sparse(owner, vault, [a, 300_000, b])
    r = owner.put(f"/vaults/{vault}/nodes/{node['id']}/content",
                  json={"base_rev": node["rev"], "chunks": refs2, "size": len(expected2)})
    assert r.status_code == 200, r.text
    assert read(owner, vault, node["id"]) == expected2
    assert read(owner, vault, node["id"], rev=node["rev"]) == expected


def test_a_terabyte_hole_is_one_entry(owner, vault):
    """1 TiB of zeros with a little data in it: two hole entries and the data's chunks."""
    data = os.urandom(3000)
    refs, _ = sparse(owner, vault, [TIB // 2, data, TIB // 2 - len(data)])
    assert len(refs) == 2 + len(pieces_of_bytes(data, SMALL))
    r = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "big", "kind": "file", "content": {"chunks": refs, "size": TIB}})
    assert r.status_code == 201, r.text
    node = r.json()
    assert node["size"] == TIB
    r = get_range(owner, vault, node["id"], f"bytes={TIB // 2 - 100}-{TIB // 2 + len(data) + 99}")
    assert r.status_code == 206 and r.content == bytes(100) + data + bytes(100)
    r = get_range(owner, vault, node["id"], "bytes=-4096")
    assert r.status_code == 206 and r.content == bytes(4096)
    # The whole 1 TiB is not read here, but its first MiBs stream without the rest:
    with owner.stream("GET", f"/vaults/{vault}/nodes/{node['id']}/data") as resp:
        assert resp.status_code == 200 and int(resp.headers["content-length"]) == TIB
        got = 0
        for piece in resp.iter_bytes():
            assert piece == bytes(len(piece))
            got += len(piece)
            if got >= 8 << 20:
                break


def test_holes_need_no_upload_and_only_data_is_missing(owner, vault):
    data = os.urandom(6000)
    # Chunks never uploaded: the commit names exactly those as missing, never a hole.
    pieces = pieces_of_bytes(data, SMALL)
    refs = [hole(1 << 20)] + [{"hash": p.hash, "size": p.size} for p in pieces] + [hole(7)]
    r = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "x", "kind": "file",
        "content": {"chunks": refs, "size": (1 << 20) + len(data) + 7}})
    assert r.status_code == 400, r.text
    body = r.json()["error"]
    assert body["code"] == "missing_chunks"
    assert sorted(body["details"]["missing"]) == sorted({p.hash for p in pieces})
    # A file that is nothing but a hole needs no chunk at all.
    r = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "zeros", "kind": "file", "content": {"chunks": [hole(12345)], "size": 12345}})
    assert r.status_code == 201, r.text
    assert read(owner, vault, r.json()["id"]) == bytes(12345)


@pytest.mark.parametrize("bad", [
    {"hole": True, "size": 0},
    {"hole": True, "size": -5},
    {"hole": True, "size": MAX_HOLE_SIZE + 1},
    {"hole": True, "size": 10, "hash": "ab" * 32},
    {"hole": 1, "size": 10},
    {"hole": "true", "size": 10},
    {"hole": False, "size": 10},
    {"size": 10},
    {"hash": "ab" * 32, "size": MAX_CHUNK_SIZE + 1},
    {"hole": True, "size": 10, "zeros": True},
])
def test_a_bad_hole_is_a_400_and_changes_nothing(owner, vault, bad):
    data = os.urandom(4000)
    node = create_file(owner, vault, "f", data)
    size = max(bad["size"], 0) if isinstance(bad.get("size"), int) else 0
    r = owner.put(f"/vaults/{vault}/nodes/{node['id']}/content",
                  json={"base_rev": node["rev"], "chunks": [bad], "size": size})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request"
    r = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "g", "kind": "file", "content": {"chunks": [bad], "size": size}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    assert owner.get(f"/vaults/{vault}/nodes/{node['id']}").json()["rev"] == node["rev"]
    assert read(owner, vault, node["id"]) == data
    assert "g" not in {n["name"] for n in owner.get(f"/vaults/{vault}/nodes/root/children").json()["nodes"]}


def test_sizes_must_still_add_up_with_holes(owner, vault):
    r = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "f", "kind": "file", "content": {"chunks": [hole(100)], "size": 101}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


def test_restore_a_version_with_holes(owner, vault):
    refs, v1 = sparse(owner, vault, [os.urandom(5000), 2 << 20, os.urandom(3000), 100])
    r = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "disk", "kind": "file", "content": {"chunks": refs, "size": len(v1)}})
    node = r.json()
    v2 = os.urandom(7000)
    r = owner.put(f"/vaults/{vault}/nodes/{node['id']}/content",
                  json={"base_rev": node["rev"], "chunks": upload(owner, vault, v2), "size": len(v2)})
    assert r.status_code == 200, r.text
    assert read(owner, vault, node["id"]) == v2
    r = owner.post(f"/vaults/{vault}/nodes/{node['id']}/restore", json={"rev": node["rev"]})
    assert r.status_code == 200, r.text
    assert read(owner, vault, node["id"]) == v1
    head = owner.get(f"/vaults/{vault}/nodes/{node['id']}/content").json()
    assert head["chunks"] == refs and head["size"] == len(v1)


def test_gc_counts_data_chunks_only(sserver, owner, vault):
    kept_data, gone_data = os.urandom(6000), os.urandom(6000)
    kept_refs, kept = sparse(owner, vault, [1 << 20, kept_data, 3 << 20])
    gone_refs, _ = sparse(owner, vault, [gone_data, 1 << 20])
    kept_node = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "kept", "kind": "file",
        "content": {"chunks": kept_refs, "size": len(kept)}}).json()
    gone_node = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "gone", "kind": "file",
        "content": {"chunks": gone_refs, "size": (1 << 20) + len(gone_data)}}).json()
    data_chunks = {c["hash"] for c in kept_refs + gone_refs if "hash" in c}
    assert objects(sserver, vault) == len(data_chunks)
    assert owner.post(f"/vaults/{vault}/gc", json={"dry_run": False}).json()["freed"]["chunks"] == 0
    owner.delete(f"/vaults/{vault}/nodes/{gone_node['id']}", params={"base_rev": gone_node["rev"]})
    for entry in owner.get(f"/vaults/{vault}/trash").json()["entries"]:
        assert owner.delete(f"/vaults/{vault}/trash/{entry['id']}").status_code in (200, 204)
    only_gone = {c["hash"] for c in gone_refs if "hash" in c} - {c["hash"] for c in kept_refs if "hash" in c}
    report = owner.post(f"/vaults/{vault}/gc", json={"dry_run": False}).json()
    assert report["freed"]["chunks"] == len(only_gone)
    assert report["referenced"]["chunks"] == objects(sserver, vault) == len(data_chunks - only_gone)
    assert read(owner, vault, kept_node["id"]) == kept


def test_web_download_of_a_sparse_file(sserver, owner, vault):
    data = os.urandom(2000)
    refs, expected = sparse(owner, vault, [data, 3 << 20, data])
    node = owner.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "w.img", "kind": "file",
        "content": {"chunks": refs, "size": len(expected)}}).json()
    with httpx.Client(base_url=sserver.url, timeout=30) as web:
        csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/web/login").text).group(1)
        r = web.post("/web/login", data={"username": owner.username, "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 303, r.text
        r = web.get(f"/web/v/{vault}/f/{node['id']}/download")
        assert r.status_code == 200 and r.content == expected
