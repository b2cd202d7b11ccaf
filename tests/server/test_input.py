"""Hostile input: names, sizes, hashes, ranges, ids from elsewhere. Every refusal is JSON
with a stable code, and nothing changes."""

from __future__ import annotations

import pytest

from gobi.protocol import MAX_CHUNK_SIZE

from .util import create_file, mkdir, sha

BAD_NAMES = ["", ".", "..", "a/b", "/", "a\x00b", "x" * 256, "é" * 128, "\ud800"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_refused_everywhere(alice, vault, name):
    before = alice.get(f"/vaults/{vault}").json()["head_seq"]
    body = '{"parent": "root", "name": %s, "kind": "dir"}' % _json_str(name)
    r = alice.post(f"/vaults/{vault}/nodes", content=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("invalid_name", "bad_request")
    f = create_file(alice, vault, f"ok-{sha(name.encode('utf-8', 'surrogatepass'))[:8]}", b"")
    r = alice.patch(f"/vaults/{vault}/nodes/{f['id']}",
                    content='{"base_rev": %d, "name": %s}' % (f["rev"], _json_str(name)))
    assert r.status_code == 400, r.text
    assert alice.get(f"/vaults/{vault}").json()["head_seq"] == before + 1


def _json_str(s: str) -> str:
    # Lone surrogates cannot go through json.dumps→UTF-8; write the escape by hand.
    return '"' + "".join(f"\\u{ord(c):04x}" for c in s) + '"'


def test_longest_valid_name_is_accepted(alice, vault):
    assert mkdir(alice, vault, "x" * 255)["name"] == "x" * 255
    assert mkdir(alice, vault, "é" * 127)["name"] == "é" * 127  # 254 bytes
    assert mkdir(alice, vault, "..."  )["name"] == "..."


def test_paths_cannot_escape(alice, vault):
    mkdir(alice, vault, "inside")
    for path in ("../x", "inside/../..", "inside/./x", "/../../etc/passwd"):
        r = alice.get(f"/vaults/{vault}/lookup", params={"path": path})
        assert r.status_code in (400, 404), (path, r.text)
    # url-encoded traversal in ids is not a route at all
    r = alice.get(f"/vaults/{vault}/nodes/..%2F..%2Fetc")
    assert r.status_code == 404


def test_nodes_of_another_vault_are_not_reachable(alice, vault):
    other = alice.post("/vaults", json={"name": "second"}).json()["id"]
    f = create_file(alice, other, "elsewhere", b"other vault")
    assert alice.get(f"/vaults/{vault}/nodes/{f['id']}").status_code == 404
    r = alice.post(f"/vaults/{vault}/nodes", json={"parent": f["id"], "name": "x", "kind": "dir"})
    assert r.status_code == 404
    d = mkdir(alice, vault, "d")
    r = alice.patch(f"/vaults/{vault}/nodes/{d['id']}", json={"base_rev": d["rev"], "parent": f["id"]})
    assert r.status_code == 404
    assert alice.get(f"/vaults/{vault}/nodes/{f['id']}/data").status_code == 404


def test_unknown_fields_and_wrong_types(alice, vault):
    for body in ({"parent": "root", "name": "x", "kind": "dir", "owner": "me"},
                 {"parent": "root", "name": "x", "kind": "hardlink"},
                 {"parent": "root", "name": 5, "kind": "dir"},
                 {"parent": "root", "name": "x", "kind": "file", "mode": 0o77777},
                 {"parent": "root", "name": "x", "kind": "file", "mtime_ns": 2**70},
                 {"parent": "root", "name": "x", "kind": "chardev", "rdev": -1}):
        r = alice.post(f"/vaults/{vault}/nodes", json=body)
        assert r.status_code == 400, (body, r.text)
        assert "error" in r.json()


def test_hash_mismatch_and_bad_hashes(alice, vault):
    data = b"the real bytes"
    r = alice.put(f"/vaults/{vault}/chunks/{sha(b'other bytes')}", content=data)
    assert r.status_code == 400 and r.json()["error"]["code"] == "hash_mismatch"
    assert r.json()["error"]["details"]["actual"] == sha(data)
    assert alice.post(f"/vaults/{vault}/chunks/missing",
                      json={"hashes": [sha(b"other bytes")]}).json()["missing"] == [sha(b"other bytes")]
    for bad in ("abc", sha(data).upper(), "g" * 64, sha(data) + "0"):
        r = alice.put(f"/vaults/{vault}/chunks/{bad}", content=data)
        assert r.status_code == 400, bad
    r = alice.put(f"/vaults/{vault}/chunks/{sha(b'')}", content=b"")
    assert r.status_code == 400
    r = alice.post(f"/vaults/{vault}/chunks/missing", json={"hashes": ["nothex"]})
    assert r.status_code == 400


def test_body_size_limits(alice, vault):
    big = b"\0" * (MAX_CHUNK_SIZE + 1)
    r = alice.put(f"/vaults/{vault}/chunks/{sha(big)}", content=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    huge = b"x" * (10 * 1024 * 1024)
    r = alice.post(f"/vaults/{vault}/chunks/missing", content=huge)
    assert r.status_code == 413
    r = alice.post(f"/vaults/{vault}/chunks/missing", json={"hashes": [sha(b"x")] * 10_001})
    assert r.status_code == 400


def test_chunk_download_ranges_and_caching(alice, vault):
    data = bytes(range(256)) * 40
    h = sha(data)
    assert alice.put(f"/vaults/{vault}/chunks/{h}", content=data).status_code == 201
    r = alice.get(f"/vaults/{vault}/chunks/{h}")
    assert r.content == data
    assert r.headers["etag"] == f'"{h}"'
    assert "immutable" in r.headers["cache-control"]
    r = alice.get(f"/vaults/{vault}/chunks/{h}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    r = alice.get(f"/vaults/{vault}/chunks/{h}", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = alice.get(f"/vaults/{vault}/chunks/{h}", headers={"Range": "bytes=10000-"})
    assert r.status_code == 206 and r.content == data[10000:]
    r = alice.get(f"/vaults/{vault}/chunks/{h}", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.json()["error"]["code"] == "range_not_satisfiable"
    r = alice.get(f"/vaults/{vault}/chunks/{h}", headers={"Range": "bytes=5-1"})
    assert r.status_code == 400
    r = alice.get(f"/vaults/{vault}/chunks/{h}", headers={"Range": "bytes=0-1,5-6"})
    assert r.status_code == 400
    r = alice.get(f"/vaults/{vault}/chunks/{h}", headers={"If-None-Match": f'"{h}"'})
    assert r.status_code == 304 and r.content == b""
    assert alice.get(f"/vaults/{vault}/chunks/{sha(b'absent')}").status_code == 404


def test_device_header_is_validated(server, alice, vault):
    for bad in ("bad device", "x" * 65, "semi;colon"):
        r = alice.get(f"/vaults/{vault}", headers={"X-Gobi-Device": bad})
        assert r.status_code == 400, bad
        assert r.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/vaults/x/y/z"])
def test_unknown_routes_answer_json(anon, server, path):
    import httpx
    r = httpx.get(server.url + path)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_wrong_method_answers_json(server):
    import httpx
    r = httpx.patch(server.url + "/api/v1/sessions")
    assert r.status_code == 405 and "error" in r.json()
