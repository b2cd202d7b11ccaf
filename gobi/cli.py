"""The ``gobi`` command line.

Subcommands import their layer lazily, so ``gobi server`` never loads FUSE code and the
client commands never load Sanic.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (env: GOBI_CONFIG)")
    p.add_argument("--data-dir", metavar="DIR", help="where metadata, blobs and keys live (env: GOBI_DATA_DIR)")


def _load_server_config(args: argparse.Namespace, **extra: object):
    import os

    from gobi.server.config import ServerConfig

    return ServerConfig.load(
        args.config or os.environ.get("GOBI_CONFIG"), data_dir=args.data_dir, **extra
    )


def cmd_server(args: argparse.Namespace) -> int:
    from gobi.server.run import run_server

    cfg = _load_server_config(args, host=args.host, port=args.port)
    return run_server(cfg)


def _read_password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != password:
        raise SystemExit("gobi: passwords do not match")
    return password


def cmd_user_add(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from gobi.protocol import RegisterRequest
    from gobi.server.errors import ServiceError
    from gobi.server.service import Services

    password = _read_password(args, confirm=True)
    try:
        req = RegisterRequest(username=args.name, password=password)
    except ValidationError as exc:
        print(f"gobi: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    cfg = _load_server_config(args)

    async def add() -> None:
        services = await Services.open(cfg)
        try:
            await services.accounts.register(req.username, req.password, is_admin=args.admin)
        finally:
            await services.close()

    try:
        asyncio.run(add())
    except ServiceError as exc:
        print(f"gobi: {exc.message}", file=sys.stderr)
        return 1
    print(f"user {req.username!r} added{' (admin)' if args.admin else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gobi", description="Self-hosted file sync.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("server", help="run the API server (embedded defaults: no other service needed)")
    _server_options(p)
    p.add_argument("--host", help="address to bind (default 127.0.0.1; env: GOBI_HOST)")
    p.add_argument("--port", type=int, help="port to bind, 0 for any free port (default 8080; env: GOBI_PORT)")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("user", help="manage users on this server's store (admin)")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    pa = usub.add_parser("add", help="add a user (works with registration closed)")
    pa.add_argument("name")
    pa.add_argument("--admin", action="store_true", help="make the user an administrator")
    pa.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _server_options(pa)
    pa.set_defaults(func=cmd_user_add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
