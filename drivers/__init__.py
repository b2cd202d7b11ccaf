"""Storage drivers: where chunk bytes live (installed as ``gobi.drivers``).

The server stores every chunk through the small async interface in ``base.py``.
Implementations (``local`` now; ``nfs``, ``s3`` later) and wrappers that embed another
driver (``encrypted``, ``replicated``) all follow it, and one contract suite in
``tests/drivers`` runs against each. ``open_driver`` builds a driver from a URL-like
setting so deployments choose storage in configuration, not code.
"""

from .base import (
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    StorageDriver,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)
from .factory import open_driver

__all__ = [
    "ObjectCorrupted",
    "ObjectInfo",
    "ObjectNotFound",
    "StorageDriver",
    "StorageError",
    "StoragePermissionError",
    "TransientStorageError",
    "open_driver",
]
