"""Measure FastCDC size parameters: the figures behind gobi.chunking's choice.

    .venv/bin/python bench/chunk_params.py [--mib 256]

For each candidate (min / avg / max) it prints, side by side:
- chunking + SHA-256 throughput (MB/s) — what the client spends per byte written;
- chunks per GiB — requests per GiB uploaded and manifest entries;
- bytes to upload after a 1-byte insertion in a 64 MiB file (the "1-byte edit" bar);
- bytes to upload after 100 scattered 1-byte edits in the whole corpus;
- bytes to upload after re-tarring a source tree with 20 files changed
  (a realistic mix of small and large files in one stream);
- read amplification: mean chunk size = bytes fetched by one cold random 4 KiB read.
The data is random bytes plus a tar of Python's standard library from this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import sys
import tarfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gobi.chunking import chunker, pieces_of_bytes  # noqa: E402

CANDIDATES = [
    (16 << 10, 64 << 10, 256 << 10),
    (64 << 10, 256 << 10, 1 << 20),
    (128 << 10, 512 << 10, 2 << 20),
    (256 << 10, 1 << 20, 4 << 20),
    (512 << 10, 2 << 20, 8 << 20),
]


def stdlib_tar(changed: set[str] | None = None) -> bytes:
    root = Path(os.__file__).parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*.py"))[:4000]:
            data = path.read_bytes()
            rel = str(path.relative_to(root))
            if changed and rel in changed:
                data = data.replace(b"def ", b"def  ", 1) + b"\n# edited\n"
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def new_bytes(before, after) -> int:
    known = {p.hash for p in before}
    seen: set[str] = set()
    total = 0
    for p in after:
        if p.hash not in known and p.hash not in seen:
            total += p.size
            seen.add(p.hash)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    rng = random.Random(42)
    corpus = b"".join(rng.randbytes(1 << 20) for _ in range(args.mib))
    big = corpus[: 64 << 20]
    inserted = big[: 30 << 20] + b"!" + big[30 << 20 :]
    edited = bytearray(corpus)
    for _ in range(100):
        i = rng.randrange(len(edited))
        edited[i] ^= 0xFF
    tar_before = stdlib_tar()
    names = sorted(m.name for m in tarfile.open(fileobj=io.BytesIO(tar_before)))
    tar_after = stdlib_tar(set(rng.sample(names, 20)))

    table = Table(title=f"FastCDC parameters ({args.mib} MiB random + {len(tar_before) >> 20} MiB stdlib tar)")
    for col in ("min/avg/max KiB", "chunk+hash MB/s", "chunks/GiB", "mean KiB",
                "1-byte insert: upload KiB", "100 edits: upload MiB", "tar, 20 files changed: upload KiB"):
        table.add_column(col, justify="right")
    for mn, avg, mx in CANDIDATES:
        cdc = chunker(avg, mn, mx)
        t0 = time.perf_counter()
        base = pieces_of_bytes(corpus, cdc)
        speed = len(corpus) / (time.perf_counter() - t0) / 1e6
        mean = len(corpus) / len(base)
        ins = new_bytes(pieces_of_bytes(big, cdc), pieces_of_bytes(inserted, cdc))
        edits = new_bytes(base, pieces_of_bytes(bytes(edited), cdc))
        tar = new_bytes(pieces_of_bytes(tar_before, cdc), pieces_of_bytes(tar_after, cdc))
        table.add_row(
            f"{mn >> 10}/{avg >> 10}/{mx >> 10}", f"{speed:.0f}", f"{(1 << 30) / mean:.0f}",
            f"{mean / 1024:.0f}", f"{ins / 1024:.0f}", f"{edits / 2**20:.1f}", f"{tar / 1024:.0f}",
        )
    Console().print(table)
    print("sha256 alone:", end=" ")
    t0 = time.perf_counter()
    hashlib.sha256(corpus).digest()
    print(f"{len(corpus) / (time.perf_counter() - t0) / 1e6:.0f} MB/s")


if __name__ == "__main__":
    main()
