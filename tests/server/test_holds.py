"""The mass-delete guard holds a burst *whole*, on both metadata stores: the deletes that
counted towards the threshold (already applied) are pulled back into the hold when it
opens, in the same transaction (``server/holds.py``). ``test_history.py`` covers the same
over REST on SQLite; these run the services in-process against SQLite and the
MongoDB-wire server of the session (``tests/backing.py``)."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from gobi.protocol import (
    CreateNodeRequest, DeleteNodeRequest, ErrorCode, EventType, Manifest, NodeKind,
)
from gobi.server.access import Actor
from gobi.server.config import ServerConfig
from gobi.server.errors import ServiceError
from gobi.server.service import Services

pytestmark = pytest.mark.asyncio
THRESHOLD = 6


@pytest.fixture(params=["sqlite", "mongo"])
def store_url(request):
    return "" if request.param == "sqlite" else request.getfixturevalue("mongo_url")


async def open_services(tmp_path, store_url: str, window: str = "5m") -> Services:
    cfg = ServerConfig(data_dir=tmp_path, metadata=store_url, history_interval=0, gc_interval=0,
                       storage_maintenance_interval=0, mass_delete_files=THRESHOLD,
                       mass_delete_fraction=0, mass_delete_window=window)
    return await Services.open(cfg)


@pytest_asyncio.fixture
async def svc(tmp_path, store_url):
    services = await open_services(tmp_path, store_url)
    yield services
    await services.close()


@pytest_asyncio.fixture
async def who(svc):
    """The owner's laptop, the same user's buggy device, and a vault."""
    user = await svc.accounts.register("alice", "correct horse battery")
    laptop, buggy = Actor(user, "laptop"), Actor(user, "buggy")
    vault = await svc.vaults.create(laptop, "v")
    return laptop, buggy, vault.id


async def mk(svc, actor, vault, parent, name, kind="file"):
    content = Manifest(chunks=[], size=0) if kind == "file" else None
    node, _ = await svc.nodes.create(actor, vault, CreateNodeRequest(
        parent=parent, name=name, kind=kind, content=content))
    return node


async def rm(svc, actor, vault, node, recursive=False):
    """A delete as a client sends it: the node's id at its current rev."""
    node = await svc.store.node(vault, node.id)
    req = DeleteNodeRequest(base_rev=node.rev, recursive=recursive)
    return await svc.nodes.delete(actor, vault, node.id, req)


async def tree(svc, vault, node_id="root", prefix="") -> dict[str, str]:
    """path -> node id of everything live."""
    out: dict[str, str] = {}
    for child in await svc.store.children(vault, node_id, None, 10_000):
        out[prefix + child.name] = child.id
        if child.kind is NodeKind.DIR:
            out.update(await tree(svc, vault, child.id, prefix + child.name + "/"))
    return out


async def scene(svc, laptop, vault):
    """top/c/{0,1,2}, top/a/{0,1,2}, top/b/{0,1,2} and x0, x1 at the root."""
    top = await mk(svc, laptop, vault, "root", "top", "dir")
    dirs = {d: await mk(svc, laptop, vault, top.id, d, "dir") for d in "cab"}
    files = {f"{d}/{i}": await mk(svc, laptop, vault, dirs[d].id, str(i))
             for d in "cab" for i in range(3)}
    xs = [await mk(svc, laptop, vault, "root", f"x{i}") for i in range(2)]
    return dirs, files, xs


async def burst(svc, laptop, buggy, vault):
    """The buggy device removes c recursively (3 files), then a file by file and a itself
    (an rm -r), then b/0: 7 files, one past the threshold. The laptop deletes x0, x1 in the
    same window."""
    dirs, files, xs = await scene(svc, laptop, vault)
    before = await tree(svc, vault)
    await rm(svc, laptop, vault, xs[0])
    await rm(svc, buggy, vault, dirs["c"], recursive=True)
    for i in range(3):
        await rm(svc, buggy, vault, files[f"a/{i}"])
    await rm(svc, buggy, vault, dirs["a"])
    await rm(svc, laptop, vault, xs[1])
    with pytest.raises(ServiceError) as exc:
        await rm(svc, buggy, vault, files["b/0"])
    assert exc.value.code is ErrorCode.DELETE_HELD
    return dirs, files, before


async def test_the_deletes_before_the_threshold_are_pulled_back_into_the_hold(svc, who):
    laptop, buggy, vault = who
    dirs, files, before = await burst(svc, laptop, buggy, vault)
    # Every node the buggy device deleted is back, same ids; the laptop's deletes stand.
    now = await tree(svc, vault)
    assert now == {k: v for k, v in before.items() if k not in ("x0", "x1")}
    entries = await svc.trash.list(laptop, vault)
    assert sorted(e.name for e in entries) == ["x0", "x1"]
    assert {e.device for e in entries} == {"laptop"}
    [hold] = await svc.holds.list(laptop, vault, "pending")
    info, items = await svc.holds.get(laptop, vault, hold.id)
    # One item per delete, in the order they were made: c (recursive, one entry, one
    # item), a (its rm -r: a's files, then a, one trash entry holding them all, so one
    # recursive item), then the delete that crossed the threshold.
    assert [(i["path"], i["files"], i["recursive"], bool(i.get("pulled_back"))) for i in items] == [
        ("top/c", 3, True, True), ("top/a", 3, True, True), ("top/b/0", 1, False, False)]
    assert (info.files, info.items, info.device) == (7, 3, "buggy")
    # A later rmdir of b (as a mount sends it) joins the hold and adds no files: the
    # files in b are not its to remove (on confirm it is skipped while b holds any).
    b = await svc.store.node(vault, dirs["b"].id)
    with pytest.raises(ServiceError) as exc:
        await svc.nodes.delete(buggy, vault, b.id,
                               DeleteNodeRequest(base_rev=b.rev, on_conflict="strategy"))
    assert exc.value.code is ErrorCode.DELETE_HELD
    assert (exc.value.details["hold"]["files"], exc.value.details["hold"]["items"]) == (7, 4)
    # Confirm: all of it is deleted again, into the trash, tagged with the hold.
    done = await svc.holds.confirm(laptop, vault, hold.id, svc.nodes.write)
    # (b's rmdir is skipped: b still holds b/1 and b/2)
    assert (done.state, done.applied, done.skipped) == ("confirmed", 3, 1)
    now = await tree(svc, vault)
    assert sorted(now) == ["top", "top/b", "top/b/1", "top/b/2"]
    held = [e for e in await svc.trash.list(laptop, vault) if e.hold == hold.id]
    assert sorted(e.path for e in held) == ["top/a", "top/b/0", "top/c"]
    assert sum(e.files for e in held) == 7


async def test_other_clients_see_the_pulled_back_nodes_come_back_parents_first(svc, who):
    laptop, buggy, vault = who
    dirs, files, before = await burst(svc, laptop, buggy, vault)
    everything = await svc.store.events_after(vault, 0, 100_000)
    first_delete = next(e.seq for e in everything if e.type is EventType.DELETE)
    log = [e for e in everything if e.seq > first_delete]
    # Replaying the log from before the burst gives the tree as it is now.
    live: dict[str, tuple[str | None, str]] = {}
    for e in everything:
        if e.node is None or e.node.id == "root":
            continue
        if e.node.deleted:
            live.pop(e.node.id, None)
        else:
            assert e.node.parent == "root" or e.node.parent in live, f"{e.type} before its parent"
            live[e.node.id] = (e.node.parent, e.node.name)
    assert set(live) == set((await tree(svc, vault)).values())
    creates = [e for e in log if e.type is EventType.CREATE]
    assert {e.node.id for e in creates} == {dirs["c"].id, dirs["a"].id} | {
        files[f"{d}/{i}"].id for d in "ca" for i in range(3)}
    # the hold's event comes after the nodes are back, and counts them
    [hold_event] = [e for e in log if e.type is EventType.HOLD]
    assert hold_event.seq > max(e.seq for e in creates) and hold_event.hold.files == 7


async def test_reject_keeps_everything_pulled_back(svc, who):
    laptop, buggy, vault = who
    dirs, files, before = await burst(svc, laptop, buggy, vault)
    [hold] = await svc.holds.list(laptop, vault, "pending")
    # withdrawn by the requester
    done = await svc.holds.reject(buggy, vault, hold.id, svc.nodes.write)
    assert done.state == "rejected"
    assert await tree(svc, vault) == {k: v for k, v in before.items() if k not in ("x0", "x1")}
    assert sorted(e.name for e in await svc.trash.list(laptop, vault)) == ["x0", "x1"]
    # The window starts again: the next deletes of the device go through.
    await rm(svc, buggy, vault, files["b/1"])
    assert "top/b/1" not in await tree(svc, vault)


async def test_another_users_deletes_stay_even_from_a_device_of_the_same_name(svc, who):
    laptop, buggy, vault = who
    bob = await svc.accounts.register("bob", "correct horse battery")
    await svc.vaults.set_member(laptop, vault, "bob", "write")
    bobs = Actor(bob, "buggy")
    files = [await mk(svc, laptop, vault, "root", f"f{i}") for i in range(10)]
    for f in files[:2]:
        await rm(svc, bobs, vault, f)
    for f in files[2:6]:
        await rm(svc, buggy, vault, f)
    with pytest.raises(ServiceError):        # the window counts per device name: 7 > 6
        await rm(svc, buggy, vault, files[6])
    assert sorted(await tree(svc, vault)) == [f"f{i}" for i in range(2, 10)]
    assert sorted((e.name, e.user) for e in await svc.trash.list(laptop, vault)) == [
        ("f0", "bob"), ("f1", "bob")]


async def test_only_deletes_inside_the_window_are_pulled_back(tmp_path, store_url):
    svc = await open_services(tmp_path, store_url, window="2s")
    try:
        user = await svc.accounts.register("alice", "correct horse battery")
        laptop, buggy = Actor(user, "laptop"), Actor(user, "buggy")
        vault = (await svc.vaults.create(laptop, "v")).id
        files = [await mk(svc, laptop, vault, "root", f"f{i:02d}") for i in range(12)]
        for f in files[:3]:
            await rm(svc, buggy, vault, f)
        await asyncio.sleep(2.3)        # those three leave the window
        for f in files[3:9]:
            await rm(svc, buggy, vault, f)
        with pytest.raises(ServiceError) as exc:
            await rm(svc, buggy, vault, files[9])
        assert exc.value.code is ErrorCode.DELETE_HELD
        assert sorted(await tree(svc, vault)) == [f"f{i:02d}" for i in range(3, 12)]
        assert sorted(e.name for e in await svc.trash.list(laptop, vault)) == ["f00", "f01", "f02"]
        [hold] = await svc.holds.list(laptop, vault, "pending")
        assert (hold.files, hold.items) == (7, 7)
    finally:
        await svc.close()


async def test_pulled_back_creates_carry_the_hold_so_the_deleting_device_keeps_them_hidden(svc, who):
    """The deleting mount must not see its own deletes come back (its rm -rf would fail):
    the create events of a pull-back name the hold, and its device."""
    laptop, buggy, vault = who
    dirs, files, before = await burst(svc, laptop, buggy, vault)
    [hold] = await svc.holds.list(laptop, vault, "pending")
    everything = await svc.store.events_after(vault, 0, 100_000)
    creates = [e for e in everything if e.type is EventType.CREATE and e.hold is not None]
    assert creates and {(e.hold.id, e.hold.device) for e in creates} == {(hold.id, "buggy")}
    assert {e.node.id for e in creates} == {dirs["c"].id, dirs["a"].id} | {
        files[f"{d}/{i}"].id for d in "ca" for i in range(3)}
    # nothing else is marked
    assert all(e.hold is None for e in everything if e.type is not EventType.HOLD and e not in creates)


async def test_the_deleting_device_takes_a_held_name_again(svc, who):
    """``rm -rf build; mkdir build; echo > build/x`` and ``rm f; echo > f`` on the
    deleting mount: new nodes, no conflict. The held directory moves aside, still held;
    a held file is replaced (into the trash, with the hold)."""
    laptop, buggy, vault = who
    dirs, files, before = await burst(svc, laptop, buggy, vault)
    [hold] = await svc.holds.list(laptop, vault, "pending")
    # buggy re-creates top/a (held, pulled back) and top/b/0 (held by its 409)
    new_a = await mk(svc, buggy, vault, (await svc.store.child(vault, "root", "top")).id, "a", "dir")
    new_b0 = await mk(svc, buggy, vault, dirs["b"].id, "0")
    now = await tree(svc, vault)
    assert now["top/a"] == new_a.id and now["top/b/0"] == new_b0.id
    assert now["top/a (held)"] == dirs["a"].id and now["top/a (held)/1"] == files["a/1"].id
    assert not [c for c in await svc.conflicts.list(laptop, vault, "all")]
    replaced = [e for e in await svc.trash.list(laptop, vault) if e.hold == hold.id]
    assert [(e.path, e.reason) for e in replaced] == [("top/b/0", "replace")]
    # on confirm, what is still held goes: the moved-aside directory and its files
    done = await svc.holds.confirm(laptop, vault, hold.id, svc.nodes.write)
    assert done.state == "confirmed"
    now = await tree(svc, vault)
    assert "top/a (held)" not in now and now["top/a"] == new_a.id and now["top/b/0"] == new_b0.id


async def test_fresh_deletes_of_the_device_go_through_while_its_hold_is_pending(tmp_path, store_url):
    """Files the device itself wrote a moment ago do not count, and do not join its
    pending hold: rm -rf node_modules works like everywhere else."""
    cfg = ServerConfig(data_dir=tmp_path, metadata=store_url, history_interval=0, gc_interval=0,
                       storage_maintenance_interval=0, mass_delete_files=THRESHOLD,
                       mass_delete_fraction=0)
    svc = await Services.open(cfg)
    try:
        user = await svc.accounts.register("alice", "correct horse battery")
        laptop, buggy = Actor(user, "laptop"), Actor(user, "buggy")
        vault = (await svc.vaults.create(laptop, "v")).id
        theirs = [await mk(svc, laptop, vault, "root", f"t{i}") for i in range(10)]
        mods = await mk(svc, buggy, vault, "root", "node_modules", "dir")
        own = [await mk(svc, buggy, vault, mods.id, f"m{i}") for i in range(20)]
        for f in own[:10]:                          # its own fresh files: not counted
            await rm(svc, buggy, vault, f)
        assert await svc.holds.list(laptop, vault, "pending") == []
        for f in theirs[:THRESHOLD]:
            await rm(svc, buggy, vault, f)
        with pytest.raises(ServiceError) as exc:    # the laptop's files: counted, held
            await rm(svc, buggy, vault, theirs[THRESHOLD])
        assert exc.value.code is ErrorCode.DELETE_HELD
        for f in own[10:]:                          # still its own: not held
            await rm(svc, buggy, vault, f)
        await rm(svc, buggy, vault, mods)           # the now empty directory too
        now = await tree(svc, vault)
        assert sorted(now) == [f"t{i}" for i in range(10)]
        [hold] = await svc.holds.list(laptop, vault, "pending")
        assert (hold.files, hold.items) == (THRESHOLD + 1, THRESHOLD + 1)
    finally:
        await svc.close()
