"""The server's composition: one ``Services`` object holding the store, the storage
driver, the fan-out and the operations built on them. The HTTP layer reaches everything
through it; tests and admin commands build one without HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from gobi.drivers import StorageDriver, open_driver
from gobi.drivers.keys import KeyFile

from .accounts import Accounts
from .auth import PasswordHashing
from .chunks import Chunks
from .config import ServerConfig
from .conflicts import Conflicts
from .events import EventLog
from .fanout import Fanout, open_fanout
from .gc import Collector
from .history import History
from .holds import HoldPolicy, Holds
from .maintenance import run_history_jobs
from .metrics import MeteredDriver, Metrics
from .nodes import Nodes
from .store import open_store
from .store.base import MetadataStore
from .throttle import LoginThrottle, SignupLimiter
from .trash import Trash
from .vaults import Vaults

log = logging.getLogger("gobi.server")


async def _maintain_storage(driver: StorageDriver, interval: float) -> None:
    """Storage housekeeping every ``interval`` seconds: replica repair, sweeping what
    crashed writers left behind. Failures are logged; the next round retries."""
    while True:
        await asyncio.sleep(interval)
        try:
            await driver.maintain()
        except Exception:  # keep the job alive
            log.exception("storage maintenance failed")


@dataclass
class Services:
    config: ServerConfig
    store: MetadataStore
    driver: StorageDriver
    fanout: Fanout
    keys: KeyFile
    accounts: Accounts
    vaults: Vaults
    nodes: Nodes
    chunks: Chunks
    events: EventLog
    metrics: Metrics
    holds: Holds
    conflicts: Conflicts
    trash: Trash
    history: History
    gc: Collector

    @classmethod
    async def open(cls, config: ServerConfig, metrics: Metrics | None = None) -> "Services":
        metrics = metrics or Metrics()
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = KeyFile.load_or_create(config.key_path)
        store = open_store(config.metadata_url, event_retention=config.event_retention)
        await store.open()
        driver = MeteredDriver(
            open_driver(config.storage_url, keys=keys, encrypt=config.storage_encryption), metrics)
        fanout = open_fanout(config.fanout)
        await fanout.start()
        accounts = Accounts(
            store,
            PasswordHashing(config.password_hash_workers, config.password_hash_queue),
            LoginThrottle(config.login_max_failures, config.login_max_failures_per_address,
                          config.login_window),
            SignupLimiter(config.register_max_per_address, config.register_window),
            config.session_ttl,
            open_registration=config.open_registration,
            require_invite=config.require_invite,
            naming_secret=keys.naming_secret,
        )
        holds = Holds(store, HoldPolicy(
            files=config.mass_delete_files, fraction=config.mass_delete_fraction,
            min_files=config.mass_delete_min_files, window=config.mass_delete_window,
            fresh=config.mass_delete_fresh, expiry=config.mass_delete_expiry))
        conflicts = Conflicts(store)
        chunks = Chunks(store, driver, keys.naming_secret)
        return cls(
            config=config,
            store=store,
            driver=driver,
            fanout=fanout,
            keys=keys,
            accounts=accounts,
            vaults=Vaults(store, fanout, driver),
            nodes=Nodes(store, fanout, metrics, holds=holds, conflicts=conflicts),
            chunks=chunks,
            events=EventLog(store, fanout, config.poll_interval),
            metrics=metrics,
            holds=holds,
            conflicts=conflicts,
            trash=Trash(store, config.trash_retention),
            history=History(store, config.version_keep_all, config.version_keep_daily),
            gc=Collector(store, chunks, driver, config.gc_grace),
        )

    def __post_init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        if self.config.storage_maintenance_interval > 0:
            self._tasks.append(asyncio.create_task(
                _maintain_storage(self.driver, self.config.storage_maintenance_interval),
                name="gobi-storage-maintenance"))

    def start_jobs(self) -> None:
        """Start the history jobs (retention, trash, holds, gc): the server does, one-shot
        admin commands that open ``Services`` do not."""
        if self.config.history_interval > 0 or self.config.gc_interval > 0:
            self._tasks.append(asyncio.create_task(run_history_jobs(self), name="gobi-history"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.fanout.close()
        await self.driver.close()
        await self.store.close()
        self.accounts.hashing.close()
