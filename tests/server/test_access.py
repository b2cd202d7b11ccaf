"""Every endpoint refuses missing or bad tokens (401) and hides other users' vaults (404).

The list of endpoints comes from the server's own OpenAPI document, so a new route is
covered without editing this test.
"""

from __future__ import annotations

import re

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from .util import create_file, sha, ws_connect

PUBLIC = {("GET", "/health"), ("POST", "/api/v1/users/"), ("POST", "/api/v1/sessions"),
          ("POST", "/api/v1/users")}


def _routes(server) -> list[tuple[str, str]]:
    spec = httpx.get(server.url + "/docs/openapi.json").json()
    routes = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method in ops:
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"):
                routes.append((method.upper(), path))
    return sorted(routes)


def _fill(path: str, vault: str, node: str, chunk: str, username: str) -> str:
    values = {"vault_id": vault, "node_id": node, "chunk_hash": chunk, "username": username,
              "record_id": "x0"}  # trash entries, holds, conflicts
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def test_openapi_lists_the_api(server):
    routes = _routes(server)
    assert len(routes) >= 20
    assert ("PUT", "/api/v1/vaults/{vault_id}/chunks/{chunk_hash}") in routes
    assert httpx.get(server.url + "/docs").status_code in (200, 301, 302)


@pytest.mark.parametrize("auth", [None, "Bearer gobi_notatoken", "Basic dXNlcjpwYXNz", "Bearer"])
def test_every_endpoint_requires_a_valid_token(server, bob, auth):
    vault = bob.post("/vaults", json={"name": "b"}).json()["id"]
    node = create_file(bob, vault, "f.txt", b"secret")
    headers = {"Authorization": auth} if auth else {}
    checked = 0
    for method, path in _routes(server):
        if (method, path) in PUBLIC:
            continue
        url = server.url + _fill(path, vault, node["id"], sha(b"secret"), bob.username)
        r = httpx.request(method, url, headers=headers, json={})
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        if method != "HEAD":
            assert r.json()["error"]["code"] == "unauthenticated"
        checked += 1
    assert checked >= 20


def test_other_users_vault_is_not_found_everywhere(server, alice, bob):
    vault = bob.post("/vaults", json={"name": "private"}).json()["id"]
    node = create_file(bob, vault, "f.txt", b"bob's secret")
    for method, path in _routes(server):
        if (method, path) in PUBLIC or "{vault_id}" not in path:
            continue
        url = _fill(path, vault, node["id"], sha(b"bob's secret"), bob.username)
        r = alice.request(method, url.removeprefix("/api/v1"), json={})
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        if method != "HEAD":
            assert r.json()["error"]["code"] == "not_found"
    # ...and it is not in alice's list.
    assert vault not in [v["id"] for v in alice.get("/vaults").json()["vaults"]]


def test_nonexistent_vault_looks_the_same_as_a_foreign_one(alice, bob):
    foreign = bob.post("/vaults", json={"name": "x"}).json()["id"]
    a = alice.get(f"/vaults/{foreign}")
    b = alice.get("/vaults/vdoesnotexist000")
    assert a.status_code == b.status_code == 404
    assert a.json()["error"]["code"] == b.json()["error"]["code"]


def test_websocket_handshake_is_authenticated(server, alice, bob):
    vault = bob.post("/vaults", json={"name": "ws"}).json()["id"]
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(server, vault, "gobi_wrongtoken")
    assert exc.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(server, vault, alice.token)
    assert exc.value.response.status_code == 404


def test_roles(server, alice, bob):
    vault = alice.post("/vaults", json={"name": "shared"}).json()["id"]
    # bob is not a member yet
    assert bob.get(f"/vaults/{vault}").status_code == 404
    r = alice.put(f"/vaults/{vault}/members/{bob.username}", json={"role": "read"})
    assert r.status_code == 200, r.text
    assert bob.get(f"/vaults/{vault}").json()["role"] == "read"
    node = create_file(alice, vault, "doc.txt", b"v1")
    assert bob.get(f"/vaults/{vault}/nodes/{node['id']}/data").content == b"v1"
    # readers cannot write, and get 403 (they may know the vault exists)
    r = bob.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": "x", "kind": "dir"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = bob.put(f"/vaults/{vault}/chunks/{sha(b'x')}", content=b"x")
    assert r.status_code == 403
    # writers can write but not manage members or delete the vault
    alice.put(f"/vaults/{vault}/members/{bob.username}", json={"role": "write"})
    r = bob.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": "x", "kind": "dir"})
    assert r.status_code == 201
    assert bob.delete(f"/vaults/{vault}").status_code == 403
    assert bob.put(f"/vaults/{vault}/members/{bob.username}", json={"role": "owner"}).status_code == 403
    # the creator cannot be demoted or removed
    r = alice.put(f"/vaults/{vault}/members/{alice.username}", json={"role": "read"})
    assert r.status_code == 403
    members = {m["username"]: m["role"] for m in alice.get(f"/vaults/{vault}/members").json()["members"]}
    assert members == {alice.username: "owner", bob.username: "write"}
    # removal hides the vault again
    assert alice.delete(f"/vaults/{vault}/members/{bob.username}").status_code == 204
    assert bob.get(f"/vaults/{vault}").status_code == 404


def test_delete_vault(server, alice):
    vault = alice.post("/vaults", json={"name": "doomed"}).json()["id"]
    create_file(alice, vault, "a", b"abc")
    with ws_connect(server, vault, alice.token) as ws:
        hello = ws.recv(timeout=10)
        assert '"hello"' in hello
        assert alice.delete(f"/vaults/{vault}").status_code == 204
        frames = []
        try:
            while True:
                frames.append(ws.recv(timeout=10))
        except Exception:
            pass
        assert any('"vault_deleted"' in f for f in frames), frames
    assert alice.get(f"/vaults/{vault}").status_code == 404
    assert vault not in [v["id"] for v in alice.get("/vaults").json()["vaults"]]
