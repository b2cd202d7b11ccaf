"""The ``replicated`` wrapper: one logical store over several targets ("multiple targets").

Writes (``put``, ``delete``) go to every target at once and succeed when ``quorum`` of
them did (default: all). Once the quorum has answered, slower targets get ``grace``
seconds more; a target that failed or was still busy gets the key recorded as *pending*
for it, and the repair job brings it up to date. ``create`` is decided by the first
target in configuration order (the arbiter: two writers can never both win on different
targets) and then copied to the others.

Reads come from the first healthy target (configuration order, targets that keep failing
last). A target that does not answer within ``hedge`` seconds gets a second read started
on the next target, and the first good answer wins; a target that fails, lacks the
object or returns corrupted bytes (detected by an ``encrypted`` layer under this one) is
skipped, and the object is written back to it (read repair) or marked pending. To detect
corruption per target, encrypt under the replication: ``replicated(encrypted(a),
encrypted(b))``, which is what default encryption does with a ``replicated`` tree.

Repair (``repair()``, run by ``maintain()`` and ``gobi storage repair``) copies pending
objects back and deletes what was deleted while a target was away; ``scan=True`` also
compares full listings and copies what any target lacks (this treats storage as
grow-only: an object deleted while a target was unreachable and no longer pending, e.g.
after a restart, comes back; gobi's chunk GC deletes it again). ``scrub=True`` reads
every copy and rewrites the ones that fail verification. ``status()`` reports per-target
health, latency and lag (objects pending or found missing).
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from .base import (
    KeyUnavailable,
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    StorageDriver,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
    check_key,
    check_range,
)

log = logging.getLogger("gobi.drivers.replicated")
T = TypeVar("T")

#: consecutive failures after which a target is read last
DOWN_AFTER = 3
#: pending keys remembered per target; past this a full scan is needed
MAX_PENDING = 100_000
PROBE_KEY = "_health/probe"


@dataclass
class TargetHealth:
    name: str
    failures: int = 0                 # consecutive
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None
    latency: float | None = None      # moving average of successful operations, seconds
    pending: dict[str, str] = field(default_factory=dict)  # key -> "put" | "delete"
    overflow: bool = False

    @property
    def healthy(self) -> bool:
        return self.failures < DOWN_AFTER

    def ok(self, elapsed: float) -> None:
        self.failures = 0
        self.last_ok_at = time.time()
        self.latency = elapsed if self.latency is None else 0.8 * self.latency + 0.2 * elapsed

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_at = time.time()

    def mark(self, key: str, action: str) -> None:
        if len(self.pending) >= MAX_PENDING and key not in self.pending:
            self.overflow = True
            return
        self.pending[key] = action


@dataclass
class TargetStatus:
    index: int
    name: str
    reachable: bool
    healthy: bool
    latency: float | None
    error: str | None
    pending: int
    objects: int | None = None        # from a scan
    bytes: int | None = None
    missing: int | None = None        # objects other targets have and this one lacks

    @property
    def lag(self) -> int:
        return self.pending + (self.missing or 0)


@dataclass
class RepairReport:
    copied: int = 0
    deleted: int = 0
    failed: int = 0
    scanned: int = 0
    corrupted: int = 0


def _combine(errors: Sequence[BaseException], what: str) -> StorageError:
    """One error for a read or write that failed on every target it needed."""
    if errors and all(isinstance(e, ObjectNotFound) for e in errors):
        return ObjectNotFound(what)
    summary = "; ".join(f"{type(e).__name__}: {e}" for e in errors)
    kinds = (TransientStorageError, ObjectCorrupted, KeyUnavailable, StoragePermissionError)
    for kind in kinds:
        if any(isinstance(e, kind) for e in errors):
            return kind(f"{what}: {summary}")
    return StorageError(f"{what}: {summary}")


class ReplicatedDriver(StorageDriver):
    kind = "replicated"

    def __init__(
        self,
        targets: Sequence[StorageDriver],
        *,
        quorum: int | None = None,
        grace: float = 2.0,
        hedge: float = 1.0,
        scan_interval: float = 24 * 3600.0,
    ):
        if len(targets) < 1:
            raise ValueError("replicated needs at least one target")
        self.targets = list(targets)
        self.quorum = len(self.targets) if quorum is None else quorum
        if not 1 <= self.quorum <= len(self.targets):
            raise ValueError(f"quorum must be between 1 and {len(self.targets)}")
        self.grace = grace
        self.hedge = hedge
        self.scan_interval = scan_interval
        self.health = [TargetHealth(t.describe()) for t in self.targets]
        self._last_scan = time.monotonic()

    def children(self) -> tuple[StorageDriver, ...]:
        return tuple(self.targets)

    def describe(self) -> str:
        inner = ", ".join(t.describe() for t in self.targets)
        return f"replicated({inner}, quorum={self.quorum})"

    # -- writes ------------------------------------------------------------------------

    async def _write_all(self, key: str, action: str, op: Callable[[StorageDriver], Awaitable[None]],
                         indexes: Sequence[int] | None = None, need: int | None = None) -> None:
        indexes = list(range(len(self.targets))) if indexes is None else list(indexes)
        need = self.quorum if need is None else need
        outcome: dict[int, BaseException | None] = {}
        quorum_or_all = anyio.Event()
        all_done = anyio.Event()

        async def one(i: int) -> None:
            started = time.monotonic()
            try:
                await op(self.targets[i])
            except StorageError as exc:
                outcome[i] = exc
                self.health[i].failed(exc)
            else:
                outcome[i] = None
                self.health[i].ok(time.monotonic() - started)
            oks = sum(1 for e in outcome.values() if e is None)
            if oks >= need or len(outcome) == len(indexes):
                quorum_or_all.set()
            if len(outcome) == len(indexes):
                all_done.set()

        async with anyio.create_task_group() as tg:
            for i in indexes:
                tg.start_soon(one, i)
            await quorum_or_all.wait()
            if not all_done.is_set():
                with anyio.move_on_after(self.grace):
                    await all_done.wait()
                tg.cancel_scope.cancel()

        failed = []
        for i in indexes:
            exc = outcome.get(i)
            if i not in outcome or exc is not None:
                self.health[i].mark(key, action)
                if i not in outcome:
                    log.warning("%s on %s did not finish within the grace period; pending repair",
                                key, self.health[i].name)
                    failed.append(TransientStorageError(f"{self.health[i].name}: still busy"))
                else:
                    failed.append(exc)
            else:
                self.health[i].pending.pop(key, None)
        oks = len(indexes) - len(failed)
        if oks < need:
            raise _combine(failed, f"{key}: written to {oks} of {len(indexes)} targets, quorum {need}")

    async def put(self, key: str, data: bytes) -> None:
        check_key(key)
        await self._write_all(key, "put", lambda t: t.put(key, data))

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._write_all(key, "delete", lambda t: t.delete(key))

    async def create(self, key: str, data: bytes) -> bool:
        check_key(key)
        # The first target arbitrates, so two racing writers cannot both win.
        started = time.monotonic()
        try:
            created = await self.targets[0].create(key, data)
        except StorageError as exc:
            self.health[0].failed(exc)
            raise
        self.health[0].ok(time.monotonic() - started)
        if not created:
            return False
        if len(self.targets) > 1:
            await self._write_all(key, "put", lambda t: t.put(key, data),
                                  indexes=range(1, len(self.targets)), need=max(0, self.quorum - 1))
        return True

    # -- reads -------------------------------------------------------------------------

    def _read_order(self) -> list[int]:
        return sorted(range(len(self.targets)), key=lambda i: (not self.health[i].healthy, i))

    async def _read(self, key: str, op: Callable[[StorageDriver], Awaitable[T]]) -> tuple[T, int, dict[int, BaseException]]:
        """Run ``op`` on targets in read order, hedging slow ones; returns the first good
        result, the index that gave it, and the errors of the targets tried before."""
        order = self._read_order()
        errors: dict[int, BaseException] = {}
        send, receive = anyio.create_memory_object_stream[tuple[int, object, BaseException | None, float]](len(order))
        winner: tuple[T, int] | None = None
        async with anyio.create_task_group() as tg:

            async def attempt(i: int) -> None:
                started = time.monotonic()
                try:
                    result = await op(self.targets[i])
                except StorageError as exc:
                    await send.send((i, None, exc, time.monotonic() - started))
                else:
                    await send.send((i, result, None, time.monotonic() - started))

            started = running = 0

            def launch() -> None:
                nonlocal started, running
                tg.start_soon(attempt, order[started])
                started += 1
                running += 1

            launch()
            while True:
                got = None
                with anyio.move_on_after(self.hedge if started < len(order) else math.inf):
                    got = await receive.receive()
                if got is None:  # slow: hedge on the next target
                    launch()
                    continue
                running -= 1
                i, result, exc, elapsed = got
                if exc is None:
                    self.health[i].ok(elapsed)
                    winner = (result, i)  # type: ignore[assignment]
                    break
                errors[i] = exc
                if isinstance(exc, ObjectNotFound):
                    pass  # reachable; it just lacks the object
                elif isinstance(exc, ObjectCorrupted):
                    log.warning("%s is corrupted on %s; reading another copy", key, self.health[i].name)
                else:
                    self.health[i].failed(exc)
                if started < len(order):
                    launch()
                elif running == 0:
                    break
            tg.cancel_scope.cancel()
        if winner is None:
            raise _combine([errors[i] for i in sorted(errors)], key)
        return winner[0], winner[1], errors

    def _note_missing(self, key: str, errors: dict[int, BaseException]) -> list[int]:
        lacking = [i for i, e in errors.items() if isinstance(e, (ObjectNotFound, ObjectCorrupted))]
        for i in lacking:
            self.health[i].mark(key, "put")
        return lacking

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        check_key(key)
        check_range(offset, length)
        data, _, errors = await self._read(key, lambda t: t.get(key, offset, length))
        lacking = self._note_missing(key, errors)
        if lacking and offset == 0 and length is None:
            await self._read_repair(key, data, lacking)
        return data

    async def _read_repair(self, key: str, data: bytes, lacking: list[int]) -> None:
        for i in lacking:
            try:
                await self.targets[i].put(key, data)
            except StorageError as exc:
                self.health[i].failed(exc)
            else:
                self.health[i].pending.pop(key, None)
                log.info("read repair: restored %s on %s", key, self.health[i].name)

    async def head(self, key: str) -> ObjectInfo:
        check_key(key)
        info, _, errors = await self._read(key, lambda t: t.head(key))
        self._note_missing(key, errors)
        return info

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        listings = await self._list_all(prefix)
        if all(items is None for items in listings):
            raise TransientStorageError(f"no target could list {prefix!r}")
        last = None
        for info in heapq.merge(*(items for items in listings if items is not None), key=lambda i: i.key):
            if info.key != last:
                last = info.key
                yield info

    async def _list_all(self, prefix: str) -> list[list[ObjectInfo] | None]:
        results: list[list[ObjectInfo] | None] = [None] * len(self.targets)

        async def one(i: int) -> None:
            started = time.monotonic()
            try:
                results[i] = [info async for info in self.targets[i].list(prefix)]
            except StorageError as exc:
                self.health[i].failed(exc)
                log.warning("listing %s failed: %s", self.health[i].name, exc)
            else:
                self.health[i].ok(time.monotonic() - started)

        async with anyio.create_task_group() as tg:
            for i in range(len(self.targets)):
                tg.start_soon(one, i)
        return results

    # -- repair and status ----------------------------------------------------------------

    async def _copy(self, key: str, to: list[int], report: RepairReport) -> None:
        sources = [i for i in self._read_order() if i not in to]
        for src in sources:
            try:
                data = await self.targets[src].get(key)
            except ObjectNotFound:
                continue
            except StorageError as exc:
                log.warning("repair: cannot read %s from %s: %s", key, self.health[src].name, exc)
                continue
            for i in to:
                try:
                    await self.targets[i].put(key, data)
                except StorageError as exc:
                    self.health[i].failed(exc)
                    report.failed += 1
                else:
                    self.health[i].pending.pop(key, None)
                    report.copied += 1
            return
        # no readable copy anywhere: nothing to restore
        for i in to:
            self.health[i].pending.pop(key, None)

    async def repair(self, *, scan: bool = False, scrub: bool = False) -> RepairReport:
        report = RepairReport()
        for i, health in enumerate(self.health):
            for key, action in list(health.pending.items()):
                if action == "delete":
                    try:
                        await self.targets[i].delete(key)
                    except StorageError as exc:
                        health.failed(exc)
                        report.failed += 1
                    else:
                        health.pending.pop(key, None)
                        report.deleted += 1
                else:
                    await self._copy(key, [i], report)
        if scan or scrub or any(h.overflow for h in self.health):
            listings = await self._list_all("")
            if any(items is None for items in listings):
                raise TransientStorageError("repair scan needs every target to list")
            have = [{info.key for info in items} for items in listings if items is not None]
            union = sorted(set().union(*have))
            report.scanned = len(union)
            for key in union:
                lacking = [i for i, keys in enumerate(have) if key not in keys]
                if scrub:
                    for i, target in enumerate(self.targets):
                        if i in lacking:
                            continue
                        try:
                            await target.get(key)
                        except ObjectCorrupted:
                            report.corrupted += 1
                            lacking.append(i)
                        except StorageError as exc:
                            log.warning("scrub: cannot read %s on %s: %s", key, self.health[i].name, exc)
                if lacking:
                    await self._copy(key, lacking, report)
            for health in self.health:
                health.overflow = False
        return report

    async def status(self, *, scan: bool = False) -> list[TargetStatus]:
        """Per-target health (each target is probed now) and, with ``scan``, object
        counts and how many objects each target lacks."""
        out: list[TargetStatus] = []
        for i, target in enumerate(self.targets):
            h = self.health[i]
            started = time.monotonic()
            reachable, error = True, None
            try:
                await target.head(PROBE_KEY)
            except ObjectNotFound:
                h.ok(time.monotonic() - started)
            except StorageError as exc:
                reachable, error = False, f"{type(exc).__name__}: {exc}"
                h.failed(exc)
            else:
                h.ok(time.monotonic() - started)
            out.append(TargetStatus(i, h.name, reachable, h.healthy, h.latency, error or h.last_error,
                                    len(h.pending)))
        if scan:
            listings = await self._list_all("")
            have = [None if items is None else {x.key: x.size for x in items} for items in listings]
            union: set[str] = set().union(*(set(k) for k in have if k is not None))
            for st, keys in zip(out, have):
                if keys is not None:
                    st.objects = len(keys)
                    st.bytes = sum(keys.values())
                    st.missing = len(union - keys.keys())
        return out

    async def maintain(self) -> None:
        await super().maintain()
        due = time.monotonic() - self._last_scan >= self.scan_interval
        if due:
            self._last_scan = time.monotonic()
        if due or any(h.pending or h.overflow for h in self.health):
            report = await self.repair(scan=due)
            if report.copied or report.deleted or report.failed:
                log.info("replica repair: %d copied, %d deleted, %d failed",
                         report.copied, report.deleted, report.failed)
