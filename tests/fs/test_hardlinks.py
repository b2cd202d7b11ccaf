"""Hard links made on the mount: link(2) (issue 17, item 1 — the mount's part).

Written from the Linux man pages link(2), unlink(2), rename(2) and stat(2), what a demanding
user expects once ``ln a b`` works in the mount: the names are one file to the kernel (one
``st_ino``, ``st_nlink`` counting the names), a write, ``chmod`` or ``utime`` through one
name shows through every other at once on the same machine, link(2)'s errnos are those of
a local filesystem, unlinking a name leaves the file to its other names and to its open
descriptors, and a rename of one name over another name of the same file does nothing.
Beyond one machine: the names reach the server as links (nodes sharing ``inode``,
``docs/api.md`` "Hard links"), other mounts show them as one file, links survive a restart
and a kill -9, links made offline upload when the link comes back, and links made by other
clients show as one file here. Then the tools that depend on hard links: maildir delivery
(link tmp/x to new/x, unlink tmp/x), ``cp -al`` and ``git clone --local``.

Names that do not make a link (the server's other name stays a file of its own to an older
mount) are in ``tests/fs/test_links.py``; the server's side in ``tests/server/test_links.py``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.needs import require_tool

from .mounts import caught_up, eventually, read, server_file, server_node, server_tree


# -- helpers -------------------------------------------------------------------------------

def names_of_one_file(root: Path, *rels: str, nlink: int | None = None) -> int:
    """Assert that ``rels`` (relative to ``root``) are names of one file: the same
    ``st_ino`` and each ``st_nlink`` equal to ``nlink`` (default: the number of names
    given). Returns the inode number."""
    want = len(rels) if nlink is None else nlink
    sts = {rel: os.lstat(root / rel) for rel in rels}
    inos = {rel: st.st_ino for rel, st in sts.items()}
    nlinks = {rel: st.st_nlink for rel, st in sts.items()}
    assert len(set(inos.values())) == 1, \
        f"{root.name}: {', '.join(rels)} should be one file (one st_ino), got st_ino {inos}"
    assert set(nlinks.values()) == {want}, \
        f"{root.name}: every name of the file should have st_nlink {want}, got {nlinks}"
    return next(iter(inos.values()))


def eventually_one_file(root: Path, *rels: str, what: str, nlink: int | None = None) -> None:
    """Wait until ``names_of_one_file`` holds; on timeout say what it found last."""
    last: list[str] = []

    def cond() -> bool:
        try:
            names_of_one_file(root, *rels, nlink=nlink)
        except (AssertionError, FileNotFoundError) as exc:
            last[:] = [str(exc)]
            return False
        return True

    try:
        eventually(cond, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last check: {last[0].splitlines()[0] if last else '-'}") from None


def server_links(user, vault: str, *paths: str) -> list[dict]:
    """Assert that the server has ``paths`` as names of one file: distinct nodes that share
    a non-null ``inode``. Returns the nodes."""
    nodes = [server_node(user, vault, p) for p in paths]
    missing = [p for p, n in zip(paths, nodes) if n is None]
    assert not missing, f"the server should have every name of the file, it lacks {missing}"
    ids = [n["id"] for n in nodes]
    assert len(set(ids)) == len(ids), f"each name should be a node of its own: {dict(zip(paths, ids))}"
    inodes = {p: n.get("inode") for p, n in zip(paths, nodes)}
    assert None not in inodes.values() and len(set(inodes.values())) == 1, \
        f"the server's names should share one non-null inode (linked), got {inodes}"
    return nodes


def assert_errno(expected: int, fn, *args, what: str, **kw) -> None:
    with pytest.raises(OSError) as err:
        fn(*args, **kw)
    assert err.value.errno == expected, \
        f"{what}: expected {errno.errorcode[expected]}, got {errno.errorcode.get(err.value.errno, err.value.errno)} ({err.value})"


def run(*cmd: str, cwd: Path | None = None, env: dict | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def clean(*ms) -> None:
    for m in ms:
        report = m.verify()
        assert report["difference_count"] == 0, f"gobi verify on {m.path.name} found differences: {report}"


# -- one mount: link(2) and the kernel's view --------------------------------------------------

def test_a_link_is_one_file_under_two_names(mnt):
    p = mnt.path
    (p / "a").write_bytes(b"one\n")
    ino = os.stat(p / "a").st_ino
    os.link(p / "a", p / "b")
    assert names_of_one_file(p, "a", "b") == ino, "the file keeps its inode number when it gains a name"
    assert (p / "b").read_bytes() == b"one\n", "the new name should read the file's bytes"
    assert sorted(os.listdir(p)) == ["a", "b"]
    d_ino = {e.name: e.inode() for e in os.scandir(p)}
    assert d_ino == {"a": ino, "b": ino}, f"readdir's d_ino should be the file's st_ino {ino} for both names: {d_ino}"
    # A third name in another directory, then back down.
    (p / "d").mkdir()
    os.link(p / "b", p / "d" / "c")
    names_of_one_file(p, "a", "b", "d/c")
    os.unlink(p / "b")
    names_of_one_file(p, "a", "d/c")
    os.unlink(p / "d" / "c")
    names_of_one_file(p, "a")
    assert os.listdir(p / "d") == [], "an unlinked name leaves its directory"
    assert (p / "a").read_bytes() == b"one\n", "unlinking the other names leaves a's bytes"


def test_writes_through_one_name_show_through_the_other_at_once(mnt):
    p = mnt.path
    (p / "a").write_bytes(b"hello world\n")
    (p / "d").mkdir()
    os.link(p / "a", p / "d" / "b")
    fd_b = os.open(p / "d" / "b", os.O_RDONLY)     # opened before the write through a
    try:
        with open(p / "a", "r+b") as f:              # in place, without closing first
            f.write(b"HELLO")
            f.flush()
            assert (p / "d" / "b").read_bytes() == b"HELLO world\n", \
                "a write through a should be visible through d/b before a is closed"
        with open(p / "a", "ab") as f:
            f.write(b"appended\n")
        assert os.pread(fd_b, 100, 0) == b"HELLO world\nappended\n", \
            "a descriptor open on d/b should read what was written through a"
        assert os.stat(p / "d" / "b").st_size == len(b"HELLO world\nappended\n"), \
            "d/b's size should follow the append through a"
        with open(p / "d" / "b", "ab") as f:         # and the other way
            f.write(b"via b\n")
        assert (p / "a").read_bytes() == b"HELLO world\nappended\nvia b\n", \
            "an append through d/b should show through a"
        os.truncate(p / "d" / "b", 5)
        assert (p / "a").read_bytes() == b"HELLO", "a truncate through d/b should show through a"
    finally:
        os.close(fd_b)


def test_chmod_and_utime_through_one_name_show_on_the_other(mnt):
    p = mnt.path
    (p / "a").write_bytes(b"x")
    os.link(p / "a", p / "b")
    os.chmod(p / "a", 0o600)
    assert os.stat(p / "b").st_mode & 0o7777 == 0o600, "chmod through a should show on b"
    os.utime(p / "b", ns=(5_000_000_000, 7_000_000_000))
    st = os.stat(p / "a")
    assert (st.st_atime_ns, st.st_mtime_ns) == (5_000_000_000, 7_000_000_000), \
        "utime through b should show on a"


def test_link_changes_the_files_ctime_not_its_mtime(mnt):
    """link(2): the file's last status change time and the new entry's directory's
    modification time are updated; the file's modification time is not."""
    p = mnt.path
    (p / "d").mkdir()
    (p / "a").write_bytes(b"x")
    before, dir_before = os.stat(p / "a"), os.stat(p / "d")
    time.sleep(0.05)
    os.link(p / "a", p / "d" / "b")
    after, dir_after = os.stat(p / "a"), os.stat(p / "d")
    assert after.st_ctime_ns > before.st_ctime_ns, "link(2) should update the file's st_ctime"
    assert after.st_mtime_ns == before.st_mtime_ns, "link(2) should not change the file's st_mtime"
    assert dir_after.st_mtime_ns > dir_before.st_mtime_ns, \
        "link(2) should update the st_mtime of the directory that gains the name"


def test_link_errnos_match_linux(mnt):
    p = mnt.path
    (p / "a").write_bytes(b"a")
    (p / "other").write_bytes(b"other")
    (p / "d").mkdir()
    assert_errno(errno.EPERM, os.link, p / "d", p / "d2", what="link(2) of a directory")
    assert_errno(errno.EEXIST, os.link, p / "a", p / "other", what="link(2) onto an existing file")
    assert_errno(errno.EEXIST, os.link, p / "a", p / "d", what="link(2) onto an existing directory")
    assert_errno(errno.ENOENT, os.link, p / "missing", p / "x", what="link(2) of a missing source")
    assert_errno(errno.ENOENT, os.link, p / "a", p / "nodir" / "x", what="link(2) into a missing directory")
    assert_errno(errno.ENOTDIR, os.link, p / "a", p / "other" / "x", what="link(2) under a file")
    assert sorted(os.listdir(p)) == ["a", "d", "other"], "a refused link(2) should leave no name"
    assert (p / "other").read_bytes() == b"other", "EEXIST should leave the existing file as it was"
    assert os.stat(p / "a").st_nlink == 1 and os.listdir(p / "d") == [], \
        "a refused link(2) should not change the link count"


def test_a_symlink_can_be_linked_itself(mnt):
    """linkat(2) without AT_SYMLINK_FOLLOW (link(2) on Linux) links the symlink, not its
    target; ``cp -al`` relies on it for trees with symlinks."""
    p = mnt.path
    (p / "target").write_bytes(b"t")
    os.symlink("target", p / "sl")
    os.link(p / "sl", p / "sl2", follow_symlinks=False)
    names_of_one_file(p, "sl", "sl2")
    assert os.readlink(p / "sl2") == "target", "the second name should be the same symlink"
    assert os.stat(p / "target").st_nlink == 1, "the symlink's target should not gain a name"


# -- unlink(2) and open descriptors ----------------------------------------------------------

def test_unlinking_the_first_name_leaves_the_file_to_the_other(mnt):
    p = mnt.path
    (p / "a").write_bytes(b"content\n")
    os.link(p / "a", p / "b")
    ino = os.stat(p / "a").st_ino
    fd = os.open(p / "a", os.O_RDWR)
    try:
        assert os.fstat(fd).st_nlink == 2, "fstat through an open descriptor: 2 names"
        os.unlink(p / "a")
        assert not os.path.lexists(p / "a"), "the unlinked name should be gone"
        assert names_of_one_file(p, "b") == ino, "b should keep the file's inode number"
        assert (p / "b").read_bytes() == b"content\n", "b should keep the content"
        assert os.fstat(fd).st_nlink == 1, "fstat through a descriptor opened as a: one name left"
        os.pwrite(fd, b"CONTENT", 0)
        assert (p / "b").read_bytes() == b"CONTENT\n", "a write through the descriptor should show on b"
        os.unlink(p / "b")
        assert os.listdir(p) == [], "no name should be left"
        assert os.fstat(fd).st_nlink == 0, "after the last name is unlinked fstat should say 0 links"
        assert os.pread(fd, 100, 0) == b"CONTENT\n", "the open descriptor should still read the data"
    finally:
        os.close(fd)
    mnt.sync()
    assert server_tree(mnt.user, mnt.vault) == {}, "no name of the file should be left on the server"


def test_unlinking_the_first_name_after_sync_keeps_the_other_on_the_server(mounts, user, vault):
    a = mounts("a")
    (a.path / "orig").write_bytes(b"v1\n")
    os.link(a.path / "orig", a.path / "alias")
    a.sync()
    server_links(user, vault, "orig", "alias")
    os.unlink(a.path / "orig")
    with open(a.path / "alias", "ab") as f:          # a commit through the name that is left
        f.write(b"v2\n")
    a.sync()
    assert server_node(user, vault, "orig") is None, "the unlinked name should be gone from the server"
    assert server_file(user, vault, "alias") == b"v1\nv2\n", "the write through alias should reach the server"
    fresh = mounts("fresh")
    names_of_one_file(fresh.path, "alias")
    assert read(fresh, "alias") == b"v1\nv2\n"
    assert sorted(os.listdir(fresh.path)) == ["alias"], "the fresh mount should show only alias"
    clean(a, fresh)


# -- rename(2) ---------------------------------------------------------------------------------

def test_rename_onto_another_name_of_the_same_file_does_nothing(mnt, user, vault):
    """rename(2): if oldpath and newpath are existing hard links referring to the same
    file, rename() does nothing, and returns a success status."""
    p = mnt.path
    (p / "a").write_bytes(b"x")
    os.link(p / "a", p / "b")
    os.rename(p / "a", p / "b")
    assert sorted(os.listdir(p)) == ["a", "b"], "both names should stay"
    names_of_one_file(p, "a", "b")
    mnt.sync()
    server_links(user, vault, "a", "b")


def test_a_renamed_name_stays_a_link(mnt, user, vault):
    p = mnt.path
    (p / "a").write_bytes(b"x")
    os.link(p / "a", p / "b")
    ino = os.stat(p / "a").st_ino
    (p / "d").mkdir()
    os.rename(p / "b", p / "d" / "moved")
    assert not os.path.lexists(p / "b"), "the renamed name should be gone"
    assert names_of_one_file(p, "a", "d/moved") == ino, "a rename should not change the file's inode number"
    mnt.sync()
    assert server_node(user, vault, "b") is None
    server_links(user, vault, "a", "d/moved")


def test_renaming_another_file_over_one_name_leaves_the_other(mnt, user, vault):
    p = mnt.path
    (p / "a").write_bytes(b"linked\n")
    os.link(p / "a", p / "b")
    (p / "z").write_bytes(b"another file\n")
    os.rename(p / "z", p / "b")
    assert (p / "b").read_bytes() == b"another file\n", "b should now be the renamed file"
    assert (p / "a").read_bytes() == b"linked\n", "the file should live on under a"
    assert (os.stat(p / "a").st_nlink, os.stat(p / "b").st_nlink) == (1, 1), \
        "a and b should each be a file with one name after the rename over b"
    assert os.stat(p / "a").st_ino != os.stat(p / "b").st_ino, "a and b should be different files"
    mnt.sync()
    assert server_file(user, vault, "a") == b"linked\n"
    assert server_file(user, vault, "b") == b"another file\n"
    clean(mnt)


# -- the server and other mounts ---------------------------------------------------------------

def test_a_link_reaches_the_server_and_a_running_mount(mounts, user, vault):
    a, b = mounts("a"), mounts("b")
    (a.path / "d").mkdir()
    (a.path / "f").write_bytes(b"shared bytes\n")
    caught_up(a, b)                                   # f is on the server and on b already
    os.link(a.path / "f", a.path / "d" / "g")
    a.sync()
    server_links(user, vault, "f", "d/g")
    assert server_file(user, vault, "f") == server_file(user, vault, "d/g") == b"shared bytes\n"
    caught_up(a, b)
    eventually_one_file(b.path, "f", "d/g", what="b to show f and d/g as one file")
    assert read(b, "d/g") == b"shared bytes\n"
    # A write through one name on b reaches a, through both names.
    with open(b.path / "d" / "g", "r+b") as f:
        f.write(b"SHARED")
    b.sync()
    assert server_file(user, vault, "f") == b"SHARED bytes\n"
    for rel in ("f", "d/g"):
        eventually(lambda rel=rel: read(a, rel) == b"SHARED bytes\n", f"b's write to show on a through {rel}")
    names_of_one_file(a.path, "f", "d/g")
    clean(a, b)


def test_a_link_of_a_new_file_shows_on_a_fresh_mount(mounts, user, vault):
    """The file and its second name are made before anything left the machine (a long
    settle time): the create and the link reach the server in order."""
    a = mounts("a", extra=("--settle", "600"))
    (a.path / "d").mkdir()
    (a.path / "new").write_bytes(b"made and linked at once\n")
    os.link(a.path / "new", a.path / "d" / "second")
    names_of_one_file(a.path, "new", "d/second")
    a.sync()
    server_links(user, vault, "new", "d/second")
    assert server_file(user, vault, "d/second") == b"made and linked at once\n"
    fresh = mounts("fresh")
    names_of_one_file(fresh.path, "new", "d/second")
    assert read(fresh, "new") == read(fresh, "d/second") == b"made and linked at once\n"
    # And a write on the fresh mount reaches the first one through both names.
    with open(fresh.path / "new", "ab") as f:
        f.write(b"more\n")
    fresh.sync()
    for rel in ("new", "d/second"):
        eventually(lambda rel=rel: read(a, rel) == b"made and linked at once\nmore\n",
                   f"the fresh mount's append to show on a through {rel}")
    clean(a, fresh)


def test_a_link_made_elsewhere_shows_as_one_file(mounts, user, vault):
    """Another client (the API here) links a file: the mount shows the names as one file."""
    m = mounts()
    (m.path / "d").mkdir()
    (m.path / "f").write_bytes(b"x\n")
    m.sync()
    f, d = server_node(user, vault, "f"), server_node(user, vault, "d")
    r = user.api.post(f"/vaults/{vault}/nodes/{f['id']}/links", json={"parent": d["id"], "name": "g"})
    assert r.status_code == 201, r.text
    eventually(lambda: read(m, "d/g") == b"x\n", "the remote link's name on the mount")
    eventually_one_file(m.path, "f", "d/g", what="the mount to show f and d/g as one file")
    # The other client removes the first name: the one left has one link.
    f = server_node(user, vault, "f")
    r = user.api.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]})
    assert r.status_code == 200, r.text
    eventually(lambda: not os.path.lexists(m.path / "f"), "the remote unlink on the mount")
    eventually_one_file(m.path, "d/g", what="d/g to be left with st_nlink 1")
    assert read(m, "d/g") == b"x\n"
    clean(m)


# -- restarts and offline ----------------------------------------------------------------------

def test_links_survive_a_restart(mounts, user, vault):
    m = mounts()
    (m.path / "d").mkdir()
    (m.path / "a").write_bytes(b"kept\n")
    os.link(m.path / "a", m.path / "d" / "b")
    m.sync()
    assert m.umount().returncode == 0, "a clean unmount"
    m.start()
    names_of_one_file(m.path, "a", "d/b")
    assert read(m, "d/b") == b"kept\n"
    with open(m.path / "a", "ab") as f:
        f.write(b"after restart\n")
    assert read(m, "d/b") == b"kept\nafter restart\n", "an append through a after the restart should show through d/b"
    m.sync()
    assert server_file(user, vault, "d/b") == b"kept\nafter restart\n"
    clean(m)


def test_a_link_not_uploaded_yet_survives_kill9(mounts, user, vault):
    """fsync of the directory makes the new name durable on this machine (as for rename in
    test_basics); the journal replays the link after a kill -9."""
    m = mounts(extra=("--settle", "600"))
    with open(m.path / "a", "wb") as f:
        f.write(b"durable\n")
        os.fsync(f.fileno())
    os.link(m.path / "a", m.path / "b")
    fd = os.open(m.path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    assert server_tree(user, vault) == {}, "nothing should have left the machine (settle 600 s)"
    m.kill9()
    m.extra = ()
    m.start()
    names_of_one_file(m.path, "a", "b")
    assert read(m, "b") == b"durable\n"
    m.sync()
    server_links(user, vault, "a", "b")
    assert server_file(user, vault, "b") == b"durable\n"
    clean(m)


def test_links_made_offline_reach_the_server(proxied, user, vault):
    m, proxy = proxied("m")
    (m.path / "old").write_bytes(b"synced before\n")
    m.sync()
    proxy.cut()
    eventually(lambda: not m.status()["online"], "the mount to notice its link is cut")
    os.link(m.path / "old", m.path / "old-link")            # a file the server has
    (m.path / "new").write_bytes(b"made offline\n")         # and one it has not
    os.link(m.path / "new", m.path / "new-link")
    names_of_one_file(m.path, "old", "old-link")
    names_of_one_file(m.path, "new", "new-link")
    assert server_node(user, vault, "old-link") is None
    proxy.restore()
    m.sync()
    server_links(user, vault, "old", "old-link")
    server_links(user, vault, "new", "new-link")
    assert server_file(user, vault, "old-link") == b"synced before\n"
    assert server_file(user, vault, "new-link") == b"made offline\n"
    clean(m)


# -- tools -------------------------------------------------------------------------------------

def test_maildir_delivery(mounts, user, vault):
    """Deliver as maildir(5) says: write tmp/<name>, fsync, link it to new/<name>, unlink
    tmp/<name>."""
    m = mounts()
    for d in ("tmp", "new", "cur"):
        (m.path / "Maildir" / d).mkdir(parents=True)
    msg = b"From: a@example.org\nSubject: hi\n\nbody\n"
    name = "1700000000.M1P1.host"
    tmp, new = m.path / "Maildir" / "tmp" / name, m.path / "Maildir" / "new" / name
    with open(tmp, "wb") as f:
        f.write(msg)
        f.flush()
        os.fsync(f.fileno())
    os.link(tmp, new)
    os.unlink(tmp)
    assert os.listdir(m.path / "Maildir" / "tmp") == [], "tmp/ should be empty after delivery"
    names_of_one_file(m.path, f"Maildir/new/{name}")
    m.sync()
    assert server_node(user, vault, f"Maildir/tmp/{name}") is None, "tmp/ should be empty on the server"
    assert server_file(user, vault, f"Maildir/new/{name}") == msg
    fresh = mounts("fresh")
    assert os.listdir(fresh.path / "Maildir" / "tmp") == [], "tmp/ should be empty on a fresh mount"
    assert os.listdir(fresh.path / "Maildir" / "new") == [name], "new/ should hold the message on a fresh mount"
    assert read(fresh, f"Maildir/new/{name}") == msg
    names_of_one_file(fresh.path, f"Maildir/new/{name}")
    clean(m, fresh)


def test_cp_al_then_edit_in_place_then_rm(mounts, user, vault):
    m = mounts()
    src = m.path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    files = {"top.txt": b"top\n", "sub/mid.txt": b"mid\n", "sub/deeper/low.bin": os.urandom(70_000)}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    run("cp", "-al", str(src), str(m.path / "dst"))
    for rel in files:
        names_of_one_file(m.path, f"src/{rel}", f"dst/{rel}")
    assert os.stat(src / "sub").st_ino != os.stat(m.path / "dst" / "sub").st_ino, "directories are copied"
    with open(m.path / "dst" / "sub" / "mid.txt", "r+b") as f:      # edit in place
        f.write(b"MID")
    assert (src / "sub" / "mid.txt").read_bytes() == b"MID\n", "an edit through dst should show in src"
    files["sub/mid.txt"] = b"MID\n"
    m.sync()
    for rel in files:
        server_links(user, vault, f"src/{rel}", f"dst/{rel}")
    other = mounts("other")
    for rel, data in files.items():
        names_of_one_file(other.path, f"src/{rel}", f"dst/{rel}")
        assert read(other, f"dst/{rel}") == data, rel
    run("rm", "-rf", str(m.path / "dst"))
    for rel, data in files.items():
        assert (src / rel).read_bytes() == data, f"rm -rf dst should leave src/{rel}"
        names_of_one_file(m.path, f"src/{rel}")
    caught_up(m, other)
    assert not os.path.lexists(other.path / "dst"), "rm -rf dst should reach the other mount"
    for rel, data in files.items():
        assert read(other, f"src/{rel}") == data, f"src/{rel} on the other mount after rm -rf dst"
        assert server_file(user, vault, f"src/{rel}") == data
    for rel in files:
        eventually_one_file(other.path, f"src/{rel}", what=f"src/{rel} to have st_nlink 1 on the other mount")
    clean(m, other)


def test_git_clone_local_inside_the_mount(mounts, user, vault, tmp_path):
    """``git clone --local`` hard-links the objects (and dies if it cannot: without
    ``--local`` git falls back to copying, which would hide a refused link(2))."""
    require_tool("git", "git")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(tmp_path)}
    m = mounts()
    repo = m.path / "repo"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo, env=env)
    for i in range(3):
        (repo / f"file{i}.txt").write_text(f"version {i}\n")
        run("git", "add", "-A", cwd=repo, env=env)
        run("git", "commit", "-q", "-m", f"commit {i}", cwd=repo, env=env)
    run("git", "clone", "-q", "--local", str(repo), str(m.path / "clone"), env=env)
    objects = sorted(q.relative_to(repo / ".git" / "objects")
                     for q in (repo / ".git" / "objects").glob("??/*"))
    assert objects, "the repository should have loose objects"
    for rel in objects:
        names_of_one_file(m.path, f"repo/.git/objects/{rel}", f"clone/.git/objects/{rel}")
    run("git", "-C", str(m.path / "clone"), "fsck", "--strict", env=env)
    assert run("git", "-C", str(m.path / "clone"), "log", "--format=%s", env=env).splitlines() == \
        ["commit 2", "commit 1", "commit 0"]
    assert run("git", "-C", str(m.path / "clone"), "status", "--porcelain", env=env) == ""
    m.sync()
    server_links(user, vault, f"repo/.git/objects/{objects[0]}", f"clone/.git/objects/{objects[0]}")
    other = mounts("other")
    run("git", "-C", str(other.path / "clone"), "fsck", "--strict", env=env)
    assert run("git", "-C", str(other.path / "clone"), "log", "--format=%s", env=env).splitlines() == \
        ["commit 2", "commit 1", "commit 0"]
    clean(m)
