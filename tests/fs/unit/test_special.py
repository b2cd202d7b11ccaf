"""Special files through the layers, without a mount: ``mknod`` of a FIFO, a socket and
device nodes makes nodes with no content that reach the server and every other client
with their kind and ``rdev``; renames and deletes travel like any node's; the mirror keeps
``rdev`` across restarts (also one written before the column existed)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat

import pyfuse3
import pytest
import trio

from gobi.fs.tree import ROOT_INO, Tree

from .client import CTX, open_client

NULL = os.makedev(1, 3)
DISK = os.makedev(8, 0)


async def attrs_listed(c, path: str = "") -> dict[str, pyfuse3.EntryAttributes]:
    """readdir's attributes per name (what ``ls -l`` shows without a stat of its own)."""
    fh = await c.ops.opendir(await c.ino(path), CTX)
    out: dict[str, pyfuse3.EntryAttributes] = {}
    token = object()
    real = pyfuse3.readdir_reply

    def reply(tok, name, attr, next_id):
        out[name.decode()] = attr
        return True

    pyfuse3.readdir_reply = reply
    try:
        await c.ops.readdir(fh, 0, token)
    finally:
        pyfuse3.readdir_reply = real
    return {k: v for k, v in out.items() if k not in (".", "..")}


def kinds(attrs: dict[str, pyfuse3.EntryAttributes]) -> dict[str, tuple[int, int, int]]:
    return {name: (stat.S_IFMT(a.st_mode), stat.S_IMODE(a.st_mode), a.st_rdev) for name, a in attrs.items()}


@pytest.mark.trio
async def test_special_files_made_on_one_client_reach_the_other_with_kind_and_rdev(account, tmp_path, server):
    async with open_client(server.url, account.token, account.vault, tmp_path / "a") as a, \
            open_client(server.url, account.token, account.vault, tmp_path / "b") as b:
        ops = a.ops
        fifo = await ops.mknod(ROOT_INO, b"pipe", stat.S_IFIFO | 0o640, 0, CTX)
        dev = await ops.mknod(ROOT_INO, b"null", stat.S_IFCHR | 0o666, NULL, CTX)
        blk = await ops.mknod(ROOT_INO, b"disk", stat.S_IFBLK | 0o660, DISK, CTX)
        # mknod(2) passes no device number for a FIFO or socket; one given anyway is dropped.
        sock = await ops.mknod(ROOT_INO, b"sock", stat.S_IFSOCK | 0o755, 77, CTX)
        want = {"pipe": (stat.S_IFIFO, 0o640, 0), "null": (stat.S_IFCHR, 0o666, NULL),
                "disk": (stat.S_IFBLK, 0o660, DISK), "sock": (stat.S_IFSOCK, 0o755, 0)}
        assert kinds({"pipe": fifo, "null": dev, "disk": blk, "sock": sock}) == want
        assert all(x.st_size == 0 and x.st_nlink == 1 for x in (fifo, dev, blk, sock))
        assert kinds(await attrs_listed(a)) == want
        # No content, ever: no staging copy, no content upload, and no open of its own.
        assert not any(a.layers.vfs.staged(x.st_ino) for x in (fifo, dev, blk, sock))
        assert not [e for e in a.tree.journal.entries(0, 100) if e.op == "content"]
        with pytest.raises(pyfuse3.FUSEError) as exc:
            await ops.open(fifo.st_ino, os.O_RDONLY, CTX)
        assert exc.value.errno == errno.ENXIO
        await a.synced()
        on_server = {n: account.lookup(n) for n in want}
        assert {n: (v["kind"], v["rdev"], v["size"], v["content_rev"]) for n, v in on_server.items()} == {
            "pipe": ("fifo", 0, 0, None), "null": ("chardev", NULL, 0, None),
            "disk": ("blockdev", DISK, 0, None), "sock": ("socket", 0, 0, None)}

        await b.caught_up(account.head())
        assert kinds(await attrs_listed(b)) == want
        got = await b.ops.getattr(await b.ino("null"), CTX)
        assert (stat.S_IFMT(got.st_mode), got.st_rdev) == (stat.S_IFCHR, NULL)
        assert b.tree.child(ROOT_INO, "disk").rdev == DISK

        # Rename (over another FIFO's name) and delete travel like any node's.
        await ops.mknod(ROOT_INO, b"pipe2", stat.S_IFIFO | 0o600, 0, CTX)
        await a.synced()
        await ops.rename(ROOT_INO, b"pipe", ROOT_INO, b"pipe2", 0, CTX)
        await ops.unlink(ROOT_INO, b"null", CTX)
        await a.synced()
        await b.caught_up(account.head())
        assert kinds(await attrs_listed(b)) == {"pipe2": (stat.S_IFIFO, 0o640, 0), "disk": want["disk"],
                                               "sock": want["sock"]}
        assert b.tree.child(ROOT_INO, "pipe2").id == a.tree.child(ROOT_INO, "pipe2").id
        assert account.lookup("null") is None and account.lookup("pipe") is None
        # Both mirrors agree with the server, kinds and device numbers included.
        for c in (a, b):
            report = await c.layers.verifier.verify()
            assert report["difference_count"] == 0, report


@pytest.mark.trio
async def test_another_devices_device_node_and_fifo_arrive_and_verify_compares_rdev(account, tmp_path):
    api = account.api
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        for name, kind, rdev in (("tty", "chardev", os.makedev(5, 0)), ("fifo", "fifo", 0)):
            r = api.post(f"/vaults/{account.vault}/nodes", json={
                "parent": "root", "name": name, "kind": kind, "mode": 0o620, "rdev": rdev})
            assert r.status_code == 201, r.text
        await c.caught_up(account.head())
        assert b"tty" in c.port.entries() and b"fifo" in c.port.entries()    # the kernel was told
        assert kinds(await attrs_listed(c)) == {"tty": (stat.S_IFCHR, 0o620, os.makedev(5, 0)),
                                               "fifo": (stat.S_IFIFO, 0o620, 0)}
        assert (await c.layers.verifier.verify())["difference_count"] == 0
        # A mirror that lost a device number is a difference, and the repair restores it.
        e = c.tree.child(ROOT_INO, "tty")
        with c.tree.tx():
            c.tree.update(e.ino, rdev=0)
        report = await c.layers.verifier.verify(repair=True)
        assert report["difference_count"] == 1 and "rdev" in report["differences"][0]["detail"]
        assert c.tree.child(ROOT_INO, "tty").rdev == os.makedev(5, 0)


def test_the_mirror_keeps_rdev_and_loads_one_written_before_it(tmp_path):
    """A mirror of the version before special files: its nodes table lacks ``rdev`` and a
    log line left by a kill carries 16 node columns. It loads (rdev 0) and gains the column."""
    path = tmp_path / "mirror.db"
    tree = Tree(path)
    d = tree.make(ROOT_INO, b"d", "dir", 0o755, 0, 0)
    tree.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE nodes DROP COLUMN rdev")
    db.commit()
    db.close()
    old_row = [7, "cold", d.ino, "f", "file", 0o644, 0, 1, 1, None, None, None, 3, 3, None, 0]
    (tmp_path / "mirror.db.log.1").write_text(json.dumps([["n", 7, old_row]]) + "\n")
    tree = Tree(path)
    try:
        assert tree.child(d.ino, "f").rdev == 0 and tree.get(d.ino).rdev == 0
        dev = tree.mknod(d.ino, b"null", stat.S_IFCHR | 0o600, NULL, 0, 0)
        assert (dev.kind, dev.rdev, dev.dirty) == ("chardev", NULL, 0)
        assert tree.journal.pending(dev.id)[0].args["rdev"] == NULL
    finally:
        tree.close()
    tree = Tree(path)           # from SQLite (a clean close)
    assert tree.child(d.ino, "null").rdev == NULL
    assert tree.child(d.ino, "null").st_mode == stat.S_IFCHR | 0o600
    assert tree.child(d.ino, "f").rdev == 0
    tree.mknod(d.ino, b"p", stat.S_IFIFO | 0o644, 0, 0, 0)
    # A kill -9: no close; the log is all the next start has of the FIFO.
    tree = Tree(path)
    try:
        assert (tree.child(d.ino, "p").kind, tree.child(d.ino, "null").rdev) == ("fifo", NULL)
    finally:
        tree.close()
