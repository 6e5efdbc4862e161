"""The ``store`` fixture: every conformance test runs against each backend.

The store's clock is a ``FakeClock`` so leases, timers and retries are tested without waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from duro.store.postgres import PostgresStore
from duro.store.protocol import Store
from duro.store.sqlite import SQLiteStore


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    s: SQLiteStore | PostgresStore
    if request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "store.db"), clock=clock)
    else:
        s = PostgresStore(request.getfixturevalue("pg_database"), clock=clock)
    await s.start()
    try:
        yield s
    finally:
        await s.close()
