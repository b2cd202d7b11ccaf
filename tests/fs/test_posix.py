"""POSIX behaviour and errnos, compared side by side with a local directory."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
from pathlib import Path

import pytest

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(src: Path, dst: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, bytes(src), AT_FDCWD, bytes(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def outcome(fn, *args):
    try:
        r = fn(*args)
    except OSError as exc:
        return ("errno", errno.errorcode.get(exc.errno, exc.errno))
    return ("ok", r if isinstance(r, (bytes, str, int, list, type(None))) else None)


def scenario(root: Path) -> list:
    """Operations whose results (values and errnos) must match a local filesystem."""
    out = []
    f, d = root / "f", root / "d"
    f.write_bytes(b"0123456789")
    d.mkdir()
    (d / "inner").write_text("x")
    out.append(outcome(os.mkdir, d))                                 # EEXIST
    out.append(outcome(os.rmdir, d))                                 # ENOTEMPTY
    out.append(outcome(os.rmdir, f))                                 # ENOTDIR
    out.append(outcome(os.unlink, d))                                # EISDIR
    out.append(outcome(os.unlink, root / "missing"))                 # ENOENT
    out.append(outcome(os.open, f / "x", os.O_RDONLY))               # ENOTDIR
    out.append(outcome(os.open, f, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # EEXIST
    out.append(outcome(os.rename, d, d / "sub"))                     # EINVAL
    out.append(outcome(os.rename, f, d))                             # EISDIR
    (root / "e").mkdir()
    out.append(outcome(os.rename, root / "e", f))                    # ENOTDIR
    out.append(outcome(os.rename, root / "e", d))                    # ENOTEMPTY
    out.append(outcome(renameat2, f, d / "inner", RENAME_NOREPLACE))  # EEXIST
    out.append(outcome(os.rename, root / "missing", root / "z"))     # ENOENT
    out.append(outcome(os.mkdir, root / ("n" * 256)))                # ENAMETOOLONG
    out.append(outcome(os.rmdir, root / "e"))
    # O_APPEND, O_TRUNC, offsets, truncate/extend
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"ab")
    os.close(fd)
    out.append(outcome(f.read_bytes))
    fd = os.open(f, os.O_RDWR)
    os.pwrite(fd, b"XY", 3)
    os.ftruncate(fd, 20)
    out.append(outcome(os.pread, fd, 100, 0))
    os.ftruncate(fd, 4)
    out.append(outcome(os.pread, fd, 100, 0))
    os.close(fd)
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    out.append(outcome(f.read_bytes))
    out.append(outcome(lambda: os.stat(f).st_size))
    # rename over an existing file, then over itself
    (root / "g").write_text("g")
    os.rename(root / "g", f)
    out.append(outcome(f.read_bytes))
    out.append(outcome(os.rename, f, f))
    # symlinks
    os.symlink("d/inner", root / "ln")
    out.append(outcome(os.readlink, root / "ln"))
    out.append(outcome((root / "ln").read_text))
    out.append(outcome(os.symlink, "x", root / "ln"))                # EEXIST
    out.append(outcome(os.readlink, f))                              # EINVAL
    out.append(outcome(lambda: stat.S_ISLNK(os.lstat(root / "ln").st_mode)))
    # chmod, utime
    os.chmod(f, 0o640)
    os.utime(f, ns=(5_000_000_000, 7_000_000_000))
    out.append(outcome(lambda: (os.stat(f).st_mode & 0o7777, os.stat(f).st_mtime_ns)))
    # xattrs
    out.append(outcome(os.getxattr, f, "user.missing"))            # ENODATA
    os.setxattr(f, "user.tag", b"blue")
    out.append(outcome(os.getxattr, f, "user.tag"))
    out.append(outcome(lambda: sorted(os.listxattr(f))))
    os.removexattr(f, "user.tag")
    out.append(outcome(os.removexattr, f, "user.tag"))             # ENODATA
    out.append(outcome(lambda: sorted(os.listdir(root))))
    # directory mtime moves when entries change
    return out


def test_errnos_match_a_local_filesystem(mnt, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    assert scenario(mnt.path) == scenario(local)


def test_refused_with_a_clear_errno(mnt):
    p = mnt.path
    (p / "f").write_text("x")
    (p / "dir").mkdir()
    with pytest.raises(OSError) as e:
        os.link(p / "dir", p / "hard")          # a directory has one name (link(2): EPERM)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.link(p / "f", p / "dir")
    assert e.value.errno == errno.EEXIST
    (p / "g").write_text("y")
    with pytest.raises(OSError) as e:
        renameat2(p / "f", p / "g", RENAME_EXCHANGE)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.setxattr(p / "f", "trusted.x", b"1")
    assert e.value.errno in (errno.EOPNOTSUPP, errno.EPERM)
    with pytest.raises(OSError) as e:
        os.mkdir(p / b"bad\xff".decode("utf-8", "surrogateescape"))
    assert e.value.errno == errno.EILSEQ
    # Control characters are refused in vault names (gobi.protocol.NAME_RULE): at once,
    # not as a file that never reaches the server.
    for bad in ("esc\x1b[31m", "bell\x07", "cr\r", "lf\n"):
        with pytest.raises(OSError) as e:
            (p / bad).write_text("x")
        assert e.value.errno == errno.EINVAL, bad
        assert not os.path.lexists(p / bad)


def test_locks_within_the_machine(mnt):
    f = mnt.path / "lock"
    f.write_text("")
    a = os.open(f, os.O_RDWR)
    b = os.open(f, os.O_RDWR)
    fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(BlockingIOError):
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(a, fcntl.LOCK_UN)
    fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(a)
    os.close(b)


def test_df_shows_the_servers_storage_and_the_cache_room(mnt, server):
    """statfs: the size is the server storage's (``GET /vaults/{id}/space``: a local disk
    here), the room left is the least of its free bytes and the cache's room for data not
    uploaded yet (``--cache-size 1G`` in these tests)."""
    import shutil
    import subprocess
    import time

    disk = shutil.disk_usage(server.data_dir)
    assert disk.total != 1 << 30, "the test needs a server disk of another size than the cache"
    deadline = time.monotonic() + 30
    while True:
        st = os.statvfs(mnt.path)
        if st.f_blocks * st.f_frsize == disk.total // 4096 * 4096 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert st.f_blocks * st.f_frsize == disk.total // 4096 * 4096
    assert 0 < st.f_bavail * st.f_frsize <= min(disk.free + (256 << 20), 1 << 30)
    df = subprocess.run(["df", "-B1", "--output=size,avail", str(mnt.path)], capture_output=True,
                        text=True, check=True).stdout.split()
    assert int(df[2]) == disk.total // 4096 * 4096, df


def test_statfs_and_fsync(mnt):
    st = os.statvfs(mnt.path)
    assert st.f_namemax == 255 and st.f_blocks > 0
    fd = os.open(mnt.path / "x", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"1")
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
