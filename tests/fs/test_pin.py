"""``gobi pin``: a subtree made available offline and kept in the cache whatever else is
read; refused clearly when it cannot fit under the cache cap; pins survive a remount and
cover files that appear later. Waits are hang guards, never performance thresholds."""

from __future__ import annotations

import errno
import json
import os

import pytest

from .mounts import eventually, gobi

MiB = 1024 * 1024

def state(path) -> str:
    return os.getxattr(path, "user.gobi.state").decode()


def pin_info(path) -> dict:
    return json.loads(os.getxattr(path, "user.gobi.pin"))


def write_all(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_pin_keeps_a_subtree_offline_through_cache_pressure(server, mounts, user):
    pinned = {"docs/a.bin": os.urandom(3 * MiB), "docs/sub/b.bin": os.urandom(2 * MiB),
              "docs/small.txt": b"hello", "docs/sub/empty": b""}
    other = {f"other/f{i}.bin": os.urandom(3 * MiB) for i in range(6)}        # 18 MiB
    writer = mounts("writer")
    write_all(writer.path, {**pinned, **other})
    writer.sync()
    writer.umount()

    m = mounts("reader", cache_size="12M")
    assert state(m.path / "docs/a.bin") == "online-only"
    r = gobi("pin", str(m.path / "docs"), env=user.env, check=False)
    assert r.returncode == 0, r.stderr
    # stderr is not a terminal: plain progress lines, then the outcome.
    assert f"pin {m.path / 'docs'}:" in r.stderr and "available offline (4 file(s)" in r.stderr
    for rel in pinned:
        assert state(m.path / rel) == "pinned", rel
    assert state(m.path / "other/f0.bin") == "online-only"
    info = pin_info(m.path / "docs/sub")
    assert info["pinned"] and info["root"] == "/docs" and not info["direct"]
    assert info["state"] == "done" and info["files"] == 4 and info["bytes"] == 5 * MiB + 5

    # 18 MiB of other reads through a 12 MiB cache: the pinned 5 MiB stay.
    for rel, data in other.items():
        assert (m.path / rel).read_bytes() == data
    st = m.status()
    assert st["cache_used"] <= 12 * MiB and st["cache_pinned"] >= 5 * MiB
    assert [p["path"] for p in st["pins"]] == ["/docs"]
    for rel in pinned:
        assert state(m.path / rel) == "pinned", rel
    out = gobi("status", str(m.path), env=user.env).stdout
    assert "pinned /docs: available offline (4 files, 5.0 MiB)" in out

    # Offline: the pinned files read; the first of the others was evicted: fails fast.
    m.umount()
    server.stop()
    try:
        m.start()
        assert not m.status()["online"]
        for rel, data in pinned.items():
            assert (m.path / rel).read_bytes() == data
        with pytest.raises(OSError) as e:
            (m.path / "other/f0.bin").read_bytes()
        assert e.value.errno == errno.ENETUNREACH
    finally:
        server.start()


def test_pin_refuses_what_cannot_fit_and_unpins(mounts, user):
    writer = mounts("writer")
    write_all(writer.path, {f"big/f{i}.bin": os.urandom(3 * MiB) for i in range(4)})   # 12 MiB
    writer.sync()
    writer.umount()

    m = mounts("small", cache_size="8M")
    r = gobi("pin", str(m.path / "big"), env=user.env, check=False)
    assert r.returncode == 1
    assert "does not fit in the cache" in r.stderr and "12.0 MiB in 4 file(s)" in r.stderr
    assert "--cache-size 8.0 MiB" in r.stderr, r.stderr
    assert not pin_info(m.path / "big")["pinned"]
    assert m.status()["pins"] == []

    # What fits is pinned; the cap then counts it.
    r = gobi("pin", str(m.path / "big/f0.bin"), str(m.path / "big/f1.bin"), env=user.env, check=False)
    assert r.returncode == 0, r.stderr
    assert state(m.path / "big/f0.bin") == "pinned"
    r = gobi("pin", str(m.path / "big/f2.bin"), env=user.env, check=False)
    assert r.returncode == 1 and "6.0 MiB pinned" in r.stderr, r.stderr

    r = gobi("unpin", str(m.path / "big"), env=user.env, check=False)
    assert r.returncode == 1 and "is not pinned" in r.stderr
    r = gobi("unpin", str(m.path / "big/f0.bin"), env=user.env, check=False)
    assert r.returncode == 0, r.stderr
    assert state(m.path / "big/f0.bin") == "synced"      # still cached, evictable again
    assert not pin_info(m.path / "big/f0.bin")["pinned"]
    assert m.status()["cache_pinned"] == 3 * MiB
    r = gobi("pin", str(m.path / "nowhere"), env=user.env, check=False)
    assert r.returncode == 1 and "nowhere" in r.stderr


def test_pins_survive_a_remount_and_cover_new_files(mounts, user):
    a = mounts("a")
    write_all(a.path, {"proj/one.txt": b"one"})
    a.sync()
    b = mounts("b")
    r = gobi("pin", str(b.path / "proj"), env=user.env, check=False)
    assert r.returncode == 0, r.stderr

    # A file created elsewhere arrives (live sync) and is made local by the keeper.
    write_all(a.path, {"proj/deep/two.bin": os.urandom(MiB)})
    a.sync()
    eventually(lambda: state(b.path / "proj/deep/two.bin") == "pinned", "the new file pinned")

    b.umount()
    b.start()
    assert [p["path"] for p in b.status()["pins"]] == ["/proj"]
    assert state(b.path / "proj/one.txt") == "pinned"
    assert pin_info(b.path / "proj")["direct"]
    # A pinned directory that is renamed stays pinned (pins follow the node).
    os.rename(b.path / "proj", b.path / "project")
    assert state(b.path / "project/one.txt") == "pinned"
