"""What the store's operations need from a SQL connection, whatever the database.

The operations in ``ops.py`` and ``tx.py`` are plain synchronous functions over one open
transaction, written once for every SQL store. They see a DB-API-shaped ``Connection`` (the
``sqlite3`` connection itself, or the PostgreSQL adapter in ``postgres.py``) and a ``Dialect``
for the few clauses that differ. SQL is written with ``?`` placeholders and in the subset both
databases share (``ON CONFLICT``, ``RETURNING``, ``LEAST``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """Row locking, which only a multi-writer database needs.

    SQLite runs one write transaction at a time, so reads are already current and nothing
    needs locking; PostgreSQL runs many, so an operation locks the rows it is about to change
    as it reads them, and polls skip rows another transaction holds.
    """

    name: str
    for_update: str = ""
    """Appended to a SELECT of rows the operation will change: waits for their other writers."""
    skip_locked: str = ""
    """Appended to a poll's SELECT: takes only rows no other transaction holds."""
    for_update_nowait: str = ""
    """Like ``for_update`` but fails at once (the operation is retried) instead of waiting:
    for locks taken against the usual order (a parent locking its children, a run locking
    another run), where waiting could deadlock."""
    writes_in_with: bool = False
    """``WITH x AS (INSERT …) UPDATE …`` runs: two writes in one statement, one round trip."""

    def skip_locked_of(self, *tables: str) -> str:
        """``skip_locked`` limited to some tables of a join (the others are only read)."""
        if not self.skip_locked:
            return ""
        return f" FOR UPDATE OF {', '.join(tables)} SKIP LOCKED"


SQLITE = Dialect("sqlite")
POSTGRES = Dialect(
    "postgresql",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    for_update_nowait=" FOR UPDATE NOWAIT",
    writes_in_with=True,
)
