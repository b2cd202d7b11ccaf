"""Composition root of a mount: builds the layers, runs them in one trio nursery.

Start-up: open the mirror and the cache, recover what a crash may have left (stale
staging copies, orphans), list the tree if this cache dir never saw the server (after
that the mount starts offline too, and catches up live), mount, then serve until
unmounted (``fusermount3 -u``/``gobi umount``) or signalled (SIGTERM/SIGINT unmount
first). After the kernel lets go, the uploader gets a bounded time to drain the journal;
whatever is left stays in the journal for the next mount and is written to the log.

Tasks in the nursery: the FUSE session (``operations.fuse_main``), the uploader (``sync``), the
live stream (``events``: the WebSocket, resumed by seq, with its periodic head-seq
reconciliation), the applier draining the catch-up queue into the mirror (``applier``),
the kernel notifier (``notify``: invalidations and materialising remote changes from a
worker thread, never inside a handler), the self-check (``verify``: the mirror compared
with the server after every reconnection and re-list), the services (``services``: pins, upload progress
and ``gobi sync --wait`` barriers, metrics, systemd status), the status file writer and the
signal watcher.
Several server URLs (``--server a,b``) share one ``Servers`` pool: REST and the socket
fail over together.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from . import atime
from .applier import Applier
from .blocks import BlockCache
from .events import Live
from .logs import oplog
from .notify import Kernel, KernelPort
from .operations import (
    LiveOperations,
    PyfuseKernel,
    fuse_close,
    fuse_init,
    fuse_main,
    fuse_terminate,
    mount_options,
)
from .remote import ApiError, Offline, Remote, Servers
from .services import ServiceError, Services
from .states import ServerStates
from .space import SpaceWatch
from .sync import Sync
from .tree import Tree
from .verify import SELF_CHECK_INTERVAL, SelfCheck, Verifier
from .vfs import Link, Vfs

log = logging.getLogger(__name__)

#: GIL switch interval of the mount process (seconds; see ``run``).
SWITCH_INTERVAL = 0.0002


class MountError(Exception):
    """The mount cannot start (bad vault, no mirror and no server, …)."""


@dataclass
class MountConfig:
    server: str                     # one URL, or several (comma-separated) of one deployment
    token: str
    vault: str                      # name or id
    mountpoint: Path
    cache_dir: Path
    cache_size: int
    fuse_options: list[str] = field(default_factory=list)
    settle: float = 1.0
    quiet: float = 2.0
    drain_timeout: float = 30.0
    self_check: float = SELF_CHECK_INTERVAL   # seconds between self-checks at most; 0: none
    poll_interval: float = 30.0         # cheap head-seq reconciliation of the live stream
    materialise: bool = True            # remote changes through the mount (inotify, sizes)
    on_ready: Callable[[], None] | None = None
    metrics: str | None = None          # HOST:PORT for Prometheus (gobi.fs.metrics)
    metrics_textfile: Path | None = None  # … or a node_exporter textfile


def _device_id(tree: Tree) -> str:
    device = tree.meta("device")
    if device is None:
        host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:40]
        device = f"{host or 'host'}-{os.urandom(3).hex()}"
        with tree.tx():
            tree.set_meta("device", device)
    return device


async def _resolve_vault(remote: Remote, wanted: str) -> tuple[str, str]:
    vaults = await remote.vaults()
    for v in vaults:
        if v.id == wanted:
            return v.id, v.name
    named = [v for v in vaults if v.name == wanted]
    if len(named) == 1:
        return named[0].id, named[0].name
    if len(named) > 1:
        raise MountError(f"several vaults are named {wanted!r}; give its id: "
                         + ", ".join(v.id for v in named))
    raise MountError(f"no vault {wanted!r} on {remote.server} (see 'gobi vault list')")


def recover(tree: Tree, cache: BlockCache, vfs: Vfs) -> None:
    """Undo what a crash may have left: staging copies of clean files, orphans."""
    for ino in cache.staged_inodes():
        e = tree.get_opt(ino)
        if e is None or not e.dirty:
            cache.drop_staged(ino)
        elif e.size != cache.staged_size(ino):
            with tree.tx():
                tree.update(ino, size=cache.staged_size(ino))
    for ino in tree.dirty_inodes():
        if ino not in cache._staged:
            # Dirty without a staging copy cannot happen unless the cache dir was tampered
            # with; the server's version is all there is.
            with tree.tx():
                tree.update(ino, dirty=0)
    vfs.purge_orphans()


def _lock(cache_dir: Path) -> int:
    """One process per cache dir: two uploaders replaying one journal would race."""
    fd = os.open(cache_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MountError(f"cache dir {cache_dir} is in use by another gobi mount") from None
    return fd


async def run(cfg: MountConfig) -> int:
    # Worker threads (group commits, chunking, hashing) hold the GIL while they run
    # Python; the request thread, back from a syscall, waits for it up to the switch
    # interval (5 ms by default) — per kernel request. A short interval bounds that wait.
    sys.setswitchinterval(SWITCH_INTERVAL)
    cfg.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _lock(cfg.cache_dir)
    try:
        return await _run(cfg)
    finally:
        os.close(lock)


@dataclass
class Layers:
    """Everything under the FUSE adapter, wired: what ``_run`` mounts, and what the unit
    tier (tests/fs/unit) drives without a mount."""

    tree: Tree
    device: str
    vault_id: str
    servers: Servers
    link: Link
    cache: BlockCache
    remote: Remote
    vfs: Vfs
    kernel: Kernel
    states: ServerStates
    applier: Applier
    live: Live
    sync: Sync
    verifier: Verifier
    self_check: SelfCheck
    receive: trio.MemoryReceiveChannel
    space: SpaceWatch

    def status(self) -> dict:
        return {**self.sync.status(), **self.applier.status(), **self.live.status(),
                **self.kernel.status(), **self.self_check.status()}

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the layers' tasks (mirror flusher, spare staging files, notifier, applier,
        uploader, live stream, self-check, storage space) in ``nursery``."""
        self.vfs.spawn = nursery.start_soon
        await nursery.start(self.tree.run_flusher)
        await nursery.start(self.vfs.keep_spares)
        await nursery.start(self.kernel.run)
        await nursery.start(self.applier.run, self.receive)
        await nursery.start(self.sync.run_uploader)
        await nursery.start(self.live.run)
        await nursery.start(self.self_check.run)
        await nursery.start(self.space.run)


async def open_layers(cfg: MountConfig, tree: Tree, port: KernelPort | None) -> Layers:
    """Build the layers over an open mirror: find the vault (or start offline from the
    mirror), recover what a crash left, list the tree if this cache never saw the server.
    ``port``: how kernel notices leave (None: not mounted). Raises ``MountError``."""
    device = _device_id(tree)
    link = Link()
    servers = Servers(cfg.server)
    vault_id = tree.meta("vault")
    probe = Remote(servers, cfg.token, device=device)
    try:
        with trio.move_on_after(15):
            vault_id_now, _ = await _resolve_vault(probe, cfg.vault)
            if vault_id and vault_id != vault_id_now:
                raise MountError(f"cache dir {cfg.cache_dir} belongs to vault {vault_id}, "
                                 f"not {vault_id_now}; use another --cache-dir")
            vault_id = vault_id_now
            link.up()
    except Offline as exc:
        link.down(str(exc))
        log.warning("server unreachable (%s): starting offline from the mirror", exc)
    except ApiError as exc:
        raise MountError(f"server refused: {exc.message or exc}") from None
    finally:
        await probe.aclose()
    if vault_id is None:
        raise MountError("the server cannot be reached and this cache dir has no mirror yet")
    with tree.tx():
        tree.set_meta("vault", vault_id)
        tree.set_meta("server", str(servers))
    cache = BlockCache(cfg.cache_dir, cfg.cache_size)
    remote = Remote(servers, cfg.token, vault=vault_id, device=device)
    try:
        vfs = Vfs(tree, cache, remote, link, os.getuid(), os.getgid())
        vfs.atime, _ = atime.split_options(cfg.fuse_options)
        # GOBI_TEST_NOTICE_DELAY: tests hold kernel notices back to show what a late one does.
        kernel = Kernel(tree, cfg.mountpoint, materialise=cfg.materialise, port=port,
                        delay=float(os.environ.get("GOBI_TEST_NOTICE_DELAY", "0")),
                        held_open=lambda ino: ino in vfs.opens)
        states = ServerStates(tree, vfs, remote, device, kernel)
        applier = Applier(tree, states, remote, link, device)
        send, receive = trio.open_memory_channel(math.inf)
        recover(tree, cache, vfs)
        if tree.meta("listed") is None:
            if not link.online:
                raise MountError("the server cannot be reached and this cache dir has no mirror yet")
            await applier.relist()
        live = Live(remote, send, start_seq=applier.last_seq, reconcile_interval=cfg.poll_interval,
                    link=link)
        sync = Sync(tree, vfs, cache, remote, link, device, states, live, settle=cfg.settle,
                    quiet=cfg.quiet)
        verifier = Verifier(tree, vfs, applier, states, sync, remote)
        self_check = SelfCheck(verifier, live, applier, sync, interval=cfg.self_check)
    except BaseException:
        await remote.aclose()
        raise
    return Layers(tree, device, vault_id, servers, link, cache, remote, vfs, kernel, states,
                  applier, live, sync, verifier, self_check, receive, SpaceWatch(remote, link, cache))


async def _run(cfg: MountConfig) -> int:
    tree = Tree(cfg.cache_dir / "mirror.db")
    remote: Remote | None = None
    try:
        layers = await open_layers(cfg, tree, PyfuseKernel())
        remote, vfs, kernel, sync, applier = (layers.remote, layers.vfs, layers.kernel,
                                              layers.sync, layers.applier)
        vault_id, servers, device = layers.vault_id, layers.servers, layers.device

        def status() -> dict:
            return {"mountpoint": str(cfg.mountpoint), "server": remote.server,
                    "servers": servers.urls, "server_switches": servers.switches,
                    "vault": vault_id, "device": device, "pid": os.getpid(),
                    "cache_dir": str(cfg.cache_dir), **layers.status()}

        def control(value: bytes) -> None:
            if value == b"nodrain":
                sync.skip_drain = True
            else:
                sync.flush()

        services = Services(
            tree=tree, vfs=vfs, cache=layers.cache, link=layers.link, remote=remote,
            mountpoint=cfg.mountpoint, status=status, control=control,
            conflicts=lambda: {c.node for c in applier.open_conflicts.values()},
            verifier=layers.verifier, held=layers.states.hidden,
            metrics_listen=cfg.metrics, metrics_textfile=cfg.metrics_textfile)
        sync.progress = services.progress
        status = services.mount_status      # noqa: F811 - with what the services add
        try:
            await services.open()
        except ServiceError as exc:
            raise MountError(str(exc)) from None
        ops = LiveOperations(vfs, status, control, kernel, xattrs=services.xattrs,
                             stats=services.fuse_stats, space=layers.space)
        # Source gobi:<vault id>: unambiguous (names need not be), and what the fstab
        # helper (deploy/mount.fuse.gobi) recognises as already mounted.
        _, kernel_options = atime.split_options(cfg.fuse_options)
        fuse_init(ops, str(cfg.mountpoint), mount_options(f"gobi:{vault_id}", kernel_options))
        mounted = True
        kernel.enabled = True
        try:
            async with trio.open_nursery() as nursery:
                await layers.start(nursery)
                await nursery.start(services.run)
                nursery.start_soon(_status_writer, cfg.cache_dir / "status.json", status)
                nursery.start_soon(_signals)
                if cfg.on_ready:
                    cfg.on_ready()
                oplog("mount", state="mounted", vault=vault_id, path=str(cfg.mountpoint),
                      servers=str(servers), online=layers.link.online)
                await fuse_main()
                # The kernel let go (unmounted) or a signal asked us to stop.
                kernel.enabled = False
                fuse_close(unmount=True)
                mounted = False
                oplog("mount", state="unmounted", path=str(cfg.mountpoint),
                      pending=sync.journal.count())
                if not sync.skip_drain:
                    await _drain(sync, cfg.drain_timeout)
                _write_status(cfg.cache_dir / "status.json", status())
                nursery.cancel_scope.cancel()
        finally:
            kernel.enabled = False
            if mounted:
                fuse_close(unmount=True)
        return 0
    finally:
        if remote is not None:
            await remote.aclose()
        tree.close()


async def _drain(sync: Sync, timeout: float) -> None:
    if sync.journal.count() == 0:
        return
    sync.flush()
    t0 = time.monotonic()
    log.info("unmounted; uploading %d pending change(s) (up to %.0fs)", sync.journal.count(), timeout)
    with trio.move_on_after(timeout):
        while sync.journal.count():
            await sync.idle.wait()
    left = sync.journal.count()
    oplog("mount", state="drained", pending=left, seconds=round(time.monotonic() - t0, 1))
    if left:
        log.warning("%d change(s) still pending (%s); they are kept in the journal and upload "
                    "at the next mount", left, sync.journal.counts())
    else:
        log.info("all changes uploaded")


def _write_status(path: Path, status: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**status, "written_at": time.time()}))
    os.replace(tmp, path)


async def _status_writer(path: Path, status: Callable[[], dict]) -> None:
    while True:
        try:
            _write_status(path, status())
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)
        await trio.sleep(2)


async def _signals() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("signal %s: unmounting", sig)
            fuse_terminate()
            return
