"""The activity-side API: info, heartbeats, timeouts and retry control, through a real worker."""

from __future__ import annotations

import asyncio
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
