"""Small helpers the server tests share: upload chunks, create and commit files."""

from __future__ import annotations

import hashlib
import json

from websockets.sync.client import connect

from gobi.chunking import chunker, pieces_of_bytes

# Small chunks in tests so that a few KiB make several chunks.
SMALL = chunker(avg=1024, min_size=256, max_size=4096)


def upload(api, vault: str, data: bytes, cdc=SMALL) -> list[dict]:
    """Upload ``data``'s missing chunks; return its manifest (list of {hash, size})."""
    pieces = pieces_of_bytes(data, cdc) if data else []
    refs = [{"hash": p.hash, "size": p.size} for p in pieces]
    if not refs:
        return []
    r = api.post(f"/vaults/{vault}/chunks/missing", json={"hashes": [p["hash"] for p in refs]})
    assert r.status_code == 200, r.text
    missing = set(r.json()["missing"])
    for p in pieces:
        if p.hash in missing:
            r = api.put(f"/vaults/{vault}/chunks/{p.hash}", content=data[p.offset:p.offset + p.size])
            assert r.status_code in (200, 201), r.text
            missing.discard(p.hash)
    return refs


def create_file(api, vault: str, name: str, data: bytes = b"", parent: str = "root", **extra) -> dict:
    refs = upload(api, vault, data)
    r = api.post(f"/vaults/{vault}/nodes", json={
        "parent": parent, "name": name, "kind": "file",
        "content": {"chunks": refs, "size": len(data)}, **extra,
    })
    assert r.status_code == 201, r.text
    return r.json()


def mkdir(api, vault: str, name: str, parent: str = "root") -> dict:
    r = api.post(f"/vaults/{vault}/nodes", json={"parent": parent, "name": name, "kind": "dir"})
    assert r.status_code == 201, r.text
    return r.json()


def commit(api, vault: str, node: dict, data: bytes, base_rev: int | None = None):
    refs = upload(api, vault, data)
    return api.put(f"/vaults/{vault}/nodes/{node['id']}/content", json={
        "base_rev": node["rev"] if base_rev is None else base_rev,
        "chunks": refs, "size": len(data),
    })


def read(api, vault: str, node_id: str, rev: int | None = None) -> bytes:
    params = {"rev": rev} if rev is not None else {}
    r = api.get(f"/vaults/{vault}/nodes/{node_id}/data", params=params)
    assert r.status_code == 200, r.text
    return r.content


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ws_connect(server, vault: str, token: str, after: int | None = None, device: str | None = None):
    url = server.url.replace("http://", "ws://") + f"/api/v1/vaults/{vault}/ws"
    if after is not None:
        url += f"?after={after}"
    headers = {"Authorization": f"Bearer {token}"}
    if device:
        headers["X-Gobi-Device"] = device
    return connect(url, additional_headers=headers, open_timeout=10, proxy=None)


def ws_frames(ws, count: int, timeout: float = 10) -> list[dict]:
    return [json.loads(ws.recv(timeout=timeout)) for _ in range(count)]
