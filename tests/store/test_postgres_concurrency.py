"""Races only a multi-writer store has: PostgreSQL transactions meeting on the same rows.

Some tests hold an operation inside its transaction (``Pause``: the operation's greenlet waits
on an event) to make an interleaving happen every time rather than once in a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import asyncpg.connection
import pytest

from duro import commands as cmd
from duro.engine.model import WorkflowTaskState
from duro.engine.start import IdConflictPolicy, IdReusePolicy, StartRequest
from duro.errors import (
    LeaseLostError,
    StoreError,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
)
from duro.history import EventType, RunStatus
from duro.retry import RetryPolicy
from duro.store import ops, postgres
from duro.store import tx as tx_module
from duro.store.bridge import await_
from duro.store.postgres import PostgresStore
from duro.store.protocol import ActivityTaskLease, WorkflowTaskCompletion, WorkflowTaskLease
from duro.store.tx import NeedsLocks, Unlocked

NS = "default"


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(pg_database)
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _admin(pg_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, beside the store's, to look at or change rows."""
    conn = await asyncpg.connect(pg_database)
    try:
        yield conn
    finally:
        await conn.close()


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


# -- a step without a transaction (Unlocked): read, then one guarded statement ------------------


async def _activity_out(pg: PostgresStore, queue: str = "q") -> tuple[ActivityTaskLease, int]:
    """A run whose first task scheduled activity 1, leased to w1; the task's last event id."""
    await pg.start_workflow(StartRequest(NS, "wf", "Agent", queue, []))
    [lease] = await pg.poll_workflow_tasks(NS, queue, "w1", 10)
    done = await complete(pg, lease, activity(1, queue))
    [act] = await pg.poll_activity_tasks(NS, queue, "w1", 10)
    return act, done.last_event_id


def _step(*commands: cmd.Command) -> WorkflowTaskCompletion:
    return WorkflowTaskCompletion(
        list(commands), 0.0, worker_id="w1", eager_activity_queue="q", eager_activities=1
    )


def _statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements every connection sends from now on, in order."""
    sent: list[str] = []
    for name in ("execute", "fetch"):
        original = getattr(asyncpg.connection.Connection, name)

        async def recorded(
            self: Any, query: str, *args: Any, _original: Any = original, **kw: Any
        ) -> Any:
            sent.append(query)
            return await _original(self, query, *args, **kw)

        monkeypatch.setattr(asyncpg.connection.Connection, name, recorded)
    return sent


def _before_the_write(monkeypatch: pytest.MonkeyPatch, action: Callable[[Any], Any]) -> list[int]:
    """Run ``action(tx)`` (a coroutine function) once, between a step's read and its write."""
    calls: list[int] = []
    original = tx_module._write_unlocked

    def interleaved(tx: Any, *args: Any) -> Any:
        first = not calls
        calls.append(1)
        if first:  # (an action that writes a step of its own passes straight through)
            await_(action(tx))
        return original(tx, *args)

    monkeypatch.setattr(tx_module, "_write_unlocked", interleaved)
    return calls


async def test_a_step_is_one_read_and_one_statement_without_a_transaction(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    act, seen = await _activity_out(pg)
    sent = _statements(monkeypatch)
    step = await pg.complete_activity_and_task(act, "out", seen, _step(activity(2, "q")))
    assert step.completion is not None and step.completion.accepted
    [second] = step.completion.activity_leases  # leased in the same statement
    assert second.seq == 2 and second.task_id > act.task_id
    assert len(sent) == 2 and not any(s.startswith(("BEGIN", "COMMIT")) for s in sent), sent
    assert not pg.retries
    history = await pg.get_history(act.run_id)
    assert [e.type for e in history][3:] == [
        EventType.ACTIVITY_TASK_COMPLETED,
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.ACTIVITY_TASK_SCHEDULED,
    ]
    assert await pg.poll_activity_tasks(NS, "q", "w2", 10) == []  # the new task is leased
    await pg.complete_activity_task(second, "two")
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    assert lease.history[-1].attrs["result"] == "two"


@pytest.mark.parametrize("change", ["signal", "heartbeat", "run row"])
async def test_a_step_that_raced_another_writer_writes_nothing_and_is_run_with_locks(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Between the step's read and its write another transaction changes the run's row (a
    signal; an update that leaves next_event_id alone) or the task's (a heartbeat): the
    statement writes nothing, and the step runs again with locks, seeing the change."""
    act, seen = await _activity_out(pg)
    admin = await asyncpg.connect(pg_database)

    async def other_writer(_tx: Any) -> None:
        if change == "signal":
            await pg.signal_workflow(NS, "wf", None, "nudge", [1])
        elif change == "heartbeat":
            assert await pg.heartbeat_activity_task(act, {"at": 1})
        else:
            await admin.execute(
                "UPDATE executions SET priority = priority WHERE run_id = $1", act.run_id
            )

    calls = _before_the_write(monkeypatch, other_writer)
    try:
        step = await pg.complete_activity_and_task(act, "out", seen, _step(activity(2, "q")))
    finally:
        await admin.close()
    assert len(calls) == 1 and pg.retries == {"ConcurrencyConflictError": 1}
    history = [e.type for e in await pg.get_history(act.run_id)]
    assert history.count(EventType.ACTIVITY_TASK_COMPLETED) == 1
    if change == "signal":  # the run moved on: the result is recorded alone, the task re-run
        assert step.completion is None
        assert history[3:] == [
            EventType.WORKFLOW_EXECUTION_SIGNALED,
            EventType.ACTIVITY_TASK_COMPLETED,
        ]
    else:  # the step itself still applies, once
        assert step.completion is not None and step.completion.accepted
        assert history[3:] == [
            EventType.ACTIVITY_TASK_COMPLETED,
            EventType.WORKFLOW_TASK_COMPLETED,
            EventType.ACTIVITY_TASK_SCHEDULED,
        ]


async def test_a_step_whose_lease_was_lost_after_its_read_writes_nothing(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    act, seen = await _activity_out(pg)
    admin = await asyncpg.connect(pg_database)

    async def lose_lease(_tx: Any) -> None:
        await admin.execute("UPDATE tasks SET lease_id = NULL WHERE task_id = $1", act.task_id)

    _before_the_write(monkeypatch, lose_lease)
    try:
        with pytest.raises(LeaseLostError):
            await pg.complete_activity_and_task(act, "out", seen, _step(activity(2, "q")))
    finally:
        await admin.close()
    assert len(await pg.get_history(act.run_id)) == 3


async def test_a_step_that_closes_the_run_is_one_read_and_one_statement(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close deletes the run's task and timer rows in the same statement (here another
    activity still out and a timer still set) and wakes whoever waits for the run to close."""
    await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    done = await complete(pg, lease, activity(1, "q"), activity(2, "q"), cmd.StartTimer(3, 3600))
    first, _second = await pg.poll_activity_tasks(NS, "q", "w1", 10)
    closed = ("closed", NS, "wf")
    before = pg.version(closed)
    sent = _statements(monkeypatch)
    step = await pg.complete_activity_and_task(
        first, "out", done.last_event_id, _step(cmd.CompleteWorkflow("all done"))
    )
    assert step.completion is not None and step.completion.accepted
    assert len(sent) == 2 and not any(s.startswith(("BEGIN", "COMMIT")) for s in sent), sent
    assert not pg.retries and pg.version(closed) > before
    outcome = await pg.run_outcome(NS, "wf")
    assert outcome.status == RunStatus.COMPLETED and outcome.result == "all done"
    history = [e.type for e in await pg.get_history(first.run_id)]
    assert history[-3:] == [
        EventType.ACTIVITY_TASK_COMPLETED,
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.WORKFLOW_EXECUTION_COMPLETED,
    ]
    async with _admin(pg_database) as admin:
        for table in ("tasks", "timers"):
            left = await admin.fetchval(
                f"SELECT count(*) FROM {table} WHERE run_id = $1", first.run_id
            )
            assert left == 0, table


@pytest.mark.parametrize("policy", ["terminate", "abandon"])
async def test_a_parent_closing_with_a_running_child_to_end_takes_locks(
    pg: PostgresStore, policy: str
) -> None:
    """The one statement does not end children: the read finds one to end and the close
    takes the locked path, which terminates it. An abandoned child needs nothing."""
    await pg.start_workflow(StartRequest(NS, "p", "Agent", "q", []))
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    await complete(pg, lease, cmd.StartChildWorkflow(1, "Agent", "c", [], "q", policy))
    leases = {x.workflow_id: x for x in await pg.poll_workflow_tasks(NS, "q", "w1", 10)}
    result = await complete(pg, leases["p"], cmd.CompleteWorkflow("p"))
    assert result.accepted
    assert (await pg.describe(NS, "p")).status == RunStatus.COMPLETED
    child = (await pg.describe(NS, "c")).status
    if policy == "terminate":
        assert pg.retries == {"needs locks": 1} and child == RunStatus.TERMINATED
    else:
        assert not pg.retries and child == RunStatus.RUNNING


async def test_a_child_closing_takes_locks_to_tell_its_parent(pg: PostgresStore) -> None:
    await pg.start_workflow(StartRequest(NS, "p", "Agent", "q", []))
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    await complete(pg, lease, cmd.StartChildWorkflow(1, "Agent", "c", [], "q", "terminate"))
    leases = {x.workflow_id: x for x in await pg.poll_workflow_tasks(NS, "q", "w1", 10)}
    assert (await complete(pg, leases["c"], cmd.CompleteWorkflow("c"))).accepted
    assert pg.retries == {"needs locks": 1}
    await complete(pg, leases["p"])  # the parent's task, running meanwhile, had it buffered
    parent = [e.type for e in await pg.get_history(leases["p"].run_id)]
    assert parent[-1] == EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED


async def test_a_close_with_an_accepted_update_unfinished_takes_locks_and_fails_it(
    pg: PostgresStore,
) -> None:
    await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    await complete(pg, lease, activity(1, "q"))
    request = await pg.submit_update(NS, "wf", None, "set", [1], "u1")
    [update] = await pg.poll_queries(NS, "q", "w1", 10)
    await pg.accept_update(update.query_id, update.lease_id)
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    assert (await complete(pg, lease, cmd.CompleteWorkflow("early"))).accepted
    assert pg.retries == {"needs locks": 1}
    outcome = await pg.take_query_outcome(request)
    assert outcome.done and outcome.error is not None and "closed" in outcome.error


async def test_a_result_the_run_cannot_take_in_one_step_is_written_with_locks(
    pg: PostgresStore,
) -> None:
    """A signal came first: the result is recorded alone and a workflow task queued, which
    the one statement does not write; the read finds that out and the step takes locks."""
    act, seen = await _activity_out(pg)
    await pg.signal_workflow(NS, "wf", None, "nudge", [1])
    step = await pg.complete_activity_and_task(act, "out", seen, _step(activity(2, "q")))
    assert step.completion is None and pg.retries == {"needs locks": 1}
    history = [e.type for e in await pg.get_history(act.run_id)]
    assert history[3:] == [EventType.WORKFLOW_EXECUTION_SIGNALED, EventType.ACTIVITY_TASK_COMPLETED]


async def test_a_connection_lost_during_a_steps_statement_is_an_ambiguous_commit(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one statement is the commit: when its connection drops, whether it applied is
    unknown, so it is not run again."""
    act, seen = await _activity_out(pg)
    admin = await asyncpg.connect(pg_database)

    async def drop(tx: Any) -> None:
        await admin.execute("SELECT pg_terminate_backend($1)", tx.conn.conn.get_server_pid())
        await asyncio.sleep(0.2)

    _before_the_write(monkeypatch, drop)
    try:
        with pytest.raises(StoreError, match="may or may not have been applied"):
            await pg.complete_activity_and_task(act, "out", seen, _step(activity(2, "q")))
    finally:
        await admin.close()
    assert len(await pg.get_history(act.run_id)) == 3  # here, it had not


def test_an_unlocked_operation_sends_only_its_armed_statement() -> None:
    """Any other write is refused before it is sent: unsent, it can still run with locks."""
    unlocked = Unlocked(lambda notes: ("duro", ""))
    with pytest.raises(NeedsLocks):
        unlocked.check_write()
    unlocked.armed = True
    unlocked.check_write()
    with pytest.raises(RuntimeError):  # after the statement that committed, never
        unlocked.check_write()


def test_a_write_is_told_from_a_read_by_its_statement_not_by_words_in_its_strings() -> None:
    """The connection refuses writes by what a statement does: a read that mentions
    ``'update'`` in a string literal is still a read, and a write is still one."""
    read = "SELECT EXISTS (SELECT 1 FROM queries q WHERE q.kind = 'update' AND q.done = ?)"
    assert postgres._translate(read) == (
        "SELECT EXISTS (SELECT 1 FROM queries q WHERE q.kind = 'update' AND q.done = $1)",
        True,
        False,
    )
    assert postgres._translate("UPDATE queries SET done = 1 WHERE kind = 'update'")[2]
    assert postgres._translate("WITH d AS (DELETE FROM tasks) SELECT 'x'")[2]


async def test_a_workflow_task_completion_is_one_read_and_one_statement(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    sent = _statements(monkeypatch)
    done = await complete(pg, lease, activity(1, "q"), cmd.StartTimer(2, 60.0))
    assert done.accepted and len(sent) == 2 and not pg.retries, sent
    history = [e.type for e in await pg.get_history(lease.run_id)]
    assert history[1:] == [
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.ACTIVITY_TASK_SCHEDULED,
        EventType.TIMER_STARTED,
    ]
    assert await pg.poll_workflow_tasks(NS, "q", "w2", 10) == []  # its row is gone
    assert await pg.next_timer_time() is not None
    [act] = await pg.poll_activity_tasks(NS, "q", "w2", 10)
    assert act.seq == 1


async def test_a_workflow_task_completion_racing_a_signal_is_written_with_locks(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal arrives between the completion's read and its write: the statement writes
    nothing; with locks the signal, buffered while the task ran, follows the task's events and
    schedules the next task."""
    await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)

    async def signal(_tx: Any) -> None:
        await pg.signal_workflow(NS, "wf", None, "nudge", [1])

    _before_the_write(monkeypatch, signal)
    done = await complete(pg, lease, activity(1, "q"))
    assert done.accepted and pg.retries == {"ConcurrencyConflictError": 1}
    history = [e.type for e in await pg.get_history(lease.run_id)]
    assert history[1:] == [
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.ACTIVITY_TASK_SCHEDULED,
        EventType.WORKFLOW_EXECUTION_SIGNALED,  # flushed after the task's events
    ]
    [again] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)  # so the code sees it
    assert again.history[-1].type == EventType.WORKFLOW_EXECUTION_SIGNALED


async def test_a_step_whose_run_another_transaction_holds_takes_the_locked_path_at_once(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one statement does not wait for a row lock (it could wait past its timeout, and
    then its outcome would look unknown): it fails at once and the locked path waits."""
    act, seen = await _activity_out(pg)
    admin = await asyncpg.connect(pg_database)
    holder = admin.transaction()

    async def hold_the_run(_tx: Any) -> None:
        await holder.start()
        await admin.execute("SELECT 1 FROM executions WHERE run_id = $1 FOR UPDATE", act.run_id)

        async def release() -> None:
            await asyncio.sleep(0.2)
            await holder.commit()

        asyncio.get_running_loop().create_task(release())

    _before_the_write(monkeypatch, hold_the_run)
    try:
        step = await pg.complete_activity_and_task(act, "out", seen, _step(activity(2, "q")))
    finally:
        await admin.close()
    assert step.completion is not None and step.completion.accepted
    assert pg.retries == {"LockNotAvailableError": 1}
    history = [e.type for e in await pg.get_history(act.run_id)]
    assert history.count(EventType.ACTIVITY_TASK_COMPLETED) == 1


async def test_code_failing_after_a_steps_statement_is_an_ambiguous_commit_not_a_retry(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    act, seen = await _activity_out(pg)

    def broken(*args: Any) -> None:
        raise KeyError("after the commit")

    monkeypatch.setattr(tx_module, "_activity_lease", broken)
    with pytest.raises(StoreError, match="may or may not have been applied"):
        await pg.complete_activity_and_task(act, "out", seen, _step(activity(2, "q")))
    assert not pg.retries  # not run a second time
    history = [e.type for e in await pg.get_history(act.run_id)]
    assert history[3:] == [  # here it had applied, once
        EventType.ACTIVITY_TASK_COMPLETED,
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.ACTIVITY_TASK_SCHEDULED,
    ]


@pytest.mark.parametrize("eager", [False, True])
async def test_a_start_of_a_new_id_is_one_read_and_one_statement(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch, eager: bool
) -> None:
    """The run's row goes in with its state after the start (no update of a row just
    inserted), with its first event, its first workflow task (leased at once to an eager
    worker) and its timeout timers."""
    sent = _statements(monkeypatch)
    started = await pg.start_workflow(
        StartRequest(
            NS,
            "wf",
            "Agent",
            "q",
            [1],
            run_timeout=60.0,
            execution_timeout=600.0,
            eager_worker_id="w1" if eager else None,
        )
    )
    assert started.started and not pg.retries
    assert len(sent) == 2 and not any(s.startswith(("BEGIN", "COMMIT")) for s in sent), sent
    async with _admin(pg_database) as admin:
        row = await admin.fetchrow(
            "SELECT status, is_current, next_event_id, wt_state, wt_attempt, history_size "
            "FROM executions WHERE run_id = $1",
            started.run_id,
        )
        attrs = await admin.fetchval("SELECT attrs FROM history WHERE run_id = $1", started.run_id)
        timers = await admin.fetch("SELECT seq FROM timers WHERE run_id = $1", started.run_id)
    state = WorkflowTaskState.STARTED if eager else WorkflowTaskState.SCHEDULED
    assert tuple(row) == ("Running", 1, 2, state, 1, len(attrs))
    assert sorted(r[0] for r in timers) == [-1, 0]
    [event] = await pg.get_history(started.run_id)
    assert event.type == EventType.WORKFLOW_EXECUTION_STARTED and event.attrs["args"] == [1]
    polled = await pg.poll_workflow_tasks(NS, "q", "w2", 10)
    if eager:
        lease = started.workflow_lease
        assert lease is not None and polled == []  # leased to w1 in the same statement
        assert [e.type for e in lease.history] == [EventType.WORKFLOW_EXECUTION_STARTED]
    else:
        assert started.workflow_lease is None
        [lease] = polled
    assert (await complete(pg, lease, cmd.CompleteWorkflow("done"))).accepted
    assert (await pg.describe(NS, "wf")).status == RunStatus.COMPLETED


@pytest.mark.parametrize("policy", [IdConflictPolicy.FAIL, IdConflictPolicy.USE_EXISTING])
async def test_a_start_racing_another_start_of_its_id_writes_nothing_and_takes_locks(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch, policy: IdConflictPolicy
) -> None:
    """Another store starts the same workflow id between the read and the write: the
    statement inserts nothing, and the start runs again with locks, where the id policy
    decides."""
    other = await PostgresStore.open(pg_database)
    first: list[str] = []

    async def other_start(_tx: Any) -> None:
        first.append((await other.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))).run_id)

    _before_the_write(monkeypatch, other_start)
    try:
        request = StartRequest(NS, "wf", "Agent", "q", [], id_conflict_policy=policy)
        if policy == IdConflictPolicy.FAIL:
            with pytest.raises(WorkflowAlreadyStartedError):
                await pg.start_workflow(request)
        else:
            result = await pg.start_workflow(request)
            assert not result.started and result.run_id == first[0]
    finally:
        await other.close()
    assert pg.retries == {"ConcurrencyConflictError": 1}
    async with _admin(pg_database) as admin:
        assert await admin.fetchval("SELECT count(*) FROM executions") == 1
        assert await admin.fetchval("SELECT count(*) FROM history") == 1
        assert await admin.fetchval("SELECT count(*) FROM tasks") == 1


async def _closed_run(pg: PostgresStore) -> str:
    """A run of ``wf``, started and completed; its run id."""
    await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))
    [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
    await complete(pg, lease, cmd.CompleteWorkflow("first"))
    pg.retries.clear()
    return lease.run_id


async def test_a_start_over_a_closed_current_run_retires_it_in_the_same_statement(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reused workflow id: the closed run stops being current in the start's statement, only
    if it is still the version the read saw. A reuse policy that refuses writes nothing."""
    first = await _closed_run(pg)
    with pytest.raises(WorkflowAlreadyStartedError):
        await pg.start_workflow(
            StartRequest(NS, "wf", "Agent", "q", [], id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE)
        )
    sent = _statements(monkeypatch)
    again = await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))
    assert again.started and again.run_id != first and not pg.retries
    assert len(sent) == 2 and not any(s.startswith(("BEGIN", "COMMIT")) for s in sent), sent
    async with _admin(pg_database) as admin:
        rows = await admin.fetch("SELECT run_id, is_current, status FROM executions")
    assert {tuple(r) for r in rows} == {(first, 0, "Completed"), (again.run_id, 1, "Running")}
    assert (await pg.describe(NS, "wf")).run_id == again.run_id
    assert [e.type for e in await pg.get_history(first)][-1] == (
        EventType.WORKFLOW_EXECUTION_COMPLETED
    )


async def test_a_start_over_a_closed_run_another_start_retired_meanwhile_writes_nothing(
    pg: PostgresStore, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another store reuses the id between the read and the write: the closed run is no
    longer the version read, so the statement writes nothing; the locked retry finds the
    other start's run running and the default policy refuses."""
    await _closed_run(pg)
    other = await PostgresStore.open(pg_database)

    async def other_start(_tx: Any) -> None:
        await other.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))

    _before_the_write(monkeypatch, other_start)
    try:
        with pytest.raises(WorkflowAlreadyStartedError):
            await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))
    finally:
        await other.close()
    assert pg.retries == {"ConcurrencyConflictError": 1}
    async with _admin(pg_database) as admin:
        assert await admin.fetchval("SELECT count(*) FROM executions") == 2
        assert await admin.fetchval("SELECT count(*) FROM executions WHERE is_current = 1") == 1


async def test_a_start_that_ends_the_current_run_or_records_more_takes_locks(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Terminating a running current run is more than the statement writes: the read finds it
    and the start takes locks. A request id is recorded too: locks at once."""
    first = (await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))).run_id
    again = await pg.start_workflow(
        StartRequest(
            NS, "wf", "Agent", "q", [], id_conflict_policy=IdConflictPolicy.TERMINATE_EXISTING
        )
    )
    assert again.started and pg.retries == {"needs locks": 1}
    assert (await pg.describe(NS, "wf", first)).status == RunStatus.TERMINATED
    sent = _statements(monkeypatch)
    await pg.start_workflow(StartRequest(NS, "wf2", "Agent", "q", [], request_id="r1"))
    assert sent[0] == "BEGIN"


async def _assert_consistent(pg_database: str, run_id: str) -> None:
    """A run's rows agree with its history, whichever writers raced on it."""
    conn = await asyncpg.connect(pg_database)
    try:
        next_id, wt_state, size, status = await conn.fetchrow(
            "SELECT next_event_id, wt_state, history_size, status FROM executions "
            "WHERE run_id = $1",
            run_id,
        )
        events = await conn.fetch(
            "SELECT event_id, type, attrs FROM history WHERE run_id = $1 ORDER BY event_id", run_id
        )
        buffered = await conn.fetch(
            "SELECT type, attrs FROM buffered_events WHERE run_id = $1", run_id
        )
        tasks = await conn.fetch("SELECT kind, seq FROM tasks WHERE run_id = $1", run_id)
        timers = {
            r[0] for r in await conn.fetch("SELECT seq FROM timers WHERE run_id = $1", run_id)
        }
    finally:
        await conn.close()
    assert [e[0] for e in events] == list(range(1, next_id))  # no gap, nothing twice
    assert size == sum(len(e[2]) for e in events)

    def seqs(rows: Any, kind: EventType) -> list[int]:
        return [json.loads(r["attrs"])["seq"] for r in rows if r["type"] == kind.value]

    done = seqs([*events, *buffered], EventType.ACTIVITY_TASK_COMPLETED)
    assert len(done) == len(set(done))  # no result recorded twice
    if status != RunStatus.RUNNING.value:  # closed: nothing left to run, the close last
        assert events[-1]["type"] == EventType.WORKFLOW_EXECUTION_COMPLETED.value
        assert (wt_state, tasks, timers, buffered) == (0, [], set(), [])
        return
    scheduled = seqs(events, EventType.ACTIVITY_TASK_SCHEDULED)
    assert {r[1] for r in tasks if r[0] == "activity"} == set(scheduled) - set(done)
    assert (wt_state != 0) == any(r[0] == "workflow" for r in tasks)
    assert timers == set(seqs(events, EventType.TIMER_STARTED))


@pytest.mark.parametrize("seed", range(6))
async def test_steps_racing_signals_heartbeats_and_other_stores_keep_a_run_consistent(
    pg_database: str, seed: int
) -> None:
    """Eight results of one run arrive at once through three stores, with signals, heartbeats
    and another worker's polls in between, and one of them (in odd seeds) closes the run:
    whichever path each step takes (one statement, or locks after a race), the run's rows end
    up agreeing with its history."""
    rnd = random.Random(seed)
    closer = rnd.randrange(8) if seed % 2 else None
    stores = [await PostgresStore.open(pg_database) for _ in range(3)]
    pg = stores[0]
    try:
        run_id = (await pg.start_workflow(StartRequest(NS, "wf", "Agent", "q", []))).run_id
        [lease] = await pg.poll_workflow_tasks(NS, "q", "w1", 10)
        done = await complete(pg, lease, *[activity(i, "q") for i in range(1, 9)])
        acts = await pg.poll_activity_tasks(NS, "q", "w1", 100)
        assert len(acts) == 8

        async def result(i: int, act: ActivityTaskLease) -> None:
            # (The closer comes early: only the first result can be a step the worker saw.)
            await asyncio.sleep(rnd.random() * (0.001 if i == closer else 0.01))
            seq = 100 + 2 * i
            commands: list[cmd.Command] = [activity(seq, "q"), cmd.StartTimer(seq + 1, 100.0)]
            if i == closer:
                commands = [cmd.CompleteWorkflow(i)]
            step = WorkflowTaskCompletion(
                commands,
                0.0,
                worker_id=f"w{i}",
                eager_activity_queue="q",
                eager_activities=1,
            )
            with contextlib.suppress(LeaseLostError):
                await stores[i % 3].complete_activity_and_task(
                    act, f"out{i}", done.last_event_id, step
                )

        async def signals() -> None:
            for k in range(3):
                await asyncio.sleep(rnd.random() * 0.01)
                with contextlib.suppress(WorkflowClosedError):
                    await stores[k % 3].signal_workflow(NS, "wf", None, "nudge", [k])

        async def heartbeats() -> None:
            for act in acts:
                await asyncio.sleep(rnd.random() * 0.003)
                await stores[1].heartbeat_activity_task(act, {"at": 1})

        async def other_worker() -> None:
            for _ in range(10):
                await asyncio.sleep(rnd.random() * 0.005)
                for task in await stores[2].poll_workflow_tasks(NS, "q", "w9", 10):
                    with contextlib.suppress(LeaseLostError):
                        await stores[2].complete_workflow_task(
                            task,
                            WorkflowTaskCompletion(
                                [activity(500 + task.next_event_id, "q")], 0.0, worker_id="w9"
                            ),
                        )

        await asyncio.gather(
            *(result(i, a) for i, a in enumerate(acts)), signals(), heartbeats(), other_worker()
        )
        await _assert_consistent(pg_database, run_id)
    finally:
        for store in stores:
            await store.close()
