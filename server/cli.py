"""Server-side commands of the ``gobi`` CLI: ``gobi server``, ``gobi user add``,
``gobi user invite``.

Imports of the server stack happen inside the command functions so that building the
parser (and every client command) stays free of Sanic.
"""

from __future__ import annotations

import argparse
import sys

from . import cli_storage
from .cli_common import load_config, read_password, server_options


def cmd_server(args: argparse.Namespace) -> int:
    from .run import run_server

    return run_server(load_config(args, host=args.host, port=args.port))


def cmd_user_add(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from gobi.protocol import RegisterRequest

    from .errors import ServiceError
    from .service import Services

    password = read_password(args, confirm=True)
    try:
        req = RegisterRequest(username=args.name, password=password)
    except ValidationError as exc:
        print(f"gobi: {exc.errors()[0]['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    cfg = load_config(args)

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


def cmd_user_invite(args: argparse.Namespace) -> int:
    from gobi.drivers.keys import KeyFile, KeyFileError
    from gobi.protocol import validate_username

    from .auth import make_invite
    from .config import parse_duration

    try:
        name = validate_username(args.name)
        valid = parse_duration(args.valid)
    except ValueError as exc:
        print(f"gobi: {exc}", file=sys.stderr)
        return 2
    cfg = load_config(args)
    try:
        keys = KeyFile.load(cfg.key_path)
    except (FileNotFoundError, KeyFileError) as exc:
        print(f"gobi: cannot read the key file {cfg.key_path}: {exc}", file=sys.stderr)
        return 1
    code = make_invite(keys.naming_secret, name, valid)
    print(code)
    if not cfg.require_invite:
        print("gobi: note: require_invite is off, so sign-ups do not need this code", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    cli_storage.add_commands(sub)
    p = sub.add_parser("server", help="run the API server (embedded defaults: no other service needed)")
    server_options(p)
    p.add_argument("--host", help="address to bind (default 127.0.0.1; env: GOBI_HOST)")
    p.add_argument("--port", type=int, help="port to bind, 0 for any free port (default 8080; env: GOBI_PORT)")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("user", help="manage users on this server's store (admin)")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    pa = usub.add_parser("add", help="add a user (works with registration closed)")
    pa.add_argument("name")
    pa.add_argument("--admin", action="store_true", help="make the user an administrator")
    pa.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    server_options(pa)
    pa.set_defaults(func=cmd_user_add)
    pi = usub.add_parser("invite", help="print an invite code that lets NAME sign up (require_invite)")
    pi.add_argument("name")
    pi.add_argument("--valid", default="7d", help="how long the code works (default 7d)")
    server_options(pi)
    pi.set_defaults(func=cmd_user_invite)
