"""Sparse files on real mounts: manifests with holes (``{"hole": true, "size": N}``).

Files committed with holes are read through the mount byte for byte, with no chunk
request for a hole (counted in the server's access log); a sparse file opened for writing
keeps working; and the time-travel view reads holes too. A sparse file made on the mount
(``truncate -s 1T`` and a few writes) is uploaded as holes and a few data chunks, and a
dense file's chunks are what they always were. The cache cap counts a staging copy by the
blocks it holds: a 1 TiB sparse file fits under an 8 MiB cap, ``du`` shows its data. Pins
and the upload queue count data too: a directory with a 1 TiB sparse file is pinned under
an 8 MiB cap (sized by its data chunks), and the queue of a sparse file not uploaded yet
counts the blocks its staging copy holds (``gobi status``, ``gobi sync``, the metric).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from gobi.chunking import pieces_of_bytes
from tests.server.util import upload

from .mounts import caught_up, chunk_uploads, eventually, gobi, server_file, server_node
from .test_mount_metrics import free_port, one, scrape

MIB = 1 << 20


def chunk_gets(server) -> int:
    """Chunk downloads the server has logged (access log lines)."""
    return sum(1 for line in server.output if "GET" in line and "/chunks/" in line)


def commit_sparse(user, vault, name: str, layout: list) -> tuple[dict, bytes, int]:
    """A file made over the API from ``layout`` (int: a hole of that size; bytes: data);
    returns (node, the bytes it stands for, how many distinct data chunks it has)."""
    refs, expected = [], bytearray()
    for part in layout:
        if isinstance(part, int):
            refs.append({"hole": True, "size": part})
            expected += bytes(part)
        else:
            refs += upload(user.api, vault, part)
            expected += part
    r = user.api.post(f"/vaults/{vault}/nodes", json={
        "parent": "root", "name": name, "kind": "file",
        "content": {"chunks": refs, "size": len(expected)}})
    assert r.status_code == 201, r.text
    return r.json(), bytes(expected), len({c["hash"] for c in refs if "hash" in c})


def test_a_file_with_holes_reads_byte_for_byte(server, user, vault, mounts):
    a, b = os.urandom(20_000), os.urandom(7_000)
    node, expected, data_chunks = commit_sparse(user, vault, "disk.img", [3 * MIB + 17, a, 2 * MIB, b, 5])
    only_zeros, zeros, _ = commit_sparse(user, vault, "zeros", [5 * MIB + 1])
    m = mounts()
    caught_up(m)
    before = chunk_gets(server)
    assert (m.path / "disk.img").stat().st_size == len(expected)
    assert (m.path / "disk.img").read_bytes() == expected
    # Each data chunk fetched once; the holes asked nothing of the server.
    assert chunk_gets(server) - before == data_chunks
    with open(m.path / "disk.img", "rb") as f:           # reads across the boundaries
        for off, n in [(3 * MIB, 100), (3 * MIB + 17 + len(a) - 10, 4096), (len(expected) - 8, 100)]:
            f.seek(off)
            assert f.read(n) == expected[off:off + n], off
    now = chunk_gets(server)
    assert (m.path / "zeros").read_bytes() == zeros
    assert chunk_gets(server) == now
    # A second mount reads it from scratch the same way.
    m2 = mounts()
    caught_up(m2)
    assert (m2.path / "disk.img").read_bytes() == expected


def test_writing_into_a_sparse_file(server, user, vault, mounts):
    a = os.urandom(10_000)
    node, expected, _ = commit_sparse(user, vault, "vm.img", [2 * MIB, a, 4 * MIB])
    m = mounts()
    caught_up(m)
    with open(m.path / "vm.img", "r+b") as f:           # the staging copy is filled from holes
        f.seek(MIB)
        f.write(b"middle of the first hole")
        f.seek(0, os.SEEK_END)
        f.write(b"tail")
    want = bytearray(expected)
    want[MIB:MIB + 24] = b"middle of the first hole"
    want += b"tail"
    assert (m.path / "vm.img").read_bytes() == bytes(want)
    m.sync()
    assert server_file(user, vault, "vm.img") == bytes(want)
    assert server_node(user, vault, "vm.img")["size"] == len(want)


def test_time_travel_reads_holes(server, user, vault, mounts):
    node, expected, _ = commit_sparse(user, vault, "old.img", [MIB, b"then", MIB])
    seq = node["rev"]
    r = user.api.put(f"/vaults/{vault}/nodes/{node['id']}/content",
                     json={"base_rev": node["rev"], "chunks": upload(user.api, vault, b"now"), "size": 3})
    assert r.status_code == 200, r.text
    m = mounts()
    caught_up(m)
    assert (m.path / "old.img").read_bytes() == b"now"
    old = m.path / ".gobi" / "at" / str(seq) / "old.img"
    assert eventually(lambda: old.read_bytes() == expected, "the old version through time travel")


TIB = 1 << 40
GIB = 1 << 30


def server_manifest(user, vault, path: str) -> list[dict]:
    node = server_node(user, vault, path)
    r = user.api.get(f"/vaults/{vault}/nodes/{node['id']}/content")
    r.raise_for_status()
    return r.json()["chunks"]


def server_range(user, vault, path: str, off: int, n: int) -> bytes:
    node = server_node(user, vault, path)
    r = user.api.get(f"/vaults/{vault}/nodes/{node['id']}/data",
                     headers={"Range": f"bytes={off}-{off + n - 1}"})
    assert r.status_code == 206, r.text
    return r.content


def test_a_terabyte_sparse_file_uploads_its_holes_as_holes(server, user, vault, mounts):
    m = mounts()
    path = m.path / "disk.img"
    subprocess.run(["truncate", "-s", "1T", str(path)], check=True)
    writes = {0: os.urandom(5000), 3 * GIB + 123: os.urandom(70_000),
              500 * GIB: b"in the middle", TIB - 4096: os.urandom(4096)}
    with open(path, "r+b") as f:
        for off, data in writes.items():
            f.seek(off)
            f.write(data)
    puts = chunk_uploads(server)
    m.sync()
    chunks = server_manifest(user, vault, "disk.img")
    assert server_node(user, vault, "disk.img")["size"] == TIB
    holes = [c for c in chunks if c.get("hole")]
    data = [c for c in chunks if "hash" in c]
    assert len(holes) == len(writes) - 1 and len(data) <= 2 * len(writes)
    assert sum(c["size"] for c in data) < 1 << 20             # a few blocks, no zeros
    assert chunk_uploads(server) - puts <= len(data)
    assert m.verify()["difference_count"] == 0
    for off, want in writes.items():
        lo = max(0, off - 100)
        hi = min(TIB, off + len(want) + 100)
        got = server_range(user, vault, "disk.img", lo, hi - lo)
        assert got == bytes(off - lo) + want + bytes(hi - off - len(want)), off
    assert server_range(user, vault, "disk.img", 100 * GIB, 4096) == bytes(4096)
    # A second mount reads the written offsets and the zeros around them.
    m2 = mounts()
    caught_up(m2)
    assert (m2.path / "disk.img").stat().st_size == TIB
    with open(m2.path / "disk.img", "rb") as f:
        for off, want in writes.items():
            f.seek(off)
            assert f.read(len(want)) == want, off
        f.seek(700 * GIB)
        assert f.read(1 << 20) == bytes(1 << 20)


def test_a_dense_file_keeps_its_chunks(server, user, vault, mounts):
    """No holes: the manifest is exactly the chunks FastCDC cuts from the bytes (dedup
    against content uploaded before holes existed is unchanged)."""
    m = mounts()
    data = os.urandom(5 * MIB + 7)
    (m.path / "dense.bin").write_bytes(data)
    m.sync()
    chunks = server_manifest(user, vault, "dense.bin")
    assert chunks == [{"hash": p.hash, "size": p.size} for p in pieces_of_bytes(data)]


def du_kib(path) -> int:
    return int(subprocess.run(["du", "-k", str(path)], check=True, capture_output=True,
                              text=True).stdout.split()[0])


def test_cache_cap_counts_blocks_held(server, user, vault, mounts):
    """An 8 MiB cap: a 1 TiB sparse file fits (its holes hold nothing), what is written
    into it counts, and writing past the cap is still ENOSPC."""
    cap = 8 * MIB
    m = mounts(cache_size="8M", extra=("--settle", "600"))
    path = m.path / "vm.img"
    subprocess.run(["truncate", "-s", "1T", str(path)], check=True)
    assert path.stat().st_size == TIB
    ls = subprocess.run(["ls", "-l", str(path)], check=True, capture_output=True, text=True).stdout
    assert str(TIB) in ls.split()
    assert du_kib(path) < 64
    writes = {10 * GIB: os.urandom(3 * MIB), 600 * GIB: os.urandom(MIB)}
    with open(path, "r+b") as f:
        for off, data in writes.items():
            f.seek(off)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    held = du_kib(path)
    assert 4 * 1024 <= held < 4 * 1024 + 64                    # the 4 MiB written, no holes
    st = m.status()
    assert 4 * MIB <= st["cache_staged"] <= st["cache_used"] <= cap
    vfs = os.statvfs(m.path)
    assert vfs.f_bfree * vfs.f_frsize == (cap - st["cache_staged"]) // 4096 * 4096
    # Past the cap: 6 MiB more into a hole does not fit next to the 4 MiB held.
    with pytest.raises(OSError) as e:
        with open(path, "r+b") as f:
            f.seek(200 * GIB)
            for _ in range(6):
                f.write(os.urandom(MIB))
            f.flush()
            os.fsync(f.fileno())
    assert e.value.errno == errno.ENOSPC
    assert m.status()["cache_used"] <= cap
    # Rewriting blocks the copy already holds needs no room, even with the cap taken.
    with open(path, "r+b") as f:
        f.seek(10 * GIB)
        f.write(writes[10 * GIB][::-1])
        f.flush()
        os.fsync(f.fileno())
    writes[10 * GIB] = writes[10 * GIB][::-1]
    m.sync()
    assert server_node(user, vault, "vm.img")["size"] == TIB
    for off, data in writes.items():
        assert server_range(user, vault, "vm.img", off, len(data)) == data
    holes = [c for c in server_manifest(user, vault, "vm.img") if c.get("hole")]
    assert sum(c["size"] for c in holes) > TIB - 16 * MIB
    # Clean again (no staging copy once uploaded and closed): du still shows the data only.
    eventually(lambda: m.status()["cache_staged"] == 0, "the staging copy dropped after upload")
    assert du_kib(path) < 16 * 1024 and path.stat().st_size == TIB


def test_a_pin_is_sized_by_the_data_its_files_hold(server, user, vault, mounts):
    """Under an 8 MiB cap, a directory holding a 1 TiB sparse file with 1 MiB written and
    two copies of a 2 MiB file is pinned: 3 MiB of data (holes hold nothing, the copies'
    chunks are held once), not 1 TiB. On the mount that wrote it the chunk lists are
    known; a second mount fetches the sparse file's list to decide."""
    m = mounts("writer", cache_size="8M")
    (m.path / "vm").mkdir()
    disk = m.path / "vm" / "disk.img"
    subprocess.run(["truncate", "-s", "1T", str(disk)], check=True)
    written = os.urandom(MIB)
    with open(disk, "r+b") as f:
        f.seek(100 * GIB)
        f.write(written)
    copy = os.urandom(2 * MIB)
    (m.path / "vm" / "a.bin").write_bytes(copy)
    (m.path / "vm" / "b.bin").write_bytes(copy)
    m.sync()
    eventually(lambda: m.status()["cache_staged"] == 0, "the staging copies dropped after upload")

    for mount in (m, mounts("reader", cache_size="8M")):
        caught_up(mount)
        r = gobi("pin", str(mount.path / "vm"), env=user.env, check=False)
        assert r.returncode == 0, r.stderr
        assert "available offline (3 file(s), 3.0 MiB)" in r.stderr, r.stderr
        info = json.loads(os.getxattr(mount.path / "vm", "user.gobi.pin"))
        assert info["state"] == "done" and info["files"] == 3
        assert info["bytes"] == info["bytes_done"] == info["pinned_bytes"] == 3 * MIB
        st = mount.status()
        assert st["cache_pinned"] == 3 * MIB and st["cache_used"] <= 8 * MIB
        out = gobi("status", str(mount.path), env=user.env).stdout
        assert "pinned /vm: available offline (3 files, 3.0 MiB)" in out, out
        assert os.getxattr(disk if mount is m else mount.path / "vm" / "disk.img",
                           "user.gobi.state") == b"pinned"
    with open(mount.path / "vm" / "disk.img", "rb") as f:
        f.seek(100 * GIB - 10)
        assert f.read(MIB + 20) == bytes(10) + written + bytes(10)


def test_the_upload_queue_counts_the_data_a_sparse_file_holds(server, user, vault, mounts):
    """A 1 TiB sparse file with 4 MiB written, held back by --settle: the queue is the
    4 MiB that will be read and sent (the staging copy's blocks), in ``gobi status``, the
    metric and a ``gobi sync`` barrier, not 1 TiB."""
    port = free_port()
    m = mounts(extra=("--settle", "600", "--metrics", f"127.0.0.1:{port}"))
    path = m.path / "vm.img"
    subprocess.run(["truncate", "-s", "1T", str(path)], check=True)
    with open(path, "r+b") as f:
        for off, n in ((10 * GIB, 3 * MIB), (600 * GIB, MIB)):
            f.seek(off)
            f.write(os.urandom(n))
        f.flush()
        os.fsync(f.fileno())

    def near_4_mib(n: int) -> bool:
        return 4 * MIB <= n < 4 * MIB + (64 << 10)     # the 4 MiB written (+ an extent block)

    st = m.status()
    assert st["pending_ops"] >= 1 and near_4_mib(st["queued_bytes"]), st["queued_bytes"]
    assert near_4_mib(one(scrape(port), "gobi_mount_upload_queue_bytes"))
    out = gobi("status", str(m.path), env=user.env).stdout
    assert "bytes queued: 4.0 MiB" in out, out
    os.setxattr(m.path, "user.gobi.sync", b"sparse")        # what gobi sync registers
    barrier = json.loads(os.getxattr(m.path, "user.gobi.sync.sparse"))
    assert near_4_mib(barrier["bytes"]) and barrier["bytes_left"] == barrier["bytes"], barrier
    m.sync()
    assert m.status()["queued_bytes"] == 0
    assert one(scrape(port), "gobi_mount_upload_queue_bytes") == 0
