"""Persistence: the ``Store`` protocol and its backends (internal to duro).

Only this package writes SQL. ``open_store(url)`` picks the backend from the URL scheme.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from duro.errors import StoreError
from duro.store import migrate
from duro.store.migrate import SchemaStatus
from duro.store.protocol import Store
from duro.store.sqlite import sqlite_path
from duro.store.urls import is_postgres_url, redact


async def open_store(url: str) -> Store:
    """Open the store named by ``url``: ``sqlite:///path.db`` (default), a bare file path, or
    ``postgresql://user@host:port/database``."""
    if is_postgres_url(url):
        from duro.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    if url.startswith("sqlite:") or "://" not in url:
        from duro.store.sqlite import SQLiteStore

        return await SQLiteStore.open(url)
    raise ValueError(
        f"unsupported database URL {redact(url)!r}: expected sqlite:///path/to/file.db or "
        "postgresql://user@host:port/database"
    )


async def schema_status(url: str) -> SchemaStatus:
    """The database's schema versions (applied and pending), read without migrating."""
    if is_postgres_url(url):
        return await _postgres_status(url)
    if not (url.startswith("sqlite:") or "://" not in url):
        await open_store(url)  # raises the error naming what is wrong with the URL
    path = sqlite_path(url)

    def read() -> SchemaStatus:
        if path == ":memory:" or not Path(path).exists():
            return migrate.status_sqlite(sqlite3.connect(":memory:"))  # nothing applied yet
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return migrate.status_sqlite(conn)
        finally:
            conn.close()

    try:
        return await asyncio.to_thread(read)
    except sqlite3.OperationalError as e:
        raise StoreError(f"cannot read database {path!r}: {e}") from e


async def migrate_schema(url: str) -> SchemaStatus:
    """Apply pending migrations (opening a store does this too); returns the new status."""
    store = await open_store(url)
    await store.close()
    return await schema_status(url)


async def _postgres_status(url: str) -> SchemaStatus:
    import asyncpg

    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise StoreError(f"cannot connect to PostgreSQL at {redact(url)}: {e}") from e
    try:
        return await migrate.status_postgres(conn)
    finally:
        await conn.close()


__all__ = ["SchemaStatus", "Store", "migrate_schema", "open_store", "schema_status"]
