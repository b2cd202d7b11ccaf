"""Progress where work is long: ``gobi sync --wait`` (a barrier on every change made
before it, then the vault seq), ``gobi status``'s upload queue with per-file progress, and
how both show on a terminal (a rich bar) and elsewhere (plain lines).

Waits are hang guards, never performance thresholds."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time

from gobi.fs.cli import _print_status

from .mounts import gobi, server_file

MiB = 1024 * 1024
GUARD = 120.0


def vault_head(user, vault) -> int:
    r = user.api.get(f"/vaults/{vault}")
    r.raise_for_status()
    return r.json()["head_seq"]


def test_sync_wait_prints_the_seq_that_holds_every_earlier_change(mounts, user, vault):
    m = mounts(extra=("--settle", "600"))           # nothing leaves until asked
    for i in range(5):
        (m.path / f"f{i}.txt").write_text(f"file {i}")
    (m.path / "dir").mkdir()
    pending = m.status()["pending_ops"]
    assert pending >= 6

    r = gobi("sync", "--wait", str(m.path / "dir"), env=user.env)     # any path inside works
    seq = int(r.stdout.strip())                    # stdout: the seq alone, for scripts
    assert seq == vault_head(user, vault)
    assert f"every change made before this command is on the server (vault seq {seq})" in r.stderr
    assert f"sync {m.path}: {pending}/{pending} changes" in r.stderr   # plain lines: no terminal
    for i in range(5):
        assert server_file(user, vault, f"f{i}.txt") == f"file {i}".encode()
    assert m.status()["pending_ops"] == 0

    # Nothing pending: returns at once with the current seq.
    assert int(gobi("sync", str(m.path), env=user.env).stdout) == seq
    r = gobi("sync", "--no-wait", str(m.path), env=user.env)
    assert r.stdout == "" and "uploading pending changes now" in r.stderr
    r = gobi("sync", str(m.path.parent), env=user.env, check=False)
    assert r.returncode == 1 and "not inside a running gobi mount" in r.stderr


def test_sync_wait_is_not_held_back_by_later_changes(mounts, user, vault):
    """A file that keeps being written after the barrier does not keep `gobi sync` waiting;
    everything before it is on the server when it returns."""
    m = mounts(extra=("--settle", "0.2"))
    (m.path / "before.txt").write_text("written before the sync")
    stop = threading.Event()
    started = threading.Event()

    def keep_writing() -> None:
        with open(m.path / "busy.log", "a") as f:
            while not stop.is_set():
                f.write("line\n")
                f.flush()
                started.set()
                time.sleep(0.05)

    t = threading.Thread(target=keep_writing)
    t.start()
    try:
        assert started.wait(GUARD)
        r = gobi("sync", str(m.path), env=user.env, check=False, timeout=GUARD)
        assert r.returncode == 0, r.stderr
        assert server_file(user, vault, "before.txt") == b"written before the sync"
    finally:
        stop.set()
        t.join()
    r = gobi("sync", "--all", str(m.path), env=user.env, check=False, timeout=GUARD)
    assert r.returncode == 0, r.stderr
    assert server_file(user, vault, "busy.log") == (m.path / "busy.log").read_bytes()


def test_status_shows_the_upload_queue_with_per_file_progress(mounts, user, vault, capsys):
    m = mounts(extra=("--settle", "600"))
    (m.path / "small.txt").write_text("x")
    big = os.urandom(MiB)
    with open(m.path / "big.bin", "wb") as f:
        for i in range(96):
            f.write(big[i:] + big[:i])              # 96 MiB of distinct chunks
    st = m.status()
    queue = {(q["path"], q["op"]): q for q in st["queue"]}
    assert queue["/small.txt", "create"]["state"] == "waiting"
    assert queue["/big.bin", "create"]["size"] == 96 * MiB
    _print_status(st)
    out = capsys.readouterr().out
    assert "upload queue:" in out and "waiting    create   /big.bin  96.0 MiB" in out

    os.setxattr(m.path, "user.gobi.flush", b"1")
    seen = None
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline and seen is None:
        st = m.status()
        for q in st["queue"]:
            if q["path"] == "/big.bin" and q["state"] == "uploading" and 0 < q["sent"] < q["to_send"]:
                seen = st
        if not st["pending_ops"]:
            break
    assert seen is not None, "never saw big.bin half uploaded"
    _print_status(seen)
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "/big.bin" in ln)
    assert line.split()[:3] == ["uploading", "create", "/big.bin"]
    assert re.search(r" of \d+\.\d MiB \(\d+%\)", line), line      # sent of what the server lacks
    m.sync()
    assert server_file(user, vault, "big.bin") == (m.path / "big.bin").read_bytes()
    assert m.status()["queue"] == []


def test_progress_bar_on_a_terminal(mounts, user):
    m = mounts(extra=("--settle", "600"))
    for i in range(3):
        (m.path / f"t{i}").write_bytes(os.urandom(MiB))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gobi", "sync", str(m.path)], env={
        **user.env, "TERM": "xterm-256color", "COLUMNS": "120"}, stdin=slave, stdout=subprocess.PIPE,
        stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=GUARD)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "\x1b[" in screen and "━" in screen                 # rich's bar
    assert re.search(r"(\d+)/\1\b", screen), screen              # … at n/n changes
    assert int(out) > 0
    assert json.loads(os.getxattr(m.path, "user.gobi.status"))["pending_ops"] == 0
