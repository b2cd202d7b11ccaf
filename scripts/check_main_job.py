#!/usr/bin/python3
"""The README's main command, run end to end the way a new user runs it.

CI calls this after the test suite. It copies the tree (tracked and untracked files, not
what .gitignore names: no .venv, no caches) into a temporary directory, so the main job
builds its own virtualenv with the runtime install only (`pip install .`, no test
extras), then runs ``bash scripts/run.sh`` there on a free port and checks what the README
promises:

  the server answers /health and serves /web/; the demo vault is mounted; a file written
  into it is on the server after `gobi sync`; Ctrl-C (SIGINT to the foreground process
  group, as a terminal sends it) uploads what is pending, unmounts and stops the server,
  and the run exits 0 with nothing left behind.

Any failing step stops the check with one line saying which promise broke (exit 1), then
the tail of the run's output. Standard library only: it must not borrow anything from the
test virtualenv.

    /usr/bin/python3 scripts/check_main_job.py [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A cold run installs the runtime dependencies and compiles pyfuse3 (about a minute on a
# fresh machine with a warm pip cache, a few minutes without).
START_DEADLINE = 900
STOP_DEADLINE = 120


class Failed(Exception):
    """One promise of the main job did not hold; the message says which."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_tree(dest: Path) -> None:
    """The working tree as a fresh clone would have it, plus files not yet committed."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    for raw in filter(None, files):
        rel = raw.decode()
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue                      # deleted in the working tree, not yet committed
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)


def http(method: str, url: str, body: dict | None = None, token: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.headers, resp.read()


def mounted(mnt: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(mnt) for line in f)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_in_session(sid: int) -> list[str]:
    """Processes still alive in the session the run was started in."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) == sid:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                left.append(f"{pid} {cmd}")
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            pass
    return left


class Vault:
    """The demo vault seen through the REST API as the demo user."""

    def __init__(self, url: str, data: Path):
        password = (data / "demo-password").read_text().strip()
        _, _, body = http("POST", f"{url}/api/v1/sessions", {"username": "demo", "password": password})
        self.api = f"{url}/api/v1"
        self.token = json.loads(body)["token"]
        _, _, body = http("GET", f"{self.api}/vaults", token=self.token)
        listed = json.loads(body)
        vaults = listed["vaults"] if isinstance(listed, dict) else listed
        self.id = next(v["id"] for v in vaults if v["name"] == "demo")

    def content(self, path: str) -> bytes | None:
        """The file's bytes as the server has them, or None if it has no such file."""
        from urllib.parse import quote
        try:
            _, _, body = http("GET", f"{self.api}/vaults/{self.id}/lookup?path={quote(path)}",
                              token=self.token)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        node = json.loads(body)
        _, _, data = http("GET", f"{self.api}/vaults/{self.id}/nodes/{node['id']}/data",
                          token=self.token)
        return data


def check(work: Path, keep: bool) -> None:
    tree, data, mnt, home = work / "tree", work / "data", work / "vault", work / "home"
    for d in (tree, data, mnt, home):
        d.mkdir()
    copy_tree(tree)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The user's own logins and mount caches stay out of it: a fresh home for the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOBI_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               GOBI_PORT=str(port), GOBI_DATA_DIR=str(data), GOBI_MOUNT=str(mnt),
               PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    log_path = work / "run.log"
    log = open(log_path, "wb")
    t0 = time.monotonic()
    # A session of its own: SIGINT to its process group is what a terminal's Ctrl-C does.
    run = subprocess.Popen(["bash", "scripts/run.sh"], cwd=tree, env=env, stdin=subprocess.DEVNULL,
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    gobi = str(tree / ".venv/bin/gobi")
    try:
        step = "the server and the mount come up"
        while not (mounted(mnt) and b"Press Ctrl-C" in log_path.read_bytes()):
            if run.poll() is not None:
                raise Failed(f"{step}: scripts/run.sh exited with {run.returncode} before mounting")
            if time.monotonic() - t0 > START_DEADLINE:
                raise Failed(f"{step}: not mounted after {START_DEADLINE} s")
            time.sleep(0.5)
        started = time.monotonic() - t0
        print(f"main job: up and mounted in {started:.0f} s (install included)")

        step = "the runtime install holds no test extra"
        extras = subprocess.run([str(tree / ".venv/bin/python"), "-c",
                                 "import importlib.util as u; print([m for m in "
                                 "('pytest', 'moto', 'selenium', 'hypothesis') if u.find_spec(m)])"],
                                capture_output=True, text=True, check=True).stdout.strip()
        if extras != "[]":
            raise Failed(f"{step}: the main job's virtualenv has {extras}")

        step = "the server answers /health"
        status, _, _ = http("GET", f"{url}/health")
        if status != 200:
            raise Failed(f"{step}: HTTP {status}")
        step = "the server serves the web page at /web/"
        status, headers, body = http("GET", f"{url}/web/")
        if status != 200 or "text/html" not in headers.get("Content-Type", "") or b"gobi" not in body:
            raise Failed(f"{step}: HTTP {status} {headers.get('Content-Type')}")
        step = "the web page's stylesheet is installed"
        status, _, _ = http("GET", f"{url}/web/static/gobi.css")
        if status != 200:
            raise Failed(f"{step}: HTTP {status}")

        step = "a file written into the mount is on the server after `gobi sync`"
        first = f"written by the main-job check {secrets.token_hex(8)}\n".encode() * 1000
        (mnt / "hello.txt").write_bytes(first)
        synced = subprocess.run([gobi, "sync", str(mnt)], env=env, capture_output=True, text=True,
                                timeout=120)
        if synced.returncode != 0:
            raise Failed(f"{step}: gobi sync exited {synced.returncode}: {synced.stderr.strip()}")
        vault = Vault(url, data)
        got = vault.content("hello.txt")
        if got != first:
            raise Failed(f"{step}: the server has {None if got is None else len(got)} bytes, "
                         f"not the {len(first)} written")

        step = "Ctrl-C uploads what is pending, unmounts and stops the server"
        second = secrets.token_bytes(300_000)
        (mnt / "written-just-before-ctrl-c.bin").write_bytes(second)
        os.killpg(run.pid, signal.SIGINT)
        try:
            code = run.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            raise Failed(f"{step}: scripts/run.sh still running {STOP_DEADLINE} s after SIGINT") from None
        if code != 0:
            raise Failed(f"{step}: scripts/run.sh exited with {code}")
        if mounted(mnt):
            raise Failed(f"{step}: {mnt} is still mounted")
        if port_open(port):
            raise Failed(f"{step}: something still listens on port {port}")
        deadline = time.monotonic() + 10
        while (left := processes_in_session(run.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left:
            raise Failed(f"{step}: processes left behind: {'; '.join(left)}")

        step = "what was written before Ctrl-C is on the server after the stop"
        server = subprocess.Popen([gobi, "server", "--data-dir", str(data), "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(150):
                if port_open(port):
                    break
                time.sleep(0.2)
            vault = Vault(url, data)
            got = vault.content("written-just-before-ctrl-c.bin")
            if got is None or hashlib.sha256(got).digest() != hashlib.sha256(second).digest():
                raise Failed(f"{step}: the server has {None if got is None else len(got)} bytes "
                             f"of the {len(second)} written")
        finally:
            server.terminate()
            server.wait(30)
        print(f"main job: every check passed in {time.monotonic() - t0:.0f} s")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        if mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gobi-main-job-"))
    try:
        check(work, args.keep)
    except Failed as exc:
        print(f"main job FAILED: {exc}", file=sys.stderr)
        tail = (work / "run.log").read_text(errors="replace").splitlines()[-40:]
        print("--- last lines of scripts/run.sh's output ---\n" + "\n".join(tail), file=sys.stderr)
        print(f"(kept in {work})", file=sys.stderr)
        return 1
    if args.keep:
        print(f"kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
