"""Hard links in the mount's layers (issue 17, item 1): one kernel inode per file, a
further name an alias row of it (``gobi.fs.tree``, "Hard links"), every name a node of its
own on the server sharing the file's ``inode``.

The adapter is driven as the kernel drives it; "another device" is the server's REST API.
The mount tier (tests/fs/test_hardlinks.py) runs the same semantics through real mounts.
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

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
        # Nothing of it had left this machine: one create under the new name, no link, no
        # delete (the server never heard of tmp/17.host; git's object files go this way).
        r = account.api.get(f"/vaults/{account.vault}/events", params={"after": 0, "limit": 100})
        kinds = [(e["type"], e["node"]["name"]) for e in r.json()["events"] if e.get("node")]
        assert [k for k in kinds if k[1] == "17.host"] == [("create", "17.host")], kinds
        await c.caught_up(account.head())
        assert await c.read_file("new/17.host") == b"From: a\n\nhello\n"
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 1

    # The same once the file had reached the server: a link, then the first name's delete.
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c2") as c:
        ino = await c.write_file("tmp/18.host", b"second")
        await c.synced()
        await c.ops.link(ino, await c.ino("new"), b"18.host", CTX)
        await c.ops.unlink(await c.ino("tmp"), b"18.host", CTX)
        await c.synced()
        assert account.lookup("tmp/18.host") is None and account.data("new/18.host") == b"second"


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


async def test_a_chmod_through_one_name_is_the_files_mode_under_every_name(account, tmp_path):
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        ino = await c.write_file("a", b"x")
        await c.ops.link(ino, ROOT_INO, b"b", CTX)
        await c.synced()
        attr = pyfuse3.EntryAttributes()
        attr.st_mode = 0o100600
        fields = SimpleNamespace(update_size=False, update_mode=True, update_mtime=False,
                                 update_atime=False, update_uid=False, update_gid=False)
        await c.ops.setattr(await c.ino("b"), attr, fields, None, CTX)
        assert (await c.ops.getattr(await c.ino("a"), CTX)).st_mode & 0o777 == 0o600
        await c.synced()
        assert account.lookup("a")["mode"] == account.lookup("b")["mode"] == 0o600


async def test_a_name_restored_with_other_content_becomes_a_file_of_its_own(account, tmp_path):
    other = account.api
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        f = create_file(other, account.vault, "a", b"old")
        b = _api_link(account, f, "root", "b")
        await c.caught_up(account.head())
        ino = await c.ino("a")
        assert await c.ino("b") == ino
        # Elsewhere: b goes to the trash, a changes, b comes back with its old content.
        r = other.delete(f"/vaults/{account.vault}/nodes/{b['id']}", params={"base_rev": b["rev"]})
        assert r.status_code in (200, 204), r.text
        r = commit(other, account.vault, account.lookup("a"), b"new")
        assert r.status_code == 200, r.text
        entry = other.get(f"/vaults/{account.vault}/trash").json()["entries"][0]
        r = other.post(f"/vaults/{account.vault}/trash/{entry['id']}/restore", json={})
        assert r.status_code == 200, r.text
        assert account.lookup("b").get("inode") is None
        await c.caught_up(account.head())
        assert await c.ino("a") == ino and await c.ino("b") != ino
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 1
        assert await c.read_file("a") == b"new" and await c.read_file("b") == b"old"


async def test_a_link_whose_file_was_deleted_elsewhere_meanwhile_keeps_the_file(account, tmp_path):
    other = account.api
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        ino = await c.write_file("a", b"keep me")
        await c.synced()
        async with c.layers.sync.paused():
            # Here: a second name, then the first one goes (the file is now only "b"),
            # while another device deletes "a" before any of it reaches the server.
            await c.ops.link(ino, ROOT_INO, b"b", CTX)
            await c.ops.unlink(ROOT_INO, b"a", CTX)
            head = account.lookup("a")
            r = other.delete(f"/vaults/{account.vault}/nodes/{head['id']}",
                             params={"base_rev": head["rev"]})
            assert r.status_code in (200, 204), r.text
        await c.synced()
        assert account.data("b") == b"keep me"
        await c.caught_up(account.head())
        assert await c.ino("b") == ino and await c.read_file("b") == b"keep me"


async def test_a_directory_deleted_elsewhere_takes_every_name_inside_it(account, tmp_path):
    other = account.api
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        d = mkdir(other, account.vault, "d")
        f = create_file(other, account.vault, "f", b"x", parent=d["id"])
        _api_link(account, f, d["id"], "g")
        _api_link(account, f, "root", "outside")
        await c.caught_up(account.head())
        ino = await c.ino("outside")
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 3
        r = other.delete(f"/vaults/{account.vault}/nodes/{d['id']}",
                         params={"base_rev": account.lookup("d")["rev"], "recursive": "true"})
        assert r.status_code in (200, 204), r.text
        await c.caught_up(account.head())
        assert await c.listdir() == ["outside"]
        assert await c.ino("outside") == ino
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 1
        assert await c.read_file("outside") == b"x"


async def test_a_link_undone_before_upload_leaves_nothing_to_verify(account, tmp_path):
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c") as c:
        ino = await c.write_file("a", b"x")
        await c.synced()
        await c.ops.link(ino, ROOT_INO, b"b", CTX)
        await c.ops.unlink(ROOT_INO, b"b", CTX)     # before the link left this machine
        await c.synced()
        assert account.lookup("b") is None and account.lookup("a").get("inode") is None
        await c.caught_up(account.head())
        report = await c.layers.verifier.verify()
        assert report["difference_count"] == 0, report
        assert (await c.ops.getattr(ino, CTX)).st_nlink == 1
