"""A throwaway copy of this host for deployment tests, optionally booted with systemd.

The CI and development machines are containers whose PID 1 is not systemd, and the tests
must not leave users, units or files behind on a shared machine. A ``HostSandbox`` is a
set of private namespaces (mount, PID, and cgroup with systemd) in which the host's own
``/etc /usr /var /opt /root /home /srv /mnt`` are overlays: everything an operator's
install does (users from sysusers.d, units in /etc/systemd/system, /sbin/mount.fuse.gobi,
/etc/fstab lines) lands in a temp dir and vanishes with the sandbox. ``/dev`` is a
private tmpfs holding the usual nodes bound from the host (so a test can swap
``/dev/fuse`` for a broken one), ``/run`` a private tmpfs, ``/proc/sys`` read-only, and
the host's FUSE mounts (other people's) are detached from the sandbox's view. The
network namespace is shared: servers on the host's 127.0.0.1 are reachable. ``/tmp`` is
shared too, so tests hand files in and read logs out there.

With ``systemd=True`` PID 1 of the sandbox is the real systemd (the host's own
``/lib/systemd/systemd``), booted into a minimal unit set (the host's targets and
journald, no host services, only the fstab generator), in cgroup subtrees of its own, so
units really start with their sandboxing, users and readiness checks, and
``systemctl``/``journalctl`` work as on a host. Without it PID 1 is a small reaper.

gobi itself is "installed" the way docs/deployment.md says, into ``/opt/gobi``, by
linking that to this checkout's virtualenv; ``deploy/install.sh`` does the rest.

``stop()`` kills PID 1, which takes every process of the sandbox (mount daemons
included) with it; the FUSE mounts and overlays disappear with the mount namespace.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix) if (Path(sys.prefix) / "bin" / "gobi").exists() else REPO / ".venv"
OVERLAID = ("etc", "usr", "var", "opt", "root", "home", "srv", "mnt")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty", "fuse")
CGROUP_HIERARCHIES = ("systemd", "unified", "devices")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SETUP = r"""
set -eu
mount --make-rprivate /
# FUSE mounts of the host (other people's) are not part of a fresh host: detach this
# namespace's copies (private propagation: the host keeps its own).
awk '$0 ~ / - fuse/ {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$(printf '%b' "$m")" 2>/dev/null || true
done
for d in $OVERLAID; do
  mkdir -p "$T/upper/$d" "$T/work/$d"
  mount -t overlay "sandbox-$d" -o "lowerdir=/$d,upperdir=$T/upper/$d,workdir=$T/work/$d" "/$d"
done
# A fresh host has no gobi login or cache of its own: hide whatever this machine's users
# have (e.g. root after `bash scripts/run.sh`); removing in the overlay leaves the host's.
rm -rf /root/.config/gobi /root/.cache/gobi /home/*/.config/gobi /home/*/.cache/gobi
mount -t tmpfs -o mode=755,nosuid,nodev sandbox-run /run
mkdir -p /run/lock
mkdir -p "$T/dev"
mount -t tmpfs -o mode=755,nosuid sandbox-dev "$T/dev"
for n in $DEV_NODES; do
  [ -e "/dev/$n" ] || continue
  touch "$T/dev/$n"; mount --bind "/dev/$n" "$T/dev/$n"
done
mkdir "$T/dev/pts" "$T/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 sandbox-devpts "$T/dev/pts"
ln -s pts/ptmx "$T/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev sandbox-shm "$T/dev/shm"
ln -s /proc/self/fd "$T/dev/fd"
ln -s /proc/self/fd/0 "$T/dev/stdin"; ln -s /proc/self/fd/1 "$T/dev/stdout"; ln -s /proc/self/fd/2 "$T/dev/stderr"
mount --move "$T/dev" /dev
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
# gobi "installed" in /opt/gobi (docs/deployment.md, step 1)
rm -rf /opt/gobi && ln -s "$VENV" /opt/gobi
if [ "$SYSTEMD" = 1 ]; then
  mount --bind /sys /sys && mount -o remount,bind,ro /sys
  mount -t tmpfs -o mode=755,nosuid,nodev,noexec sandbox-cgroup /sys/fs/cgroup
  mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup/devices
  mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
  mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
  mount -t cgroup -o devices cgroup /sys/fs/cgroup/devices
  mount --bind "$T/units" /usr/lib/systemd/system
  mount --bind "$T/generators" /usr/lib/systemd/system-generators
  mkdir -p "$T/etc-systemd-system"
  mount --bind "$T/etc-systemd-system" /etc/systemd/system
  export container=gobi-sandbox
  touch "$T/ready"
  exec /lib/systemd/systemd --system --unit=sandbox.target
fi
touch "$T/ready"
exec /usr/bin/python3 -c "$REAPER"
"""

# PID 1 without systemd: reap orphans (daemonised mounts), so that `gobi umount`, which
# waits for the daemon's pid to disappear, is not kept waiting by a zombie.
REAPER = r"""
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    signal.sigtimedwait({signal.SIGCHLD}, 1)
"""

SANDBOX_TARGET = """[Unit]
Description=gobi test sandbox
Wants=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service
"""


class SandboxError(AssertionError):
    pass


def usable(systemd: bool = False) -> str | None:
    """Why sandboxes (with ``systemd``: booted ones) cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (mount, PID and cgroup namespaces)"
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse (the tests mount vaults)"
    for tool in ("unshare", "nsenter", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is missing"
    if systemd:
        if not os.access("/lib/systemd/systemd", os.X_OK):
            return "systemd is not installed (scripts/bootstrap.sh --test installs it)"
        # The cgroup layout of these machines (v1 name=systemd and devices, v2 unified),
        # which the sandbox nests its systemd into.
        for name in CGROUP_HIERARCHIES:
            if not os.path.isdir(f"/sys/fs/cgroup/{name}"):
                return f"no /sys/fs/cgroup/{name} (hybrid cgroup layout) to nest systemd in"
    return None


class HostSandbox:
    def __init__(self, root: Path, *, systemd: bool = False):
        self.root = Path(root)
        self.systemd = systemd
        self.name = f"gobi-sandbox-{uuid.uuid4().hex[:10]}"
        self.proc: subprocess.Popen | None = None
        self.pid1: int | None = None
        self.cgroups: list[Path] = []

    # -------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 60) -> "HostSandbox":
        self.root.mkdir(parents=True, exist_ok=True)
        if self.systemd:
            self._prepare_systemd()
        env = {"PATH": PATH, "T": str(self.root), "OVERLAID": " ".join(OVERLAID),
               "DEV_NODES": " ".join(DEV_NODES), "VENV": str(VENV), "REAPER": REAPER,
               "SYSTEMD": "1" if self.systemd else "0", "LANG": "C.UTF-8"}
        cmd = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private"]
        if self.systemd:
            cmd.append("--cgroup")
        cmd += ["/bin/sh", "-c", SETUP]
        log = open(self.root / "pid1.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     preexec_fn=self._enter_cgroups if self.systemd else None)
        log.close()
        deadline = time.monotonic() + timeout
        while not (self.root / "ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = (self.root / "pid1.log").read_text(errors="replace")
                self.stop()
                raise SandboxError(f"sandbox did not start:\n{out}")
            time.sleep(0.02)
        self.pid1 = self._child_of(self.proc.pid, deadline)
        if self.systemd:
            self._wait_for_systemd(deadline)
        return self

    def stop(self) -> None:
        if self.pid1 is not None:
            try:
                os.kill(self.pid1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            if self.pid1 is None and self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pid1 = None
        for cg in self.cgroups:
            self._remove_cgroup(cg)
        self.cgroups = []

    def __enter__(self) -> "HostSandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- running things inside

    def run(self, command: str, *, user: str | None = None, input: str | None = None,
            env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """``sh -c command`` inside the sandbox, as root or as ``user`` (with their HOME)."""
        assert self.pid1 is not None, "sandbox not started"
        inner = command
        if user is not None:
            q = shlex.quote(user)
            inner = (f"exec setpriv --reuid={q} --regid=$(id -g {q}) --init-groups "
                     f"env HOME=$(getent passwd {q} | cut -d: -f6) USER={q} LOGNAME={q} "
                     f"sh -c {shlex.quote(command)}")
        cmd = ["nsenter", f"--target={self.pid1}", "--mount", "--pid"]
        if self.systemd:
            cmd.append("--cgroup")
        cmd += ["--", "/bin/sh", "-c", inner]
        full_env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "USER": "root",
                    "LOGNAME": "root", **(env or {})}
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, env=full_env,
                           timeout=timeout, cwd="/")
        if check and r.returncode != 0:
            raise SandboxError(f"in sandbox: {command!r} exited {r.returncode}\n"
                               f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
        return r

    def install_gobi(self, *args: str) -> subprocess.CompletedProcess:
        """The operator's step 2: deploy/install.sh, run from this checkout."""
        return self.run(" ".join([shlex.quote(str(REPO / "deploy" / "install.sh")), *args]))

    def read(self, path: str) -> str:
        return self.run(f"cat {shlex.quote(path)}").stdout

    def host_pid(self, pid_in_sandbox: int) -> int:
        """The host's pid of a process of the sandbox (for /proc inspection from outside)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    if len(ids) >= 2 and int(ids[-1]) == pid_in_sandbox and self._in_sandbox(entry):
                        return int(entry.name)
        raise SandboxError(f"no process {pid_in_sandbox} in the sandbox")

    # -------------------------------------------------------------- internals

    def _in_sandbox(self, proc_dir: Path) -> bool:
        try:
            return os.readlink(proc_dir / "ns" / "pid") == os.readlink(f"/proc/{self.pid1}/ns/pid")
        except OSError:
            return False

    @staticmethod
    def _child_of(pid: int, deadline: float) -> int:
        path = Path(f"/proc/{pid}/task/{pid}/children")
        while time.monotonic() < deadline:
            kids = path.read_text().split() if path.exists() else []
            if kids:
                return int(kids[0])
            time.sleep(0.02)
        raise SandboxError("unshare started no child")

    def _prepare_systemd(self) -> None:
        units = self.root / "units"
        units.mkdir()
        host_units = Path("/usr/lib/systemd/system")
        for f in host_units.iterdir():
            if f.name.endswith(".target") or f.name.startswith("systemd-journald"):
                if f.is_file() and not f.is_symlink():
                    shutil.copy2(f, units / f.name)
        (units / "sandbox.target").write_text(SANDBOX_TARGET)
        gens = self.root / "generators"
        gens.mkdir()
        # Only the fstab generator: /etc/fstab lines become .mount units as at boot.
        shutil.copy2("/usr/lib/systemd/system-generators/systemd-fstab-generator",
                     gens / "systemd-fstab-generator")
        for name in CGROUP_HIERARCHIES:
            base = Path("/sys/fs/cgroup") / name
            if not base.is_dir():
                raise SandboxError(f"no cgroup hierarchy {base} on this host")
            cg = base / self.name
            cg.mkdir()
            self.cgroups.append(cg)

    def _enter_cgroups(self) -> None:
        for cg in self.cgroups:
            (cg / "cgroup.procs").write_text(str(os.getpid()))

    def _wait_for_systemd(self, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            r = self.run("systemctl is-system-running --wait", check=False, timeout=30)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return
            last = f"{state} {r.stderr.strip()}"
            time.sleep(0.1)
        raise SandboxError(f"systemd in the sandbox did not come up: {last}")

    @staticmethod
    def _remove_cgroup(cg: Path) -> None:
        if not cg.exists():
            return
        deadline = time.monotonic() + 10
        while True:
            dirs = sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            try:
                for d in dirs + [cg]:
                    d.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
