"""NFS-specific behaviour of the nfs driver, by simulation.

This machine's kernel has neither an NFS client (``mount -t nfs``: unknown filesystem
type) nor nfsd, and no modules to load, so no real export on 127.0.0.1 can run here (see
docs/storage.md). The driver runs on a local directory and the tests inject what an NFS
client returns (ESTALE, a LINK reply lost and retransmitted) at the syscall boundary,
through the driver's ``ops`` object; everything else is the real file system.
"""

from __future__ import annotations

import errno
import os
from collections import Counter

import anyio
import pytest

from gobi.drivers import StorageError, TransientStorageError
from gobi.drivers.local import LocalDriver
from gobi.drivers.nfs import NfsDriver, filesystem_type

pytestmark = pytest.mark.anyio


class NfsOps:
    """The ``os`` module, recording calls and failing chosen ones the way NFS does."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []
        self.stale: Counter[str] = Counter()     # op name -> how many ESTALE to raise
        self.lost_link_reply = False

    def __getattr__(self, name):
        real = getattr(os, name)

        def call(*args, **kwargs):
            self.calls.append((name, args))
            if self.stale[name] > 0:
                self.stale[name] -= 1
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            if name == "link" and self.lost_link_reply:
                real(*args, **kwargs)  # the server made the link, the reply was lost,
                raise FileExistsError(errno.EEXIST, "File exists")  # the retry says EEXIST
            return real(*args, **kwargs)

        return call


@pytest.fixture
def share(tmp_path):
    (tmp_path / "share").mkdir()
    return tmp_path / "share"


async def test_stale_handles_are_retried(share):
    ops = NfsOps()
    drv = NfsDriver(share, ops=ops)
    ops.stale.update({"open": 2, "replace": 1})
    await drv.put("v1/k", b"data")
    ops.stale.update({"open": 3, "stat": 2})
    assert await drv.get("v1/k") == b"data"
    assert (await drv.head("v1/k")).size == 4
    ops.stale.update({"unlink": 1})
    await drv.delete("v1/k")
    assert not await drv.exists("v1/k")


async def test_persistent_staleness_is_transient(share):
    ops = NfsOps()
    drv = NfsDriver(share, ops=ops)
    await drv.put("v1/k", b"data")
    ops.stale["open"] = 100
    with pytest.raises(TransientStorageError):
        await drv.get("v1/k")
    local = LocalDriver(share, ops=NfsOps())
    local._os.stale["open"] = 1
    with pytest.raises(TransientStorageError):  # the local driver does not retry
        await local.get("v1/k")


async def test_no_o_excl_and_fsync_before_rename(share):
    ops = NfsOps()
    drv = NfsDriver(share, ops=ops)
    await drv.put("v1/k", b"data")
    await drv.create("v1/c", b"data")
    opens = [args for name, args in ops.calls if name == "open"]
    assert opens and all(not (args[1] & os.O_EXCL) for args in opens)
    names = [name for name, _ in ops.calls]
    put_calls = names[: names.index("replace") + 3]
    # write, fsync(temp), close, rename, then open+fsync the directory
    assert put_calls.index("fsync") < put_calls.index("replace")
    assert "fsync" in names[names.index("replace"):]


async def test_temp_names_are_unique_per_host_process_and_write(share):
    ops = NfsOps()
    drv = NfsDriver(share, ops=ops)
    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(drv.put, "v1/same", bytes([i]) * 1000)
    temps = [str(args[0]) for name, args in ops.calls if name == "open" and "#" in str(args[0])]
    assert len(temps) == len(set(temps)) == 10
    assert all(f".{os.getpid()}." in t for t in temps)
    assert not [p for p in share.rglob("*") if "#" in p.name]  # none left behind
    assert len(set(await drv.get("v1/same"))) == 1


async def test_exclusive_create_survives_a_lost_link_reply(share):
    ops = NfsOps()
    drv = NfsDriver(share, ops=ops)
    ops.lost_link_reply = True
    assert await drv.create("v1/k", b"mine") is True      # EEXIST, but nlink says we made it
    assert await drv.create("v1/k", b"theirs") is False   # a real EEXIST
    assert await drv.get("v1/k") == b"mine"


async def test_two_hosts_racing_on_one_share(share):
    """Two driver instances (as two hosts would have) over the same directory."""
    host_a, host_b = NfsDriver(share), NfsDriver(share)
    wins = []

    async def create(drv, tag):
        if await drv.create("v1/k", tag):
            wins.append(tag)

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(create, host_a, f"a{i}".encode())
            tg.start_soon(create, host_b, f"b{i}".encode())
    assert len(wins) == 1 and await host_b.get("v1/k") == wins[0]


async def test_an_unmounted_share_is_refused_not_created(tmp_path):
    with pytest.raises(StorageError, match="is the share mounted"):
        NfsDriver(tmp_path / "not-mounted")
    assert not (tmp_path / "not-mounted").exists()


async def test_leftover_temp_files_are_swept(share):
    drv = NfsDriver(share)
    await drv.put("v1/k", b"x")
    leftover = share / "v1" / "k_" / "__" / "k#otherhost.4242.abcdef"
    leftover.write_bytes(b"half")
    assert [i.key async for i in drv.list()] == ["v1/k"]
    assert await drv.sweep_temp_files(max_age=3600) == 0   # maybe still being written
    assert await drv.sweep_temp_files(max_age=0) == 1
    assert not leftover.exists() and await drv.get("v1/k") == b"x"


def test_filesystem_type_is_reported(share):
    fstype = filesystem_type(share)
    assert fstype not in ("unknown", "nfs", "nfs4")  # the simulation runs on a local file system
    assert fstype in NfsDriver(share).describe()
