"""Event fan-out (see ``base.py``): in-process bells, or Redis between instances."""

from __future__ import annotations

from .base import Fanout, InProcessFanout, LocalBells

__all__ = ["Fanout", "InProcessFanout", "LocalBells", "open_fanout"]


def open_fanout(url: str) -> Fanout:
    """``memory`` (one process) or ``redis://…`` / ``rediss://…`` (several instances)."""
    if url in ("", "memory"):
        return InProcessFanout()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisFanout

        return RedisFanout(url)
    raise ValueError(f"unknown fan-out {url!r} (use 'memory' or a redis:// URL)")
