"""Shared fixtures: a real SQLite store in a temp directory, a client on it, and a real
PostgreSQL (found or started) with a database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from duro import Client
from tests.pg_server import PgServer, find_or_start


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on each store: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'duro.db'}"
    else:
        yield request.getfixturevalue("pg_database")


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    c = await Client.connect(db_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL: the one on 127.0.0.1:5432, or a private cluster started for the run."""
    server = find_or_start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """A database of the test's own on ``pg_server``, dropped afterwards; yields its URL."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)
