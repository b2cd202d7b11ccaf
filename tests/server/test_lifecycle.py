"""Process lifecycle: kill -9 mid-upload loses nothing acknowledged; SIGTERM drains."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading

import httpx
from websockets.exceptions import ConnectionClosed

from tests.servers import Api, ServerProcess, register

from .util import AckedWriter, read, sha, slow_body, ws_connect


def test_kill_9_mid_upload_loses_nothing_acknowledged(tmp_path):
    srv = ServerProcess(tmp_path / "srv").start()
    _, token = register(srv)
    api = Api(srv.api, token, device="writer")
    vault = api.post("/vaults", json={"name": "crash"}).json()["id"]
    writer = AckedWriter(api, vault, seed=1234, max_size=20_000)
    rng = writer.rng
    slow_started = threading.Event()

    def slow_upload() -> None:
        big = rng.randbytes(2 * 1024 * 1024)
        try:
            httpx.put(f"{srv.api}/vaults/{vault}/chunks/{sha(big)}",
                      content=slow_body(big, slow_started), timeout=60,
                      headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            pass

    writer.start().wait_for(30, timeout=60)
    s = threading.Thread(target=slow_upload)
    s.start()
    assert slow_started.wait(30)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    writer.stop(60)
    s.join(60)
    assert not writer.errors, writer.errors
    assert len(writer.acked) >= 30
    snapshot = dict(writer.acked)

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
                                content=slow_body(big, started, pieces=20, pause=0.1),
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
