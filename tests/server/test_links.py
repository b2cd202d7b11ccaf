"""Hard links on the server: several names for one file (``Node.inode``).

A real server on each metadata store (SQLite and the MongoDB-wire server of the session),
driven through REST and the operation frames as clients do. What is checked: a link makes a
second node sharing the file's ``inode``; content, mode and mtime changes made through any
name reach every name in the same transaction (one event each, a version each), so a stale
commit through another name is a conflict; names, renames and deletes stay per name;
``rename`` of a name over another name of the same file does nothing (rename(2)); a name
restored from the trash rejoins its file only when its content is still the file's; bad
input is a 4xx JSON error that changes nothing; an SQLite database from before links gains
the column. ``LinkModel`` runs random operations of all these kinds against a model of
files and names (``GOBI_LINK_MODEL_EXAMPLES``, default 30 runs of 40 steps per store).
"""

from __future__ import annotations

import os
import sqlite3
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gobi.protocol import ROOT_ID, Node, NodeKind
from gobi.server.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.server.test_store_contract import create, older_sqlite_store
from tests.server.util import commit, create_file, mkdir, read, upload
from tests.servers import Api, ServerProcess, register


@pytest.fixture(scope="module", params=["sqlite", "mongo"])
def server(request, tmp_path_factory):
    env = {"GOBI_POLL_INTERVAL": "1h"}
    if request.param == "mongo":
        mongo = request.getfixturevalue("mongo_server")
        env["GOBI_METADATA"] = mongo.url(f"gobi_links{uuid.uuid4().hex[:10]}")
    srv = ServerProcess(tmp_path_factory.mktemp(f"links-{request.param}"), env=env).start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    _, token = register(server)
    a = Api(server.api, token, device="laptop")
    r = a.post("/vaults", json={"name": "links"})
    assert r.status_code == 201, r.text
    a.vault = r.json()["id"]
    yield a
    a.close()


def link(api, node: dict | str, name: str, parent: str = ROOT_ID, **extra):
    node_id = node if isinstance(node, str) else node["id"]
    return api.post(f"/vaults/{api.vault}/nodes/{node_id}/links",
                    json={"parent": parent, "name": name, **extra})


def linked(api, node: dict, name: str, parent: str = ROOT_ID) -> dict:
    r = link(api, node, name, parent)
    assert r.status_code == 201, r.text
    return r.json()


def get(api, node_id: str) -> dict:
    r = api.get(f"/vaults/{api.vault}/nodes/{node_id}")
    assert r.status_code == 200, r.text
    return r.json()


def error(r, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()["error"]["code"]


def events_after(api, seq: int) -> list[dict]:
    r = api.get(f"/vaults/{api.vault}/events", params={"after": seq})
    assert r.status_code == 200, r.text
    return r.json()["events"]


def head(api) -> int:
    return api.get(f"/vaults/{api.vault}/events", params={"after": 0, "limit": 1}).json()["head_seq"]


def tree(api) -> dict[str, dict]:
    r = api.get(f"/vaults/{api.vault}/tree")
    assert r.status_code == 200, r.text
    return {n["name"]: n for n in r.json()["nodes"]}


def test_a_link_is_a_second_name_for_the_same_content(api):
    v = api.vault
    docs = mkdir(api, v, "docs")
    a = create_file(api, v, "a.txt", b"hello links" * 300, mode=0o640)
    assert "inode" not in a            # a file with one name reads as before links
    seq = head(api)
    b = linked(api, a, "b.txt", docs["id"])
    assert b["id"] != a["id"] and b["inode"] == a["id"]
    assert (b["parent"], b["name"], b["kind"], b["size"], b["mode"], b["mtime_ns"]) == (
        docs["id"], "b.txt", "file", a["size"], 0o640, a["mtime_ns"])
    assert get(api, a["id"])["inode"] == a["id"]
    assert read(api, v, b["id"]) == read(api, v, a["id"]) == b"hello links" * 300
    # Two events: the linked node learns its inode, the new name is created with it.
    evs = events_after(api, seq)
    assert [(e["type"], e["node"]["id"], e["node"].get("inode")) for e in evs] == [
        ("attr", a["id"], a["id"]), ("create", b["id"], a["id"])]
    # A third name links to any of them and joins the same file.
    c = linked(api, b, "c.txt")
    assert c["inode"] == a["id"]
    listed = tree(api)
    assert {n: listed[n].get("inode") for n in ("a.txt", "b.txt", "c.txt", "docs")} == {
        "a.txt": a["id"], "b.txt": a["id"], "c.txt": a["id"], "docs": None}


def test_a_commit_through_one_name_changes_every_name(api):
    v = api.vault
    a = create_file(api, v, "a", b"one")
    b = linked(api, a, "b")
    a = get(api, a["id"])
    seq = head(api)
    r = commit(api, v, a, b"two, longer" * 100)
    assert r.status_code == 200, r.text
    for node_id in (a["id"], b["id"]):
        assert read(api, v, node_id) == b"two, longer" * 100
        assert get(api, node_id)["size"] == 1100
    evs = events_after(api, seq)
    assert sorted((e["type"], e["node"]["id"]) for e in evs) == sorted(
        [("content", a["id"]), ("content", b["id"])])
    assert len({e["seq"] for e in evs}) == 2
    # Each name keeps a history: b's versions hold the link's start and the commit.
    versions = api.get(f"/vaults/{v}/nodes/{b['id']}/versions").json()["versions"]
    assert len(versions) == 2
    # b's client still thinks b is at its old rev: its commit is a conflict, not a
    # silent overwrite of what came through a.
    stale = commit(api, v, b, b"three")
    assert error(stale, 409) == "conflict"
    assert read(api, v, a["id"]) == b"two, longer" * 100
    # Based on b's new head it goes through, and reaches a.
    r = commit(api, v, get(api, b["id"]), b"three")
    assert r.status_code == 200, r.text
    assert read(api, v, a["id"]) == b"three"


def test_mode_and_mtime_are_the_files_names_and_deletes_are_each_names(api):
    v = api.vault
    d = mkdir(api, v, "d")
    a = create_file(api, v, "a", b"x" * 10)
    b = linked(api, a, "b", d["id"])
    a = get(api, a["id"])
    r = api.patch(f"/vaults/{v}/nodes/{a['id']}", json={"base_rev": a["rev"], "mode": 0o600,
                                                          "mtime_ns": 1_000_000_000})
    assert r.status_code == 200, r.text
    assert (get(api, b["id"])["mode"], get(api, b["id"])["mtime_ns"]) == (0o600, 1_000_000_000)
    # A rename moves one name only.
    b = get(api, b["id"])
    r = api.patch(f"/vaults/{v}/nodes/{b['id']}", json={"base_rev": b["rev"], "parent": ROOT_ID,
                                                          "name": "b-moved"})
    assert r.status_code == 200, r.text
    a = get(api, a["id"])
    assert (a["parent"], a["name"]) == (ROOT_ID, "a")
    # Deleting one name leaves the other with the content; the trash has the name.
    r = api.delete(f"/vaults/{v}/nodes/{a['id']}", params={"base_rev": a["rev"]})
    assert r.status_code == 200, r.text
    assert read(api, v, b["id"]) == b"x" * 10
    assert "a" not in tree(api) and "b-moved" in tree(api)
    trash = api.get(f"/vaults/{v}/trash").json()["entries"]
    assert [(e["name"], e["node"]) for e in trash] == [("a", a["id"])]
    # Deleting a directory that holds one name leaves the names outside it.
    c = linked(api, get(api, b["id"]), "c", d["id"])
    d = get(api, d["id"])
    r = api.delete(f"/vaults/{v}/nodes/{d['id']}", params={"base_rev": d["rev"], "recursive": "true"})
    assert r.status_code == 200, r.text
    assert get(api, c["id"])["deleted"] and not get(api, b["id"])["deleted"]
    assert read(api, v, b["id"]) == b"x" * 10


def test_renaming_a_name_over_another_name_of_the_same_file_does_nothing(api):
    v = api.vault
    a = create_file(api, v, "a", b"same")
    b = linked(api, a, "b")
    a = get(api, a["id"])
    seq = head(api)
    r = api.patch(f"/vaults/{v}/nodes/{a['id']}", json={"base_rev": a["rev"], "name": "b",
                                                          "replace": True})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "a"
    assert set(tree(api)) - {""} == {"a", "b"}
    assert events_after(api, seq) == []
    assert api.get(f"/vaults/{v}/trash").json()["entries"] == []
    # Over another file it is the ordinary rename(2): the other file goes to the trash.
    other = create_file(api, v, "other", b"other")
    r = api.patch(f"/vaults/{v}/nodes/{b['id']}", json={"base_rev": get(api, b["id"])["rev"],
                                                          "name": "other", "replace": True})
    assert r.status_code == 200, r.text
    assert get(api, other["id"])["deleted"]
    assert read(api, v, tree(api)["other"]["id"]) == b"same"


def test_a_restored_name_rejoins_its_file_only_with_the_files_content(api):
    v = api.vault
    a = create_file(api, v, "a", b"v1")
    b = linked(api, a, "b")
    c = linked(api, a, "c")
    # b deleted and restored with nothing changed meanwhile: a name of the file again.
    r = api.delete(f"/vaults/{v}/nodes/{b['id']}", params={"base_rev": get(api, b["id"])["rev"]})
    assert r.status_code == 200, r.text
    entry = api.get(f"/vaults/{v}/trash").json()["entries"][0]
    r = api.post(f"/vaults/{v}/trash/{entry['id']}/restore", json={})
    assert r.status_code == 200, r.text
    assert get(api, b["id"])["inode"] == a["id"]
    assert commit(api, v, get(api, a["id"]), b"v2").status_code == 200
    assert read(api, v, b["id"]) == b"v2"
    # c deleted, the file changed, c restored: c had v2, the file has v3 now, so c comes
    # back as a file of its own with what it had.
    r = api.delete(f"/vaults/{v}/nodes/{c['id']}", params={"base_rev": get(api, c["id"])["rev"]})
    assert r.status_code == 200, r.text
    assert commit(api, v, get(api, a["id"]), b"v3").status_code == 200
    entry = api.get(f"/vaults/{v}/trash").json()["entries"][0]
    assert entry["node"] == c["id"]
    r = api.post(f"/vaults/{v}/trash/{entry['id']}/restore", json={})
    assert r.status_code == 200, r.text
    back = get(api, c["id"])
    assert "inode" not in back and read(api, v, c["id"]) == b"v2"
    assert commit(api, v, get(api, a["id"]), b"v4").status_code == 200
    assert (read(api, v, b["id"]), read(api, v, c["id"])) == (b"v4", b"v2")


def test_a_restored_name_takes_the_mode_the_file_has_now(api):
    v = api.vault
    a = create_file(api, v, "a", b"same bytes")
    b = linked(api, a, "b")
    b = get(api, b["id"])
    assert api.delete(f"/vaults/{v}/nodes/{b['id']}", params={"base_rev": b["rev"]}).status_code == 200
    a = get(api, a["id"])
    r = api.patch(f"/vaults/{v}/nodes/{a['id']}", json={"base_rev": a["rev"], "mode": 0o600,
                                                          "mtime_ns": 7_000_000_000})
    assert r.status_code == 200, r.text
    entry = api.get(f"/vaults/{v}/trash").json()["entries"][0]
    assert api.post(f"/vaults/{v}/trash/{entry['id']}/restore", json={}).status_code == 200
    back = get(api, b["id"])
    assert (back["inode"], back["mode"], back["mtime_ns"]) == (a["id"], 0o600, 7_000_000_000)


def test_restoring_a_version_through_one_name_restores_it_for_all(api):
    v = api.vault
    a = create_file(api, v, "a", b"first")
    b = linked(api, a, "b")
    assert commit(api, v, get(api, a["id"]), b"second").status_code == 200
    first = min(x["rev"] for x in api.get(f"/vaults/{v}/nodes/{a['id']}/versions").json()["versions"])
    r = api.post(f"/vaults/{v}/nodes/{a['id']}/restore", json={"rev": first})
    assert r.status_code == 200, r.text
    assert read(api, v, b["id"]) == b"first"


def test_symlinks_and_special_files_can_be_linked_directories_cannot(api):
    v = api.vault
    s = api.post(f"/vaults/{v}/nodes", json={"parent": ROOT_ID, "name": "s", "kind": "symlink",
                                             "target": "../far/away"}).json()
    s2 = linked(api, s, "s2")
    assert (s2["kind"], s2["target"], s2["inode"]) == ("symlink", "../far/away", s["id"])
    fifo = api.post(f"/vaults/{v}/nodes", json={"parent": ROOT_ID, "name": "p", "kind": "fifo",
                                                "mode": 0o600}).json()
    p2 = linked(api, fifo, "p2")
    assert (p2["kind"], p2["mode"]) == ("fifo", 0o600)
    d = mkdir(api, v, "dir")
    before = tree(api)
    assert error(link(api, d, "dir2"), 409) == "is_a_directory"
    assert tree(api) == before


def test_bad_links_are_json_errors_that_change_nothing(api):
    v = api.vault
    d = mkdir(api, v, "d")
    a = create_file(api, v, "a", b"a")
    create_file(api, v, "taken", b"t")
    f = create_file(api, v, "f", b"f")
    gone = create_file(api, v, "gone", b"g")
    assert api.delete(f"/vaults/{v}/nodes/{gone['id']}", params={"base_rev": gone["rev"]}).status_code == 200
    before, seq = tree(api), head(api)
    assert error(link(api, a, "taken"), 409) == "name_exists"
    assert error(link(api, gone, "g2"), 409) == "conflict"
    assert error(link(api, "nnosuchnode", "x"), 404) == "not_found"
    assert error(link(api, a, "x", parent="nnosuchdir"), 404) == "not_found"
    assert error(link(api, a, "x", parent=f["id"]), 409) == "not_a_directory"
    assert error(link(api, a, "x", parent=d["id"], extra=1), 400) == "bad_request"
    for bad in ("", ".", "..", "a/b", "x" * 256):
        assert error(link(api, a, bad), 400) in ("invalid_name", "bad_request")
    r = api.post(f"/vaults/{v}/nodes/{a['id']}/links", content=b"{not json")
    assert error(r, 400) == "bad_request"
    assert tree(api) == before and head(api) == seq


def test_a_retried_link_with_its_id_returns_the_same_name(api):
    v = api.vault
    a = create_file(api, v, "a", b"a")
    r1 = link(api, a, "b", id="nlinkretry1")
    assert r1.status_code == 201, r1.text
    r2 = link(api, a, "b", id="nlinkretry1")
    assert r2.status_code == 200, r2.text
    assert r2.json() == r1.json()
    # The id taken by another name: a conflict, not a second node.
    assert error(link(api, a, "c", id="nlinkretry1"), 409) == "conflict"
    assert error(link(api, a, "c", id=a["id"]), 409) == "conflict"


def test_links_through_operation_frames(api):
    v = api.vault
    a = create_file(api, v, "a", b"frames")
    r = api.post(f"/vaults/{v}/ops", json={"ops": [
        {"id": "1", "op": "link", "node": a["id"], "args": {"parent": ROOT_ID, "name": "b"}},
        {"id": "2", "op": "link", "node": a["id"], "args": {"parent": ROOT_ID, "name": "b"}},
        {"id": "3", "op": "link", "node": a["id"], "args": {"parent": ROOT_ID}},
    ]})
    assert r.status_code == 200, r.text
    acks = r.json()["results"]
    assert acks[0]["type"] == "ack" and acks[0]["node"]["inode"] == a["id"]
    assert (acks[1]["type"], acks[1]["error"]["code"]) == ("nack", "name_exists")
    assert (acks[2]["type"], acks[2]["error"]["code"]) == ("nack", "bad_request")
    assert read(api, v, acks[0]["node"]["id"]) == b"frames"


def test_a_link_shares_chunks_and_uploads_nothing(api):
    v = api.vault
    data = bytes(range(256)) * 64
    a = create_file(api, v, "a", data)
    b = linked(api, a, "b")
    manifest = api.get(f"/vaults/{v}/nodes/{b['id']}/content").json()
    assert [c["hash"] for c in manifest["chunks"]] == [c["hash"] for c in upload(api, v, data)]


@pytest.mark.asyncio
async def test_sqlite_schema_3_gains_inode(tmp_path):
    path = tmp_path / "meta.db"
    # A version 3 database: no inode column, no index on it.
    vid, old = await older_sqlite_store(path, "DROP INDEX nodes_inode; ALTER TABLE nodes DROP COLUMN inode; "
                                               "UPDATE meta SET value='3' WHERE key='schema_version';")
    store = SqliteStore(path)
    await store.open()
    try:
        assert (await store.node(vid, old.id)).inode is None
        new = await create(store, vid, Node(id="nnew", parent=ROOT_ID, name="new", kind=NodeKind.FILE,
                                            rev=0, inode="nold"))
        assert (await store.node(vid, new.id)).inode == "nold"
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert db.execute("SELECT name FROM sqlite_master WHERE name='nodes_inode'").fetchone() == ("nodes_inode",)
    db.close()

def test_a_commit_to_a_deleted_name_comes_back_as_a_file_of_its_own(api):
    """modify/delete through a name while another name lives (docs/conflicts.md): the
    modification survives (the default strategy) without changing the other name."""
    v = api.vault
    a = create_file(api, v, "a", b"shared")
    b = linked(api, a, "b")
    b = get(api, b["id"])
    r = api.delete(f"/vaults/{v}/nodes/{b['id']}", params={"base_rev": b["rev"]})
    assert r.status_code == 200, r.text
    mine = b"mine, made before the delete was known"
    r = api.put(f"/vaults/{v}/nodes/{b['id']}/content", json={
        "base_rev": b["rev"], "chunks": upload(api, v, mine), "size": len(mine),
        "on_conflict": "strategy"})
    assert r.status_code == 200, r.text
    assert r.json()["conflict"]["case"] == "modify_delete"
    back = get(api, b["id"])
    assert not back["deleted"] and "inode" not in back
    assert read(api, v, b["id"]) == b"mine, made before the delete was known"
    assert read(api, v, a["id"]) == b"shared"
    # From now on they are two files: a commit through a does not reach b.
    assert commit(api, v, get(api, a["id"]), b"a only").status_code == 200
    assert read(api, v, b["id"]) == b"mine, made before the delete was known"


# -- random operations against a model ------------------------------------------------------

NAMES = ["a", "b", "c", "d/a", "d/b"]


class LinkModel(RuleBasedStateMachine):
    """Random creates, links, commits, chmods, renames (over names too), deletes and trash
    restores through REST, against a model of files and names: after every step each name
    on the server has its file's bytes and mode, names of one file share one ``inode`` and
    names of different files never do, and the server has no other live name."""

    api: Api = None  # type: ignore[assignment]     # set by the test

    def __init__(self):
        super().__init__()
        a = self.api
        r = a.post("/vaults", json={"name": "model"})
        assert r.status_code == 201, r.text
        self.v = a.vault = r.json()["id"]        # a vault per example (the helpers use api.vault)
        self.d = mkdir(a, self.v, "d")["id"]
        self.files: dict[int, dict] = {}           # file key -> {"data", "mode"}
        self.names: dict[str, dict] = {}           # name -> {"id", "file"}
        self.trashed: list[dict] = []              # deleted names, oldest first
        self.keys = 0

    def _where(self, name: str) -> tuple[str, str]:
        return (self.d, name[2:]) if name.startswith("d/") else (ROOT_ID, name)

    def _node(self, name: str) -> dict:
        return get(self.api, self.names[name]["id"])

    def _trash(self, name: str, node: dict) -> None:
        key = self.names.pop(name)["file"]
        self.trashed.append({"id": node["id"], "file": key, "data": self.files[key]["data"],
                             "mode": self.files[key]["mode"]})

    @rule(name=st.sampled_from(NAMES), data=st.binary(max_size=64))
    def create(self, name, data):
        parent, base = self._where(name)
        r = self.api.post(f"/vaults/{self.v}/nodes", json={
            "parent": parent, "name": base, "kind": "file",
            "content": {"chunks": upload(self.api, self.v, data), "size": len(data)}})
        if name in self.names:
            assert error(r, 409) == "name_exists"
            return
        assert r.status_code == 201, r.text
        self.keys += 1
        self.files[self.keys] = {"data": data, "mode": 0o644}
        self.names[name] = {"id": r.json()["id"], "file": self.keys}

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def link(self, src, dst):
        if src not in self.names:
            return
        parent, base = self._where(dst)
        r = link(self.api, self.names[src]["id"], base, parent)
        if dst in self.names:
            assert error(r, 409) == "name_exists"
            return
        assert r.status_code == 201, r.text
        self.names[dst] = {"id": r.json()["id"], "file": self.names[src]["file"]}

    @rule(name=st.sampled_from(NAMES), data=st.binary(max_size=64))
    def write(self, name, data):
        if name in self.names:
            r = commit(self.api, self.v, self._node(name), data)
            assert r.status_code == 200, r.text
            self.files[self.names[name]["file"]]["data"] = data

    @rule(name=st.sampled_from(NAMES), mode=st.sampled_from([0o600, 0o640, 0o755]))
    def chmod(self, name, mode):
        if name in self.names:
            node = self._node(name)
            r = self.api.patch(f"/vaults/{self.v}/nodes/{node['id']}", json={"base_rev": node["rev"], "mode": mode})
            assert r.status_code == 200, r.text
            self.files[self.names[name]["file"]]["mode"] = mode

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def rename(self, src, dst):
        if src not in self.names or src == dst:
            return
        node = self._node(src)
        parent, base = self._where(dst)
        r = self.api.patch(f"/vaults/{self.v}/nodes/{node['id']}", json={
            "base_rev": node["rev"], "parent": parent, "name": base, "replace": True})
        assert r.status_code == 200, r.text
        if dst in self.names and self.names[dst]["file"] == self.names[src]["file"]:
            return                                 # rename(2) between names of one file
        if dst in self.names:
            self._trash(dst, self._node(dst))
        self.names[dst] = self.names.pop(src)

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name):
        if name in self.names:
            node = self._node(name)
            r = self.api.delete(f"/vaults/{self.v}/nodes/{node['id']}", params={"base_rev": node["rev"]})
            assert r.status_code == 200, r.text
            self._trash(name, node)

    @rule(pick=st.integers(min_value=0, max_value=1000))
    def restore(self, pick):
        if not self.trashed:
            return
        gone = self.trashed.pop(pick % len(self.trashed))
        entries = self.api.get(f"/vaults/{self.v}/trash").json()["entries"]
        entry = next(e for e in entries if e["node"] == gone["id"])
        r = self.api.post(f"/vaults/{self.v}/trash/{entry['id']}/restore", json={})
        assert r.status_code == 200, r.text
        node = get(self.api, gone["id"])
        name = node["name"] if node["parent"] == ROOT_ID else f"d/{node['name']}"
        if name not in NAMES:
            # Came back as "NAME (restored)": the model only knows its names; delete it
            # for good so it does not linger.
            r = self.api.delete(f"/vaults/{self.v}/nodes/{node['id']}", params={"base_rev": node["rev"]})
            assert r.status_code == 200, r.text
            return
        key = gone["file"]
        live = [n for n in self.names.values() if n["file"] == key]
        if not live:
            self.files[key] = {"data": gone["data"], "mode": gone["mode"]}
        elif self.files[key]["data"] != gone["data"]:
            self.keys += 1
            key = self.keys
            self.files[key] = {"data": gone["data"], "mode": gone["mode"]}
        self.names[name] = {"id": gone["id"], "file": key}

    @invariant()
    def the_server_agrees(self):
        nodes = {n["id"]: n for n in self.api.get(f"/vaults/{self.v}/tree").json()["nodes"]}
        live = {i for i, n in nodes.items() if n["kind"] == "file"}
        assert live == {n["id"] for n in self.names.values()}
        inodes: dict[int, set] = {}
        for name, n in self.names.items():
            node, f = nodes[n["id"]], self.files[n["file"]]
            assert (node["parent"] == ROOT_ID) == ("/" not in name) and node["name"] == name.split("/")[-1]
            assert (read(self.api, self.v, n["id"]), node["mode"]) == (f["data"], f["mode"]), name
            inodes.setdefault(n["file"], set()).add(node.get("inode"))
        for key, seen in inodes.items():
            if sum(1 for n in self.names.values() if n["file"] == key) > 1:
                assert len(seen) == 1 and None not in seen, (key, seen)
        shared = [i for s in inodes.values() for i in s if i is not None]
        assert len(shared) == len(set(shared)), inodes


def test_random_link_operations_match_a_model(api):
    LinkModel.api = api
    run_state_machine_as_test(LinkModel, settings=settings(
        max_examples=int(os.environ.get("GOBI_LINK_MODEL_EXAMPLES", "30")), stateful_step_count=40,
        deadline=None, suppress_health_check=list(HealthCheck)))
