"""Client-side commands of the ``gobi`` CLI: login, vault, mount, umount, status, sync,
verify, pin, unpin.

Where the server and the token come from (``--server``, ``--credentials``, the file
``gobi login`` writes) is one rule for every command: ``gobi.credentials``.

A running mount answers the other commands through extended attributes of its root
directory (``user.gobi.status`` read-only JSON, ``user.gobi.flush``, ``user.gobi.sync``,
``user.gobi.pin`` … written; see ``gobi.fs.xattrs``), so no socket or registry is needed:
the mountpoint is the address. Long waits (``sync``, ``pin``, ``umount``) show progress
on stderr (``gobi.fs.terminal``): a bar on a terminal, plain lines otherwise.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gobi.credentials import (
    CredentialsError,
    add_server_options,
    cache_root,
    credentials_path,
    load_credentials,
    save_credentials,
    server_and_token,
)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.I)
STATUS_XATTR = "user.gobi.status"
FLUSH_XATTR = "user.gobi.flush"
SYNC_XATTR = "user.gobi.sync"
PIN_XATTR = "user.gobi.pin"
UNPIN_XATTR = "user.gobi.unpin"
VERIFY_XATTR = "user.gobi.verify"


def parse_size(text: str) -> int:
    """'10G', '512MiB', '1.5g', '1000000' → bytes (K/M/G/T are powers of 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 10G, 512M)")
    scale = 1024 ** " kmgtp".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)


def _server_and_token(args: argparse.Namespace) -> tuple[str, str]:
    try:
        return server_and_token(args.server, args.credentials)
    except CredentialsError as exc:
        raise SystemExit(f"gobi: {exc}") from None


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
    try:
        creds = load_credentials(args.credentials) if credentials_path(args.credentials).exists() else {}
    except CredentialsError as exc:
        return _fail(str(exc))
    if "token" in creds:
        return _fail(f"{credentials_path(args.credentials)} holds a bare token; give another --credentials file")
    creds.setdefault("servers", {})[server] = {"username": username, "token": token}
    creds["default"] = server
    save_credentials(creds, args.credentials)
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


#: FUSE options gobi sets itself or that break pyfuse3 sessions.
_REFUSED_OPTIONS = {"subtype": "the type is always fuse.gobi",
                    "max_read": "it breaks pyfuse3 mounts", "max_write": "it breaks pyfuse3 mounts"}


def _fuse_options(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(o.strip() for o in v.split(",") if o.strip())
    return out


def _check_fuse_options(options: list[str]) -> str | None:
    for o in options:
        key = o.partition("=")[0]
        if key in _REFUSED_OPTIONS:
            return f"-o {key} is not supported: {_REFUSED_OPTIONS[key]}"
        if key == "fsname" and not o.partition("=")[2]:
            return "-o fsname= needs a value (the source mount(8) shows, e.g. fsname=docs)"
    return None


def cmd_mount(args: argparse.Namespace) -> int:
    problem = _check_fuse_options(_fuse_options(args.o))
    if problem:
        return _fail(problem, 2)
    if args.metrics:
        from .metrics import parse_listen
        try:
            parse_listen(args.metrics)
        except ValueError as exc:
            return _fail(f"--metrics: {exc}", 2)
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
    import trio

    from . import logs, sdnotify
    from .mount import MountConfig, MountError, run
    from .operations import FuseInitError

    logs.setup(args.log_format, args.verbose)
    ready_fd = args.ready_fd
    if ready_fd is not None:
        os.set_inheritable(ready_fd, False)     # not for fusermount3 and other children

    def on_ready() -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            os.write(ready_fd, b"ok\n")
            os.close(ready_fd)
            ready_fd = None
        # systemd (Type=notify): the unit is active from now on.
        sdnotify.notify("READY=1", f"STATUS=mounted {args.vault} at {mountpoint}")

    cfg = MountConfig(
        server=server, token=token, vault=args.vault, mountpoint=mountpoint, cache_dir=cache_dir,
        cache_size=args.cache_size, fuse_options=_fuse_options(args.o), settle=args.settle,
        quiet=args.quiet, drain_timeout=args.drain_timeout, on_ready=on_ready, metrics=args.metrics,
        metrics_textfile=Path(args.metrics_textfile).resolve() if args.metrics_textfile else None,
    )
    if args.self_check is not None:
        cfg.self_check = args.self_check
    try:
        return trio.run(run, cfg)
    except FuseInitError as exc:
        message = f"cannot mount at {mountpoint}: {exc}"
    except MountError as exc:
        message = str(exc)
    if ready_fd is not None:
        # The parent (`gobi mount` without --foreground) shows this instead of a log tail.
        os.write(ready_fd, message.encode(errors="replace")[:60000])
        os.close(ready_fd)
    return _fail(message)


def _daemonize(args: argparse.Namespace, cache_dir: Path) -> int:
    """Start the mount as a background process and wait until it is mounted (or failed)."""
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = cache_dir / "mount.log"
    r, w = os.pipe()
    argv = [sys.executable, "-m", "gobi", "mount", "--foreground", "--ready-fd", str(w),
            "--cache-dir", str(cache_dir), "--cache-size", str(args.cache_size),
            "--settle", str(args.settle), "--quiet", str(args.quiet),
            "--drain-timeout", str(args.drain_timeout),
            "--log-format", args.log_format]
    if args.self_check is not None:
        argv += ["--self-check", str(args.self_check)]
    if args.server:
        argv += ["--server", args.server]
    if args.credentials:
        argv += ["--credentials", str(Path(args.credentials).resolve())]
    if args.metrics:
        argv += ["--metrics", args.metrics]
    if args.metrics_textfile:
        argv += ["--metrics-textfile", str(Path(args.metrics_textfile).resolve())]
    for o in args.o or []:
        argv += ["-o", o]
    if args.verbose:
        argv.append("--verbose")
    argv += [args.vault, args.mountpoint]
    # The daemon is not the service's main process: systemd must not hear from it.
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                pass_fds=(w,), start_new_session=True, env=env)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        answer = pipe.read(3)
        if answer != b"ok\n":
            answer += pipe.read()           # an error message, up to the child's exit
    if answer == b"ok\n":
        print(f"mounted {args.vault} at {Path(args.mountpoint).resolve()} (pid {proc.pid}, log {log_path})")
        return 0
    proc.wait()
    if answer:
        return _fail(f"{answer.decode(errors='replace')} (log: {log_path})")
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


def mount_of(path: str | Path) -> tuple[str, str]:
    """(mountpoint, path relative to it) of the gobi mount containing ``path``."""
    real = os.path.realpath(path)
    best = None
    for mp in gobi_mounts():
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) > len(best)):
            best = mp
    if best is None:
        raise SystemExit(f"gobi: {path} is not inside a running gobi mount")
    rel = os.path.relpath(real, best)
    return best, "" if rel == "." else rel


def _human(n: int) -> str:
    from .terminal import human
    return human(n)


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
    _print_held(st)
    for f in st.get("failures", []):
        print(f"  ! {f}")
    for p in st.get("pins", []):
        if p.get("state") == "done":
            what = f"available offline ({p.get('files', 0)} files, {_human(p.get('bytes', 0))})"
        elif p.get("state") in ("fetching", "waiting", "error"):
            what = (f"{p['state']}: {p.get('files_done', 0)}/{p.get('files', 0)} files, "
                    f"{_human(p.get('bytes_done', 0))} of {_human(p.get('bytes', 0))}"
                    + (f" — {p['error']}" if p.get("error") else ""))
        else:
            what = "queued"
        print(f"  pinned {p.get('path')}: {what}")
    _print_queue(st.get("queue") or [], st.get("pending_ops", 0))


def _print_held(st: dict, out=None) -> None:
    """This mount's deletes the server holds as a mass delete, and holds settled lately."""
    out = out or sys.stdout
    if st.get("held_deletes"):
        print(f"  {st['held_deletes']} delete(s) of this mount held by the server as a mass delete: "
              f"gone here, kept on the other devices until the vault owner decides", file=out)
        for h in st.get("holds", []):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(h["expires"])) if h.get("expires") else "?"
            paths = ", ".join(h.get("paths", [])) + (" …" if h.get("deletes", 0) > len(h.get("paths", [])) else "")
            print(f"    hold {h['id']} ({h.get('files') or '?'} file(s): {paths}); expires {when}: "
                  f"'gobi confirm-delete {h['id']}' deletes them everywhere, "
                  f"'gobi confirm-delete --reject {h['id']}' brings them back here", file=out)
    for r in st.get("returned", []):
        print(f"  hold {r['hold']} {r['state']}: {r['nodes']} held delete(s) came back here "
              f"({', '.join(r['paths'])})", file=out)


def _print_queue(queue: list[dict], pending: int) -> None:
    """The upload queue, one line per entry, with per-file progress of uploads in flight."""
    if not queue:
        return
    print("  upload queue:")
    for q in queue:
        path = q.get("path") or "(removed)"
        if q["state"] == "uploading":
            if q.get("to_send"):
                pct = 100 * q["sent"] / q["to_send"]
                how = f"{_human(q['sent'])} of {_human(q['to_send'])} ({pct:.0f}%)"
            elif q.get("size"):
                how = f"{_human(q['size'])}, nothing new to send"
            else:
                how = ""
            print(f"    uploading  {q['op']:<8} {path}  {how}  {q.get('seconds', 0):.0f}s")
        else:
            size = f"  {_human(q['size'])}" if q.get("size") else ""
            print(f"    waiting    {q['op']:<8} {path}{size}")
    more = pending - sum(1 for q in queue if q["state"] == "waiting") - \
        sum(1 for q in queue if q["state"] == "uploading")
    if more > 0:
        print(f"    … and {more} more")


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
    """Upload now; by default wait until every change made before the command is on the
    server, then print the vault seq that holds them (stdout: the number alone)."""
    mp, _ = mount_of(args.mountpoint)
    try:
        os.setxattr(mp, FLUSH_XATTR, b"1")
    except OSError as exc:
        return _fail(f"{mp}: not a running gobi mount ({exc.strerror})")
    if args.no_wait:
        print(f"{mp}: uploading pending changes now", file=sys.stderr)
        return 0
    if args.all:
        return _sync_all(mp, args.timeout)
    token = secrets.token_hex(8)
    try:
        os.setxattr(mp, SYNC_XATTR, token.encode())
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EOPNOTSUPP):
            return _sync_all(mp, args.timeout)          # a daemon started by an older gobi
        return _fail(f"{mp}: cannot start a sync ({exc.strerror})")
    from .terminal import ProgressView

    view = ProgressView(f"sync {mp}", unit="changes")
    deadline = time.monotonic() + args.timeout
    b: dict = {}
    try:
        while True:
            b = json.loads(os.getxattr(mp, f"{SYNC_XATTR}.{token}"))
            detail = f"{_human(b['bytes_left'])} to upload" if b["bytes_left"] else ""
            if b["uploading"]:
                u = b["uploading"][0]
                pct = f" {100 * u['sent'] / u['to_send']:.0f}%" if u.get("to_send") else ""
                detail = (detail + "; " if detail else "") + f"{u['op']} {u.get('path') or ''}{pct}"
            if b["error"]:
                detail = b["error"]
            elif not (b["online"] if "online" in b else read_status(mp)["online"]):
                detail = "server unreachable: waiting for it"
            view.update(b["entries"] - b["entries_left"], b["entries"], detail)
            if b["done"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    except OSError as exc:
        view.close()
        return _fail(f"{mp}: the mount stopped answering ({exc.strerror})")
    if not b["done"]:
        view.close()
        try:
            online = read_status(mp)["online"]
        except OSError:
            online = True
        why = b["error"] or ("the server is unreachable" if not online else
                             "; ".join(f"{u['op']} {u.get('path') or ''}".strip()
                                       for u in b["uploading"][:3]) or "uploads still running")
        return _fail(f"waited {args.timeout:.0f}s for the {b['entries']} change(s) made before this "
                     f"command to reach the server: {b['entries_left']} still pending ({why}); "
                     f"they upload in the background")
    view.close(f"{mp}: every change made before this command is on the server "
               f"(vault seq {b['seq']})")
    print(b["seq"])
    return _held_exit(mp)


#: ``gobi sync``: everything reached the server, but deletes of this mount are held by the
#: server as a mass delete, waiting for the vault owner (documented in docs/client.md).
EXIT_HELD = 4


def _held_exit(mp: str) -> int:
    """After a sync: 0, or ``EXIT_HELD`` with what is held and how to decide it (stderr).
    ``gobi sync`` never waits for that decision: it is someone else's to make."""
    try:
        st = read_status(mp)
    except OSError:
        return 0
    if not st.get("held_deletes"):
        return 0
    _print_held(st, sys.stderr)
    return EXIT_HELD


def cmd_verify(args: argparse.Namespace) -> int:
    """Compare the mount's mirror with the server's tree (``gobi.fs.verify``); with
    ``--repair`` put the differences right. Exit 0: they agree (or every difference was
    repaired); 1: differences remain; 2: the check could not be made."""
    mp, _ = mount_of(args.mountpoint)
    token = secrets.token_hex(8)
    try:
        os.setxattr(mp, VERIFY_XATTR, json.dumps({"token": token, "repair": args.repair}).encode())
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EOPNOTSUPP):
            return _fail(f"{mp}: this mount's daemon is older than gobi verify; remount it", 2)
        return _fail(f"{mp}: cannot start a verify ({exc.strerror})", 2)
    deadline = time.monotonic() + args.timeout
    report: dict = {"state": "running"}
    try:
        while report["state"] == "running":
            if time.monotonic() > deadline:
                return _fail(f"{mp}: the check did not finish within {args.timeout:.0f}s", 2)
            time.sleep(0.1)
            report = json.loads(os.getxattr(mp, f"{VERIFY_XATTR}.{token}"))
    except OSError as exc:
        return _fail(f"{mp}: the mount stopped answering ({exc.strerror})", 2)
    if args.json:
        print(json.dumps(report, indent=2))
    if report["state"] != "done":
        return _fail(f"{mp}: verify failed: {report.get('error')}", 2)
    diffs = report["differences"]
    left = report["difference_count"] - report["repaired"]
    if not args.json:
        for d in diffs:
            mark = "repaired" if d["repaired"] else "DIFFERS "
            print(f"{mark} {d['what']:<10} {d['path']}: {d['detail']}")
        if report["difference_count"] > len(diffs):
            print(f"… and {report['difference_count'] - len(diffs)} more (see the mount log)")
        pending = f"; {report['pending']} with local changes not on the server yet (not compared)" \
            if report["pending"] else ""
        if not report["difference_count"]:
            print(f"{mp}: agrees with the server at vault seq {report['seq']} "
                  f"({report['compared']} nodes compared{pending})")
        elif not left:
            print(f"{mp}: {report['difference_count']} difference(s) at vault seq {report['seq']}, "
                  f"all repaired{pending}")
        else:
            hint = "" if args.repair else "; 'gobi verify --repair' puts them right"
            print(f"{mp}: {left} difference(s) with the server at vault seq {report['seq']}{hint}{pending}")
    return 1 if left else 0


def _sync_all(mp: str, timeout: float) -> int:
    """Wait until nothing at all is pending (also what changes while waiting)."""
    st = wait_synced(mp, timeout, progress=True)
    if st["pending_ops"]:
        return _fail(f"waited {timeout:.0f}s for every pending change to reach the server: "
                     f"{st['pending_ops']} still pending "
                     f"({'online' if st['online'] else 'server unreachable'})")
    print(f"{mp}: all changes are on the server", file=sys.stderr)
    print(st.get("last_seq", ""))
    return _held_exit(mp)


# --------------------------------------------------------------------------- pin / unpin


def _pin_figures(info: dict) -> str:
    return (f"{_human(info.get('bytes', 0))} in {info.get('files', 0)} file(s); the cache "
            f"(--cache-size {_human(info['cap'])}) already keeps {_human(info['pinned_bytes'])} "
            f"pinned and {_human(info['staged_bytes'])} not yet uploaded")


def cmd_pin(args: argparse.Namespace) -> int:
    from .terminal import ProgressView

    code = 0
    for path in args.paths:
        mp, rel = mount_of(path)
        try:
            os.setxattr(mp, PIN_XATTR, rel.encode())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                info = json.loads(os.getxattr(path, PIN_XATTR))
                code = _fail(f"cannot pin {path}: it does not fit in the cache: "
                             f"{_pin_figures(info)}. Raise --cache-size, or unpin something.")
            elif exc.errno in (errno.EPERM, errno.EOPNOTSUPP):
                code = _fail(f"cannot pin {path}: this mount's daemon does not support pins "
                             f"(remount it with this gobi)")
            else:
                code = _fail(f"cannot pin {path}: {exc.strerror}")
            continue
        if args.no_wait:
            print(f"pinned {path}; its content is being fetched", file=sys.stderr)
            continue
        view = ProgressView(f"pin {path}", unit="bytes")
        deadline = time.monotonic() + args.timeout
        while True:
            info = json.loads(os.getxattr(path, PIN_XATTR))
            state = info.get("state")
            if "bytes" in info and state != "queued":
                view.update(info.get("bytes_done", 0), info["bytes"],
                            f"{info.get('files_done', 0)}/{info.get('files', 0)} files")
            if state in ("done", "waiting", "error") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        view.close()
        if state == "done":
            print(f"{path} is available offline ({info['files']} file(s), {_human(info['bytes'])})",
                  file=sys.stderr)
        elif state == "waiting":
            left = info["bytes"] - info["bytes_done"]
            code = _fail(f"{path} is pinned but {_human(left)} could not be fetched yet: "
                         f"{info['error']}; it is fetched when the server is back")
        elif state == "error":
            code = _fail(f"{path} is pinned but not all of it is local: {info['error']}")
        else:
            code = _fail(f"{path} is pinned; waited {args.timeout:.0f}s for its content to be fetched "
                         f"({_human(info.get('bytes_done', 0))} of {_human(info.get('bytes', 0))}, "
                         f"{info.get('files_done', 0)}/{info.get('files', 0)} files); fetching goes on "
                         f"in the background")
    return code


def cmd_unpin(args: argparse.Namespace) -> int:
    code = 0
    for path in args.paths:
        mp, rel = mount_of(path)
        try:
            os.setxattr(mp, UNPIN_XATTR, rel.encode())
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                info = json.loads(os.getxattr(path, PIN_XATTR))
                if info.get("pinned"):
                    code = _fail(f"{path} is pinned through {info['root']}: unpin that")
                else:
                    code = _fail(f"{path} is not pinned")
            else:
                code = _fail(f"cannot unpin {path}: {exc.strerror}")
            continue
        print(f"unpinned {path}: its content may be evicted from the cache again", file=sys.stderr)
    return code


def cmd_umount(args: argparse.Namespace) -> int:
    mp = str(Path(args.mountpoint).resolve())
    pending = held = 0
    pid = None
    try:
        st = wait_synced(mp, 0 if args.no_wait else args.timeout, progress=not args.no_wait)
        pending, pid, held = st["pending_ops"], st["pid"], st.get("held_deletes", 0)
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
        print(f"unmounted {mp} after waiting {args.timeout:.0f}s for uploads; {pending} change(s) "
              f"were not uploaded yet: they are kept in the local journal and upload at the next mount")
        return 3
    print(f"unmounted {mp}")
    if held:
        print(f"  {held} delete(s) of this mount are held by the server for the vault owner; they "
              f"stay deleted here at the next mount ('gobi confirm-delete' decides them)")
    return 0


# --------------------------------------------------------------------------- parser


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the client commands on the top-level parser."""
    p = sub.add_parser("login", help="log in to a server and remember the token (0600)")
    p.add_argument("server", help="server URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--user", "-u", help="username (asked when missing)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--register", action="store_true", help="create the account first if it does not exist")
    p.add_argument("--credentials", metavar="FILE", help="store the token in FILE (0600) instead of "
                   "$GOBI_CREDENTIALS or ~/.config/gobi/credentials.json")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("vault", help="list or create vaults")
    vsub = p.add_subparsers(dest="vault_command", required=True, metavar="ACTION")
    pl = vsub.add_parser("list", help="vaults you are a member of")
    add_server_options(pl)
    pl.set_defaults(func=cmd_vault)
    pc = vsub.add_parser("create", help="create a vault; prints its id")
    pc.add_argument("name")
    add_server_options(pc)
    pc.add_argument("--exist-ok", action="store_true", help="print the id of an existing vault of that name")
    pc.set_defaults(func=cmd_vault)

    p = sub.add_parser("mount", help="mount a vault as a folder")
    p.add_argument("vault", help="vault name or id")
    p.add_argument("mountpoint")
    add_server_options(p, "server URL (default: the one you logged in to last); several instances "
                       "of one deployment as URL1,URL2 (the mount fails over between them)")
    p.add_argument("--foreground", "-f", action="store_true", help="stay attached (default: daemonise)")
    p.add_argument("--cache-dir", help="mirror, journal and block cache (default: ~/.cache/gobi/…)")
    p.add_argument("--cache-size", type=parse_size, default=parse_size("10G"),
                   help="hard cap of the local cache, e.g. 2G, 500M (default 10G)")
    p.add_argument("-o", action="append", metavar="OPTS",
                   help="FUSE mount options, e.g. -o allow_other,ro")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds a new file or folder waits before upload, so temporary files never "
                        "leave the machine; edits, renames and deletes go at once (default 1)")
    p.add_argument("--quiet", type=float, default=2.0,
                   help="seconds a file open for writing must go unwritten before its upload "
                        "starts (a log or a download being written is sent once it pauses or "
                        "is closed; default 2)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="after unmount, seconds to keep uploading pending changes (default 30)")
    p.add_argument("--self-check", type=float, metavar="SECONDS",
                   help="after a reconnect or a re-list, compare the mirror with the server and "
                        "repair what differs, at most once per SECONDS (default 300); "
                        "0 turns the self-check off (each one lists the whole vault; "
                        "`gobi verify` still works)")
    p.add_argument("--metrics", metavar="ADDR",
                   help="serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464")
    p.add_argument("--metrics-textfile", metavar="FILE",
                   help="write Prometheus metrics to FILE every 15 s (node_exporter's textfile collector)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as text (default) or one JSON object per line")
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

    p = sub.add_parser("sync", help="upload now; wait until every change made before is on the "
                       "server and print the vault seq (exit 4: deletes of this mount are held "
                       "for the vault owner)")
    p.add_argument("mountpoint", help="the mount (or any path inside it)")
    wait = p.add_mutually_exclusive_group()
    wait.add_argument("--wait", action="store_true", help="wait, then print the seq (the default)")
    wait.add_argument("--no-wait", action="store_true", help="only start the upload")
    wait.add_argument("--all", action="store_true",
                      help="wait until nothing is pending at all, including changes made meanwhile")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("verify", help="compare the mount with the server (names, kinds, sizes, "
                       "content, modes); --repair puts differences right")
    p.add_argument("mountpoint", help="the mount (or any path inside it)")
    p.add_argument("--repair", action="store_true",
                   help="re-fetch what differs from the server (never discards a local change "
                        "that has not reached the server)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("pin", help="keep files or directories available offline (fetch them now)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="paths inside a gobi mount")
    p.add_argument("--no-wait", action="store_true", help="return at once; fetching goes on")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (default 3600)")
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("unpin", help="let pinned content be evicted from the cache again")
    p.add_argument("paths", nargs="+", metavar="PATH", help="pinned paths inside a gobi mount")
    p.set_defaults(func=cmd_unpin)
