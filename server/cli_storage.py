"""Storage administration commands of the ``gobi`` CLI:

    gobi keys rotate [--new-data-keys] [--retire-old]
    gobi storage status [--no-scan] [--json]
    gobi storage repair [--scrub]

They read the same configuration as ``gobi server`` (``--config``, ``--data-dir``,
``GOBI_*``) and work on the storage directly, so they run next to a live server or
without one. Imports of the driver stack happen inside the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from .cli_common import load_config, server_options


def _open(cfg: Any, keys: Any) -> Any:
    from gobi.drivers import open_driver

    return open_driver(cfg.storage_url, keys=keys, encrypt=cfg.storage_encryption)


def _load_keys(cfg: Any) -> Any:
    from gobi.drivers.keys import KeyFile, KeyFileError

    if not cfg.key_path.exists():
        raise SystemExit(f"gobi: no key file at {cfg.key_path} (the server creates it on first start)")
    try:
        return KeyFile.load(cfg.key_path)
    except KeyFileError as exc:
        raise SystemExit(f"gobi: {exc}") from None


# -- gobi keys rotate -------------------------------------------------------------------


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from gobi.drivers import StorageError, walk
    from gobi.drivers.encrypted import EncryptedDriver

    cfg = load_config(args)
    keys = _load_keys(cfg)
    new_id = keys.add_master_key()
    keys.save()  # first: a crash from here on leaves both keys in the file, nothing lost
    print(f"new master key {new_id!r} is current in {cfg.key_path}")

    async def rewrap() -> set[str] | None:
        driver = _open(cfg, keys)
        try:
            layers = [d for d in walk(driver) if isinstance(d, EncryptedDriver)]
            if not layers:
                print("storage is not encrypted (storage_encryption = false): only the key file changed")
                return None
            in_use: set[str] = set()
            for layer in layers:
                started = time.monotonic()
                report = await layer.rewrap(new_data_keys=args.new_data_keys)
                in_use |= report.masters_in_use
                extra = f", {report.new_data_keys} new data keys" if args.new_data_keys else ""
                print(f"{layer.inner.describe()}: re-wrapped {report.data_keys} data keys of "
                      f"{report.scopes} vaults{extra} in {time.monotonic() - started:.1f}s; no data rewritten")
            return in_use
        finally:
            await driver.close()

    try:
        in_use = asyncio.run(rewrap())
    except StorageError as exc:
        print(f"gobi: re-wrapping stopped: {type(exc).__name__}: {exc}\n"
              f"  nothing is lost: both master keys are in the key file; run the command again", file=sys.stderr)
        return 1
    if args.retire_old and in_use is not None:
        retired = [k for k in sorted(keys.master_keys) if k != keys.current and k not in in_use]
        kept = [k for k in sorted(keys.master_keys) if k != keys.current and k in in_use]
        for key_id in retired:
            keys.remove_master_key(key_id)
        keys.save()
        if retired:
            print(f"retired master keys: {', '.join(retired)}")
        if kept:
            print(f"kept master keys still in use: {', '.join(kept)}")
    return 0


# -- gobi storage status / repair ---------------------------------------------------------


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


async def _status(driver: Any, scan: bool) -> list[dict[str, Any]]:
    """One row per target: the replicas of every replicated layer, or the one backend."""
    from gobi.drivers import ObjectNotFound, StorageError, walk
    from gobi.drivers.replicated import PROBE_KEY, ReplicatedDriver

    rows: list[dict[str, Any]] = []
    layers = [d for d in walk(driver) if isinstance(d, ReplicatedDriver)]
    for layer in layers:
        for st in await layer.status(scan=scan):
            rows.append({"target": st.name, "reachable": st.reachable, "healthy": st.healthy,
                         "latency_ms": None if st.latency is None else round(st.latency * 1000, 1),
                         "objects": st.objects, "bytes": st.bytes, "missing": st.missing,
                         "lag": st.lag if (scan or st.pending) else None, "error": st.error})
    if layers:
        return rows
    row: dict[str, Any] = {"target": driver.describe(), "reachable": True, "healthy": True, "latency_ms": None,
                           "objects": None, "bytes": None, "missing": None, "lag": None, "error": None}
    started = time.monotonic()
    try:
        await driver.head(PROBE_KEY)
    except ObjectNotFound:
        pass
    except StorageError as exc:
        row.update(reachable=False, healthy=False, error=f"{type(exc).__name__}: {exc}")
    row["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    if scan and row["reachable"]:
        count = total = 0
        async for info in driver.list():
            count += 1
            total += info.size
        row.update(objects=count, bytes=total, missing=0, lag=0)
    return [row]


def cmd_storage_status(args: argparse.Namespace) -> int:
    from gobi.drivers import StorageError

    cfg = load_config(args)
    keys = _load_keys(cfg) if cfg.key_path.exists() else None

    async def run() -> list[dict[str, Any]]:
        driver = _open(cfg, keys)
        try:
            return await _status(driver, scan=not args.no_scan)
        finally:
            await driver.close()

    if keys is None and cfg.storage_encryption:
        print(f"gobi: no key file at {cfg.key_path} (the server creates it on first start)", file=sys.stderr)
        return 1
    try:
        rows = asyncio.run(run())
    except StorageError as exc:
        print(f"gobi: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    from gobi.drivers import effective_spec

    setting = str(effective_spec(cfg.storage_url, encrypt=cfg.storage_encryption))
    if args.json:
        print(json.dumps({"storage": setting, "targets": rows}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"storage: {setting}", title_justify="left")
        for column in ("target", "state", "latency", "objects", "size", "lag", "last error"):
            table.add_column(column, overflow="fold")
        for row in rows:
            state = "down" if not row["reachable"] else ("ok" if row["healthy"] else "degraded")
            table.add_row(row["target"], state,
                          "-" if row["latency_ms"] is None else f"{row['latency_ms']} ms",
                          "-" if row["objects"] is None else str(row["objects"]), _size(row["bytes"]),
                          "?" if row["lag"] is None else str(row["lag"]), row["error"] or "")
        Console(width=max(120, Console().width)).print(table)
    return 0 if all(r["reachable"] for r in rows) else 1


def cmd_storage_repair(args: argparse.Namespace) -> int:
    from gobi.drivers import StorageError, walk
    from gobi.drivers.local import LocalDriver
    from gobi.drivers.replicated import ReplicatedDriver
    from gobi.drivers.s3 import S3Driver

    cfg = load_config(args)
    keys = _load_keys(cfg) if cfg.storage_encryption else None

    async def run() -> int:
        driver = _open(cfg, keys)
        failed = 0
        try:
            for d in walk(driver):
                if isinstance(d, ReplicatedDriver):
                    report = await d.repair(scan=True, scrub=args.scrub)
                    failed += report.failed
                    scrubbed = f", {report.corrupted} corrupted copies found" if args.scrub else ""
                    print(f"{d.describe()}: compared {report.scanned} objects, copied {report.copied}, "
                          f"deleted {report.deleted}, failed {report.failed}{scrubbed}")
                elif isinstance(d, LocalDriver):
                    print(f"{d.describe()}: removed {await d.sweep_temp_files()} leftover temp files")
                elif isinstance(d, S3Driver):
                    print(f"{d.describe()}: aborted {await d.abort_stale_uploads()} stale multipart uploads")
        finally:
            await driver.close()
        return 1 if failed else 0

    try:
        return asyncio.run(run())
    except StorageError as exc:
        print(f"gobi: repair stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="manage the server's encryption keys (admin)")
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    pr = ksub.add_parser(
        "rotate", help="add a new master key and re-wrap every vault's data keys with it (no data is rewritten)")
    pr.add_argument("--new-data-keys", action="store_true",
                    help="also give every vault a new data key for future writes")
    pr.add_argument("--retire-old", action="store_true",
                    help="afterwards remove master keys that no longer wrap any data key")
    server_options(pr)
    pr.set_defaults(func=cmd_keys_rotate)

    p = sub.add_parser("storage", help="storage health and repair (admin)")
    ssub = p.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    ps = ssub.add_parser("status", help="per-target health, latency, object counts and lag; exit 1 if a target is down")
    ps.add_argument("--no-scan", action="store_true", help="probe targets only; do not list every object")
    ps.add_argument("--json", action="store_true", help="machine-readable output")
    server_options(ps)
    ps.set_defaults(func=cmd_storage_status)
    pp = ssub.add_parser("repair", help="copy what replicas lack, remove leftovers of crashed writes")
    pp.add_argument("--scrub", action="store_true", help="also read every copy and rewrite corrupted ones")
    server_options(pp)
    pp.set_defaults(func=cmd_storage_repair)
