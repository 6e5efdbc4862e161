"""Races only a multi-writer store has: PostgreSQL transactions meeting on the same rows.

Some tests hold an operation inside its transaction (``Pause``: the operation's greenlet waits
on an event) to make an interleaving happen every time rather than once in a while.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import asyncpg.connection
import pytest

from duro import commands as cmd
from duro.engine.start import StartRequest
from duro.history import EventType, RunStatus
from duro.retry import RetryPolicy
from duro.store import ops
from duro.store.bridge import await_
from duro.store.postgres import PostgresStore
from duro.store.protocol import WorkflowTaskCompletion, WorkflowTaskLease

NS = "default"


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(pg_database)
    try:
        yield store
    finally:
        await store.close()


class Pause:
    """While armed, the next call of ``ops.<name>`` stops inside its transaction until
    ``release`` is set (the transaction keeps its locks meanwhile)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.armed = True
        original: Callable[..., Any] = getattr(ops, name)

        def paused(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if self.armed:
                self.armed = False
                self.reached.set()
                await_(self.release.wait())
            return result

        monkeypatch.setattr(ops, name, paused)


async def complete(store: PostgresStore, lease: WorkflowTaskLease, *commands: cmd.Command) -> Any:
    return await store.complete_workflow_task(
        lease, WorkflowTaskCompletion(list(commands), lease.started_time, worker_id="w1")
    )


async def finish(store: PostgresStore, workflow_id: str, queue: str) -> None:
    """Complete the run: an event that arrived while its task ran had that task's
    completion refused (the code must see it first), so complete the next task."""
    for _ in range(3):
        if (await store.describe(NS, workflow_id)).status == RunStatus.COMPLETED:
            return
        for lease in await store.poll_workflow_tasks(NS, queue, "w1", 10):
            await complete(store, lease, cmd.CompleteWorkflow(lease.workflow_id))
    assert (await store.describe(NS, workflow_id)).status == RunStatus.COMPLETED


def activity(seq: int, queue: str) -> cmd.ScheduleActivity:
    return cmd.ScheduleActivity(seq, "act", [seq], queue, 30.0, RetryPolicy().to_dict())


async def test_a_signal_to_the_current_run_follows_a_continue_as_new(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal waits for the run's lock while that run continues as new: it must reach the
    new run, not fail with 'not found'."""
    await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    pause = Pause(monkeypatch, "_leased_run")
    can = asyncio.create_task(complete(pg, lease, cmd.ContinueAsNew([1])))
    await pause.reached.wait()  # the continue-as-new holds the first run's row
    signal = asyncio.create_task(pg.signal_workflow(NS, "wf", None, "go", ["x"]))
    await asyncio.sleep(0.2)  # the signal now waits for that row
    pause.release.set()
    await can
    await signal
    current = await pg.describe(NS, "wf")
    assert current.run_id != lease.run_id and current.status == RunStatus.RUNNING
    history = await pg.get_history(current.run_id)
    assert EventType.WORKFLOW_EXECUTION_SIGNALED in [e.type for e in history]


async def test_a_run_closing_while_an_activity_result_arrives_does_not_deadlock(
    pg: PostgresStore,
) -> None:
    """The completion locks the run, then deletes its tasks; the activity result must take
    the same order (run, then task) or the two deadlock (a one-second stall each time)."""
    for i in range(20):
        queue = f"q{i}"
        await pg.start_workflow(StartRequest(NS, f"wf{i}", "Agent", queue, []))
        [lease] = await pg.poll_workflow_tasks(NS, queue, "w1", 10)
        await complete(pg, lease, activity(1, queue), activity(2, queue))
        first, second = await pg.poll_activity_tasks(NS, queue, "w1", 10)
        await pg.complete_activity_task(first, "x")
        [lease] = await pg.poll_workflow_tasks(NS, queue, "w1", 10)
        outcomes = await asyncio.gather(
            complete(pg, lease, cmd.CompleteWorkflow("done")),
            pg.complete_activity_task(second, "y"),
            return_exceptions=True,
        )
        assert not [o for o in outcomes if isinstance(o, Exception) and "lease" not in str(o)]
        await finish(pg, f"wf{i}", queue)
    assert pg.retries["DeadlockDetectedError"] == 0, pg.retries


@pytest.mark.parametrize("policy", ["terminate", "abandon"])
async def test_a_parent_and_its_child_closing_together_do_not_deadlock(
    pg: PostgresStore, policy: str
) -> None:
    for i in range(10):
        queue = f"{policy}{i}"
        await pg.start_workflow(StartRequest(NS, f"p{i}", "Agent", queue, []))
        [lease] = await pg.poll_workflow_tasks(NS, queue, "w1", 10)
        await complete(pg, lease, cmd.StartChildWorkflow(1, "Agent", f"c{i}", [], queue, policy))
        leases = {x.workflow_id: x for x in await pg.poll_workflow_tasks(NS, queue, "w1", 10)}
        await asyncio.gather(
            complete(pg, leases[f"p{i}"], cmd.CompleteWorkflow("p")),
            complete(pg, leases[f"c{i}"], cmd.CompleteWorkflow("c")),
            return_exceptions=True,
        )
        await finish(pg, f"p{i}", queue)
        assert (await pg.describe(NS, f"c{i}")).status.closed
    assert pg.retries["DeadlockDetectedError"] == 0, pg.retries


async def test_a_commit_whose_connection_drops_on_release_is_not_run_again(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool resets a connection it takes back; if that fails after the COMMIT, the
    operation must not be retried (a signal would arrive twice)."""
    run_id = (await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))).run_id
    admin = await asyncpg.connect(pg_database)
    original = asyncpg.connection.Connection._reset
    armed = True

    async def reset(self: asyncpg.Connection) -> None:
        nonlocal armed
        if armed:
            armed = False
            await admin.execute("SELECT pg_terminate_backend($1)", self.get_server_pid())
            await asyncio.sleep(0.2)
        await original(self)

    # The pool's own step of the reset (the store adds nothing to it).
    monkeypatch.setattr(asyncpg.connection.Connection, "_reset", reset)
    try:
        await pg.signal_workflow(NS, "wf", None, "go", ["once"])
    finally:
        await admin.close()
    assert not armed
    history = await pg.get_history(run_id)
    assert [e.type for e in history].count(EventType.WORKFLOW_EXECUTION_SIGNALED) == 1
