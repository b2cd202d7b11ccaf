"""The history commands with paths inside a running mount: the CLI finds the server, the
vault and the vault path through the mount, and the mount shows what they change.

(The commands themselves, with ``--vault``, are tested in tests/server/test_cli_history.py.)
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

from .mounts import server_file


def gobi(*args: str, env: dict, cwd=None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "gobi", *args], env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def wait_for(predicate, timeout: float = 90.0):
    """The mount catches up with the server by itself (events, or its periodic pull)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def test_versions_restore_and_trash_by_mount_paths(user, vault, mnt, tmp_path):
    f = mnt.path / "notes.txt"
    f.write_bytes(b"first\n")
    mnt.sync()
    # Same length as the first version: today a remote change that shrinks a file is read
    # with the old size (NUL-padded) by the mount; that is the mount's to fix (live sync).
    f.write_bytes(b"later\n")
    mnt.sync()
    env = user.env
    out = gobi("versions", str(f), env=env, cwd=tmp_path).stdout
    assert "notes.txt: 2 version(s)" in out
    revs = [int(r) for r in re.findall(r"\brev (\d+)", out)]
    assert gobi("cat", str(f), "--rev", str(revs[-1]), env=env).stdout == "first\n"
    gobi("restore", str(f), "--rev", str(revs[-1]), env=env)
    assert server_file(user, vault, "notes.txt") == b"first\n"
    assert wait_for(lambda: f.read_bytes() == b"first\n"), (
        f"the mount did not show the restored version: {f.read_bytes()!r} {mnt.status()}\n{mnt.log()[-4000:]}")
    # deleted in the mount, listed and restored with paths relative to a directory in it
    (mnt.path / "docs").mkdir()
    (mnt.path / "docs" / "a.md").write_text("a")
    mnt.sync()
    (mnt.path / "docs" / "a.md").unlink()
    mnt.sync()
    assert "docs/a.md" in gobi("trash", env=env, cwd=mnt.path).stdout
    gobi("restore", "a.md", env=env, cwd=mnt.path / "docs")
    assert server_file(user, vault, "docs/a.md") == b"a"
    assert wait_for(lambda: (mnt.path / "docs" / "a.md").exists()), "the mount did not show the restored file"
    assert (mnt.path / "docs" / "a.md").read_text() == "a"
