"""``gobi doctor``: checks a host for what gobi needs and says what to fix.

Three scopes, one command:

``gobi doctor [client]``
    a machine that mounts vaults: FUSE in the kernel, access to ``/dev/fuse``,
    ``fusermount3``, pyfuse3/libfuse, ``user_allow_other`` when ``-o allow_other`` is
    wanted, the login, the server (reachable, answers as gobi, accepts the token), the
    clock against the server's ``Date`` header, disk space for the cache, the mountpoint.
``gobi doctor server``
    a machine that runs ``gobi server``: the configuration loads, the data dir and key
    file are usable by this user (and private), disk space, ``/health`` on the configured
    address.
``gobi doctor mount MOUNTPOINT``
    a running mount: answers, online, pending uploads, upload failures.

Every check ends as ok / warn / FAIL / skip with one line of detail, and every problem
comes with a fix. The exit status is 1 when something FAILed, else 0. ``--json`` prints
the results for scripts.

``--wait-ready SECONDS`` (server, mount) waits until the server answers ``/health`` with
200, or until the mount answers, and exits 0, or 1 after SECONDS: the systemd units run
it as ``ExecStartPost=`` so that they become active only when they really serve.

The checks only read: nothing here changes the host.
"""

from __future__ import annotations

import argparse
import email.utils
import errno
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
FUSE_DEVICE = (10, 229)                 # major, minor of /dev/fuse
SKEW_WARN = 5.0                         # seconds
SKEW_FAIL = 120.0
DEFAULT_CACHE_SIZE = "10G"              # as `gobi mount`
DATA_DIR_WARN = 1 << 30                 # free bytes under which the server host is warned
DATA_DIR_FAIL = 100 << 20


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


class Report:
    """The results of one run, in order."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, name: str, status: str, detail: str, fix: str = "") -> Check:
        c = Check(name, status, detail, fix)
        self.checks.append(c)
        return c

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def print(self, out=sys.stdout) -> None:
        width = max((len(c.name) for c in self.checks), default=0)
        for c in self.checks:
            print(f"  {c.status:<4}  {c.name:<{width}}  {c.detail}", file=out)
            if c.fix:
                for i, line in enumerate(c.fix.splitlines()):
                    label = "fix: " if i == 0 else "     "
                    print(f"  {'':<4}  {'':<{width}}  {label}{line}", file=out)
        problems = len(self.failed)
        warnings = sum(c.status == WARN for c in self.checks)
        if problems:
            more = f", {warnings} warning(s)" if warnings else ""
            print(f"{problems} problem(s) to fix{more}", file=out)
        elif warnings:
            print(f"no problems, {warnings} warning(s)", file=out)
        else:
            print("all checks passed", file=out)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


# --------------------------------------------------------------------------- FUSE


def check_fuse_kernel(r: Report) -> None:
    try:
        lines = Path("/proc/filesystems").read_text().splitlines()
    except OSError:
        lines = []
    registered = any(line.split()[-1] == "fuse" for line in lines if line.strip())
    if registered:
        r.add("FUSE in the kernel", OK, "fuse is registered in /proc/filesystems")
    elif os.path.exists("/dev/fuse"):
        r.add("FUSE in the kernel", OK, "the fuse module loads on first use of /dev/fuse")
    else:
        r.add("FUSE in the kernel", FAIL, "no fuse in /proc/filesystems and no /dev/fuse",
              "modprobe fuse (and add 'fuse' to /etc/modules-load.d/fuse.conf); "
              "in a container the host must provide it")


def check_fuse_device(r: Report, path: str = "/dev/fuse") -> None:
    name = "/dev/fuse access"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        r.add(name, FAIL, f"{path} does not exist",
              "modprobe fuse; in a container: docker/podman run --device /dev/fuse "
              "(with --cap-add SYS_ADMIN to mount as root)")
        return
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != FUSE_DEVICE:
        r.add(name, FAIL, f"{path} is not the FUSE device (expected character device 10:229)",
              f"recreate it: rm {path} && mknod -m 0666 {path} c 10 229")
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        mode = f"mode {stat.S_IMODE(st.st_mode):04o} {_owner(st)}"
        if exc.errno == errno.EACCES and os.statvfs(path).f_flag & os.ST_NODEV:
            r.add(name, FAIL, f"cannot open {path}: the filesystem holding it is mounted nodev",
                  "give the container the device itself (docker run --device /dev/fuse) "
                  "instead of a bind mount of the node")
        elif exc.errno == errno.EACCES:
            r.add(name, FAIL, f"{_user()} cannot open {path}: permission denied ({mode})",
                  f"chmod 0666 {path}, and keep it with a udev rule "
                  "(/etc/udev/rules.d/99-fuse.rules: KERNEL==\"fuse\", MODE=\"0666\"), "
                  "or add this user to the group that owns it")
        elif exc.errno == errno.EPERM:
            r.add(name, FAIL,
                  f"cannot open {path}: operation not permitted (a device cgroup denies it)",
                  "in a container: run it with --device /dev/fuse; "
                  "in a systemd unit: DeviceAllow=/dev/fuse rw")
        else:
            r.add(name, FAIL, f"cannot open {path}: {exc.strerror}",
                  "check dmesg; modprobe fuse")
        return
    os.close(fd)
    r.add(name, OK, f"{path} opens read-write for {_user()}")


def check_fusermount(r: Report) -> None:
    name = "fusermount3"
    tool = shutil.which("fusermount3") or shutil.which("fusermount3", path="/usr/bin:/bin")
    if tool is None:
        r.add(name, FAIL if os.geteuid() != 0 else WARN, "fusermount3 is not installed",
              "apt install fuse3 (it mounts for non-root users and unmounts: gobi umount)")
        return
    st = os.stat(tool)
    if os.geteuid() != 0 and not (st.st_uid == 0 and st.st_mode & stat.S_ISUID):
        r.add(name, FAIL, f"{tool} is not setuid root: non-root users cannot mount",
              f"chown root {tool} && chmod u+s {tool} (or: apt install --reinstall fuse3)")
        return
    r.add(name, OK, tool + ("" if os.geteuid() == 0 else " (setuid root)"))


def check_libfuse(r: Report) -> None:
    try:
        import pyfuse3
    except ImportError as exc:
        r.add("libfuse3 / pyfuse3", FAIL, f"cannot load pyfuse3: {exc}",
              "apt install libfuse3-3, then reinstall gobi in its virtualenv "
              "(pyfuse3 builds with gcc pkg-config libfuse3-dev)")
        return
    r.add("libfuse3 / pyfuse3", OK, f"pyfuse3 {getattr(pyfuse3, '__version__', '?')}")


def check_allow_other(r: Report, fuse_options: list[str], conf: str = "/etc/fuse.conf") -> None:
    name = "allow_other"
    wanted = [o for o in fuse_options if o in ("allow_other", "allow_root")]
    if not wanted:
        r.add(name, SKIP, "not requested (only needed with -o allow_other / allow_root)")
        return
    if os.geteuid() == 0:
        r.add(name, OK, f"{wanted[0]} requested; root needs no fuse.conf entry")
        return
    try:
        lines = Path(conf).read_text().splitlines()
    except OSError as exc:
        r.add(name, FAIL, f"{wanted[0]} requested but {conf} cannot be read ({exc.strerror})",
              f"create {conf} (mode 0644) with the line: user_allow_other")
        return
    if any(line.split("#", 1)[0].strip() == "user_allow_other" for line in lines):
        r.add(name, OK, f"user_allow_other is set in {conf}")
    else:
        r.add(name, FAIL, f"{wanted[0]} requested but {conf} does not allow it for non-root users",
              f"add the line 'user_allow_other' to {conf} (as root)")


# --------------------------------------------------------------------------- login, server


def check_credentials(r: Report, server: str | None, credentials: str | None = None
                      ) -> tuple[str | None, str | None]:
    """The server URL and token to use (None when missing)."""
    from gobi.credentials import CredentialsError, credentials_path, load_credentials

    name = "credentials"
    path = credentials_path(credentials)
    try:
        st = path.stat()
        creds = load_credentials(credentials)
    except FileNotFoundError:
        r.add(name, FAIL, f"not logged in ({path} does not exist)",
              f"gobi login {server or 'https://SERVER'} --user NAME")
        return server, None
    except (OSError, CredentialsError) as exc:
        r.add(name, FAIL, f"cannot use {path}: {getattr(exc, 'strerror', None) or exc}",
              f"log in again: gobi login {server or 'SERVER'}")
        return server, None
    if "token" in creds:                          # a file holding only a token
        if server is None:
            r.add(name, FAIL, f"{path} holds only a token and no --server was given",
                  "gobi doctor --server URL --credentials FILE")
            return None, None
        entry = {"token": creds["token"], "username": "(token file)"}
    else:
        server = (server or creds.get("default") or "").rstrip("/") or None
        if server is None:
            r.add(name, FAIL, f"{path} names no server", "gobi login https://SERVER --user NAME")
            return None, None
        entry = creds.get("servers", {}).get(server)
        if not entry or not entry.get("token"):
            r.add(name, FAIL, f"no login for {server} in {path}", f"gobi login {server} --user NAME")
            return server, None
    if st.st_mode & 0o077:
        r.add(name, FAIL, f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
              "the token lets anyone act as you", f"chmod 600 {path}")
    elif st.st_uid != os.geteuid():
        r.add(name, WARN, f"{path} belongs to uid {st.st_uid}, not {_user()}",
              f"chown {_user()} {path}")
    else:
        r.add(name, OK, f"logged in to {server} as {entry.get('username', '?')} ({path}, 0600)")
    return server, entry["token"]


def _explain_connect_error(exc: Exception) -> tuple[str, str]:
    """(what happened, how to fix it) for an httpx connection failure."""
    import ssl

    causes = []
    e: BaseException | None = exc
    while e is not None and len(causes) < 10:
        causes.append(e)
        e = e.__cause__ or e.__context__
    for c in causes:
        if isinstance(c, ssl.SSLCertVerificationError):
            return (f"TLS certificate not trusted: {c.verify_message}",
                    "install the CA that signed the server's certificate in the system store "
                    "(update-ca-certificates) or point SSL_CERT_FILE at it; check the host name")
        if isinstance(c, ssl.SSLError):
            return (f"TLS handshake failed: {c}",
                    "does the server speak TLS on that port? (http:// vs https://, proxy config)")
        if isinstance(c, socket.gaierror):
            return (f"host name does not resolve ({c.strerror})",
                    "check the URL and DNS (/etc/resolv.conf)")
        if isinstance(c, ConnectionRefusedError):
            return ("connection refused: nothing listens there",
                    "start the server (systemctl start gobi-server; journalctl -u gobi-server) "
                    "or check the URL's port")
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return ("connection refused: nothing listens there",
                "start the server (systemctl start gobi-server) or check the URL's port")
    return (text, "check the URL, the network path and any firewall")


def probe_health(base: str, timeout: float):
    """GET base/health. Returns (response or None, error text, fix, local t0, t1)."""
    import httpx

    t0 = time.time()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as c:
            resp = c.get(base.rstrip("/") + "/health")
    except httpx.TimeoutException:
        return (None, f"no answer within {timeout:g} s",
                "check firewalls and that the server is not overloaded", t0, time.time())
    except httpx.HTTPError as exc:
        what, fix = _explain_connect_error(exc)
        return None, what, fix, t0, time.time()
    return resp, "", "", t0, time.time()


def _health_verdict(base: str, resp) -> tuple[str, str, str]:
    """(status, detail, fix) for the answer of ``base``/health."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "status" not in body:
        return (FAIL, f"{base}/health answered {resp.status_code} but not as a gobi server",
                "check the URL (a reverse proxy must pass /health and /api/ to gobi)")
    if resp.status_code == 200:
        return OK, f"{base} is a gobi server ({body.get('version', '?')})", ""
    if body["status"] == "draining":
        return (FAIL, "the server is shutting down (draining)",
                "wait for the restart, or start it again")
    return (FAIL, f"the server answers {resp.status_code}: {body['status']}",
            "the server cannot reach its metadata store: journalctl -u gobi-server")


def check_server(r: Report, server: str, timeout: float):
    resp, err, fix, t0, t1 = probe_health(server, timeout)
    if resp is None:
        r.add("server reachable", FAIL, f"{server}: {err}", fix)
        return None
    status, detail, fix = _health_verdict(server.rstrip("/"), resp)
    r.add("server reachable", status, detail, fix)
    check_clock(r, resp, t0, t1)
    return resp if status == OK else None


def check_clock(r: Report, resp, t0: float, t1: float) -> None:
    name = "clock skew"
    date = resp.headers.get("date")
    try:
        server_time = email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        server_time = None
    if server_time is None:
        r.add(name, SKIP, "the server sent no usable Date header")
        return
    # Date has one-second resolution (truncated): the server's clock was in
    # [D, D+1) somewhere between t0 and t1.
    skew = (t0 + t1) / 2 - (server_time + 0.5)
    slack = (t1 - t0) / 2 + 0.5
    off = max(0.0, abs(skew) - slack)
    side = "ahead of" if skew > 0 else "behind"
    detail = f"this clock is {abs(skew):.1f} s {side} the server's (±{slack:.1f} s)"
    fix = ("keep both clocks synced with NTP: timedatectl set-ntp true "
           "(systemd-timesyncd) or install chrony; file times and conflict-copy names use them")
    if off > SKEW_FAIL:
        r.add(name, FAIL, detail, fix)
    elif off > SKEW_WARN:
        r.add(name, WARN, detail, fix)
    else:
        r.add(name, OK, f"within {max(abs(skew), slack):.1f} s of the server's")


def check_login(r: Report, server: str, token: str, vault: str | None, timeout: float) -> None:
    import httpx

    name = "login accepted"
    try:
        with httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {token}"}) as c:
            resp = c.get(server.rstrip("/") + "/api/v1/vaults")
    except httpx.HTTPError as exc:
        r.add(name, FAIL, f"GET /api/v1/vaults failed: {_explain_connect_error(exc)[0]}")
        return
    if resp.status_code == 401:
        r.add(name, FAIL, "the server rejects the saved token (expired or revoked)",
              f"gobi login {server} --user NAME")
        return
    if resp.status_code != 200:
        r.add(name, FAIL, f"GET /api/v1/vaults answered {resp.status_code}",
              "check the server's log (journalctl -u gobi-server)")
        return
    vaults = resp.json().get("vaults", [])
    r.add(name, OK, f"{len(vaults)} vault(s) visible")
    if vault is not None:
        names = {v.get("id"): v.get("name") for v in vaults}
        if vault in names or vault in names.values():
            r.add("vault", OK, f"{vault} exists and you are a member")
        else:
            r.add("vault", FAIL, f"no vault {vault!r} for this login",
                  "gobi vault list (names and ids); gobi vault create NAME")


# --------------------------------------------------------------------------- cache, mountpoint


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _usage(path: Path) -> int:
    total = 0
    if not path.is_dir():
        return 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def check_cache(r: Report, cache_dir: Path, cap: int) -> None:
    name = "cache disk space"
    base = _existing_ancestor(cache_dir)
    if not os.access(base, os.W_OK | os.X_OK):
        where = "it" if base == cache_dir else f"its parent {base}"
        r.add("cache dir writable", FAIL,
              f"{_user()} cannot write {cache_dir} ({where} is not writable)",
              f"use a cache dir of your own (--cache-dir) or: chown {_user()} {base}")
    else:
        r.add("cache dir writable", OK, str(cache_dir))
    try:
        vfs = os.statvfs(base)
    except OSError as exc:
        r.add(name, FAIL, f"cannot stat {base}: {exc.strerror}")
        return
    free = vfs.f_bavail * vfs.f_frsize
    used = _usage(cache_dir)
    need = max(0, cap - used)
    detail = (f"{_human(free)} free at {base}; the cache may grow by {_human(need)} "
              f"(cap {_human(cap)}, {_human(used)} used)")
    if free < need:
        suggestion = _human(max(0, int((free + used) * 0.8))).replace(" ", "").replace("iB", "")
        r.add(name, FAIL, detail,
              f"free space there, choose a cache dir on a bigger filesystem (--cache-dir), "
              f"or lower the cap (--cache-size {suggestion})")
    elif vfs.f_files and vfs.f_favail < 10000:
        r.add(name, WARN, f"{detail}; only {vfs.f_favail} inodes left",
              "the cache stores one file per chunk: free inodes or pick another filesystem")
    else:
        r.add(name, OK, detail)


def check_mountpoint(r: Report, mountpoint: Path) -> None:
    name = "mountpoint"
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        r.add(name, FAIL, f"{mountpoint} does not exist", f"mkdir -p {mountpoint}")
        return
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            r.add(name, FAIL, f"{mountpoint} is a dead FUSE mount (its daemon is gone)",
                  f"fusermount3 -uz {mountpoint}, then mount again")
        else:
            r.add(name, FAIL, f"cannot stat {mountpoint}: {exc.strerror}")
        return
    if not stat.S_ISDIR(st.st_mode):
        r.add(name, FAIL, f"{mountpoint} is not a directory", "mount on a directory")
        return
    if os.path.ismount(mountpoint):
        from gobi.fs.cli import read_status

        try:
            s = read_status(mountpoint)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                r.add(name, FAIL, f"{mountpoint} is a dead FUSE mount (its daemon is gone)",
                      f"fusermount3 -uz {mountpoint}, then mount again")
            else:
                r.add(name, WARN, f"something else is already mounted at {mountpoint}",
                      f"findmnt {mountpoint}; unmount it or choose another directory")
            return
        r.add(name, OK, f"vault {s.get('vault')} is mounted there already (pid {s.get('pid')})")
        return
    if os.geteuid() != 0 and not os.access(mountpoint, os.W_OK):
        r.add(name, FAIL,
              f"{_user()} has no write access to {mountpoint} (fusermount3 requires it)",
              f"chown {_user()} {mountpoint}")
        return
    if any(os.scandir(mountpoint)):
        r.add(name, WARN,
              f"{mountpoint} is not empty: its files are hidden while the vault is mounted",
              "mount on an empty directory")
        return
    r.add(name, OK, f"{mountpoint} is an empty directory")


# --------------------------------------------------------------------------- scopes


def _fuse_options(values: list[str] | None) -> list[str]:
    return [o.strip() for v in values or [] for o in v.split(",") if o.strip()]


def doctor_client(args: argparse.Namespace) -> Report:
    from gobi.credentials import cache_root
    from gobi.fs.cli import default_cache_dir, parse_size

    r = Report()
    check_fuse_kernel(r)
    check_fuse_device(r)
    check_fusermount(r)
    check_libfuse(r)
    check_allow_other(r, _fuse_options(args.o))
    server, token = check_credentials(r, args.server.rstrip("/") if args.server else None,
                                      args.credentials)
    if server:
        if check_server(r, server, args.timeout) is not None and token:
            check_login(r, server, token, args.vault, args.timeout)
    else:
        r.add("server reachable", SKIP, "no server given and no login", "gobi doctor --server URL")
    mountpoint = Path(args.mountpoint).resolve() if args.mountpoint else None
    if args.cache_dir:
        cache_dir = Path(args.cache_dir).resolve()
    elif server and args.vault and mountpoint:
        cache_dir = default_cache_dir(server, args.vault, mountpoint)
    else:
        cache_dir = cache_root()
    check_cache(r, cache_dir, parse_size(args.cache_size))
    if mountpoint is not None:
        check_mountpoint(r, mountpoint)
    return r


def _server_url(cfg) -> str:
    host = cfg.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.port}"


def _load_server_config(args: argparse.Namespace):
    from gobi.server.config import ServerConfig

    return ServerConfig.load(args.config or os.environ.get("GOBI_CONFIG"), data_dir=args.data_dir)


def doctor_server(args: argparse.Namespace) -> Report:
    r = Report()
    try:
        cfg = _load_server_config(args)
    except Exception as exc:  # noqa: BLE001 - pydantic, TOML, file errors: "fix the file"
        first = str(exc).strip().splitlines()
        r.add("configuration", FAIL, f"cannot load the configuration: {' '.join(first[:3])}",
              "fix the file (docs/configuration.md lists every key)")
        return r
    r.add("configuration", OK, f"{args.config or os.environ.get('GOBI_CONFIG') or 'defaults'}: "
          f"data_dir {cfg.data_dir}, listens on {cfg.host}:{cfg.port}")

    data = cfg.data_dir.resolve()
    if data.exists():
        st = data.stat()
        if not os.access(data, os.W_OK | os.X_OK):
            r.add("data dir", FAIL, f"{_user()} cannot write {data} (owner {_owner(st)})",
                  f"chown -R {_user()} {data} (run the server as the user that owns its data)")
        elif st.st_mode & 0o007:
            r.add("data dir", WARN, f"{data} is open to others (mode {_mode(st)})",
                  f"chmod 0700 {data}")
        else:
            r.add("data dir", OK, f"{data} (owner {_owner(st)}, mode {_mode(st)})")
    else:
        parent = _existing_ancestor(data)
        if os.access(parent, os.W_OK | os.X_OK):
            r.add("data dir", OK, f"{data} will be created at first start")
        else:
            r.add("data dir", FAIL,
                  f"{data} does not exist and {_user()} cannot create it in {parent}",
                  f"install -d -o {_user()} -m 0700 {data} "
                  "(deploy/install.sh does it for /var/lib/gobi)")

    key = cfg.key_path
    try:
        kst = key.stat()
    except FileNotFoundError:
        r.add("key file", OK,
              f"{key} will be created (0600) at first start: back it up with the data")
    except PermissionError:
        r.add("key file", FAIL, f"{_user()} cannot reach {key}",
              f"chown {_user()} {key}; chmod 600 {key}")
    else:
        if kst.st_mode & 0o077:
            r.add("key file", FAIL, f"{key} is readable by others (mode {_mode(kst)}); "
                  "the server refuses to start", f"chmod 600 {key}")
        elif kst.st_uid != os.geteuid():
            r.add("key file", FAIL, f"{key} belongs to {_owner(kst)}, not {_user()}",
                  f"chown {_user()} {key}")
        else:
            r.add("key file", OK, f"{key} (0600, {_owner(kst)})")

    base = _existing_ancestor(data)
    vfs = os.statvfs(base)
    free = vfs.f_bavail * vfs.f_frsize
    detail = f"{_human(free)} free at {base}"
    local_blobs = cfg.storage_url.startswith(("local:", "nfs:")) or "local://" in cfg.storage_url
    if free < DATA_DIR_FAIL:
        r.add("disk space", FAIL, detail, "free space: metadata writes fail when the disk is full")
    elif free < DATA_DIR_WARN or (vfs.f_blocks and vfs.f_bavail / vfs.f_blocks < 0.05):
        r.add("disk space", WARN, detail + (" (blobs are stored here too)" if local_blobs else ""),
              "free space or move data_dir/storage to a bigger filesystem")
    else:
        r.add("disk space", OK, detail)

    url = _server_url(cfg)
    resp, err, fix, _t0, _t1 = probe_health(url, args.timeout)
    if resp is None:
        if "refused" in err:
            fix = "systemctl status gobi-server; journalctl -u gobi-server"
        r.add("serving", FAIL, f"{url}: {err}", fix)
    else:
        status, detail, fix = _health_verdict(url, resp)
        if status != OK and "not as a gobi server" in detail:
            detail = f"another program answers on {cfg.host}:{cfg.port}"
            fix = "choose another port (port = … in the configuration) or stop that program"
        r.add("serving", status, detail, fix)
    return r


def doctor_mount(args: argparse.Namespace) -> Report:
    from gobi.fs.cli import read_status

    r = Report()
    mp = Path(args.mountpoint).resolve()
    try:
        st = read_status(mp)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            r.add("mount", FAIL, f"{mp} is a dead FUSE mount (its daemon is gone)",
                  f"fusermount3 -uz {mp}, then mount again")
        else:
            r.add("mount", FAIL, f"{mp} is not a running gobi mount ({exc.strerror})",
                  f"gobi mount VAULT {mp}")
        return r
    r.add("mount", OK, f"vault {st['vault']} from {st['server']} (pid {st['pid']})")
    if st.get("online"):
        r.add("online", OK, f"connected; last synced seq {st.get('last_seq')}")
    else:
        r.add("online", WARN,
              f"offline: {st.get('last_error') or 'server unreachable'}; changes queue locally",
              f"gobi doctor --server {st['server']} (checks the way to the server)")
    pending = st.get("pending_ops", 0)
    r.add("uploads", OK if pending == 0 else WARN,
          f"{pending} change(s) pending ({_human(st.get('queued_bytes', 0))})",
          "" if pending == 0 else f"gobi sync {mp} uploads now and waits")
    for failure in st.get("failures", []):
        r.add("upload failure", WARN, str(failure),
              f"see {st.get('cache_dir', 'the cache dir')}/mount.log")
    return r


def _main_process_gone() -> bool:
    """Whether the unit's main process has exited (systemd passes $MAINPID to
    ExecStartPost=): then waiting for readiness is pointless."""
    try:
        os.kill(int(os.environ["MAINPID"]), 0)
    except (KeyError, ValueError, PermissionError):
        return False
    except ProcessLookupError:
        return True
    return False


def wait_ready(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.wait_ready
    last = ""
    while True:
        if args.scope == "server":
            try:
                cfg = _load_server_config(args)
            except Exception as exc:  # noqa: BLE001
                print(f"gobi doctor: cannot load the configuration: {exc}", file=sys.stderr)
                return 1
            url = _server_url(cfg)
            resp, err, _fix, _t0, _t1 = probe_health(url, min(5.0, args.timeout))
            if resp is not None and resp.status_code == 200:
                print(f"gobi server ready at {url}")
                return 0
            last = err or f"/health answered {resp.status_code}"
            what = f"server at {url}"
        else:
            from gobi.fs.cli import read_status

            mp = Path(args.mountpoint).resolve()
            try:
                st = read_status(mp)
            except OSError as exc:
                last = exc.strerror or str(exc)
            else:
                print(f"vault {st['vault']} ready at {mp}")
                return 0
            what = f"mount at {mp}"
        if _main_process_gone():
            print(f"gobi doctor: {what} not ready: the main process (pid {os.environ['MAINPID']}) "
                  f"exited; see its log above", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            print(f"gobi doctor: {what} not ready after {args.wait_ready:g} s: {last}",
                  file=sys.stderr)
            return 1
        time.sleep(0.2)


SCOPES = ("client", "server", "mount")


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.scope not in SCOPES:
        # `gobi doctor /srv/docs`: the client scope with a mountpoint.
        if args.mountpoint is not None:
            print(f"gobi doctor: unknown scope {args.scope!r} (choose from {', '.join(SCOPES)})",
                  file=sys.stderr)
            return 2
        args.scope, args.mountpoint = "client", args.scope
    if args.scope == "mount" and not args.mountpoint:
        print("gobi doctor mount: give the MOUNTPOINT", file=sys.stderr)
        return 2
    if args.wait_ready is not None:
        if args.scope == "client":
            print("gobi doctor: --wait-ready applies to 'server' and 'mount'", file=sys.stderr)
            return 2
        return wait_ready(args)
    scopes = {"client": doctor_client, "server": doctor_server, "mount": doctor_mount}
    report = scopes[args.scope](args)
    if args.json:
        print(json.dumps({"scope": args.scope, "ok": not report.failed,
                          "checks": [asdict(c) for c in report.checks]}, indent=2))
    else:
        print(f"gobi doctor ({args.scope}) on {socket.gethostname()} as {_user()}:")
        report.print()
    return 1 if report.failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from gobi.credentials import add_server_options

    p = sub.add_parser(
        "doctor", help="check this host for what gobi needs and say what to fix",
        description="Check this host (client: FUSE, login, server, clock, cache space; "
                    "server: configuration, data dir, key file, disk, /health; "
                    "mount: a running mount). "
                    "Exit status 1 when a check FAILed.")
    p.add_argument("scope", nargs="?", default="client", metavar="{client,server,mount}",
                   help="what to check (default: client; `gobi doctor DIR` checks a client "
                        "that will mount at DIR)")
    p.add_argument("mountpoint", nargs="?",
                   help="client: where you will mount; mount: the running mount")
    add_server_options(p, "client: server URL (default: the one you logged in to last)")
    p.add_argument("--vault", help="client: check that this vault exists for your login")
    p.add_argument("--cache-dir",
                   help="client: the cache dir you will use (default: ~/.cache/gobi)")
    p.add_argument("--cache-size", default=DEFAULT_CACHE_SIZE,
                   help=f"client: the cache cap you will use (default {DEFAULT_CACHE_SIZE})")
    p.add_argument("-o", action="append", metavar="OPTS",
                   help="client: the FUSE options you will use")
    p.add_argument("--config", metavar="FILE", help="server: TOML configuration (env: GOBI_CONFIG)")
    p.add_argument("--data-dir", metavar="DIR", help="server: data dir (env: GOBI_DATA_DIR)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds per network request (default 5)")
    p.add_argument("--wait-ready", type=float, metavar="SECONDS",
                   help="server, mount: wait until it serves (exit 0) or SECONDS pass (exit 1)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_doctor)
