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


def load_config(args: argparse.Namespace, **extra: object):
    from .config import ServerConfig

    return ServerConfig.load(
        args.config or os.environ.get("GOBI_CONFIG"), data_dir=args.data_dir, **extra
    )


def read_password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != password:
        raise SystemExit("gobi: passwords do not match")
    return password
