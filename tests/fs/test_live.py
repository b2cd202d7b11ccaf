"""Live sync between mounts of one vault (issue 4): changes made on one mount appear on the
others over the WebSocket, the kernel is told (sizes, mtimes, inotify), own echoes cost
nothing, local unsynced changes are never overwritten, and a mount that was away catches up
by seq (or by a re-list when its cursor expired).

Every wait here is a hang guard (``eventually``), never a performance threshold.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.servers import ServerProcess

from .conftest import _counter
from .mounts import (GUARD, Mount, User, caught_up, eventually, gobi, listing, read, server_file,
                     server_tree)


def test_changes_propagate_both_ways(mounts):
    a, b = mounts("a"), mounts("b")
    # Create, grow, shrink: the reader never sees stale bytes or NUL padding (the kernel's
    # cached size is corrected even with the writeback cache on).
    (a.path / "f.txt").write_bytes(b"x" * 5000)
    eventually(lambda: read(b, "f.txt") == b"x" * 5000, "create on b")
    (a.path / "f.txt").write_bytes(b"y" * 300_000)
    eventually(lambda: read(b, "f.txt") == b"y" * 300_000, "growth on b")
    (a.path / "f.txt").write_bytes(b"short")
    eventually(lambda: read(b, "f.txt") == b"short", "shrink on b")
    assert os.stat(b.path / "f.txt").st_size == 5
    # chmod and mtime
    os.chmod(a.path / "f.txt", 0o640)
    os.utime(a.path / "f.txt", ns=(1_500_000_000_000_000_000, 1_500_000_000_123_456_789))
    eventually(lambda: (lambda s: s.st_mode & 0o7777 == 0o640 and s.st_mtime_ns == 1_500_000_000_123_456_789)(
        os.stat(b.path / "f.txt")), "chmod and mtime on b")
    # Directories, symlinks, and the other direction.
    (b.path / "docs" / "deep").mkdir(parents=True)
    (b.path / "docs" / "deep" / "n.md").write_text("notes")
    (b.path / "docs" / "link").symlink_to("deep/n.md")
    eventually(lambda: read(a, "docs/link") == b"notes", "dir, file and symlink on a")
    assert os.readlink(a.path / "docs" / "link") == "deep/n.md"
    # A big directory renamed on b: one event; every file is under the new name on a.
    big = b.path / "big"
    big.mkdir()
    for i in range(300):
        (big / f"f{i:03}").write_bytes(b"%d" % i)
    caught_up(a, b)
    assert len(os.listdir(a.path / "big")) == 300
    os.rename(big, b.path / "docs" / "moved")
    eventually(lambda: not (a.path / "big").exists() and len(os.listdir(a.path / "docs" / "moved")) == 300,
               "directory rename on a")
    assert read(a, "docs/moved/f299") == b"299"
    # Deletes of a file and of a directory tree.
    os.unlink(a.path / "f.txt")
    subprocess.run(["rm", "-r", str(a.path / "docs" / "moved")], check=True)
    eventually(lambda: not (b.path / "f.txt").exists() and not (b.path / "docs" / "moved").exists(),
               "deletes on b")
    caught_up(a, b)
    assert listing(a) == listing(b)
    assert sorted(server_tree(a.user, a.vault)) == sorted(listing(a))


def test_a_directory_changes_its_times_on_every_mount(mounts):
    """A name made, renamed or removed in a directory moves the directory's mtime and ctime
    on the mount that made the change and on every other one (``make``, ``ls -lt``,
    ``find -newer`` read them; issue 17, item 3)."""
    a, b = mounts("a"), mounts("b")
    for d in ("d", "e"):
        (a.path / d).mkdir()
    caught_up(a, b)

    def times(m, d="d"):
        st = os.stat(m.path / d)
        return st.st_mtime_ns, st.st_ctime_ns

    steps = [
        ("create", lambda: (a.path / "d" / "f").write_bytes(b"x"), ["d"]),
        ("mkdir", lambda: (a.path / "d" / "sub").mkdir(), ["d"]),
        ("rename within", lambda: os.rename(a.path / "d" / "f", a.path / "d" / "g"), ["d"]),
        ("move out", lambda: os.rename(a.path / "d" / "g", a.path / "e" / "g"), ["d", "e"]),
        ("unlink", lambda: os.unlink(a.path / "e" / "g"), ["e"]),
        ("rmdir", lambda: os.rmdir(a.path / "d" / "sub"), ["d"]),
    ]
    for what, change, dirs in steps:
        before = {(m.path, d): times(m, d) for m in (a, b) for d in dirs}
        time.sleep(0.01)
        change()
        caught_up(a, b)
        for m in (a, b):
            for d in dirs:
                old, new = before[(m.path, d)], times(m, d)
                assert new[0] > old[0] and new[1] > old[1], (what, m.path.name, d, old, new)


def test_three_mounts_converge(mounts):
    ms = [mounts(f"m{i}") for i in range(3)]
    for i, m in enumerate(ms):
        (m.path / f"from{i}").mkdir()
        for j in range(5):
            (m.path / f"from{i}" / f"f{j}").write_bytes(b"%d/%d" % (i, j))
    # One shared file edited by each mount in turn, each after seeing the previous edit.
    (ms[0].path / "shared.txt").write_text("0")
    for i in (1, 2, 0, 1):
        eventually(lambda i=i: read(ms[i], "shared.txt") is not None, "shared file")
        prev = read(ms[i], "shared.txt")
        (ms[i].path / "shared.txt").write_bytes(prev + b"%d" % i)
        eventually(lambda want=prev + b"%d" % i: all(read(m, "shared.txt") == want for m in ms),
                   "edit seen everywhere")
    caught_up(*ms)
    first = listing(ms[0])
    assert first == listing(ms[1]) == listing(ms[2])
    assert first["shared.txt"][1] == b"01201"
    assert not [p for p in first if "conflicted copy" in p]     # sequential edits: no conflict


def test_open_reader_follows_remote_changes(mounts):
    a, b = mounts("a"), mounts("b")
    (a.path / "log").write_bytes(b"line 1\n")
    eventually(lambda: read(b, "log") == b"line 1\n", "log on b")
    follower = subprocess.Popen(["tail", "-n", "+1", "-F", "-s", "0.1", str(b.path / "log")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    fd = os.open(b.path / "log", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == b"line 1\n"
        with open(a.path / "log", "ab") as f:
            f.write(b"line 2\n")
        eventually(lambda: os.pread(fd, 100, 0) == b"line 1\nline 2\n", "append through the open fd")
        assert os.fstat(fd).st_size == 14
        # tail polls (every 0.1 s on FUSE): it must have seen the append before the next
        # change replaces it, which now reaches b within milliseconds.
        out = b""
        deadline = time.monotonic() + GUARD
        os.set_blocking(follower.stdout.fileno(), False)
        while b"line 2\n" not in out and time.monotonic() < deadline:
            out += follower.stdout.read() or b""
            time.sleep(0.05)
        assert b"line 1\nline 2\n" in out, out
        # A remote truncate: the open reader sees the short file, not NUL padding.
        (a.path / "log").write_bytes(b"new\n")
        eventually(lambda: os.pread(fd, 100, 0) == b"new\n", "shrink through the open fd")
        assert os.fstat(fd).st_size == 4
    finally:
        os.close(fd)
        follower.terminate()
        follower.wait()


def test_inotify_sees_remote_changes(mounts):
    a, b = mounts("a"), mounts("b")
    (a.path / "w").mkdir()
    for name in ("gone", "edited"):
        (a.path / "w" / name).write_bytes(b"before")
    eventually(lambda: read(b, "w/gone") == b"before" and read(b, "w/edited") == b"before", "files on b")
    os.listdir(b.path / "w")        # a watcher usually looks first: the names are known
    watch = subprocess.Popen(["inotifywait", "-m", "--format", "%e %f", str(b.path / "w")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: "Watches established" in (watch.stderr.readline() or ""), "inotifywait ready")
        os.unlink(a.path / "w" / "gone")
        (a.path / "w" / "edited").write_bytes(b"after, longer")
        eventually(lambda: not (b.path / "w" / "gone").exists() and read(b, "w/edited") == b"after, longer",
                   "changes on b")
        time.sleep(0.3)     # let the last notifications arrive (not a threshold: collected below)
    finally:
        watch.terminate()
        out, _ = watch.communicate()
    events = out.splitlines()
    assert "DELETE gone" in events, events
    assert "MODIFY edited" in events, events


def test_own_echoes_cost_nothing(mounts):
    a, b = mounts("a"), mounts("b")
    for i in range(20):
        (a.path / f"f{i}").write_bytes(os.urandom(10_000))
    (a.path / "d").mkdir()
    os.rename(a.path / "f0", a.path / "d" / "f0")
    os.chmod(a.path / "f1", 0o600)
    (a.path / "f2").write_bytes(b"edited")
    os.unlink(a.path / "f3")
    caught_up(a, b)
    st = a.status()
    assert st["fetched_chunks"] == 0            # nothing of our own came back
    assert st["kernel_notices"] == 0            # and the kernel was never told about it
    assert st["echoes_skipped"] == st["last_seq"] > 20    # every event of the vault was ours
    # b's kernel was told (remote creates, moves and deletes go through the mount itself)
    eventually(lambda: (lambda s: s["kernel_notices"] + s["kernel_materialised"] > 0)(b.status()),
               "b's kernel was told")


def test_local_unsynced_changes_are_not_overwritten(mounts, user, vault):
    a, b = mounts("a"), mounts("b")
    (a.path / "doc.txt").write_text("base\n")
    eventually(lambda: read(b, "doc.txt") == b"base\n", "doc on b")
    # b edits and keeps the file open (the upload waits while it is being written)…
    f = open(b.path / "doc.txt", "r+b")
    try:
        f.seek(0)
        f.write(b"mine: edited on b\n")
        f.flush()
        # …while a commits another edit.
        (a.path / "doc.txt").write_text("theirs: edited on a\n")
        a.sync()
        eventually(lambda: b.status()["last_seq"] >= b.status()["head_seq"], "b saw a's edit")
        f.seek(0)
        assert f.read() == b"mine: edited on b\n"     # local data untouched while open
    finally:
        f.close()
    caught_up(a, b)
    # keep-both (the vault's default): the name shows the first commit, ours is a copy.
    for m in (a, b):
        names = sorted(os.listdir(m.path))
        copies = [n for n in names if n.startswith("doc (conflicted copy ")]
        assert len(copies) == 1, names
        assert read(m, "doc.txt") == b"theirs: edited on a\n"
        assert read(m, copies[0]) == b"mine: edited on b\n"
    assert b.status()["conflicts"], b.status()
    assert server_file(user, vault, "doc.txt") == b"theirs: edited on a\n"


def test_status_shows_live_state(mounts):
    a = mounts("a")
    (a.path / "x").write_text("x")
    a.sync()
    c = mounts("c")
    st = c.status()
    assert st["initial_sync"] == "complete"
    assert st["live"] == "live" and st["live_url"] == c.user.server.url
    assert st["server"] == c.user.server.url
    out = gobi("status", str(c.path), env=c.user.env).stdout
    assert "live updates: live via " + c.user.server.url in out
    assert "initial sync complete" in out


def test_restarted_mount_resumes_by_seq(mounts):
    a, b = mounts("a"), mounts("b")
    (a.path / "one").write_text("1")
    caught_up(a, b)
    assert b.umount().returncode == 0
    for i in range(10):
        (a.path / f"n{i}").write_text(str(i))
    os.unlink(a.path / "one")
    a.sync()
    b.start()
    eventually(lambda: read(b, "n9") == b"9" and not (b.path / "one").exists(), "b caught up")
    st = b.status()
    assert st["relists"] == 0                   # resumed from its seq, no re-list
    assert st["applied_events"] == 11


@pytest.fixture(scope="module")
def short_memory_server(tmp_path_factory):
    """A server that forgets events after a second: cursors of absent mounts expire."""
    srv = ServerProcess(tmp_path_factory.mktemp("forgetful"),
                        env={"GOBI_EVENT_RETENTION": "1s", "GOBI_PRUNE_INTERVAL": "1s"}).start()
    yield srv
    srv.stop()


def test_expired_cursor_relists_and_keeps_local_changes(short_memory_server, tmp_path):
    user = User(short_memory_server, tmp_path / "home")
    vault = user.create_vault(f"forget{next(_counter)}")
    a = Mount(user, vault, tmp_path / "a", tmp_path / "a-cache").start()
    b = Mount(user, vault, tmp_path / "b", tmp_path / "b-cache", extra=("--settle", "600")).start()
    try:
        (a.path / "old").write_text("old")
        (a.path / "keep").write_text("keep")
        eventually(lambda: read(b, "old") == b"old", "b has old")
        # b makes a change and leaves before uploading it (the settle delay holds it).
        (b.path / "local-only").write_text("made on b while away")
        r = gobi("umount", "--no-wait", str(b.path), env=user.env, check=False)
        assert r.returncode == 3, r.stdout + r.stderr
        b.pid = None
        os.unlink(a.path / "old")
        (a.path / "new").write_text("new")
        a.sync()
        seq = int(open(b.cache_dir / "status.json").read().split('"last_seq": ')[1].split(",")[0])
        eventually(lambda: user.api.get(f"/vaults/{vault}/events", params={"after": seq}).status_code == 410,
                   "b's cursor expired")
        b.start()
        b.sync()
        eventually(lambda: read(b, "new") == b"new" and not (b.path / "old").exists(), "b re-listed")
        assert read(b, "local-only") == b"made on b while away"
        assert b.status()["relists"] >= 1
        eventually(lambda: read(a, "local-only") == b"made on b while away", "b's change on a")
        caught_up(a, b)
        assert listing(a) == listing(b)
    finally:
        b.stop()
        a.stop()
        user.close()
