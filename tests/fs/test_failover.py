"""The live stream survives its server: a server killed for a while and restarted, a
connection cut in the middle of a stream of events, and an API instance drained with
SIGTERM while the mounts (given both instances' URLs) keep working — every time the mounts
converge, nothing is lost and nothing is applied twice.

Every wait is a hang guard, never a performance threshold.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.servers import Api, ServerProcess

from .mounts import Mount, User, caught_up, eventually, gobi, listing, read, server_tree


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 whose connections can be cut at any moment (both
    directions reset), like a flaky network or a load balancer restart."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cuts = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
            self.cuts += 1
        for s in conns:
            # shutdown wakes the pump threads blocked in recv (close alone would not, and
            # the connection would live on); both peers see the stream end mid-way.
            for step in (lambda: s.shutdown(socket.SHUT_RDWR), s.close):
                try:
                    step()
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        self.cut()


def no_conflict_copies(m: Mount) -> None:
    names = [p for p in listing(m) if "conflicted copy" in p]
    assert not names, names


def test_connection_cut_mid_stream_loses_nothing(mounts, server, user):
    proxy = CuttableProxy(server.port)
    try:
        a = mounts("a")
        gobi("login", proxy.url, "-u", user.name, "--password-stdin", env=user.env,
             input="correct horse battery\n")
        b = mounts("b", extra=("--server", proxy.url))
        start = b.status()["last_seq"]
        (a.path / "stream").mkdir()
        for i in range(150):
            (a.path / "stream" / f"f{i:03}").write_bytes(b"payload %d" % i)
            if i % 30 == 15:
                a.sync()
                proxy.cut()             # b's socket (and its REST connections) drop
        caught_up(a, b)
        assert proxy.cuts == 5
        st = b.status()
        assert st["live_connects"] >= 2, st
        for i in range(150):
            assert read(b, f"stream/f{i:03}") == b"payload %d" % i
        # Every event applied exactly once: no duplicate, no gap.
        assert st["applied_events"] == st["last_seq"] - start
        assert listing(a) == listing(b)
        no_conflict_copies(b)
    finally:
        proxy.close()


def test_server_killed_and_restarted(tmp_path):
    srv = ServerProcess(tmp_path / "server").start()
    user = User(srv, tmp_path / "home")
    vault = user.create_vault("outage")
    a = Mount(user, vault, tmp_path / "a", tmp_path / "a-cache").start()
    b = Mount(user, vault, tmp_path / "b", tmp_path / "b-cache").start()
    try:
        (a.path / "before").write_text("before")
        caught_up(a, b)
        srv.kill()                                  # kill -9: no goodbye on the sockets
        eventually(lambda: not a.status()["online"] or a.status()["live"] != "live", "a noticed")
        (a.path / "during-a").write_text("written on a while the server was down")
        (b.path / "during-b").mkdir()
        (b.path / "during-b" / "x").write_text("written on b while the server was down")
        os.unlink(b.path / "before")
        time.sleep(20)                              # the outage the issue asks for
        assert a.status()["pending_ops"] > 0 and b.status()["pending_ops"] > 0
        srv.start()                                 # same port, same data
        caught_up(a, b)
        for m in (a, b):
            assert read(m, "during-a") == b"written on a while the server was down"
            assert read(m, "during-b/x") == b"written on b while the server was down"
            assert not (m.path / "before").exists()
            no_conflict_copies(m)
        assert listing(a) == listing(b)
        assert sorted(server_tree(user, vault)) == sorted(listing(a))
    finally:
        b.stop()
        a.stop()
        user.close()
        srv.stop()


class Cluster:
    """Two ``gobi server`` instances on one MongoDB database, one Redis and one storage
    directory (as tests/server/test_multi_instance.py runs them)."""

    def __init__(self, root: Path, mongo_url: str, redis_url: str):
        shared = root / "shared"
        shared.mkdir(parents=True)
        self.root = root
        self.env = {
            "GOBI_METADATA": mongo_url,
            "GOBI_FANOUT": redis_url,
            "GOBI_STORAGE": f"local://{shared / 'blobs'}",
            "GOBI_KEY_FILE": str(shared / "master.key"),
            "GOBI_GRACEFUL_SHUTDOWN_TIMEOUT": "30s",
            "GOBI_POLL_INTERVAL": "1s",
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
def cluster(tmp_path, mongo_url, redis_server):
    c = Cluster(tmp_path / "cluster", mongo_url, redis_server.url)
    yield c
    c.stop()


def test_sigterm_on_one_instance_fails_over(cluster, tmp_path):
    first, second = cluster.start("a"), cluster.start("b")
    user = User(first, tmp_path / "home")           # accounts live in MongoDB: one token for both
    vault = user.create_vault("ha")
    both = f"{first.url},{second.url}"
    a = Mount(user, vault, tmp_path / "ma", tmp_path / "ma-cache", extra=("--server", both)).start()
    b = Mount(user, vault, tmp_path / "mb", tmp_path / "mb-cache", extra=("--server", both)).start()
    try:
        assert a.status()["server"] == first.url and b.status()["live_url"] == first.url
        start = b.status()["last_seq"]
        (a.path / "w").mkdir()
        stop = threading.Thread(target=first.stop)      # SIGTERM: drains, sockets close 1001
        for i in range(120):
            (a.path / "w" / f"f{i:03}").write_bytes(b"written %d" % i)
            if i == 40:
                a.sync()
                stop.start()
            if i % 10 == 0:
                time.sleep(0.05)
        stop.join()
        assert first.proc.returncode is not None
        caught_up(a, b)
        for m in (a, b):
            st = m.status()
            assert st["server"] == second.url and st["live_url"] == second.url, st
            assert st["live"] == "live"
            for i in range(120):
                assert read(m, f"w/f{i:03}") == b"written %d" % i
            no_conflict_copies(m)
        st = b.status()
        assert st["live_going_away"] >= 1 and st["live_connects"] >= 2, st
        assert st["applied_events"] == st["last_seq"] - start      # each event once
        user.api = Api(second.api, user.token)
        tree = server_tree(user, vault)
        assert sorted(tree) == sorted(listing(a)) == sorted(listing(b))
        assert len([p for p in tree if p.startswith("w/")]) == 120
    finally:
        b.stop()
        a.stop()
        user.close()
