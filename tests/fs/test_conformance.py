"""POSIX conformance of the mount, written from the Linux man pages (issue 17, item 7), each
scenario run side by side on the mount and on a local directory: the same calls must give
the same results. This module grows with issue 17; what the mount still refuses on purpose
(hard links, special files) is in tests/fs/test_posix.py.

So far: directory listings with ``.`` and ``..`` (getdents(2), readdir(3)); link counts
(stat(2) ``st_nlink``: a directory has 2 + one per subdirectory; a file unlinked while open
has 0, fstat(2) through the open descriptor).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _links(root: Path) -> list:
    """Link counts through a sequence of directory changes."""
    out = []
    d = root / "d"
    d.mkdir()
    out.append(("empty dir", os.stat(d).st_nlink))
    for name in ("a", "b", "c"):
        (d / name).mkdir()
    (d / "file").write_bytes(b"x")
    out.append(("3 subdirs + a file", os.stat(d).st_nlink))
    (d / "a" / "deeper").mkdir()
    out.append(("a grandchild", os.stat(d).st_nlink, os.stat(d / "a").st_nlink))
    (root / "e").mkdir()
    os.rename(d / "b", root / "e" / "b")           # a subdirectory moves to another parent
    out.append(("moved out", os.stat(d).st_nlink, os.stat(root / "e").st_nlink))
    os.rmdir(d / "c")
    out.append(("removed", os.stat(d).st_nlink))
    os.rename(d / "file", d / "a" / "file")        # files do not count
    out.append(("file moved", os.stat(d).st_nlink, os.stat(d / "a").st_nlink))

    f = root / "open-unlinked"
    f.write_bytes(b"still readable")
    fd = os.open(f, os.O_RDONLY)
    try:
        out.append(("before unlink", os.fstat(fd).st_nlink))
        os.unlink(f)
        out.append(("after unlink", os.fstat(fd).st_nlink, os.pread(fd, 100, 0)))
    finally:
        os.close(fd)
    return out


def _listing(root: Path) -> list:
    out = []
    d = root / "list"
    d.mkdir()
    for i in range(40):
        (d / f"f{i:02}").write_bytes(b"")
    (d / "sub").mkdir()
    names = subprocess.run(["ls", "-a", str(d)], capture_output=True, text=True, check=True).stdout.split()
    out.append(("ls -a", names))
    out.append(("dot is the directory", os.stat(d / ".").st_ino == os.stat(d).st_ino))
    out.append(("dotdot is the parent", os.stat(d / "..").st_ino == os.stat(root).st_ino))
    out.append(("sub/..", os.stat(d / "sub" / "..").st_ino == os.stat(d).st_ino))
    # find walks by readdir (and checks link counts to prune): every entry exactly once.
    found = subprocess.run(["find", str(d)], capture_output=True, text=True, check=True).stdout.split()
    out.append(("find", sorted(os.path.relpath(p, d) for p in found)))
    return out


def test_link_counts_match_a_local_filesystem(mnt, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    assert _links(mnt.path) == _links(local)


def test_listings_with_dots_match_a_local_filesystem(mnt, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    assert _listing(mnt.path) == _listing(local)
    # The mount's root lists its dots too (``ls -la`` of the mount).
    names = subprocess.run(["ls", "-a", str(mnt.path)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names[:2] == [".", ".."]
