"""Restoring a folder restores what was in it (docs/conflicts.md, "Trash").

A mount replays ``rm -rf big`` as one delete per file and one per folder; the folder's
trash entry absorbs what the same device deleted inside it just before, so ``gobi trash``
lists one entry and one restore brings everything back, as it was at delete time. Runs the
services in-process on SQLite and on the MongoDB-wire server of the session."""

from __future__ import annotations

import pytest
import pytest_asyncio

from gobi.protocol import DeleteNodeRequest, NodeKind, RestoreTrashRequest
from gobi.server.access import Actor
from gobi.server.config import ServerConfig
from gobi.server.service import Services

from .test_retention import create, read

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["sqlite", "mongo"])
def store_url(request):
    return "" if request.param == "sqlite" else request.getfixturevalue("mongo_url")


@pytest_asyncio.fixture
async def svc(tmp_path, store_url):
    cfg = ServerConfig(data_dir=tmp_path, metadata=store_url, history_interval=0, gc_interval=0,
                       storage_maintenance_interval=0)          # the default guard
    services = await Services.open(cfg)
    yield services
    await services.close()


@pytest_asyncio.fixture
async def who(svc):
    user = await svc.accounts.register("alice", "correct horse battery")
    laptop, phone = Actor(user, "laptop"), Actor(user, "phone")
    vault = await svc.vaults.create(laptop, "v")
    return laptop, phone, vault.id


async def mkdir(svc, actor, vault, parent, name):
    from gobi.protocol import CreateNodeRequest

    node, _ = await svc.nodes.create(actor, vault, CreateNodeRequest(parent=parent, name=name, kind="dir"))
    return node


async def tree(svc, vault, node_id="root", prefix="") -> dict[str, str]:
    out: dict[str, str] = {}
    for child in await svc.store.children(vault, node_id, None, 10_000):
        out[prefix + child.name] = child.id
        if child.kind is NodeKind.DIR:
            out.update(await tree(svc, vault, child.id, prefix + child.name + "/"))
    return out


async def rm(svc, actor, vault, node_id):
    node = await svc.store.node(vault, node_id)
    await svc.nodes.delete(actor, vault, node_id, DeleteNodeRequest(
        base_rev=node.rev, on_conflict="strategy"))


async def big_tree(svc, actor, vault):
    """big/{f0..f9}, big/sub/{g0..g4}, big/sub/deep/h0: 16 files in 3 folders."""
    big = await mkdir(svc, actor, vault, "root", "big")
    sub = await mkdir(svc, actor, vault, big.id, "sub")
    deep = await mkdir(svc, actor, vault, sub.id, "deep")
    data = {}
    for i in range(10):
        data[f"big/f{i}"] = b"f%d " % i * 50
        await create(svc, actor, vault, f"f{i}", data[f"big/f{i}"], big.id)
    for i in range(5):
        data[f"big/sub/g{i}"] = b"g%d " % i * 70
        await create(svc, actor, vault, f"g{i}", data[f"big/sub/g{i}"], sub.id)
    data["big/sub/deep/h0"] = b"deep"
    await create(svc, actor, vault, "h0", data["big/sub/deep/h0"], deep.id)
    return data


async def rm_rf(svc, actor, vault, path="big"):
    """rm -rf as the kernel sends it through a mount: files, then each folder, deepest first."""
    ids = await tree(svc, vault)
    under = sorted((p for p in ids if p == path or p.startswith(path + "/")),
                   key=lambda p: (-p.count("/"), p))
    for p in under:
        node = await svc.store.node(vault, ids[p])
        if node.kind is not NodeKind.DIR:
            await rm(svc, actor, vault, ids[p])
    for p in under:
        node = await svc.store.node(vault, ids[p])
        if node.kind is NodeKind.DIR:
            await rm(svc, actor, vault, ids[p])


async def contents(svc, actor, vault) -> dict[str, bytes]:
    out = {}
    for p, node_id in (await tree(svc, vault)).items():
        node = await svc.store.node(vault, node_id)
        if node.kind is NodeKind.FILE:
            out[p] = await read(svc, actor, vault, node_id)
    return out


async def test_an_rm_rf_is_one_trash_entry_and_one_restore_brings_it_all_back(svc, who):
    laptop, _, vault = who
    data = await big_tree(svc, laptop, vault)
    before = await tree(svc, vault)
    await rm_rf(svc, laptop, vault)
    assert await tree(svc, vault) == {}
    [entry] = await svc.trash.list(laptop, vault)
    assert (entry.path, entry.kind, entry.files, entry.dirs) == ("big", NodeKind.DIR, 16, 3)
    assert entry.bytes == sum(len(d) for d in data.values())
    done = await svc.trash.restore(laptop, vault, entry.id, RestoreTrashRequest(), svc.nodes.write)
    assert (done.restored, done.renamed) == (19, False)
    assert await tree(svc, vault) == before            # same paths, same node ids
    assert await contents(svc, laptop, vault) == data   # as they were at delete time
    assert await svc.trash.list(laptop, vault) == []


async def test_a_folder_whose_name_was_taken_comes_back_beside_it_with_its_content(svc, who):
    laptop, _, vault = who
    data = await big_tree(svc, laptop, vault)
    await rm_rf(svc, laptop, vault)
    await mkdir(svc, laptop, vault, "root", "big")      # the name is taken meanwhile
    [entry] = await svc.trash.list(laptop, vault)
    done = await svc.trash.restore(laptop, vault, entry.id, RestoreTrashRequest(), svc.nodes.write)
    assert done.renamed and done.node.name == "big (restored)" and done.restored == 19
    got = await contents(svc, laptop, vault)
    assert got == {p.replace("big/", "big (restored)/", 1): d for p, d in data.items()}


async def test_one_file_of_a_deleted_folder_can_come_back_alone_then_the_rest(svc, who):
    laptop, _, vault = who
    data = await big_tree(svc, laptop, vault)
    await rm_rf(svc, laptop, vault)
    [one] = await svc.trash.list(laptop, vault, path="big/sub/g1")
    await svc.trash.restore(laptop, vault, one.id, RestoreTrashRequest(), svc.nodes.write)
    assert sorted(await tree(svc, vault)) == ["big", "big/sub", "big/sub/g1"]
    [rest] = await svc.trash.list(laptop, vault)
    assert rest.path == "big"
    await svc.trash.restore(laptop, vault, rest.id, RestoreTrashRequest(), svc.nodes.write)
    assert await contents(svc, laptop, vault) == data


async def test_only_what_the_same_device_deleted_inside_goes_with_the_folder(svc, who):
    laptop, phone, vault = who
    data = await big_tree(svc, laptop, vault)
    ids = await tree(svc, vault)
    await rm(svc, phone, vault, ids["big/f3"])          # another device, before
    await rm_rf(svc, laptop, vault)
    entries = {e.path: e for e in await svc.trash.list(laptop, vault)}
    assert sorted(entries) == ["big", "big/f3"]
    assert (entries["big"].files, entries["big/f3"].device) == (15, "phone")
    await svc.trash.restore(laptop, vault, entries["big"].id, RestoreTrashRequest(), svc.nodes.write)
    assert await contents(svc, laptop, vault) == {p: d for p, d in data.items() if p != "big/f3"}


async def test_purging_a_folder_entry_purges_what_it_absorbed(svc, who):
    laptop, _, vault = who
    await big_tree(svc, laptop, vault)
    ids = await tree(svc, vault)
    await rm_rf(svc, laptop, vault)
    [entry] = await svc.trash.list(laptop, vault)
    dropped = await svc.trash.purge(laptop, vault, entry.id, svc.nodes.write)
    assert dropped == 16                                 # one version per file
    assert await svc.store.versions(vault, ids["big/sub/deep/h0"]) == []
    assert await svc.trash.list(laptop, vault, path="big/sub/g1") == []
