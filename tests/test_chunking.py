"""gobi.chunking on real files: sparse files cut into data chunks and holes, dense files
exactly as before (deduplication against content chunked before must not change)."""

from __future__ import annotations

import os

from gobi.chunking import HOLE_MIN, extents, pieces_of_sparse_file, pieces_of_stream

MIB = 1 << 20


def _pieces(path, **kw):
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(p.offset, p.size, p.hash, data) for p, data in pieces_of_sparse_file(fd, **kw)]
    finally:
        os.close(fd)


def _stream(path):
    with open(path, "rb") as f:
        return [(p.offset, p.size, p.hash) for p, _ in pieces_of_stream(f)]


def test_a_dense_file_cuts_exactly_as_a_stream(tmp_path):
    for size in (0, 1, 100_000, 5 * MIB + 3):
        path = tmp_path / f"dense{size}"
        path.write_bytes(os.urandom(size))
        got = _pieces(path)
        assert [g[:3] for g in got] == _stream(path)
        assert all(g[3] == path.read_bytes()[g[0]:g[0] + g[1]] for g in got)


def test_short_holes_stay_inside_the_data(tmp_path):
    """A gap below HOLE_MIN (here one 4 KiB block left unwritten) is cut as data, zeros
    and all: the same chunks as the file written densely."""
    path, dense = tmp_path / "gappy", tmp_path / "dense"
    a, b = os.urandom(MIB), os.urandom(MIB)
    with open(path, "wb") as f:
        f.write(a)
        f.seek(MIB + 4096)
        f.write(b)
    dense.write_bytes(a + bytes(4096) + b)
    assert [p[:3] for p in _pieces(path)] == _stream(dense)


def test_holes_become_hole_pieces_and_data_is_cut_per_extent(tmp_path):
    path = tmp_path / "sparse"
    a, b, c = os.urandom(300_000), os.urandom(2 * MIB), os.urandom(10)
    with open(path, "wb") as f:
        f.truncate(1 << 40)
        f.write(a)
        f.seek(1 << 30)
        f.write(b)
        f.seek((1 << 40) - len(c))
        f.write(c)
    fd = os.open(path, os.O_RDONLY)
    try:
        runs = extents(fd, 1 << 40)
    finally:
        os.close(fd)
    # data, hole, data at 1 GiB (block aligned, so exactly there), hole, data at the end
    assert [d for _, _, d in runs] == [True, False, True, False, True]
    assert runs[0][0] == 0 and runs[2][0] == 1 << 30 and runs[2][1] >= len(b)
    assert runs[4][0] + runs[4][1] == 1 << 40 and runs[4][1] < HOLE_MIN
    assert sum(n for _, n, _ in runs) == 1 << 40
    assert all(n >= HOLE_MIN for _, n, d in runs if not d)
    got = _pieces(path)
    holes = [g for g in got if g[2] is None]
    assert len(holes) == 2 and all(g[3] is None for g in holes)
    assert sum(g[1] for g in got) == 1 << 40
    # Offsets are contiguous and every data piece is the file's bytes there, hashed.
    pos = 0
    with open(path, "rb") as f:
        for off, size, h, data in got:
            assert off == pos
            pos += size
            if h is not None:
                f.seek(off)
                assert f.read(size) == data
    # The data extents are cut like files of their own: the 2 MiB run at 1 GiB gives the
    # chunks a stream of it (padded to the block) gives.
    at_1g = [g[:3] for g in got if g[2] is not None and (1 << 30) <= g[0] < (1 << 30) + 4 * MIB]
    alone = tmp_path / "alone"
    end = next(o + n for o, n, d in runs if d and o <= (1 << 30) < o + n)
    with open(path, "rb") as f:
        f.seek(1 << 30)
        alone.write_bytes(f.read(end - (1 << 30)))
    assert [(o - (1 << 30), n, h) for o, n, h in at_1g] == _stream(alone)


def test_a_file_of_nothing_but_a_hole(tmp_path):
    path = tmp_path / "zeros"
    with open(path, "wb") as f:
        f.truncate(10 * MIB)
    got = _pieces(path)
    assert [(g[0], g[1], g[2]) for g in got] == [(0, 10 * MIB, None)]
