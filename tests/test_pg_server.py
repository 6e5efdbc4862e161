"""The test setup's PostgreSQL: the shared server or a private cluster, a database per test."""

from __future__ import annotations

import pytest

from tests.pg_server import PgServer, private_server


def test_each_test_gets_its_own_database(pg_server: PgServer, pg_database: str) -> None:
    name = pg_database.rsplit("/", 1)[1]
    assert pg_database == pg_server.url(name)
    pg_server.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)", database=name)
    assert pg_server.psql("SELECT sum(x) FROM t", database=name) == "3"
    pg_server.drop_database(name)  # what the fixture does afterwards (again: IF EXISTS)
    assert pg_server.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0"


def test_sql_errors_are_raised(pg_server: PgServer, pg_database: str) -> None:
    with pytest.raises(RuntimeError, match="no_such_table"):
        pg_server.psql("SELECT * FROM no_such_table", database=pg_database.rsplit("/", 1)[1])


@pytest.mark.slow
def test_private_cluster_starts_serves_and_stops() -> None:
    """The path a user's machine without a running PostgreSQL takes."""
    server = private_server()
    try:
        assert server.private and server.port != 5432
        name = server.create_database()
        assert server.psql("SELECT current_database()", database=name) == name
        assert server.psql("SHOW fsync") == "off"
    finally:
        server.stop()
    with pytest.raises(RuntimeError):
        server.psql("SELECT 1")
