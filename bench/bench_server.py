"""Server-side throughput on loopback, side by side with baselines in one run.

    .venv/bin/python bench/bench_server.py [--mib 256] [--commits 2000] [--concurrency 1 8]

Rows:
- chunk upload MB/s through `PUT /chunks/{sha256}` (hash verified, stored durably,
  recorded), for 1 MiB, 256 KiB and 64 KiB chunks, at each concurrency;
  baseline A: the same bytes written straight to disk the way the local driver does it
  (temp file + fsync + rename + fsync dir), no HTTP — what the disk allows;
  baseline B: the same bytes uploaded with HTTP PUT to `rclone serve webdav` on 127.0.0.1.
- small files/s: 4 KiB files made durable one request pair each vs. chunk and op
  batches (`POST /chunks`, `POST /ops`).
- commits/s: create-file commits (one event, one version each) at each concurrency;
  baseline: bare SQLite transactions with synchronous=FULL that insert one row each
  (what durable commits can cost at best on this disk).

Everything is bounded (sizes and counts from the flags) and stops by itself; the servers
it starts bind 127.0.0.1 and are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import ServerProcess, register  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_chunks(total: int, size: int) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(max(1, total // size)):
        data = os.urandom(size)
        out.append((hashlib.sha256(data).hexdigest(), data))
    return out


async def run_parallel(items, concurrency: int, fn) -> float:
    queue = list(items)
    t0 = time.perf_counter()

    async def worker() -> None:
        while queue:
            await fn(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


async def gobi_upload(api: str, token: str, vault: str, chunks, concurrency: int) -> float:
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def put(item) -> None:
            h, data = item
            r = await c.put(f"/vaults/{vault}/chunks/{h}", content=data)
            assert r.status_code == 201, r.text

        return await run_parallel(chunks, concurrency, put)


async def webdav_upload(url: str, chunks, concurrency: int, tag: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        async def put(item) -> None:
            h, data = item
            r = await c.put(f"/{tag}-{h}", content=data)
            assert r.status_code in (200, 201, 204), r.text

        return await run_parallel(chunks, concurrency, put)


def disk_write(root: Path, chunks) -> float:
    """The local driver's durable write pattern, sequentially, without HTTP."""
    t0 = time.perf_counter()
    for h, data in chunks:
        d = root / h[:2] / h[2:4]
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{h}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, d / h)
        dfd = os.open(d, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    return time.perf_counter() - t0


async def gobi_commits(api: str, token: str, vault: str, n: int, concurrency: int, tag: str) -> float:
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def create(i: int) -> None:
            r = await c.post(f"/vaults/{vault}/nodes",
                             json={"parent": "root", "name": f"{tag}-{i}", "kind": "file"})
            assert r.status_code == 201, r.text

        return await run_parallel(range(n), concurrency, create)


async def small_files(api: str, token: str, vault: str, n: int, batched: bool, tag: str) -> float:
    """n 4 KiB files: one PUT + one create each, or chunk and op batches of 500."""
    files = [os.urandom(4096) for _ in range(n)]
    refs = [(hashlib.sha256(d).hexdigest(), d) for d in files]
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120, limits=httpx.Limits(max_connections=8)) as c:
        t0 = time.perf_counter()
        if not batched:
            async def one(i: int) -> None:
                h, d = refs[i]
                assert (await c.put(f"/vaults/{vault}/chunks/{h}", content=d)).status_code == 201
                r = await c.post(f"/vaults/{vault}/nodes", json={
                    "parent": "root", "name": f"{tag}-{i}", "kind": "file",
                    "content": {"chunks": [{"hash": h, "size": len(d)}], "size": len(d)}})
                assert r.status_code == 201, r.text

            await run_parallel(range(n), 8, one)
        else:
            for start in range(0, n, 500):
                part = refs[start:start + 500]
                body = b"".join(bytes.fromhex(h) + len(d).to_bytes(4, "big") + d for h, d in part)
                assert (await c.post(f"/vaults/{vault}/chunks", content=body)).status_code == 200
                ops = [{"id": str(start + i), "op": "create", "args": {
                    "parent": "root", "name": f"{tag}-{start + i}", "kind": "file",
                    "content": {"chunks": [{"hash": h, "size": len(d)}], "size": len(d)}}}
                    for i, (h, d) in enumerate(part)]
                r = await c.post(f"/vaults/{vault}/ops", json={"ops": ops})
                assert all(x["type"] == "ack" for x in r.json()["results"])
        return time.perf_counter() - t0


def sqlite_commits(path: Path, n: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    t0 = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    db.close()
    return elapsed


def start_webdav(root: Path) -> tuple[subprocess.Popen, str] | None:
    if not shutil.which("rclone"):
        return None
    port = free_port()
    proc = subprocess.Popen(
        ["rclone", "serve", "webdav", str(root), "--addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.request("PROPFIND", url, headers={"Depth": "0"}, timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB uploaded per row")
    ap.add_argument("--commits", type=int, default=2000, help="commits per row")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--chunk-kib", type=int, nargs="+", default=[1024, 256, 64],
                    help="chunk sizes for the upload rows")
    args = ap.parse_args()
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="gobi-bench-"))
    srv = ServerProcess(work / "server").start()
    dav = start_webdav(work / "webdav")
    try:
        _, token = register(srv)
        vault = httpx.post(srv.api + "/vaults", json={"name": "bench"},
                           headers={"Authorization": f"Bearer {token}"}).json()["id"]
        up = Table(title=f"chunk upload, {args.mib} MiB per row (MB/s, higher is better)")
        for col in ("chunk", "conc.", "gobi PUT", "disk (driver pattern)", "rclone webdav PUT",
                    "gobi/disk", "gobi/rclone"):
            up.add_column(col, justify="right")
        for size in (k << 10 for k in args.chunk_kib):
            for conc in args.concurrency:
                chunks = make_chunks(args.mib << 20, size)
                total = sum(len(d) for _, d in chunks) / 1e6
                g = total / asyncio.run(gobi_upload(srv.api, token, vault, chunks, conc))
                d = total / disk_write(work / f"disk-{size}-{conc}", chunks)
                r = (total / asyncio.run(webdav_upload(dav[1], chunks, conc, f"{size}-{conc}"))
                     if dav else float("nan"))
                up.add_row(f"{size >> 10} KiB", str(conc), f"{g:.0f}", f"{d:.0f}", f"{r:.0f}",
                           f"{g / d:.2f}", f"{g / r:.2f}" if dav else "-")
        console.print(up)
        cm = Table(title=f"commits, {args.commits} per row (commits/s, higher is better)")
        for col in ("conc.", "gobi create-file commits", "bare SQLite txn (FULL)", "gobi/sqlite"):
            cm.add_column(col, justify="right")
        base = args.commits / sqlite_commits(work / "bare.db", args.commits)
        for conc in args.concurrency:
            rate = args.commits / asyncio.run(
                gobi_commits(srv.api, token, vault, args.commits, conc, f"c{conc}"))
            cm.add_row(str(conc), f"{rate:.0f}", f"{base:.0f}", f"{rate / base:.2f}")
        console.print(cm)
        sf = Table(title=f"{args.commits} small files (4 KiB) made durable on the server (files/s)")
        for col in ("per-file requests (8 parallel)", "batches of 500", "batch/per-file"):
            sf.add_column(col, justify="right")
        one = args.commits / asyncio.run(small_files(srv.api, token, vault, args.commits, False, "s1"))
        batch = args.commits / asyncio.run(small_files(srv.api, token, vault, args.commits, True, "s2"))
        sf.add_row(f"{one:.0f}", f"{batch:.0f}", f"{batch / one:.1f}")
        console.print(sf)
    finally:
        srv.stop()
        if dav:
            dav[0].terminate()
            dav[0].wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
