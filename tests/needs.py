"""What a test needs from the machine, and what happens when it is missing.

Outside CI a test that cannot run here is skipped with a reason that says exactly what is
missing and how to get it. Under CI (``CI`` set in the environment, as ``.ci/run`` does)
the same test fails with that reason: a CI machine that lacks FUSE, systemd, caddy,
Chromium or Ceph is a broken CI machine, and a suite that skips quietly there proves
nothing. ``tests/conftest.py`` also turns any other skip under CI into a failure, so a
skip added without this helper cannot hide either.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

BOOTSTRAP = "bash scripts/bootstrap.sh --test installs it"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Stop the current test because ``reason`` (what is missing and how to get it)."""
    if in_ci():
        pytest.fail(f"CI lacks what this test needs: {reason}", pytrace=False)
    pytest.skip(reason)


def fuse_missing() -> str | None:
    """Why FUSE mounts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "FUSE mounts need root: run the tests as root"
    if not os.path.exists("/dev/fuse"):
        return ("FUSE mounts need /dev/fuse: load the fuse module (modprobe fuse) or, in a "
                "container, pass the device (--device /dev/fuse --cap-add SYS_ADMIN)")
    if shutil.which("fusermount3") is None:
        return f"fusermount3 is missing (Debian package fuse3; {BOOTSTRAP})"
    return None


def require_fuse() -> None:
    if (why := fuse_missing()) is not None:
        missing(why)


def require_tool(tool: str, package: str) -> str:
    """The path of ``tool``, or stop the test saying which Debian package brings it."""
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} is not installed (Debian package {package}; {BOOTSTRAP})")
    return path
