"""Versioned schema migrations: numbered SQL files under ``migrations/<dialect>/``.

A database records each applied version in ``schema_migrations``. Opening a store applies the
missing ones in order, inside one transaction; a database whose newest version is unknown to this
code is refused (``SchemaError``) rather than written to by an older worker.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg
    import asyncpg.pool

from duro.errors import SchemaError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for ``dialect`` (``sqlite``, ``postgres``), in version order."""
    folder = resources.files("duro.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda mig: mig.version)
    for i, mig in enumerate(found, start=1):
        if mig.version != i:
            raise SchemaError(f"migrations for {dialect} skip version {i}")
    return found


@dataclass(frozen=True)
class SchemaStatus:
    """What ``duro db status`` prints."""

    current: int
    """The newest version applied to the database (0: empty)."""
    latest: int
    """The newest version this code knows."""
    applied: list[tuple[int, str, float]]
    """``(version, name, applied_at)`` of each applied migration."""
    pending: list[tuple[int, str]]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest


def status_sqlite(conn: sqlite3.Connection) -> SchemaStatus:
    """The schema state of a SQLite database, without changing it."""
    known = migrations("sqlite")
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    applied: list[tuple[int, str, float]] = []
    if exists:
        applied = [
            (int(r[0]), str(r[1]), float(r[2]))
            for r in conn.execute(
                "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
            ).fetchall()
        ]
    current = max((v for v, _, _ in applied), default=0)
    pending = [(m.version, m.name) for m in known if m.version > current]
    return SchemaStatus(current, len(known), applied, pending)


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Bring the database up to date; returns its schema version."""
    known = migrations("sqlite")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
        ).fetchone()[0]
        _check_not_newer(current, len(known))
        for mig in known[current:]:
            for statement in _statements(mig.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(known)


_PG_LOCK = 0x6475726F  # "duro": one migrator at a time across processes and machines


async def status_postgres(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
) -> SchemaStatus:
    """The schema state of a PostgreSQL database, without changing it."""
    known = migrations("postgres")
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied: list[tuple[int, str, float]] = []
    if exists:
        applied = [
            (int(r[0]), str(r[1]), float(r[2]))
            for r in await conn.fetch(
                "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
            )
        ]
    current = max((v for v, _, _ in applied), default=0)
    pending = [(m.version, m.name) for m in known if m.version > current]
    return SchemaStatus(current, len(known), applied, pending)


async def migrate_postgres(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> int:
    """Bring the database up to date in one transaction; returns its schema version.

    An advisory lock makes concurrent workers starting on a new database take turns: the
    first migrates, the others then find nothing to do.
    """
    known = migrations("postgres")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        _check_not_newer(int(current), len(known))
        for mig in known[current:]:
            for statement in _statements(mig.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                mig.version,
                mig.name,
                time.time(),
            )
    return len(known)


def _check_not_newer(current: int, latest: int) -> None:
    if current > latest:
        raise SchemaError(
            f"database schema version {current} is newer than this duro knows "
            f"({latest}); upgrade duro before running it against this database"
        )


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (our files keep ';' out of strings and comments)."""
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
