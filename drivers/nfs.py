"""The ``nfs`` driver: the local driver's semantics made safe on an NFS mount.

NFS clients on several hosts may share the directory, and NFS breaks assumptions a
local file system keeps:

- ``O_EXCL`` and advisory locks are not reliable across clients (NFSv2/v3 and some
  servers): the driver uses neither. Temp files get a name unique per host, process and
  write; exclusive creation (``create``) links the temp file to the final name and, when
  the server answers ``EEXIST``, checks the temp file's link count, because a retransmitted
  LINK whose first reply was lost reports ``EEXIST`` although it succeeded.
- A file handle goes stale (``ESTALE``) when another host replaces or removes what it
  pointed at: every operation is retried a few times with a fresh path lookup before it is
  reported as ``TransientStorageError``.
- Close-to-open consistency: every read opens the file afresh, every write fsyncs the
  temp file before the rename (``COMMIT`` to stable storage) and then fsyncs the directory.
- The share must already be mounted: unlike ``local``, the driver never creates its root,
  since creating it under an absent mount would silently write to the local disk beneath.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import StorageError
from .local import LocalDriver


def filesystem_type(path: Path) -> str:
    """The type of the file system ``path`` lives on, from /proc/self/mountinfo."""
    try:
        target = os.path.realpath(path)
        best, fstype = "", "unknown"
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount_point = left.split()[4].replace("\\040", " ")
                inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, fstype = mount_point, right.split()[0]
        return fstype
    except (OSError, IndexError):
        return "unknown"


class NfsDriver(LocalDriver):
    kind = "nfs"
    stale_retries = 5

    def __init__(self, root: str | os.PathLike[str], *, ops: Any = os):
        super().__init__(root, ops=ops)

    def _prepare_root(self) -> None:
        if not self.root.is_dir():
            raise StorageError(f"nfs storage directory {self.root} does not exist (is the share mounted?)")

    @property
    def filesystem(self) -> str:
        return filesystem_type(self.root)

    def describe(self) -> str:
        return f"nfs://{self.root} ({self.filesystem})"
