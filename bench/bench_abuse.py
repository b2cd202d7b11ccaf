"""What strangers on the internet can cost the server: memory and connection time.

    .venv/bin/python bench/bench_abuse.py [--clients 100] [--signups 100] [--hold 20]

Each scenario runs against a fresh `gobi server` on 127.0.0.1 (so the peak resident set
size, VmHWM from /proc, belongs to that scenario alone):

- slow uploads: ``--clients`` connections without a token each start an 8 MiB chunk PUT
  to a real vault, push as much of the body as the server takes within 10 s, then trickle
  one byte a second. Reported: the server's RSS before, its peak, the answers the clients
  got, and how many connections the server still keeps open after ``--hold`` seconds.
- trickled sign-up: one connection sends a sign-up body at one byte a second; reported:
  how long the server keeps it open (bounded by ``--hold``).
- sign-ups: ``--signups`` concurrent registrations (each an Argon2 hash on the server):
  RSS before and peak, answers by status, wall time. Run twice: with the defaults, and
  with the per-address sign-up limit lifted (``GOBI_REGISTER_MAX_PER_ADDRESS``) so every
  request reaches the password hasher.

Everything is bounded (client counts and ``--hold``) and stops by itself; the servers
bind 127.0.0.1 and are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import ServerProcess, register  # noqa: E402

CHUNK = 8 * 1024 * 1024


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def slow_upload(host: str, port: int, path: str, push_for: float, hold: float) -> dict:
    """One unauthenticated chunk PUT: push fast for ``push_for`` s, then a byte a second."""
    out = {"status": None, "sent": 0, "closed_after": None}
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {CHUNK}\r\n\r\n").encode())
    piece = b"\0" * 65536

    async def read_answer() -> None:
        try:
            line = await reader.readline()
            if line.startswith(b"HTTP/"):
                out["status"] = int(line.split()[1])
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        out["closed_after"] = time.monotonic() - t0

    answer = asyncio.ensure_future(read_answer())
    try:
        while out["sent"] < CHUNK - 1 and time.monotonic() - t0 < push_for and not answer.done():
            n = min(len(piece), CHUNK - 1 - out["sent"])
            writer.write(piece[:n])
            await asyncio.wait_for(writer.drain(), timeout=max(0.1, push_for - (time.monotonic() - t0)))
            out["sent"] += n
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass
    try:
        while not answer.done() and time.monotonic() - t0 < hold and out["sent"] < CHUNK - 1:
            writer.write(b"\0")
            await asyncio.wait_for(writer.drain(), timeout=1)
            out["sent"] += 1
            await asyncio.wait([answer], timeout=1)
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass
    await asyncio.wait([answer], timeout=max(0.0, hold - (time.monotonic() - t0)))
    answer.cancel()
    writer.close()
    return out


async def slow_uploads(server: ServerProcess, vault: str, clients: int, hold: float) -> dict:
    host, port = "127.0.0.1", server.port
    digest = hashlib.sha256(b"x").hexdigest()
    path = f"/api/v1/vaults/{vault}/chunks/{digest}"
    pid = server.proc.pid
    before = rss_mb(pid)[0]
    tasks = [asyncio.ensure_future(slow_upload(host, port, path, 10.0, hold)) for _ in range(clients)]
    samples = []
    t0 = time.monotonic()
    while not all(t.done() for t in tasks) and time.monotonic() - t0 < hold + 15:
        samples.append((time.monotonic() - t0, rss_mb(pid)[0], open_fds(pid)))
        await asyncio.sleep(0.5)
    results = await asyncio.gather(*tasks)
    peak_rss = max(s[1] for s in samples) if samples else rss_mb(pid)[0]
    still_open = sum(1 for r in results if r["closed_after"] is None)
    statuses = collections.Counter(str(r["status"]) for r in results)
    sent = sum(r["sent"] for r in results)
    closed = sorted(r["closed_after"] for r in results if r["closed_after"] is not None)
    return {
        "rss_before": before, "rss_peak": peak_rss, "hwm": rss_mb(pid)[1],
        "statuses": dict(statuses), "still_open_at_hold": still_open,
        "mib_sent": sent / 2**20,
        "closed_median_s": closed[len(closed) // 2] if closed else None,
        "fds_peak": max(s[2] for s in samples) if samples else None,
    }


async def trickled_signup(server: ServerProcess, hold: float) -> float | None:
    """Seconds until the server drops a sign-up body sent at one byte a second."""
    body = b'{"username": "trickle", "password": "correct horse battery"}'
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write((f"POST /api/v1/users/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode())
    await writer.drain()
    read = asyncio.ensure_future(reader.read(65536))
    closed = None
    for i in range(len(body) - 1):   # never the last byte: the body is never complete
        if time.monotonic() - t0 > hold:
            break
        try:
            writer.write(body[i:i + 1])
            await writer.drain()
        except (ConnectionError, OSError):
            closed = time.monotonic() - t0
            break
        done, _ = await asyncio.wait([read], timeout=1)
        if done:
            closed = time.monotonic() - t0
            break
    read.cancel()
    writer.close()
    return closed


async def signups(server: ServerProcess, n: int) -> dict:
    pid = server.proc.pid
    before = rss_mb(pid)[0]
    stamp = int(time.time() * 1000) % 10**8
    peak = [before]
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(pid)[0])
            await asyncio.sleep(0.1)

    sampler = asyncio.ensure_future(sample())
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.api, timeout=300, limits=limits) as c:
        async def one(i: int) -> str:
            try:
                r = await c.post("/users/", json={"username": f"s{stamp}x{i}",
                                                  "password": "correct horse battery"})
                return str(r.status_code)
            except httpx.HTTPError as exc:
                return type(exc).__name__

        t0 = time.perf_counter()
        statuses = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    stop.set()
    await sampler
    return {"rss_before": before, "rss_peak": peak[0], "hwm": rss_mb(pid)[1],
            "statuses": dict(collections.Counter(statuses)), "wall_s": wall}


def fresh_server(tmp: Path, name: str, env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(tmp / name, env=env).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--signups", type=int, default=100)
    ap.add_argument("--hold", type=float, default=20.0, help="seconds a slow client keeps trying")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gobi-bench-abuse-") as d:
        tmp = Path(d)
        srv = fresh_server(tmp, "uploads")
        try:
            _, token = register(srv)
            r = httpx.post(srv.api + "/vaults", json={"name": "bench"},
                           headers={"Authorization": f"Bearer {token}"})
            vault = r.json()["id"]
            up = asyncio.run(slow_uploads(srv, vault, args.clients, args.hold))
            trickle = asyncio.run(trickled_signup(srv, args.hold))
        finally:
            srv.stop()
        print(f"slow uploads without a token ({args.clients} clients, 8 MiB PUT, hold {args.hold:.0f} s):")
        print(f"  server RSS before {up['rss_before']:.0f} MB, peak {up['rss_peak']:.0f} MB "
              f"(+{up['rss_peak'] - up['rss_before']:.0f} MB), high-water mark {up['hwm']:.0f} MB "
              "(includes the set-up sign-up's Argon2 hash)")
        print(f"  answers {up['statuses']}; body bytes the clients got into the socket: {up['mib_sent']:.0f} MiB")
        cm = up["closed_median_s"]
        print(f"  connections still open after {args.hold:.0f} s: {up['still_open_at_hold']}; "
              f"median time to close: {'-' if cm is None else f'{cm:.1f} s'}; peak fds {up['fds_peak']}")
        print(f"trickled sign-up (1 byte/s): closed by the server after "
              f"{'more than %.0f s (still open)' % args.hold if trickle is None else f'{trickle:.1f} s'}")

        # tests.servers lifts the sign-up limit for the test suite: put the default back.
        for label, env in (("defaults", {"GOBI_REGISTER_MAX_PER_ADDRESS": "5"}),
                           ("per-address sign-up limit lifted", {"GOBI_REGISTER_MAX_PER_ADDRESS": "100000"})):
            srv = fresh_server(tmp, f"signups-{len(label)}", env)
            try:
                su = asyncio.run(signups(srv, args.signups))
            finally:
                srv.stop()
            print(f"{args.signups} concurrent sign-ups ({label}):")
            print(f"  server RSS before {su['rss_before']:.0f} MB, peak {su['rss_peak']:.0f} MB "
                  f"(+{su['rss_peak'] - su['rss_before']:.0f} MB), high-water mark {su['hwm']:.0f} MB")
            print(f"  answers {su['statuses']} in {su['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
