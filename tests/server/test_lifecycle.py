"""Process lifecycle: kill -9 mid-upload loses nothing acknowledged; SIGTERM drains."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time

import httpx
from websockets.exceptions import ConnectionClosed

from tests.servers import Api, ServerProcess, register

from .util import commit, create_file, read, sha, ws_connect


def _slow_body(data: bytes, started: threading.Event, pieces: int = 20, pause: float = 0.1):
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        yield data[i:i + step]
        started.set()
        time.sleep(pause)


def test_kill_9_mid_upload_loses_nothing_acknowledged(tmp_path):
    srv = ServerProcess(tmp_path / "srv").start()
    _, token = register(srv)
    api = Api(srv.api, token, device="writer")
    vault = api.post("/vaults", json={"name": "crash"}).json()["id"]
    rng = random.Random(1234)
    acked: dict[str, tuple[int, bytes]] = {}   # node id -> (rev, content) acknowledged
    nodes: dict[str, dict] = {}
    stop = threading.Event()
    slow_started = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                data = rng.randbytes(rng.randint(1, 20_000))
                if nodes and rng.random() < 0.5:
                    node = nodes[rng.choice(sorted(nodes))]
                    r = commit(api, vault, node, data)
                    if r.status_code == 200:
                        nodes[node["id"]] = r.json()
                        acked[node["id"]] = (r.json()["rev"], data)
                else:
                    node = create_file(api, vault, f"file-{i}", data)
                    nodes[node["id"]] = node
                    acked[node["id"]] = (node["rev"], data)
        except (httpx.HTTPError, AssertionError):
            pass  # the server died under us: expected
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    def slow_upload() -> None:
        big = rng.randbytes(2 * 1024 * 1024)
        try:
            httpx.put(f"{srv.api}/vaults/{vault}/chunks/{sha(big)}",
                      content=_slow_body(big, slow_started), timeout=60,
                      headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            pass

    w = threading.Thread(target=writer)
    w.start()
    deadline = time.monotonic() + 60
    while len(acked) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    s = threading.Thread(target=slow_upload)
    s.start()
    assert slow_started.wait(30)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    stop.set()
    w.join(60)
    s.join(60)
    assert not errors, errors
    assert len(acked) >= 30
    snapshot = dict(acked)

    srv.start()
    try:
        db = sqlite3.connect(srv.data_dir / "metadata.db")
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        seqs = [r[0] for r in db.execute("SELECT seq FROM events WHERE vault_id=? ORDER BY seq", (vault,))]
        head = db.execute("SELECT head_seq FROM vaults WHERE id=?", (vault,)).fetchone()[0]
        db.close()
        assert seqs == list(range(1, head + 1)), "event seqs must be contiguous"
        for node_id, (rev, data) in snapshot.items():
            # the acknowledged version is there and its bytes verify (the server checks
            # every chunk's hash on a whole-chunk read)
            assert read(api, vault, node_id, rev=rev) == data
        # the half-finished 2 MiB upload was never recorded
        missing = api.post(f"/vaults/{vault}/chunks/missing", json={"hashes": []})
        assert missing.status_code == 200
    finally:
        api.close()
        srv.stop()


def test_sigterm_drains(tmp_path):
    srv = ServerProcess(tmp_path / "srv", env={"GOBI_GRACEFUL_SHUTDOWN_TIMEOUT": "30s"}).start()
    _, token = register(srv)
    api = Api(srv.api, token)
    vault = api.post("/vaults", json={"name": "drain"}).json()["id"]
    big = os.urandom(1024 * 1024)
    started = threading.Event()
    result: dict = {}

    def upload() -> None:
        result["r"] = httpx.put(f"{srv.api}/vaults/{vault}/chunks/{sha(big)}",
                                content=_slow_body(big, started, pieces=20, pause=0.1),
                                headers={"Authorization": f"Bearer {token}"}, timeout=60)

    ws = ws_connect(srv, vault, token).__enter__()
    ws.recv(timeout=10)  # hello
    ws.recv(timeout=10)  # caught_up
    t = threading.Thread(target=upload)
    t.start()
    assert started.wait(30)
    srv.proc.send_signal(signal.SIGTERM)
    t.join(60)
    # the in-flight upload finished and was acknowledged
    assert result["r"].status_code == 201, result["r"].text
    # the socket was told the server is going away
    try:
        while True:
            ws.recv(timeout=30)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == 1001
    assert srv.proc.wait(60) == 0
    # nothing new is accepted once draining has finished
    try:
        httpx.get(srv.url + "/health", timeout=2)
        raise AssertionError("server still answering after shutdown")
    except httpx.TransportError:
        pass
    # and the chunk is really there after a restart
    srv.start()
    try:
        r = api.post(f"/vaults/{vault}/chunks/missing", json={"hashes": [sha(big)]})
        assert r.json()["missing"] == []
    finally:
        api.close()
        srv.stop()
