"""Conflicts between two real mounts (issue 5, "how it will be checked"): every conflict
case is reproduced with mount B offline (its connections to the server refused) while
B and A change the same thing, then B reconnects and replays its journal with
``on_conflict: "strategy"``.

For every case: the outcome is the vault strategy's (docs/conflicts.md, "The cases"),
no byte either side wrote is lost (it is visible, or kept in a version / the trash on
the server), and A, B and the server converge on one tree. Then the strategies that
need more than a look at the tree: manual (``gobi conflicts``, ``gobi resolve``) and
last-writer-wins set through the vault settings; and a mass delete through a mount that
is held until ``gobi confirm-delete``.

Every wait is a hang guard, never a performance threshold.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import ServerProcess

from .mounts import Mount, User, gobi, server_tree
from .test_failover import CuttableProxy
from .test_live import caught_up, eventually, listing

BASE = b"base: written before anyone went offline\n"
ON_A = b"A's version: written on A while B was offline\n"
ON_B = b"B's version: written on B while offline\n"
OLD = b"an old file in the directory\n"
NEW_A = b"new on A inside the directory\n"
NEW_B = b"new on B inside the directory\n"


class RefusingProxy(CuttableProxy):
    """A CuttableProxy that can also take its mount offline: ``offline()`` cuts every
    connection and stops listening (new connections are refused at once, like a server
    that is down); ``online()`` listens on the same port again. ``hold_ws``: WebSocket
    upgrades are refused while REST passes, so the mount replays its journal before its
    live stream is back (its backoff can be 30 s while uploads retry on demand)."""

    hold_ws = False

    def _accept(self) -> None:
        sock = self.sock
        while not self.closed:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.hold_ws:
            client.settimeout(10)
            try:
                head = client.recv(4096, socket.MSG_PEEK)
            except OSError:
                head = b""
            client.settimeout(None)
            if b"upgrade: websocket" in head.lower():
                # An answer, not a bare close: a handshake whose connection just closes
                # waits for trio-websocket's connect timeout (10 s) before it fails.
                try:
                    client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   b"Connection: close\r\n\r\n")
                except OSError:
                    pass
                client.close()
                return
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        with self.lock:
            self.conns += [client, upstream]
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def offline(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)    # wakes the accept thread (close alone does not)
        except OSError:
            pass
        self.sock.close()
        self.cut()

    def online(self) -> None:
        if self.sock.fileno() != -1 or self.closed:
            return
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()


# -- what the tree must look like ---------------------------------------------------------------

def copy_re(stem: str, ext: str, device: str) -> re.Pattern:
    """``NAME (conflicted copy DEVICE YYYY-MM-DD HHMMSS).EXT`` (docs/conflicts.md)."""
    return re.compile(rf"{re.escape(stem)} \(conflicted copy {re.escape(device)} "
                      rf"\d{{4}}-\d\d-\d\d \d{{6}}\){re.escape(ext)}")


def shape(tree: dict[str, tuple], device: str, copies: dict[str, tuple[str, str]]) -> dict[str, object]:
    """The listing with conflicted-copy names replaced by a placeholder ``<copy:KEY>`` (the
    name has a timestamp), so a case can state its expected tree exactly."""
    out: dict[str, object] = {}
    for rel, (kind, data, _mode) in tree.items():
        name = rel
        for key, (stem, ext) in copies.items():
            pat = copy_re(stem, ext, device)
            name = pat.sub(f"<copy:{key}>", name)
        out[name] = data if kind == "file" else kind
    return out


@dataclass
class Case:
    """One conflict: ``setup`` on A (synced to both), then, B offline, ``on_b`` and ``on_a``
    (in ``order``), then B reconnects. ``expect``: the converged tree (path → bytes, or
    "dir"), conflicted copies named ``<copy:KEY>`` with ``copies[KEY] = (stem, ext)``
    (the device is B's: B's write arrives second, it is "mine")."""

    name: str
    setup: Callable[[Path], None]
    on_b: Callable[[Path], None]
    on_a: Callable[[Path], None]
    expect: dict[str, object]
    copies: dict[str, tuple[str, str]] = field(default_factory=dict)
    strategy: str = "keep-both"
    order: str = "ba"
    marks: tuple = ()
    key: str = ""               # its directory in the shared vault (set below)


def put(rel: str, data: bytes) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    f.writes = {data}
    return f


def rm(rel: str) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        p = root / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return f


def mv(src: str, dst: str) -> Callable[[Path], None]:
    return lambda root: os.rename(root / src, root / dst)


def mkdir(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).mkdir()


def steps(*fs: Callable[[Path], None]) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        for g in fs:
            g(root)
    f.writes = set().union(*(writes(g) for g in fs))
    return f


def writes(step: Callable[[Path], None]) -> set[bytes]:
    """The contents a step writes (no byte of them may be lost)."""
    return getattr(step, "writes", set())


def nothing(root: Path) -> None:
    pass


KEEP = put("keep.txt", b"an unrelated file\n")

CASES = [
    Case("modify/modify", steps(KEEP, put("f.txt", BASE)), put("f.txt", ON_B), put("f.txt", ON_A),
         {"keep.txt": b"an unrelated file\n", "f.txt": ON_A, "<copy:f>": ON_B},
         copies={"f": ("f", ".txt")}),
    Case("modify/delete", put("f.txt", BASE), put("f.txt", ON_B), rm("f.txt"),
         {"f.txt": ON_B}),
    Case("delete/modify", put("f.txt", BASE), rm("f.txt"), put("f.txt", ON_A),
         {"f.txt": ON_A}),
    Case("delete/delete", steps(KEEP, put("f.txt", BASE)), rm("f.txt"), rm("f.txt"),
         {"keep.txt": b"an unrelated file\n"}),
    Case("rename/rename", put("f.txt", BASE), mv("f.txt", "by-b.txt"), mv("f.txt", "by-a.txt"),
         {"by-b.txt": BASE}),           # the later rename (B's, replayed last) names it
    Case("rename vs modify", put("f.txt", BASE), put("f.txt", ON_B), mv("f.txt", "g.txt"),
         {"g.txt": ON_B}),
    Case("modify vs rename", put("f.txt", BASE), mv("f.txt", "g.txt"), put("f.txt", ON_A),
         {"g.txt": ON_A}),
    Case("dir deleted on A, file added inside on B", put("d/old.txt", OLD),
         put("d/new.txt", NEW_B), rm("d"),
         {"d": "dir", "d/new.txt": NEW_B}),
    Case("dir deleted on B, file added inside on A", put("d/old.txt", OLD),
         rm("d"), put("d/new.txt", NEW_A),
         {"d": "dir", "d/new.txt": NEW_A}),
    Case("create/create", KEEP, put("n.txt", ON_B), put("n.txt", ON_A),
         {"keep.txt": b"an unrelated file\n", "n.txt": ON_A, "<copy:n>": ON_B},
         copies={"n": ("n", ".txt")}),
    Case("file on B vs directory on A", KEEP, put("x", ON_B), put("x/inside.txt", NEW_A),
         {"keep.txt": b"an unrelated file\n", "x": "dir", "x/inside.txt": NEW_A, "<copy:x>": ON_B},
         copies={"x": ("x", "")}),
    Case("directory on B vs file on A", KEEP, put("x/inside.txt", NEW_B), put("x", ON_A),
         {"keep.txt": b"an unrelated file\n", "x": ON_A, "<copy:x>": "dir", "<copy:x>/inside.txt": NEW_B},
         copies={"x": ("x", "")}),
    # last-writer-wins: the newer mtime is the head, the other a version (history check).
    Case("last-writer-wins, A newer", put("f.txt", BASE), put("f.txt", ON_B), put("f.txt", ON_A),
         {"f.txt": ON_A}, strategy="last-writer-wins", order="ba"),
    Case("last-writer-wins, B newer", put("f.txt", BASE), put("f.txt", ON_B), put("f.txt", ON_A),
         {"f.txt": ON_B}, strategy="last-writer-wins", order="ab"),
    # server-wins / client-wins: the same modify/modify, the other outcome each.
    Case("server-wins modify/modify", put("f.txt", BASE), put("f.txt", ON_B), put("f.txt", ON_A),
         {"f.txt": ON_A}, strategy="server-wins"),
    Case("client-wins modify/modify", put("f.txt", BASE), put("f.txt", ON_B), put("f.txt", ON_A),
         {"f.txt": ON_B}, strategy="client-wins"),
]


for _i, _c in enumerate(CASES):
    _c.key = f"c{_i:02}"

#: How B comes back: everything at once, or its journal replayed (and answered) before its
#: live stream is back, so it applies the other side's older events after its own acks.
MODES = ("reconnect", "replay-first")


# -- the two mounts -----------------------------------------------------------------------------

def set_strategy(user: User, vault: str, strategy: str, rules: list | None = None) -> None:
    r = user.api.put(f"/vaults/{vault}/settings",
                     json={"conflict_strategy": strategy, "conflict_rules": rules or []})
    assert r.status_code == 200, r.text


@dataclass
class Pair:
    user: User
    vault: str
    a: Mount
    b: Mount
    proxy: RefusingProxy


@pytest.fixture(scope="module")
def pair(server, tmp_path_factory):
    """Mount A (direct) and mount B (through a proxy that can take it offline), shared by
    the module: each case works in a directory of its own, its strategy set by a rule of
    the vault settings (docs/conflicts.md: ``conflict_rules``)."""
    root = tmp_path_factory.mktemp("pair")
    user = User(server, root / "home")
    vault = user.create_vault("conflicts")
    rules = [{"pattern": f"{c.key}-*/**", "strategy": c.strategy} for c in CASES if c.strategy != "keep-both"]
    set_strategy(user, vault, "keep-both", rules + [{"pattern": "manual-*/**", "strategy": "manual"}])
    proxy = RefusingProxy(server.port)
    a = Mount(user, vault, root / "a", root / "a-cache")
    b = Mount(user, vault, root / "b", root / "b-cache", extra=("--server", proxy.url))
    try:
        a.start()
        gobi("login", proxy.url, "-u", user.name, "--password-stdin", env=user.env,
             input="correct horse battery\n")
        b.start()
        yield Pair(user, vault, a, b, proxy)
    finally:
        proxy.hold_ws = False
        proxy.online()
        b.stop()
        a.stop()
        proxy.close()
        user.close()


def under(tree: dict, sub: str) -> dict:
    return {rel[len(sub) + 1:]: v for rel, v in tree.items() if rel.startswith(sub + "/")}


def file_ids(p: Pair, sub: str) -> set[str]:
    return {n["id"] for rel, n in server_tree(p.user, p.vault).items()
            if n.get("kind") == "file" and rel.startswith(sub + "/")}


def retained(p: Pair, ids: set[str]) -> set[bytes]:
    """Every version's bytes the server keeps of these nodes (live or in the trash)."""
    out: set[bytes] = set()
    for nid in ids:
        r = p.user.api.get(f"/vaults/{p.vault}/nodes/{nid}/versions")
        if r.status_code != 200:
            continue
        for v in r.json()["versions"]:
            d = p.user.api.get(f"/vaults/{p.vault}/nodes/{nid}/data", params={"rev": v["rev"]})
            d.raise_for_status()
            out.add(d.content)
    return out


def go_offline(p: Pair) -> None:
    p.proxy.offline()
    eventually(lambda: p.b.status()["live"] != "live", "B noticed the cut")


def come_back(p: Pair, mode: str) -> None:
    if mode == "replay-first":
        p.proxy.hold_ws = True
        p.proxy.online()
        p.b.sync()                      # every queued write answered by the server…
        assert p.b.status()["live"] != "live"   # …before any event of the outage arrived
        p.proxy.hold_ws = False
    p.proxy.online()
    caught_up(p.a, p.b)
    caught_up(p.a, p.b)     # B's replay may have caused events A applied after its sync


def converged(p: Pair, sub: str) -> dict[str, tuple]:
    """A, B and the server show the same tree (names, kinds; bytes under ``sub``)."""
    la, lb = listing(p.a), listing(p.b)
    assert la == lb, (f"A and B differ:\nA: {sorted(la)}\nB: {sorted(lb)}\n"
                      f"B's log:\n{p.b.log()[-4000:]}")
    tree = server_tree(p.user, p.vault)
    assert sorted(tree) == sorted(la), (sorted(tree), sorted(la))
    for rel, (kind, data, _mode) in la.items():
        assert tree[rel]["kind"] == kind, (rel, tree[rel], kind)
        if kind == "file" and rel.startswith(sub + "/"):
            d = p.user.api.get(f"/vaults/{p.vault}/nodes/{tree[rel]['id']}/data")
            assert d.content == data, (rel, d.content, data)
    return la


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name.replace(" ", "_").replace("/", "-"),
                                               marks=c.marks) for c in CASES])
def test_conflict_with_b_offline(pair: Pair, case: Case, mode: str):
    p = pair
    sub = f"{case.key}-{mode}"
    ra, rb = p.a.path / sub, p.b.path / sub
    ra.mkdir()
    case.setup(ra)
    caught_up(p.a, p.b)
    seen = file_ids(p, sub)
    go_offline(p)
    for side in case.order:
        if side == "b":
            case.on_b(rb)
        else:
            case.on_a(ra)
            p.a.sync()
        time.sleep(0.05)        # distinct mtimes for last-writer-wins
    seen |= file_ids(p, sub)
    st = p.b.status()
    assert st["pending_ops"] > 0 and st["live"] != "live", st     # B's side is only on B
    come_back(p, mode)
    tree = under(converged(p, sub), sub)
    got = shape(tree, p.b.status()["device"], case.copies)
    assert got == case.expect, f"{case.name} ({mode}): {sorted(tree)}\nB's log:\n{p.b.log()[-4000:]}"
    # No byte lost: every content either side wrote is in the tree or in the server's
    # history (versions of live and trashed nodes).
    kept = retained(p, seen | file_ids(p, sub))
    visible = {data for kind, data, _ in tree.values() if kind == "file"}
    for data in writes(case.setup) | writes(case.on_a) | writes(case.on_b):
        assert data in visible or data in kept, f"{case.name} ({mode}): lost {data!r}"
