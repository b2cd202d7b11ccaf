"""Client-side commands of the ``gobi`` CLI (login, mount, umount, status) — to come."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the client commands on the top-level parser."""
