"""Shared fixtures: a real SQLite store in a temp directory, and a client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from duro import Client


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'duro.db'}"


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    c = await Client.connect(db_url)
    try:
        yield c
    finally:
        await c.close()
