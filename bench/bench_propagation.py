"""Propagation benchmark: how long until a change made on mount A is seen on mount B.

    .venv/bin/python bench/bench_propagation.py                  # 200 of each, + rclone baseline
    .venv/bin/python bench/bench_propagation.py --count 50 --no-baseline
    .venv/bin/python bench/bench_propagation.py --settle 0       # new files without the settle delay

Two mounts of one vault on this machine (each its own cache dir, one ``gobi server`` on
127.0.0.1). For each kind of change — ``edit`` (rewrite a small file B has read before),
``create`` (a new small file), ``rename``, ``delete`` — the change is made on A, then B is
polled (open/read or stat, with a 0.5 ms pause, bounded by ``--cap`` seconds) until it
shows the change. The figure is the time from the end of the change on A (its ``close``
or syscall returned) to the first poll on B that sees it: p50 / p90 / p99 / max in ms.
Target on loopback: p50 < 100 ms, p99 < 500 ms (docs/client.md). ``create`` includes the
mount's ``--settle`` delay (new files wait for it so that temporary files never leave the
machine; default 1 s); ``--settle 0`` shows the pipeline without it. The server runs with
the mass-delete guard off (``GOBI_MASS_DELETE_FILES=0``): 200 deletes from one device would
otherwise be held for the owner after about 50, by design.

Baseline, same invocation: two ``rclone mount --vfs-cache-mode full`` of one ``rclone serve
webdav`` directory (rclone has no change notification for WebDAV; it sees remote changes
when its directory cache expires, default 5 min). Fewer samples (``--baseline-count``), each
bounded by ``--cap``; a change not seen within the cap counts as the cap (">").

Fan-out: one commit with 1, 10 and 100 WebSocket subscribers on the vault: time from the
commit (REST, answered) until the first and the last subscriber received its event, and
the server's CPU time per commit (from /proc), over ``--fanout-commits`` commits.

Needs root and /dev/fuse. Everything binds 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mounts import PY, _port_open, free_port, is_mounted, stop_procs, unmount, wait_for  # noqa: E402

KINDS = ("edit", "create", "rename", "delete")
EDIT_FILES = 10             # files the edits cycle through


# --------------------------------------------------------------------------- polling on B


def poll(check: Callable[[], bool], cap: float) -> float | None:
    """Seconds until ``check()`` holds (first poll that sees it), None past ``cap``."""
    start = time.perf_counter()
    while True:
        try:
            if check():
                return time.perf_counter() - start
        except OSError:
            pass
        if time.perf_counter() - start > cap:
            return None
        time.sleep(0.0005)


def reads(path: Path, want: bytes) -> Callable[[], bool]:
    def check() -> bool:
        with open(path, "rb") as f:
            return f.read() == want
    return check


def run_kinds(a: Path, b: Path, count: int, cap: float, label: str) -> dict[str, list[float | None]]:
    """Each kind of change ``count`` times on A, each waited for on B."""
    work_a, work_b = a / "prop", b / "prop"
    work_a.mkdir(exist_ok=True)
    out: dict[str, list[float | None]] = {k: [] for k in KINDS}
    # edit: files B has read before (cached there), rewritten with new small content.
    files = EDIT_FILES
    for i in range(files):
        (work_a / f"e{i}").write_bytes(b"initial %d\n" % i)
    for i in range(files):
        if poll(reads(work_b / f"e{i}", b"initial %d\n" % i), 120) is None:
            raise RuntimeError(f"{label}: B never saw the initial files")
    for n in range(count):
        data = b"edit %d of the benchmark, a small change\n" % n
        with open(work_a / f"e{n % files}", "wb") as f:
            f.write(data)
        out["edit"].append(poll(reads(work_b / f"e{n % files}", data), cap))
    for n in range(count):
        data = b"new file %d\n" % n
        with open(work_a / f"c{n}", "wb") as f:
            f.write(data)
        out["create"].append(poll(reads(work_b / f"c{n}", data), cap))
    for n in range(count):
        os.rename(work_a / f"c{n}", work_a / f"r{n}")
        out["rename"].append(poll(lambda n=n: (work_b / f"r{n}").exists()
                                  and not (work_b / f"c{n}").exists(), cap))
    for n in range(count):
        # A delete of a file B never showed (rclone: its directory cache) would be "seen" at
        # once: not measurable, counted as missed.
        shown = (work_b / f"r{n}").exists()
        os.unlink(work_a / f"r{n}")
        out["delete"].append(poll(lambda n=n: not (work_b / f"r{n}").exists(), cap) if shown else None)
    return out


def summary(samples: list[float | None], cap: float) -> dict[str, str]:
    seen = sorted(s for s in samples if s is not None)
    missed = len(samples) - len(seen)
    vals = sorted([s * 1000 for s in seen] + [cap * 1000] * missed)

    def pct(p: float) -> str:
        if not vals:
            return "-"
        v = vals[min(len(vals) - 1, int(round(p / 100 * (len(vals) - 1))))]
        return (">" if v >= cap * 1000 and missed else "") + f"{v:.1f}"

    return {"n": str(len(samples)), "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "max": pct(100), "missed": str(missed)}


# --------------------------------------------------------------------------- targets


class GobiPair:
    def __init__(self, work: Path, settle: float):
        self.work = work
        self.settle = settle
        self.procs: list[subprocess.Popen] = []
        self.a, self.b = work / "gobi-a", work / "gobi-b"

    def _gobi(self, *args: str, input: str | None = None) -> str:
        return subprocess.run([PY, "-m", "gobi", *args], env=self.env, input=input, text=True,
                              capture_output=True, check=True).stdout

    def start(self) -> None:
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(self.work / "gobi-config")}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(self.work / "gobi-server.log", "ab")
        # The mass-delete guard off: 200 deletes from one device are more than a quarter of
        # the vault's files, so after ~50 the server would hold them for the owner (by
        # design) and the delete row would measure the guard, not propagation.
        self.procs.append(subprocess.Popen(
            [PY, "-m", "gobi", "server", "--data-dir", str(self.work / "gobi-data"),
             "--host", "127.0.0.1", "--port", str(self.port)], stdout=log, stderr=log,
            env={**self.env, "GOBI_MASS_DELETE_FILES": "0"}))
        wait_for(lambda: _port_open(self.port), 60, "gobi server")
        self._gobi("login", self.url, "-u", "bench", "--register", "--password-stdin",
                   input="bench password 1\n")
        self.vault = self._gobi("vault", "create", "prop").strip()
        self.token = json.loads((self.work / "gobi-config" / "gobi" / "credentials.json").read_text()
                                )["servers"][self.url]["token"]
        for m in (self.a, self.b):
            m.mkdir()
            self._gobi("mount", "prop", str(m), "--cache-dir", str(self.work / f"{m.name}-cache"),
                       "--settle", str(self.settle))

    def server_pid(self) -> int:
        return self.procs[0].pid

    def stop(self) -> None:
        for m in (self.a, self.b):
            if is_mounted(m):
                subprocess.run([PY, "-m", "gobi", "umount", str(m), "--timeout", "60"],
                               env=self.env, capture_output=True)
            unmount(m)
        stop_procs(self.procs)


class RclonePair:
    def __init__(self, work: Path):
        self.work = work
        self.procs: list[subprocess.Popen] = []
        self.a, self.b = work / "rclone-a", work / "rclone-b"

    def start(self) -> None:
        backend = self.work / "rclone-backend"
        backend.mkdir()
        # The files ``run_kinds`` starts from, there before the mounts list anything: B's
        # directory cache (5 min) would otherwise hide them for longer than the setup waits.
        (backend / "prop").mkdir()
        for i in range(EDIT_FILES):
            (backend / "prop" / f"e{i}").write_bytes(b"initial %d\n" % i)
        port = free_port()
        log = open(self.work / "rclone.log", "ab")
        self.procs.append(subprocess.Popen(
            ["rclone", "serve", "webdav", str(backend), "--addr", f"127.0.0.1:{port}"],
            stdout=log, stderr=log))
        wait_for(lambda: _port_open(port), 30, "rclone serve webdav")
        for m in (self.a, self.b):
            m.mkdir()
            self.procs.append(subprocess.Popen(
                ["rclone", "mount", ":webdav:", str(m), "--webdav-url", f"http://127.0.0.1:{port}",
                 "--vfs-cache-mode", "full", "--cache-dir", str(self.work / f"{m.name}-cache")],
                stdout=log, stderr=log))
            wait_for(lambda m=m: is_mounted(m), 30, "rclone mount")

    def stop(self) -> None:
        for m in (self.a, self.b):
            unmount(m)
        stop_procs(self.procs)


# --------------------------------------------------------------------------- fan-out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fanout(url: str, token: str, vault: str, subscribers: int, commits: int,
                 server_pid: int) -> dict[str, float]:
    api = httpx.AsyncClient(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"},
                            timeout=60)
    ws_url = url.replace("http://", "ws://") + f"/api/v1/vaults/{vault}/ws"
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    firsts, lasts = [], []
    got: dict[int, list[float]] = {}
    async with trio.open_nursery() as nursery:
        sockets = []
        for _ in range(subscribers):
            ws = await trio_websocket.connect_websocket_url(nursery, ws_url, extra_headers=headers,
                                                            message_queue_size=256)
            sockets.append(ws)
        for ws in sockets:          # hello, caught_up
            while json.loads(await ws.get_message())["type"] != "caught_up":
                pass

        async def reader(ws) -> None:
            try:
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "event":
                        got.setdefault(frame["event"]["seq"], []).append(time.perf_counter())
            except trio_websocket.ConnectionClosed:
                return      # closed by us once the commits are measured

        for ws in sockets:
            nursery.start_soon(reader, ws)
        r = await api.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": f"fan{subscribers}",
                                                            "kind": "dir"})
        parent = r.json()["id"]
        cpu0 = cpu_seconds(server_pid)
        for i in range(commits):
            t0 = time.perf_counter()
            r = await api.post(f"/vaults/{vault}/nodes", json={"parent": parent, "name": f"d{i}",
                                                                "kind": "dir"})
            seq = r.json()["rev"]
            with trio.fail_after(60):
                while len(got.get(seq, [])) < subscribers:
                    await trio.sleep(0.0005)
            firsts.append(min(got[seq]) - t0)
            lasts.append(max(got[seq]) - t0)
        cpu = cpu_seconds(server_pid) - cpu0
        for ws in sockets:
            await ws.aclose()
        nursery.cancel_scope.cancel()
    await api.aclose()
    return {"first_p50": statistics.median(firsts) * 1000, "last_p50": statistics.median(lasts) * 1000,
            "last_max": max(lasts) * 1000, "cpu_ms_per_commit": cpu / commits * 1000}


# --------------------------------------------------------------------------- main


def table(title: str, rows: list[tuple[str, dict[str, str]]], cols: list[str]) -> None:
    print(f"\n{title}")
    print("  " + f"{'':<18}" + "".join(f"{c:>11}" for c in cols))
    for name, r in rows:
        print("  " + f"{name:<18}" + "".join(f"{r.get(c, ''):>11}" for c in cols))
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200, help="changes of each kind (default 200)")
    ap.add_argument("--cap", type=float, default=10.0, help="give up on one change after this (s)")
    ap.add_argument("--settle", type=float, default=1.0, help="gobi mount --settle (default 1, the mount's)")
    ap.add_argument("--baseline-count", type=int, default=5)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--fanout", default="1,10,100",
                    help="subscriber counts, each at least 1 ('' or 0 to skip)")
    ap.add_argument("--fanout-commits", type=int, default=30)
    ap.add_argument("--work", help="work dir (default: a temp dir, removed)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (FUSE mounts)", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-prop-"))
    work.mkdir(parents=True, exist_ok=True)
    targets: list = []

    def cleanup(*_):
        for t in targets:
            t.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *a: (cleanup(), sys.exit(1)))
    try:
        gobi = GobiPair(work, args.settle)
        targets.append(gobi)
        gobi.start()
        print(f"gobi: two mounts of one vault, server {gobi.url}, --settle {args.settle}; "
              f"{args.count} changes of each kind, cap {args.cap} s")
        results = run_kinds(gobi.a, gobi.b, args.count, args.cap, "gobi")
        rows = [(f"gobi {k}", summary(results[k], args.cap)) for k in KINDS]
        table("propagation A -> B, ms (end of the change on A until B sees it)", rows,
              ["n", "p50", "p90", "p99", "max", "missed"])
        if not args.no_baseline and shutil.which("rclone"):
            rclone = RclonePair(work)
            targets.append(rclone)
            rclone.start()
            base = run_kinds(rclone.a, rclone.b, args.baseline_count, args.cap, "rclone")
            rows = [(f"rclone {k}", summary(base[k], args.cap)) for k in KINDS]
            table(f"baseline: rclone mount x2 over one webdav dir ({args.baseline_count} of each, "
                  f"cap {args.cap} s)", rows, ["n", "p50", "p90", "p99", "max", "missed"])
            rclone.stop()
            targets.remove(rclone)
        if args.fanout:
            rows = []
            base_last = None
            for n in [int(x) for x in args.fanout.split(",") if x and int(x) > 0]:
                r = trio.run(fanout, gobi.url, gobi.token, gobi.vault, n, args.fanout_commits,
                             gobi.server_pid())
                base_last = base_last or r["last_p50"]
                rows.append((f"{n} subscribers", {
                    "first p50": f"{r['first_p50']:.1f}", "last p50": f"{r['last_p50']:.1f}",
                    "last max": f"{r['last_max']:.1f}", "cpu/commit": f"{r['cpu_ms_per_commit']:.2f}",
                    "vs 1": f"{r['last_p50'] / base_last:.2f}"}))
            table(f"fan-out: one commit (REST mkdir) until every subscriber has its event, ms "
                  f"({args.fanout_commits} commits; server CPU ms per commit)", rows,
                  ["first p50", "last p50", "last max", "cpu/commit", "vs 1"])
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
