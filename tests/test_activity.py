"""The activity-side API: info, heartbeats, timeouts and retry control, through a real worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest

from duro import (
    ActivityError,
    ApplicationError,
    Client,
    RetryPolicy,
    Worker,
    WorkflowFailureError,
    activity,
    workflow,
)
from duro.errors import TimeoutError as ActivityTimeoutError

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=20), maximum_attempts=3)


@activity.defn(retry_policy=QUICK)
async def resumable(total: int) -> list[int]:
    """Heartbeats its progress; attempt 1 dies half way; attempt 2 resumes from the details."""
    info = activity.info()
    start = info.heartbeat_details or 0
    for i in range(start, total):
        activity.heartbeat(i + 1)
        if info.attempt == 1 and i == total // 2:
            await asyncio.sleep(0.6)  # let the throttled heartbeat reach the store
            raise RuntimeError("crashed half way")
    return [info.attempt, start]


@activity.defn(start_to_close_timeout=timedelta(milliseconds=100), retry_policy=QUICK)
async def hangs() -> None:
    await asyncio.sleep(10)


@activity.defn(retry_policy=RetryPolicy(non_retryable_error_types=["PermissionError"]))
def forbidden() -> None:
    raise PermissionError("no access")


@activity.defn(retry_policy=RetryPolicy(initial_interval=timedelta(seconds=30)))
def rate_limited() -> str:
    if activity.info().attempt == 1:
        raise ApplicationError(
            "429", type="RateLimited", next_retry_delay=timedelta(milliseconds=50)
        )
    return "ok"


@workflow.defn
async def run_activity(name: str) -> object:
    # Called through the function, so the decorator's options (timeouts, retry) apply.
    fn = {"hangs": hangs, "forbidden": forbidden, "rate_limited": rate_limited}[name]
    return await workflow.execute_activity(fn)


@workflow.defn
async def run_resumable() -> list[int]:
    return await resumable(10)


def wid() -> str:
    return f"a-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def worker(client: Client):  # type: ignore[no-untyped-def]
    async with Worker(
        client,
        workflows=[run_activity, run_resumable],
        activities=[resumable, hangs, forbidden, rate_limited],
        graceful_shutdown_timeout=timedelta(milliseconds=100),
    ) as w:
        yield w


async def test_heartbeat_details_carry_over_to_the_next_attempt(
    client: Client, worker: Worker
) -> None:
    attempt, resumed_from = await client.execute_workflow(run_resumable, id=wid())
    assert attempt == 2
    assert resumed_from == 6  # the last heartbeat of attempt 1


async def test_start_to_close_timeout_is_retried_then_reported_with_its_kind(
    client: Client, worker: Worker
) -> None:
    with pytest.raises(WorkflowFailureError) as info:
        await client.execute_workflow(run_activity, "hangs", id=wid())
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    assert cause.attempt == 3
    assert isinstance(cause.cause, ActivityTimeoutError)
    assert cause.cause.kind == "start_to_close"
    kinds = [
        e.type.value
        for e in await client.get_workflow_handle(info.value.workflow_id).fetch_history()
    ]
    assert "ActivityTaskTimedOut" in kinds and "ActivityTaskFailed" not in kinds


async def test_non_retryable_error_types_stop_at_the_first_attempt(
    client: Client, worker: Worker
) -> None:
    with pytest.raises(WorkflowFailureError) as info:
        await client.execute_workflow(run_activity, "forbidden", id=wid())
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    assert cause.attempt == 1
    assert "PermissionError" in str(cause.cause)


async def test_next_retry_delay_overrides_a_long_backoff(client: Client, worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await client.execute_workflow(run_activity, "rate_limited", id=wid()) == "ok"
    assert loop.time() - started < 10  # not the policy's 30 s


TOKENS: dict[str, str] = {}


@activity.defn(start_to_close_timeout=timedelta(minutes=10))
async def human_review(doc: str) -> str:
    TOKENS[doc] = activity.info().task_token  # e.g. put it in a ticket for a person
    activity.raise_complete_async()


@workflow.defn
async def review(doc: str) -> str:
    return await human_review(doc)


async def test_async_completion_from_outside_the_worker(client: Client) -> None:
    async with Worker(client, workflows=[review], activities=[human_review]):
        handle = await client.start_workflow(review, "spec-1", id=wid())
        while "spec-1" not in TOKENS:
            await asyncio.sleep(0.01)
    # The worker is gone; the attempt still waits for its token, not for a retry.
    info = await handle.describe()
    assert info.pending_activities[0].attempt == 1
    await client.complete_activity(TOKENS["spec-1"], "approved by ann")
    async with Worker(client, workflows=[review], activities=[human_review]):
        assert await handle.result(timeout=10) == "approved by ann"
    from duro.errors import LeaseLostError

    with pytest.raises(LeaseLostError):
        await client.complete_activity(TOKENS["spec-1"], "twice")  # already recorded


async def test_async_failure_is_retried(client: Client) -> None:
    TOKENS.clear()
    async with Worker(client, workflows=[review], activities=[human_review]):
        handle = await client.start_workflow(review, "spec-2", id=wid())
        while "spec-2" not in TOKENS:
            await asyncio.sleep(0.01)
        first = TOKENS.pop("spec-2")
        assert await client.heartbeat_activity(first, {"seen": True})
        await client.fail_activity(first, "reviewer unavailable")
        while "spec-2" not in TOKENS:  # attempt 2 asks again
            await asyncio.sleep(0.01)
        await client.complete_activity(TOKENS["spec-2"], "ok on retry")
        assert await handle.result(timeout=10) == "ok on retry"
    with pytest.raises(ValueError, match="not an activity task token"):
        await client.complete_activity("garbage!!", None)


CANCELLED: list[str] = []


@activity.defn(heartbeat_timeout=timedelta(seconds=5))
async def long_model_call(prompt: str) -> str:
    try:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        CANCELLED.append(prompt)
        raise


@workflow.defn
async def impatient() -> str:
    try:
        await asyncio.wait_for(workflow.execute_activity(long_model_call, "p"), timeout=0.2)
    except TimeoutError:
        return "gave up"
    return "done"


async def test_cancelled_activity_sees_cancellation_through_its_heartbeat(client: Client) -> None:
    async with Worker(client, workflows=[impatient], activities=[long_model_call]):
        assert await client.execute_workflow(impatient, id=wid()) == "gave up"
        for _ in range(200):
            if CANCELLED:
                break
            await asyncio.sleep(0.02)
    assert CANCELLED == ["p"]


@activity.defn(task_queue="gpu", schedule_to_start_timeout=timedelta(milliseconds=300))
async def needs_gpu() -> str:
    return "rendered"


@workflow.defn
async def render() -> str:
    try:
        return await needs_gpu()
    except ActivityError as e:
        assert isinstance(e.cause, ActivityTimeoutError)
        return f"{e.cause.kind} after {e.attempt}"


async def test_schedule_to_start_timeout_when_no_worker_takes_it(client: Client) -> None:
    async with Worker(
        client, workflows=[render], heartbeat_interval=timedelta(milliseconds=100)
    ):  # no worker serves the "gpu" queue
        assert await client.execute_workflow(render, id=wid()) == "schedule_to_start after 1"


SYNC_STOPPED: list[int] = []


@pytest.fixture(autouse=True)
def _fresh_records() -> None:
    """Each test (and each store it runs on) starts with empty module-level records."""
    TOKENS.clear()
    CANCELLED.clear()
    SYNC_STOPPED.clear()


@activity.defn(heartbeat_timeout=timedelta(seconds=5))
def crunch(rows: int) -> int:
    """A blocking activity (run in a thread) that polls for cancellation between chunks."""
    done = 0
    while done < rows:
        activity.heartbeat(done)
        if activity.is_cancelled():
            SYNC_STOPPED.append(done)
            raise asyncio.CancelledError
        time.sleep(0.02)
        done += 1
    return done


@workflow.defn
async def impatient_crunch() -> str:
    try:
        await asyncio.wait_for(workflow.execute_activity(crunch, 10_000), timeout=0.3)
    except TimeoutError:
        return "gave up"
    return "done"


async def test_blocking_activity_polls_is_cancelled(client: Client) -> None:
    async with Worker(client, workflows=[impatient_crunch], activities=[crunch]):
        assert await client.execute_workflow(impatient_crunch, id=wid()) == "gave up"
        for _ in range(250):
            if SYNC_STOPPED:
                break
            await asyncio.sleep(0.02)
    assert len(SYNC_STOPPED) == 1 and 0 < SYNC_STOPPED[0] < 10_000
