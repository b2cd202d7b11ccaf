"""Metadata stores (see ``base.py`` for the interface)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .base import MetadataStore


def open_store(url: str) -> MetadataStore:
    """``sqlite:///abs/path.db`` (embedded) or ``mongodb://…`` (scale-out, later)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from .sqlite import SqliteStore

        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"sqlite URL needs a path: {url!r}")
        return SqliteStore(path)
    raise ValueError(f"unknown metadata store in {url!r}")
