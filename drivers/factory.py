"""Build a storage driver from its URL-like setting.

    local:///var/lib/gobi/blobs      files under a directory
    (nfs://, s3:// and the encrypted / replicated wrappers join in the drivers issue)
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .base import StorageDriver


def open_driver(url: str) -> StorageDriver:
    parts = urlsplit(url)
    if parts.scheme == "local":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"local storage URL must not name a host: {url!r}")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"local storage URL needs an absolute path: {url!r}")
        from .local import LocalDriver

        return LocalDriver(path)
    raise ValueError(f"unknown storage driver in {url!r}")
