"""The mount's observability and progress services, built together for the composition root.

``Services`` holds what the FUSE adapter, ``gobi status`` and the metrics share:

- ``xattrs``: the xattr namespaces and gobi's virtual attributes (``gobi.fs.xattrs``);
- ``fuse_stats``: kernel requests by operation;
- ``progress``: uploads in flight per file and ``gobi sync --wait`` barriers
  (``gobi.fs.progress``; the uploader reports to it);
- ``pins``: pinned subtrees and the keeper that makes them local (``gobi.fs.pins``);
- the metrics (``gobi.fs.metrics``) on ``--metrics ADDR`` and/or ``--metrics-textfile``;
- systemd's status line when run as a ``Type=notify`` service (``gobi.fs.sdnotify``).

``gobi.fs.mount`` builds it after the layers, calls ``open()`` before mounting (a taken
metrics port fails the mount, not silently later), gives the FUSE adapter ``xattrs`` and
``fuse_stats``,
uses ``mount_status()`` (the layers' status plus the services') as the mount's status and
starts ``run`` in its nursery.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path

import trio

from . import sdnotify
from .metrics import (
    FuseStats,
    MountCollector,
    MountMetrics,
    open_listener,
    parse_listen,
    serve_http,
    textfile_writer,
)
from .pins import Pins
from .progress import UploadProgress
from .xattrs import Xattrs

log = logging.getLogger(__name__)

NOTIFY_INTERVAL = 5.0


class ServiceError(Exception):
    """A service cannot start as asked (e.g. the metrics port is taken)."""


class Services:
    def __init__(self, *, tree, vfs, cache, link, remote, mountpoint: Path,
                 status: Callable[[], dict], control: Callable[[bytes], None],
                 conflicts: Callable[[], Collection[str]] | None = None, verifier=None,
                 held=None, metrics_listen: str | None = None, metrics_textfile: Path | None = None):
        self.tree = tree
        self.cache = cache
        self.layers_status = status
        self.metrics_listen = metrics_listen
        self.metrics_textfile = metrics_textfile

        async def server_seq() -> int:
            return (await remote.vault_info()).head_seq

        self.progress = UploadProgress(tree, vfs, cache, server_seq=server_seq)
        self.pins = Pins(tree, vfs, cache, link)
        self.fuse_stats = FuseStats()
        self.xattrs = Xattrs(tree, vfs, self.mount_status, control, pins=self.pins,
                             progress=self.progress, conflicts=conflicts, verifier=verifier,
                             held=held)
        self.metrics = MountMetrics(MountCollector(
            str(mountpoint), self.mount_status, vfs, cache, self.fuse_stats, extra=self._families,
            oldest_pending=tree.journal.oldest_ts))
        self._listeners: list[trio.SocketListener] = []

    def _families(self, c):
        yield from self.progress.metric_families(c)
        yield c.gauge("gobi_mount_pinned_files", "Files under pinned directories", self.pins.pinned_files)
        yield c.gauge("gobi_mount_pinned_missing_bytes", "Pinned content not local after the "
                      "last pass (offline, or the cache cap)", self.pins.missing_bytes)

    def mount_status(self) -> dict:
        """The whole status of the mount (``gobi status``): the layers' and the services'."""
        return {**self.layers_status(), **self.status()}

    def status(self) -> dict:
        """What the services add to the mount's status."""
        pins = []
        for root in sorted(self.pins.roots):
            p = dict(self.pins.progress.get(root) or {"state": "queued"})
            p["path"] = self.pins._path(root)
            pins.append(p)
        return {"queue": self.progress.queue(), "pins": pins,
                "pinned_bytes": self.pins.pinned_bytes, "cache_pinned": self.cache.pinned_bytes}

    async def open(self) -> None:
        """Bind what must be bound before the mount is announced."""
        if self.metrics_listen:
            try:
                host, port = parse_listen(self.metrics_listen)
                self._listeners = await open_listener(host, port)
            except (ValueError, OSError) as exc:
                raise ServiceError(f"--metrics {self.metrics_listen}: {exc}") from None
        if self.metrics_textfile is not None:
            parent = self.metrics_textfile.parent
            if not parent.is_dir():
                raise ServiceError(f"--metrics-textfile: directory {parent} does not exist")

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.pins.run)
                if self._listeners:
                    await nursery.start(serve_http, self.metrics.render, self._listeners)
                    addrs = ", ".join(f"{l.socket.getsockname()[0]}:{l.socket.getsockname()[1]}"
                                      for l in self._listeners)
                    log.info("metrics on http://%s/metrics", addrs)
                if self.metrics_textfile is not None:
                    try:
                        await nursery.start(textfile_writer, self.metrics_textfile, self.metrics.render)
                    except OSError as exc:
                        log.error("cannot write metrics to %s: %s", self.metrics_textfile, exc)
                if os.environ.get("NOTIFY_SOCKET"):
                    nursery.start_soon(self._systemd_status)
                task_status.started()
        finally:
            sdnotify.notify("STOPPING=1")

    async def _systemd_status(self) -> None:
        last = None
        while True:
            line = sdnotify.status_line(self.mount_status())
            if line != last:
                sdnotify.notify(f"STATUS={line}")
                last = line
            await trio.sleep(NOTIFY_INTERVAL)


__all__ = ["ServiceError", "Services"]
