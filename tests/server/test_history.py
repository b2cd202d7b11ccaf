"""Versions, trash, mass-delete holds and garbage collection through REST.

Runs against its own server with a low mass-delete threshold (20 files), no grace period
for garbage collection and no background jobs (the tests trigger everything themselves;
``test_retention.py`` covers the jobs). Garbage collection is checked by counting the
objects in the server's storage with the storage driver itself.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from gobi.drivers.local import LocalDriver
from tests.servers import Api, ServerProcess, register

from .util import commit, create_file, mkdir, read, upload

ENV = {
    "GOBI_POLL_INTERVAL": "1h", "GOBI_GC_GRACE": "0s", "GOBI_GC_INTERVAL": "0",
    "GOBI_HISTORY_INTERVAL": "0", "GOBI_MASS_DELETE_FILES": "20", "GOBI_MASS_DELETE_MIN_FILES": "10",
    "GOBI_MASS_DELETE_FRACTION": "0.5", "GOBI_MASS_DELETE_WINDOW": "5m",
}


@pytest.fixture(scope="module")
def hserver(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("history"), env=ENV).start()
    yield srv
    srv.stop()


def _api(srv, device):
    name, token = register(srv)
    api = Api(srv.api, token, device=device)
    api.username = name
    return api


@pytest.fixture
def owner(hserver):
    api = _api(hserver, "owner-laptop")
    yield api
    api.close()


@pytest.fixture
def other(hserver):
    api = _api(hserver, "buggy-client")
    yield api
    api.close()


@pytest.fixture
def vault(owner, other):
    vid = owner.post("/vaults", json={"name": "h"}).json()["id"]
    owner.put(f"/vaults/{vid}/members/{other.username}", json={"role": "write"})
    return vid


def names(api, vault, parent="root"):
    return {n["name"]: n for n in api.get(f"/vaults/{vault}/nodes/{parent}/children").json()["nodes"]}


def trash(api, vault, **params):
    r = api.get(f"/vaults/{vault}/trash", params=params)
    assert r.status_code == 200, r.text
    return r.json()["entries"]


def events(api, vault, after=0):
    return api.get(f"/vaults/{vault}/events", params={"after": after, "limit": 5000}).json()["events"]


def head_seq(api, vault):
    return api.get(f"/vaults/{vault}").json()["head_seq"]


def objects(srv, vault) -> int:
    """Objects of the vault in the server's storage, counted by the storage driver."""
    async def count() -> int:
        driver = LocalDriver(srv.data_dir / "blobs")
        return len([o async for o in driver.list(f"{vault}/")])

    return asyncio.run(count())


# -- versions ----------------------------------------------------------------------------------

def test_versions_list_cat_and_restore(owner, other, vault):
    f = create_file(owner, vault, "report.txt", b"first draft")
    v2 = commit(owner, vault, f, b"second draft").json()
    v3 = commit(owner, vault, v2, b"third draft").json()
    listed = owner.get(f"/vaults/{vault}/nodes/{f['id']}/versions").json()["versions"]
    assert [v["rev"] for v in listed] == [v3["rev"], v2["rev"], f["rev"]]
    assert [v["head"] for v in listed] == [True, False, False]
    assert {v["device"] for v in listed} == {"owner-laptop"}
    assert read(owner, vault, f["id"], rev=f["rev"]) == b"first draft"
    seq = head_seq(owner, vault)
    r = other.post(f"/vaults/{vault}/nodes/{f['id']}/restore", json={"rev": f["rev"]})
    assert r.status_code == 200, r.text
    restored = r.json()
    assert restored["content_rev"] > v3["rev"] and restored["size"] == len(b"first draft")
    assert read(owner, vault, f["id"]) == b"first draft"
    listed = owner.get(f"/vaults/{vault}/nodes/{f['id']}/versions").json()["versions"]
    assert len(listed) == 4 and listed[0]["origin"] == f"restore:{f['rev']}" and listed[0]["device"] == "buggy-client"
    # other devices see an ordinary content event
    assert [(e["type"], e["node"]["id"]) for e in events(owner, vault, seq)] == [("content", f["id"])]
    # history is never rewritten: the third draft is still there
    assert read(owner, vault, f["id"], rev=v3["rev"]) == b"third draft"


def test_restore_refusals(owner, vault):
    f = create_file(owner, vault, "a.txt", b"a")
    d = mkdir(owner, vault, "d")
    r = owner.post(f"/vaults/{vault}/nodes/{f['id']}/restore", json={"rev": 999999})
    assert r.status_code == 404
    r = owner.post(f"/vaults/{vault}/nodes/{d['id']}/restore", json={"rev": d["rev"]})
    assert r.status_code == 409
    g = commit(owner, vault, f, b"b").json()
    r = owner.post(f"/vaults/{vault}/nodes/{f['id']}/restore", json={"rev": f["rev"], "base_rev": f["rev"]})
    assert r.status_code == 409 and r.json()["error"]["details"]["head"]["rev"] == g["rev"]
    owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": g["rev"]})
    r = owner.post(f"/vaults/{vault}/nodes/{f['id']}/restore", json={"rev": f["rev"]})
    assert r.status_code == 409 and "trash" in r.json()["error"]["message"]
    assert owner.post(f"/vaults/{vault}/nodes/{f['id']}/restore", json={"rev": -1}).status_code == 400


# -- trash ---------------------------------------------------------------------------------------

def test_deleted_directory_is_one_entry_and_comes_back_whole(owner, other, vault):
    d = mkdir(owner, vault, "project")
    sub = mkdir(owner, vault, "src", parent=d["id"])
    files = {create_file(owner, vault, f"f{i}.py", f"print({i})".encode(), parent=sub["id"])["id"]: i
             for i in range(3)}
    create_file(owner, vault, "README", b"readme", parent=d["id"])
    r = other.delete(f"/vaults/{vault}/nodes/{d['id']}", params={"base_rev": d["rev"], "recursive": "true"})
    assert r.status_code == 200
    [entry] = trash(owner, vault)
    assert (entry["path"], entry["kind"], entry["files"], entry["dirs"]) == ("project", "dir", 4, 2)
    assert entry["bytes"] == sum(len(f"print({i})") for i in range(3)) + 6
    assert (entry["device"], entry["user"], entry["reason"]) == ("buggy-client", other.username, "delete")
    assert "project" not in names(owner, vault)
    seq = head_seq(owner, vault)
    r = owner.post(f"/vaults/{vault}/trash/{entry['id']}/restore", json={})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["restored"], body["renamed"], body["revived_parents"]) == (6, False, 0)
    assert body["node"]["id"] == d["id"] and body["node"]["name"] == "project"
    assert set(names(owner, vault, sub["id"])) == {"f0.py", "f1.py", "f2.py"}
    for node_id, i in files.items():
        assert read(owner, vault, node_id) == f"print({i})".encode()
    # other clients see the nodes reappear: create events, parents first, same ids
    evs = events(owner, vault, seq)
    assert {e["type"] for e in evs} == {"create"} and len(evs) == 6
    order = [e["node"]["id"] for e in evs]
    assert order.index(d["id"]) < order.index(sub["id"]) < min(order.index(n) for n in files)
    assert trash(owner, vault) == []
    assert owner.post(f"/vaults/{vault}/trash/{entry['id']}/restore", json={}).status_code == 404


def test_restore_under_a_new_name_when_the_old_one_is_taken(owner, vault):
    f = create_file(owner, vault, "notes.txt", b"old notes")
    owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]})
    create_file(owner, vault, "notes.txt", b"new notes")
    [entry] = trash(owner, vault, path="notes.txt")
    body = owner.post(f"/vaults/{vault}/trash/{entry['id']}/restore", json={}).json()
    assert body["renamed"] and body["node"]["name"] == "notes (restored).txt"
    assert read(owner, vault, f["id"]) == b"old notes"
    assert set(names(owner, vault)) == {"notes.txt", "notes (restored).txt"}


def test_restore_recreates_deleted_parents_or_goes_where_asked(owner, vault):
    a = mkdir(owner, vault, "a")
    b = mkdir(owner, vault, "b", parent=a["id"])
    f = create_file(owner, vault, "deep.txt", b"deep", parent=b["id"])
    g = create_file(owner, vault, "other.txt", b"other", parent=b["id"])
    owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]})
    owner.delete(f"/vaults/{vault}/nodes/{a['id']}", params={"base_rev": a["rev"], "recursive": "true"})
    entries = trash(owner, vault)
    assert [e["path"] for e in entries] == ["a", "a/b/deep.txt"]
    body = owner.post(f"/vaults/{vault}/trash/{entries[1]['id']}/restore", json={}).json()
    assert body["revived_parents"] == 2 and body["node"]["parent"] == b["id"]
    assert set(names(owner, vault, b["id"])) == {"deep.txt"}        # only what was restored
    # the directory's own entry is still there and fills the revived directories
    body = owner.post(f"/vaults/{vault}/trash/{entries[0]['id']}/restore", json={}).json()
    assert set(names(owner, vault, b["id"])) == {"deep.txt", "other.txt"}
    assert read(owner, vault, g["id"]) == b"other"
    # elsewhere, under another name
    owner.delete(f"/vaults/{vault}/nodes/{g['id']}", params={"base_rev": names(owner, vault, b["id"])["other.txt"]["rev"]})
    [entry] = trash(owner, vault, path="a/b/other.txt")
    body = owner.post(f"/vaults/{vault}/trash/{entry['id']}/restore", json={"parent": "root", "name": "found.txt"}).json()
    assert body["node"]["parent"] == "root" and body["node"]["name"] == "found.txt"
    r = owner.post(f"/vaults/{vault}/trash/{entry['id']}/restore", json={"parent": "nope"})
    assert r.status_code == 404


def test_rename_over_a_file_puts_the_replaced_file_in_the_trash(owner, vault):
    a = create_file(owner, vault, "a.txt", b"aaa")
    b = create_file(owner, vault, "b.txt", b"bbb")
    owner.patch(f"/vaults/{vault}/nodes/{a['id']}", json={"base_rev": a["rev"], "name": "b.txt", "replace": True})
    [entry] = trash(owner, vault)
    assert (entry["node"], entry["reason"], entry["path"]) == (b["id"], "replace", "b.txt")
    assert read(owner, vault, b["id"]) == b"bbb"


def test_trash_permissions_and_purge(owner, other, vault):
    f = create_file(owner, vault, "x.txt", b"x")
    owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]})
    [entry] = trash(other, vault)
    assert other.delete(f"/vaults/{vault}/trash/{entry['id']}").status_code == 403
    r = owner.delete(f"/vaults/{vault}/trash/{entry['id']}")
    assert r.status_code == 200 and r.json() == {"versions_dropped": 1}
    assert trash(owner, vault) == []
    assert owner.get(f"/vaults/{vault}/nodes/{f['id']}/data").status_code == 404


# -- mass-delete hold ------------------------------------------------------------------------------

def test_mass_delete_is_held_until_the_owner_confirms(owner, other, vault):
    d = mkdir(owner, vault, "data")
    files = [create_file(owner, vault, f"{i:02d}.csv", b"row", parent=d["id"]) for i in range(40)]
    keep = [create_file(owner, vault, f"k{i}", b"k") for i in range(20)]
    seq0 = head_seq(owner, vault)
    # the buggy client deletes one file after the other: the first 20 go through
    answers = [other.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}) for f in files]
    assert [r.status_code for r in answers[:20]] == [200] * 20
    held = answers[20]
    assert held.status_code == 409 and held.json()["error"]["code"] == "delete_held"
    hold = held.json()["error"]["details"]["hold"]
    # ...until the 21st: the hold opens with it and with the 20 before it, pulled back
    assert (hold["state"], hold["device"], hold["items"], hold["files"]) == ("pending", "buggy-client", 21, 21)
    assert held.json()["error"]["details"]["head"]["deleted"] is False
    # every later delete of that device joins the hold, even a small one
    assert {r.json()["error"]["code"] for r in answers[21:]} == {"delete_held"}
    r = other.delete(f"/vaults/{vault}/nodes/{keep[0]['id']}", params={"base_rev": keep[0]["rev"]})
    assert r.status_code == 409
    # nothing of it is applied: everyone else has every file again, same ids, same bytes
    back = names(owner, vault, d["id"])
    assert {n["id"] for n in back.values()} == {f["id"] for f in files} and "k0" in names(owner, vault)
    assert sorted(back) == [f["name"] for f in files]
    assert read(owner, vault, back["00.csv"]["id"]) == b"row"
    assert trash(owner, vault) == []
    [listed] = owner.get(f"/vaults/{vault}/holds").json()["holds"]
    assert (listed["id"], listed["items"], listed["files"]) == (hold["id"], 41, 41)
    detail = owner.get(f"/vaults/{vault}/holds/{hold['id']}").json()
    assert [i["path"] for i in detail["items"]] == [f"data/{i:02d}.csv" for i in range(40)] + ["k0"]
    assert [bool(i.get("pulled_back")) for i in detail["items"]] == [True] * 20 + [False] * 21
    # a client following the event log saw the 20 deletes, then the same nodes come back
    # (create events, before the hold's own event)
    log = [e for e in events(owner, vault, seq0) if e["type"] != "hold" or e["hold"]["id"] == hold["id"]]
    assert [e["type"] for e in log] == ["delete"] * 20 + ["create"] * 20 + ["hold"]
    assert {e["node"]["id"] for e in log[20:40]} == {f["id"] for f in files[:20]}
    assert all(not e["node"]["deleted"] for e in log[20:40])
    hold_events = [e for e in events(owner, vault) if e["type"] == "hold"]
    assert [(e["hold"]["id"], e["hold"]["state"], e["node"]) for e in hold_events] == [(hold["id"], "pending", None)]
    assert hold_events[0]["hold"]["files"] == 21
    # only the owner confirms; a file modified meanwhile survives (one pulled back, too)
    for name in ("05.csv", "39.csv"):
        commit(owner, vault, names(owner, vault, d["id"])[name], b"edited meanwhile")
    assert other.post(f"/vaults/{vault}/holds/{hold['id']}/confirm").status_code == 403
    seq = head_seq(owner, vault)
    r = owner.post(f"/vaults/{vault}/holds/{hold['id']}/confirm")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["applied"], r.json()["skipped"]) == ("confirmed", 39, 2)
    assert set(names(owner, vault, d["id"])) == {"05.csv", "39.csv"} and "k0" not in names(owner, vault)
    after = events(owner, vault, seq)
    assert sum(e["type"] == "delete" for e in after) == 39 and after[-1]["type"] == "hold"
    # the deletes are events of the confirming device, so the requester applies them too
    assert {e["device"] for e in after if e["type"] == "delete"} == {"owner-laptop"}
    entries = trash(owner, vault)
    assert len(entries) == 39 and {e["device"] for e in entries} == {"buggy-client"}
    assert {e["hold"] for e in entries} == {hold["id"]}
    assert owner.post(f"/vaults/{vault}/holds/{hold['id']}/confirm").status_code == 400
    # the window starts again after a decision, and what the hold deleted is not pulled
    # back into a later one
    k = names(owner, vault)["k1"]
    assert other.delete(f"/vaults/{vault}/nodes/{k['id']}", params={"base_rev": k["rev"]}).status_code == 200


def test_a_held_burst_leaves_other_devices_deletes_alone_and_reject_keeps_it_all(owner, other, vault):
    d = mkdir(owner, vault, "data")
    files = [create_file(owner, vault, f"f{i:02d}", b"x", parent=d["id"]) for i in range(40)]
    mine = [create_file(owner, vault, f"mine{i}", b"m") for i in range(3)]
    # the owner's own device deletes a few in the same window, and so does the buggy one
    for f in mine:
        assert owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code == 200
    codes = [other.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code
             for f in files[:25]]
    assert codes == [200] * 20 + [409] * 5
    assert len(names(owner, vault, d["id"])) == 40
    # the owner's device's deletes are not the buggy device's: they stay deleted
    assert sorted(e["name"] for e in trash(owner, vault)) == ["mine0", "mine1", "mine2"]
    assert not {"mine0", "mine1", "mine2"} & set(names(owner, vault))
    [hold] = owner.get(f"/vaults/{vault}/holds").json()["holds"]
    assert (hold["items"], hold["files"]) == (25, 25)
    r = owner.post(f"/vaults/{vault}/holds/{hold['id']}/reject")
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    assert {n["id"] for n in names(owner, vault, d["id"]).values()} == {f["id"] for f in files}
    assert len(trash(owner, vault)) == 3


def test_a_pulled_back_file_whose_name_was_taken_comes_back_renamed(owner, other, vault):
    d = mkdir(owner, vault, "data")
    files = [create_file(owner, vault, f"f{i:02d}.txt", b"old %d" % i, parent=d["id"]) for i in range(40)]
    first = files[0]
    assert other.delete(f"/vaults/{vault}/nodes/{first['id']}", params={"base_rev": first["rev"]}).status_code == 200
    # the buggy client writes something else under the name it freed
    new = create_file(other, vault, "f00.txt", b"ransom note", parent=d["id"])
    codes = [other.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code
             for f in files[1:22]]
    assert codes == [200] * 19 + [409] * 2
    now = names(owner, vault, d["id"])
    assert now["f00.txt"]["id"] == new["id"] and now["f00 (restored).txt"]["id"] == first["id"]
    assert read(owner, vault, first["id"]) == b"old 0"
    [hold] = owner.get(f"/vaults/{vault}/holds").json()["holds"]
    detail = owner.get(f"/vaults/{vault}/holds/{hold['id']}").json()
    assert detail["items"][0]["path"] == "data/f00 (restored).txt"
    # confirming deletes what the client deleted (the renamed original), not the new file
    r = owner.post(f"/vaults/{vault}/holds/{hold['id']}/confirm")
    assert (r.json()["applied"], r.json()["skipped"]) == (22, 0)
    assert {n["id"] for n in names(owner, vault, d["id"]).values()} == {new["id"]} | {f["id"] for f in files[22:]}


def test_one_big_recursive_delete_is_held_whole_and_can_be_rejected(owner, other, vault):
    d = mkdir(owner, vault, "big")
    for i in range(25):
        create_file(owner, vault, f"{i}", b"x", parent=d["id"])
    r = other.delete(f"/vaults/{vault}/nodes/{d['id']}", params={"base_rev": d["rev"], "recursive": "true"})
    assert r.status_code == 409 and r.json()["error"]["details"]["hold"]["files"] == 25
    assert len(names(owner, vault, d["id"])) == 25 and trash(owner, vault) == []
    hold = r.json()["error"]["details"]["hold"]
    # the requester may withdraw its own hold
    r = other.post(f"/vaults/{vault}/holds/{hold['id']}/reject")
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    assert owner.get(f"/vaults/{vault}/holds").json()["holds"] == []
    assert [h["state"] for h in owner.get(f"/vaults/{vault}/holds", params={"state": "all"}).json()["holds"]] == ["rejected"]
    assert len(names(owner, vault, d["id"])) == 25


def test_a_quarter_of_a_small_vault_is_a_mass_delete_too(owner, other, vault):
    files = [create_file(owner, vault, f"f{i}", b"x") for i in range(16)]
    # threshold here: more than half of the vault's files (and at least 10)
    codes = [other.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code
             for f in files[:12]]
    assert codes == [200] * 9 + [409] * 3


def test_owner_deletes_are_counted_per_device_too(owner, other, vault):
    files = [create_file(other, vault, f"f{i}", b"x") for i in range(50)]
    codes = [owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code
             for f in files[:22]]
    assert codes.count(409) == 2


def test_a_device_deleting_what_it_wrote_itself_recently_is_not_a_mass_delete(owner, other, vault):
    """mass_delete_fresh (1 day): a build directory, node_modules, a checkout undone by
    the device that made it counts nothing; the same files deleted by another device do."""
    files = [create_file(owner, vault, f"f{i}", b"x") for i in range(50)]
    codes = [owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code
             for f in files[:40]]
    assert codes == [200] * 40
    assert owner.get(f"/vaults/{vault}/holds").json()["holds"] == []
    rest = [other.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code
            for f in files[40:]]
    # 10 files left, the other device deletes them all: more than half of the vault
    assert rest.count(409) > 0


# -- garbage collection -------------------------------------------------------------------------------

def test_gc_frees_exactly_the_unreferenced_chunks(hserver, owner, other, vault):
    data = {f"file{i}": os.urandom(3000 + i) for i in range(6)}     # several small chunks each
    nodes = {name: create_file(owner, vault, name, body) for name, body in data.items()}
    before = objects(hserver, vault)
    assert before >= 12
    # overwrite one file twice (its old versions stay referenced: nothing to free yet)
    edit = commit(owner, vault, nodes["file0"], os.urandom(2000)).json()
    commit(owner, vault, edit, os.urandom(2500))
    # delete two files and empty their trash entries: their chunks become garbage
    for name in ("file1", "file2"):
        n = nodes[name]
        owner.delete(f"/vaults/{vault}/nodes/{n['id']}", params={"base_rev": n["rev"]})
    for entry in trash(owner, vault):
        owner.delete(f"/vaults/{vault}/trash/{entry['id']}")
    # a chunk uploaded but never committed (an abandoned upload; grace is 0 here)
    upload(owner, vault, b"abandoned" * 300)
    garbage = {r["hash"] for name in ("file1", "file2") for r in upload(owner, vault, data[name])}
    garbage |= {r["hash"] for r in upload(owner, vault, b"abandoned" * 300)}
    total = objects(hserver, vault)
    assert other.post(f"/vaults/{vault}/gc", json={"dry_run": True}).status_code == 403
    report = owner.post(f"/vaults/{vault}/gc", json={"dry_run": True}).json()
    assert report["dry_run"] and report["collectable"]["chunks"] == len(garbage)
    assert report["freed"]["chunks"] == 0 and objects(hserver, vault) == total
    # A collection deletes data: never what an empty request means.
    for empty in ({"json": {}}, {}):
        r = owner.post(f"/vaults/{vault}/gc", **empty)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    assert objects(hserver, vault) == total
    report = owner.post(f"/vaults/{vault}/gc", json={"dry_run": False}).json()
    assert report["freed"]["chunks"] == len(garbage)
    assert report["collectable"]["chunks"] == 0
    assert objects(hserver, vault) == total - len(garbage) == report["referenced"]["chunks"]
    # everything kept still reads, old versions included
    for name in ("file3", "file4", "file5"):
        assert read(owner, vault, nodes[name]["id"]) == data[name]
    assert read(owner, vault, nodes["file0"]["id"], rev=nodes["file0"]["rev"]) == data["file0"]
    # garbage is simply missing now: uploading it again works
    assert set(owner.post(f"/vaults/{vault}/chunks/missing", json={"hashes": sorted(garbage)}).json()["missing"]) == garbage
    again = create_file(owner, vault, "file1", data["file1"])
    assert read(owner, vault, again["id"]) == data["file1"]
    assert owner.post(f"/vaults/{vault}/gc", json={"dry_run": False}).json()["freed"]["chunks"] == 0
