"""Shared files written by three clients at once, in one process, uploads starting as soon
as they can: every token written is in the file or one of its conflicted copies, unless an
overwrite read it before replacing it. The shared part of tests/fs/test_convergence.py
without the kernel in the way: a second a seed, so many seeds are cheap
(``GOBI_STRESS_SEEDS=60``; ``GOBI_STRESS_SEED=<n>`` replays one). It found an open for
writing that staged an older version than the mirror showed (``Vfs.materialize``).
"""

from __future__ import annotations

import os
import random
from types import SimpleNamespace

import pytest
import trio

from .client import CTX, open_client

pytestmark = pytest.mark.trio

SHARED = 2
CLIENTS = 3


async def _append(c, path: str, token: bytes) -> None:
    ino = await c.ino(path)
    info = await c.ops.open(ino, os.O_WRONLY | os.O_APPEND, CTX)
    try:
        size = (await c.ops.getattr(ino, CTX)).st_size
        await c.ops.write(info.fh, size, token)
        await c.ops.flush(info.fh)
    finally:
        await c.ops.release(info.fh)


async def _overwrite(c, path: str, token: bytes) -> bytes:
    ino = await c.ino(path)
    info = await c.ops.open(ino, os.O_RDWR, CTX)
    try:
        size = (await c.ops.getattr(ino, CTX)).st_size
        before = await c.ops.read(info.fh, 0, size + 1)
        await c.ops.setattr(ino, SimpleNamespace(st_size=0),
                            SimpleNamespace(update_size=True, update_mode=False, update_mtime=False, update_atime=False,
                                            update_uid=False, update_gid=False), info.fh, CTX)
        await c.ops.write(info.fh, 0, token)
        await c.ops.flush(info.fh)
    finally:
        await c.ops.release(info.fh)
    return before


@pytest.mark.parametrize("seed", range(int(os.environ.get("GOBI_STRESS_SEEDS", "4"))))
async def test_shared_files_written_by_three_clients_lose_no_token(account, tmp_path, seed):
    seed = int(os.environ.get("GOBI_STRESS_SEED", seed))
    tokens: list[tuple[str, bytes]] = []
    seen: list[tuple[str, bytes]] = []
    async with open_client(account.server.url, account.token, account.vault, tmp_path / "c0") as c0, \
            open_client(account.server.url, account.token, account.vault, tmp_path / "c1") as c1, \
            open_client(account.server.url, account.token, account.vault, tmp_path / "c2") as c2:
        clients = [c0, c1, c2]
        await c0.ops.mkdir(1, b"shared", 0o755, CTX)
        for k in range(SHARED):
            await c0.write_file(f"shared/s{k}", b"")
        await c0.synced()
        head = account.head()
        for c in clients[1:]:
            await c.caught_up(head)

        async def worker(i: int, c) -> None:
            rng = random.Random(seed * 10 + i)
            for n in range(40):
                path = f"shared/s{rng.randrange(SHARED)}"
                token = f"c{i}-{n}-{rng.random():.6f}\n".encode()
                if rng.random() < 0.5:
                    await _append(c, path, token)
                else:
                    before = await _overwrite(c, path, token)
                    seen.append((path, before))
                tokens.append((path, token))
                await trio.sleep(rng.random() * 0.02)

        async with trio.open_nursery() as n:
            for i, c in enumerate(clients):
                n.start_soon(worker, i, c)
        for _ in range(3):
            for c in clients:
                await c.synced()
        head = account.head()
        for c in clients:
            await c.caught_up(head)
        shared = {name: await c0.read_file(f"shared/{name}") for name in await c0.listdir("shared")}
    replaced = {(f"shared/{p.split('/')[-1]}", line + b"\n") for p, before in seen
                for line in before.split(b"\n") if line}
    lost = [(p, t) for p, t in tokens if (p, t) not in replaced
            and not any(t in data for name, data in shared.items()
                        if name == p.split("/")[-1] or name.startswith(p.split("/")[-1] + " (conflicted copy "))]
    assert not lost, f"seed {seed}: lost {lost}\n{shared}"

