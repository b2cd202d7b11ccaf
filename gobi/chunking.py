"""Content-defined chunking: how a file's bytes become chunks.

FastCDC (pyfastcdc) cuts where a rolling hash of the content says so, so an insertion
or deletion only changes the chunks around it and every other chunk keeps its hash: a
1-byte edit in a 1 GiB file uploads one or two chunks.

The size parameters (min 128 KiB, average 512 KiB, max 2 MiB) were chosen by measurement;
the figures and the reasoning are in ``docs/chunking.md`` and ``bench/chunk_params.py``
re-measures them. Changing them does not break anything stored (a manifest lists chunk
sizes explicitly), it only lowers deduplication against content chunked before.

Sparse files (``pieces_of_sparse_file``): the file's data extents and holes are found with
``lseek(SEEK_DATA / SEEK_HOLE)``; a hole of at least ``HOLE_MIN`` bytes becomes a hole
piece (``hash`` None: zeros, neither hashed nor uploaded) and each data extent is chunked
on its own, as a file of its own would be. Shorter holes stay inside the data around them.
A file without such holes is one extent and cuts exactly as ``pieces_of_stream`` cuts it,
so deduplication against content chunked before is unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pyfastcdc import FastCDC

MIN_SIZE = 128 * 1024
AVG_SIZE = 512 * 1024
MAX_SIZE = 2 * 1024 * 1024
#: The shortest hole that becomes a hole piece. Filesystems report holes in whole blocks
#: (4 KiB on ext4/tmpfs/xfs); a 64 KiB floor keeps a file written with small gaps as one
#: extent (the same chunks as before), and makes no hole piece cost more than its zeros.
HOLE_MIN = 64 * 1024


@dataclass(frozen=True)
class Piece:
    """One chunk of a file: where it is, how long, and its SHA-256 (None: a hole, ``size``
    zero bytes that are no chunk)."""

    offset: int
    size: int
    hash: str | None


def chunker(avg: int = AVG_SIZE, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> FastCDC:
    # FastCDC's "average" is the mask target; the real mean comes out near avg + min.
    return FastCDC(avg, min_size=min_size, max_size=max_size, normalized_chunking=1)


_DEFAULT = chunker()


def pieces_of_bytes(data: bytes | bytearray | memoryview, cdc: FastCDC = _DEFAULT) -> list[Piece]:
    return [
        Piece(c.offset, c.length, hashlib.sha256(c.data).hexdigest()) for c in cdc.cut_buf(data)
    ]


def pieces_of_stream(stream: BinaryIO, cdc: FastCDC = _DEFAULT) -> Iterator[tuple[Piece, bytes]]:
    """Chunks of a stream with their bytes (copied: pyfastcdc reuses its buffer)."""
    for c in cdc.cut_stream(stream):
        data = bytes(c.data)
        yield Piece(c.offset, c.length, hashlib.sha256(data).hexdigest()), data


def pieces_of_file(path: str | Path, cdc: FastCDC = _DEFAULT) -> list[Piece]:
    """Chunks of a regular file (memory-mapped; the file must not change meanwhile)."""
    if Path(path).stat().st_size == 0:
        return []
    return [
        Piece(c.offset, c.length, hashlib.sha256(c.data).hexdigest()) for c in cdc.cut_file(str(path))
    ]


def extents(fd: int, size: int, hole_min: int = HOLE_MIN) -> list[tuple[int, int, bool]]:
    """``(offset, length, is_data)`` runs covering ``0..size`` of an open file: its data
    extents and its holes of at least ``hole_min`` bytes, as ``SEEK_DATA``/``SEEK_HOLE``
    report them (shorter holes are counted with the data around them). A filesystem that
    cannot tell (``EINVAL``) has one data extent: the whole file."""
    runs: list[tuple[int, int, bool]] = []

    def add(start: int, end: int, data: bool) -> None:
        if end <= start:
            return
        if not data and end - start < hole_min:
            data = True
        if runs and runs[-1][2] == data:
            prev = runs.pop()
            start = prev[0]
        runs.append((start, end - start, data))

    pos = 0
    while pos < size:
        try:
            data_at = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:        # no data after pos: the rest is a hole
                add(pos, size, False)
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(0, size, True)] if size else []
            raise
        data_at = min(data_at, size)
        add(pos, data_at, False)
        hole_at = min(os.lseek(fd, data_at, os.SEEK_HOLE), size)
        if hole_at <= data_at:
            # The file shrank meanwhile; whatever is read now is checked again later.
            add(data_at, size, True)
            break
        add(data_at, hole_at, True)
        pos = hole_at
    return runs


class _Range:
    """A reader of ``start..end`` of a file descriptor (``pread``: no shared offset)."""

    def __init__(self, fd: int, start: int, end: int):
        self.fd, self.pos, self.end = fd, start, end

    def readinto(self, b: memoryview) -> int:
        want = min(len(b), self.end - self.pos)
        if want <= 0:
            return 0
        n = os.preadv(self.fd, [memoryview(b)[:want]], self.pos)
        self.pos += n
        return n


def pieces_of_sparse_file(fd: int, cdc: FastCDC = _DEFAULT, size: int | None = None,
                          hole_min: int = HOLE_MIN) -> Iterator[tuple[Piece, bytes | None]]:
    """Pieces of a regular file in order with their bytes: each data extent cut as a
    stream of its own, each hole (see ``extents``) one piece with hash and bytes None.
    ``size``: how much of the file (default: its size now)."""
    if size is None:
        size = os.fstat(fd).st_size
    for start, length, data in extents(fd, size, hole_min):
        if not data:
            yield Piece(start, length, None), None
            continue
        for c in cdc.cut_stream(_Range(fd, start, start + length)):
            chunk = bytes(c.data)
            yield Piece(start + c.offset, c.length, hashlib.sha256(chunk).hexdigest()), chunk
