"""Model-based test: random sequences of file operations applied to the mount and to a
plain temporary directory must give the same results and the same errnos; at the end
the server holds exactly the model's tree."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from .mounts import server_file, server_tree

NAMES = ["a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "x/a"]
paths = st.sampled_from(NAMES)
blobs = st.binary(max_size=3000) | st.builds(lambda n, b: b * n, st.integers(1, 300_000), st.binary(min_size=1, max_size=1))


def attempt(fn):
    try:
        r = fn()
    except OSError as exc:
        return ("errno", errno.errorcode.get(exc.errno, exc.errno))
    return ("ok", r)


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("d", st_.st_mode & 0o777)
            else:
                out[rel] = ("f", st_.st_mode & 0o777, p.read_bytes(), st_.st_nlink)
    return out


def test_mount_behaves_like_a_local_directory(mnt, user, vault, tmp_path):
    counter = [0]

    class Model(RuleBasedStateMachine):
        @initialize()
        def fresh_dirs(self):
            counter[0] += 1
            self.name = f"run{counter[0]}"
            self.mine = mnt.path / self.name
            self.local = tmp_path / "local" / self.name
            self.mine.mkdir()
            self.local.mkdir(parents=True)

        def both(self, fn):
            a, b = attempt(lambda: fn(self.mine)), attempt(lambda: fn(self.local))
            assert a == b, (a, b)

        @rule(p=paths, data=blobs)
        def write(self, p, data):
            self.both(lambda r: (r / p).write_bytes(data))

        @rule(p=paths, off=st.integers(0, 400_000), data=st.binary(min_size=1, max_size=5000))
        def pwrite(self, p, off, data):
            def op(r):
                fd = os.open(r / p, os.O_WRONLY)
                try:
                    return os.pwrite(fd, data, off)
                finally:
                    os.close(fd)
            self.both(op)

        @rule(p=paths, data=st.binary(min_size=1, max_size=100))
        def append(self, p, data):
            def op(r):
                fd = os.open(r / p, os.O_WRONLY | os.O_APPEND)
                try:
                    return os.write(fd, data)
                finally:
                    os.close(fd)
            self.both(op)

        @rule(p=paths, size=st.integers(0, 400_000))
        def truncate(self, p, size):
            self.both(lambda r: os.truncate(r / p, size))

        @rule(p=paths, off=st.integers(0, 300_000), n=st.integers(0, 70_000))
        def read(self, p, off, n):
            def op(r):
                fd = os.open(r / p, os.O_RDONLY)
                try:
                    return os.pread(fd, n, off)
                finally:
                    os.close(fd)
            self.both(op)

        @rule(p=paths)
        def mkdir(self, p):
            self.both(lambda r: os.mkdir(r / p))

        @rule(p=paths)
        def rmdir(self, p):
            self.both(lambda r: os.rmdir(r / p))

        @rule(p=paths)
        def unlink(self, p):
            self.both(lambda r: os.unlink(r / p))

        @rule(a=paths, b=paths)
        def rename(self, a, b):
            self.both(lambda r: os.rename(r / a, r / b))

        @rule(a=paths, b=paths)
        def link(self, a, b):
            # Hard links: one file under both names from now on (same content, mode and
            # inode: ``stat_size`` and the snapshot compare st_nlink).
            self.both(lambda r: os.link(r / a, r / b, follow_symlinks=False))

        @rule(p=paths, dest=st.sampled_from(["a", "../b", "d/e"]))
        def symlink(self, p, dest):
            self.both(lambda r: os.symlink(dest, r / p))

        @rule(p=paths, mode=st.sampled_from([0o600, 0o644, 0o755, 0o700]))
        def chmod(self, p, mode):
            self.both(lambda r: os.chmod(r / p, mode, follow_symlinks=False)
                      if not (r / p).is_symlink() else None)

        @rule(p=paths)
        def listdir(self, p):
            self.both(lambda r: sorted(os.listdir(r / p)))

        @rule(p=paths)
        def stat_size(self, p):
            def op(r):
                s = os.lstat(r / p)
                # A directory's st_size is filesystem-specific (ext4 4096, tmpfs varies).
                return (None if stat.S_ISDIR(s.st_mode) else s.st_size, stat.S_IFMT(s.st_mode),
                        None if stat.S_ISDIR(s.st_mode) else s.st_nlink)
            self.both(op)

        @rule()
        def flush_to_server(self):
            mnt.sync()

        @invariant()
        def same_tree(self):
            if hasattr(self, "mine"):
                assert snapshot(self.mine) == snapshot(self.local)

        def teardown(self):
            if not hasattr(self, "mine"):
                return
            mnt.sync()
            want = snapshot(self.local)
            tree = server_tree(user, vault)
            got = {k[len(self.name) + 1:]: v for k, v in tree.items() if k.startswith(self.name + "/")}
            assert set(got) == set(want)
            for rel, node in got.items():
                kind = want[rel][0]
                assert node["kind"] == {"f": "file", "d": "dir", "l": "symlink"}[kind], rel
                if kind == "f":
                    assert node["mode"] == want[rel][1], rel
                    assert server_file(user, vault, f"{self.name}/{rel}") == want[rel][2], rel
                elif kind == "l":
                    assert node["target"] == want[rel][1]
            shutil.rmtree(self.mine)
            shutil.rmtree(self.local)

    run_state_machine_as_test(Model, settings=settings(
        max_examples=int(os.environ.get("GOBI_MODEL_EXAMPLES", "25")), stateful_step_count=30,
        deadline=None, suppress_health_check=list(HealthCheck), derandomize=False))
