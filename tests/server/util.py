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


def slow_body(data: bytes, started, pieces: int = 20, pause: float = 0.1):
    """An upload body that trickles in ``pieces``; ``started`` is set once bytes flow."""
    import time

    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        yield data[i:i + step]
        started.set()
        time.sleep(pause)


class AckedWriter:
    """A thread that creates and rewrites random files until stopped, recording exactly
    what the server acknowledged: ``acked[node_id] = (rev, bytes)``. A server dying under
    it ends the loop quietly; anything else is kept in ``errors``."""

    def __init__(self, api, vault: str, seed: int, max_size: int):
        import random
        import threading

        self.api, self.vault, self.max_size = api, vault, max_size
        self.rng = random.Random(seed)
        self.acked: dict[str, tuple[int, bytes]] = {}
        self.nodes: dict[str, dict] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        import httpx

        i = 0
        try:
            while not self._stop.is_set():
                i += 1
                data = self.rng.randbytes(self.rng.randint(1, self.max_size))
                if self.nodes and self.rng.random() < 0.5:
                    node = self.nodes[self.rng.choice(sorted(self.nodes))]
                    r = commit(self.api, self.vault, node, data)
                    if r.status_code == 200:
                        self.nodes[node["id"]] = r.json()
                        self.acked[node["id"]] = (r.json()["rev"], data)
                else:
                    node = create_file(self.api, self.vault, f"file-{i}", data)
                    self.nodes[node["id"]] = node
                    self.acked[node["id"]] = (node["rev"], data)
        except (httpx.HTTPError, AssertionError):
            pass  # the server died under us: expected
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def start(self) -> "AckedWriter":
        self._thread.start()
        return self

    def wait_for(self, count: int, timeout: float) -> None:
        import time

        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)
