"""Client-side commands of the ``gobi`` CLI: login, vault, mount, umount, status, sync.

Credentials live in ``$XDG_CONFIG_HOME/gobi/credentials.json`` (default
``~/.config/gobi``), mode 0600: one token per server, and the server used last is the
default for the other commands. A running mount answers ``gobi status``/``sync`` through
two extended attributes of its root directory (``user.gobi.status`` read-only JSON,
``user.gobi.flush`` write-only), so no socket or registry is needed: the mountpoint is
the address.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.I)
STATUS_XATTR = "user.gobi.status"
FLUSH_XATTR = "user.gobi.flush"


def parse_size(text: str) -> int:
    """'10G', '512MiB', '1.5g', '1000000' → bytes (K/M/G/T are powers of 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 10G, 512M)")
    scale = 1024 ** " kmgtp".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gobi"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gobi"


def _creds_path() -> Path:
    return config_dir() / "credentials.json"


def load_credentials() -> dict:
    try:
        return json.loads(_creds_path().read_text())
    except FileNotFoundError:
        return {"servers": {}}


def save_credentials(creds: dict) -> None:
    path = _creds_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    os.replace(tmp, path)


def _server_and_token(args: argparse.Namespace) -> tuple[str, str]:
    creds = load_credentials()
    server = (args.server or creds.get("default") or "").rstrip("/")
    if not server:
        raise SystemExit("gobi: no server given and not logged in (run 'gobi login SERVER')")
    # Several URLs of one deployment ("http://a:8080,http://b:8080", for failover): one
    # token serves them all; take the one of the first URL logged in to.
    urls = [u.strip().rstrip("/") for u in server.split(",") if u.strip()]
    for url in urls:
        entry = creds.get("servers", {}).get(url)
        if entry:
            return ",".join(urls), entry["token"]
    raise SystemExit(f"gobi: not logged in to {urls[0]} (run 'gobi login {urls[0]}')")


def _fail(msg: str, code: int = 1) -> int:
    print(f"gobi: {msg}", file=sys.stderr)
    return code


# --------------------------------------------------------------------------- login / vault


def cmd_login(args: argparse.Namespace) -> int:
    import trio

    from .remote import ApiError, Remote, RemoteError

    server = args.server.rstrip("/")
    if not re.match(r"^https?://", server):
        server = "http://" + server
    username = args.user or input("Username: ")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")

    async def go() -> str:
        remote = Remote(server)
        try:
            if args.register:
                try:
                    await remote.register(username, password)
                except ApiError as exc:
                    if exc.code != "username_taken":
                        raise
            return await remote.login(username, password)
        finally:
            await remote.aclose()

    try:
        token = trio.run(go)
    except RemoteError as exc:
        return _fail(f"login failed: {exc}")
    creds = load_credentials()
    creds.setdefault("servers", {})[server] = {"username": username, "token": token}
    creds["default"] = server
    save_credentials(creds)
    print(f"logged in to {server} as {username}")
    return 0


def cmd_vault(args: argparse.Namespace) -> int:
    import trio

    from .remote import Remote, RemoteError

    server, token = _server_and_token(args)

    async def go() -> int:
        remote = Remote(server, token)
        try:
            if args.vault_command == "create":
                existing = [v for v in await remote.vaults() if v.name == args.name]
                if existing and args.exist_ok:
                    print(existing[0].id)
                    return 0
                v = await remote.create_vault(args.name)
                print(v.id)
            else:
                for v in await remote.vaults():
                    print(f"{v.id}\t{v.name}\t{v.role}\t{v.owner}")
            return 0
        finally:
            await remote.aclose()

    try:
        return trio.run(go)
    except RemoteError as exc:
        return _fail(str(exc))


# --------------------------------------------------------------------------- mount


def default_cache_dir(server: str, vault: str, mountpoint: Path) -> Path:
    key = hashlib.sha256(f"{server}\0{vault}\0{mountpoint}".encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", vault)[:40]
    return cache_root() / f"{safe}-{key}"


def _fuse_options(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(o.strip() for o in v.split(",") if o.strip())
    return out


def cmd_mount(args: argparse.Namespace) -> int:
    server, token = _server_and_token(args)
    mountpoint = Path(args.mountpoint).resolve()
    if not mountpoint.is_dir():
        return _fail(f"{mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        return _fail(f"{mountpoint} is already a mount point")
    cache_dir = Path(args.cache_dir).resolve() if args.cache_dir else default_cache_dir(server, args.vault, mountpoint)
    if not args.foreground:
        return _daemonize(args, cache_dir)
    return _run_foreground(args, server, token, mountpoint, cache_dir)


def _run_foreground(args, server, token, mountpoint, cache_dir) -> int:
    import logging

    import trio

    from .mount import MountConfig, MountError, run

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    ready_fd = args.ready_fd

    def on_ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"ok\n")
            os.close(ready_fd)

    cfg = MountConfig(
        server=server, token=token, vault=args.vault, mountpoint=mountpoint, cache_dir=cache_dir,
        cache_size=args.cache_size, fuse_options=_fuse_options(args.o), settle=args.settle,
        drain_timeout=args.drain_timeout, on_ready=on_ready,
    )
    try:
        return trio.run(run, cfg)
    except MountError as exc:
        return _fail(str(exc))


def _daemonize(args: argparse.Namespace, cache_dir: Path) -> int:
    """Start the mount as a background process and wait until it is mounted (or failed)."""
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = cache_dir / "mount.log"
    r, w = os.pipe()
    argv = [sys.executable, "-m", "gobi", "mount", "--foreground", "--ready-fd", str(w),
            "--cache-dir", str(cache_dir), "--cache-size", str(args.cache_size),
            "--settle", str(args.settle), "--drain-timeout", str(args.drain_timeout)]
    if args.server:
        argv += ["--server", args.server]
    for o in args.o or []:
        argv += ["-o", o]
    if args.verbose:
        argv.append("--verbose")
    argv += [args.vault, args.mountpoint]
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                pass_fds=(w,), start_new_session=True)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        answer = pipe.read(3)
    if answer == b"ok\n":
        print(f"mounted {args.vault} at {Path(args.mountpoint).resolve()} (pid {proc.pid}, log {log_path})")
        return 0
    proc.wait()
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    return _fail("mount failed:\n  " + "\n  ".join(tail))


# --------------------------------------------------------------------------- status / sync / umount


def read_status(mountpoint: str | Path) -> dict:
    return json.loads(os.getxattr(str(mountpoint), STATUS_XATTR))


def gobi_mounts() -> list[str]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "fuse.gobi":
                out.append(parts[1].replace("\\040", " "))
    return out


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print_status(st: dict) -> None:
    state = "online" if st["online"] else f"OFFLINE ({st['last_error'] or 'unreachable'})"
    print(f"{st['mountpoint']}: vault {st['vault']} on {st['server']} — {state}")
    ops = ", ".join(f"{k} {v}" for k, v in sorted(st["pending_by_op"].items())) or "none"
    print(f"  pending uploads: {st['pending_ops']} ({ops}); bytes queued: {_human(st['queued_bytes'])}")
    if st["uploading"]:
        print(f"  uploading now: {st['uploading']}")
    print(f"  cache: {_human(st['cache_used'])} of {_human(st['cache_cap'])} "
          f"({_human(st['cache_staged'])} not evictable)")
    print(f"  last synced seq: {st['last_seq']}; nodes: {st['nodes']}")
    if "live" in st:
        servers = st.get("servers") or []
        via = f"{st.get('live_url')}" + (f" (of {len(servers)} servers)" if len(servers) > 1 else "")
        err = f" — {st['live_error']}" if st.get("live_error") and st["live"] != "live" else ""
        print(f"  live updates: {st['live']} via {via}{err}; initial sync "
              f"{st.get('initial_sync', '?')}; vault head seq {st.get('head_seq', '?')}")
    for c in st.get("open_conflicts", []):
        print(f"  conflict waiting for a decision: {c['path']} ({c['case']}) — see 'gobi conflicts'")
    for c in st.get("conflicts", [])[-3:]:
        print(f"  conflict: {c['path']}: {c['message']}")
    if st.get("held_deletes"):
        print(f"  {st['held_deletes']} delete(s) held by the server as a mass delete, waiting for "
              f"the vault owner: hold(s) {', '.join(st.get('holds', []))}")
    for f in st.get("failures", []):
        print(f"  ! {f}")


def cmd_status(args: argparse.Namespace) -> int:
    points = [args.mountpoint] if args.mountpoint else gobi_mounts()
    if not points:
        print("no gobi mounts")
        return 0
    code = 0
    for p in points:
        try:
            st = read_status(p)
        except OSError as exc:
            code = _fail(f"{p}: not a running gobi mount ({exc.strerror})")
            continue
        if args.json:
            print(json.dumps(st, indent=2))
        else:
            _print_status(st)
    return code


def wait_synced(mountpoint: str | Path, timeout: float, progress: bool = False) -> dict:
    """Ask the mount to upload now; wait until nothing is pending or ``timeout`` passed."""
    os.setxattr(str(mountpoint), FLUSH_XATTR, b"1")
    deadline = time.monotonic() + timeout
    last = None
    while True:
        st = read_status(mountpoint)
        if st["pending_ops"] == 0 and not st["uploading"]:
            return st
        if progress and st["pending_ops"] != last:
            print(f"  {st['pending_ops']} change(s) pending ({_human(st['queued_bytes'])})"
                  + ("" if st["online"] else " — server unreachable"), file=sys.stderr)
            last = st["pending_ops"]
        if time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        st = wait_synced(args.mountpoint, args.timeout, progress=True)
    except OSError as exc:
        return _fail(f"{args.mountpoint}: not a running gobi mount ({exc.strerror})")
    if st["pending_ops"]:
        return _fail(f"{st['pending_ops']} change(s) still pending after {args.timeout:.0f}s "
                     f"({'online' if st['online'] else 'server unreachable'})")
    print("all changes are on the server")
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    mp = str(Path(args.mountpoint).resolve())
    pending = 0
    pid = None
    try:
        st = wait_synced(mp, 0 if args.no_wait else args.timeout, progress=not args.no_wait)
        pending, pid = st["pending_ops"], st["pid"]
        if pending:
            # We waited already; the daemon should not keep the user waiting again.
            os.setxattr(mp, FLUSH_XATTR, b"nodrain")
    except OSError:
        pass        # not answering: unmount anyway (nothing is lost: the journal is on disk)
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u", mp] if tool else ["umount", mp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return _fail(f"unmount failed: {r.stderr.strip() or r.stdout.strip()}")
    if pid:
        # Wait for the daemon to finish its bounded drain and exit.
        deadline = time.monotonic() + args.timeout + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
    if pending:
        print(f"unmounted {mp}; {pending} change(s) were not uploaded yet: they are kept in the "
              f"local journal and upload at the next mount")
        return 3
    print(f"unmounted {mp}")
    return 0


# --------------------------------------------------------------------------- parser


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the client commands on the top-level parser."""
    p = sub.add_parser("login", help="log in to a server and remember the token (0600)")
    p.add_argument("server", help="server URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--user", "-u", help="username (asked when missing)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--register", action="store_true", help="create the account first if it does not exist")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("vault", help="list or create vaults")
    vsub = p.add_subparsers(dest="vault_command", required=True, metavar="ACTION")
    pl = vsub.add_parser("list", help="vaults you are a member of")
    pl.add_argument("--server")
    pl.set_defaults(func=cmd_vault)
    pc = vsub.add_parser("create", help="create a vault; prints its id")
    pc.add_argument("name")
    pc.add_argument("--server")
    pc.add_argument("--exist-ok", action="store_true", help="print the id of an existing vault of that name")
    pc.set_defaults(func=cmd_vault)

    p = sub.add_parser("mount", help="mount a vault as a folder")
    p.add_argument("vault", help="vault name or id")
    p.add_argument("mountpoint")
    p.add_argument("--server", help="server URL (default: the one you logged in to last); several "
                   "instances of one deployment as URL1,URL2 (the mount fails over between them)")
    p.add_argument("--foreground", "-f", action="store_true", help="stay attached (default: daemonise)")
    p.add_argument("--cache-dir", help="mirror, journal and block cache (default: ~/.cache/gobi/…)")
    p.add_argument("--cache-size", type=parse_size, default=parse_size("10G"),
                   help="hard cap of the local cache, e.g. 2G, 500M (default 10G)")
    p.add_argument("-o", action="append", metavar="OPTS",
                   help="FUSE mount options, e.g. -o allow_other,ro")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds a change waits before upload, so temporary files never leave (default 1)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="after unmount, seconds to keep uploading pending changes (default 30)")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("umount", help="upload pending changes (bounded) and unmount")
    p.add_argument("mountpoint")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for uploads (default 60)")
    p.add_argument("--no-wait", action="store_true", help="unmount at once; pending changes upload next mount")
    p.set_defaults(func=cmd_umount)

    p = sub.add_parser("status", help="pending uploads, cache use, connection state of mounts")
    p.add_argument("mountpoint", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("sync", help="upload pending changes now and wait until they are on the server")
    p.add_argument("mountpoint")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=cmd_sync)
