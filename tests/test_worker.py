"""Worker behaviour: caching, eager hand-offs, concurrency limits, liveness and shutdown."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from duro import Client, Worker, activity, workflow


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
        client, workflows=[count_to], activities=[add], max_cached_workflows=1
    ) as worker:
        results = await asyncio.gather(
            *(client.execute_workflow(count_to, 10, id=wid()) for _ in range(5))
        )
        stats = worker.statistics()
    assert results == [45] * 5
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
