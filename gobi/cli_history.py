"""History commands of the ``gobi`` CLI: versions, trash, held deletes, conflicts, gc.

    gobi versions PATH                  versions of a file (rev, time, size, device)
    gobi cat PATH [--rev R]             print a version's bytes
    gobi restore PATH --rev R           make version R the file's content again
    gobi restore PATH                   bring PATH back from the trash
    gobi trash [PATH]                   what was deleted (newest first)
    gobi confirm-delete [ID…]           list, confirm (or --reject) mass deletes held for the owner
    gobi conflicts [--all]              open conflicts (--all: settled ones too)
    gobi resolve PATH --keep mine|theirs|both
    gobi gc [--dry-run]                 free chunks nothing references any more

They talk to the server over REST with the token ``gobi login`` stored (or the one
``--credentials FILE`` holds: ``gobi.credentials``). Where: a PATH
inside a running gobi mount (or, for commands without PATH, the current directory inside
one) names the mount's server, vault and the path in the vault; otherwise ``--vault
NAME|ID`` (and ``--server URL``, default: the last login) say where and PATH is a path
in the vault (``docs/a.txt``). The requests carry the device ``cli.<host>``, never a
mount's own device id, so a mount applies what these commands change like any remote
change.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What ``--keep`` means (shown in ``gobi resolve --help`` and docs/conflicts.md).
KEEP_HELP = ("mine: the side that met the conflict (the later writer, e.g. your offline edit); "
             "theirs: what the server had; both: keep both (a conflicted copy)")


class CliError(Exception):
    pass


def _device() -> str:
    host = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:59] or "host"
    return f"cli.{host}"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@dataclass
class Target:
    """Where a command acts: the server, the vault and (for PATH commands) the vault path."""

    server: str
    token: str
    vault: str
    path: str = ""
    mount: str | None = None

    def __post_init__(self) -> None:
        import httpx

        from gobi.protocol import API_PREFIX, DEVICE_HEADER

        self.http = httpx.Client(
            base_url=self.server + API_PREFIX, timeout=httpx.Timeout(60, connect=10),
            headers={"Authorization": f"Bearer {self.token}", DEVICE_HEADER: _device()},
        )

    def call(self, method: str, url: str, **kwargs: Any) -> Any:
        import httpx

        try:
            r = self.http.request(method, f"/vaults/{self.vault}{url}", **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.server}: {exc}") from None
        if r.status_code >= 400:
            raise CliError(_error_text(r))
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r

    def node(self, path: str | None = None) -> dict:
        return self.call("GET", "/lookup", params={"path": self.path if path is None else path})

    def close(self) -> None:
        self.http.close()


def _error_text(r: Any) -> str:
    try:
        err = r.json()["error"]
        return f"{err['message']} ({err['code']})"
    except Exception:  # not our JSON: say what came back
        return f"server answered {r.status_code}"


# --------------------------------------------------------------------------- where


def _mount_of(path: Path) -> tuple[str, dict] | None:
    """The gobi mount containing ``path`` and its status (server, vault, device…)."""
    from gobi.fs.cli import gobi_mounts, read_status

    best = None
    for mp in gobi_mounts():
        try:
            path.relative_to(mp)
        except ValueError:
            continue
        if best is None or len(mp) > len(best):
            best = mp
    if best is None:
        return None
    try:
        return best, read_status(best)
    except OSError as exc:
        raise CliError(f"{best} is a gobi mount that does not answer ({exc.strerror})") from None


def _local(path: str) -> Path:
    """Absolute, with symlinks resolved in the parent only (PATH itself may be deleted)."""
    p = Path(path).expanduser()
    p = p if p.is_absolute() else Path.cwd() / p
    return p.parent.resolve() / p.name if p.name not in ("", ".", "..") else p.resolve()


def _credentials(args: argparse.Namespace, server: str | None) -> tuple[str, str]:
    from gobi.credentials import CredentialsError, server_and_token

    try:
        return server_and_token(server, args.credentials)
    except CredentialsError as exc:
        raise CliError(str(exc)) from None


def target(args: argparse.Namespace, path: str | None) -> Target:
    """See the module docstring."""
    if args.vault is None:
        where = _local(path) if path is not None else Path.cwd().resolve()
        found = _mount_of(where)
        if found is None:
            if path is None:
                raise CliError("not inside a gobi mount: say which vault with --vault NAME")
            raise CliError(f"{path} is not inside a gobi mount: say which vault with --vault NAME "
                           "(PATH is then a path in the vault)")
        mountpoint, status = found
        server, token = _credentials(args, status["server"])
        rel = where.relative_to(mountpoint).as_posix() if path is not None else ""
        return Target(server, token, status["vault"], "" if rel == "." else rel, mountpoint)
    server, token = _credentials(args, args.server)
    t = Target(server, token, "", (path or "").strip("/"))
    t.vault = _vault_id(t, args.vault)
    return t


def _vault_id(t: Target, wanted: str) -> str:
    import httpx

    try:
        r = t.http.get("/vaults")
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach {t.server}: {exc}") from None
    if r.status_code != 200:
        raise CliError(_error_text(r))
    vaults = r.json()["vaults"]
    exact = [v for v in vaults if v["id"] == wanted] or [v for v in vaults if v["name"] == wanted]
    if not exact:
        raise CliError(f"no vault {wanted!r} on {t.server} (see 'gobi vault list')")
    if len(exact) > 1:
        raise CliError(f"several vaults are called {wanted!r}: use an id ({', '.join(v['id'] for v in exact)})")
    return exact[0]["id"]


def _run(args: argparse.Namespace, fn) -> int:
    t = None
    try:
        t = target(args, getattr(args, "path", None))
        return fn(t, args) or 0
    except CliError as exc:
        print(f"gobi: {exc}", file=sys.stderr)
        return 1
    finally:
        if t is not None:
            t.close()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# --------------------------------------------------------------------------- versions


def _file_node(t: Target) -> dict:
    """The file at the target path: live, else the newest trash entry of that path."""
    try:
        return t.node()
    except CliError as exc:
        entries = t.call("GET", "/trash", params={"path": t.path, "limit": 1})["entries"]
        if not entries:
            raise exc
        return t.call("GET", f"/nodes/{entries[0]['node']}")


def cmd_versions(t: Target, args: argparse.Namespace) -> int:
    node = _file_node(t)
    versions = t.call("GET", f"/nodes/{node['id']}/versions")["versions"]
    if args.json:
        _print_json(versions)
        return 0
    state = " (deleted: in the trash)" if node["deleted"] else ""
    print(f"{t.path}{state}: {len(versions)} version(s)")
    for v in versions:
        mark = "*" if v["head"] else " "
        origin = f"  [{v['origin']}]" if v["origin"] else ""
        print(f"{mark} rev {v['rev']:<8} {_when(v['ts'])}  {_human(v['size']):>10}  "
              f"{v['device'] or '-'} ({v['user'] or '-'}){origin}")
    return 0


def cmd_cat(t: Target, args: argparse.Namespace) -> int:
    node = _file_node(t)
    params = {"rev": args.rev} if args.rev is not None else {}
    import httpx

    try:
        with t.http.stream("GET", f"/vaults/{t.vault}/nodes/{node['id']}/data", params=params) as r:
            if r.status_code != 200:
                r.read()
                raise CliError(_error_text(r))
            out = sys.stdout.buffer
            for block in r.iter_bytes():
                out.write(block)
            out.flush()
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach {t.server}: {exc}") from None
    return 0


def cmd_restore(t: Target, args: argparse.Namespace) -> int:
    if args.rev is not None:
        node = t.node()
        new = t.call("POST", f"/nodes/{node['id']}/restore", json={"rev": args.rev})
        print(f"{t.path}: version {args.rev} is the content again (as rev {new['content_rev']})")
        return 0
    entries = t.call("GET", "/trash", params={"path": t.path})["entries"]
    if args.entry:
        entries = [e for e in t.call("GET", "/trash", params={"limit": 5000})["entries"] if e["id"] == args.entry]
    if not entries:
        raise CliError(f"{t.path or args.entry} is not in the trash (see 'gobi trash')")
    entry = entries[0]
    done = t.call("POST", f"/trash/{entry['id']}/restore", json={})
    where = done["node"]["name"]
    extra = f" as {where!r} (the name was taken)" if done["renamed"] else ""
    parents = f"; {done['revived_parents']} deleted parent folder(s) came back" if done["revived_parents"] else ""
    inside = (f" (the folder and everything deleted with it: {entry['files']} file(s))"
              if entry["kind"] == "dir" else "")
    print(f"restored {entry['path']}{extra}: {done['restored']} item(s){inside}{parents}")
    return 0


# --------------------------------------------------------------------------- trash


def cmd_trash(t: Target, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    entries = t.call("GET", "/trash", params=params)["entries"]
    if t.path:
        entries = [e for e in entries if e["path"] == t.path or e["path"].startswith(t.path + "/")]
    if args.json:
        _print_json(entries)
        return 0
    if not entries:
        print("the trash is empty" if not t.path else f"nothing from {t.path} in the trash")
        return 0
    for e in entries:
        what = f"dir, {e['files']} file(s)" if e["kind"] == "dir" else e["kind"]
        print(f"{_when(e['deleted_at'])}  {e['path']}  ({what}, {_human(e['bytes'])})  "
              f"by {e['device'] or '-'} ({e['user'] or '-'})  [{e['id']}]")
    return 0


# --------------------------------------------------------------------------- held deletes


def _this_device(t: Target) -> str | None:
    """The device of the mount the command runs in (None outside a mount)."""
    if not t.mount:
        return None
    from gobi.fs.cli import read_status

    try:
        return read_status(t.mount).get("device")
    except OSError:
        return None


def _describe_hold(t: Target, h: dict, here: str | None = None) -> None:
    detail = t.call("GET", f"/holds/{h['id']}", params={"limit": 5})
    print(f"{h['id']}: {h['files']} file(s) in {h['items']} delete(s) from {h['device'] or '-'} "
          f"({h['user'] or '-'}) since {_when(h['created'])}; expires {_when(h['expires'])}")
    if here is not None and h["device"] == here:
        print("    deleted on this mount: gone here already, kept on the other devices until decided")
    for item in detail["items"]:
        print(f"    {item['path']}" + (f"  ({item['files']} files)" if item["files"] != 1 else ""))
    if h["items"] > len(detail["items"]):
        print(f"    … and {h['items'] - len(detail['items'])} more")


def cmd_confirm_delete(t: Target, args: argparse.Namespace) -> int:
    pending = t.call("GET", "/holds")["holds"]
    ids = args.ids or ([h["id"] for h in pending] if args.yes else [])
    if not ids:
        if not pending:
            print("no deletes are held")
            return 0
        here = _this_device(t)
        for h in pending:
            _describe_hold(t, h, here)
        verb = "reject (keep the files)" if args.reject else "confirm (delete the files)"
        if not sys.stdin.isatty():
            print(f"to {verb}: gobi confirm-delete {'--reject ' if args.reject else ''}ID  (or --yes for all)")
            return 0
        answer = input(f"{verb} all of these? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing changed")
            return 0
        ids = [h["id"] for h in pending]
    action = "reject" if args.reject else "confirm"
    for hold_id in ids:
        done = t.call("POST", f"/holds/{hold_id}/{action}")
        if action == "confirm":
            skipped = f", {done['skipped']} skipped (changed or gone meanwhile)" if done["skipped"] else ""
            print(f"{hold_id}: confirmed: {done['applied']} delete(s) applied{skipped}; the files "
                  f"went to the trash, on every device")
        else:
            print(f"{hold_id}: rejected: the files stay, and come back on the device that deleted them")
    return 0


# --------------------------------------------------------------------------- conflicts


def _conflict_line(c: dict) -> str:
    state = c["state"] if c["state"] == "open" else f"{c['result']}" + (
        f", kept {c['resolution']}" if c["resolution"] else "")
    return (f"{_when(c['ts'])}  {c['path']}  {c['case'].replace('_', '/')}  [{c['strategy']}: {state}]  "
            f"mine: {c['device'] or '-'} ({c['user'] or '-'})  [{c['id']}]")


def cmd_conflicts(t: Target, args: argparse.Namespace) -> int:
    found = t.call("GET", "/conflicts", params={"state": "all" if args.all else "open"})["conflicts"]
    if t.path:
        found = [c for c in found if c["path"] == t.path or c["path"].startswith(t.path + "/")]
    if args.json:
        _print_json(found)
        return 0
    if not found:
        print("no open conflicts" if not args.all else "no conflicts")
        return 0
    for c in found:
        print(_conflict_line(c))
        if c["message"]:
            print(f"    {c['message']}")
    return 0


def cmd_resolve(t: Target, args: argparse.Namespace) -> int:
    found = t.call("GET", "/conflicts", params={"state": "open"})["conflicts"]
    if args.id:
        found = [c for c in found if c["id"] == args.id]
    else:
        found = [c for c in found if c["path"] == t.path]
    if not found:
        raise CliError(f"no open conflict on {args.id or t.path} (see 'gobi conflicts')")
    for c in sorted(found, key=lambda c: c["ts"]):
        done = t.call("POST", f"/conflicts/{c['id']}/resolve", json={"keep": args.keep})
        print(f"{done['path']}: {done['case'].replace('_', '/')} resolved, kept {args.keep}")
    return 0


# --------------------------------------------------------------------------- gc


def cmd_gc(t: Target, args: argparse.Namespace) -> int:
    report = t.call("POST", "/gc", json={"dry_run": args.dry_run})
    if args.json:
        _print_json(report)
        return 0

    def fmt(d: dict) -> str:
        return f"{d['chunks']} chunk(s), {_human(d['bytes'])}"

    print(f"referenced:  {fmt(report['referenced'])}")
    print(f"in grace:    {fmt(report['in_grace'])}  (unreferenced but younger than "
          f"{report['grace_seconds']:.0f}s: uploads whose commit may still come)")
    if args.dry_run:
        print(f"would free:  {fmt(report['collectable'])}")
    else:
        print(f"freed:       {fmt(report['freed'])} in {report['seconds']:.2f}s")
    return 0


# --------------------------------------------------------------------------- parser


def _where(p: argparse.ArgumentParser) -> None:
    from gobi.credentials import add_server_options

    p.add_argument("--vault", help="vault name or id (default: the mount PATH or the current directory is in)")
    add_server_options(p, "server URL (with --vault; default: the one you logged in to last)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    def command(name: str, fn, help: str, path: str | None = "path in the vault, or a file in a mount",
                optional: bool = False, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, **kw)
        if path is not None:
            p.add_argument("path", metavar="PATH", help=path, nargs="?" if optional else None)
        _where(p)
        p.set_defaults(func=lambda args: _run(args, fn))
        return p

    p = command("versions", cmd_versions, "list a file's versions (rev, time, size, device)")
    p.add_argument("--json", action="store_true")
    p = command("cat", cmd_cat, "print a file's content (of version --rev)")
    p.add_argument("--rev", type=int, help="version to print (default: the current one)")
    p = command("restore", cmd_restore, "restore a version (--rev R) or bring PATH back from the trash")
    p.add_argument("--rev", type=int, help="make this version the content again (as a new version)")
    p.add_argument("--entry", help="the trash entry to restore (an id from 'gobi trash')")
    p = command("trash", cmd_trash, "list deleted files and folders, newest first",
                path="only what was deleted from here", optional=True)
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p = command("confirm-delete", cmd_confirm_delete,
                "list mass deletes held for the owner; confirm (or --reject) them", path=None)
    p.add_argument("ids", nargs="*", metavar="ID", help="holds to decide (default: list, then ask)")
    p.add_argument("--reject", action="store_true", help="drop the held deletes: the files stay")
    p.add_argument("--yes", "-y", action="store_true", help="decide every pending hold without asking")
    p = command("conflicts", cmd_conflicts, "list open conflicts (--all: settled ones too)",
                path="only conflicts under this path", optional=True)
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    p = command("resolve", cmd_resolve, "decide an open conflict", epilog=KEEP_HELP)
    p.add_argument("--keep", required=True, choices=("mine", "theirs", "both"), help=KEEP_HELP)
    p.add_argument("--id", help="the conflict to decide (an id from 'gobi conflicts') when PATH has several")
    p = command("gc", cmd_gc, "free stored chunks no kept version or trash entry references (owner)", path=None)
    p.add_argument("--dry-run", action="store_true", help="only report what would be freed")
    p.add_argument("--json", action="store_true")
