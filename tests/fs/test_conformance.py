"""POSIX conformance of the mount, written from the Linux man pages (issue 17, item 7), each
scenario run side by side on the mount and on a local directory: the same calls must give
the same results. This module grows with issue 17; what the mount still refuses on purpose
is in tests/fs/test_posix.py.

So far: directory listings with ``.`` and ``..`` (getdents(2), readdir(3)); link counts
(stat(2) ``st_nlink``: a directory has 2 + one per subdirectory; a file unlinked while open
has 0, fstat(2) through the open descriptor); special files (mkfifo(3), mknod(2) of a
character device, bind(2) of a unix socket: their type bits and ``st_rdev``, ``ls -l``,
a FIFO passing bytes, a socket accepting a connection, rename over another name, unlink);
hard links (link(2), unlink(2), rename(2): one inode under several names, ``st_nlink``,
``st_ctime``, content and mode through any name, the last name unlinked while open, the
errnos of what link(2) refuses).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path


def _links(root: Path) -> list:
    """Link counts through a sequence of directory changes."""
    out = []
    d = root / "d"
    d.mkdir()
    out.append(("empty dir", os.stat(d).st_nlink))
    for name in ("a", "b", "c"):
        (d / name).mkdir()
    (d / "file").write_bytes(b"x")
    out.append(("3 subdirs + a file", os.stat(d).st_nlink))
    (d / "a" / "deeper").mkdir()
    out.append(("a grandchild", os.stat(d).st_nlink, os.stat(d / "a").st_nlink))
    (root / "e").mkdir()
    os.rename(d / "b", root / "e" / "b")           # a subdirectory moves to another parent
    out.append(("moved out", os.stat(d).st_nlink, os.stat(root / "e").st_nlink))
    os.rmdir(d / "c")
    out.append(("removed", os.stat(d).st_nlink))
    os.rename(d / "file", d / "a" / "file")        # files do not count
    out.append(("file moved", os.stat(d).st_nlink, os.stat(d / "a").st_nlink))

    f = root / "open-unlinked"
    f.write_bytes(b"still readable")
    fd = os.open(f, os.O_RDONLY)
    try:
        out.append(("before unlink", os.fstat(fd).st_nlink))
        os.unlink(f)
        out.append(("after unlink", os.fstat(fd).st_nlink, os.pread(fd, 100, 0)))
    finally:
        os.close(fd)
    return out


def _hard_links(root: Path) -> list:
    """link(2) and what follows from it, as observable results (inode numbers are compared
    as "same or not", never by value)."""
    out = []
    d, e = root / "hl", root / "hl" / "sub"
    d.mkdir()
    e.mkdir()
    a = d / "a"
    a.write_bytes(b"one\n")
    before = os.stat(a)
    time.sleep(0.01)
    os.link(a, e / "b")
    sa, sb = os.stat(a), os.stat(e / "b")
    out.append(("linked", sa.st_ino == sb.st_ino, sa.st_nlink, sb.st_nlink,
                sa.st_ctime_ns > before.st_ctime_ns, os.stat(d).st_nlink))
    os.link(e / "b", d / "c")
    out.append(("third name", os.stat(a).st_nlink, sorted(os.listdir(d)), sorted(os.listdir(e))))
    with open(e / "b", "ab") as f:                  # content through one name …
        f.write(b"two\n")
    out.append(("append through b", (d / "c").read_bytes(), os.stat(a).st_size))
    os.chmod(d / "c", 0o600)                        # … and attributes
    out.append(("chmod through c", oct(os.stat(a).st_mode & 0o777), oct(os.stat(e / "b").st_mode & 0o777)))
    os.rename(a, d / "c")                           # two names of one file: nothing happens
    out.append(("rename over itself", sorted(os.listdir(d)), os.stat(a).st_nlink))
    os.rename(e / "b", d / "moved")                 # a name moves, the file stays one
    out.append(("moved", os.stat(d / "moved").st_ino == os.stat(a).st_ino, os.stat(a).st_nlink))
    fd = os.open(a, os.O_RDWR)
    try:
        os.unlink(a)                                # the first name goes; the others live
        out.append(("first name gone", os.fstat(fd).st_nlink, os.stat(d / "c").st_nlink,
                    os.stat(d / "c").st_ino == os.fstat(fd).st_ino))
        os.pwrite(fd, b"ONE", 0)
        out.append(("write after", (d / "moved").read_bytes()))
        (d / "other").write_bytes(b"other")
        os.rename(d / "other", d / "c")             # another file replaces one name
        out.append(("replaced", os.fstat(fd).st_nlink, (d / "c").read_bytes()))
        os.unlink(d / "moved")                      # the last name
        out.append(("last name gone", os.fstat(fd).st_nlink, os.pread(fd, 100, 0)))
    finally:
        os.close(fd)
    errs = []
    for src, dst in ((d, d / "dirlink"), (d / "c", d / "sub"), (d / "missing", d / "x"),
                     (d / "c", d / "nodir" / "x")):
        try:
            os.link(src, dst)
            errs.append("made")
        except OSError as exc:
            errs.append(errno.errorcode[exc.errno])
    out.append(("refused", errs))
    s = d / "sym"
    os.symlink("c", s)
    os.link(s, d / "sym2", follow_symlinks=False)   # a symlink can have two names too
    out.append(("symlink linked", os.readlink(d / "sym2"), os.lstat(s).st_nlink,
                os.lstat(s).st_ino == os.lstat(d / "sym2").st_ino))
    out.append(("listing", sorted(os.listdir(d))))
    return out


def _listing(root: Path) -> list:
    out = []
    d = root / "list"
    d.mkdir()
    for i in range(40):
        (d / f"f{i:02}").write_bytes(b"")
    (d / "sub").mkdir()
    names = subprocess.run(["ls", "-a", str(d)], capture_output=True, text=True, check=True).stdout.split()
    out.append(("ls -a", names))
    out.append(("dot is the directory", os.stat(d / ".").st_ino == os.stat(d).st_ino))
    out.append(("dotdot is the parent", os.stat(d / "..").st_ino == os.stat(root).st_ino))
    out.append(("sub/..", os.stat(d / "sub" / "..").st_ino == os.stat(d).st_ino))
    # find walks by readdir (and checks link counts to prune): every entry exactly once.
    found = subprocess.run(["find", str(d)], capture_output=True, text=True, check=True).stdout.split()
    out.append(("find", sorted(os.path.relpath(p, d) for p in found)))
    return out


def _through_fifo(path: Path, data: bytes) -> bytes:
    """A writer thread and a reader pass ``data`` through the FIFO at ``path``. The reader
    opens first without blocking and the writer says when it is open, so a FIFO that does
    not behave as one fails the test instead of hanging it."""
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    opened = threading.Event()
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            wfd = os.open(path, os.O_WRONLY)
        except BaseException as exc:
            failed.append(exc)
            opened.set()
            return
        opened.set()
        try:
            os.write(wfd, data)
        finally:
            os.close(wfd)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert opened.wait(60), "the writer never opened the FIFO"
        if failed:
            raise failed[0]
        os.set_blocking(rfd, True)
        out = b""
        while chunk := os.read(rfd, 65536):     # until the writer closes
            out += chunk
        return out
    finally:
        t.join(60)
        os.close(rfd)


def _special(root: Path) -> list:
    out = []
    d = root / "sp"
    d.mkdir()
    # A short address for bind(2) (sun_path holds 108 bytes) whatever the test's path.
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkfifo(d / "fifo", 0o640)
        os.mknod(d / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(f"/proc/self/fd/{dfd}/sock")
        server.listen(1)
        for name in ("fifo", "null", "sock"):
            st = os.stat(d / name)
            out.append((name, stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_rdev,
                        st.st_size, st.st_nlink))
            st = os.lstat(d / name)
            out.append((name, "lstat", stat.S_IFMT(st.st_mode), st.st_rdev))
        ls = subprocess.run(["ls", "-l", str(d)], capture_output=True, text=True, check=True).stdout
        out.append(("ls -l types", sorted((line.split()[-1], line[0]) for line in ls.splitlines()[1:])))
        out.append(("listdir", sorted(os.listdir(d))))
        out.append(("through the FIFO", _through_fifo(d / "fifo", b"through the pipe\n" * 1000)))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(f"/proc/self/fd/{dfd}/sock")
        conn, _ = server.accept()
        client.sendall(b"over the socket")
        client.close()
        out.append(("through the socket", conn.recv(100)))
        conn.close()
        server.close()
        # rename(2) of a FIFO over another name: the target goes, the FIFO takes its name
        os.mkfifo(d / "other", 0o600)
        os.rename(d / "fifo", d / "other")
        st = os.stat(d / "other")
        out.append(("renamed over", sorted(os.listdir(d)), stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode))))
        out.append(("still a FIFO", _through_fifo(d / "other", b"again")))
        subprocess.run(["rm", str(d / "other"), str(d / "null"), str(d / "sock")], check=True)
        out.append(("rm", os.listdir(d)))
    finally:
        os.close(dfd)
    return out


def test_special_files_match_a_local_filesystem(mnt, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    got = _special(mnt.path)
    assert got == _special(local)
    assert ("ls -l types", [("fifo", "p"), ("null", "c"), ("sock", "s")]) in got
    # What reached the server: nodes without content, renamed and deleted like any node.
    st = mnt.sync()
    assert st["pending_ops"] == 0
    assert mnt.verify()["difference_count"] == 0


def test_link_counts_match_a_local_filesystem(mnt, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    assert _links(mnt.path) == _links(local)


def test_hard_links_match_a_local_filesystem(mnt, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    assert _hard_links(mnt.path) == _hard_links(local)
    # What reached the server: names sharing the file's inode, equal content; nothing to
    # repair. (The second mount's view: tests/fs/test_hardlinks.py.)
    st = mnt.sync()
    assert st["pending_ops"] == 0
    assert mnt.verify()["difference_count"] == 0


def test_listings_with_dots_match_a_local_filesystem(mnt, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    assert _listing(mnt.path) == _listing(local)
    # The mount's root lists its dots too (``ls -la`` of the mount).
    names = subprocess.run(["ls", "-a", str(mnt.path)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names[:2] == [".", ".."]


def _atimes(root: Path) -> list:
    """How reads, writes, listings and utimensat(2) move access times (relatime, the
    default of both the mount and the local disk): whether each step moved the atime."""
    out = []
    f = root / "read-me"
    f.write_bytes(b"x" * 10_000)

    def atime(p=f) -> int:
        return os.stat(p).st_atime_ns

    def step(what: str, action) -> None:
        before = atime()
        time.sleep(0.02)
        action()
        out.append((what, atime() > before))

    step("first read after the write", lambda: f.read_bytes())
    step("read again", lambda: f.read_bytes())
    step("write", lambda: f.write_bytes(b"y" * 10_000))
    step("read after the write", lambda: f.read_bytes())
    step("stat", lambda: os.stat(f))
    os.utime(f, ns=(1_000_000_000_123_456_789, 1_600_000_000_000_000_000))
    st = os.stat(f)
    out.append(("utime sets both", st.st_atime_ns, st.st_mtime_ns))
    step("read after an old atime was set", lambda: f.read_bytes())
    d = root / "dir"
    d.mkdir()
    (d / "child").write_bytes(b"")
    before = atime(d)
    time.sleep(0.02)
    os.listdir(d)
    out.append(("a listing reads the directory", atime(d) > before))
    return out


def test_access_times_match_a_local_filesystem(mnt, tmp_path):
    """atime as on a local disk with relatime (issue 17, item 3), kept locally: no read
    makes an upload, and the mirror keeps it across a remount."""
    local = tmp_path / "local"
    local.mkdir()
    mnt.sync()
    uploads = mnt.status()["uploaded_ops"]
    got = _atimes(mnt.path)
    assert got == _atimes(local)
    st = mnt.sync()
    # The utime and the two writes are uploads; the reads and the listing are not.
    assert st["uploaded_ops"] - uploads <= 6, (uploads, st["uploaded_ops"])
    kept = os.stat(mnt.path / "read-me").st_atime_ns
    mnt.umount()
    mnt.start()
    assert os.stat(mnt.path / "read-me").st_atime_ns == kept


def test_noatime_reads_leave_the_atime(mounts):
    m = mounts("n", extra=("-o", "noatime"))
    f = m.path / "f"
    f.write_bytes(b"data")
    before = os.stat(f).st_atime_ns
    time.sleep(0.02)
    assert f.read_bytes() == b"data"
    assert os.stat(f).st_atime_ns == before
    assert "noatime" in subprocess.run(["findmnt", "-n", "-o", "OPTIONS", str(m.path)],
                                       capture_output=True, text=True, check=True).stdout
