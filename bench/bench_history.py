"""What history costs on the server: trash, restores, the mass-delete guard, GC.

    .venv/bin/python bench/bench_history.py [--files 2000] [--chunks 1000]

Runs the real services in-process (SQLite store, encrypted local storage in a temp dir,
no HTTP), each row side by side with its baseline from the same run:

- recursive delete of a directory of N files (one transaction, N tombstones, one trash
  entry) and its restore from the trash (N revived nodes, parents first), against
  creating those N files in the first place;
- N single-file deletes (one request each) with the trash and the mass-delete guard's
  bookkeeping, against the same deletes with the guard off;
- restoring a version of a file of C chunks, against committing that file;
- garbage collection of C unreferenced chunks (objects counted in storage before and
  after), against uploading those chunks.

Bounded by the flags; everything lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gobi.drivers.local import LocalDriver  # noqa: E402
from gobi.protocol import (  # noqa: E402
    ChunkRef,
    CommitContentRequest,
    CreateNodeRequest,
    DeleteNodeRequest,
    Manifest,
    RestoreTrashRequest,
    RestoreVersionRequest,
)
from gobi.server.access import Actor  # noqa: E402
from gobi.server.config import ServerConfig  # noqa: E402
from gobi.server.service import Services  # noqa: E402


async def open_services(root: Path, guard: bool) -> tuple[Services, Actor, str]:
    cfg = ServerConfig(data_dir=root, history_interval=0, gc_interval=0, storage_maintenance_interval=0,
                       gc_grace=0, mass_delete_files=10**9 if guard else 0, mass_delete_fraction=0)
    svc = await Services.open(cfg)
    user = await svc.accounts.register("bench", "correct horse battery")
    actor = Actor(user, "bench-device")
    vault = (await svc.vaults.create(actor, "bench")).id
    return svc, actor, vault


async def put_chunk(svc: Services, actor: Actor, vault: str, data: bytes) -> ChunkRef:
    import hashlib

    h = hashlib.sha256(data).hexdigest()
    await svc.chunks.put(actor, vault, h, data)
    return ChunkRef(hash=h, size=len(data))


async def make_files(svc, actor, vault, parent: str, n: int) -> list:
    nodes = []
    for i in range(n):
        ref = await put_chunk(svc, actor, vault, os.urandom(64) + i.to_bytes(4, "big"))
        node, _ = await svc.nodes.create(actor, vault, CreateNodeRequest(
            parent=parent, name=f"f{i:06d}", kind="file", content=Manifest(chunks=[ref], size=ref.size)))
        nodes.append(node)
    return nodes


async def objects(root: Path, vault: str) -> int:
    return len([o async for o in LocalDriver(root / "blobs").list(f"{vault}/")])


def rate(n: int, seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms   {n / seconds:9.0f}/s"


async def bench(args: argparse.Namespace, work: Path) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    svc, actor, vault = await open_services(work / "guard-on", guard=True)
    off, actor_off, vault_off = await open_services(work / "guard-off", guard=False)
    try:
        n = args.files
        # -- single deletes with and without the guard's bookkeeping, first (both stores
        # still small), alternating, best of two rounds each: the machine may be shared
        m = min(n, 1000)
        best = [float("inf"), float("inf")]
        for rnd in range(2):
            for i, (s, a, v) in enumerate(((off, actor_off, vault_off), (svc, actor, vault))):
                e, _ = await s.nodes.create(a, v, CreateNodeRequest(parent="root", name=f"e{rnd}", kind="dir"))
                files = await make_files(s, a, v, e.id, m)
                t0 = time.perf_counter()
                for f in files:
                    await s.nodes.delete(a, v, f.id, DeleteNodeRequest(base_rev=f.rev))
                best[i] = min(best[i], time.perf_counter() - t0)
        single_rows = [
            (f"{m} single deletes, guard off (trash only)", rate(m, best[0]), "baseline"),
            (f"{m} single deletes, guard on", rate(m, best[1]), f"{best[1] / best[0]:.2f}× off"),
        ]
        # -- a directory of n files: create, delete, restore
        d, _ = await svc.nodes.create(actor, vault, CreateNodeRequest(parent="root", name="d", kind="dir"))
        t0 = time.perf_counter()
        await make_files(svc, actor, vault, d.id, n)
        create_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await svc.nodes.delete(actor, vault, d.id, DeleteNodeRequest(base_rev=d.rev, recursive=True))
        delete_s = time.perf_counter() - t0
        entry = next(e for e in await svc.trash.list(actor, vault) if e.node == d.id)
        t0 = time.perf_counter()
        done = await svc.trash.restore(actor, vault, entry.id, RestoreTrashRequest(), svc.nodes.write)
        restore_s = time.perf_counter() - t0
        assert done.restored == n + 1
        rows.append((f"create {n} files (chunk + create each)", rate(n, create_s), "baseline"))
        rows.append((f"recursive delete of the {n}-file dir", rate(n, delete_s), f"{delete_s / create_s:.3f}× create"))
        rows.append(("restore it from the trash", rate(n, restore_s), f"{restore_s / create_s:.3f}× create"))
        rows.extend(single_rows)

        # -- version restore of a file of c chunks
        c = args.chunks
        refs = [await put_chunk(svc, actor, vault, os.urandom(256)) for _ in range(c)]
        size = sum(r.size for r in refs)
        big, _ = await svc.nodes.create(actor, vault, CreateNodeRequest(
            parent="root", name="big", kind="file", content=Manifest(chunks=refs[:1], size=refs[0].size)))
        t0 = time.perf_counter()
        v2 = await svc.nodes.commit(actor, vault, big.id, CommitContentRequest(base_rev=big.rev, chunks=refs, size=size))
        commit_s = time.perf_counter() - t0
        await svc.nodes.commit(actor, vault, big.id, CommitContentRequest(base_rev=v2.rev, chunks=refs[:1], size=refs[0].size))
        t0 = time.perf_counter()
        await svc.history.restore(actor, vault, big.id, RestoreVersionRequest(rev=v2.content_rev), svc.nodes.write)
        vrestore_s = time.perf_counter() - t0
        rows.append((f"commit a {c}-chunk manifest", f"{commit_s * 1000:9.1f} ms", "baseline"))
        rows.append(("restore that version", f"{vrestore_s * 1000:9.1f} ms", f"{vrestore_s / commit_s:.2f}× commit"))

        # -- garbage collection of c chunks
        g, _ = await svc.nodes.create(actor, vault, CreateNodeRequest(parent="root", name="g", kind="dir"))
        t0 = time.perf_counter()
        garbage = await make_files(svc, actor, vault, g.id, c)
        upload_s = time.perf_counter() - t0
        await svc.nodes.delete(actor, vault, g.id, DeleteNodeRequest(base_rev=g.rev, recursive=True))
        for e in await svc.trash.list(actor, vault):
            await svc.trash.purge(actor, vault, e.id, svc.nodes.write)
        before = await objects(work / "guard-on", vault)
        dry = await svc.gc.collect(vault, dry_run=True)
        report = await svc.gc.collect(vault)
        after = await objects(work / "guard-on", vault)
        assert report.freed["chunks"] == before - after >= len(garbage)
        rows.append((f"upload {len(garbage)} chunks + create files", rate(len(garbage), upload_s), "baseline"))
        rows.append((f"gc: {report.freed['chunks']} of {before} objects freed "
                     f"(dry run {dry.seconds * 1000:.0f} ms)", rate(report.freed["chunks"], report.seconds),
                     f"{report.seconds / upload_s:.3f}× upload"))
    finally:
        await svc.close()
        await off.close()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--chunks", type=int, default=1000)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gobi-bench-history-"))
    try:
        rows = asyncio.run(bench(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title="history costs (in-process, SQLite + encrypted local storage)")
    for col in ("what", "time / rate", "vs baseline"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
