"""One fsstress-style worker of tests/fs/test_stress.py (run as a script, not collected).

    python stress_worker.py ROOT INDEX SEED OPS

Seeded random namespace and data operations in ``ROOT/pINDEX`` (this worker's own tree,
kept in a model: every call must succeed, every read, listing and ``lstat`` must match the
model) and in ``ROOT/shared`` (every worker at once: only ENOENT, EEXIST and ENOTEMPTY may
come back there, the answers of a race). Files, directories, symlinks and FIFOs have their
own name pools in the shared directory, so a race never meets a name of another kind
(that would be EISDIR or ENOTDIR, which count as failures here).

Exit 0 and one JSON line (operation counts, tolerated errnos) on stdout; on any other
error, exit 1 with the failing operation, the last operations before it and the traceback
on stderr.
"""

from __future__ import annotations

import errno
import json
import os
import random
import time
import stat
import sys
import traceback
from collections import Counter

TOLERATED = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY}
MODES = (0o600, 0o644, 0o640, 0o755, 0o700)
MAXFILE = 16 * 1024
OWN_LIMIT = 120                   # entries of the own tree before removals are preferred


class Worker:
    def __init__(self, root: str, idx: int, seed: int):
        self.root = root
        self.rng = random.Random(seed)
        self.mine = f"p{idx}"
        self.shared = "shared"
        # rel path → {"kind": "file"|"dir"|"symlink"|"fifo", "data": bytes|None, "mode": int|None}
        self.own: dict[str, dict] = {self.mine: {"kind": "dir", "mode": 0o755}}
        self.counts: Counter = Counter()
        self.tolerated: Counter = Counter()
        self.history: list[str] = []
        os.makedirs(self.p(self.mine), exist_ok=True)
        os.makedirs(self.p(self.shared), exist_ok=True)

    def p(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def data(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    # -- the model of the own tree ---------------------------------------------------------

    def of_kind(self, *kinds: str) -> list[str]:
        return [k for k, v in self.own.items() if v["kind"] in kinds]

    def children(self, d: str) -> list[str]:
        pre = d + "/"
        return sorted(k[len(pre):] for k in self.own if k.startswith(pre) and "/" not in k[len(pre):])

    def new_name(self) -> str | None:
        dirs = [d for d in self.of_kind("dir") if d.count("/") < 3]
        for _ in range(10):
            cand = f"{self.rng.choice(dirs)}/n{self.rng.randrange(60)}"
            if cand not in self.own:
                return cand
        return None

    # -- operations --------------------------------------------------------------------------

    def step(self, opno: int) -> None:
        if self.rng.random() < 0.3:
            self.shared_op(opno)
        else:
            self.own_op(opno)

    def own_op(self, opno: int) -> None:
        rng = self.rng
        crowded = len(self.own) > OWN_LIMIT
        kind = rng.choice(
            ["create"] * (2 if crowded else 8) + ["write"] * 8 + ["append"] * 5 + ["truncate"] * 4 +
            ["read"] * 6 + ["rename"] * 5 + ["to_shared"] * 2 + ["from_shared"] * 2 +
            ["mkdir"] * (1 if crowded else 3) + ["rmdir"] * 3 + ["unlink"] * (10 if crowded else 4) +
            ["symlink"] * 2 + ["chmod"] * 2 + ["utime"] * 2 + ["mkfifo"] * 1 + ["readdir"] * 4 +
            ["stat"] * 6 + ["fsync"] * 1 + ["link"] * 3)
        files = self.of_kind("file")
        if kind in ("write", "append", "truncate", "read", "to_shared", "fsync") and not files:
            kind = "create"
        self.counts[kind] += 1

        if kind == "link":
            # A hard link: both names share the model's entry (a dict changed in place), so
            # a write, chmod or truncate through one name is checked through the other.
            cands = self.of_kind("file", "symlink", "fifo")
            rel = self.new_name()
            if not cands or rel is None:
                return
            src = rng.choice(cands)
            self.history.append(f"#{opno} link {src} -> {rel}")
            os.link(self.p(src), self.p(rel), follow_symlinks=False)
            self.own[rel] = self.own[src]
            return

        if kind in ("create", "mkdir", "symlink", "mkfifo", "from_shared"):
            rel = self.new_name()
            if rel is None:
                return
            self.history.append(f"#{opno} {kind} {rel}")
            if kind == "create":
                body = self.data(rng.randint(0, MAXFILE))
                fd = os.open(self.p(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    os.write(fd, body)
                finally:
                    os.close(fd)
                self.own[rel] = {"kind": "file", "data": body, "mode": 0o644}
            elif kind == "mkdir":
                os.mkdir(self.p(rel), 0o755)
                self.own[rel] = {"kind": "dir", "mode": 0o755}
            elif kind == "symlink":
                target = rng.choice(["n1", "../n2", "/nonexistent", "x" * rng.randint(1, 200)])
                os.symlink(target, self.p(rel))
                self.own[rel] = {"kind": "symlink", "target": target}
            elif kind == "mkfifo":
                os.mkfifo(self.p(rel), 0o644)
                self.own[rel] = {"kind": "fifo", "mode": 0o644}
            else:
                src = self.shared_file()
                self.history[-1] += f" <- {src}"
                if self.tolerate(lambda: os.rename(self.p(src), self.p(rel))):
                    # Another worker may still write through a descriptor it had open.
                    self.own[rel] = {"kind": "file", "data": None, "mode": None, "shared": True}
            return

        if kind in ("write", "append", "truncate", "read", "fsync", "to_shared"):
            rel = rng.choice(files)
            e = self.own[rel]
            size = len(e["data"]) if e["data"] is not None else os.stat(self.p(rel)).st_size
            self.history.append(f"#{opno} {kind} {rel} (size {size})")
            if kind == "write":
                off = rng.randint(0, size + 4096)
                body = self.data(rng.randint(1, 8192))
                self.history[-1] += f" at {off} len {len(body)}"
                fd = os.open(self.p(rel), os.O_WRONLY)
                try:
                    assert os.pwrite(fd, body, off) == len(body)
                finally:
                    os.close(fd)
                if e["data"] is not None:
                    d = bytearray(e["data"])
                    if off > len(d):
                        d.extend(bytes(off - len(d)))
                    d[off:off + len(body)] = body
                    e["data"] = bytes(d)
            elif kind == "append":
                body = self.data(rng.randint(1, 4096))
                fd = os.open(self.p(rel), os.O_WRONLY | os.O_APPEND)
                try:
                    assert os.write(fd, body) == len(body)
                finally:
                    os.close(fd)
                if e["data"] is not None:
                    e["data"] += body
            elif kind == "truncate":
                to = rng.randint(0, min(size + 8192, 2 * MAXFILE))
                self.history[-1] += f" to {to}"
                os.truncate(self.p(rel), to)
                if e["data"] is not None:
                    e["data"] = e["data"][:to] + bytes(max(0, to - len(e["data"])))
            elif kind == "read":
                with open(self.p(rel), "rb") as f:
                    got = f.read()
                if e["data"] is not None and got != e["data"]:
                    want = e["data"]
                    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                              min(len(got), len(want)))
                    raise AssertionError(f"{rel}: read {len(got)} bytes, the model has {len(want)}; "
                                         f"first difference at {at}")
            elif kind == "fsync":
                fd = os.open(self.p(rel), os.O_RDWR)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                dst = self.shared_file()
                self.history[-1] += f" -> {dst}"
                if self.tolerate(lambda: os.rename(self.p(rel), self.p(dst))) \
                        and not os.path.lexists(self.p(rel)):
                    # (Still there: the shared name was another name of the same file, and
                    # rename(2) of two names of one file does nothing.)
                    del self.own[rel]
                    if any(v is e for v in self.own.values()):
                        # Still linked here, and others write and chmod through the shared
                        # name now: its content and mode are not known here any more.
                        e["data"] = None
                        e["mode"] = None
                        e["shared"] = True
            return

        if kind == "rename":
            src = rng.choice([k for k in self.own if k != self.mine]) if len(self.own) > 1 else None
            if src is None:
                return
            e = self.own[src]
            dirs = [d for d in self.of_kind("dir") if d != src and not d.startswith(src + "/")
                    and d.count("/") < 3]
            dst = f"{rng.choice(dirs)}/n{rng.randrange(60)}"
            if dst == src or self.own.get(dst) is e:
                return      # (two names of one file: rename(2) does nothing, nor does the model)
            if dst in self.own:
                t = self.own[dst]
                # Replace only what rename(2) replaces without an error: a non-directory by a
                # non-directory, a directory by an empty directory.
                if (e["kind"] == "dir") != (t["kind"] == "dir") or \
                        (t["kind"] == "dir" and self.children(dst)):
                    return
            self.history.append(f"#{opno} rename {src} -> {dst}")
            os.rename(self.p(src), self.p(dst))
            moved = {k: v for k, v in self.own.items() if k == src or k.startswith(src + "/")}
            for k in [k for k in self.own if k == dst or k.startswith(dst + "/")]:
                del self.own[k]
            for k, v in moved.items():
                del self.own[k]
                self.own[dst + k[len(src):]] = v
            return

        if kind == "rmdir":
            empty = [d for d in self.of_kind("dir") if d != self.mine and not self.children(d)]
            if not empty:
                return
            rel = rng.choice(empty)
            self.history.append(f"#{opno} rmdir {rel}")
            os.rmdir(self.p(rel))
            del self.own[rel]
            return

        if kind == "unlink":
            cands = self.of_kind("file", "symlink", "fifo")
            if not cands:
                return
            rel = rng.choice(cands)
            self.history.append(f"#{opno} unlink {rel}")
            os.unlink(self.p(rel))
            del self.own[rel]
            return

        if kind in ("chmod", "utime", "stat"):
            rel = rng.choice(list(self.own))
            e = self.own[rel]
            self.history.append(f"#{opno} {kind} {rel} ({e['kind']})")
            if kind == "chmod":
                if e["kind"] == "symlink":
                    return
                mode = rng.choice(MODES)
                self.history[-1] += f" to {oct(mode)} at {time.time():.3f}"
                os.chmod(self.p(rel), mode)
                if not e.get("shared"):
                    e["mode"] = mode
            elif kind == "utime":
                ns = rng.randint(10**17, 2 * 10**18)
                os.utime(self.p(rel), ns=(ns + 12345, ns), follow_symlinks=False)
                got = os.lstat(self.p(rel)).st_mtime_ns
                if got != ns:
                    raise AssertionError(f"{rel}: mtime {got} after utime to {ns}")
            st = os.lstat(self.p(rel))
            want = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
                    "fifo": stat.S_IFIFO}[e["kind"]]
            if stat.S_IFMT(st.st_mode) != want:
                raise AssertionError(f"{rel}: type {stat.filemode(st.st_mode)}, the model has {e['kind']}")
            if e.get("mode") is not None and stat.S_IMODE(st.st_mode) != e["mode"]:
                raise AssertionError(f"{rel}: mode {oct(st.st_mode)}, the model has {oct(e['mode'])}")
            if e["kind"] == "file" and e["data"] is not None and st.st_size != len(e["data"]):
                raise AssertionError(f"{rel}: size {st.st_size}, the model has {len(e['data'])}")
            if e["kind"] == "symlink" and os.readlink(self.p(rel)) != e["target"]:
                raise AssertionError(f"{rel}: symlink to {os.readlink(self.p(rel))!r}, the model has {e['target']!r}")
            if e["kind"] != "dir" and e.get("data", b"") is not None:
                names = sum(1 for v in self.own.values() if v is e)
                if st.st_nlink != names:
                    raise AssertionError(f"{rel}: {st.st_nlink} links, the model has {names} names")
            return

        if kind == "readdir":
            rel = rng.choice(self.of_kind("dir"))
            self.history.append(f"#{opno} readdir {rel}")
            got = sorted(os.listdir(self.p(rel)))
            if got != self.children(rel):
                raise AssertionError(f"{rel}: listing {got}, the model has {self.children(rel)}")
            return
        raise AssertionError(kind)

    # -- the shared directory ----------------------------------------------------------------

    def shared_file(self) -> str:
        if self.rng.random() < 0.6:
            return f"{self.shared}/f{self.rng.randrange(10)}"
        return f"{self.shared}/d{self.rng.randrange(3)}/f{self.rng.randrange(6)}"

    def tolerate(self, fn) -> bool:
        """Run ``fn``: True when it succeeded, False on a tolerated race errno."""
        try:
            fn()
            return True
        except OSError as exc:
            if exc.errno not in TOLERATED:
                raise
            self.tolerated[errno.errorcode[exc.errno]] += 1
            return False

    def shared_op(self, opno: int) -> None:
        rng = self.rng
        kind = rng.choice(["s_write"] * 6 + ["s_append"] * 3 + ["s_truncate"] * 2 + ["s_read"] * 4 +
                          ["s_rename"] * 4 + ["s_rename_dir"] * 1 + ["s_mkdir"] * 2 + ["s_rmdir"] * 2 +
                          ["s_unlink"] * 3 + ["s_symlink"] * 1 + ["s_mkfifo"] * 1 + ["s_chmod"] * 1 +
                          ["s_utime"] * 1 + ["s_readdir"] * 2 + ["s_stat"] * 3)
        self.counts[kind] += 1
        f = self.shared_file()
        d = f"{self.shared}/d{rng.randrange(3)}"
        link = f"{self.shared}/l{rng.randrange(4)}"
        fifo = f"{self.shared}/p{rng.randrange(3)}"
        self.history.append(f"#{opno} {kind} {f} {d} {link} {fifo} at {time.time():.3f}")

        def write(flags: int, off: int | None):
            body = self.data(rng.randint(1, 8192))

            def fn():
                fd = os.open(self.p(f), flags, 0o644)
                try:
                    if off is None:
                        os.write(fd, body)
                    else:
                        os.pwrite(fd, body, off)
                finally:
                    os.close(fd)
            return fn

        def read():
            with open(self.p(f), "rb") as fh:
                fh.read()

        def readdir():
            os.listdir(self.p(rng.choice([self.shared, d])))

        fn = {
            "s_write": lambda: write(os.O_WRONLY | os.O_CREAT, rng.randint(0, MAXFILE))(),
            "s_append": lambda: write(os.O_WRONLY | os.O_CREAT | os.O_APPEND, None)(),
            "s_truncate": lambda: os.truncate(self.p(f), rng.randint(0, MAXFILE)),
            "s_read": read,
            "s_rename": lambda: os.rename(self.p(f), self.p(self.shared_file())),
            "s_rename_dir": lambda: os.rename(self.p(d), self.p(f"{self.shared}/d{rng.randrange(3)}")),
            "s_mkdir": lambda: os.mkdir(self.p(d)),
            "s_rmdir": lambda: os.rmdir(self.p(d)),
            "s_unlink": lambda: os.unlink(self.p(rng.choice([f, f, link, fifo]))),
            "s_symlink": lambda: os.symlink(rng.choice(["f1", "d0/f2", "../p0"]), self.p(link)),
            "s_mkfifo": lambda: os.mkfifo(self.p(fifo), 0o644),
            "s_chmod": lambda: os.chmod(self.p(rng.choice([f, d])), rng.choice(MODES)),
            "s_utime": lambda: os.utime(self.p(rng.choice([f, d, link, fifo])),
                                        ns=(rng.randint(10**17, 2 * 10**18),) * 2, follow_symlinks=False),
            "s_readdir": readdir,
            "s_stat": lambda: os.lstat(self.p(rng.choice([f, d, link, fifo]))),
        }[kind]
        self.tolerate(fn)

    # -- the end -------------------------------------------------------------------------------

    def final_check(self) -> None:
        """The own tree on disk is the model's, kind by kind, byte for byte."""
        self.history.append("final check")
        found = {}
        for dirpath, dirs, names in os.walk(self.p(self.mine)):
            for n in dirs + names:
                full = os.path.join(dirpath, n)
                found[os.path.relpath(full, self.root)] = os.lstat(full)
        want = {k for k in self.own if k != self.mine}
        if set(found) != want:
            raise AssertionError(f"own tree: extra {sorted(set(found) - want)}, missing {sorted(want - set(found))}")
        for rel, e in self.own.items():
            if e["kind"] == "file" and e["data"] is not None:
                with open(self.p(rel), "rb") as fh:
                    if fh.read() != e["data"]:
                        raise AssertionError(f"{rel}: content differs from the model at the end")


def main() -> int:
    root, idx, seed, nops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    os.umask(0o022)
    w = Worker(root, idx, seed)
    try:
        for opno in range(1, nops + 1):
            w.step(opno)
        w.final_check()
    except BaseException as exc:
        tail = "\n  ".join(w.history[-20:])
        if os.environ.get("GOBI_STRESS_HISTORY"):
            with open(f"{os.environ['GOBI_STRESS_HISTORY']}.{idx}", "w") as fh:
                fh.write("\n".join(w.history))
        if os.environ.get("GOBI_STRESS_HISTORY"):
            with open(f"{os.environ['GOBI_STRESS_HISTORY']}.{idx}", "w") as fh:
                fh.write("\n".join(w.history))
        print(f"worker {idx} (seed {seed}) failed: {exc!r}\nlast ops (newest last):\n  {tail}\n"
              f"{traceback.format_exc()}", file=sys.stderr)
        return 1
    if os.environ.get("GOBI_STRESS_HISTORY"):
        with open(f"{os.environ['GOBI_STRESS_HISTORY']}.{idx}", "w") as fh:
            fh.write("\n".join(w.history))
    print(json.dumps({"worker": idx, "ops": nops, "counts": w.counts, "tolerated": w.tolerated,
                      "own_entries": len(w.own)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
