"""Prometheus metrics of a mount, served on a local address or written for node_exporter.

Two ways out, both opt-in (``gobi mount``):

- ``--metrics 127.0.0.1:9464``: a tiny HTTP endpoint (``GET /metrics``) run by the mount's
  trio loop, so every scrape reads the live state in the thread that owns it. For a
  Prometheus that scrapes the host directly; one port per mount.
- ``--metrics-textfile /var/lib/prometheus/node-exporter/gobi-docs.prom``: the same text
  written atomically every 15 s, for node_exporter's textfile collector (no port to open,
  one file per mount). The file is removed when the mount stops, so ``absent()`` alerts.

Every series carries a ``mount`` label (the mountpoint), so several mounts in one
node_exporter never collide; there are no per-file or per-node labels.

Hot paths only bump plain integers (``FuseStats``, ``Vfs`` counters, ``Histogram``); the
metric families are built at scrape time from those and from the mount's status (the
same dict ``gobi status`` reads), so metrics cost nothing between scrapes.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h11
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UPLOAD_OPS = ("create", "move", "attr", "content", "delete")
TEXTFILE_INTERVAL = 15.0


class Histogram:
    """Cumulative latency histogram kept as plain numbers (observed from trio handlers)."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)      # last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*self.buckets, math.inf), self.counts):
            total += n
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
        return out


class FuseStats:
    """Kernel requests by operation: count, time spent, errors by errno name."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.errors: dict[tuple[str, str], int] = {}

    def done(self, op: str, seconds: float) -> None:
        self.count[op] = self.count.get(op, 0) + 1
        self.seconds[op] = self.seconds.get(op, 0.0) + seconds

    def error(self, op: str, errno_name: str) -> None:
        key = (op, errno_name)
        self.errors[key] = self.errors.get(key, 0) + 1


class MountCollector:
    """Builds the metric families of one mount at scrape time.

    ``status`` is the mount's status dict (``gobi status --json``); ``vfs``, ``cache``,
    ``fuse`` give the counters kept on the hot paths; ``extra`` yields families of the
    optional services (pins, upload progress, conflicts).
    """

    def __init__(self, mountpoint: str, status: Callable[[], dict], vfs, cache, fuse: FuseStats,
                 extra: Callable[[Callable[..., Metric]], Iterator[Metric]] | None = None,
                 oldest_pending: Callable[[], float | None] | None = None):
        self.mount = mountpoint
        self.status = status
        self.vfs = vfs
        self.cache = cache
        self.fuse = fuse
        self.extra = extra
        self.oldest_pending = oldest_pending

    # -- family helpers: every series gets the mount label --------------------------------

    def gauge(self, name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = ()):
        fam = GaugeMetricFamily(name, doc, labels=("mount", *labels))
        if value is not None:
            fam.add_metric([self.mount], value)
        return fam

    def counter(self, name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = ()):
        fam = CounterMetricFamily(name, doc, labels=("mount", *labels))
        if value is not None:
            fam.add_metric([self.mount], value)
        return fam

    def histogram(self, name: str, doc: str, h: Histogram, labels: tuple[str, ...] = (),
                  values: tuple[str, ...] = (), fam: HistogramMetricFamily | None = None):
        fam = fam or HistogramMetricFamily(name, doc, labels=("mount", *labels))
        fam.add_metric([self.mount, *values], h.cumulative(), sum_value=h.sum)
        return fam

    def family(self, kind: str, name: str, doc: str, labels: tuple[str, ...] = ()) -> Metric:
        cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
               "histogram": HistogramMetricFamily}[kind]
        return cls(name, doc, labels=("mount", *labels))

    # -- the families ---------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        st = self.status()
        m = self.mount
        info = GaugeMetricFamily("gobi_mount_info", "A gobi mount (always 1)",
                                 labels=("mount", "vault", "server", "device"))
        info.add_metric([m, str(st.get("vault", "")), str(st.get("server", "")),
                         str(st.get("device", ""))], 1)
        yield info
        yield self.gauge("gobi_mount_online", "1 while the server is reachable",
                         1 if st.get("online") else 0)

        # Upload queue (the journal).
        q = self.gauge("gobi_mount_upload_queue_entries",
                       "Local changes waiting to be uploaded, by operation", labels=("op",))
        by_op = dict(st.get("pending_by_op") or {})
        for op in sorted(set(UPLOAD_OPS) | set(by_op)):
            q.add_metric([m, op], by_op.get(op, 0))
        yield q
        yield self.gauge("gobi_mount_upload_queue_bytes",
                         "Bytes of changed file content not yet on the server "
                         "(the data staging copies hold; holes count nothing)",
                         st.get("queued_bytes", 0))
        if self.oldest_pending is not None:
            oldest = self.oldest_pending()
            yield self.gauge("gobi_mount_upload_queue_oldest_age_seconds",
                             "Age of the oldest change not yet on the server (0: none)",
                             max(0.0, time.time() - oldest) if oldest else 0.0)
        yield self.counter("gobi_mount_uploaded_operations", "Changes the server acknowledged",
                           st.get("uploaded_ops", 0))
        yield self.counter("gobi_mount_uploaded_chunks", "Chunks uploaded", st.get("uploaded_chunks", 0))
        yield self.counter("gobi_mount_uploaded_bytes", "Chunk bytes uploaded",
                           st.get("uploaded_bytes", 0))
        yield self.gauge("gobi_mount_held_deletes",
                         "Deletes the server holds for the vault owner (mass delete)",
                         st.get("held_deletes", 0))

        # Reads: cache hits, fetches and their latency.
        reads = self.counter("gobi_mount_chunk_reads", "Chunk reads of open files, by where "
                             "they were served from", labels=("result",))
        reads.add_metric([m, "hit"], self.vfs.cache_hits)
        reads.add_metric([m, "miss"], self.vfs.cache_misses)
        yield reads
        yield self.counter("gobi_mount_fetched_chunks", "Chunks fetched from the server",
                           self.vfs.fetched_chunks)
        yield self.counter("gobi_mount_fetched_bytes", "Chunk bytes fetched from the server",
                           self.vfs.fetched_bytes)
        yield self.histogram("gobi_mount_fetch_duration_seconds",
                             "Time to fetch one chunk from the server", self.vfs.fetch_seconds)

        # Cache.
        c = self.cache
        cache = self.gauge("gobi_mount_cache_bytes", "Bytes in the local cache by kind: chunks "
                           "(evictable), pinned (kept offline), staged (written here)", labels=("kind",))
        cache.add_metric([m, "chunks"], c.cached_bytes - c.pinned_bytes)
        cache.add_metric([m, "pinned"], c.pinned_bytes)
        cache.add_metric([m, "staged"], c.staged_bytes)
        yield cache
        yield self.gauge("gobi_mount_cache_capacity_bytes", "The cache cap (--cache-size)", c.cap)
        yield self.gauge("gobi_mount_cache_chunks", "Chunks in the block cache", c.chunk_count())

        # Remote changes: how far the mirror is behind the server.
        last = int(st.get("last_seq") or 0)
        head = max(int(st.get("head_seq") or 0), last)
        yield self.gauge("gobi_mount_last_applied_seq", "Last vault seq applied to the mirror", last)
        yield self.gauge("gobi_mount_server_head_seq", "Newest vault seq the mount has heard of", head)
        yield self.gauge("gobi_mount_event_lag", "Vault events known on the server but not "
                         "applied here yet (server head seq - last applied seq)", head - last)
        yield self.gauge("gobi_mount_nodes", "Nodes in the mirror (files, directories, symlinks, special files)",
                         st.get("nodes", 0))
        yield self.counter("gobi_mount_verify_runs", "Comparisons of the mirror with the server "
                           "(gobi verify and the self-checks)", st.get("verify_runs", 0))
        yield self.counter("gobi_mount_verify_differences", "Differences between the mirror and "
                           "the server those comparisons found", st.get("verify_found", 0))
        yield self.counter("gobi_mount_verify_repairs", "Differences put right from the server's "
                           "state (gobi verify --repair and the self-checks)", st.get("verify_repaired", 0))

        # Kernel requests.
        count = self.counter("gobi_mount_fuse_requests", "Kernel requests by operation", labels=("op",))
        secs = self.counter("gobi_mount_fuse_request_seconds", "Time spent answering kernel "
                            "requests, by operation", labels=("op",))
        for op in sorted(self.fuse.count):
            count.add_metric([m, op], self.fuse.count[op])
            secs.add_metric([m, op], self.fuse.seconds.get(op, 0.0))
        yield count
        yield secs
        errors = self.counter("gobi_mount_fuse_errors", "Kernel requests answered with an "
                              "error, by operation and errno", labels=("op", "errno"))
        for (op, name), n in sorted(self.fuse.errors.items()):
            errors.add_metric([m, op, name], n)
        yield errors

        if self.extra is not None:
            yield from self.extra(self)


class MountMetrics:
    """A registry holding one ``MountCollector``; renders the exposition text."""

    def __init__(self, collector: MountCollector):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# --------------------------------------------------------------------------- serving


def parse_listen(value: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464', ':9464' or '9464' → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        n = int(port)
    except ValueError:
        raise ValueError(f"not an address: {value!r} (try 127.0.0.1:9464)") from None
    if not 0 < n < 65536:
        raise ValueError(f"port out of range in {value!r}")
    return host, n


async def open_listener(host: str, port: int) -> list[trio.SocketListener]:
    """Bind before mounting, so a taken port fails the mount with a clear message."""
    return await trio.open_tcp_listeners(port, host=host)


async def serve_http(render: Callable[[], bytes], listeners: list[trio.SocketListener],
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """``GET /metrics`` on the given listeners until cancelled (one request per connection)."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(10):
                await _answer(stream, render)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started()


async def _answer(stream: trio.SocketStream, render: Callable[[], bytes]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    request = None
    while request is None:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            await _send(stream, conn, 400, b"bad request\n", "text/plain")
            return
        if event is h11.NEED_DATA:
            data = await stream.receive_some(16 * 1024)
            conn.receive_data(data)
            if not data and conn.their_state is h11.CLOSED:
                return
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.ConnectionClosed):
            return
    target = request.target.split(b"?", 1)[0]
    if request.method not in (b"GET", b"HEAD"):
        await _send(stream, conn, 405, b"only GET\n", "text/plain", head=False, allow=True)
    elif target == b"/metrics":
        await _send(stream, conn, 200, render(), CONTENT_TYPE_LATEST, head=request.method == b"HEAD")
    elif target == b"/":
        await _send(stream, conn, 200, b"gobi mount metrics: /metrics\n", "text/plain",
                    head=request.method == b"HEAD")
    else:
        await _send(stream, conn, 404, b"not found: try /metrics\n", "text/plain")


async def _send(stream, conn: h11.Connection, status: int, body: bytes, ctype: str,
                head: bool = False, allow: bool = False) -> None:
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")]
    if allow:
        headers.append(("Allow", "GET, HEAD"))
    out = conn.send(h11.Response(status_code=status, headers=headers))
    if not head:
        out += conn.send(h11.Data(data=body))
    out += conn.send(h11.EndOfMessage())
    await stream.send_all(out)


def write_textfile(path: Path, text: bytes) -> None:
    """Atomically (temp file + rename in the same directory), as node_exporter asks."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


async def textfile_writer(path: Path, render: Callable[[], bytes],
                          interval: float = TEXTFILE_INTERVAL,
                          task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Rewrite ``path`` every ``interval`` seconds; remove it when cancelled (mount stopped)."""
    write_textfile(path, render())          # fail at start, not silently later
    task_status.started()
    try:
        while True:
            await trio.sleep(interval)
            try:
                write_textfile(path, render())
            except OSError as exc:
                log.warning("cannot write metrics to %s: %s", path, exc)
    finally:
        try:
            path.unlink()
        except OSError:
            pass


__all__ = ["FuseStats", "Histogram", "MountCollector", "MountMetrics", "open_listener",
           "parse_listen", "serve_http", "textfile_writer", "write_textfile"]
