"""The workflow-side API, end to end through a real worker and SQLite store."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest

from duro import (
    ActivityError,
    ApplicationError,
    Client,
    RetryPolicy,
    RunStatus,
    Worker,
    WorkflowFailureError,
    activity,
    workflow,
)

FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=10), maximum_attempts=3)


@dataclass
class Order:
    item: str
    qty: int


@activity.defn
async def echo(x: str) -> str:
    return x


@activity.defn
async def price(order: Order) -> float:
    return order.qty * 2.5


@activity.defn(retry_policy=FAST_RETRY)
async def always_fails(x: str) -> str:
    raise ValueError(f"bad {x} on attempt {activity.info().attempt}")


@activity.defn
def sync_info(tag: str) -> dict[str, object]:
    info = activity.info()
    activity.heartbeat({"tag": tag})
    return {"attempt": info.attempt, "key": info.idempotency_key, "tag": tag}


@activity.defn
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slow done"


@workflow.defn
async def pipeline(order: Order) -> dict[str, object]:
    total = await workflow.execute_activity(price, order)
    parts = await asyncio.gather(*(echo(f"{order.item}-{i}") for i in range(3)))
    direct = await echo("direct")
    return {"total": total, "parts": parts, "direct": direct}


@workflow.defn
class Approval:
    def __init__(self) -> None:
        self.approvals: list[str] = []
        self.seen = 0

    @workflow.run
    async def run(self, needed: int) -> list[str]:
        await workflow.wait_condition(lambda: len(self.approvals) >= needed)
        return self.approvals

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approvals.append(who)

    @workflow.signal
    async def approve_later(self, who: str) -> None:
        await asyncio.sleep(0.01)
        self.approvals.append(who)

    @workflow.query
    def count(self) -> int:
        return len(self.approvals)


@workflow.defn
async def sleeper(seconds: float) -> float:
    before = workflow.now()
    await workflow.sleep(timedelta(seconds=seconds))
    return (workflow.now() - before).total_seconds()


@workflow.defn
async def racer() -> str:
    try:
        await asyncio.wait_for(workflow.execute_activity(slow, 5.0), timeout=0.1)
    except TimeoutError:
        return "timed out"
    return "finished"


@workflow.defn
async def condition_timeout() -> str:
    try:
        await workflow.wait_condition(lambda: False, timeout=timedelta(milliseconds=50))
    except TimeoutError:
        return "gave up"
    return "impossible"


@workflow.defn
async def failing() -> str:
    try:
        await always_fails("x")
    except ActivityError as e:
        assert isinstance(e.cause, ApplicationError)
        return f"{e.cause.type} after {e.attempt}: {e.cause.message}"
    return "no error"


@workflow.defn
async def raises() -> str:
    raise ApplicationError("cannot plan", type="PlanError")


@workflow.defn
async def deterministic_values() -> list[object]:
    return [workflow.random().randint(0, 10**9), str(workflow.uuid4()), workflow.info().workflow_id]


@workflow.defn
class Cancellable:
    def __init__(self) -> None:
        self.cleaned = False

    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.sleep(3600)
        except asyncio.CancelledError:
            self.cleaned = True
            raise
        return "slept"


@workflow.defn
async def sync_activity_info() -> dict[str, object]:
    return await workflow.execute_activity(sync_info, "t")


ALL_WORKFLOWS = [
    pipeline,
    Approval,
    sleeper,
    racer,
    condition_timeout,
    failing,
    raises,
    deterministic_values,
    Cancellable,
    sync_activity_info,
]
ALL_ACTIVITIES = [echo, price, always_fails, sync_info, slow]


@pytest.fixture
async def worker(client: Client):  # type: ignore[no-untyped-def]
    async with Worker(
        client,
        workflows=ALL_WORKFLOWS,
        activities=ALL_ACTIVITIES,
        graceful_shutdown_timeout=timedelta(milliseconds=200),
    ) as w:
        yield w


def wid() -> str:
    return f"wf-{uuid.uuid4().hex[:8]}"


async def test_activities_gather_and_direct_calls(client: Client, worker: Worker) -> None:
    result = await client.execute_workflow(pipeline, Order("tea", 4), id=wid())
    assert result == {"total": 10.0, "parts": ["tea-0", "tea-1", "tea-2"], "direct": "direct"}


async def test_signals_conditions_and_queries(client: Client, worker: Worker) -> None:
    handle = await client.start_workflow(Approval.run, 2, id=wid())
    await handle.signal(Approval.approve, "ann")
    assert await handle.query(Approval.count) in (0, 1)
    await handle.signal("approve_later", "bob")
    assert await handle.result(timeout=10) == ["ann", "bob"]
    assert await handle.query(Approval.count) == 2  # a closed run still answers queries


async def test_many_signals_while_tasks_are_in_flight_are_all_delivered(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow(Approval.run, 40, id=wid())
    await asyncio.gather(*(handle.signal(Approval.approve, f"p{i}") for i in range(40)))
    result = await handle.result(timeout=20)
    assert sorted(result) == sorted(f"p{i}" for i in range(40))


async def test_durable_sleep_advances_workflow_time(client: Client, worker: Worker) -> None:
    elapsed = await client.execute_workflow(sleeper, 0.2, id=wid())
    assert elapsed >= 0.2
    handle = client.get_workflow_handle(
        (await client.list_workflows(workflow_type="sleeper"))[0].workflow_id
    )
    kinds = [e.type.value for e in await handle.fetch_history()]
    assert "TimerStarted" in kinds and "TimerFired" in kinds


async def test_wait_for_timeout_cancels_the_activity(client: Client, worker: Worker) -> None:
    handle = await client.start_workflow(racer, id=wid())
    assert await handle.result(timeout=10) == "timed out"
    kinds = [e.type.value for e in await handle.fetch_history()]
    assert "ActivityTaskCancelRequested" in kinds
    assert "ActivityTaskCompleted" not in kinds


async def test_wait_condition_timeout(client: Client, worker: Worker) -> None:
    assert await client.execute_workflow(condition_timeout, id=wid()) == "gave up"


async def test_activity_failure_reaches_the_workflow_after_retries(
    client: Client, worker: Worker
) -> None:
    result = await client.execute_workflow(failing, id=wid())
    assert result == "ValueError after 3: bad x on attempt 3"


async def test_failed_workflow_raises_with_cause_at_the_client(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow(raises, id=wid())
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=10)
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "PlanError" and info.value.status == "Failed"


async def test_random_and_uuid_are_seeded_by_the_run(client: Client, worker: Worker) -> None:
    handle = await client.start_workflow(deterministic_values, id=wid())
    values = await handle.result(timeout=10)
    from duro.definitions import workflow_definition
    from duro.runtime.replay import replay

    defn = workflow_definition(deterministic_values)
    assert defn is not None
    inst = replay(defn, await handle.fetch_history())
    assert inst.closed and values[2] == handle.id


async def test_cancel_raises_cancelled_error_in_the_workflow(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow(Cancellable.run, id=wid())
    await _wait_for(lambda: _has_timer(handle))
    await handle.cancel("user changed their mind")
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=10)
    assert info.value.status == "Canceled"
    assert str(info.value.cause) == "Canceled: user changed their mind"  # the reason reaches you
    history = await handle.fetch_history()
    kinds = [e.type.value for e in history]
    assert kinds[-3:] == ["WorkflowTaskCompleted", "TimerCanceled", "WorkflowExecutionCanceled"]
    assert history[-1].attrs == {"reason": "user changed their mind"}
    assert (await handle.describe()).failure == {
        "type": "Canceled",
        "message": "user changed their mind",
    }


async def test_terminate_closes_at_once(client: Client, worker: Worker) -> None:
    handle = await client.start_workflow(Approval.run, 1, id=wid())
    await handle.terminate("stuck")
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=10)
    assert info.value.status == "Terminated"
    assert (await handle.describe()).status == RunStatus.TERMINATED


async def test_sync_activity_runs_in_a_thread_with_info_and_heartbeat(
    client: Client, worker: Worker
) -> None:
    handle = await client.start_workflow(sync_activity_info, id=wid())
    result = await handle.result(timeout=10)
    assert result["attempt"] == 1 and result["tag"] == "t"
    assert result["key"] == f"{handle.id}/{handle.run_id}/1"


async def _has_timer(handle) -> bool:  # type: ignore[no-untyped-def]
    return bool((await handle.describe()).pending_timers)


async def _wait_for(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@workflow.defn
async def chatty() -> str:
    workflow.logger.info("before the activity")
    await echo("x")
    workflow.logger.info("after the activity")
    return "ok"


async def test_logger_is_silent_during_replay(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    from duro.definitions import workflow_definition
    from duro.runtime.replay import replay

    caplog.set_level("INFO", logger="duro.workflow")
    async with Worker(client, workflows=[chatty], activities=[echo]):
        handle = await client.start_workflow(chatty, id=wid())
        assert await handle.result(timeout=10) == "ok"
    live = [r.getMessage() for r in caplog.records if r.name == "duro.workflow"]
    assert len(live) == 2
    assert all(handle.id in m for m in live)  # tagged with the run
    caplog.clear()
    defn = workflow_definition(chatty)
    assert defn is not None
    replay(defn, await handle.fetch_history())
    assert not [r for r in caplog.records if r.name == "duro.workflow"]
