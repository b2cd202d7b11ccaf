"""Sparse files on real mounts: manifests with holes (``{"hole": true, "size": N}``).

Files committed with holes are read through the mount byte for byte, with no chunk
request for a hole (counted in the server's access log); a sparse file opened for writing
keeps working; and the time-travel view reads holes too.
"""

from __future__ import annotations

import os

from tests.server.util import upload

from .mounts import caught_up, eventually, server_file, server_node

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
