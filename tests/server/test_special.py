"""Special files (FIFOs, unix sockets, character and block devices) as vault metadata.

They are nodes like any other — listed, in events, renamed, deleted into the trash and
restored, in time-travel listings — with a kind, a mode and (devices) an ``rdev``, and never
content. The REST tests run a server on each metadata store (SQLite and the MongoDB-wire
server of the session); the migration tests open stores written before ``rdev`` existed.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from gobi.protocol import ROOT_ID, MAX_RDEV, Node, NodeKind
from gobi.server.store.mongo import MongoStore
from gobi.server.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.server.test_store_contract import create, new_user, new_vault, older_sqlite_store
from tests.server.util import create_file, mkdir, upload
from tests.servers import Api, ServerProcess, register

NULL = os.makedev(1, 3)     # /dev/null
DISK = os.makedev(8, 0)     # /dev/sda
SPECIAL = {"fifo": 0, "socket": 0, "chardev": NULL, "blockdev": DISK}


@pytest.fixture(params=["sqlite", "mongo"])
def api(request, tmp_path):
    env = {"GOBI_POLL_INTERVAL": "1h"}
    if request.param == "mongo":
        env["GOBI_METADATA"] = request.getfixturevalue("mongo_url")
    srv = ServerProcess(tmp_path / "server", env=env).start()
    _, token = register(srv)
    a = Api(srv.api, token, device="laptop")
    r = a.post("/vaults", json={"name": "specials"})
    assert r.status_code == 201, r.text
    a.vault = r.json()["id"]
    yield a
    a.close()
    srv.stop()


def make(api, name: str, kind: str, parent: str = ROOT_ID, **extra):
    return api.post(f"/vaults/{api.vault}/nodes", json={
        "parent": parent, "name": name, "kind": kind, "mode": 0o640, **extra})


def special(api, name: str, kind: str, parent: str = ROOT_ID) -> dict:
    body = {"rdev": SPECIAL[kind]} if SPECIAL[kind] else {}
    r = make(api, name, kind, parent, **body)
    assert r.status_code == 201, r.text
    return r.json()


def error(r, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()["error"]["code"]


def tree_at(api, at: int | None = None) -> dict[str, dict]:
    params = {} if at is None else {"at": at}
    r = api.get(f"/vaults/{api.vault}/tree", params=params)
    assert r.status_code == 200, r.text
    return {n["name"]: n for n in r.json()["nodes"]}


def test_each_special_kind_is_a_node_listed_with_kind_mode_and_rdev(api):
    d = mkdir(api, api.vault, "dev")
    made = {kind: special(api, kind, kind, d["id"]) for kind in SPECIAL}
    for kind, node in made.items():
        assert (node["kind"], node["rdev"], node["mode"]) == (kind, SPECIAL[kind], 0o640)
        # no content: size 0, no content version
        assert (node["size"], node["content_rev"], node["target"]) == (0, None, None)
        assert api.get(f"/vaults/{api.vault}/nodes/{node['id']}").json() == node
    r = api.get(f"/vaults/{api.vault}/nodes/{d['id']}/children")
    listed = {n["name"]: (n["kind"], n["rdev"]) for n in r.json()["nodes"]}
    assert listed == {k: (k, v) for k, v in SPECIAL.items()}
    assert api.get(f"/vaults/{api.vault}/lookup", params={"path": "dev/chardev"}).json()["rdev"] == NULL
    tree = tree_at(api)
    assert {k: (tree[k]["kind"], tree[k]["rdev"]) for k in SPECIAL} == {k: (k, v) for k, v in SPECIAL.items()}
    # Events carry the whole state, kind and rdev included (what other mounts apply).
    r = api.get(f"/vaults/{api.vault}/events", params={"after": 0})
    creates = {e["node"]["name"]: e["node"] for e in r.json()["events"] if e["type"] == "create"}
    assert {k: (creates[k]["kind"], creates[k]["rdev"]) for k in SPECIAL} == {k: (k, v) for k, v in SPECIAL.items()}
    # A file, a directory, a symlink: rdev 0.
    f = create_file(api, api.vault, "f", b"x")
    assert f["rdev"] == 0


def test_rdev_only_on_device_nodes_and_within_range(api):
    for kind in ("fifo", "socket", "file", "dir"):
        assert error(make(api, f"x-{kind}", kind, rdev=NULL), 400) == "bad_request"
    assert error(make(api, "s", "symlink", target="t", rdev=NULL), 400) == "bad_request"
    assert error(make(api, "neg", "chardev", rdev=-1), 400) == "bad_request"
    assert error(make(api, "big", "chardev", rdev=MAX_RDEV + 1), 400) == "bad_request"
    assert error(make(api, "str", "chardev", rdev="259"), 400) == "bad_request"
    assert make(api, "max", "blockdev", rdev=MAX_RDEV).status_code == 201
    # A device node of device 0 exists (mknod with rdev 0 is allowed).
    assert make(api, "zero", "chardev").json()["rdev"] == 0
    # Special files have no target and no content.
    assert error(make(api, "t", "fifo", target="x"), 400) == "bad_request"
    assert error(make(api, "c", "fifo", content={"chunks": [], "size": 0}), 400) == "bad_request"
    names = {n["name"] for n in tree_at(api).values()}
    assert names == {"", "max", "zero"}


def test_content_of_a_special_file_is_refused(api):
    fifo = special(api, "pipe", "fifo")
    dev = special(api, "null", "chardev")
    refs = upload(api, api.vault, b"some bytes")
    for node in (fifo, dev):
        r = api.put(f"/vaults/{api.vault}/nodes/{node['id']}/content",
                    json={"base_rev": node["rev"], "chunks": refs, "size": 10})
        assert error(r, 409) == "not_a_file"
        assert r.json()["error"]["details"]["kind"] == node["kind"]
        # the same over the batch endpoint (what a mount sends)
        r = api.post(f"/vaults/{api.vault}/ops", json={"ops": [{
            "id": "1", "op": "commit", "node": node["id"],
            "args": {"base_rev": node["rev"], "chunks": [], "size": 0}}]})
        assert r.status_code == 200, r.text
        [answer] = r.json()["results"]
        assert answer["type"] == "nack" and answer["error"]["code"] == "not_a_file"
        assert error(api.get(f"/vaults/{api.vault}/nodes/{node['id']}/data"), 409) == "not_a_file"
        assert error(api.get(f"/vaults/{api.vault}/nodes/{node['id']}/content"), 409) == "not_a_file"
        assert error(api.post(f"/vaults/{api.vault}/nodes/{node['id']}/restore",
                              json={"rev": node["rev"]}), 409) == "not_a_file"
        assert api.get(f"/vaults/{api.vault}/nodes/{node['id']}/versions").json()["versions"] == []
        assert api.get(f"/vaults/{api.vault}/nodes/{node['id']}").json() == node


def test_rename_replace_delete_trash_and_restore_keep_kind_and_rdev(api):
    vault = api.vault
    d = mkdir(api, vault, "d")
    dev = special(api, "null", "chardev", d["id"])
    blk = special(api, "disk", "blockdev", d["id"])
    a = special(api, "a", "fifo")
    b = special(api, "b", "fifo")
    # rename a FIFO over another (rename(2)): the replaced one goes to the trash
    r = api.patch(f"/vaults/{vault}/nodes/{a['id']}",
                  json={"base_rev": a["rev"], "name": "b", "replace": True})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["kind"]) == ("b", "fifo")
    # rename and chmod a device: rdev stays
    r = api.patch(f"/vaults/{vault}/nodes/{dev['id']}",
                  json={"base_rev": dev["rev"], "name": "null2", "parent": ROOT_ID, "mode": 0o600})
    assert r.status_code == 200, r.text
    moved = r.json()
    assert (moved["kind"], moved["rdev"], moved["mode"]) == ("chardev", NULL, 0o600)
    before_delete = api.get(f"/vaults/{vault}/events", params={"after": 0}).json()["head_seq"]
    # delete the device and the directory holding the block device
    r = api.delete(f"/vaults/{vault}/nodes/{moved['id']}", params={"base_rev": moved["rev"]})
    assert r.status_code == 200, r.text
    r = api.delete(f"/vaults/{vault}/nodes/{d['id']}", params={"base_rev": d["rev"], "recursive": "true"})
    assert r.status_code == 200, r.text
    assert set(tree_at(api)) == {"", "b"}
    # the listing at a seq before the deletes still shows them (time travel)
    then = tree_at(api, before_delete)
    assert (then["null2"]["kind"], then["null2"]["rdev"]) == ("chardev", NULL)
    assert (then["disk"]["kind"], then["disk"]["rdev"]) == ("blockdev", DISK)
    trash = {e["name"]: e for e in api.get(f"/vaults/{vault}/trash").json()["entries"]}
    assert trash["null2"]["kind"] == "chardev" and trash["b"]["kind"] == "fifo"
    assert trash["null2"]["bytes"] == 0
    seq = api.get(f"/vaults/{vault}/events", params={"after": 0}).json()["head_seq"]
    for name in ("null2", "d", "b"):
        r = api.post(f"/vaults/{vault}/trash/{trash[name]['id']}/restore", json={})
        assert r.status_code == 200, r.text
    restored = r.json()
    assert restored["renamed"] and restored["node"]["kind"] == "fifo"      # "b" was taken
    tree = tree_at(api)
    assert (tree["null2"]["id"], tree["null2"]["kind"], tree["null2"]["rdev"]) == (dev["id"], "chardev", NULL)
    assert (tree["disk"]["id"], tree["disk"]["kind"], tree["disk"]["rdev"]) == (blk["id"], "blockdev", DISK)
    assert {n["kind"] for n in tree.values() if n["name"].startswith("b")} == {"fifo"}
    # the restores' create events carry kind and rdev
    events = api.get(f"/vaults/{vault}/events", params={"after": seq}).json()["events"]
    back = {e["node"]["id"]: e["node"] for e in events if e["type"] == "create"}
    assert (back[dev["id"]]["kind"], back[dev["id"]]["rdev"]) == ("chardev", NULL)
    assert (back[blk["id"]]["kind"], back[blk["id"]]["rdev"]) == ("blockdev", DISK)


# -- stores written before rdev existed ------------------------------------------------------


def device(name: str) -> Node:
    return Node(id=f"n{name}", parent=ROOT_ID, name=name, kind=NodeKind.CHARDEV, rev=0, rdev=NULL)


@pytest.mark.asyncio
async def test_sqlite_schema_2_gains_rdev(tmp_path):
    path = tmp_path / "meta.db"
    # A version 2 database: no rdev column.
    vid, old = await older_sqlite_store(path, "ALTER TABLE nodes DROP COLUMN rdev; "
                                               "UPDATE meta SET value='2' WHERE key='schema_version';")
    store = SqliteStore(path)
    await store.open()
    try:
        assert (await store.node(vid, old.id)).rdev == 0
        new = await create(store, vid, device("null"))
        assert (await store.node(vid, new.id)).rdev == NULL
        assert {n.name: n.rdev for n in await store.children(vid, ROOT_ID, None, 10)} == {"old": 0, "null": NULL}
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    db.close()


@pytest.mark.asyncio
async def test_mongo_documents_without_rdev_read_as_zero(mongo_url):
    from pymongo import AsyncMongoClient

    store = MongoStore(mongo_url)
    await store.open()
    try:
        user = await new_user(store)
        vid = await new_vault(store, user)
        old = await create(store, vid, Node(id="nold", parent=ROOT_ID, name="old", kind=NodeKind.FILE, rev=0))
        new = await create(store, vid, device("null"))
        client = AsyncMongoClient(mongo_url)
        try:
            db = client.get_default_database()
            # A document written before rdev existed has no such field.
            await db.nodes.update_many({"vault_id": vid, "node_id": old.id}, {"$unset": {"rdev": ""}})
            assert await db.nodes.count_documents({"vault_id": vid, "rdev": {"$exists": False}}) >= 1
        finally:
            await client.close()
        assert (await store.node(vid, old.id)).rdev == 0
        assert (await store.node(vid, new.id)).rdev == NULL
    finally:
        await store.close()
