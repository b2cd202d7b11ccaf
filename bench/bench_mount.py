"""Mount benchmark: the same workloads on a native dir, gobi, rclone mount and sshfs.

    .venv/bin/python bench/bench_mount.py                 # the full issue-3 set (~20-40 min)
    .venv/bin/python bench/bench_mount.py --quick         # small sizes, a smoke run
    .venv/bin/python bench/bench_mount.py --targets native,gobi
    .venv/bin/python bench/bench_mount.py --only small      # only some row groups

Targets run one after another in one invocation (same machine, same data):
native directory; gobi (``gobi server`` on 127.0.0.1 + ``gobi mount``); rclone mount
``--vfs-cache-mode full`` over ``rclone serve webdav`` on 127.0.0.1; sshfs over a private
sshd on 127.0.0.1 (when sshd and sshfs are installed). Needs root (mounts,
``/proc/sys/vm/drop_caches`` for the cold rows).

Rows: sequential write + fsync, sequential read cold/warm, random 4 KiB reads, create /
``ls -l`` cold and warm / delete N small files, ``tar x`` of a real source tree,
``git add -A && git commit``, ``git status`` cold and warm, ``rm -rf`` of that tree with
its ``.git``; ``rm -rf`` of a tree of N files (100 per folder), and for gobi the same tree
written by another device (a second mount), which the mass-delete guard holds; each
mutating row is followed by a "durable on the server" row: the time from the end of the
workload until the server holds the result (gobi: ``gobi sync``, which returns while a
hold is pending; rclone/sshfs: the backend directory shows the same files and sizes as the
mount; native: ``sync``). gobi runs with the server's default configuration (the guard on).
Figures are seconds, lower is better; the last columns are gobi/rclone and gobi/native
ratios. ``--only`` runs some groups of rows: ``seq`` (write, reads), ``rand``, ``small``
(create, ``ls -l``, delete), ``tar`` (``tar x``, the git rows, ``rm -rf`` of the tree),
``delete`` (``rm -rf`` of N files).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mounts import ROOT, Gobi, Native, Rclone, Sshfs, Target  # noqa: E402

MiB = 1024 * 1024
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.org",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.org"}


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_tarball(dest: Path, entries: int) -> Path:
    """A real source tree: the first ``entries`` entries of the venv's site-packages."""
    src = ROOT / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    tar_path = dest / "source.tar"
    count = 0
    with tarfile.open(tar_path, "w") as tar:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in sorted(filenames) + [None]:
                p = Path(dirpath) if name is None else Path(dirpath) / name
                if name is None and p == src:
                    continue
                tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
                count += 1
                if count >= entries:
                    return tar_path
    return tar_path


GROUPS = ("seq", "rand", "small", "tar", "delete")


def run(args: argparse.Namespace, t: Target, tarball: Path, r: dict[str, float]) -> None:
    w = t.path / "bench"
    w.mkdir()
    block = os.urandom(MiB)
    if "seq" in args.only:
        run_seq(args, w, t, block, r)
    if "rand" in args.only:
        run_rand(args, w, t, block, r)
    if "small" in args.only:
        run_small(args, w, t, r)
    if "tar" in args.only:
        run_tar(args, w, t, tarball, r)
    if "delete" in args.only:
        run_delete(args, w, t, r)


def run_seq(args: argparse.Namespace, w: Path, t: Target, block: bytes, r: dict[str, float]) -> None:
    size = args.size_mib * MiB

    # -- sequential write + fsync; reads cold and warm
    (w / "seq").mkdir()
    big = w / "seq" / "big"

    def seq_write():
        with open(big, "wb") as f:
            for i in range(size // MiB):
                f.write(block[i % 7:] + block[:i % 7])
            f.flush()
            os.fsync(f.fileno())
    r["seq write + fsync"] = timed(seq_write)
    r["  durable on server"] = t.durable("bench/seq")

    def seq_read():
        with open(big, "rb", buffering=0) as f:
            while f.read(MiB):
                pass
    drop_caches()
    r["seq read cold"] = timed(seq_read)
    r["seq read warm"] = timed(seq_read)


def run_rand(args: argparse.Namespace, w: Path, t: Target, block: bytes, r: dict[str, float]) -> None:
    # -- random 4 KiB reads
    (w / "rand").mkdir()
    rnd_file = w / "rand" / "file"
    with open(rnd_file, "wb") as f:
        for i in range(args.random_file_mib):
            f.write(os.urandom(MiB) if i < 4 else block[i % 5:] + block[:i % 5])
    t.durable("bench/rand")
    rng = random.Random(7)
    offsets = [rng.randrange(0, args.random_file_mib * MiB - 4096) // 4096 * 4096
               for _ in range(args.random_reads)]
    drop_caches()

    def rand_read():
        fd = os.open(rnd_file, os.O_RDONLY)
        try:
            for off in offsets:
                os.pread(fd, 4096, off)
        finally:
            os.close(fd)
    r[f"{args.random_reads} random 4K reads"] = timed(rand_read)


def run_small(args: argparse.Namespace, w: Path, t: Target, r: dict[str, float]) -> None:
    # -- many small files
    small = w / "small"
    small.mkdir()
    data = os.urandom(4096)

    def create():
        for i in range(args.files):
            with open(small / f"f{i:05}", "wb") as f:
                f.write(data)
    r[f"create {args.files} 4K files"] = timed(create)
    r["  durable on server "] = t.durable("bench/small")
    drop_caches()
    ls = lambda: subprocess.run(["ls", "-l", str(small)], stdout=subprocess.DEVNULL, check=True)  # noqa: E731
    r["ls -l cold"] = timed(ls)
    r["ls -l warm"] = timed(ls)

    def delete():
        for i in range(args.files):
            os.unlink(small / f"f{i:05}")
    r[f"delete {args.files} files"] = timed(delete)
    r["  durable on server  "] = t.durable("bench/small")


def run_tar(args: argparse.Namespace, w: Path, t: Target, tarball: Path, r: dict[str, float]) -> None:
    # -- tar x, git
    tdir = w / "tar"
    tdir.mkdir()
    r["tar x"] = timed(lambda: subprocess.run(["tar", "xf", str(tarball), "-C", str(tdir)], check=True))
    r["  durable on server   "] = t.durable("bench/tar")
    subprocess.run(["git", "init", "-q"], cwd=tdir, env=GIT_ENV, check=True)
    # No automatic gc: with 10k loose objects `git commit` starts `gc --auto` in the
    # background, which would still be writing into .git when the tree is removed.
    subprocess.run(["git", "config", "gc.auto", "0"], cwd=tdir, env=GIT_ENV, check=True)
    r["git add -A && git commit"] = timed(lambda: subprocess.run(
        "git add -A && git commit -q -m bench", shell=True, cwd=tdir, env=GIT_ENV, check=True))
    r["  durable on server    "] = t.durable("bench/tar")
    status = lambda: subprocess.run(["git", "status", "--porcelain"], cwd=tdir, env=GIT_ENV,  # noqa: E731
                                    stdout=subprocess.DEVNULL, check=True)
    drop_caches()
    r["git status cold"] = timed(status)
    r["git status warm"] = timed(status)
    entries = sum(len(d) + len(f) for _, d, f in os.walk(tdir))
    r[f"rm -rf source tree + .git ({entries // 1000}k entries)"] = timed(
        lambda: subprocess.run(["rm", "-rf", str(tdir)], check=True))
    r["  durable on server     "] = t.durable("bench/tar")


def make_tree(root: Path, files: int) -> None:
    """``files`` small files, 100 per folder."""
    for i in range(files):
        d = root / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i % 100:02d}.txt").write_bytes(b"%d\n" % i)


def run_delete(args: argparse.Namespace, w: Path, t: Target, r: dict[str, float]) -> None:
    # -- rm -rf of a tree of small files; for gobi also one another device wrote (held)
    (w / "del").mkdir()
    make_tree(w / "del" / "tree", args.files)
    t.durable("bench/del")
    r[f"rm -rf {args.files} files"] = timed(
        lambda: subprocess.run(["rm", "-rf", str(w / "del" / "tree")], check=True))
    r["  durable on server      "] = t.durable("bench/del")
    elsewhere = t.other_device("bench/del/held", lambda root: make_tree(root, args.files))
    if elsewhere:
        r[f"rm -rf {args.files} files, held"] = timed(
            lambda: subprocess.run(["rm", "-rf", str(w / "del" / "held")], check=True))
        r["  durable on server       "] = t.durable("bench/del")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="native,gobi,rclone,sshfs")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--random-file-mib", type=int, default=256)
    ap.add_argument("--random-reads", type=int, default=8192)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--tar-entries", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--work", help="work directory (default: a temp dir, removed afterwards)")
    ap.add_argument("--only", default=",".join(GROUPS),
                    help=f"row groups to run, comma-separated among {', '.join(GROUPS)} (default: all)")
    args = ap.parse_args()
    args.only = set(args.only.split(","))
    if not args.only <= set(GROUPS):
        ap.error(f"--only takes {', '.join(GROUPS)}")
    if args.quick:
        args.size_mib, args.random_file_mib, args.random_reads = 64, 32, 512
        args.files, args.tar_entries = 500, 500
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so every mount and server stops.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if os.geteuid() != 0:
        print("bench_mount needs root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gobi-bench-mount-"))
    work.mkdir(parents=True, exist_ok=True)
    tarball = make_tarball(work, args.tar_entries) if "tar" in args.only else work / "none.tar"
    kinds = {"native": Native, "gobi": Gobi, "rclone": Rclone, "sshfs": Sshfs}
    results: dict[str, dict[str, float]] = {}
    try:
        for name in args.targets.split(","):
            if name == "sshfs" and not Sshfs.available():
                print("sshfs: skipped (needs sshfs and openssh-server)", file=sys.stderr)
                continue
            if name == "rclone" and not shutil.which("rclone"):
                print("rclone: skipped (not installed)", file=sys.stderr)
                continue
            target = kinds[name](work / name)
            print(f"== {name}", file=sys.stderr, flush=True)
            results[name] = {}
            try:
                target.start()
                run(args, target, tarball, results[name])
            finally:
                target.stop()
                for row, value in results[name].items():      # never lost to a later failure
                    print(f"   {name:<7} {row.strip():<36} {value:10.3f}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: partial results", file=sys.stderr)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, args)
    return 0


def print_table(results: dict[str, dict[str, float]], args) -> None:
    names = [n for n in results if results[n]]
    if not names:
        return
    rows = list(max((results[n] for n in names), key=len))
    print(f"\nmount benchmark: seq {args.size_mib} MiB, random file {args.random_file_mib} MiB, "
          f"{args.files} small files, tar of {args.tar_entries} entries (seconds, lower is better; "
          f"gobi with the server's default configuration)\n")
    head = f"{'workload':<36}" + "".join(f"{n:>10}" for n in names)
    if "gobi" in results and "rclone" in results:
        head += f"{'gobi/rclone':>13}"
    if "gobi" in results and "native" in results:
        head += f"{'gobi/native':>13}"
    print(head)
    print("-" * len(head))
    for row in rows:
        line = f"{row.rstrip():<36}" + "".join(f"{results[n].get(row, float('nan')):>10.3f}" for n in names)
        g = results.get("gobi", {}).get(row)
        for other in ("rclone", "native"):
            if "gobi" in results and other in results:
                o = results[other].get(row)
                line += f"{(g / o if o else float('inf')):>13.2f}" if g is not None and o is not None else f"{'':>13}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
