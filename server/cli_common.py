"""Options and helpers shared by the server-side CLI modules (``cli``, ``cli_storage``, …):
they all read the same configuration as ``gobi server``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys


def server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (env: GOBI_CONFIG)")
    p.add_argument("--data-dir", metavar="DIR", help="where metadata, blobs and keys live (env: GOBI_DATA_DIR)")


#: sysexits' EX_CONFIG: a service manager should not retry a broken configuration
#: (the systemd unit lists it in RestartPreventExitStatus).
EX_CONFIG = 78


def load_config(args: argparse.Namespace, **extra: object):
    """The server configuration, or exit 78 with one line per problem (no traceback)."""
    import tomllib

    from pydantic import ValidationError

    from .config import ServerConfig

    # Everything the server side creates (metadata.db and its WAL, blobs, key and token
    # files, their directories) is for the server's user only: 0600 files, 0700 dirs.
    os.umask(0o077)
    source = args.config or os.environ.get("GOBI_CONFIG")
    try:
        return ServerConfig.load(source, data_dir=args.data_dir, **extra)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in err.get("loc", ())) or "configuration"
            print(f"gobi: configuration: {where}: {err.get('msg')}", file=sys.stderr)
    except (FileNotFoundError, tomllib.TOMLDecodeError) as exc:
        print(f"gobi: configuration: {exc}", file=sys.stderr)
    raise SystemExit(EX_CONFIG)


def read_password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != password:
        raise SystemExit("gobi: passwords do not match")
    return password
