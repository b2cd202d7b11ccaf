"""Nodes: create, rename/move (with replace), setattr, delete, symlinks, base-rev rules."""

from __future__ import annotations

import threading

from .util import commit, create_file, mkdir, read


def err(r) -> str:
    return r.json()["error"]["code"]


def names(api, vault, node="root"):
    return [n["name"] for n in api.get(f"/vaults/{vault}/nodes/{node}/children").json()["nodes"]]


def test_mkdir_create_symlink_and_list(alice, vault):
    d = mkdir(alice, vault, "docs")
    create_file(alice, vault, "b.txt", b"bee", parent=d["id"])
    create_file(alice, vault, "a.txt", b"ay", parent=d["id"], mode=0o600, mtime_ns=1_700_000_000_000_000_000)
    r = alice.post(f"/vaults/{vault}/nodes", json={
        "parent": d["id"], "name": "link", "kind": "symlink", "target": "../elsewhere/a.txt"})
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len("../elsewhere/a.txt")
    assert names(alice, vault, d["id"]) == ["a.txt", "b.txt", "link"]
    a = alice.get(f"/vaults/{vault}/lookup", params={"path": "docs/a.txt"}).json()
    assert (a["mode"], a["mtime_ns"], a["size"]) == (0o600, 1_700_000_000_000_000_000, 2)
    # paging by name
    page = alice.get(f"/vaults/{vault}/nodes/{d['id']}/children", params={"limit": 2}).json()
    assert [n["name"] for n in page["nodes"]] == ["a.txt", "b.txt"] and page["next_cursor"] == "b.txt"
    page = alice.get(f"/vaults/{vault}/nodes/{d['id']}/children",
                     params={"limit": 2, "after": page["next_cursor"]}).json()
    assert [n["name"] for n in page["nodes"]] == ["link"] and page["next_cursor"] is None


def test_create_refuses_taken_names_and_bad_kinds(alice, vault):
    f = create_file(alice, vault, "same", b"1")
    r = alice.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": "same", "kind": "dir"})
    assert r.status_code == 409 and err(r) == "name_exists"
    assert r.json()["error"]["details"]["node"]["id"] == f["id"]
    r = alice.post(f"/vaults/{vault}/nodes", json={"parent": f["id"], "name": "x", "kind": "dir"})
    assert r.status_code == 409 and err(r) == "not_a_directory"
    r = alice.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": "s", "kind": "symlink"})
    assert r.status_code == 400
    r = alice.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": "d", "kind": "dir", "target": "x"})
    assert r.status_code == 400
    r = alice.post(f"/vaults/{vault}/nodes", json={"parent": "nope", "name": "x", "kind": "dir"})
    assert r.status_code == 404


def test_client_chosen_ids_make_create_idempotent(alice, vault):
    body = {"id": "client-id-1", "parent": "root", "name": "offline.txt", "kind": "file"}
    r1 = alice.post(f"/vaults/{vault}/nodes", json=body)
    r2 = alice.post(f"/vaults/{vault}/nodes", json=body)
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r1.json() == r2.json()
    r3 = alice.post(f"/vaults/{vault}/nodes", json={**body, "name": "other.txt"})
    assert r3.status_code == 409 and err(r3) == "conflict"
    events = alice.get(f"/vaults/{vault}/events").json()["events"]
    assert len(events) == 1


def test_commit_and_versions(alice, vault):
    f = create_file(alice, vault, "doc.txt", b"one")
    r = commit(alice, vault, f, b"two two")
    assert r.status_code == 200, r.text
    f2 = r.json()
    assert f2["rev"] > f["rev"] and f2["content_rev"] == f2["rev"] and f2["size"] == 7
    assert read(alice, vault, f["id"]) == b"two two"
    assert read(alice, vault, f["id"], rev=f["rev"]) == b"one"
    versions = alice.get(f"/vaults/{vault}/nodes/{f['id']}/versions").json()["versions"]
    assert [v["rev"] for v in versions] == [f2["rev"], f["rev"]]
    assert versions[0]["device"] == "alice-laptop"


def test_stale_commit_gets_409_with_head(alice, vault):
    f = create_file(alice, vault, "doc.txt", b"base")
    assert commit(alice, vault, f, b"first").status_code == 200
    r = commit(alice, vault, f, b"second", base_rev=f["rev"])
    assert r.status_code == 409 and err(r) == "conflict"
    head = r.json()["error"]["details"]["head"]
    assert head["id"] == f["id"] and head["rev"] > f["rev"] and head["size"] == 5
    assert read(alice, vault, f["id"]) == b"first"


def test_rename_elsewhere_does_not_conflict_with_an_edit(alice, vault):
    f = create_file(alice, vault, "draft.txt", b"v1")
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}", json={"base_rev": f["rev"], "name": "final.txt"})
    assert r.status_code == 200
    # an edit based on the pre-rename revision is still accepted: content did not change
    r = commit(alice, vault, f, b"v2", base_rev=f["rev"])
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "final.txt"


def test_commit_requires_uploaded_chunks_and_consistent_size(alice, vault):
    f = create_file(alice, vault, "x", b"")
    ghost = "ab" * 32
    r = alice.put(f"/vaults/{vault}/nodes/{f['id']}/content",
                  json={"base_rev": f["rev"], "chunks": [{"hash": ghost, "size": 10}], "size": 10})
    assert r.status_code == 400 and err(r) == "missing_chunks"
    assert r.json()["error"]["details"]["missing"] == [ghost]
    r = alice.put(f"/vaults/{vault}/nodes/{f['id']}/content",
                  json={"base_rev": f["rev"], "chunks": [], "size": 3})
    assert r.status_code == 400 and err(r) == "bad_request"


def test_chunks_of_another_vault_cannot_be_committed(alice, bob, vault):
    secret = b"a chunk only bob has"
    other = bob.post("/vaults", json={"name": "bob's"}).json()["id"]
    create_file(bob, other, "s", secret)
    f = create_file(alice, vault, "probe", b"")
    from .util import sha
    r = alice.put(f"/vaults/{vault}/nodes/{f['id']}/content", json={
        "base_rev": f["rev"], "chunks": [{"hash": sha(secret), "size": len(secret)}], "size": len(secret)})
    assert r.status_code == 400 and err(r) == "missing_chunks"
    r = alice.post(f"/vaults/{vault}/chunks/missing", json={"hashes": [sha(secret)]})
    assert r.json()["missing"] == [sha(secret)]


def test_rename_move_replace(alice, vault):
    a = mkdir(alice, vault, "a")
    b = mkdir(alice, vault, "b")
    f = create_file(alice, vault, "f", b"F", parent=a["id"])
    g = create_file(alice, vault, "g", b"G", parent=b["id"])
    # move across directories
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}", json={"base_rev": f["rev"], "parent": b["id"]})
    assert r.status_code == 200 and r.json()["parent"] == b["id"]
    f = r.json()
    # rename onto an existing name needs replace
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}", json={"base_rev": f["rev"], "name": "g"})
    assert r.status_code == 409 and err(r) == "name_exists"
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}",
                    json={"base_rev": f["rev"], "name": "g", "replace": True, "replace_rev": g["rev"] + 99})
    assert r.status_code == 409 and err(r) == "conflict"
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}",
                    json={"base_rev": f["rev"], "name": "g", "replace": True, "replace_rev": g["rev"]})
    assert r.status_code == 200, r.text
    assert names(alice, vault, b["id"]) == ["g"]
    assert read(alice, vault, r.json()["id"]) == b"F"
    assert alice.get(f"/vaults/{vault}/nodes/{g['id']}").json()["deleted"] is True
    events = alice.get(f"/vaults/{vault}/events").json()["events"]
    assert [e["type"] for e in events[-3:]] == ["move", "delete", "move"]
    assert events[-1]["old_name"] == "f"


def test_directory_moves(alice, vault):
    top = mkdir(alice, vault, "top")
    sub = mkdir(alice, vault, "sub", parent=top["id"])
    for i in range(5):
        create_file(alice, vault, f"f{i}", b"x", parent=sub["id"])
    head = alice.get(f"/vaults/{vault}").json()["head_seq"]
    # into itself or its own subtree: refused
    for target in (top["id"], sub["id"]):
        r = alice.patch(f"/vaults/{vault}/nodes/{top['id']}", json={"base_rev": top["rev"], "parent": target})
        assert r.status_code == 400 and err(r) == "invalid_move", r.text
    # renaming a directory with children is one event
    r = alice.patch(f"/vaults/{vault}/nodes/{top['id']}", json={"base_rev": top["rev"], "name": "renamed"})
    assert r.status_code == 200
    assert alice.get(f"/vaults/{vault}").json()["head_seq"] == head + 1
    assert alice.get(f"/vaults/{vault}/lookup", params={"path": "renamed/sub/f3"}).status_code == 200
    # a directory may replace only an empty directory
    full = mkdir(alice, vault, "full")
    create_file(alice, vault, "x", b"", parent=full["id"])
    empty = mkdir(alice, vault, "empty")
    d = mkdir(alice, vault, "d")
    r = alice.patch(f"/vaults/{vault}/nodes/{d['id']}", json={"base_rev": d["rev"], "name": "full", "replace": True})
    assert r.status_code == 409 and err(r) == "directory_not_empty"
    r = alice.patch(f"/vaults/{vault}/nodes/{d['id']}", json={"base_rev": d["rev"], "name": "empty", "replace": True})
    assert r.status_code == 200
    f = create_file(alice, vault, "file", b"")
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}", json={"base_rev": f["rev"], "name": "full", "replace": True})
    assert r.status_code == 409 and err(r) == "is_a_directory"
    r = alice.patch(f"/vaults/{vault}/nodes/root", json={"base_rev": 0, "name": "x"})
    assert r.status_code in (400, 409)


def test_setattr_and_stale_metadata_ops(alice, vault):
    f = create_file(alice, vault, "m", b"")
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}", json={"base_rev": f["rev"], "mode": 0o700, "mtime_ns": 5})
    assert r.status_code == 200 and (r.json()["mode"], r.json()["mtime_ns"]) == (0o700, 5)
    r2 = alice.patch(f"/vaults/{vault}/nodes/{f['id']}", json={"base_rev": f["rev"], "mode": 0o600})
    assert r2.status_code == 409 and r2.json()["error"]["details"]["head"]["mode"] == 0o700
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}", json={"base_rev": 0, "mode": 0o10000})
    assert r.status_code == 400


def test_delete(alice, vault):
    d = mkdir(alice, vault, "d")
    inner = mkdir(alice, vault, "inner", parent=d["id"])
    f = create_file(alice, vault, "f", b"data", parent=inner["id"])
    r = alice.delete(f"/vaults/{vault}/nodes/{d['id']}", params={"base_rev": d["rev"]})
    assert r.status_code == 409 and err(r) == "directory_not_empty"
    r = alice.delete(f"/vaults/{vault}/nodes/{d['id']}", params={"base_rev": d["rev"] - 1, "recursive": "true"})
    assert r.status_code == 409 and err(r) == "conflict"
    r = alice.delete(f"/vaults/{vault}/nodes/{d['id']}", params={"base_rev": d["rev"], "recursive": "true"})
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert "d" not in names(alice, vault)
    # leaves first, one event per node; history is kept
    evs = alice.get(f"/vaults/{vault}/events").json()["events"]
    assert [(e["type"], e["node"]["name"]) for e in evs[-3:]] == [("delete", "f"), ("delete", "inner"), ("delete", "d")]
    assert read(alice, vault, f["id"]) == b"data"
    # nothing can be created in or moved into the tombstone
    r = alice.post(f"/vaults/{vault}/nodes", json={"parent": d["id"], "name": "late", "kind": "file"})
    assert r.status_code == 404
    # a commit to a deleted file is a conflict whose head says deleted
    r = commit(alice, vault, alice.get(f"/vaults/{vault}/nodes/{f['id']}").json(), b"new")
    assert r.status_code == 409 and r.json()["error"]["details"]["head"]["deleted"] is True
    # the name is free again
    create_file(alice, vault, "d", b"")
    assert alice.delete(f"/vaults/{vault}/nodes/root", params={"base_rev": 0}).status_code == 400


def test_concurrent_commits_on_one_base_exactly_one_wins(alice, vault):
    for round_ in range(5):
        f = create_file(alice, vault, f"race{round_}", b"base")
        bodies = [f"writer {i} round {round_}".encode() for i in range(6)]
        results: list = [None] * len(bodies)
        barrier = threading.Barrier(len(bodies))

        def go(i: int) -> None:
            from .util import upload
            refs = upload(alice, vault, bodies[i])
            barrier.wait()
            results[i] = alice.put(f"/vaults/{vault}/nodes/{f['id']}/content",
                                   json={"base_rev": f["rev"], "chunks": refs, "size": len(bodies[i])})

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes == [200] + [409] * (len(bodies) - 1), codes
        winner = next(i for i, r in enumerate(results) if r.status_code == 200)
        head_rev = results[winner].json()["rev"]
        for r in results:
            if r.status_code == 409:
                assert r.json()["error"]["details"]["head"]["rev"] == head_rev
        assert read(alice, vault, f["id"]) == bodies[winner]


def test_concurrent_creates_of_one_name(alice, vault):
    results: list = [None] * 6
    barrier = threading.Barrier(6)

    def go(i: int) -> None:
        barrier.wait()
        results[i] = alice.post(f"/vaults/{vault}/nodes",
                                json={"parent": "root", "name": "contested", "kind": "dir"})

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [201] + [409] * 5
