"""Storage drivers: where chunk bytes live (installed as ``gobi.drivers``).

The server stores every chunk through the small async interface in ``base.py``.
Backends (``local``, ``nfs``, ``s3``) and wrappers that embed other drivers
(``encrypted``, ``replicated``) all follow it, and one contract suite in ``tests/drivers``
runs against each combination. ``open_driver`` builds a driver tree from a setting such
as ``replicated(encrypted(local:///a), encrypted(s3://bucket/p?endpoint=…))`` so
deployments choose storage in configuration, not code (syntax: ``factory.py``,
docs/storage.md).
"""

from .base import (
    KeyUnavailable,
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    StorageDriver,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
    walk,
)
from .factory import SpecError, effective_spec, open_driver, parse_spec

__all__ = [
    "KeyUnavailable",
    "ObjectCorrupted",
    "ObjectInfo",
    "ObjectNotFound",
    "SpecError",
    "StorageDriver",
    "StorageError",
    "StoragePermissionError",
    "TransientStorageError",
    "effective_spec",
    "open_driver",
    "parse_spec",
    "walk",
]
