"""fsstress-style run (issue 17): 4 processes (``tests/fs/stress_worker.py``) each doing
seeded random namespace and data operations in a tree of their own and in one directory
they all share, on the same mount: create, write, append, truncate, rename within and
across directories (files between the own tree and the shared one too), mkdir, rmdir,
unlink, symlink, chmod, utime, mkfifo, readdir, stat, read, fsync. In its own tree a worker
checks every answer against its model (contents, listings, types, modes, sizes, mtimes);
in the shared directory only the errnos of a race (ENOENT, EEXIST, ENOTEMPTY) are let
through. Then ``rm -rf`` of the whole tree must succeed, the server must have nothing left
under it and ``gobi verify`` must find no difference.

The same workload runs on a local directory as well; both times and their ratio are
printed, never asserted (the machines are shared and noisy). The issue's target: 4 × 10,000
operations within 10× of the native disk.

``GOBI_STRESS_OPS`` sets the operations per process (default 1500), ``GOBI_STRESS_SEED``
replays a run (worker i uses seed + i).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from .mounts import server_tree

WORKER = Path(__file__).with_name("stress_worker.py")
PROCS = 4


def run_workers(root: Path, seed: int, nops: int, log=lambda: "") -> tuple[float, list[dict]]:
    """The 4 workers on ``root`` at once; (wall seconds, their summaries)."""
    root.mkdir(parents=True, exist_ok=True)
    guard = 600 + nops * 0.5            # a hang guard, not a performance threshold
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(root), str(i), str(seed + i), str(nops)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(PROCS)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=max(1.0, guard - (time.monotonic() - t0))))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    elapsed = time.monotonic() - t0
    failed = [(i, p.returncode, err) for i, (p, (_, err)) in enumerate(zip(procs, outs)) if p.returncode != 0]
    assert not failed, (f"stress seed {seed} on {root}: " + "\n".join(
        f"worker {i} exit {rc}:\n{err}" for i, rc, err in failed) + f"\nmount log tail:\n{log()[-4000:]}")
    return elapsed, [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def test_stress(mnt, user, vault, tmp_path):
    seed = int(os.environ.get("GOBI_STRESS_SEED") or random.SystemRandom().randrange(1 << 31))
    nops = int(os.environ.get("GOBI_STRESS_OPS", "1500"))
    print(f"stress: GOBI_STRESS_SEED={seed} GOBI_STRESS_OPS={nops} × {PROCS} processes")

    local, _ = run_workers(tmp_path / "local-stress", seed, nops)
    on_mount, summaries = run_workers(mnt.path / "stress", seed, nops, mnt.log)
    tolerated = {k: sum(s["tolerated"].get(k, 0) for s in summaries)
                 for k in ("ENOENT", "EEXIST", "ENOTEMPTY")}
    print(f"stress: {PROCS} × {nops} ops: mount {on_mount:.1f} s, local disk {local:.1f} s, "
          f"ratio {on_mount / max(local, 1e-9):.1f}×; tolerated races {tolerated}")

    st = mnt.sync()
    assert st["sync_exit"] == 0, st["sync_stderr"]
    report = mnt.verify()
    assert report["difference_count"] == 0, report

    t0 = time.monotonic()
    r = subprocess.run(["rm", "-rf", str(mnt.path / "stress")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"rm -rf: {r.stderr}\n{mnt.log()[-3000:]}"
    print(f"stress: rm -rf on the mount {time.monotonic() - t0:.1f} s")
    assert not (mnt.path / "stress").exists()
    st = mnt.sync()
    assert st["sync_exit"] == 0, st["sync_stderr"]
    left = sorted(p for p in server_tree(user, vault) if p == "stress" or p.startswith("stress/"))
    assert left == [], left[:20]
    report = mnt.verify()
    assert report["difference_count"] == 0, report
