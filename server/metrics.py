"""Prometheus metrics of one server process, served at ``/metrics``.

Each app has its own registry (several apps may live in one test process). Labels are
bounded: routes are Sanic's route patterns (``/api/v1/vaults/<vault_id>/…``), never raw
paths or vault ids. Storage operations are measured by ``MeteredDriver``, a wrapper with
the driver interface, so every driver and wrapper below it is covered alike.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gobi.drivers import ObjectInfo, ObjectNotFound, StorageDriver

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MeteredDriver"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gobi_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("gobi_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.events = Counter("gobi_events", "Events appended to vault logs", ["type"], registry=r)
        self.commits = Counter("gobi_commits", "Accepted write transactions", registry=r)
        self.conflicts = Counter("gobi_write_refusals", "Writes refused", ["code"], registry=r)
        self.ws_clients = Gauge("gobi_websocket_clients", "Open event WebSockets", registry=r)
        self.ws_frames = Counter("gobi_websocket_frames_sent", "Frames sent on event sockets",
                                 ["type"], registry=r)
        self.chunk_bytes = Counter("gobi_chunk_bytes", "Chunk bytes moved", ["direction"], registry=r)
        self.storage_ops = Counter("gobi_storage_operations", "Storage driver operations",
                                   ["op", "result"], registry=r)
        self.storage_latency = Histogram("gobi_storage_operation_duration_seconds",
                                         "Storage driver latency", ["op"],
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.login_failures = Counter("gobi_login_failures", "Failed logins", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredDriver(StorageDriver):
    """Counts and times every operation of the driver it wraps."""

    kind = "metered"

    def __init__(self, inner: StorageDriver, metrics: Metrics):
        self.inner = inner
        self.metrics = metrics

    def _done(self, op: str, t0: float, result: str) -> None:
        self.metrics.storage_ops.labels(op, result).inc()
        self.metrics.storage_latency.labels(op).observe(time.perf_counter() - t0)

    async def _call(self, op: str, coro):
        t0 = time.perf_counter()
        try:
            value = await coro
        except ObjectNotFound:
            self._done(op, t0, "not_found")
            raise
        except Exception as exc:
            self._done(op, t0, type(exc).__name__)
            raise
        self._done(op, t0, "ok")
        return value

    async def put(self, key: str, data: bytes) -> None:
        await self._call("put", self.inner.put(key, data))

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return await self._call("get", self.inner.get(key, offset, length))

    async def head(self, key: str) -> ObjectInfo:
        return await self._call("head", self.inner.head(key))

    async def delete(self, key: str) -> None:
        await self._call("delete", self.inner.delete(key))

    async def create(self, key: str, data: bytes) -> bool:
        return await self._call("create", self.inner.create(key, data))

    async def iter_get(self, key: str, offset: int = 0, length: int | None = None, **kw) -> AsyncIterator[bytes]:
        t0 = time.perf_counter()
        try:
            async for block in self.inner.iter_get(key, offset, length, **kw):
                yield block
        except Exception as exc:
            self._done("get", t0, type(exc).__name__)
            raise
        self._done("get", t0, "ok")

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        t0 = time.perf_counter()
        try:
            async for info in self.inner.list(prefix):
                yield info
        except Exception as exc:
            self._done("list", t0, type(exc).__name__)
            raise
        self._done("list", t0, "ok")

    def children(self) -> tuple[StorageDriver, ...]:
        return (self.inner,)

    def describe(self) -> str:
        return self.inner.describe()


def metrics_token(config) -> str | None:
    """The bearer token /metrics needs: the configured one, else the token file in the
    data directory (created on first start, 0600). None when metrics are public."""
    if config.metrics_public:
        return None
    if config.metrics_token:
        return config.metrics_token
    path = config.metrics_token_path
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
