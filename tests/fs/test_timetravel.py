"""Time travel: ``MOUNT/.gobi/at/<seq or time>/…``, a read-only view of the vault as it
was, on real mounts (gobi.fs.timetravel)."""

from __future__ import annotations

import errno
import filecmp
import os
import stat
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest


def _errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def _tree(root) -> dict[str, tuple]:
    """path -> (kind, mode, content or target) of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), f.read())
    return out


def test_view_at_an_old_seq_and_time_is_the_vault_as_it_was(mounts, tmp_path):
    m = mounts()
    big = os.urandom(3_000_000)
    (m.path / "d").mkdir()
    (m.path / "d" / "a.txt").write_bytes(b"one\n")
    os.chmod(m.path / "d" / "a.txt", 0o600)
    (m.path / "big.bin").write_bytes(big)
    os.symlink("d/a.txt", m.path / "link")
    (m.path / "empty").write_bytes(b"")
    seq1 = m.sync()["synced_seq"]
    time.sleep(1.1)
    t1 = time.time()            # after seq1's commits, before any later change (by > 1 s)
    time.sleep(1.1)

    (m.path / "d" / "a.txt").write_bytes(b"two, longer\n")
    os.chmod(m.path / "d" / "a.txt", 0o644)
    os.rename(m.path / "d", m.path / "e")
    os.unlink(m.path / "big.bin")
    os.unlink(m.path / "link")
    seq2 = m.sync()["synced_seq"]
    assert seq2 > seq1

    old = m.path / ".gobi" / "at" / f"@{seq1}"
    t0 = time.perf_counter()
    assert sorted(os.listdir(old)) == ["big.bin", "d", "empty", "link"]
    list_ms = (time.perf_counter() - t0) * 1000
    assert (old / "d" / "a.txt").read_bytes() == b"one\n"
    assert stat.S_IMODE(os.stat(old / "d" / "a.txt").st_mode) == 0o600
    assert os.readlink(old / "link") == "d/a.txt"
    assert (old / "link").read_bytes() == b"one\n"
    assert (old / "big.bin").read_bytes() == big
    assert (old / "empty").read_bytes() == b""
    assert os.path.isdir(old / "d") and os.stat(old / "big.bin").st_size == len(big)
    # The tools: cat, find, readlink, cp -a (modes and symlinks kept).
    assert subprocess.run(["cat", str(old / "d" / "a.txt")], capture_output=True).stdout == b"one\n"
    found = subprocess.run(["find", "."], cwd=old, capture_output=True, text=True, check=True).stdout
    assert sorted(found.split()) == [".", "./big.bin", "./d", "./d/a.txt", "./empty", "./link"]
    assert subprocess.run(["readlink", str(old / "link")], capture_output=True, text=True).stdout == "d/a.txt\n"
    subprocess.run(["cp", "-a", str(old), str(tmp_path / "copy")], check=True)
    assert _tree(tmp_path / "copy") == _tree(old)
    assert stat.S_IMODE(os.stat(tmp_path / "copy" / "d" / "a.txt").st_mode) == 0o600
    assert filecmp.cmp(tmp_path / "copy" / "big.bin", old / "big.bin", shallow=False)

    # The same seq without '@', and the head's view: the new state.
    assert sorted(os.listdir(m.path / ".gobi" / "at" / str(seq1))) == ["big.bin", "d", "empty", "link"]
    new = m.path / ".gobi" / "at" / str(seq2)
    assert sorted(os.listdir(new)) == ["e", "empty"]
    assert (new / "e" / "a.txt").read_bytes() == b"two, longer\n"
    assert stat.S_IMODE(os.stat(new / "e" / "a.txt").st_mode) == 0o644
    # The live tree is untouched by all this.
    assert sorted(os.listdir(m.path)) == ["e", "empty"]

    # By time: local (no offset), UTC with Z, and with an offset; seconds and microseconds.
    local = datetime.fromtimestamp(t1)
    utc = datetime.fromtimestamp(t1, timezone.utc)
    for name in (local.strftime("%Y-%m-%dT%H:%M:%S"), local.isoformat(),
                 utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 utc.astimezone(timezone(timedelta(hours=-3))).isoformat()):
        view = m.path / ".gobi" / "at" / name
        assert sorted(os.listdir(view)) == ["big.bin", "d", "empty", "link"], name
        assert (view / "d" / "a.txt").read_bytes() == b"one\n", name
    print(f"\nlisting a view of 6 nodes: {list_ms:.1f} ms")


def test_special_files_in_the_view_are_what_they_were(mounts, tmp_path):
    m = mounts()
    os.mkfifo(m.path / "pipe", 0o640)
    os.mknod(m.path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    seq = m.sync()["synced_seq"]
    os.unlink(m.path / "pipe")
    os.unlink(m.path / "null")
    m.sync()
    view = m.path / ".gobi" / "at" / f"@{seq}"

    def kinds(root) -> dict:
        return {name: (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_rdev, st.st_size)
                for name in os.listdir(root) for st in (os.lstat(root / name),)}

    want = {"pipe": (stat.S_IFIFO, 0o640, 0, 0), "null": (stat.S_IFCHR, 0o600, os.makedev(1, 3), 0)}
    assert kinds(view) == want
    ls = subprocess.run(["ls", "-l", str(view)], capture_output=True, text=True, check=True).stdout
    assert sorted(line[0] + line.split()[-1] for line in ls.splitlines()[1:]) == ["cnull", "ppipe"]
    assert _errno_of(os.mkfifo, view / "new") == errno.EROFS
    # cp -a makes them again (mkfifo, mknod) from what the view shows.
    subprocess.run(["cp", "-a", str(view), str(tmp_path / "copy")], check=True)
    assert kinds(tmp_path / "copy") == want


def test_the_view_is_read_only_and_hidden(mounts):
    m = mounts()
    (m.path / "f").write_bytes(b"x")
    (m.path / "dir").mkdir()
    seq = m.sync()["synced_seq"]
    gobi, view = m.path / ".gobi", m.path / ".gobi" / "at" / f"@{seq}"
    assert sorted(os.listdir(view)) == ["dir", "f"]

    # Not listed (ls -a, find, du), found by lookup; .gobi lists 'at', 'at' lists nothing.
    ls = subprocess.run(["ls", "-a", str(m.path)], capture_output=True, text=True, check=True).stdout
    assert sorted(set(ls.split()) - {".", ".."}) == ["dir", "f"]
    found = subprocess.run(["find", str(m.path)], capture_output=True, text=True, check=True).stdout
    assert ".gobi" not in found
    assert os.path.isdir(gobi) and os.listdir(gobi) == ["at"] and os.listdir(gobi / "at") == []
    assert stat.S_IMODE(os.stat(gobi).st_mode) == 0o555

    # Every change under .gobi: EROFS.
    checks = {
        "write": lambda: open(view / "f", "w"),
        "append": lambda: open(view / "f", "a"),
        "create": lambda: open(view / "new", "w"),
        "create in at": lambda: open(gobi / "at" / "new", "w"),
        "mkdir": lambda: os.mkdir(view / "sub"),
        "mkdir in .gobi": lambda: os.mkdir(gobi / "x"),
        "unlink": lambda: os.unlink(view / "f"),
        "rmdir": lambda: os.rmdir(view / "dir"),
        "rename": lambda: os.rename(view / "f", view / "g"),
        "rename in": lambda: os.rename(m.path / "f", view / "g"),
        "rename out": lambda: os.rename(view / "f", m.path / "g"),
        "rename over .gobi": lambda: os.rename(m.path / "dir", gobi),
        "rmdir .gobi": lambda: os.rmdir(gobi),
        "chmod": lambda: os.chmod(view / "f", 0o777),
        "utime": lambda: os.utime(view / "f", (1, 1)),
        "truncate": lambda: os.truncate(view / "f", 0),
        "symlink": lambda: os.symlink("f", view / "l"),
        "setxattr": lambda: os.setxattr(view / "f", "user.x", b"1"),
        "removexattr": lambda: os.removexattr(view / "f", "user.x"),
    }
    got = {what: _errno_of(fn) for what, fn in checks.items()}
    assert got == {what: errno.EROFS for what in checks}, got
    assert (m.path / "f").read_bytes() == b"x" and sorted(os.listdir(m.path)) == ["dir", "f"]
    assert os.listxattr(view / "f") == []

    # Names that are not a view: ENOENT (not parsed, ahead of the head, the future,
    # before the vault existed).
    for name in ("yesterday", "@x", f"@{seq + 1000}", str(seq + 1000), "2999-01-01T00:00",
                 "2001-01-01T00:00:00Z", "2026-13-45"):
        assert _errno_of(os.stat, gobi / "at" / name) == errno.ENOENT, name
    assert _errno_of(os.stat, gobi / "nope") == errno.ENOENT
    assert _errno_of(os.stat, view / "nope") == errno.ENOENT
    log = m.log()
    assert "ahead of" in log or "refused" in log
    assert "in the future" in log


def test_offline_the_view_fails_fast(server, mounts):
    m = mounts()
    (m.path / "f").write_bytes(os.urandom(200_000))
    (m.path / "g").write_bytes(b"g")
    seq1 = m.sync()["synced_seq"]
    (m.path / "h").write_bytes(b"h")
    seq2 = m.sync()["synced_seq"]
    view = m.path / ".gobi" / "at" / str(seq1)
    assert sorted(os.listdir(view)) == ["f", "g"]           # listed while online
    server.stop()
    try:
        t0 = time.monotonic()
        assert sorted(os.listdir(view)) == ["f", "g"]       # kept in memory
        assert _errno_of((view / "f").read_bytes) == errno.ENETUNREACH
        assert _errno_of(os.listdir, m.path / ".gobi" / "at" / str(seq2)) == errno.ENETUNREACH
        assert time.monotonic() - t0 < 15
    finally:
        server.start()
    m.sync()
    assert (view / "f").read_bytes() == (m.path / "f").read_bytes()
