"""Content-defined chunking: how a file's bytes become chunks.

FastCDC (pyfastcdc) cuts where a rolling hash of the content says so, so an insertion
or deletion only changes the chunks around it and every other chunk keeps its hash: a
1-byte edit in a 1 GiB file uploads one or two chunks.

The size parameters (min 128 KiB, average 512 KiB, max 2 MiB) were chosen by measurement;
the figures and the reasoning are in ``docs/chunking.md`` and ``bench/chunk_params.py``
re-measures them. Changing them does not break anything stored (a manifest lists chunk
sizes explicitly), it only lowers deduplication against content chunked before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pyfastcdc import FastCDC

MIN_SIZE = 128 * 1024
AVG_SIZE = 512 * 1024
MAX_SIZE = 2 * 1024 * 1024


@dataclass(frozen=True)
class Piece:
    """One chunk of a file: where it is, how long, and its SHA-256."""

    offset: int
    size: int
    hash: str


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
