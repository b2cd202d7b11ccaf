"""The cache cap holds, data not yet uploaded is never evicted, and a write that cannot
fit under the cap fails with ENOSPC instead of overrunning it."""

from __future__ import annotations

import errno
import os

import pytest

from .mounts import server_file

MiB = 1024 * 1024
CAP = 8 * MiB


def du(path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def test_cap_holds_and_dirty_data_survives_pressure(mounts, user, vault):
    writer = mounts("writer")
    files = {f"f{i}": os.urandom(3 * MiB) for i in range(6)}      # 18 MiB > cap
    for name, data in files.items():
        (writer.path / name).write_bytes(data)
    writer.sync()
    writer.umount()

    # Nothing is uploaded from this mount unless asked: its writes stay dirty.
    m = mounts("capped", cache_size="8M", extra=("--settle", "600"))
    dirty = {"d1": os.urandom(2 * MiB), "d2": os.urandom(2 * MiB)}
    for name, data in dirty.items():
        (m.path / name).write_bytes(data)
    for name, data in files.items():          # reading 18 MiB through an 8 MiB cache
        assert (m.path / name).read_bytes() == data
        st = m.status()
        assert st["cache_used"] <= CAP
        assert st["cache_staged"] >= 4 * MiB   # the dirty files were not evicted
        assert du(m.cache_dir / "blocks") + du(m.cache_dir / "staging") <= CAP
    for name, data in dirty.items():
        assert (m.path / name).read_bytes() == data
    m.sync()
    for name, data in dirty.items():
        assert server_file(user, vault, name) == data
    assert m.status()["cache_used"] <= CAP


def test_write_beyond_the_cap_is_enospc(mounts):
    m = mounts(cache_size="8M", extra=("--settle", "600"))
    with pytest.raises(OSError) as e:
        with open(m.path / "huge", "wb") as f:
            for _ in range(12):
                f.write(os.urandom(MiB))
            f.flush()
            os.fsync(f.fileno())
    assert e.value.errno == errno.ENOSPC
    st = m.status()
    assert st["cache_used"] <= CAP
    assert du(m.cache_dir / "blocks") + du(m.cache_dir / "staging") <= CAP
