"""Where the CLI finds a server and a token: one rule for every command that talks to one.

Credentials live in ``$XDG_CONFIG_HOME/gobi/credentials.json`` (default
``~/.config/gobi``), mode 0600: one token per server, and the server used last is the
default for the other commands. ``--credentials FILE`` (or ``$GOBI_CREDENTIALS``) names
another file of that format, or a file holding just a token (then ``--server`` says
where), e.g. a systemd credential.

Every command that talks to a server gets its ``--server`` and ``--credentials`` options
from :func:`add_server_options` and turns them into ``(server, token)`` with
:func:`server_and_token`, so the options mean the same everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path

SERVER_HELP = "server URL (default: the one you logged in to last)"
CREDENTIALS_HELP = ("credentials file (default $GOBI_CREDENTIALS or ~/.config/gobi/credentials.json); "
                    "a file holding only a token works with --server")


class CredentialsError(Exception):
    """No usable server and token: the message says what to do."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gobi"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gobi"


def credentials_path(path: str | os.PathLike | None = None) -> Path:
    given = path or os.environ.get("GOBI_CREDENTIALS")
    return Path(given) if given else config_dir() / "credentials.json"


def add_server_options(p: argparse.ArgumentParser, server_help: str = SERVER_HELP) -> None:
    """``--server`` and ``--credentials``, the same on every command that talks to a server."""
    p.add_argument("--server", metavar="URL", help=server_help)
    p.add_argument("--credentials", metavar="FILE", help=CREDENTIALS_HELP)


def load_credentials(path: str | os.PathLike | None = None) -> dict:
    """The credentials (``{"default": URL, "servers": {URL: {"token", "username"}}}``).

    ``path`` (or ``$GOBI_CREDENTIALS``) may also name a file holding only a token; it is
    returned as ``{"token": TOKEN}`` for the caller to pair with ``--server``."""
    file = credentials_path(path)
    explicit = bool(path or os.environ.get("GOBI_CREDENTIALS"))
    try:
        text = file.read_text()
    except FileNotFoundError:
        if explicit:
            raise CredentialsError(f"credentials file {file} does not exist") from None
        return {"servers": {}}
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {file}: {exc.strerror}") from None
    if explicit:
        try:
            mode = file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO) and file.stat().st_uid == os.geteuid():
                print(f"gobi: warning: credentials file {file} is readable by others "
                      f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it", file=sys.stderr)
        except OSError:
            pass
    try:
        creds = json.loads(text)
    except ValueError:
        token = text.strip()
        if explicit and token and len(token.split()) == 1:
            return {"token": token}
        raise CredentialsError(f"credentials file {file} is neither gobi's JSON nor a token") from None
    if not isinstance(creds, dict):
        raise CredentialsError(f"credentials file {file} is not gobi's JSON")
    creds.setdefault("servers", {})
    return creds


def save_credentials(creds: dict, path: str | os.PathLike | None = None) -> None:
    path = credentials_path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    os.replace(tmp, path)


def server_and_token(server: str | None, credentials: str | os.PathLike | None = None) -> tuple[str, str]:
    """The server URL(s) and the token for them.

    ``server`` may list several URLs of one deployment (``http://a:8080,http://b:8080``,
    for failover): one token serves them all; the first URL logged in to gives it."""
    creds = load_credentials(credentials)
    if "token" in creds:                        # a bare token file
        if not server:
            raise CredentialsError(f"{credentials_path(credentials)} holds only a token: "
                                   "say which server with --server URL")
        return ",".join(u.strip().rstrip("/") for u in server.split(",") if u.strip()), creds["token"]
    server = (server or creds.get("default") or "").rstrip("/")
    if not server:
        raise CredentialsError("no server given and not logged in (run 'gobi login SERVER')")
    urls = [u.strip().rstrip("/") for u in server.split(",") if u.strip()]
    for url in urls:
        entry = creds.get("servers", {}).get(url)
        if entry:
            return ",".join(urls), entry["token"]
    where = f" in {credentials_path(credentials)}" if credentials else ""
    raise CredentialsError(f"not logged in to {urls[0]}{where} (run 'gobi login {urls[0]}')")
