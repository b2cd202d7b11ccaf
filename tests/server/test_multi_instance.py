"""Several API instances on one MongoDB + Redis + shared storage, as real processes.

Each test starts two ``gobi server`` processes (A and B) on a fresh MongoDB database, a
Redis and one local storage directory and master key shared by both, then talks to them
with plain HTTP (httpx) and WebSocket (websockets) clients:

- a WebSocket on A sees commits made through B, woken by the Redis doorbell (the poll
  interval is set far beyond the test's patience, so only the doorbell can deliver);
- with Redis down, the same socket still gets every event by polling the store;
- SIGTERM on A drains it: the in-flight upload finishes, its sockets get 1001, and a
  client that resumes on B from its last seq misses nothing and sees nothing twice;
- kill -9 of A in the middle of uploads loses nothing A acknowledged.

Waits are hang guards, never performance thresholds. The client mount's failover between
instances is tested with the client (it is not built yet).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.backing import RedisServer
from tests.servers import Api, ServerProcess, register

from .util import AckedWriter, create_file, read, sha, slow_body, ws_connect

GUARD = 20  # seconds


class Cluster:
    def __init__(self, root: Path, mongo_url: str, redis_url: str, **env: str):
        self.root = root
        shared = root / "shared"
        shared.mkdir(parents=True)
        self.env = {
            "GOBI_METADATA": mongo_url,
            "GOBI_FANOUT": redis_url,
            "GOBI_STORAGE": f"local://{shared / 'blobs'}",
            "GOBI_KEY_FILE": str(shared / "master.key"),
            "GOBI_GRACEFUL_SHUTDOWN_TIMEOUT": "30s",
            "GOBI_POLL_INTERVAL": "1s",
            **env,
        }
        self.instances: list[ServerProcess] = []

    def start(self, name: str) -> ServerProcess:
        srv = ServerProcess(self.root / name, env=self.env).start()
        self.instances.append(srv)
        return srv

    def stop(self) -> None:
        for srv in self.instances:
            try:
                srv.stop()
            except Exception:
                srv.kill()


@pytest.fixture
def make_cluster(tmp_path, mongo_url, redis_server):
    clusters: list[Cluster] = []

    def make(redis_url: str | None = None, **env: str) -> Cluster:
        cluster = Cluster(tmp_path / f"c{len(clusters)}", mongo_url, redis_url or redis_server.url, **env)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


def frames_until(ws, pred, timeout: float = GUARD) -> list[dict]:
    """Frames up to and including the first one for which ``pred`` holds."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        out.append(frame)
        if pred(frame):
            return out


def is_event(seq: int):
    return lambda f: f["type"] == "event" and f["event"]["seq"] >= seq


def test_socket_on_a_sees_commits_through_b(make_cluster):
    # Poll interval of 10 minutes: only the Redis doorbell can deliver within the guard.
    cluster = make_cluster(GOBI_POLL_INTERVAL="600s")
    a, b = cluster.start("a"), cluster.start("b")
    _, token = register(a)  # accounts live in MongoDB: the token works on B too
    api_b = Api(b.api, token, device="laptop-b")
    vault = api_b.post("/vaults", json={"name": "shared"}).json()["id"]
    latencies = []
    with ws_connect(a, vault, token, after=0) as ws:
        assert json.loads(ws.recv(timeout=GUARD))["type"] == "hello"
        assert json.loads(ws.recv(timeout=GUARD)) == {"type": "caught_up", "seq": 0}
        for i in range(5):
            t0 = time.perf_counter()
            node = create_file(api_b, vault, f"f{i}.txt", f"content {i}".encode())
            frames = frames_until(ws, is_event(node["rev"]))
            latencies.append(time.perf_counter() - t0)
            event = frames[-1]["event"]
            assert event["seq"] == node["rev"] and event["node"]["name"] == f"f{i}.txt"
            assert event["device"] == "laptop-b"
    # Content written through B reads back through A (shared storage and key).
    api_a = Api(a.api, token)
    assert read(api_a, vault, node["id"]) == b"content 4"
    print(f"\ncommit on B -> event on A's socket: {', '.join(f'{x * 1000:.1f}' for x in latencies)} ms")
    api_a.close()
    api_b.close()


def test_redis_outage_falls_back_to_polling(make_cluster):
    redis = RedisServer().start()
    try:
        cluster = make_cluster(redis_url=redis.url, GOBI_POLL_INTERVAL="500ms")
        a, b = cluster.start("a"), cluster.start("b")
        _, token = register(a)
        api_b = Api(b.api, token)
        vault = api_b.post("/vaults", json={"name": "outage"}).json()["id"]
        with ws_connect(a, vault, token, after=0) as ws:
            frames_until(ws, lambda f: f["type"] == "caught_up")
            redis.stop()
            seen = []
            for i in range(3):  # commits keep working, and the socket keeps getting them
                node = create_file(api_b, vault, f"during-outage-{i}", b"x")
                seen += frames_until(ws, is_event(node["rev"]))
            redis.start()
            for i in range(3):
                node = create_file(api_b, vault, f"after-outage-{i}", b"y")
                seen += frames_until(ws, is_event(node["rev"]))
            seqs = [f["event"]["seq"] for f in seen if f["type"] == "event"]
            assert seqs == list(range(1, 7))
        api_b.close()
    finally:
        redis.stop()


def test_sigterm_drains_and_clients_resume_on_the_other_instance(make_cluster):
    cluster = make_cluster()
    a, b = cluster.start("a"), cluster.start("b")
    _, token = register(b)
    api_b = Api(b.api, token, device="writer")
    vault = api_b.post("/vaults", json={"name": "failover"}).json()["id"]
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:  # keeps committing through B during the whole failover
        i = 0
        while not stop.is_set():
            i += 1
            written.append(create_file(api_b, vault, f"w{i}", os.urandom(64))["rev"])
            time.sleep(0.02)

    big = os.urandom(1024 * 1024)
    started = threading.Event()
    upload: dict = {}

    def slow_upload() -> None:
        upload["r"] = httpx.put(f"{a.api}/vaults/{vault}/chunks/{sha(big)}",
                                content=slow_body(big, started),
                                headers={"Authorization": f"Bearer {token}"}, timeout=60)

    received: list[int] = []
    ws = ws_connect(a, vault, token, after=0).__enter__()
    frames_until(ws, lambda f: f["type"] == "caught_up")
    w = threading.Thread(target=writer)
    w.start()
    while len(written) < 5:
        time.sleep(0.02)
    u = threading.Thread(target=slow_upload)
    u.start()
    assert started.wait(GUARD)
    a.proc.send_signal(signal.SIGTERM)
    close_code = None
    try:
        while True:
            frame = json.loads(ws.recv(timeout=GUARD))
            if frame["type"] == "event":
                received.append(frame["event"]["seq"])
    except ConnectionClosed as exc:
        close_code = exc.rcvd.code if exc.rcvd else None
    assert close_code == 1001
    u.join(GUARD * 3)
    assert upload["r"].status_code == 201, upload["r"].text  # the in-flight upload finished
    assert a.proc.wait(GUARD * 3) == 0
    # The client resumes on B from the last seq it saw, while commits go on.
    last = received[-1] if received else 0
    with ws_connect(b, vault, token, after=last) as ws_b:
        hello = json.loads(ws_b.recv(timeout=GUARD))
        assert hello["type"] == "hello" and hello["after"] == last
        time.sleep(0.3)
        stop.set()
        w.join(GUARD)
        head = written[-1]
        for frame in frames_until(ws_b, is_event(head)):
            if frame["type"] == "event":
                received.append(frame["event"]["seq"])
    assert received == list(range(1, head + 1)), "every event exactly once, in order"
    assert sorted(written) == list(range(1, head + 1))
    # The chunk that was in flight during the drain is in the shared store, usable from B.
    r = api_b.post(f"/vaults/{vault}/chunks/missing", json={"hashes": [sha(big)]})
    assert r.json()["missing"] == []
    node = api_b.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": "big.bin", "kind": "file",
        "content": {"chunks": [{"hash": sha(big), "size": len(big)}], "size": len(big)},
    }).json()
    assert read(api_b, vault, node["id"]) == big
    api_b.close()


def test_kill_9_of_an_instance_loses_nothing_it_acknowledged(make_cluster):
    cluster = make_cluster()
    a, b = cluster.start("a"), cluster.start("b")
    _, token = register(a)
    api_a = Api(a.api, token, device="writer")
    vault = api_a.post("/vaults", json={"name": "crash"}).json()["id"]
    writer = AckedWriter(api_a, vault, seed=7, max_size=8000)
    rng = writer.rng

    slow_started = threading.Event()

    def slow_upload() -> None:
        big = rng.randbytes(1024 * 1024)
        try:
            httpx.put(f"{a.api}/vaults/{vault}/chunks/{sha(big)}",
                      content=slow_body(big, slow_started), timeout=60,
                      headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            pass

    writer.start().wait_for(20, timeout=GUARD * 3)
    s = threading.Thread(target=slow_upload)
    s.start()
    assert slow_started.wait(GUARD)
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    writer.stop(GUARD)
    s.join(GUARD * 3)
    assert not writer.errors, writer.errors
    assert len(writer.acked) >= 20
    # Everything A acknowledged is there, through B.
    api_b = Api(b.api, token)
    for node_id, (rev, data) in dict(writer.acked).items():
        assert read(api_b, vault, node_id, rev=rev) == data
    events = api_b.get(f"/vaults/{vault}/events", params={"after": 0, "limit": 1000}).json()
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(1, events["head_seq"] + 1)), "event seqs stay contiguous"
    # B carries on where A stopped.
    node = create_file(api_b, vault, "after-crash", b"still here")
    assert node["rev"] == events["head_seq"] + 1
    api_a.close()
    api_b.close()


def test_lost_database_answers_503_and_health_says_so(tmp_path, redis_server):
    from tests.backing import MongoServer

    mongo = MongoServer().start()
    try:
        if mongo.proc is None:
            pytest.skip("external MongoDB: this test stops the server")
        url = mongo.url("gobi_lost") + "&serverSelectionTimeoutMS=500"
        cluster = Cluster(tmp_path, url, redis_server.url)
        try:
            a = cluster.start("a")
            _, token = register(a)
            api = Api(a.api, token)
            vault = api.post("/vaults", json={"name": "v"}).json()["id"]
            mongo.stop()
            r = api.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": "x", "kind": "dir"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable" and r.headers["retry-after"]
            health = httpx.get(a.url + "/health", timeout=GUARD)
            assert health.status_code == 503 and health.json()["status"] == "store unavailable"
            api.close()
        finally:
            cluster.stop()
    finally:
        mongo.stop()
