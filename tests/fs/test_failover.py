"""The live stream survives its server: a server killed for a while and restarted, a
connection cut in the middle of a stream of events, and an API instance drained with
SIGTERM while the mounts (given both instances' URLs) keep working — every time the mounts
converge, nothing is lost and nothing is applied twice.

Every wait is a hang guard, never a performance threshold.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.servers import Api, ServerProcess
from tests.tcpproxy import TcpProxy

from .mounts import Mount, User, caught_up, eventually, gobi, listing, read, server_tree


def no_conflict_copies(m: Mount) -> None:
    names = [p for p in listing(m) if "conflicted copy" in p]
    assert not names, names


def test_connection_cut_mid_stream_loses_nothing(mounts, server, user):
    proxy = TcpProxy(server.port)
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
                proxy.reset()           # b's socket (and its REST connections) drop
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


def test_status_tells_a_frozen_or_dead_link_quickly(proxied, user):
    """A frozen link (the server silent, connections open) and a dead one (connections
    reset, new ones refused) both show in ``gobi status`` and ``user.gobi.state`` within
    one liveness period (ping interval + pong timeout), and the mount is back online
    once the link is. The wait is bounded by that period (the protocol's bound), plus
    slack for a loaded machine; the figures are printed."""
    from gobi.fs.events import PING_INTERVAL, PONG_TIMEOUT

    bound = PING_INTERVAL + PONG_TIMEOUT + 10
    m, proxy = proxied("m")
    eventually(lambda: m.status()["live"] == "live", "the stream is live")
    for break_link in (proxy.freeze, proxy.cut):
        t0 = time.monotonic()
        break_link()
        st = eventually(lambda: (lambda s: s if s["live"] != "live" and not s["online"] else None)(
            m.status()), f"{break_link.__name__}: the status says offline", timeout=bound)
        print(f"{break_link.__name__}: offline in status after {time.monotonic() - t0:.1f}s "
              f"({st['live']}: {st['live_error'] or st['last_error']})")
        out = gobi("status", str(m.path), env=user.env).stdout
        assert "OFFLINE" in out, out
        assert os.getxattr(m.path, "user.gobi.state") == b"synced"     # nothing pending
        proxy.restore()
        t0 = time.monotonic()
        eventually(lambda: (lambda s: s["live"] == "live" and s["online"])(m.status()),
                   f"{break_link.__name__}: back online")
        print(f"{break_link.__name__}: live again {time.monotonic() - t0:.1f}s after the link was")
