"""The mount's layers without a mount: the unit tier's client.

``open_client`` builds everything under the FUSE adapter exactly as ``gobi mount`` does
(``gobi.fs.mount.open_layers``: mirror, cache, uploader, applier, live stream, notifier,
self-check) against a real ``gobi server`` on 127.0.0.1, starts their tasks in the test's
trio nursery, and puts the adapter (``gobi.fs.operations.Operations``) on top without
mounting it: a test calls ``ops.create``/``ops.write``/``ops.rename``… as the kernel
would, and sees kernel notices in ``port.notices`` instead of the kernel's caches.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import trio

from gobi.fs.mount import Layers, MountConfig, open_layers
from gobi.fs.operations import Operations
from gobi.fs.tree import ROOT_INO, Tree

#: What a request from ``ls``/``cat`` run by root carries (the adapter reads uid, gid, pid).
CTX = SimpleNamespace(uid=0, gid=0, pid=os.getpid(), umask=0o022)


@dataclass
class RecordingPort:
    """``gobi.fs.notify.KernelPort`` that records what the kernel would have been told."""

    notices: list[tuple] = field(default_factory=list)

    def invalidate_inode(self, ino: int, attr_only: bool) -> None:
        self.notices.append(("inode", ino, attr_only))

    def invalidate_entry(self, parent: int, name: bytes, deleted: int = 0) -> None:
        self.notices.append(("entry", parent, name, deleted))

    def entries(self) -> set[bytes]:
        return {n[2] for n in self.notices if n[0] == "entry"}


@dataclass
class Client:
    layers: Layers
    ops: Operations
    port: RecordingPort

    @property
    def tree(self) -> Tree:
        return self.layers.tree

    # -- the adapter, as the kernel drives it -------------------------------------------------

    async def ino(self, path: str) -> int:
        ino = ROOT_INO
        for part in [p for p in path.split("/") if p]:
            ino = (await self.ops.lookup(ino, part.encode(), CTX)).st_ino
        return ino

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> int:
        """create(2) + write(2) + close(2) through the adapter; returns the inode."""
        parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
        info, attrs = await self.ops.create(await self.ino(parent), name.encode(), mode,
                                            os.O_WRONLY | os.O_CREAT, CTX)
        for off in range(0, len(data), 1 << 20):
            await self.ops.write(info.fh, off, data[off:off + (1 << 20)])
        await self.ops.flush(info.fh)
        await self.ops.release(info.fh)
        return attrs.st_ino

    async def read_file(self, path: str) -> bytes:
        ino = await self.ino(path)
        info = await self.ops.open(ino, os.O_RDONLY, CTX)
        try:
            size = (await self.ops.getattr(ino, CTX)).st_size
            return await self.ops.read(info.fh, 0, size + 1)
        finally:
            await self.ops.release(info.fh)

    async def listdir(self, path: str = "", dots: bool = False) -> list[str]:
        """readdir as ``ls`` does it (readdirplus replies collected); ``.`` and ``..`` only
        with ``dots`` (``os.listdir`` leaves them out too)."""
        fh = await self.ops.opendir(await self.ino(path), CTX)
        names: list[str] = []
        token = object()
        real = pyfuse3.readdir_reply

        def reply(tok, name, attr, next_id):
            assert tok is token
            names.append(name.decode())
            return True

        pyfuse3.readdir_reply = reply
        try:
            await self.ops.readdir(fh, 0, token)
        finally:
            pyfuse3.readdir_reply = real
            await self.ops.releasedir(fh)
        return sorted(n for n in names if dots or n not in (".", ".."))

    # -- waiting ------------------------------------------------------------------------------

    async def synced(self, limit: float = 30) -> None:
        """What ``gobi sync`` waits for: every local change on the server."""
        sync = self.layers.sync
        with trio.fail_after(limit):
            sync.flush()
            while sync.journal.count() or sync._tasks:
                sync.flush()
                await trio.sleep(0.01)

    async def caught_up(self, seq: int, limit: float = 30) -> None:
        """The mirror has applied every server event up to ``seq`` and the kernel has been
        told (notices go out from a worker thread after the mirror changed)."""
        kernel = self.layers.kernel
        with trio.fail_after(limit):
            while self.layers.states.last_seq < seq or kernel.pending:
                await trio.sleep(0.01)


@asynccontextmanager
async def open_client(server_url: str, token: str, vault: str, cache_dir: Path,
                      **config) -> AsyncIterator[Client]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    config.setdefault("cache_size", 1 << 30)
    cfg = MountConfig(server=server_url, token=token, vault=vault,
                      mountpoint=cache_dir / "not-mounted", cache_dir=cache_dir,
                      materialise=False, **config)
    tree = Tree(cache_dir / "mirror.db")
    port = RecordingPort()
    try:
        layers = await open_layers(cfg, tree, port)
        try:
            async with trio.open_nursery() as nursery:
                await layers.start(nursery)
                layers.kernel.enabled = True
                yield Client(layers, Operations(layers.vfs, layers.status, lambda v: None), port)
                layers.kernel.enabled = False
                nursery.cancel_scope.cancel()
        finally:
            await layers.remote.aclose()
    finally:
        tree.close()
