"""pytest fixtures for duro users: ``duro_env``, ``duro_client`` and ``duro_worker``.

pytest loads this module through duro's ``pytest11`` entry point, so installing duro is the
whole setup (``-p no:duro`` turns it off). Each test gets a fresh ``WorkflowEnvironment``: an
in-memory SQLite store, a client that skips idle time while a result is awaited, and a worker
for the workflows and activities that the ``duro_workflows`` and ``duro_activities`` fixtures
return. Override those (in a ``conftest.py`` or a test module) to register yours, and
``duro_env_options`` to pass other ``WorkflowEnvironment`` arguments::

    @pytest.fixture
    def duro_workflows():
        return [Approval]

``duro_env`` is an async fixture, so it needs pytest-asyncio; it is declared with
``pytest_asyncio.fixture``, which works in both of its modes (``strict``, the default, where
async tests carry ``@pytest.mark.asyncio``, and ``auto``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from duro.client import Client
from duro.testing.environment import WorkflowEnvironment
from duro.worker import Worker


@pytest.fixture
def duro_workflows() -> list[Any]:
    """Workflows the ``duro_env`` worker registers. Override it; default none."""
    return []


@pytest.fixture
def duro_activities() -> list[Callable[..., Any]]:
    """Activities the ``duro_env`` worker registers. Override it; default none."""
    return []


@pytest.fixture
def duro_env_options() -> dict[str, Any]:
    """Other ``WorkflowEnvironment`` arguments (``time_skipping``, ``task_queue``...)."""
    return {}


async def _duro_env(
    duro_workflows: list[Any],
    duro_activities: list[Callable[..., Any]],
    duro_env_options: dict[str, Any],
) -> AsyncIterator[WorkflowEnvironment]:
    """A started ``WorkflowEnvironment`` for one test, closed after it."""
    env = WorkflowEnvironment(
        workflows=duro_workflows, activities=duro_activities, **duro_env_options
    )
    async with env:
        yield env


def _duro_env_needs_pytest_asyncio() -> WorkflowEnvironment:
    pytest.fail(
        "the duro_env fixture (and duro_client, duro_worker) is async and needs pytest-asyncio: "
        "pip install pytest-asyncio",
        pytrace=False,
    )


def _async_fixture() -> Callable[..., Any] | None:
    try:
        import pytest_asyncio
    except ImportError:
        return None
    return pytest_asyncio.fixture


_declare = _async_fixture()
duro_env = (
    _declare(_duro_env, name="duro_env")
    if _declare is not None
    else pytest.fixture(_duro_env_needs_pytest_asyncio, name="duro_env")
)


@pytest.fixture
def duro_client(duro_env: WorkflowEnvironment) -> Client:
    """The environment's client: ``await duro_client.execute_workflow(...)`` skips idle time."""
    return duro_env.client


@pytest.fixture
def duro_worker(duro_env: WorkflowEnvironment) -> Worker:
    """The environment's worker (for ``statistics()``, or to check what it registers)."""
    if duro_env.worker is None:
        pytest.fail(
            "duro_worker: the environment has no worker; override the duro_workflows or "
            "duro_activities fixture to register some",
            pytrace=False,
        )
    return duro_env.worker
