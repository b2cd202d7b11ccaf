"""Conflicts between two real mounts (issue 5, "how it will be checked"): every conflict
case is reproduced with mount B offline (its connections to the server reset) while
B and A change the same thing, then B reconnects and replays its journal with
``on_conflict: "strategy"``.

B comes back in two ways (``MODES``): everything at once, or its journal replayed and
answered before its live stream returns (as when the stream's backoff is long), so it
applies the other side's older events after the answers to its own writes.

The cases share one vault and one pair of mounts (a directory per case and mode; a rule in
the vault settings gives a case its strategy), to keep the module near a minute and a half.

For every case: the outcome is the vault strategy's (docs/conflicts.md, "The cases"),
no byte either side wrote is lost (it is visible, or kept in a version / the trash on
the server), and A, B and the server converge on one tree. Then the strategies that
need more than a look at the tree: manual (``gobi conflicts``, ``gobi resolve``) and
last-writer-wins set through the vault settings; and a mass delete through a mount that
is held until ``gobi confirm-delete``.

Every wait is a hang guard, never a performance threshold.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import ServerProcess
from tests.tcpproxy import TcpProxy

from .mounts import Mount, User, caught_up, eventually, gobi, listing, server_tree

BASE = b"base: written before anyone went offline\n"
ON_A = b"A's version: written on A while B was offline\n"
ON_B = b"B's version: written on B while offline\n"
OLD = b"an old file in the directory\n"
NEW_A = b"new on A inside the directory\n"
NEW_B = b"new on B inside the directory\n"


# -- what the tree must look like ---------------------------------------------------------------

def copy_re(stem: str, ext: str, device: str) -> re.Pattern:
    """``NAME (conflicted copy DEVICE YYYY-MM-DD HHMMSS).EXT`` (docs/conflicts.md)."""
    return re.compile(rf"{re.escape(stem)} \(conflicted copy {re.escape(device)} "
                      rf"\d{{4}}-\d\d-\d\d \d{{6}}\){re.escape(ext)}")


def shape(tree: dict[str, tuple], devices: dict[str, str], copies: dict[str, tuple]) -> dict[str, object]:
    """The listing with conflicted-copy names replaced by a placeholder ``<copy:KEY>`` (the
    name has a timestamp), so a case can state its expected tree exactly. ``copies[KEY]``:
    ``(stem, ext)`` or ``(stem, ext, side)``, side "a" or "b" (default) naming the device."""
    out: dict[str, object] = {}
    for rel, (kind, data, _mode) in tree.items():
        name = rel
        for key, (stem, ext, *side) in copies.items():
            pat = copy_re(stem, ext, devices[side[0] if side else "b"])
            name = pat.sub(f"<copy:{key}>", name)
        out[name] = data if kind == "file" else kind
    return out


@dataclass
class Case:
    """One conflict: ``setup`` on A (synced to both), then, B offline, ``on_b`` and ``on_a``
    (in ``order``), then B reconnects. ``expect``: the converged tree (path → bytes, or
    "dir"), conflicted copies named ``<copy:KEY>`` with ``copies[KEY] = (stem, ext)``
    (the device is B's unless said: B's write arrives second, it is "mine")."""

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
    # Other strategies where their outcome differs from keep-both (docs/conflicts.md table).
    Case("manual modify/delete", put("f.txt", BASE), put("f.txt", ON_B), rm("f.txt"),
         {}, strategy="manual"),         # stays deleted, B's edit a version; open conflict
    Case("last-writer-wins modify/delete", put("f.txt", BASE), put("f.txt", ON_B), rm("f.txt"),
         {}, strategy="last-writer-wins"),   # A's delete is newer than B's edit
    Case("client-wins dir deleted on B, file added inside on A", put("d/old.txt", OLD),
         rm("d"), put("d/new.txt", NEW_A), {}, strategy="client-wins"),
    Case("client-wins create/create", KEEP, put("n.txt", ON_B), put("n.txt", ON_A),
         {"keep.txt": b"an unrelated file\n", "n.txt": ON_B, "<copy:n>": ON_A},
         copies={"n": ("n", ".txt", "a")}, strategy="client-wins"),
    Case("manual create/create", KEEP, put("n.txt", ON_B), put("n.txt", ON_A),
         {"keep.txt": b"an unrelated file\n", "n.txt": ON_A, "<copy:n>": ON_B},
         copies={"n": ("n", ".txt")}, strategy="manual"),     # mine under the copy name; open
    Case("manual rename/rename", put("f.txt", BASE), mv("f.txt", "by-b.txt"), mv("f.txt", "by-a.txt"),
         {"by-a.txt": BASE}, strategy="manual"),              # theirs' name; open
    Case("server-wins rename/rename", put("f.txt", BASE), mv("f.txt", "by-b.txt"), mv("f.txt", "by-a.txt"),
         {"by-a.txt": BASE}, strategy="server-wins"),
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
    proxy: TcpProxy


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
    proxy = TcpProxy(server.port)
    a = Mount(user, vault, root / "a", root / "a-cache")
    b = Mount(user, vault, root / "b", root / "b-cache", extra=("--server", proxy.url))
    try:
        a.start()
        gobi("login", proxy.url, "-u", user.name, "--password-stdin", env=user.env,
             input="correct horse battery\n")
        b.start()
        yield Pair(user, vault, a, b, proxy)
    finally:
        proxy.refuse_websockets = False
        proxy.restore()
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
    p.proxy.cut()
    eventually(lambda: p.b.status()["live"] != "live", "B noticed the cut")


def come_back(p: Pair, mode: str) -> None:
    if mode == "replay-first":
        p.proxy.refuse_websockets = True
        p.proxy.restore()
        p.b.sync()                      # every queued write answered by the server…
        assert p.b.status()["live"] != "live"   # …before any event of the outage arrived
        p.proxy.refuse_websockets = False
    p.proxy.restore()
    caught_up(p.a, p.b)
    caught_up(p.a, p.b)     # B's replay may have caused events A applied after its sync


def log_of(m: Mount, sub: str) -> str:
    """The mount's log lines about ``sub`` and its live stream (for failure messages)."""
    return "".join(line + "\n" for line in m.log().splitlines()
                   if sub in line or "gobi.fs.events" in line or "applier" in line)[-6000:]


def converged(p: Pair, sub: str) -> dict[str, tuple]:
    """A, B and the server show the same tree under ``sub`` (names, kinds, bytes). (Only
    there: the mounts are shared by the cases, one case's failure must not fail the next.)"""
    la, lb = under(listing(p.a), sub), under(listing(p.b), sub)
    assert la == lb, (f"A and B differ:\nA: {sorted(la)}\nB: {sorted(lb)}\n"
                      f"B's log:\n{log_of(p.b, sub)}")
    tree = under(server_tree(p.user, p.vault), sub)
    assert sorted(tree) == sorted(la), (sorted(tree), sorted(la))
    for rel, (kind, data, _mode) in la.items():
        assert tree[rel]["kind"] == kind, (rel, tree[rel], kind)
        if kind == "file":
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
    tree = converged(p, sub)
    got = shape(tree, {"a": p.a.status()["device"], "b": p.b.status()["device"]}, case.copies)
    assert got == case.expect, f"{case.name} ({mode}): {sorted(tree)}\nB's log:\n{log_of(p.b, sub)}"
    # No byte lost: every content either side wrote is in the tree or in the server's
    # history (versions of live and trashed nodes).
    kept = retained(p, seen | file_ids(p, sub))
    visible = {data for kind, data, _ in tree.values() if kind == "file"}
    for data in writes(case.setup) | writes(case.on_a) | writes(case.on_b):
        assert data in visible or data in kept, f"{case.name} ({mode}): lost {data!r}"


# -- manual: the conflict waits for `gobi resolve` ------------------------------------------------

def cli(p: Pair, *args: str, cwd: Path | None = None) -> str:
    r = subprocess.run([sys.executable, "-m", "gobi", *args], env=p.user.env, cwd=cwd,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


ANY_COPY = re.compile(r"f \(conflicted copy .+ \d{4}-\d\d-\d\d \d{6}\)\.txt")


@pytest.mark.parametrize("keep", ["mine", "theirs", "both"])
def test_manual_conflict_resolved_from_the_cli(pair: Pair, keep: str):
    p = pair
    sub = f"manual-{keep}"                  # the vault's rule: manual-*/** → manual
    (p.a.path / sub).mkdir()
    (p.a.path / sub / "f.txt").write_bytes(BASE)
    caught_up(p.a, p.b)
    go_offline(p)
    (p.b.path / sub / "f.txt").write_bytes(ON_B)
    (p.a.path / sub / "f.txt").write_bytes(ON_A)
    p.a.sync()
    come_back(p, "reconnect")
    # Until decided: the file shows the server's version (theirs) on both mounts, B's bytes
    # are kept as a conflict version, and the conflict is listed open.
    tree = converged(p, sub)
    assert shape(tree, {}, {}) == {"f.txt": ON_A}, sorted(tree)
    node = server_tree(p.user, p.vault)[f"{sub}/f.txt"]
    versions = p.user.api.get(f"/vaults/{p.vault}/nodes/{node['id']}/versions").json()["versions"]
    mine = [v for v in versions if v.get("origin") == "conflict"]
    assert len(mine) == 1, versions
    assert p.user.api.get(f"/vaults/{p.vault}/nodes/{node['id']}/data",
                          params={"rev": mine[0]["rev"]}).content == ON_B
    listed = cli(p, "conflicts", cwd=p.a.path)
    assert f"{sub}/f.txt" in listed, listed
    eventually(lambda: p.b.status()["open_conflict_count"] >= 1, "B lists the open conflict")
    # Decided from the CLI, by a path inside mount A; both mounts follow.
    cli(p, "resolve", str(p.a.path / sub / "f.txt"), "--keep", keep)
    want = {"mine": {"f.txt": ON_B}, "theirs": {"f.txt": ON_A},
            "both": {"f.txt": ON_A, "<copy>": ON_B}}[keep]

    def settled(m: Mount) -> bool:
        got = {ANY_COPY.sub("<copy>", rel): v[1] for rel, v in under(listing(m), sub).items()}
        return got == want

    eventually(lambda: settled(p.a) and settled(p.b), f"both mounts show --keep {keep}")
    caught_up(p.a, p.b)
    converged(p, sub)
    assert f"{sub}/f.txt" not in cli(p, "conflicts", cwd=p.a.path)
    eventually(lambda: not [c for c in p.b.status()["open_conflicts"] if c["path"].startswith(sub)],
               "B's status drops the settled conflict")


# -- a mass delete through a mount is held ----------------------------------------------------------

THRESHOLD = 20
BULK = {f"bulk/f{i:03}": b"file %d\n" % i for i in range(60)}


@contextlib.contextmanager
def guarded(tmp_path: Path):
    """A server whose mass-delete guard fires past THRESHOLD files from one device, two
    mounts of one vault, and BULK written on B and seen by A (so A's deletes count: files
    a device wrote itself a moment ago do not)."""
    srv = ServerProcess(tmp_path / "server", env={"GOBI_MASS_DELETE_FILES": str(THRESHOLD)}).start()
    user = User(srv, tmp_path / "home")
    vault = user.create_vault("guarded")
    a = Mount(user, vault, tmp_path / "a", tmp_path / "a-cache")
    b = Mount(user, vault, tmp_path / "b", tmp_path / "b-cache")
    try:
        a.start()
        b.start()
        (b.path / "bulk").mkdir()
        for rel, data in BULK.items():
            (b.path / rel).write_bytes(data)
        (b.path / "other.txt").write_bytes(b"not deleted\n")
        caught_up(a, b)
        yield user, vault, a, b
    finally:
        b.stop()
        a.stop()
        user.close()
        srv.stop()


def rm_bulk(user: User, vault: str, a: Mount, b: Mount) -> set[str]:
    """rm -r of BULK on A (a "buggy client"); returns the BULK paths the server kept."""
    shutil.rmtree(a.path / "bulk")
    st = a.sync()
    # gobi sync returns while the hold is pending: exit 4, saying what is held and how to decide
    assert st["sync_exit"] == 4, st["sync_stderr"]
    assert "held by the server as a mass delete" in st["sync_stderr"]
    assert "gobi confirm-delete --reject" in st["sync_stderr"]
    eventually(lambda: a.status()["held_deletes"], "A reports the held delete")
    caught_up(a, b)
    tree = server_tree(user, vault)
    return {rel for rel in BULK if rel in tree}


def test_mass_delete_through_a_mount_is_held_until_confirmed(tmp_path):
    with guarded(tmp_path) as (user, vault, a, b):
        kept = rm_bulk(user, vault, a, b)
        # The mount sends one delete per file (the kernel unlinks them one by one): the
        # guard applies the first THRESHOLD, holds the next, and pulls those THRESHOLD
        # back into the hold when it opens: the server keeps every file.
        assert kept == set(BULK), sorted(set(BULK) - kept)
        holds = user.api.get(f"/vaults/{vault}/holds").json()["holds"]
        assert [h["state"] for h in holds] == ["pending"], holds
        assert holds[0]["files"] == len(BULK), holds       # each file once, the rmdir adds none
        # B keeps every file the server kept, with its bytes; A keeps its rm -r: the
        # held deletes are A's own state (status, the root's xattr), not undone.
        tree = server_tree(user, vault)
        lb = listing(b)
        for rel in kept:
            assert lb[rel][1] == BULK[rel], rel
        assert sorted(lb) == sorted(tree)
        assert sorted(listing(a)) == ["other.txt"]
        # 40 deletes answered "held", 20 applied and pulled back into the hold (their
        # create events carry it), and the rmdir of bulk
        st = eventually(lambda: (lambda s: s["held_deletes"] == len(BULK) + 1 and s)(a.status()),
                        "A counts every held delete")
        assert [h["id"] for h in st["holds"]] == [holds[0]["id"]]
        assert st["holds"][0]["paths"] == ["bulk"]
        held = json.loads(os.getxattr(a.path, "user.gobi.held"))
        assert [(h["name"], h["kind"], h["hold"]) for h in held] == [("bulk", "dir", holds[0]["id"])]
        out = subprocess.run([sys.executable, "-m", "gobi", "confirm-delete", "--yes"],
                             env=user.env, cwd=a.path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (out.stdout, out.stderr)
        eventually(lambda: not (b.path / "bulk").exists(), "the confirmed delete reaches B")
        caught_up(a, b)
        assert sorted(listing(a)) == sorted(listing(b)) == sorted(server_tree(user, vault)) == ["other.txt"]
        eventually(lambda: a.status()["held_deletes"] == 0, "A's held deletes are settled")
        trash = user.api.get(f"/vaults/{vault}/trash").json()["entries"]
        # nothing lost: all in the trash, as one entry of the folder
        assert [(e["path"], e["files"]) for e in trash] == [("bulk", len(BULK))]


def test_a_rejected_mass_delete_comes_back_on_the_deleting_mount(tmp_path):
    """docs/conflicts.md: a mass delete is held whole. The mount replays rm -r as one
    delete per file, so the server applies the first mass_delete_files of them (here 20)
    before the guard fires; opening the hold pulls those back (same node ids, create
    events), so the other mounts end up losing none of them. Rejected, the deleting
    mount gets them back too, and says so."""
    with guarded(tmp_path) as (user, vault, a, b):
        kept = rm_bulk(user, vault, a, b)
        assert kept == set(BULK)
        lb = listing(b)
        assert all(lb[rel][1] == data for rel, data in BULK.items())
        assert not (a.path / "bulk").exists()
        [hold] = user.api.get(f"/vaults/{vault}/holds").json()["holds"]
        out = subprocess.run([sys.executable, "-m", "gobi", "confirm-delete", "--reject", hold["id"]],
                             env=user.env, cwd=b.path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (out.stdout, out.stderr)
        eventually(lambda: (a.path / "bulk").is_dir() and len(os.listdir(a.path / "bulk")) == len(BULK),
                   "the rejected delete comes back on A")
        caught_up(a, b)
        la = listing(a)
        assert all(la[rel][1] == data for rel, data in BULK.items())
        assert sorted(la) == sorted(listing(b)) == sorted(server_tree(user, vault))
        st = a.status()
        assert st["held_deletes"] == 0 and st["holds"] == []
        assert [(r["hold"], r["state"], r["files"], r["paths"]) for r in st["returned"]] == [
            (hold["id"], "rejected", len(BULK), ["bulk"])]
        assert f"hold {hold['id']} rejected" in a.log()
