"""Hard links in the mount's layers (issue 17, item 1): one kernel inode per file, a
further name an alias row of it (``gobi.fs.tree``, "Hard links"), every name a node of its
own on the server sharing the file's ``inode``.

The adapter is driven as the kernel drives it; "another device" is the server's REST API.
The mount tier (tests/fs/test_hardlinks.py) runs the same semantics through real mounts.
"""

from __future__ import annotations

import errno
import os

import pyfuse3
import pytest

from gobi.fs.tree import ROOT_INO
from tests.server.util import commit, create_file, mkdir

from .client import CTX, open_client

pytestmark = pytest.mark.trio


async def _append(c, path: str, data: bytes) -> None:
    ino = await c.ino(path)
    info = await c.ops.open(ino, os.O_WRONLY, CTX)
    size = (await c.ops.getattr(ino, CTX)).st_size
    await c.ops.write(info.fh, size, data)
    await c.ops.flush(info.fh)
    await c.ops.release(info.fh)


def _api_link(account, node: dict, parent: str, name: str) -> dict:
    r = account.api.post(f"/vaults/{account.vault}/nodes/{node['id']}/links",
                         json={"parent": parent, "name": name})
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_link_is_one_file_here_and_two_names_of_one_file_on_the_server(account, tmp_path):
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        d = await c.ops.mkdir(ROOT_INO, b"d", 0o755, CTX)
        ino = await c.write_file("a.txt", b"one\n")
        attrs = await c.ops.link(ino, d.st_ino, b"b.txt", CTX)
        assert attrs.st_ino == ino and attrs.st_nlink == 2
        assert await c.ino("d/b.txt") == ino
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 2
        assert await c.listdir("d") == ["b.txt"]
        # A write through one name is the other name's content at once (one inode).
        await _append(c, "d/b.txt", b"two\n")
        assert await c.read_file("a.txt") == b"one\ntwo\n"
        await c.synced()
        a, b = account.lookup("a.txt"), account.lookup("d/b.txt")
        assert a["inode"] is not None and a["inode"] == b["inode"]
        assert account.data("a.txt") == account.data("d/b.txt") == b"one\ntwo\n"
        # Nothing to upload and nothing that differs: the mirror agrees with the server.
        assert c.tree.journal.count() == 0


async def test_unlinking_the_first_name_hands_the_file_to_the_other_name(account, tmp_path):
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        ino = await c.write_file("a.txt", b"first\n")
        await c.synced()
        await c.ops.link(ino, ROOT_INO, b"b.txt", CTX)
        # A writer holds the file open through the first name, which then goes.
        info = await c.ops.open(ino, os.O_WRONLY, CTX)
        await c.ops.unlink(ROOT_INO, b"a.txt", CTX)
        await c.ops.write(info.fh, 6, b"second\n")
        await c.ops.flush(info.fh)
        await c.ops.release(info.fh)
        assert await c.listdir() == ["b.txt"]
        assert await c.ino("b.txt") == ino
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 1
        assert await c.read_file("b.txt") == b"first\nsecond\n"
        await c.synced()
        assert account.lookup("a.txt") is None
        assert account.data("b.txt") == b"first\nsecond\n"
        assert c.tree.get(ino).id == account.lookup("b.txt")["id"]


async def test_maildir_delivery_leaves_one_file_under_its_new_name(account, tmp_path):
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        tmp = await c.ops.mkdir(ROOT_INO, b"tmp", 0o755, CTX)
        new = await c.ops.mkdir(ROOT_INO, b"new", 0o755, CTX)
        ino = await c.write_file("tmp/17.host", b"From: a\n\nhello\n")
        await c.ops.link(ino, new.st_ino, b"17.host", CTX)
        await c.ops.unlink(tmp.st_ino, b"17.host", CTX)
        assert await c.listdir("tmp") == [] and await c.listdir("new") == ["17.host"]
        await c.synced()
        assert account.lookup("tmp/17.host") is None
        assert account.data("new/17.host") == b"From: a\n\nhello\n"
        await c.caught_up(account.head())
        assert await c.read_file("new/17.host") == b"From: a\n\nhello\n"


async def test_renaming_a_name_over_another_name_of_the_same_file_does_nothing(account, tmp_path):
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        ino = await c.write_file("a", b"x")
        await c.ops.link(ino, ROOT_INO, b"b", CTX)
        await c.ops.rename(ROOT_INO, b"a", ROOT_INO, b"b", 0, CTX)
        assert await c.listdir() == ["a", "b"]
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 2
        # A name moved elsewhere stays a name of the file.
        d = await c.ops.mkdir(ROOT_INO, b"d", 0o755, CTX)
        await c.ops.rename(ROOT_INO, b"b", d.st_ino, b"c", 0, CTX)
        assert await c.ino("d/c") == ino
        await c.synced()
        assert account.lookup("a")["inode"] == account.lookup("d/c")["inode"] is not None
        assert account.lookup("b") is None


async def test_link_refusals(account, tmp_path):
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        d = await c.ops.mkdir(ROOT_INO, b"d", 0o755, CTX)
        ino = await c.write_file("f", b"x")

        async def errno_of(coro) -> int:
            with pytest.raises(pyfuse3.FUSEError) as exc:
                await coro
            return exc.value.errno

        assert await errno_of(c.ops.link(d.st_ino, ROOT_INO, b"e", CTX)) == errno.EPERM
        assert await errno_of(c.ops.link(ino, ROOT_INO, b"d", CTX)) == errno.EEXIST
        assert await errno_of(c.ops.link(ino, ROOT_INO, b"bad\x07", CTX)) == errno.EINVAL
        info = await c.ops.open(ino, os.O_RDONLY, CTX)
        await c.ops.unlink(ROOT_INO, b"f", CTX)
        # linkat(AT_EMPTY_PATH) of an open, unlinked file: the kernel asks, we refuse.
        assert await errno_of(c.ops.link(ino, ROOT_INO, b"g", CTX)) == errno.ENOENT
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 0
        await c.ops.release(info.fh)
        await c.synced()
        assert account.lookup("e") is None and account.lookup("g") is None and account.lookup("f") is None


async def test_a_link_made_elsewhere_is_one_inode_here(account, tmp_path):
    other = account.api
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        docs = mkdir(other, account.vault, "docs")
        f = create_file(other, account.vault, "log.txt", b"line 1\n")
        await c.caught_up(account.head())
        ino = await c.ino("log.txt")
        _api_link(account, f, docs["id"], "log-link.txt")
        await c.caught_up(account.head())
        assert await c.ino("docs/log-link.txt") == ino
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 2
        assert await c.read_file("docs/log-link.txt") == b"line 1\n"
        # A commit through the other name elsewhere: the one inode shows it.
        link_node = account.lookup("docs/log-link.txt")
        r = commit(other, account.vault, link_node, b"line 1\nline 2\n")
        assert r.status_code == 200, r.text
        await c.caught_up(account.head())
        assert await c.read_file("log.txt") == b"line 1\nline 2\n"
        # The first name deleted elsewhere: the file lives on under its other name.
        head = account.lookup("log.txt")
        r = other.delete(f"/vaults/{account.vault}/nodes/{head['id']}", params={"base_rev": head["rev"]})
        assert r.status_code in (200, 204), r.text
        await c.caught_up(account.head())
        assert await c.listdir() == ["docs"]
        assert await c.ino("docs/log-link.txt") == ino
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 1
        assert await c.read_file("docs/log-link.txt") == b"line 1\nline 2\n"
        # And a write here reaches the server through the name that is left.
        await _append(c, "docs/log-link.txt", b"line 3\n")
        await c.synced()
        assert account.data("docs/log-link.txt") == b"line 1\nline 2\nline 3\n"
        assert not c.layers.sync.conflicts


async def test_links_survive_a_restart_of_the_mount(account, tmp_path):
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        ino = await c.write_file("a", b"kept")
        await c.ops.link(ino, ROOT_INO, b"b", CTX)
    # (stopped before anything was uploaded)
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        assert await c.ino("a") == await c.ino("b") == ino
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 2
        await c.synced()
        assert account.lookup("a")["inode"] == account.lookup("b")["inode"] is not None
        assert account.data("b") == b"kept"
