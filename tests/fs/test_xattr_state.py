"""Per-file sync state as extended attributes (issue 8, item 4), read the way people and
file managers read them (getfattr), and what copying tools do with them.

``user.gobi.*`` attributes are virtual: readable by name, never listed, never stored, never
settable; other namespaces answer "not supported" so ``ls -l`` stops asking.
"""

from __future__ import annotations

import errno
import os
import subprocess

import httpx
import pytest

from gobi.fs.blocks import BlockCache
from gobi.fs.progress import UploadProgress
from gobi.fs.tree import Tree
from gobi.fs.vfs import Link, Vfs
from gobi.fs.xattrs import Xattrs

from tests.needs import missing

from .mounts import eventually, server_node


def getfattr(path, name: str) -> str:
    r = subprocess.run(["getfattr", "--only-values", "--absolute-names", "-n", name, str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(r.stderr.strip())
    return r.stdout


def state(path) -> str:
    return getfattr(path, "user.gobi.state")


def test_state_and_rev_follow_a_file(mounts, user, vault):
    # Nothing new uploads until asked, nor a file open for writing until it is closed.
    m = mounts(extra=("--settle", "600", "--quiet", "600"))
    f = m.path / "notes.txt"
    f.write_text("first")
    (m.path / "dir").mkdir()
    assert state(f) == "pending"
    assert state(m.path / "dir") == "pending"
    assert state(m.path) == "pending"              # the root sums up the whole mount
    with pytest.raises(OSError, match="No such attribute"):
        getfattr(f, "user.gobi.rev")               # the server has never seen it

    m.sync()
    assert state(f) == "synced"
    assert state(m.path / "dir") == "synced"
    assert state(m.path) == "synced"
    rev = int(getfattr(f, "user.gobi.rev"))
    assert rev == server_node(user, vault, "notes.txt")["rev"]

    # Another machine: listed but not fetched yet, then read.
    m2 = mounts("second")
    g = m2.path / "notes.txt"
    assert eventually(lambda: g.exists(), "the file on the second mount")
    assert state(g) == "online-only"
    assert g.read_text() == "first"
    assert state(g) == "synced"

    # A local change: pending until uploaded (held here while the file is open for
    # writing; an edit of a closed file starts uploading at once), then a newer revision.
    with open(f, "a") as fh:
        fh.write(", second")
        fh.flush()
        os.fsync(fh.fileno())
        assert state(f) == "pending"
    m.sync()
    assert state(f) == "synced"
    assert int(getfattr(f, "user.gobi.rev")) > rev

    # Removed while open: on its way (the delete goes at once), then deleted.
    fd = os.open(f, os.O_RDONLY)
    try:
        os.unlink(f)
        assert os.getxattr(fd, "user.gobi.state") in (b"pending", b"uploading", b"deleted")
        m.sync()
        assert os.getxattr(fd, "user.gobi.state") == b"deleted"
    finally:
        os.close(fd)


def test_gobi_attributes_are_not_listed_copied_or_settable(mnt, tmp_path):
    d = mnt.path / "docs"
    d.mkdir()
    f = d / "a.txt"
    f.write_text("data")
    subprocess.run(["setfattr", "-n", "user.tag", "-v", "blue", str(f)], check=True)
    mnt.sync()

    # Listed: only the user's own attribute (getfattr -d dumps what listxattr lists).
    assert os.listxattr(f) == ["user.tag"]
    dump = subprocess.run(["getfattr", "-d", "--absolute-names", str(f)], capture_output=True,
                          text=True, check=True).stdout
    assert 'user.tag="blue"' in dump and "user.gobi" not in dump
    assert state(f) == "synced"

    # Setting or removing gobi's attributes: a clear "Operation not permitted".
    r = subprocess.run(["setfattr", "-n", "user.gobi.state", "-v", "synced", str(f)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    for call in (lambda: os.setxattr(f, "user.gobi.rev", b"1"),
                 lambda: os.removexattr(f, "user.gobi.state"),
                 lambda: os.setxattr(mnt.path, "user.gobi.status", b"{}")):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM

    # Other namespaces are not supported (what ls -l and cp -a probe).
    for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
        with pytest.raises(OSError) as e:
            os.getxattr(f, name)
        assert e.value.errno == errno.EOPNOTSUPP

    # cp -a and rsync -aX out of the mount: the user's attribute travels, gobi's do not.
    out = tmp_path / "out"
    r = subprocess.run(["cp", "-a", str(d), str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert os.listxattr(out / "a.txt") == ["user.tag"]
    out2 = tmp_path / "out2"
    r = subprocess.run(["rsync", "-aX", f"{d}/", f"{out2}/"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.listxattr(out2 / "a.txt") == ["user.tag"]

    # … and back in: silently, and the state is the mount's own.
    r = subprocess.run(["cp", "-a", str(out), str(mnt.path / "back")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert os.getxattr(mnt.path / "back" / "a.txt", "user.tag") == b"blue"
    assert state(mnt.path / "back" / "a.txt") in ("pending", "uploading", "synced")
    r = subprocess.run(["rsync", "-aX", f"{out2}/", f"{mnt.path / 'back2'}/"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    # A second rsync -X finds nothing to change (no attribute it cannot set or remove).
    r = subprocess.run(["rsync", "-aX", "--itemize-changes", f"{out2}/", f"{mnt.path / 'back2'}/"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr

    # A file that carries a stale user.gobi.state from elsewhere: cp -a copies it without
    # a word (it does not insist on xattrs), cp --preserve=xattr (which does) says why it
    # cannot; either way the state stays the mount's own.
    stale = tmp_path / "stale.txt"
    stale.write_text("x")
    try:
        os.setxattr(stale, "user.gobi.state", b"conflict")
    except OSError:
        missing(f"the filesystem of {tmp_path} has no user xattrs (mount it with user_xattr)")
    r = subprocess.run(["cp", "-a", str(stale), str(mnt.path / "stale.txt")], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (mnt.path / "stale.txt").read_text() == "x"
    r = subprocess.run(["cp", "--preserve=xattr", str(stale), str(mnt.path / "stale2.txt")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    for name in ("stale.txt", "stale2.txt"):
        assert os.listxattr(mnt.path / name) == []
        assert state(mnt.path / name) in ("pending", "uploading", "synced")


def test_ls_l_asks_unsupported_xattrs_once_not_per_file(mounts):
    port = _free_port()
    m = mounts(extra=("--metrics", f"127.0.0.1:{port}"))
    d = m.path / "many"
    d.mkdir()
    for i in range(300):
        (d / f"f{i:03}").write_bytes(b"x")

    def getxattr_requests() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("gobi_mount_fuse_requests_total{") and 'op="getxattr"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    for _ in range(2):                  # cold-ish, then warm
        before = getxattr_requests()
        out = subprocess.run(["ls", "-l", str(d)], capture_output=True, text=True, check=True).stdout
        assert len(out.splitlines()) == 301
        # security.selinux and system.posix_acl_access, once each (not 300 times).
        assert getxattr_requests() - before <= 4


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uploading_and_conflict_states(tmp_path):
    """The precedence of states, with the real mirror, cache and progress tracker (the
    uploading moment and an open conflict are hard to catch from outside on purpose)."""
    tree = Tree(tmp_path / "mirror.db")
    try:
        cache = BlockCache(tmp_path / "cache", 1 << 20)
        vfs = Vfs(tree, cache, None, Link(), os.getuid(), os.getgid())
        progress = UploadProgress(tree, vfs, cache)
        conflicts: set[str] = set()
        x = Xattrs(tree, vfs, lambda: {}, lambda v: None, progress=progress,
                   conflicts=lambda: conflicts)
        e = tree.make(1, b"f", "file", 0o644, 0, 0)
        vfs.new_staging(e.ino)
        assert x.state(tree.get(e.ino)) == "pending"
        entry = tree.journal.entries()[0]
        progress.started(entry)
        assert x.state(tree.get(e.ino)) == "uploading"
        assert x.state(tree.get(1)) == "uploading"
        progress.finished(entry, "ok")
        with tree.tx():
            tree.journal.done(entry.seq)
            tree.update(e.ino, dirty=0, rev=7)
        assert x.state(tree.get(e.ino)) == "synced"          # staged: content is here
        conflicts.add(e.id)
        assert x.state(tree.get(e.ino)) == "conflict"
        assert x.state(tree.get(1)) == "conflict"
    finally:
        tree.close()
