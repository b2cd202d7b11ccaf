"""Metadata stores (see ``base.py`` for the interface)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .base import MetadataStore


def open_store(url: str, *, event_retention: float | None = None) -> MetadataStore:
    """``sqlite:///abs/path.db`` (embedded) or ``mongodb://…`` / ``mongodb+srv://…``
    (scale-out). ``event_retention`` lets a store enforce retention itself (MongoDB: a TTL
    index); ``prune`` enforces it everywhere."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from .sqlite import SqliteStore

        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"sqlite URL needs a path: {url!r}")
        return SqliteStore(path)
    if parts.scheme in ("mongodb", "mongodb+srv"):
        from .mongo import MongoStore

        return MongoStore(url, event_retention=event_retention)
    raise ValueError(f"unknown metadata store in {url!r}")
