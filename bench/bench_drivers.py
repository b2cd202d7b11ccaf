"""Storage driver throughput: put and get of 4 MiB and 64 KiB objects through
local, encrypted(local), s3 and encrypted(s3), side by side in one run.

    .venv/bin/python bench/bench_drivers.py                  # s3 = a throwaway Ceph RGW
    .venv/bin/python bench/bench_drivers.py --s3 moto        # quicker, less faithful
    .venv/bin/python bench/bench_drivers.py --s3 none        # local only

Each round runs every driver once in turn (interleaved, so a noisy neighbour hits all of
them alike; the order rotates from round to round) and the median round is reported. Puts are durable (local: fsync of file and
directory; s3: the server's answer). Gets read back what was put. ``--concurrency`` runs
that many operations at once (the server uploads several chunks at a time).
The cost of encryption is the throughput lost relative to the same driver without it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gobi.drivers.base import StorageDriver  # noqa: E402
from gobi.drivers.encrypted import EncryptedDriver  # noqa: E402
from gobi.drivers.keys import KeyFile  # noqa: E402
from gobi.drivers.local import LocalDriver  # noqa: E402
from gobi.drivers.s3 import S3Driver  # noqa: E402

MiB = 1024 * 1024
SIZES = {"4 MiB": (4 * MiB, 24), "64 KiB": (64 * 1024, 400)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """The S3 endpoint for the run: Ceph RGW (scripts/ceph) or moto; stopped at the end."""

    def __init__(self, kind: str):
        self.kind = kind
        self.url = ""
        self._stop = None

    def __enter__(self) -> "S3Server":
        if self.kind == "ceph":
            workdir = Path(tempfile.mkdtemp(prefix="gobi-bench-ceph-"))
            port = free_port()
            env = {**os.environ, "MON_PORT": str(free_port())}
            t0 = time.monotonic()
            subprocess.run(["bash", str(ROOT / "scripts/ceph/start_rgw.sh"), str(workdir / "c"), str(port)],
                           env=env, check=True, capture_output=True, timeout=180)
            print(f"Ceph RGW started in {time.monotonic() - t0:.1f}s on port {port}", flush=True)
            self.url = f"http://127.0.0.1:{port}"

            def stop() -> None:
                subprocess.run(["bash", str(ROOT / "scripts/ceph/stop_rgw.sh"), str(workdir / "c")],
                               capture_output=True, timeout=60)
                shutil.rmtree(workdir, ignore_errors=True)
            self._stop = stop
        elif self.kind == "moto":
            from moto.server import ThreadedMotoServer

            port = free_port()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            self.url = f"http://127.0.0.1:{port}"
            self._stop = server.stop
        if self.url:
            import boto3

            boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="test",
                         aws_secret_access_key="testtest").create_bucket(Bucket="gobi-bench")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop:
            self._stop()


async def run_ops(driver: StorageDriver, keys: list[str], payloads: list[bytes], concurrency: int,
                  op: str) -> float:
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            if op == "put":
                await driver.put(keys[i], payloads[i])
            else:
                data = await driver.get(keys[i])
                assert len(data) == len(payloads[i])

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(len(keys)):
            tg.start_soon(one, i)
    return time.perf_counter() - t0


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="gobi-bench-", dir=args.dir))
    keyfile = KeyFile.load_or_create(workdir / "master.key")
    with S3Server(args.s3) as s3:
        drivers: dict[str, StorageDriver] = {
            "local": LocalDriver(workdir / "local"),
            "encrypted(local)": EncryptedDriver(LocalDriver(workdir / "elocal"), keyfile),
        }
        if s3.url:
            def make_s3(prefix: str) -> S3Driver:
                return S3Driver("gobi-bench", prefix, endpoint=s3.url, access_key="test", secret_key="testtest")
            drivers[f"s3 ({args.s3})"] = make_s3("plain")
            drivers[f"encrypted(s3 ({args.s3}))"] = EncryptedDriver(make_s3("enc"), keyfile)
            # the first writes after an RGW start are slow: warm every driver up
        for d in drivers.values():
            await d.put("warm/up", os.urandom(4096))
            await d.get("warm/up")

        results: dict[tuple[str, str, str], list[float]] = {}
        for label, (size, count) in SIZES.items():
            count = max(4, int(count * args.scale))
            payloads = [os.urandom(size) for _ in range(count)]
            names = list(drivers)
            for rnd in range(args.rounds):
                # rotate the order each round: no driver always follows the same neighbour
                for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                    d = drivers[name]
                    keys = [f"v{rnd}/{label[:2].strip()}{i:04x}{os.urandom(6).hex()}" for i in range(count)]
                    for op in ("put", "get"):
                        elapsed = await run_ops(d, keys, payloads, args.concurrency, op)
                        results.setdefault((label, name, op), []).append(size * count / elapsed / MiB)
                    for k in keys:
                        await d.delete(k)
        for d in drivers.values():
            await d.close()
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nthroughput in MiB/s, median of {args.rounds} interleaved rounds, concurrency {args.concurrency}")
    print(f"{'object':>7}  {'driver':<24} {'put':>9} {'get':>9}   {'put cost':>9} {'get cost':>9}")
    for label in SIZES:
        for name in drivers:
            put = statistics.median(results[(label, name, "put")])
            get = statistics.median(results[(label, name, "get")])
            cost = ""
            if name.startswith("encrypted("):
                base = name[len("encrypted("):-1]
                bput = statistics.median(results[(label, base, "put")])
                bget = statistics.median(results[(label, base, "get")])
                cost = f"{(1 - put / bput) * 100:8.1f}% {(1 - get / bget) * 100:8.1f}%"
            print(f"{label:>7}  {name:<24} {put:9.1f} {get:9.1f}   {cost}")
    print("cost = throughput lost to encryption against the same driver without it "
          "(negative: noise in the encrypted one's favour)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--s3", choices=["ceph", "moto", "none"], default="ceph")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the object counts")
    parser.add_argument("--dir", default=None, help="where local objects go (default: the temp dir)")
    anyio.run(main, parser.parse_args())
