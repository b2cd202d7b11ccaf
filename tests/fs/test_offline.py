"""Offline use: the mount starts from its mirror without the server, reads what is
cached, queues writes durably, fails fast on what needs the network, and uploads when
the server is back."""

from __future__ import annotations

import errno
import os

import pytest

from .mounts import server_file


def test_offline_start_read_write_and_catch_up(server, mounts, user, vault):
    first = mounts("first")
    (first.path / "a.txt").write_text("cached everywhere\n")
    (first.path / "big.bin").write_bytes(os.urandom(3_000_000))
    first.sync()
    first.umount()

    m = mounts("second")                       # lists the tree while online
    assert (m.path / "a.txt").read_text() == "cached everywhere\n"   # now in its cache
    assert m.umount().returncode == 0

    server.stop()
    try:
        m.start()                              # no server: starts from the mirror
        st = m.status()
        assert not st["online"]
        assert sorted(os.listdir(m.path)) == ["a.txt", "big.bin"]
        assert (m.path / "a.txt").read_text() == "cached everywhere\n"
        with pytest.raises(OSError) as e:
            (m.path / "big.bin").read_bytes()  # never fetched: fails fast, does not hang
        assert e.value.errno == errno.ENETUNREACH
        (m.path / "new").mkdir()
        (m.path / "new" / "offline.txt").write_text("written offline\n")
        with open(m.path / "a.txt", "a") as f:
            f.write("appended offline\n")
        st = m.status()
        assert st["pending_ops"] >= 3 and not st["online"]
    finally:
        server.start()
    m.sync()
    assert m.status()["online"]
    assert server_file(user, vault, "new/offline.txt") == b"written offline\n"
    assert server_file(user, vault, "a.txt") == b"cached everywhere\nappended offline\n"
    assert len((m.path / "big.bin").read_bytes()) == 3_000_000


def test_unmount_while_offline_keeps_the_queue(server, mounts, user, vault):
    m = mounts()
    (m.path / "keep.txt").write_text("v1")
    m.sync()
    server.stop()
    try:
        (m.path / "keep.txt").write_text("v2 offline")
        r = m.umount(timeout=2)
        assert r.returncode == 3 and "not uploaded yet" in r.stdout
    finally:
        server.start()
    assert server_file(user, vault, "keep.txt") == b"v1"
    m.start()                                   # the journal replays
    m.sync()
    assert server_file(user, vault, "keep.txt") == b"v2 offline"
