"""The mount as a folder: bytes round-trip to the server, restarts, second mounts,
special files on a second mount, editors' safe-save, delta uploads, fsync durability
across kill -9."""

from __future__ import annotations

import os
import stat

from .mounts import eventually, server_file, server_node, server_tree


def test_files_reach_the_server_and_a_second_mount(mnt, mounts, user, vault):
    p = mnt.path
    (p / "hello.txt").write_bytes(b"hello world\n")
    (p / "docs" / "deep").mkdir(parents=True)
    big = os.urandom(3 * 1024 * 1024 + 17)
    (p / "docs" / "deep" / "big.bin").write_bytes(big)
    (p / "docs" / "link").symlink_to("deep/big.bin")
    os.chmod(p / "hello.txt", 0o600)
    os.utime(p / "hello.txt", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    st = mnt.sync()
    assert st["pending_ops"] == 0 and st["online"]

    assert server_file(user, vault, "hello.txt") == b"hello world\n"
    assert server_file(user, vault, "docs/deep/big.bin") == big
    node = server_node(user, vault, "hello.txt")
    assert node["mode"] == 0o600 and node["mtime_ns"] == 1_600_000_000_123_456_789
    assert server_node(user, vault, "docs/link")["target"] == "deep/big.bin"

    other = mounts("second")        # fresh cache dir: lists the tree, fetches lazily
    q = other.path
    assert sorted(os.listdir(q)) == ["docs", "hello.txt"]
    assert (q / "hello.txt").read_bytes() == b"hello world\n"
    assert (q / "docs" / "link").read_bytes() == big
    assert os.readlink(q / "docs" / "link") == "deep/big.bin"
    s = os.stat(q / "hello.txt")
    assert s.st_mode & 0o7777 == 0o600 and s.st_mtime_ns == 1_600_000_000_123_456_789


def test_special_files_reach_a_second_mount(mnt, mounts, user, vault):
    """A FIFO and a device node made on one mount appear on a running second mount (live)
    and on a new one (listed), as what they are; a rename and a delete follow."""
    other = mounts("second")
    p, q = mnt.path, other.path
    os.mkfifo(p / "pipe", 0o640)
    os.mknod(p / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.chmod(p / "null", 0o666)         # (past the umask) a chmod travels too
    mnt.sync()
    pipe, null = server_node(user, vault, "pipe"), server_node(user, vault, "null")
    assert (pipe["kind"], pipe["rdev"], pipe["size"], pipe["content_rev"]) == ("fifo", 0, 0, None)
    assert (null["kind"], null["rdev"]) == ("chardev", os.makedev(1, 3))

    def kinds(root) -> dict:
        return {name: (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_rdev)
                for name in os.listdir(root) for st in (os.lstat(root / name),)}

    want = {"pipe": (stat.S_IFIFO, 0o640, 0), "null": (stat.S_IFCHR, 0o666, os.makedev(1, 3))}
    assert kinds(p) == want
    eventually(lambda: kinds(q) == want, "the special files on the second mount")
    assert kinds(mounts("third").path) == want      # a fresh mount lists them
    os.rename(p / "pipe", p / "pipe2")
    os.unlink(p / "null")
    mnt.sync()
    eventually(lambda: kinds(q) == {"pipe2": want["pipe"]}, "the rename and delete on the second mount")
    assert other.verify()["difference_count"] == 0


def test_remount_serves_from_the_mirror(mnt, user, vault):
    (mnt.path / "a").mkdir()
    data = os.urandom(200_000)
    (mnt.path / "a" / "f").write_bytes(data)
    mnt.sync()
    assert mnt.umount().returncode == 0
    mnt.start()
    assert (mnt.path / "a" / "f").read_bytes() == data
    st = mnt.status()
    assert st["fetched_chunks"] == 0       # served from the block cache, nothing refetched


def test_unlinked_open_file_stays_readable(mnt):
    f = mnt.path / "f"
    f.write_bytes(b"still here")
    with open(f, "rb") as fh:
        os.unlink(f)
        assert not f.exists()
        assert fh.read() == b"still here"
    fd = os.open(mnt.path / "g", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"abc")
    os.unlink(mnt.path / "g")
    os.write(fd, b"def")
    assert os.pread(fd, 10, 0) == b"abcdef"
    os.close(fd)
    mnt.sync()
    assert sorted(os.listdir(mnt.path)) == []


def test_safe_save_is_one_revision(mnt, user, vault):
    f = mnt.path / "notes.txt"
    f.write_text("v1\n")
    mnt.sync()
    before = server_node(user, vault, "notes.txt")
    # The editor pattern: write a temp file, fsync it, rename it over the original.
    tmp = mnt.path / ".notes.txt.swp"
    with open(tmp, "w") as fh:
        fh.write("v2\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, f)
    assert f.read_text() == "v2\n"
    mnt.sync()
    after = server_node(user, vault, "notes.txt")
    assert after["id"] == before["id"]
    assert server_file(user, vault, "notes.txt") == b"v2\n"
    versions = user.api.get(f"/vaults/{vault}/nodes/{after['id']}/versions").json()["versions"]
    assert len(versions) == 2
    events = user.api.get(f"/vaults/{vault}/events", params={"after": 0}).json()["events"]
    assert all(e["node"]["name"] != ".notes.txt.swp" for e in events)   # the temp never left
    assert set(server_tree(user, vault)) == {"notes.txt"}


def test_short_lived_files_are_not_uploaded(mounts, user, vault):
    m = mounts(extra=("--settle", "30"))
    for i in range(20):
        (m.path / f"tmp{i}").write_bytes(b"x" * 1000)
        os.unlink(m.path / f"tmp{i}")
    (m.path / "d").mkdir()
    (m.path / "d" / "x").write_text("x")
    os.unlink(m.path / "d" / "x")
    os.rmdir(m.path / "d")
    assert m.status()["pending_ops"] == 0
    m.sync()
    assert user.api.get(f"/vaults/{vault}/events", params={"after": 0}).json()["events"] == []


def test_one_byte_change_uploads_at_most_two_chunks(mnt, user, vault):
    data = bytearray(os.urandom(24 * 1024 * 1024))
    f = mnt.path / "big.bin"
    f.write_bytes(data)
    first = mnt.sync()["uploaded_chunks"]
    assert first >= 8                          # ~1 MiB average chunks
    with open(f, "r+b") as fh:
        fh.seek(13 * 1024 * 1024 + 5)
        fh.write(b"\x00" if data[13 * 1024 * 1024 + 5] else b"\x01")
        data[13 * 1024 * 1024 + 5] = 0 if data[13 * 1024 * 1024 + 5] else 1
    st = mnt.sync()
    assert 1 <= st["uploaded_chunks"] - first <= 2
    assert server_file(user, vault, "big.bin") == bytes(data)


def test_fsync_survives_kill9_and_replays(mounts, user, vault):
    # A long settle time: nothing is uploaded before the kill, so the journal must carry it.
    m = mounts(extra=("--settle", "600"))
    (m.path / "dir").mkdir()
    payload = os.urandom(2 * 1024 * 1024)
    with open(m.path / "dir" / "data.bin", "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(m.path / "dir", m.path / "renamed")
    fd = os.open(m.path, os.O_RDONLY)
    os.fsync(fd)                               # fsync of the directory: the rename too
    os.close(fd)
    assert m.status()["pending_ops"] >= 2
    assert server_tree(user, vault) == {}
    m.kill9()
    m.extra = ()
    m.start()                                  # replays the journal
    assert (m.path / "renamed" / "data.bin").read_bytes() == payload
    m.sync()
    assert server_file(user, vault, "renamed/data.bin") == payload
