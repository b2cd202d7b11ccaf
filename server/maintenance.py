"""The history jobs: what keeps versions, trash, holds and chunks within their retention.

One background task per server (``Services.start_jobs``). Every ``history_interval`` it
expires pending holds, purges trash entries past ``trash_retention``, thins versions
(``history.History.thin``) and forgets settled conflicts and holds; every ``gc_interval``
it collects garbage chunks in every vault. Everything it does is idempotent and keyed
by time, so several instances running it at once only repeat each other's work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from .config import ServerConfig
from .store.base import MetadataStore, VaultGone, VaultTx
from .writes import SYSTEM


class Services(Protocol):
    """What the jobs use of ``service.Services`` (a protocol, so that this module does not
    import the composition root that starts it)."""

    config: ServerConfig
    store: MetadataStore
    holds: Any
    nodes: Any
    trash: Any
    history: Any
    gc: Any

log = logging.getLogger("gobi.server.history")
CONFLICT = "conflict"


async def history_round(services: "Services", now: float | None = None) -> dict[str, int]:
    """One round of the retention jobs; returns what each did (for logs and tests)."""
    now = time.time() if now is None else now
    cfg = services.config
    out: dict[str, int] = {}
    out["holds_expired"] = await services.holds.expire_due(SYSTEM, services.nodes.write, now)
    out["trash_purged"], out["trash_versions_dropped"] = await services.trash.purge_due(now)
    out["versions_dropped"] = await services.history.thin(now)
    out["conflicts_forgotten"] = await _forget_conflicts(services, now - cfg.trash_retention)
    out["hold_records_forgotten"] = await services.holds.prune(now - cfg.trash_retention,
                                                               now - cfg.mass_delete_window)
    return out


async def _forget_conflicts(services: "Services", before_ts: float) -> int:
    gone = 0
    for vault_id, record in await services.store.due_records(CONFLICT, "resolved", before_ts, 10_000):
        async def fn(tx: VaultTx, rid: str = record.id) -> None:
            await tx.delete_record(CONFLICT, rid)

        try:
            await services.store.run_write(vault_id, fn)
            gone += 1
        except VaultGone:
            pass
    return gone


async def run_history_jobs(services: "Services") -> None:
    cfg = services.config
    now = time.monotonic()
    next_history = now + cfg.history_interval if cfg.history_interval > 0 else float("inf")
    next_gc = now + cfg.gc_interval if cfg.gc_interval > 0 else float("inf")
    while True:
        await asyncio.sleep(max(0.0, min(next_history, next_gc) - time.monotonic()))
        if time.monotonic() >= next_history:
            next_history = time.monotonic() + cfg.history_interval
            try:
                done = await history_round(services)
                if any(done.values()):
                    log.info("history retention: %s", ", ".join(f"{k} {v}" for k, v in done.items() if v))
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the job alive; the next round retries
                log.exception("history retention failed")
        if time.monotonic() >= next_gc:
            next_gc = time.monotonic() + cfg.gc_interval
            try:
                chunks, size = await services.gc.collect_all()
                if chunks:
                    log.info("garbage collection freed %d chunks (%d bytes)", chunks, size)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("garbage collection failed")
