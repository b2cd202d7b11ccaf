"""Local bytes of the mount: the block cache and the staging area, under one hard cap.

- The **block cache** holds verified, immutable chunks fetched from (or uploaded to) the
  server, one file per chunk under ``blocks/<hh>/<sha256>``. It is an LRU: when room is
  needed the least recently used chunks are deleted. A chunk is only ever written here
  after its SHA-256 matched, so a cached chunk is never re-verified on read (its size is).
- The **staging area** holds the full current content of files being written
  (``staging/<ino>``). Staged data may not be on the server yet, so it is never evicted.
  A new file's copy is a **spare** made ahead of time (``staging/s<ino>``, for the next
  inode numbers the mirror will hand out; ``gobi.fs.vfs`` keeps them ready off the request
  thread): creating a file is then no file creation on the request path, which costs
  20–400 µs on a busy ext4 (its journal is shared with every other writer).

Both count against one cap (``--cache-size``). A staging copy counts with the blocks it
holds (``st_blocks * 512``), not its apparent size: a sparse file (``truncate -s 1T``, a
VM image) costs what was written into it, and its holes nothing (``staged_size`` stays the
apparent size, which ``stat`` shows). Cached chunks make room for staged data; a write
that may allocate more than fits (``reserve``: the blocks it touches that are not held
yet) fails with ``CacheFull`` (the FUSE layer answers ``ENOSPC``) instead of silently
overrunning, and after it the copy's blocks are counted again (``measure``). Reads that
cannot be cached because the cap is taken by staged data are still served, straight from
the network.

**Pinned** chunks (content of files under a ``gobi pin``, see ``gobi.fs.pins``) are cached
chunks that eviction skips: they live outside the LRU until unpinned. They count against
the cap like any cached chunk; ``gobi.fs.pins`` refuses a pin that would not fit.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path


class CacheFull(Exception):
    """Staged (not yet uploaded) data would exceed the cache cap."""


def held_bytes(st: os.stat_result) -> int:
    """What a file holds on disk: its allocated blocks, holes excluded."""
    return st.st_blocks * 512


#: Allocation unit the write reservations round to (the filesystems a cache lives on use
#: 4 KiB blocks; a larger one only makes a reservation a little short, never the count).
BLOCK = 4096


class BlockCache:
    def __init__(self, root: Path, cap: int):
        self.root = Path(root)
        self.cap = cap
        self.blocks_dir = self.root / "blocks"
        self.staging_dir = self.root / "staging"
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._pinned: dict[str, int] = {}    # chunk -> size: cached, never evicted
        self.pinned_bytes = 0
        self.cached_bytes = 0               # LRU and pinned chunks
        self.staged_bytes = 0               # blocks held by staging copies (st_blocks * 512)
        self._staged: dict[int, int] = {}   # ino -> apparent size of its staging file
        self._held: dict[int, int] = {}     # ino -> bytes its staging file holds on disk
        self._subdirs: set[str] = set()     # blocks/<xx> directories known to exist
        self._spare_named: set[int] = set() # staged inodes whose copy is named s<ino>
        self.spares: dict[int, int] = {}    # ino -> fd of its empty spare, not taken yet
        self._load()

    # -- bookkeeping -------------------------------------------------------------------------

    def _load(self) -> None:
        found: list[tuple[float, str, int]] = []
        for sub in self.blocks_dir.iterdir():
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                if entry.name.endswith(".tmp"):
                    os.unlink(entry.path)     # a write torn by a crash
                    continue
                st = entry.stat()
                found.append((st.st_mtime, entry.name, st.st_size))
        for _, name, size in sorted(found):
            self._lru[name] = size
            self.cached_bytes += size
        spare_named = []
        for entry in os.scandir(self.staging_dir):
            name = entry.name
            if name.endswith(".fill"):
                os.unlink(entry.path)       # a copy torn by a crash while it was fetched
                continue
            spare = name.startswith("s")
            try:
                ino = int(name[1:] if spare else name)
            except ValueError:
                continue
            if spare:
                spare_named.append((ino, entry.path))
                continue
            self._count_staged(ino, entry.stat())
        for ino, path in spare_named:
            if ino in self._staged:
                os.unlink(path)             # (both cannot be made; never keep two copies)
                continue
            self._count_staged(ino, os.stat(path))
            self._spare_named.add(ino)

    def _count_staged(self, ino: int, st: os.stat_result) -> None:
        self._staged[ino] = st.st_size
        self._set_held(ino, held_bytes(st))

    def _set_held(self, ino: int, held: int) -> None:
        self.staged_bytes += held - self._held.get(ino, 0)
        self._held[ino] = held

    @property
    def used(self) -> int:
        return self.cached_bytes + self.staged_bytes

    def _make_room(self, need: int) -> bool:
        """Evict LRU chunks until ``need`` more bytes fit under the cap."""
        while self.used + need > self.cap and self._lru:
            victim, size = self._lru.popitem(last=False)
            try:
                os.unlink(self._path(victim))
            except FileNotFoundError:
                pass
            self.cached_bytes -= size
        return self.used + need <= self.cap

    # -- chunks -----------------------------------------------------------------------------

    def _path(self, chunk_hash: str) -> Path:
        return self.blocks_dir / chunk_hash[:2] / chunk_hash

    def __contains__(self, chunk_hash: str) -> bool:
        return chunk_hash in self._lru or chunk_hash in self._pinned

    def _size(self, chunk_hash: str) -> int | None:
        size = self._lru.get(chunk_hash)
        return self._pinned.get(chunk_hash) if size is None else size

    def _forget(self, chunk_hash: str) -> None:
        """The chunk's file vanished (someone cleaned the cache dir): stop counting it."""
        size = self._lru.pop(chunk_hash, None)
        if size is None:
            size = self._pinned.pop(chunk_hash, 0)
            self.pinned_bytes -= size
        self.cached_bytes -= size

    def read(self, chunk_hash: str, offset: int = 0, size: int = -1) -> bytes | None:
        """Bytes of a cached chunk (``size=-1``: to its end), or None when not cached."""
        total = self._size(chunk_hash)
        if total is None:
            return None
        try:
            fd = os.open(self._path(chunk_hash), os.O_RDONLY)
        except FileNotFoundError:
            self._forget(chunk_hash)
            return None
        try:
            if size < 0:
                size = total - offset
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if chunk_hash in self._lru:
            self._lru.move_to_end(chunk_hash)
        return data

    def _touch(self, chunk_hash: str, pin: bool) -> bool:
        """Already cached: mark it used (and pinned if asked). False when not cached."""
        if chunk_hash in self._pinned:
            return True
        if chunk_hash not in self._lru:
            return False
        if pin:
            self.pin(chunk_hash)
        else:
            self._lru.move_to_end(chunk_hash)
        return True

    def put(self, chunk_hash: str, data: bytes, pin: bool = False) -> bool:
        """Cache verified bytes (pinned: never evicted); False when the cap is taken by
        staged and pinned data."""
        if self._touch(chunk_hash, pin):
            return True
        if not self._make_room(len(data)):
            return False
        path = self._path(chunk_hash)
        self._fan_out(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        self._add(chunk_hash, len(data), pin)
        return True

    def _fan_out(self, path: Path) -> None:
        sub = path.parent.name
        if sub not in self._subdirs:
            path.parent.mkdir(exist_ok=True)
            self._subdirs.add(sub)

    def _add(self, chunk_hash: str, size: int, pin: bool) -> None:
        if pin:
            self._pinned[chunk_hash] = size
            self.pinned_bytes += size
        else:
            self._lru[chunk_hash] = size
        self.cached_bytes += size

    def put_from_file(self, chunk_hash: str, src_fd: int, offset: int, size: int) -> bool:
        """Cache a chunk copied from a staging file (in-kernel copy, no round trip)."""
        if self._touch(chunk_hash, False):
            return True
        if not self._make_room(size):
            return False
        path = self._path(chunk_hash)
        self._fan_out(path)
        tmp = path.with_name(path.name + ".tmp")
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            done = 0
            while done < size:
                n = os.copy_file_range(src_fd, dst, size - done, offset + done, done)
                if n <= 0:
                    break
                done += n
        finally:
            os.close(dst)
        if done != size:
            os.unlink(tmp)
            return False
        os.replace(tmp, path)
        self._add(chunk_hash, size, False)
        return True

    def chunk_count(self) -> int:
        return len(self._lru) + len(self._pinned)

    # -- pinning ----------------------------------------------------------------------------

    def pin(self, chunk_hash: str) -> bool:
        """Exempt a cached chunk from eviction; False when it is not cached."""
        size = self._lru.pop(chunk_hash, None)
        if size is None:
            return chunk_hash in self._pinned
        self._pinned[chunk_hash] = size
        self.pinned_bytes += size
        return True

    def is_pinned(self, chunk_hash: str) -> bool:
        return chunk_hash in self._pinned

    def unpin_except(self, keep: set[str]) -> None:
        """Chunks pinned but not in ``keep`` become ordinary (most recently used) entries."""
        for chunk_hash in [h for h in self._pinned if h not in keep]:
            size = self._pinned.pop(chunk_hash)
            self.pinned_bytes -= size
            self._lru[chunk_hash] = size

    # -- staging ----------------------------------------------------------------------------

    def staging_path(self, ino: int) -> Path:
        return self.staging_dir / (f"s{ino}" if ino in self._spare_named else str(ino))

    def spare_path(self, ino: int) -> Path:
        return self.staging_dir / f"s{ino}"

    def take_spare(self, ino: int) -> int | None:
        """The fd of the empty spare made for ``ino``, which becomes its staging copy;
        None when there is none (the caller creates the copy itself)."""
        fd = self.spares.pop(ino, None)
        if fd is not None:
            self._spare_named.add(ino)
        return fd

    def staged_size(self, ino: int) -> int:
        """The staging copy's apparent size (what ``stat`` shows as the file's size)."""
        return self._staged.get(ino, 0)

    def staged_held(self, ino: int) -> int:
        """The bytes the staging copy holds on disk (what the cap is charged)."""
        return self._held.get(ino, 0)

    def staged_data(self, ino: int) -> int:
        """The bytes of data the staging copy holds: its blocks, at most its size (a
        sparse copy's holes hold nothing; a small file's last block is not all data).
        What uploading it reads and sends (``gobi status``'s queued bytes), give or take
        the holes under 64 KiB the uploader reads as zeros."""
        return min(self._held.get(ino, 0), self._staged.get(ino, 0))

    def _full(self) -> CacheFull:
        return CacheFull(f"cache cap of {self.cap} bytes is taken by data not yet uploaded")

    def reserve(self, ino: int, fd: int, offset: int, length: int) -> None:
        """Before writing ``length`` bytes at ``offset`` into the staging copy: make room
        for the blocks the write may allocate, or ``CacheFull``. A write that lands on
        blocks the copy already holds (one ``SEEK_HOLE``: no hole in the range) needs none,
        so rewriting a file at the cap still works, as it did when apparent sizes counted."""
        if length <= 0:
            return
        end = offset + length
        if end <= self._staged.get(ino, 0):
            try:
                if os.lseek(fd, offset, os.SEEK_HOLE) >= end:
                    return
            except OSError:
                pass                        # cannot tell: assume it allocates
        need = -(-end // BLOCK) * BLOCK - offset // BLOCK * BLOCK
        if not self._make_room(need):
            raise self._full()

    def measure(self, ino: int, fd: int, size: int | None = None) -> None:
        """Count the staging copy again after a change (``size``: its new apparent size,
        when the caller knows it; else from ``fstat`` as well)."""
        st = os.fstat(fd)
        self._staged[ino] = st.st_size if size is None else size
        self._set_held(ino, held_bytes(st))

    def take_staged(self, ino: int, size: int, held: int) -> None:
        """A complete copy was made for ``ino`` (apparent ``size``, ``held`` bytes on disk):
        count it, or ``CacheFull`` (counting nothing) when its blocks do not fit."""
        grow = held - self._held.get(ino, 0)
        if grow > 0 and not self._make_room(grow):
            raise self._full()
        self._staged[ino] = size
        self._set_held(ino, held)

    def staged_empty(self, ino: int) -> None:
        """The staging copy is empty now (a new file's spare, or truncated to zero): no
        size, no blocks, without asking the filesystem (a create's hot path)."""
        self._staged[ino] = 0
        self._set_held(ino, 0)

    def drop_staged(self, ino: int) -> None:
        self._staged.pop(ino, None)
        self.staged_bytes -= self._held.pop(ino, 0)
        try:
            os.unlink(self.staging_path(ino))
        except FileNotFoundError:
            pass
        self._spare_named.discard(ino)

    def adopt_staged(self, ino: int, chunk_hash: str) -> bool:
        """A staging file that holds exactly the chunk ``chunk_hash`` (a small file whose
        content the server acknowledged) becomes that chunk's cache entry with one rename,
        instead of its bytes being written to the cache again and the copy unlinked: two
        of the few syscalls left per file of a ``tar x`` on the request thread. False (and
        nothing done) when it is not staged or the chunk is cached already."""
        size = self._staged.get(ino)
        if size is None or self._touch(chunk_hash, False):
            return False
        path = self._path(chunk_hash)
        self._fan_out(path)
        try:
            os.rename(self.staging_path(ino), path)
        except FileNotFoundError:
            return False
        del self._staged[ino]
        self._spare_named.discard(ino)
        self.staged_bytes -= self._held.pop(ino, 0)
        self._add(chunk_hash, size, False)
        return True

    def staged_inodes(self) -> list[int]:
        return list(self._staged)
