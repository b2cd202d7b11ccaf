"""``gobi verify`` and the self-check against divergences made by hand in a mount's cache.

The mirror (``mirror.db`` in the cache dir) is edited with sqlite3 while the mount is
down — a file's mode changed, a file renamed, a node dropped, a node the server never had
added, a file's content switched to another file's chunks — exactly the kinds of
difference a bug would leave. The mount must find each one and put it right from the
server's state, and a local change that has not reached the server must survive the repair.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path

from .mounts import Mount


def _populate(m: Mount) -> None:
    (m.path / "d").mkdir()
    (m.path / "a.txt").write_bytes(b"the server's a\n")
    (m.path / "d" / "b.txt").write_bytes(b"the server's b, a little longer\n")
    (m.path / "c.txt").write_bytes(b"c\n")
    (m.path / "d" / "gone.txt").write_bytes(b"still on the server\n")
    os.chmod(m.path / "c.txt", 0o640)
    m.sync()


def _diverge(cache_dir: Path) -> str:
    """Edit the stopped mount's mirror by hand; returns the id of the node added."""
    assert not list(cache_dir.glob("mirror.db.log.*")), "the mirror was not flushed at unmount"
    db = sqlite3.connect(cache_dir / "mirror.db")
    with db:
        ino = {name: i for i, name in db.execute("SELECT ino, name FROM nodes")}
        # a.txt shows b.txt's content (size, version, chunk list): bytes the server does
        # not have under that name.
        b_size, b_rev = db.execute("SELECT size, content_rev FROM nodes WHERE ino=?",
                                   (ino["b.txt"],)).fetchone()
        db.execute("UPDATE nodes SET size=?, content_rev=?, manifest_rev=? WHERE ino=?",
                   (b_size, b_rev, b_rev, ino["a.txt"]))
        db.execute("DELETE FROM chunks WHERE ino=?", (ino["a.txt"],))
        db.execute("INSERT INTO chunks(ino, idx, off, size, hash) "
                   "SELECT ?, idx, off, size, hash FROM chunks WHERE ino=?",
                   (ino["a.txt"], ino["b.txt"]))
        db.execute("UPDATE nodes SET mode=? WHERE ino=?", (0o600, ino["c.txt"]))
        db.execute("UPDATE nodes SET name='renamed.txt' WHERE ino=?", (ino["b.txt"],))
        db.execute("DELETE FROM nodes WHERE ino=?", (ino["gone.txt"],))
        ghost = uuid.uuid4().hex
        db.execute("INSERT INTO nodes(id, parent, name, kind, mode, size, mtime_ns, ctime_ns, rev, "
                   "content_rev, dirty) SELECT ?, parent, 'ghost.txt', 'file', 420, 0, mtime_ns, "
                   "ctime_ns, rev, content_rev, 0 FROM nodes WHERE ino=?", (ghost, ino["c.txt"]))
    db.close()
    return ghost


def _diverged_view(m: Mount) -> None:
    """The hand-made divergence is what the mount shows (the test edits what it meant to)."""
    assert (m.path / "a.txt").read_bytes() == b"the server's b, a little longer\n"
    assert (m.path / "c.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(m.path / "d")) == ["renamed.txt"]
    assert (m.path / "ghost.txt").exists()


def _server_view(m: Mount) -> None:
    assert (m.path / "a.txt").read_bytes() == b"the server's a\n"
    assert (m.path / "c.txt").stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(m.path / "d")) == ["b.txt", "gone.txt"]
    assert (m.path / "d" / "b.txt").read_bytes() == b"the server's b, a little longer\n"
    assert (m.path / "d" / "gone.txt").read_bytes() == b"still on the server\n"
    assert not (m.path / "ghost.txt").exists()


def test_verify_repair_puts_right_a_divergence_made_by_hand(mounts):
    # The self-check is off, so the divergence stays until `gobi verify --repair`.
    m = mounts("m0", extra=("--self-check", "0"))
    _populate(m)
    m.umount()
    ghost = _diverge(m.cache_dir)
    m.start()
    _diverged_view(m)
    # A local change not yet on the server must survive a repair untouched.
    (m.path / "local.txt").write_bytes(b"made here")

    report = m.verify()
    found = {(d["what"], d["path"]) for d in report["differences"]}
    assert found >= {("differs", "/a.txt"), ("differs", "/c.txt"), ("differs", "/d/renamed.txt"),
                     ("missing", "/d/gone.txt"), ("extra", "/ghost.txt")}, report
    assert next(d for d in report["differences"] if d["what"] == "extra")["node"] == ghost
    assert report["repaired"] == 0
    _diverged_view(m)           # a verify without --repair changes nothing

    report = m.verify(repair=True)
    assert report["difference_count"] >= 5 and report["repaired"] == report["difference_count"], report
    _server_view(m)
    assert (m.path / "local.txt").read_bytes() == b"made here"
    assert m.verify()["difference_count"] == 0
    st = m.status()
    assert st["self_checks"] == 0 and st["verify_repaired"] >= 5
    m.sync()
    assert m.verify()["difference_count"] == 0
    # What the repair restored is the server's state (a second mount agrees).
    other = mounts("m1")
    _server_view(other)
    assert (other.path / "local.txt").read_bytes() == b"made here"


def test_the_self_check_finds_and_repairs_a_divergence_on_its_own(mounts):
    m = mounts("m0")                            # the default: self-check on
    _populate(m)
    m.umount()
    _diverge(m.cache_dir)
    m.start()
    # The first connection of the live stream triggers a self-check.
    deadline = time.monotonic() + 60
    while m.status()["self_checks"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    while m.status()["verify_last"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    st = m.status()
    assert st["self_checks"] >= 1, st
    assert st["verify_found"] >= 5 and st["verify_repaired"] == st["verify_found"], st
    _server_view(m)
    assert m.verify()["difference_count"] == 0
    assert "verify: missing /d/gone.txt" in m.log()
