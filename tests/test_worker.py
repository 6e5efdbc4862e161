"""Worker behaviour: caching, eager hand-offs, concurrency limits, liveness and shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from duro import (
    Client,
    IdConflictPolicy,
    RetryPolicy,
    Worker,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    activity,
    workflow,
)
from duro.converter import dumps
from duro.definitions import workflow_definition
from duro.errors import StoreError
from duro.history import Event, EventType, RunStatus
from duro.runtime.replay import replay


@activity.defn
async def add(a: int, b: int) -> int:
    return a + b


@activity.defn
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@workflow.defn
async def count_to(n: int) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    return total


@workflow.defn
async def nap_twice(seconds: float) -> float:
    a = await nap(seconds)
    return a + await nap(seconds)


def wid() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


async def test_cache_hits_apply_only_new_events(client: Client) -> None:
    async with Worker(client, workflows=[count_to], activities=[add]) as worker:
        assert await client.execute_workflow(count_to, 20, id=wid()) == sum(range(20))
        stats = worker.statistics()
    assert stats.cache_misses == 1  # the first task of the run; every later task hit the cache
    assert stats.cache_hits >= 19
    assert stats.workflow_tasks_completed == 21 and stats.activities_completed == 20


async def test_without_a_cache_every_task_replays_and_the_result_is_the_same(
    client: Client,
) -> None:
    async with Worker(
        client, workflows=[nap_twice], activities=[nap], max_cached_workflows=1
    ) as worker:
        # Activities that wait, so the runs' steps interleave and each evicts the others.
        results = await asyncio.gather(
            *(client.execute_workflow(nap_twice, 0.02, id=wid()) for _ in range(5))
        )
        stats = worker.statistics()
    assert results == [0.04] * 5
    assert stats.cache_misses > 5  # runs evicted each other and were replayed


async def test_two_workers_share_a_queue(client: Client, db_url: str) -> None:
    other_client = await Client.connect(db_url)
    try:
        async with (
            Worker(client, workflows=[count_to], activities=[add]) as a,
            Worker(other_client, workflows=[count_to], activities=[add]) as b,
        ):
            results = await asyncio.gather(
                *(client.execute_workflow(count_to, 5, id=wid()) for _ in range(20))
            )
            total = a.statistics().activities_completed + b.statistics().activities_completed
    finally:
        await other_client.close()
    assert results == [10] * 20 and total == 100


async def test_activity_concurrency_limit_is_respected(client: Client) -> None:
    async with Worker(
        client, workflows=[nap_twice], activities=[nap], max_concurrent_activities=2
    ) as worker:
        handles = [await client.start_workflow(nap_twice, 0.05, id=wid()) for _ in range(6)]
        peak = 0
        waiting = list(handles)
        while waiting:
            peak = max(peak, worker.statistics().activities_in_flight)
            waiting = [h for h in waiting if not (await h.describe()).status.closed]
            await asyncio.sleep(0.005)
    assert 1 <= peak <= 2


async def test_graceful_shutdown_lets_running_activities_finish(client: Client) -> None:
    worker = Worker(client, workflows=[nap_twice], activities=[nap])
    runner = asyncio.create_task(worker.run())
    handle = await client.start_workflow(nap_twice, 0.3, id=wid())
    while worker.statistics().activities_in_flight == 0:
        await asyncio.sleep(0.005)
    await worker.shutdown()
    await runner
    info = await handle.describe()
    kinds = [e.type.value for e in await handle.fetch_history()]
    assert kinds.count("ActivityTaskCompleted") == 1  # the running attempt finished and recorded
    assert info.status.value == "Running"
    # A new worker finishes the run; the first activity is not run again.
    async with Worker(client, workflows=[nap_twice], activities=[nap]) as again:
        assert await handle.result(timeout=10) == 0.6
        assert again.statistics().activities_completed == 1


async def test_shutdown_past_the_grace_period_releases_leases_at_once(client: Client) -> None:
    worker = Worker(
        client,
        workflows=[nap_twice],
        activities=[nap],
        graceful_shutdown_timeout=timedelta(milliseconds=50),
    )
    runner = asyncio.create_task(worker.run())
    handle = await client.start_workflow(nap_twice, 2.0, id=wid())
    while worker.statistics().activities_in_flight == 0:
        await asyncio.sleep(0.005)
    await worker.shutdown()
    await runner
    info = await handle.describe()
    [pending] = info.pending_activities
    assert pending.state == "scheduled" and pending.attempt == 2  # released, not left leased


def test_worker_rejects_undecorated_code_and_empty_registration(client: Client) -> None:
    async def plain() -> None: ...

    with pytest.raises(TypeError, match="not a workflow"):
        Worker(client, workflows=[plain])
    with pytest.raises(TypeError, match="not an activity"):
        Worker(client, activities=[plain])
    with pytest.raises(ValueError, match="at least one"):
        Worker(client)


async def test_more_runs_than_workflow_task_slots_all_finish(client: Client) -> None:
    # Regression: with every slot busy the poller once spun without yielding, freezing the loop.
    async with Worker(
        client,
        workflows=[count_to],
        activities=[add],
        max_concurrent_workflow_tasks=2,
        max_concurrent_activities=3,
    ):
        results = await asyncio.wait_for(
            asyncio.gather(*(client.execute_workflow(count_to, 4, id=wid()) for _ in range(30))),
            timeout=30,
        )
    assert results == [6] * 30


@workflow.defn
async def exits() -> None:
    import sys

    sys.exit(3)


@activity.defn
def parses_bad_arguments(text: str) -> str:
    import argparse

    parser = argparse.ArgumentParser(prog="tool", exit_on_error=False)
    parser.add_argument("--n", type=int, required=True)
    parser.parse_args(text.split())  # missing --n: argparse calls sys.exit(2)
    return "parsed"


@workflow.defn
async def uses_bad_tool() -> str:
    return await workflow.execute_activity(
        parses_bad_arguments, "", retry_policy=RetryPolicy(maximum_attempts=1)
    )


async def test_system_exit_fails_the_task_or_attempt_not_the_worker(client: Client) -> None:
    async with Worker(client, workflows=[exits, uses_bad_tool], activities=[parses_bad_arguments]):
        handle = await client.start_workflow(exits, id=wid())
        while (await handle.describe()).workflow_task_failure is None:
            await asyncio.sleep(0.01)
        failure = (await handle.describe()).workflow_task_failure
        assert failure is not None and "SystemExit" in failure["message"]
        await handle.terminate()
        with pytest.raises(WorkflowFailureError) as info:
            await client.execute_workflow(uses_bad_tool, id=wid())
        assert "SystemExit" in str(info.value.cause.cause)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["two_transactions", "fused"])
async def test_a_failed_completion_does_not_leave_a_run_stuck(client: Client, path: str) -> None:
    """A completion the store fails with an unexpected error is retried; with the run cached,
    a result and the task it wakes are completed in one call (the fused path)."""
    cached = 10_000 if path == "fused" else 0
    worker = Worker(client, workflows=[count_to], activities=[add], max_cached_workflows=cached)
    name = "complete_activity_and_task" if path == "fused" else "complete_workflow_task"
    original = getattr(client.store, name)
    calls = 0

    async def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("store hiccup")  # not a StoreError: a bug, a driver surprise
        return await original(*args, **kwargs)

    setattr(client.store, name, flaky)
    try:
        async with worker:
            assert await client.execute_workflow(count_to, 5, id=wid()) == 10
            fused = worker.statistics().fused_steps
    finally:
        delattr(client.store, name)
    assert calls > 3
    assert fused == (4 if path == "fused" else 0)  # the hiccup's step took the usual path


ADD_CALLS: list[int] = []


@activity.defn
async def add_once(a: int, b: int) -> int:
    ADD_CALLS.append(a)
    return a + b


@workflow.defn
async def sum_two(n: int) -> int:
    return await add_once(n, 1) + await add_once(n, 2)


@pytest.mark.parametrize("path", ["two_transactions", "fused"])
async def test_an_activity_outcome_the_store_failed_to_record_is_recorded_on_retry(
    client: Client, path: str
) -> None:
    """A store error while recording an outcome (a connection lost during the commit) is
    retried at once: the activity is not run again after its lease expires."""
    ADD_CALLS.clear()
    name = "complete_activity_and_task" if path == "fused" else "complete_activity_task"
    original = getattr(client.store, name)
    failed = 0

    async def lossy(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal failed
        if failed == 0:
            failed += 1
            raise StoreError("connection lost while committing")
        return await original(*args, **kwargs)

    setattr(client.store, name, lossy)
    cached = 10_000 if path == "fused" else 0
    try:
        async with Worker(
            client, workflows=[sum_two], activities=[add_once], max_cached_workflows=cached
        ):
            assert await client.execute_workflow(sum_two, 5, id=wid()) == 13
    finally:
        delattr(client.store, name)
    assert failed == 1 and ADD_CALLS == [5, 5]  # each of the two activities ran once


async def test_a_worker_reaped_while_alive_registers_again(client: Client) -> None:
    async with Worker(
        client,
        workflows=[count_to],
        activities=[add],
        heartbeat_interval=timedelta(milliseconds=50),
    ) as worker:
        while not await client.store.heartbeat_worker(worker.worker_id):
            await asyncio.sleep(0.01)  # registered once running
        await client.store.unregister_worker(worker.worker_id)  # as a reaper would
        assert not await client.store.heartbeat_worker(worker.worker_id)
        for _ in range(200):
            await asyncio.sleep(0.02)
            if await client.store.heartbeat_worker(worker.worker_id):
                break
        assert await client.store.heartbeat_worker(worker.worker_id)
        assert await client.execute_workflow(count_to, 3, id=wid()) == 3


@workflow.defn
async def naps_long() -> str:
    await workflow.sleep(timedelta(hours=6))
    return "rested"


@workflow.defn
class AwaitsApproval:
    def __init__(self) -> None:
        self.ok = False

    @workflow.run
    async def run(self) -> bool:
        await workflow.wait_condition(lambda: self.ok, timeout=timedelta(hours=6))
        return self.ok

    @workflow.signal
    def approve(self) -> None:
        self.ok = True


async def test_a_run_that_only_sleeps_holds_no_worker_memory(client: Client) -> None:
    async with Worker(client, workflows=[naps_long, AwaitsApproval]) as worker:
        sleeper = await client.start_workflow(naps_long, id=wid())
        waiter = await client.start_workflow(AwaitsApproval.run, id=wid())
        for _ in range(500):
            if worker.statistics().workflow_tasks_completed >= 2:
                break
            await asyncio.sleep(0.01)
        # The sleeper is replayed when its timer fires; the waiter may hear a signal any time.
        assert worker.statistics().cached_runs == 1
        await waiter.signal(AwaitsApproval.approve)
        assert await waiter.result(timeout=10) is True
        await sleeper.terminate("done")
    async with Worker(
        client, workflows=[naps_long], uncache_sleeping_after=None
    ) as keeps_everything:
        await client.start_workflow(naps_long, id=wid())
        for _ in range(500):
            if keeps_everything.statistics().workflow_tasks_completed >= 1:
                break
            await asyncio.sleep(0.01)
        assert keeps_everything.statistics().cached_runs == 1


# -- one transaction per step (the fused path) -------------------------------------------------


def _shape(events: list[Event]) -> list[tuple[EventType, dict[str, object]]]:
    """History as replay sees it: types and attributes, without times or who ran the task."""
    drop = {"workflow_time", "identity", "workflow_id", "run_id", "history_size"}
    return [(e.type, {k: v for k, v in e.attrs.items() if k not in drop}) for e in events]


def _assert_sizes_seen(history: list[Event]) -> None:
    """Each task recorded the size of the history before it, exactly (``workflow.info()``)."""
    sizes = [len(dumps(e.attrs)) for e in history]
    for i, e in enumerate(history):
        if e.type == EventType.WORKFLOW_TASK_COMPLETED:
            assert e.attrs["history_size"] == sum(sizes[:i])


async def test_a_result_and_the_task_it_wakes_write_the_same_history_in_one_step(
    client: Client,
) -> None:
    """With the run cached, each result and the task it wakes are recorded together, and the
    history is the one the two-transaction path writes, down to the sizes ``workflow.info()``
    reports, so either path replays the other's."""
    histories = []
    for cached in (10_000, 0):
        async with Worker(
            client, workflows=[count_to], activities=[add], max_cached_workflows=cached
        ) as worker:
            handle = await client.start_workflow(count_to, 4, id=wid())
            assert await handle.result(timeout=10) == 6
            assert worker.statistics().fused_steps == (4 if cached else 0)
        histories.append(await handle.fetch_history())
    fused, usual = histories
    assert _shape(fused) == _shape(usual)
    for history in histories:
        _assert_sizes_seen(history)
    defn = workflow_definition(count_to)
    assert defn is not None
    replay(defn, fused)


@workflow.defn
class CountsThenWaits:
    def __init__(self) -> None:
        self.heard: list[str] = []

    @workflow.run
    async def run(self, n: int) -> list[object]:
        seen = [await add(i, 0) for i in range(n)]
        await workflow.wait_condition(lambda: bool(self.heard))
        return [seen, self.heard]

    @workflow.signal
    def hear(self, word: str) -> None:
        self.heard.append(word)


async def test_a_signal_that_lands_during_a_fused_step_is_not_lost(client: Client) -> None:
    """The worker ran the code on a result while a signal reached the run: the store records
    the result alone and hands the worker the task, which sees both; the instance that ran
    ahead is dropped and the run replayed."""
    original = client.store.complete_activity_and_task
    handle = None
    calls = 0

    async def signal_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            assert handle is not None
            await handle.signal(CountsThenWaits.hear, "meanwhile")
        return await original(*args, **kwargs)

    client.store.complete_activity_and_task = signal_first  # type: ignore[method-assign]
    try:
        async with Worker(client, workflows=[CountsThenWaits], activities=[add]) as worker:
            handle = await client.start_workflow(CountsThenWaits.run, 3, id=wid())
            assert await handle.result(timeout=10) == [[0, 1, 2], ["meanwhile"]]
            stats = worker.statistics()
    finally:
        del client.store.complete_activity_and_task
    assert calls == 3 and stats.fused_steps == 2
    history = await handle.fetch_history()
    kinds = [e.type for e in history]
    assert kinds.count(EventType.ACTIVITY_TASK_COMPLETED) == 3
    assert kinds.count(EventType.WORKFLOW_EXECUTION_SIGNALED) == 1
    defn = workflow_definition(CountsThenWaits)
    assert defn is not None
    replay(defn, history)


TRIPS: list[int] = []


@workflow.defn
async def trips_once(n: int) -> int:
    first = await add(n, 0)
    if not TRIPS:
        TRIPS.append(first)
        time.time()  # the determinism guard fails the task (retried), not the run
    return first + await add(n, 1)


async def test_a_task_that_fails_on_a_result_takes_the_usual_path(client: Client) -> None:
    """Code that raises on a result, run ahead of the store, writes nothing: the result is
    recorded on its own and the task runs again from history."""
    TRIPS.clear()
    async with Worker(client, workflows=[trips_once], activities=[add]) as worker:
        handle = await client.start_workflow(trips_once, 3, id=wid())
        assert await handle.result(timeout=10) == 7
        stats = worker.statistics()
    assert TRIPS == [3]
    # The first result fell back (its task, run again from history, passed); the second fused.
    assert (stats.fused_steps, stats.workflow_tasks_failed, stats.cache_misses) == (1, 0, 2)
    kinds = [e.type for e in await handle.fetch_history()]
    assert kinds.count(EventType.ACTIVITY_TASK_COMPLETED) == 2


async def test_a_start_hands_the_first_task_to_a_worker_of_the_same_client(
    client: Client, db_url: str
) -> None:
    """Eager start: no poll between a start and its first task when the starting client's
    process runs a worker for the queue; other clients' starts and opted-out workers poll."""
    async with Worker(client, workflows=[count_to], activities=[add]) as worker:
        assert await client.execute_workflow(count_to, 3, id=wid()) == 3
        other = await Client.connect(db_url)
        try:
            assert await other.execute_workflow(count_to, 3, id=wid()) == 3
        finally:
            await other.close()
        assert worker.statistics().eager_starts == 1
    async with Worker(client, workflows=[count_to], activities=[add], eager_start=False) as w:
        assert await client.execute_workflow(count_to, 3, id=wid()) == 3
        assert w.statistics().eager_starts == 0
    async with Worker(client, workflows=[CountsThenWaits], activities=[add]) as worker:
        # Signal-with-start goes through the pollers (the task must see the signal).
        handle = await client.start_workflow(
            CountsThenWaits.run, 1, id=wid(), start_signal=(CountsThenWaits.hear, ["hi"])
        )
        assert await handle.result(timeout=10) == [[0], ["hi"]]
        assert worker.statistics().eager_starts == 0


@workflow.defn
async def notes_its_first_task(items: list[int]) -> list[float]:
    items.append(99)  # the code's own copy of its arguments: must not reach the history
    info = workflow.info()
    seen = [
        info.start_time.timestamp(),
        workflow.now().timestamp(),
        float(info.history_length),
        float(info.history_size),
        float(len(items)),
    ]
    await add(0, 0)
    return seen


async def test_a_fused_start_writes_the_history_a_start_and_its_task_write(
    client: Client,
) -> None:
    """Where the store fuses (SQLite), an eager start runs the first task before the start and
    records both in one transaction. The history is the one an eager start that leases the
    task writes, the code saw the start time and history it replays with, and its edits to
    its arguments are not recorded."""
    fuses = client.store.fuses_first_task
    histories = []
    for fused in (True, False):
        store_fuses = fuses and fused
        client.store.fuses_first_task = store_fuses  # type: ignore[misc]
        try:
            async with Worker(client, workflows=[notes_its_first_task], activities=[add]) as w:
                handle = await client.start_workflow(notes_its_first_task, [1, 2], id=wid())
                seen = await handle.result(timeout=10)
                stats = w.statistics()
        finally:
            del client.store.fuses_first_task
        assert (stats.eager_starts, stats.fused_starts) == (1, 1 if store_fuses else 0)
        assert stats.cache_misses == 1  # the first task built the instance; the rest hit it
        history = await handle.fetch_history()
        started = history[0]
        assert started.attrs["args"] == [[1, 2]]
        start_time = datetime.fromtimestamp(started.time, UTC).timestamp()  # as the code sees it
        assert seen[0] == start_time
        assert seen[2:] == [1.0, float(len(dumps(started.attrs))), 3.0]
        assert seen[1] == start_time  # the first task runs at the start's own time
        _assert_sizes_seen(history)
        defn = workflow_definition(notes_its_first_task)
        assert defn is not None
        inst = replay(defn, history)
        assert inst._main is not None and inst._main.result() == seen
        histories.append(history)
    assert _shape(histories[0])[:-1] == _shape(histories[1])[:-1]  # the results hold times


BROKEN = {"on": True}


@workflow.defn
async def broken_until_fixed(n: int) -> int:
    if BROKEN["on"]:
        time.time()  # the determinism guard fails the task (retried), not the run
    return await add(n, 0)


async def test_a_first_task_that_raises_takes_the_usual_path(client: Client) -> None:
    """Code that raises in the task run ahead of its start fuses nothing: the start leases the
    task here, which runs again from history and records its failure; once fixed, the retry
    passes."""
    BROKEN["on"] = True
    async with Worker(client, workflows=[broken_until_fixed], activities=[add]) as worker:
        handle = await client.start_workflow(broken_until_fixed, 1, id=wid())
        for _ in range(500):
            if worker.statistics().workflow_tasks_failed:
                break
            await asyncio.sleep(0.01)
        BROKEN["on"] = False
        assert await handle.result(timeout=20) == 1
        stats = worker.statistics()
    assert (stats.eager_starts, stats.fused_starts, stats.workflow_tasks_failed) == (1, 0, 1)
    kinds = [e.type for e in await handle.fetch_history()]
    assert kinds.count(EventType.WORKFLOW_TASK_COMPLETED) == 2


@workflow.defn
async def returns_at_once(n: int) -> int:
    return n * 2


async def test_an_eager_start_that_finds_the_id_running_frees_what_it_reserved(
    client: Client,
) -> None:
    """The task run ahead belongs to a run that is never started: the start raises (or
    returns the running run), nothing of the task is written and the worker's slots are
    free again. A run that ends in its first task closes with its start."""
    async with Worker(client, workflows=[CountsThenWaits, returns_at_once], activities=[add]) as w:
        taken = wid()
        handle = await client.start_workflow(CountsThenWaits.run, 3, id=taken)
        with pytest.raises(WorkflowAlreadyStartedError):
            await client.start_workflow(CountsThenWaits.run, 3, id=taken)
        same = await client.start_workflow(
            CountsThenWaits.run, 3, id=taken, id_conflict_policy=IdConflictPolicy.USE_EXISTING
        )
        assert same.run_id == handle.run_id
        await handle.signal(CountsThenWaits.hear, "done")
        assert await handle.result(timeout=10) == [[0, 1, 2], ["done"]]
        quick = await client.start_workflow(
            returns_at_once, 21, id=wid(), run_timeout=timedelta(minutes=1)
        )
        assert await quick.result(timeout=10) == 42
        stats = w.statistics()
    fused = client.store.fuses_first_task
    assert (stats.eager_starts, stats.fused_starts) == (2, 2 if fused else 0)
    assert (stats.workflow_tasks_in_flight, stats.activities_in_flight) == (0, 0)
    kinds = [e.type for e in await handle.fetch_history()]
    assert kinds.count(EventType.WORKFLOW_EXECUTION_STARTED) == 1
    assert kinds.count(EventType.ACTIVITY_TASK_SCHEDULED) == 3
    assert [e.type for e in await quick.fetch_history()] == [
        EventType.WORKFLOW_EXECUTION_STARTED,
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.WORKFLOW_EXECUTION_COMPLETED,
    ]
    assert (await quick.describe()).status == RunStatus.COMPLETED


CANCELS: list[str] = []


@activity.defn(heartbeat_timeout=timedelta(seconds=5))
async def waits_for_cancel(tag: str) -> str:
    try:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        CANCELS.append(tag)
        raise


@workflow.defn
async def adds_then_gives_up() -> list[int]:
    first = await add(1, 1)
    try:  # leased by the step above: it runs next in the task that ran add
        await asyncio.wait_for(workflow.execute_activity(waits_for_cancel, "chained"), 0.2)
    except TimeoutError:
        pass
    return [first, await add(2, 2)]


async def test_the_steps_of_a_cached_run_run_in_one_task(client: Client) -> None:
    """An activity that a step leases to this worker runs next in the task that recorded the
    result (no new task per attempt); a cancellation that reaches such an activity through
    its heartbeats cancels it alone, and the worker ends with no task left over."""
    CANCELS.clear()
    spawned = 0
    async with Worker(
        client, workflows=[count_to, adds_then_gives_up], activities=[add, waits_for_cancel]
    ) as worker:
        spawn = worker._spawn_activity

        def counting(lease: Any) -> None:
            nonlocal spawned
            spawned += 1
            spawn(lease)

        worker._spawn_activity = counting  # type: ignore[method-assign]
        assert await client.execute_workflow(count_to, 10, id=wid()) == 45
        assert (spawned, worker.statistics().fused_steps) == (1, 10)
        assert await client.execute_workflow(adds_then_gives_up, id=wid()) == [2, 4]
        for _ in range(200):  # its next heartbeat learns of the cancellation
            if CANCELS:
                break
            await asyncio.sleep(0.02)
        assert CANCELS == ["chained"]
        stats = worker.statistics()
    assert (stats.activities_in_flight, worker._activity_tasks) == (0, {})
    # Spawned: count_to's first activity; adds_then_gives_up's first, and its last (scheduled
    # by the task that the cancellation woke, not by a result).
    assert spawned == 3


TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("TRACE", default="")


@activity.defn
async def tags_its_context(tag: str) -> str:
    seen = TRACE.get()
    TRACE.set(tag)  # left set on purpose: must not reach the next attempt
    return seen


@workflow.defn
async def tags_twice() -> list[str]:
    return [await tags_its_context("first"), await tags_its_context("second")]


async def test_what_an_activity_sets_in_its_context_stays_with_its_attempt(
    client: Client,
) -> None:
    """The second activity runs next in the task that ran the first (its step leased it
    here), but each attempt runs in its own copy of the context, as in a task of its own."""
    async with Worker(client, workflows=[tags_twice], activities=[tags_its_context]) as worker:
        assert await client.execute_workflow(tags_twice, id=wid()) == ["", ""]
        assert worker.statistics().fused_steps == 2


@activity.defn
async def fetch_items() -> dict[str, Any]:  # Any: the code gets the decoded value itself
    return {"items": [1]}


@workflow.defn
async def edits_its_result() -> dict[str, Any]:
    found = await fetch_items()
    found["items"].append(2)  # the workflow's own copy: legal, and must not reach the history
    await add(0, 0)
    return found


async def test_code_that_edits_a_result_does_not_change_what_is_recorded(client: Client) -> None:
    """On the fused path the code runs before the store writes the result: it gets its own
    decoded copy, so the history holds what the activity returned and replays to the same."""
    for cached in (10_000, 0):
        async with Worker(
            client,
            workflows=[edits_its_result],
            activities=[fetch_items, add],
            max_cached_workflows=cached,
        ) as worker:
            handle = await client.start_workflow(edits_its_result, id=wid())
            assert await handle.result(timeout=10) == {"items": [1, 2]}
            assert worker.statistics().fused_steps == (2 if cached else 0)
        history = await handle.fetch_history()
        [first, _] = [e for e in history if e.type == EventType.ACTIVITY_TASK_COMPLETED]
        assert first.attrs["result"] == {"items": [1]}
        _assert_sizes_seen(history)
        defn = workflow_definition(edits_its_result)
        assert defn is not None
        inst = replay(defn, history)
        assert inst._main is not None and inst._main.result() == {"items": [1, 2]}


async def test_eager_starts_hold_to_the_workflow_task_limit(client: Client) -> None:
    """Concurrent starts each reserve a slot before their store call, so together with the
    poller they never run more workflow tasks than max_concurrent_workflow_tasks."""
    async with Worker(
        client, workflows=[count_to], activities=[add], max_concurrent_workflow_tasks=1
    ) as worker:
        peak = 0
        spawn = worker._spawn_workflow_task

        def counting(lease: object, **kwargs: bool) -> None:
            nonlocal peak
            spawn(lease, **kwargs)  # type: ignore[arg-type]
            peak = max(peak, worker.statistics().workflow_tasks_in_flight)

        worker._spawn_workflow_task = counting  # type: ignore[method-assign]
        handles = await asyncio.gather(
            *(client.start_workflow(count_to, 2, id=wid()) for _ in range(20))
        )
        assert [await h.result(timeout=20) for h in handles] == [1] * 20
        assert worker.statistics().eager_starts < 20
    assert peak == 1


async def test_a_worker_stopping_during_an_eager_start_runs_its_task_first(
    client: Client,
) -> None:
    """The start reserved the worker's slot, then the worker was told to stop while the start's
    transaction was in flight: the drain waits for the hand-over and runs the task, rather
    than leave the run leased to a worker that is gone."""
    worker = Worker(client, workflows=[count_to], activities=[add])
    await worker.__aenter__()
    original = client.store.start_workflow

    async def slow_start(*args):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.3)  # a busy store: the start commits late
        return await original(*args)

    client.store.start_workflow = slow_start  # type: ignore[method-assign]
    try:
        starting = asyncio.create_task(client.start_workflow(count_to, 2, id=wid()))
        await asyncio.sleep(0.05)  # the start holds the worker's slot and awaits the store
        await worker.__aexit__(None, None, None)
        handle = await starting
    finally:
        del client.store.start_workflow
    assert worker.statistics().eager_starts == 1
    assert worker.statistics().workflow_tasks_in_flight == 0
    kinds = [e.type for e in await handle.fetch_history()]
    assert EventType.WORKFLOW_TASK_COMPLETED in kinds  # done before the worker stopped
    async with Worker(client, workflows=[count_to], activities=[add]):
        assert await handle.result(timeout=10) == 1


async def test_a_start_cancelled_after_its_commit_still_hands_over_its_task(
    client: Client,
) -> None:
    """The caller of an eager start is cancelled once the store committed: the worker still
    gets the lease (or, fused, caches the run and runs the activities it claimed), so the run
    does not wait out a lease (10 s)."""
    async with Worker(client, workflows=[count_to], activities=[add]) as worker:
        original = client.store.start_workflow
        starting: asyncio.Task[object] | None = None

        async def commits_then_loses_its_caller(*args):  # type: ignore[no-untyped-def]
            result = await original(*args)
            assert starting is not None
            starting.cancel()  # the caller gives up just as the commit returns
            await asyncio.sleep(0)  # where a caller awaiting the store would see it
            return result

        client.store.start_workflow = commits_then_loses_its_caller  # type: ignore[method-assign]
        workflow_id = wid()
        try:
            starting = asyncio.create_task(client.start_workflow(count_to, 2, id=workflow_id))
            with pytest.raises(asyncio.CancelledError):
                await starting
        finally:
            del client.store.start_workflow
        handle = client.get_workflow_handle(workflow_id)
        assert await handle.result(timeout=5) == 1
        assert worker.statistics().workflow_tasks_in_flight == 0
