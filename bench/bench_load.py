"""Load on the scale-out deployment: one API instance against two, side by side in one run.

    .venv/bin/python bench/bench_load.py [--subscribers 1000] [--commits 40]
        [--writers 8] [--write-commits 400] [--upload-mib 64] [--configs embedded,1,2]

Configurations (each on fresh data, everything on 127.0.0.1):
- ``embedded``: one ``gobi server`` on its defaults (SQLite, in-process fan-out): the
  baseline a single machine gives without any external service;
- ``1``: one instance on MongoDB (mongoeco, the MongoDB-wire server the tests use; see
  docs/scale-out.md) + Redis fan-out + shared local storage;
- ``2``: two such instances on the same MongoDB, Redis and storage.

Per configuration:
- fan-out: ``--subscribers`` WebSockets *per instance* on one vault (held by one client
  process per instance), then ``--commits`` paced commits spread over the instances; for
  every delivery, latency = event received − commit request sent ("an edit elsewhere
  becomes visible"), reported as p50/p99/max, plus any delivery missing;
- commits/s: ``--writers`` concurrent writers (one vault each, spread over the instances)
  creating files until ``--write-commits`` are done;
- chunk upload MB/s: 8 concurrent uploaders PUT unique 1 MiB chunks, ``--upload-mib`` in all.

Everything is bounded by the flags and by timeouts, and stops by itself; every process it
starts (MongoDB-wire server, redis-server, gobi servers, subscriber clients) is stopped at
the end, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.backing import MongoServer, RedisServer  # noqa: E402
from tests.servers import ServerProcess, register  # noqa: E402

CONNECT_PARALLEL = 50


# -- subscriber client (runs as a child process: --subscriber) ------------------------------

async def _subscriber_main(url: str, vault: str, token: str, count: int, after: int, limit: float) -> None:
    import websockets

    ws_url = url.replace("http://", "ws://") + f"/api/v1/vaults/{vault}/ws?after={after}"
    headers = {"Authorization": f"Bearer {token}"}
    received: list[tuple[int, float]] = []
    sockets = []
    sem = asyncio.Semaphore(CONNECT_PARALLEL)

    async def connect() -> None:
        async with sem:
            ws = await websockets.connect(ws_url, additional_headers=headers, open_timeout=60,
                                          max_queue=None, ping_interval=None, proxy=None)
            while json.loads(await ws.recv())["type"] != "caught_up":
                pass
            sockets.append(ws)

    await asyncio.gather(*(connect() for _ in range(count)))
    print("ready", flush=True)

    async def listen(ws) -> None:
        try:
            async for msg in ws:
                now = time.time()
                frame = json.loads(msg)
                if frame["type"] == "event":
                    received.append((frame["event"]["seq"], now))
        except Exception:
            pass

    tasks = [asyncio.create_task(listen(ws)) for ws in sockets]
    stdin_done = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    try:
        await asyncio.wait_for(stdin_done, limit)
    except TimeoutError:
        pass
    for t in tasks:
        t.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    print(json.dumps(received), flush=True)


class Subscribers:
    """One child process holding ``count`` sockets on one instance."""

    def __init__(self, srv: ServerProcess, vault: str, token: str, count: int, after: int):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--subscriber", srv.url, vault, token, str(count), str(after)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def wait_ready(self, timeout: float = 300) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if line.strip() != "ready" or time.monotonic() > deadline:
            self.proc.kill()
            raise RuntimeError(f"subscribers did not connect: {line!r}")

    def finish(self) -> list[tuple[int, float]]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        self.proc.wait(60)
        return [tuple(x) for x in json.loads(out)]


# -- the benchmark ---------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Deployment:
    def __init__(self, kind: str, root: Path, mongo: MongoServer | None, redis: RedisServer | None):
        self.kind = kind
        self.instances: list[ServerProcess] = []
        n = 1 if kind == "embedded" else int(kind)
        env = {"GOBI_ACCESS_LOG": "false", "GOBI_POLL_INTERVAL": "5s"}
        if kind != "embedded":
            shared = root / "shared"
            shared.mkdir(parents=True)
            env |= {
                "GOBI_METADATA": mongo.url(f"bench_{uuid.uuid4().hex[:8]}"),
                "GOBI_FANOUT": redis.url,
                "GOBI_STORAGE": f"local://{shared / 'blobs'}",
                "GOBI_KEY_FILE": str(shared / "master.key"),
            }
        for i in range(n):
            self.instances.append(ServerProcess(root / f"i{i}", env=env).start())

    def stop(self) -> None:
        for srv in self.instances:
            try:
                srv.stop()
            except Exception:
                srv.kill()


async def fanout(dep: Deployment, token: str, subscribers: int, commits: int, interval: float) -> dict:
    n = len(dep.instances)
    clients = [httpx.AsyncClient(base_url=s.api, headers={"Authorization": f"Bearer {token}"},
                                 timeout=60) for s in dep.instances]
    vault = (await clients[0].post("/vaults", json={"name": "fanout"})).json()["id"]
    t = time.perf_counter()
    subs = [Subscribers(s, vault, token, subscribers, 0) for s in dep.instances]
    for s in subs:
        await asyncio.to_thread(s.wait_ready)
    connect_s = time.perf_counter() - t
    sent: dict[int, float] = {}
    ack: list[float] = []
    for i in range(commits):
        t0 = time.time()
        r = await clients[i % n].post(f"/vaults/{vault}/nodes", json={
            "parent": "root", "name": f"f{i}", "kind": "file"})
        r.raise_for_status()
        ack.append(time.time() - t0)
        sent[r.json()["rev"]] = t0
        await asyncio.sleep(interval)
    await asyncio.sleep(3)  # let the last deliveries arrive (bounded)
    received = []
    for s in subs:
        received += await asyncio.to_thread(s.finish)
    lat = [(at - sent[seq]) * 1000 for seq, at in received if seq in sent]
    for c in clients:
        await c.aclose()
    expected = commits * subscribers * n
    return {"sockets": subscribers * n, "connect_s": connect_s, "deliveries": len(lat),
            "missing": expected - len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99),
            "max": max(lat) if lat else float("nan"), "commit_ms": statistics.median(ack) * 1000}


async def commit_rate(dep: Deployment, token: str, writers: int, total: int) -> float:
    n = len(dep.instances)
    clients = [httpx.AsyncClient(base_url=s.api, headers={"Authorization": f"Bearer {token}"},
                                 timeout=60, limits=httpx.Limits(max_connections=writers))
               for s in dep.instances]
    vaults = [(await clients[w % n].post("/vaults", json={"name": f"w{w}"})).json()["id"]
              for w in range(writers)]
    left = [total]

    async def writer(w: int) -> None:
        c, i = clients[w % n], 0
        while left[0] > 0:
            left[0] -= 1
            i += 1
            r = await c.post(f"/vaults/{vaults[w]}/nodes",
                             json={"parent": "root", "name": f"f{i}", "kind": "file"})
            r.raise_for_status()

    t = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - t
    for c in clients:
        await c.aclose()
    return total / elapsed


async def upload_rate(dep: Deployment, token: str, mib: int, concurrency: int = 8) -> float:
    n = len(dep.instances)
    clients = [httpx.AsyncClient(base_url=s.api, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120, limits=httpx.Limits(max_connections=concurrency))
               for s in dep.instances]
    vault = (await clients[0].post("/vaults", json={"name": "upload"})).json()["id"]
    chunks = []
    for _ in range(mib):
        data = os.urandom(1024 * 1024)
        chunks.append((hashlib.sha256(data).hexdigest(), data))
    queue = list(enumerate(chunks))

    async def worker() -> None:
        while queue:
            i, (h, data) = queue.pop()
            r = await clients[i % n].put(f"/vaults/{vault}/chunks/{h}", content=data)
            assert r.status_code == 201, r.text

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t
    for c in clients:
        await c.aclose()
    return mib / elapsed


async def run_config(kind: str, args, mongo, redis, tmp: Path) -> dict:
    dep = Deployment(kind, tmp / f"dep-{kind}", mongo, redis)
    try:
        _, token = register(dep.instances[0])
        out = await fanout(dep, token, args.subscribers, args.commits, args.interval)
        out["commits_s"] = await commit_rate(dep, token, args.writers, args.write_commits)
        out["upload_mb_s"] = await upload_rate(dep, token, args.upload_mib)
        return out
    finally:
        dep.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subscribers", type=int, default=1000, help="WebSockets per instance")
    p.add_argument("--commits", type=int, default=40, help="paced commits for the fan-out test")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between paced commits")
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--write-commits", type=int, default=400)
    p.add_argument("--upload-mib", type=int, default=64)
    p.add_argument("--configs", default="embedded,1,2")
    args = p.parse_args()
    configs = args.configs.split(",")
    mongo = redis = None
    results: dict[str, dict] = {}
    try:
        if any(c != "embedded" for c in configs):
            mongo = MongoServer().start()
            redis = RedisServer().start()
        with tempfile.TemporaryDirectory(prefix="gobi-bench-") as tmp:
            for kind in configs:
                print(f"running {kind} …", file=sys.stderr, flush=True)
                results[kind] = asyncio.run(run_config(kind, args, mongo, redis, Path(tmp)))
    finally:
        if redis:
            redis.stop()
        if mongo:
            mongo.stop()
    print(f"\nMongoDB-wire server: {mongo.kind if mongo else '-'}; redis-server; "
          f"{os.cpu_count()} cores shared by every process of the run")
    print(f"{args.subscribers} sockets per instance, {args.commits} commits "
          f"{args.interval * 1000:.0f} ms apart; {args.writers} writers x {args.write_commits} "
          f"commits; {args.upload_mib} MiB in 1 MiB chunks, 8 at a time\n")
    names = {"embedded": "embedded (SQLite)", "1": "1 instance (Mongo+Redis)",
             "2": "2 instances (Mongo+Redis)"}
    rows = [
        ("sockets", "sockets", "{:.0f}"), ("connect all (s)", "connect_s", "{:.1f}"),
        ("fan-out p50 (ms)", "p50", "{:.1f}"), ("fan-out p99 (ms)", "p99", "{:.1f}"),
        ("fan-out max (ms)", "max", "{:.1f}"), ("deliveries missing", "missing", "{:.0f}"),
        ("commit latency p50 (ms)", "commit_ms", "{:.1f}"),
        ("commits/s", "commits_s", "{:.0f}"), ("chunk upload MB/s", "upload_mb_s", "{:.1f}"),
    ]
    header = f"{'':26}" + "".join(f"{names[k]:>28}" for k in configs)
    if "1" in configs and "2" in configs:
        header += f"{'2 vs 1':>10}"
    print(header)
    for label, key, fmt in rows:
        line = f"{label:26}" + "".join(f"{fmt.format(results[k][key]):>28}" for k in configs)
        if "1" in configs and "2" in configs and results["1"][key]:
            line += f"{results['2'][key] / results['1'][key]:>9.2f}x"
        print(line)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--subscriber":
        url, vault, token, count, after = sys.argv[2:7]
        asyncio.run(_subscriber_main(url, vault, token, int(count), int(after), limit=900))
    else:
        main()
