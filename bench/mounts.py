"""Mount targets for bench_mount.py: a native directory, gobi (server on this machine),
rclone mount over ``rclone serve webdav`` and sshfs over a private loopback sshd.

Each target gives a directory to run workloads in and a way to measure "time until
durable on the server" after a mutating workload. Everything started here binds
127.0.0.1 and is stopped by ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
#: Give up waiting for a target's uploads after this long (the row then shows inf).
DURABLE_CAP = 900.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def unmount(path: Path) -> None:
    if is_mounted(path):
        if subprocess.run(["fusermount3", "-u", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def tree_state(root: Path) -> set[tuple[str, int]]:
    """(relative path, size) of every regular file under root."""
    out = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            if not p.is_symlink():
                out.add((str(p.relative_to(root)), st.st_size))
    return out


class Target:
    name = "?"

    def __init__(self, work: Path):
        self.work = work
        self.procs: list[subprocess.Popen] = []

    @property
    def path(self) -> Path:
        raise NotImplementedError

    def start(self) -> None: ...

    def durable(self, subdir: str) -> float:
        """Seconds until the server holds what the mount shows under ``subdir``."""
        return 0.0

    def other_device(self, subdir: str, write) -> bool:
        """Have another device write ``write(root)`` at ``subdir`` and wait until this mount
        shows it. False when the target has no notion of devices (the row is skipped)."""
        return False

    def stop(self) -> None:
        stop_procs(self.procs)


class Native(Target):
    name = "native"

    @property
    def path(self) -> Path:
        return self.work / "native"

    def start(self) -> None:
        self.path.mkdir(parents=True)

    def durable(self, subdir: str) -> float:
        t = time.perf_counter()
        os.sync()
        return time.perf_counter() - t


class _BackendDir(Target):
    """A mount whose server stores plain files in a local dir: durable = the backend
    shows the same files and sizes as the mount."""

    def durable(self, subdir: str) -> float:
        # Both sides are walked on every poll: the mount's own view can still change
        # while its uploads settle (temporary names, sizes of files in flight).
        start = time.perf_counter()
        mount, backend = self.path / subdir, self.backend / subdir
        while True:
            have = tree_state(backend) if backend.exists() else set()
            if have == (tree_state(mount) if mount.exists() else set()):
                return time.perf_counter() - start
            if time.perf_counter() - start > DURABLE_CAP:
                return float("inf")
            time.sleep(0.5)


class Rclone(_BackendDir):
    name = "rclone"

    @property
    def path(self) -> Path:
        return self.work / "rclone-mnt"

    def start(self) -> None:
        self.backend = self.work / "rclone-backend"
        self.backend.mkdir(parents=True)
        self.path.mkdir(parents=True)
        port = free_port()
        log = open(self.work / "rclone.log", "ab")
        self.procs.append(subprocess.Popen(
            ["rclone", "serve", "webdav", str(self.backend), "--addr", f"127.0.0.1:{port}"],
            stdout=log, stderr=log))
        wait_for(lambda: _port_open(port), 30, "rclone serve webdav")
        self.procs.append(subprocess.Popen(
            ["rclone", "mount", ":webdav:", str(self.path), "--webdav-url", f"http://127.0.0.1:{port}",
             "--vfs-cache-mode", "full", "--cache-dir", str(self.work / "rclone-cache")],
            stdout=log, stderr=log))
        wait_for(lambda: is_mounted(self.path), 30, "rclone mount")

    def stop(self) -> None:
        unmount(self.path)
        super().stop()


class Sshfs(_BackendDir):
    name = "sshfs"

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("sshfs") and Path("/usr/sbin/sshd").exists())

    @property
    def path(self) -> Path:
        return self.work / "sshfs-mnt"

    def start(self) -> None:
        self.backend = self.work / "sshfs-backend"
        self.backend.mkdir(parents=True)
        self.path.mkdir(parents=True)
        d = self.work / "ssh"
        d.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id")], check=True)
        shutil.copy(d / "id.pub", d / "authorized_keys")
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPermitRootLogin prohibit-password\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile {d / 'sshd.pid'}\nSubsystem sftp internal-sftp\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        log = open(self.work / "sshd.log", "ab")
        self.procs.append(subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                                           stdout=log, stderr=log))
        wait_for(lambda: _port_open(port), 30, "sshd")
        subprocess.run(
            ["sshfs", f"root@127.0.0.1:{self.backend}", str(self.path), "-p", str(port),
             "-o", f"IdentityFile={d / 'id'},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null"],
            check=True, capture_output=True)
        wait_for(lambda: is_mounted(self.path), 30, "sshfs mount")

    def stop(self) -> None:
        unmount(self.path)
        super().stop()


class Gobi(Target):
    name = "gobi"

    @property
    def path(self) -> Path:
        return self.work / "gobi-mnt"

    def start(self) -> None:
        self.path.mkdir(parents=True)
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(self.work / "gobi-config")}
        port = free_port()
        log = open(self.work / "gobi-server.log", "ab")
        self.procs.append(subprocess.Popen(
            [PY, "-m", "gobi", "server", "--data-dir", str(self.work / "gobi-data"),
             "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log, env=self.env))
        wait_for(lambda: _port_open(port), 60, "gobi server")
        url = f"http://127.0.0.1:{port}"
        self._gobi("login", url, "-u", "bench", "--register", "--password-stdin", input="bench password 1\n")
        self._gobi("vault", "create", "bench")
        self._gobi("mount", "bench", str(self.path), "--cache-dir", str(self.work / "gobi-cache"),
                   "--cache-size", "20G")

    def _gobi(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "-m", "gobi", *args], env=self.env, input=input, text=True,
                              capture_output=True, check=True)

    def durable(self, subdir: str) -> float:
        t = time.perf_counter()
        self._sync(self.path)
        return time.perf_counter() - t

    def _sync(self, path: Path) -> None:
        # Exit 4: everything is on the server, but deletes are held for the vault owner
        # (the mass-delete guard, on as by default): gobi sync does not wait for that.
        r = subprocess.run([PY, "-m", "gobi", "sync", str(path), "--timeout", "3600"],
                           env=self.env, capture_output=True, text=True)
        if r.returncode not in (0, 4):
            raise RuntimeError(f"gobi sync failed ({r.returncode}): {r.stderr}")

    @property
    def second(self) -> Path:
        return self.work / "gobi-mnt2"

    def other_device(self, subdir: str, write) -> bool:
        """A second mount of the vault (its own cache dir: another device) writes the tree;
        this mount's deletes of it then count for the guard and are held."""
        if not is_mounted(self.second):
            self.second.mkdir(parents=True, exist_ok=True)
            self._gobi("mount", "bench", str(self.second), "--cache-dir", str(self.work / "gobi-cache2"),
                       "--cache-size", "20G")
        write(self.second / subdir)
        self._sync(self.second)
        want = tree_state(self.second / subdir)
        wait_for(lambda: (self.path / subdir).exists() and tree_state(self.path / subdir) == want,
                 DURABLE_CAP, "the other device's tree on this mount")
        return True

    def stop(self) -> None:
        for mnt in (self.second, self.path):
            if is_mounted(mnt):
                subprocess.run([PY, "-m", "gobi", "umount", str(mnt), "--timeout", "120"],
                               env=self.env, capture_output=True)
            unmount(mnt)
        super().stop()


def stop_procs(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process still running (newest first), then kill what ignores it."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
