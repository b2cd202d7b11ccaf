"""Conflict strategies on the server, case by case, through REST with two devices.

``alice`` (device alice-laptop, the vault's owner) changes something first; ``bob``
(device bob-desktop, a writer) then sends a change based on the older state with
``on_conflict="strategy"`` and the vault's strategy decides. In every case both sides'
bytes stay retrievable (head, a version, a conflicted copy or the trash).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from .util import commit, create_file, mkdir, read, upload, ws_connect, ws_frames

STRATEGIES = ["keep-both", "last-writer-wins", "server-wins", "client-wins", "manual"]
STRATEGY = {"on_conflict": "strategy"}
COPY_RE = r" \(conflicted copy {device} \d{{4}}-\d{{2}}-\d{{2}} \d{{6}}\)"


@pytest.fixture
def shared(alice, bob):
    """A vault of alice's that bob may write to."""
    vault = alice.post("/vaults", json={"name": "shared"}).json()["id"]
    assert alice.put(f"/vaults/{vault}/members/{bob.username}", json={"role": "write"}).status_code == 200
    return vault


def use(api, vault, strategy, rules=()):
    r = api.put(f"/vaults/{vault}/settings", json={
        "conflict_strategy": strategy, "conflict_rules": [{"pattern": p, "strategy": s} for p, s in rules]})
    assert r.status_code == 200, r.text


def bob_commit(bob, vault, node, data, base_rev, mtime_ns=None):
    refs = upload(bob, vault, data)
    body = {"base_rev": base_rev, "chunks": refs, "size": len(data), **STRATEGY}
    if mtime_ns is not None:
        body["mtime_ns"] = mtime_ns
    r = bob.put(f"/vaults/{vault}/nodes/{node['id']}/content", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def children(api, vault, parent="root"):
    return {n["name"]: n for n in api.get(f"/vaults/{vault}/nodes/{parent}/children").json()["nodes"]}


def versions(api, vault, node_id):
    return api.get(f"/vaults/{vault}/nodes/{node_id}/versions").json()["versions"]


def conflicts(api, vault, state="open"):
    return api.get(f"/vaults/{vault}/conflicts", params={"state": state}).json()["conflicts"]


def resolve(api, vault, cid, keep):
    r = api.post(f"/vaults/{vault}/conflicts/{cid}/resolve", json={"keep": keep})
    assert r.status_code == 200, r.text
    return r.json()


def events_of(api, vault, kind):
    return [e for e in api.get(f"/vaults/{vault}/events", params={"limit": 5000}).json()["events"]
            if e["type"] == kind]


# -- settings ------------------------------------------------------------------------------------

def test_settings_default_validation_and_owner_only(alice, bob, shared):
    assert alice.get(f"/vaults/{shared}/settings").json() == {"conflict_strategy": "keep-both", "conflict_rules": []}
    r = alice.put(f"/vaults/{shared}/settings", json={"conflict_strategy": "coin-toss"})
    assert r.status_code == 400
    r = alice.put(f"/vaults/{shared}/settings", json={"conflict_rules": [{"pattern": "", "strategy": "manual"}]})
    assert r.status_code == 400
    r = bob.put(f"/vaults/{shared}/settings", json={"conflict_strategy": "client-wins"})
    assert r.status_code == 403
    use(alice, shared, "manual", [("*.docx", "keep-both"), ("logs/**", "last-writer-wins")])
    assert bob.get(f"/vaults/{shared}/settings").json()["conflict_rules"][1] == {
        "pattern": "logs/**", "strategy": "last-writer-wins"}
    assert [e["node"] for e in events_of(bob, shared, "settings")] == [None]


def test_without_on_conflict_a_stale_write_still_gets_409_with_the_head(alice, bob, shared):
    f = create_file(alice, shared, "doc.txt", b"base")
    assert commit(alice, shared, f, b"alice").status_code == 200
    r = commit(bob, shared, f, b"bob", base_rev=f["rev"])
    assert r.status_code == 409 and r.json()["error"]["details"]["head"]["size"] == 5
    assert conflicts(alice, shared, "all") == []


# -- modify/modify -------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_modify_modify(alice, bob, shared, strategy):
    use(alice, shared, strategy)
    f = create_file(alice, shared, "doc.txt", b"base")
    a = commit(alice, shared, f, b"alice's edit").json()
    out = bob_commit(bob, shared, f, b"bob's edit", f["rev"], mtime_ns=time.time_ns() + 10**9)
    info = out["conflict"]
    assert (info["case"], info["strategy"], info["device"]) == ("modify_modify", strategy, "bob-desktop")
    head = read(alice, shared, f["id"])
    listed = versions(alice, shared, f["id"])
    if strategy == "keep-both":
        assert info["result"] == "both" and head == b"alice's edit"
        copy = info["conflicted_copy"]
        assert re.fullmatch(r"doc" + COPY_RE.format(device="bob-desktop") + r"\.txt", copy["name"])
        assert read(alice, shared, copy["id"]) == b"bob's edit"
        assert set(children(alice, shared)) == {"doc.txt", copy["name"]}
    elif strategy in ("last-writer-wins", "client-wins"):
        assert info["result"] == "mine" and head == b"bob's edit"
        assert out["node"]["content_rev"] > a["content_rev"]
        assert read(alice, shared, f["id"], rev=a["content_rev"]) == b"alice's edit"
    else:
        assert head == b"alice's edit" and out["node"]["content_rev"] == a["content_rev"]
        kept = [v for v in listed if v["origin"] == "conflict"]
        assert len(kept) == 1 and kept[0]["rev"] == info["mine"]["rev"] and not kept[0]["head"]
        assert read(alice, shared, f["id"], rev=kept[0]["rev"]) == b"bob's edit"
        assert info["result"] == ("recorded" if strategy == "manual" else "theirs")
    assert [v["rev"] for v in listed if v["head"]] == [read_node(alice, shared, f["id"])["content_rev"]]
    # everyone hears about it
    assert [e["conflict"]["id"] for e in events_of(alice, shared, "conflict")] == [info["id"]]
    assert [c["id"] for c in conflicts(alice, shared)] == ([info["id"]] if strategy == "manual" else [])


def read_node(api, vault, node_id):
    return api.get(f"/vaults/{vault}/nodes/{node_id}").json()


def test_last_writer_wins_keeps_the_newer_edit_by_mtime(alice, bob, shared):
    use(alice, shared, "last-writer-wins")
    f = create_file(alice, shared, "doc.txt", b"base")
    commit_body = {"base_rev": f["rev"], "chunks": upload(alice, shared, b"alice, later"), "size": 12,
                   "mtime_ns": time.time_ns()}
    assert alice.put(f"/vaults/{shared}/nodes/{f['id']}/content", json=commit_body).status_code == 200
    # bob's edit was made (mtime) before alice's, so it loses although it arrived later
    out = bob_commit(bob, shared, f, b"bob, earlier", f["rev"], mtime_ns=time.time_ns() - 3600 * 10**9)
    assert out["conflict"]["result"] == "theirs"
    assert read(alice, shared, f["id"]) == b"alice, later"
    assert read(alice, shared, f["id"], rev=out["conflict"]["mine"]["rev"]) == b"bob, earlier"


@pytest.mark.parametrize("keep", ["mine", "theirs", "both"])
def test_manual_resolve_modify_modify(alice, bob, shared, keep):
    use(alice, shared, "manual")
    f = create_file(alice, shared, "notes.md", b"base")
    commit(alice, shared, f, b"alice")
    info = bob_commit(bob, shared, f, b"bob", f["rev"])["conflict"]
    [listed] = conflicts(bob, shared)
    assert listed["path"] == "notes.md" and listed["state"] == "open"
    done = resolve(bob, shared, info["id"], keep)
    assert (done["state"], done["resolution"]) == ("resolved", keep)
    assert read(alice, shared, f["id"]) == (b"bob" if keep == "mine" else b"alice")
    names = set(children(alice, shared))
    if keep == "both":
        [copy] = names - {"notes.md"}
        assert re.fullmatch(r"notes" + COPY_RE.format(device="bob-desktop") + r"\.md", copy)
        assert read(alice, shared, children(alice, shared)[copy]["id"]) == b"bob"
    else:
        assert names == {"notes.md"}
    assert conflicts(alice, shared) == []
    r = alice.post(f"/vaults/{shared}/conflicts/{info['id']}/resolve", json={"keep": "mine"})
    assert r.status_code == 400           # decided already
    assert alice.post(f"/vaults/{shared}/conflicts/cnope/resolve", json={"keep": "mine"}).status_code == 404
    assert alice.post(f"/vaults/{shared}/conflicts/{info['id']}/resolve", json={"keep": "x"}).status_code == 400


def test_rules_per_path_choose_the_strategy(alice, bob, shared):
    use(alice, shared, "keep-both", [("*.docx", "manual"), ("build/**", "client-wins")])
    build = mkdir(alice, shared, "build")
    files = {name: create_file(alice, shared, name, b"v1", parent=parent)
             for name, parent in (("a.docx", "root"), ("a.txt", "root"), ("out.bin", build["id"]))}
    got = {}
    for name, f in files.items():
        commit(alice, shared, f, b"alice")
        got[name] = bob_commit(bob, shared, f, b"bob", f["rev"])["conflict"]
    assert {n: (c["strategy"], c["result"]) for n, c in got.items()} == {
        "a.docx": ("manual", "recorded"), "a.txt": ("keep-both", "both"), "out.bin": ("client-wins", "mine")}


# -- modify/delete, delete/modify, delete/delete --------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_modify_delete(alice, bob, shared, strategy):
    use(alice, shared, strategy)
    d = mkdir(alice, shared, "docs")
    f = create_file(alice, shared, "plan.txt", b"v1", parent=d["id"])
    r = alice.delete(f"/vaults/{shared}/nodes/{d['id']}", params={"base_rev": d["rev"], "recursive": "true"})
    assert r.status_code == 200
    out = bob_commit(bob, shared, f, b"bob's v2", f["rev"], mtime_ns=time.time_ns() + 10**9)
    info = out["conflict"]
    assert info["case"] == "modify_delete"
    if strategy in ("keep-both", "client-wins", "last-writer-wins"):
        # the modification survives: the file is back, in its directory, with bob's content
        assert info["result"] == "mine" and not out["node"]["deleted"]
        assert children(alice, shared)["docs"]["id"] == d["id"]
        assert read(alice, shared, f["id"]) == b"bob's v2"
        assert [e["node"] for e in alice.get(f"/vaults/{shared}/trash").json()["entries"]] == [d["id"]]
    else:
        assert out["node"]["deleted"] and "docs" not in children(alice, shared)
        kept = [v for v in versions(alice, shared, f["id"]) if v["origin"] == "conflict"]
        assert read(alice, shared, f["id"], rev=kept[0]["rev"]) == b"bob's v2"
        if strategy == "manual":
            resolve(alice, shared, info["id"], "mine")
            assert read(alice, shared, f["id"]) == b"bob's v2"
            assert "plan.txt" in children(alice, shared, d["id"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_delete_modify(alice, bob, shared, strategy):
    use(alice, shared, strategy)
    f = create_file(alice, shared, "todo.txt", b"v1")
    a = commit(alice, shared, f, b"alice's v2").json()
    r = bob.delete(f"/vaults/{shared}/nodes/{f['id']}", params={
        "base_rev": f["rev"], "on_conflict": "strategy", "at_ns": time.time_ns() + 10**9})
    assert r.status_code == 200, r.text
    info = r.json()["conflict"]
    assert info["case"] == "delete_modify"
    deleted = strategy in ("client-wins", "last-writer-wins")
    assert r.json()["node"]["deleted"] is deleted
    assert ("todo.txt" in children(alice, shared)) is not deleted
    assert read(alice, shared, f["id"], rev=a["content_rev"]) == b"alice's v2"   # kept either way
    if deleted:
        [entry] = alice.get(f"/vaults/{shared}/trash").json()["entries"]
        assert entry["node"] == f["id"] and entry["device"] == "bob-desktop"
    if strategy == "manual":
        assert info["result"] == "recorded"
        resolve(bob, shared, info["id"], "mine")
        assert "todo.txt" not in children(alice, shared)


def test_last_writer_wins_delete_older_than_the_edit_loses(alice, bob, shared):
    use(alice, shared, "last-writer-wins")
    f = create_file(alice, shared, "todo.txt", b"v1")
    commit(alice, shared, f, b"edited now")
    r = bob.delete(f"/vaults/{shared}/nodes/{f['id']}", params={
        "base_rev": f["rev"], "on_conflict": "strategy", "at_ns": time.time_ns() - 3600 * 10**9})
    assert r.json()["conflict"]["result"] == "theirs" and not r.json()["node"]["deleted"]


def test_delete_delete(alice, bob, shared):
    f = create_file(alice, shared, "gone.txt", b"x")
    assert alice.delete(f"/vaults/{shared}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code == 200
    r = bob.delete(f"/vaults/{shared}/nodes/{f['id']}", params={"base_rev": f["rev"], "on_conflict": "strategy"})
    assert r.status_code == 200 and r.json()["conflict"]["result"] == "already"
    assert r.json()["node"]["deleted"]
    r = bob.delete(f"/vaults/{shared}/nodes/{f['id']}", params={"base_rev": f["rev"]})
    assert r.status_code == 409 and r.json()["error"]["details"]["head"]["deleted"]
    assert len(alice.get(f"/vaults/{shared}/trash").json()["entries"]) == 1


# -- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rename_rename(alice, bob, shared, strategy):
    use(alice, shared, strategy)
    f = create_file(alice, shared, "draft.txt", b"text")
    r = alice.patch(f"/vaults/{shared}/nodes/{f['id']}", json={"base_rev": f["rev"], "name": "alice.txt"})
    assert r.status_code == 200
    r = bob.patch(f"/vaults/{shared}/nodes/{f['id']}", json={"base_rev": f["rev"], "name": "bob.txt", **STRATEGY})
    assert r.status_code == 200, r.text
    info = r.json()["conflict"]
    assert info["case"] == "rename_rename"
    mine_wins = strategy in ("keep-both", "last-writer-wins", "client-wins")
    assert set(children(alice, shared)) == {"bob.txt" if mine_wins else "alice.txt"}
    if strategy == "manual":
        assert info["result"] == "recorded"
        resolve(alice, shared, info["id"], "mine")
        assert set(children(alice, shared)) == {"bob.txt"}


def test_manual_rename_rename_keep_both_copies_a_file(alice, bob, shared):
    use(alice, shared, "manual")
    f = create_file(alice, shared, "draft.txt", b"text")
    alice.patch(f"/vaults/{shared}/nodes/{f['id']}", json={"base_rev": f["rev"], "name": "alice.txt"})
    info = bob.patch(f"/vaults/{shared}/nodes/{f['id']}",
                     json={"base_rev": f["rev"], "name": "bob.txt", **STRATEGY}).json()["conflict"]
    resolve(alice, shared, info["id"], "both")
    names = children(alice, shared)
    assert "alice.txt" in names and len(names) == 2
    [copy] = [n for n in names if n != "alice.txt"]
    assert copy.startswith("bob (conflicted copy bob-desktop ") and read(alice, shared, names[copy]["id"]) == b"text"


def test_rename_and_modify_do_not_conflict(alice, bob, shared):
    use(alice, shared, "manual")
    f = create_file(alice, shared, "a.txt", b"v1")
    commit(alice, shared, f, b"alice's v2")
    r = bob.patch(f"/vaults/{shared}/nodes/{f['id']}", json={"base_rev": f["rev"], "name": "b.txt", **STRATEGY})
    assert r.status_code == 200 and r.json()["conflict"] is None
    assert r.json()["node"]["name"] == "b.txt" and read(alice, shared, f["id"]) == b"alice's v2"
    # and the other way round: a commit on a base from before a rename is simply accepted
    g = create_file(alice, shared, "c.txt", b"v1")
    alice.patch(f"/vaults/{shared}/nodes/{g['id']}", json={"base_rev": g["rev"], "name": "d.txt"})
    out = bob_commit(bob, shared, g, b"bob's v2", g["rev"])
    assert out["conflict"] is None and out["node"]["name"] == "d.txt"
    assert conflicts(alice, shared, "all") == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_create_create_same_name(alice, bob, shared, strategy):
    use(alice, shared, strategy)
    a = create_file(alice, shared, "same.txt", b"alice's", mtime_ns=time.time_ns() - 10**9)
    refs = upload(bob, shared, b"bob's")
    r = bob.post(f"/vaults/{shared}/nodes", json={
        "id": "bobs-file", "parent": "root", "name": "same.txt", "kind": "file",
        "content": {"chunks": refs, "size": 5}, "mtime_ns": time.time_ns(), **STRATEGY})
    assert r.status_code == 201, r.text
    info, node = r.json()["conflict"], r.json()["node"]
    assert info["case"] == "name_clash" and node["id"] == "bobs-file"
    names = children(alice, shared)
    assert len(names) == 2
    if strategy in ("client-wins", "last-writer-wins"):
        # mine takes the name; theirs is renamed after its device
        assert names["same.txt"]["id"] == "bobs-file"
        [other] = [n for n in names if n != "same.txt"]
        assert re.fullmatch(r"same" + COPY_RE.format(device="alice-laptop") + r"\.txt", other)
        assert names[other]["id"] == a["id"]
    else:
        assert names["same.txt"]["id"] == a["id"]
        assert re.fullmatch(r"same" + COPY_RE.format(device="bob-desktop") + r"\.txt", node["name"])
    assert read(alice, shared, "bobs-file") == b"bob's" and read(alice, shared, a["id"]) == b"alice's"
    # a retry of the same create (same client id) is answered with the node, not a second copy
    again = bob.post(f"/vaults/{shared}/nodes", json={
        "id": "bobs-file", "parent": "root", "name": "same.txt", "kind": "file",
        "content": {"chunks": refs, "size": 5}, **STRATEGY})
    assert again.status_code == 200 and again.json()["node"]["name"] == node["name"]
    if strategy == "manual":
        [listed] = conflicts(alice, shared)
        assert listed["path"] == "same.txt"      # the name both wanted (what `gobi resolve` takes)
        resolve(alice, shared, info["id"], "mine")
        names = children(alice, shared)
        assert set(names) == {"same.txt"} and names["same.txt"]["id"] == "bobs-file"
        assert [e["node"] for e in alice.get(f"/vaults/{shared}/trash").json()["entries"]] == [a["id"]]


def test_file_versus_directory_and_directory_merge(alice, bob, shared):
    d = mkdir(alice, shared, "x")
    refs = upload(bob, shared, b"a file")
    r = bob.post(f"/vaults/{shared}/nodes", json={
        "parent": "root", "name": "x", "kind": "file", "content": {"chunks": refs, "size": 6}, **STRATEGY})
    assert r.status_code == 201
    assert r.json()["node"]["name"].startswith("x (conflicted copy bob-desktop ")   # no extension to keep
    assert children(alice, shared)["x"]["id"] == d["id"]
    # a file first, then a directory of that name
    create_file(alice, shared, "y", b"file")
    r = bob.post(f"/vaults/{shared}/nodes", json={"parent": "root", "name": "y", "kind": "dir", **STRATEGY})
    assert r.json()["node"]["kind"] == "dir" and r.json()["node"]["name"].startswith("y (conflicted copy ")
    # two directories of one name are merged: bob is told which directory to use
    r = bob.post(f"/vaults/{shared}/nodes", json={"id": "bobs-x", "parent": "root", "name": "x", "kind": "dir",
                                                   **STRATEGY})
    assert r.status_code == 200
    assert r.json()["conflict"]["result"] == "merged" and r.json()["node"]["id"] == d["id"]
    assert r.json()["conflict"]["theirs"]["node"] == d["id"]


def test_move_onto_a_name_taken_meanwhile(alice, bob, shared):
    f = create_file(alice, shared, "a.txt", b"a")
    create_file(alice, shared, "b.txt", b"b")
    r = bob.patch(f"/vaults/{shared}/nodes/{f['id']}", json={"base_rev": f["rev"], "name": "b.txt", **STRATEGY})
    assert r.status_code == 200
    assert r.json()["node"]["name"].startswith("b (conflicted copy bob-desktop ")
    assert r.json()["conflict"]["case"] == "name_clash"


# -- directories deleted while things change inside ------------------------------------------------

def test_dir_deleted_while_files_added_inside_new_files_survive(alice, bob, shared):
    d = mkdir(alice, shared, "project")
    old = create_file(alice, shared, "old.txt", b"old", parent=d["id"])
    seen = alice.get(f"/vaults/{shared}").json()["head_seq"]
    new = create_file(bob, shared, "new.txt", b"bob's new file", parent=d["id"])
    sub = mkdir(bob, shared, "sub", parent=d["id"])
    newer = create_file(bob, shared, "deep.txt", b"deep", parent=sub["id"])
    r = alice.delete(f"/vaults/{shared}/nodes/{d['id']}", params={
        "base_rev": d["rev"], "recursive": "true", "seen_seq": seen, **STRATEGY})
    assert r.status_code == 200, r.text
    info = r.json()["conflict"]
    assert info["case"] == "dir_changed" and info["theirs"]["survivors"] == 3
    assert not r.json()["node"]["deleted"]
    assert set(children(alice, shared, d["id"])) == {"new.txt", "sub"}
    assert read(alice, shared, new["id"]) == b"bob's new file" and read(alice, shared, newer["id"]) == b"deep"
    [entry] = alice.get(f"/vaults/{shared}/trash").json()["entries"]
    assert (entry["node"], entry["files"]) == (d["id"], 1)
    assert read_node(alice, shared, old["id"])["deleted"]


def test_rmdir_of_a_directory_that_gained_files_keeps_it(alice, bob, shared):
    d = mkdir(alice, shared, "photos")
    new = create_file(bob, shared, "new.jpg", b"jpeg", parent=d["id"])
    # alice believed it was empty: without a strategy that is directory_not_empty
    r = alice.delete(f"/vaults/{shared}/nodes/{d['id']}", params={"base_rev": d["rev"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "directory_not_empty"
    r = alice.delete(f"/vaults/{shared}/nodes/{d['id']}", params={"base_rev": d["rev"], **STRATEGY})
    assert r.status_code == 200 and r.json()["conflict"]["case"] == "dir_changed"
    assert set(children(alice, shared, d["id"])) == {"new.jpg"}
    # client-wins: the deleter's view wins, the new file goes to the trash with the directory
    use(alice, shared, "client-wins")
    r = alice.delete(f"/vaults/{shared}/nodes/{d['id']}", params={"base_rev": d["rev"], **STRATEGY})
    assert r.json()["node"]["deleted"] and r.json()["conflict"] is None
    assert read(alice, shared, new["id"]) == b"jpeg"


def test_created_inside_a_directory_deleted_meanwhile(alice, bob, shared):
    top = mkdir(alice, shared, "a")
    mid = mkdir(alice, shared, "b", parent=top["id"])
    alice.delete(f"/vaults/{shared}/nodes/{top['id']}", params={"base_rev": top["rev"], "recursive": "true"})
    refs = upload(bob, shared, b"written offline")
    body = {"parent": mid["id"], "name": "late.txt", "kind": "file", "content": {"chunks": refs, "size": 15}}
    r = bob.post(f"/vaults/{shared}/nodes", json=body)
    assert r.status_code == 404                        # without a strategy: the parent is gone
    r = bob.post(f"/vaults/{shared}/nodes", json={**body, **STRATEGY})
    assert r.status_code == 201 and r.json()["conflict"]["case"] == "parent_deleted"
    assert children(alice, shared)["a"]["id"] == top["id"]
    assert set(children(alice, shared, mid["id"])) == {"late.txt"}
    kinds = [e["type"] for e in alice.get(f"/vaults/{shared}/events").json()["events"]][-4:]
    assert kinds == ["create", "create", "create", "conflict"]     # a, b, late.txt, the conflict


def test_websocket_operations_carry_the_outcome(server, alice, bob, shared):
    f = create_file(alice, shared, "ws.txt", b"v1")
    commit(alice, shared, f, b"alice")
    refs = upload(bob, shared, b"bob over ws")
    with ws_connect(server, shared, bob.token, device="bob-desktop") as ws:
        ws_frames(ws, 2)
        ws.send(json.dumps({"type": "op", "id": "c1", "op": "commit", "node": f["id"], "args": {
            "base_rev": f["rev"], "chunks": refs, "size": 11, **STRATEGY}}))
        while True:
            frame = json.loads(ws.recv(timeout=30))
            if frame.get("id") == "c1":
                break
    assert frame["type"] == "ack" and frame["conflict"]["result"] == "both"
    assert read(alice, shared, frame["conflict"]["conflicted_copy"]["id"]) == b"bob over ws"
