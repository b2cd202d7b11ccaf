"""The README's first steps, through a real server process."""

import hashlib


def test_register_login_upload_commit_read(server, alice, vault):
    data = b"hello world\n"
    h = hashlib.sha256(data).hexdigest()
    r = alice.post(f"/vaults/{vault}/chunks/missing", json={"hashes": [h]})
    assert r.json() == {"missing": [h]}
    assert alice.put(f"/vaults/{vault}/chunks/{h}", content=data).status_code == 201
    assert alice.put(f"/vaults/{vault}/chunks/{h}", content=data).status_code == 200
    r = alice.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "hello.txt", "kind": "file",
        "content": {"chunks": [{"hash": h, "size": len(data)}], "size": len(data)},
    })
    assert r.status_code == 201, r.text
    node = r.json()
    r = alice.get(f"/vaults/{vault}/nodes/{node['id']}/data")
    assert r.content == data
    r = alice.get(f"/vaults/{vault}/events", params={"after": 0})
    assert [e["type"] for e in r.json()["events"]] == ["create"]
    assert r.json()["events"][0]["device"] == "alice-laptop"
