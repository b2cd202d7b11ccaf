"""Real gobi mounts for tests: the CLI as a user runs it, against a real server process.

Every mount started here is unmounted by its fixture (``fusermount3 -u``, then
``umount -l`` for a wedged one) and its daemon is stopped, even when the test fails.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import Api, ServerProcess, register


def gobi(*args: str, env: dict, input: str | None = None, check: bool = True,
         timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "gobi", *args], env=env, input=input,
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"gobi {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def force_unmount(path: Path) -> None:
    if not is_mounted(path):
        return
    r = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
    if r.returncode != 0 or is_mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class User:
    """A registered user with a logged-in CLI config of their own."""

    def __init__(self, server: ServerProcess, home: Path):
        self.server = server
        self.home = home
        self.name, self.token = register(server)
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config"),
                    "XDG_CACHE_HOME": str(home / "cache")}
        gobi("login", server.url, "-u", self.name, "--password-stdin", env=self.env,
             input="correct horse battery\n")
        self.api = Api(server.api, self.token)

    def create_vault(self, name: str) -> str:
        return gobi("vault", "create", name, env=self.env).stdout.strip()

    def close(self) -> None:
        self.api.close()


class Mount:
    def __init__(self, user: User, vault: str, path: Path, cache_dir: Path,
                 cache_size: str = "1G", extra: tuple[str, ...] = (), env: dict | None = None):
        self.user = user
        self.vault = vault
        self.path = path
        self.cache_dir = cache_dir
        self.cache_size = cache_size
        self.extra = extra
        self.env = {**user.env, **(env or {})}      # the daemon's environment
        self.pid: int | None = None
        path.mkdir(parents=True, exist_ok=True)

    def start(self) -> "Mount":
        r = gobi("mount", self.vault, str(self.path), "--cache-dir", str(self.cache_dir),
                 "--cache-size", self.cache_size, "--settle", "0.2", *self.extra,
                 env=self.env, check=False)
        if r.returncode != 0:
            raise AssertionError(f"mount failed:\n{r.stdout}\n{r.stderr}\n{self.log()}")
        self.pid = self.status()["pid"]
        return self

    def status(self) -> dict:
        return json.loads(os.getxattr(self.path, "user.gobi.status"))

    def sync(self, timeout: float = 120) -> dict:
        """Upload everything now and wait until the journal is empty (exit 4: deletes of
        this mount are held for the vault owner, which ``gobi sync`` does not wait for)."""
        r = gobi("sync", str(self.path), "--timeout", str(timeout), env=self.user.env, check=False)
        assert r.returncode in (0, 4), f"sync failed: {r.stdout}{r.stderr}\n{self.log()[-3000:]}"
        st = self.status()
        st["sync_exit"] = r.returncode
        st["sync_stderr"] = r.stderr
        # stdout: the vault seq on the server that holds every change made before the call.
        st["synced_seq"] = int(r.stdout.split()[-1])
        return st

    def verify(self, repair: bool = False) -> dict:
        """``gobi verify`` (``--repair``): the mount's report of how its mirror compares
        with the server's tree."""
        r = gobi("verify", str(self.path), "--json", *(["--repair"] if repair else []),
                 env=self.user.env, check=False)
        assert r.returncode in (0, 1), f"verify failed ({r.returncode}): {r.stdout}{r.stderr}"
        report = json.loads(r.stdout)
        assert (r.returncode == 0) == (report["difference_count"] == report["repaired"]), r.stdout
        return report

    def umount(self, timeout: float = 60) -> subprocess.CompletedProcess:
        r = gobi("umount", str(self.path), "--timeout", str(timeout), env=self.user.env, check=False)
        self._wait_exit()
        return r

    def kill9(self) -> None:
        """Kill the daemon without any chance to clean up, then clear the dead mount."""
        assert self.pid
        os.kill(self.pid, signal.SIGKILL)
        self._wait_exit()
        force_unmount(self.path)

    def _wait_exit(self, timeout: float = 60) -> None:
        if not self.pid:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.pid = None

    def stop(self) -> None:
        """Teardown: always leaves no mount and no daemon behind."""
        if is_mounted(self.path):
            try:
                os.setxattr(self.path, "user.gobi.flush", b"1")
            except OSError:
                pass
            force_unmount(self.path)
        if self.pid:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(self.pid, signal.SIGKILL)
            self.pid = None

    def log(self) -> str:
        try:
            return (self.cache_dir / "mount.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def server_file(user: User, vault: str, path: str) -> bytes | None:
    """A file's bytes as the server has them (None when the path does not exist)."""
    r = user.api.get(f"/vaults/{vault}/lookup", params={"path": path})
    if r.status_code == 404:
        return None
    r.raise_for_status()
    node = r.json()
    r = user.api.get(f"/vaults/{vault}/nodes/{node['id']}/data")
    r.raise_for_status()
    return r.content


def server_node(user: User, vault: str, path: str) -> dict | None:
    r = user.api.get(f"/vaults/{vault}/lookup", params={"path": path})
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


def server_tree(user: User, vault: str) -> dict[str, dict]:
    """path → node of the whole vault as the server has it (every page)."""
    nodes: dict[str, dict] = {}
    cursor = None
    while True:
        params = {"limit": 5000, **({"cursor": cursor} if cursor else {})}
        r = user.api.get(f"/vaults/{vault}/tree", params=params)
        r.raise_for_status()
        body = r.json()
        nodes.update({n["id"]: n for n in body["nodes"]})
        cursor = body.get("next_cursor")
        if not cursor:
            break

    def path(n: dict) -> str:
        parts = []
        while n["parent"] and n["parent"] != "root":
            parts.append(n["name"])
            n = nodes[n["parent"]]
        parts.append(n["name"])
        return "/".join(reversed(parts))

    return {path(n): n for n in nodes.values() if n["parent"] is not None}


def chunk_uploads(server: ServerProcess) -> int:
    """How many chunk PUTs the server has logged (access log lines)."""
    return sum(1 for line in server.output if "PUT" in line and "/chunks/" in line)


# -- waiting for live sync (hang guards, never performance thresholds) ------------------

GUARD = 60.0


def eventually(cond, what: str, timeout: float = GUARD, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except OSError as exc:      # a name that is not there yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def read(m: Mount, rel: str) -> bytes | None:
    try:
        return (m.path / rel).read_bytes()
    except FileNotFoundError:
        return None


def listing(m: Mount) -> dict[str, tuple]:
    """rel path → (kind, content or target or rdev, mode) of everything under the mount. A
    read error names the file, the errno, what a second try gives and the mount's status.
    Special files are never opened (a FIFO's open would wait for a writer)."""
    out = {}
    for dirpath, dirs, files in os.walk(m.path):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, m.path)
            st = os.lstat(p)
            if os.path.islink(p):
                out[rel] = ("symlink", os.readlink(p), None)
            elif os.path.isdir(p):
                out[rel] = ("dir", None, st.st_mode & 0o7777)
            elif not stat.S_ISREG(st.st_mode):
                out[rel] = (stat.filemode(st.st_mode)[0], st.st_rdev, st.st_mode & 0o7777)
            else:
                try:
                    with open(p, "rb") as f:
                        data = f.read()
                except OSError as exc:
                    try:
                        again = open(p, "rb").read()
                    except OSError as exc2:
                        again = exc2
                    raise AssertionError(f"{m.path.name}: reading {rel} (size {st.st_size}, ino "
                                         f"{st.st_ino}) failed: {exc!r}; second try: {again!r}; "
                                         f"status: {m.status()}") from exc
                out[rel] = ("file", data, st.st_mode & 0o7777)
    return out


def caught_up(*ms: Mount) -> None:
    """Every mount uploaded its changes and applied every event up to the vault's head."""
    # The server's head after every mount's uploads, not a mount's own idea of the head
    # (a mount whose socket was just cut may not have heard of the newest events yet).
    head = max(m.sync()["synced_seq"] for m in ms)
    for m in ms:
        eventually(lambda m=m: (lambda s: s["last_seq"] >= max(head, s["head_seq"])
                                and s["pending_ops"] == 0 and s["deferred"] == 0)(m.status()),
                   f"{m.path.name} caught up to seq {head}")


__all__ = ["Mount", "User", "gobi", "server_file", "server_node", "server_tree", "httpx",
           "force_unmount", "is_mounted", "eventually", "read", "listing", "caught_up", "GUARD"]
