"""Persistence: the ``Store`` protocol and its backends (internal to duro).

Only this package writes SQL. ``open_store(url)`` picks the backend from the URL scheme.
"""

from __future__ import annotations

from duro.store.protocol import Store


async def open_store(url: str) -> Store:
    """Open the store named by ``url``: ``sqlite:///path.db`` (default) or a bare file path."""
    if url.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f"PostgreSQL URLs are not supported yet ({url.split('@')[-1]}); use sqlite:///file.db"
        )
    if url.startswith("sqlite:") or "://" not in url:
        from duro.store.sqlite import SQLiteStore

        return await SQLiteStore.open(url)
    raise ValueError(f"unsupported database URL {url!r}: expected sqlite:///path/to/file.db")


__all__ = ["Store", "open_store"]
