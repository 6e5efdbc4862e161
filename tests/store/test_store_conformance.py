"""Store rules every backend must keep: one transaction per change, fencing, buffering, time."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from duro import commands as cmd
from duro.converter import dumps
from duro.engine.start import IdConflictPolicy, StartRequest
from duro.errors import LeaseLostError, SchemaError, StoreError, WorkflowNotFoundError
from duro.history import Event, EventType, RunStatus
from duro.retry import RetryPolicy
from duro.store import schema_status
from duro.store.postgres import PostgresStore
from duro.store.protocol import (
    FirstTask,
    FlowLimit,
    Store,
    WorkflowTaskCompletion,
    WorkflowTaskLease,
)
from duro.store.sqlite import SQLiteStore
from duro.store.tx import new_run_id

from .conftest import FakeClock

NS, Q = "default", "q"


async def start(store: Store, wid: str = "wf") -> str:
    res = await store.start_workflow(StartRequest(NS, wid, "Agent", Q, ["hi"]))
    return res.run_id


async def poll_one(store: Store, worker: str = "w1") -> WorkflowTaskLease:
    leases = await store.poll_workflow_tasks(NS, Q, worker, 10)
    assert len(leases) == 1, leases
    return leases[0]


def schedule(seq: int = 1, policy: RetryPolicy | None = None) -> cmd.ScheduleActivity:
    return cmd.ScheduleActivity(seq, "act", [seq], Q, 30.0, (policy or RetryPolicy()).to_dict())


async def complete(
    store: Store, lease: WorkflowTaskLease, *commands: cmd.Command, worker: str = "w1"
):  # type: ignore[no-untyped-def]
    return await store.complete_workflow_task(
        lease, WorkflowTaskCompletion(list(commands), lease.started_time, worker_id=worker)
    )


async def complete_eagerly(
    store: Store, lease: WorkflowTaskLease, *commands: cmd.Command, slots: int
):  # type: ignore[no-untyped-def]
    """Complete a task as worker w1 with ``slots`` free activity slots (eager hand-off)."""
    return await store.complete_workflow_task(
        lease,
        WorkflowTaskCompletion(
            list(commands),
            lease.started_time,
            worker_id="w1",
            eager_activity_queue=Q,
            eager_activities=slots,
        ),
    )


def types(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.type.value for e in events]


async def test_a_step_goes_through_workflow_and_activity_tasks(store: Store) -> None:
    run_id = await start(store)
    lease = await poll_one(store)
    assert types(lease.history) == ["WorkflowExecutionStarted"] and lease.history_after == 0
    assert await store.poll_workflow_tasks(NS, Q, "w2", 10) == []  # one task per run in flight
    await complete(store, lease, schedule())
    [act] = await store.poll_activity_tasks(NS, Q, "w1", 10)
    assert (act.activity_type, act.args, act.attempt) == ("act", [1], 1)
    await store.complete_activity_task(act, "out")
    lease = await poll_one(store)
    assert types(lease.history) == [
        "WorkflowExecutionStarted",
        "WorkflowTaskCompleted",
        "ActivityTaskScheduled",
        "ActivityTaskCompleted",
    ]
    await complete(store, lease, cmd.CompleteWorkflow("done"))
    info = await store.describe(NS, "wf")
    assert info.run_id == run_id and info.status == RunStatus.COMPLETED and info.result == "done"
    history = await store.get_history(run_id)
    assert [e.event_id for e in history] == list(range(1, len(history) + 1))
    assert history[-1].type == EventType.WORKFLOW_EXECUTION_COMPLETED


async def test_cached_worker_gets_only_new_events(store: Store) -> None:
    run_id = await start(store)
    lease = await poll_one(store)
    res = await complete(store, lease, schedule())
    assert res.last_event_id == 3
    [act] = await store.poll_activity_tasks(NS, Q, "w1", 10)
    await store.complete_activity_task(act, "out")
    [lease] = await store.poll_workflow_tasks(NS, Q, "w1", 10, lambda r: 3 if r == run_id else 0)
    assert lease.history_after == 3 and types(lease.history) == ["ActivityTaskCompleted"]


async def test_eager_hand_offs_skip_polls(store: Store) -> None:
    run_id = await start(store)
    lease = await poll_one(store)
    res = await complete_eagerly(store, lease, schedule(1), schedule(2), slots=1)
    assert [a.seq for a in res.activity_leases] == [1]  # limited to the free slots
    [other] = await store.poll_activity_tasks(NS, Q, "w2", 10)
    assert other.seq == 2
    wt = await store.complete_activity_task(
        res.activity_leases[0], "x", eager_worker_id="w1", cached_upto=lambda r: res.last_event_id
    )
    assert wt is not None and wt.run_id == run_id and types(wt.history) == ["ActivityTaskCompleted"]


async def test_stale_completions_are_fenced(store: Store, clock: FakeClock) -> None:
    await start(store)
    lease = await poll_one(store)
    await complete(store, lease, schedule(policy=RetryPolicy(maximum_attempts=5)))
    with pytest.raises(LeaseLostError):
        await complete(store, lease, cmd.CompleteWorkflow(1))  # same lease twice
    [act] = await store.poll_activity_tasks(NS, Q, "w1", 10)
    clock.advance(31)  # past start_to_close: the lease expires and the attempt is retried
    await store.reap(liveness_timeout=1e9)
    clock.advance(10)
    await store.fire_due_timers()
    [retry] = await store.poll_activity_tasks(NS, Q, "w2", 10)
    assert retry.attempt == 2
    with pytest.raises(LeaseLostError):
        await store.complete_activity_task(act, "late result of attempt 1")
    assert not await store.heartbeat_activity_task(act, {"progress": 1})
    await store.complete_activity_task(retry, "ok")
    history = await store.get_history((await store.describe(NS, "wf")).run_id)
    completed = [e for e in history if e.type == EventType.ACTIVITY_TASK_COMPLETED]
    assert [(e.attrs["result"], e.attrs["attempt"]) for e in completed] == [("ok", 2)]


async def test_events_during_a_workflow_task_come_after_its_commands(store: Store) -> None:
    run_id = await start(store)
    lease = await poll_one(store)
    await store.signal_workflow(NS, "wf", None, "approve", [True])
    await complete(store, lease, schedule())
    history = await store.get_history(run_id)
    assert types(history) == [
        "WorkflowExecutionStarted",
        "WorkflowTaskCompleted",
        "ActivityTaskScheduled",
        "WorkflowExecutionSignaled",
    ]
    lease = await poll_one(store)  # the signal scheduled the next task
    assert types(lease.history)[-1] == "WorkflowExecutionSignaled"


async def test_a_task_that_would_close_over_a_new_signal_is_rejected(store: Store) -> None:
    run_id = await start(store)
    lease = await poll_one(store)
    await store.signal_workflow(NS, "wf", None, "approve", [True])
    res = await complete(store, lease, cmd.CompleteWorkflow("too early"))
    assert not res.accepted
    info = await store.describe(NS, "wf")
    assert info.status == RunStatus.RUNNING
    assert types(await store.get_history(run_id))[-1] == "WorkflowExecutionSignaled"
    lease = await poll_one(store)
    await complete(store, lease, cmd.CompleteWorkflow("saw the signal"))
    assert (await store.describe(NS, "wf")).status == RunStatus.COMPLETED


async def test_timers_fire_once_when_due(store: Store, clock: FakeClock) -> None:
    run_id = await start(store)
    lease = await poll_one(store)
    await complete(store, lease, cmd.StartTimer(1, 60.0))
    assert await store.next_timer_time() == pytest.approx(lease.started_time + 60.0)
    assert await store.fire_due_timers() == 0
    clock.advance(60)
    assert await store.fire_due_timers() == 1
    assert await store.fire_due_timers() == 0
    history = await store.get_history(run_id)
    assert types(history)[-1] == "TimerFired"


async def test_cancelled_timer_never_fires(store: Store, clock: FakeClock) -> None:
    await start(store)
    lease = await poll_one(store)
    await complete(store, lease, cmd.StartTimer(1, 5.0), cmd.CancelTimer(1))
    clock.advance(10)
    assert await store.fire_due_timers() == 0


async def test_dead_worker_leases_are_released_at_once(store: Store, clock: FakeClock) -> None:
    await store.register_worker("dead", NS, Q, "pid@host", {})
    await store.register_worker("alive", NS, Q, "pid@host", {})
    await start(store)
    lease = await poll_one(store, "dead")
    await complete(store, lease, schedule(), worker="dead")
    [act] = await store.poll_activity_tasks(NS, Q, "dead", 10)
    clock.advance(3)
    await store.heartbeat_worker("alive")
    reaped = await store.reap(liveness_timeout=2.0)
    assert reaped.dead_workers == ["dead"] and reaped.released_activities == 1
    [again] = await store.poll_activity_tasks(NS, Q, "alive", 10)  # no backoff, no timeout wait
    assert again.seq == act.seq and again.attempt == 2
    with pytest.raises(LeaseLostError):
        await store.complete_activity_task(act, "from the dead worker")


async def test_sticky_task_waits_briefly_for_the_worker_that_cached_the_run(
    store: Store, clock: FakeClock
) -> None:
    await start(store)
    lease = await poll_one(store, "w1")
    await complete(store, lease, cmd.StartTimer(1, 1.0), worker="w1")
    clock.advance(1)
    await store.fire_due_timers()
    assert await store.poll_workflow_tasks(NS, Q, "w2", 10) == []
    clock.advance(5)  # past the sticky timeout: anyone may take it
    assert len(await store.poll_workflow_tasks(NS, Q, "w2", 10)) == 1


async def test_start_is_idempotent_by_request_id_and_signals_by_request_id(store: Store) -> None:
    a = await store.start_workflow(StartRequest(NS, "wf", "Agent", Q, [], request_id="req-1"))
    b = await store.start_workflow(StartRequest(NS, "wf", "Agent", Q, [], request_id="req-1"))
    assert a.run_id == b.run_id and a.started and not b.started
    await store.signal_workflow(NS, "wf", None, "s", [1], request_id="sig-1")
    await store.signal_workflow(NS, "wf", None, "s", [1], request_id="sig-1")
    signals = [
        e
        for e in await store.get_history(a.run_id)
        if e.type == EventType.WORKFLOW_EXECUTION_SIGNALED
    ]
    assert len(signals) == 1


async def test_unknown_workflow_is_a_clear_error(store: Store) -> None:
    with pytest.raises(WorkflowNotFoundError, match="'nope' not found"):
        await store.describe(NS, "nope")
    with pytest.raises(WorkflowNotFoundError):
        await store.signal_workflow(NS, "nope", None, "s", [])


async def test_failed_operation_leaves_stored_state_untouched(store: Store) -> None:
    run_id = await start(store)
    before = await store.get_history(run_id)
    lease = await poll_one(store)
    bogus = dataclasses.replace(lease, lease_id="not-mine")
    with pytest.raises(LeaseLostError):
        await complete(store, bogus, cmd.CompleteWorkflow(1))
    assert await store.get_history(run_id) == before
    assert (await store.describe(NS, "wf")).status == RunStatus.RUNNING


async def test_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    s = SQLiteStore(str(path))
    await s.start()
    await s.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', 0)")
    conn.commit()
    conn.close()
    s = SQLiteStore(str(path))
    with pytest.raises(SchemaError, match="newer than this duro"):
        await s.start()
    await s.close()


async def test_postgres_schema_newer_than_the_code_is_refused(pg_database: str) -> None:
    s = PostgresStore(pg_database)
    await s.start()
    await s.close()
    conn = await asyncpg.connect(pg_database)
    await conn.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', 0)")
    await conn.close()
    s = PostgresStore(pg_database)
    with pytest.raises(SchemaError, match="newer than this duro"):
        await s.start()
    await s.close()


async def test_postgres_workers_starting_together_migrate_once(pg_database: str) -> None:
    stores = [PostgresStore(pg_database) for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        status = await schema_status(pg_database)
        assert status.up_to_date
        assert [v for v, _, _ in status.applied] == list(range(1, status.latest + 1))
    finally:
        for s in stores:
            await s.close()


async def test_reopening_a_database_keeps_its_data(tmp_path: Path) -> None:
    path = str(tmp_path / "keep.db")
    s = SQLiteStore(path)
    await s.start()
    run_id = await start(s)
    await s.close()
    s = SQLiteStore(path)
    await s.start()
    assert (await s.describe(NS, "wf")).run_id == run_id
    await s.close()


async def test_heartbeat_timeout_expires_a_silent_attempt_and_heartbeats_extend_it(
    store: Store, clock: FakeClock
) -> None:
    await start(store)
    lease = await poll_one(store)
    hb = cmd.ScheduleActivity(
        1, "act", [], Q, 60.0, RetryPolicy(maximum_attempts=3).to_dict(), heartbeat_timeout=2.0
    )
    await complete(store, lease, hb)
    [act] = await store.poll_activity_tasks(NS, Q, "w1", 10)
    clock.advance(1.5)
    assert await store.heartbeat_activity_task(act, {"done": 1})
    clock.advance(1.5)  # 3 s after the start, 1.5 s after the heartbeat: still alive
    assert (await store.reap(liveness_timeout=1e9)).released_activities == 0
    clock.advance(1.0)  # 2.5 s of silence
    assert (await store.reap(liveness_timeout=1e9)).released_activities == 1
    info = await store.describe(NS, "wf")
    [pending] = info.pending_activities
    assert pending.attempt == 2 and pending.last_failure is not None
    assert pending.last_failure["timeout_kind"] == "heartbeat"
    assert pending.heartbeat_details == {"done": 1}  # kept for the next attempt to resume


async def test_an_operation_whose_caller_was_cancelled_is_not_run(store: Store) -> None:
    import asyncio

    await start(store)
    lease = await poll_one(store)
    await complete(store, lease, schedule())
    poll = asyncio.create_task(store.poll_activity_tasks(NS, Q, "w1", 10))
    await asyncio.sleep(0)  # the poll is queued for this loop turn's transaction
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    [act] = await store.poll_activity_tasks(NS, Q, "w2", 10)  # it was not leased to w1
    assert act.attempt == 1


async def test_unexpected_errors_in_an_operation_become_store_errors(store: Store) -> None:
    from duro.errors import StoreError

    with pytest.raises(StoreError, match="store operation failed"):
        await store.start_workflow(StartRequest(NS, "wf", "Agent", Q, [], memo={"x": object()}))
    assert await store.list_workflows(NS) == []


async def test_start_and_signal_request_ids_do_not_collide(store: Store) -> None:
    a = await store.start_workflow(StartRequest(NS, "wf", "Agent", Q, [], request_id="same"))
    await store.signal_workflow(NS, "wf", None, "s", [1], request_id="same")
    signals = [
        e
        for e in await store.get_history(a.run_id)
        if e.type == EventType.WORKFLOW_EXECUTION_SIGNALED
    ]
    assert len(signals) == 1


def test_lease_ids_differ_in_forked_processes() -> None:
    import os
    import warnings

    from duro.store.tx import new_id

    parent_id = new_id()
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork() in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_id[:12] != parent_id[:12]


async def test_a_failing_operation_in_a_batch_fails_alone(store: Store) -> None:
    import asyncio

    # Queued in one loop turn: one transaction; the bad signal must not undo the starts.
    a, bad, b = await asyncio.gather(
        store.start_workflow(StartRequest(NS, "a", "Agent", Q, [])),
        store.signal_workflow(NS, "nobody", None, "s", []),
        store.start_workflow(StartRequest(NS, "b", "Agent", Q, [])),
        return_exceptions=True,
    )
    assert isinstance(bad, WorkflowNotFoundError)
    assert {r.workflow_id for r in await store.list_workflows(NS)} == {"a", "b"}
    assert not isinstance(a, BaseException) and not isinstance(b, BaseException)


async def test_a_repeated_signal_with_start_request_signals_once(store: Store) -> None:
    req = StartRequest(NS, "wf", "Agent", Q, [], request_id="req-1", signal=("go", [1]))
    first = await store.start_workflow(req)
    again = await store.start_workflow(dataclasses.replace(req))
    assert again.run_id == first.run_id and not again.started
    assert types(await store.get_history(first.run_id)).count("WorkflowExecutionSignaled") == 1


async def test_resetting_an_older_run_terminates_the_running_one(store: Store) -> None:
    old = await start(store)
    await complete(store, await poll_one(store), cmd.CompleteWorkflow("ok"))
    newer = await start(store)
    reset = await store.reset_workflow(NS, "wf", old, 3, "redo", False, None)
    assert (await store.describe(NS, "wf", newer)).status == RunStatus.TERMINATED
    running = await store.list_workflows(NS, workflow_id="wf", status=RunStatus.RUNNING)
    assert [r.run_id for r in running] == [reset]


async def test_an_abandoned_child_closes_after_retention_deleted_its_parent(store: Store) -> None:
    parent = await start(store, "p")
    await complete(
        store, await poll_one(store), cmd.StartChildWorkflow(1, "Agent", "c", [], Q, "abandon")
    )
    leases = {lease.workflow_id: lease for lease in await store.poll_workflow_tasks(NS, Q, "w1", 9)}
    await complete(store, leases["p"], cmd.CompleteWorkflow("p"))
    assert await store.delete_runs([parent]) == 1
    await complete(store, leases["c"], cmd.CompleteWorkflow("c"))
    assert (await store.describe(NS, "c")).status == RunStatus.COMPLETED


async def test_a_drained_rate_limit_is_no_due_time(store: Store, clock: FakeClock) -> None:
    """The timer loop sleeps until the next due time: a bucket that refilled long ago while
    nobody waited must not be reported as due now (the loop would spin)."""
    from duro.store.protocol import FlowLimit

    await store.set_flow_limit(FlowLimit(NS, "activity_type", "act", rate=1.0))
    await start(store)
    await complete(store, await poll_one(store), schedule(1), schedule(2))
    assert len(await store.poll_activity_tasks(NS, Q, "w1", 10)) == 1  # the burst of 1
    due = await store.next_timer_time()
    assert due is not None and due > clock()  # the next token, ahead
    clock.advance(60)
    assert len(await store.poll_activity_tasks(NS, Q, "w1", 10)) == 1
    clock.advance(60)  # refilled, and no task waits
    due = await store.next_timer_time()
    assert due is None or due > clock()


def _wal_size(path: Path) -> int:
    return os.path.getsize(f"{path}-wal")


async def test_the_sqlite_log_stays_bounded_under_a_long_burst(tmp_path: Path) -> None:
    """A writer that never pauses kept PASSIVE checkpoints from ever emptying the log (it
    reached 15 GB for 100,000 runs); past its limit the log is emptied."""
    path = tmp_path / "burst.db"
    store = SQLiteStore(str(path), max_wal_bytes=256 * 1024)
    await store.start()
    try:
        for i in range(3000):
            await store.start_workflow(StartRequest(NS, f"wf{i}", "Agent", Q, ["x" * 200]))
        for _ in range(40):  # the checkpointer looks every 0.5 s
            if _wal_size(path) <= 256 * 1024:
                break
            await asyncio.sleep(0.1)
        assert _wal_size(path) <= 256 * 1024
    finally:
        await store.close()


# -- a result and the task it wakes in one transaction ------------------------------------------


async def _one_activity_out(store: Store):  # type: ignore[no-untyped-def]
    """A run whose first task scheduled activity 1, leased to w1; the task's last event id."""
    await start(store)
    lease = await poll_one(store)
    done = await complete(store, lease, schedule(1))
    [act] = await store.poll_activity_tasks(NS, Q, "w1", 10)
    return act, done.last_event_id


def _completion(*commands: cmd.Command, time: float = 0.0) -> WorkflowTaskCompletion:
    return WorkflowTaskCompletion(list(commands), time, worker_id="w1", history_size=123)


async def test_a_result_and_its_task_are_written_together(store: Store) -> None:
    act, seen = await _one_activity_out(store)
    assert seen == 3
    step = await store.complete_activity_and_task(act, "out", seen, _completion(schedule(2)))
    assert step.workflow_lease is None and step.completion is not None
    assert step.completion.accepted and step.completion.last_event_id == 6
    history = await store.get_history(act.run_id)
    assert types(history) == [
        "WorkflowExecutionStarted",
        "WorkflowTaskCompleted",
        "ActivityTaskScheduled",
        "ActivityTaskCompleted",
        "WorkflowTaskCompleted",
        "ActivityTaskScheduled",
    ]
    assert history[3].attrs == {"seq": 1, "result": "out", "attempt": 1}
    assert history[4].attrs["history_size"] == 123  # what the worker's code saw
    assert step.completion.history_size == sum(len(dumps(e.attrs)) for e in history)
    assert await store.poll_workflow_tasks(NS, Q, "w2", 10) == []  # no task left behind
    [second] = await store.poll_activity_tasks(NS, Q, "w2", 10)
    assert second.seq == 2
    with pytest.raises(LeaseLostError):  # the first attempt's lease is spent
        await store.complete_activity_and_task(act, "again", 6, _completion())


async def test_a_result_after_a_signal_is_recorded_alone(store: Store) -> None:
    """The worker ran its code on the result alone, but a signal reached the run first: the
    store writes only the result, and the task the signal scheduled sees both."""
    act, seen = await _one_activity_out(store)
    await store.signal_workflow(NS, "wf", None, "nudge", [1], None)
    step = await store.complete_activity_and_task(act, "out", seen, _completion(schedule(2)))
    assert step.completion is None and step.workflow_lease is None  # already queued: polled
    lease = await poll_one(store, "w1")  # sticky to w1, which completed the last task
    assert types(lease.history)[-2:] == ["WorkflowExecutionSignaled", "ActivityTaskCompleted"]
    history = await store.get_history(act.run_id)
    assert types(history).count("WorkflowTaskCompleted") == 1  # the speculated task: not written
    assert await store.poll_activity_tasks(NS, Q, "w2", 10) == []


async def test_a_limit_set_in_a_batch_binds_the_polls_after_it(store: Store) -> None:
    """Limits are read once per transaction (SQLite batches concurrent operations into one):
    a limit set inside that transaction still binds the operations after it."""
    if isinstance(store, PostgresStore):
        pytest.skip("one operation per transaction: the three run in no set order")
    await start(store)
    lease = await poll_one(store)
    await complete(store, lease, schedule(1), schedule(2), schedule(3))
    limit = FlowLimit(NS, "activity_type", "act", max_concurrent=1)
    first, _, second = await asyncio.gather(
        store.poll_activity_tasks(NS, Q, "w1", 1),
        store.set_flow_limit(limit),
        store.poll_activity_tasks(NS, Q, "w2", 10),
    )
    assert (len(first), len(second)) == (1, 0)


async def test_an_eager_start_leases_the_first_task_in_its_transaction(store: Store) -> None:
    req = StartRequest(NS, "wf", "Agent", Q, ["hi"], eager_worker_id="w1")
    started = await store.start_workflow(req)
    lease = started.workflow_lease
    assert lease is not None and lease.run_id == started.run_id
    assert types(lease.history) == ["WorkflowExecutionStarted"] and lease.history_after == 0
    assert await store.poll_workflow_tasks(NS, Q, "w2", 10) == []  # leased, not queued
    await complete(store, lease, cmd.CompleteWorkflow("done"))
    assert (await store.describe(NS, "wf")).status == RunStatus.COMPLETED
    # With a signal the task must see, the start leaves the task to the pollers.
    req = StartRequest(NS, "wf2", "Agent", Q, [], signal=("go", []), eager_worker_id="w1")
    assert (await store.start_workflow(req)).workflow_lease is None
    lease = await poll_one(store, "w2")
    assert types(lease.history) == ["WorkflowExecutionStarted", "WorkflowExecutionSignaled"]


async def _rows(store: Store, table: str, run_id: str) -> list[dict[str, object]]:
    """A run's rows of ``table``, read over the test's own connection, without the columns
    that name the run or are drawn afresh for every row (ids, lease ids)."""
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        conn.row_factory = sqlite3.Row
        try:
            found = [
                dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE run_id = ?", (run_id,))
            ]
        finally:
            conn.close()
    else:
        assert isinstance(store, PostgresStore)
        pg = await asyncpg.connect(store.url)
        try:
            found = [
                dict(r) for r in await pg.fetch(f"SELECT * FROM {table} WHERE run_id = $1", run_id)
            ]
        finally:
            await pg.close()
    drawn = {"run_id", "workflow_id", "task_id", "lease_id"}
    return sorted(({k: v for k, v in row.items() if k not in drawn} for row in found), key=repr)


async def test_a_fused_start_writes_what_a_start_and_its_first_task_write(
    store: Store, clock: FakeClock
) -> None:
    """A start given its first task, run ahead (``FirstTask``), leaves the same history and
    rows as an eager start whose task then completed: one run, one activity leased to the
    worker, the timer and the run's timeout timer, no workflow task. A start that finds a
    running run returns it and writes nothing of the task."""

    def request(wid: str, **options: Any) -> StartRequest:
        return StartRequest(
            NS,
            wid,
            "Agent",
            Q,
            ["hi"],
            memo={"m": 1},
            run_timeout=60.0,
            eager_worker_id="w1",
            **options,
        )

    commands = [schedule(1), cmd.StartTimer(2, 5.0)]
    usual = await store.start_workflow(request("a"))
    lease = usual.workflow_lease
    assert lease is not None
    completion = WorkflowTaskCompletion(
        commands,
        clock(),
        worker_id="w1",
        eager_activity_queue=Q,
        eager_activities=1,
        history_size=lease.history_size,
    )
    done = await store.complete_workflow_task(lease, completion)
    first = FirstTask(new_run_id(), clock(), completion)
    fused = await store.start_workflow(request("b"), first)
    assert (fused.run_id, fused.started, fused.workflow_lease) == (first.run_id, True, None)
    assert fused.completion is not None
    assert fused.completion.last_event_id == done.last_event_id == 4
    assert fused.completion.history_size == done.history_size
    assert [(a.seq, a.args, a.attempt) for a in fused.completion.activity_leases] == [(1, [1], 1)]

    def shape(history: list[Event]) -> list[tuple[object, ...]]:
        names = {"run_id", "workflow_id"}
        return [
            (e.event_id, e.type, e.time, {k: v for k, v in e.attrs.items() if k not in names})
            for e in history
        ]

    assert shape(await store.get_history(fused.run_id)) == shape(
        await store.get_history(usual.run_id)
    )
    for table in ("executions", "tasks", "timers"):
        assert await _rows(store, table, fused.run_id) == await _rows(store, table, usual.run_id), (
            table
        )
    assert [r["kind"] for r in await _rows(store, "tasks", fused.run_id)] == ["activity"]
    assert len(await _rows(store, "timers", fused.run_id)) == 2
    # The id's run is running: use_existing returns it, and the task ahead is not recorded.
    again = FirstTask(new_run_id(), clock(), completion)
    kept = await store.start_workflow(
        request("b", id_conflict_policy=IdConflictPolicy.USE_EXISTING), again
    )
    assert (kept.run_id, kept.started, kept.completion) == (fused.run_id, False, None)
    assert len(await store.get_history(fused.run_id)) == 4
    assert await _rows(store, "executions", again.run_id) == []


async def test_run_outcome_reads_the_status_and_then_the_result_or_failure(store: Store) -> None:
    first = await start(store)
    running = await store.run_outcome(NS, "wf")
    assert (running.run_id, running.status, running.result, running.failure) == (
        first,
        RunStatus.RUNNING,
        None,
        None,
    )
    await complete(store, await poll_one(store), cmd.CompleteWorkflow({"answer": 42}))
    done = await store.run_outcome(NS, "wf", first)
    assert (done.workflow_id, done.status, done.result) == (
        "wf",
        RunStatus.COMPLETED,
        {"answer": 42},
    )
    # A new run under the same id is the current one; the first stays readable by its id.
    second = await start(store)
    await complete(
        store, await poll_one(store), cmd.FailWorkflow({"message": "no", "type": "ValueError"})
    )
    failed = await store.run_outcome(NS, "wf")
    assert (failed.run_id, failed.status) == (second, RunStatus.FAILED)
    assert failed.failure is not None and failed.failure["message"] == "no"
    assert (await store.run_outcome(NS, "wf", first)).status == RunStatus.COMPLETED
    with pytest.raises(WorkflowNotFoundError):
        await store.run_outcome(NS, "nope")
    with pytest.raises(WorkflowNotFoundError):
        await store.run_outcome(NS, "other-id", first)  # a run id under another workflow id


async def test_a_flow_limit_set_by_another_process_binds_at_once(
    store: Store, clock: FakeClock
) -> None:
    """A store may remember that a namespace has no limits (SQLite keeps it from one
    transaction to the next); a limit another process sets must bind at the next step."""
    other: SQLiteStore | PostgresStore
    if isinstance(store, SQLiteStore):
        other = SQLiteStore(store.path, clock=clock)
    else:
        assert isinstance(store, PostgresStore)
        other = PostgresStore(store.url, clock=clock)
    await other.start()
    try:

        async def schedule_two(wid: str) -> list[int]:
            await start(store, wid)
            res = await complete_eagerly(
                store, await poll_one(store), schedule(1), schedule(2), slots=2
            )
            return [a.seq for a in res.activity_leases]

        assert await schedule_two("a") == [1, 2]  # no limits: both handed over
        await other.set_flow_limit(FlowLimit(NS, "activity_type", "act", max_concurrent=3))
        # Two attempts of "act" are running: one more may start, the other waits for a poll.
        assert await schedule_two("b") == [1]
    finally:
        await other.close()


async def test_a_sqlite_batch_that_fails_outside_its_operations_fails_its_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug around the operations (not in one) must reach the callers, not leave them waiting."""
    from duro.store import sqlite as sqlite_store

    store = SQLiteStore(str(tmp_path / "x.db"))
    await store.start()
    try:

        def broken(*args: object) -> None:
            raise RuntimeError("broken batch")

        monkeypatch.setattr(sqlite_store, "_execute_batch", broken)
        with pytest.raises(StoreError, match="broken batch"):
            await asyncio.wait_for(store.start_workflow(StartRequest(NS, "wf", "Agent", Q, [])), 5)
        monkeypatch.undo()
        await store.start_workflow(StartRequest(NS, "wf", "Agent", Q, []))  # nothing was lost
        assert (await store.describe(NS, "wf")).status == RunStatus.RUNNING
    finally:
        await store.close()


async def test_a_sqlite_commit_waits_for_the_operations_of_callbacks_already_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: an operation submitted while other callbacks are ready (steps of other
    runs) commits with the operations those submit, a few loop turns later at most; alone,
    it commits at the next turn. Closing the store commits what is pending at once."""
    from duro.store import sqlite as sqlite_store

    store = SQLiteStore(str(tmp_path / "x.db"))
    await store.start()
    batches: list[int] = []
    execute = sqlite_store._execute_batch

    def counting(store_: SQLiteStore, conn: sqlite3.Connection, batch: list, facts: object):  # type: ignore[no-untyped-def, type-arg]
        batches.append(len(batch))
        return execute(store_, conn, batch, facts)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite_store, "_execute_batch", counting)
    loop = asyncio.get_running_loop()
    try:
        starts: list[asyncio.Future[object]] = []

        def start_in(turns: int, wid: str) -> None:
            """Submit a start ``turns`` loop turns from now."""
            if turns:
                loop.call_soon(start_in, turns - 1, wid)
            else:
                starts.append(asyncio.ensure_future(start(store, wid)))

        start_in(0, "a")
        start_in(3, "b")  # three turns later: still in the first one's commit
        while len(starts) < 2:
            await asyncio.sleep(0)
        await asyncio.gather(*starts)
        assert batches == [2]
        batches.clear()
        await start(store, "c")  # nothing else ready: committed at once, alone
        assert batches == [1]
        batches.clear()
        late = [asyncio.ensure_future(start(store, f"late-{i}")) for i in range(3)]
        await asyncio.sleep(0)  # submitted; the commit is waiting for the loop to go idle
        await store.close()
        assert batches == [3] and all(f.done() and f.exception() is None for f in late)
    finally:
        await store.close()
