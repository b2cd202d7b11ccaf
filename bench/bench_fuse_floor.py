"""The floor under every gobi figure: what a pyfuse3 filesystem that does nothing costs.

Issue 14 asks for the hot path "at the physical limit". The limit for a Python filesystem
over pyfuse3 is the cost of a kernel request travelling to an async handler and back, so
this benchmark mounts ``FloorFs`` — a pyfuse3 filesystem whose handlers do the least a
filesystem can (an in-memory dict of names, sizes only, no data kept) with the same FUSE
settings as gobi (writeback cache, the same timeouts) — and runs the small-file rows of
``bench_mount.py`` on it, beside a native directory, in one invocation:

    .venv/bin/python bench/bench_fuse_floor.py [--files 10000]

Rows: create N × 4 KiB files (open, write, close each), ``ls -l`` warm, ``stat`` each
file, delete N files. The per-file figure (µs) of the floor is what any gobi change can at
best approach; gobi's own row is in ``bench_mount.py``. Needs root and /dev/fuse.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024


def serve(mountpoint: str) -> None:
    """The do-nothing filesystem (run in a child process: ``--serve MOUNTPOINT``)."""
    import pyfuse3
    import trio

    class FloorFs(pyfuse3.Operations):
        enable_writeback_cache = True

        def __init__(self) -> None:
            super().__init__()
            self.names: dict[tuple[int, bytes], int] = {}
            self.attrs: dict[int, list] = {pyfuse3.ROOT_INODE: [stat.S_IFDIR | 0o755, 0]}
            self.next_ino = pyfuse3.ROOT_INODE + 1
            self.next_fh = 1

        def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
            mode, size = self.attrs[ino]
            a = pyfuse3.EntryAttributes()
            a.st_ino = ino
            a.st_mode = mode
            a.st_size = size
            a.st_nlink = 1
            a.entry_timeout = a.attr_timeout = 300.0
            now = time.time_ns()
            a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = now
            a.st_blksize = 128 * 1024
            a.st_blocks = (size + 511) // 512
            return a

        async def lookup(self, parent, name, ctx=None):
            ino = self.names.get((parent, name))
            if ino is None:
                a = pyfuse3.EntryAttributes()
                a.st_ino = 0
                a.entry_timeout = 300.0
                return a
            return self._attr(ino)

        async def getattr(self, inode, ctx=None):
            return self._attr(inode)

        async def setattr(self, inode, attr, fields, fh, ctx):
            if fields.update_size:
                self.attrs[inode][1] = attr.st_size
            return self._attr(inode)

        async def create(self, parent, name, mode, flags, ctx):
            ino = self.next_ino
            self.next_ino += 1
            self.names[(parent, name)] = ino
            self.attrs[ino] = [stat.S_IFREG | (mode & 0o7777), 0]
            self.next_fh += 1
            return pyfuse3.FileInfo(fh=self.next_fh), self._attr(ino)

        async def mkdir(self, parent, name, mode, ctx):
            ino = self.next_ino
            self.next_ino += 1
            self.names[(parent, name)] = ino
            self.attrs[ino] = [stat.S_IFDIR | (mode & 0o7777), 0]
            return self._attr(ino)

        async def open(self, inode, flags, ctx):
            self.next_fh += 1
            return pyfuse3.FileInfo(fh=self.next_fh)

        async def write(self, fh, off, buf):
            return len(buf)

        async def read(self, fh, off, size):
            return b""

        async def flush(self, fh):
            pass

        async def release(self, fh):
            pass

        async def unlink(self, parent, name, ctx):
            if self.names.pop((parent, name), None) is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            # The inode lives on until the kernel forgets it (the writeback cache still
            # sends its mtime); a benchmark does not care about the leak.

        async def opendir(self, inode, ctx):
            return inode

        async def readdir(self, fh, start_id, token):
            entries = sorted((ino, name) for (parent, name), ino in self.names.items() if parent == fh)
            for ino, name in entries:
                if ino <= start_id:
                    continue
                if not pyfuse3.readdir_reply(token, name, self._attr(ino), ino):
                    return

        async def releasedir(self, fh):
            pass

        async def statfs(self, ctx):
            s = pyfuse3.StatvfsData()
            s.f_bsize = s.f_frsize = 4096
            s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
            s.f_files = s.f_ffree = s.f_favail = 1 << 30
            s.f_namemax = 255
            return s

    options = set(pyfuse3.default_options)
    options.add("fsname=floor")
    pyfuse3.init(FloorFs(), mountpoint, options)
    print("ready", flush=True)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


def workloads(root: Path, files: int) -> dict[str, float]:
    d = root / "small"
    d.mkdir()
    data = os.urandom(4096)
    out: dict[str, float] = {}

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t0

    def create() -> None:
        for i in range(files):
            with open(d / f"f{i:05}", "wb") as f:
                f.write(data)

    def stat_all() -> None:
        for i in range(files):
            os.stat(d / f"f{i:05}")

    def delete() -> None:
        for i in range(files):
            os.unlink(d / f"f{i:05}")

    timed(f"create {files} 4K files", create)
    timed("ls -l warm", lambda: subprocess.run(["ls", "-l", str(d)], stdout=subprocess.DEVNULL, check=True))
    timed(f"stat {files} files", stat_all)
    timed(f"delete {files} files", delete)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    with tempfile.TemporaryDirectory(prefix="gobi-floor-") as tmp:
        native = Path(tmp) / "native"
        mnt = Path(tmp) / "mnt"
        native.mkdir()
        mnt.mkdir()
        results = {"native": workloads(native, args.files)}
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(mnt)], stdout=subprocess.PIPE,
                                text=True)
        try:
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("the floor filesystem did not mount")
            results["fuse floor"] = workloads(mnt, args.files)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            proc.wait(30)
    rows = list(results["native"])
    print(f"{'seconds':<22}{'native':>10}{'fuse floor':>12}{'floor/native':>14}{'floor µs/file':>15}")
    for row in rows:
        n, f = results["native"][row], results["fuse floor"][row]
        per = f"{f / args.files * 1e6:.0f}" if row.split()[0] in ("create", "stat", "delete") else ""
        print(f"{row:<22}{n:>10.3f}{f:>12.3f}{f / n:>14.1f}{per:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
