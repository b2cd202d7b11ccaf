"""Access times: when a read moves a node's atime, per the mount's option.

``-o relatime`` (the default, as for local filesystems since Linux 2.6.30): a read moves the
atime only when it is not newer than the mtime or ctime, or is a day old, so ``mutt`` and
``tmpwatch`` can tell "read since written" while a file read in a loop costs no write at
all. ``-o strictatime``: every read. ``-o noatime``: never. A ``utimensat`` that sets the
atime (``touch -a``) always does.

The atime is the mount's own, like ext4's on one disk: kept in the mirror (it survives a
remount), never uploaded (a read must not cost a request, and another machine's reads are
not this one's), and shown to other mounts as nothing (they keep their own).
"""

from __future__ import annotations

#: The atime options of a mount, and the default.
MODES = ("relatime", "strictatime", "noatime")
DEFAULT = "relatime"
#: relatime: an atime older than this moves on the next read whatever the mtime says.
RELATIME_MAX_AGE_NS = 24 * 3600 * 10**9


def split_options(options: list[str]) -> tuple[str, list[str]]:
    """The atime mode among FUSE ``-o`` options (the last one given wins), and the options
    left for the kernel. ``noatime`` stays among them (the kernel then keeps no atime of
    its own either); ``relatime`` and ``strictatime`` are the mount's business only."""
    mode = DEFAULT
    rest: list[str] = []
    for o in options:
        if o in MODES:
            mode = o
        else:
            rest.append(o)
    if mode == "noatime":
        rest.append("noatime")
    return mode, rest


def due(mode: str, atime_ns: int, mtime_ns: int, ctime_ns: int, now_ns: int) -> bool:
    """Does a read at ``now_ns`` move an atime of ``atime_ns`` (0: never set, which reads
    as the mtime)?"""
    if mode == "noatime":
        return False
    if mode == "strictatime":
        return True
    atime = atime_ns or mtime_ns
    return atime <= mtime_ns or atime <= ctime_ns or now_ns - atime >= RELATIME_MAX_AGE_NS
