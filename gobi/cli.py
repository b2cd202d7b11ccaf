"""The ``gobi`` command line: assembles the commands each layer provides.

``gobi.server.cli`` (server, user, keys, storage) and ``gobi.fs.cli`` (login, mount,
umount, status, …) each register their subcommands; their heavy imports happen inside
the commands, so ``gobi server`` never loads FUSE code and client commands never load
Sanic.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def build_parser() -> argparse.ArgumentParser:
    from gobi import cli_history, doctor
    from gobi.fs import cli as fs_cli
    from gobi.server import cli as server_cli

    parser = argparse.ArgumentParser(prog="gobi", description="Self-hosted file sync.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server_cli.add_commands(sub)
    fs_cli.add_commands(sub)
    cli_history.add_commands(sub)
    doctor.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
