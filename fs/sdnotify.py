"""systemd's readiness protocol (sd_notify) for ``gobi mount --foreground``.

When systemd starts a ``Type=notify`` service it sets ``NOTIFY_SOCKET`` to a datagram
socket (a path, or ``@name`` in the abstract namespace). The mount sends ``READY=1`` once
the vault is mounted, ``STATUS=…`` lines that ``systemctl status`` shows (online or not,
changes pending), and ``STOPPING=1`` when it unmounts. Without ``NOTIFY_SOCKET`` every
call does nothing. The protocol is one datagram of ``KEY=VALUE`` lines; see sd_notify(3).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*assignments: str) -> bool:
    """Send ``KEY=VALUE`` lines to systemd; False when not under systemd (or it failed)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False            # vsock addresses (VMs) are not for us
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall("\n".join(assignments).encode())
        return True
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


def status_line(status: dict) -> str:
    """One line for ``systemctl status``: where, online or not, what is pending."""
    state = "online" if status.get("online") else "OFFLINE"
    parts = [f"{status.get('mountpoint', '?')}: {state}"]
    pending = status.get("pending_ops", 0)
    parts.append(f"{pending} change(s) pending" if pending else "all changes uploaded")
    if status.get("failures"):
        parts.append(f"{len(status['failures'])} upload problem(s), see gobi status")
    return "; ".join(parts)


__all__ = ["notify", "status_line"]
