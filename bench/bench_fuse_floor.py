"""The floor under every gobi figure: what a pyfuse3 filesystem that does nothing costs.

Issue 14 asks for the hot path "at the physical limit". The limit for a Python filesystem
over pyfuse3 is the cost of a kernel request travelling to an async handler and back, so
this benchmark mounts ``FloorFs`` — a pyfuse3 filesystem whose handlers do the least a
filesystem can (in-memory dicts of names, attributes and bytes) with the same FUSE
settings as gobi (writeback cache, the same timeouts) — and runs the small-file rows of
``bench_mount.py`` on it, beside a native directory, in one invocation:

    .venv/bin/python bench/bench_fuse_floor.py [--files 10000] [--tar-entries 10000]

Rows: create N × 4 KiB files (open, write, close each), ``ls -l`` warm, ``stat`` each
file, delete N files, and ``tar x`` of the same source tarball as ``bench_mount.py``
followed by its git rows (``git add -A && git commit``, ``git status`` cold and warm; hard
links refused with ``EPERM`` as gobi does, so git renames its objects into place).
The per-file figure (µs) of the floor is what any gobi change can at best approach;
gobi's own rows are in ``bench_mount.py``. Needs root and /dev/fuse.

Like gobi (which keeps ``user.*`` xattrs), the floor answers ``getxattr`` (``ENODATA`` for
``user.*``, ``EOPNOTSUPP`` for other namespaces, which ``ls`` remembers per filesystem)
instead of leaving it unimplemented: an unimplemented ``getxattr`` makes the kernel stop
asking, while a filesystem with xattrs is asked for ``security.capability`` at every
write and ownership change (two or three of a ``tar x`` entry's ~13 requests). Its
``git status cold`` row is no floor (its directories' times are "now" at every ``stat``,
unlike gobi's). The last
column counts the requests the floor served, per file or entry.
"""

from __future__ import annotations

import argparse
import bisect
import errno
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mount import GIT_ENV, drop_caches, make_tarball  # noqa: E402 (same tree and git setup)


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
            self.data: dict[int, bytearray] = {}
            self.targets: dict[int, bytes] = {}
            self.mtimes: dict[int, int] = {}
            self.next_ino = pyfuse3.ROOT_INODE + 1
            self.next_fh = 1
            self.requests = 0           # counted in the handlers; read with getxattr below
            self.handles: dict[int, int] = {}
            self.kids: dict[int, dict[bytes, int]] = {}     # readdir's index
            self.listings: dict[int, list[tuple[int, bytes]]] = {}   # open directory handles

        def _add(self, parent: int, name: bytes, ino: int) -> None:
            self.names[(parent, name)] = ino
            self.kids.setdefault(parent, {})[name] = ino

        def _del(self, parent: int, name: bytes) -> int | None:
            self.kids.get(parent, {}).pop(name, None)
            return self.names.pop((parent, name), None)

        def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
            mode, size = self.attrs[ino]
            a = pyfuse3.EntryAttributes()
            a.st_ino = ino
            a.st_mode = mode
            a.st_size = size
            a.st_nlink = 1
            a.entry_timeout = a.attr_timeout = 300.0
            now = time.time_ns()
            a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = self.mtimes.get(ino, now)
            a.st_blksize = 128 * 1024
            a.st_blocks = (size + 511) // 512
            return a

        async def lookup(self, parent, name, ctx=None):
            self.requests += 1
            ino = self.names.get((parent, name))
            if ino is None:
                a = pyfuse3.EntryAttributes()
                a.st_ino = 0
                a.entry_timeout = 300.0
                return a
            return self._attr(ino)

        async def getattr(self, inode, ctx=None):
            self.requests += 1
            return self._attr(inode)

        async def getxattr(self, inode, name, ctx):
            if name == b"user.floor.requests":
                return str(self.requests).encode()
            self.requests += 1
            # As gobi: user.* xattrs exist (none set here), other namespaces are not supported.
            raise pyfuse3.FUSEError(errno.ENODATA if name.startswith(b"user.") else errno.EOPNOTSUPP)

        async def symlink(self, parent, name, target, ctx):
            self.requests += 1
            ino = self.next_ino
            self.next_ino += 1
            self._add(parent, name, ino)
            self.attrs[ino] = [stat.S_IFLNK | 0o777, len(target)]
            self.targets[ino] = target
            return self._attr(ino)

        async def readlink(self, inode, ctx):
            self.requests += 1
            return self.targets[inode]

        async def link(self, inode, new_parent, new_name, ctx):
            self.requests += 1
            raise pyfuse3.FUSEError(errno.EPERM)        # as gobi (and FAT, most network filesystems)

        async def rename(self, old_parent, old_name, new_parent, new_name, flags, ctx):
            self.requests += 1
            ino = self._del(old_parent, old_name)
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            self._del(new_parent, new_name)
            self._add(new_parent, new_name, ino)

        async def rmdir(self, parent, name, ctx):
            self.requests += 1
            ino = self.names.get((parent, name))
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            if self.kids.get(ino):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self._del(parent, name)

        async def fsync(self, fh, datasync):
            self.requests += 1

        async def fsyncdir(self, fh, datasync):
            self.requests += 1

        async def setattr(self, inode, attr, fields, fh, ctx):
            self.requests += 1
            if fields.update_size:
                self.attrs[inode][1] = attr.st_size
                buf = self.data.setdefault(inode, bytearray())
                del buf[attr.st_size:]
                buf.extend(b"\0" * (attr.st_size - len(buf)))
            if fields.update_mode:
                self.attrs[inode][0] = stat.S_IFMT(self.attrs[inode][0]) | (attr.st_mode & 0o7777)
            if fields.update_mtime:
                self.mtimes[inode] = attr.st_mtime_ns
            return self._attr(inode)

        async def create(self, parent, name, mode, flags, ctx):
            self.requests += 1
            ino = self.next_ino
            self.next_ino += 1
            self._add(parent, name, ino)
            self.attrs[ino] = [stat.S_IFREG | (mode & 0o7777), 0]
            self.next_fh += 1
            self.handles[self.next_fh] = ino
            return pyfuse3.FileInfo(fh=self.next_fh), self._attr(ino)

        async def mkdir(self, parent, name, mode, ctx):
            self.requests += 1
            ino = self.next_ino
            self.next_ino += 1
            self._add(parent, name, ino)
            self.attrs[ino] = [stat.S_IFDIR | (mode & 0o7777), 0]
            return self._attr(ino)

        async def open(self, inode, flags, ctx):
            self.requests += 1
            self.next_fh += 1
            self.handles[self.next_fh] = inode
            if flags & os.O_TRUNC:
                self.data[inode] = bytearray()
                self.attrs[inode][1] = 0
            return pyfuse3.FileInfo(fh=self.next_fh)

        async def write(self, fh, off, buf):
            self.requests += 1
            ino = self.handles[fh]
            data = self.data.setdefault(ino, bytearray())
            if len(data) < off:
                data.extend(b"\0" * (off - len(data)))
            data[off:off + len(buf)] = buf
            self.attrs[ino][1] = len(data)
            return len(buf)

        async def read(self, fh, off, size):
            self.requests += 1
            return bytes(self.data.get(self.handles[fh], b"")[off:off + size])

        async def flush(self, fh):
            self.requests += 1
            pass

        async def release(self, fh):
            self.requests += 1
            self.handles.pop(fh, None)

        async def unlink(self, parent, name, ctx):
            self.requests += 1
            if self._del(parent, name) is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            # The inode lives on until the kernel forgets it (the writeback cache still
            # sends its mtime); a benchmark does not care about the leak.

        async def opendir(self, inode, ctx):
            self.requests += 1
            # A listing taken once per opendir, so each readdir costs only what it returns.
            self.next_fh += 1
            self.listings[self.next_fh] = sorted((ino, name) for name, ino in self.kids.get(inode, {}).items())
            return self.next_fh

        async def readdir(self, fh, start_id, token):
            self.requests += 1
            entries = self.listings[fh]
            i = bisect.bisect_right(entries, (start_id, b"\xff" * 256))
            for ino, name in entries[i:]:
                if not pyfuse3.readdir_reply(token, name, self._attr(ino), ino):
                    return

        async def releasedir(self, fh):
            self.requests += 1
            self.listings.pop(fh, None)

        async def statfs(self, ctx):
            self.requests += 1
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


def _requests(root: Path) -> int | None:
    try:
        return int(os.getxattr(root, "user.floor.requests"))
    except OSError:
        return None             # the native directory


def workloads(root: Path, files: int, tarball: Path | None) -> tuple[dict[str, float], dict[str, int]]:
    d = root / "small"
    d.mkdir()
    data = os.urandom(4096)
    out: dict[str, float] = {}
    requests: dict[str, int] = {}

    def timed(name: str, fn) -> None:
        before = _requests(root)
        t0 = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t0
        if before is not None:
            requests[name] = _requests(root) - before

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
    if tarball is not None:
        tdir = root / "tree"
        tdir.mkdir()
        timed("tar x", lambda: subprocess.run(["tar", "xf", str(tarball), "-C", str(tdir)], check=True))
        # The git rows of bench_mount.py, on the same tree.
        subprocess.run(["git", "init", "-q"], cwd=tdir, env=GIT_ENV, check=True)
        subprocess.run(["git", "config", "gc.auto", "0"], cwd=tdir, env=GIT_ENV, check=True)
        timed("git add -A && git commit", lambda: subprocess.run(
            "git add -A && git commit -q -m bench", shell=True, cwd=tdir, env=GIT_ENV, check=True))
        status = lambda: subprocess.run(["git", "status", "--porcelain"], cwd=tdir, env=GIT_ENV,  # noqa: E731
                                        stdout=subprocess.DEVNULL, check=True)
        drop_caches()
        timed("git status cold", status)
        timed("git status warm", status)
    return out, requests


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--tar-entries", type=int, default=10_000, help="0: no tar x row")
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
        tarball = None
        if args.tar_entries:
            tarball = make_tarball(Path(tmp), args.tar_entries)
        results = {"native": workloads(native, args.files, tarball)[0]}
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(mnt)], stdout=subprocess.PIPE,
                                text=True)
        try:
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("the floor filesystem did not mount")
            results["fuse floor"], requests = workloads(mnt, args.files, tarball)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            proc.wait(30)
    rows = list(results["native"])
    print(f"{'seconds':<22}{'native':>10}{'fuse floor':>12}{'floor/native':>14}{'floor µs/item':>15}"
          f"{'requests/item':>15}")
    for row in rows:
        n, f = results["native"][row], results["fuse floor"][row]
        items = args.tar_entries if row in ("tar x", "git add -A && git commit") else args.files
        per = f"{f / items * 1e6:.0f}" if row.split()[0] in ("create", "stat", "delete", "tar", "git") \
            and "status" not in row else ""
        req = f"{requests[row] / items:.1f}" if row in requests and per else ""
        print(f"{row:<22}{n:>10.3f}{f:>12.3f}{f / n:>14.1f}{per:>15}{req:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
