"""What ``df`` on the mount says: the server storage's size and free bytes, and the cache's.

``statfs(2)`` must answer at once (``df``, and programs that check for room before they
write, call it on the request path), so the server's figures (``GET /vaults/{id}/space``:
its storage backend's size and free bytes; there is no per-vault quota) are fetched in the
background — at start, then every ``REFRESH`` seconds while the server is reachable — and
kept. Until the first answer, or when the backend cannot tell (an object store such as
S3), the local cache's cap stands in.

The figures given to ``statfs``: the size is the server's; the room left is the least of
the server's free bytes and the cache's room for data not uploaded yet (a write waits in
the cache until it is on the server, so a full cache refuses writes first).
"""

from __future__ import annotations

import logging

import trio

from .blocks import BlockCache
from .remote import Remote, RemoteError
from .vfs import Link

log = logging.getLogger(__name__)

REFRESH = 60.0


class SpaceWatch:
    def __init__(self, remote: Remote, link: Link, cache: BlockCache):
        self.remote = remote
        self.link = link
        self.cache = cache
        self.server_total: int | None = None
        self.server_free: int | None = None

    async def refresh(self) -> None:
        """Ask the server now (errors leave the last figures in place)."""
        try:
            space = await self.remote.space()
        except RemoteError as exc:
            log.debug("storage space not refreshed: %s", exc)
            return
        self.server_total, self.server_free = space.total_bytes, space.free_bytes

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if self.link.online:
                await self.refresh()
            with trio.move_on_after(REFRESH):
                await self.link.changed.wait()      # back online: refresh at once

    def figures(self) -> tuple[int, int]:
        """(size, bytes free for new data) for ``statfs``."""
        cache_room = max(0, self.cache.cap - self.cache.staged_bytes)
        if self.server_total is None or self.server_free is None:
            return self.cache.cap, cache_room
        return self.server_total, min(self.server_free, cache_room)


__all__ = ["SpaceWatch", "REFRESH"]
