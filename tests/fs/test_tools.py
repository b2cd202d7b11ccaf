"""Ordinary tools in the mount: cp -a, rsync -a, tar, git, sqlite3, find, du, ls -lR.

Each result is compared with the same tool's result on a local directory, and then with
what the server holds (through a second, fresh mount).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from .mounts import server_file


def run(*cmd: str, cwd: Path | None = None, env: dict | None = None, input: str | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300,
                       input=input)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def make_tree(root: Path, files: int = 300, seed: int = 1) -> None:
    rnd = random.Random(seed)
    dirs = [root]
    (root / "README").write_text("a tree for tests\n")
    for i in range(files):
        if rnd.random() < 0.15:
            d = rnd.choice(dirs) / f"dir{i}"
            d.mkdir()
            dirs.append(d)
        size = rnd.choice([0, 1, 100, 4096, 70_000, 300_000])
        f = rnd.choice(dirs) / f"file{i}.{rnd.choice(['txt', 'c', 'bin'])}"
        f.write_bytes(rnd.randbytes(size))
        os.chmod(f, rnd.choice([0o644, 0o600, 0o755]))
        os.utime(f, ns=(1_500_000_000_000_000_000 + i, 1_500_000_000_000_000_000 + i * 1000))
    os.symlink("file0.txt", root / "link-to-file")
    os.symlink("../..", dirs[-1] / "up")


def snapshot(root: Path) -> dict[str, tuple]:
    """path → (kind, mode, size, mtime, sha256 or link target) for every entry."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d", st.st_mode & 0o7777)
            else:
                out[rel] = ("f", st.st_mode & 0o7777, st.st_size, st.st_mtime_ns,
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    return src


def test_cp_rsync_tar_find_du(mnt, mounts, source, tmp_path):
    p = mnt.path
    run("cp", "-a", str(source), str(p / "cp"))
    run("rsync", "-a", f"{source}/", str(p / "rsync"))
    tarball = tmp_path / "src.tar"
    run("tar", "cf", str(tarball), "-C", str(source), ".")
    (p / "tar").mkdir()
    run("tar", "xf", str(tarball), "-C", str(p / "tar"))
    local_tar = tmp_path / "local-tar"
    local_tar.mkdir()
    run("tar", "xf", str(tarball), "-C", str(local_tar))   # tar keeps whole seconds only
    want = snapshot(source)
    for d in ("cp", "rsync"):
        assert snapshot(p / d) == want, d
    assert snapshot(p / "tar") == snapshot(local_tar)
    # rsync again: nothing to transfer (sizes and mtimes match)
    out = run("rsync", "-a", "--itemize-changes", f"{source}/", str(p / "rsync"))
    assert out.strip() == ""
    assert sorted(run("find", ".", cwd=p / "cp").split()) == sorted(run("find", ".", cwd=source).split())
    run("du", "-s", str(p))
    run("ls", "-lR", str(p))
    mnt.sync()
    other = mounts("fresh")
    for d in ("cp", "rsync"):
        assert snapshot(other.path / d) == want, d
    assert snapshot(other.path / "tar") == snapshot(local_tar)


def test_git(mnt, mounts, source, tmp_path):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(tmp_path)}
    repo = mnt.path / "repo"
    shutil.copytree(source, repo, symlinks=True)
    run("git", "init", "-q", cwd=repo, env=env)
    run("git", "add", "-A", cwd=repo, env=env)
    run("git", "commit", "-q", "-m", "first", cwd=repo, env=env)
    assert run("git", "status", "--porcelain", cwd=repo, env=env) == ""
    (repo / "README").write_text("changed\n")
    assert run("git", "status", "--porcelain", cwd=repo, env=env).strip() == "M README"
    run("git", "commit", "-q", "-am", "second", cwd=repo, env=env)
    run("git", "gc", "-q", cwd=repo, env=env)
    run("git", "fsck", "--strict", cwd=repo, env=env)
    mnt.sync()
    other = mounts("fresh")
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(other.path / "repo"), str(clone), env=env)
    assert run("git", "log", "--format=%s", cwd=clone, env=env).split() == ["second", "first"]
    assert (clone / "README").read_text() == "changed\n"
    assert run("git", "status", "--porcelain", cwd=other.path / "repo", env=env) == ""


def test_sqlite3(mnt, user, vault, tmp_path):
    db = mnt.path / "app.db"
    script = ["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"]
    for i in range(20):
        script.append("BEGIN;" + "".join(
            f"INSERT INTO t(v) VALUES ('{i}-{j}-{'x' * 50}');" for j in range(100)) + "COMMIT;")
    script.append("UPDATE t SET v = 'updated' WHERE id % 7 = 0;")
    script.append("DELETE FROM t WHERE id % 11 = 0;")
    run("sqlite3", str(db), input="\n".join(script))
    assert run("sqlite3", str(db), "PRAGMA integrity_check;").strip() == "ok"
    count = run("sqlite3", str(db), "SELECT count(*) FROM t;").strip()
    run("sqlite3", str(db), "PRAGMA journal_mode=WAL; INSERT INTO t(v) VALUES ('wal');")
    count = str(int(count) + 1)
    mnt.sync()
    copy = tmp_path / "copy.db"
    copy.write_bytes(server_file(user, vault, "app.db"))
    wal = server_file(user, vault, "app.db-wal")
    if wal is not None:
        (tmp_path / "copy.db-wal").write_bytes(wal)
    assert run("sqlite3", str(copy), "PRAGMA integrity_check;").strip() == "ok"
    assert run("sqlite3", str(copy), "SELECT count(*) FROM t;").strip() == count
