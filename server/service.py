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
from .auth import LoginLimiter
from .chunks import Chunks
from .config import ServerConfig
from .events import EventLog
from .fanout import Fanout, open_fanout
from .metrics import MeteredDriver, Metrics
from .nodes import Nodes
from .store import open_store
from .store.base import MetadataStore
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
        limiter = LoginLimiter(
            config.login_max_failures, config.login_max_failures_per_address, config.login_window
        )
        return cls(
            config=config,
            store=store,
            driver=driver,
            fanout=fanout,
            keys=keys,
            accounts=Accounts(store, limiter, config.session_ttl),
            vaults=Vaults(store, fanout),
            nodes=Nodes(store, fanout, metrics),
            chunks=Chunks(store, driver, keys.naming_secret),
            events=EventLog(store, fanout, config.poll_interval),
            metrics=metrics,
        )

    def __post_init__(self) -> None:
        self._maintenance: asyncio.Task[None] | None = None
        if self.config.storage_maintenance_interval > 0:
            self._maintenance = asyncio.create_task(
                _maintain_storage(self.driver, self.config.storage_maintenance_interval),
                name="gobi-storage-maintenance")

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.fanout.close()
        await self.driver.close()
        await self.store.close()
